"""Analyses that read models and rules: alignment with the true gradient."""

from bioplaus.analysis import feedback_control as feedback_control
from bioplaus.analysis import lyapunov as lyapunov
from bioplaus.analysis.alignment import alignment, cross_entropy_context

__all__ = ["alignment", "cross_entropy_context"]
