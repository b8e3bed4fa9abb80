"""Supervised classification on an in-memory data set (Fashion-MNIST, MNIST, CIFAR-10, digits, synthetic)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioplaus import data
from bioplaus.core import Capability, Context, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.registry import did_you_mean
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics, Task

NORMALIZATIONS = ("symmetric", "unit", "standard", "none")


def scale_inputs(x: np.ndarray, value_range: tuple[float, float] | None, how: str, reference: np.ndarray) -> np.ndarray:
    """Scale raw inputs to float32.

    ``symmetric`` maps the data set's value range to [−1, 1] (as ``Normalize(0.5, 0.5)`` in the
    GEVB paper), ``unit`` to [0, 1], ``standard`` to zero mean and unit variance using the
    training set's global mean and s.d. (``reference``), ``none`` keeps the values. Data without
    a fixed value range (synthetic) is left as it is by ``symmetric`` and ``unit``.
    """
    if how not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown normalize '{how}'{did_you_mean(how, list(NORMALIZATIONS))}; "
            f"choose one of {', '.join(NORMALIZATIONS)}"
        )
    x = x.astype(np.float32)
    if how == "standard":
        ref = reference.astype(np.float32)
        return (x - ref.mean()) / max(float(ref.std()), 1e-8)
    if how == "none" or value_range is None:
        return x
    lo, hi = value_range
    unit = (x - lo) / (hi - lo)
    return unit if how == "unit" else 2.0 * unit - 1.0


def _subset(n_total: int, n: int | None, what: str) -> np.ndarray:
    if n is None:
        return np.arange(n_total)
    if not 1 <= n <= n_total:
        raise ConfigError(f"{what} must be between 1 and {n_total}, got {n}")
    return np.sort(np.random.default_rng(0).permutation(n_total)[:n])


class ClassificationTask(Task):
    """Cross-entropy classification; one epoch is one shuffled pass over the training set.

    Training metrics are running means over the epoch (loss and accuracy of each batch before
    its update); test metrics are computed on the whole test set after the epoch.

    Args:
        dataset: the data (see [`bioplaus.data.Dataset`][bioplaus.data.Dataset]).
        batch_size: examples per update.
        normalize: input scaling (``symmetric``, ``unit``, ``standard`` or ``none``).
        n_train: use a fixed random subset of this many training examples (``None``: all).
        n_test: likewise for the test set.
        device: where the data and the model live.
    """

    requires = frozenset({Capability.FEEDFORWARD})

    def __init__(
        self,
        dataset: data.Dataset,
        batch_size: int = 64,
        normalize: str = "symmetric",
        n_train: int | None = None,
        n_test: int | None = None,
        device: str = "cpu",
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        self.name = dataset.name
        self.batch_size = batch_size
        train = _subset(len(dataset.y_train), n_train, "n_train")
        test = _subset(len(dataset.y_test), n_test, "n_test")
        ref = dataset.x_train[train]
        x_train = scale_inputs(ref, dataset.value_range, normalize, ref)
        x_test = scale_inputs(dataset.x_test[test], dataset.value_range, normalize, ref)
        self.x_train, self.x_test = torch.from_numpy(x_train).to(device), torch.from_numpy(x_test).to(device)
        self.y_train = torch.from_numpy(dataset.y_train[train].astype(np.int64)).to(device)
        self.y_test = torch.from_numpy(dataset.y_test[test].astype(np.int64)).to(device)
        self.spec = TaskSpec(tuple(dataset.input_shape), dataset.n_classes)

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled training batches (the last one may be smaller)."""
        order = torch.randperm(len(self.y_train), generator=generator).to(self.y_train.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``model(x)``, checked to be one score per class for each example."""
        output = model(x)
        if output.shape != (len(x), self.spec.n_out):
            raise ShapeError(
                f"task '{self.name}' needs model outputs of shape (batch, {self.spec.n_out}), "
                f"got {tuple(output.shape)}; build the model from the task's spec"
            )
        return output

    def context(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Context:
        """Softmax cross-entropy of ``model(x)`` against the labels."""
        x, y = batch
        output = self.logits(model, x)
        return Context(loss=F.cross_entropy(output, y), output=output, target=y)

    def batch_metrics(self, batch: tuple[torch.Tensor, torch.Tensor], outcome: Context) -> Metrics:
        """Loss and accuracy of the batch before its update, weighted by its size."""
        n = len(batch[1])
        correct = int((outcome.output.argmax(1) == batch[1]).sum())
        return {"loss": outcome.loss.item() * n, "accuracy": correct}, n

    @torch.no_grad()
    def headline_metrics(self) -> tuple[str, ...]:
        """Test accuracy."""
        return ("test/accuracy",)

    def chance_levels(self) -> dict[str, float]:
        """Accuracy of a uniform guess, ``1 / n_classes``."""
        return {"accuracy": 1 / self.spec.n_out}

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        was_training = model.training
        model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(self.y_test), 1000):
            x, y = self.x_test[start : start + 1000], self.y_test[start : start + 1000]
            out = self.logits(model, x)
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
        model.train(was_training)
        n = len(self.y_test)
        return {"test": {"loss": loss_sum / n, "accuracy": correct / n}}


def _image_task(loader: Callable[..., data.Dataset], description: str) -> Callable[..., ClassificationTask]:
    def factory(
        batch_size: int = 64,
        root: str | None = None,
        n_train: int | None = None,
        n_test: int | None = None,
        normalize: str = "symmetric",
        device: str = "cpu",
    ) -> ClassificationTask:
        return ClassificationTask(loader(root=root), batch_size, normalize, n_train, n_test, device)

    factory.__doc__ = description
    return factory


for _name, _loader, _description in [
    (
        "fashion-mnist",
        data.load_fashion_mnist,
        "Fashion-MNIST (Debian's dataset-fashion-mnist, $BIOPLAUS_DATA or a folder): 10 classes of 28×28 clothes.",
    ),
    ("mnist", data.load_mnist, "MNIST handwritten digits from a folder of IDX files: 10 classes, 28×28."),
    (
        "cifar10",
        data.load_cifar10,
        "CIFAR-10 from a folder (binary or python version): 10 classes of 32×32 colour images.",
    ),
]:
    register(_name, _image_task(_loader, _description))


@register("digits")
def digits(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    data_seed: int = 0,
    normalize: str = "symmetric",
    device: str = "cpu",
) -> ClassificationTask:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes); no download."""
    dataset = data.load_digits(test_fraction=test_fraction, seed=data_seed)
    return ClassificationTask(dataset, batch_size, normalize, device=device)


@register("synthetic")
def synthetic(
    batch_size: int = 64,
    n_train: int = 2000,
    n_test: int = 1000,
    n_features: int = 20,
    n_classes: int = 4,
    hidden: int = 64,
    data_seed: int = 0,
    device: str = "cpu",
) -> ClassificationTask:
    """Gaussian inputs labelled by a fixed random teacher network; generated in code."""
    dataset = data.make_synthetic(
        n_train=n_train, n_test=n_test, n_features=n_features, n_classes=n_classes, hidden=hidden, seed=data_seed
    )
    return ClassificationTask(dataset, batch_size, "none", device=device)
