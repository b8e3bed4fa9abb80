"""What a model must accept and produce for a task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """The interface between a task and the model built for it.

    Attributes:
        input_shape: shape of one example (no batch axis), e.g. ``(1, 28, 28)`` or ``(20,)``.
        n_out: size of the model output per example (classes, actions, readout dimensions).
    """

    input_shape: tuple[int, ...]
    n_out: int

    @property
    def in_features(self) -> int:
        """Number of input values per example (product of ``input_shape``)."""
        n = 1
        for d in self.input_shape:
            n *= d
        return n
