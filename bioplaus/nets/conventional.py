"""The GEVB paper's conventional (scalar) baselines: fully connected, conv and locally connected nets.

Clark, Abbott & Chung (2021) hold GEVB in vectorized nets against BP and DFA in conventional
nets of the same shapes. ``C(o, k, s, p)`` is a
convolution with ``o`` output channels, kernel ``k``, stride ``s`` and padding ``p``; ``LC`` the
same with unshared weights ([`Local2d`][bioplaus.core.layers.Local2d]); ``pool`` is ``AvgPool2d(2)``.

| model | input | layers |
|---|---|---|
| `conventional_fc` | 1×28×28 (MNIST) | FC 784→1024→512→10 |
| | 3×32×32 (CIFAR) | FC 3072→1024→512→512→10 |
| `conventional_conv` | 1×28×28 | C(64,3,1,1)→pool→C(32,3,1,1)→pool→FC 1568→1024→10 |
| | 3×32×32 | C(128,5,1,2)→pool→C(64,5,1,2)→pool→C(64,2,2,0)→FC 1024→1024→10 |
| `conventional_lc` | 1×28×28 | LC(32,3,1,1)→pool→LC(32,3,1,1)→pool→FC 1568→1024→10 |
| | 3×32×32 | LC(64,5,1,2)→pool→LC(32,5,1,2)→pool→LC(32,2,2,0)→FC 512→512→10 |

Every hidden layer applies the alternating ReLU (``"arelu"``) before any pooling; feature maps
are flattened channels-last; the readout has no activation. Biases start at zero. The "+"
variant (``nonnegative=True``) marks every weight layer past the first as nonnegative, so the
runner's projection clamps it after each optimizer step, and defaults to ON/OFF init
([`onoff_init_`][bioplaus.nets.init.onoff_init_]). ``dfa`` with ``low=0.0`` on such a net is the paper's "DFA+".
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar

import torch
from torch import nn

from bioplaus.core import Conv2d, Linear, Local2d, Local2dOp, TaskSpec, weight_layers
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError
from bioplaus.nets._registry import register
from bioplaus.nets.gevb_architectures import ARCHITECTURES, Stage, select_arch
from bioplaus.nets.init import he_init_, onoff_init_


class ChannelsLastFlatten(nn.Module):
    """``(B, C, H, W) → (B, H·W·C)``: move the channel axis last, then flatten (the paper's order).

    Channel ``c`` at position ``p`` lands at feature ``p·C + c``; with an even ``C`` the ON/OFF
    channel pairs ``(2m, 2m+1)`` stay adjacent feature pairs of the next layer. ``(B, N)`` inputs
    pass unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1).flatten(1)


class ConventionalNet(nn.Sequential):
    """``[conv or LC + f (→ AvgPool2d(2))] × stages → flatten channels-last → [Linear + f] × hidden → Linear``.

    Modules are named ``conv1``/``lc1``, ``pool1``, …, ``flatten``, ``fc1``, …, ``readout``.

    Args:
        input_shape: shape of one example; ``(channels, height, width)`` for conv and LC nets.
        kind: ``"fc"``, ``"conv"`` or ``"lc"``.
        arch: ``"mnist"`` or ``"cifar"`` column of the paper's table, or ``"auto"``: by input
            shape, and the MNIST column for any shape other than 1×28×28 and 3×32×32.
        n_out: number of outputs (classes).
        nonnegative: the "+" variant: weights past the first layer are projected to ``W ≥ 0``
            after every optimizer step (see [`install_projections`][bioplaus.core.layers.install_projections]).
        init: ``"he"`` (mixed sign), ``"onoff"``, or ``"auto"``: ON/OFF if ``nonnegative`` else He.
        activation: hidden nonlinearity, by name.

    Raises:
        ConfigError: for an unknown option value, or an input too small for the conv/LC stages.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LAYERED, Capability.FEEDFORWARD})

    def __init__(
        self,
        input_shape: Sequence[int],
        kind: str = "fc",
        arch: str = "auto",
        n_out: int = 10,
        nonnegative: bool = False,
        init: str = "auto",
        activation: str = "arelu",
    ):
        _check_choice("kind", kind, ARCHITECTURES)
        _check_choice("arch", arch, ("auto", "mnist", "cifar"))
        _check_choice("init", init, ("auto", "he", "onoff"))
        arch = select_arch(input_shape, arch)
        architecture = ARCHITECTURES[kind][arch]
        modules, features = _stages(input_shape, kind, architecture.stages, activation)
        modules["flatten"] = ChannelsLastFlatten()
        widths = [features, *architecture.hidden]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
            modules[f"fc{i}"] = Linear(a, b, activation)
        modules["readout"] = Linear(widths[-1], n_out)
        super().__init__(OrderedDict(modules))
        self.kind, self.arch = kind, arch
        if init == "auto":
            init = "onoff" if nonnegative else "he"
        layers = [layer for _, layer in weight_layers(self)]
        for i, layer in enumerate(layers):
            first, readout = i == 0, i == len(layers) - 1
            if init == "he":
                he_init_(layer.weight, layer.fan_in, first)
            else:
                onoff_init_(layer.weight, layer.fan_in, first=first, readout=readout, in_axis=layer.in_axis)
            nn.init.zeros_(layer.bias)
            layer.nonnegative = nonnegative and not first


def _check_choice(option: str, value: str, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"conventional nets: unknown {option} {value!r}; choose one of {', '.join(allowed)}")


def _stages(
    input_shape: Sequence[int], kind: str, stages: tuple[Stage, ...], activation: str
) -> tuple[dict[str, nn.Module], int]:
    """The conv/LC stage modules by name, and the number of features they output per example."""
    if not stages:
        return {}, math.prod(input_shape)
    if len(input_shape) != 3:
        raise ConfigError(f"conventional_{kind} needs image inputs (channels, height, width), got {tuple(input_shape)}")
    channels, size = input_shape[0], (input_shape[1], input_shape[2])
    modules: dict[str, nn.Module] = {}
    for i, st in enumerate(stages, start=1):
        out_size = Local2dOp(size, (st.kernel_size,) * 2, (st.stride,) * 2, (st.padding,) * 2).output_size
        if min(out_size) < (2 if st.pool else 1):
            raise ConfigError(
                f"conventional_{kind}: inputs of shape {tuple(input_shape)} are too small for the paper's "
                f"architecture: stage {i} would get {size[0]}×{size[1]} maps; use larger inputs or conventional_fc"
            )
        if kind == "conv":
            modules[f"conv{i}"] = Conv2d(
                channels, st.out_channels, st.kernel_size, st.stride, st.padding, activation=activation
            )
        else:
            modules[f"lc{i}"] = Local2d(
                channels, st.out_channels, size, st.kernel_size, st.stride, st.padding, activation=activation
            )
        channels, size = st.out_channels, out_size
        if st.pool:
            modules[f"pool{i}"] = nn.AvgPool2d(2)
            size = (size[0] // 2, size[1] // 2)
    return modules, channels * size[0] * size[1]


def _factory(kind: str, description: str) -> Callable[..., ConventionalNet]:
    def factory(
        spec: TaskSpec,
        arch: str = "auto",
        nonnegative: bool = False,
        init: str = "auto",
        activation: str = "arelu",
    ) -> ConventionalNet:
        return ConventionalNet(spec.input_shape, kind, arch, spec.n_out, nonnegative, init, activation)

    factory.__doc__ = description
    return factory


for _kind, _description in [
    ("fc", "The GEVB paper's conventional fully connected baseline; nonnegative=True gives its '+' variant."),
    ("conv", "The GEVB paper's conventional conv baseline: conv+arelu+avg-pool stages, one hidden FC layer."),
    ("lc", "The GEVB paper's conventional locally connected baseline: Local2d+arelu+avg-pool stages, one FC layer."),
]:
    register(f"conventional_{_kind}", _factory(_kind, _description))
