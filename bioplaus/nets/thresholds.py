r"""Firing thresholds for [`SpikingLinear`][bioplaus.nets.spiking.SpikingLinear]: static, BDETT, ALIF, homeostatic.

A threshold is a small module with explicit state. At every time step the layer calls

1. ``theta = threshold(v, v_prev)`` with the new membrane potential ``v`` (``V[t]``) and the
   *un-reset* previous one ``v_prev`` (``V[t-1]``), before firing, and then
2. ``threshold.observe(v, theta, spikes)`` with the spikes ``S[t] = H(V[t] - Θ[t])``, so the
   threshold can update its memory for step ``t+1``.

``reset()`` clears the per-trajectory memory (called by the layer's ``reset``). Thresholds are
forward-only, as in the official BDETT code: ``Θ`` is returned detached, so the surrogate
gradient treats it as a constant.

Time constants are in time steps (the SAN/PopSAN neuron has no ``dt``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from bioplaus import native
from bioplaus.errors import ConfigError
from bioplaus.native import bdett as native_bdett

STATS = ("sample", "batch")
_NO_KERNEL = object()  # "the kernel cannot take this memory"
_LOG2E = math.log2(math.e)


def _version(t: torch.Tensor) -> int:
    """The in-place modification counter of ``t`` (inference tensors have none: -1)."""
    return -1 if t.is_inference() else t._version


class Threshold(nn.Module):
    """Base class: a threshold ``Θ[t]`` from ``V[t]``, ``V[t-1]`` and the threshold's own memory."""

    def forward(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``Θ[t]`` for potentials ``v`` (``V[t]``) given the un-reset ``v_prev`` (``V[t-1]``)."""
        raise NotImplementedError

    def observe(self, v: torch.Tensor, theta: torch.Tensor, spikes: torch.Tensor) -> None:
        """Update the memory after the layer fired ``spikes`` with threshold ``theta`` at potential ``v``."""

    def reset(self) -> None:
        """Clear the per-trajectory memory (at an episode or sequence start)."""


class StaticThreshold(Threshold):
    r"""A constant threshold, $\Theta \equiv \theta_0$ (SAN/PopSAN: ``NEURON_VTH = 0.5``).

    Args:
        theta: the threshold value.
    """

    def __init__(self, theta: float = 0.5) -> None:
        super().__init__()
        self.theta = float(theta)

    def forward(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        return torch.full_like(v, self.theta)

    def extra_repr(self) -> str:
        return f"theta={self.theta}"


@dataclasses.dataclass(slots=True)
class _BDETTMemory:
    """BDETT's per-trajectory state, in a plain object (an ``nn.Module`` attribute write costs microseconds).

    ``base`` is the memory ``½ (P[t-1] + b)`` per neuron. With the C kernel it is usually ``None`` and
    ``lazy`` holds ``(V[t-1], its version, statistics)`` instead, from which the next step computes it;
    ``pending`` holds ``(V, Θ, their versions, statistics)`` between forward() and observe().
    """

    base: torch.Tensor | None = None
    lazy: tuple | None = None
    pending: tuple | None = None
    params: tuple | None = None  # (hyper-parameters, native_bdett.Params from them)


class BDETT(Threshold):
    r"""Bioinspired Dynamic Energy-Temporal Threshold (Ding et al., NeurIPS 2022), as the official code runs it.

    Per neuron ``i`` of a layer:

    $$
    \begin{aligned}
    R_i[t] &= a\,\exp\!\big(-(V_i[t] - V_i[t-1]) / C\big) + b
        &&\text{(depolarization rate; } a = 1,\ b = -1,\ C = 3)\\
    \Theta_i[t] &= \tfrac12 P_i[t-1] + \tfrac12 R_i[t] && P_i[-1] = 0.5\\
    V_m[t] &= \operatorname{mean} V[t] - 0.2\,(\max V[t] - \min V[t])\\
    V_\theta[t] &= \operatorname{mean} \Theta[t] - 0.2\,(\max \Theta[t] - \min \Theta[t])\\
    P_i[t] &= \eta\,(V_i[t] - V_m[t]) + V_\theta[t]
        + \ln\!\big(1 + e^{(V_i[t] - V_m[t]) / \psi}\big) && \eta = 0.01
    \end{aligned}
    $$

    ``P`` (the potential-tracking part, the paper's "energy" term in our reading) follows the
    layer's potential statistics; ``R`` (the paper's "temporal" term) falls with the rate of
    depolarization and jumps up after a spike, because ``V[t-1]`` is the un-reset potential.
    The official code names the two parts the other way round; we name them by function.

    **Statistics.** ``stats="sample"`` (default) takes mean/max/min over the feature axis (the
    last one) of each sample, so a sample's threshold never depends on the rest of the batch;
    at batch size 1 this equals the official code. ``stats="batch"`` pools over the whole
    tensor including the batch axis, exactly as the official ``tensor.mean()`` does.

    **Overflow.** Faithful BDETT has no guard: a large hyperpolarizing step (the post-spike reset
    of a large potential) makes ``R`` overflow, the layer's ``Θ`` range explodes and the next
    ``Θ`` turns hugely negative (everything fires). ``max_exponent`` (default ``None``: off) is a
    documented *deviation* that clamps the exponent $-\Delta V / C$ from above; the faithful
    behaviour is the default and is never altered silently. The collapse is not a float overflow
    first: a post-spike ``R`` of a few hundred already drags ``V_θ`` far below zero. In the
    toy layer (``bioplaus.analysis.homeostasis``) a clamp at 20 does not prevent it at
    ×8 input, a clamp at 3 (``R ≤ e³ − 1``) does.

    **Backend.** The eager path is about twenty tensor operations per step, each costing more in
    PyTorch's dispatch than in arithmetic at PopSAN's sizes. ``backend="auto"`` (default) runs
    float32 CPU tensors through a C kernel ([`bioplaus.native.bdett`][bioplaus.native.bdett]: the same formulas in one
    pass, compiled on first use; it agrees with the eager path to float32 rounding, including the
    faithful overflow to ``inf``) and everything else through PyTorch; ``"torch"`` always uses
    PyTorch (bit-for-bit the figures recorded before the kernel existed), and ``"native"`` insists
    on the kernel and raises if no C compiler is available. With the kernel, observe() keeps
    ``V[t]`` and its layer statistics rather than ``P[t]``, and the next step computes ``P`` in its
    own pass (so the last step of a trajectory never does); modifying that ``V`` in place before
    the next step is therefore an error, reported as such.

    Args:
        psi: softplus scale ``ψ`` (4 in the obstacle-avoidance SAN, 6 in PopSAN).
        eta: slope ``η`` of the linear part of ``P``.
        C: scale of the depolarization rate.
        a: gain of the rate term.
        b: offset of the rate term (``R = 0`` at ``ΔV = 0``).
        p0: initial ``P`` (``P[-1]``).
        range_factor: weight of the range in ``V_m`` and ``V_θ`` (0.2).
        stats: ``"sample"`` (per-sample layer statistics) or ``"batch"`` (official, batch-pooled).
        max_exponent: opt-in guard, the largest exponent ``-ΔV/C`` used (``None``: faithful).
        backend: ``"auto"``, ``"native"`` or ``"torch"`` (see above).

    Raises:
        ConfigError: for an unknown ``stats`` or ``backend``, ``psi`` or ``C`` not positive, or
            ``backend="native"`` where the kernel cannot be compiled (the message gives the reason).
    """

    def __init__(
        self,
        psi: float = 6.0,
        eta: float = 0.01,
        C: float = 3.0,
        a: float = 1.0,
        b: float = -1.0,
        p0: float = 0.5,
        range_factor: float = 0.2,
        stats: str = "sample",
        max_exponent: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if stats not in STATS:
            raise ConfigError(f"BDETT stats must be one of {STATS}, got {stats!r}")
        if psi <= 0 or C <= 0:
            raise ConfigError(f"BDETT needs psi > 0 and C > 0, got psi={psi}, C={C}")
        self.backend = native.check_backend(backend, "bdett", "BDETT")
        self.psi, self.eta, self.C, self.a, self.b = float(psi), float(eta), float(C), float(a), float(b)
        self.p0, self.range_factor, self.stats = float(p0), float(range_factor), stats
        self.max_exponent = None if max_exponent is None else float(max_exponent)
        self._m = _BDETTMemory()

    @property
    def P(self) -> torch.Tensor | None:
        """The potential-tracking memory ``P[t-1]`` (``None`` before the first step: ``P = p0``)."""
        base = self._materialized_base()
        return None if base is None else 2 * base - self.b

    def rate_term(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        r"""$R = a\,e^{-(V[t]-V[t-1])/C} + b$ (exponent clamped only when ``max_exponent`` is set)."""
        return self._exp_rate(v, v_prev).mul_(self.a).add_(self.b)

    def _exp_rate(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        # e^{−ΔV/C} computed as 2^{−ΔV·log2(e)/C}: exp2 is ~3× faster than exp on CPU (torch 2.13)
        exponent = torch.sub(v_prev.detach(), v.detach()).mul_(_LOG2E / self.C)
        if self.max_exponent is not None:
            exponent.clamp_(max=self.max_exponent * _LOG2E)
        return exponent.exp2_()

    def _low(self, x: torch.Tensor) -> torch.Tensor:
        """``mean(x) − range_factor · (max(x) − min(x))`` over the last axis, keeping it."""
        # amax and amin: several times faster than torch.aminmax on CPU (torch 2.13)
        spread = x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)
        return x.mean(-1, keepdim=True) - self.range_factor * spread

    def _params(self) -> native_bdett.Params:
        key = (self.p0, self.a, self.b, self.C, self.psi, self.eta, self.range_factor, self.max_exponent)
        if self._m.params is None or self._m.params[0] != key:
            self._m.params = (key, native_bdett.params(*key))
        return self._m.params[1]

    def _last_potential(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V[t-1], stats)`` of the lazy memory, checked to be unmodified since observe()."""
        v_last, version, stats = self._m.lazy
        if _version(v_last) != version:
            raise RuntimeError(
                "BDETT: the potential V passed to observe() was modified in place before the next step; the "
                "native backend computes the memory P from it when the next step needs it. Modify a clone "
                "(layer.v = layer.v.clone()...), or use BDETT(backend='torch')."
            )
        return v_last, stats

    def _materialized_base(self) -> torch.Tensor | None:
        """The memory ``½ (P[t-1] + b)`` per neuron, computing it now if the kernel left it lazy."""
        if self._m.lazy is not None:
            v_last, stats = self._last_potential()
            lib = native_bdett.library()
            self._m.base = native_bdett.memory(lib, v_last, stats, self.stats == "batch", self._params())
            self._m.lazy = None
        return self._m.base

    def _kernel_memory(self, v: torch.Tensor) -> torch.Tensor | tuple | None | object:
        """The memory in the form the kernel takes for potentials ``v``, or ``_NO_KERNEL`` if it cannot."""
        if self._m.lazy is not None:
            v_last, stats = self._last_potential()
            return (v_last, stats) if v_last.shape == v.shape else _NO_KERNEL
        if self._m.base is None or native_bdett.accepts(v, self._m.base, None):
            return self._m.base
        return _NO_KERNEL

    def forward(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        # Θ[t] = ½ P[t-1] + ½ (a e^{−ΔV/C} + b) = base + ½ a e^{−ΔV/C}
        self._m.pending = None
        if self.backend != "torch" and native_bdett.accepts(v, v_prev, None):
            lib = native_bdett.library()
            memory = _NO_KERNEL if lib is None else self._kernel_memory(v)
            if memory is not _NO_KERNEL:
                theta, stats = native_bdett.step(lib, v, v_prev, memory, self.stats == "batch", self._params())
                self._m.pending = (v, theta, _version(v), _version(theta), stats)
                return theta
        base = self._materialized_base()
        if base is None:
            return self._exp_rate(v, v_prev).mul_(0.5 * self.a).add_(0.5 * (self.p0 + self.b))
        return torch.add(base, self._exp_rate(v, v_prev), alpha=0.5 * self.a)

    def observe(self, v: torch.Tensor, theta: torch.Tensor, spikes: torch.Tensor) -> None:
        # P = η z + V_θ + ln(1 + e^{z/ψ}), z = V − V_m, stored as ½ (P + b). V and Θ statistics in
        # one pass over a stacked tensor; u = z·log2(e)/ψ serves both terms (η z = η ψ ln2 · u).
        pending, self._m.pending = self._m.pending, None
        self._m.lazy = None
        if (
            pending is not None
            and pending[0] is v
            and pending[1] is theta
            and pending[2:4] == (_version(v), _version(theta))
        ):
            # the kernel's statistics of this very V and Θ: the memory is computed when it is needed
            self._m.base, self._m.lazy = None, (v.detach(), _version(v), pending[4])
            return
        k = _LOG2E / self.psi
        v = v.detach()
        stacked = torch.stack((v, theta))
        low_v, low_theta = self._low(stacked if self.stats == "sample" else stacked.flatten(1))
        u = torch.sub(v, low_v).mul_(k)
        softplus = u.exp2().log1p_()  # ln(1 + e^{z/ψ}) literally, as the official code
        softplus.add_(u, alpha=self.eta / k)
        self._m.base = torch.add(0.5 * (low_theta + self.b), softplus, alpha=0.5)

    def reset(self) -> None:
        self._m.base = self._m.pending = self._m.lazy = None

    def __getstate__(self) -> dict:
        # a copy or pickle holds the memory itself: the lazy form refers to the caller's V by version
        return {**self.__dict__, "_m": _BDETTMemory(base=self._materialized_base())}

    def extra_repr(self) -> str:
        guard = "" if self.max_exponent is None else f", max_exponent={self.max_exponent}"
        return f"psi={self.psi}, eta={self.eta}, C={self.C}, stats={self.stats!r}{guard}, backend={self.backend!r}"


class AdaptiveThreshold(Threshold):
    r"""Spike-triggered threshold adaptation of ALIF neurons (Bellec et al., NeurIPS 2018, LSNN).

    $$
    \Theta_i[t] = \theta_0 + \beta\, a_i[t], \qquad
    a_i[t+1] = \rho\, a_i[t] + (1 - \rho)\, S_i[t], \qquad \rho = e^{-1/\tau_a}
    $$

    with ``a[0] = 0``. Bellec et al. use ``β = 1.8``; ``τ_a`` is given here in time steps of
    the host neuron (their 200 ms–seconds adaptation spans episodes of hundreds of 1 ms steps;
    PopSAN runs 5 steps per action, so the default 20 steps is our choice). ``a`` is per
    sample and neuron and cleared by `reset`.

    Args:
        theta0: baseline threshold ``θ_0``.
        beta: adaptation strength ``β``.
        tau: adaptation time constant ``τ_a`` in steps.
    """

    def __init__(self, theta0: float = 0.5, beta: float = 1.8, tau: float = 20.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ConfigError(f"ALIF tau must be positive, got {tau}")
        self.theta0, self.beta, self.tau = float(theta0), float(beta), float(tau)
        self.rho = math.exp(-1.0 / self.tau)
        self.a: torch.Tensor | None = None

    def forward(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        if self.a is None:
            return torch.full_like(v, self.theta0)
        return self.theta0 + self.beta * self.a

    def observe(self, v: torch.Tensor, theta: torch.Tensor, spikes: torch.Tensor) -> None:
        a = torch.zeros_like(v) if self.a is None else self.a
        self.a = self.rho * a + (1 - self.rho) * spikes.detach()

    def reset(self) -> None:
        self.a = None

    def extra_repr(self) -> str:
        return f"theta0={self.theta0}, beta={self.beta}, tau={self.tau}"


class HomeostaticThreshold(Threshold):
    r"""Homeostatic adaptive threshold of Diehl & Cook (2015, Front. Comput. Neurosci. 9:99).

    $$
    \Theta_i[t] = \theta_0 + \vartheta_i, \qquad
    \vartheta_i \leftarrow \vartheta_i\, e^{-1/\tau_\vartheta} + \vartheta_+ \,\bar S_i[t]
    $$

    where $\bar S_i$ is neuron ``i``'s spike averaged over the batch: ``ϑ`` is a property
    of the neuron, shared by all samples, that grows with every spike and decays very slowly
    (Diehl & Cook: ``ϑ_+ = 0.05`` mV on a 13 mV threshold gap, ``τ = 10⁷`` ms). Because it is a
    long-term homeostatic variable, `reset` (episode start) keeps it;
    [`clear`][bioplaus.nets.thresholds.HomeostaticThreshold.clear] zeros it. It is not saved in ``state_dict`` (its
    size is set by the first input). Diehl & Cook adapt ``ϑ`` during training and freeze it for testing: set
    ``adapt=False`` for that; the default adapts online, also at evaluation, which is how it acts as a drop-in
    homeostatic threshold in a trained network.

    Args:
        theta0: baseline threshold ``θ_0``.
        theta_plus: increment ``ϑ_+`` per spike.
        tau: decay time constant of ``ϑ`` in steps. At a steady rate ``r`` spikes/step, ``ϑ``
            settles near ``ϑ_+ r τ``: our defaults (``ϑ_+ = 10⁻³``, ``τ = 10³`` steps, i.e.
            200 PopSAN actions) give ``Θ ≈ 0.5 + r``, settling within an episode; Diehl & Cook's
            values (``τ = 10⁷`` ms) act over a whole training run of unsupervised STDP instead.
        adapt: whether ``ϑ`` is updated.
    """

    def __init__(self, theta0: float = 0.5, theta_plus: float = 1e-3, tau: float = 1e3, adapt: bool = True) -> None:
        super().__init__()
        if tau <= 0:
            raise ConfigError(f"homeostatic tau must be positive, got {tau}")
        self.theta0, self.theta_plus, self.tau, self.adapt = float(theta0), float(theta_plus), float(tau), adapt
        self.decay = math.exp(-1.0 / self.tau)
        self.register_buffer("vartheta", torch.zeros(0), persistent=False)

    def forward(self, v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
        if self.vartheta.shape != v.shape[-1:]:
            self.vartheta = torch.zeros(v.shape[-1], dtype=v.dtype, device=v.device)
        return (self.theta0 + self.vartheta).expand_as(v)

    def observe(self, v: torch.Tensor, theta: torch.Tensor, spikes: torch.Tensor) -> None:
        if self.adapt:
            mean_spikes = spikes.detach().reshape(-1, spikes.shape[-1]).mean(0)
            self.vartheta = self.decay * self.vartheta + self.theta_plus * mean_spikes

    def clear(self) -> None:
        """Zero the homeostatic variable ``ϑ``."""
        self.vartheta = torch.zeros(0)

    def extra_repr(self) -> str:
        return f"theta0={self.theta0}, theta_plus={self.theta_plus}, tau={self.tau}, adapt={self.adapt}"


THRESHOLDS: dict[str, type[Threshold]] = {
    "static": StaticThreshold,
    "bdett": BDETT,
    "alif": AdaptiveThreshold,
    "homeostatic": HomeostaticThreshold,
}


def make_threshold(kind: str | Threshold, **options: float | str | None) -> Threshold:
    """A threshold by name (``static``, ``bdett``, ``alif``, ``homeostatic``) with ``options``, or ``kind`` itself.

    Raises:
        ConfigError: for an unknown name or option.
    """
    if isinstance(kind, Threshold):
        return kind
    if kind not in THRESHOLDS:
        raise ConfigError(f"unknown threshold {kind!r}; known: {', '.join(THRESHOLDS)}")
    try:
        return THRESHOLDS[kind](**options)
    except TypeError as err:
        raise ConfigError(f"threshold {kind!r}: {err}") from None
