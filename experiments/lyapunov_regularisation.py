"""Experiment (c): MLE-regularised vs unregularised BPTT training of an LSTM, under small state perturbations.

    OMP_NUM_THREADS=1 python experiments/lyapunov_regularisation.py --out runs/lyapunov    # docs/lyapunov.md
    python experiments/lyapunov_regularisation.py --task delayed-recall --T 20 --weights 0 0.05 --seeds 0 1 2

Each (mle_weight, seed) trains a fresh ``lstm`` (hidden ``--hidden``) with the rule ``bptt`` and
Adam on the task, the task option ``mle_weight`` adding ``mle_weight × finite-time MLE`` of the
batch's trajectories to the loss (bioplaus.analysis.mle_regularizer). The trained net is then
measured on the task's 256 test sequences:

- ``mle``: finite-time MLE along the test sequences (input-driven, from the zero state, 1 tangent);
- ``loss``: test loss, unperturbed;
- for each ``ε`` in ``--epsilons``: the state ``[h ; c]`` is pushed by ``ε q`` (``q`` a random unit
  vector per sequence) at the middle step ``T/2``; ``growth`` is the median over sequences of
  ``‖s'_T − s_T‖ / ε`` at the last step (the trajectory divergence), ``loss_perturbed`` the test loss
  of the perturbed run.

Writes ``regularisation.json`` to ``--out``, a markdown table (mean ± sd over seeds) and the figure
``docs/img/lyapunov_regularisation.png``. Runs already in ``regularisation.json`` with the same
settings are reused, so weights or seeds can be added to an earlier run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bioplaus  # noqa: E402
from bioplaus.analysis.dynamics import LSTMDynamics  # noqa: E402
from bioplaus.analysis.lyapunov import finite_time_mle, trajectory  # noqa: E402
from bioplaus.runner import train_epoch
from bioplaus.tasks.sequence import SequenceTask  # noqa: E402


def train(task: SequenceTask, hidden: int, steps: int, lr: float, seed: int) -> torch.nn.Module:
    """A fresh LSTM trained with ``bptt`` on ``task`` for ``steps`` updates."""
    torch.manual_seed(seed)
    model = bioplaus.nets.get("lstm", task.spec, hidden=hidden)
    rule = bioplaus.rules.get("bptt")
    rule.attach(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    task.steps_per_epoch = steps
    train_epoch(task, model, rule, optimizer, generator=torch.Generator().manual_seed(seed))
    return model


@torch.no_grad()
def perturbed_run(dynamics: LSTMDynamics, x: torch.Tensor, at: int, push: torch.Tensor) -> torch.Tensor:
    """States ``(B, T, d)`` of a run whose state is moved by ``push`` ``(B, d)`` after step ``at``."""
    first = trajectory(dynamics, dynamics.initial_state(x.shape[0]).to(x), x[:, :at])
    rest = trajectory(dynamics, first[:, -1] + push, x[:, at:])
    return torch.cat([first, rest], 1)


def measure(task: SequenceTask, model: torch.nn.Module, epsilons: list[float], seed: int) -> dict[str, float]:
    x, y = task.test_sets["test"]
    dynamics = LSTMDynamics(model)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        mle = finite_time_mle(dynamics, x, state=dynamics.initial_state(x.shape[0]).to(x), generator=g)
    at = x.shape[1] // 2
    nominal = perturbed_run(dynamics, x, at, torch.zeros(x.shape[0], dynamics.dim))
    out = {"mle": float(mle.mean()), "loss": task.sequence_loss(dynamics.outputs(nominal), y).item()}
    direction = torch.randn(x.shape[0], dynamics.dim, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    for eps in epsilons:
        states = perturbed_run(dynamics, x, at, eps * direction)
        growth = (states[:, -1] - nominal[:, -1]).norm(dim=1) / eps
        out[f"growth@{eps:g}"] = float(growth.median())
        out[f"loss@{eps:g}"] = task.sequence_loss(dynamics.outputs(states), y).item()
    return out


SETTINGS = ("task", "T", "hidden", "steps", "lr", "epsilons")


def previous_rows(path: Path, args: argparse.Namespace) -> list[dict]:
    """Rows of an earlier run with the same settings (other weights or seeds are reused, not rerun)."""
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    same = all(saved["args"][key] == getattr(args, key) for key in SETTINGS)
    return saved["rows"] if same else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="adding")
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    parser.add_argument("--out", default="runs/lyapunov")
    parser.add_argument("--figure", default="docs/img/lyapunov_regularisation.png")
    args = parser.parse_args()
    out = Path(args.out)
    rows = previous_rows(out / "regularisation.json", args)
    for weight in args.weights:
        task = bioplaus.tasks.get(args.task, T=args.T, mle_weight=weight, transfer=[])
        for seed in args.seeds:
            if any(r["mle_weight"] == weight and r["seed"] == seed for r in rows):
                continue
            tic = time.perf_counter()
            model = train(task, args.hidden, args.steps, args.lr, seed)
            row = {"mle_weight": weight, "seed": seed, "train_seconds": time.perf_counter() - tic}
            row |= measure(task, model, args.epsilons, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    rows = [r for r in rows if r["mle_weight"] in args.weights and r["seed"] in args.seeds]
    rows.sort(key=lambda r: (r["mle_weight"], r["seed"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "regularisation.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    metrics = ["mle", "loss"] + [f"{m}@{e:g}" for e in args.epsilons for m in ("growth", "loss")]
    print("\n| mle_weight | " + " | ".join(metrics) + " | train s |")
    print("|---|" + "---|" * (len(metrics) + 1))
    for weight in args.weights:
        mine = [r for r in rows if r["mle_weight"] == weight]
        cells = [f"{np.mean([r[m] for r in mine]):.4g} ± {np.std([r[m] for r in mine]):.2g}" for m in metrics]
        print(f"| {weight:g} | " + " | ".join(cells) + f" | {np.mean([r['train_seconds'] for r in mine]):.0f} |")
    figure(rows, args, Path(args.figure))


def figure(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    """MLE, test loss (unperturbed and at the largest ε) and divergence against ``mle_weight``, one dot per seed."""
    eps = max(args.epsilons)
    x = np.array([r["mle_weight"] for r in rows])
    panels = [
        ("finite-time MLE per step", "linear", [("mle", "C0", None)]),
        ("test loss", "log", [("loss", "C0", "unperturbed"), (f"loss@{eps:g}", "C3", f"ε = {eps:g} at T/2")]),
        (f"‖s'_T − s_T‖ / ε at ε = {eps:g}", "log", [(f"growth@{eps:g}", "C0", None)]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (ylabel, yscale, series) in zip(axes, panels, strict=True):
        for key, color, label in series:
            y = np.array([r[key] for r in rows])
            y = np.maximum(y, 1e-8) if yscale == "log" else y  # a collapsed net forgets a push entirely (0)
            ax.scatter(x, y, color=color, s=14, label=label)
            means = [np.mean([v for w, v in zip(x, y, strict=True) if w == weight]) for weight in args.weights]
            ax.plot(args.weights, means, color=color, lw=1)
        ax.set(yscale=yscale, xlabel="mle_weight", ylabel=ylabel)
        linthresh = min(w for w in args.weights if w > 0)
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(-0.3 * linthresh, 1.5 * max(args.weights))
        if any(label for _, _, label in series):
            ax.legend(fontsize=8)
    axes[0].set_title(f"{args.task} T={args.T}, LSTM {args.hidden}, bptt, {len(args.seeds)} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
