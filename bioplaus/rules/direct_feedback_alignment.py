"""Direct feedback alignment (DFA)."""

from __future__ import annotations

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule, require_layers, weight_layers
from bioplaus.errors import ShapeError
from bioplaus.rules._registry import register


@register("dfa")
class DirectFeedbackAlignment(Rule):
    r"""Direct feedback alignment: the output error is broadcast to every hidden layer.

    Nøkland (2016), "Direct feedback alignment provides learning in deep neural networks",
    NeurIPS. Configured as in the GEVB paper's baseline (Clark, Abbott & Chung, NeurIPS 2021,
    ``dfa_util.py``): one fixed matrix
    ``B ∈ R^{n_out × max_ℓ n_ℓ}``, entries ``U[low, high]`` (default ``U[−1, 1]``), no
    normalisation; hidden layer ℓ with ``n_ℓ`` output values per example (``C·H·W`` for conv)
    uses its first ``n_ℓ`` columns. With ``e = ∂L/∂y`` (batch-mean loss, so ``e`` carries 1/B):

    $$
    δ_ℓ = f'(a_ℓ) ⊙ (e\, B_{[:, :n_ℓ]}), \qquad ΔW_ℓ ∝ -δ_ℓ\, h_{ℓ-1}^{⊤}
    $$

    The output layer (the model's last bioplaus layer) gets its true gradient. Implementation:
    every layer's input is detached, so each layer's graph is local; the error ``e B`` is
    injected at each hidden layer's output (after its activation) and one
    ``torch.autograd.backward`` call computes all weight gradients. No error crosses layers,
    and no input gradients are computed, so a DFA step is cheaper than a BP step.
    ``B`` is drawn at the first update, when the layer widths are known (as in the official code),
    and kept in the rule's [`state`][bioplaus.core.rule.Rule.state] (buffer ``matrix``, also
    [`matrix`][bioplaus.rules.direct_feedback_alignment.DirectFeedbackAlignment.matrix]); a ``feedback`` argument is
    copied into the state and never replaced.

    Args:
        low: lower bound of the uniform feedback entries (``0.0`` gives the paper's "DFA+").
        high: upper bound of the uniform feedback entries.
        seed: seed of a private generator for ``B``; ``None`` uses torch's global generator.
        feedback: a fixed ``(n_out, width)`` matrix to use instead of a random one.
    """

    requires = frozenset({Capability.LAYERED})
    excludes = frozenset({Capability.SEQUENCE})  # the broadcast error is (batch × n_out), not one per time step
    signals = frozenset({"loss", "output"})

    def __init__(
        self, low: float = -1.0, high: float = 1.0, seed: int | None = None, feedback: torch.Tensor | None = None
    ):
        self.low, self.high, self.seed = low, high, seed
        self.feedback = feedback

    @property
    def matrix(self) -> torch.Tensor | None:
        """The feedback matrix ``B`` in use (``None`` until the first update draws it)."""
        return self.state.get("matrix") if self.state.has("matrix") else None

    def attach(self, model: nn.Module) -> None:
        layers = require_layers(model, self.name)
        for _, layer in layers[:-1]:
            layer.configure(detach_input=True, record={"output"})
        layers[-1][1].configure(detach_input=True)
        if self.feedback is not None and not self.state.has("matrix"):
            self.state.set_buffer("matrix", self.feedback.detach().clone())

    def _matrix(self, error: torch.Tensor, width: int) -> torch.Tensor:
        if not self.state.has("matrix"):
            generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            matrix = torch.empty(error.shape[1], width, dtype=error.dtype)
            self.state.set_buffer("matrix", matrix.uniform_(self.low, self.high, generator=generator).to(error.device))
        matrix = self.state.get("matrix")
        if matrix.shape[0] != error.shape[1] or matrix.shape[1] < width:
            raise ShapeError(
                f"dfa feedback matrix has shape {tuple(matrix.shape)}; it needs {error.shape[1]} rows "
                f"(the output size) and at least {width} columns (the widest hidden layer)"
            )
        return matrix

    def update(self, model: nn.Module, ctx: Context) -> None:
        ctx.require("loss", "output", rule=f"rule '{self.name}'")
        hidden = [layer.recorded("output") for _, layer in weight_layers(model)[:-1]]
        hidden = [h for h in hidden if h.requires_grad]
        if not hidden:
            ctx.loss.backward()
            return
        error = ctx.output_error()
        if error.dim() != 2:
            raise ShapeError(
                f"dfa broadcasts a (batch × n_out) output error, but the model output has shape {tuple(error.shape)}"
            )
        widths = [h[0].numel() for h in hidden]
        matrix = self._matrix(error, max(widths))
        grads = [(error @ matrix[:, :n]).view_as(h) for h, n in zip(hidden, widths, strict=True)]
        torch.autograd.backward([ctx.loss, *hidden], [None, *grads])
