"""Weight mirrors: feedback matrices learned from noise-driven correlations, between learning steps."""

from __future__ import annotations

import torch
from torch import nn

from bioplaus.core import Context, Layer, require_layers
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import register
from bioplaus.rules.layer_feedback import LayerFeedbackRule


def mirror_estimate(layer: Layer, input_shape: torch.Size, batch: int, noise_std: float) -> torch.Tensor:
    r"""A noisy estimate of `W` from the correlation of input noise with the drive it causes.

    Noise $x \sim \mathcal N(0, \sigma^2 I)$ shaped like the layer's input (`batch` examples)
    drives $y = \mathrm{op}(x; W)$ (no bias, no nonlinearity); the Hebbian product of `y` and `x`
    is the layer's weight-gradient operation, whose expectation is $\sigma^2 W$ times the number
    of times each weight meets a real input (one for a linear layer, the number of valid output
    positions for a convolution, fewer at padded borders). Dividing by that count, computed
    exactly with all-ones inputs, gives an unbiased estimate of `W` for every layer kind.
    """
    weight = layer.weight.detach()
    noise = torch.randn((batch, *input_shape[1:]), dtype=weight.dtype, device=weight.device) * noise_std
    with torch.no_grad():
        drive = layer.op.forward(noise, weight, None)
        hebb = layer.op.weight_vjp(drive, noise, weight.shape)
        uses = layer.op.weight_vjp(torch.ones_like(drive[:1]), torch.ones_like(noise[:1]), weight.shape)
    return hebb / (uses.clamp(min=1) * batch * noise_std**2)


@register("weight_mirror")
class WeightMirror(LayerFeedbackRule):
    r"""Weight mirrors: feedback alignment whose `B` learns `W` in mirror phases driven by noise.

    Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019), "Deep learning without weight
    transport", NeurIPS. Two modes alternate. In the engaged mode the net learns the task by
    feedback alignment through the current `B`. In the mirror mode there is no input and no
    error: each layer's input neurons fire zero-mean noise of their own (independent per layer,
    so deeper inputs stay white), and each feedback synapse changes with the correlation of the
    noise and the drive it causes one layer up (bioplaus keeps `B` in `W`'s shape):

    $$
    x \sim \mathcal N(0, \sigma^2 I), \quad y = W x, \qquad
    \Delta B = \eta_B \left(\frac{\overline{y x^\top}}{\sigma^2} - B\right), \qquad
    \mathbb E[\overline{y x^\top}] = \sigma^2 W \;\Rightarrow\; B^\ast = W
    $$

    The paper's form is $\Delta B = \eta_B\, x y^\top - \lambda B$ with the fixed point
    $B^\ast = (\eta_B \sigma^2 / \lambda) W$; bioplaus takes $\lambda = \eta_B \sigma^2$, so the
    direction and the norm of `B` both converge to `W`'s: each mirror phase moves `B` a fraction
    $\eta_B$ = `mirror_lr` towards the phase's estimate, $B \leftarrow (1 - \eta_B) B + \eta_B\,
    \overline{y x^\top}/\sigma^2$. `B` is the rule's state, like an eligibility trace: the rule
    updates it itself, so the run's optimizer (its learning rate, momentum or Adam's scaling)
    never touches it. This matters: the estimate of one phase is noisy (relative squared error
    about `fan_in / mirror_batch` per phase), and averaging over many phases with a small
    $\eta_B$ is what brings it down, to about $\eta_B\, n_{in} / (2\,\text{mirror\_batch})$.
    Stepping `B` with the run's optimizer instead (SGD at lr 0.05 with momentum 0.9, an
    effective rate of 0.5) left `‖B‖` 40 % above `‖W‖` from noise alone and made the forward
    training diverge on the digits task. Conv layers get a noise image and the layer's
    weight-gradient operation as the Hebbian product, divided by the exact number of times each
    kernel entry meets a real pixel
    ([mirror_estimate][bioplaus.rules.weight_mirror.mirror_estimate]).

    Schedule: every `mirror_every`-th update adds a mirror phase of `mirror_batch` noise
    samples per layer after the engaged (FA) step, as the authors' NumPy reference does after
    every training batch (it also mirrors for one epoch before training, which bioplaus leaves
    out: `B` starts random, as in FA). The reference uses uniform noise and the drive after a
    sigmoid; the clean linear form above has no operating-point gain and no leak of the mean
    into `B`. The mirror draws come from torch's global generator (seeded and checkpointed by
    the runner); the update counter is part of the rule's state.

    Args:
        scale: bound of the initial uniform `B`, as in feedback alignment.
        seed: seed of a private generator for the initial `B`; `None` uses torch's global one.
        noise_std: $\sigma$ of the mirror noise.
        mirror_batch: noise samples per layer in each mirror phase.
        mirror_every: a mirror phase after every this many updates (1: after each).
        mirror_lr: $\eta_B$, the fraction of the way `B` moves towards each phase's estimate.
    """

    def __init__(
        self,
        scale: float = 1.0,
        seed: int | None = None,
        noise_std: float = 1.0,
        mirror_batch: int = 64,
        mirror_every: int = 1,
        mirror_lr: float = 0.01,
    ):
        super().__init__(scale, seed)
        for name, value in (("noise_std", noise_std), ("mirror_batch", mirror_batch), ("mirror_every", mirror_every)):
            if not value > 0:
                raise ConfigError(f"weight_mirror {name} must be > 0, not {value!r}")
        if not 0 < mirror_lr <= 1:
            raise ConfigError(f"weight_mirror mirror_lr must be in (0, 1], not {mirror_lr!r}")
        self.noise_std, self.mirror_batch, self.mirror_every = noise_std, int(mirror_batch), int(mirror_every)
        self.mirror_lr = mirror_lr

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        for _, layer in require_layers(model, self.name):
            layer.configure(record=layer.settings.record | {"input"})
        if not self.state.has("updates"):
            self.state.set_buffer("updates", torch.zeros((), dtype=torch.long))

    def update(self, model: nn.Module, ctx: Context) -> None:
        super().update(model, ctx)
        updates = self.state.get("updates")
        if int(updates) % self.mirror_every == 0:
            self.mirror(model)
        updates += 1

    @torch.no_grad()
    def mirror(self, model: nn.Module) -> None:
        """One mirror phase: move each `B` towards a fresh noise estimate of `W` (which is untouched)."""
        for name, layer in require_layers(model, self.name):
            estimate = mirror_estimate(layer, layer.recorded("input").shape, self.mirror_batch, self.noise_std)
            self.state.get(self._keys[name]).lerp_(estimate, self.mirror_lr)
