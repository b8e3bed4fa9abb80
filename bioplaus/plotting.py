"""Matplotlib figures shared by the runner and the notebooks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

DEFAULT_METRICS = ("test/accuracy", "train/loss")


def learning_curves(
    table: pd.DataFrame, rules: Sequence[str], metrics: Sequence[str] | None = None, reference: str = "bp"
) -> Figure:
    """One panel per metric: mean ± sd over seeds against epoch (alignment: against update step).

    Args:
        table: tidy metrics with columns rule, seed, epoch, step, split, metric, value.
        rules: rule labels, in legend order.
        metrics: ``split/metric`` names; default: test accuracy, train loss, every alignment layer.
        reference: the rule drawn as a dashed black reference line.
    """
    names = table["split"] + "/" + table["metric"]
    present = list(dict.fromkeys(names))
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in present] + [m for m in present if "/alignment/" in m]
    ncols = min(3, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols) if metrics else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    styles = {
        rule: {"color": "black", "linestyle": "--"} if rule == reference else {"color": next(colours)} for rule in rules
    }
    for ax, metric in zip(axes.flat, metrics, strict=False):
        x = "step" if "/alignment/" in metric else "epoch"
        sub = table[names == metric]
        for rule in rules:
            curve = sub[sub["rule"] == rule].groupby(x)["value"].agg(["mean", "std"])
            if curve.empty:
                continue
            ax.plot(curve.index, curve["mean"], label=rule, **styles[rule])
            lo, hi = curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0)
            ax.fill_between(curve.index, lo, hi, alpha=0.2, color=styles[rule]["color"], linewidth=0)
        if x == "step":
            ax.set_ylim(-1.05, 1.05)
        ax.set_title(metric)
        ax.set_xlabel("update step" if x == "step" else "epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    if metrics:
        axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return fig
