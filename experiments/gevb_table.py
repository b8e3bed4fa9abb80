"""Collect GEVB-paper-style tables (test error %, mean ± sd over seeds) from run directories.

Each argument is a folder written by ``bioplaus run`` (or ``compare(out=...)``); the row label
is the model and its variant (nonnegative "+" or mixed), the column the rule.

    python experiments/gevb_table.py runs/gevb_fc_vnn runs/gevb_fc_conventional runs/gevb_fc_conventional_plus
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def rows(folder: Path, epoch: int | None) -> pd.DataFrame:
    """Test error per (model variant, rule, seed) at ``epoch`` (default: each run's last epoch)."""
    config = json.loads((folder / "config.json").read_text())
    table = pd.read_csv(folder / "metrics.csv")
    acc = table[(table["split"] == "test") & (table["metric"] == "accuracy")]
    acc = acc[acc["epoch"] == (epoch if epoch is not None else acc["epoch"].max())]
    options = config.get("model_options", {})
    nonnegative = options.get("nonnegative", config["model"].startswith("vnn"))
    rule_options = config.get("rule_options", {})
    label = f"{config['model']}{'+' if nonnegative else ''}"
    out = acc.assign(model=label, error=100 * (1 - acc["value"]))
    out["rule"] = [f"{rule}+" if rule_options.get(rule, {}).get("low") == 0.0 else rule for rule in out["rule"]]
    return out[["model", "rule", "seed", "epoch", "error"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--epoch", type=int, help="report this epoch instead of each run's last")
    args = parser.parse_args()
    data = pd.concat([rows(folder, args.epoch) for folder in args.folders])
    stats = data.groupby(["model", "rule"], sort=False)["error"].agg(["mean", "std", "count"])
    cells = [f"{m:.2f} ± {s:.2f} (n={n})" for m, s, n in zip(stats["mean"], stats["std"], stats["count"], strict=True)]
    table = pd.Series(cells, index=stats.index).unstack("rule").fillna("—")
    epochs = sorted(data["epoch"].unique())
    print(f"test error (%), mean ± sd over seeds, epoch {', '.join(map(str, epochs))}\n")
    print("| model | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for model, row in table.iterrows():
        print(f"| {model} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
