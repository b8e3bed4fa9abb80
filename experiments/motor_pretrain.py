"""Pre-train the rate RNNs of the feedback-control experiments (docs/feedback_control.md).

    python experiments/motor_pretrain.py --out runs/motor            # n=200, batch 32, 2000 iterations
    python experiments/motor_pretrain.py --out runs/motor --n 100 --iterations 500

Writes ``controller.pt`` (with a learned controller) and ``no_controller.pt`` (mask 0, W_fb
frozen) with ``bioplaus.nets.rate_rnn.save_checkpoint``, and ``pretrain_log.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bioplaus.analysis.feedback_control import feedback_alignment
from bioplaus.nets.rate_rnn import RateRNN, save_checkpoint
from bioplaus.runner.motor import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/motor")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["controller", "no_controller"], default=None)
    args = parser.parse_args()
    out = Path(args.out)
    logs = {}
    for name, controller in (("controller", True), ("no_controller", False)):
        if args.only not in (None, name):
            continue
        torch.manual_seed(args.seed)
        model = RateRNN(args.n, controller=controller)
        start = time.perf_counter()
        log = pretrain(model, args.iterations, args.batch_size, args.lr, args.seed)
        seconds = time.perf_counter() - start
        save_checkpoint(model, out / f"{name}.pt")
        logs[name] = {"seconds": seconds, "log": log, "alignment": feedback_alignment(model)}
        print(name, f"{seconds:.0f} s", json.dumps(log[-1]), json.dumps(logs[name]["alignment"]), flush=True)
    (out / f"pretrain_log{'_' + args.only if args.only else ''}.json").write_text(json.dumps(logs, indent=1))


if __name__ == "__main__":
    main()
