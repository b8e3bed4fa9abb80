"""Degradation suite of a trained PopSAN actor from one TOML config (BDETT, docs/bdett.md).

    OMP_NUM_THREADS=1 python experiments/bdett_degradation.py experiments/bdett/degradation_halfcheetah.toml \\
        [--out runs/bdett/degradation_halfcheetah]

Runs every threshold × condition × episode seed of the config
(`bioplaus.analysis.degradation_suite.SuiteConfig`), writes ``episodes.csv`` (one row per
episode with per-layer firing rates), ``summary.json`` and ``table.md`` (mean ± sd return and
mean firing rates per layer; paired per-seed differences to the first threshold) and
``returns.png`` (bars) under ``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from bioplaus.analysis.degradation_suite import (
    SuiteConfig,
    as_records,
    markdown_differences,
    markdown_table,
    paired_differences,
    plot_summary,
    run_suite,
    summarize,
)
from bioplaus.runner import load_toml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", default=None, help="output folder (default: runs/bdett/<config name>)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SuiteConfig.from_dict(load_toml(args.config))
    out = Path(args.out or Path("runs/bdett") / Path(args.config).stem)
    out.mkdir(parents=True, exist_ok=True)

    def progress(rows) -> None:
        returns = [round(r.ret) for r in rows]
        print(f"{rows[0].threshold:>12} {rows[0].condition:>15}: {returns}", flush=True)

    results = run_suite(config, progress)
    records = as_records(results)
    with open(out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    summary = summarize(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    differences = paired_differences(results, config.thresholds[0])
    table = markdown_table(summary) + "\n\n" + markdown_differences(differences)
    (out / "table.md").write_text(table + "\n")
    plot_summary(summary, f"{config.env}: {Path(config.checkpoint).parent.name}", str(out / "returns.png"))
    print(table)


if __name__ == "__main__":
    main()
