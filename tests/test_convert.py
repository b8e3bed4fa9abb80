"""``bioplaus.convert`` on plain torch models (a ResNet-20), and ``--model-file`` on the command line."""

from __future__ import annotations

import doctest
import re
import sys
import warnings

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import run_cli
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.parametrizations import weight_norm

import bioplaus
from bioplaus import rules
from bioplaus.core import Context, Conv2d, Linear, TaskSpec, weight_layers
from bioplaus.errors import ConfigError
from bioplaus.runner.model_file import register_model_file

DIGITS = TaskSpec((1, 8, 8), 10)


class PadShortcut(nn.Module):
    """Option-A shortcut of a ResNet: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.shortcut = PadShortcut(cout - cin, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 (He et al., 2016, CIFAR variant): 3 stages × 3 basic blocks, 16/32/64 channels."""

    def __init__(self, spec: TaskSpec, shortcut: str = "A"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(spec.input_shape[0], 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        stages, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1, shortcut) for j in range(3)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.ModuleDict({"dropout": nn.Dropout(0.1), "fc": nn.Linear(64, spec.n_out)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head["fc"](self.head["dropout"](x))


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *DIGITS.input_shape, generator=g)
    return x, torch.randint(0, DIGITS.n_out, (n,), generator=g)


def _seeded_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # the same dropout mask each time
    return model(x)


def _torch_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]


def _grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_convert_keeps_outputs_bit_identical_and_shares_parameters(dtype, shortcut):
    torch.manual_seed(0)
    model = ResNet20(DIGITS, shortcut).to(dtype)
    n_torch = len(_torch_layers(model))
    assert n_torch == (22 if shortcut == "B" else 20)
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    x = _batch()[0].to(dtype)
    before = _seeded_forward(model, x)

    assert bioplaus.convert(model) is model
    assert _torch_layers(model) == []
    assert len(weight_layers(model)) == n_torch
    assert isinstance(model.stages[1][0].conv2, Conv2d) and isinstance(model.head["fc"], Linear)
    assert model.stages[1][0].conv2.op.padding == (1, 1)  # padding="same" of a 3×3 kernel
    after = dict(model.named_parameters())
    assert after.keys() == params.keys() and all(after[n] is p for n, p in params.items())
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in after.values())
    assert list(model.state_dict()) == keys
    assert torch.equal(_seeded_forward(model, x), before)
    model.eval()
    assert torch.equal(model(x), _seeded_forward(model, x))  # eval mode reaches the new layers


def test_convert_twice_is_a_no_op_and_inplace_false_copies():
    torch.manual_seed(0)
    original = ResNet20(DIGITS)
    x = _batch()[0]
    before = _seeded_forward(original, x)
    copy = bioplaus.convert(original, inplace=False)
    assert copy is not original and len(_torch_layers(original)) == 20 and _torch_layers(copy) == []
    assert all(a is not b and torch.equal(a, b) for a, b in zip(copy.parameters(), original.parameters(), strict=True))
    assert torch.equal(_seeded_forward(copy, x), before)

    layers = [layer for _, layer in weight_layers(copy)]
    assert bioplaus.convert(copy) is copy
    assert [layer for _, layer in weight_layers(copy)] == layers


def test_an_optimizer_built_before_convert_steps_the_converted_layers():
    torch.manual_seed(0)
    model = ResNet20(DIGITS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    bioplaus.convert(model)
    x, y = _batch()
    weight = model.head["fc"].weight.detach().clone()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert not torch.equal(model.head["fc"].weight, weight)


def test_convert_a_bare_layer_and_a_layer_registered_twice():
    linear = nn.Linear(3, 2, bias=False)
    layer = bioplaus.convert(linear)
    assert isinstance(layer, Linear) and layer.weight is linear.weight and layer.bias is None

    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    x = torch.randn(2, 4)
    before = model(x)
    bioplaus.convert(model)
    assert model[0] is model[2] and isinstance(model[0], Linear)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_fa_with_feedback_equal_to_weights_is_bp_on_a_converted_resnet(shortcut, float64):
    torch.manual_seed(0)
    model = bioplaus.convert(ResNet20(DIGITS, shortcut))
    x, y = _batch()
    F.cross_entropy(_seeded_forward(model, x), y).backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    fa = rules.get("fa")
    fa.attach(model)
    for _, layer in weight_layers(model):
        layer.configure(feedback=lambda w: w)
    out = _seeded_forward(model, x)
    fa.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
    got = _grads(model)
    assert got.keys() == expected.keys()
    assert any(".bn" in name for name in got)  # BatchNorm parameters are compared too
    for name, grad in got.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=0, msg=f"gradient of {name} differs")


def test_fa_and_dfa_with_random_feedback_write_gradients_on_a_converted_resnet():
    x, y = _batch()
    for name in ("fa", "dfa"):
        torch.manual_seed(0)
        model = bioplaus.convert(ResNet20(DIGITS, "B"))
        rule = rules.get(name, seed=0)
        rule.attach(model)
        out = model(x)
        rule.update(model, Context(loss=F.cross_entropy(out, y), output=out, target=y))
        grads = _grads(model)
        layer_params = {f"{path}.weight" for path, _ in weight_layers(model)} | {
            f"{path}.bias" for path, layer in weight_layers(model) if layer.bias is not None
        }
        # FA trains every parameter. DFA cuts the graph at each layer's input and injects the
        # error at its output, so the BatchNorm between two layers gets no gradient.
        trained = set(grads) if name == "fa" else layer_params
        for param in trained:
            assert grads[param] is not None and torch.isfinite(grads[param]).all(), (name, param)
            assert grads[param].abs().sum() > 0, (name, param)


def test_compare_trains_a_converted_resnet_on_digits():
    result = bioplaus.compare(
        model=lambda spec: bioplaus.convert(ResNet20(spec, "A")),
        rules=["bp", "fa", "dfa"],
        task="digits",
        epochs=1,
        batch_size=128,
        progress=False,
    )
    assert (result.runs["status"] == "done").all(), result.runs
    assert (result.runs["steps"] > 0).all()


class _OwnForward(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize(
    ("make", "path", "fix"),
    [
        (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "block.conv", "ReflectionPad2d"),
        (lambda: nn.Conv2d(3, 4, 4, padding="same"), "block.conv", "ZeroPad2d"),
        (lambda: _OwnForward(3, 3), "block.conv (_OwnForward)", "plain nn.Linear"),
        (lambda: weight_norm(nn.Linear(3, 3)), "block.conv", "remove_parametrizations"),
        (lambda: nn.LazyLinear(3), "block.conv", "forward pass"),
        (
            lambda: prune.random_unstructured(nn.Linear(3, 3), "weight", 0.5),
            "weight of block.conv (Linear)",
            "not a Parameter",
        ),
    ],
    ids=["padding_mode", "same-even-kernel", "own-forward", "parametrized", "lazy", "pruned"],
)
def test_what_a_bioplaus_layer_cannot_represent_raises_naming_the_module(make, path, fix):
    first = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential()
    model.add_module("first", first)
    model.add_module("block", nn.Sequential())
    model.block.add_module("conv", make())
    with pytest.raises(ConfigError, match=rf"{re.escape(path)}[\s\S]*{fix}"):
        bioplaus.convert(model)
    assert model.first is first  # nothing was swapped


def test_hooks_on_a_module_to_replace_raise_and_other_hooks_keep_firing():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    calls = []
    handle = model[0].register_forward_hook(lambda *_: calls.append("linear"))
    with pytest.raises(ConfigError, match=r"0 \(Linear\) has hooks \(_forward_hooks\)"):
        bioplaus.convert(model)
    handle.remove()
    model[1].register_forward_hook(lambda *_: calls.append("bn"))
    bioplaus.convert(model)
    model(torch.randn(2, 3))
    assert calls == ["bn"]


def test_same_and_valid_padding_convert_to_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, (3, 5), padding="same", dilation=(1, 2)), nn.Conv2d(3, 3, 2, padding="valid"))
    x = torch.randn(2, 2, 9, 9)
    before = model(x)
    bioplaus.convert(model)
    assert model[0].op.padding == (1, 4) and model[1].op.padding == (0, 0)
    assert torch.equal(model(x), before)


def test_subclasses_that_keep_torchs_forward_stay_torch_modules_with_a_warning():
    model = nn.ModuleDict({"attention": nn.MultiheadAttention(8, 2), "fc": nn.Linear(8, 2)})
    with pytest.warns(UserWarning, match=r"attention\.out_proj \(NonDynamicallyQuantizableLinear\)"):
        bioplaus.convert(model)
    assert type(model["attention"].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(model["fc"], Linear)


def test_convert_docstring_example_runs():
    assert doctest.testmod(sys.modules["bioplaus.core.convert"]).failed == 0


# --- --model-file --------------------------------------------------------------------------------

NET_FILE = """
from torch import nn


def make_net(spec, width=8):
    return nn.Sequential(
        nn.Conv2d(spec.input_shape[0], width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * width, spec.n_out),
    )


def make_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def not_a_model(spec):
    return "a string"
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(NET_FILE)
    return path


def test_register_model_file_builds_converted_models(net_file):
    name = register_model_file(f"{net_file}:make_net")
    assert name == "file:mynet.py:make_net" and name in bioplaus.nets.available()
    model = bioplaus.nets.get(name, DIGITS, width=4)
    assert isinstance(model[0], Conv2d) and model[0].out_channels == 4 and isinstance(model[-1], Linear)
    assert register_model_file(f"{net_file}:make_net") == name  # registering again works
    mlp = bioplaus.nets.get(register_model_file(f"{net_file}:make_mlp"), DIGITS)
    assert isinstance(mlp[1], Linear)
    with pytest.raises(ConfigError, match="returned a str, not a torch.nn.Module"):
        bioplaus.nets.get(register_model_file(f"{net_file}:not_a_model"), DIGITS)


def test_register_model_file_errors(tmp_path, net_file):
    with pytest.raises(ConfigError, match="expects PATH:FUNCTION"):
        register_model_file(str(net_file))
    with pytest.raises(ConfigError, match="nothere.py' does not exist"):
        register_model_file(f"{tmp_path}/nothere.py:make_net")
    with pytest.raises(ConfigError, match="has no function 'make_nett'; it defines: make_mlp, make_net, not_a_model"):
        register_model_file(f"{net_file}:make_nett")
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match=r"broken\.py' raised RuntimeError at line 3: no GPU here"):
        register_model_file(f"{broken}:make_net")
    assert not any(name.startswith("_bioplaus_model_file_broken") for name in sys.modules)


def test_cli_compare_and_run_train_a_model_file(capsys, tmp_path, net_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the file's model converts without a warning
        code, out, err = run_cli(
            capsys,
            "compare",
            "--task",
            "digits",
            "--model-file",
            f"{net_file}:make_net",
            "--rules",
            "bp,fa,dfa",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--batch-size",
            "128",
            "--set",
            "model_options.width=4",
            "--out",
            str(tmp_path / "cmp"),
            "--quiet",
        )
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert set(runs["rule"]) == {"bp", "fa", "dfa"} and (runs["status"] == "done").all()

    config = tmp_path / "exp.toml"
    config.write_text('task = "digits"\nrules = ["fa"]\nepochs = 1\nbatch_size = 256\n')
    code, _, err = run_cli(
        capsys, "run", str(config), "--model-file", f"{net_file}:make_mlp", "--out", str(tmp_path / "run"), "--quiet"
    )
    assert code == 0, err
    assert '"model": "file:mynet.py:make_mlp"' in (tmp_path / "run" / "config.json").read_text()


def test_cli_model_file_errors(capsys, net_file):
    code, _, err = run_cli(capsys, "compare", "--model-file", f"{net_file}:nope", "--quiet")
    assert code == 2 and "has no function 'nope'" in err
    code, _, err = run_cli(capsys, "compare", "--model", "mlp", "--model-file", f"{net_file}:make_net")
    assert code == 2 and "not allowed with argument" in err
