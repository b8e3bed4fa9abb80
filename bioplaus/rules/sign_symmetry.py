"""Sign symmetry: errors travel back through the signs of the forward weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bioplaus.core import Capability, Layer, require_layers
from bioplaus.core.rule_state import StateFeedback
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import register
from bioplaus.rules.backprop import Backprop
from bioplaus.rules.layer_feedback import layer_matrices

VARIANTS = ("usf", "frsf", "brsf")


class SignFeedback:
    """A layer's feedback `W ↦ m(W) ⊙ sign(W)`, evaluated at every forward.

    `magnitude` gives the (nonnegative) magnitudes; with `magnitude = torch.abs` the feedback
    is `W` itself, the case in which the rule is exactly backprop.
    """

    def __init__(self, magnitude: Callable[[torch.Tensor], torch.Tensor]):
        self.magnitude = magnitude

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return self.magnitude(weight) * torch.sign(weight)

    def __repr__(self) -> str:
        return f"SignFeedback({self.magnitude!r})"


class UniformMagnitude:
    """One magnitude `s` for every entry of a layer (uSF)."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.full_like(weight, self.value)

    def __repr__(self) -> str:
        return f"UniformMagnitude({self.value:.4g})"


class FixedMagnitude:
    """`|M|` for a matrix `M` drawn once and kept in the rule's state (frSF)."""

    def __init__(self, matrix: StateFeedback):
        self.matrix = matrix

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return self.matrix(weight).abs()

    def __repr__(self) -> str:
        return f"FixedMagnitude({self.matrix.name!r})"


class FreshMagnitude:
    """`|M_t|` with `M_t ~ U(−b, b)` drawn anew at every forward (brSF), from torch's global generator."""

    def __init__(self, bound: float):
        self.bound = bound

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(weight).uniform_(-self.bound, self.bound).abs_()

    def __repr__(self) -> str:
        return f"FreshMagnitude({self.bound:.4g})"


@register("sign_symmetry")
class SignSymmetry(Backprop):
    r"""Sign symmetry: backprop with `sign(W)`, times a magnitude, in place of `W` on the way down.

    Liao, Leibo & Poggio (2016), "How important is weight symmetry in backpropagation?", AAAI;
    Xiao, Chen, Liao & Poggio (2018), "Biologically-plausible learning algorithms can scale to
    large datasets"; the variant names are those of Moskovitz, Litwin-Kumar & Abbott (2018).
    With $\delta_\ell = \partial L / \partial a_\ell$ at the pre-activation:

    $$
    \delta_\ell = f'(a_\ell) \odot \mathrm{op}^{\top}_{x}(\delta_{\ell+1};\, B_{\ell+1}), \qquad
    B = M \odot \mathrm{sign}(W), \qquad \Delta W_\ell \propto -\mathrm{op}^{\top}_{W}(\delta_\ell;\, h_{\ell-1})
    $$

    `B` is recomputed from the current `W` at every forward; only the magnitudes `M` differ:

    | variant | `M` |
    |---|---|
    | `usf` (uniform sign-concordant) | one scalar per layer, $s = \text{scale}/\sqrt{3\, n_{in}}$ |
    | `frsf` (fixed random magnitude) | $\lvert M \rvert$, $M \sim U(\pm \text{scale}/\sqrt{n_{in}})$, drawn once |
    | `brsf` (batchwise random magnitude) | the same distribution, drawn anew at every forward |

    The scales are chosen so that every variant starts with `‖B‖ ≈ ‖W₀‖` under bioplaus's (and
    PyTorch's) default init $U(\pm 1/\sqrt{n_{in}})$, whose standard deviation is
    $1/\sqrt{3 n_{in}}$: too large a feedback gain explodes the errors of deep nets, too small a
    one shrinks the effective learning rate of the lower layers. (BioTorch, the reference
    benchmark, uses the Xavier standard deviation because it also initialises `W` with Xavier.)
    Afterwards `‖B‖` stays put while `‖W‖` drifts, which the runner's logged norm ratio shows.
    `brsf` draws from torch's global generator, which the runner seeds and checkpoints, at
    every forward, evaluation forwards included (as in BioTorch). A zero weight sends no error
    (`sign(0) = 0`). Biases, batch norm, pooling and activations keep ordinary autograd; the
    readout's own weight gradient is exact, and its `B` only shapes the error sent below.

    Args:
        variant: `"usf"`, `"frsf"` or `"brsf"`.
        scale: multiplies the magnitudes (1: `‖B‖ ≈ ‖W₀‖` at the default init).
        seed: seed of a private generator for the fixed magnitudes of `frsf`; `None` uses
            torch's global generator (which the runner seeds per run).
    """

    requires = frozenset({Capability.LAYERED})

    def __init__(self, variant: str = "usf", scale: float = 1.0, seed: int | None = None):
        if variant not in VARIANTS:
            raise ConfigError(f"sign_symmetry variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant, self.scale, self.seed = variant, scale, seed

    def attach(self, model: nn.Module) -> None:
        layers = require_layers(model, self.name)
        keys = layer_matrices(self.state, layers, self.scale, self.seed) if self.variant == "frsf" else {}
        for name, layer in layers:
            layer.configure(feedback=SignFeedback(self._magnitude(layer, keys.get(name))))

    def _magnitude(self, layer: Layer, key: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
        if key is not None:
            return FixedMagnitude(StateFeedback(self.state, key))
        bound = self.scale / math.sqrt(layer.fan_in)
        return UniformMagnitude(bound / math.sqrt(3.0)) if self.variant == "usf" else FreshMagnitude(bound)
