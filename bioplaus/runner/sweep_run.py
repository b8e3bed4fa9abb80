"""The function that carries out one run of a sweep, the same in the caller's process, a pool worker or a Ray task.

It trains the run with [`run_config`][bioplaus.runner.compare.run_config] (one rule, one seed) and
writes the run's folder: ``status.json`` says ``running`` first, then ``metrics.csv`` is
written and ``status.json`` is replaced by the final record (done, diverged or failed). A
process killed in between leaves ``running``, which the next sweep runs again.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bioplaus.runner.store import RunDir, Store, atomic_write, flatten, now


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs to carry out one run (picklable; paths are absolute).

    Attributes:
        root: the sweep's results directory.
        run_id: the run's id (its folder under ``root/runs``).
        config: the resolved single-run config.
        threads: torch threads to use while the run trains.
        imports: modules to import first, which register the custom rules, models or tasks the run names.
        tensorboard: also write the run's metrics as TensorBoard events into its folder.
        progress: show the run's own progress bar (only when it runs in the caller's process).
    """

    root: str
    run_id: str
    config: dict[str, Any]
    threads: int
    imports: tuple[str, ...] = field(default=())
    tensorboard: bool = False
    progress: bool = False


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def final_values(table: pd.DataFrame) -> dict[str, float]:
    """The last logged value of each ``split/metric`` of a tidy metrics table."""
    last = table.sort_values(["epoch", "step"], kind="stable").groupby(["split", "metric"], sort=False).tail(1)
    return {f"{s}/{m}": float(v) for s, m, v in zip(last["split"], last["metric"], last["value"], strict=True)}


def execute(task: RunTask) -> dict[str, Any]:
    """Carry out one run and write its folder; return its final status record.

    An exception inside the run marks it ``failed`` with the exception's one-line message (the
    traceback goes into ``status.json``); a non-finite loss marks it ``diverged``. Neither
    propagates, so one bad run never stops a sweep.
    """
    from bioplaus.runner.compare import run_config
    from bioplaus.runner.config import RunConfig
    from bioplaus.runner.result import environment

    run = Store(task.root).run(task.run_id)
    attempts = (run.status() or {}).get("attempts", 0) + 1
    started, clock = now(), time.perf_counter()
    run.clear_outputs()
    header = {"run_id": task.run_id, "attempts": attempts, "started": started, "host": socket.gethostname()}
    run.write_status({**header, "status": "running", "pid": os.getpid()})
    result: dict[str, Any]
    with torch_threads(task.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"run .* diverged", category=RuntimeWarning)
        try:
            for module in task.imports:
                importlib.import_module(module)
            comparison = run_config(RunConfig.from_dict(task.config), progress=task.progress)
            outcome = comparison.runs.iloc[0]
            atomic_write(run.metrics_file, comparison.table.to_csv(index=False))
            result = {
                "status": outcome["status"],
                "message": outcome["message"],
                "steps": int(outcome["steps"]),
                "train_seconds": float(outcome["seconds"]),
                "seconds_per_step": float(outcome["seconds_per_step"]),
                "final": final_values(comparison.table),
            }
            if task.tensorboard:
                _write_tensorboard(run, comparison.table, task.config, result["final"])
        except Exception as err:  # noqa: BLE001 - any error of one run is that run's result
            message = "".join(traceback.format_exception_only(err)).strip()
            result = {"status": "failed", "message": message, "traceback": traceback.format_exc()}
        versions = environment()
    record = {
        **header,
        **result,
        "finished": now(),
        "wall_seconds": time.perf_counter() - clock,
        "environment": versions,
    }
    run.write_status(record)
    return record


def _write_tensorboard(run: RunDir, table: pd.DataFrame, config: Mapping[str, Any], final: dict[str, float]) -> None:
    """Every logged metric as a scalar against the update step, plus the run's config as TensorBoard hparams."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    folder = run.path / "tensorboard"
    shutil.rmtree(folder, ignore_errors=True)
    hparams = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in flatten({**config, "rule": config["rules"][0], "seed": config["seeds"][0]}).items()
        if k not in ("rules", "seeds")
    }
    with SummaryWriter(str(folder)) as writer:
        for row in table.itertuples(index=False):
            writer.add_scalar(f"{row.split}/{row.metric}", row.value, global_step=int(row.step))
        writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in final.items()}, run_name=".")
