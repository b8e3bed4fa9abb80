r"""Homeostasis measurement: how a spiking layer's firing rate responds to the scale of its input.

BDETT is said to "offer homeostasis" (Ding et al. 2022, abstract); the paper's metric could not
be verified, so this module *measures* rather than asserts. For an input
scale ``c`` the layer receives ``c · x``; a perfectly homeostatic threshold would keep the rate
constant in ``c``. We report per threshold and scale the mean rate, its spread over neurons,
the fractions of silent (rate 0) and saturated (rate 1) neurons, the median ``Θ``, and the
*scale sensitivity* $\partial \log r / \partial \log c$ between neighbouring scales (0:
perfectly homeostatic, 1: rate proportional to the input).

[`input_scale_sweep`][bioplaus.analysis.homeostasis.input_scale_sweep] is a toy layer: ``Linear(100 → 256)`` with
``N(0, 0.15²)`` weights, Bernoulli(0.3) input spikes, 8 samples, 50 steps, rates over steps 10–49. For trained
actors, the degradation suite's ``scale_0.5`` and ``scale_2`` conditions scale every spiking
layer's weights and biases ([`bioplaus.analysis.degradation`][bioplaus.analysis.degradation]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bioplaus.analysis.spikes import FiringRates
from bioplaus.nets.spiking import SpikingLinear

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
THRESHOLDS: dict[str, tuple[str, dict[str, Any]]] = {
    "static": ("static", {}),
    "bdett": ("bdett", {"psi": 4.0}),
    "bdett (guarded)": ("bdett", {"psi": 4.0, "max_exponent": 3.0}),
    "alif": ("alif", {}),
    "homeostatic": ("homeostatic", {}),
}
"""Thresholds of the default sweep: name → (kind, options). ψ = 4 as in the toy layer."""


@torch.no_grad()
def input_scale_sweep(
    thresholds: Mapping[str, tuple[str, dict[str, Any]]] = THRESHOLDS,
    scales: Sequence[float] = SCALES,
    n_in: int = 100,
    n_out: int = 256,
    p: float = 0.3,
    batch: int = 8,
    steps: int = 50,
    skip: int = 10,
    weight_std: float = 0.15,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Firing statistics of one spiking layer per threshold and input scale (module docstring).

    Every threshold sees the same weights (``N(0, weight_std²)``, zero bias) and the same input
    spikes. Returns one row per (threshold, scale) with ``rate``, ``rate_sd`` (over neurons),
    ``silent``, ``saturated``, ``median_theta`` and ``sensitivity`` (``d log r / d log c`` to the
    previous scale; NaN for the first).
    """
    g = torch.Generator().manual_seed(seed)
    weight = weight_std * torch.randn(n_out, n_in, generator=g)
    x = (torch.rand(steps, batch, n_in, generator=g) < p).float()
    rows = []
    for name, (kind, options) in thresholds.items():
        previous = None
        for c in scales:
            layer = SpikingLinear(n_in, n_out, kind, **options)
            layer.linear.weight.copy_(weight)
            layer.linear.bias.zero_()
            counts, thetas = torch.zeros(batch, n_out), []
            for t in range(steps):
                s = layer(c * x[t])
                if t >= skip:
                    counts += s
                    thetas.append(layer.theta)
            per_neuron = counts / (steps - skip)
            rate = float(per_neuron.mean())
            sensitivity = math.nan
            if previous is not None and rate > 0 and previous[1] > 0:
                sensitivity = math.log(rate / previous[1]) / math.log(c / previous[0])
            rows.append({
                "threshold": name, "scale": c, "rate": rate, "rate_sd": float(per_neuron.mean(0).std()),
                "silent": float((per_neuron == 0).float().mean()), "saturated": float((per_neuron == 1).float().mean()),
                "median_theta": float(torch.stack(thetas).median()), "sensitivity": sensitivity,
            })  # fmt: skip
            previous = (c, rate)
    return rows


def actor_rates(actor: torch.nn.Module, obs: torch.Tensor) -> dict[str, float]:
    """Per-layer firing rates of ``actor`` on a batch of observations (one forward pass)."""
    with torch.no_grad(), FiringRates(actor) as monitor:
        actor(obs)
    return monitor.rates()


def plot_sweep(rows: list[dict[str, Any]], path: str | None = None):
    """Mean firing rate and median threshold against input scale, one line per threshold."""
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_theta) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in dict.fromkeys(r["threshold"] for r in rows):
        sub = [r for r in rows if r["threshold"] == name]
        scales = [r["scale"] for r in sub]
        ax_rate.plot(scales, [r["rate"] for r in sub], marker="o", label=name)
        ax_theta.plot(scales, [r["median_theta"] for r in sub], marker="o", label=name)
    for ax, label in ((ax_rate, "firing rate (spikes/neuron/step)"), (ax_theta, "median Θ")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("input scale c")
        ax.set_ylabel(label)
    ax_theta.set_yscale("symlog", linthresh=1.0)
    ax_rate.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
