"""A small convolutional network built from bioplaus layers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from bioplaus.core import Conv2d, Linear, TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError
from bioplaus.nets._registry import register


class ConvNet(nn.Module):
    """``[Conv2d + f → AvgPool2d(2)] × len(channels) → flatten → Linear + f → Linear``.

    Convolutions are "same"-padded (odd kernel sizes), so each block halves the spatial size.
    Average pooling (not max) keeps the network piecewise linear in the same way for every
    rule, as in the GEVB paper's architectures.

    Args:
        input_shape: ``(channels, height, width)`` of one example.
        channels: output channels of each convolutional block.
        kernel_size: odd filter size of every convolution.
        hidden: width of the fully connected hidden layer.
        n_out: output size (classes).
        activation: nonlinearity, by name.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LAYERED, Capability.FEEDFORWARD})

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden: int = 128,
        n_out: int = 10,
        activation: str = "relu",
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"convnet needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"convnet kernel_size must be odd (same padding), got {kernel_size}")
        c, h, w = input_shape
        if min(h, w) < 2 ** len(channels):
            raise ConfigError(
                f"convnet with {len(channels)} pooling blocks needs images of at least "
                f"{2 ** len(channels)}×{2 ** len(channels)}, got {h}×{w}; use fewer channels entries"
            )
        blocks: dict[str, nn.Module] = {}
        for i, out_c in enumerate(channels, start=1):
            blocks[f"conv{i}"] = Conv2d(c, out_c, kernel_size, padding=kernel_size // 2, activation=activation)
            blocks[f"pool{i}"] = nn.AvgPool2d(2)
            c, h, w = out_c, h // 2, w // 2
        self.features = nn.Sequential(OrderedDict(blocks))
        self.classifier = nn.Sequential(
            OrderedDict(fc1=Linear(c * h * w, hidden, activation), readout=Linear(hidden, n_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register("convnet")
def convnet(
    spec: TaskSpec,
    channels: Sequence[int] = (16, 32),
    kernel_size: int = 3,
    hidden: int = 128,
    activation: str = "relu",
) -> ConvNet:
    """Small conv net: conv+activation+avg-pool blocks, one hidden linear layer, linear readout."""
    return ConvNet(spec.input_shape, channels, kernel_size, hidden, spec.n_out, activation)
