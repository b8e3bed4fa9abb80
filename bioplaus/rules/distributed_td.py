r"""Distributed TD errors ("Artificial Dopamine", Guan et al., NeurIPS 2024).

Every cell $l$ of the model predicts its own Q-values and learns only from its own
double-DQN TD error:

$$
y_l = r + \gamma (1 - \text{term})\, Q_l\big(s', \arg\max_a Q_l(s', a; \theta_l); \theta_l^-\big),
\qquad L_l = \operatorname{mean}_{\text{batch}} \big(Q_l(s, a; \theta_l) - y_l\big)^2 .
$$

The task computes the per-layer losses $L_l$ (``ctx.signals["layer_losses"]``, shape
``(L,)``) and their sum ``ctx.loss``. What makes the errors *distributed* is the rule, not the
task: on [`attach`][bioplaus.rules.distributed_td.DistributedTD.attach] it asks every weight layer of every cell to
detach its input, so no error crosses from cell $l$ into the cells below it, and the task computes the
temporal context without gradient. Then one backward pass of $\sum_l L_l$ writes exactly
$\partial L_l / \partial \theta_l$ into cell $l$ ($\partial L_i/\partial\theta_j
= 0$ for $j \ne i$). The same model under ``bp`` (nothing detached) gets
$\sum_l \partial L_l/\partial\theta$ through the cells below: the paper-fair control.

Per-layer optimisation: the gradient of each cell is clipped to global norm
``clip`` *over that cell's parameters only* (the official ``optax.clip_by_global_norm(1.0)``
per layer), here on the gradients the rule writes. Adam keeps its state per parameter, so one
``torch.optim.Adam`` over all cells equals the official one optimiser per layer once the
clipping is per cell; [`param_groups`][bioplaus.rules.distributed_td.DistributedTD.param_groups] still returns one
group per cell, so per-layer learning rates can be set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule, weight_layers
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import register


def cells_of(model: nn.Module, rule: str) -> list[nn.Module]:
    """The model's cells (``model.cells``), each predicting its own output; ``ConfigError`` if none."""
    cells = getattr(model, "cells", None)
    if not isinstance(cells, nn.ModuleList) or len(cells) == 0:
        raise ConfigError(
            f"rule '{rule}' trains models whose layers each predict the output (a 'cells' ModuleList, "
            f"e.g. model 'ad'); {type(model).__name__} has none: use rule 'bp' for it"
        )
    return list(cells)


@register("distributed_td")
class DistributedTD(Rule):
    r"""Artificial Dopamine: each cell learns from its own TD error only; per-cell gradient clipping.

    Args:
        clip: maximum global gradient norm per cell (official: 1.0); ``None`` disables it.
    """

    requires = frozenset({Capability.LAYERWISE_Q})
    signals = frozenset({"layer_losses"})

    def __init__(self, clip: float | None = 1.0) -> None:
        if clip is not None and not clip > 0:
            raise ConfigError(f"distributed_td clip must be positive or None, got {clip}")
        self.clip = clip

    def attach(self, model: nn.Module) -> None:
        """Detach every cell's input: errors stay inside the cell that made them."""
        for cell in cells_of(model, self.name):
            for _, layer in weight_layers(cell):
                layer.configure(detach_input=True)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """One parameter group per cell."""
        return [{"params": [p for p in cell.parameters() if p.requires_grad]} for cell in cells_of(model, self.name)]

    def update(self, model: nn.Module, ctx: Context) -> None:
        r"""``p.grad += ∂L_l/∂θ_l`` for each cell ``l``, then clip each cell's gradient to norm ``clip``."""
        losses = ctx.signal("layer_losses")
        cells = cells_of(model, self.name)
        if losses.shape != (len(cells),):
            raise ConfigError(
                f"ctx.signals['layer_losses'] must hold one loss per cell ({len(cells)}), "
                f"got shape {tuple(losses.shape)}"
            )
        losses.sum().backward()
        if self.clip is not None:
            for cell in cells:
                torch.nn.utils.clip_grad_norm_(cell.parameters(), self.clip)
