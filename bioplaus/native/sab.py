"""Typed binding of SAB's attention-step kernels in ``sab.c`` (see :mod:`bioplaus.nets.sab_read`).

:func:`read_forward`, :func:`read_backward`, :func:`write` and :func:`write_backward` read float32
CPU tensors in place; the memory's gradient buffer is accumulated into. :func:`accepts` says
whether tensors can go through the kernel; anything else (float64, CUDA, non-contiguous) stays on
the PyTorch path. At ``B = 32, H = 64`` a step's arithmetic takes tens of microseconds, so these
wrappers do as little as they can: one ctypes call each, no checks (the callers check once per
sequence, :class:`~bioplaus.nets.sab_read.ReadPlan`).
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch

from bioplaus import native

if TYPE_CHECKING:
    from bioplaus.nets.sab_memory import SlotStore

_P, _N = ctypes.c_void_p, ctypes.c_int64
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class Shape(ctypes.Structure):
    """``sab_shape`` of ``sab.c``: the sizes of one read or write and the threshold's constants."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in ("batch", "n", "capacity", "hidden", "key_size", "rank")),
        *((name, ctypes.c_int64) for name in ("out_stride", "h_stride")),
        *((name, ctypes.c_float) for name in ("shift", "eps", "tiny")),
    ]


_SHAPE = ctypes.POINTER(Shape)
_SIGNATURES = {
    "sab_step_forward": ([_P, _P, _P, _P, _P, _P, _P, _SHAPE, _N, _P, _P, _P, _P], ctypes.c_int),
    "sab_step_backward": ([_P, _P, _P, _P, _P, _P, _SHAPE, _N, *[_P] * 8], ctypes.c_int),
    "sab_write": ([_P, _P, _P, _P, _SHAPE, _N], ctypes.c_int),
    "sab_write_backward": ([_P, _P, _P, _SHAPE, _N, _P, _P], ctypes.c_int),
    "sab_key_aux": ([_P, _P, _SHAPE, _N], None),
}


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def library() -> ctypes.CDLL | None:
    """The compiled SAB kernels with their signatures set, or ``None`` (see :func:`bioplaus.native.status`)."""
    lib = native.load("sab")
    if lib is not None and lib.sab_step_forward.argtypes is None:
        for name, (argtypes, restype) in _SIGNATURES.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype
    return lib


def accepts(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernel can read these tensors (``None`` allowed) directly: contiguous float32 CPU tensors
    (or parameters)."""
    return all(
        t is None or (type(t) in _PLAIN and t.dtype == torch.float32 and t.is_cpu and t.is_contiguous())
        for t in tensors
    )


def _check(status: int) -> None:
    if status:
        raise MemoryError("the SAB kernel could not allocate its scratch buffer (out of memory)")


def step_forward(
    lib: ctypes.CDLL,
    store: SlotStore,
    h_hat: torch.Tensor,
    params: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    shape: Shape,
    j: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One step: the read of ``shape.n`` slots and, if ``j ≥ 0``, the write of ``h`` into slot ``j``.

    ``params = (W_q, b_q, v, W_m)`` (``b_q`` may be ``None``, ``W_m`` too when ``j < 0``). Returns
    ``(h, out, state, idx)``: ``h = ĥ + s`` ``(B, H)``, ``out = [h; s]`` ``(B, 2H)``, and unless
    ``shape.rank = 0`` (uniform; then ``None``) ``state = [q, w, Z]`` ``(B, K + R + 1)`` and the
    winners' slots ``idx`` ``(B, R)``. Formulas in ``sab.c``."""
    B, H, K, R = shape.batch, shape.hidden, shape.key_size, shape.rank
    h, out, state, idx = h_hat.new_empty(B, H), h_hat.new_empty(B, 2 * H), None, None
    if R:
        state, idx = h_hat.new_empty(B, K + R + 1), torch.empty(B, R, dtype=torch.int64)
    w_q, b_q, v, w_m = params
    _check(
        lib.sab_step_forward(
            store.data.data_ptr(),
            store.aux.data_ptr(),
            h_hat.data_ptr(),
            w_q.data_ptr(),
            _pointer(b_q),
            v.data_ptr(),
            _pointer(w_m),
            shape,
            j,
            h.data_ptr(),
            out.data_ptr(),
            _pointer(state),
            _pointer(idx),
        )  # fmt: skip
    )
    return h, out, state, idx


def step_backward(
    lib: ctypes.CDLL,
    store: SlotStore,
    saved: tuple[torch.Tensor | None, ...],
    shape: Shape,
    j: int,
    g_out: torch.Tensor,
    g_h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(g_ĥ, g_params, g_W_m)`` of one step from ``g_out = ∂L/∂out`` and ``g_h = ∂L/∂h`` (rows of unit
    stride; their row strides are set in ``shape`` here). ``g_params = [∂L/∂W_q (K·H); ∂L/∂b_q (K); ∂L/∂v (K)]``
    flat (``None`` when uniform); ``g_W_m`` only when the step wrote (``j ≥ 0``). Adds the read slots'
    gradient into the memory's gradient buffer and hands slot ``j``'s on. ``saved = (ĥ, W_q, v, state, idx, W_m)``,
    any of them ``None`` where the step had none."""
    K, H = shape.key_size, shape.hidden
    shape.out_stride, shape.h_stride = g_out.stride(0), g_h.stride(0)
    h_hat, w_q, v, state, idx, w_m = saved
    g_params = g_h.new_empty(K * H + 2 * K) if shape.rank else None
    g_w_m = g_h.new_empty(K, H) if j >= 0 else None
    g_h_hat = g_h.new_empty(shape.batch, H)
    _check(
        lib.sab_step_backward(
            store.data.data_ptr(),
            store.aux.data_ptr(),
            _pointer(h_hat),
            _pointer(w_q),
            _pointer(v),
            _pointer(w_m),
            shape,
            j,
            _pointer(state),
            _pointer(idx),
            g_out.data_ptr(),
            g_h.data_ptr(),
            g_h_hat.data_ptr(),
            _pointer(g_params),
            _pointer(g_w_m),
            store.grad_buffer().data_ptr(),
        )  # fmt: skip
    )
    return g_h_hat, g_params, g_w_m


def write(lib: ctypes.CDLL, store: SlotStore, m: torch.Tensor, w_m: torch.Tensor, shape: Shape, j: int) -> None:
    """Write ``m`` ``(B, H)`` and its key ``W_m m`` into slot ``j`` of the store."""
    _check(lib.sab_write(store.data.data_ptr(), store.aux.data_ptr(), m.data_ptr(), w_m.data_ptr(), shape, j))


def write_backward(
    lib: ctypes.CDLL, store, w_m: torch.Tensor, shape: Shape, j: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂L/∂m, ∂L/∂W_m)`` of the write of slot ``j`` from its accumulated gradient, which is cleared."""
    B, H = shape.batch, shape.hidden
    g_m, g_w_m = w_m.new_empty(B, H), w_m.new_empty(w_m.shape)
    grad = store.grad_buffer()
    _check(
        lib.sab_write_backward(
            store.data.data_ptr(), grad.data_ptr(), w_m.data_ptr(), shape, j, g_m.data_ptr(), g_w_m.data_ptr()
        )
    )
    return g_m, g_w_m


def key_aux(lib: ctypes.CDLL, store: SlotStore, shape: Shape, j: int) -> None:
    """Fill slot ``j``'s key exponentials in ``store.aux`` from the key PyTorch wrote."""
    lib.sab_key_aux(store.data.data_ptr(), store.aux.data_ptr(), shape, j)
