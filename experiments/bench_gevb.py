"""GEVB step time against BP in the same VNN: autograd BP and bioplaus's exact scalar-credit BP.

One run: the machine's matmul peak, then interleaved timing of a full training step (forward,
the rule's update, Adam step, nonnegativity projection) for each rule on the same FC-VNN and
batch. Prints ratios against both BPs and the GFLOP/s the GEVB step achieves.

    python experiments/bench_gevb.py                      # 784-1024-512-1, K=10, batch 128
    python experiments/bench_gevb.py --hidden 256 256 --batch 64
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from benchlib import interleaved_medians, matmul_gflops

import bioplaus
from bioplaus.core import Context, TaskSpec, install_projections
from bioplaus.runner import RunConfig, build_optimizer


def gevb_step_flops(n_in: int, hidden: list[int], k: int, batch: int) -> float:
    """FLOPs of a GEVB step: the forward (first layer K·n₁×n₀, shared layers K× their size) and one
    weight gradient per layer (first K·n₁×n₀, shared n_{ℓ}×n_{ℓ-1}); projections and gates are O(B·K·n)."""
    widths = [*hidden, 1]
    forward = 2 * batch * k * (widths[0] * n_in + sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)))
    grads = 2 * batch * (k * widths[0] * n_in + sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)))
    return float(forward + grads)


def make_step(rule_name: str, hidden: list[int], k: int, batch: int):
    torch.manual_seed(0)
    model = bioplaus.nets.get("vnn", TaskSpec((1, 28, 28), k), hidden=hidden)
    rule = bioplaus.rules.get(rule_name)
    rule.attach(model)
    opt = build_optimizer(rule.param_groups(model), RunConfig(optimizer="adam", lr=3e-4))
    install_projections(model, opt)
    x, y = torch.rand(batch, 1, 28, 28) * 2 - 1, torch.randint(0, k, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per rule per round")
    args = parser.parse_args()

    peak = matmul_gflops()
    labels = {"gevb": "gevb", "scalar_bp": "scalar_bp", "bp": "bp (autograd)"}
    steps = {label: make_step(name, args.hidden, args.k, args.batch) for name, label in labels.items()}
    median = interleaved_medians(steps, args.rounds, args.steps, warmup=2)
    peak = max(peak, matmul_gflops())
    flops = gevb_step_flops(784, args.hidden, args.k, args.batch)
    print(
        f"FC-VNN 784-{'-'.join(map(str, args.hidden))}-1, K={args.k}, batch {args.batch}, Adam + projection, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak {peak:.1f} GFLOP/s"
    )
    print(f"{'rule':15s} {'ms/step':>9s} {'gevb ÷ rule':>12s}")
    for label, t in median.items():
        print(f"{label:15s} {1e3 * t:9.2f} {median['gevb'] / t:12.3f}")
    rate = flops / median["gevb"] / 1e9
    print(
        f"GEVB step: {flops / 1e9:.2f} GFLOP in {1e3 * median['gevb']:.1f} ms = {rate:.1f} GFLOP/s "
        f"({100 * rate / peak:.0f} % of the matmul peak)"
    )


if __name__ == "__main__":
    main()
