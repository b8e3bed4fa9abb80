"""Shared pieces of the benchmark scripts: the machine's matmul peak and interleaved step timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` float32 GFLOP/s of an n×n by n×n matrix product on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    return 2 * n**3 / min(timed(lambda: a @ b) for _ in range(repeats)) / 1e9


def interleaved_medians(
    steps: dict[str, Callable[[], None]], rounds: int, per_round: int, warmup: int = 5
) -> dict[str, float]:
    """Median seconds per call of each step, timed in interleaved rounds so drift hits all alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            times[name].append(timed(lambda fn=fn: [fn() for _ in range(per_round)]) / per_round)
    return {name: statistics.median(t) for name, t in times.items()}


def training_step(model_name: str, spec, rule_name: str, optimizer: str, lr: float, batch: int, **model_options):
    """A closure running one full training step (forward, rule update, optimizer step and projections)
    of a fresh registered model on one fixed random batch, built exactly as ``bioplaus.compare`` builds runs."""
    import torch.nn.functional as F

    import bioplaus
    from bioplaus.core import Context, install_projections
    from bioplaus.runner import RunConfig, build_optimizer

    torch.manual_seed(0)
    model = bioplaus.nets.get(model_name, spec, **model_options)
    rule = bioplaus.rules.get(rule_name)
    rule.attach(model)
    opt = build_optimizer(rule.param_groups(model), RunConfig(optimizer=optimizer, lr=lr))
    install_projections(model, opt)
    x = torch.rand(batch, *spec.input_shape) * 2 - 1
    y = torch.randint(0, spec.n_out, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        opt.step()

    return step
