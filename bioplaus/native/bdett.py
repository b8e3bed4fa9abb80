"""Typed binding of the BDETT kernel in ``bdett.c`` (see :class:`bioplaus.nets.thresholds.BDETT`).

:func:`step` reads float32 CPU tensors in place and returns new tensors without autograd history
(BDETT's threshold is forward-only). :func:`accepts` says whether tensors can go through the
kernel; anything else (float64, CUDA, non-contiguous, empty, 0-d) stays on the PyTorch path.
"""

from __future__ import annotations

import ctypes
import math

import torch

from bioplaus import native

_F, _P, _N = ctypes.c_float, ctypes.c_void_p, ctypes.c_int64
_STEP_ARGTYPES = [_P, _P, _P, _F, _P, _P, _N, _N, _F, _F, _F, _F, _F, _F, _F]


def library() -> ctypes.CDLL | None:
    """The compiled BDETT kernel with its argument types set, or ``None`` (see :func:`bioplaus.native.status`)."""
    lib = native.load("bdett")
    if lib is not None and lib.bdett_step.argtypes is None:
        lib.bdett_step.argtypes, lib.bdett_step.restype = _STEP_ARGTYPES, None
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


def constants(
    p0: float, a: float, b: float, C: float, psi: float, eta: float, range_factor: float, max_exponent: float | None
) -> tuple[float, ...]:
    """The scalar arguments of the kernel (after the tensors) from BDETT's hyper-parameters."""
    log2e = math.log2(math.e)
    max_x = math.inf if max_exponent is None else max_exponent * log2e
    return (log2e / C, 0.5 * a, max_x, range_factor, log2e / psi, eta * psi * math.log(2.0), 0.5 * b), 0.5 * (p0 + b)


def step(
    lib: ctypes.CDLL,
    v: torch.Tensor,
    v_prev: torch.Tensor,
    base: torch.Tensor | None,
    pooled: bool,
    scalars: tuple[tuple[float, ...], float],
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One BDETT step: ``(Θ[t], ½ (P[t] + b))`` from ``V[t]``, ``V[t-1]`` and the stored ``½ (P[t-1] + b)``.

    ``base=None`` is the first step. Statistics are per sample over the last axis, or ``pooled``
    over the whole tensor; ``scalars`` come from :func:`constants`. The next base is written into
    ``out`` when it is a spare tensor of ``v``'s shape (not ``base`` itself), else into a new one.
    The formulas are in ``bdett.c``.
    """
    theta = torch.empty_like(v)
    if out is None or out is base or not _like(v, out):
        out = torch.empty_like(v)
    size = v.numel() if pooled else v.shape[-1]
    rest, base0 = scalars
    lib.bdett_step(
        v.data_ptr(),
        v_prev.data_ptr(),
        None if base is None else base.data_ptr(),
        base0,
        theta.data_ptr(),
        out.data_ptr(),
        v.numel() // size,
        size,
        *rest,
    )
    return theta, out
