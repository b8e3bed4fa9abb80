"""Time per update of Artificial Dopamine vs its BP twin (same network), MinAtar Breakout observations.

    python experiments/bench_ad.py [--threads 2] [--batch 128] [--context 2] [--hidden 128 96 96] [--heads 8]

One update = replay the context of ``s_t`` (online) and of ``s'`` (online and target), per-layer
double-DQN targets, the forward pass at ``s_t``, the rule's gradients (``distributed_td``:
detached cells and per-cell clipping; ``bp``: one backward of the summed loss) and an Adam step,
on one fixed batch sampled from a replay buffer of random Breakout transitions. The two are timed
in interleaved rounds (``benchlib.interleaved_medians``). Goal: AD ≤ 100 ms per update on 2
cores and AD / BP ≤ 1.0 (AD's backward stops at each cell's input).
"""

from __future__ import annotations

import argparse
import copy

import torch
from benchlib import interleaved_medians, matmul_gflops

from bioplaus import enable_huge_pages, nets, rules
from bioplaus.core import Context, TaskSpec
from bioplaus.runner import RunConfig, build_optimizer
from bioplaus.tasks.rl import ReplayBuffer
from bioplaus.tasks.rl.dqn import td_losses
from bioplaus.tasks.rl.envs import make_env


def breakout_buffer(steps: int, seed: int = 0) -> tuple[ReplayBuffer, object]:
    """A replay buffer of ``steps`` random-policy MinAtar Breakout transitions, and the env's spec."""
    env = make_env("MinAtar/Breakout-v1")
    buffer = ReplayBuffer(steps, env.observation_space.shape, obs_dtype=torch.bool)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return buffer, env


def update_step(rule_name: str, batch, spec, hidden: list[int], heads: int):
    """A closure running one full update of a fresh AD network trained by ``rule_name``."""
    torch.manual_seed(0)
    model = nets.get("ad", spec, hidden=hidden, heads=heads)
    rule = rules.get(rule_name)
    rule.attach(model)
    target = copy.deepcopy(model).requires_grad_(False)
    optimizer = build_optimizer(rule.param_groups(model), RunConfig(optimizer="adam", lr=2.5e-4))

    def step() -> None:
        losses = td_losses(model, target, batch, gamma=0.99)
        optimizer.zero_grad(set_to_none=True)
        rule.update(model, Context(loss=losses.sum(), signals={"layer_losses": losses}))
        optimizer.step()

    return step


def main() -> None:
    enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 96, 96])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    buffer, env = breakout_buffer(5_000)
    spec = TaskSpec(tuple(env.observation_space.shape), int(env.action_space.n))
    batch = buffer.sample_sequences(args.batch, args.context, torch.Generator().manual_seed(0))
    steps = {name: update_step(name, batch, spec, args.hidden, args.heads) for name in ("distributed_td", "bp")}
    seconds = interleaved_medians(steps, rounds=args.rounds, per_round=args.per_round)
    ad, bp = seconds["distributed_td"] * 1e3, seconds["bp"] * 1e3

    print(
        f"AD update, MinAtar Breakout obs {spec.input_shape}, {spec.n_out} actions, cells {args.hidden}, "
        f"{args.heads} heads, batch {args.batch}, context {args.context}, {args.threads} threads, "
        f"matmul peak {matmul_gflops():.0f} GFLOP/s"
    )
    print(f"{'variant':<26} {'ms/update':>10}")
    print(f"{'AD (distributed_td)':<26} {ad:>10.1f}")
    print(f"{'BP twin (bp)':<26} {bp:>10.1f}")
    print(f"{'ratio AD / BP':<26} {ad / bp:>10.2f}")
    print(f"goal AD <= 100 ms: {'met' if ad <= 100 else 'missed'}; ratio <= 1.0: {'met' if ad <= bp else 'missed'}")


if __name__ == "__main__":
    main()
