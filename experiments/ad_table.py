"""Table and curves of the Artificial Dopamine runs (docs/artificial_dopamine.md).

    python experiments/ad_table.py runs/ad/cartpole [--threshold 195] [--figure docs/img/ad_cartpole.png]

Reads every ``<agent>_s<seed>/metrics.csv`` written by ``bioplaus run`` under the folder
(agents: ``ad``, ``bp`` for the BP twin, ``dqn`` for the MLP-DQN) and prints, per agent and seed,
the final and best mean evaluation return (ε = 0.05), the first environment step at which the
evaluation return reached ``threshold``, the final returns of the lower layers' policies (the
mean Q of layers ``0..i``; the full net is ``final``) and the training minutes;
then mean ± sd over seeds. With ``--figure`` it plots the evaluation curves.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

AGENTS = {"ad": "AD (distributed_td)", "bp": "BP twin (bp)", "dqn": "MLP-DQN (bp)"}


def load(folder: Path) -> pd.DataFrame:
    """Evaluation rows of every run under ``folder``, with ``agent``, ``seed`` and ``env_steps`` columns."""
    frames = []
    for run in sorted(folder.glob("*_s*/metrics.csv")):
        match = re.fullmatch(r"(\w+)_s(\d+)", run.parent.name)
        if match is None:
            continue
        steps_per_epoch = json.loads((run.parent / "config.json").read_text())["task_options"]["steps_per_epoch"]
        table = pd.read_csv(run)
        table = table[table.split == "eval"].assign(agent=match[1], seed=int(match[2]))
        frames.append(table.assign(env_steps=table.epoch * steps_per_epoch))
    if not frames:
        raise SystemExit(f"no <agent>_s<seed>/metrics.csv under {folder}")
    return pd.concat(frames, ignore_index=True)


def seconds(folder: Path, agent: str, seed: int) -> float:
    """Training seconds of one run (runs.csv)."""
    return float(pd.read_csv(folder / f"{agent}_s{seed}" / "runs.csv").seconds.iloc[0])


def summary(folder: Path, evals: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per (agent, seed): final, best, first step ≥ threshold, final per-layer returns, minutes."""
    rows = []
    for (agent, seed), run in evals.groupby(["agent", "seed"]):
        curve = run[run.metric == "return"].sort_values("env_steps")
        last = run[run.env_steps == run.env_steps.max()]
        reached = curve[curve.value >= threshold]
        layers = last[last.metric.str.startswith("return/")].sort_values("metric")
        rows.append(
            {
                "agent": AGENTS.get(agent, agent),
                "seed": seed,
                "steps": int(curve.env_steps.max()),
                "final": curve.value.iloc[-1],
                "best": curve.value.max(),
                f"first ≥ {threshold:g}": str(int(reached.env_steps.iloc[0])) if len(reached) else "never",
                "final, layers 0..L-2": " / ".join(f"{v:.0f}" for v in layers.value),
                "minutes": seconds(folder, agent, seed) / 60,
            }
        )
    return pd.DataFrame(rows)


def plot(evals: pd.DataFrame, path: Path, title: str) -> None:
    """Mean evaluation return over seeds (lines) and each seed (thin lines), per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    curves = evals[evals.metric == "return"]
    for agent, rows in curves.groupby("agent"):
        by_step = rows.pivot_table(index="env_steps", columns="seed", values="value")
        (line,) = ax.plot(
            by_step.index, by_step.mean(axis=1), label=f"{AGENTS.get(agent, agent)}, {by_step.shape[1]} seeds"
        )
        ax.plot(by_step.index, by_step.values, color=line.get_color(), alpha=0.25, linewidth=0.8)
    ax.set(xlabel="environment steps", ylabel="eval return (ε = 0.05)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' ``to_markdown`` needs the optional ``tabulate``)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--threshold", type=float, default=195.0)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    evals = load(args.folder)
    table = summary(args.folder, evals, args.threshold)
    print(markdown(table))
    stats = table.groupby("agent")[["final", "best"]].agg(["mean", "std", "count"])
    stats.columns = [f"{metric} {stat}" for metric, stat in stats.columns]
    print()
    print(markdown(stats.reset_index()))
    if args.figure is not None:
        config = json.loads(next(args.folder.glob("*_s*/config.json")).read_text())
        plot(evals, args.figure, f"{config['task_options']['env']}, reduced budget")


if __name__ == "__main__":
    main()
