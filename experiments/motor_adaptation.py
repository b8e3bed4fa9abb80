"""Adaptation to a visuomotor rotation with local rules, with and without feedback control (docs/feedback_control.md).

    python experiments/motor_pretrain.py --out runs/motor                       # first: the two networks
    python experiments/motor_adaptation.py --nets runs/motor --rotation 30 --out runs/motor
    python experiments/motor_adaptation.py --nets runs/motor --rotation 40 50 60 --rules rflo --out runs/motor

For each rotation, every condition is run at every learning rate of its grid (one run of the
registered ``reach-adaptation-grid`` task through ``bioplaus.compare`` per rule and network:
the lr × control conditions share the trial sequence; ``bioplaus.runner.motor.adapt``) for
``--trials`` trials, and the table reports the final control-off test MSE on the 8 rotated
targets at each condition's best learning rate (lowest final MSE among non-diverged rates;
). Writes ``adapt_<rotation>_<rules>.json``, each run's directory
``adapt_<rotation>_<rule>_<network>/`` (``config.json``, ``metrics.csv``, …) and, for the first
rotation, the figure ``docs/img/feedback_control_adaptation.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bioplaus.nets.rate_rnn import RateRNN, load_checkpoint  # noqa: E402
from bioplaus.runner.motor import adapt  # noqa: E402
from bioplaus.tasks.motor import centre_out  # noqa: E402
from bioplaus.tasks.motor_training import AdaptationResult  # noqa: E402

RFLO_LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
BPTT_LRS = [1e-5, 3e-5, 1e-4, 3e-4]

# (label, rule, rule options, network, controller gain during learning, lr grid)
CONDITIONS = [
    ("RFLO+c", "rflo", {}, "controller", 1.0, RFLO_LRS),
    ("RFLO (same net, control off)", "rflo", {}, "controller", 0.0, RFLO_LRS),
    ("RFLO, B=W_outᵀ (net without controller)", "rflo", {"feedback": "W_out"}, "no_controller", 0.0, RFLO_LRS),
    ("online BPTT+c", "online_bptt", {}, "controller", 1.0, BPTT_LRS),
    ("online BPTT (control off)", "online_bptt", {}, "controller", 0.0, BPTT_LRS),
]


def run_rotation(nets: Path, rotation: float, trials: int, only: list[str], seed: int, out: Path) -> dict:
    """All conditions at one rotation; conditions that share a rule and a network run in one pass."""
    groups: dict[tuple, list] = {}
    for label, rule, options, net, control, lrs in CONDITIONS:
        if rule not in only:
            continue
        groups.setdefault((rule, json.dumps(options), net), []).append((label, control, lrs))
    results = {}
    for (rule, options, net), members in groups.items():
        owners = [label for label, _, lrs in members for _ in lrs]
        labels = [f"{label}, lr={lr:g}" for label, _, lrs in members for lr in lrs]
        controls = [control for _, control, lrs in members for _ in lrs]
        lrs = [lr for _, _, grid in members for lr in grid]
        start = time.perf_counter()
        result = adapt(nets / f"{net}.pt", rule, lrs, controls, labels, trials=trials, rotation=rotation, seed=seed,
                       rule_options=json.loads(options), out=out / f"adapt_{rotation:g}_{rule}_{net}")  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"{rotation}° {rule} {options} on {net}: {seconds:.0f} s for {len(lrs)} conditions", flush=True)
        for label, *_ in members:
            idx = [i for i, owner in enumerate(owners) if owner == label]
            results[label] = _summarise(result, idx) | {"seconds_for_group": seconds}
    return results


def _summarise(result: AdaptationResult, idx: list[int]) -> dict:
    rows = [result.rows()[i] for i in idx]
    finite = [r for r in rows if not r["diverged"] and math.isfinite(r["final_mse"])]
    best = min(finite, key=lambda r: r["final_mse"]) if finite else None
    c = idx[rows.index(best)] if best else None
    return {
        "rows": rows,
        "best": best,
        "curve_trials": result.trials,
        "best_curve": None if c is None else result.test_mse[:, c].tolist(),
        "test_mse": {f"{result.lrs[i]:g}": result.test_mse[:, i].tolist() for i in idx},
        "best_train_curve": None if c is None else result.train_mse[:, c].tolist(),  # mean per evaluation interval
        "_model": result.model,
        "_index": c,
    }


def table(results: dict) -> str:
    lines = [
        "| condition | best lr | initial MSE | final MSE (control off) | min over run | final MSE, control on "
        "| endpoint angle | efficiency | diverged lrs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, res in results.items():
        best = res["best"]
        bad = ", ".join(f"{r['lr']:g}" for r in res["rows"] if r["diverged"]) or "none"
        if best is None:
            lines.append(f"| {label} | all diverged | | | | | | | {bad} |")
            continue
        lines.append(
            f"| {label} | {best['lr']:g} | {best['initial_mse']:.3f} | **{best['final_mse']:.4f}** | "
            f"{best['min_mse']:.4f} | {best['final_mse_on']:.4f} | {best['final_angle']:.1f}° | "
            f"{best['efficiency']:.3f} | {bad} |"
        )
    return "\n".join(lines)


def lr_table(results: dict) -> str:
    lrs = sorted({r["lr"] for res in results.values() for r in res["rows"]})
    lines = ["| condition | " + " | ".join(f"{lr:g}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for label, res in results.items():
        cells = {r["lr"]: "div" if r["diverged"] else f"{r['final_mse']:.4f}" for r in res["rows"]}
        lines.append(f"| {label} | " + " | ".join(cells.get(lr, "") for lr in lrs) + " |")
    return "\n".join(lines)


def figure(results: dict, nets: dict, rotation: float, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for label, res in results.items():
        if res["best_curve"] is not None:
            axes[0].semilogy(res["curve_trials"], res["best_curve"], label=f"{label} (lr {res['best']['lr']:g})")
    axes[0].set(xlabel="trial", ylabel="test MSE, control off", title=f"{rotation:g}° rotation, best lr each")
    axes[0].legend(fontsize=7)
    test = centre_out().rotated(rotation)
    for ax, (title, model, control) in zip(
        axes[1:],
        [
            ("before adaptation (control off / on)", nets["controller"], None),
            ("after RFLO+c (control off)", results["RFLO+c"]["_model"], results["RFLO+c"]["_index"]),
        ],
        strict=True,
    ):
        ax.plot(test.p_ref[..., 0].T, test.p_ref[..., 1].T, color="0.7", lw=3)
        if control is None:
            with torch.no_grad():
                for gain, color in ((0.0, "C3"), (1.0, "C0")):
                    pos = test.positions(test.rollout(model, gain, torch.Generator().manual_seed(0)))
                    ax.plot(pos[..., 0].T, pos[..., 1].T, color=color, lw=1)
        else:
            single = with_recurrent(nets["controller"], model.W_rec.detach()[control])
            with torch.no_grad():
                pos = test.positions(test.rollout(single, 0.0, torch.Generator().manual_seed(0)))
            ax.plot(pos[..., 0].T, pos[..., 1].T, color="C2", lw=1)
        ax.set(title=title, aspect="equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def with_recurrent(model: RateRNN, w_rec: torch.Tensor) -> RateRNN:
    """A copy of ``model`` with the recurrent weights ``w_rec``."""
    single = copy.deepcopy(model)
    with torch.no_grad():
        single.W_rec.copy_(w_rec)
    return single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="runs/motor")
    parser.add_argument("--out", default="runs/motor")
    parser.add_argument("--rotation", type=float, nargs="+", default=[30.0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=["rflo", "online_bptt"], choices=["rflo", "online_bptt"])
    parser.add_argument("--figure", default="docs/img/feedback_control_adaptation.png")
    args = parser.parse_args()
    nets = {name: load_checkpoint(Path(args.nets) / f"{name}.pt") for name in ("controller", "no_controller")}
    out = Path(args.out)
    for i, rotation in enumerate(args.rotation):
        results = run_rotation(Path(args.nets), rotation, args.trials, args.rules, args.seed, out)
        print(f"\n## {rotation:g}°, {args.trials} trials\n\n{table(results)}\n\n{lr_table(results)}\n", flush=True)
        if i == 0 and args.figure and "RFLO+c" in results:
            figure(results, nets, rotation, Path(args.figure))
        clean = {label: {k: v for k, v in res.items() if not k.startswith("_")} for label, res in results.items()}
        tag = f"{rotation:g}_" + "_".join(args.rules)
        (out / f"adapt_{tag}.json").write_text(json.dumps({"trials": args.trials, "results": clean}, indent=1))


if __name__ == "__main__":
    main()
