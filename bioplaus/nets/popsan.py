r"""PopSAN: the population-coded spiking actor of Tang et al. (CoRL 2020), used by BDETT for continuous control.

Per observation dimension ``j`` a population of ``K`` neurons with learned Gaussian receptive
fields (means initialised evenly on ``mean_range``, standard deviation ``std``) gives the
stimulation $A_{jk} = \exp\!\big(-\tfrac12 (o_j - \mu_{jk})^2 / \sigma_{jk}^2\big)$. The
deterministic ("regular") spike encoder integrates it and fires at ``0.999``:

$$
U_{jk}[t] = U_{jk}[t-1] + A_{jk}, \quad s_{jk}[t] = H(U_{jk}[t] - 0.999),
\quad U_{jk}[t] \leftarrow U_{jk}[t] - 0.999\, s_{jk}[t]
$$

with a straight-through gradient to ``A`` (the official ``PseudoEncoderSpikeRegular``). The
spikes drive a stack of [`SpikingLinear`][bioplaus.nets.spiking.SpikingLinear] layers (hidden
``[256, 256]`` and an output population of ``K`` neurons per action dimension) for ``T = 5``
steps; the output firing rates ``r`` (spike count / ``T``) of each action's population are
decoded by a per-action linear read-out (the official grouped ``Conv1d``), then
``a = a_max · tanh(·)``.

Observations are z-scored by a [`RunningNorm`][bioplaus.nets.popsan.RunningNorm] (mean/variance frozen outside training)
and clipped to ±``clip``, as in the official ``replay_buffer_norm`` (which froze statistics
collected during training).

State: every forward pass starts from zero neuron state (the official PopSAN re-zeroes its
membranes at every call). The threshold memory is cleared too unless ``carry_threshold=True``;
then it persists across calls, as the official BDETT code keeps it, until
[`PopSAN.reset`][bioplaus.nets.popsan.PopSAN.reset] (called at each episode start — the official code never resets it;
we do so that episodes are independent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bioplaus.core.capabilities import Capability
from bioplaus.core.spec import TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register
from bioplaus.nets.spiking import SpikingLinear, spiking_layers

ENCODER_THRESHOLD = 0.999


class _StraightThroughSpike(torch.autograd.Function):
    """``H(u)`` forward, identity backward (the official encoder's pseudo-gradient)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class RunningNorm(nn.Module):
    """Running mean and variance of observations (Chan et al. parallel update); z-scores and clips.

    Statistics update only through [`update`][bioplaus.nets.popsan.RunningNorm.update] (the training loop calls it on
    new observations); `forward` applies ``clip((o − mean) / sqrt(var + 1e-8), ±clip)``.
    """

    def __init__(self, dim: int, clip: float = 3.0) -> None:
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch of observations ``(B, dim)`` into the statistics."""
        obs = obs.reshape(-1, self.mean.shape[0]).to(self.mean)
        n, mean, var = obs.shape[0], obs.mean(0), obs.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.pow(2) * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)


class PopulationEncoder(nn.Module):
    """Learned Gaussian receptive fields and the deterministic spike encoder (module docstring)."""

    def __init__(
        self, obs_dim: int, pop: int = 10, mean_range: tuple[float, float] = (-3.0, 3.0), std: float = math.sqrt(0.15)
    ) -> None:
        super().__init__()
        self.obs_dim, self.pop = obs_dim, pop
        means = torch.linspace(mean_range[0], mean_range[1], pop) if pop > 1 else torch.zeros(1)
        self.mean = nn.Parameter(means.repeat(obs_dim, 1))
        self.std = nn.Parameter(torch.full((obs_dim, pop), float(std)))

    def stimulation(self, obs: torch.Tensor) -> torch.Tensor:
        """``A = exp(−½ (o − μ)² / σ²)``, ``(B, obs_dim · pop)``."""
        a = torch.exp(-0.5 * (obs.unsqueeze(-1) - self.mean).pow(2) / self.std.pow(2))
        return a.flatten(-2)

    def forward(self, obs: torch.Tensor, T: int) -> list[torch.Tensor]:
        """The encoder's spikes at each of ``T`` steps."""
        a = self.stimulation(obs)
        u = torch.zeros_like(a)
        spikes = []
        for _ in range(T):
            u = u + a
            s = _StraightThroughSpike.apply(u - ENCODER_THRESHOLD)
            u = u - ENCODER_THRESHOLD * s
            spikes.append(s)
        return spikes


class PopSAN(nn.Module):
    """Population-coded spiking actor network (Tang et al., CoRL 2020).

    Args:
        obs_dim: observation dimensions.
        act_dim: action dimensions.
        act_limit: ``a_max`` (actions lie in ``[−a_max, a_max]``).
        hidden: widths of the hidden spiking layers.
        pop: neurons per observation dimension in the encoder.
        out_pop: neurons per action dimension in the output population.
        T: time steps per forward pass.
        threshold: threshold of every spiking layer (``static``, ``bdett``, ``alif``, ``homeostatic``).
        carry_threshold: keep the threshold memory across forward calls until
            [`reset`][bioplaus.nets.popsan.PopSAN.reset].
        threshold_options: options of the threshold (default for ``bdett``: ``psi=6`` as in PopSAN).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SPIKING, Capability.POLICY})

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        act_limit: float = 1.0,
        hidden: Sequence[int] = (256, 256),
        pop: int = 10,
        out_pop: int = 10,
        T: int = 5,
        threshold: str = "static",
        carry_threshold: bool = False,
        threshold_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(
            obs_dim=obs_dim, act_dim=act_dim, act_limit=act_limit, hidden=list(hidden), pop=pop, out_pop=out_pop,
            T=T, threshold=threshold, carry_threshold=carry_threshold, threshold_options=threshold_options,
        )  # fmt: skip
        self.obs_dim, self.act_dim, self.act_limit, self.T = obs_dim, act_dim, float(act_limit), int(T)
        self.out_pop, self.carry_threshold = out_pop, carry_threshold
        self.norm = RunningNorm(obs_dim)
        self.encoder = PopulationEncoder(obs_dim, pop)
        widths = [obs_dim * pop, *hidden, act_dim * out_pop]
        options = threshold_options or {}
        self.layers = nn.ModuleList(
            SpikingLinear(a, b, threshold, **options) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.decoder_weight = nn.Parameter(torch.empty(act_dim, out_pop).uniform_(-1, 1) / math.sqrt(out_pop))
        self.decoder_bias = nn.Parameter(torch.empty(act_dim).uniform_(-1, 1) / math.sqrt(out_pop))

    def reset(self) -> None:
        """Clear all neuron and threshold state (call at an episode start)."""
        for _, layer in spiking_layers(self):
            layer.reset()

    def _start_pass(self) -> None:
        for _, layer in spiking_layers(self):
            if self.carry_threshold:
                layer.current = layer.v = layer.spikes = None
            else:
                layer.reset()

    def rates(self, obs: torch.Tensor) -> torch.Tensor:
        """Output population firing rates ``(B, act_dim, out_pop)`` for observations ``(B, obs_dim)``."""
        if obs.shape[-1] != self.obs_dim:
            raise ShapeError(f"PopSAN expects observations with {self.obs_dim} dimensions, got {tuple(obs.shape)}")
        self._start_pass()
        count = 0
        for s in self.encoder(self.norm(obs), self.T):
            for layer in self.layers:
                s = layer(s)
            count = count + s
        return (count / self.T).unflatten(-1, (self.act_dim, self.out_pop))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions ``a_max · tanh(Σ_k w_jk r_jk + b_j)``, ``(B, act_dim)``."""
        r = self.rates(obs)
        return self.act_limit * torch.tanh((r * self.decoder_weight).sum(-1) + self.decoder_bias)


ThresholdOptions = dict[str, Any]
"""Keyword options of a threshold (named alias: the config checker reads annotations by name)."""


@register("popsan")
def popsan(
    spec: TaskSpec,
    act_limit: float = 1.0,
    hidden: Sequence[int] = (256, 256),
    pop: int = 10,
    out_pop: int = 10,
    T: int = 5,
    threshold: str = "static",
    carry_threshold: bool = False,
    threshold_options: ThresholdOptions | None = None,
) -> PopSAN:
    """PopSAN spiking actor (Tang et al. 2020): observations ``spec.input_shape = (obs_dim,)``, ``spec.n_out`` actions.

    Options as [`PopSAN`][bioplaus.nets.popsan.PopSAN]'s; ``act_limit`` must be the environment's ``a_max`` (task
    ``td3`` checks it).

    Raises:
        ShapeError: when the task's observations are not vectors.
        ConfigError: for an unknown threshold or threshold option.
    """
    if len(spec.input_shape) != 1:
        raise ShapeError(f"PopSAN takes observation vectors; this task's observations have shape {spec.input_shape}")
    return PopSAN(spec.input_shape[0], spec.n_out, act_limit, hidden, pop, out_pop, T, threshold, carry_threshold,
                  threshold_options)  # fmt: skip


def save_actor(actor: PopSAN, path: str | Path) -> None:
    """Save ``actor``'s constructor arguments and ``state_dict`` with ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": actor.config, "state_dict": actor.state_dict()}, path)


def load_actor(path: str | Path, **overrides: Any) -> PopSAN:
    """Rebuild a [`PopSAN`][bioplaus.nets.popsan.PopSAN] saved by [`save_actor`][bioplaus.nets.popsan.save_actor];
    ``overrides`` replace constructor arguments (e.g. ``threshold="bdett"`` for the drop-in protocol).

    Raises:
        ConfigError: when there is no file at ``path``.
    """
    if not Path(path).is_file():
        raise ConfigError(f"no PopSAN checkpoint at {path}: train one first (experiments/bdett_train.py)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    actor = PopSAN(**{**saved["config"], **overrides})
    actor.load_state_dict(saved["state_dict"])
    return actor
