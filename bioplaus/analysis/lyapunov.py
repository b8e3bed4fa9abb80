r"""Lyapunov exponents of recurrent dynamics by the QR (Benettin) method, with autograd Jacobian-vector products.

For a map $s_{t+1} = F(s_t, u_t)$ ([`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics]) with
Jacobians $J_t = \partial F/\partial s\,(s_t, u_t)$, the Lyapunov exponents are the growth
rates of the singular values of the product $J_{T-1} \cdots J_1 J_0$ (Oseledets):
$\lambda_i = \lim_{T\to\infty} \tfrac1T \log \sigma_i(J_{T-1}\cdots J_0)$. The product itself
over- and underflows, so Benettin, Galgani, Giorgilli & Strelcyn (1980) and Shimada & Nagashima
(1979) carry ``k`` orthonormal tangent vectors $Q_t \in \mathbb{R}^{d\times k}$ and
re-orthonormalise them:

$$
V_{t+1} = J_t Q_t, \qquad V_{t+1} = Q_{t+1} R_{t+1} \ \text{(QR)}, \qquad
\lambda_i \approx \frac{1}{T} \sum_{t=1}^{T} \log \lvert (R_t)_{ii} \rvert ,
$$

which gives the ``k`` leading exponents, largest first (Pikovsky & Politi, *Lyapunov Exponents*,
Cambridge 2016, ch. 3). Only products $J_t V$ are needed: they come from forward-mode
autograd (``torch.func.jvp``, the ``k`` tangents batched by ``torch.func.vmap``; ``method="jvp"``),
from a dynamics' closed form (``step_with_tangents``; ``method="analytic"``), or from the dense
Jacobian (``torch.func.jacfwd``, ``d`` products per step; ``method="dense"``, a check for small
``d``). Re-orthonormalising every ``qr_every`` steps instead of every step is exact in exact
arithmetic (the QR of a product telescopes) and cheaper, as long as the tangents do not grow or
shrink by more than the float range in between: every step (the default) is the safe choice;
a few steps suffice for weakly chaotic or contracting networks.

Quantities:

- the spectrum $\lambda_1 \ge \dots \ge \lambda_k$ per trajectory (``B`` initial conditions
  at once), and the maximal exponent (MLE) $\lambda_1$;
- finite-time exponents $\lambda_i^{(w)}(t)$: the same average over windows of ``w`` steps,
  whose spread says how uniform the stretching is along the trajectory;
- the running estimate $\lambda_i(t) = \tfrac1t \sum_{s \le t} \log\lvert(R_s)_{ii}\rvert$, the
  convergence diagnostic ([`plot_convergence`][bioplaus.analysis.lyapunov.plot_convergence]);
- the divergence $\lVert s'_t - s_t \rVert$ of a trajectory from a copy started
  ``ε`` away ([`trajectory_divergence`][bioplaus.analysis.lyapunov.trajectory_divergence]), the finite-perturbation
  view of the same
  quantity: it grows as $\varepsilon e^{\lambda_1 t}$ until it saturates.

Exponents are per step; divide by ``dt`` for per-second rates. With inputs (an input-driven
run), the exponents are those of the non-autonomous system along the given input sequence
(Engelken, Wolf & Abbott, 2023, compute full spectra of large rate networks the same way).
Regularising the finite-time MLE ([`finite_time_mle`][bioplaus.analysis.lyapunov.finite_time_mle],
[`bioplaus.analysis.mle_regularizer`][bioplaus.analysis.mle_regularizer]) follows Young & Pugeault, "Enhancing
Robustness in Deep Reinforcement Learning: A Lyapunov Exponent Approach" (NeurIPS 2024, arXiv 2410.10674), who show
that trained controllers can be deterministically chaotic and that penalising the MLE makes them robust to small state
perturbations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import jacfwd, jvp, vmap

from bioplaus.analysis.dynamics import StepDynamics
from bioplaus.errors import ConfigError, ShapeError

METHODS = ("auto", "jvp", "analytic", "dense")


@dataclass
class LyapunovResult:
    """What [`lyapunov_spectrum`][bioplaus.analysis.lyapunov.lyapunov_spectrum] measured.

    Attributes:
        log_stretch: $\\log\\lvert (R_s)_{ii}\\rvert$ of each re-orthonormalisation after the
            transient, ``(S, B, k)``.
        qr_every: steps between re-orthonormalisations (each row of ``log_stretch`` covers as many).
        state: the final states ``(B, d)``.
        tangents: the final orthonormal tangents ``Q`` ``(B, d, k)`` (the leading Lyapunov vectors).
    """

    log_stretch: torch.Tensor
    qr_every: int
    state: torch.Tensor
    tangents: torch.Tensor

    @property
    def steps(self) -> int:
        """Steps averaged over (after the transient)."""
        return self.log_stretch.shape[0] * self.qr_every

    @property
    def exponents(self) -> torch.Tensor:
        """The ``k`` leading exponents per trajectory, ``(B, k)``, per step."""
        return self.log_stretch.sum(0) / self.steps

    @property
    def spectrum(self) -> torch.Tensor:
        """The exponents averaged over trajectories, ``(k,)``."""
        return self.exponents.mean(0)

    @property
    def mle(self) -> torch.Tensor:
        """The maximal exponent per trajectory, ``(B,)``."""
        return self.exponents[:, 0]

    def running(self) -> torch.Tensor:
        """The running estimate after each re-orthonormalisation, ``(S, B, k)`` (convergence diagnostic)."""
        steps = torch.arange(1, self.log_stretch.shape[0] + 1, dtype=self.log_stretch.dtype) * self.qr_every
        return self.log_stretch.cumsum(0) / steps.view(-1, 1, 1).to(self.log_stretch.device)

    def finite_time(self, window: int) -> torch.Tensor:
        """Finite-time exponents over consecutive windows of ``window`` steps, ``(S // (window / qr_every), B, k)``."""
        if window < 1 or window % self.qr_every:
            raise ConfigError(f"window must be a positive multiple of qr_every={self.qr_every}, got {window}")
        per = window // self.qr_every
        usable = self.log_stretch.shape[0] // per * per
        if usable == 0:
            raise ConfigError(f"window {window} is longer than the {self.steps} measured steps")
        return self.log_stretch[:usable].unflatten(0, (-1, per)).sum(1) / window


def _jvp_tangents(
    step: Callable[[torch.Tensor], torch.Tensor], state: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F(s), J V)`` by forward-mode autograd, the ``k`` tangents in one vmapped ``jvp``."""
    state_next, pushed = vmap(lambda v: jvp(step, (state,), (v,)), out_dims=(None, 0))(tangents.movedim(-1, 0))
    return state_next, pushed.movedim(0, -1)


def jacobian(dynamics: StepDynamics, state: torch.Tensor, input: torch.Tensor | None = None) -> torch.Tensor:
    """The dense Jacobians $\\partial F/\\partial s$ at ``state`` ``(B, d)``, one per trajectory: ``(B, d, d)``.

    Each trajectory is stepped on its own (``torch.func.jacfwd`` under ``vmap``), so the dynamics'
    parameters must be shared by all trajectories (no per-trajectory gains or split conditions).
    """

    def one(s: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        return dynamics.step(s.unsqueeze(0), None if u is None else u.unsqueeze(0)).squeeze(0)

    return vmap(jacfwd(one), in_dims=(0, None if input is None else 0))(state, input)


def _tangent_step(
    dynamics: StepDynamics, method: str, state: torch.Tensor, input: torch.Tensor | None, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next states and $J_t V$ by ``method``."""
    if method == "analytic":
        return dynamics.step_with_tangents(state, input, tangents)  # type: ignore[attr-defined]
    if method == "dense":
        return dynamics.step(state, input), jacobian(dynamics, state, input) @ tangents
    return _jvp_tangents(lambda s: dynamics.step(s, input), state, tangents)


def _resolve_method(dynamics: StepDynamics, method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    analytic = callable(getattr(dynamics, "step_with_tangents", None))
    if method == "analytic" and not analytic:
        raise ConfigError(f"{type(dynamics).__name__} has no step_with_tangents: use method='jvp'")
    if method == "auto":
        return "analytic" if analytic else "jvp"
    return method


def _input_sequence(inputs: torch.Tensor | None, batch: int, steps: int | None) -> tuple[torch.Tensor | None, int]:
    """Inputs as ``(B, T, m)`` (a ``(T, m)`` sequence is shared by every trajectory) and the number of steps."""
    if inputs is None:
        if steps is None or steps < 1:
            raise ConfigError("an autonomous run (inputs=None) needs steps ≥ 1")
        return None, steps
    if inputs.dim() == 2:
        inputs = inputs.unsqueeze(0).expand(batch, -1, -1)
    if inputs.dim() != 3 or inputs.shape[0] != batch:
        raise ShapeError(f"inputs must be (T, m) or (B={batch}, T, m), got {tuple(inputs.shape)}")
    if steps is not None and steps != inputs.shape[1]:
        raise ConfigError(f"steps={steps} but the inputs hold {inputs.shape[1]} steps; leave steps out")
    return inputs, inputs.shape[1]


def _orthonormalise(tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``V = Q R``: ``Q`` and the diagonal of ``R`` ``(B, k)`` (one vector: a cheap normalisation)."""
    if tangents.shape[-1] == 1:
        norm = tangents.norm(dim=-2, keepdim=True)
        return tangents / norm, norm.squeeze(-2)
    Q, R = torch.linalg.qr(tangents)
    return Q, R.diagonal(dim1=-2, dim2=-1)


def _orthonormal(batch: int, dim: int, k: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(batch, dim, k, generator=generator, dtype=like.dtype).to(like.device)
    return torch.linalg.qr(noise).Q


def lyapunov_spectrum(
    dynamics: StepDynamics,
    k: int | None = None,
    steps: int | None = None,
    inputs: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    batch: int = 1,
    transient: int = 0,
    qr_every: int = 1,
    method: str = "auto",
    generator: torch.Generator | None = None,
    differentiable: bool = False,
) -> LyapunovResult:
    r"""The ``k`` leading Lyapunov exponents along trajectories of ``dynamics`` (QR/Benettin method).

    Args:
        dynamics: the system ([`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics]).
        k: number of exponents (default: all ``d``).
        steps: steps of an autonomous run; with ``inputs``, the length of the input sequence.
        inputs: the input sequence, ``(B, T, m)`` or ``(T, m)`` shared by every trajectory; ``None``
            for an autonomous run.
        state: initial states ``(B, d)``; default ``dynamics.initial_state(batch, generator)``.
        batch: number of trajectories when ``state`` is not given.
        transient: the first this many steps evolve state and tangents but are not averaged (the
            state settles on its attractor, the tangents align with the Lyapunov vectors).
            A multiple of ``qr_every``.
        qr_every: steps between re-orthonormalisations.
        method: ``"jvp"`` (autograd), ``"analytic"`` (the dynamics' ``step_with_tangents``),
            ``"dense"`` (full Jacobians) or ``"auto"`` (analytic when available, else jvp).
        generator: draws the initial states and tangents.
        differentiable: keep the autograd graph from the exponents to the parameters (for a loss on
            them), through the Jacobians and tangents but not the states (see
            [`finite_time_mle`][bioplaus.analysis.lyapunov.finite_time_mle]); else no graph is built.

    Returns:
        [`LyapunovResult`][bioplaus.analysis.lyapunov.LyapunovResult]; ``.spectrum``, ``.mle``, ``.running()``,
        ``.finite_time(w)``.
    """
    method = _resolve_method(dynamics, method)
    if state is None:
        state = dynamics.initial_state(batch, generator)
    B, d = state.shape
    k = d if k is None else k
    if not 1 <= k <= d:
        raise ConfigError(f"k must be between 1 and the state size {d}, got {k}")
    if qr_every < 1 or transient < 0 or transient % qr_every:
        raise ConfigError(f"need qr_every ≥ 1 and transient a non-negative multiple of it, got {qr_every}, {transient}")
    inputs, steps = _input_sequence(inputs, B, steps)
    if steps <= transient or (steps - transient) % qr_every:
        raise ConfigError(f"steps − transient must be a positive multiple of qr_every, got {steps}, {transient}")
    tangents = _orthonormal(B, d, k, state, generator)
    stretch = []
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        for t in range(steps):
            u = None if inputs is None else inputs[:, t]
            state, tangents = _tangent_step(dynamics, method, state.detach(), u, tangents)
            if (t + 1) % qr_every == 0:
                tangents, diagonal = _orthonormalise(tangents)
                if t >= transient:
                    stretch.append(diagonal.abs().clamp_min(1e-300).log())
    return LyapunovResult(torch.stack(stretch), qr_every, state, tangents)


def finite_time_mle(
    dynamics: StepDynamics,
    inputs: torch.Tensor | None = None,
    steps: int | None = None,
    state: torch.Tensor | None = None,
    batch: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""The finite-time maximal exponent per trajectory, ``(B,)``, differentiable in the model's parameters.

    One tangent vector, normalised every step,

    $$
    \hat\lambda_1 = \frac1T \sum_t \log \lVert J_t q_t \rVert, \qquad
    q_{t+1} = J_t q_t / \lVert J_t q_t \rVert,
    $$

    from a random unit $q_0$ (no transient: a training batch's trials are short). Arguments as
    [`lyapunov_spectrum`][bioplaus.analysis.lyapunov.lyapunov_spectrum].

    The gradient is taken at a fixed trajectory: it flows through each Jacobian $J_t(\theta)$
    and the tangents, not through the states $s_t(\theta)$. Differentiating the states of
    a chaotic trajectory gives gradients that grow like $e^{\lambda_1 T}$ and point nowhere
    useful (the reason one regularises chaos in the first place); at a fixed trajectory the
    gradient is bounded and, step by step, lowers the stretching the trajectory meets.
    """
    result = lyapunov_spectrum(
        dynamics, 1, steps, inputs, state, batch, generator=generator, method="auto", differentiable=True
    )
    return result.mle


@torch.no_grad()
def trajectory(
    dynamics: StepDynamics, state: torch.Tensor, inputs: torch.Tensor | None = None, steps: int | None = None
) -> torch.Tensor:
    """The states visited from ``state`` ``(B, d)``: ``(B, T, d)`` (step 1 to ``T``)."""
    inputs, steps = _input_sequence(inputs, state.shape[0], steps)
    states = []
    for t in range(steps):
        state = dynamics.step(state, None if inputs is None else inputs[:, t])
        states.append(state)
    return torch.stack(states, 1)


@torch.no_grad()
def trajectory_divergence(
    dynamics: StepDynamics,
    state: torch.Tensor,
    inputs: torch.Tensor | None = None,
    steps: int | None = None,
    epsilon: float = 1e-6,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    r"""$\lVert s'_t - s_t\rVert$ for ``s'_0 = s_0 + ε q`` (``q`` a random unit vector per trajectory).

    Returns:
        ``{"distance": (B, T), "nominal": (B, T, d), "perturbed": (B, T, d), "rate": (B,)}``,
        where ``rate`` is $\frac1T \log(\lVert s'_T - s_T\rVert / \varepsilon)$, the
        finite-perturbation growth rate (close to the MLE while the distance stays small).
    """
    direction = torch.randn(state.shape, generator=generator, dtype=state.dtype).to(state.device)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    nominal = trajectory(dynamics, state, inputs, steps)
    perturbed = trajectory(dynamics, state + epsilon * direction, inputs, steps)
    distance = (perturbed - nominal).norm(dim=-1)
    rate = (distance[:, -1].clamp_min(1e-300) / epsilon).log() / distance.shape[1]
    return {"distance": distance, "nominal": nominal, "perturbed": perturbed, "rate": rate}


def plot_convergence(result: LyapunovResult, ax: Any = None, exponents: int | None = None, dt: float = 1.0) -> Any:
    """Plot the running estimate of each exponent against time (mean over trajectories, min–max band).

    Args:
        result: a [`lyapunov_spectrum`][bioplaus.analysis.lyapunov.lyapunov_spectrum] result.
        ax: matplotlib axes (default: a new figure).
        exponents: plot the first this many exponents (default: all).
        dt: seconds per step (exponents and time are then per second and in seconds).

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    running = result.running().detach().cpu() / dt
    k = running.shape[-1] if exponents is None else min(exponents, running.shape[-1])
    time = (torch.arange(1, running.shape[0] + 1) * result.qr_every * dt).numpy()
    for i in range(k):
        mean, lo, hi = running[..., i].mean(1), running[..., i].amin(1), running[..., i].amax(1)
        (line,) = ax.plot(time, mean.numpy(), lw=1, label=f"λ{i + 1}" if k <= 10 else None)
        ax.fill_between(time, lo.numpy(), hi.numpy(), color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0.0, color="0.5", lw=0.5)
    ax.set(xlabel="time" + (" (s)" if dt != 1.0 else " (steps)"), ylabel="running estimate")
    if k <= 10:
        ax.legend(fontsize=7, ncol=2)
    return ax


def kaplan_yorke_dimension(spectrum: torch.Tensor) -> float:
    r"""The Kaplan–Yorke (Lyapunov) dimension of an attractor from its spectrum, sorted descending.

    $$
    D_{KY} = j + \frac{\sum_{i \le j} \lambda_i}{\lvert \lambda_{j+1} \rvert},
    \qquad j = \max\{m : \textstyle\sum_{i \le m} \lambda_i \ge 0\}
    $$

    (Kaplan & Yorke 1979); 0 when $\lambda_1 < 0$. If the partial sums of the ``k`` given
    exponents never turn negative, more exponents are needed and ``nan`` is returned.
    """
    partial = spectrum.detach().cumsum(0)
    if spectrum[0] < 0:
        return 0.0
    negative = (partial < 0).nonzero()
    if len(negative) == 0:
        return float("nan")
    j = int(negative[0])
    return j + float(partial[j - 1] / spectrum[j].abs())
