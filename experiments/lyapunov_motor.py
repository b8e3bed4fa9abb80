"""Experiment (a): Lyapunov spectra of the feedback-controlled rate RNN, controller on/off, before/after adaptation.

    OMP_NUM_THREADS=1 python experiments/motor_pretrain.py --out runs/motor      # first, if runs/motor is empty
    OMP_NUM_THREADS=1 python experiments/lyapunov_motor.py --nets runs/motor --out runs/lyapunov

Networks: ``controller.pt`` (pre-trained with a learned controller) and ``no_controller.pt`` from
``experiments/motor_pretrain.py``; "after adaptation" is ``controller.pt`` adapted to a 30°
rotation by RFLO+c (control on during learning, lr 3·10⁻⁴, ``--trials`` centre-out trials; the
best condition of docs/feedback_control.md), cached as ``adapted_rflo_c.pt`` in ``--out``.

For each network and controller gain (1: on, the state is ``[x ; e]``; 0: off, the state is
``x``), the 10 leading exponents in three regimes:

- ``hold``: the hold input ``u = [0, 0, 6]`` and ``v* = 0``, held for ``--steps`` steps after a
  500-step transient (8 initial states);
- ``reach``: input-driven along the 8 rotated centre-out trials: finite-time exponents over
  the 125 steps of a trial, from the trial's initial state, without a transient;
- ``target``: after the reach, the end input ``u = [Δx, Δy, 0]`` and ``v* = 0`` held for
  ``--steps`` steps after a 500-step transient (the 8 targets).

Exponents are per step of 10 ms (divide by 0.01 for 1/s). Writes ``motor.json``, a markdown
table and the figure ``docs/img/lyapunov_motor.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bioplaus.analysis.dynamics import RateRNNDynamics  # noqa: E402
from bioplaus.analysis.lyapunov import lyapunov_spectrum  # noqa: E402
from bioplaus.nets.rate_rnn import RateRNN, load_checkpoint, save_checkpoint  # noqa: E402
from bioplaus.runner.motor import adapt  # noqa: E402
from bioplaus.tasks.motor import centre_out, reach_scores  # noqa: E402

K = 10


def adapted(checkpoint: Path, path: Path, trials: int, lr: float) -> RateRNN:
    """The network at ``checkpoint`` adapted to a 30° rotation by RFLO+c (cached at ``path``).

    One run of the registered ``reach-adaptation-grid`` task (``bioplaus.runner.motor.adapt``)
    with one condition, evaluated before and after; its run directory is written next to ``path``.
    """
    if path.is_file():
        return load_checkpoint(path)
    tic = time.perf_counter()
    result = adapt(checkpoint, "rflo", [lr], [1.0], ["RFLO+c"], trials=trials, eval_every=trials, rotation=30.0,
                   out=path.parent / "adapt_rflo_c")  # fmt: skip
    print(f"adaptation: {time.perf_counter() - tic:.0f} s, {result.rows()[0]}", flush=True)
    single = load_checkpoint(checkpoint)
    with torch.no_grad():
        single.W_rec.copy_(result.model.W_rec[0])
    save_checkpoint(single, path)
    return single


def regimes(model: RateRNN, control: float, steps: int) -> dict[str, torch.Tensor]:
    """The spectra (mean over the 8 trajectories) and their spread in the three regimes."""
    dynamics = RateRNNDynamics(model, control)
    trials = centre_out().rotated(30.0)
    driven = dynamics.inputs(trials.inputs, trials.v_ref)
    hold, target = driven[:, :1].clone(), driven[:, -1:].clone()
    hold[..., 3:], target[..., 3:] = 0.0, 0.0  # v* = 0: stay
    out = {}
    generator = torch.Generator().manual_seed(0)
    start = dynamics.initial_state(8, generator)
    for name, inputs, transient in (
        ("hold", hold.expand(-1, steps + 500, -1), 500),
        ("reach", driven, 0),
        ("target", target.expand(-1, steps + 500, -1), 500),
    ):
        result = lyapunov_spectrum(dynamics, K, inputs=inputs, state=start, transient=transient, generator=generator)
        out[name] = result.exponents
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="runs/motor")
    parser.add_argument("--out", default="runs/lyapunov")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--figure", default="docs/img/lyapunov_motor.png")
    args = parser.parse_args()
    nets_dir, out = Path(args.nets), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    controller = load_checkpoint(nets_dir / "controller.pt")
    nets = {
        "pre-trained, controller": controller,
        "after RFLO+c adaptation (30°)": adapted(
            nets_dir / "controller.pt", out / "adapted_rflo_c.pt", args.trials, args.lr
        ),
        "pre-trained without controller": load_checkpoint(nets_dir / "no_controller.pt"),
    }
    test = centre_out().rotated(30.0)
    tic = time.perf_counter()
    results: dict[str, dict] = {}
    for name, net in nets.items():
        for control in (1.0, 0.0) if net.fb_mask.any() else (0.0,):
            label = f"{name}, control {'on' if control else 'off'}"
            spectra = regimes(net, control, args.steps)
            mse = float(reach_scores(net, test, control, torch.Generator().manual_seed(0))["mse"].mean())
            results[label] = {"mse_30deg": mse} | {
                regime: {"spectrum": s.mean(0).tolist(), "mle_sd": float(s[:, 0].std())}
                for regime, s in spectra.items()
            }
            print(label, json.dumps({r: [round(v, 4) for v in results[label][r]["spectrum"][:3]] for r in spectra}))
    seconds = time.perf_counter() - tic
    (out / "motor.json").write_text(json.dumps({"args": vars(args), "seconds": seconds, "results": results}, indent=1))
    print(f"\nanalysis {seconds:.0f} s\n")
    print("| network, controller | 30° MSE | MLE hold | λ₂ hold | MLE reach (finite-time) | MLE target | λ₁₀ target |")
    print("|---|---|---|---|---|---|---|")
    for label, res in results.items():
        h, r, t = res["hold"], res["reach"], res["target"]
        print(
            f"| {label} | {res['mse_30deg']:.4f} | {h['spectrum'][0]:+.4f} ± {h['mle_sd']:.4f} | "
            f"{h['spectrum'][1]:+.4f} | "
            f"{r['spectrum'][0]:+.4f} ± {r['mle_sd']:.4f} | {t['spectrum'][0]:+.4f} ± {t['mle_sd']:.4f} | "
            f"{t['spectrum'][-1]:+.4f} |"
        )
    figure(results, Path(args.figure))


def figure(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for ax, regime in zip(axes, ("hold", "reach", "target"), strict=True):
        for i, (label, res) in enumerate(results.items()):
            style = "-" if "control on" in label else "--"
            ax.plot(range(1, K + 1), res[regime]["spectrum"], style, marker="o", ms=3, color=f"C{i // 2}", label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="index i", title=regime)
    axes[0].set_ylabel("λ_i per 10 ms step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
