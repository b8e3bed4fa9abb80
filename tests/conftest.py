"""Shared fixtures. Notebooks and runs read BIOPLAUS_FAST to use small budgets in the suite."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("BIOPLAUS_FAST", "1")


@pytest.fixture
def float64():
    """Run a test in float64 (oracle comparisons to 1e-6 and tighter)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy of every parameter's .grad, by name (zeros where none)."""
    return {
        n: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()) for n, p in model.named_parameters()
    }
