"""Adaptation throughput of online RFLO at n=200, T=125: bioplaus batched over conditions vs a batch-1 loop.

    OMP_NUM_THREADS=2 python experiments/bench_motor.py [--checkpoint runs/motor/controller.pt]

Every row runs RFLO+c adaptation trials (one centre-out reach each, the rule and an SGD step at
every time step, only ``W_rec`` plastic). bioplaus rows run ``C`` conditions (each its own
``W_rec`` and learning rate) in one batched pass, so a pass is ``C`` trials. The reference row
is the official code's structure (``modules/model_def.py``: batch 1, a Python loop over time,
the rule inside the loop, ``W.data += lr·Δ``), written here in plain torch; it is timed in the
same run. Goal: ≥ 50 trials/s on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from bioplaus import enable_huge_pages, rules
from bioplaus.nets.rate_rnn import RateRNN, load_checkpoint
from bioplaus.runner.training import train_step
from bioplaus.tasks.motor import MotorTask, TrialBatch, centre_out
from bioplaus.tasks.motor_training import ConditionSGD


def bioplaus_trials_per_second(model: RateRNN, conditions: int, passes: int) -> float:
    """Trials per second of vectorised RFLO+c adaptation with ``conditions`` conditions."""
    net = RateRNN(**model.config)
    net.load_state_dict(model.state_dict())
    net.split_conditions(conditions)
    rule = rules.get("rflo")
    rule.attach(net)
    task = MotorTask("centre-out", 1, 1, rotation=30.0, control=1.0, weight_penalty=0.0, rate_penalty=0.0)
    optimizer = ConditionSGD([net.W_rec], torch.full((conditions,), 1e-5))
    generator = torch.Generator().manual_seed(0)
    train_step(task, net, rule, optimizer, TrialBatch(task.sample(generator), generator))  # warm-up
    start = time.perf_counter()
    for _ in range(passes):
        train_step(task, net, rule, optimizer, TrialBatch(task.sample(generator), generator))
    return conditions * passes / (time.perf_counter() - start)


@torch.no_grad()
def reference_trials_per_second(model: RateRNN, trials: int, lr: float = 1e-5) -> float:
    """The official code's structure: one trial at a time, a Python loop over steps, the rule in the loop."""
    W_in, W_fb, b = model.W_in.detach(), model.feedback_weights.detach(), model.b.detach()
    W_out, b_out, alpha, dt = model.W_out.detach(), model.b_out.detach(), model.alpha, model.dt
    W_rec = model.W_rec.detach().clone()
    test = centre_out().rotated(30.0)
    start = time.perf_counter()
    for trial in range(trials):
        k = trial % 8
        u, v_ref = test.inputs[k], test.v_ref[k]
        x = torch.rand(model.n) * 0.2 - 0.1
        r, e = torch.relu(x), torch.zeros(2)
        P = torch.zeros(model.n, model.n)
        for t in range(u.shape[0]):
            r_prev = r
            x = (1 - alpha) * x + alpha * (W_in @ u[t] + W_rec @ r + W_fb @ e + b)
            r = torch.relu(x)
            v = W_out @ r + b_out
            e = e + dt * (v_ref[t] - v)
            P = (1 - alpha) * P + alpha * torch.outer((x > 0).float(), r_prev)
            W_rec += lr * (W_fb @ e).unsqueeze(1) * P
    return trials / (time.perf_counter() - start)


def main() -> None:
    enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a pre-trained rate_rnn (default: a fresh n=200 net)")
    parser.add_argument("--conditions", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--reference-trials", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint) if args.checkpoint else RateRNN(200)
    print(f"n={model.n}, T=125, torch threads={torch.get_num_threads()}")
    rows = [("official-style loop, batch 1", 1, reference_trials_per_second(model, args.reference_trials))]
    for c in args.conditions:
        rows.append((f"bioplaus rflo, {c} conditions per pass", c, bioplaus_trials_per_second(model, c, args.passes)))
    ref = rows[0][2]
    print("\n| implementation | trials per pass | trials/s | × reference |\n|---|---|---|---|")
    for name, c, rate in rows:
        print(f"| {name} | {c} | {rate:.1f} | {rate / ref:.1f} |")


if __name__ == "__main__":
    main()
