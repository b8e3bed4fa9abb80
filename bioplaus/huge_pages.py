"""Transparent huge pages for large CPU tensors: an explicit opt-in.

PyTorch asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``, 2 MB pages) for
every CPU allocation of 2 MB or more when the environment variable ``THP_MEM_ALLOC_ENABLE`` is
``1``. A fresh large tensor then costs a few page faults instead of one per 4 KB page, which
speeds up models with large activations (``vnn_conv``: see *Huge pages* in ``docs/benchmarks.md``).

PyTorch reads the variable once, at the process's first CPU tensor allocation of any size, not
at ``import torch``: `enable_huge_pages` works after importing bioplaus and torch, as long
as no tensor has been created yet. Later, only a new process sees the setting
(``THP_MEM_ALLOC_ENABLE=1 python ...``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from bioplaus.errors import BioplausError

ENV = "THP_MEM_ALLOC_ENABLE"
KERNEL_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_THRESHOLD = 2 * 1024 * 1024  # PyTorch's smallest allocation that it backs with huge pages


def enable_huge_pages() -> None:
    """Back large CPU tensors with transparent huge pages in this process and the ones it starts.

    Sets ``THP_MEM_ALLOC_ENABLE=1`` in ``os.environ`` (so worker processes started afterwards,
    such as a sweep's, inherit it), then checks with three 2 MB allocations that PyTorch took
    it up: with huge pages on, PyTorch aligns each such allocation to a page. Call it before
    creating any tensor; calling it again is harmless.

    Warns:
        RuntimeWarning: off Linux (PyTorch uses huge pages only there), or where the kernel's
            ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``never`` (the allocations then
            stay on 4 KB pages).

    Raises:
        BioplausError: when this process created a tensor before the call, so PyTorch has
            already read the variable with huge pages off.
    """
    os.environ[ENV] = "1"
    if not sys.platform.startswith("linux"):
        warnings.warn("huge pages: PyTorch uses transparent huge pages only on Linux", RuntimeWarning, stacklevel=2)
        return
    import torch

    page = os.sysconf("SC_PAGE_SIZE")
    probes = [torch.empty(_THRESHOLD, dtype=torch.uint8) for _ in range(3)]  # one may be aligned by chance
    if any(probe.data_ptr() % page for probe in probes):
        raise BioplausError(
            f"huge pages: PyTorch read {ENV} at this process's first tensor allocation, which came before "
            "enable_huge_pages(); call it before creating any tensor, or start Python with "
            f"{ENV}=1 in the environment"
        )
    if "[never]" in (KERNEL_SETTING.read_text() if KERNEL_SETTING.exists() else ""):
        warnings.warn(
            f"huge pages: the kernel has transparent huge pages off ({KERNEL_SETTING} is 'never'); "
            "large tensors stay on 4 KB pages",
            RuntimeWarning,
            stacklevel=2,
        )
