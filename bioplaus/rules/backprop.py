"""Backpropagation: the reference every other rule is held against."""

from __future__ import annotations

from torch import nn

from bioplaus.core import Context, Rule
from bioplaus.rules._registry import register


@register("bp")
class Backprop(Rule):
    r"""Backpropagation by autograd: ``p.grad += ∂L/∂p`` for every parameter.

    The exact gradient of ``ctx.loss`` (Rumelhart, Hinton & Williams, 1986). Layers configured
    by other rules change what autograd computes (feedback weights, detached inputs); ``bp``
    itself leaves every layer at its default, so this is the true gradient.
    """

    def update(self, model: nn.Module, ctx: Context) -> None:
        ctx.require("loss", rule=f"rule '{self.name}'")
        ctx.loss.backward()
