r"""Temporal credit assignment: full and truncated backpropagation through time.

These rules do not compute gradients of their own: they *configure* how the model's recurrent
layers keep their graph, and autograd does the rest.

- ``bptt``: the carried state keeps its whole graph; the gradient is exact,
  $\partial L/\partial\theta = \sum_t \sum_{s \le t} \partial L_t/\partial h_t \,
  \prod_{r=s+1}^{t} \partial h_r/\partial h_{r-1}\, \partial h_s/\partial\theta$.
- ``tbptt(k_trunc)``: the state is detached before every step ``t > 0`` with
  ``t mod k_trunc = 0`` (Williams & Peng, 1990; the truncation grid of Ke et al. 2018's
  reference re-implementation), so the product above
  stops at the start of step ``t``'s segment. ``tbptt(k)`` with ``k ≥ T`` detaches nothing and
  is ``bptt`` exactly. Paths that bypass the carried state keep their gradient: in a sparse
  attentive backtracking model (``sab_lstm``), credit still reaches stored memories through the
  attention, which is what SAB is.
- ``tbptt_stream(k_trunc)``: the same gradient, computed online: the task runs the model one
  step at a time and the rule back-propagates each segment's losses as soon as the segment ends,
  so only the current segment and the graphs still reachable from stored memories stay alive.
"""

from __future__ import annotations

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule
from bioplaus.core.recurrent import StoredStates, recurrent_layers
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import register


def _check_k(k_trunc: int) -> int:
    if isinstance(k_trunc, bool) or not isinstance(k_trunc, int) or k_trunc < 1:
        raise ConfigError(f"k_trunc must be a positive integer (time steps per truncation segment), got {k_trunc!r}")
    return k_trunc


@register("tbptt")
class TBPTT(Rule):
    """Truncated backpropagation through time: the recurrent state is cut every ``k_trunc`` steps.

    Args:
        k_trunc: segment length; gradient flows back along the recurrent state only to the start
            of the current segment (global grid ``[0, k), [k, 2k), …``).
    """

    requires = frozenset({Capability.RECURRENT})

    def __init__(self, k_trunc: int = 5):
        self.k_trunc = _check_k(k_trunc)

    @property
    def truncate_every(self) -> int | None:
        """What the rule sets on every recurrent layer (``None``: never cut)."""
        return self.k_trunc

    def attach(self, model: nn.Module) -> None:
        for _, layer in recurrent_layers(model, self.name):
            layer.configure(truncate_every=self.truncate_every)

    def update(self, model: nn.Module, ctx: Context) -> None:
        ctx.require("loss", rule=f"rule '{self.name}'")
        ctx.loss.backward()


@register("bptt")
class BPTT(TBPTT):
    """Full backpropagation through time: the exact gradient of the whole sequence's loss."""

    def __init__(self) -> None:
        pass

    @property
    def truncate_every(self) -> int | None:
        return None


@register("tbptt_stream")
class StreamingTBPTT(TBPTT):
    r"""``tbptt(k_trunc)`` computed online: each segment's losses are back-propagated when the segment ends.

    With $L = \sum_j L^{(j)}$, $L^{(j)}$ the losses of segment ``j``, the rule calls
    ``backward`` on $L^{(j)}$ at the segment's last step (``(t+1) mod k_trunc = 0``) or at the
    sequence end, keeping the graph (``retain_graph``) because later segments may still reach
    into it through stored memories. By linearity the accumulated ``p.grad`` equals
    ``tbptt(k_trunc)``'s single backward (up to floating-point summation order). Memory is the
    point: the segment's own steps are freed once the state is cut and nothing refers to them,
    so what stays alive is what stored memories still reach, about ``T·k_trunc/k_att`` steps
    for ``sab_lstm`` instead of ``T``.

    Stored states that later segments read (SAB's memory: modules that are
    [`StoredStates`][bioplaus.core.recurrent.StoredStates]) are switched to deferred credit: segment
    backwards stop at them, and their gathered gradients go through their own graphs once, newest
    first, at the sequence end, so no node is walked more often than in a single backward.

    The task runs the model step by step (``rule.online``) and passes each step's loss (or
    ``None``) in ``ctx.loss`` and ``ctx.signals["sequence_end"]``.
    """

    online = True
    requires = frozenset({Capability.RECURRENT, Capability.STEPPABLE})
    signals = frozenset({"loss", "t", "sequence_end"})

    def __init__(self, k_trunc: int = 5):
        super().__init__(k_trunc)
        self._pending: list[torch.Tensor] = []

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        self._set_deferred(model, True)

    def detach(self, model: nn.Module) -> None:
        super().detach(model)
        self._set_deferred(model, False)

    @staticmethod
    def _set_deferred(model: nn.Module, on: bool) -> None:
        for module in model.modules():
            if isinstance(module, StoredStates):
                module.defer_credit = on

    def reset(self, model: nn.Module) -> None:
        self._pending = []

    def step(self, model: nn.Module, ctx: Context) -> None:
        ctx.require("t", rule=f"rule '{self.name}'")
        if ctx.loss is not None:
            self._pending.append(ctx.loss)
        segment_end = (ctx.t + 1) % self.k_trunc == 0
        sequence_end = ctx.signal("sequence_end")
        if (segment_end or sequence_end) and self._pending:
            torch.autograd.backward(torch.stack(self._pending).sum(), retain_graph=True)
            self._pending = []
        if sequence_end:
            for module in model.modules():
                if isinstance(module, StoredStates):
                    module.release_credit()
