"""The feedback-controlled rate RNN experiments as ordinary runs of [`compare`][bioplaus.runner.compare].

- [`pretrain`][bioplaus.runner.motor.pretrain]: the registered ``reaching`` task with rule ``bp`` (BPTT through the
  closed loop on random reaches; Adam, the official regularisers, global clip 0.2), with or without a
  controller.
- [`adapt`][bioplaus.runner.motor.adapt]: the registered ``reach-adaptation-grid`` task
  ([`AdaptationGrid`][bioplaus.tasks.motor_training.AdaptationGrid]) with an online rule, starting from a
  saved pre-trained network: several conditions (learning rate × control on/off) in one run.

Both are one call of ``compare``; what they add is the trained model, which ``compare`` does not
return (it keeps only metrics, and model files where ``checkpoint=True``). They build it with
[`KeptModel`][bioplaus.runner.motor.KeptModel], a model factory that keeps what it built, so no folder is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bioplaus import nets
from bioplaus.core import Rule, TaskSpec
from bioplaus.errors import ConfigError, DivergedError
from bioplaus.nets.rate_rnn import RateRNN, load_checkpoint
from bioplaus.runner.compare import compare
from bioplaus.runner.result import Comparison
from bioplaus.tasks.motor import Timing
from bioplaus.tasks.motor_training import AdaptationResult, condition_labels


class KeptModel:
    """A model factory for ``compare`` that keeps what it built.

    Builds the registered model ``source`` with ``options``, or, when ``source`` is a module, a
    fresh copy of it (the module itself is never trained). After ``compare`` returns,
    `model` is the model of the run that trained last (a comparison of one rule and one
    seed: its trained model).
    """

    def __init__(self, source: str | nn.Module, **options: Any):
        if isinstance(source, nn.Module) and options:
            raise ConfigError("options apply to a registered model given by name, not to a model object")
        self.source, self.options = source, options
        self.model: Any = None

    def __call__(self, spec: TaskSpec) -> Any:
        if isinstance(self.source, nn.Module):
            self.model = copy.deepcopy(self.source)
        else:
            self.model = nets.get(self.source, spec, **self.options)
        return self.model

    def __repr__(self) -> str:  # what config.json records as the model
        if isinstance(self.source, nn.Module):
            return f"copy of {type(self.source).__name__}"
        return f"{self.source}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


def _finished(comparison: Comparison) -> None:
    for run in comparison.runs[comparison.runs["status"] != "done"].itertuples():
        raise DivergedError(f"run {run.rule} (seed {run.seed}) diverged: {run.message}")


@dataclass
class Pretrained:
    """A pre-trained network and the run that trained it.

    Attributes:
        model: the trained [`RateRNN`][bioplaus.nets.rate_rnn.RateRNN].
        comparison: the run's [`Comparison`][bioplaus.runner.result.Comparison] (tidy table, run record).
        log_every: iterations per epoch (between evaluations).
    """

    model: RateRNN
    comparison: Comparison
    log_every: int

    def log(self) -> list[dict[str, float]]:
        """One dict per evaluation after training: ``iteration``, ``train_mse`` and each ``split/metric``."""
        table = self.comparison.table
        out = []
        for epoch, rows in table[table["epoch"] > 0].groupby("epoch", sort=True):
            row: dict[str, float] = {"iteration": int(epoch) * self.log_every}
            for split, metric, value in zip(rows["split"], rows["metric"], rows["value"], strict=True):
                row["train_mse" if (split, metric) == ("train", "mse") else f"{split}/{metric}"] = value
            out.append(row)
        return out


def pretrain(
    n: int = 200,
    controller: bool = True,
    *,
    iterations: int = 2000,
    log_every: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    timing: str | Timing = "kaleb",
    push_prob: float = 0.0,
    model_options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> Pretrained:
    """Pre-train a ``rate_rnn`` of ``n`` units by BPTT through the closed loop on random reaches.

    The ``reaching`` task with rule ``bp`` for ``iterations // log_every`` epochs of ``log_every``
    batches of ``batch_size`` trials, Adam with ``lr`` (``λ_w = 10⁻³`` non-squared norms,
    ``λ_r = 2·10⁻³``, global clip 0.2, as the official ``setup_OFC_network.py``, which uses batch
    256 and 5000 iterations). ``seed`` fixes the initial weights and the trials.
    ``W_fb`` is trained only when the model has a controller.

    Args:
        model_options: further options of the ``rate_rnn`` model (``fb_density``, ``fb_delay``,
            ``error``, ``tau``, ``dt``).
        out: a folder for the run's ``config.json``, ``metrics.csv``, … (``compare``'s ``out``).

    Raises:
        ConfigError: when ``iterations`` is not a positive multiple of ``log_every``.
        DivergedError: when the loss became non-finite.
    """
    if log_every < 1 or iterations < log_every or iterations % log_every:
        raise ConfigError(f"iterations must be a positive multiple of log_every, got {iterations} and {log_every}")
    keep = KeptModel("rate_rnn", n=n, controller=controller, **dict(model_options or {}))
    comparison = compare(
        model=keep,
        rules=["bp"],
        task="reaching",
        seeds=[seed],
        epochs=iterations // log_every,
        batch_size=batch_size,
        optimizer="adam",
        lr=lr,
        fused=False,  # torch's per-tensor Adam, as the recorded pre-training runs used
        task_options={"iterations": log_every, "timing": timing, "push_prob": push_prob},
        out=out,
        progress=progress,
    )
    _finished(comparison)
    return Pretrained(keep.model, comparison, log_every)


def adapt(
    model: RateRNN | str | Path,
    rule: str | Rule,
    lrs: Sequence[float],
    controls: Sequence[float],
    labels: Sequence[str] | None = None,
    *,
    trials: int = 500,
    eval_every: int = 10,
    rotation: float = 30.0,
    convention: str = "reference",
    timing: str | Timing = "kaleb",
    seed: int = 0,
    diverge_above: float = 1e3,
    rule_options: Mapping[str, Any] | None = None,
    alignment_every: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
) -> AdaptationResult:
    """Adapt a pre-trained network to a rotation, one condition per ``(lrs[c], controls[c])``.

    The ``reach-adaptation-grid`` task for ``trials // eval_every`` epochs of ``eval_every``
    trials, batch 1, with the online ``rule`` (``rflo``, ``fed``, ``online_bptt``; see
    [`AdaptationGrid`][bioplaus.tasks.motor_training.AdaptationGrid] for the conditions, divergence and
    the metrics). ``seed`` fixes the trial sequence and the trials' initial states.

    Args:
        model: the pre-trained (unsplit) network, or a file saved by
            [`save_checkpoint`][bioplaus.nets.rate_rnn.save_checkpoint]; it is not changed.
        rule: an online rule, by name (with ``rule_options``) or as a [`Rule`][bioplaus.core.rule.Rule].
        lrs: learning rate per condition.
        controls: controller gain during learning per condition (0: control off, 1: on).
        labels: condition names, unique (default ``lr=…,control=…``).
        trials: adaptation trials, a multiple of ``eval_every``.
        eval_every: trials between evaluations.
        rotation: degrees, counter-clockwise.
        convention: ``"reference"`` or ``"cursor"`` rotation.
        timing: trial timing.
        seed: the run's seed.
        diverge_above: a training-trial or control-off test MSE above this counts as diverged.
        rule_options: options of a rule given by name.
        alignment_every: probe the rule's alignment with its reference every this many optimizer
            steps (time steps; 0: never), logged as ``train/alignment/<layer>``.
        out: a folder for the run's ``config.json``, ``metrics.csv``, … (``compare``'s ``out``).

    Returns:
        The per-condition curves, with `model` the split network after
        adaptation (no rule attached).

    Raises:
        ConfigError: for a bad condition grid, a non-online rule or ``trials`` not a multiple of ``eval_every``.
    """
    if eval_every < 1 or trials < eval_every or trials % eval_every:
        raise ConfigError(f"trials must be a positive multiple of eval_every, got {trials} and {eval_every}")
    if rule_options and not isinstance(rule, str):
        raise ConfigError("rule_options apply to a rule given by name; configure your Rule object instead")
    labels = condition_labels(lrs, controls) if labels is None else list(labels)
    name = rule if isinstance(rule, str) else rule.name
    keep = KeptModel(model) if isinstance(model, nn.Module) else KeptModel("rate_rnn", checkpoint=str(model))
    comparison = compare(
        model=keep,
        rules={name: rule},
        task="reach-adaptation-grid",
        seeds=[seed],
        epochs=trials // eval_every,
        batch_size=1,
        optimizer="sgd",
        alignment_every=alignment_every,
        task_options={
            "lrs": list(lrs),
            "controls": list(controls),
            "labels": labels,
            "trials": eval_every,
            "rotation": rotation,
            "convention": convention,
            "timing": timing,
            "diverge_above": diverge_above,
        },
        rule_options={name: dict(rule_options)} if rule_options else None,
        out=out,
        progress=progress,
    )
    _finished(comparison)
    start = copy.deepcopy(model) if isinstance(model, nn.Module) else load_checkpoint(model)
    adapted = start.split_conditions(len(labels))  # the trained copy, without the rule attached to it
    adapted.load_state_dict(keep.model.state_dict())
    return AdaptationResult.from_table(comparison.table, labels, lrs, controls, adapted)
