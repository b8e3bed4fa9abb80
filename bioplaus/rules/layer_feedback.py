"""Rules that send errors down through one matrix `B` per layer, shaped like its weight `W`.

Feedback alignment, sign symmetry, Kolen-Pollack and weight mirrors differ only in what `B` is
(fixed random, `sign(W)` times a magnitude, learned by the same updates as `W`, learned from
noise). Each layer runs its forward with `W` and sends its error to its input through `B`
([FeedbackTransform][bioplaus.core.FeedbackTransform]), so a step costs what a BP step costs
and the weight update of every layer is the ordinary product of its error and its input.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from bioplaus.core import Capability, Layer, require_layers
from bioplaus.core.rule_state import RuleState, StateFeedback, state_key
from bioplaus.rules.backprop import Backprop


def uniform_like_init(layer: Layer, scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """A tensor shaped like `layer.weight`, drawn $U(-s/\\sqrt{n_{in}},\\ s/\\sqrt{n_{in}})$ with `s = scale`.

    With `scale = 1` this is the distribution of PyTorch's (and bioplaus's) default weight init,
    so `‖B‖ ≈ ‖W₀‖`; `n_in` is the layer's fan-in (the inputs feeding one output value).
    """
    weight = layer.weight
    bound = scale / math.sqrt(layer.fan_in)
    matrix = torch.empty(weight.shape, dtype=weight.dtype).uniform_(-bound, bound, generator=generator)
    return matrix.to(weight.device)


def layer_matrices(
    state: RuleState, layers: list[tuple[str, Layer]], scale: float, seed: int | None, learned: bool = False
) -> dict[str, str]:
    """Make sure `state` holds one matrix per layer, shaped like its weight; returns name → state key.

    Matrices already there with the right shapes are kept (attaching twice is attaching once, and
    a loaded checkpoint survives `attach`); otherwise every matrix is drawn anew with
    [uniform_like_init][bioplaus.rules.layer_feedback.uniform_like_init], from a private
    generator when `seed` is given. `learned` matrices are parameters of the state (an optimizer
    steps them), the others buffers.
    """
    keys = {name: state_key(name) for name, _ in layers}
    kept = all(
        state.has(key) and state.get(key).shape == layer.weight.shape
        for (_, layer), key in zip(layers, keys.values(), strict=True)
    )
    if not kept:
        state.clear()
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        for (_, layer), key in zip(layers, keys.values(), strict=True):
            matrix = uniform_like_init(layer, scale, generator)
            if learned:
                state.set_parameter(key, matrix)
            else:
                state.set_buffer(key, matrix)
    return keys


class LayerFeedbackRule(Backprop):
    """Base class: backprop with each layer's error sent down through the rule's own matrix `B`.

    Subclasses say whether `B` is learned (`learned = True`: the matrices are parameters of
    the rule's state and appear in [param_groups][bioplaus.core.rule.Rule.param_groups]) and how it
    changes; the forward weights are always trained with the error that arrived through the
    feedback path. The matrices live in the rule's state (moved by `rule.to`, saved in
    checkpoints); `feedback` gives them by layer name.

    Args:
        scale: multiplies the bound of the uniform distribution `B` is drawn from.
        seed: seed of a private generator for `B`; `None` draws from torch's global generator
            (which the runner seeds per run).
    """

    requires = frozenset({Capability.LAYERED})
    learned: ClassVar[bool] = False
    """Whether the feedback matrices are learned parameters (stepped by the optimizer)."""

    def __init__(self, scale: float = 1.0, seed: int | None = None):
        self.scale = scale
        self.seed = seed

    @property
    def feedback(self) -> dict[str, torch.Tensor]:
        """The feedback matrices `B` by layer name (the state's own tensors: edit them in place)."""
        return {name: self.state.get(key) for name, key in self.__dict__.get("_keys", {}).items()}

    def attach(self, model: nn.Module) -> None:
        layers = require_layers(model, self.name)
        self._keys = layer_matrices(self.state, layers, self.scale, self.seed, learned=self.learned)
        for (_, layer), key in zip(layers, self._keys.values(), strict=True):
            layer.configure(feedback=StateFeedback(self.state, key))

    def feedback_parameters(self) -> list[nn.Parameter]:
        """The learned feedback matrices, in layer order (empty when `B` is fixed)."""
        if not self.learned:
            return []
        return [self.state.get(key) for key in self.__dict__.get("_keys", {}).values()]
