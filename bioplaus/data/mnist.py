"""Loaders for MNIST and Fashion-MNIST from their four IDX files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bioplaus.data.dataset import Dataset
from bioplaus.data.idx import read_idx
from bioplaus.data.locate import find_dataset_folder, resolve_file
from bioplaus.data.payload import data_error

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package ``dataset-fashion-mnist`` installs the four gzipped IDX files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

_FILE_LIST = ", ".join(IDX_FILES)
FASHION_MNIST_HINT = (
    "reinstall Debian's dataset-fashion-mnist (apt-get install --reinstall dataset-fashion-mnist) "
    "or download it again with bioplaus.data.download_fashion_mnist()"
)
FASHION_MNIST_INSTRUCTIONS = "\n".join(
    [
        "To get Fashion-MNIST, do one of:",
        f"  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist (installs {FASHION_MNIST_DIR});",
        "  - download and verify it with bioplaus.data.download_fashion_mnist() (into",
        "    $BIOPLAUS_DATA/fashion-mnist, or ~/.cache/bioplaus/fashion-mnist if BIOPLAUS_DATA is not set);",
        "  - put the four IDX files, plain or .gz, in a folder and set BIOPLAUS_DATA to it (or to its",
        "    parent, with the files in fashion-mnist/), or pass root=<folder>. The files:",
        f"    {_FILE_LIST}.",
    ]
)
MNIST_HINT = (
    "download the MNIST IDX files again from a source you trust "
    "(bioplaus.data.download_file checks a SHA-256 you supply)"
)
MNIST_INSTRUCTIONS = "\n".join(
    [
        "To use MNIST, put its four IDX files, plain or .gz, in $BIOPLAUS_DATA/mnist, in $BIOPLAUS_DATA",
        "or in ~/.cache/bioplaus/mnist, or pass root=<folder>. The files:",
        f"  {_FILE_LIST}.",
        "bioplaus does not download MNIST by itself; bioplaus.data.download_file(url, dest, sha256=...)",
        "downloads a file and checks it against a SHA-256 you supply.",
    ]
)


def _read_split(folder: Path, prefix: str, n_classes: int, hint: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split (``train`` or ``t10k``) as channel-first uint8 images and int64 labels."""
    images_path = resolve_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = resolve_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, hint)
    labels = read_idx(labels_path, hint)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise data_error(
            images_path,
            f"expected uint8 images of shape (N, rows, cols), found {images.dtype} {images.shape}",
            hint,
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise data_error(labels_path, f"expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}", hint)
    if len(images) != len(labels):
        raise data_error(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}", hint)
    if labels.size and labels.max() >= n_classes:
        raise data_error(labels_path, f"labels must lie in 0..{n_classes - 1}, found {labels.max()}", hint)
    return images[:, None], labels.astype(np.int64)


def _load_idx_dataset(name: str, folder: Path, classes: tuple[str, ...], hint: str) -> Dataset:
    """Build a `Dataset` from a folder holding the four IDX files."""
    x_train, y_train = _read_split(folder, "train", len(classes), hint)
    x_test, y_test = _read_split(folder, "t10k", len(classes), hint)
    return Dataset(name, x_train, y_train, x_test, y_test, classes, (0.0, 255.0))


def load_fashion_mnist(*, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Load Fashion-MNIST: 60000 training and 10000 test images of 10 kinds of clothing.

    Without ``root`` the files are looked for in ``$BIOPLAUS_DATA/fashion-mnist``,
    ``$BIOPLAUS_DATA``, ``/usr/share/datasets/fashion-mnist`` (Debian's package
    ``dataset-fashion-mnist``) and ``~/.cache/bioplaus/fashion-mnist`` (where
    `download_fashion_mnist` puts them).

    Args:
        root: A folder holding the four IDX files (plain or ``.gz``), directly or in
            ``fashion-mnist/``. If given, no other folder is tried.

    Returns:
        Images ``(N, 1, 28, 28)`` uint8 with value range (0, 255) and int64 labels.

    Raises:
        DataError: If no folder holds the files (the message lists the folders tried and how to
            get the data), or if a file is corrupt or inconsistent.
    """
    folder = find_dataset_folder(
        "fashion-mnist", IDX_FILES, root, (FASHION_MNIST_DIR,), instructions=FASHION_MNIST_INSTRUCTIONS
    )
    return _load_idx_dataset("fashion-mnist", folder, FASHION_MNIST_CLASSES, FASHION_MNIST_HINT)


def load_mnist(*, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Load MNIST: 60000 training and 10000 test images of handwritten digits.

    Without ``root`` the files are looked for in ``$BIOPLAUS_DATA/mnist``, ``$BIOPLAUS_DATA`` and
    ``~/.cache/bioplaus/mnist``.

    Args:
        root: A folder holding the four IDX files (plain or ``.gz``), directly or in ``mnist/``.
            If given, no other folder is tried.

    Returns:
        Images ``(N, 1, 28, 28)`` uint8 with value range (0, 255) and int64 labels.

    Raises:
        DataError: If no folder holds the files (the message lists the folders tried and where to
            put the files), or if a file is corrupt or inconsistent.
    """
    folder = find_dataset_folder("mnist", IDX_FILES, root, instructions=MNIST_INSTRUCTIONS)
    return _load_idx_dataset("mnist", folder, MNIST_CLASSES, MNIST_HINT)
