"""Sign symmetry, Kolen-Pollack and weight mirrors: oracles, convergence of B to W, and the runner's diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bioplaus
from bioplaus import nets, rules
from bioplaus.analysis import feedback_geometry
from bioplaus.core import Context, Linear, TaskSpec, weight_layers
from bioplaus.errors import ConfigError
from bioplaus.rules import SignFeedback


def _batch(spec: TaskSpec, n: int = 16, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *spec.input_shape, generator=g, dtype=dtype), torch.randint(0, spec.n_out, (n,), generator=g)


def _grads(model, x, y, configure=None):
    for _, layer in weight_layers(model):
        layer.reset_settings()
        if configure is not None:
            layer.configure(feedback=configure)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_sign_feedback_with_weight_magnitudes_is_backprop(kind):
    spec = TaskSpec((1, 8, 8), 4)
    torch.manual_seed(0)
    model = nets.get(kind, spec, **({"hidden": [12, 12]} if kind == "mlp" else {"channels": [3, 4], "hidden": 8}))
    model = model.double()
    x, y = _batch(spec)
    exact = _grads(model, x, y)
    signed = _grads(model, x, y, SignFeedback(torch.abs))  # |W| ⊙ sign(W) = W
    assert all(torch.equal(a, b) for a, b in zip(exact, signed, strict=True))


def test_sign_symmetry_variants_draw_their_magnitudes_as_documented():
    spec = TaskSpec((40,), 30)
    torch.manual_seed(0)
    for variant in ("usf", "frsf", "brsf"):
        model = nets.get("mlp", spec, hidden=[50])
        rule = rules.get("sign_symmetry", variant=variant)
        rule.attach(model)
        layer = model.get_submodule(next(n for n, _ in weight_layers(model)))
        weight = layer.weight.detach()
        first, second = (layer.settings.feedback(weight) for _ in range(2))
        assert torch.equal(torch.sign(first), torch.sign(weight))
        bound = 1 / math.sqrt(layer.fan_in)
        magnitude = first.abs()
        if variant == "usf":
            assert torch.allclose(magnitude, torch.full_like(weight, bound / math.sqrt(3)))
        else:  # |U(−b, b)|: uniform on [0, b], mean b/2
            assert magnitude.max() <= bound and abs(float(magnitude.mean()) / bound - 0.5) < 0.03
        assert torch.equal(first, second) == (variant != "brsf")
        # every variant starts with ‖B‖ ≈ ‖W₀‖ at the default init
        assert abs(float(first.norm() / weight.norm()) - 1) < 0.1
    with pytest.raises(ConfigError, match="variant must be one of usf, frsf, brsf"):
        rules.get("sign_symmetry", variant="xsf")


def _kp_run(steps: int, lr: float, weight_decay: float, momentum: float = 0.0, optimizer=torch.optim.SGD):
    spec = TaskSpec((20,), 5)
    torch.manual_seed(1)
    model = nets.get("mlp", spec, hidden=[30], activation="tanh").double()
    rule = rules.get("kolen_pollack", scale=3.0, seed=7)
    rule.attach(model)
    rule.to(torch.float64)
    kwargs = {"momentum": momentum} if optimizer is torch.optim.SGD else {}
    opt = optimizer(rule.param_groups(model), lr=lr, weight_decay=weight_decay, **kwargs)
    rule.check_optimizer(opt)
    layer = model.get_submodule("layers.readout")
    start = float((layer.weight - rule.feedback["layers.readout"]).detach().norm())
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(32, 20, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (32,), generator=g)
        opt.zero_grad(set_to_none=True)
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        opt.step()
    ratio = float((layer.weight - rule.feedback["layers.readout"]).detach().norm()) / start
    return ratio, feedback_geometry(model)["feedback_angle/layers.readout"]


def test_kolen_pollack_difference_decays_geometrically_from_any_b():
    lr, wd = 0.05, 0.01
    ratio, angle = _kp_run(1000, lr, wd)
    assert abs(ratio / (1 - lr * wd) ** 1000 - 1) < 1e-10  # float64: exact up to rounding
    ratio, angle = _kp_run(1500, lr, wd, momentum=0.9)  # rate ≈ ηλ/(1 − μ) per step
    assert angle < 5.0
    # AdamW's decoupled decay gives identical moments for W and B: the same geometric decay
    ratio, _ = _kp_run(300, 1e-3, 0.5, optimizer=torch.optim.AdamW)
    assert abs(ratio / (1 - 1e-3 * 0.5) ** 300 - 1) < 1e-6


def test_kolen_pollack_without_decay_keeps_the_difference():
    ratio, angle = _kp_run(600, 0.05, 0.0, momentum=0.9)
    assert abs(ratio - 1) < 1e-10 and angle > 20.0


def test_kolen_pollack_refuses_coupled_l2_decay():
    model = nets.get("mlp", TaskSpec((6,), 3), hidden=[5])
    rule = rules.get("kolen_pollack")
    rule.attach(model)
    with pytest.raises(ConfigError, match="use optimizer 'sgd' or 'adamw'"):
        rule.check_optimizer(torch.optim.Adam(rule.param_groups(model), weight_decay=1e-4))
    rule.check_optimizer(torch.optim.Adam(rule.param_groups(model)))  # no decay: nothing to break
    with pytest.raises(ConfigError, match="optimizer 'sgd' or 'adamw'"):  # caught before anything trains
        bioplaus.compare(
            model="mlp", task="synthetic", rules=["bp", "kolen_pollack"], optimizer="adam",
            weight_decay=1e-3, epochs=1, progress=False,
        )  # fmt: skip


@pytest.mark.parametrize("layer_kind", ["linear", "conv"])
def test_weight_mirror_drives_b_to_w(layer_kind):
    torch.manual_seed(0)
    if layer_kind == "linear":
        layer, x = Linear(50, 40), torch.randn(8, 50)
    else:
        layer, x = bioplaus.core.Conv2d(3, 4, 3, padding=1), torch.randn(8, 3, 6, 6)
    model = torch.nn.Sequential(layer)
    rule = rules.get("weight_mirror", mirror_batch=64, mirror_lr=0.01)
    rule.attach(model)
    model(x)
    angles = []
    for _ in range(400):
        rule.mirror(model)
        angles.append(feedback_geometry(model)["feedback_angle/0"])
    ratio = feedback_geometry(model)["feedback_norm_ratio/0"]
    assert angles[0] > 60 and angles[50] < angles[0] and angles[-1] < 5.0, angles[::50]
    assert abs(ratio - 1) < 0.1
    assert torch.equal(layer.weight, model[0].weight)


def test_the_runner_logs_feedback_geometry_and_the_readout_cosine_is_exact():
    result = bioplaus.compare(
        model="mlp", task="synthetic", rules=["fa", "sign_symmetry", "kolen_pollack", "weight_mirror"],
        model_options={"hidden": [16]}, task_options={"n_train": 2048, "n_test": 64}, batch_size=32,
        optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.05, epochs=2, alignment_every=16, progress=False,
    )  # fmt: skip
    table = result.table
    angles = table[table.metric.str.startswith("feedback_angle/")]
    assert set(angles.rule) == {"fa", "sign_symmetry", "kolen_pollack", "weight_mirror"}
    final = angles[angles.metric == "feedback_angle/layers.readout"].groupby("rule").value.last()
    assert final["sign_symmetry"] < 60 and final["kolen_pollack"] < final["fa"] and final["weight_mirror"] < final["fa"]
    readout = table[table.metric == "alignment/layers.readout"]
    assert len(readout) and (readout.value - 1).abs().max() < 1e-6
