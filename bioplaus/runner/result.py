"""The result of a comparison: tidy table, summary against BP, figure and run directory."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLE_COLUMNS = ["rule", "seed", "epoch", "step", "split", "metric", "value"]
RUN_COLUMNS = ["rule", "seed", "status", "message", "steps", "seconds", "seconds_per_step"]


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import torch

    from bioplaus import __version__

    return {
        "bioplaus": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def _summarise(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds of each metric's final value, for runs that finished."""
    done = runs.loc[runs["status"] == "done", ["rule", "seed"]]
    final = table.merge(done, on=["rule", "seed"])
    final = final.sort_values(["epoch", "step"]).groupby(["rule", "seed", "split", "metric"], sort=False).tail(1)
    final = final.assign(metric=final["split"] + "/" + final["metric"])
    timing = runs.merge(done, on=["rule", "seed"]).assign(
        metric="seconds_per_step", value=lambda d: d["seconds_per_step"]
    )
    values = pd.concat([final[["rule", "metric", "value"]], timing[["rule", "metric", "value"]]])
    summary = (
        values.groupby(["rule", "metric"], sort=False)["value"].agg(mean="mean", sd="std", n="count").reset_index()
    )
    order = {rule: i for i, rule in enumerate(runs["rule"].drop_duplicates())}
    return summary.sort_values(["rule", "metric"], key=lambda c: c.map(order) if c.name == "rule" else c).reset_index(
        drop=True
    )


@dataclass
class Comparison:
    """Rules trained under one budget, side by side.

    Attributes:
        table: tidy metrics, one row per (rule, seed, epoch, step, split, metric) with its value.
        runs: one row per (rule, seed): status (``done`` or ``diverged``), message, update count,
            training seconds and seconds per update.
        config: the resolved configuration and the software environment.
        summary: per rule and metric (``split/metric``, plus ``seconds_per_step``), the mean,
            standard deviation and number of finished runs of the final values.
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    config: dict[str, Any]
    summary: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.summary = _summarise(self.table, self.runs)

    @classmethod
    def from_records(cls, rows: list[dict[str, Any]], runs: list[dict[str, Any]], config: dict[str, Any]) -> Comparison:
        """Build from the runner's metric rows and run records."""
        return cls(pd.DataFrame(rows, columns=TABLE_COLUMNS), pd.DataFrame(runs, columns=RUN_COLUMNS), config)

    @property
    def reference(self) -> str:
        """The rule drawn and reported as the reference (``bp`` unless the config names another)."""
        return self.config.get("reference", "bp")

    @property
    def rules(self) -> list[str]:
        """Rule labels in the order they ran."""
        return list(self.runs["rule"].drop_duplicates())

    def report(self, metrics: list[str] | None = None) -> str:
        """A text table: mean ± sd per rule of the main metrics, time per update and its ratio to the reference.

        The main metrics are the task's headline metrics (`bioplaus.tasks.Task.headline_metrics`),
        then test accuracy and loss and training loss; for a task that logs none
        of them, every held-out metric (all but ``train/…``). With more than six metrics the table
        is printed transposed (one row per metric).
        """
        s = self.summary
        if metrics is None:
            present = list(dict.fromkeys(s["metric"]))
            main = [*self.config.get("headline_metrics", ()), "test/accuracy", "test/loss", "train/loss"]
            metrics = [m for m in dict.fromkeys(main) if m in present]
            metrics = metrics or [m for m in present if not m.startswith("train/") and m != "seconds_per_step"]
        cell = s.assign(text=[_pm(m, sd) for m, sd in zip(s["mean"], s["sd"], strict=True)])
        wide = cell.pivot(index="rule", columns="metric", values="text").reindex(self.rules)
        out = wide.reindex(columns=metrics).fillna("—")
        time_mean = s[s["metric"] == "seconds_per_step"].set_index("rule")["mean"].reindex(self.rules)
        out["ms/update"] = [f"{1e3 * t:.2f}" if np.isfinite(t) else "—" for t in time_mean]
        ref = self.reference
        if ref in time_mean.index and np.isfinite(time_mean[ref]):
            out[f"× {ref}"] = [f"{t / time_mean[ref]:.2f}" if np.isfinite(t) else "—" for t in time_mean]
        status = self.runs.groupby("rule", sort=False)["status"].agg(lambda x: f"{(x == 'done').sum()}/{len(x)} done")
        out["runs"] = status.reindex(self.rules)
        return out.to_string() if len(metrics) <= 6 else out.T.to_string()

    def plot(self, metrics: list[str] | None = None):  # -> matplotlib.figure.Figure
        """Learning curves (mean ± sd over seeds), the reference rule (BP) drawn dashed black.

        Titled with the task, model, rules and seed count; the task's chance levels dotted.

        Args:
            metrics: ``split/metric`` names; default: test accuracy, train loss and every logged
                alignment layer.
        """
        from bioplaus.plotting import learning_curves

        if metrics is None and self.config.get("headline_metrics"):
            present = list(dict.fromkeys(self.table["split"] + "/" + self.table["metric"]))
            headline = [m for m in self.config["headline_metrics"] if m in present]
            extra = [m for m in ("train/loss", *present) if m in present and (m == "train/loss" or "/alignment/" in m)]
            metrics = list(dict.fromkeys(headline + extra)) if headline else None
        seeds = self.runs.groupby("rule")["seed"].nunique().max() if len(self.runs) else 0
        title = (
            f"{self.config.get('task', 'task')} · {self.config.get('model', 'model')} · {', '.join(self.rules)}"
            f" (mean ± sd over {seeds} seed{'s' if seeds != 1 else ''})"
        )
        return learning_curves(self.table, self.rules, metrics, self.reference, title, self.config.get("chance_levels"))

    def save(self, out: str | Path) -> Path:
        """Write ``config.json``, ``metrics.csv``, ``summary.csv``, ``runs.csv`` and ``figure.png`` into ``out``."""
        import matplotlib.pyplot as plt

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=2, default=str) + "\n")
        self.table.to_csv(folder / "metrics.csv", index=False)
        self.summary.to_csv(folder / "summary.csv", index=False)
        self.runs.to_csv(folder / "runs.csv", index=False)
        fig = self.plot()
        fig.savefig(folder / "figure.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return folder

    def __repr__(self) -> str:
        return f"Comparison of {', '.join(self.rules)}\n{self.report()}"

    def _repr_html_(self) -> str:
        return f"<pre>{self.__repr__()}</pre>"


def _pm(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.4f}" if not np.isfinite(sd) else f"{mean:.4f} ± {sd:.4f}"
