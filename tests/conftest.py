"""Shared fixtures. Notebooks and runs read BIOPLAUS_FAST to use small budgets in the suite."""

from __future__ import annotations

import os

# Under pytest-xdist every worker (and every notebook kernel it starts) gets one thread, so that
# `pytest -n 2` on 2 cores does not run 4 compute threads on them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("BIOPLAUS_FAST", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture
def float64():
    """Run a test in float64 (oracle comparisons to 1e-6 and tighter)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
