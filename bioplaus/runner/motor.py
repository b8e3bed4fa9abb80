"""Drivers of the feedback-controlled rate RNN experiments: pre-training and vectorised adaptation.

- :func:`pretrain`: BPTT through the closed loop on random reaches (Adam, the official
  regularisers, global clip 0.2), with or without a controller.
- :func:`adapt`: trial-by-trial adaptation of ``W_rec`` to a visuomotor rotation with an online
  rule, for several conditions (learning rate × control on/off) in one pass: the model is split
  into one ``W_rec`` per condition, every condition sees the same trial sequence, and
  :class:`~bioplaus.tasks.motor_training.ConditionSGD` steps each condition with its own
  learning rate. A condition whose training or control-off test MSE becomes non-finite or
  exceeds ``diverge_above`` is reported as diverged (and frozen); the others go on.

Both train through the runner's :func:`~bioplaus.runner.training.train_step`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from bioplaus.core import Rule
from bioplaus.errors import ConfigError
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.rules.backprop import Backprop
from bioplaus.runner.training import train_epoch, train_step
from bioplaus.tasks.motor import MotorTask, Timing, TrialBatch, centre_out, reach_scores
from bioplaus.tasks.motor_training import AdaptationResult, AdaptationTrials, ConditionSGD


def pretrain(
    model: RateRNN,
    iterations: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    timing: str | Timing = "kaleb",
    push_prob: float = 0.0,
    log_every: int = 100,
) -> list[dict[str, float]]:
    """Pre-train ``model`` in place by BPTT through the closed loop on random reaches.

    Adam (``lr``), batch ``batch_size``, ``λ_w = 10⁻³`` non-squared norms, ``λ_r = 2·10⁻³``, global
    clip 0.2, as the official ``setup_OFC_network.py`` (which uses batch 256 and 5000 iterations;
    pitfall P13). ``W_fb`` is trained only when the model has a controller.

    Returns:
        The task's test metrics every ``log_every`` iterations (and after the last).
    """
    if iterations < 1 or log_every < 1:
        raise ConfigError(f"iterations and log_every must be positive, got {iterations}, {log_every}")
    task = MotorTask("random", batch_size, log_every, timing, push_prob=push_prob)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rule, log, done = Backprop(), [], 0
    while done < iterations:
        task.iterations = min(log_every, iterations - done)
        train = train_epoch(task, model, rule, optimizer, generator=generator)
        done += task.iterations
        scores = task.evaluate(model)
        log.append({"iteration": done, "train_mse": train["mse"]} | {
            f"{split}/{k}": v for split, metrics in scores.items() for k, v in metrics.items()
        })  # fmt: skip
    return log


def adapt(
    model: RateRNN,
    rule: Rule,
    lrs: Sequence[float],
    controls: Sequence[float],
    labels: Sequence[str] | None = None,
    trials: int = 500,
    rotation: float = 30.0,
    convention: str = "reference",
    timing: str | Timing = "kaleb",
    eval_every: int = 10,
    seed: int = 0,
    diverge_above: float = 1e3,
) -> AdaptationResult:
    """Adapt copies of a pre-trained ``model`` to a rotation, one condition per ``(lrs[c], controls[c])``.

    Each trial is one centre-out reach to a random target of the 8 (the same sequence for every
    condition, batch 1 as in the official ``do_adaptation.py``), learned online with ``rule``
    and :class:`ConditionSGD`. Every ``eval_every`` trials the 8 rotated targets are tested with
    control off (the reported metric) and on.

    Args:
        model: a pre-trained (unsplit) model; it is not changed.
        rule: an online rule (``rflo``, ``fed``, ``online_bptt``).
        lrs: learning rate per condition.
        controls: controller gain during learning per condition (0: control off, 1: on).
        labels: condition names (default ``lr=…,control=…``).
        trials: adaptation trials.
        rotation: degrees, counter-clockwise.
        convention: ``"reference"`` or ``"cursor"`` rotation.
        timing: trial timing.
        eval_every: trials between evaluations.
        seed: seed of the trial sequence and initial states.
        diverge_above: a training-trial or control-off test MSE above this counts as diverged.
    """
    if len(lrs) != len(controls) or not lrs:
        raise ConfigError(f"need one control per learning rate, got {len(lrs)} lrs and {len(controls)} controls")
    if not rule.online:
        raise ConfigError(f"adapt runs online rules (rflo, fed, online_bptt); '{rule.name}' learns per batch")
    C = len(lrs)
    if labels is None:
        labels = [f"lr={lr:g},control={g:g}" for lr, g in zip(lrs, controls, strict=True)]
    net = copy.deepcopy(model).split_conditions(C)
    rule.attach(net)
    task = AdaptationTrials("centre-out", 1, 1, timing, rotation, convention, list(controls), 0.0, 0.0, 0.0, None)
    optimizer = ConditionSGD([net.W_rec], lrs)
    start = net.W_rec.detach().clone()
    test = centre_out(timing).rotated(rotation, convention)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    result = AdaptationResult(list(labels), [float(x) for x in lrs], [float(x) for x in controls])
    diverged_at = torch.full((C,), -1)
    evals: list[tuple[torch.Tensor, ...]] = []
    train: list[torch.Tensor] = []

    def evaluate(done: int) -> None:
        off, on = (reach_scores(net, test, g, torch.Generator().manual_seed(10_000 + seed)) for g in (0.0, 1.0))
        bad = (~torch.isfinite(off["mse"]) | (off["mse"] > diverge_above)) & (diverged_at < 0)
        diverged_at[bad] = done
        gone = diverged_at >= 0
        evals.append(tuple(m.masked_fill(gone, math.nan) for m in (off["mse"], on["mse"], off["angle"])))
        result.trials.append(done)

    evaluate(0)
    for trial in range(1, trials + 1):
        mse = train_step(task, net, rule, optimizer, TrialBatch(task.sample(generator), generator), step=trial)
        mse = mse.reshape(C, -1).mean(1)
        bad = (~torch.isfinite(mse) | (mse > diverge_above)) & (diverged_at < 0)
        if bad.any():  # freeze diverged conditions at their starting weights (numbers reported as NaN)
            diverged_at[bad] = trial
            with torch.no_grad():
                net.W_rec[bad] = start[bad]
            optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"].masked_fill(bad, 0.0)
        train.append(mse.masked_fill(diverged_at >= 0, math.nan))
        if trial % eval_every == 0 or trial == trials:
            evaluate(trial)
    rule.detach(net)
    result.test_mse, result.test_mse_on, result.test_angle = (torch.stack(x) for x in zip(*evals, strict=True))
    result.train_mse = torch.stack(train)
    result.diverged_at = diverged_at
    result.displacement = (net.W_rec.detach() - start).flatten(1).norm(dim=1).double()
    result.path = optimizer.path
    result.model = net
    return result
