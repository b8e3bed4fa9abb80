"""Artificial Dopamine: the cell, gradient isolation, target locality, context semantics, learning."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bioplaus import nets, rules
from bioplaus.core import TaskSpec, weight_layers
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.ad import ADNet
from bioplaus.runner.compare import compare
from bioplaus.tasks.rl import ReplayBuffer
from bioplaus.tasks.rl.dqn import replay_context, td_losses, td_targets

SPEC = TaskSpec((4,), 3)


def _net(**options) -> ADNet:
    torch.manual_seed(0)
    return nets.get("ad", SPEC, hidden=[8, 6, 5], heads=2, **options)


def _batch(context: int = 2, seed: int = 0):
    """A replay sample of random transitions in episodes of 5 steps."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(64, (4,))
    for i in range(40):
        done = i % 5 == 4
        buffer.add(rng.normal(size=4), int(rng.integers(3)), float(rng.normal()), rng.normal(size=4), done, False)
    return buffer.sample_sequences(16, context, torch.Generator().manual_seed(seed))


def _grad_matrix(rule_name: str) -> torch.Tensor:
    """Σ|∂L_i/∂θ_j| for every pair of cells (i: loss, j: parameters)."""
    model = _net()
    rules.get(rule_name).attach(model)
    target = copy.deepcopy(model)
    losses = td_losses(model, target, _batch(), gamma=0.99)
    out = torch.zeros(3, 3)
    for i in range(3):
        for j, cell in enumerate(model.cells):
            params = list(cell.parameters())
            grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
            out[i, j] = sum(g.abs().sum() for g in grads if g is not None)
    return out


def test_ad_gradients_are_isolated_per_layer_and_bp_twin_is_not():
    ad, bp = _grad_matrix("distributed_td"), _grad_matrix("bp")
    assert torch.all(ad.diagonal() > 0)
    assert torch.equal(ad - torch.diag(ad.diagonal()), torch.zeros(3, 3))  # exactly zero off the diagonal
    assert torch.all(bp.tril(-1)[[1, 2, 2], [0, 0, 1]] > 0)  # BP: layer i's error reaches the cells below
    assert torch.equal(bp.triu(1), torch.zeros(3, 3))  # the context carries no gradient upwards
    assert torch.allclose(ad.diagonal(), bp.diagonal())


def test_rule_writes_per_cell_clipped_grads_and_detach_restores_backprop():
    model = _net()
    rule = rules.get("distributed_td", clip=0.01)
    rule.attach(model)
    assert all(layer.settings.detach_input for _, layer in weight_layers(model))
    assert len(rule.param_groups(model)) == 3
    losses = td_losses(model, copy.deepcopy(model), _batch(), gamma=0.99)
    from bioplaus.core import Context

    rule.update(model, Context(loss=losses.sum(), signals={"layer_losses": losses}))
    for cell in model.cells:
        norm = torch.cat([p.grad.flatten() for p in cell.parameters()]).norm()
        assert norm == pytest.approx(0.01, rel=1e-4)
    rule.detach(model)
    assert not any(layer.settings.detach_input for _, layer in weight_layers(model))


def test_perturbing_one_layers_q_head_changes_only_its_target():
    model = _net()
    batch = _batch()
    y0 = td_targets(model, copy.deepcopy(model), batch, gamma=0.99)
    for j in range(3):
        perturbed = copy.deepcopy(model)
        cell = perturbed.cells[j]
        with torch.no_grad():  # rows of W_z1, W_z2: they shape Q_j, not h_j
            cell.fc.weight[cell.hidden :] += torch.randn_like(cell.fc.weight[cell.hidden :])
        y = td_targets(perturbed, copy.deepcopy(perturbed), batch, gamma=0.99)
        changed = [not torch.equal(y[i], y0[i]) for i in range(3)]
        assert changed == [i == j for i in range(3)]


def test_without_temporal_connections_the_net_is_markov():
    model = _net(recurrent=False, forward_connections=False)
    assert not model.uses_context
    obs = torch.randn(5, 4)
    ctx = [torch.randn(5, w) for w in model.widths]
    assert torch.equal(model(obs, ctx).q, model(obs).q)
    silent = _net(recurrent_weight=0.0, forward_weight=0.0)  # the official scalar connection weights
    assert torch.equal(silent(obs, ctx).q, silent(obs).q)
    assert not torch.equal(_net()(obs, ctx).q, _net()(obs).q)


def test_previous_observation_acts_only_through_the_context():
    model = _net()
    seq = torch.randn(2, 5, 4, requires_grad=True)  # s_{t-1}, s_t
    valid = torch.ones(2, 5, dtype=torch.bool)
    ctx = replay_context(model, seq[:1], valid[:1])
    assert not any(c.requires_grad for c in ctx)  # no gradient through time (P2)
    q = model(seq[1], ctx).q
    other = seq.detach().clone()
    other[0] += 1.0
    q_other = model(other[1], replay_context(model, other[:1], valid[:1])).q
    assert not torch.allclose(q, q_other)
    assert torch.equal(model(seq[1], ctx).q, q)  # same context, same s_t: same Q
    # before the episode start the context stays at zero, as at an acting reset
    start = replay_context(model, other[:1], torch.zeros(1, 5, dtype=torch.bool))
    assert all(torch.equal(c, torch.zeros_like(c)) for c in start)


def test_cell_follows_the_official_equations():
    torch.manual_seed(1)
    model = _net(input_skip=False)
    cell = model.cells[1]
    x = torch.randn(7, cell.fc.in_features)
    h, q = cell(x)
    d, H, A = cell.hidden, cell.heads, cell.n_actions
    w = cell.fc.weight
    h_ref = torch.nn.functional.layer_norm(
        torch.relu(x @ w[:d].T + cell.bias), (d,), cell.norm.weight, cell.norm.bias, 1e-6
    )
    z1 = (x @ w[d : d + H * d].T).view(7, H, d)
    z2 = (x @ w[d + H * d :].T).view(7, H, A)
    m = z2.transpose(1, 2) @ z1
    weights = torch.tanh((m - m.mean(-1, keepdim=True)) / (m.std(-1, unbiased=False, keepdim=True) + 1e-6))
    assert torch.allclose(h, h_ref, atol=1e-6)
    assert torch.allclose(q, (weights @ h_ref.unsqueeze(-1)).squeeze(-1), atol=1e-5)
    # inputs: h_0 (8) + nothing from s (no skip) + own context (6) + context above (5)
    assert cell.fc.in_features == 8 + 6 + 5
    assert model.cells[0].fc.in_features == 4 + 8 + 6 and model.cells[2].fc.in_features == 6 + 5
    std = cell.fc.weight.std().item() * np.sqrt(cell.fc.in_features)
    assert 0.6 < std < 1.4  # lecun_normal: variance 1/fan_in


def test_bad_ad_input_raises_clear_errors():
    with pytest.raises(ConfigError, match="cell width"):
        nets.get("ad", SPEC, hidden=[])
    model = _net()
    with pytest.raises(ShapeError, match="4 values"):
        model(torch.zeros(2, 5))
    with pytest.raises(ShapeError, match="one tensor per cell"):
        model(torch.zeros(2, 4), [torch.zeros(2, 8)])
    with pytest.raises(ConfigError, match="'cells'"):
        rules.get("distributed_td").attach(nets.get("mlp", SPEC))
    with pytest.raises(ConfigError, match="clip"):
        rules.get("distributed_td", clip=0)


CORRIDOR = dict(
    env="Corridor",
    env_options={"n": 5},
    steps_per_epoch=1000,
    buffer_size=5000,
    learning_starts=100,
    train_every=1,
    target_every=100,
    gamma=0.9,
    eps_steps=500,
    context=2,
    reward_scale=10.0,  # P9: the cells' initial |Q| of several units dwarfs returns of order 1
    eval_episodes=1,
    eval_epsilon=0.0,
    eval_layers=False,
    progress=False,
)


def _corridor(rules_, model="ad", task_options=None, **model_options):
    options = CORRIDOR | (task_options or {})
    return compare(
        model=model,
        rules=rules_,
        task="rl",
        seeds=[0],
        epochs=1,
        batch_size=32,
        lr=1e-3,
        task_options=options,
        model_options=model_options,
        progress=False,
    )


def test_ad_learns_the_corridor():
    """Research note T5, made fast: n = 5, γ = 0.9, two cells of 8 units, 1,000 steps, fixed seed."""
    table = _corridor(["distributed_td"], hidden=[8, 8], heads=2).table
    returns = table[(table.split == "eval") & (table.metric == "return")].set_index("epoch").value
    optimal = 1.0 - 0.01 * 3  # four steps right: three times -0.01, then +1
    assert returns[0] < optimal - 0.05  # the untrained greedy policy wanders
    assert returns[1] == pytest.approx(optimal)


def test_ad_its_bp_twin_and_mlp_dqn_run_through_the_same_loop():
    short = {"steps_per_epoch": 300, "eval_layers": True}
    ad = _corridor({"ad": "distributed_td", "bp-twin": "bp"}, task_options=short, hidden=[8, 8], heads=2)
    dqn = _corridor(["bp"], model="mlp", task_options=short, hidden=[16])
    assert (ad.runs.status == "done").all() and (dqn.runs.status == "done").all()
    assert {"td_loss/layer0", "td_loss/layer1", "return/layer0", "return", "epsilon"} <= set(ad.table.metric)
    assert "td_loss/layer0" in set(dqn.table.metric)


def test_targets_reuse_the_forward_pass_context_exactly():
    model = _net()
    target = copy.deepcopy(model)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = _batch()
    ctx = replay_context(model, batch.obs_seq[:-1], batch.valid[:-1])
    hidden = model(batch.transitions.obs, ctx).hidden
    assert torch.equal(td_targets(model, target, batch, 0.99), td_targets(model, target, batch, 0.99, 1.0, hidden))
