"""Figures and tables of docs/bdett.md from the runs of bdett_train.py and bdett_degradation.py.

    python experiments/bdett_report.py [--runs runs/bdett] [--img docs/img]

Writes ``bdett_training.png`` (training and evaluation returns of every training run, from its
``metrics.csv`` and ``config.json``) and one ``bdett_<suite>.png`` per degradation suite found
under ``--runs``, and prints the Markdown tables (training evaluations, degradation summaries,
paired per-seed differences).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bioplaus.analysis.degradation import EpisodeResult  # noqa: E402
from bioplaus.analysis.degradation_suite import (  # noqa: E402
    markdown_differences,
    markdown_table,
    paired_differences,
    plot_summary,
)


def load_episodes(path: Path) -> list[EpisodeResult]:
    """Episodes from an ``episodes.csv`` written by bdett_degradation.py."""
    results = []
    for row in csv.DictReader(path.open()):
        rates = {k.removeprefix("rate/"): float(v) for k, v in row.items() if k.startswith("rate/")}
        results.append(EpisodeResult(row["condition"], row["threshold"], int(row["seed"]), float(row["ret"]),
                                     int(row["length"]), rates))  # fmt: skip
    return results


def _series(rows: list[dict[str, str]], split: str, metric: str) -> dict[int, float]:
    """Epoch → value of one metric of a run's ``metrics.csv`` rows."""
    return {int(r["epoch"]): float(r["value"]) for r in rows if r["split"] == split and r["metric"] == metric}


def training_figure(runs: list[Path], path: Path) -> None:
    """One panel per environment: mean training-episode return per epoch (faint) and evaluations (± sd) per run."""
    configs = {run: json.loads((run / "config.json").read_text())["task_options"] for run in runs}
    names = list(dict.fromkeys(config["env"] for config in configs.values()))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.4), squeeze=False)
    for k, run in enumerate(runs):
        ax = axes[0, names.index(configs[run]["env"])]
        steps = configs[run]["steps_per_epoch"]
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        train = _series(rows, "train", "episode_return")
        mean, sd = _series(rows, "eval", "return"), _series(rows, "eval", "return_std")
        colour = f"C{k}"
        ax.plot([e * steps for e in train], list(train.values()), color=colour, alpha=0.3, lw=1)
        ax.errorbar([e * steps for e in mean], list(mean.values()), [sd[e] for e in mean], color=colour, marker="o",
                    capsize=2, label=run.name)  # fmt: skip
        print(f"{run.name}: " + ", ".join(f"{e * steps}: {mean[e]:.0f} ± {sd[e]:.0f}" for e in mean if e > 0))
    for ax, name in zip(axes[0], names, strict=True):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (faint: training, epoch mean)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/bdett")
    parser.add_argument("--img", default="docs/img")
    args = parser.parse_args()
    root, img = Path(args.runs), Path(args.img)
    runs = sorted(p.parent for p in root.glob("*/metrics.csv"))
    if runs:
        training_figure(runs, img / "bdett_training.png")
    for summary_path in sorted(root.glob("degradation_*/summary.json")):
        summary = json.loads(summary_path.read_text())
        name = summary_path.parent.name
        plot_summary(summary, name, str(img / f"bdett_{name}.png"))
        episodes = load_episodes(summary_path.with_name("episodes.csv"))
        differences = paired_differences(episodes, episodes[0].threshold)
        print(f"\n{name}\n{markdown_table(summary)}\n\n{markdown_differences(differences)}")


if __name__ == "__main__":
    main()
