"""Layers, settings, context and registries: the core every rule builds on."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import bioplaus
from bioplaus.core import (
    Context,
    Conv2d,
    Linear,
    Rule,
    default_settings,
    install_projections,
    require_layers,
    weight_layers,
)
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets import MLP


def test_linear_and_conv_match_torch():
    torch.manual_seed(0)
    lin = Linear(5, 3, "relu")
    x = torch.randn(4, 5)
    torch.testing.assert_close(lin(x), F.relu(F.linear(x, lin.weight, lin.bias)))
    conv = Conv2d(2, 3, 3, stride=2, padding=1, activation="tanh")
    img = torch.randn(4, 2, 9, 9)
    torch.testing.assert_close(conv(img), torch.tanh(F.conv2d(img, conv.weight, conv.bias, 2, 1)))


def test_linear_accepts_leading_axes_with_feedback(float64):
    lin = Linear(5, 3)
    x = torch.randn(2, 7, 5, requires_grad=True)
    ref = torch.autograd.grad(lin(x).square().sum(), [x, lin.weight, lin.bias])
    lin.configure(feedback=lin.weight.detach().clone())
    got = torch.autograd.grad(lin(x).square().sum(), [x, lin.weight, lin.bias])
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_recording_detaching_and_reset():
    lin = Linear(4, 2, "relu")
    x = torch.randn(3, 4, requires_grad=True)
    lin(x)
    assert lin.trace == {}  # nothing recorded unless asked
    lin.configure(record={"input", "pre", "output"}, detach_input=True)
    out = lin(x)
    assert set(lin.trace) == {"input", "pre", "output"}
    assert lin.recorded("output") is out
    torch.testing.assert_close(lin.recorded("output"), F.relu(lin.recorded("pre")))
    out.sum().backward()
    assert x.grad is None  # detached input: no gradient reaches below
    lin.reset_settings()
    assert lin.trace == {} and lin.settings == type(lin.settings)()


def test_configure_rejects_unknown_settings_and_records():
    lin = Linear(4, 2)
    with pytest.raises(ConfigError, match="no setting 'feedbak'.*did you mean 'feedback'"):
        lin.configure(feedbak=None)
    with pytest.raises(ConfigError, match="cannot record \\['gate'\\]"):
        lin.configure(record={"gate"})
    with pytest.raises(ConfigError, match="has not recorded 'input'"):
        lin.recorded("input")


def test_shape_errors_name_the_layer_and_shapes():
    lin = Linear(784, 10)
    with pytest.raises(ShapeError, match=r"last axis has 784 features, got shape \(2, 64\)"):
        lin(torch.randn(2, 64))
    conv = Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"\(batch, 3, height, width\), got \(2, 1, 8, 8\)"):
        conv(torch.randn(2, 1, 8, 8))
    lin.configure(feedback=torch.zeros(3, 3))
    with pytest.raises(ShapeError, match=r"must have the weight's shape \(10, 784\)"):
        lin(torch.randn(2, 784))


def test_default_settings_restores_configuration():
    model = MLP(4, (3,), 2)
    rule = bioplaus.rules.get("fa")
    rule.attach(model)
    before = [layer.settings for _, layer in weight_layers(model)]
    with default_settings(model):
        assert all(layer.settings.feedback is None for _, layer in weight_layers(model))
    assert [layer.settings for _, layer in weight_layers(model)] == before
    rule.detach(model)
    assert all(layer.settings.feedback is None for _, layer in weight_layers(model))


def test_models_with_recorded_graphs_can_be_copied_and_pickled():
    model = MLP(4, (3,), 2)
    bioplaus.rules.get("dfa").attach(model)
    model(torch.randn(2, 4))
    assert "output" in model.layers.fc1.trace
    clone = copy.deepcopy(model)
    assert clone.layers.fc1.trace == {}
    assert pickle.loads(pickle.dumps(model)).layers.fc1.settings.detach_input


def test_rules_need_bioplaus_layers():
    with pytest.raises(ConfigError, match="has none: build the model from bioplaus.core.Linear"):
        require_layers(torch.nn.Sequential(torch.nn.Linear(3, 2)), "fa")


def test_context_output_error_and_requirements():
    out = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    ctx = Context(loss=F.cross_entropy(out, y), output=out)
    expected = (F.softmax(out, 1) - F.one_hot(y, 3)) / 5
    torch.testing.assert_close(ctx.output_error(), expected.detach())
    with pytest.raises(ConfigError, match="needs ctx.loss"):
        Context().require("loss", rule="rule 'bp'")
    with pytest.raises(ConfigError, match="no signal 'td'.*signals present: reward"):
        Context(signals={"reward": 1.0}).signal("td")


def test_rule_registry_lists_builds_and_rejects():
    assert {"bp", "fa", "dfa"} <= set(bioplaus.rules.available())
    dfa = bioplaus.rules.get("dfa", low=0.0)
    assert dfa.low == 0.0 and dfa.hparams()["low"] == 0.0
    known = "known rules: bp, (\\w+, )*dfa, (\\w+, )*fa"
    with pytest.raises(ConfigError, match=f"unknown rule 'dfx' \\(did you mean 'dfa'\\?\\); {known}"):
        bioplaus.rules.get("dfx")
    with pytest.raises(ConfigError, match="rule 'fa' has no option 'scal'.*its options: scale, seed"):
        bioplaus.rules.get("fa", scal=2)
    assert all(bioplaus.rules.describe().values())  # every rule has a one-line description


def test_model_and_task_registries():
    assert {"mlp", "convnet"} <= set(bioplaus.nets.available())
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "synthetic"} <= set(bioplaus.tasks.available())
    with pytest.raises(ConfigError, match="unknown model 'mpl'.*did you mean 'mlp'"):
        bioplaus.nets.get("mpl", bioplaus.core.TaskSpec((4,), 2))


def test_batch_rule_is_not_online_and_online_rule_needs_step():
    with pytest.raises(TypeError, match="is not online"):
        bioplaus.rules.get("bp").step(None, Context())

    class Online(Rule):
        online = True

    assert Online().hparams() == {} and repr(Online()) == "Online()"

    with pytest.raises(NotImplementedError, match="learns online"):
        Online().update(None, Context())


def test_nonnegative_layers_are_projected_after_each_step():
    torch.manual_seed(0)
    model = MLP(6, (8,), 3)
    model.layers.readout.nonnegative = True
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    install_projections(model, opt)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
        opt.step()
        assert model.layers.readout.weight.min() >= 0  # projected, not reparametrised
    assert model.layers.fc1.weight.min() < 0 and model.layers.readout.bias.min() < 0  # others stay free
