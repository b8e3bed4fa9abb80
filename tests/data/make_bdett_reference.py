"""Regenerate ``bdett_official_traces.pt``: PopSAN actions computed by the official BDETT code (test T7).

    python tests/data/make_bdett_reference.py /path/to/Zyunduo/dynamic-threshold

Runs ``CC/popsan_drl/popsan_td3/popsan.py`` of github.com/Zyunduo/dynamic-threshold (commit
e10d578) on the CPU (``.cuda()`` made a no-op; the module's global thresholds resized to a small
network): a PopSpikeActor with 3 observation dims, 2 actions, 4 encoder and 5 decoder neurons per
dimension, hidden [16, 16], T = 5, seeded weights. Stores the weights, three sequential batch-1
calls (the official thresholds persist across calls) and one batch-4 call from fresh thresholds
(statistics pooled over the batch), with the actions the official code returns.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

HIDDEN, OUT = 16, 2 * 5


def official_module(repo: Path):
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the official code calls .cuda() everywhere
    spec = importlib.util.spec_from_file_location("popsan_official", repo / "CC/popsan_drl/popsan_td3/popsan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_thresholds(module) -> None:
    for name, width in (("1", HIDDEN), ("2", HIDDEN), ("3", OUT)):
        setattr(module, f"NEURON_VTH_{name}", torch.full((1, width), 0.5))
        setattr(module, f"NEURON_VTH_{name}_temporal", torch.full((1, width), 0.5))


def main(repo: str) -> None:
    module = official_module(Path(repo))
    torch.manual_seed(0)
    actor = module.PopSpikeActor(3, 2, 4, 5, [HIDDEN, HIDDEN], (-3, 3), math.sqrt(0.15), 5, 1.0, "cpu", False)
    with torch.no_grad():  # larger weights than the default init, so that the layers fire
        for layer in [*actor.snn.hidden_layers, actor.snn.out_pop_layer]:
            layer.weight.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    sequence = torch.randn(3, 1, 3, generator=g)
    batch = torch.randn(4, 3, generator=g)
    fresh_thresholds(module)
    with torch.no_grad():
        seq_actions = torch.stack([actor(obs, 1) for obs in sequence])
        fresh_thresholds(module)
        batch_actions = actor(batch, 4)
    torch.save(
        {
            "state_dict": actor.state_dict(),
            "sequence": sequence,
            "sequence_actions": seq_actions,
            "batch": batch,
            "batch_actions": batch_actions,
        },
        Path(__file__).with_name("bdett_official_traces.pt"),
    )
    print(seq_actions.squeeze(1), batch_actions, sep="\n")


if __name__ == "__main__":
    main(sys.argv[1])
