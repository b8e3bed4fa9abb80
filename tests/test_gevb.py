"""GEVB and VNNs: the properties of, each able to fail."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bioplaus
from bioplaus.core import Context, TaskSpec, install_projections
from bioplaus.nets.gevb_architectures import Architecture, Stage
from bioplaus.nets.vnn import VNN, VectorLayer, avg_pool, build_vnn, k_dot, vec_conv, vec_linear, vec_local

MNIST_LIKE = TaskSpec((1, 12, 12), 10)


def _layers(model: VNN) -> list[VectorLayer]:
    return [m for m in model.layers if isinstance(m, VectorLayer)]


def _fc(widths, k=10, n_in=20, nonnegative=True, init="auto") -> VNN:
    return build_vnn(TaskSpec((n_in,), k), "fc", Architecture((), tuple(widths)), nonnegative, init)


def _conv(kind: str = "conv", nonnegative=True) -> VNN:
    stages = (Stage(4, 3, 1, 1), Stage(6, 3, 2, 1))
    return build_vnn(MNIST_LIKE, kind, Architecture(stages, (8,)), nonnegative, "auto")


def _rule_grads(model, rule_name, x, y):
    model.zero_grad(set_to_none=True)
    rule = bioplaus.rules.get(rule_name)
    rule.attach(model)
    out = model(x)
    rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
    rule.detach(model)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _autograd(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_vector_layers_equal_the_scalar_op_per_component(float64):
    torch.manual_seed(0)
    lin = vec_linear(5, 4, 3)
    torch.nn.init.normal_(lin.weight)
    torch.nn.init.normal_(lin.bias)
    x = torch.randn(2, 3, 5)
    pre = lin.op.forward(x, lin.weight, lin.bias)
    for k in range(3):
        torch.testing.assert_close(pre[:, k], F.linear(x[:, k], lin.weight, lin.bias[k]))
    conv = vec_conv(2, 4, 3, 1, 1, 3)
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    img = torch.randn(2, 3, 2, 5, 5)
    pre = conv.op.forward(img, conv.weight, conv.bias)
    for k in range(3):
        torch.testing.assert_close(pre[:, k], F.conv2d(img[:, k], conv.weight, conv.bias[k], padding=1))
    first = vec_conv(1, 4, 3, 1, 1, 3, first=True)
    torch.nn.init.normal_(first.weight)
    scalar = torch.randn(2, 1, 5, 5)
    pre = first.op.forward(scalar, first.weight, first.bias)
    for k in range(3):
        torch.testing.assert_close(pre[:, k], F.conv2d(scalar, first.weight[k], padding=1))


def test_gate_is_paired_vector_relu(float64):
    layer = vec_linear(3, 6, 4)
    t = layer.t
    torch.testing.assert_close(t[:, 1::2], -t[:, 0::2])
    h = torch.randn(5, 4, 6)
    r = layer.apply_gate(h)
    active = (h * t).sum(1) >= 0
    torch.testing.assert_close(r, h * active.unsqueeze(1))
    tie = torch.zeros(1, 4, 6)
    assert layer.gate(tie).all()  # ties count as active


@pytest.mark.parametrize("shape, size", [((2, 3, 4, 8, 6), 2), ((2, 3, 7, 9), 2), ((1, 2, 9, 9), 3), ((1, 2, 3, 3), 1)])
def test_avg_pool_equals_torch_avg_pool(shape, size, float64):
    x = torch.randn(*shape, requires_grad=True)
    expected = F.avg_pool2d(x.reshape(-1, *shape[-3:]), size).reshape(*shape[:-2], shape[-2] // size, -1)
    torch.testing.assert_close(avg_pool(x, size), expected)
    assert torch.autograd.gradcheck(lambda v: avg_pool(v, size), (x,))


def test_k_dot_contracts_the_vector_axis(float64):
    x = torch.randn(3, 4, 5, 6, 7)
    t = torch.randn(1, 4, 5, 1, 1)
    e = torch.randn(3, 4, 1, 1, 1)
    torch.testing.assert_close(k_dot(x, t), (x * t).sum(1))
    torch.testing.assert_close(k_dot(x, e), (x * e).sum(1))


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: vec_conv(2, 4, 3, 2, 1, 3, first=True), (5, 2, 7, 7)),
        (lambda: vec_linear(6, 4, 3, first=True), (5, 6)),
        (lambda: vec_local(2, 4, (6, 6), 3, 1, 1, 3, first=True), (5, 2, 6, 6)),
    ],
    ids=["conv", "linear", "local"],
)
def test_broadcast_weight_vjp_equals_the_weight_vjp_of_the_k_maps(make, x_shape, float64):
    """The first layer's ``Σ_b e_bk ∂_W(c_b · op(x_b))`` (per-example route for convolutions)
    equals the weight VJP of the formed output gradient ``e ⊗ c``."""
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(*x_shape)
    pre = layer.op.forward(x, layer.weight, layer.bias)
    credit = torch.rand(pre.shape[0], *pre.shape[2:])
    error = torch.randn(pre.shape[0], pre.shape[1])
    grad_out = error.reshape(*error.shape, *([1] * (credit.dim() - 1))) * credit.unsqueeze(1)
    expected = layer.op.weight_vjp(grad_out, x, layer.weight.shape)
    torch.testing.assert_close(layer.op.broadcast_weight_vjp(credit, error, x, layer.weight.shape), expected)
    (autograd,) = torch.autograd.grad((pre * grad_out).sum(), layer.weight)
    torch.testing.assert_close(expected, autograd)


@pytest.mark.parametrize(
    "make",
    [lambda: _fc((16, 12)), lambda: _conv(), lambda: _conv("lc"), lambda: _fc((16, 12), nonnegative=False)],
    ids=["fc", "conv", "lc", "fc-mixed"],
)
def test_scalar_bp_equals_autograd(make, float64):
    torch.manual_seed(0)
    model = make()
    spec_in = (20,) if isinstance(_layers(model)[0].op.inner, bioplaus.core.LinearOp) else MNIST_LIKE.input_shape
    x, y = torch.randn(7, *spec_in), torch.randint(0, 10, (7,))
    with torch.no_grad():  # break the ON/OFF symmetry so every credit path is exercised
        for layer in _layers(model):
            layer.bias.add_(0.1 * torch.randn_like(layer.bias))
    expected = _autograd(model, x, y)
    got = _rule_grads(model, "scalar_bp", x, y)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)
        assert expected[name].abs().sum() > 0, name


def _perturbed(model: VNN, scale: float = 0.2) -> VNN:
    with torch.no_grad():
        for i, layer in enumerate(_layers(model)):
            layer.weight.add_(scale * torch.rand_like(layer.weight) * layer.weight.abs().mean())
            if i == 0:
                layer.weight.add_(scale * torch.randn_like(layer.weight) * layer.weight.abs().mean())
            layer.bias.add_(scale * torch.randn_like(layer.bias))
    return model


def _sign_violations(model: VNN, n_examples: int = 30) -> tuple[int, int]:
    bad = total = 0
    g = torch.Generator().manual_seed(1)
    for _ in range(n_examples):
        x, y = torch.randn(1, 20, generator=g), torch.randint(0, 10, (1,), generator=g)
        grad = _autograd(model, x, y)
        gevb = _rule_grads(model, "gevb", x, y)
        for name in grad:
            product = grad[name] * gevb[name]
            bad += int((product < -1e-12).sum())
            total += product.numel()
    return bad, total


def test_gevb_is_sign_matched_per_example_in_nonnegative_vnn(float64):
    torch.manual_seed(0)
    model = _perturbed(_fc((64, 64, 64)))
    assert all(layer.weight.min() >= 0 for layer in _layers(model)[1:])
    bad, total = _sign_violations(model)
    assert bad == 0, f"{bad} of {total} entries have opposite signs"


def test_gevb_is_not_sign_matched_in_mixed_vnn(float64):
    torch.manual_seed(0)
    model = _perturbed(_fc((64, 64, 64), nonnegative=False))
    bad, total = _sign_violations(model, n_examples=10)
    assert bad / total > 0.05, f"only {bad} of {total} violations: the negative control should find many"


def test_gevb_is_exact_with_one_hidden_layer_and_unit_readout(float64):
    torch.manual_seed(0)
    model = _fc((16,), nonnegative=False)
    with torch.no_grad():
        _layers(model)[-1].weight.fill_(1.0)
        _layers(model)[0].bias.normal_()
    x, y = torch.randn(9, 20), torch.randint(0, 10, (9,))
    expected = _autograd(model, x, y)
    got = _rule_grads(model, "gevb", x, y)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def _cosines(model: VNN) -> list[float]:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(1, 20, generator=g), torch.randint(0, 10, (1,), generator=g)
    grad, gevb = _autograd(model, x, y), _rule_grads(model, "gevb", x, y)
    names = [n for n in grad if n.endswith("weight")]
    return [F.cosine_similarity(grad[n].flatten(), gevb[n].flatten(), dim=0).item() for n in names]


def test_alignment_at_init_grows_with_width(float64):
    torch.manual_seed(0)
    narrow = _cosines(_fc((32, 32, 32)))
    wide = _cosines(_fc((1024, 1024, 1024)))
    assert wide[0] > narrow[0] and wide[1] > narrow[1]
    assert wide[0] > 0.98 and wide[1] > 0.95
    assert 0.3 < wide[2] < 0.8  # into the last hidden layer: δ = G·w_readout does not concentrate
    assert math.isclose(wide[3], 1.0, abs_tol=1e-9)  # readout is exact


def test_onoff_init_equals_half_width_mixed_vnn(float64):
    torch.manual_seed(0)
    model = _fc((8, 12))
    x = torch.randn(5, 20)
    pre = []
    hooks = [layer.register_forward_hook(lambda m, i, o, pre=pre: pre.append(o)) for layer in _layers(model)[:-1]]
    out = model(x)
    for h in hooks:
        h.remove()
    for h in pre:  # hidden outputs come in opposite pairs (gated: r_odd = −r_even)
        torch.testing.assert_close(h[..., 1::2], -h[..., 0::2])
    half = _fc((4, 6), nonnegative=False, init="he")
    big, small = _layers(model), _layers(half)
    with torch.no_grad():
        small[0].weight.copy_(big[0].weight[:, 0::2])
        small[0].t.copy_(big[0].t[:, 0::2])
        small[1].weight.copy_(big[1].weight[0::2, 0::2] - big[1].weight[0::2, 1::2])
        small[1].t.copy_(big[1].t[:, 0::2])
        small[2].weight.copy_(big[2].weight[:, 0::2] - big[2].weight[:, 1::2])
    torch.testing.assert_close(half(x), out)


def test_weights_past_the_first_layer_stay_nonnegative_after_steps():
    torch.manual_seed(0)
    model = _fc((16, 16))
    rule = bioplaus.rules.get("gevb")
    rule.attach(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    install_projections(model, opt)
    for _ in range(5):
        opt.zero_grad()
        x, y = torch.randn(32, 20), torch.randint(0, 10, (32,))
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        opt.step()
    layers = _layers(model)
    assert all(layer.weight.min() >= 0 for layer in layers[1:])
    assert layers[0].weight.min() < 0 and any(layer.bias.min() < 0 for layer in layers)


def test_gevb_update_is_local(float64):
    """Layer ℓ's GEVB update depends only on (r^{ℓ-1}, G^ℓ, e): change the weights above, keep e."""
    torch.manual_seed(0)
    model = _fc((16, 16))
    x, y = torch.randn(6, 20), torch.randint(0, 10, (6,))
    rule = bioplaus.rules.get("gevb")
    rule.attach(model)
    error = torch.randn(6, 10) / 6

    def first_update():
        model.zero_grad(set_to_none=True)
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, error=error))
        return _layers(model)[0].weight.grad.clone()

    before = first_update()
    with torch.no_grad():
        _layers(model)[1].weight.mul_(torch.rand_like(_layers(model)[1].weight) * 3)
    torch.testing.assert_close(first_update(), before)


def test_rules_reject_non_vector_models():
    with pytest.raises(bioplaus.errors.ConfigError, match="trains vectorized networks"):
        bioplaus.rules.get("gevb").attach(bioplaus.nets.MLP(4, (3,), 2))


def test_gevb_learns_digits():
    res = bioplaus.compare(
        model="vnn",
        rules=["gevb", "bp"],
        task="digits",
        seeds=1,
        epochs=3,
        lr=3e-4,
        model_options={"hidden": [128, 64]},
        progress=False,
    )
    acc = res.summary[res.summary["metric"] == "test/accuracy"].set_index("rule")["mean"]
    assert acc["gevb"] > 0.7 and acc["bp"] > 0.7, acc


def test_registered_architectures_have_the_paper_shapes():
    fc = bioplaus.nets.get("vnn", TaskSpec((1, 28, 28), 10))
    assert [tuple(layer.weight.shape) for layer in _layers(fc)] == [(10, 1024, 784), (512, 1024), (1, 512)]
    conv = bioplaus.nets.get("vnn_conv", TaskSpec((1, 28, 28), 10))
    assert [tuple(layer.weight.shape) for layer in _layers(conv)][-2:] == [(1024, 1568), (1, 1024)]
    lc = bioplaus.nets.get("vnn_lc", TaskSpec((1, 28, 28), 10))
    shapes = [tuple(layer.weight.shape) for layer in _layers(lc)]
    assert shapes == [(10, 32, 28, 28, 1, 3, 3), (32, 14, 14, 32, 3, 3), (1024, 1568), (1, 1024)]
    cifar = bioplaus.nets.get("vnn", TaskSpec((3, 32, 32), 10))
    assert [tuple(layer.weight.shape)[-1] for layer in _layers(cifar)] == [3072, 1024, 512, 512]


@pytest.mark.parametrize("kind", ["conv", "lc"])
def test_feedback_alignment_with_b_equal_w_is_bp_in_vnns(kind, float64):
    """The vector ops' input/weight VJPs (used by FA on VNNs) are exact: FA with B = W equals autograd."""
    torch.manual_seed(0)
    model = _conv(kind)
    x, y = torch.randn(5, *MNIST_LIKE.input_shape, requires_grad=True), torch.randint(0, 10, (5,))
    expected = _autograd(model, x, y)
    expected_x, x.grad = x.grad.clone(), None
    fa = bioplaus.rules.get("fa")
    fa.attach(model)
    for name, layer in bioplaus.core.weight_layers(model):
        fa.feedback[name].copy_(layer.weight.detach())
    model.zero_grad(set_to_none=True)
    fa.update(model, Context(loss=F.cross_entropy(model(x), y)))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(x.grad, expected_x)  # the first layer's input VJP, too


def test_conv_vnn_rejects_flat_inputs():
    with pytest.raises(bioplaus.errors.ShapeError, match="needs image inputs"):
        _conv()(torch.randn(2, 144))
