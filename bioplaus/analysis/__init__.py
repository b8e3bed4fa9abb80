"""Analyses that read models and rules: alignment with the true gradient, Lyapunov spectra, control.

Submodules that read tasks (``feedback_control`` reads the motor task's trials) are imported on
first use, so that importing the tasks package, which uses [`mle_regularizer`][bioplaus.analysis.mle_regularizer], never
imports a task module back through this package.
"""

import importlib
from typing import Any

from bioplaus.analysis import lyapunov as lyapunov
from bioplaus.analysis.alignment import alignment, cross_entropy_context
from bioplaus.analysis.feedback_geometry import feedback_geometry

__all__ = ["alignment", "cross_entropy_context", "feedback_geometry"]


def __getattr__(name: str) -> Any:
    if name == "feedback_control":
        return importlib.import_module("bioplaus.analysis.feedback_control")
    raise AttributeError(f"module 'bioplaus.analysis' has no attribute {name!r}")
