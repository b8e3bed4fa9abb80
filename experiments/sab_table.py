"""Summarise SAB experiment runs (``bioplaus run experiments/sab_*.toml --out DIR``) as one Markdown table.

Per (model, task, rule), over all folders given (seeds may be in separate folders): the final
test metric of each seed and its mean, on the training length and the transfer splits; the seeds
that reached ``--solved`` accuracy (classification) and the first update at which they did; the
training seconds per update.

    python experiments/sab_table.py runs/sab_recall_T50 runs/sab_recall_T50_lstm runs/sab_recall_T50_attn
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def load(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metric rows and run records of all folders, tagged with their model and task (seeds may be split)."""
    tables, runs = [], []
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        tag = {"model": config["model"], "task": config["task"]}
        tables.append(pd.read_csv(folder / "metrics.csv").assign(**tag))
        runs.append(pd.read_csv(folder / "runs.csv").assign(**tag))
    return pd.concat(tables, ignore_index=True), pd.concat(runs, ignore_index=True)


def summarise(table: pd.DataFrame, runs: pd.DataFrame, solved: float) -> list[dict[str, str]]:
    """One row per (model, task, rule): final test metrics per seed and their mean, seeds solved, time."""
    rows = []
    for (model, task, rule), group in table.groupby(["model", "task", "rule"], sort=False):
        metric = "accuracy" if "accuracy" in set(group["metric"]) else "loss"
        tests = group[(group["metric"] == metric) & group["split"].str.startswith("test")]
        last = tests[tests["epoch"] == tests["epoch"].max()]
        row = {"model": model, "rule": rule, "task": task, "metric": f"test {metric}"}
        for split, values in last.groupby("split"):
            per_seed = values.sort_values("seed")["value"].tolist()
            row[split] = f"{sum(per_seed) / len(per_seed):.3f} ({', '.join(f'{v:.3f}' for v in per_seed)})"
        if metric == "accuracy":
            curve = tests[tests["split"] == "test"]
            firsts = curve[curve["value"] >= solved].groupby("seed")["step"].min()
            at = f" (first at {', '.join(map(str, firsts))})" if len(firsts) else ""
            row["solved"] = f"{len(firsts)}/{curve['seed'].nunique()}{at}"
        mine = runs[(runs["model"] == model) & (runs["task"] == task) & (runs["rule"] == rule)]
        row["s/update"] = f"{mine['seconds_per_step'].mean():.3f}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--solved", type=float, default=0.95, help="accuracy that counts as solved")
    args = parser.parse_args()
    rows = pd.DataFrame(summarise(*load(args.folders), args.solved)).fillna("—")
    print("| " + " | ".join(rows.columns) + " |")
    print("|" + "---|" * len(rows.columns))
    for _, row in rows.iterrows():
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
