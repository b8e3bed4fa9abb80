"""Forward time of one spiking layer (256 → 256 units, batch 100, T = 5): BDETT vs static vs snntorch ``Leaky``.

    OMP_NUM_THREADS=1 python experiments/bench_spiking.py [--rounds 30]

Every row runs a fresh trajectory of ``T`` steps through ``Linear(256, 256)`` and a neuron, from
reset state, on the same Bernoulli(0.3) input spikes: bioplaus's `SpikingLinear` with the
static, BDETT, ALIF and homeostatic thresholds, and snntorch's stock ``Leaky`` (``beta=0.75``,
zero reset, the same rectangular surrogate; a plain LIF without the synaptic current). Rows
are timed in interleaved rounds (``experiments/benchlib.py``), once without autograd
(inference) and once with a graph (training forward). Goal: BDETT ≤ 1.3× static.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import snntorch as snn
import torch
from benchlib import interleaved_medians
from torch import nn

from bioplaus import enable_huge_pages
from bioplaus.nets.spiking import SpikingLinear, rectangular

UNITS, BATCH, T = 256, 100, 5


def bioplaus_row(threshold: str, x: torch.Tensor) -> Callable[[], None]:
    torch.manual_seed(0)
    layer = SpikingLinear(UNITS, UNITS, threshold)

    def run() -> None:
        layer.reset()
        for _ in range(T):
            layer(x)

    return run


def snntorch_row(x: torch.Tensor) -> Callable[[], None]:
    torch.manual_seed(0)
    linear = nn.Linear(UNITS, UNITS)
    neuron = snn.Leaky(beta=0.75, threshold=0.5, spike_grad=rectangular(0.5), reset_mechanism="zero")

    def run() -> None:
        mem = neuron.reset_mem()
        for _ in range(T):
            _, mem = neuron(linear(x), mem)

    return run


def main() -> None:
    enable_huge_pages()  # the recorded figures were measured with huge pages (docs/benchmarks.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = (torch.rand(BATCH, UNITS, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    rows = {f"bioplaus {name}": bioplaus_row(name, x) for name in ("static", "bdett", "alif", "homeostatic")}
    rows["snntorch Leaky"] = snntorch_row(x)
    print(f"forward of one layer, {UNITS} units, batch {BATCH}, T={T}; median ms per forward (ratio to static)")
    print(f"{'row':<22}{'inference':>18}{'with autograd':>18}")
    results = {}
    for mode, context in (("inference", torch.no_grad), ("with autograd", torch.enable_grad)):
        with context():
            results[mode] = interleaved_medians(rows, args.rounds, args.per_round)
    for name in rows:
        cells = []
        for mode in results:
            ms, ratio = 1e3 * results[mode][name], results[mode][name] / results[mode]["bioplaus static"]
            cells.append(f"{ms:8.3f} ({ratio:4.2f}x)")
        print(f"{name:<22}{cells[0]:>18}{cells[1]:>18}")


if __name__ == "__main__":
    main()
