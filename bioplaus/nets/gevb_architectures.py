"""The architectures of the GEVB paper (Clark, Abbott & Chung, 2021).

Shared by the vectorized nets ([`bioplaus.nets.vnn`][bioplaus.nets.vnn]) and their conventional twins
([`bioplaus.nets.conventional`][bioplaus.nets.conventional]), so the table is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One conv or LC layer ``(out_channels, kernel_size, stride, padding)``, optionally followed by a 2×2 pool."""

    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    pool: bool = True


@dataclass(frozen=True)
class Architecture:
    """Conv/LC stages, then the widths of the fully connected hidden layers."""

    stages: tuple[Stage, ...]
    hidden: tuple[int, ...]


ARCHITECTURES: dict[str, dict[str, Architecture]] = {
    "fc": {"mnist": Architecture((), (1024, 512)), "cifar": Architecture((), (1024, 512, 512))},
    "conv": {
        "mnist": Architecture((Stage(64, 3, 1, 1), Stage(32, 3, 1, 1)), (1024,)),
        "cifar": Architecture((Stage(128, 5, 1, 2), Stage(64, 5, 1, 2), Stage(64, 2, 2, 0, pool=False)), (1024,)),
    },
    "lc": {
        "mnist": Architecture((Stage(32, 3, 1, 1), Stage(32, 3, 1, 1)), (1024,)),
        "cifar": Architecture((Stage(64, 5, 1, 2), Stage(32, 5, 1, 2), Stage(32, 2, 2, 0, pool=False)), (512,)),
    },
}
"""The paper's architectures by layer kind (``fc``, ``conv``, ``lc``) and data set (``mnist``, ``cifar``)."""

_ARCH_BY_INPUT = {(1, 28, 28): "mnist", (3, 32, 32): "cifar"}


def select_arch(input_shape: Sequence[int], arch: str) -> str:
    """``"mnist"`` or ``"cifar"``: ``arch`` itself, or for ``"auto"`` the column matching the input
    shape (1×28×28 or 3×32×32), the MNIST column for any other shape."""
    return _ARCH_BY_INPUT.get(tuple(input_shape), "mnist") if arch == "auto" else arch
