r"""Online learning rules for the feedback-controlled rate RNN (Kaleb, Feulner, Gallego & Clopath, NeurIPS 2024).

Every rule learns ``W_rec`` only (the other weights are frozen while it is attached) at every
time step, from the error ``e_t`` the task passes in ``ctx.signals["feedback_error"]`` (target
minus output, so ``+η(B e_t)·trace`` descends the loss). The rules write
``p.grad = −Δ_t`` (descent sign); an optimizer stepping after every step with learning rate
``η`` gives the official ``W_rec ← W_rec + η Δ_t``. Equations as the official
``modules/learn_alg.py`` computes them, with ``α = dt/τ``, ``φ' = 1[x > 0]``:

- ``rflo`` (random-feedback local online learning, Murray 2019, as used by Kaleb et al.):
  $P_t = (1-\alpha) P_{t-1} + \alpha\, \varphi'(x_t)\, r_{t-1}^\top$,
  $\Delta_t[i,j] = (B e_t)_i\, P_t[i,j]$. This is the correct per-entry form; the released
  ``RFLO_t`` multiplies by the trace's first row broadcast to every unit.
- ``fed`` (feedback-driven, filtered presynaptic rates, no postsynaptic factor):
  $\bar p_t = (1-\alpha)\bar p_{t-1} + \alpha r_t$ ($\bar p_0 = \alpha r_0$),
  $\Delta_t = (B e_t)\,\bar p_t^\top$.
- ``B``: ``feedback="W_fb"`` is the controller's own feedback weights ``M ⊙ W_fb``, so ``B e_t``
  is the feedback input the units receive (the official rules use the unmasked ``W_fb``; the two
  agree for ``fb_density = 1``); ``feedback="W_out"`` is ``W_outᵀ`` (the official
  ``_t`` variants, for nets without a controller).
- ``online_bptt`` (the reference, official ``'bp'``): $\Delta_t = -\partial L_t/\partial W_{rec}$
  with $L_t = \mathrm{mean}_k\, e_{t,k}^2$ per trial, through the whole history back to
  the trial start, with the controller loop **detached** (the fed-back error is an external
  input, official ``error_detach=True``). Because the error is integrated, ``L_t``
  still depends on every earlier output. Each step's Jacobian uses the weights of that step
 .

The trace and filtered rates have one entry per trial, so a batch of trials of a model split
into conditions (``RateRNN.split_conditions``) learns every condition's ``W_rec`` in one pass;
the update of a condition is the mean over its trials.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule
from bioplaus.errors import ConfigError
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.rules._registry import register

FEEDBACK = ("W_fb", "W_out")


class FeedbackControlRule(Rule):
    """Base of the online rules of [`bioplaus.rules.feedback_control`][bioplaus.rules.feedback_control]: ``W_rec``
    only, loop detached (the updates come from recorded rates and errors, so no autograd graph is needed)."""

    online = True
    needs_graph: ClassVar[bool] = False
    requires = frozenset({Capability.CONTROLLED_RNN})
    signals = frozenset({"feedback_error", "t"})
    reference = "online_bptt"

    def __init__(self) -> None:
        self._frozen: list[nn.Parameter] = []

    def _model(self, model: nn.Module) -> RateRNN:
        if not isinstance(model, RateRNN):
            raise ConfigError(
                f"rule '{self.name}' learns the recurrent weights of a RateRNN (model 'rate_rnn'), "
                f"got {type(model).__name__}"
            )
        if model.state is None:
            raise ConfigError(f"rule '{self.name}': reset the model (model.reset(batch)) before the trial")
        return model

    def attach(self, model: nn.Module) -> None:
        if not isinstance(model, RateRNN):
            raise ConfigError(f"rule '{self.name}' needs a RateRNN (model 'rate_rnn'), got {type(model).__name__}")
        self._frozen = [p for name, p in model.named_parameters() if name != "W_rec" and p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)
        model.detach_feedback = True

    def detach(self, model: nn.Module) -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        model.detach_feedback = False

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [model.W_rec]}]

    @staticmethod
    def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
        param.grad = grad if param.grad is None else param.grad.add_(grad)


class _LocalRule(FeedbackControlRule):
    """A local rule ``Δ_t = (B e_t) ⊗ presynaptic term``: the learning signal is the projected error."""

    def __init__(self, feedback: str = "W_fb"):
        super().__init__()
        if feedback not in FEEDBACK:
            raise ConfigError(f"feedback must be one of {FEEDBACK} (B = M⊙W_fb or W_outᵀ), got {feedback!r}")
        self.feedback = feedback

    def projection(self, model: RateRNN) -> torch.Tensor:
        """``B``, shape ``(n, n_out)``: ``M ⊙ W_fb`` or ``W_outᵀ``."""
        return (model.feedback_weights if self.feedback == "W_fb" else model.W_out.T).detach()

    def learning_signal(self, model: RateRNN, ctx: Context) -> torch.Tensor:
        """``B e_t`` per trial, ``(batch, n)``."""
        return ctx.signal("feedback_error").detach() @ self.projection(model).T

    def _write(self, model: RateRNN, signal: torch.Tensor, presynaptic: torch.Tensor) -> None:
        """``p.grad += −Δ_t``, ``Δ_t[i, j] = signal_i · presynaptic[i, j]`` (presynaptic may broadcast over i).

        The per-trial product goes into a scratch tensor kept across steps (a fresh ``(B, n, n)``
        tensor per step costs more than the product on a CPU), unless ``W_rec.grad`` still is that
        tensor. The scratch holds no state (it is overwritten at every step), so it is not saved.
        """
        shape = (signal.shape[0], signal.shape[1], presynaptic.shape[-1])
        grad, buffer = model.W_rec.grad, self.__dict__.get("_scratch")
        if buffer is None or buffer.shape != shape or (grad is not None and grad.data_ptr() == buffer.data_ptr()):
            self._scratch = buffer = signal.new_empty(shape)
        torch.mul(signal.neg().unsqueeze(-1), presynaptic, out=buffer)
        self._accumulate(model.W_rec, model.per_condition(buffer))


@register("rflo")
class RFLO(_LocalRule):
    r"""RFLO: ``Δ_t[i,j] = (B e_t)_i P_t[i,j]`` with the eligibility trace ``P_t = (1−α)P_{t−1} + α φ'(x_t) r_{t−1}ᵀ``.

    Args:
        feedback: ``"W_fb"`` (B = the controller's feedback weights) or ``"W_out"`` (B = W_outᵀ).
    """

    def reset(self, model: nn.Module) -> None:
        s = self._model(model).state
        self.state.set_buffer("trace", s.x.new_zeros(s.x.shape[0], model.n, model.n))

    def step(self, model: nn.Module, ctx: Context) -> None:
        model, s = self._model(model), model.state
        trace = self.state.get("trace")  # P_t, (B, n, n)
        post = (s.x > 0).to(s.x.dtype).unsqueeze(-1)  # φ'(x_t), (B, n, 1)
        trace.baddbmm_(post, s.r_prev.detach().unsqueeze(1), beta=1 - model.alpha, alpha=model.alpha)
        self._write(model, self.learning_signal(model, ctx), trace)


@register("fed")
class FED(_LocalRule):
    r"""FED: ``Δ_t = (B e_t) p̄_tᵀ`` with filtered presynaptic rates ``p̄_t = (1−α)p̄_{t−1} + α r_t``, ``p̄_0 = α r_0``.

    Args:
        feedback: ``"W_fb"`` (B = the controller's feedback weights) or ``"W_out"`` (B = W_outᵀ).
    """

    def reset(self, model: nn.Module) -> None:
        model = self._model(model)
        self.state.set_buffer("filtered", model.alpha * model.state.r.detach())

    def step(self, model: nn.Module, ctx: Context) -> None:
        model = self._model(model)
        filtered = (1 - model.alpha) * self.state.get("filtered") + model.alpha * model.state.r.detach()
        self.state.set_buffer("filtered", filtered)
        self._write(model, self.learning_signal(model, ctx), filtered.unsqueeze(1))


@register("online_bptt")
class OnlineBPTT(FeedbackControlRule):
    r"""Online BPTT with the loop detached: ``p.grad += ∂L_t/∂W_rec`` at every step, ``L_t = mean_k e_{t,k}²``.

    The gradient runs through the whole trial so far (recurrence and integrated error), not
    through the controller loop; with conditions, ``L_t`` is each condition's mean over its
    trials. It is computed by a hand-written adjoint over the stored history (no autograd
    graph, so the task runs the trial without one): with ``b_t = ∂L_t/∂r_s`` the direct term
    (the same for every ``s ≤ t`` for a position error, ``s = t`` only for a velocity error),

    $$
    \delta_t = D_t b_t, \qquad
    \delta_s = D_s \big(b_t + \alpha W_{s+1}^\top \delta_{s+1}\big) + (1-\alpha)\, \delta_{s+1},
    \qquad \frac{\partial L_t}{\partial W_{rec}} = \alpha \sum_{s \le t} \delta_s r_{s-1}^\top
    $$

    with ``D_s = diag φ'(x_s)`` and ``W_s`` the weights used at step ``s`` (stored per step: the
    exact gradient under online updates). The official code lets autograd reuse the
    current weights for the whole history. Cost ``O(t n²)`` per step; tested against an autograd
    unroll.
    """

    def reset(self, model: nn.Module) -> None:
        """Start the trial's history in the rule's state: per step ``φ'(x_s)``, ``r_{s−1}`` and ``W_s``.

        The history is rebuilt at every trial start, so it is kept as lists on the state module,
        not as buffers (checkpoints fall between trials).
        """
        self.state.gates = []  # D_s as vectors φ'(x_s), (B, n)
        self.state.pre = []  # r_{s−1}, (B, n)
        self.state.weights = []  # W_s

    def step(self, model: nn.Module, ctx: Context) -> None:
        model, s, history = self._model(model), model.state, self.state
        gates, pres, weights = history.gates, history.pre, history.weights
        gates.append((s.x > 0).to(s.x.dtype).detach())
        pres.append(s.r_prev.detach())
        weights.append(model.W_rec.detach().clone())
        e = ctx.signal("feedback_error").detach()
        per_condition = e.shape[0] // model.conditions if model.W_rec.dim() == 3 else e.shape[0]
        position = model.error == "position"
        grad_v = -2.0 / (per_condition * e.shape[1]) * (model.dt if position else 1.0) * e  # ∂L_t/∂v_s
        direct = model.readout_vjp(grad_v, s.cursor)  # ∂L_t/∂r_s for the steps the error depends on
        t, alpha = len(gates), model.alpha
        delta = e.new_empty(e.shape[0], t, model.n)
        delta[:, -1] = gates[-1] * direct
        for i in range(t - 2, -1, -1):
            back = model.recurrent_vjp(delta[:, i + 1], weights[i + 1]).mul_(alpha)
            if position:
                back.add_(direct)
            delta[:, i] = back.mul_(gates[i]).add_(delta[:, i + 1], alpha=1 - alpha)
        pre = torch.stack(pres, 1)
        if model.W_rec.dim() == 3:
            grad = torch.bmm(delta.reshape(model.conditions, -1, model.n).transpose(1, 2),
                             pre.reshape(model.conditions, -1, model.n))  # fmt: skip
        else:
            grad = delta.reshape(-1, model.n).T @ pre.reshape(-1, model.n)
        self._accumulate(model.W_rec, grad.mul_(alpha))
