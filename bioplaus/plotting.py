"""Matplotlib figures shared by the runner and the notebooks."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DEFAULT_METRICS = ("test/accuracy", "train/loss")
SPLIT_NAMES = {
    "train": "Training",
    "test": "Test",
    "eval": "Evaluation",
    "centre_out": "Centre-out",
    "centre_out_off": "Centre-out, control off",
    "test_off": "Test, control off",
}
METRIC_UNITS = {
    "accuracy": ("accuracy", "accuracy (fraction correct)"),
    "loss": ("loss", "loss (mean per example)"),
    "mse": ("MSE", "mean squared error"),
    "return": ("return", "return (reward per episode)"),
}


def metric_label(name: str) -> tuple[str, str]:
    """A ``split/metric`` name as a panel title and a y-axis label with its unit.

    ``test/accuracy`` → ("Test accuracy", "accuracy (fraction correct)"), ``test_T40/accuracy`` →
    ("Test (T = 40) accuracy", …), ``train/alignment/fc1`` → ("Alignment with the reference, fc1",
    "cosine"); a metric without a known unit keeps its name as the y-label.
    """
    split, _, metric = name.partition("/")
    if metric.startswith("alignment/"):
        return f"Alignment with the reference, {metric.removeprefix('alignment/')}", "cosine"
    length = re.fullmatch(r"test_T(\d+)", split)
    where = f"Test (T = {length[1]})" if length else SPLIT_NAMES.get(split, split.replace("_", " ").capitalize())
    short, unit = METRIC_UNITS.get(metric, (metric.replace("_", " "), metric.replace("_", " ")))
    return f"{where} {short}", unit


def _chance_line(ax: Axes, level: float) -> None:
    ax.axhline(level, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.text(
        0.99, level, f"chance {level:.2g}", transform=ax.get_yaxis_transform(),
        ha="right", va="bottom", fontsize="small", color="grey",
    )  # fmt: skip


def _integer_ticks(ax: Axes, xs: Sequence[int]) -> None:
    """Whole-number x ticks: at each point when there are few (one point: centred), else at most ~8."""
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    if 0 < len(xs) <= 8:
        ax.set_xticks(xs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))


def learning_curves(
    table: pd.DataFrame,
    rules: Sequence[str],
    metrics: Sequence[str] | None = None,
    reference: str = "bp",
    title: str | None = None,
    chance: Mapping[str, float] | None = None,
) -> Figure:
    """One panel per metric: mean ± sd over seeds against epoch (alignment: against update step).

    Panels are titled in words with the unit on the y-axis; a curve with one point is drawn as a
    marker; where a guess has a known score (``chance``), a dotted grey line marks it.

    Args:
        table: tidy metrics with columns rule, seed, epoch, step, split, metric, value.
        rules: rule labels, in legend order.
        metrics: ``split/metric`` names; default: test accuracy, train loss, every alignment layer.
        reference: the rule drawn as a dashed black reference line.
        title: the figure's title (e.g. task, model and rules).
        chance: per metric name without split (``accuracy``), the score of a guess.
    """
    names = table["split"] + "/" + table["metric"]
    present = list(dict.fromkeys(names))
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in present] + [m for m in present if "/alignment/" in m]
    chance = chance or {}
    ncols = min(3, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols) if metrics else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows + (0.4 if title else 0)), squeeze=False)
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    styles = {
        rule: {"color": "black", "linestyle": "--", "label": f"{rule} (reference)"}
        if rule == reference
        else {"color": next(colours), "label": rule}
        for rule in rules
    }
    for ax, metric in zip(axes.flat, metrics, strict=False):
        x = "step" if "/alignment/" in metric else "epoch"
        sub = table[names == metric]
        for rule in rules:
            curve = sub[sub["rule"] == rule].groupby(x)["value"].agg(["mean", "std"])
            if curve.empty:
                continue
            ax.plot(curve.index, curve["mean"], marker="o" if len(curve) == 1 else None, **styles[rule])
            lo, hi = curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0)
            ax.fill_between(curve.index, lo, hi, alpha=0.2, color=styles[rule]["color"], linewidth=0)
        if x == "step":
            ax.set_ylim(-1.05, 1.05)
        level = chance.get(metric.partition("/")[2])
        if level is not None:
            _chance_line(ax, level)
        heading, unit = metric_label(metric)
        ax.set_title(heading)
        ax.set_ylabel(unit)
        ax.set_xlabel("update step" if x == "step" else "epoch")
        _integer_ticks(ax, sorted(sub[x].unique()))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    if metrics:
        handles = [h for h in axes.flat[0].get_legend_handles_labels()[0] if h.get_label() != "chance"]
        axes.flat[0].legend(handles=handles, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
