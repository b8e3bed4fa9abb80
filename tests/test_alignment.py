"""alignment(): cosine of each rule's update with the BP gradient, without side effects."""

from __future__ import annotations

import math

import torch

import bioplaus
from bioplaus.analysis import alignment
from bioplaus.core import Context, Rule
from bioplaus.nets import MLP


def _setup(rule_name: str, hidden=(512, 512), seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MLP(32, hidden, 10)
    rule = bioplaus.rules.get(rule_name, **kwargs)
    rule.attach(model)
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    return model, rule, (x, y)


def test_bp_against_itself_is_one_in_every_layer():
    model, rule, batch = _setup("bp")
    cos = alignment(model, rule, batch)
    assert set(cos) == {"layers.fc1", "layers.fc2", "layers.readout"}
    assert all(abs(c - 1.0) < 1e-6 for c in cos.values())


def test_fa_at_init_is_near_zero_in_hidden_layers_and_exact_at_the_readout():
    model, rule, batch = _setup("fa")
    cos = alignment(model, rule, batch)
    assert abs(cos["layers.fc1"]) < 0.15 and abs(cos["layers.fc2"]) < 0.15
    assert abs(cos["layers.readout"] - 1.0) < 1e-6


def test_per_parameter_view():
    model, rule, batch = _setup("dfa", hidden=(16,))
    cos = alignment(model, rule, batch, by="parameter")
    assert set(cos) == {f"layers.{layer}.{p}" for layer in ("fc1", "readout") for p in ("weight", "bias")}


def test_no_side_effects_on_grads_rule_state_or_random_stream():
    model, rule, batch = _setup("dfa", hidden=(16, 16))
    sentinel = {n: torch.full_like(p, 7.0) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone()
    torch.manual_seed(123)
    alignment(model, rule, batch)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # RNG restored
    assert rule.matrix is None  # DFA builds B lazily; alignment's copy built its own
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, sentinel[n])


def test_rule_state_is_untouched():
    class Counting(Rule):
        def __init__(self):
            self.calls = 0

        def update(self, model, ctx: Context):
            self.calls += 1
            ctx.loss.backward()

    torch.manual_seed(0)
    model = MLP(8, (4,), 3)
    rule = Counting()
    cos = alignment(model, rule, (torch.randn(5, 8), torch.randint(0, 3, (5,))))
    assert rule.calls == 0 and all(math.isclose(c, 1.0, abs_tol=1e-6) for c in cos.values())


def test_logging_alignment_does_not_change_training():
    kwargs = dict(
        model="mlp",
        rules=["fa", "dfa"],
        task="digits",
        seeds=[0],
        epochs=1,
        progress=False,
        model_options={"hidden": [32]},
    )
    plain = bioplaus.compare(**kwargs).table
    logged = bioplaus.compare(**kwargs, alignment_every=5).table
    assert logged["metric"].str.startswith("alignment/").any()
    probes = ("alignment/", "feedback_")  # the probes also log the feedback geometry
    kept = logged[~logged["metric"].str.startswith(probes)].reset_index(drop=True)
    plain = plain[~plain["metric"].str.startswith(probes)].reset_index(drop=True)
    assert kept[["rule", "epoch", "split", "metric", "value"]].equals(
        plain[["rule", "epoch", "split", "metric", "value"]]
    )
