"""Checks before anything trains: every (model, rule, task) of a comparison must fit together.

The typed contracts ([`bioplaus.core.capabilities`][bioplaus.core.capabilities]) are compared first, which names what
would work (models that fit the rule and the task, rules that fit the model); then each rule is
attached to a throw-away model and the task's own [`check`][bioplaus.tasks.base.Task.check] runs, so
errors that only ``attach`` can see also come before the first run trains. The throw-away models
are built with the random state saved and restored, so the runs see exactly what they would
have seen without the checks.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bioplaus.core import Rule, TaskSpec
from bioplaus.core.capabilities import (
    Capabilities,
    capabilities_of,
    factory_capabilities,
    pairing_problems,
    rule_model_problems,
    task_model_problems,
)
from bioplaus.errors import ConfigError
from bioplaus.nets._registry import MODELS
from bioplaus.rules._registry import RULES
from bioplaus.tasks._registry import TASKS
from bioplaus.tasks.base import Task

ModelFactory = Callable[[TaskSpec], nn.Module]


def task_class(name: str) -> type[Task] | None:
    """The [`Task`][bioplaus.tasks.base.Task] subclass a registered task factory builds (``None``: unknown)."""
    factory = TASKS.entry(name).factory
    if inspect.isclass(factory):
        return factory
    try:
        returned = typing.get_type_hints(factory).get("return")
    except Exception:  # an annotation that does not resolve: unknown
        return None
    return returned if inspect.isclass(returned) and issubclass(returned, Task) else None


def models_that_fit(rule: Rule | type[Rule], task: Task | type[Task]) -> list[str]:
    """Registered models whose declared capabilities meet the rule's and the task's needs."""
    out = []
    for name in MODELS.available():
        capabilities = factory_capabilities(MODELS.entry(name).factory)
        if capabilities is not None and not (
            task_model_problems(capabilities, task) or rule_model_problems(capabilities, rule)
        ):
            out.append(name)
    return out


def rules_that_fit(capabilities: Capabilities | None, task: Task | type[Task]) -> list[str]:
    """Registered rules whose contract fits a model with ``capabilities`` on ``task``.

    ``capabilities=None`` (no model given): the rules that fit ``task`` with some registered model.
    """
    out = []
    for name in RULES.available():
        rule = _contract(RULES.entry(name).factory, name)
        if pairing_problems(capabilities, rule, task):
            continue
        if capabilities is None and not models_that_fit(rule, task):
            continue
        out.append(name)
    return out


def _contract(factory: Any, name: str) -> Any:
    """The rule class's contract, read without building the rule (a factory function: built)."""
    return factory if inspect.isclass(factory) else RULES.build(name)


def model_capabilities(name: str, spec: TaskSpec | None = None) -> Capabilities:
    """What the registered model ``name`` is: declared by its class, or read off a model built for ``spec``."""
    capabilities = factory_capabilities(MODELS.entry(name).factory)
    if capabilities is not None:
        return capabilities
    if spec is None:
        raise ConfigError(f"model '{name}' does not declare its capabilities; give a task so it can be built")
    with torch.random.fork_rng():
        return capabilities_of(MODELS.build(name, spec))


def check_plan(
    task: Task,
    make_model: ModelFactory,
    rules: Sequence[tuple[str, Callable[[], Rule]]],
    model_name: str | None = None,
    make_optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None = None,
) -> None:
    """Raise ``ConfigError`` if some rule of ``rules`` cannot train the model on ``task``.

    Args:
        task: the task.
        make_model: builds the model from the task's spec.
        rules: ``(label, factory)`` of each rule, in run order.
        model_name: the model's registered name, for messages.
        make_optimizer: builds the run's optimizer from parameter groups (when the task has no
            optimizer of its own), so each rule can check it (`Rule.check_optimizer`).
    """
    what = f"model '{model_name}'" if model_name else "the model"
    for label, make_rule in rules:
        rule = make_rule()
        with torch.random.fork_rng():
            model = task.prepare(make_model(task.spec))
            capabilities = capabilities_of(model)
            problems = pairing_problems(capabilities, rule, task)
            if problems:
                raise ConfigError(_message(label, what, task, rule, capabilities, problems))
            rule.attach(model)
            task.check(model, rule)
            if make_optimizer is not None:
                groups = rule.param_groups(model)
                rule.check_optimizer(task.optimizer(groups) or make_optimizer(groups))


def _message(label: str, what: str, task: Task, rule: Rule, capabilities: Capabilities, problems: list[str]) -> str:
    fits = models_that_fit(rule, task)
    rules = rules_that_fit(capabilities, task)
    lines = [f"rule '{label}' cannot train {what} on task '{task.name}': " + "; ".join(problems) + "."]
    if fits:
        lines.append(f"Models that fit rule '{rule.name}' on this task: {', '.join(fits)}.")
    elif frozenset(rule.requires) - frozenset(task.requires):
        lines.append(f"No registered model fits rule '{rule.name}' on task '{task.name}'.")
    if rules:
        lines.append(f"Rules that fit {what} on this task: {', '.join(rules)}.")
    lines.append("See 'bioplaus rules --model MODEL --task TASK'.")
    return " ".join(lines)


def fitting(
    kind: str, *, model: str | None = None, rule: str | None = None, task: str | None = None
) -> set[str] | None:
    """Names of registered ``kind`` (``"rules"`` or ``"models"``) that fit the given model/rule/task.

    ``None`` when nothing narrows the listing. Read from the declared contracts alone: no data
    is loaded and no model is built (a model that declares no capabilities cannot be judged).
    """
    if model is None and rule is None and task is None:
        return None
    task_contract = None
    if task is not None:
        task_contract = task_class(task)
        if task_contract is None:
            raise ConfigError(f"task '{task}' does not name its Task class in its return annotation")
    if kind == "rules":
        if rule is not None:
            raise ConfigError("'bioplaus rules' narrows by --model and --task")
        capabilities = model_capabilities(model) if model is not None else None
        if task_contract is not None:
            return set(rules_that_fit(capabilities, task_contract))
        return {name for name in RULES.available() if not rule_model_problems(capabilities, _contract(
            RULES.entry(name).factory, name))}  # fmt: skip
    if kind == "models":
        if model is not None:
            raise ConfigError("'bioplaus models' narrows by --rule and --task")
        contract = _contract(RULES.entry(rule).factory, rule) if rule is not None else Rule
        return set(models_that_fit(contract, task_contract or Task))
    raise ConfigError("'bioplaus tasks' lists every task; narrow rules or models instead")
