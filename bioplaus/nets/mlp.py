"""Multilayer perceptron built from bioplaus layers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from bioplaus.core import Linear, TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError
from bioplaus.nets._registry import register


class MLP(nn.Module):
    """``x → flatten → [Linear + f] × len(hidden) → Linear`` (no activation on the output).

    Args:
        in_features: input values per example (inputs are flattened after the batch axis).
        hidden: widths of the hidden layers.
        n_out: output size (classes).
        activation: hidden nonlinearity, by name (see ``bioplaus.core.ACTIVATIONS``).
        bias: whether layers have biases.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LAYERED, Capability.FEEDFORWARD})

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        n_out: int = 10,
        activation: str = "relu",
        bias: bool = True,
    ):
        super().__init__()
        widths = [in_features, *hidden]
        if any(int(w) != w or w < 1 for w in [*widths, n_out]):
            raise ConfigError(f"MLP widths must be positive integers, got hidden={list(hidden)}, n_out={n_out}")
        layers: dict[str, nn.Module] = {
            f"fc{i}": Linear(a, b, activation, bias)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1)
        }
        layers["readout"] = Linear(widths[-1], n_out, None, bias)
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


@register("mlp")
def mlp(spec: TaskSpec, hidden: Sequence[int] = (256, 256), activation: str = "relu", bias: bool = True) -> MLP:
    """Multilayer perceptron: flatten, hidden Linear+activation layers, linear readout."""
    return MLP(spec.in_features, hidden, spec.n_out, activation, bias)
