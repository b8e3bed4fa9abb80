"""Data sets for bioplaus: MNIST-style IDX files, CIFAR-10, toy tasks, and checked downloads.

Everything here is numpy-only (no torch), so importing it stays cheap. Every loader returns a
`Dataset`, and every problem with data files raises `bioplaus.errors.DataError` with a message
that names the file or folder and says how to get a good copy.
"""

from bioplaus.data.cifar import load_cifar10
from bioplaus.data.dataset import Dataset
from bioplaus.data.download import (
    FASHION_MNIST_URL,
    download_fashion_mnist,
    download_file,
)
from bioplaus.data.idx import read_idx, write_idx
from bioplaus.data.locate import data_home, find_dataset_folder, resolve_file
from bioplaus.data.mnist import load_fashion_mnist, load_mnist
from bioplaus.data.toy import load_digits, make_synthetic

__all__ = [
    "FASHION_MNIST_URL",
    "Dataset",
    "data_home",
    "download_fashion_mnist",
    "download_file",
    "find_dataset_folder",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "make_synthetic",
    "read_idx",
    "resolve_file",
    "write_idx",
]
