"""Read a sweep's results directory: one row per run, the tidy metrics, and the report.

>>> import bioplaus
>>> runs = bioplaus.results.load("runs/ablation")  # doctest: +SKIP
>>> runs[runs["status"] == "done"].groupby(["rule", "lr"])["test/accuracy"].mean()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bioplaus.runner.store import Store
from bioplaus.runner.sweep_report import Report, report


def load(root: str | Path) -> pd.DataFrame:
    """One row per run of the results directory ``root``.

    Columns: ``run_id``, ``status`` (pending, running, done, failed or diverged), ``message``
    (the error of a failed run, the step at which a diverged one blew up), ``rule``, ``seed``,
    the config keys (dotted for tables: ``model_options.hidden``; lists as JSON text), the final
    value of every logged metric (``test/accuracy``, ``train/loss``, …), and ``steps``,
    ``train_seconds``, ``seconds_per_step``, ``wall_seconds``, ``attempts``, ``started``, ``finished``.
    ``frame.attrs["config"]`` and ``frame.attrs["metrics"]`` list the config and metric columns.

    The runs' status files are the source of truth: the index is brought up to date from
    them first, so loading is safe while a sweep writes into ``root`` or after one was killed.
    """
    return Store(root).frame()


def metrics(root: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """The tidy metrics (``run_id, rule, seed, epoch, step, split, metric, value``) of the given runs (default: all)."""
    return Store(root).metrics(run_ids)


__all__ = ["Report", "load", "metrics", "report"]
