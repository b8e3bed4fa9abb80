"""Reports of a sweep: mean ± sd per grid cell and rule, learning curves per cell, metric against each grid key.

The grid keys are found from the runs themselves: the config keys whose values differ
between runs. A run to which a key does not apply (BP in a sweep over ``rule_options.fa.scale``)
has no value for it and joins every cell of that key, so each cell holds a full comparison.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from bioplaus.errors import ConfigError
from bioplaus.runner.store import FINISHED, Store, atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_METRICS = ("test/accuracy", "test/loss", "train/loss")


class Report(NamedTuple):
    """What [`report`][bioplaus.runner.sweep_report.report] returns.

    Attributes:
        summary: columns ``<grid keys>…, rule, metric, mean, sd, n``: the final values of the done
            runs of each grid cell and rule (``n`` of them), plus ``seconds_per_step``.
        figures: file stem -> figure: ``curves-<cell>`` (learning curves, one per grid cell) and
            ``vs-<key>`` (the final metrics against each grid key).
    """

    summary: pd.DataFrame
    figures: dict[str, Figure]


def grid_keys(frame: pd.DataFrame) -> list[str]:
    """The config columns whose values differ between runs (rule and seed aside)."""
    return [key for key in frame.attrs["config"] if frame[key].dropna().astype(str).nunique() > 1]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cells(frame: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Distinct combinations of grid-key values, leaving out those that only lack keys of another cell."""
    combos = list(dict.fromkeys(tuple(row) for row in frame[list(keys)].itertuples(index=False, name=None)))
    out = []
    for combo in combos:
        covered = any(
            other != combo and all(_missing(a) or a == b for a, b in zip(combo, other, strict=True)) for other in combos
        )
        if not covered:
            out.append(dict(zip(keys, combo, strict=True)))
    return out


def members(frame: pd.DataFrame, cell: dict[str, Any]) -> pd.DataFrame:
    """The runs of a cell: those equal to it on every grid key that applies to them."""
    mask = np.ones(len(frame), dtype=bool)
    for key, value in cell.items():
        mask &= frame[key].isna().to_numpy() | (frame[key] == value).to_numpy()
    return frame[mask]


def cell_label(cell: dict[str, Any]) -> str:
    """``lr=0.01, model_options.hidden=[64]`` (``all runs`` for a sweep without a grid)."""
    return ", ".join(f"{k}={'—' if _missing(v) else v}" for k, v in cell.items()) or "all runs"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=,+-]+", "_", text.replace(", ", ",")).strip("_")[:120]


def _pm(mean: float, sd: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "—"
    return f"{mean:.4f}" if n == 1 or not np.isfinite(sd) else f"{mean:.4f} ± {sd:.4f}"


def _statuses(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    text = f"{counts.get('done', 0)}/{len(runs)} done"
    extra = [f"{counts[s]} {s}" for s in ("diverged", "failed", "running", "pending") if counts.get(s, 0)]
    return ", ".join([text, *extra])


def summarise(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long summary (mean, sd, n per cell, rule and metric) and the status text per cell and rule."""
    metrics = [*frame.attrs["metrics"], "seconds_per_step"]
    rows, status_rows = [], []
    for cell in cells(frame, keys):
        runs = members(frame, cell)
        for rule, group in runs.groupby("rule", sort=False):
            done = group[group["status"] == "done"]
            status_rows.append({**cell, "rule": rule, "runs": _statuses(group)})
            for metric in metrics:
                values = done[metric].dropna().astype(float)
                stats = {"mean": values.mean(), "sd": values.std(), "n": len(values)}
                rows.append({**cell, "rule": rule, "metric": metric, **stats})
    columns = [*keys, "rule", "metric", "mean", "sd", "n"]
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(status_rows, columns=[*keys, "rule", "runs"])


def markdown(summary: pd.DataFrame, statuses: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> str:
    """A markdown table: one row per grid cell and rule, ``mean ± sd`` of ``metrics`` and the run statuses."""
    cells_text = [_pm(m, s, n) for m, s, n in zip(summary["mean"], summary["sd"], summary["n"], strict=True)]
    text = summary.assign(text=cells_text)
    index = [*keys, "rule"]
    wide = statuses.copy()
    for metric in metrics:
        part = text[text["metric"] == metric][[*index, "text"]].rename(columns={"text": metric})
        wide = wide.merge(part, on=index, how="left", sort=False)
    ms = summary[summary["metric"] == "seconds_per_step"][[*index, "mean"]].rename(columns={"mean": "ms/update"})
    wide = wide.merge(ms, on=index, how="left", sort=False)
    wide["ms/update"] = [f"{1e3 * t:.2f}" if np.isfinite(t) else "—" for t in wide["ms/update"]]
    columns = [*index, *metrics, "ms/update", "runs"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in wide[columns].itertuples(index=False, name=None):
        lines.append("| " + " | ".join("—" if _missing(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def metric_vs_key(frame: pd.DataFrame, keys: Sequence[str], key: str, metrics: Sequence[str], reference: str) -> Figure:
    """Final metrics (mean ± sd over the seeds of done runs) against one grid key, a panel per metric.

    One line per rule and combination of the other grid keys; runs to which ``key`` does not
    apply (BP against ``rule_options.fa.scale``) are drawn as horizontal lines.
    """
    from matplotlib.figure import Figure

    done = frame[frame["status"] == "done"]
    others = [k for k in keys if k != key]
    numeric = pd.api.types.is_numeric_dtype(frame[key]) and not pd.api.types.is_bool_dtype(frame[key])
    xs = list(dict.fromkeys(frame[key].dropna()))
    xs = sorted(xs) if numeric else xs
    position = {x: (x if numeric else i) for i, x in enumerate(xs)}
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        dashes = itertools.cycle(["--", "-.", ":", (0, (6, 2, 1, 2))])  # tells flat lines of one rule apart
        for (rule, *rest), group in done.groupby(["rule", *others], sort=False, dropna=False):
            label = ", ".join([rule, *(f"{k}={v}" for k, v in zip(others, rest, strict=True) if not _missing(v))])
            style = {"color": "black", "linestyle": "--"} if rule == reference else {}
            if group[key].isna().all():
                flat = {**style, "linestyle": next(dashes)}
                ax.axhline(group[metric].mean(), label=f"{label} (no {key})", linewidth=1, **flat)
                continue
            stats = group.groupby(key)[metric].agg(["mean", "std"]).reindex([x for x in xs if x in set(group[key])])
            ax.errorbar(
                [position[x] for x in stats.index],
                stats["mean"],
                yerr=stats["std"].fillna(0),
                label=label,
                marker="o",
                capsize=3,
                **style,
            )
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set(xlabel=key, title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def report(root: str | Path, metrics: Sequence[str] | None = None, reference: str = "bp", write: bool = True) -> Report:
    """Summarise a sweep's results directory; with ``write``, save the files into it.

    Writes ``summary.md`` and ``summary.csv`` (mean ± sd per grid cell and rule) and
    ``figures/curves-<cell>.png`` and ``figures/vs-<key>.png``.

    Args:
        root: the results directory of a sweep.
        metrics: ``split/metric`` names for the table and the figures; default: those of
            test accuracy, test loss and train loss that were logged.
        reference: the rule drawn dashed black (and as the reference in the learning curves).
        write: save the files (figures as PNG) into ``root``.
    """
    import matplotlib.pyplot as plt

    from bioplaus.plotting import learning_curves

    frame = Store(root).frame()
    if frame.empty:
        raise ConfigError(f"'{root}' holds no sweep runs; run 'bioplaus sweep CONFIG --out {root}' first")
    logged = frame.attrs["metrics"]
    metrics = [m for m in DEFAULT_METRICS if m in logged] if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in logged]
    if unknown:
        raise ConfigError(f"metric '{unknown[0]}' was not logged; logged metrics: {', '.join(logged) or 'none'}")
    keys = grid_keys(frame)
    summary, statuses = summarise(frame, keys)
    figures: dict[str, Figure] = {}
    table = Store(root).metrics(frame.loc[frame["status"].isin(FINISHED), "run_id"])
    for cell in cells(frame, keys):
        runs = members(frame, cell)
        cell_table = table[table["run_id"].isin(runs["run_id"])]
        fig = learning_curves(cell_table, list(runs["rule"].drop_duplicates()), reference=reference)
        fig.suptitle(cell_label(cell))
        fig.tight_layout()
        plt.close(fig)  # returned, not shown: pyplot keeps no reference to it
        figures[f"curves-{_slug(cell_label(cell))}"] = fig
    if metrics:
        for key in keys:
            figures[f"vs-{_slug(key)}"] = metric_vs_key(frame, keys, key, metrics, reference)
    if write:
        _write(Path(root), summary, markdown(summary, statuses, keys, metrics), figures)
    return Report(summary, figures)


def _write(root: Path, summary: pd.DataFrame, text: str, figures: dict[str, Figure]) -> None:
    atomic_write(root / "summary.csv", summary.to_csv(index=False))
    atomic_write(root / "summary.md", text)
    folder = root / "figures"
    folder.mkdir(exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
