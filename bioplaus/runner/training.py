"""The training step, the same for every task and rule.

[`train_step`][bioplaus.runner.training.train_step] applies one update: zero the gradients, build the context (or run
the online steps), check that the loss is finite, let the rule write ``p.grad``, clip, step the
optimizer and project constrained weights. [`train_epoch`][bioplaus.runner.training.train_epoch] runs it over a task's
batches, probing alignment with the true gradient on the way. Tasks only say what is learned
([`Task`][bioplaus.tasks.base.Task]); nothing here branches on a rule's or a task's name.

For online rules (``rule.online``) the task runs the model one time step at a time and the
runner calls ``rule.step`` on each step's context; it steps the optimizer after every time step
when the task asks for it (``task.online_step == "time_step"``, motor adaptation) or once after
the batch (streaming truncated BPTT).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bioplaus.analysis.alignment import alignment
from bioplaus.analysis.feedback_geometry import feedback_geometry
from bioplaus.analysis.online_alignment import OnlineProbe
from bioplaus.core import Layer, Rule, capabilities_of, weight_layers
from bioplaus.core.capabilities import pairing_problems
from bioplaus.errors import ConfigError
from bioplaus.tasks.base import Task, check_finite

AlignmentLog = Callable[[Mapping[str, float]], None]


def constrained_layers(model: nn.Module) -> list[Layer]:
    """The layers whose weights are projected after every optimizer step (nonnegative VNN weights)."""
    return [layer for _, layer in weight_layers(model) if layer.nonnegative]


def _apply(optimizer: torch.optim.Optimizer, clip: float | None, projections: Iterable[Layer]) -> None:
    if clip is not None:  # over everything the optimizer steps (a rule's learned feedback too)
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip)
    optimizer.step()
    for layer in projections:
        layer.project_()


def train_step(
    task: Task,
    model: nn.Module,
    rule: Rule,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    step: int = 0,
    projections: Iterable[Layer] | None = None,
    probe: OnlineProbe | None = None,
) -> Any:
    """Apply one update of ``rule`` on ``batch``; returns the batch's outcome (see
    [`Task.batch_metrics`][bioplaus.tasks.base.Task.batch_metrics]).

    Args:
        task: gives the context(s) of the batch and the clipping norm.
        model: the model being trained (``rule`` attached).
        rule: writes ``p.grad``.
        optimizer: applies it.
        batch: one item of ``task.batches``.
        step: the update's index, for the divergence message.
        projections: layers to project after each optimizer step (default: found in ``model``).
        probe: for online rules, a per-step alignment probe to feed (see
            [`OnlineProbe`][bioplaus.analysis.online_alignment.OnlineProbe]).

    Raises:
        DivergedError: when the loss is not finite.
    """
    projections = constrained_layers(model) if projections is None else list(projections)
    clip = task.clip_grad_norm
    optimizer.zero_grad(set_to_none=True)
    if not rule.online:
        ctx = task.context(model, batch)
        check_finite(ctx.loss, step)
        rule.update(model, ctx)
        _apply(optimizer, clip, projections)
        return ctx
    every_time_step = task.online_step == "time_step"

    def on_reset() -> None:
        rule.reset(model)
        if probe is not None:
            probe.reset(model)

    with torch.set_grad_enabled(rule.needs_graph):
        steps = task.steps(model, batch, on_reset)
        while True:
            try:
                ctx = next(steps)
            except StopIteration as stop:
                outcome = stop.value
                break
            if probe is not None:
                probe.before(model)
            rule.step(model, ctx)
            if probe is not None:
                probe.after(model, ctx)
            if every_time_step:
                _apply(optimizer, clip, projections)
                optimizer.zero_grad(set_to_none=True)
    check_finite(task.outcome_loss(outcome), step)
    if not every_time_step:
        if probe is not None:
            probe.finish(model)
        _apply(optimizer, clip, projections)
    return outcome


@dataclass
class EpochMeter:
    """Running training metrics of one epoch: weighted sums of what
    [`Task.batch_metrics`][bioplaus.tasks.base.Task.batch_metrics] reports."""

    sums: dict[str, float] = field(default_factory=dict)
    weight: float = 0.0

    def add(self, metrics: Mapping[str, float], weight: float) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.weight += weight

    def result(self) -> dict[str, float]:
        return {name: value / self.weight for name, value in self.sums.items()} if self.weight else {}


@dataclass
class AlignmentSchedule:
    """When to probe alignment and where the cosines go.

    Attributes:
        every: probe before every update whose optimizer-step count is a multiple of this (0: never).
        log: called with ``{"alignment/<layer>": cosine, ...}`` after each probe.
        steps: a callable giving the optimizer steps done so far.
        reference: for online rules, the reference rule of the per-step probe (built by the caller).
        seconds: time spent probing (excluded from training time).
    """

    every: int
    log: AlignmentLog
    steps: Callable[[], int]
    reference: Rule | None = None
    seconds: float = 0.0

    def due(self) -> bool:
        return bool(self.every) and self.steps() % self.every == 0


def train_epoch(
    task: Task,
    model: nn.Module,
    rule: Rule,
    optimizer: torch.optim.Optimizer,
    *,
    generator: torch.Generator,
    alignment_schedule: AlignmentSchedule | None = None,
) -> dict[str, float]:
    """Train ``model`` with ``rule`` for one epoch of ``task``; returns the epoch's training metrics.

    The metrics include, for every layer a rule gave feedback weights, their angle and norm ratio
    to the forward weights at the end of the epoch (`bioplaus.analysis.feedback_geometry`); the
    alignment probes log them too.

    Args:
        task: the task.
        model: the model, with ``rule`` attached.
        rule: the learning rule.
        optimizer: the optimizer over the rule's parameter groups.
        generator: the run's random generator (batch order, exploration, trial noise).
        alignment_schedule: probe the cosine between the rule's update and the true gradient.

    Raises:
        ConfigError: when the rule cannot train this model on this task (typed contracts).
        DivergedError: when a loss becomes non-finite.
    """
    problems = pairing_problems(capabilities_of(model), rule, task)
    if problems:
        raise ConfigError(
            f"rule '{rule.name}' cannot train {type(model).__name__} on task '{task.name}': " + "; ".join(problems)
        )
    task.check(model, rule)
    model.train()
    projections = constrained_layers(model)
    meter = EpochMeter()
    schedule = alignment_schedule
    for index, batch in enumerate(task.batches(model, generator)):
        probe = None
        if schedule is not None and schedule.due():
            start = time.perf_counter()
            context = _replaying(task.context, generator)
            if rule.online:
                probe = OnlineProbe(rule, schedule.reference, model, batch, context)
            else:
                cosines = {f"alignment/{k}": c for k, c in alignment(model, rule, batch, context).items()}
                schedule.log(cosines | feedback_geometry(model))
            generator.set_state(context.state)
            schedule.seconds += time.perf_counter() - start
        outcome = train_step(task, model, rule, optimizer, batch, step=index, projections=projections, probe=probe)
        if probe is not None:
            schedule.log({f"alignment/{k}": c for k, c in probe.result().items()})
            schedule.seconds += probe.seconds
        meter.add(*task.batch_metrics(batch, outcome))
    return meter.result() | task.epoch_metrics() | feedback_geometry(model)


class _replaying:
    """``task.context`` that starts from the same state of the run's generator at every call.

    A probe builds a batch's context more than once (the rule's and the true gradient's); every
    build must see the same random numbers (trial noise), and the update that follows must see
    them too, so the caller restores `state` after the probe.
    """

    def __init__(self, context: Callable[[nn.Module, Any], Any], generator: torch.Generator):
        self.context, self.generator, self.state = context, generator, generator.get_state()

    def __call__(self, model: nn.Module, batch: Any) -> Any:
        self.generator.set_state(self.state)
        return self.context(model, batch)
