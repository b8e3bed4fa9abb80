"""Time per training step of BP, FA and DFA on an MLP, against the machine's matmul peak.

One run measures everything: the matmul throughput of this machine (the peak), then the
training step (forward, the rule's update, optimizer step) of each rule on the same MLP and
batch, interleaved in rounds so that drift in machine speed hits every rule alike. Prints the
ratio of each rule to BP and the fraction of the matmul peak a BP step reaches.

    python experiments/bench_supervised.py                       # 784-1000-1000-10, batch 128
    python experiments/bench_supervised.py --hidden 256 256 --batch 64 --optimizer adam
"""

from __future__ import annotations

import argparse

import torch
from benchlib import interleaved_medians, matmul_gflops, training_step

from bioplaus.core import TaskSpec


def step_flops(widths: list[int], batch: int) -> float:
    """FLOPs of one BP step: forward, weight gradients, and input gradients of all but the first layer."""
    macs = [a * b for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return 2.0 * batch * (2 * sum(macs) + sum(macs[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--outputs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per rule per round")
    parser.add_argument("--rules", nargs="+", default=["bp", "fa", "dfa"])
    args = parser.parse_args()

    widths = [args.inputs, *args.hidden, args.outputs]
    peak = matmul_gflops()
    spec = TaskSpec((widths[0],), widths[-1])
    steps = {
        name: training_step("mlp", spec, name, args.optimizer, 1e-4, args.batch, hidden=widths[1:-1])
        for name in args.rules
    }
    median = interleaved_medians(steps, args.rounds, args.steps)
    peak_after = matmul_gflops()

    flops = step_flops(widths, args.batch)
    ref = median.get("bp")
    print(
        f"MLP {'-'.join(map(str, widths))}, batch {args.batch}, optimizer {args.optimizer}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"matmul peak (2048³ float32): {peak:.1f} GFLOP/s before, {peak_after:.1f} after; "
        f"one BP step = {flops / 1e9:.3f} GFLOP"
    )
    print(f"{'rule':6s} {'ms/step':>9s} {'× bp':>6s} {'GFLOP/s*':>9s} {'% of peak*':>10s}")
    for name, t in median.items():
        ratio = f"{t / ref:6.2f}" if ref else "     —"
        rate = flops / t / 1e9
        print(f"{name:6s} {1e3 * t:9.3f} {ratio} {rate:9.1f} {100 * rate / max(peak, peak_after):9.1f}%")
    print("* BP-equivalent FLOPs divided by the step time (DFA and FA do not all do the same work).")


if __name__ == "__main__":
    main()
