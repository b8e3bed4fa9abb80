"""Figures and tables of docs/bdett.md from the runs of bdett_train.py and bdett_degradation.py.

    python experiments/bdett_report.py [--runs runs/bdett] [--img docs/img]

Writes ``bdett_training.png`` (training and evaluation returns of every training run) and one
``bdett_<suite>.png`` per degradation suite found under ``--runs``, and prints the Markdown
tables (training evaluations, degradation summaries, paired per-seed differences).
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


def training_figure(runs: list[Path], path: Path) -> None:
    """One panel per environment: training-episode returns (faint) and evaluations (± sd) per run."""
    envs = {run: json.loads((run / "config.json").read_text())["env"] for run in runs}
    names = list(dict.fromkeys(envs.values()))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.4), squeeze=False)
    for k, run in enumerate(runs):
        ax = axes[0, names.index(envs[run])]
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        episodes = [r for r in records if "return" in r]
        evals = [r for r in records if "eval_return" in r]
        colour = f"C{k}"
        ax.plot([r["step"] for r in episodes], [r["return"] for r in episodes], color=colour, alpha=0.3, lw=1)
        ax.errorbar([r["step"] for r in evals], [r["eval_return"] for r in evals], [r["eval_std"] for r in evals],
                    color=colour, marker="o", capsize=2, label=run.name)  # fmt: skip
        print(f"{run.name}: " + ", ".join(f"{r['step']}: {r['eval_return']:.0f} ± {r['eval_std']:.0f}" for r in evals))
    for ax, name in zip(axes[0], names, strict=True):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (faint: training episodes)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/bdett")
    parser.add_argument("--img", default="docs/img")
    args = parser.parse_args()
    root, img = Path(args.runs), Path(args.img)
    runs = sorted(p.parent for p in root.glob("*/log.jsonl"))
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
