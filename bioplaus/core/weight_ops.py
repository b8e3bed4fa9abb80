"""The weight operations of the layer kinds, and the feedback-weight autograd function.

A layer kind is described by one small, stateless op object with three methods: the forward
``y = op(x; W, b)`` and its two vector-Jacobian products, with respect to the input and to the
weight. :class:`FeedbackTransform` uses them to run the forward with ``W`` while sending errors
backward through another matrix ``B`` of the same shape (feedback alignment, sign symmetry, ...).
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


class FeedbackTransform(torch.autograd.Function):
    r"""Forward with ``W``, backward through ``B``.

    .. math::
        y = \mathrm{op}(x; W) + b, \qquad
        \frac{\partial L}{\partial x} \leftarrow \mathrm{op}^{\top}_{x}(\delta; B), \qquad
        \frac{\partial L}{\partial W} = \mathrm{op}^{\top}_{W}(\delta; x)

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
