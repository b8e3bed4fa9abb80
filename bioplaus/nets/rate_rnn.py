r"""A leaky ReLU rate network in a closed loop with a proportional feedback controller.

The model of Kaleb, Feulner, Gallego & Clopath (NeurIPS 2024) and Feulner et al. (2022;
Nat. Commun. 2025), written from the paper's equations (the Feedback control page of the documentation). With
$\alpha = dt/\tau$ (0.01 / 0.05 = 0.2), for a batch of trials,

$$
\begin{aligned}
x_t &= (1-\alpha)\, x_{t-1} + \alpha\,\big(W_{in} u_t + W_{rec} r_{t-1} + g\,(M \odot W_{fb})\, c_t + b\big),
\qquad r_t = \mathrm{ReLU}(x_t) \\
v_t &= R\,(W_{out} r_t + b_{out} + p_t) \\
e_t &= e_{t-1} + dt\,(v^*_t - v_t) \quad\text{(position error; velocity error: } e_t = v^*_t - v_t) \\
c_t &= e_{t-1-d}
\end{aligned}
$$

``u_t`` is the task input, ``v_t`` the cursor velocity (the hand velocity ``W_out r_t + b_out``
plus an external push ``p_t``, rotated by ``R`` under a cursor rotation), ``v*_t`` the reference
velocity, ``e`` the error the controller feeds back with delay ``d`` (``e_0 = 0``, and errors
before the trial are 0, so the controller is causal). ``g`` is the per-trial
controller gain: ``g = 0`` switches control off and keeps the neurons' bias ``b`` (P4; in the
official code ``b`` is the feedback layer's bias and stays on with ``fb_in = False``). ``M`` is
a fixed Bernoulli(``fb_density``) mask; a net without a controller has ``M = 0`` and a frozen
``W_fb``.

Deviations from the official code, on purpose: ``e_0 = 0`` (the official accumulator starts at
``W_out r_0 + b_out``, which makes the initial error depend on the initial state), and the
cursor rotation rotates the whole readout including ``b_out`` and the push (Feulner rotates
``W_out`` only).

Why a standalone module rather than [`RecurrentLayer`][bioplaus.core.recurrent.RecurrentLayer]: that layer
concatenates input and recurrent weights into one matrix, while here ``W_in``, ``W_rec`` and
``W_fb`` are separate, only ``W_rec`` is plastic during adaptation, and the loop runs through an
integrator and a delay line that belong to the model. The state is explicit
([`LoopState`][bioplaus.nets.rate_rnn.LoopState], reset by the task with
[`RateRNN.reset`][bioplaus.nets.rate_rnn.RateRNN.reset]). For vectorised adaptation experiments,
[`RateRNN.split_conditions`][bioplaus.nets.rate_rnn.RateRNN.split_conditions] gives every experimental condition its
own copy of ``W_rec`` (shape ``(C, n, n)``); a batch of ``B = C·k`` trials is then laid out condition-major (trials
``c·k … c·k + k − 1`` use ``W_rec[c]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bioplaus.core import TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register

ERROR_KINDS = ("position", "velocity")


@dataclass
class LoopState:
    """The closed loop's state after step ``t`` of a batch of ``B`` trials.

    Attributes:
        x: membrane potentials ``x_t``, ``(B, n)``.
        r: rates ``r_t = ReLU(x_t)``, ``(B, n)``.
        r_prev: rates of the step before, ``r_{t−1}``, ``(B, n)``.
        v: cursor velocity ``v_t``, ``(B, 2)``.
        e: error ``e_t``, ``(B, 2)`` (target minus output).
        fed_back: the error the controller fed back at this step, ``c_t``, ``(B, 2)``.
        delay_line: ``[e_{t−d}, …, e_t]``: the controller's next inputs.
        control: controller gain ``g`` per trial, ``(B, 1)``.
        t: steps taken since [`RateRNN.reset`][bioplaus.nets.rate_rnn.RateRNN.reset].
        cursor: the cursor rotations of the last step ``(B, n_out, n_out)``, or ``None``.
    """

    x: torch.Tensor
    r: torch.Tensor
    r_prev: torch.Tensor
    v: torch.Tensor
    e: torch.Tensor
    fed_back: torch.Tensor
    delay_line: list[torch.Tensor]
    control: torch.Tensor
    t: int = 0
    cursor: torch.Tensor | None = None


@dataclass
class Rollout:
    """A whole trial, stacked over time: each field ``(B, T, ·)``; see
    [`LoopState`][bioplaus.nets.rate_rnn.LoopState]."""

    x: torch.Tensor
    r: torch.Tensor
    v: torch.Tensor
    e: torch.Tensor
    fed_back: torch.Tensor


class RateRNN(nn.Module):
    """Leaky ReLU rate RNN with a velocity readout, an integrated error and a feedback controller.

    Initialisation is PyTorch's default, as the official code's ``nn.RNN``/``nn.Linear``:
    ``W_in, W_rec, W_out, b_out ~ U(±1/√n)`` and ``W_fb, b ~ U(±1/√2)``.

    Args:
        n: number of rate units.
        n_in: input size (3: the cue ``Δx, Δy`` and the hold signal).
        n_out: readout size (2: planar velocity).
        controller: whether the net has a controller (``False``: mask 0 and ``W_fb`` frozen).
        fb_density: fraction of units that receive feedback (the mask ``M``), with a controller.
        fb_delay: ``d``: the controller sees ``e_{t−1−d}``.
        error: ``"position"`` (integrated velocity error, the reaching setting) or ``"velocity"``.
        dt: time step in seconds.
        tau: membrane time constant in seconds (``α = dt/τ``).
        mask_seed: seed of the feedback mask (used only when ``fb_density < 1``).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.CONTROLLED_RNN})

    def __init__(
        self,
        n: int = 200,
        n_in: int = 3,
        n_out: int = 2,
        controller: bool = True,
        fb_density: float = 1.0,
        fb_delay: int = 0,
        error: str = "position",
        dt: float = 0.01,
        tau: float = 0.05,
        mask_seed: int = 0,
    ):
        super().__init__()
        if min(n, n_in, n_out) < 1:
            raise ConfigError(f"n, n_in and n_out must be positive integers, got {n}, {n_in}, {n_out}")
        if error not in ERROR_KINDS:
            raise ConfigError(f"error must be one of {ERROR_KINDS}, got {error!r}")
        if not 0.0 <= fb_density <= 1.0:
            raise ConfigError(f"fb_density must be in [0, 1], got {fb_density}")
        if fb_delay < 0:
            raise ConfigError(f"fb_delay must be a non-negative number of steps, got {fb_delay}")
        if not 0 < dt <= tau:
            raise ConfigError(f"need 0 < dt ≤ tau for a stable Euler step, got dt={dt}, tau={tau}")
        self.config: dict[str, Any] = dict(
            n=n, n_in=n_in, n_out=n_out, controller=controller, fb_density=fb_density, fb_delay=fb_delay,
            error=error, dt=dt, tau=tau, mask_seed=mask_seed,
        )  # fmt: skip
        self.n, self.n_out, self.fb_delay, self.error, self.dt = n, n_out, fb_delay, error, dt
        self.alpha = dt / tau
        bound, fb_bound = 1 / math.sqrt(n), 1 / math.sqrt(n_out)
        self.W_in = nn.Parameter(torch.empty(n, n_in).uniform_(-bound, bound))
        self.W_rec = nn.Parameter(torch.empty(n, n).uniform_(-bound, bound))
        self.W_out = nn.Parameter(torch.empty(n_out, n).uniform_(-bound, bound))
        self.b_out = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        self.W_fb = nn.Parameter(torch.empty(n, n_out).uniform_(-fb_bound, fb_bound), requires_grad=controller)
        self.b = nn.Parameter(torch.empty(n).uniform_(-fb_bound, fb_bound))
        density = fb_density if controller else 0.0
        mask = torch.rand(n, n_out, generator=torch.Generator().manual_seed(mask_seed)) < density
        self.register_buffer("fb_mask", mask.to(self.W_fb.dtype))
        self.detach_feedback = False
        """Cut the graph at the fed-back error (the loop counts as an external input)."""
        self.state: LoopState | None = None

    # conditions ------------------------------------------------------------------------------
    @property
    def conditions(self) -> int:
        """Number of per-condition copies of ``W_rec`` (1 when ``W_rec`` is a plain ``(n, n)`` matrix)."""
        return self.W_rec.shape[0] if self.W_rec.dim() == 3 else 1

    def split_conditions(self, conditions: int) -> RateRNN:
        """Give each of ``conditions`` experimental conditions its own copy of ``W_rec``, ``(C, n, n)``.

        Returns ``self``. Batches must then hold ``C·k`` trials, condition-major.
        """
        if conditions < 1 or self.W_rec.dim() != 2:
            raise ConfigError(f"split_conditions needs a (n, n) W_rec and conditions ≥ 1, got {conditions}")
        w = self.W_rec.detach().unsqueeze(0).repeat(conditions, 1, 1)
        self.W_rec = nn.Parameter(w, requires_grad=self.W_rec.requires_grad)
        return self

    def per_condition(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-trial ``values`` ``(B, …)`` over each condition's trials: ``(C, …)``, or ``(…)`` if unsplit."""
        if self.W_rec.dim() == 2:
            return values.mean(0)
        if values.shape[0] == self.conditions:
            return values
        return values.reshape(self.conditions, -1, *values.shape[1:]).mean(1)

    # dynamics --------------------------------------------------------------------------------
    @property
    def feedback_weights(self) -> torch.Tensor:
        """``M ⊙ W_fb``: the weights that carry the controller's input to the units."""
        return self.fb_mask * self.W_fb

    def reset(
        self, batch: int, control: float | torch.Tensor = 1.0, generator: torch.Generator | None = None
    ) -> LoopState:
        """Start ``batch`` trials: ``x_0 ~ U(−0.1, 0.1)`` (fresh every trial), ``e_0 = 0``, empty delay line.

        Args:
            batch: number of trials (a multiple of [`conditions`][bioplaus.nets.rate_rnn.RateRNN.conditions]).
            control: controller gain ``g``, a number or one per trial ``(batch,)``; 0 switches control off.
            generator: random generator of the initial states.
        """
        if batch % self.conditions:
            raise ShapeError(f"a batch of {batch} trials cannot be split evenly over {self.conditions} conditions")
        ref = self.W_rec
        x = self.initial_x(batch, generator)
        gain = torch.as_tensor(control, dtype=ref.dtype, device=ref.device).expand(batch).reshape(batch, 1)
        zero = ref.new_zeros(batch, self.n_out)
        r = F.relu(x)
        self.state = LoopState(x, r, r, zero, zero, zero, [zero] * (self.fb_delay + 1), gain.clone(), 0)
        return self.state

    def initial_x(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial potentials ``x_0 ~ U(−0.1, 0.1)``, ``(batch, n)``, as every trial starts."""
        ref = self.W_rec
        return torch.rand(batch, self.n, generator=generator, dtype=ref.dtype).to(ref.device) * 0.2 - 0.1

    def recurrent_input(self, r: torch.Tensor) -> torch.Tensor:
        """``W_rec r`` for each trial with its condition's ``W_rec``."""
        if self.W_rec.dim() == 2:
            return r @ self.W_rec.T
        return torch.bmm(r.reshape(self.conditions, -1, self.n), self.W_rec.transpose(1, 2)).reshape(r.shape)

    def readout_vjp(self, grad_v: torch.Tensor, cursor: torch.Tensor | None = None) -> torch.Tensor:
        """``∂L/∂r`` from ``∂L/∂v`` ``(B, n_out)`` through ``v = R(W_out r + …)``: ``(B, n)``."""
        if cursor is not None:
            grad_v = torch.bmm(grad_v.unsqueeze(1), cursor).squeeze(1)
        return grad_v @ self.W_out

    def recurrent_vjp(self, grad: torch.Tensor, w_rec: torch.Tensor) -> torch.Tensor:
        """``W_recᵀ g`` per trial, with each trial's condition's copy of ``w_rec`` (a ``W_rec`` of some step)."""
        if w_rec.dim() == 2:
            return grad @ w_rec
        return torch.bmm(grad.reshape(self.conditions, -1, self.n), w_rec).reshape(grad.shape)

    def readout_error(
        self,
        r: torch.Tensor,
        e_prev: torch.Tensor,
        v_ref: torch.Tensor,
        push: torch.Tensor | None = None,
        cursor: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v_t, e_t)`` from the rates ``r_t``: ``v = R(W_out r + b_out + p)``, ``e = e_{t−1} + dt(v* − v)``.

        Args:
            r: rates ``(B, n)``.
            e_prev: the previous error ``(B, n_out)`` (ignored for a velocity error).
            v_ref: reference velocity ``(B, n_out)``.
            push: external velocity push ``(B, n_out)``, or ``None``.
            cursor: cursor rotation matrices ``(B, n_out, n_out)``, or ``None``.
        """
        v = r @ self.W_out.T + self.b_out
        if push is not None:
            v = v + push
        if cursor is not None:
            v = torch.bmm(cursor, v.unsqueeze(-1)).squeeze(-1)
        if self.error == "velocity":
            return v, v_ref - v
        return v, e_prev + self.dt * (v_ref - v)

    def step(
        self,
        u: torch.Tensor,
        v_ref: torch.Tensor,
        push: torch.Tensor | None = None,
        cursor: torch.Tensor | None = None,
        fed_back: torch.Tensor | None = None,
    ) -> LoopState:
        """Advance every trial by one time step (see the module docstring); returns the new state.

        Args:
            u: inputs ``(B, n_in)``.
            v_ref: reference velocity ``(B, n_out)``.
            push: velocity push ``(B, n_out)`` or ``None``.
            cursor: cursor rotations ``(B, n_out, n_out)`` or ``None``.
            fed_back: feed back this error instead of the loop's own ``e_{t−1−d}`` (open-loop replay).
        """
        s = self.state
        if s is None:
            raise ConfigError("call reset(batch) before step(): the loop has no state yet")
        if u.shape != (s.x.shape[0], self.W_in.shape[1]):
            raise ShapeError(f"step expects inputs of shape {(s.x.shape[0], self.W_in.shape[1])}, got {tuple(u.shape)}")
        return self._advance(u @ self.W_in.T + self.b, self.feedback_weights, v_ref, push, cursor, fed_back)

    def _advance(
        self,
        input_drive: torch.Tensor,
        feedback_weights: torch.Tensor,
        v_ref: torch.Tensor,
        push: torch.Tensor | None,
        cursor: torch.Tensor | None,
        fed_back: torch.Tensor | None,
    ) -> LoopState:
        """[`step`][bioplaus.nets.rate_rnn.RateRNN.step] from the input drive ``W_in u_t + b`` and ``M ⊙ W_fb``
        (computed once per rollout)."""
        s = self.state
        c = s.delay_line[0] if fed_back is None else fed_back
        if self.detach_feedback:
            c = c.detach()
        x, r, v, e = self.transition(s.x, s.r, s.e, c, input_drive, feedback_weights, s.control, v_ref, push, cursor)
        self.state = LoopState(x, r, s.r, v, e, c, [*s.delay_line[1:], e], s.control, s.t + 1, cursor)
        return self.state

    def transition(
        self,
        x: torch.Tensor,
        r: torch.Tensor,
        e: torch.Tensor,
        fed_back: torch.Tensor,
        input_drive: torch.Tensor,
        feedback_weights: torch.Tensor,
        control: float | torch.Tensor,
        v_ref: torch.Tensor,
        push: torch.Tensor | None = None,
        cursor: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Euler step as a pure function of the loop's variables: ``(x_t, r_t, v_t, e_t)``.

        Args:
            x: ``x_{t−1}`` ``(B, n)``.
            r: ``r_{t−1} = ReLU(x_{t−1})`` ``(B, n)``.
            e: ``e_{t−1}`` ``(B, n_out)``.
            fed_back: ``c_t``, the error the controller feeds back ``(B, n_out)``.
            input_drive: ``W_in u_t + b`` ``(B, n)``.
            feedback_weights: ``M ⊙ W_fb``.
            control: controller gain ``g``, a number or ``(B, 1)``.
            v_ref: reference velocity ``(B, n_out)``.
            push: velocity push ``(B, n_out)`` or ``None``.
            cursor: cursor rotations ``(B, n_out, n_out)`` or ``None``.
        """
        drive = input_drive + self.recurrent_input(r) + control * (fed_back @ feedback_weights.T)
        x = torch.lerp(x, drive, self.alpha)  # (1 − α) x_{t−1} + α · drive
        r = F.relu(x)
        return (x, r, *self.readout_error(r, e, v_ref, push, cursor))

    def rollout(
        self,
        inputs: torch.Tensor,
        v_ref: torch.Tensor,
        push: torch.Tensor | None = None,
        cursor: torch.Tensor | None = None,
        control: float | torch.Tensor = 1.0,
        generator: torch.Generator | None = None,
        fed_back: torch.Tensor | None = None,
    ) -> Rollout:
        """Run whole trials: ``inputs (B, T, n_in)``, ``v_ref (B, T, n_out)``, ``push (B, T, n_out)``.

        ``fed_back (B, T, n_out)`` replaces the loop's fed-back error at every step (open loop).
        """
        if inputs.dim() != 3 or v_ref.shape[:2] != inputs.shape[:2]:
            raise ShapeError(
                f"rollout expects inputs (B, T, n_in) and v_ref (B, T, n_out), got {tuple(inputs.shape)} "
                f"and {tuple(v_ref.shape)}"
            )
        self.reset(inputs.shape[0], control, generator)
        input_drive, feedback_weights = inputs @ self.W_in.T + self.b, self.feedback_weights
        steps = []
        for t in range(inputs.shape[1]):
            steps.append(
                self._advance(
                    input_drive[:, t],
                    feedback_weights,
                    v_ref[:, t],
                    None if push is None else push[:, t],
                    cursor,
                    None if fed_back is None else fed_back[:, t],
                )
            )
        return Rollout(*(torch.stack([getattr(s, f) for s in steps], 1) for f in ("x", "r", "v", "e", "fed_back")))

    def forward(self, inputs: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
        """Closed-loop rollout with control on; returns the error trajectory ``(B, T, n_out)``."""
        return self.rollout(inputs, v_ref).e

    def __getstate__(self) -> dict[str, Any]:
        # the loop state carries autograd graphs, which cannot be copied or pickled
        state = self.__dict__.copy()
        state["state"] = None
        return state


def save_checkpoint(model: RateRNN, path: str | Path) -> None:
    """Save ``model``'s constructor arguments and ``state_dict`` with ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)


def load_checkpoint(path: str | Path) -> RateRNN:
    """Rebuild a [`RateRNN`][bioplaus.nets.rate_rnn.RateRNN] saved by
    [`save_checkpoint`][bioplaus.nets.rate_rnn.save_checkpoint]."""
    if not Path(path).is_file():
        raise ConfigError(f"no checkpoint at {path}: pre-train one first (bioplaus.tasks.motor.pretrain)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = RateRNN(**saved["config"])
    if saved["state_dict"]["W_rec"].dim() == 3:  # saved after split_conditions
        model.split_conditions(saved["state_dict"]["W_rec"].shape[0])
    model.load_state_dict(saved["state_dict"])
    return model


@register("rate_rnn")
def rate_rnn(
    spec: TaskSpec,
    n: int = 200,
    controller: bool = True,
    fb_density: float = 1.0,
    fb_delay: int = 0,
    error: str = "position",
    tau: float = 0.05,
    dt: float = 0.01,
    checkpoint: str | None = None,
) -> RateRNN:
    """Leaky ReLU rate RNN with an integrated error and a learned feedback controller (Kaleb et al. 2024)."""
    if checkpoint is not None:
        model = load_checkpoint(checkpoint)
    else:
        model = RateRNN(n, spec.input_shape[-1], spec.n_out, controller, fb_density, fb_delay, error, dt, tau)
    if (model.W_in.shape[1], model.n_out) != (spec.input_shape[-1], spec.n_out):
        raise ShapeError(
            f"rate_rnn has {model.W_in.shape[1]} inputs and {model.n_out} outputs; the task needs "
            f"{spec.input_shape[-1]} and {spec.n_out}"
        )
    return model
