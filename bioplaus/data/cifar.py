"""Loader for CIFAR-10 from the binary or the python version of its batch files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bioplaus.data.dataset import Dataset
from bioplaus.data.locate import (
    candidate_folders,
    folder_problem,
    missing_files,
    not_found_error,
    resolve_file,
)
from bioplaus.data.payload import data_error, read_payload
from bioplaus.data.restricted_pickle import restricted_loads

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_FILES = {"binary": tuple(f"{batch}.bin" for batch in _BATCHES), "python": _BATCHES}
# (subfolder, version) pairs tried inside each candidate folder, in order.
_LAYOUTS = (
    ("", "binary"),
    ("", "python"),
    ("cifar-10-batches-bin", "binary"),
    ("cifar-10-batches-py", "python"),
)
_IMAGE_BYTES = 3 * 32 * 32
_RECORD_BYTES = 1 + _IMAGE_BYTES

CIFAR10_HINT = f"download CIFAR-10 again from {CIFAR10_URL} and extract it"
CIFAR10_INSTRUCTIONS = "\n".join(
    [
        "To use CIFAR-10, download its binary version (cifar-10-binary.tar.gz) or its python version",
        f"(cifar-10-python.tar.gz) from {CIFAR10_URL} and extract it. Put the extracted",
        "folder (cifar-10-batches-bin or cifar-10-batches-py), or the batch files themselves, in",
        "$BIOPLAUS_DATA/cifar10, in $BIOPLAUS_DATA or in ~/.cache/bioplaus/cifar10, or pass root=<folder>.",
        "bioplaus.data.download_file(url, dest, sha256=...) downloads a file and checks it against a",
        "SHA-256 you supply.",
    ]
)


def _find_folder(root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Return the first folder holding a complete set of batches, and its version."""
    tried = []
    for base in candidate_folders("cifar10", root):
        if not base.is_dir():
            tried.append(f"{base} ({folder_problem(base, ())})")
            continue
        for sub, version in _LAYOUTS:
            folder = base / sub
            missing = missing_files(folder, _FILES[version])
            if folder.is_dir() and not missing:
                return folder, version
            if folder.exists():
                tried.append(f"{folder} ({version} version {folder_problem(folder, missing)})")
    raise not_found_error("cifar10", tried, CIFAR10_INSTRUCTIONS)


def _check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """Return the labels as int64 after checking that they lie in 0..9."""
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise data_error(path, f"labels must lie in 0..9, found {labels.min()}..{labels.max()}", CIFAR10_HINT)
    return labels.astype(np.int64)


def _read_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a binary batch: records of one label byte and 3072 image bytes in CHW order."""
    data = read_payload(path, CIFAR10_HINT)
    if not data or len(data) % _RECORD_BYTES:
        raise data_error(
            path,
            f"size {len(data)} bytes is not a positive multiple of the {_RECORD_BYTES}-byte record "
            "(1 label byte + 3072 image bytes)",
            CIFAR10_HINT,
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), _check_labels(path, records[:, 0])


def _read_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a python batch: a pickled dict with keys ``b"data"`` (N, 3072) and ``b"labels"``, unpickled with
    `bioplaus.data.restricted_pickle.restricted_loads` (a pickle that names anything but builtin values
    and numpy arrays is refused, so a crafted batch runs no code)."""
    payload = read_payload(path, CIFAR10_HINT)
    try:
        batch = restricted_loads(payload)
    except Exception as exc:  # a corrupt pickle can raise almost any exception
        raise data_error(path, f"cannot unpickle the batch ({type(exc).__name__}: {exc})", CIFAR10_HINT) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise data_error(path, "not a CIFAR-10 batch (expected a dict with keys b'data' and b'labels')", CIFAR10_HINT)
    images = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != _IMAGE_BYTES:
        raise data_error(
            path,
            f"expected uint8 data of shape (N, {_IMAGE_BYTES}), found {images.dtype} {images.shape}",
            CIFAR10_HINT,
        )
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise data_error(
            path, f"expected {len(images)} integer labels, found {labels.dtype} {labels.shape}", CIFAR10_HINT
        )
    return images.reshape(-1, 3, 32, 32), _check_labels(path, labels)


def _read_batches(folder: Path, version: str, batches: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several batches of one version."""
    reader, suffix = (_read_binary, ".bin") if version == "binary" else (_read_python, "")
    parts = [reader(resolve_file(folder, batch + suffix)) for batch in batches]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def load_cifar10(*, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Load CIFAR-10: 50000 training and 10000 test colour images of 10 classes.

    A folder qualifies if it holds the binary version (``data_batch_1.bin`` ...
    ``data_batch_5.bin``, ``test_batch.bin``) or the python version (``data_batch_1`` ...
    ``data_batch_5``, ``test_batch``), directly or in a ``cifar-10-batches-bin`` or
    ``cifar-10-batches-py`` subfolder. Without ``root`` the folders tried are
    ``$BIOPLAUS_DATA/cifar10``, ``$BIOPLAUS_DATA`` and ``~/.cache/bioplaus/cifar10``.

    The python version is unpickled with an unpickler that accepts only builtin values and numpy
    arrays, so a crafted batch fails with ``DataError`` instead of running code.

    Args:
        root: A folder holding the batches (or ``root/cifar10`` holding them). If given, no
            other folder is tried.

    Returns:
        Images ``(N, 3, 32, 32)`` uint8 with value range (0, 255) and int64 labels.

    Raises:
        DataError: If no folder holds the batches (the message lists the folders tried and how to
            get the data), or if a batch is corrupt: a binary batch whose size is not a multiple
            of 3073 bytes, an unreadable pickle or one that names anything but builtin values and
            numpy arrays, or labels outside 0..9.
    """
    folder, version = _find_folder(root)
    x_train, y_train = _read_batches(folder, version, _BATCHES[:-1])
    x_test, y_test = _read_batches(folder, version, _BATCHES[-1:])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, CIFAR10_CLASSES, (0.0, 255.0))
