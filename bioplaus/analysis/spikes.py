"""Spike statistics of spiking models: per-layer firing rates recorded by forward hooks."""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn

from bioplaus.nets.spiking import spiking_layers


class FiringRates:
    """Context manager that records the firing rate of every spiking layer of a model.

    The rate of a layer is its spike count divided by (neurons × time steps × samples) over
    everything that ran inside the ``with`` block; hooks are removed on exit, so the model is
    left unchanged. ``skip`` leaves out each layer's first ``skip`` calls (time steps) in the
    block, to measure a steady state.

    For example:

    ```python
    with FiringRates(actor) as rates:
        actor(obs)
    rates.rates()  # {"layers.0": 0.21, "layers.1": 0.25, "layers.2": 0.47}
    ```
    """

    def __init__(self, model: nn.Module, skip: int = 0) -> None:
        self.layers = spiking_layers(model)
        self.skip = skip
        self.spikes = {name: 0.0 for name, _ in self.layers}
        self.counts = {name: 0 for name, _ in self.layers}
        self.steps = {name: 0 for name, _ in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], spikes: torch.Tensor) -> None:
            self.steps[name] += 1
            if self.steps[name] > self.skip:
                self.spikes[name] += float(spikes.detach().sum())
                self.counts[name] += spikes.numel()

        return record

    def __enter__(self) -> FiringRates:
        self._handles = [layer.register_forward_hook(self._hook(name)) for name, layer in self.layers]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def rates(self) -> dict[str, float]:
        """Spikes per neuron per time step of each layer (NaN for a layer that did not run)."""
        return {
            name: self.spikes[name] / self.counts[name] if self.counts[name] else float("nan") for name in self.spikes
        }
