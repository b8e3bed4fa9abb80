"""``compare``: train every (rule, seed) under the same budget and tabulate them against BP."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bioplaus import nets, rules, tasks
from bioplaus.core import Rule, TaskSpec
from bioplaus.errors import ConfigError, DivergedError
from bioplaus.runner.checkpoint import RunObjects, RunState, load_run, save_run
from bioplaus.runner.config import RunConfig, check_rule_options
from bioplaus.runner.preflight import check_plan
from bioplaus.runner.result import Comparison, environment
from bioplaus.runner.training import AlignmentSchedule, train_epoch
from bioplaus.tasks import Task

ModelFactory = Callable[[TaskSpec], nn.Module]
RuleFactory = Callable[[], Rule]


def build_optimizer(param_groups: list[dict[str, Any]], cfg: RunConfig) -> torch.optim.Optimizer:
    """The configured ``torch.optim`` optimizer over the rule's parameter groups.

    Uses PyTorch's fused implementation where this torch version has one for the parameters'
    device (several times faster than the per-tensor loop on a CPU; same update rule), unless
    ``cfg.fused`` is off.
    """
    lr, wd = cfg.lr, cfg.weight_decay
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    kind, kwargs = {
        "sgd": (torch.optim.SGD, {"momentum": cfg.momentum}),
        "adamw": (torch.optim.AdamW, {}),
        "adam": (torch.optim.Adam, {}),
    }[cfg.optimizer]
    if cfg.fused:
        try:
            return kind(param_groups, lr=lr, weight_decay=wd, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # no fused kernel for this torch version, device or dtype
            pass
    return kind(param_groups, lr=lr, weight_decay=wd, **kwargs)


@dataclass
class RunOutcome:
    """One (rule, seed) run: its metric rows, how it ended and how long its updates took.

    Attributes:
        rows: tidy metric rows.
        status: ``done`` or ``diverged``.
        message: why a run diverged (empty otherwise).
        steps: optimizer steps taken.
        seconds: training time of the timed steps: every step but the warm-up ones, evaluation
            and alignment probes excluded.
        warmup_steps: steps left out of ``seconds``: the first step of each process that trained
            the run (one, plus one per resume), which absorbs one-time costs (kernel selection,
            lazy initialisation, caches).
    """

    rows: list[dict[str, Any]]
    status: str
    message: str
    steps: int
    seconds: float
    warmup_steps: int = 0

    @property
    def seconds_per_step(self) -> float:
        r"""Time per timed update, $t / (n_\text{steps} - n_\text{warm-up})$ (NaN when no step was timed)."""
        timed = self.steps - self.warmup_steps
        return self.seconds / timed if timed > 0 else math.nan


@dataclass
class _RunLog:
    """Where a run is (epoch, optimizer steps) and the tidy rows it has logged so far."""

    label: str
    seed: int
    epoch: int = 0
    steps: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, split: str, metrics: Mapping[str, float]) -> None:
        self.rows.extend(
            {
                "rule": self.label,
                "seed": self.seed,
                "epoch": self.epoch,
                "step": self.steps,
                "split": split,
                "metric": name,
                "value": value,
            }
            for name, value in metrics.items()
        )

    def count_step(self, *_: Any) -> None:
        self.steps += 1


@dataclass
class _WarmUpClock:
    """When this process's first optimizer step ended, and the probe time spent by then.

    The time from the start of the epoch to the end of that step is the warm-up, left out of the
    training time.
    """

    probe_seconds: Callable[[], float]
    first_end: float | None = None
    probes_by_then: float = 0.0

    def mark(self, *_: Any) -> None:
        if self.first_end is None:
            self.first_end, self.probes_by_then = time.perf_counter(), self.probe_seconds()


def train_run(
    task: Task,
    make_model: ModelFactory,
    make_rule: RuleFactory,
    label: str,
    seed: int,
    cfg: RunConfig,
    on_epoch: Callable[[dict[str, dict[str, float]]], None] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> RunOutcome:
    """Train one fresh model with one rule and seed; metric rows are tidy dicts.

    The seed fixes the initial weights (the same for every rule), the rule's random state
    (feedback matrices) and the batch order. A non-finite loss ends the run as ``diverged``.
    Training time excludes evaluation, alignment probes and the warm-up: the time up to the end
    of the first optimizer step this process takes (also after a resume), which
    `RunOutcome.warmup_steps` counts.

    Args:
        task: the task.
        make_model: builds the model from the task's spec.
        make_rule: builds the rule.
        label: the rule's label in the table.
        seed: the run's seed.
        cfg: the run's settings (optimizer, epochs, alignment, device).
        on_epoch: called with the evaluation after every epoch.
        checkpoint: write the run's checkpoint here after every epoch ([`checkpoint`][bioplaus.runner.checkpoint]).
        resume: go on from ``checkpoint`` if it exists (a finished run is not trained again).
    """
    torch.manual_seed(seed)
    model = task.prepare(make_model(task.spec)).to(cfg.device)
    rule = make_rule()
    rule.attach(model)
    rule.to(cfg.device)
    task.check(model, rule)
    groups = rule.param_groups(model)
    optimizer = task.optimizer(groups) or build_optimizer(groups, cfg)
    rule.check_optimizer(optimizer)
    generator = torch.Generator().manual_seed(seed)
    log = _RunLog(label, seed)
    objects = RunObjects(model, rule, optimizer, generator, task)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_run(checkpoint, objects)
        log.epoch, log.steps, log.rows = state.epoch, state.steps, state.rows
        train_seconds, warmup_steps = state.train_seconds, state.warmup_steps
    else:
        train_seconds, warmup_steps = 0.0, 0
    optimizer.register_step_post_hook(log.count_step)
    schedule = AlignmentSchedule(
        cfg.alignment_every,
        lambda cosines: log.add("train", cosines),
        lambda: log.steps,
        reference=rules.get(rule.reference) if rule.online and rule.reference else None,
    )
    clock = _WarmUpClock(lambda: schedule.seconds)
    optimizer.register_step_post_hook(clock.mark)
    warmed = False

    def evaluate() -> dict[str, dict[str, float]]:
        results = task.evaluate(model)
        for split, metrics in results.items():
            bad = [m for m, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise DivergedError(f"{split} {bad[0]} became {metrics[bad[0]]} after epoch {log.epoch}")
            log.add(split, metrics)
        return results

    def save() -> None:
        if checkpoint is not None:
            state = RunState(log.epoch, log.steps, log.rows, train_seconds - schedule.seconds, warmup_steps)
            save_run(checkpoint, objects, state, cfg.to_dict() | {"rules": [label], "seeds": [seed]})

    status, message = "done", ""
    try:
        if log.epoch == 0:
            evaluate()
            save()
        while log.epoch < cfg.epochs:
            log.epoch += 1
            start, probes_before = time.perf_counter(), schedule.seconds
            try:
                train_metrics = train_epoch(
                    task, model, rule, optimizer, generator=generator, alignment_schedule=schedule
                )
            finally:
                if not warmed and clock.first_end is not None:  # the warm-up step was in this epoch
                    warmed, warmup_steps = True, warmup_steps + 1
                    # time after the warm-up step, plus the probes before it (all probes are subtracted below)
                    start = clock.first_end - (clock.probes_by_then - probes_before)
                train_seconds += time.perf_counter() - start
            log.add("train", train_metrics)
            results = evaluate()
            save()
            if on_epoch is not None:
                on_epoch(results)
    except DivergedError as err:
        warnings.warn(f"run {label} (seed {seed}) diverged: {err}", RuntimeWarning, stacklevel=2)
        status, message = "diverged", str(err)
    return RunOutcome(log.rows, status, message, log.steps, train_seconds - schedule.seconds, warmup_steps)


def _rule_factories(
    entries: Sequence[str | Rule] | Mapping[str, str | Rule], rule_options: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, RuleFactory]]:
    items = list(entries.items()) if isinstance(entries, Mapping) else [(None, e) for e in entries]
    out: list[tuple[str, RuleFactory]] = []
    for label, entry in items:
        if isinstance(entry, str):
            options = dict(rule_options.get(entry, {}))
            rules.get(entry, **options)  # validate now, not after other runs finished
            factory: RuleFactory = lambda entry=entry, options=options: rules.get(entry, **options)  # noqa: E731
            name = entry
        elif isinstance(entry, Rule):
            factory = lambda entry=entry: copy.deepcopy(entry)  # noqa: E731
            name = entry.name
        else:
            raise ConfigError(f"rules entries must be rule names or Rule instances, got {entry!r}")
        out.append((label or name, factory))
    labels = [label for label, _ in out]
    clashes = sorted({label for label in labels if labels.count(label) > 1})
    if clashes:
        raise ConfigError(
            f"two rules share the label {clashes[0]!r}; pass a dict to label them, "
            "e.g. rules={'fa': ..., 'fa-small': ...}"
        )
    return out


def compare(
    model: str | ModelFactory = "mlp",
    rules: Sequence[str | Rule] | Mapping[str, str | Rule] = ("bp", "fa", "dfa"),
    task: str | Task = "digits",
    seeds: int | Sequence[int] = 1,
    epochs: int = 5,
    *,
    batch_size: int = 64,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    fused: bool = True,
    alignment_every: int = 0,
    reference: str = "bp",
    device: str = "cpu",
    task_options: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
    rule_options: Mapping[str, Mapping[str, Any]] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    checkpoint: bool = False,
    resume: bool = False,
) -> Comparison:
    """Train a fresh model per (rule, seed) under one budget and compare the rules with BP.

    Every run of a seed starts from the same initial weights and sees the same batches; all
    rules share the optimizer, learning rate and number of epochs.

    Args:
        model: registered model name, or a factory ``spec -> nn.Module``.
        rules: rule names and/or [`Rule`][bioplaus.core.rule.Rule] instances (copied per run), or a
            dict ``label -> rule`` to tell apart variants of one rule.
        task: registered task name, or a [`Task`][bioplaus.tasks.base.Task].
        seeds: a number of seeds (``0 … n-1``) or a list of seeds.
        epochs: training epochs per run.
        batch_size: examples per update (for tasks given by name).
        optimizer: ``adam``, ``adamw``, ``sgd`` or ``rmsprop``.
        lr: learning rate.
        momentum: momentum of SGD/RMSprop.
        weight_decay: L2 weight decay.
        fused: PyTorch's fused optimizer kernel where there is one; ``False``: the per-tensor
            default, which rounds differently in the last bit.
        alignment_every: log the per-layer cosine between each rule's update and the BP gradient
            every this many updates (0: off).
        reference: the rule the others are held against in reports and figures.
        device: torch device.
        task_options: options of the named task (``bioplaus tasks``).
        model_options: options of the named model (``bioplaus models``).
        rule_options: per rule name, options of that rule.
        out: if given, a folder to write ``config.json``, ``metrics.csv``, ``summary.csv``,
            ``runs.csv`` and ``figure.png`` into.
        progress: show a tqdm progress bar.
        checkpoint: after every epoch, write each run's checkpoint to
            ``out/checkpoints/<label>-seed<seed>.pt`` and its trained model to ``….model.pt``
            ([`bioplaus.runner.checkpoint`][bioplaus.runner.checkpoint]; needs ``out``).
        resume: go on from the checkpoints in ``out/checkpoints`` where they exist: a finished run
            is not trained again, an interrupted one continues from its last epoch, bit for bit.

    Returns:
        A [`Comparison`][bioplaus.runner.result.Comparison] with ``.table``, ``.summary``, ``.runs``, ``.plot()``.
    """
    raw: dict[str, Any] = {
        "seeds": seeds if isinstance(seeds, int) else list(seeds),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "fused": fused,
        "alignment_every": alignment_every,
        "reference": reference,
        "device": device,
    }
    if isinstance(model, str):
        raw |= {"model": model, "model_options": dict(model_options or {})}
    elif model_options:
        raise ConfigError("model_options apply to a model given by name; pass them to your factory instead")
    if isinstance(task, str):
        raw |= {"task": task, "task_options": dict(task_options or {})}
    elif task_options:
        raise ConfigError("task_options apply to a task given by name; configure your Task object instead")
    cfg = RunConfig.from_dict(raw)
    if (checkpoint or resume) and out is None:
        raise ConfigError("checkpoint and resume keep files in the comparison's folder: pass out=DIR")
    entries = list(rules.values()) if isinstance(rules, Mapping) else list(rules)
    cfg.rule_options = check_rule_options(rule_options or {}, [r for r in entries if isinstance(r, str)])
    plan = _rule_factories(rules, cfg.rule_options)
    cfg.rules = [label for label, _ in plan]

    if isinstance(task, str):
        task_obj = tasks.get(cfg.task, batch_size=cfg.batch_size, device=cfg.device, **cfg.task_options)
    else:
        task_obj = task
    make_model: ModelFactory
    if isinstance(model, str):
        make_model = lambda spec: nets.get(cfg.model, spec, **cfg.model_options)  # noqa: E731
    elif isinstance(model, nn.Module):
        raise ConfigError(
            "pass a model factory (spec -> nn.Module) or a model name, not a model instance: "
            "compare builds a fresh model per (rule, seed)"
        )
    else:
        make_model = model

    check_plan(
        task_obj,
        make_model,
        plan,
        cfg.model if isinstance(model, str) else None,
        make_optimizer=lambda groups: build_optimizer(groups, cfg),
    )
    task_obj.check_budget(cfg.epochs)
    config = cfg.to_dict() | {
        "task": cfg.task if isinstance(task, str) else repr(task_obj),
        "model": cfg.model if isinstance(model, str) else getattr(model, "__qualname__", repr(model)),
        "rule_hparams": {label: repr(factory()) for label, factory in plan},
        "headline_metrics": list(task_obj.headline_metrics()),
        "chance_levels": task_obj.chance_levels(),
        "environment": environment(),
    }
    bar = tqdm(total=len(plan) * len(cfg.seeds) * cfg.epochs, disable=not progress, desc="compare", unit="epoch")
    rows, runs = [], []
    with bar:
        for label, factory in plan:
            for seed in cfg.seeds:
                bar.set_description(f"{label} seed {seed}")
                done_before = bar.n

                def on_epoch(results: dict[str, dict[str, float]]) -> None:
                    bar.set_postfix({m: f"{v:.3g}" for m, v in results.get("test", {}).items()})
                    bar.update(1)

                path = Path(out) / "checkpoints" / f"{_file_label(label)}-seed{seed}.pt" if out is not None else None
                outcome = train_run(
                    task_obj, make_model, factory, label, seed, cfg, on_epoch,
                    checkpoint=path if checkpoint or resume else None, resume=resume,
                )  # fmt: skip
                bar.update(done_before + cfg.epochs - bar.n)  # epochs a diverged run did not train
                rows += outcome.rows
                runs.append(
                    {
                        "rule": label,
                        "seed": seed,
                        "status": outcome.status,
                        "message": outcome.message,
                        "steps": outcome.steps,
                        "seconds": outcome.seconds,
                        "seconds_per_step": outcome.seconds_per_step,
                    }
                )
    result = Comparison.from_records(rows, runs, config)
    if out is not None:
        result.save(out)
    return result


def _file_label(label: str) -> str:
    """A rule label as a file name (characters other than letters, digits, ``-_.=+`` become ``_``)."""
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in label)


def run_config(
    cfg: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    checkpoint: bool = False,
    resume: bool = False,
) -> Comparison:
    """Run the comparison a validated [`RunConfig`][bioplaus.runner.config.RunConfig] describes (what ``bioplaus run``
    does)."""
    return compare(
        model=cfg.model,
        rules=cfg.rules,
        task=cfg.task,
        seeds=cfg.seeds,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        alignment_every=cfg.alignment_every,
        reference=cfg.reference,
        device=cfg.device,
        task_options=cfg.task_options,
        model_options=cfg.model_options,
        rule_options=cfg.rule_options,
        out=out,
        progress=progress,
        checkpoint=checkpoint,
        resume=resume,
    )
