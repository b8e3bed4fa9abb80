r"""Artificial Dopamine (AD) network: a stack of cells, each predicting its own Q-values.

Guan et al., "Temporal-Difference Learning Using Distributed Error Signals", NeurIPS 2024;
the cell and connections follow the official code (``ad_layers.AttentionADCell``,
``AD_DQN._layer_input``).

**Cell** (Fig. 3). With the cell input $x$, hidden width $d$, $A$ actions and
$H$ heads,

$$
h = \mathrm{LN}\big(\mathrm{ReLU}(W_h x + b_h)\big), \qquad
M = (W_{z2} x)_{A\times H}\,(W_{z1} x)_{H\times d}, \qquad
Q = \tanh\!\Big(\frac{M - \bar M}{\sigma(M) + 10^{-6}}\Big)\, h,
$$

the mean and (population) standard deviation of $M$ taken per action row over the
$d$ axis. The attention weights come from $x$, not from $h$, so the
gradient of the cell's own loss reaches $W_h, b_h$, the LayerNorm and $W_{z1},
W_{z2}$: "local" means local to a cell. The three matrices read the same input and are stored as
one [`Linear`][bioplaus.core.layers.Linear] (one matrix product; the paper's ``W_h`` bias is ``b_h``).

**Connections** (Fig. 2). Cell $l$ at time $t$ reads, in the official order,

$$
x_l^t = [\,h_{l-1}^t \;(l>0),\; s_t \;(l=0 \text{ or input skip}),\;
h_l^{t-1} \;(\text{recurrent}),\; h_{l+1}^{t-1} \;(\text{forward}, l<L-1)\,],
$$

so upper layers send their activations to lower layers at the next time step. The previous
step's activations are the *context*; with both temporal connections off the network is Markov.
The context enters multiplied by the official scalar connection weights (``recurrent_weight``,
``forward_weight``; 1 in the official config). The cell is scale-invariant in ``x`` (LayerNorm;
rows of ``M`` normalised), so these weights set how much the context outweighs the observation:
on CartPole, whose observations are small, weights of 1 drown the observation and AD does not
learn (``docs/artificial_dopamine.md``).
Acting uses the mean of the layers' Q (``average_predictions``); the TD targets are per layer.

**Numerics**: Flax's ``lecun_normal`` initialisation (a normal truncated at two
standard deviations, variance ``1/fan_in``) with zero biases, LayerNorm with ``eps = 1e-6`` and a
learnable affine map. The network is rule-agnostic: ``distributed_td`` asks each cell's
[`Linear`][bioplaus.core.layers.Linear] to detach its input on ``attach``; ``bp`` leaves it connected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bioplaus.core import Linear, TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register

_TRUNC_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated at ±2 (Flax's variance_scaling correction)."""


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Flax's ``lecun_normal``: truncated normal (±2σ) with variance ``1 / fan_in`` (axis 1 is the input)."""
    std = math.sqrt(1.0 / weight.shape[1]) / _TRUNC_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class ADCell(nn.Module):
    """One AD cell: ``x → (h, Q)`` (module docstring).

    Args:
        in_features: size of the cell input ``x``.
        hidden: width ``d`` of ``h``.
        n_actions: number of actions ``A``.
        heads: number of attention heads ``H`` (the official config uses 8).
    """

    def __init__(self, in_features: int, hidden: int, n_actions: int, heads: int = 8) -> None:
        super().__init__()
        self.hidden, self.n_actions, self.heads = hidden, n_actions, heads
        self.fc = Linear(in_features, hidden * (1 + heads) + heads * n_actions, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        lecun_normal_(self.fc.weight.data)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the activations ``h`` ``(B, d)`` and this cell's Q-values ``(B, A)``."""
        d, H, A = self.hidden, self.heads, self.n_actions
        pre, z1, z2 = self.fc(x).split([d, H * d, H * A], dim=-1)
        h = self.norm(F.relu(pre + self.bias))
        m = z2.unflatten(-1, (H, A)).transpose(-1, -2) @ z1.unflatten(-1, (H, d))  # (B, A, d)
        centred = m - m.mean(-1, keepdim=True)
        std = centred.square().mean(-1, keepdim=True).sqrt()  # population std (torch.std_mean is 8x slower on CPU)
        weights = torch.tanh(centred / (std + 1e-6))
        return h, (weights @ h.unsqueeze(-1)).squeeze(-1)


class ADOutput(NamedTuple):
    """What [`ADNet`][bioplaus.nets.ad.ADNet] returns for one time step.

    Attributes:
        q: per-layer Q-values ``(L, B, A)``.
        hidden: the layers' activations ``[h_0, …, h_{L-1}]``, the context of the next step.
    """

    q: torch.Tensor
    hidden: list[torch.Tensor]


class ADNet(nn.Module):
    """A stack of [`ADCell`][bioplaus.nets.ad.ADCell] with input-skip, self-recurrent and forward-in-time connections.

    Args:
        in_features: observation size (observations are flattened after the batch axis).
        n_actions: number of discrete actions.
        hidden: widths of the cells (official: ``[128, 96, 96]``).
        heads: attention heads per cell.
        input_skip: every cell also reads the observation ``s_t``.
        recurrent: cell ``l`` reads its own ``h_l^{t-1}``.
        forward_connections: cell ``l`` reads ``h_{l+1}^{t-1}`` of the cell above.
        recurrent_weight: fixed scalar on ``h_l^{t-1}`` in the cell input (official default 1).
        forward_weight: fixed scalar on ``h_{l+1}^{t-1}`` in the cell input (official default 1).

    Raises:
        ConfigError: for empty or non-positive widths or heads.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LAYERED, Capability.LAYERWISE_Q})

    def __init__(
        self,
        in_features: int,
        n_actions: int,
        hidden: Sequence[int] = (128, 96, 96),
        heads: int = 8,
        input_skip: bool = True,
        recurrent: bool = True,
        forward_connections: bool = True,
        recurrent_weight: float = 1.0,
        forward_weight: float = 1.0,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in hidden]
        if not widths or min(widths) < 1 or heads < 1 or n_actions < 1:
            raise ConfigError(
                f"ad needs at least one cell width, positive widths, heads and actions; got hidden={list(hidden)}, "
                f"heads={heads}, n_actions={n_actions}"
            )
        self.in_features, self.n_actions, self.widths = in_features, n_actions, widths
        self.input_skip, self.recurrent, self.forward_connections = input_skip, recurrent, forward_connections
        self.recurrent_weight, self.forward_weight = recurrent_weight, forward_weight
        self.cells = nn.ModuleList(
            ADCell(self._cell_inputs(layer), width, n_actions, heads) for layer, width in enumerate(widths)
        )

    @property
    def uses_context(self) -> bool:
        """Whether any connection through time is on (False: the network is Markov)."""
        return self.recurrent or (self.forward_connections and len(self.widths) > 1)

    def _cell_inputs(self, layer: int) -> int:
        size = self.widths[layer - 1] if layer > 0 else 0
        size += self.in_features if layer == 0 or self.input_skip else 0
        size += self.widths[layer] if self.recurrent else 0
        above = self.forward_connections and layer + 1 < len(self.widths)
        return size + (self.widths[layer + 1] if above else 0)

    def initial_context(self, batch_size: int) -> list[torch.Tensor]:
        """The zero context of an episode start: one ``(batch_size, d_l)`` tensor per layer."""
        param = self.cells[0].bias
        return [param.new_zeros(batch_size, width) for width in self.widths]

    def forward(self, obs: torch.Tensor, context: Sequence[torch.Tensor] | None = None) -> ADOutput:
        """Per-layer Q-values and activations at one time step.

        Args:
            obs: observations ``(B, ...)``.
            context: the previous step's activations ([`initial_context`][bioplaus.nets.ad.ADNet.initial_context] at an
                episode start; ``None`` means zeros).

        Raises:
            ShapeError: when the observation or context sizes do not match the network.
        """
        s = obs.flatten(1)
        if s.shape[1] != self.in_features:
            raise ShapeError(f"ad expects observations of {self.in_features} values, got shape {tuple(obs.shape)}")
        ctx = self.initial_context(s.shape[0]) if context is None else list(context)
        if len(ctx) != len(self.widths):
            raise ShapeError(f"the context must hold one tensor per cell ({len(self.widths)}), got {len(ctx)}")
        qs, hidden, below = [], [], None
        last = len(self.cells) - 1
        for layer, cell in enumerate(self.cells):
            parts = [] if below is None else [below]
            parts += [s] if layer == 0 or self.input_skip else []
            parts += [self.recurrent_weight * ctx[layer]] if self.recurrent else []
            parts += [self.forward_weight * ctx[layer + 1]] if self.forward_connections and layer < last else []
            below, q = cell(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
            qs.append(q)
            hidden.append(below)
        return ADOutput(torch.stack(qs), hidden)


@register("ad")
def ad(
    spec: TaskSpec,
    hidden: Sequence[int] = (128, 96, 96),
    heads: int = 8,
    input_skip: bool = True,
    recurrent: bool = True,
    forward_connections: bool = True,
    recurrent_weight: float = 1.0,
    forward_weight: float = 1.0,
) -> ADNet:
    """Artificial Dopamine: attention cells that each predict Q, with connections through time."""
    return ADNet(
        spec.in_features,
        spec.n_out,
        hidden,
        heads,
        input_skip,
        recurrent,
        forward_connections,
        recurrent_weight,
        forward_weight,
    )
