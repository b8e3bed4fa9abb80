"""Sequence models: the step-by-step interface shared by recurrent nets, and the plain LSTM.

A sequence model maps ``x`` of shape ``(batch, T, n_in)`` to outputs ``(batch, T, n_out)``, one
per time step. Its recurrent state is explicit and owned by the model:
[`SequenceNet.reset_state`][bioplaus.nets.lstm.SequenceNet.reset_state] starts a sequence,
[`SequenceNet.step`][bioplaus.nets.lstm.SequenceNet.step] advances one step; ``forward(x)`` does both for a whole
sequence. Tasks drive ``step`` themselves for online rules (``rule.step`` at every time step).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from bioplaus.core import Linear, TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.core.recurrent import LSTMCell, State
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register


class SequenceNet(nn.Module):
    """Base of sequence models: a recurrent core whose per-step features feed a linear readout.

    Subclasses implement [`features`][bioplaus.nets.lstm.SequenceNet.features] (one step of the core, from the carried
    state) and `_reset_core`; the readout and the step counter live here.

    Args:
        n_in: input size per step.
        hidden: recurrent state size.
        n_out: output size per step.
        readout_features: size of the per-step features the readout sees.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.LAYERED, Capability.RECURRENT, Capability.SEQUENCE, Capability.STEPPABLE}
    )

    def __init__(self, n_in: int, hidden: int, n_out: int, readout_features: int):
        super().__init__()
        if min(n_in, hidden, n_out) < 1:
            raise ConfigError(f"n_in, hidden and n_out must be positive integers, got {n_in}, {hidden}, {n_out}")
        self.n_in, self.hidden, self.n_out = n_in, hidden, n_out
        self.lstm = LSTMCell(n_in, hidden)
        self.readout = Linear(readout_features, n_out)
        self.t = 0
        self.state: State | None = None

    _transient: tuple[str, ...] = ("state",)
    """Attributes holding per-sequence tensors (with graphs), dropped when the model is copied or pickled."""

    def reset_state(self, batch_size: int, length: int | None = None) -> None:
        """Start a new sequence: zero state, step counter at 0.

        ``length``: the steps the sequence will run, when known, so that a model with per-sequence
        buffers (SAB's memory) allocates them once, at their final size; stepping further still works.
        """
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise ConfigError(f"length must be a non-negative integer or None, got {length!r}")
        self.t = 0
        self.state = self.lstm.initial_state(batch_size)
        self._reset_core(batch_size, length)

    def _reset_core(self, batch_size: int, length: int | None) -> None:
        """Reset what the subclass carries besides the LSTM state (``length`` as in
        [`reset_state`][bioplaus.nets.lstm.SequenceNet.reset_state])."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Advance the core by one step; return the readout's input for this step."""
        raise NotImplementedError

    def _advance(self, x: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            raise ConfigError(f"{type(self).__name__}.step() needs a state: call reset_state(batch_size) first")
        feats = self.features(x)
        self.t += 1
        return feats

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step, ``x_t`` of shape ``(batch, n_in)`` → output ``(batch, n_out)``."""
        return self.readout(self._advance(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A whole sequence from the zero state: ``(batch, T, n_in)`` → ``(batch, T, n_out)``."""
        if x.dim() != 3 or x.shape[2] != self.n_in:
            raise ShapeError(
                f"{type(self).__name__} expects sequences of shape (batch, T, {self.n_in}), got {tuple(x.shape)}"
            )
        self.reset_state(x.shape[0], x.shape[1])
        return self.readout(torch.stack([self._advance(x[:, t]) for t in range(x.shape[1])], 1))

    def __getstate__(self) -> dict:
        # per-sequence tensors carry autograd graphs, which cannot be copied or pickled
        return self.__dict__ | {name: None for name in self._transient}


class LSTMNet(SequenceNet):
    """An LSTM with a linear readout of ``h_t`` at every step: ``y_t = W_o h_t + b_o``.

    Args:
        n_in: input size per step.
        hidden: LSTM size ``H``.
        n_out: output size per step.
    """

    def __init__(self, n_in: int, hidden: int = 64, n_out: int = 10):
        super().__init__(n_in, hidden, n_out, hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h, self.state = self.lstm(x, self.state, self.t)
        return h


def sequence_sizes(spec: TaskSpec) -> tuple[int, int]:
    """``(n_in, n_out)`` of a sequence task's spec (``input_shape = (T, n_in)``)."""
    if len(spec.input_shape) != 2:
        raise ConfigError(
            f"sequence models need a sequence task (input_shape (T, n_in)), got input_shape {spec.input_shape}"
        )
    return spec.input_shape[1], spec.n_out


@register("lstm")
def lstm(spec: TaskSpec, hidden: int = 64) -> LSTMNet:
    """LSTM with a linear readout of the hidden state at every step (the BPTT/TBPTT baseline)."""
    n_in, n_out = sequence_sizes(spec)
    return LSTMNet(n_in, hidden, n_out)
