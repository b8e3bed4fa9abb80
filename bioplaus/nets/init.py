r"""Weight initialisations of the GEVB paper (Clark, Abbott & Chung, 2021).

Both functions work in place on a weight tensor of any layer kind; the caller names the output
and input axes and passes ``fan_in`` (the weights feeding one output value, e.g.
``layer.fan_in``), so the same code serves linear ``(out, in)``, conv ``(out, in, kh, kw)``,
locally connected ``(out, oh, ow, in, kh, kw)`` and vectorized layers. Biases are the
caller's business (the paper's nets start them at zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bioplaus.errors import ConfigError


@torch.no_grad()
def he_init_(
    weight: torch.Tensor,
    fan_in: int,
    first: bool = False,
    scale: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""He ("mixed") init: $W \sim \mathcal N(0,\ \mathrm{scale}^2 / (f \cdot \mathrm{fan\_in}))$.

    ``f = 1`` for the first layer (its input is not rectified) and ``f = 0.5`` otherwise, i.e. the
    standard deviation is ``scale·√(2/fan_in)`` past the first layer. A vectorized first layer
    passes ``scale = √K`` with ``fan_in`` including the K-expansion.

    Args:
        weight: the tensor to fill, in place.
        fan_in: number of weights feeding one output value.
        first: whether this is the network's first layer.
        scale: multiplies the standard deviation.
        generator: random source; ``None`` uses torch's global generator.

    Returns:
        ``weight``.
    """
    f = 1.0 if first else 0.5
    return weight.normal_(0.0, scale / math.sqrt(f * fan_in), generator=generator)


@torch.no_grad()
def onoff_init_(
    weight: torch.Tensor,
    fan_in: int,
    *,
    first: bool = False,
    readout: bool = False,
    out_axis: int = 0,
    in_axis: int = 1,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""ON/OFF init for nonnegative networks: paired units carry ``±`` copies of a mixed-sign net.

    A mixed-sign matrix ``A`` is drawn at half size along each paired axis and split into its
    positive and negative parts (``e``/``o``: even/odd indices along ``out_axis``/``in_axis``):

    - hidden layers: ``A ~ N(0, 4/fan_in)`` of size ``(out/2, in/2)``;
      $W_{ee} = W_{oo} = \mathrm{relu}(A)$, $W_{eo} = W_{oe} = \mathrm{relu}(-A)$;
    - first layer (``first``): ``A ~ N(0, 1/fan_in)`` of size ``(out/2, in)``;
      $W_{e} = A$, $W_{o} = -A$ (mixed sign, never clamped);
    - readout (``readout``, any number of outputs): ``A ~ N(0, 4/fan_in)`` of size ``(out, in/2)``;
      $W_{:,e} = \mathrm{relu}(A)$, $W_{:,o} = \mathrm{relu}(-A)$.

    All of it is multiplied by ``scale``. ``4/fan_in = 2/(fan_in/2)`` is He init of the half-width
    net. With zero biases and paired gates (``"arelu"``, or the VNN's ``t_{2m+1} = −t_{2m}``),
    every layer then has ``h_{2m+1} = −h_{2m}``, because
    ``relu(A)·r_e + relu(−A)·(−r_e) = A·r_e``; the two gates of a pair agree, so the
    width-2N net with nonnegative weights past the first layer computes exactly the width-N
    mixed-sign net whose weights are the ``A``'s (its even units; the odd units carry the
    negated copy), and the readout gives ``A·r_e`` when ``r_o = −r_e``.

    Args:
        weight: the tensor to fill, in place.
        fan_in: number of weights feeding one output value, of the full (width-2N) layer.
        first: the network's first layer: pair the outputs only.
        readout: the network's last layer: pair the inputs only.
        out_axis: the weight axis indexing outputs.
        in_axis: the weight axis indexing inputs.
        scale: multiplies ``A`` (``√K`` for a vectorized first layer).
        generator: random source; ``None`` uses torch's global generator.

    Returns:
        ``weight``.

    Raises:
        ConfigError: if a paired axis has odd size, or both ``first`` and ``readout`` are set.
    """
    if first and readout:
        raise ConfigError("onoff_init_: a layer cannot be both the first layer and the readout (use he_init_)")
    w = weight.movedim((out_axis, in_axis), (0, 1))  # a view: writes below land in ``weight``
    half = list(w.shape)
    for axis, label, original, is_paired in ((0, "outputs", out_axis, not readout), (1, "inputs", in_axis, not first)):
        if is_paired:
            if w.shape[axis] % 2:
                raise ConfigError(
                    f"onoff_init_ pairs the {label} (weight axis {original}), which needs an even size, "
                    f"got {w.shape[axis]}"
                )
            half[axis] //= 2
    variance = 1.0 if first else 4.0
    a = w.new_empty(half).normal_(0.0, scale * math.sqrt(variance / fan_in), generator=generator)
    if first:
        w[0::2], w[1::2] = a, -a
    elif readout:
        w[:, 0::2], w[:, 1::2] = F.relu(a), F.relu(-a)
    else:
        w[0::2, 0::2], w[0::2, 1::2] = F.relu(a), F.relu(-a)
        w[1::2, 0::2], w[1::2, 1::2] = F.relu(-a), F.relu(a)
    return weight
