"""Speed of a sweep's backends: the same 8 runs serially, on 2 local worker processes, and on Ray with 2 CPUs.

The 8 runs are BP and FA × 2 learning rates × 2 seeds of an MLP on the 8×8 digits. Every run
uses one torch thread in every mode, so all modes compute bit-identical metrics (checked), and
the times compare only how the runs are spread over the cores. Each sweep writes into a fresh
results folder and is timed end to end (worker start-up included); Ray's own start-up
(``ray.init`` and one import of bioplaus in each of its two workers) is timed apart, since on a
cluster it is paid once, not per sweep.

    python experiments/bench_sweep.py                 # prints a markdown table
    python experiments/bench_sweep.py --repeats 3     # median of 3 interleaved rounds

It also measures the machine's parallel ceiling at that moment: how much faster two processes
finish a pure-Python loop than one does (2.0 on an idle machine with 2 free cores; less when
other work holds the cores, and then no sweep can reach a higher speed-up either).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bioplaus
from bioplaus.runner.store import Store
from bioplaus.runner.sweep_backends import pool_context


def config(epochs: int, hidden: int) -> dict:
    """The comparison each run belongs to (rules, grid and seeds are added by the sweep)."""
    return {
        "task": "digits",
        "model": "mlp",
        "model_options": {"hidden": [hidden, hidden]},
        "rules": ["bp", "fa"],
        "epochs": epochs,
        "batch_size": 32,
    }


def timed_sweep(cfg: dict, root: Path, **options) -> float:
    """Seconds of one sweep of the 8 runs into the fresh folder ``root``."""
    start = time.perf_counter()
    runs = bioplaus.sweep(cfg, grid={"lr": [1e-3, 3e-3]}, seeds=2, out=root, threads=1, progress=False, **options)
    seconds = time.perf_counter() - start
    assert len(runs) == 8 and runs["status"].eq("done").all(), runs[["status", "message"]]
    return seconds


def spin(n: int) -> int:
    """A pure-Python busy loop."""
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_ceiling(n: int = 10_000_000) -> float:
    """How much faster 2 pool processes run two busy loops than this process runs them one after the other."""
    with ProcessPoolExecutor(2, mp_context=pool_context()) as pool:
        list(pool.map(spin, [1, 1]))  # the workers are up before timing starts
        start = time.perf_counter()
        spin(n), spin(n)
        serial = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(spin, [n, n]))
        return serial / (time.perf_counter() - start)


def metrics_of(root: Path) -> dict[str, bytes]:
    """Each run's metrics.csv, by run id."""
    store = Store(root)
    return {run.run_id: run.metrics_file.read_bytes() for run in store.run_dirs()}


def _import_bioplaus() -> str:
    import bioplaus

    return bioplaus.__version__


def main() -> None:
    import ray

    bioplaus.enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run (default 40)")
    parser.add_argument("--hidden", type=int, default=256, help="width of the two hidden layers (default 256)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    cfg = config(args.epochs, args.hidden)
    load_before = os.getloadavg()
    ceiling = [parallel_ceiling()]

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # a cluster's workers are long-lived: start both and import bioplaus there once, as the local
    # pool's forkserver does, and count it as start-up
    ray.get([ray.remote(_import_bioplaus).remote() for _ in range(2)])
    ray_startup = time.perf_counter() - start
    modes = {
        "serial (workers=1)": {"workers": 1},
        "local, 2 workers": {"workers": 2},
        "Ray, 2 CPUs": {"backend": "ray"},
    }
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for i, (mode, options) in enumerate(modes.items()):
                times[mode].append(timed_sweep(cfg, Path(tmp) / f"{round_}-{i}", **options))
        identical = all(metrics_of(Path(tmp) / f"0-{i}") == metrics_of(Path(tmp) / "0-0") for i in range(len(modes)))
    ray.shutdown()
    ceiling.append(parallel_ceiling())

    median = {mode: statistics.median(t) for mode, t in times.items()}
    serial, local, remote = median.values()
    print(
        f"8 runs (bp, fa × lr 1e-3, 3e-3 × 2 seeds), MLP 64-{args.hidden}-{args.hidden}-10 on digits, "
        f"{args.epochs} epochs, batch 32, 1 torch thread per run; {os.cpu_count()} CPU cores; "
        f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"median of {args.repeats} round(s)\n"
    )
    print("| mode | seconds | speed-up vs serial |")
    print("|---|---|---|")
    for mode, seconds in median.items():
        print(f"| {mode} | {seconds:.1f} | {serial / seconds:.2f}× |")
    print(
        f"\nparallel ceiling of the machine (2 busy processes vs 1): {ceiling[0]:.2f}× before, {ceiling[1]:.2f}× after"
    )
    print(f"local speed-up: {serial / local:.2f}× (target ≥ 1.7×)")
    print(f"Ray overhead vs local: {100 * (remote / local - 1):+.1f} % (target ≤ 15 %)")
    print(f"Ray start-up (ray.init + bioplaus import in its workers, not in the Ray time): {ray_startup:.1f} s")
    print(f"metrics bit-identical in all modes: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
