"""The locally connected layer: forward against a loop over positions, its VJPs, FA = BP, shape errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioplaus import rules
from bioplaus.core import Context, Linear, Local2d, weight_layers
from bioplaus.errors import ConfigError, ShapeError

# non-square kernels, strides and paddings, so that a swapped axis cannot pass; in the second, the
# strided windows leave the last input row and column unused
SMALL = dict(in_channels=2, out_channels=3, input_size=(5, 6), kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))
UNEVEN = dict(in_channels=3, out_channels=2, input_size=(6, 8), kernel_size=(3, 2), stride=(2, 3), padding=(0, 1))
CASES = pytest.mark.parametrize("case", [SMALL, UNEVEN], ids=["small", "uneven"])


def _reference(x: torch.Tensor, layer: Local2d) -> torch.Tensor:
    """``y[:, o, i, j] = Σ W[o, i, j] · patch(i, j) + b[o, i, j]``, one output position at a time."""
    (kh, kw), (sh, sw), (ph, pw) = layer.op.kernel_size, layer.op.stride, layer.op.padding
    padded = F.pad(x, (pw, pw, ph, ph))
    out_h, out_w = layer.op.output_size
    y = torch.empty(x.shape[0], layer.out_channels, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            y[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", patch, layer.weight[:, i, j]) + layer.bias[:, i, j]
    return y


def _input(layer: Local2d, batch: int = 4, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(batch, layer.in_channels, *layer.op.input_size, requires_grad=requires_grad)


def test_weight_layout():
    layer = Local2d(**SMALL)
    assert layer.weight.shape == (3, 3, 5, 2, 3, 2) and layer.bias.shape == (3, 3, 5)
    assert Local2d(**UNEVEN).weight.shape == (2, 2, 3, 3, 3, 2)


@CASES
def test_forward_matches_a_loop_over_positions(case, float64):
    torch.manual_seed(0)
    layer = Local2d(**case)
    x = _input(layer)
    torch.testing.assert_close(layer(x), _reference(x, layer))
    tanh_layer = Local2d(**case, activation="tanh")
    torch.testing.assert_close(tanh_layer(x), torch.tanh(_reference(x, tanh_layer)))


def test_default_init_uses_the_fan_in_of_one_position():
    torch.manual_seed(0)
    layer = Local2d(4, 8, (10, 10), 3, padding=1)
    bound = 1 / (4 * 3 * 3) ** 0.5
    assert layer.fan_in == 36
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
    assert layer.bias.abs().max() <= bound


@CASES
def test_feedback_path_with_feedback_equal_to_weight_is_autograd(case, float64):
    torch.manual_seed(0)
    layer = Local2d(**case, activation="tanh")
    x = _input(layer, requires_grad=True)
    params = [x, layer.weight, layer.bias]
    expected = torch.autograd.grad(layer(x).square().sum(), params)
    layer.configure(feedback=layer.weight.detach().clone())
    got = torch.autograd.grad(layer(x).square().sum(), params)
    for name, a, b in zip(("input", "weight", "bias"), got, expected, strict=True):
        torch.testing.assert_close(a, b, msg=f"{name} gradient differs")
        assert b.abs().sum() > 0


@CASES
def test_feedback_path_sends_the_input_error_through_the_feedback_weights(case, float64):
    torch.manual_seed(0)
    layer = Local2d(**case)
    feedback = torch.randn_like(layer.weight)
    x = _input(layer, requires_grad=True)
    grad_out = torch.randn(4, layer.out_channels, *layer.op.output_size)
    layer.configure(feedback=feedback)
    got = torch.autograd.grad(layer(x), x, grad_out)[0]
    expected = torch.autograd.grad(layer.op.forward(x, feedback, None), x, grad_out)[0]
    torch.testing.assert_close(got, expected)


def test_fa_with_feedback_equal_to_weights_is_bp_in_a_net_with_local2d(float64):
    torch.manual_seed(0)
    model = nn.Sequential(
        Local2d(2, 4, (6, 6), 3, padding=1, activation="tanh"),
        nn.AvgPool2d(2),
        Local2d(4, 4, (3, 3), 2, activation="tanh"),
        nn.Flatten(),
        Linear(4 * 2 * 2, 5),
    )
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 5, (8,))
    params = dict(model.named_parameters())
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    fa = rules.get("fa")
    fa.attach(model)
    for name, layer in weight_layers(model):
        fa.feedback[name].copy_(layer.weight.detach())
    out = model(x)
    fa.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
    for (name, p), g in zip(params.items(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, msg=f"gradient of {name} differs")
        assert g.abs().sum() > 0


def test_shape_errors_are_clear():
    layer = Local2d(**SMALL)
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(batch, 2, 5, 6\), got \(4, 2, 6, 6\)"):
        layer(torch.randn(4, 2, 6, 6))  # weights are tied to the input size
    with pytest.raises(ShapeError, match=r"\(batch, 2, 5, 6\), got \(4, 3, 5, 6\)"):
        layer(torch.randn(4, 3, 5, 6))
    with pytest.raises(ShapeError, match=r"\(batch, 2, 5, 6\), got \(2, 5, 6\)"):
        layer(torch.randn(2, 5, 6))
    with pytest.raises(ConfigError, match=r"\(7, 7\) kernel with padding \(0, 0\) does not fit inputs of size"):
        Local2d(1, 2, (5, 5), 7)
