"""Typed binding of SAB's attention-step kernels in ``sab.c`` (see [`bioplaus.nets.sab_read`][bioplaus.nets.sab_read]).

Every kernel takes a [`Plan`][bioplaus.native.sab.Plan], the ``sab_plan`` of one sequence: pointers to the memory's
buffers, the scorer's weights (and their transposes) and the gradient accumulator, with the sizes.
The callers keep it current ([`SlotStore`][bioplaus.nets.sab_memory.SlotStore] when the memory grows,
[`ReadPlan`][bioplaus.nets.sab_read.ReadPlan] when the weights change), so that a step's call passes
only its own tensors: at ``B = 32, H = 64`` a step's arithmetic takes tens of microseconds and each
Python operation around it about one. The kernels read and write float32 CPU tensors in place;
[`accepts`][bioplaus.native.sab.accepts] says whether tensors can go through them; anything else (float64, CUDA,
non-contiguous) stays on the PyTorch path.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from bioplaus import native

_P, _N = ctypes.c_void_p, ctypes.c_int64
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class Plan(ctypes.Structure):
    """``sab_plan`` of ``sab.c``: what every step of one sequence shares. The memory's buffers are set by
    [`SlotStore`][bioplaus.nets.sab_memory.SlotStore] (again whenever they move), the scorer's weights and the
    gradient accumulator by [`ReadPlan`][bioplaus.nets.sab_read.ReadPlan]."""

    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("data", "aux", "g_data", "w_q", "w_q_t", "b_q", "v", "w_m", "w_m_t")),
        ("g_params", ctypes.c_void_p),
        *((name, ctypes.c_int64) for name in ("batch", "capacity", "hidden", "key_size")),
        *((name, ctypes.c_float) for name in ("shift", "eps", "tiny")),
    ]


_PLAN = ctypes.POINTER(Plan)
_SIGNATURES = {
    "sab_step_forward": ([_PLAN, _P, _N, _N, _N, _P, _P, _P, _P], ctypes.c_int),
    "sab_step_backward": ([_PLAN, _P, _P, _N, _N, _N, _P, _N, _P, _N, _P], ctypes.c_int),
    "sab_write": ([_PLAN, _P, _P, _N], ctypes.c_int),
    "sab_write_backward": ([_PLAN, _P, _N, _P, _P], ctypes.c_int),
    "sab_key_aux": ([_PLAN, _N], None),
}


def state_size(hidden: int, rank: int) -> int:
    """Floats a read saves per row: ``[ĥ (H); w (R); Z]`` (the query is recomputed in the backward)."""
    return hidden + rank + 1


def library() -> ctypes.CDLL | None:
    """The compiled SAB kernels with their signatures set, or ``None`` (see
    [`bioplaus.native.status`][bioplaus.native.status])."""
    lib = native.load("sab")
    if lib is not None and lib.sab_step_forward.argtypes is None:
        for name, (argtypes, restype) in _SIGNATURES.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype
    return lib


def operator() -> Callable[..., list[torch.Tensor]] | None:
    """The step as one C++ autograd node, ``torch.ops.bioplaus.sab_step`` (``sab_step.cpp``, linked with these
    kernels; arguments and outputs there), or ``None`` where it cannot be built (see
    [`bioplaus.native.load_op`][bioplaus.native.load_op]; the steps then go through
    [`AttentionStep`][bioplaus.nets.sab_read.AttentionStep])."""
    return torch.ops.bioplaus.sab_step.default if native.load_op("sab_step", ("sab",)) else None


def plan_bytes(plan: Plan) -> torch.Tensor:
    """``plan`` as the byte tensor [`operator`][bioplaus.native.sab.operator] takes, sharing its memory; the tensor
    keeps the structure alive (not the buffers it points at: [`ParamGrads`][bioplaus.nets.sab_read.ParamGrads] does
    that)."""
    return torch.frombuffer(plan, dtype=torch.uint8)


def accepts(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernel can read these tensors (``None`` allowed) directly: contiguous float32 CPU tensors
    (or parameters)."""
    return all(
        t is None or (type(t) in _PLAIN and t.dtype == torch.float32 and t.is_cpu and t.is_contiguous())
        for t in tensors
    )


def check(status: int) -> None:
    """Raise if a kernel could not allocate its scratch buffer."""
    if status:
        raise MemoryError("the SAB kernel could not allocate its scratch buffer (out of memory)")


def write(lib: ctypes.CDLL, plan: Plan, m: torch.Tensor, w_m: torch.Tensor, j: int) -> None:
    """Write ``m`` ``(B, H)`` and its key ``W_m m`` into slot ``j`` of the memory."""
    check(lib.sab_write(plan, m.data_ptr(), w_m.data_ptr(), j))


def write_backward(lib: ctypes.CDLL, plan: Plan, w_m: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂L/∂m, ∂L/∂W_m)`` of the write of slot ``j`` from its accumulated gradient, which is cleared."""
    g_m, g_w_m = w_m.new_empty(plan.batch, plan.hidden), torch.zeros_like(w_m)
    check(lib.sab_write_backward(plan, w_m.data_ptr(), j, g_m.data_ptr(), g_w_m.data_ptr()))
    return g_m, g_w_m
