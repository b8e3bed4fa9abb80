r"""One-step dynamics of recurrent models: the small interface that Lyapunov analysis needs.

A model's dynamics is a map $s_{t+1} = F(s_t, u_t)$ of a flat state ``s`` ``(B, d)``
(``B`` independent trajectories, each row updated on its own) driven by an input ``u_t``
``(B, m)``, or by nothing in an autonomous run (``u_t = None``).
[`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics] is that interface;
[`bioplaus.analysis.lyapunov`][bioplaus.analysis.lyapunov] differentiates ``step`` with forward-mode autograd, so it
must be written in differentiable torch operations. A dynamics may also offer ``step_with_tangents(state, input,
tangents) -> (state, tangents)``: the next state together with the analytic Jacobian-vector products $J_t V$, ``V``
``(B, d, k)``; the Lyapunov code then uses it instead of autograd (``method="analytic"``).

Adapters of the models in [`bioplaus.nets`][bioplaus.nets]:

- [`RateRNNDynamics`][bioplaus.analysis.dynamics.RateRNNDynamics]: the feedback-controlled rate RNN as a closed loop.
  State ``[x_t ; e_{t−d} ; … ; e_t]`` (potentials and the controller's delay line of errors), input
  ``[u_t ; v^*_t]`` (the task input and the reference velocity). With the controller off
  (``control = 0``) nothing feeds the error back, so by default the state is ``x_t`` alone: the
  error integrator would only add ``n_out`` exponents equal to 0.
- [`LSTMDynamics`][bioplaus.analysis.dynamics.LSTMDynamics]: a plain LSTM ([`LSTMNet`][bioplaus.nets.lstm.LSTMNet]),
  state ``[h_t ; c_t]``.
- [`RandomRNN`][bioplaus.analysis.dynamics.RandomRNN]: the random rate network of Sompolinsky, Crisanti & Sommers
  (1988), $x_{t+1} = (1-\alpha) x_t + \alpha\,(W \tanh x_t + u_t)$, $W_{ij} \sim N(0, g^2/n)$,
  whose fixed point 0 loses stability at ``g = 1`` (the transition to chaos for large ``n``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.lstm import LSTMNet
from bioplaus.nets.rate_rnn import RateRNN


@runtime_checkable
class StepDynamics(Protocol):
    """A discrete-time dynamical system on flat states ``(B, d)``, one row per trajectory.

    Attributes:
        dim: the state size ``d``.
    """

    dim: int

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` initial states ``(batch, d)``."""
        ...

    def step(self, state: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor:
        """``F(s_t, u_t)``: the next states ``(B, d)`` from states ``(B, d)`` and inputs ``(B, m)`` or ``None``."""
        ...


class RandomRNN:
    r"""Random network $x_{t+1} = (1-\alpha) x_t + \alpha\,(W \tanh x_t + u_t)$, $W_{ij} \sim N(0, g^2/n)$.

    Euler discretisation (``α = dt/τ``) of Sompolinsky, Crisanti & Sommers (1988),
    $\tau \dot x = -x + W \tanh x$. Its Jacobian is
    $J_t = (1-\alpha) I + \alpha\, W\, \mathrm{diag}(1 - \tanh^2 x_t)$, applied analytically by
    [`step_with_tangents`][bioplaus.analysis.dynamics.RandomRNN.step_with_tangents]. Inputs, when given, are currents
    ``(B, n)`` added to ``W tanh x``.

    Args:
        n: number of units.
        g: gain (standard deviation of ``W`` times ``√n``).
        alpha: ``dt/τ`` in ``(0, 1]``.
        seed: seed of ``W``.
        dtype: dtype of ``W`` and the states.
    """

    def __init__(
        self, n: int = 200, g: float = 1.5, alpha: float = 0.2, seed: int = 0, dtype: torch.dtype | None = None
    ):
        if n < 1 or g < 0 or not 0 < alpha <= 1:
            raise ConfigError(f"RandomRNN needs n ≥ 1, g ≥ 0 and 0 < alpha ≤ 1, got n={n}, g={g}, alpha={alpha}")
        self.dim, self.g, self.alpha = n, g, alpha
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.randn(n, n, generator=generator, dtype=dtype) * (g / n**0.5)

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """States ``x_0 ~ N(0, 1)``."""
        return torch.randn(batch, self.dim, generator=generator, dtype=self.W.dtype)

    def step(self, state: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor:
        drive = torch.tanh(state) @ self.W.T
        return torch.lerp(state, drive if input is None else drive + input, self.alpha)

    def step_with_tangents(
        self, state: torch.Tensor, input: torch.Tensor | None, tangents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next states and $J_t V$ for tangents ``V`` ``(B, d, k)``, in closed form."""
        gain = (1 - torch.tanh(state).pow(2)).unsqueeze(-1)
        return self.step(state, input), torch.lerp(tangents, self.W @ (gain * tangents), self.alpha)


class RateRNNDynamics:
    """The closed loop of a [`RateRNN`][bioplaus.nets.rate_rnn.RateRNN] as a
    [`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics].

    State ``[x_t ; e_{t−d} ; … ; e_t]`` ``(B, n + (d+1)·n_out)`` with ``d`` the feedback delay (or
    ``x_t`` alone without the error), input ``[u_t ; v^*_t]`` ``(B, n_in + n_out)``; ``None``
    (autonomous) means ``u = 0`` and ``v* = 0``. One step is
    [`RateRNN.transition`][bioplaus.nets.rate_rnn.RateRNN.transition], the model's own update, so the Jacobian is that
    of the loop the model runs (loop included: the fed-back error is part of the state). Pushes and cursor rotations
    are not modelled; a rotation in the ``"reference"`` convention is an input (the rotated ``v*``).

    Args:
        model: the network (unsplit, or split with a batch laid out condition-major).
        control: controller gain ``g``: a number or one per trajectory ``(B,)``.
        with_error: keep the error (delay line) in the state; default: only when control is on.
            With control off the error is a pure integrator of the output: ``n_out`` extra exponents 0.
    """

    def __init__(self, model: RateRNN, control: float | torch.Tensor = 1.0, with_error: bool | None = None):
        control = torch.as_tensor(control, dtype=model.W_rec.dtype, device=model.W_rec.device)
        feeds_back = bool((control != 0).any())
        self.with_error = feeds_back if with_error is None else with_error
        if feeds_back and not self.with_error:
            raise ConfigError("with control on, the fed-back error is part of the loop's state: use with_error=True")
        self.model = model
        self.control = control.reshape(-1, 1) if control.dim() else float(control)  # a float is faster under vmap
        self.n_in, self.n_out = model.W_in.shape[1], model.n_out
        self.errors = model.fb_delay + 1 if self.with_error else 0
        self.dim = model.n + self.errors * self.n_out

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_0 ~ U(−0.1, 0.1)`` as the model's trials, errors 0."""
        x = self.model.initial_x(batch, generator)
        return torch.cat([x, x.new_zeros(batch, self.errors * self.n_out)], 1)

    def step(self, state: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        x, line = state.split([m.n, self.errors * self.n_out], -1)
        if input is None:
            input = state.new_zeros(state.shape[0], self.n_in + self.n_out)
        elif input.shape[-1] != self.n_in + self.n_out:
            raise ShapeError(f"RateRNNDynamics inputs are [u ; v*] of size {self.n_in + self.n_out}, got {input.shape}")
        u, v_ref = input.split([self.n_in, self.n_out], -1)
        e_prev = line[..., -self.n_out :] if self.with_error else torch.zeros_like(v_ref)
        fed_back = line[..., : self.n_out] if self.with_error else torch.zeros_like(v_ref)
        x, _, _, e = m.transition(
            x, torch.relu(x), e_prev, fed_back, u @ m.W_in.T + m.b, m.feedback_weights, self.control, v_ref
        )
        return torch.cat([x, line[..., self.n_out :], e], -1) if self.with_error else x

    def step_with_tangents(
        self, state: torch.Tensor, input: torch.Tensor | None, tangents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The next states and $J_t V$ for tangents ``V = [δx ; δe_{t−d} ; … ; δe_t]`` ``(B, d, k)``.

        With $D_t = \mathrm{diag}(x_t > 0)$ and the fed-back error $c_{t+1} = e_{t-d}$,

        $$
        \begin{aligned}
        \delta x_{t+1} &= (1-\alpha)\,\delta x_t + \alpha\,(W_{rec} D_t\, \delta x_t
            + g\,(M \odot W_{fb})\,\delta e_{t-d}), \\
        \delta e_{t+1} & = \delta e_t - dt\, W_{out} D_{t+1}\, \delta x_{t+1}
        \end{aligned}
        $$

        (velocity error: $\delta e_{t+1} = -W_{out} D_{t+1} \delta x_{t+1}$); the delay line shifts.
        """
        m, n, o = self.model, self.model.n, self.n_out
        d_x, d_line = tangents.split([n, self.errors * o], 1)
        drive = self._recurrent(_active(state[:, :n]) * d_x)
        gain = self.control if isinstance(self.control, float) else self.control.unsqueeze(-1)
        if self.with_error:
            drive = drive + gain * (m.feedback_weights @ d_line[:, :o])
        d_x = torch.lerp(d_x, drive, m.alpha)
        state = self.step(state, input)
        if not self.with_error:
            return state, d_x
        d_v = m.W_out @ (_active(state[:, :n]) * d_x)
        d_e = -d_v if m.error == "velocity" else d_line[:, -o:] - m.dt * d_v
        return state, torch.cat([d_x, d_line[:, o:], d_e], 1)

    def _recurrent(self, tangents: torch.Tensor) -> torch.Tensor:
        """``W_rec V`` for tangents ``(B, n, k)``, each trajectory with its condition's ``W_rec``."""
        w = self.model.W_rec
        if w.dim() == 2:
            return w @ tangents
        return (w.unsqueeze(1) @ tangents.unflatten(0, (w.shape[0], -1))).flatten(0, 1)

    def inputs(self, trials_inputs: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
        """The input sequence ``[u ; v*]`` ``(B, T, n_in + n_out)`` of trials (e.g. ``Trials.inputs, Trials.v_ref``)."""
        return torch.cat([trials_inputs, v_ref], -1)


def _active(x: torch.Tensor) -> torch.Tensor:
    """``φ'(x) = 1[x > 0]`` of the ReLU, shaped ``(B, n, 1)`` to scale tangents."""
    return (x > 0).to(x.dtype).unsqueeze(-1)


class LSTMDynamics:
    """A plain LSTM ([`LSTMNet`][bioplaus.nets.lstm.LSTMNet]) as a
    [`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics]: state ``[h_t ; c_t]``.

    One step is the model's own cell (called at ``t = 0``, so a truncation set by a rule never
    cuts the tangent). Autonomous runs feed zero inputs.

    Args:
        model: the LSTM.
        init_scale: initial states ``h_0, c_0 ~ U(−init_scale, init_scale)`` (0: the model's zero state).
    """

    def __init__(self, model: LSTMNet, init_scale: float = 0.0):
        if not isinstance(model, LSTMNet):
            raise ConfigError(f"LSTMDynamics needs a plain LSTM ('lstm' model), got {type(model).__name__}")
        self.model, self.init_scale = model, init_scale
        self.hidden = model.hidden
        self.dim = 2 * model.hidden

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        w = self.model.lstm.weight
        noise = torch.rand(batch, self.dim, generator=generator, dtype=w.dtype).to(w.device)
        return (2 * noise - 1) * self.init_scale

    def step(self, state: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor:
        h, c = state.split(self.hidden, -1)
        if input is None:
            input = state.new_zeros(state.shape[0], self.model.n_in)
        _, (h, c) = self.model.lstm(input, (h, c), 0)
        return torch.cat([h, c], -1)

    def step_with_tangents(
        self, state: torch.Tensor, input: torch.Tensor | None, tangents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The next states and $J_t V$ for tangents ``V = [δh ; δc]`` ``(B, 2H, k)``, in closed form.

        With the cell's pre-activation $a = W [u ; h] + b$ and gates
        $i, f, o = \sigma(a_{i,f,o})$, $g = \tanh a_g$, the tangent of
        $c' = f c + i g$, $h' = o \tanh c'$ is

        $$
        \delta a = W_h \delta h, \quad
        \delta c' = f\,\delta c + c\,f(1-f)\,\delta a_f + g\,i(1-i)\,\delta a_i + i(1-g^2)\,\delta a_g, \quad
        \delta h' = \tanh c'\, o(1-o)\,\delta a_o + o\,(1 - \tanh^2 c')\,\delta c'.
        $$

        """
        cell, H = self.model.lstm, self.hidden
        h, c = state.split(H, -1)
        if input is None:
            input = state.new_zeros(state.shape[0], self.model.n_in)
        pre = torch.cat([input, h], -1) @ cell.weight.T
        pre = pre if cell.bias is None else pre + cell.bias
        h_next, (_, c_next) = cell.cell(pre, (h, c))
        i, f, o = torch.sigmoid(pre[:, : 3 * H]).unsqueeze(-1).chunk(3, 1)
        g = torch.tanh(pre[:, 3 * H :]).unsqueeze(-1)
        d_i, d_f, d_o, d_g = (cell.weight[:, cell.input_size :] @ tangents[:, :H]).chunk(4, 1)
        d_c = f * tangents[:, H:] + c.unsqueeze(-1) * f * (1 - f) * d_f + g * i * (1 - i) * d_i + i * (1 - g**2) * d_g
        tanh_c = torch.tanh(c_next).unsqueeze(-1)
        d_h = tanh_c * o * (1 - o) * d_o + o * (1 - tanh_c**2) * d_c
        return torch.cat([h_next, c_next], -1), torch.cat([d_h, d_c], 1)

    def outputs(self, states: torch.Tensor) -> torch.Tensor:
        """The model's readout of states ``(…, d)``: ``W_o h + b_o``."""
        return self.model.readout(states[..., : self.hidden])


def as_dynamics(model: nn.Module, control: float | torch.Tensor = 1.0) -> StepDynamics:
    """The [`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics] of a bioplaus recurrent model (``rate_rnn`` with
    gain ``control``, or ``lstm``)."""
    if isinstance(model, RateRNN):
        return RateRNNDynamics(model, control)
    if isinstance(model, LSTMNet):
        return LSTMDynamics(model)
    raise ConfigError(
        f"no one-step dynamics for {type(model).__name__}: Lyapunov analysis and mle_weight support the "
        "'rate_rnn' and 'lstm' models (or any object with initial_state/step, see bioplaus.analysis.dynamics)"
    )
