"""Small data sets that need no files: scikit-learn's 8x8 digits and a teacher-labelled task."""

from __future__ import annotations

import numpy as np

from bioplaus.data.dataset import Dataset
from bioplaus.errors import ConfigError


def _check_int(function: str, name: str, value: object, minimum: int) -> None:
    """Raise `ConfigError` unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{function}: {name} must be an integer >= {minimum}, got {value!r}")


def _balancing_bias(logits: np.ndarray, sweeps: int = 20) -> np.ndarray:
    """Output biases under which each class wins for about the same share of the rows of ``logits``.

    Starts from minus the per-class median, then for each class in turn shifts its bias so that
    it wins on a ``1 / n_classes`` share of the rows given the other biases (a few sweeps).
    """
    n_classes = logits.shape[1]
    bias = -np.median(logits, axis=0)
    for _ in range(sweeps):
        for k in range(n_classes):
            shifted = logits + bias
            rivals = np.max(np.delete(shifted, k, axis=1), axis=1)
            bias[k] -= np.quantile(shifted[:, k] - rivals, 1.0 - 1.0 / n_classes)
    return bias


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load scikit-learn's bundled 8x8 handwritten digits (1797 images) with a stratified split.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and ``round(test_fraction *
    n_class)`` of its images go to the test split; both splits keep the original order.

    Args:
        test_fraction: The fraction of each class held out for testing, strictly between 0 and 1.
        seed: Seed of the split.

    Returns:
        Images ``(N, 1, 8, 8)`` uint8 with value range (0, 16) and int64 labels.

    Raises:
        ConfigError: If ``test_fraction`` is not strictly between 0 and 1 or leaves a split
            empty, or ``seed`` is not a non-negative integer.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"load_digits: test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    _check_int("load_digits", "seed", seed, 0)
    # Deferred: importing scikit-learn is slow.
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        is_test[members[: round(test_fraction * len(members))]] = True
    if is_test.all() or not is_test.any():
        raise ConfigError(f"load_digits: test_fraction={test_fraction!r} leaves the train or the test split empty")
    classes = tuple(str(digit) for digit in range(10))
    return Dataset("digits", images[~is_test], labels[~is_test], images[is_test], labels[is_test], classes, (0.0, 16.0))


def make_synthetic(
    *,
    n_train: int = 2000,
    n_test: int = 1000,
    n_features: int = 20,
    n_classes: int = 4,
    hidden: int = 64,
    seed: int = 0,
) -> Dataset:
    """Make a classification task labelled by a fixed random teacher network.

    Inputs are drawn from ``N(0, I)``; the label of ``x`` is the argmax of a random two-layer
    tanh network ``W2 tanh(W1 x + b1) + b2``. The output bias ``b2`` is fitted on the training
    inputs so that every class wins on about ``1 / n_classes`` of them (starting from minus the
    per-class median of the logits, then a few sweeps of per-class quantile shifts).
    The teacher, the training inputs and the test inputs come from independent streams of
    ``seed``, so the teacher does not depend on the split sizes.

    Args:
        n_train: Number of training examples.
        n_test: Number of test examples.
        n_features: Input dimension.
        n_classes: Number of classes, at least 2.
        hidden: Width of the teacher's hidden layer.
        seed: Seed of the teacher and the inputs.

    Returns:
        Inputs ``(N, n_features)`` float32 (already standardised, so value range None) and
        int64 labels.

    Raises:
        ConfigError: If an argument is not a positive integer (``n_classes`` at least 2,
            ``seed`` non-negative); the message names the argument.
    """
    for name, value, minimum in (
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("n_features", n_features, 1),
        ("n_classes", n_classes, 2),
        ("hidden", hidden, 1),
        ("seed", seed, 0),
    ):
        _check_int("make_synthetic", name, value, minimum)
    teacher_rng, train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    w1 = teacher_rng.standard_normal((n_features, hidden)) / np.sqrt(n_features)
    b1 = teacher_rng.standard_normal(hidden) * 0.5
    w2 = teacher_rng.standard_normal((hidden, n_classes)) / np.sqrt(hidden)
    x_train = train_rng.standard_normal((n_train, n_features)).astype(np.float32)
    x_test = test_rng.standard_normal((n_test, n_features)).astype(np.float32)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.tanh(x.astype(np.float64) @ w1 + b1) @ w2

    b2 = _balancing_bias(logits(x_train))
    y_train = np.argmax(logits(x_train) + b2, axis=1).astype(np.int64)
    y_test = np.argmax(logits(x_test) + b2, axis=1).astype(np.int64)
    classes = tuple(f"class {k}" for k in range(n_classes))
    return Dataset("synthetic", x_train, y_train, x_test, y_test, classes, None)
