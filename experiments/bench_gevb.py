"""GEVB step time against BP in the same VNN: autograd BP, bioplaus's exact scalar-credit BP, and
autograd BP through the official code's K-fold expanded first layer.

One run: the machine's matmul peak, then interleaved timing of a full training step (forward,
the rule's update, Adam step, nonnegativity projection) for each rule on the same FC-VNN and
batch. Prints ratios against both BPs and the GFLOP/s the GEVB step achieves.

    python experiments/bench_gevb.py                      # 784-1024-512-1, K=10, batch 128
    python experiments/bench_gevb.py --hidden 256 256 --batch 64
    python experiments/bench_gevb.py --model vnn_conv --rounds 3 --steps 2    # the paper's MNIST conv VNN
    python experiments/bench_gevb.py --model vnn_lc --rounds 3 --steps 2
    python experiments/bench_gevb.py --model vnn_conv --rounds 3 --steps 2 --no-huge-pages   # 4 KB pages

The GEVB step's FLOPs are counted by ``torch.utils.flop_counter`` (matrix products and
convolutions as executed); for the FC net the minimum by hand is printed too.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from benchlib import interleaved_medians, matmul_gflops, training_step
from torch.utils.flop_counter import FlopCounterMode

from bioplaus import enable_huge_pages
from bioplaus.core import TaskSpec


def gevb_step_flops(n_in: int, hidden: list[int], k: int, batch: int) -> float:
    """FLOPs of a GEVB step: the forward (first layer K·n₁×n₀, shared layers K× their size) and one
    weight gradient per layer (first K·n₁×n₀, shared n_{ℓ}×n_{ℓ-1}); projections and gates are O(B·K·n)."""
    widths = [*hidden, 1]
    forward = 2 * batch * k * (widths[0] * n_in + sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)))
    grads = 2 * batch * (k * widths[0] * n_in + sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)))
    return float(forward + grads)


def official_layout_bp_step(hidden: list[int], k: int, batch: int):
    """Autograd BP through the official code's layout (for reference only, not part of bioplaus):
    the first layer multiplies a block-diagonal, K-fold expanded input ``(B, K, K·784)`` instead of
    holding ``K × 784`` weights per unit, so it does K× the FLOPs; same Adam step and clamp."""
    torch.manual_seed(0)
    widths = [784 * k, *hidden, 1]
    weights = [torch.randn(b, a).mul_(a**-0.5).requires_grad_() for a, b in zip(widths[:-1], widths[1:], strict=True)]
    biases = [torch.zeros(k, b, requires_grad=True) for b in widths[1:]]
    gates = [torch.randint(0, 2, (k, n)).float() * 2 - 1 for n in hidden]
    opt = torch.optim.Adam([*weights, *biases], lr=3e-4, fused=True)
    x, y = torch.rand(batch, 784) * 2 - 1, torch.randint(0, k, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        expanded = torch.zeros(batch, k, k * 784)
        for c in range(k):
            expanded[:, c, c * 784 : (c + 1) * 784] = x
        h = expanded
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = h @ w.T + b
            if i < len(gates):
                h = h * ((h.detach() * gates[i]).sum(1, keepdim=True) >= 0)
        F.cross_entropy(h[..., 0], y).backward()
        opt.step()
        with torch.no_grad():
            for w in weights[1:]:
                w.clamp_(min=0)

    return step


def counted_flops(step) -> float:
    """FLOPs of one call of ``step`` as counted by ``torch.utils.flop_counter``."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["vnn", "vnn_conv", "vnn_lc"], default="vnn")
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 512], help="FC widths (model vnn)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per rule per round")
    parser.add_argument(
        "--no-huge-pages",
        dest="huge_pages",
        action="store_false",
        help="leave large tensors on 4 KB pages (the recorded figures use huge pages: docs/benchmarks.md)",
    )
    args = parser.parse_args()
    if args.huge_pages:
        enable_huge_pages()

    peak = matmul_gflops()
    labels = {"gevb": "gevb", "scalar_bp": "scalar_bp", "bp": "bp (autograd)"}
    spec = TaskSpec((1, 28, 28), args.k)
    options = {"hidden": args.hidden} if args.model == "vnn" else {}
    steps = {
        label: training_step(args.model, spec, name, "adam", 3e-4, args.batch, **options)
        for name, label in labels.items()
    }
    if args.model == "vnn":
        steps["bp (official layout)"] = official_layout_bp_step(args.hidden, args.k, args.batch)
    flops = counted_flops(steps["gevb"])
    median = interleaved_medians(steps, args.rounds, args.steps, warmup=2)
    peak = max(peak, matmul_gflops())
    shape = f"FC-VNN 784-{'-'.join(map(str, args.hidden))}-1" if args.model == "vnn" else f"{args.model} (MNIST arch)"
    print(
        f"{shape}, K={args.k}, batch {args.batch}, Adam + projection, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, huge pages {'on' if args.huge_pages else 'off'}; "
        f"matmul peak {peak:.1f} GFLOP/s"
    )
    print(f"{'rule':22s} {'ms/step':>9s} {'gevb ÷ rule':>12s}")
    for label, t in median.items():
        print(f"{label:22s} {1e3 * t:9.2f} {median['gevb'] / t:12.3f}")
    rate = flops / median["gevb"] / 1e9
    print(
        f"GEVB step: {flops / 1e9:.2f} GFLOP (counted) in {1e3 * median['gevb']:.1f} ms = {rate:.1f} GFLOP/s "
        f"({100 * rate / peak:.0f} % of the matmul peak)"
    )
    if args.model == "vnn":
        minimum = gevb_step_flops(784, args.hidden, args.k, args.batch)
        print(f"minimum by hand (forward + one weight gradient per layer): {minimum / 1e9:.2f} GFLOP")


if __name__ == "__main__":
    main()
