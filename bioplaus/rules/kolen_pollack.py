"""Kolen-Pollack: the feedback matrices receive the same updates and decay as the forward weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bioplaus.core import Context, require_layers
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import register
from bioplaus.rules.layer_feedback import LayerFeedbackRule

# optimizers whose update of a parameter depends only on its own gradient and weight decay
# applied the same way to every parameter, so equal gradients give equal steps
_SHARED_STEP = (torch.optim.SGD, torch.optim.AdamW)


@register("kolen_pollack")
class KolenPollack(LayerFeedbackRule):
    r"""Kolen-Pollack: `B` learns by the same change as `W`, with the same decay, so `B → W`.

    Kolen & Pollack (1994), "Backpropagation without weight transport", ICNN; Akrout, Wilson,
    Humphreys, Lillicrap & Tweed (2019), "Deep learning without weight transport", NeurIPS.
    The error goes down through `B` as in feedback alignment; the forward and feedback synapses
    of a layer then change by the same local product of the layer's input and its error
    ($G_\ell$, the gradient written into `W.grad`), and both decay by the same factor
    (bioplaus keeps `B` in `W`'s shape, the paper's $B^\top$):

    $$
    \Delta W_\ell = -\eta\, G_\ell - \lambda W_\ell, \qquad
    \Delta B_\ell = -\eta\, G_\ell - \lambda B_\ell
    \quad\Rightarrow\quad W_{t} - B_{t} = (1 - \eta\lambda)^{t}\,(W_0 - B_0)
    $$

    for plain SGD, whatever the data and the initial `B`; with momentum the difference decays
    faster (rate ≈ ηλ/(1 − μ)), and without decay (λ = 0) it is conserved, the angle between
    `B` and `W` falling only as the shared updates outgrow it. `G_ℓ` is the rule's own gradient:
    every error below the output arrived through the feedback path, not the true one.

    The rule writes `B.grad = W.grad` (this update's share, so accumulation works) and leaves the
    step to the optimizer: `B` is a parameter of the rule's state and sits in the same
    parameter group as `W` ([param_groups][bioplaus.rules.kolen_pollack.KolenPollack.param_groups]), so the
    learning rate, momentum, schedule and decay are the same, and gradient clipping scales both
    alike (the runner clips over every parameter the optimizer holds). The updates are equal
    only for optimizers whose step depends on the gradient and a decoupled decay: SGD (with or
    without momentum) and AdamW. Adam or RMSprop with weight decay add `λW` to the gradient
    before normalising it per entry, so `W − B` no longer decays geometrically (measured about
    four times slower on a small MLP): [check_optimizer][bioplaus.rules.kolen_pollack.KolenPollack.check_optimizer]
    refuses them. Biases have no feedback counterpart.

    Args:
        scale: bound of the initial uniform `B`, as in feedback alignment (any `B` converges).
        seed: seed of a private generator for the initial `B`; `None` uses torch's global one.
        weight_decay: `λ` for `W` and `B` alike (a parameter-group setting, which the optimizer
            applies); `None` leaves the run's weight decay (`--set weight_decay=…`).
    """

    learned = True

    def __init__(self, scale: float = 1.0, seed: int | None = None, weight_decay: float | None = None):
        super().__init__(scale, seed)
        if weight_decay is not None and not weight_decay >= 0:
            raise ConfigError(f"kolen_pollack weight_decay must be a number ≥ 0, not {weight_decay!r}")
        self.weight_decay = weight_decay

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """One group: the model's trainable parameters and the feedback matrices `B`."""
        group: dict[str, Any] = {
            "params": [p for p in model.parameters() if p.requires_grad] + self.feedback_parameters()
        }
        if self.weight_decay is not None:
            group["weight_decay"] = self.weight_decay
        return [group]

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse an optimizer that would not step `W` and `B` alike (coupled L2 decay)."""
        feedback = {id(p) for p in self.feedback_parameters()}
        for group in optimizer.param_groups:
            decayed = group.get("weight_decay", 0.0) and any(id(p) in feedback for p in group["params"])
            if decayed and not isinstance(optimizer, _SHARED_STEP):
                raise ConfigError(
                    f"rule 'kolen_pollack' needs W and B decayed alike, which "
                    f"{type(optimizer).__name__} with weight_decay does not do (its L2 term is "
                    "rescaled per entry): use optimizer 'sgd' or 'adamw'"
                )

    def update(self, model: nn.Module, ctx: Context) -> None:
        layers = require_layers(model, self.name)
        before = [None if layer.weight.grad is None else layer.weight.grad.clone() for _, layer in layers]
        super().update(model, ctx)
        for (_, layer), matrix, earlier in zip(layers, self.feedback_parameters(), before, strict=True):
            grad = layer.weight.grad
            if grad is None:
                continue
            share = grad.clone() if earlier is None else grad - earlier
            matrix.grad = share if matrix.grad is None else matrix.grad + share
