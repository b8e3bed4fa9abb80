"""Feedback alignment (FA)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bioplaus.core import Capability, require_layers
from bioplaus.core.rule_state import StateFeedback, state_key
from bioplaus.rules._registry import register
from bioplaus.rules.backprop import Backprop


@register("fa")
class FeedbackAlignment(Backprop):
    r"""Feedback alignment: errors travel backward through fixed random matrices.

    Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback weights support error
    backpropagation for deep learning", Nat. Commun. 7:13276. With ``δ_ℓ = ∂L/∂a_ℓ`` at the
    pre-activation ``a_ℓ = W_ℓ h_{ℓ-1} + b_ℓ``:

    $$
    δ_ℓ = f'(a_ℓ) ⊙ (B_{ℓ+1}^{⊤}\, δ_{ℓ+1}), \qquad
    ΔW_ℓ ∝ -δ_ℓ\, h_{ℓ-1}^{⊤}, \qquad Δb_ℓ ∝ -δ_ℓ
    $$

    where BP would use ``W_{ℓ+1}`` in place of ``B_{ℓ+1}``. ``B_ℓ`` has ``W_ℓ``'s shape (so the
    oracle "FA with B = W is BP" holds exactly; in the paper's (in × out) convention that is
    B = Wᵀ) and is drawn once, like PyTorch's default weight init scaled by ``scale``:
    ``B ~ U(−s/√fan_in, s/√fan_in)`` (fan_in: the weights feeding one output value). The output
    layer's weight gradient is exact; the feedback matrices are buffers of the rule's
    [`state`][bioplaus.core.rule.Rule.state] (moved by ``rule.to``, saved by ``rule.state_dict``);
    [`feedback`][bioplaus.rules.feedback_alignment.FeedbackAlignment.feedback] gives them by layer name, and they can
    be replaced in place. Attaching again to a model whose layers have matrices of the right shapes keeps them. Works
    for every layer kind in `bioplaus.core` (linear, conv, locally connected): the weight-transport
    swap is done by [`FeedbackTransform`][bioplaus.core.weight_ops.FeedbackTransform], so a step costs the same as BP.

    Args:
        scale: multiplies the bound of the uniform distribution of ``B``.
        seed: seed of a private generator for ``B``; ``None`` draws from torch's global generator
            (which the runner seeds per run).
    """

    requires = frozenset({Capability.LAYERED})

    def __init__(self, scale: float = 1.0, seed: int | None = None):
        self.scale = scale
        self.seed = seed

    @property
    def feedback(self) -> dict[str, torch.Tensor]:
        """The feedback matrices ``B`` by layer name (the state's own tensors: edit them in place)."""
        return {name: self.state.get(key) for name, key in self.__dict__.get("_keys", {}).items()}

    def attach(self, model: nn.Module) -> None:
        layers = require_layers(model, self.name)
        keys = {name: state_key(name) for name, _ in layers}
        state = self.state
        kept = all(
            state.has(key) and state.get(key).shape == layer.weight.shape
            for (_, layer), key in zip(layers, keys.values(), strict=True)
        )
        if not kept:
            state.clear()
            generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            for (_, layer), key in zip(layers, keys.values(), strict=True):
                weight = layer.weight
                bound = self.scale / math.sqrt(layer.fan_in)
                matrix = torch.empty(weight.shape, dtype=weight.dtype).uniform_(-bound, bound, generator=generator)
                state.set_buffer(key, matrix.to(weight.device))
        self._keys = keys
        for (_, layer), key in zip(layers, keys.values(), strict=True):
            layer.configure(feedback=StateFeedback(state, key))
