"""Train a PopSAN actor by TD3 on a Gymnasium MuJoCo task with a chosen threshold (BDETT, docs/bdett.md).

    OMP_NUM_THREADS=1 python experiments/bdett_train.py --env HalfCheetah-v5 --threshold static \\
        --steps 50000 --seed 0 --out runs/bdett/halfcheetah_static

A run of the runner (``bioplaus.compare``: model ``popsan``, rule ``bp``, task ``td3``), one epoch
per ``--eval-every`` environment steps with a deterministic evaluation after each. Writes the
comparison's ``config.json``, ``metrics.csv``, ``runs.csv`` under ``--out``, a run checkpoint after
every epoch (``checkpoints/``: a cut run goes on from its last epoch when the command is run
again, bit for bit, and a larger ``--steps`` extends a finished run exactly) and at the end
``actor.pt`` (`bioplaus.nets.popsan.save_actor`, what the degradation suite loads).
Hyperparameters are the PopSAN defaults of the ``td3`` task except the budget options given here
(the paper trained 1M steps; ours is a reduced CPU budget).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import bioplaus
from bioplaus.nets.popsan import save_actor
from bioplaus.runner.checkpoint import load_model
from bioplaus.tasks.rl.td3 import make_continuous_env

RULE = "bp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--threshold", default="static", choices=["static", "bdett", "alif", "homeostatic"])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--start-steps", type=int, default=3_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.steps % args.eval_every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --eval-every ({args.eval_every}): one epoch each")
    torch.set_num_threads(1)
    out = Path(args.out)
    act_limit = float(make_continuous_env(args.env).action_space.high[0])
    result = bioplaus.compare(
        model="popsan",
        rules=[RULE],
        task="td3",
        seeds=[args.seed],
        epochs=args.steps // args.eval_every,
        batch_size=100,
        task_options={"env": args.env, "steps_per_epoch": args.eval_every, "start_steps": args.start_steps},
        model_options={"threshold": args.threshold, "act_limit": act_limit},
        out=out,
        checkpoint=True,
        resume=True,
    )
    evals = result.table.query("split == 'eval' and metric == 'return'")
    print(evals[["epoch", "value"]].to_string(index=False))
    save_actor(load_model(out / "checkpoints" / f"{RULE}-seed{args.seed}.model.pt"), out / "actor.pt")


if __name__ == "__main__":
    main()
