"""The context: the global signals a task hands to a rule.

The rule contract: global signals travel as arguments. A task builds a
[`Context`][bioplaus.core.context.Context] per batch (or per time step) and calls ``rule.update(model, ctx)`` (or
``rule.step(model, ctx)``); nothing is stored on layers as attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bioplaus.errors import ConfigError


@dataclass
class Context:
    """Global signals of one update.

    Attributes:
        loss: scalar objective the task minimises (mean over the batch).
        output: model output ``y`` the loss was computed from (keeps its graph).
        target: targets (class labels, regression targets, TD targets, ...).
        error: the output error ``∂L/∂y``; computed lazily by
            [`output_error`][bioplaus.core.context.Context.output_error] when not given (a task may set it directly,
            e.g. a controller's error signal).
        t: time step within a sequence or trial, for online rules.
        signals: method-specific global signals (per-layer TD targets, a reward, ...), by name.
    """

    loss: torch.Tensor | None = None
    output: torch.Tensor | None = None
    target: torch.Tensor | None = None
    error: torch.Tensor | None = None
    t: int | None = None
    signals: dict[str, Any] = field(default_factory=dict)

    def require(self, *names: str, rule: str = "this rule") -> None:
        """Raise ``ConfigError`` naming the missing fields if any of ``names`` is ``None``."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ConfigError(
                f"{rule} needs ctx.{', ctx.'.join(missing)}, but the task's context does not set "
                f"{'it' if len(missing) == 1 else 'them'}; build the Context with "
                + ", ".join(f"{n}=..." for n in missing)
            )

    def output_error(self) -> torch.Tensor:
        r"""The output error $e = \partial L / \partial y$ (detached), cached after the first call.

        With a batch-mean loss, ``e`` already carries the ``1/B`` factor, so rules that build weight
        updates from it reproduce BP's scale exactly.
        """
        if self.error is None:
            self.require("loss", "output", rule="the output error")
            (grad,) = torch.autograd.grad(self.loss, self.output, retain_graph=True)
            self.error = grad.detach()
        return self.error

    def signal(self, name: str) -> Any:
        """A method-specific signal; an absent one raises ``ConfigError`` listing those present."""
        if name not in self.signals:
            present = ", ".join(sorted(self.signals)) or "none"
            raise ConfigError(f"the context has no signal '{name}' (signals present: {present})")
        return self.signals[name]
