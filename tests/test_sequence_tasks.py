"""Sequence tasks: data layouts, losses, length transfer, online and batch training, runner integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bioplaus
from bioplaus import nets, rules, tasks
from bioplaus.errors import ConfigError, DivergedError
from bioplaus.nets import MLP
from bioplaus.runner import train_epoch
from bioplaus.tasks.sequence import BLANK, MARKER, _takes_length, adding_batch, copy_batch

TINY = {"batch_size": 4, "steps_per_epoch": 2, "n_test": 8}


def test_copy_layout_matches_the_official_code():
    x, y = copy_batch(5, 7, torch.Generator().manual_seed(0), n_copy=3)
    tokens = x.argmax(2)
    assert x.shape == (5, 7 + 6, MARKER + 1) and y.shape == (5, 13)
    assert ((tokens[:, :3] >= 1) & (tokens[:, :3] <= 8)).all()
    assert (tokens[:, 3 + 7 - 1] == MARKER).all()
    assert (tokens[:, 3 : 3 + 6] == BLANK).all() and (tokens[:, -3:] == BLANK).all()
    assert (y[:, :10] == BLANK).all() and torch.equal(y[:, -3:], tokens[:, :3])


def test_adding_layout():
    x, y = adding_batch(200, 10, torch.Generator().manual_seed(0))
    markers = x[..., 1]
    assert (markers[:, :5].sum(1) == 1).all() and (markers[:, 5:].sum(1) == 1).all()
    torch.testing.assert_close(y[:, -1], (x[..., 0] * markers).sum(1))
    assert (y[:, :-1] == 0).all()
    with pytest.raises(ConfigError, match="T ≥ 2"):
        adding_batch(1, 1, torch.Generator())


@pytest.mark.parametrize(
    ("name", "options", "loss_steps"),
    [
        ("delayed-recall", {}, None),
        ("delayed-recall", {"loss_last": 1}, 1),
        ("copy", {"n_copy": 3, "loss_last": 3}, 3),
        ("adding", {}, 1),
    ],
)
def test_step_losses_sum_to_the_sequence_loss(name, options, loss_steps, float64):
    task = tasks.get(name, T=6, **TINY, **options)
    x, y = next(task.batches(None, torch.Generator()))
    out = torch.randn(*x.shape[:2], task.spec.n_out)
    parts = [task.step_loss(out[:, t], y[:, t], t, x.shape[1]) for t in range(x.shape[1])]
    assert sum(p is not None for p in parts) == (loss_steps or x.shape[1])
    torch.testing.assert_close(sum(p for p in parts if p is not None), task.sequence_loss(out, y))


def test_length_transfer_splits():
    task = tasks.get("delayed-recall", T=5, transfer=[2, 4], **TINY)
    assert {s: x.shape[1] for s, (x, _) in task.test_sets.items()} == {"test": 7, "test_T10": 12, "test_T20": 22}
    assert task.spec.input_shape == (7, MARKER + 1) and task.spec.n_out == 9
    model = nets.get("sab_lstm", task.spec, hidden=8)
    results = task.evaluate(model)
    assert set(results) == {"test", "test_T10", "test_T20"}
    assert set(results["test"]) == {"loss", "accuracy"}


@pytest.mark.parametrize("model_name", ["lstm", "sab_lstm", "attn_lstm"])
def test_compare_runs_sequence_models_with_temporal_rules(model_name):
    result = bioplaus.compare(
        model=model_name,
        rules=["bptt", "tbptt", "tbptt_stream"],
        task="delayed-recall",
        epochs=1,
        batch_size=4,
        task_options={"T": 6, "steps_per_epoch": 2, "n_test": 8, "transfer": [2]},
        model_options={"hidden": 8},
        rule_options={"tbptt": {"k_trunc": 3}},
        reference="bptt",
        progress=False,
    )
    assert (result.runs["status"] == "done").all() and (result.runs["steps"] == 2).all()
    assert {"test", "test_T12", "train"} <= set(result.table["split"])


def test_online_and_batch_training_reach_the_same_weights(float64):
    """One Adam step from tbptt (single backward) and tbptt_stream (online) lands on the same weights."""
    task = tasks.get("adding", T=8, **TINY)
    weights = []
    for name in ("tbptt", "tbptt_stream"):
        torch.manual_seed(0)
        model = nets.get("sab_lstm", task.spec, hidden=6, k_top=2)
        rule = rules.get(name, k_trunc=3)
        rule.attach(model)
        train_epoch(task, model, rule, torch.optim.Adam(model.parameters()), generator=torch.Generator().manual_seed(0))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("rule_name", ["bptt", "tbptt_stream"])
def test_non_finite_loss_raises_diverged(rule_name):
    task = tasks.get("delayed-recall", T=4, **TINY)
    model = nets.get("lstm", task.spec, hidden=4)
    with torch.no_grad():
        model.readout.bias.fill_(float("nan"))
    rule = rules.get(rule_name)
    rule.attach(model)
    with pytest.raises(DivergedError):
        train_epoch(task, model, rule, torch.optim.SGD(model.parameters(), lr=0.1), generator=torch.Generator())


def test_wrong_models_are_named():
    task = tasks.get("delayed-recall", T=4, **TINY)
    mlp = MLP(task.spec.in_features, (8,), task.spec.n_out)
    with pytest.raises(ConfigError, match="drives models that are sequence"):
        train_epoch(task, mlp, rules.get("bp"), torch.optim.SGD(mlp.parameters(), lr=0.1), generator=torch.Generator())
    with pytest.raises(ConfigError, match="recurrent, steppable"):
        train_epoch(
            task, mlp, rules.get("tbptt_stream"), torch.optim.SGD(mlp.parameters(), lr=0.1), generator=torch.Generator()
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"T": 0}, "T must"),
        ({"transfer": [0]}, "transfer"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm"),
        ({"loss_last": 0}, "loss_last"),
    ],
)
def test_bad_task_options(options, match):
    with pytest.raises(ConfigError, match=match):
        tasks.get("delayed-recall", **options)


def test_pixel_fashion_mnist_sequences():
    task = tasks.get("pixel-fashion-mnist", pixels_per_step=28, n_train=64, n_test=16)
    x, y = next(task.batches(None, torch.Generator()))
    assert x.shape == (32, 28, 28) and task.spec.input_shape == (28, 28) and task.spec.n_out == 10
    assert (y[:, :-1] == 0).all() and 0.0 <= x.min() and x.max() <= 1.0
    permuted = tasks.get("pixel-fashion-mnist", permuted=True, n_train=64, n_test=16)
    again = tasks.get("pixel-fashion-mnist", permuted=True, n_train=64, n_test=16)
    px, _ = permuted.test_sets["test"]
    assert px.shape == (16, 784, 1) and torch.equal(px, again.test_sets["test"][0])
    flat = task.test_sets["test"][0].reshape(16, -1)
    assert not torch.equal(flat, px[..., 0]) and np.allclose(np.sort(flat, 1), np.sort(px[..., 0], 1))
    with pytest.raises(ConfigError, match="must divide"):
        tasks.get("pixel-fashion-mnist", pixels_per_step=5, n_train=64, n_test=16)


def test_the_online_runner_passes_the_length_only_to_models_that_take_it():
    """SequenceNet.reset_state(batch, length) sizes buffers once; a custom model's reset_state(batch) still works."""

    def plain(batch_size):
        return batch_size

    def sized(batch_size, length=None):
        return batch_size, length

    assert _takes_length(sized) and not _takes_length(plain)
    assert not _takes_length(print)  # a builtin without a signature: the plain call
