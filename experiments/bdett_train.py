"""Train a PopSAN actor by TD3 on a Gymnasium MuJoCo task with a chosen threshold (BDETT, docs/bdett.md).

    OMP_NUM_THREADS=1 python experiments/bdett_train.py --env HalfCheetah-v5 --threshold static \\
        --steps 50000 --seed 0 --out runs/bdett/halfcheetah_static

Writes ``actor.pt`` (:func:`bioplaus.nets.popsan.save_actor`; saved at every evaluation),
``log.jsonl`` (one record per training episode and per evaluation) and ``config.json`` under
``--out``. Hyperparameters are
the PopSAN defaults of :class:`~bioplaus.tasks.rl.td3.TD3Config` except the budget options given
here (the paper trained 1M steps; ours is a reduced CPU budget).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import torch

from bioplaus.nets.popsan import PopSAN, save_actor
from bioplaus.tasks.rl.td3 import TD3Config, train_td3


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
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env, eval_env = gym.make(args.env), gym.make(args.env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = PopSAN(obs_dim, act_dim, float(env.action_space.high[0]), threshold=args.threshold)
    config = TD3Config(total_steps=args.steps, start_steps=args.start_steps, eval_every=args.eval_every)
    (out / "config.json").write_text(json.dumps({**vars(args), "td3": asdict(config)}, indent=1))
    with open(out / "log.jsonl", "w") as log:

        def record(entry: dict[str, float]) -> None:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            if "eval_return" in entry:  # a checkpoint at every evaluation: a cut run keeps its latest actor
                save_actor(actor, out / "actor.pt")
                print(entry, flush=True)

        train_td3(env, actor, config, seed=args.seed, eval_env=eval_env, log=record)


if __name__ == "__main__":
    main()
