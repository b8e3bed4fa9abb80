"""Run checkpoints: everything a run needs to go on exactly where it stopped.

After every epoch a run with a checkpoint path writes one file holding the model's weights, the
rule's state ([`state`][bioplaus.core.rule.Rule.state]: feedback matrices, traces), the optimizer's
state, the random states (torch's global generator and the run's own), the task's per-run state
([`state_dict`][bioplaus.tasks.base.Task.state_dict]: an environment, a replay buffer), the rows logged so
far and where the run is (epoch, optimizer steps). Resuming from it and training the remaining
epochs gives the same numbers, bit for bit, as training straight through (tested for ``fa``,
``dfa``, ``rflo`` and ``distributed_td``).

Next to it, a small *model file* (``*.model.pt``, tensors and plain values only, so it loads with
``weights_only=True``) holds the trained weights and what rebuilds the model: the registered
model name and options, the task's spec and, for models that have one, their ``config``.

A checkpoint pickles the task's state (environments are Python objects): load only checkpoints
you wrote yourself.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bioplaus.core import Rule, TaskSpec
from bioplaus.errors import ConfigError

FORMAT = "bioplaus-run-checkpoint/1"
MODEL_FORMAT = "bioplaus-model/1"


@dataclass
class RunState:
    """Where a run is: what [`save_run`][bioplaus.runner.checkpoint.save_run] writes besides the modules.

    Attributes:
        epoch: epochs trained.
        steps: optimizer steps taken.
        rows: tidy metric rows logged so far.
        train_seconds: training time so far (evaluation, probes and warm-up steps excluded).
        warmup_steps: steps left out of ``train_seconds`` (the first step of each process).
    """

    epoch: int = 0
    steps: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    warmup_steps: int = 0


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_path(path: str | Path) -> Path:
    """The model file written beside the checkpoint ``path``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".pt") + ".model.pt")


@dataclass
class RunObjects:
    """The live objects of a run that a checkpoint saves and restores."""

    model: nn.Module
    rule: Rule
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    task: Any


def save_run(path: str | Path, run: RunObjects, state: RunState, config: dict[str, Any]) -> None:
    """Write the checkpoint of a run at ``path`` (atomically) and its model file beside it."""
    model, rule, optimizer, generator, task = run.model, run.rule, run.optimizer, run.generator, run.task
    spec = task.spec
    _atomic_save(
        {
            "format": FORMAT,
            "config": config,
            "model": model.state_dict(),
            "rule": rule.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generator": generator.get_state(),
            "task": task.state_dict(),
            "state": state.__dict__,
        },
        Path(path),
    )
    _atomic_save(
        {
            "format": MODEL_FORMAT,
            "model_name": config.get("model"),
            "model_options": config.get("model_options", {}),
            "model_config": getattr(model, "config", None),
            "spec": {"input_shape": list(spec.input_shape), "n_out": spec.n_out},
            "state_dict": model.state_dict(),
        },
        model_path(path),
    )


def load_run(path: str | Path, run: RunObjects) -> RunState:
    """Restore a run saved by [`save_run`][bioplaus.runner.checkpoint.save_run] into freshly built (and attached)
    objects; returns where it was."""
    saved = read(path)
    run.model.load_state_dict(saved["model"])
    run.rule.load_state_dict(saved["rule"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.task.load_state_dict(saved["task"], run.model)
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    run.generator.set_state(saved["generator"])
    return RunState(**saved["state"])


def _load(path: Path, kind: str, form: str, weights_only: bool, hint: str) -> dict[str, Any]:
    """The saved dict at ``path`` if it is a bioplaus ``kind`` file of format ``form``; else ``ConfigError``."""
    if not path.is_file():
        raise ConfigError(f"no {kind} at {path}: {hint}")
    saved = torch.load(path, map_location="cpu", weights_only=weights_only)
    if not isinstance(saved, dict) or saved.get("format") != form:
        raise ConfigError(f"{path} is not a bioplaus {kind} ({hint})")
    return saved


def read(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint at ``path``; a missing or foreign file raises ``ConfigError``."""
    return _load(Path(path), "run checkpoint", FORMAT, False, "written by compare(..., out=DIR, checkpoint=True)")


def load_model(path: str | Path) -> nn.Module:
    """Rebuild the trained model of a model file (``*.model.pt``, or the checkpoint it sits beside)."""
    from bioplaus import nets

    path = Path(path)
    if path.is_file() and not path.name.endswith(".model.pt") and model_path(path).is_file():
        path = model_path(path)
    saved = _load(path, "model file", MODEL_FORMAT, True, "written by compare(..., out=DIR, checkpoint=True)")
    if saved["model_name"] is None:
        raise ConfigError(
            f"{path} holds a model built by a factory function, not a registered name: rebuild it yourself"
        )
    spec = TaskSpec(tuple(saved["spec"]["input_shape"]), saved["spec"]["n_out"])
    model = nets.get(saved["model_name"], spec, **saved["model_options"])
    model.load_state_dict(saved["state_dict"])
    return model
