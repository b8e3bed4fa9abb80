"""Typed contracts: what a model *is*, what a rule *needs* and what a task *provides*.

A model declares its capabilities in the class attribute ``capabilities`` (a set of
[`Capability`][bioplaus.core.capabilities.Capability]); a few are also read off the module tree, so a plain torch model
that went through `bioplaus.convert` is ``layered`` without declaring anything. A rule
declares ``requires`` (capabilities its model must have) and ``signals`` (what its context
must carry); a task declares ``requires`` (what the models it drives must be) and
``provides`` (the context fields and signals it fills in).
[`pairing_problems`][bioplaus.core.capabilities.pairing_problems] compares them, and the runner calls it for every
(model, rule) before anything trains, so an impossible pairing fails at once with a message that names what would work.

Context signal names are the [`Context`][bioplaus.core.context.Context] fields (``loss``, ``output``,
``target``, ``error``, ``t``: the last one means the task runs the model one time step at a
time and gives a context per step) and the keys of ``Context.signals`` (``layer_losses``,
``feedback_error``, ``sequence_end``, ...).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from torch import nn


class Capability(str, Enum):
    """What a model can do for a rule or a task."""

    FEEDFORWARD = "feedforward"
    """One call maps a batch ``(batch, *input_shape)`` to a tensor ``(batch, n_out)``, with no state
    carried between calls (MLPs, conv nets, VNNs). A model that declares no capabilities at all
    (a plain or converted torch model) is taken to be one."""
    LAYERED = "layered"
    """Built from bioplaus weight layers (``Linear``, ``Conv2d``, ``Local2d``, ...) that rules configure."""
    VECTORIZED = "vectorized"
    """A vectorized nonnegative network (VNN): K-vector units behind scalar gates (GEVB)."""
    RECURRENT = "recurrent"
    """Has bioplaus recurrent layers whose carried state rules can truncate (BPTT, TBPTT)."""
    SEQUENCE = "sequence"
    """Maps ``(batch, length, n_in)`` to one output per step, ``(batch, length, n_out)``."""
    STEPPABLE = "steppable"
    """Runs one time step at a time: ``reset_state(batch_size)`` then ``step(x_t)``."""
    CONTROLLED_RNN = "controlled_rnn"
    """A rate RNN in a feedback-control loop (``rate_rnn``): ``reset``/``step`` of a closed loop."""
    LAYERWISE_Q = "layerwise_q"
    """A stack of cells that each predict Q-values (``cells``), with temporal context (``ad``)."""
    SPIKING = "spiking"
    """Spiking neurons with explicit membrane and threshold state."""
    POLICY = "policy"
    """A deterministic actor for continuous control: observation vectors to actions in
    ``[−act_limit, act_limit]``, with an observation normaliser ``norm`` (``popsan``)."""

    def __str__(self) -> str:
        return self.value


Capabilities = frozenset[Capability]


def capabilities_of(model: nn.Module) -> Capabilities:
    """The capabilities ``model`` declares (class attribute ``capabilities``) plus those its modules show.

    ``layered`` is read off the module tree (any [`Layer`][bioplaus.core.layers.Layer]), ``recurrent``
    likewise (any [`RecurrentLayer`][bioplaus.core.recurrent.RecurrentLayer]); a model whose class declares nothing
    (a plain or converted torch model) is ``feedforward``.
    """
    from bioplaus.core.layers import Layer
    from bioplaus.core.recurrent import RecurrentLayer

    own = declared(type(model))
    found = set(own) if own is not None else {Capability.FEEDFORWARD}
    for module in model.modules():
        if isinstance(module, Layer):
            found.add(Capability.LAYERED)
        if isinstance(module, RecurrentLayer):
            found.add(Capability.RECURRENT)
    return frozenset(found)


def declared(kind: Any) -> Capabilities | None:
    """Capabilities a class declares, or ``None`` if ``kind`` is not a class that declares any."""
    if not inspect.isclass(kind):
        return None
    value = getattr(kind, "capabilities", None)
    return frozenset(Capability(c) for c in value) if value is not None else None


def factory_capabilities(factory: Callable[..., Any]) -> Capabilities | None:
    """What a model factory builds, known without building it: a class's own declaration, or the
    declaration of the class named in a function's return annotation; ``None`` when unknown."""
    if inspect.isclass(factory):
        return declared(factory)
    try:
        returned = typing.get_type_hints(factory).get("return")
    except Exception:  # an annotation that does not resolve: unknown, not an error
        return None
    return declared(returned)


def describe(capabilities: Iterable[Capability | str]) -> str:
    """``'a, b'`` for messages (sorted; ``'nothing'`` when empty)."""
    names = sorted(str(c) for c in capabilities)
    return ", ".join(names) if names else "nothing"


def task_model_problems(model_capabilities: Capabilities, task: Any) -> list[str]:
    """Why ``task`` cannot drive a model with ``model_capabilities`` (``task.requires``, ``task.requires_one_of``)."""
    problems = []
    missing = frozenset(task.requires) - model_capabilities
    if missing:
        problems.append(f"task '{task.name}' drives models that are {describe(missing)}")
    options = [frozenset(option) for option in getattr(task, "requires_one_of", ())]
    if options and not any(option <= model_capabilities for option in options):
        kinds = " or ".join(describe(option) for option in options)
        problems.append(f"task '{task.name}' drives models that are {kinds}")
    return problems


def rule_model_problems(model_capabilities: Capabilities, rule: Any) -> list[str]:
    """Why ``rule`` cannot train a model with ``model_capabilities`` (``rule.requires``, ``rule.excludes``)."""
    problems = []
    missing = frozenset(rule.requires) - model_capabilities
    if missing:
        problems.append(f"rule '{rule.name}' needs a model that is {describe(missing)}")
    clash = frozenset(getattr(rule, "excludes", ())) & model_capabilities
    if clash:
        problems.append(f"rule '{rule.name}' cannot train a model that is {describe(clash)}")
    return problems


def pairing_problems(
    model_capabilities: Capabilities | None,
    rule: Any,
    task: Any,
) -> list[str]:
    """Why ``rule`` cannot train a model with ``model_capabilities`` on ``task`` (empty: it can).

    Reads ``rule.requires``, ``rule.excludes``, ``rule.signals``, ``rule.online`` and
    ``task.requires``, ``task.requires_one_of``, ``task.provides``. ``model_capabilities=None``
    (a model not known yet) checks the rule against the task alone.
    """
    problems = []
    if model_capabilities is not None:
        problems += task_model_problems(model_capabilities, task) + rule_model_problems(model_capabilities, rule)
    provides = frozenset(task.provides)
    if rule.online and "t" not in provides:
        problems.append(
            f"rule '{rule.name}' learns online, one time step at a time, and task '{task.name}' gives one "
            "context per batch"
        )
    missing_signals = frozenset(rule.signals) - provides
    if missing_signals:
        problems.append(
            f"rule '{rule.name}' needs the context signal(s) {describe(missing_signals)}, which task "
            f"'{task.name}' does not provide (it provides {describe(provides)})"
        )
    return problems
