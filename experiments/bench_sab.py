"""Time and graph memory per training iteration of SAB, streaming SAB and the LSTM baselines.

One iteration is what the runner does per update on delayed recall of delay T: draw a batch,
run the model, let the rule write the gradients, clip, step Adam. Times are medians of
interleaved rounds (every method once per round, so load drift hits all alike); memory is the
peak of the bytes autograd keeps saved for backward (``SavedTensorMeter``, parameters
excluded) plus, for the attention models, the bytes of the memory's buffers (slots, key
exponentials, slot gradients; ``memory_bytes``), which the backward reads but autograd does not
save; both are also printed apart. Ratios are against LSTM + full BPTT measured in the same run: for time, the median of
the ratios within each round.

    OMP_NUM_THREADS=1 python experiments/bench_sab.py                       # T = 100, 300, 1000, 2000
    OMP_NUM_THREADS=1 python experiments/bench_sab.py --lengths 100 --rounds 10 --cpu-time
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bioplaus import enable_huge_pages, nets, rules, tasks
from bioplaus.analysis.graph_memory import SavedTensorMeter
from bioplaus.core import install_projections
from bioplaus.runner import train_epoch

# label, model, model options, rule, rule options, longest T it runs at (dense attention is O(T²))
METHODS: list[tuple[str, str, dict, str, dict, int]] = [
    ("LSTM, BPTT", "lstm", {}, "bptt", {}, 10**9),
    ("LSTM, TBPTT(5)", "lstm", {}, "tbptt", {"k_trunc": 5}, 10**9),
    ("SAB k_att=2, TBPTT(5)", "sab_lstm", {"k_att": 2}, "tbptt", {"k_trunc": 5}, 10**9),
    ("SAB k_att=20, TBPTT(5)", "sab_lstm", {"k_att": 20}, "tbptt", {"k_trunc": 5}, 10**9),
    ("SAB k_att=20, BPTT (one backward)", "sab_lstm", {"k_att": 20}, "bptt", {}, 10**9),
    ("SAB k_att=20, streaming TBPTT(5)", "sab_lstm", {"k_att": 20}, "tbptt_stream", {"k_trunc": 5}, 10**9),
    ("dense attention k_att=2, BPTT", "attn_lstm", {"k_att": 2}, "bptt", {}, 300),
]


def iteration(
    T: int, batch: int, hidden: int, model_name: str, model_options: dict, rule_name: str, rule_options: dict
) -> tuple[Callable[[], None], torch.nn.Module]:
    """A closure running one training iteration of a fresh model, as the runner would."""
    task = tasks.get("delayed-recall", T=T, batch_size=batch, steps_per_epoch=1, n_test=1, transfer=[])
    torch.manual_seed(0)
    model = nets.get(model_name, task.spec, hidden=hidden, **model_options)
    rule = rules.get(rule_name, **rule_options)
    rule.attach(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    install_projections(model, optimizer)
    generator = torch.Generator().manual_seed(0)
    return lambda: train_epoch(task, model, rule, optimizer, generator=generator), model


def bench(
    T: int, batch: int, hidden: int, rounds: int, clock: Callable[[], float] = time.perf_counter
) -> list[tuple[str, float, float, float, float]]:
    """(label, seconds per iteration, ratio to the first method, peak saved MiB, memory buffer MiB) of every
    method that runs at ``T``, timed by ``clock``. The ratio is the median over rounds of the ratio within each
    round, so that a slow spell of the machine, which stretches every method of a round alike, cancels out."""
    runs = {
        label: iteration(T, batch, hidden, model, mopts, rule, ropts)
        for label, model, mopts, rule, ropts, longest in METHODS
        if T <= longest
    }
    peaks, buffers = {}, {}
    for label, (step, model) in runs.items():
        with SavedTensorMeter(exclude=model.parameters()) as meter:
            step()
        peaks[label] = meter.peak / 2**20
        buffers[label] = getattr(model, "memory_bytes", 0) / 2**20  # still allocated after the iteration
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, (step, _) in runs.items():
            start = clock()
            step()
            times[label].append(clock() - start)
    reference = times[next(iter(runs))]
    return [
        (
            label,
            statistics.median(times[label]),
            statistics.median(t / r for t, r in zip(times[label], reference, strict=True)),
            peaks[label],
            buffers[label],
        )
        for label in runs
    ]


def main() -> None:
    enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000, 2000])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds at T ≤ 300 (fewer above)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by this thread's CPU time, not wall time (steadier on a machine shared with other jobs; "
        "meaningful with one torch thread)",
    )
    args = parser.parse_args()
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(
        f"delayed recall, batch {args.batch}, H {args.hidden}, k_top 5, Adam; torch threads {torch.get_num_threads()}; "
        f"{'thread CPU' if args.cpu_time else 'wall'} time"
    )
    print(
        f"{'T':>5}  {'method':<36} {'s/iter':>8} {'× BPTT':>7} {'saved MiB':>10} {'memory MiB':>11} {'peak MiB':>9} "
        f"{'× BPTT':>7}"
    )
    for T in args.lengths:
        rows = bench(T, args.batch, args.hidden, args.rounds if T <= 300 else max(1, args.rounds // 3), clock)
        ref_mem = rows[0][3] + rows[0][4]
        for label, seconds, ratio, saved, memory in rows:
            total = saved + memory
            print(
                f"{T:>5}  {label:<36} {seconds:>8.3f} {ratio:>7.2f} {saved:>10.1f} {memory:>11.1f} {total:>9.1f} "
                f"{total / ref_mem:>7.2f}"
            )
        print(flush=True)


if __name__ == "__main__":
    main()
