"""Pre-train the rate RNNs of the feedback-control experiments (docs/feedback_control.md).

    python experiments/motor_pretrain.py --out runs/motor            # n=200, batch 32, 2000 iterations
    python experiments/motor_pretrain.py --out runs/motor --n 100 --iterations 500

Each network is one run of the registered ``reaching`` task with rule ``bp`` through
``bioplaus.compare`` (``bioplaus.runner.motor.pretrain``): ``--iterations / --log-every`` epochs of
``--log-every`` Adam steps, evaluated after each. Writes ``controller.pt`` (with a learned
controller) and ``no_controller.pt`` (mask 0, W_fb frozen) with
``bioplaus.nets.rate_rnn.save_checkpoint``, each run's directory ``pretrain_<name>/``
(``config.json``, ``metrics.csv``, …) and ``pretrain_log.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bioplaus.analysis.feedback_control import feedback_alignment
from bioplaus.nets.rate_rnn import save_checkpoint
from bioplaus.runner.motor import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/motor")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--log-every", type=int, default=100)
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
        start = time.perf_counter()
        run = pretrain(
            args.n,
            controller,
            iterations=args.iterations,
            log_every=args.log_every,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            out=out / f"pretrain_{name}",
        )
        seconds = time.perf_counter() - start
        save_checkpoint(run.model, out / f"{name}.pt")
        log = run.log()
        logs[name] = {"seconds": seconds, "log": log, "alignment": feedback_alignment(run.model)}
        print(name, f"{seconds:.0f} s", json.dumps(log[-1]), json.dumps(logs[name]["alignment"]), flush=True)
    (out / f"pretrain_log{'_' + args.only if args.only else ''}.json").write_text(json.dumps(logs, indent=1))


if __name__ == "__main__":
    main()
