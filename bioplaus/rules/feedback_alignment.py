"""Feedback alignment (FA)."""

from __future__ import annotations

from bioplaus.rules._registry import register
from bioplaus.rules.layer_feedback import LayerFeedbackRule


@register("fa")
class FeedbackAlignment(LayerFeedbackRule):
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
    [`feedback`][bioplaus.rules.layer_feedback.LayerFeedbackRule.feedback] gives them by layer name, and they can
    be replaced in place. Attaching again to a model whose layers have matrices of the right shapes keeps them. Works
    for every layer kind in `bioplaus.core` (linear, conv, locally connected): the weight-transport
    swap is done by [`FeedbackTransform`][bioplaus.core.weight_ops.FeedbackTransform], so a step costs the same as BP.

    Args:
        scale: multiplies the bound of the uniform distribution of ``B``.
        seed: seed of a private generator for ``B``; ``None`` draws from torch's global generator
            (which the runner seeds per run).
    """
