"""The `Dataset` container that every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioplaus.errors import DataError


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification data set split into train and test parts.

    Images are channel-first ``(N, C, H, W)`` in their raw dtype (e.g. uint8); vector data is
    ``(N, d)``. Labels are int64 of shape ``(N,)``.

    Attributes:
        name: Short name, e.g. ``"fashion-mnist"``.
        x_train: Training inputs.
        y_train: Training labels.
        x_test: Test inputs.
        y_test: Test labels.
        classes: One name per class, indexed by label.
        value_range: The range of the raw input values, e.g. ``(0.0, 255.0)``, or None when the
            inputs are already standardised.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    value_range: tuple[float, float] | None

    def __post_init__(self) -> None:
        """Check that inputs and labels agree.

        Raises:
            DataError: If labels are not one-dimensional, if the number of inputs and labels
                differ, or if train and test inputs have different per-example shapes.
        """
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if y.ndim != 1:
                raise DataError(f"Dataset {self.name!r}: y_{split} must be one-dimensional, got shape {y.shape}")
            if len(x) != len(y):
                raise DataError(
                    f"Dataset {self.name!r}: x_{split} has {len(x)} examples, y_{split} has {len(y)} labels"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r}: train examples have shape {self.x_train.shape[1:]}, "
                f"test examples {self.x_test.shape[1:]}"
            )

    @property
    def n_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        """One line: name, split sizes, example shape and dtype, number of classes."""
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, dtype={self.x_train.dtype}, n_classes={self.n_classes})"
        )
