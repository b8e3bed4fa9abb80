"""The recurrent layer kind: a weight layer that carries a state from one time step to the next.

One step of a recurrent layer is an ordinary weight operation on the input and the fed-back
output, followed by the cell's state update,

$$
a_t = W \\,[x_t ; h_{t-1}] + b, \\qquad (h_t, s_t) = \\mathrm{cell}(a_t, s_{t-1}),
$$

so everything a rule can ask of a [`Layer`][bioplaus.core.layers.Layer] (recording ``input`` =
``[x_t; h_{t-1}]``, ``pre`` = ``a_t`` and ``output`` = ``h_t`` at each step, feedback weights,
a detached input) works per time step unchanged. What is new is how the carried state keeps its
graph, set by [`RecurrentSettings`][bioplaus.core.recurrent.RecurrentSettings]: ``truncate_every = k`` cuts it before
every step ``t > 0`` with ``t mod k = 0`` (truncated BPTT on a global grid: segments ``[0, k), [k, 2k), …``),
``None`` keeps it whole (full BPTT).

The state is explicit: the layer is a function of ``(x_t, state, t)`` and the module that owns
the layer keeps the state and resets it at sequence start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bioplaus.core.layers import LayerSettings, Linear
from bioplaus.errors import ConfigError, ShapeError

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class RecurrentSettings(LayerSettings):
    """Layer settings of recurrent layers.

    Attributes:
        truncate_every: ``k``: detach the carried state before every step ``t > 0`` with
            ``t mod k = 0``, so no gradient flows back further than the start of the current
            ``k``-step segment; ``None`` never detaches (full backpropagation through time).
    """

    truncate_every: int | None = None

    def __post_init__(self) -> None:
        k = self.truncate_every
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"truncate_every must be a positive integer or None (no truncation), got {k!r}")


class RecurrentLayer(Linear):
    """Base class of recurrent layer kinds: ``a_t = W [x_t; h_{t−1}] + b``, then the cell's update.

    ``W`` has shape ``(gates · hidden, in_features + hidden)``. Subclasses define
    [`cell`][bioplaus.core.recurrent.RecurrentLayer.cell] and, if the state holds more than ``h``,
    [`n_state`][bioplaus.core.recurrent.RecurrentLayer.n_state]. The first state tensor is always ``h``, the output
    that is fed back.

    Args:
        in_features: size of ``x_t``.
        hidden: size of ``h_t``.
        gates: blocks of ``hidden`` rows in ``W`` (4 for an LSTM, 1 for a vanilla RNN).
        bias: whether to add a learned bias.
    """

    settings_type = RecurrentSettings
    n_state: int = 1
    """Number of tensors in the state (``h`` first)."""

    def __init__(self, in_features: int, hidden: int, gates: int = 1, bias: bool = True):
        if min(in_features, hidden, gates) < 1:
            raise ConfigError(f"in_features, hidden and gates must be positive, got {in_features}, {hidden}, {gates}")
        super().__init__(in_features + hidden, gates * hidden, None, bias)
        self.input_size, self.hidden = in_features, hidden

    def initial_state(self, batch_size: int) -> State:
        """The zero state of a batch: ``n_state`` tensors of shape ``(batch_size, hidden)``."""
        zeros = self.weight.new_zeros(batch_size, self.hidden)
        return (zeros,) * self.n_state

    def carry(self, state: State, t: int) -> State:
        """The state as step ``t`` receives it: detached at the truncation grid, else unchanged."""
        k = self.settings.truncate_every
        if k is not None and t > 0 and t % k == 0:
            return tuple(s.detach() for s in state)
        return state

    def cell(self, pre: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The state update from the pre-activation ``a_t``; returns ``(h_t, state_t)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: State, t: int) -> tuple[torch.Tensor, State]:  # type: ignore[override]
        """One time step: ``(x_t, state_{t−1}, t) → (h_t, state_t)``, with ``x_t`` of shape ``(batch, in_features)``."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ShapeError(
                f"{self!r} expects one time step of shape (batch, {self.input_size}), got {tuple(x.shape)}"
            )
        state = self.carry(state, t)
        pre = super().forward(torch.cat([x, state[0]], 1))
        h, state = self.cell(pre, state)
        if "output" in self.settings.record:
            self.trace["output"] = h
        return h, state

    def extra_repr(self) -> str:
        return f"{self.input_size} → {self.hidden}, truncate_every={self.settings.truncate_every}"


class LSTMCell(RecurrentLayer):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber, 1997), the gate layout of ``torch.nn.LSTMCell``.

    $$
    [i; f; o] = \sigma(a_{1:3H}), \quad g = \tanh(a_{3H:4H}), \quad
    c_t = f \odot c_{t-1} + i \odot g, \quad h_t = o \odot \tanh(c_t)
    $$

    (gate blocks ordered input, forget, output, cell candidate). State ``(h, c)``; init
    U(−1/√H, 1/√H) for every weight and bias, as PyTorch's.
    """

    n_state = 2

    def __init__(self, in_features: int, hidden: int, bias: bool = True):
        super().__init__(in_features, hidden, gates=4, bias=bias)
        bound = 1.0 / math.sqrt(hidden)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def cell(self, pre: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        H = self.hidden
        i, f, o = torch.sigmoid(pre[:, : 3 * H]).chunk(3, 1)
        c = f * state[1] + i * torch.tanh(pre[:, 3 * H :])
        h = o * torch.tanh(c)
        return h, (h, c)


def recurrent_layers(model: nn.Module, rule: str) -> list[tuple[str, RecurrentLayer]]:
    """The model's recurrent layers with their names; none raises ``ConfigError`` naming the fix."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, RecurrentLayer)]
    if not layers:
        raise ConfigError(
            f"rule '{rule}' configures recurrent layers, and {type(model).__name__} has none: use a sequence "
            "model built on bioplaus.core.RecurrentLayer (e.g. the 'lstm', 'sab_lstm' or 'attn_lstm' models)"
        )
    return layers


class StoredStates:
    """Mixin of modules that store states for later steps to read (SAB's memory, say).

    Later truncation segments reach back into stored states, so a backward per segment would walk
    through each stored state's own graph again and again. With `defer_credit` on (set by
    a streaming rule before the sequence starts), such a module lets segment backwards stop at
    its stored states, accumulates their gradients, and
    [`release_credit`][bioplaus.core.recurrent.StoredStates.release_credit] (called by the rule at the sequence end)
    sends each accumulated gradient through the state's own graph once, newest first (a state's graph only reaches
    states stored before it), so every node is walked as often as in a single backward.
    """

    defer_credit: bool = False

    def release_credit(self) -> None:
        """Back-propagate the gradients the stored states gathered through their own graphs, newest first."""
        raise NotImplementedError
