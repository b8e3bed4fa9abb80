"""One contract test for every registered rule, driven by the registry (as PyTorch runs every optimizer
through the same tests). A new rule gets all of these by being registered: add its smallest setting
to SETTINGS (the test fails for a registered rule without one)."""

from __future__ import annotations

import math

import pytest
import torch

from bioplaus import nets, rules, tasks
from bioplaus.analysis import alignment
from bioplaus.core import Capability, capabilities_of
from bioplaus.core.capabilities import pairing_problems
from bioplaus.runner import train_step
from bioplaus.runner.training import AlignmentSchedule, train_epoch

SEQ = {"T": 6, "batch_size": 4, "steps_per_epoch": 2, "n_test": 4, "transfer": []}
MOTOR = {"iterations": 2, "timing": "kaleb"}
RL = {
    "env": "CartPole-v1",
    "steps_per_epoch": 40,
    "learning_starts": 20,
    "train_every": 4,
    "eval_episodes": 0,
    "progress": False,
}

# rule -> (task, task options, model, model options, rule options)
SETTINGS = {
    "bp": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12]}, {}),
    "fa": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12, 12]}, {}),
    "dfa": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12, 12]}, {}),
    "sign_symmetry": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12, 12]}, {"variant": "frsf"}),
    "kolen_pollack": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12, 12]}, {}),
    "weight_mirror": ("digits", {"batch_size": 32}, "mlp", {"hidden": [12, 12]}, {"mirror_batch": 8}),
    "gevb": ("digits", {"batch_size": 32}, "vnn", {"hidden": [8]}, {}),
    "scalar_bp": ("digits", {"batch_size": 32}, "vnn", {"hidden": [8]}, {}),
    "bptt": ("adding", SEQ, "lstm", {"hidden": 6}, {}),
    "tbptt": ("adding", SEQ, "lstm", {"hidden": 6}, {"k_trunc": 2}),
    "tbptt_stream": ("adding", SEQ, "lstm", {"hidden": 6}, {"k_trunc": 2}),
    "rflo": ("reach-adaptation", MOTOR, "rate_rnn", {"n": 12}, {}),
    "fed": ("reach-adaptation", MOTOR, "rate_rnn", {"n": 12}, {}),
    "online_bptt": ("reach-adaptation", MOTOR, "rate_rnn", {"n": 12}, {}),
    "distributed_td": ("rl", RL | {"batch_size": 8}, "ad", {"hidden": [8, 8]}, {}),
}


def _setup(name, seed=0):
    task_name, task_options, model_name, model_options, rule_options = SETTINGS[name]
    task = tasks.get(task_name, **task_options)
    torch.manual_seed(seed)
    model = nets.get(model_name, task.spec, **model_options)
    rule = rules.get(name, **rule_options)
    rule.attach(model)
    return task, model, rule


def _first_batch(task, model, generator):
    return next(iter(task.batches(model, generator)))


def test_every_registered_rule_has_a_setting():
    missing = sorted(set(rules.available()) - set(SETTINGS))
    assert not missing, f"add the smallest setting of {missing} to SETTINGS"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_setting_fits_the_typed_contract(name):
    task, model, rule = _setup(name)
    assert not pairing_problems(capabilities_of(model), rule, task)
    assert frozenset(rule.requires) <= capabilities_of(model)
    assert all(isinstance(c, Capability) for c in rule.requires)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_rule_writes_grad_and_changes_no_weight(name):
    task, model, rule = _setup(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    batch = _first_batch(task, model, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # steps, but moves nothing
    grads = {}
    optimizer.register_step_pre_hook(
        lambda *_: grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    )
    train_step(task, model, rule, optimizer, batch)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), f"{name} changed weight {n}"
    assert grads and any(bool(g.abs().sum() > 0) for g in grads.values()), f"{name} wrote no gradient"
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_alignment_runs_and_leaves_grad_and_rng_untouched(name):
    task, model, rule = _setup(name)
    generator = torch.Generator().manual_seed(0)
    logged = []
    schedule = AlignmentSchedule(1, logged.append, lambda: 0)
    if rule.online and rule.reference:
        schedule.reference = rules.get(rule.reference)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    torch.manual_seed(5)
    if not rule.online:
        batch = _first_batch(task, model, generator)
        cosines = alignment(model, rule, batch, task.context)
        for p in model.parameters():
            assert torch.equal(p.grad, torch.full_like(p, 3.0)), f"{name}: alignment changed .grad"
        after = torch.rand(3)
        torch.manual_seed(5)
        assert torch.equal(after, torch.rand(3)), f"{name}: alignment moved the global RNG"
    else:
        cosines = {}
    task2, model2, rule2 = _setup(name)
    train_epoch(task2, model2, rule2, torch.optim.SGD(model2.parameters(), lr=0.0),
                generator=torch.Generator().manual_seed(0), alignment_schedule=schedule)  # fmt: skip
    assert logged, f"{name}: no alignment was logged"
    values = [v for entry in logged for k, v in entry.items() if k.startswith("alignment/")] + list(cosines.values())
    assert any(math.isfinite(v) for v in values), f"{name}: every cosine is NaN"
    assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in values if math.isfinite(v))


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_two_runs_with_one_seed_are_bit_identical(name):
    weights = []
    for _ in range(2):
        task, model, rule = _setup(name, seed=3)
        optimizer = torch.optim.SGD(rule.param_groups(model), lr=1e-3)
        train_epoch(task, model, rule, optimizer, generator=torch.Generator().manual_seed(3))
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_attach_twice_is_attach_once_and_state_moves_with_to(name):
    task, model, rule = _setup(name)
    state = {k: v.clone() for k, v in rule.state_dict().items()}
    rule.attach(model)
    assert rule.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in rule.state_dict().items())
    assert rule.to(torch.float64) is rule
    assert all(v.dtype == torch.float64 for v in rule.state_dict().values() if v.is_floating_point())
    task3, model3, fresh = _setup(name, seed=9)
    fresh.load_state_dict(rule.state_dict())
    assert fresh.state_dict().keys() == rule.state_dict().keys()
    assert all(torch.equal(v, rule.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_fa_oracle_equals_bp_through_the_contract():
    task, model, rule = _setup("fa")
    for name, matrix in rule.feedback.items():
        matrix.copy_(model.get_submodule(name).weight.detach())
    batch = _first_batch(task, model, torch.Generator().manual_seed(0))
    cosines = alignment(model, rule, batch, task.context)
    assert all(abs(c - 1) < 1e-6 for c in cosines.values()), cosines


def test_the_cli_lists_what_fits(capsys):
    from bioplaus.cli import main

    assert main(["rules", "--model", "rate_rnn"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"rflo", "fed", "online_bptt", "bp"} <= listed and "gevb" not in listed
    assert main(["models", "--rule", "gevb", "--task", "digits"]) == 0
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()} == {"vnn", "vnn_conv", "vnn_lc"}
    assert main(["rules", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
