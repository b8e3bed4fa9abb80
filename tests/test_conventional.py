"""The GEVB paper's conventional baselines: arelu, He and ON/OFF init, the ON/OFF equivalence, shapes, "+" nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bioplaus
from bioplaus import nets, rules
from bioplaus.core import ACTIVATIONS, Context, TaskSpec, install_projections, weight_layers
from bioplaus.errors import ConfigError
from bioplaus.nets.init import he_init_, onoff_init_

MNIST, CIFAR, TINY = TaskSpec((1, 28, 28), 10), TaskSpec((3, 32, 32), 10), TaskSpec((1, 8, 8), 10)


def test_arelu_odd_features_pass_positive_even_features_pass_negative():
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-2.0, -2.0, -2.0, -2.0]])
    torch.testing.assert_close(ACTIVATIONS["arelu"](h), torch.tensor([[0.0, 1.0, 0.0, 1.0], [-2.0, 0.0, -2.0, 0.0]]))
    maps = torch.randn(3, 4, 5, 5)  # features are channels
    out = ACTIVATIONS["arelu"](maps)
    torch.testing.assert_close(out[:, 1::2], maps[:, 1::2].clamp(min=0))
    torch.testing.assert_close(out[:, 0::2], maps[:, 0::2].clamp(max=0))


@pytest.mark.parametrize("first, scale, std", [(False, 1.0, (2 / 800) ** 0.5), (True, 3.0, 3 * (1 / 800) ** 0.5)])
def test_he_init_statistics(first, scale, std):
    w = he_init_(torch.empty(1000, 800), 800, first, scale, generator=torch.Generator().manual_seed(0))
    assert abs(w.mean()) < 0.05 * std and abs(w.std() / std - 1) < 0.1
    again = he_init_(torch.empty(1000, 800), 800, first, scale, generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, again)


@pytest.mark.parametrize(
    "shape, in_axis, fan_in",
    [((600, 800), 1, 800), ((64, 32, 3, 3), 1, 32 * 9), ((32, 6, 6, 64, 3, 3), 3, 64 * 9)],
    ids=["linear", "conv", "local"],
)
def test_onoff_hidden_layer_structure_and_statistics(shape, in_axis, fan_in):
    w = onoff_init_(torch.empty(shape), fan_in, in_axis=in_axis).movedim(in_axis, 1)  # (out, in, ...)
    assert w.min() >= 0
    assert torch.equal(w[0::2, 0::2], w[1::2, 1::2]) and torch.equal(w[0::2, 1::2], w[1::2, 0::2])
    assert torch.all(w[0::2, 0::2] * w[0::2, 1::2] == 0)  # relu(A) and relu(−A) never overlap
    a = w[0::2, 0::2] - w[0::2, 1::2]
    assert abs(a.std() / (4 / fan_in) ** 0.5 - 1) < 0.1


def test_onoff_first_layer_and_readout():
    first = onoff_init_(torch.empty(1000, 784), 784, first=True, scale=2.0)
    assert torch.equal(first[1::2], -first[0::2]) and first.min() < 0
    assert abs(first[0::2].std() / (2 / 784**0.5) - 1) < 0.1
    for n_out in (1, 10):
        readout = onoff_init_(torch.empty(n_out, 4000), 4000, readout=True)
        assert readout.min() >= 0 and torch.all(readout[:, 0::2] * readout[:, 1::2] == 0)
        assert abs((readout[:, 0::2] - readout[:, 1::2]).std() / (4 / 4000) ** 0.5 - 1) < 0.1


def test_onoff_rejects_unpaired_axes():
    with pytest.raises(ConfigError, match=r"pairs the inputs \(weight axis 1\), which needs an even size, got 7"):
        onoff_init_(torch.empty(4, 7), 7)
    with pytest.raises(ConfigError, match=r"pairs the outputs \(weight axis 0\), which needs an even size, got 5"):
        onoff_init_(torch.empty(5, 7), 7, first=True)
    onoff_init_(torch.empty(5, 8), 8, readout=True)  # a readout pairs inputs only
    with pytest.raises(ConfigError, match="both the first layer and the readout"):
        onoff_init_(torch.empty(4, 4), 4, first=True, readout=True)


def test_nonnegative_fc_net_at_init_is_the_half_width_mixed_net(float64):
    """ON/OFF + arelu + zero biases: the width-2N net computes the width-N net whose weights are the A's."""
    torch.manual_seed(0)
    model = nets.get("conventional_fc", MNIST, nonnegative=True)
    fc1, fc2, readout = (layer.weight.detach() for _, layer in weight_layers(model))
    a1 = fc1[0::2]  # W[even] = A, W[odd] = −A
    a2 = fc2[0::2, 0::2] - fc2[0::2, 1::2]  # relu(A) − relu(−A)
    a3 = readout[:, 0::2] - readout[:, 1::2]
    assert a2.shape == (256, 512) and a3.shape == (10, 256)
    x = torch.randn(8, 1, 28, 28)

    def gate(h):  # arelu on the even units, which the width-N net is made of
        return h.clamp(max=0)

    mixed = gate(gate(x.flatten(1) @ a1.T) @ a2.T) @ a3.T
    torch.testing.assert_close(model(x), mixed, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["conventional_fc", "conventional_conv", "conventional_lc"])
def test_onoff_pairs_stay_opposite_in_every_hidden_layer(name, float64):
    torch.manual_seed(0)
    model = nets.get(name, MNIST, nonnegative=True)
    layers = weight_layers(model)
    for _, layer in layers:
        layer.configure(record={"input", "pre"})
    model(torch.randn(4, 1, 28, 28))
    for layer_name, layer in layers[:-1]:
        pre = layer.recorded("pre")
        torch.testing.assert_close(pre[:, 1::2], -pre[:, 0::2], msg=f"{layer_name}: h_odd ≠ −h_even")
    readout = layers[-1][1]
    r, w = readout.recorded("input"), readout.weight
    torch.testing.assert_close(readout.recorded("pre"), r[:, 0::2] @ (w[:, 0::2] - w[:, 1::2]).T)


PAPER_SHAPES = {
    ("conventional_fc", "mnist"): [(1024, 784), (512, 1024), (10, 512)],
    ("conventional_fc", "cifar"): [(1024, 3072), (512, 1024), (512, 512), (10, 512)],
    ("conventional_conv", "mnist"): [(64, 1, 3, 3), (32, 64, 3, 3), (1024, 1568), (10, 1024)],
    ("conventional_conv", "cifar"): [(128, 3, 5, 5), (64, 128, 5, 5), (64, 64, 2, 2), (1024, 1024), (10, 1024)],
    ("conventional_lc", "mnist"): [(32, 28, 28, 1, 3, 3), (32, 14, 14, 32, 3, 3), (1024, 1568), (10, 1024)],
    ("conventional_lc", "cifar"): [(64, 32, 32, 3, 5, 5), (32, 16, 16, 64, 5, 5), (32, 4, 4, 32, 2, 2), (512, 512)]
    + [(10, 512)],
}


@pytest.mark.parametrize("name, data", list(PAPER_SHAPES), ids=[f"{n}-{d}" for n, d in PAPER_SHAPES])
def test_models_have_the_papers_shapes(name, data):
    spec = MNIST if data == "mnist" else CIFAR
    torch.manual_seed(0)
    model = nets.get(name, spec)
    assert model.arch == data
    layers = [layer for _, layer in weight_layers(model)]
    assert [tuple(layer.weight.shape) for layer in layers] == PAPER_SHAPES[name, data]
    assert all(layer.bias.abs().sum() == 0 for layer in layers)
    assert all(layer.activation == "arelu" for layer in layers[:-1]) and layers[-1].activation is None
    assert model(torch.randn(2, *spec.input_shape)).shape == (2, 10)


def test_modules_are_named_in_forward_order():
    conv = nets.get("conventional_conv", MNIST)
    assert [n for n, _ in conv.named_children()] == ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "readout"]
    lc = nets.get("conventional_lc", TINY, arch="cifar")  # the third LC stage has no pool after it
    names = ["lc1", "pool1", "lc2", "pool2", "lc3", "flatten", "fc1", "readout"]
    assert [n for n, _ in lc.named_children()] == names


def test_flatten_is_channels_last():
    model = nets.get("conventional_conv", MNIST)
    maps = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    flat = model.flatten(maps)
    assert flat[0, :3].tolist() == maps[0, :, 0, 0].tolist()  # the channels of one position are adjacent


def test_other_input_shapes_fall_back_to_the_mnist_column_or_say_why_not():
    fc = nets.get("conventional_fc", TINY)
    assert [tuple(layer.weight.shape) for _, layer in weight_layers(fc)] == [(1024, 64), (512, 1024), (10, 512)]
    assert nets.get("conventional_fc", TaskSpec((20,), 4))(torch.randn(3, 20)).shape == (3, 4)
    assert nets.get("conventional_lc", TINY).fc1.in_features == 32 * 2 * 2
    forced = nets.get("conventional_fc", MNIST, arch="cifar")
    assert [layer.out_features for _, layer in weight_layers(forced)] == [1024, 512, 512, 10]
    with pytest.raises(ConfigError, match=r"conventional_conv: inputs of shape \(1, 3, 3\) are too small"):
        nets.get("conventional_conv", TaskSpec((1, 3, 3), 10))
    with pytest.raises(ConfigError, match=r"conventional_lc needs image inputs"):
        nets.get("conventional_lc", TaskSpec((20,), 4))
    with pytest.raises(ConfigError, match="unknown arch 'imagenet'; choose one of auto, mnist, cifar"):
        nets.get("conventional_fc", MNIST, arch="imagenet")
    with pytest.raises(ConfigError, match="unknown init 'xavier'"):
        nets.get("conventional_fc", MNIST, init="xavier")


@pytest.mark.parametrize("name", ["conventional_fc", "conventional_conv", "conventional_lc"])
def test_plus_nets_stay_nonnegative_past_the_first_layer(name):
    torch.manual_seed(0)
    model = nets.get(name, TINY, nonnegative=True)
    layers = [layer for _, layer in weight_layers(model)]
    assert [layer.nonnegative for layer in layers] == [False] + [True] * (len(layers) - 1)
    rule = rules.get("dfa", low=0.0)
    rule.attach(model)
    optimizer = torch.optim.Adam(rule.param_groups(model), lr=0.05)
    install_projections(model, optimizer)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        optimizer.zero_grad()
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        optimizer.step()
    assert all(layer.weight.min() >= 0 for layer in layers[1:])
    assert layers[0].weight.min() < 0


def test_conventional_fc_learns_digits_with_bp_and_dfa():
    res = bioplaus.compare(model="conventional_fc", rules=["bp", "dfa"], task="digits", epochs=1, progress=False)
    accuracy = res.summary[res.summary["metric"] == "test/accuracy"].set_index("rule")["mean"]
    assert accuracy["bp"] > 0.3 and accuracy["dfa"] > 0.3, accuracy.to_dict()
