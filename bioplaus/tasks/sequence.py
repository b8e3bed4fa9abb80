"""Sequence tasks: long-range memory benchmarks and pixel-by-pixel image classification.

A sequence task feeds ``x`` of shape ``(batch, L, n_in)`` to a sequence model (``bioplaus.nets``:
``lstm``, ``sab_lstm``, ``attn_lstm``) that answers at every step, ``(batch, L, n_out)``; the loss
covers the last ``loss_last`` steps (or all of them), the score the last ``score_last``.

- ``delayed-recall`` and ``copy`` (Ke et al. 2018's copying memory; Hochreiter & Schmidhuber 1997):
  ``S`` symbols from {1…8} (one-hot), ``T − 1`` blanks, a marker, ``S`` blanks; the target is blank
  for the first ``T + S`` steps, then the ``S`` symbols (length ``T + 2S``). Cross-entropy over all
  steps, accuracy over the last ``S``. ``delayed-recall`` is ``S = 1`` (chance 1/8; a memoryless
  model reaches CE ``ln 8 / (T + 2)``), ``copy`` is ``S = 10``.
- ``adding`` (Hochreiter & Schmidhuber 1997): values U[0, 1] and a marker channel with one marker
  in each half; the target, at the last step, is the sum of the two marked values (MSE; a constant
  predictor gets 1/6, one that uses one operand 1/12).
- ``pixel-fashion-mnist`` / ``pixel-mnist``: the 784 pixels in raster order (or a fixed
  permutation, ``permuted=true``), ``pixels_per_step`` at a time; the class at the last step.

Synthetic tasks draw fresh training sequences from the run's generator (an "epoch" is
``steps_per_epoch`` updates) and test on fixed sequences of the training length and of
``transfer`` multiples of it (splits ``test`` and ``test_T{length}``: length transfer).

Training: batch rules get one context for the whole sequence (``rule.update``); online rules
(``rule.online``, e.g. ``tbptt_stream``) see the model run one step at a time and get a context
per step (``rule.step``, with ``ctx.t``, that step's loss or ``None``, and
``ctx.signals["sequence_end"]``). Gradients are clipped to a global norm of ``clip_grad_norm``
(1.0, as the SAB code) before the optimizer step. ``mle_weight > 0`` adds the MLE regulariser
([`bioplaus.analysis.mle_regularizer`][bioplaus.analysis.mle_regularizer]) to a batch rule's loss: ``mle_weight`` times
the finite-time maximal Lyapunov exponent of the model's state map along the batch's sequences
(``lstm`` models; online rules cannot take it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioplaus import data
from bioplaus.analysis.mle_regularizer import MLERegularizer
from bioplaus.core import Capability, Context, Rule, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics, Task

Batch = tuple[torch.Tensor, torch.Tensor]
MakeBatch = Callable[[int, int, torch.Generator], Batch]

N_SYMBOLS = 8
BLANK, MARKER = 0, N_SYMBOLS + 1


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def copy_batch(n: int, T: int, generator: torch.Generator, n_copy: int = 10) -> Batch:
    """``n`` copy-memory sequences with delay ``T``: one-hot inputs ``(n, T + 2S, 10)``, targets ``(n, T + 2S)``."""
    symbols = torch.randint(1, N_SYMBOLS + 1, (n, n_copy), generator=generator)
    length = T + 2 * n_copy
    tokens = torch.full((n, length), BLANK)
    tokens[:, :n_copy] = symbols
    tokens[:, n_copy + T - 1] = MARKER
    target = torch.full((n, length), BLANK)
    target[:, -n_copy:] = symbols
    return F.one_hot(tokens, MARKER + 1).float(), target


def adding_batch(n: int, T: int, generator: torch.Generator) -> Batch:
    """``n`` adding-problem sequences of length ``T``: inputs ``(n, T, 2)``, targets ``(n, T)`` (the sum at the end)."""
    if T < 2:
        raise ConfigError(f"the adding task needs T ≥ 2 (one marker per half), got T={T}")
    values = torch.rand(n, T, generator=generator)
    half = T // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, T, (n,), generator=generator)
    markers = torch.zeros(n, T)
    rows = torch.arange(n)
    markers[rows, first] = markers[rows, second] = 1.0
    target = torch.zeros(n, T)
    target[:, -1] = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], 2), target


def _takes_length(reset_state: Callable) -> bool:
    """Whether a model's ``reset_state`` accepts ``length=``
    ([`bioplaus.nets.lstm.SequenceNet.reset_state`][bioplaus.nets.lstm.SequenceNet.reset_state])."""
    try:
        return "length" in inspect.signature(reset_state).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin, say): call it the plain way
        return False


class SequenceTask(Task):
    """Contexts, loss and metrics shared by sequence tasks; subclasses supply the data.

    Batch rules get the whole sequence's context ([`context`][bioplaus.tasks.sequence.SequenceTask.context]); online
    rules a context per step ([`steps`][bioplaus.tasks.sequence.SequenceTask.steps]) from a model that runs one step at
    a time.

    Args:
        name: task name.
        spec: ``input_shape = (training length, n_in)`` and ``n_out``.
        loss: ``"ce"`` (class targets) or ``"mse"`` (one regression output per step).
        loss_last: the loss covers the last this many steps (``None``: every step).
        score_last: accuracy (``"ce"``) is computed over the last this many steps.
        clip_grad_norm: clip the global gradient norm to this before each step (``None``: never).
        mle_weight: weight of the MLE regulariser in a batch rule's loss (0: none).
    """

    requires = frozenset({Capability.SEQUENCE})
    provides = frozenset({"loss", "output", "target", "t", "sequence_end"})

    def __init__(
        self,
        name: str,
        spec: TaskSpec,
        loss: str,
        loss_last: int | None,
        score_last: int,
        clip_grad_norm: float | None,
        mle_weight: float = 0.0,
    ):
        if loss not in ("ce", "mse"):
            raise ConfigError(f"loss must be 'ce' or 'mse', got {loss!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be positive or None (no clipping), got {clip_grad_norm}")
        if loss_last is not None and (isinstance(loss_last, bool) or not isinstance(loss_last, int) or loss_last < 1):
            raise ConfigError(f"loss_last must be a positive integer or None (every step), got {loss_last!r}")
        self.name, self.spec, self.loss_kind = name, spec, loss
        self.loss_last, self.score_last, self.clip_grad_norm = loss_last, score_last, clip_grad_norm
        self.test_sets: dict[str, Batch] = {}
        self.mle = MLERegularizer(mle_weight) if mle_weight != 0 else None

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[Batch]:
        """The training batches of one epoch."""
        raise NotImplementedError

    # loss and metrics ------------------------------------------------------------------------
    def _loss_steps(self, length: int) -> int:
        return length if self.loss_last is None else min(self.loss_last, length)

    def _pointwise(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of every example at the given steps: output ``(..., n_out)``, target ``(...)``."""
        if self.loss_kind == "ce":
            return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="none")
        return (output.squeeze(-1) - target).pow(2)

    def check_output(self, output: torch.Tensor, x: torch.Tensor) -> None:
        """Raise ``ShapeError`` unless ``output`` is one ``n_out``-vector per example and step."""
        if output.shape != (*x.shape[:2], self.spec.n_out):
            raise ShapeError(
                f"task '{self.name}' needs model outputs of shape (batch, length, {self.spec.n_out}) = "
                f"{(*x.shape[:2], self.spec.n_out)}, got {tuple(output.shape)}; use a sequence model "
                "(lstm, sab_lstm, attn_lstm) built from the task's spec"
            )

    def sequence_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over examples and the loss steps."""
        k = self._loss_steps(target.shape[1])
        return self._pointwise(output[:, -k:], target[:, -k:]).mean()

    def step_loss(self, output: torch.Tensor, target: torch.Tensor, t: int, length: int) -> torch.Tensor | None:
        """Step ``t``'s share of [`sequence_loss`][bioplaus.tasks.sequence.SequenceTask.sequence_loss] (they sum to
        it), or ``None`` outside the loss steps."""
        k = self._loss_steps(length)
        if t < length - k:
            return None
        return self._pointwise(output, target).mean() / k

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """``loss`` (and ``accuracy`` over the last ``score_last`` steps, for class targets)."""
        out = {"loss": self.sequence_loss(output, target).item()}
        if self.loss_kind == "ce":
            k = self.score_last
            out["accuracy"] = (output[:, -k:].argmax(-1) == target[:, -k:]).float().mean().item()
        return out

    # training ----------------------------------------------------------------------------------
    def check(self, model: nn.Module, rule: Rule) -> None:
        if rule.online and self.mle is not None:
            raise ConfigError(
                f"mle_weight adds a loss term that online rule '{rule.name}' never sees: use a batch rule "
                "(bp, bptt, tbptt) or mle_weight=0"
            )

    def context(self, model: nn.Module, batch: Batch) -> Context:
        """The whole sequence's loss (plus the MLE penalty) for a batch rule."""
        x, y = batch
        output = model(x)
        self.check_output(output, x)
        loss = self.sequence_loss(output, y)
        if self.mle is not None:
            loss = loss + self.mle(model, x)
        return Context(loss=loss, output=output, target=y)

    def steps(self, model: nn.Module, batch: Batch, on_reset: Callable[[], None]) -> Generator[Context, None, Batch]:
        """One context per step: ``ctx.t``, the step's share of the loss (or ``None``) and
        ``ctx.signals["sequence_end"]``; returns the outputs ``(batch, length, n_out)`` and targets."""
        x, y = batch
        length = x.shape[1]
        if _takes_length(model.reset_state):  # lets the model size per-sequence buffers once
            model.reset_state(x.shape[0], length=length)
        else:
            model.reset_state(x.shape[0])
        on_reset()
        outputs = []
        for t in range(length):
            out = model.step(x[:, t])
            loss = self.step_loss(out, y[:, t], t, length)
            yield Context(loss=loss, output=out, target=y[:, t], t=t, signals={"sequence_end": t == length - 1})
            outputs.append(out.detach())
        output = torch.stack(outputs, 1)
        self.check_output(output, x)
        return output, y

    def outcome_loss(self, outcome: Batch) -> torch.Tensor:
        return self.sequence_loss(*outcome)

    def batch_metrics(self, batch: Batch, outcome: Context | Batch) -> Metrics:
        """The batch's loss (and accuracy) before its update; every batch weighs the same."""
        output = outcome.output.detach() if isinstance(outcome, Context) else outcome[0]
        return self.metrics(output, batch[1]), 1.0

    def headline_metrics(self) -> tuple[str, ...]:
        """Accuracy (class targets) or loss (regression) on every test length, the training length first."""
        metric = "accuracy" if self.loss_kind == "ce" else "loss"
        return tuple(f"{split}/{metric}" for split in self.test_sets)

    def chance_levels(self) -> dict[str, float]:
        """Class targets: the accuracy of a uniform guess per step, ``1 / n_out`` (regression: none)."""
        return {"accuracy": 1 / self.spec.n_out} if self.loss_kind == "ce" else {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        was_training = model.training
        model.eval()
        results = {}
        for split, (x, y) in self.test_sets.items():
            output = model(x)
            self.check_output(output, x)
            results[split] = self.metrics(output, y)
        model.train(was_training)
        return results


class SyntheticSequenceTask(SequenceTask):
    """A sequence task whose data is generated in code: fresh training batches, fixed test sets.

    Args:
        name: task name.
        make_batch: ``(n, T, generator) -> (x, target)``.
        T: the training delay/length parameter.
        n_out: output size per step.
        loss: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
        loss_last: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
        score_last: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
        clip_grad_norm: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
        batch_size: sequences per update.
        steps_per_epoch: updates per epoch.
        n_test: test sequences per split.
        transfer: also test at these multiples of ``T`` (splits ``test_T{k·T}``).
        data_seed: seed of the test sets.
        device: where the data lives.
        mle_weight: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
    """

    def __init__(
        self,
        name: str,
        make_batch: MakeBatch,
        T: int,
        n_out: int,
        loss: str,
        loss_last: int | None,
        score_last: int,
        clip_grad_norm: float | None = 1.0,
        batch_size: int = 32,
        steps_per_epoch: int = 250,
        n_test: int = 256,
        transfer: Sequence[int] = (2, 4),
        data_seed: int = 0,
        device: str = "cpu",
        mle_weight: float = 0.0,
    ):
        for what, value in (("T", T), ("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            _positive(value, what)
        _positive(n_test, "n_test")
        for factor in transfer:
            _positive(factor, "each transfer factor")
        self.make_batch, self.T, self.batch_size, self.steps_per_epoch = make_batch, T, batch_size, steps_per_epoch
        self.device = device
        x, _ = make_batch(1, T, torch.Generator().manual_seed(0))
        spec = TaskSpec(tuple(x.shape[1:]), n_out)
        super().__init__(name, spec, loss, loss_last, score_last, clip_grad_norm, mle_weight)
        for factor in sorted({1, *transfer}):
            length = factor * T
            x, y = make_batch(n_test, length, torch.Generator().manual_seed(data_seed + length))
            self.test_sets["test" if factor == 1 else f"test_T{length}"] = (x.to(device), y.to(device))

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[Batch]:
        for _ in range(self.steps_per_epoch):
            x, y = self.make_batch(self.batch_size, self.T, generator)
            yield x.to(self.device), y.to(self.device)


@register("delayed-recall")
def delayed_recall(
    T: int = 50,
    batch_size: int = 32,
    steps_per_epoch: int = 250,
    n_test: int = 256,
    transfer: Sequence[int] = (2, 4),
    clip_grad_norm: float | None = 1.0,
    data_seed: int = 0,
    device: str = "cpu",
    mle_weight: float = 0.0,
    loss_last: int | None = None,
) -> SyntheticSequenceTask:
    """Recall one symbol after T steps: symbol, T−1 blanks, marker, answer at the last step (chance 1/8).

    The loss is the cross-entropy over every step (``loss_last=None``, as the official copy task
    trains: blanks are predicted too) or over the last ``loss_last`` steps (1: the answer only).
    """
    return SyntheticSequenceTask(
        "delayed-recall",
        lambda n, length, g: copy_batch(n, length, g, n_copy=1),
        T,
        N_SYMBOLS + 1,
        "ce",
        loss_last,
        1,
        clip_grad_norm,
        batch_size,
        steps_per_epoch,
        n_test,
        transfer,
        data_seed,
        device,
        mle_weight,
    )


@register("copy")
def copy_memory(
    T: int = 100,
    n_copy: int = 10,
    batch_size: int = 32,
    steps_per_epoch: int = 250,
    n_test: int = 256,
    transfer: Sequence[int] = (2,),
    clip_grad_norm: float | None = 1.0,
    data_seed: int = 0,
    device: str = "cpu",
    mle_weight: float = 0.0,
    loss_last: int | None = None,
) -> SyntheticSequenceTask:
    """Copying memory: reproduce n_copy symbols after a delay of T steps (the SAB paper's copy task).

    The loss covers every step (``loss_last=None``, the official code's choice) or the last
    ``loss_last`` steps (``n_copy``: the recalled symbols only).
    """
    _positive(n_copy, "n_copy")
    return SyntheticSequenceTask(
        "copy",
        lambda n, length, g: copy_batch(n, length, g, n_copy=n_copy),
        T,
        N_SYMBOLS + 1,
        "ce",
        loss_last,
        n_copy,
        clip_grad_norm,
        batch_size,
        steps_per_epoch,
        n_test,
        transfer,
        data_seed,
        device,
        mle_weight,
    )


@register("adding")
def adding(
    T: int = 50,
    batch_size: int = 32,
    steps_per_epoch: int = 250,
    n_test: int = 256,
    transfer: Sequence[int] = (2, 4),
    clip_grad_norm: float | None = 1.0,
    data_seed: int = 0,
    device: str = "cpu",
    mle_weight: float = 0.0,
) -> SyntheticSequenceTask:
    """Adding problem: the sum of the two marked values of a length-T sequence, at the last step (MSE)."""
    return SyntheticSequenceTask(
        "adding",
        adding_batch,
        T,
        1,
        "mse",
        1,
        1,
        clip_grad_norm,
        batch_size,
        steps_per_epoch,
        n_test,
        transfer,
        data_seed,
        device,
        mle_weight,
    )


class PixelSequenceTask(SequenceTask):
    """Pixel-by-pixel classification of 28×28 images: ``784 / pixels_per_step`` steps, the class at the end.

    Args:
        dataset: the images (``(N, 1, 28, 28)`` or any shape with 784 values per example).
        permuted: feed the pixels in one fixed random order (drawn from ``data_seed``).
        pixels_per_step: pixels per time step (must divide 784).
        batch_size: sequences per update; an epoch is one shuffled pass over the training set.
        n_train: use a fixed random subset of this many training images (``None``: all).
        n_test: likewise for the test set.
        clip_grad_norm: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
        data_seed: seed of the permutation and the subsets.
        device: where the data lives.
        mle_weight: see [`SequenceTask`][bioplaus.tasks.sequence.SequenceTask].
    """

    def __init__(
        self,
        dataset: data.Dataset,
        permuted: bool = False,
        pixels_per_step: int = 1,
        batch_size: int = 32,
        n_train: int | None = None,
        n_test: int | None = 1000,
        clip_grad_norm: float | None = 1.0,
        data_seed: int = 0,
        device: str = "cpu",
        mle_weight: float = 0.0,
    ):
        n_pixels = math.prod(dataset.input_shape)
        if _positive(pixels_per_step, "pixels_per_step") and n_pixels % pixels_per_step:
            raise ConfigError(f"pixels_per_step={pixels_per_step} must divide the {n_pixels} pixels of an image")
        order = np.random.default_rng(data_seed).permutation(n_pixels) if permuted else np.arange(n_pixels)
        self.batch_size, self.device = _positive(batch_size, "batch_size"), device
        subsets = np.random.default_rng(data_seed + 1)  # the same examples, permuted or not
        self.x_train, self.y_train = self._sequences(
            dataset.x_train, dataset.y_train, order, n_train, pixels_per_step, subsets
        )
        x_test, y_test = self._sequences(dataset.x_test, dataset.y_test, order, n_test, pixels_per_step, subsets)
        name = f"{'permuted-' if permuted else ''}pixel-{dataset.name}"
        spec = TaskSpec(tuple(self.x_train.shape[1:]), dataset.n_classes)
        super().__init__(name, spec, "ce", 1, 1, clip_grad_norm, mle_weight)
        self.test_sets["test"] = (x_test.to(device), y_test.to(device))
        self.x_train, self.y_train = self.x_train.to(device), self.y_train.to(device)

    @staticmethod
    def _sequences(
        x: np.ndarray, y: np.ndarray, order: np.ndarray, n: int | None, per_step: int, rng: np.random.Generator
    ) -> Batch:
        if n is not None:
            if not 1 <= n <= len(y):
                raise ConfigError(f"n_train and n_test must be between 1 and {len(y)}, got {n}")
            keep = np.sort(rng.permutation(len(y))[:n])
            x, y = x[keep], y[keep]
        pixels = x.reshape(len(x), -1)[:, order].astype(np.float32) / 255.0  # [0, 1], as in pixel-MNIST work
        target = np.zeros((len(y), pixels.shape[1] // per_step), dtype=np.int64)
        target[:, -1] = y
        return torch.from_numpy(pixels.reshape(len(x), -1, per_step)), torch.from_numpy(target)

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(self.y_train), generator=generator).to(self.y_train.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x_train[idx], self.y_train[idx]


def _pixel_task(loader: Callable[..., data.Dataset], description: str) -> Callable[..., PixelSequenceTask]:
    def factory(
        permuted: bool = False,
        pixels_per_step: int = 1,
        batch_size: int = 32,
        n_train: int | None = None,
        n_test: int | None = 1000,
        root: str | None = None,
        clip_grad_norm: float | None = 1.0,
        data_seed: int = 0,
        device: str = "cpu",
        mle_weight: float = 0.0,
    ) -> PixelSequenceTask:
        return PixelSequenceTask(
            loader(root=root),
            permuted,
            pixels_per_step,
            batch_size,
            n_train,
            n_test,
            clip_grad_norm,
            data_seed,
            device,
            mle_weight,
        )

    factory.__doc__ = description
    return factory


register(
    "pixel-fashion-mnist",
    _pixel_task(
        data.load_fashion_mnist,
        "Sequential (or permuted=true) pixel-by-pixel Fashion-MNIST: 784 steps, the class at the last step.",
    ),
)
register(
    "pixel-mnist",
    _pixel_task(data.load_mnist, "Sequential (or permuted=true) pixel-by-pixel MNIST from a folder of IDX files."),
)
