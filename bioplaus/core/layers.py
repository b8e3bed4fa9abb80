"""Layers that a rule can configure.

The rule contract: ``rule.attach(model)`` may ask layers to *record* what the rule
needs, to *detach their input* (layer-local learning), or to send errors backward through
*feedback weights*; the model's ``forward(x)`` never changes. A [`Layer`][bioplaus.core.layers.Layer] is a weight
operation followed by an optional pointwise activation,

$$
a = \\mathrm{op}(x; W) + b, \\qquad h = f(a),
$$

and can record ``"input"`` (``x`` as the layer saw it), ``"pre"`` (``a``) and ``"output"``
(``h``) in `Layer.trace`. The rule-specific configuration lives in one immutable
[`LayerSettings`][bioplaus.core.layers.LayerSettings] value, so
[`default_settings`][bioplaus.core.layers.default_settings] can switch any model back to plain backprop for a moment
(the alignment analysis does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bioplaus.core.weight_ops import Conv2dOp, FeedbackTransform, LinearOp, Local2dOp
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.registry import did_you_mean

Feedback = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def alternating_relu(h: torch.Tensor) -> torch.Tensor:
    r"""Alternating ReLU ("arelu"): odd features pass ``h ≥ 0``, even features pass ``h ≤ 0``.

    Along the feature axis (axis 1: units of ``(B, N)``, channels of ``(B, C, H, W)``), with
    ``s_i = +1`` for odd ``i`` and ``−1`` for even ``i``,

    $$
    \begin{aligned}
    f(h)_i = s_i\, \mathrm{relu}(s_i h_i) =
    \begin{cases} h_i\, 1[h_i \ge 0] & i \text{ odd} \\ h_i\, 1[h_i \le 0] & i \text{ even} \end{cases}
    \end{aligned}
    $$

    It is the scalar (K = 1) analogue of the VNN's gates ``H(t_i h_i)`` with paired gating
    vectors ``t_{2m+1} = −t_{2m}`` (Clark, Abbott & Chung, 2021):
    with ON/OFF weights a pair ``h_{2m+1} = −h_{2m}`` opens and closes together.

    Args:
        h: pre-activations with at least two axes, features on axis 1.
    """
    shape = [1] * h.dim()
    shape[1] = h.shape[1]
    sign = (torch.arange(h.shape[1], device=h.device) % 2 * 2 - 1).to(h.dtype).reshape(shape)
    return sign * F.relu(sign * h)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "identity": None,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
    "arelu": alternating_relu,
}


def resolve_activation(activation: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Look up an activation by name (``None`` means identity)."""
    if activation is None:
        return None
    if activation not in ACTIVATIONS:
        names = list(ACTIVATIONS)
        raise ConfigError(
            f"unknown activation '{activation}'{did_you_mean(activation, names)}; known: {', '.join(names)}"
        )
    return ACTIVATIONS[activation]


@dataclass(frozen=True)
class LayerSettings:
    """What a rule asked a layer to do. The default is plain autograd backprop.

    Attributes:
        record: names of the tensors to keep in ``layer.trace`` after each forward.
        detach_input: cut the graph at the layer's input, so no gradient reaches the layers below.
        feedback: a tensor shaped like the weight, or a function ``W -> B`` evaluated at each
            forward, through which the error is sent backward instead of ``W``.

    Layer kinds with more to configure (a recurrent layer's truncation, say) subclass this
    dataclass and name the subclass in their ``settings_type``.
    """

    record: frozenset[str] = frozenset()
    detach_input: bool = False
    feedback: Feedback | None = None


class Layer(nn.Module):
    """Base class of every layer kind a rule can configure.

    Subclasses set `op` (the weight operation), create ``weight`` and ``bias`` and call
    ``self._set_activation``; `forward` is shared.
    """

    recordable: ClassVar[frozenset[str]] = frozenset({"input", "pre", "output"})
    settings_type: ClassVar[type[LayerSettings]] = LayerSettings
    in_axis: ClassVar[int] = 1
    """The weight axis that indexes inputs (features or channels); axis 0 indexes outputs."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self) -> None:
        super().__init__()
        self.settings = self.settings_type()
        self.trace: dict[str, torch.Tensor] = {}
        self.activation: str | None = None
        self._activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.nonnegative = False

    @property
    def fan_in(self) -> int:
        """Number of weights feeding one output value: the product of the weight's axes from
        [`in_axis`][bioplaus.core.layers.Layer.in_axis] on."""
        return math.prod(self.weight.shape[self.in_axis :])

    @torch.no_grad()
    def project_(self) -> None:
        """Apply the layer's weight constraint after an optimizer step (nonnegative: ``W ← max(W, 0)``).

        A projection, not a reparametrisation: gradients are computed as usual and the optimizer
        steps freely; [`install_projections`][bioplaus.core.layers.install_projections] calls this after every step.
        Biases stay free.
        """
        if self.nonnegative:
            self.weight.clamp_(min=0)

    def _set_activation(self, activation: str | None) -> None:
        self._activation_fn = resolve_activation(activation)
        self.activation = None if activation == "identity" else activation

    # configuration ---------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change some settings (see [`LayerSettings`][bioplaus.core.layers.LayerSettings]); unknown names raise
        ``ConfigError``."""
        names = [f.name for f in fields(self.settings_type)]
        for name in changes:
            if name not in names:
                raise ConfigError(
                    f"{type(self).__name__} has no setting '{name}'{did_you_mean(name, names)}; "
                    f"settings: {', '.join(names)}"
                )
        if "record" in changes:
            record = frozenset(changes["record"])
            unknown = record - self.recordable
            if unknown:
                raise ConfigError(
                    f"{type(self).__name__} cannot record {sorted(unknown)}; it records {sorted(self.recordable)}"
                )
            changes["record"] = record
        self.settings = replace(self.settings, **changes)
        self.trace.clear()

    def reset_settings(self) -> None:
        """Back to plain backprop: no recording, no detaching, no feedback weights."""
        self.settings = self.settings_type()
        self.trace.clear()

    def recorded(self, name: str) -> torch.Tensor:
        """The tensor recorded under ``name`` in the last forward pass."""
        if name not in self.trace:
            raise ConfigError(
                f"{self!r} has not recorded '{name}': the rule must ask for it in attach() with "
                f"layer.configure(record={{'{name}', ...}}) and the model must run forward first"
            )
        return self.trace[name]

    # forward ---------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ShapeError`` if ``x`` cannot be fed to this layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        settings = self.settings
        if settings.detach_input:
            x = x.detach()
        record = settings.record
        if "input" in record:
            self.trace["input"] = x
        feedback = settings.feedback
        if feedback is None:
            pre = self.op.forward(x, self.weight, self.bias)
        else:
            matrix = feedback(self.weight.detach()) if callable(feedback) else feedback
            if matrix.shape != self.weight.shape:
                raise ShapeError(
                    f"feedback weights of {self!r} have shape {tuple(matrix.shape)}; "
                    f"they must have the weight's shape {tuple(self.weight.shape)}"
                )
            pre = FeedbackTransform.apply(x, self.weight, self.bias, matrix, self.op)
        if "pre" in record:
            self.trace["pre"] = pre
        out = pre if self._activation_fn is None else self._activation_fn(pre)
        if "output" in record:
            self.trace["output"] = out
        return out

    def __getstate__(self) -> dict[str, Any]:
        # recorded tensors carry autograd graphs, which cannot be copied or pickled
        state = self.__dict__.copy()
        state["trace"] = {}
        return state


def _fan_in_init(layer: Layer) -> None:
    """PyTorch's default init of linear and conv layers, U(−1/√fan_in, 1/√fan_in), with ``fan_in = layer.fan_in``."""
    bound = 1.0 / math.sqrt(layer.fan_in)
    nn.init.uniform_(layer.weight, -bound, bound)
    if layer.bias is not None:
        nn.init.uniform_(layer.bias, -bound, bound)


class Linear(Layer):
    """Fully connected layer ``h = f(x Wᵀ + b)``; ``W`` has shape ``(out_features, in_features)``.

    Args:
        in_features: size of the input's last axis.
        out_features: number of units.
        activation: name of the pointwise nonlinearity ``f`` (``None``: identity).
        bias: whether to add a learned bias.
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.op = LinearOp()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self._set_activation(activation)
        _fan_in_init(self)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ShapeError(
                f"{self!r} expects inputs whose last axis has {self.in_features} features, got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, activation={self.activation}, bias={self.bias is not None}"


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(Layer):
    """2-D convolutional layer ``h = f(W ⋆ x + b)`` on ``(batch, channels, height, width)`` inputs.

    Args:
        in_channels: input channels.
        out_channels: output channels (filters).
        kernel_size: filter size.
        stride: stride of the filter.
        padding: zero padding on each side.
        dilation: spacing of filter taps.
        groups: blocked connections from input to output channels.
        activation: name of the pointwise nonlinearity ``f`` (``None``: identity).
        bias: whether to add a learned per-channel bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        activation: str | None = None,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.op = Conv2dOp(_pair(stride), _pair(padding), _pair(dilation), groups)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._set_activation(activation)
        _fan_in_init(self)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"{self!r} expects inputs of shape (batch, {self.in_channels}, height, width), got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        op = self.op
        return (
            f"{self.in_channels} → {self.out_channels}, kernel_size={self.kernel_size}, stride={op.stride}, "
            f"padding={op.padding}, activation={self.activation}"
        )


class Local2d(Layer):
    """Locally connected layer ``h = f(W ⋆ x + b)``: a convolution with a separate filter per output position.

    ``W`` has shape ``(out_channels, out_h, out_w, in_channels, kh, kw)`` and the bias
    ``(out_channels, out_h, out_w)`` (see [`Local2dOp`][bioplaus.core.weight_ops.Local2dOp]). The weights
    are tied to one input size. Default init U(−1/√fan_in, 1/√fan_in) with
    ``fan_in = in_channels·kh·kw``, the inputs feeding one output value, as for [`Conv2d`][bioplaus.core.layers.Conv2d].

    Args:
        in_channels: input channels.
        out_channels: output channels.
        input_size: ``(height, width)`` of the inputs.
        kernel_size: filter size.
        stride: stride between neighbouring patches.
        padding: zero padding on each side.
        activation: name of the pointwise nonlinearity ``f`` (``None``: identity).
        bias: whether to add a learned bias per output channel and position.
    """

    in_axis: ClassVar[int] = 3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        activation: str | None = None,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.op = Local2dOp(_pair(input_size), _pair(kernel_size), _pair(stride), _pair(padding))
        out_size = self.op.output_size
        if min(out_size) < 1:
            raise ConfigError(
                f"Local2d: a {self.op.kernel_size} kernel with padding {self.op.padding} does not fit "
                f"inputs of size {self.op.input_size}"
            )
        self.weight = nn.Parameter(torch.empty(out_channels, *out_size, in_channels, *self.op.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels, *out_size)) if bias else None
        self._set_activation(activation)
        _fan_in_init(self)

    def check_input(self, x: torch.Tensor) -> None:
        h, w = self.op.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, h, w):
            raise ShapeError(
                f"{self!r} expects inputs of shape (batch, {self.in_channels}, {h}, {w}), got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        op = self.op
        return (
            f"{self.in_channels} → {self.out_channels}, input_size={op.input_size}, output_size={op.output_size}, "
            f"kernel_size={op.kernel_size}, stride={op.stride}, padding={op.padding}, activation={self.activation}"
        )


def weight_layers(model: nn.Module) -> list[tuple[str, Layer]]:
    """The model's [`Layer`][bioplaus.core.layers.Layer] modules with their names, in registration order.

    Rules that treat one layer as the output layer (DFA, for instance) take the last one.
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Layer)]


def require_layers(model: nn.Module, rule: str) -> list[tuple[str, Layer]]:
    """Like [`weight_layers`][bioplaus.core.layers.weight_layers], but a model with none raises ``ConfigError`` naming
    the fix."""
    layers = weight_layers(model)
    if not layers:
        raise ConfigError(
            f"rule '{rule}' configures bioplaus layers, and {type(model).__name__} has none: build the model "
            "from bioplaus.core.Linear / Conv2d (bioplaus.nets does) instead of torch.nn.Linear / Conv2d"
        )
    return layers


def install_projections(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.step()`` end with each layer's [`Layer.project_`][bioplaus.core.layers.Layer.project_] (e.g.
    nonnegative weights).

    The runner calls this for every run; call it yourself in a hand-written training loop.
    """
    constrained = [layer for _, layer in weight_layers(model) if layer.nonnegative]
    if constrained:
        optimizer.register_step_post_hook(lambda *_: [layer.project_() for layer in constrained])


@contextmanager
def default_settings(model: nn.Module) -> Iterator[None]:
    """Temporarily run every layer of ``model`` as plain backprop (restored on exit)."""
    saved = [(layer, layer.settings) for _, layer in weight_layers(model)]
    try:
        for layer, _ in saved:
            layer.reset_settings()
        yield
    finally:
        for layer, settings in saved:
            layer.settings = settings
            layer.trace.clear()
