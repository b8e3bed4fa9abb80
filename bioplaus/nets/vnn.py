r"""Vectorized nonnegative networks (VNNs), after Clark, Abbott & Chung (NeurIPS 2021).

Every hidden unit carries a vector ``h_i ∈ R^K`` (``K`` = number of classes). Layouts: fully
connected ``(batch, K, units)``, convolutional ``(batch, K, channels, height, width)``.

* **First layer** (mixed sign, never clamped): each unit has a ``K × n₀`` weight,
  ``h_{i,k} = Σ_j W_{i,k,j} x_j + b_{i,k}`` — the official code's block-diagonal input expansion
  without the K-fold wasted FLOPs (one ``(K·out) × n₀`` product instead of ``K × (K·n₀)``).
* **Later layers**: scalar weights shared by the K components, ``h_i = Σ_j W_ij r_j + b_i`` with
  K-vector biases; the K axis is folded into the batch for convolutions.
* **Gate**: ``r_i = H(t_i · h_i) h_i`` with fixed ±1 vectors ``t_i`` in opposite-sign pairs
  (``t_{2m+1} = −t_{2m}``), ties active, computed from the detached ``h``; one ``t`` per
  channel in conv layers, shared over positions.
* **Readout**: one vector unit whose K components are the logits, no gate.
* **Nonnegativity**: every weight past the first layer is projected to ``W ≥ 0`` after each
  optimizer step (``layer.nonnegative``); biases and the first layer stay free.
* **Init**: ON/OFF for nonnegative nets, He for mixed ones (``bioplaus.nets.init``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bioplaus.core import Conv2dOp, Layer, LinearOp, Local2dOp, TaskSpec
from bioplaus.core.capabilities import Capability
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register
from bioplaus.nets.gevb_architectures import ARCHITECTURES, Architecture, select_arch
from bioplaus.nets.init import he_init_, onoff_init_


def _fold(x: torch.Tensor) -> torch.Tensor:
    """``(B, K, ...)`` → ``(B·K, ...)``."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _unfold(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B·K, ...)`` → ``(B, K, ...)``."""
    return x.reshape(x.shape[0] // k, k, *x.shape[1:])


def _bias_view(bias: torch.Tensor, spatial: int) -> torch.Tensor:
    """A ``(K, C)`` bias broadcast over ``spatial`` trailing axes."""
    return bias.reshape(*bias.shape, *([1] * spatial))


def k_dot(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """``Σ_k c_{·,k} x_{·,k}``: contract the K axis (axis 1) of ``x`` with broadcastable coefficients.

    ``coefficients`` has the K axis at position 1 too, e.g. the gating vectors ``t`` viewed as
    ``(1, K, C, 1, 1)`` or the output error ``e`` as ``(B, K, 1)``. Accumulates K slices in place
    instead of materialising the K-times larger product ``c ⊙ x`` (3–6× faster on a CPU for the
    conv layers' ``(B, K, C, H, W)`` maps).
    """
    total = x[:, 0] * coefficients[:, 0]
    for k in range(1, x.shape[1]):
        total.addcmul_(x[:, k], coefficients[:, k])
    return total


def avg_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping ``size × size`` mean over the last two axes (remainders dropped), as
    ``F.avg_pool2d(x, size)``, computed from ``size²`` strided slices: 3× faster than
    ``F.avg_pool2d`` on a CPU for the ``(B·K, C, H, W)`` maps of vectorized conv nets."""
    height, width = (x.shape[-2] // size) * size, (x.shape[-1] // size) * size
    weight = 1.0 / size**2
    slices = [x[..., i:height:size, j:width:size] for i in range(size) for j in range(size)]
    total = slices[0] * weight
    for piece in slices[1:]:
        total.add_(piece, alpha=weight)
    return total


@dataclass(frozen=True)
class SharedOp:
    """A scalar op applied to each of the K components (K folded into the batch), K-vector bias."""

    inner: Any
    k: int

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = _unfold(self.inner.forward(_fold(x), weight, None), self.k)
        return out if bias is None else out + _bias_view(bias, out.dim() - 3)

    def input_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        folded = torch.Size([input_shape[0] * input_shape[1], *input_shape[2:]])
        return _unfold(self.inner.input_vjp(_fold(grad_out), weight, folded), self.k)

    def weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        return self.inner.weight_vjp(_fold(grad_out), _fold(x), weight_shape)

    def bias_vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.sum(dim=[0, *range(3, grad_out.dim())])


@dataclass(frozen=True)
class InputOp:
    """The first layer: K separate scalar weight sets on a scalar input, i.e. ``K·out`` output maps."""

    inner: Any
    k: int

    def _merged(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(self.k * weight.shape[1], *weight.shape[2:])

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = self.inner.forward(x, self._merged(weight), None)
        if bias is not None:  # in place on the fresh (B, K·C, ...) maps: saves one K-fold allocation
            out.add_(bias.reshape(-1, *([1] * (out.dim() - 2))))
        return out.reshape(out.shape[0], self.k, -1, *out.shape[2:])

    def input_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        merged = grad_out.reshape(grad_out.shape[0], -1, *grad_out.shape[3:])
        return self.inner.input_vjp(merged, self._merged(weight), input_shape)

    def weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        merged = grad_out.reshape(grad_out.shape[0], -1, *grad_out.shape[3:])
        merged_shape = torch.Size([weight_shape[0] * weight_shape[1], *weight_shape[2:]])
        return self.inner.weight_vjp(merged, x, merged_shape).reshape(weight_shape)

    def bias_vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.sum(dim=[0, *range(3, grad_out.dim())])

    def broadcast_weight_vjp(
        self, credit: torch.Tensor, error: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size
    ) -> torch.Tensor:
        """The weight gradient for the output gradient ``g_{b,k,i} = e_{b,k} c_{b,i}`` (a scalar
        credit per unit broadcast along the error vector), ``∂L/∂W_k = Σ_b e_{b,k} ∂_W(c_b · op(x_b))``.

        Ops that share weights across positions (convolutions) take each example's weight
        gradient of ``c_b`` once and contract it with ``e``: ``K×`` fewer FLOPs than the weight
        gradient of the ``K·C`` output maps, which are never formed. Other ops form ``g``.
        """
        per_example = getattr(self.inner, "per_example_weight_vjp", None)
        if per_example is not None:
            per_unit = per_example(credit, x, weight_shape[1:])  # (B, C, ...)
            return (error.T @ per_unit.flatten(1)).reshape(weight_shape)
        spatial = credit.dim() - 2
        grad_out = error.reshape(*error.shape, *([1] * (spatial + 1))) * credit.unsqueeze(1)
        return self.weight_vjp(grad_out, x, weight_shape)


def paired_gating_vectors(k: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fixed ±1 gating vectors ``t`` of shape ``(K, n)`` in opposite pairs: ``t[:, 2m+1] = −t[:, 2m]``."""
    if n % 2:
        raise ConfigError(f"gated vector layers need an even number of units/channels (pairs), got {n}")
    half = (torch.randint(0, 2, (k, n // 2), generator=generator) * 2 - 1).to(torch.get_default_dtype())
    return torch.stack([half, -half], dim=2).reshape(k, n)


class VectorLayer(Layer):
    r"""A vectorized weight layer, optionally followed by the paired gate ``r = H(t·h) h``.

    The weight op is a core op (linear, conv, locally connected) lifted to K components:
    [`SharedOp`][bioplaus.nets.vnn.SharedOp] for layers past the first (scalar weights),
    [`InputOp`][bioplaus.nets.vnn.InputOp] for the first (a separate weight per component). ``credit_grads`` turns a
    per-unit scalar credit into the weight and bias gradients without ever forming per-synapse K-vectors:

    $$
    \frac{\partial L}{\partial W_{ij}} = \sum_b c_{b,i}\,(e_b \cdot r_{b,j}), \qquad
    \frac{\partial L}{\partial b_{i}} = \sum_b c_{b,i}\, e_b
    $$

    with ``c = δ`` (exact scalar credit) for BP and ``c = G`` (the gate) for GEVB.
    """

    recordable = Layer.recordable | {"gate"}

    def __init__(
        self, op: SharedOp | InputOp, weight_shape: Sequence[int], bias_channels: int, gated: bool, in_axis: int = 1
    ):
        super().__init__()
        self.op = op
        self.in_axis = in_axis + (1 if isinstance(op, InputOp) else 0)  # weight axis of the inputs
        self.k = op.k
        self.first = isinstance(op, InputOp)
        self.weight = nn.Parameter(torch.zeros(*weight_shape))
        self.bias = nn.Parameter(torch.zeros(op.k, bias_channels))
        self.gated = gated
        if gated:
            self.register_buffer("t", paired_gating_vectors(op.k, bias_channels))
            self._activation_fn = self.apply_gate
            self.activation = "gate"

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """``G = H(t·h)`` per unit (and position): shape ``pre`` without the K axis; ties are active."""
        t = _bias_view(self.t, pre.dim() - 3).unsqueeze(0)
        return (k_dot(pre.detach(), t) >= 0).to(pre.dtype)

    def apply_gate(self, pre: torch.Tensor) -> torch.Tensor:
        """``r = G h``: all K components of a unit pass or are zeroed together (``G`` is recorded
        as ``"gate"`` when a rule asks for it)."""
        gate = self.gate(pre)
        if "gate" in self.settings.record:
            self.trace["gate"] = gate
        return pre * gate.unsqueeze(1)

    def check_input(self, x: torch.Tensor) -> None:
        want = 2 if self.first else 3
        if x.dim() < want or (not self.first and x.shape[1] != self.k):
            raise ShapeError(
                f"{self!r} expects {'scalar inputs (batch, features...)' if self.first else f'(batch, {self.k}, ...)'}"
                f" tensors, got shape {tuple(x.shape)}"
            )

    def credit_grads(
        self, x: torch.Tensor, credit: torch.Tensor, error: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias gradients from a per-unit scalar credit ``c`` and the output error ``e``.

        Args:
            x: the layer's input as recorded (scalar for the first layer, K-vector otherwise).
            credit: ``(batch, units)`` or ``(batch, channels, height, width)`` scalar credit.
            error: ``(batch, K)`` output error ``∂L/∂logits`` (carries the 1/batch of a mean loss).
        """
        if self.first:
            grad_w = self.op.broadcast_weight_vjp(credit, error, x, self.weight.shape)
        else:
            projected = k_dot(x, error.reshape(*error.shape, *([1] * (x.dim() - 2))))  # e · r_j per unit
            grad_w = self.op.inner.weight_vjp(credit, projected, self.weight.shape)
        spatial = credit.dim() - 2
        grad_b = torch.einsum("bk,bc...->kc", error, credit) if spatial else error.T @ credit
        return grad_w, grad_b

    def extra_repr(self) -> str:
        kind = "input" if self.first else "shared"
        return f"{kind}, K={self.k}, weight={tuple(self.weight.shape)}, gated={self.gated}"


def vec_linear(n_in: int, n_out: int, k: int, *, first: bool = False, gated: bool = True) -> VectorLayer:
    """A vectorized fully connected layer (first: ``K × n_out × n_in`` weights; else ``n_out × n_in``)."""
    if first:
        return VectorLayer(InputOp(LinearOp(), k), (k, n_out, n_in), n_out, gated)
    return VectorLayer(SharedOp(LinearOp(), k), (n_out, n_in), n_out, gated)


def vec_conv(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, k: int, *, first: bool = False
) -> VectorLayer:
    """A vectorized conv layer with ``(C_out, C_in, k, k)`` scalar filters (``K ×`` that when first)."""
    op = Conv2dOp((stride, stride), (padding, padding))
    if first:
        return VectorLayer(InputOp(op, k), (k, c_out, c_in, kernel, kernel), c_out, True)
    return VectorLayer(SharedOp(op, k), (c_out, c_in, kernel, kernel), c_out, True)


def vec_local(
    c_in: int,
    c_out: int,
    input_size: tuple[int, int],
    kernel: int,
    stride: int,
    padding: int,
    k: int,
    *,
    first: bool = False,
) -> VectorLayer:
    """A vectorized locally connected layer: unshared ``(C_out, H', W', C_in, k, k)`` filters, K-vector
    bias per channel (``K ×`` the filters when first)."""
    op = Local2dOp(input_size, (kernel, kernel), (stride, stride), (padding, padding))
    shape = (c_out, *op.output_size, c_in, kernel, kernel)
    if first:
        return VectorLayer(InputOp(op, k), (k, *shape), c_out, True, in_axis=3)
    return VectorLayer(SharedOp(op, k), shape, c_out, True, in_axis=3)


class VecAvgPool2d(nn.Module):
    """Average pooling of each component (nonnegative and linear, so it keeps sign-match)."""

    def __init__(self, size: int = 2):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool(x, self.size)

    def credit_forward(self, s: torch.Tensor) -> torch.Tensor:
        return avg_pool(s, self.size)


class VecFlatten(nn.Module):
    """``(B, K, C, H, W) → (B, K, H·W·C)``, channels last as in the official code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 1, 3, 4, 2).flatten(2)

    def credit_forward(self, s: torch.Tensor) -> torch.Tensor:
        return s.permute(0, 2, 3, 1).flatten(1)


class VNN(nn.Module):
    """A chain of vectorized layers ending in a one-unit vector readout; ``forward`` returns ``(batch, K)`` logits.

    Args:
        layers: the chain (``VectorLayer``, ``VecAvgPool2d``, ``VecFlatten``); the first is an
            input layer, the last a readout with one ungated unit.
        nonnegative: constrain every weight past the first layer to be ≥ 0 (projection after each step).
        init: ``"onoff"`` or ``"he"``; ``"auto"`` picks ON/OFF for nonnegative nets.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.LAYERED, Capability.VECTORIZED, Capability.FEEDFORWARD}
    )

    def __init__(self, layers: OrderedDict[str, nn.Module], nonnegative: bool = True, init: str = "auto"):
        super().__init__()
        self.layers = nn.Sequential(layers)
        weights = [m for m in self.layers if isinstance(m, VectorLayer)]
        if not weights[0].first or weights[-1].gated or weights[-1].weight.shape[0] != 1:
            raise ConfigError("a VNN starts with an input layer and ends with a one-unit ungated readout")
        self.k = weights[0].k
        self.nonnegative = nonnegative
        for layer in weights[1:]:
            layer.nonnegative = nonnegative
        init = ("onoff" if nonnegative else "he") if init == "auto" else init
        if init not in ("onoff", "he"):
            raise ConfigError(f"VNN init must be 'onoff', 'he' or 'auto', got {init!r}")
        self.init = init
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the weights (ON/OFF or He, √K-scaled first layer) and zero the biases."""
        weights = [m for m in self.layers if isinstance(m, VectorLayer)]
        for i, layer in enumerate(weights):
            w = layer.weight
            # the first layer's fan-in counts the K-fold input expansion of the official code
            fan_in = layer.fan_in * (layer.k if layer.first else 1)
            scale = math.sqrt(layer.k) if layer.first else 1.0
            if self.init == "he":
                he_init_(w, fan_in, first=layer.first, scale=scale)
            else:
                readout = i == len(weights) - 1
                out_axis = 1 if layer.first else 0
                onoff_init_(
                    w, fan_in, first=layer.first, readout=readout, out_axis=out_axis, in_axis=layer.in_axis, scale=scale
                )
            layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layers[0].op.inner, LinearOp):
            x = x.flatten(1)
        elif x.dim() != 4:
            raise ShapeError(f"this convolutional VNN needs image inputs (batch, C, H, W), got {tuple(x.shape)}")
        return self.layers(x)[..., 0]


VEC_HIDDEN = {("lc", "cifar"): (256,)}
"""Where the vectorized net's FC widths differ from the conventional one's (the CIFAR LC readout)."""


def build_vnn(spec: TaskSpec, kind: str, architecture: Architecture, nonnegative: bool, init: str) -> VNN:
    """Assemble a VNN: conv or LC stages (each gated, optionally pooled) on images, then gated FC
    layers and the one-unit readout.

    Args:
        spec: the task's input shape and number of classes K.
        kind: ``"fc"``, ``"conv"`` or ``"lc"`` (the kind of the stages).
        architecture: stages and FC widths (see [`bioplaus.nets.gevb_architectures`][bioplaus.nets.gevb_architectures]).
        nonnegative: constrain every weight past the first layer to be ≥ 0.
        init: ``"onoff"``, ``"he"`` or ``"auto"``.
    """
    k = spec.n_out
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    shape = tuple(spec.input_shape)
    if architecture.stages and len(shape) != 3:
        raise ConfigError(f"vnn_{kind} needs image inputs (channels, height, width), got input shape {shape}")
    for i, stage in enumerate(architecture.stages, start=1):
        c, h, w = shape
        args = (c, stage.out_channels, stage.kernel_size, stage.stride, stage.padding, k)
        if kind == "conv":
            layer = vec_conv(*args, first=not layers)
        else:
            layer = vec_local(c, stage.out_channels, (h, w), *args[2:], first=not layers)
        out = [(n + 2 * stage.padding - stage.kernel_size) // stage.stride + 1 for n in (h, w)]
        if min(out) < (2 if stage.pool else 1):
            raise ConfigError(f"vnn_{kind}: inputs of shape {spec.input_shape} are too small for stage {i}")
        layers[f"{kind}{i}"] = layer
        shape = (stage.out_channels, *out)
        if stage.pool:
            layers[f"pool{i}"] = VecAvgPool2d(2)
            shape = (shape[0], shape[1] // 2, shape[2] // 2)
    if architecture.stages:
        layers["flatten"] = VecFlatten()
    width = math.prod(shape)
    for i, n in enumerate(architecture.hidden, start=1):
        layers[f"fc{i}"] = vec_linear(width, n, k, first=not layers)
        width = n
    layers["readout"] = vec_linear(width, 1, k, gated=False)
    return VNN(layers, nonnegative, init)


def _architecture(spec: TaskSpec, kind: str, arch: str) -> Architecture:
    if arch not in ("auto", "mnist", "cifar"):
        raise ConfigError(f"arch must be 'auto', 'mnist' or 'cifar', got {arch!r}")
    column = select_arch(spec.input_shape, arch)
    table = ARCHITECTURES[kind][column]
    return Architecture(table.stages, VEC_HIDDEN.get((kind, column), table.hidden))


@register("vnn")
def vnn(
    spec: TaskSpec,
    hidden: Sequence[int] | None = None,
    arch: str = "auto",
    nonnegative: bool = True,
    init: str = "auto",
) -> VNN:
    """Fully connected vectorized nonnegative net (GEVB paper; MNIST 784-1024-512-1, CIFAR 3072-1024-512-512-1)."""
    architecture = _architecture(spec, "fc", arch)
    if hidden is not None:
        architecture = Architecture((), tuple(hidden))
    return build_vnn(spec, "fc", architecture, nonnegative, init)


@register("vnn_conv")
def vnn_conv(spec: TaskSpec, arch: str = "auto", nonnegative: bool = True, init: str = "auto") -> VNN:
    """Convolutional vectorized nonnegative net of the GEVB paper (conv-pool blocks, then FC 1024)."""
    return build_vnn(spec, "conv", _architecture(spec, "conv", arch), nonnegative, init)


@register("vnn_lc")
def vnn_lc(spec: TaskSpec, arch: str = "auto", nonnegative: bool = True, init: str = "auto") -> VNN:
    """Locally connected vectorized nonnegative net of the GEVB paper (LC-pool blocks, then FC)."""
    return build_vnn(spec, "lc", _architecture(spec, "lc", arch), nonnegative, init)
