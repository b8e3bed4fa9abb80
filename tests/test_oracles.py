"""Oracle tests: each rule's degenerate case equals backprop exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bioplaus import rules
from bioplaus.core import Context, TaskSpec, default_settings, weight_layers
from bioplaus.nets import MLP, ConvNet


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy of every parameter's .grad, by name (zeros where none)."""
    return {
        n: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()) for n, p in model.named_parameters()
    }


def _batch(spec: TaskSpec, n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=g)
    y = torch.randint(0, spec.n_out, (n,), generator=g)
    return x, y


def _rule_grads(model, rule, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
    return grads(model)


def _bp_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return grads(model)


def _assert_equal(a: dict, b: dict, tol: float = 1e-6):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=tol, atol=tol, msg=f"gradient of {name} differs")
        assert b[name].abs().sum() > 0, f"{name} has a zero gradient: the oracle would be vacuous"


MODELS = {
    "mlp": (TaskSpec((12,), 5), lambda s: MLP(s.in_features, (16, 8), s.n_out, "tanh")),
    "convnet": (TaskSpec((2, 8, 8), 4), lambda s: ConvNet(s.input_shape, (3, 4), 3, 8, s.n_out, "tanh")),
}


def _model_batch_and_bp_grads(kind: str, seed: int = 0):
    spec, build = MODELS[kind]
    torch.manual_seed(seed)
    model = build(spec)
    x, y = _batch(spec)
    return model, x, y, _bp_grads(model, x, y)


@pytest.mark.parametrize("kind", list(MODELS))
def test_fa_with_feedback_equal_to_weights_is_bp(kind, float64):
    model, x, y, expected = _model_batch_and_bp_grads(kind)
    fa = rules.get("fa")
    fa.attach(model)
    for name, layer in weight_layers(model):
        fa.feedback[name].copy_(layer.weight.detach())
    _assert_equal(_rule_grads(model, fa, x, y), expected)


@pytest.mark.parametrize("kind", list(MODELS))
def test_fa_with_random_feedback_differs_from_bp(kind, float64):
    model, x, y, expected = _model_batch_and_bp_grads(kind)
    fa = rules.get("fa")
    fa.attach(model)
    got = _rule_grads(model, fa, x, y)
    first = weight_layers(model)[0][0] + ".weight"
    last = weight_layers(model)[-1][0] + ".weight"
    assert not torch.allclose(got[first], expected[first], atol=1e-3)
    torch.testing.assert_close(got[last], expected[last])  # the output layer's gradient is exact


def test_fa_feedback_as_function_of_weights_is_bp(float64):
    model, x, y, expected = _model_batch_and_bp_grads("convnet", seed=1)
    for _, layer in weight_layers(model):
        layer.configure(feedback=lambda w: w)
    _assert_equal(_rule_grads(model, rules.get("bp"), x, y), expected)


def test_dfa_one_hidden_layer_with_feedback_equal_to_readout_is_bp(float64):
    spec = TaskSpec((10,), 4)
    torch.manual_seed(0)
    model = MLP(spec.in_features, (7,), spec.n_out, "relu")
    x, y = _batch(spec, n=32)
    expected = _bp_grads(model, x, y)
    readout = (
        model.layers.readout.weight.detach().clone()
    )  # shape (n_out, hidden): B = W₂ (W₂ᵀ in the in×out convention)
    dfa = rules.get("dfa", feedback=readout)
    dfa.attach(model)
    _assert_equal(_rule_grads(model, dfa, x, y), expected)


def test_dfa_two_hidden_layers_differs_from_bp_and_keeps_output_exact(float64):
    spec = TaskSpec((10,), 4)
    torch.manual_seed(0)
    model = MLP(spec.in_features, (9, 7), spec.n_out, "relu")
    x, y = _batch(spec, n=32)
    expected = _bp_grads(model, x, y)
    dfa = rules.get("dfa", seed=3)
    dfa.attach(model)
    got = _rule_grads(model, dfa, x, y)
    assert dfa.matrix.shape == (4, 9)  # one matrix, as wide as the widest hidden layer
    torch.testing.assert_close(got["layers.readout.weight"], expected["layers.readout.weight"])
    assert not torch.allclose(got["layers.fc1.weight"], expected["layers.fc1.weight"], atol=1e-3)
    # layer 2's update is δ₂ = f'(a₂) ⊙ (e B[:, :7]); check it against the formula
    out = model(x)
    e = torch.autograd.grad(F.cross_entropy(out, y), out)[0]
    h1 = model.layers.fc1(x)
    a2 = F.linear(h1, model.layers.fc2.weight, model.layers.fc2.bias)
    delta = (a2 > 0).double() * (e @ dfa.matrix[:, :7])
    torch.testing.assert_close(got["layers.fc2.weight"], delta.T @ h1)


def test_dfa_sends_no_error_across_layers(float64):
    """Given the broadcast error, a hidden layer's DFA update does not depend on the weights above it."""
    spec = TaskSpec((10,), 4)
    torch.manual_seed(0)
    model = MLP(spec.in_features, (9, 7), spec.n_out, "relu")
    x, y = _batch(spec)
    error = torch.randn(len(y), spec.n_out, dtype=torch.float64) / len(y)
    dfa = rules.get("dfa", seed=0)
    dfa.attach(model)

    def fc1_updates():
        model.zero_grad(set_to_none=True)
        out = model(x)
        dfa.update(model, Context(loss=F.cross_entropy(out, y), output=out, error=error))
        dfa_grad = model.layers.fc1.weight.grad.clone()
        with default_settings(model):
            bp_grad = torch.autograd.grad(F.cross_entropy(model(x), y), model.layers.fc1.weight)[0]
        return dfa_grad, bp_grad

    dfa_before, bp_before = fc1_updates()
    with torch.no_grad():
        model.layers.fc2.weight.add_(torch.randn_like(model.layers.fc2.weight))
    dfa_after, bp_after = fc1_updates()
    torch.testing.assert_close(dfa_before, dfa_after)
    assert not torch.allclose(bp_before, bp_after, atol=1e-4)  # BP's credit does cross the layer


def test_dfa_conv_layers_use_flattened_width(float64):
    model, x, y, _ = _model_batch_and_bp_grads("convnet")
    dfa = rules.get("dfa", seed=0)
    dfa.attach(model)
    got = _rule_grads(model, dfa, x, y)
    assert dfa.matrix.shape == (4, 3 * 8 * 8)  # widest hidden output: conv1, C·H·W
    assert all(g.abs().sum() > 0 for g in got.values())
