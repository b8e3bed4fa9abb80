"""``sweep``: run a grid of configs × rules × seeds into a resumable results directory.

The grid is expanded and every cell validated before anything runs (see
[`bioplaus.runner.sweep_grid`][bioplaus.runner.sweep_grid]). Each run is then planned in the store (see
[`bioplaus.runner.store`][bioplaus.runner.store]); runs already done are skipped, and the others go to a backend
(see [`bioplaus.runner.sweep_backends`][bioplaus.runner.sweep_backends]), which calls the same run function everywhere.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from bioplaus.errors import ConfigError
from bioplaus.nets._registry import MODELS
from bioplaus.registry import Registry
from bioplaus.rules._registry import RULES
from bioplaus.runner.config import load_toml
from bioplaus.runner.store import FINISHED, Store
from bioplaus.runner.sweep_backends import BACKENDS, import_ray, run_local, run_ray
from bioplaus.runner.sweep_grid import PlannedRun, expand, grid_from_table
from bioplaus.runner.sweep_run import RunTask
from bioplaus.tasks._registry import TASKS

REGISTRIES: dict[str, Registry[Any]] = {"task": TASKS, "model": MODELS, "rule": RULES}


class SweepProgress:
    """The overall progress bar: runs finished out of the sweep's runs, with done / failed / diverged counts."""

    def __init__(self, total: int, finished: Counter[str], enabled: bool) -> None:
        self.counts = Counter(finished)
        self.bar = tqdm(total=total, initial=sum(finished.values()), desc="sweep", unit="run", disable=not enabled)
        self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        self.bar.set_postfix({status: self.counts[status] for status in FINISHED}, refresh=refresh)

    def record(self, status: str) -> None:
        """Count one finished run."""
        self.counts[status] += 1
        self._show(refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _raw_config(config: str | Path | Mapping[str, Any] | None, keys: Mapping[str, Any]) -> dict[str, Any]:
    if config is None:
        raw: dict[str, Any] = {}
    elif isinstance(config, (str, Path)):
        raw = load_toml(str(config))
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise ConfigError(f"config must be a TOML file path or a mapping of config keys, got {type(config).__name__}")
    return raw | dict(keys)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_execution(backend: str, workers: int | None, threads: int | None, tensorboard: bool) -> tuple[int, int]:
    """Validate how the runs execute; return the number of workers and of torch threads per run."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    workers = _check_count((os.cpu_count() or 1) if workers is None else workers, "workers")
    if threads is None:
        import torch

        threads = 1 if backend == "ray" else max(1, torch.get_num_threads() // workers)
    if backend == "ray":
        import_ray()
    if tensorboard:
        _check_tensorboard()
    return workers, _check_count(threads, "threads")


def worker_imports(plan: Iterable[PlannedRun], backend: str) -> tuple[str, ...]:
    """Modules that worker processes must import to know the custom tasks, models and rules of ``plan``.

    Raises:
        ConfigError: when one is defined in an interactive ``__main__`` (a notebook), which
            other processes cannot import.
    """
    named = {
        (kind, name)
        for run in plan
        for kind, name in (("task", run.config["task"]), ("model", run.config["model"]), ("rule", run.rule))
    }
    modules = set()
    for kind, name in sorted(named):
        module = REGISTRIES[kind].entry(name).factory.__module__
        if module.startswith("bioplaus."):
            continue
        if module == "__main__":
            if backend == "local" and getattr(sys.modules["__main__"], "__file__", None):
                continue  # the workers run the main script's top level again, which registers it
            raise ConfigError(
                f"{kind} '{name}' is defined in __main__ (a notebook or an interactive session), "
                "which worker processes cannot import: move it into a module, or use workers=1"
            )
        modules.add(module)
    return tuple(sorted(modules))


def sweep(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    out: str | Path,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: int | Sequence[int] | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    tensorboard: bool = False,
    threads: int | None = None,
    progress: bool = True,
    **keys: Any,
) -> pd.DataFrame:
    """Run every (grid cell, rule, seed) of a grid into ``out``, skipping runs that are already there.

    A run is one resolved config (a grid cell) with one rule and one seed; its id hashes that
    config, so calling ``sweep`` again with the same arguments resumes: done and diverged runs
    are kept, runs that never finished (the process was killed) run again, and failed ones
    run again with ``retry_failed``.

    Args:
        config: a TOML config file (it may hold a ``[grid]`` table) or a mapping of config keys.
        out: the results directory (see [`bioplaus.runner.store`][bioplaus.runner.store]).
        grid: dotted config key -> values, e.g. ``{"lr": [1e-3, 1e-2], "model_options.hidden": [[64], [256]]}``;
            merged over the config's ``grid`` table.
        seeds: a number of seeds (``0 … n-1``) or a list of seeds; default: the config's.
        workers: parallel runs; default: the number of CPU cores. With ``backend="ray"`` the CPUs
            of the local Ray instance it starts (ignored when joining a cluster).
        backend: ``local`` (this process with one worker, else a process pool) or ``ray``.
        address: the Ray cluster to join (``auto``, ``ray://head:10001``); default: a local instance.
        retry_failed: run failed runs again.
        tensorboard: also write each run's metrics as TensorBoard events into its folder.
        threads: torch threads per run; default: this process's threads shared among the workers
            (one per Ray task).
        progress: show the overall progress bar (and each run's bar when they run in this process).
        **keys: config keys set over ``config`` (``task="digits"``, ``rules=["bp", "fa"]``, ``epochs=2``, …).

    Returns:
        The sweep's runs as [`bioplaus.results.load`][bioplaus.results.load] gives them, one row per run, in plan order.

    Raises:
        ConfigError: for a bad grid, an invalid key or value in any cell, an unknown backend, or a
            backend or option whose package is not installed; all before anything runs.
    """
    raw = _raw_config(config, keys)
    full_grid = grid_from_table(raw.pop("grid", {})) | dict(grid or {})
    if seeds is not None:
        raw["seeds"] = seeds if isinstance(seeds, int) else list(seeds)
    plan = expand(raw, full_grid)
    workers, threads = _check_execution(backend, workers, threads, tensorboard)
    imports = () if backend == "local" and workers == 1 else worker_imports(plan, backend)

    store = Store(out)
    statuses = {run.run_id: store.plan(run.run_id, run.config, retry_failed) for run in plan}
    store.sync(statuses)
    todo = [run for run in plan if statuses[run.run_id] == "pending"]
    in_process = backend == "local" and (workers == 1 or len(todo) <= 1)
    root = str(store.root.resolve())
    tasks = [
        RunTask(root, run.run_id, run.config, threads, imports, tensorboard, progress and in_process) for run in todo
    ]
    bar = SweepProgress(len(plan), Counter(s for s in statuses.values() if s != "pending"), progress)

    def on_result(record: dict[str, Any]) -> None:
        store.sync([record["run_id"]])
        bar.record(record["status"])

    try:
        if backend == "ray":
            run_ray(tasks, on_result, address, workers)
        else:
            run_local(tasks, workers, on_result)
    finally:
        bar.close()
    frame = store.frame()
    ordered = frame.set_index("run_id").loc[list(statuses)].reset_index()
    ordered.attrs = frame.attrs
    return ordered


def _check_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tensorboard logging needs the tensorboard package, which is not installed: "
            "pip install 'bioplaus[tensorboard]' (or pip install tensorboard)"
        ) from None
