"""Time to compute the 10 leading Lyapunov exponents of 200-dimensional recurrent dynamics over 1,000 steps.

    OMP_NUM_THREADS=1 python experiments/bench_lyapunov.py              # docs/lyapunov.md, acceptance figure
    python experiments/bench_lyapunov.py --threads 2 --steps 1000 --k 10

One trajectory each (batch 1), float32, autonomous runs (zero input) after a 100-step warm-up of
the state. Each system is measured with every Jacobian-vector path it has: ``analytic`` (closed
form ``step_with_tangents``), ``jvp`` (``torch.func.jvp`` with the 10 tangents vmapped) and
``dense`` (the full 200×200 Jacobian per step by ``torch.func.jacfwd``), re-orthonormalising
every step and, for the fast paths, every 5 steps. The last column is the largest difference of
the 10 exponents from the dense path's, from the same initial state and tangents.
"""

from __future__ import annotations

import argparse
import time

import torch

from bioplaus import enable_huge_pages
from bioplaus.analysis.dynamics import LSTMDynamics, RandomRNN, RateRNNDynamics
from bioplaus.analysis.lyapunov import lyapunov_spectrum, trajectory
from bioplaus.nets.lstm import LSTMNet
from bioplaus.nets.rate_rnn import RateRNN


def systems() -> dict:
    torch.manual_seed(0)
    rate = RateRNN(198, n_out=2)  # with the controller on, the state is [x ; e]: 198 + 2 = 200
    return {
        "random tanh RNN, n = 200, g = 1.5": RandomRNN(200, 1.5, alpha=1.0, seed=0),
        "rate RNN closed loop (198 units + error)": RateRNNDynamics(rate, 1.0),
        "LSTM, H = 100 (state [h ; c])": LSTMDynamics(LSTMNet(3, 100, 2), init_scale=0.5),
    }


def main() -> None:
    enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), k = {args.k}, {args.steps} steps\n")
    print("| system | path | QR every | seconds | steps/s | max abs Δλ vs dense |")
    print("|---|---|---|---|---|---|")
    for name, dynamics in systems().items():
        start = trajectory(dynamics, dynamics.initial_state(1, torch.Generator().manual_seed(0)), steps=100)[:, -1]
        has_analytic = callable(getattr(dynamics, "step_with_tangents", None))
        runs = [("dense", 1)] + [(m, q) for m in ("analytic", "jvp") for q in (1, 5) if m != "analytic" or has_analytic]
        reference = None
        for method, qr_every in runs:
            tic = time.perf_counter()
            result = lyapunov_spectrum(
                dynamics, args.k, args.steps, state=start, qr_every=qr_every, method=method,
                generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
            seconds = time.perf_counter() - tic
            reference = result.spectrum if reference is None else reference
            delta = float((result.spectrum - reference).abs().max())
            print(f"| {name} | {method} | {qr_every} | {seconds:.2f} | {args.steps / seconds:.0f} | {delta:.1e} |")
            if method == "dense":
                print(f"| (λ₁…λ₃ = {', '.join(f'{v:.4f}' for v in result.spectrum[:3].tolist())}) | | | | | |")


if __name__ == "__main__":
    main()
