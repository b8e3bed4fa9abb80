"""The task interface: what is learned, which context each batch gives, how it is evaluated.

A task says *what* is learned and leaves *how an update is applied* to the runner
([`bioplaus.runner.train_step`][bioplaus.runner.training.train_step]): the runner zeroes gradients, checks the loss,
calls the rule, clips, steps the optimizer, projects constrained weights and probes alignment, the same
way for every task and rule. A task supplies

- [`Task.batches`][bioplaus.tasks.base.Task.batches]: the updates of one epoch (data batches, trials, replay batches
  while an environment is run between them);
- [`Task.context`][bioplaus.tasks.base.Task.context]: the [`Context`][bioplaus.core.context.Context] of one batch, for
  batch rules;
- [`Task.steps`][bioplaus.tasks.base.Task.steps]: for online rules, the model run one time step at a time, one context
  per step (tasks that support online rules have ``"t"`` in `Task.provides`);
- [`Task.batch_metrics`][bioplaus.tasks.base.Task.batch_metrics] and
  [`Task.epoch_metrics`][bioplaus.tasks.base.Task.epoch_metrics]: running training metrics;
- [`Task.evaluate`][bioplaus.tasks.base.Task.evaluate]: held-out metrics after each epoch.

Its class attributes are its typed contract: `Task.requires` (capabilities of the models
it can drive) and `Task.provides` (the context fields and signals it fills in).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule, TaskSpec
from bioplaus.errors import ConfigError, DivergedError

Metrics = tuple[Mapping[str, float], float]
"""Sums of training metrics over one batch and the batch's weight (the runner reports sum ÷ weight)."""


class Task(ABC):
    """A task owns its data or environment; the runner owns the training step.

    Attributes:
        name: the task's name in tables and messages.
        spec: what the model must accept and produce ([`TaskSpec`][bioplaus.core.spec.TaskSpec]).
        requires: capabilities every model the task drives must have.
        provides: context fields and signals the task's contexts carry (``"t"``: it runs
            online rules, one context per time step).
        clip_grad_norm: clip the global gradient norm to this before each optimizer step
            (``None``: never); applied by the runner.
        online_step: for online rules, ``"time_step"`` steps the optimizer after every time
            step (motor adaptation), ``"batch"`` once per batch after the last time step.
    """

    name: str = "task"
    spec: TaskSpec
    requires: ClassVar[frozenset[Capability]] = frozenset()
    requires_one_of: ClassVar[tuple[frozenset[Capability], ...]] = ()
    """Alternatives: besides `requires`, the model has every capability of at least one of these sets."""
    provides: ClassVar[frozenset[str]] = frozenset({"loss", "output", "target"})
    clip_grad_norm: float | None = None
    online_step: ClassVar[str] = "batch"

    def prepare(self, model: nn.Module) -> nn.Module:
        """Adapt a freshly built model to the task before the rule attaches (default: as it is).

        A task that trains several conditions in one model (one weight copy per learning rate, say)
        splits it here; the runner builds the optimizer afterwards, over the prepared model.
        """
        return model

    def optimizer(self, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer | None:
        """An optimizer the task needs instead of the run's configured one (default ``None``: the configured one).

        For tasks whose conditions differ in how they are stepped (a learning rate per condition).
        """
        return None

    def check(self, model: nn.Module, rule: Rule) -> None:  # noqa: B027 - an optional hook
        """Raise ``ConfigError`` if this task cannot train ``model`` with ``rule`` for a reason the
        typed contract does not express (called before training; the default accepts)."""

    def headline_metrics(self) -> tuple[str, ...]:
        """The ``split/metric`` names a run of this task is judged by, most important first.

        Summaries and figures show them before every other metric (default: none declared).
        """
        return ()

    def chance_levels(self) -> dict[str, float]:
        r"""Per metric name (without split), the score of a uniform guess; figures draw it dotted.

        Classification: ``{"accuracy": 1 / n_classes}`` (a guess among $K$ classes is right with
        probability $1/K$). Default: none.
        """
        return {}

    def check_budget(self, epochs: int) -> None:  # noqa: B027 - an optional hook
        """Raise ``ConfigError`` if ``epochs`` epochs of this task would end before its first update
        (called before training; the default accepts)."""

    @abstractmethod
    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[Any]:
        """The batches of one epoch; the runner applies one update per batch before asking for the next.

        A task that keeps per-run state (an environment, a replay buffer) sets it up here the first
        time it sees ``model``.
        """

    def context(self, model: nn.Module, batch: Any) -> Context:
        """Run ``model`` on ``batch`` and build a batch rule's context (also used by alignment probes)."""
        raise ConfigError(f"task '{self.name}' trains online rules only; it builds no context per batch")

    def steps(self, model: nn.Module, batch: Any, on_reset: Callable[[], None]) -> Generator[Context, None, Any]:
        """Run ``model`` on ``batch`` one time step at a time, yielding each step's context.

        Resets the model's state first, then calls ``on_reset()`` (the runner resets the rule's
        state there) before the first time step. The runner calls ``rule.step`` on each yielded
        context before the next step; the generator's return value is the batch's outcome, handed
        to [`batch_metrics`][bioplaus.tasks.base.Task.batch_metrics] and
        [`outcome_loss`][bioplaus.tasks.base.Task.outcome_loss].
        """
        raise ConfigError(f"task '{self.name}' gives one context per batch; it does not run online rules")
        yield  # pragma: no cover - makes this a generator

    def outcome_loss(self, outcome: Any) -> torch.Tensor:
        """The loss of an online batch's outcome (checked to be finite after the batch)."""
        raise NotImplementedError

    @abstractmethod
    def batch_metrics(self, batch: Any, outcome: Any) -> Metrics:
        """Training metric sums of one batch and its weight; ``outcome`` is the context (batch rules) or
        what [`steps`][bioplaus.tasks.base.Task.steps] returned (online rules)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Training metrics of the epoch that the batches do not carry (environment steps, returns)."""
        return {}

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Held-out metrics by split, e.g. ``{"test": {"loss": …, "accuracy": …}}``."""

    def state_dict(self) -> dict[str, Any]:
        """What the task carries from one epoch to the next (an environment, a buffer) for checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:  # noqa: B027 - an optional hook
        """Restore [`state_dict`][bioplaus.tasks.base.Task.state_dict] for a run of ``model``."""


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Raise `DivergedError` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise DivergedError(f"loss became {loss.detach().flatten()[0].item()} at step {step}")
