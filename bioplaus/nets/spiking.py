r"""Current-based LIF layers of SAN/PopSAN with pluggable thresholds, on snntorch's surrogate gradients.

The host neuron of SAN (Tang et al., IROS 2020) and PopSAN (Tang et al., CoRL 2020), used
unchanged by BDETT (Ding et al., NeurIPS 2022), in discrete time without ``dt``
(the BDETT page of the documentation):

$$
\begin{aligned}
I[t] &= \alpha\, I[t-1] + W s_{\text{in}}[t] + b && \alpha = 1/2\\
V[t] &= \beta\, V[t-1]\,(1 - S[t-1]) + I[t] && \beta = 3/4\\
S[t] &= H\big(V[t] - \Theta[t]\big) && \text{strict } >
\end{aligned}
$$

The reset zeroes the *decayed* potential on the step after a spike (the new current is still
added); this is snntorch's ``Leaky(reset_mechanism="zero")`` update with a synaptic current in
front, not ``Synaptic("zero")`` (which also drops the new input). ``Θ`` comes from a
[`Threshold`][bioplaus.nets.thresholds.Threshold] (static, BDETT, ALIF, homeostatic). Unlike
snntorch's ``Leaky``, the reset uses the stored spike ``S[t-1]`` rather than recomputing it from
the *current* threshold, which would be wrong for a dynamic ``Θ``.

The spike nonlinearity is any snntorch surrogate (``snntorch.surrogate.atan()``,
``fast_sigmoid()``, ...); the default is the SAN/PopSAN rectangle, ``∂S/∂V = 1`` for
``|V − Θ| < 0.5`` (``PseudoSpikeRect``), built with ``snntorch.surrogate.custom_surrogate``.
As in the official code the reset term ``(1 − S[t-1])`` stays in the graph and ``Θ`` does not.

State (current, potential, previous spike, threshold memory) lives in the layer and is cleared
by [`SpikingLinear.reset`][bioplaus.nets.spiking.SpikingLinear.reset] (or
[`reset_spiking`][bioplaus.nets.spiking.reset_spiking] on a whole model); there are no globals and no use of snntorch's
global neuron list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from snntorch import surrogate
from torch import nn

from bioplaus.nets.thresholds import Threshold, make_threshold

SpikeFn = Callable[[torch.Tensor], torch.Tensor]


def rectangular(width: float = 0.5) -> SpikeFn:
    """Heaviside forward (``u > 0``) with the rectangular surrogate ``∂S/∂u = 1`` for ``|u| < width``.

    SAN/PopSAN's ``PseudoSpikeRect`` (width 0.5), as an snntorch ``custom_surrogate``.
    """

    def grad(u: torch.Tensor, grad_out: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return grad_out * (u.abs() < width).to(grad_out.dtype)

    return surrogate.custom_surrogate(grad)


class SpikingLinear(nn.Module):
    """A linear synapse into current-based LIF neurons with zero reset; one call is one time step.

    Args:
        in_features: presynaptic units.
        out_features: neurons.
        threshold: a threshold name (``static``, ``bdett``, ``alif``, ``homeostatic``) or module.
        alpha: current decay ``α`` (``NEURON_CDECAY``).
        beta: potential decay ``β`` (``NEURON_VDECAY``).
        spike_grad: the spike function with its surrogate gradient (an snntorch surrogate);
            default [`rectangular`][bioplaus.nets.spiking.rectangular] ``(0.5)``.
        bias: whether the synapse has a bias.
        **threshold_options: options of the named threshold (e.g. ``psi=4.0``, ``stats="batch"``).

    Attributes:
        theta: the last threshold used (detached), ``None`` before the first step.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        threshold: str | Threshold = "static",
        alpha: float = 0.5,
        beta: float = 0.75,
        spike_grad: SpikeFn | None = None,
        bias: bool = True,
        **threshold_options: Any,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.threshold = make_threshold(threshold, **threshold_options)
        self.alpha, self.beta = float(alpha), float(beta)
        self.spike_grad = spike_grad or rectangular(0.5)
        self.current: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.spikes: torch.Tensor | None = None
        self.theta: torch.Tensor | None = None

    def reset(self) -> None:
        """Zero the neuron state and clear the threshold's per-trajectory memory."""
        self.current = self.v = self.spikes = self.theta = None
        self.threshold.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One time step: presynaptic spikes (or rates) ``x`` ``(..., in)`` → spikes ``(..., out)``."""
        drive = self.linear(x)
        if self.v is None:
            self.current = drive
            v_prev = torch.zeros_like(drive)
            v = drive
        else:
            self.current = torch.add(drive, self.current, alpha=self.alpha)  # α I[t-1] + W s[t] + b
            v_prev = self.v
            v = torch.addcmul(self.current, v_prev, 1 - self.spikes, value=self.beta)  # β V (1 − S) + I
        theta = self.threshold(v, v_prev)
        spikes = self.spike_grad(v - theta)
        self.threshold.observe(v, theta, spikes)
        self.v, self.spikes, self.theta = v, spikes, theta
        return spikes

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"


def spiking_layers(model: nn.Module) -> list[tuple[str, SpikingLinear]]:
    """The [`SpikingLinear`][bioplaus.nets.spiking.SpikingLinear] layers of ``model`` with their qualified names, in
    registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SpikingLinear)]


def reset_spiking(model: nn.Module) -> None:
    """Reset every [`SpikingLinear`][bioplaus.nets.spiking.SpikingLinear] in ``model`` (call at a trial or episode
    start)."""
    for _, layer in spiking_layers(model):
        layer.reset()


def set_threshold(model: nn.Module, kind: str, **options: Any) -> None:
    """Give every spiking layer of ``model`` a fresh threshold ``kind`` with ``options`` (the drop-in protocol).

    Raises:
        ConfigError: for an unknown threshold name or option.
    """
    for _, layer in spiking_layers(model):
        layer.threshold = make_threshold(kind, **options)
        layer.reset()
