"""Typed binding of the BDETT kernel in ``bdett.c`` (see
[`bioplaus.nets.thresholds.BDETT`][bioplaus.nets.thresholds.BDETT]).

[`step`][bioplaus.native.bdett.step] reads float32 CPU tensors in place and returns new tensors without autograd history
(BDETT's threshold is forward-only). [`accepts`][bioplaus.native.bdett.accepts] says whether tensors can go through the
kernel; anything else (float64, CUDA, non-contiguous, empty, 0-d) stays on the PyTorch path.
"""

from __future__ import annotations

import ctypes
import math

import torch

from bioplaus import native

_P, _N = ctypes.c_void_p, ctypes.c_int64


class Params(ctypes.Structure):
    """``bdett_params`` of ``bdett.c``: BDETT's hyper-parameters as the kernel uses them."""

    _fields_ = [
        (name, ctypes.c_float)
        for name in ("k_rate", "half_a", "max_x", "range_factor", "k_soft", "eta_per_u", "half_b", "base0")
    ]


_ARGTYPES = {
    "bdett_step": [_P, _P, _P, _P, _P, _P, _P, _N, _N, ctypes.POINTER(Params)],
    "bdett_memory": [_P, _P, _P, _N, _N, ctypes.POINTER(Params)],
}


def library() -> ctypes.CDLL | None:
    """The compiled BDETT kernels with their argument types set, or ``None`` (see
    [`bioplaus.native.status`][bioplaus.native.status])."""
    lib = native.load("bdett")
    if lib is not None and lib.bdett_step.argtypes is None:
        for name, argtypes in _ARGTYPES.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, None
    return lib


def accepts(v: torch.Tensor, v_prev: torch.Tensor, base: torch.Tensor | None) -> bool:
    """Whether the kernel can read ``v``, ``v_prev`` and ``base`` (``None`` allowed) directly: plain
    float32 CPU tensors of one shape, contiguous, at least 1-D and non-empty."""
    return (
        type(v) is torch.Tensor
        and v.dtype == torch.float32
        and v.is_cpu
        and v.dim() > 0
        and v.numel() > 0
        and v.is_contiguous()
        and _like(v, v_prev)
        and (base is None or _like(v, base))
    )


def _like(v: torch.Tensor, other: torch.Tensor) -> bool:
    return (
        type(other) is torch.Tensor
        and other.dtype == v.dtype
        and other.is_cpu
        and other.shape == v.shape
        and other.is_contiguous()
    )


def params(
    p0: float, a: float, b: float, C: float, psi: float, eta: float, range_factor: float, max_exponent: float | None
) -> Params:
    """The kernel's parameters from BDETT's hyper-parameters."""
    log2e = math.log2(math.e)
    max_x = math.inf if max_exponent is None else max_exponent * log2e
    return Params(
        log2e / C, 0.5 * a, max_x, range_factor, log2e / psi, eta * psi * math.log(2.0), 0.5 * b, 0.5 * (p0 + b)
    )


def _groups(v: torch.Tensor, pooled: bool) -> tuple[int, int]:
    size = v.numel() if pooled else v.shape[-1]
    return v.numel() // size, size


def step(
    lib: ctypes.CDLL,
    v: torch.Tensor,
    v_prev: torch.Tensor,
    memory: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None,
    pooled: bool,
    p: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One BDETT step: ``(Θ[t], stats[t])`` from ``V[t]``, ``V[t-1]`` and the memory ``½ (P[t-1] + b)``.

    ``memory`` is a tensor of the memory per neuron, or ``(V_last, stats)`` of the last step (the
    memory is then computed inside the kernel, see [`memory`][bioplaus.native.bdett.memory]), or ``None`` at the first
    step. ``stats[t]`` holds ``(V_m, ½ (V_θ + b))`` per group: per sample over the last axis, or one group
    ``pooled`` over the whole tensor. The formulas are in ``bdett.c``.
    """
    groups, size = _groups(v, pooled)
    theta, stats = torch.empty_like(v), torch.empty(groups, 2)
    base = v_last = last_stats = None
    if isinstance(memory, tuple):
        v_last, last_stats = memory[0].data_ptr(), memory[1].data_ptr()
    elif memory is not None:
        base = memory.data_ptr()
    lib.bdett_step(
        v.data_ptr(), v_prev.data_ptr(), base, v_last, last_stats, theta.data_ptr(), stats.data_ptr(), groups, size, p
    )
    return theta, stats


def memory(lib: ctypes.CDLL, v: torch.Tensor, stats: torch.Tensor, pooled: bool, p: Params) -> torch.Tensor:
    r"""The memory ``½ (P + b)`` per neuron from its potential ``V`` and the ``stats`` that
    [`step`][bioplaus.native.bdett.step] returned."""
    groups, size = _groups(v, pooled)
    out = torch.empty_like(v)
    lib.bdett_memory(v.data_ptr(), stats.data_ptr(), out.data_ptr(), groups, size, p)
    return out
