"""The weight operations of the layer kinds, and the feedback-weight autograd function.

A layer kind is described by one small, stateless op object with three methods: the forward
``y = op(x; W, b)`` and its two vector-Jacobian products, with respect to the input and to the
weight. [`FeedbackTransform`][bioplaus.core.weight_ops.FeedbackTransform] uses them to run the forward with ``W`` while
sending errors backward through another matrix ``B`` of the same shape (feedback alignment, sign symmetry, ...).
Adding a layer kind means adding one op here, not one code path per rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn import grad as nn_grad


@dataclass(frozen=True)
class LinearOp:
    """``y = x Wᵀ + b`` over the last axis of ``x`` (any leading axes)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def input_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return grad_out @ weight

    def weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        return grad_out.reshape(-1, grad_out.shape[-1]).T @ x.reshape(-1, x.shape[-1])

    def bias_vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.reshape(-1, grad_out.shape[-1]).sum(0)


@dataclass(frozen=True)
class Conv2dOp:
    """2-D cross-correlation with the given stride, padding, dilation and groups."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def input_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return nn_grad.conv2d_input(
            input_shape, weight, grad_out, self.stride, self.padding, self.dilation, self.groups
        )

    def weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        return nn_grad.conv2d_weight(x, weight_shape, grad_out, self.stride, self.padding, self.dilation, self.groups)

    def bias_vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.sum((0, 2, 3))

    def per_example_weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        """Each example's weight gradient, ``(batch, *weight_shape)``: the patches of ``x`` (im2col)
        times ``grad_out``, one batched product (``groups = 1``)."""
        if self.groups != 1:
            raise NotImplementedError("per-example weight gradients of grouped convolutions")
        patches = F.unfold(x, weight_shape[-2:], self.dilation, self.padding, self.stride)  # (B, C·kh·kw, L)
        return torch.bmm(grad_out.flatten(2), patches.transpose(1, 2)).reshape(x.shape[0], *weight_shape)


@dataclass(frozen=True)
class Local2dOp:
    r"""Locally connected 2-D layer: a convolution whose filters are not shared across positions.

    Every output position ``(i, j)`` has its own filter (``x`` is zero outside the image):

    $$
    y_{b,o,i,j} = \sum_{c,u,v} W_{o,i,j,c,u,v}\, x_{b,c,\,s_h i + u - p_h,\,s_w j + v - p_w} + b_{o,i,j}
    $$

    ``W`` has shape ``(out_channels, out_h, out_w, in_channels, kh, kw)`` and ``b`` shape
    ``(out_channels, out_h, out_w)`` (the layout of the GEVB paper's code). Every map is a
    matrix product batched over the ``L = out_h·out_w`` positions: the patches of the
    channels-last input are gathered as ``(L, batch, kh·kw·C)`` (one strided copy, via
    ``Tensor.unfold``) and the filters as ``(L, out_channels, kh·kw·C)``. The input VJP, the
    adjoint of that gather, adds each kernel offset's slice of the patch gradients back into the
    padded input: a loop over the ``kh·kw`` offsets, never over positions. (``F.unfold`` and
    ``F.fold`` compute the same maps, but their ``(batch, C·kh·kw, L)`` layout needs a large
    transpose: BP, FA and DFA steps of the paper's CIFAR LC net at batch 128 took 2.3–2.7× as
    long with them on a 2-core CPU.)

    Attributes:
        input_size: ``(height, width)`` of the input the weights were built for.
        kernel_size: ``(kh, kw)``.
        stride: step between neighbouring patches.
        padding: zero padding on each side.
    """

    input_size: tuple[int, int]
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def output_size(self) -> tuple[int, int]:
        """``(out_h, out_w)``: ``⌊(n + 2p − k) / s⌋ + 1`` per axis."""
        h, w = (
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(self.input_size, self.kernel_size, self.stride, self.padding, strict=True)
        )
        return h, w

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) → (L, B, kh·kw·C)``."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1).contiguous()  # channels-last
        windows = padded.unfold(1, kh, sh).unfold(2, kw, sw)  # (B, oh, ow, C, kh, kw), a view
        return windows.permute(1, 2, 0, 4, 5, 3).reshape(-1, x.shape[0], windows[0, 0, 0].numel())

    @staticmethod
    def _filters(weight: torch.Tensor) -> torch.Tensor:
        """``(O, oh, ow, C, kh, kw) → (L, O, kh·kw·C)``, matching `_patches`."""
        out_channels, out_h, out_w = weight.shape[:3]
        return weight.permute(1, 2, 0, 4, 5, 3).reshape(out_h * out_w, out_channels, -1)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = torch.bmm(self._patches(x), self._filters(weight).transpose(1, 2))  # (L, B, O)
        y = y.permute(1, 2, 0).reshape(x.shape[0], weight.shape[0], *self.output_size)
        return y if bias is None else y + bias

    def input_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (oh, ow), (batch, channels, h, w) = self.output_size, input_shape
        grad_patches = torch.bmm(grad_out.flatten(2).permute(2, 0, 1), self._filters(weight))  # (L, B, kh·kw·C)
        grad_patches = grad_patches.reshape(oh, ow, batch, kh, kw, channels).permute(2, 0, 1, 3, 4, 5)
        grad = grad_out.new_zeros(batch, h + 2 * ph, w + 2 * pw, channels)
        for u in range(kh):
            for v in range(kw):
                grad[:, u : u + sh * (oh - 1) + 1 : sh, v : v + sw * (ow - 1) + 1 : sw] += grad_patches[:, :, :, u, v]
        return grad[:, ph : ph + h, pw : pw + w].permute(0, 3, 1, 2)

    def weight_vjp(self, grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        out_channels, oh, ow, channels, kh, kw = weight_shape
        grad = torch.bmm(grad_out.flatten(2).permute(2, 1, 0), self._patches(x))  # (L, O, kh·kw·C)
        return grad.reshape(oh, ow, out_channels, kh, kw, channels).permute(2, 0, 1, 5, 3, 4)

    def bias_vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.sum(0)


class FeedbackTransform(torch.autograd.Function):
    r"""Forward with ``W``, backward through ``B``.

    $$
    y = \mathrm{op}(x; W) + b, \qquad
    \frac{\partial L}{\partial x} \leftarrow \mathrm{op}^{\top}_{x}(\delta; B), \qquad
    \frac{\partial L}{\partial W} = \mathrm{op}^{\top}_{W}(\delta; x)
    $$

    where ``δ = ∂L/∂y``. With ``B = W`` this is exactly the ordinary gradient (the oracle that
    the tests check); with a fixed random ``B`` it is feedback alignment (Lillicrap et al., 2016).
    """

    @staticmethod
    def forward(x, weight, bias, feedback, op):  # type: ignore[override]
        return op.forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, bias, feedback, op = inputs
        ctx.op = op
        ctx.weight_shape = weight.shape
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, feedback)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        op = ctx.op
        grad_x = op.input_vjp(grad_out, feedback, x.shape) if ctx.needs_input_grad[0] else None
        grad_w = op.weight_vjp(grad_out, x, ctx.weight_shape) if ctx.needs_input_grad[1] else None
        grad_b = op.bias_vjp(grad_out) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None
