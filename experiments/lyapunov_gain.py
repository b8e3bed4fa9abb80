"""Experiment (b): the maximal Lyapunov exponent of a random rate network across the gain g (docs/lyapunov.md).

    OMP_NUM_THREADS=1 python experiments/lyapunov_gain.py                 # n = 200, 3 networks per g
    python experiments/lyapunov_gain.py --n 500 --seeds 2 --steps 3000

Networks $x_{t+1} = (1-α) x_t + α W tanh x_t$, ``W_ij ~ N(0, g²/n)``, for the map (α = 1) and
a leaky Euler step (α = 0.2), autonomous, from ``x_0 ~ N(0, 1)``; a ``--transient`` of steps is
discarded. For α = 1 the mean-field theory of Molgedey, Schuchhardt & Schuster (1992) gives the
large-n MLE: ``ln g`` for g < 1 (the fixed point 0 attracts), and for g > 1
``½ ln(g² E[(1 − tanh²(√q z))²])`` with the variance ``q = g² E[tanh²(√q z)]``, ``z ~ N(0, 1)``.
Writes ``gain.json`` in ``--out``, the figure ``docs/img/lyapunov_gain.png`` and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bioplaus.analysis.dynamics import RandomRNN  # noqa: E402
from bioplaus.analysis.lyapunov import kaplan_yorke_dimension, lyapunov_spectrum  # noqa: E402

GAINS = [0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0]
SPECTRUM_GAINS = [0.5, 1.0, 1.5, 2.0, 3.0]


def mean_field_mle(g: float) -> float:
    """Large-n MLE of the map ``x → W tanh x`` (Gauss–Hermite quadrature, 80 nodes)."""
    if g <= 1:
        return math.log(g)
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    q = 1.0
    for _ in range(500):  # q = g² E[tanh²(√q z)], iterated to its non-zero fixed point
        q = g**2 * float((w * np.tanh(math.sqrt(q) * z) ** 2).sum())
    return 0.5 * math.log(g**2 * float((w * (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--transient", type=int, default=1000)
    parser.add_argument("--out", default="runs/lyapunov")
    parser.add_argument("--figure", default="docs/img/lyapunov_gain.png")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    tic = time.perf_counter()
    curves: dict[str, dict[str, list[float]]] = {}
    for alpha in (1.0, 0.2):
        curves[str(alpha)] = {}
        for g in GAINS:
            mles = []
            for seed in range(args.seeds):
                rnn = RandomRNN(args.n, g, alpha, seed=seed)
                result = lyapunov_spectrum(
                    rnn, k=1, steps=args.steps + args.transient, transient=args.transient,
                    generator=torch.Generator().manual_seed(seed),
                )  # fmt: skip
                mles.append(float(result.mle[0]))
            curves[str(alpha)][str(g)] = mles
            print(f"alpha={alpha} g={g}: MLE {np.mean(mles):+.4f} ± {np.std(mles):.4f}", flush=True)
    spectra = {}
    for g in SPECTRUM_GAINS:
        result = lyapunov_spectrum(
            RandomRNN(args.n, g, 1.0, seed=0), k=args.n, steps=1000 + args.transient, transient=args.transient,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        spectra[str(g)] = result.spectrum.tolist()
    seconds = time.perf_counter() - tic
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"args": vars(args), "seconds": seconds, "mle": curves, "spectra_alpha1": spectra}
    (out / "gain.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{seconds:.0f} s\n")
    print("| g | MLE, α = 1 (map) | mean-field theory, α = 1 | MLE, α = 0.2 (leaky) | λᵢ > 0 / D_KY (α = 1, seed 0) |")
    print("|---|---|---|---|---|")
    for g in GAINS:
        a1, a02 = curves["1.0"][str(g)], curves["0.2"][str(g)]
        spectrum = spectra.get(str(g))
        n_pos = (
            ""
            if spectrum is None
            else f"{sum(v > 0 for v in spectrum)} / {kaplan_yorke_dimension(torch.tensor(spectrum)):.1f}"
        )
        print(
            f"| {g:g} | {np.mean(a1):+.3f} ± {np.std(a1):.3f} | {mean_field_mle(g):+.3f} | "
            f"{np.mean(a02):+.4f} ± {np.std(a02):.4f} | {n_pos} |"
        )
    figure(curves, spectra, args.n, Path(args.figure))


def figure(curves: dict, spectra: dict, n: int, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fine = np.linspace(0.4, 3.0, 200)
    axes[0].plot(fine, [mean_field_mle(g) for g in fine], color="0.6", lw=2, label="mean-field theory (α = 1)")
    for alpha, marker in (("1.0", "o"), ("0.2", "s")):
        gains = np.array([float(g) for g in curves[alpha]])
        values = np.array(list(curves[alpha].values()))
        axes[0].errorbar(gains, values.mean(1), values.std(1), marker=marker, ms=4, lw=1, capsize=2,
                         label=f"n = {n}, α = {alpha}")  # fmt: skip
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].axvline(1, color="k", lw=0.5, ls=":")
    axes[0].set(xlabel="gain g", ylabel="MLE per step", title="transition to chaos", ylim=(-0.8, 0.5))
    axes[0].legend(fontsize=8)
    for g, values in spectra.items():
        axes[1].plot(np.arange(1, len(values) + 1), values, lw=1, label=f"g = {g}")
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set(xlabel="index i", ylabel="λ_i per step", title=f"full spectrum, α = 1, n = {n}")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
