"""The task interface: what is learned, how one epoch of training runs, how it is evaluated."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bioplaus.core import Context, Rule, TaskSpec
from bioplaus.errors import DivergedError

BatchHook = Callable[[Any], None]


class Task(ABC):
    """A task owns its data or environment and its training loop.

    The runner builds one model per (rule, seed) from :attr:`spec` and calls
    :meth:`train_epoch` and :meth:`evaluate` alternately, the same way for every rule (nothing
    here branches on a rule's name). Subclasses for supervised data, RL environments, motor
    trials or sequences differ in what an "epoch" is and what signals the context carries.
    """

    name: str = "task"
    spec: TaskSpec

    @abstractmethod
    def train_epoch(
        self,
        model: nn.Module,
        rule: Rule,
        optimizer: torch.optim.Optimizer,
        *,
        generator: torch.Generator,
        before_update: BatchHook | None = None,
    ) -> dict[str, float]:
        """Train for one epoch; return running training metrics (e.g. ``{"loss": …, "accuracy": …}``).

        Args:
            model: the model being trained.
            rule: the rule that writes ``p.grad`` from each context.
            optimizer: applies the gradients.
            generator: the run's random generator (batch order, exploration, ...).
            before_update: called with each batch before it is used (e.g. to log alignment).

        Raises:
            DivergedError: when the loss becomes non-finite.
        """

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Held-out metrics by split, e.g. ``{"test": {"loss": …, "accuracy": …}}``."""

    def make_context(self, model: nn.Module, batch: Any) -> Context:
        """Run the model on one batch and build the rule's context (used by alignment analyses)."""
        raise NotImplementedError(f"task '{self.name}' does not build contexts from single batches")


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Raise :class:`~bioplaus.errors.DivergedError` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise DivergedError(f"loss became {loss.detach().flatten()[0].item()} at step {step}")
