"""compare(): fresh model per (rule, seed), same budget, tidy outputs, determinism, divergence."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import bioplaus
from bioplaus.core import Context, Rule, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets import MLP

SMALL = dict(task="synthetic", model="mlp", model_options={"hidden": [32]}, epochs=2, progress=False)


def test_outputs_written_and_shaped(tmp_path):
    res = bioplaus.compare(rules=["bp", "fa", "dfa"], seeds=2, out=tmp_path, **SMALL)
    for name in ("config.json", "metrics.csv", "summary.csv", "runs.csv", "figure.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table.columns) == ["rule", "seed", "epoch", "step", "split", "metric", "value"]
    assert set(table["rule"]) == {"bp", "fa", "dfa"} and set(table["seed"]) == {0, 1}
    assert set(table["epoch"]) == {0, 1, 2}
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns) == ["rule", "metric", "mean", "sd", "n"]
    acc = summary[summary["metric"] == "test/accuracy"].set_index("rule")
    assert (acc["n"] == 2).all()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seeds"] == [0, 1] and config["environment"]["torch"] == torch.__version__
    assert set(config["rules"]) == {"bp", "fa", "dfa"}
    assert res.runs["status"].eq("done").all() and (res.runs["steps"] > 0).all()
    steps_per_epoch = res.runs["steps"].iloc[0] / 2
    assert steps_per_epoch == -(-2000 // 64)  # one epoch = one pass over the training set


def test_same_seed_same_initial_weights_and_batches_for_every_rule():
    res = bioplaus.compare(rules=["bp", "fa"], seeds=[3], **SMALL)
    start = res.table[(res.table["epoch"] == 0)].pivot(index="metric", columns="rule", values="value")
    assert (start["bp"] == start["fa"]).all()  # epoch 0 is evaluated before any update


def test_bit_identical_metrics_on_rerun(tmp_path):
    for out in ("a", "b"):
        bioplaus.compare(rules=["bp", "fa", "dfa"], seeds=2, alignment_every=10, out=tmp_path / out, **SMALL)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()


def test_diverging_run_is_reported_and_others_finish():
    class Exploding(Rule):
        """BP whose gradients blow up after a few updates."""

        def __init__(self):
            self.calls = 0

        def update(self, model, ctx: Context) -> None:
            self.calls += 1
            ctx.loss.backward()
            if self.calls > 3:
                for p in model.parameters():
                    p.grad.fill_(float("inf"))

    with pytest.warns(RuntimeWarning, match="run exploding \\(seed 0\\) diverged"):
        res = bioplaus.compare(rules={"exploding": Exploding(), "bp": "bp"}, seeds=1, **SMALL)
    status = res.runs.set_index("rule")["status"]
    assert status["exploding"] == "diverged" and status["bp"] == "done"
    assert "loss became nan at step" in res.runs.set_index("rule").loc["exploding", "message"]
    assert res.summary[res.summary["rule"] == "exploding"].empty  # a diverged run has no final value
    assert "0/1 done" in res.report()


def test_rule_instances_labels_and_model_factories():
    class Frozen(Rule):
        """Writes no gradient: the model must not change."""

        def update(self, model, ctx: Context) -> None:
            pass

    res = bioplaus.compare(
        model=lambda spec: MLP(spec.in_features, (16,), spec.n_out),
        rules={"fa-wide": bioplaus.rules.get("fa", scale=3.0), "frozen": Frozen()},
        task="synthetic",
        seeds=1,
        epochs=1,
        progress=False,
    )
    assert res.rules == ["fa-wide", "frozen"]
    frozen = res.table[
        (res.table["rule"] == "frozen") & (res.table["metric"] == "accuracy") & (res.table["split"] == "test")
    ]
    assert frozen["value"].nunique() == 1
    with pytest.raises(ConfigError, match="share the label 'fa'"):
        bioplaus.compare(rules=["fa", bioplaus.rules.get("fa")], **SMALL)


def test_bad_inputs_are_reported_before_training():
    with pytest.raises(ConfigError, match="unknown rule 'xyz'"):
        bioplaus.compare(rules=["bp", "xyz"], **SMALL)
    with pytest.raises(ConfigError, match="model 'mlp' has no option 'hiden'.*did you mean 'hidden'"):
        bioplaus.compare(rules=["bp"], **{**SMALL, "model_options": {"hiden": [3]}})
    with pytest.raises(ConfigError, match="not a model instance"):
        bioplaus.compare(model=MLP(4, (3,), 2), rules=["bp"], task="synthetic", progress=False)
    with pytest.raises(ShapeError, match=r"needs model outputs of shape \(batch, 4\), got \(1000, 3\)"):
        bioplaus.compare(
            model=lambda spec: MLP(spec.in_features, (8,), 3), rules=["bp"], task="synthetic", progress=False, epochs=1
        )


def test_report_and_plot():
    res = bioplaus.compare(rules=["bp", "dfa"], seeds=2, alignment_every=20, **SMALL)
    text = res.report()
    assert "test/accuracy" in text and "× bp" in text and "2/2 done" in text
    fig = res.plot()
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[:2] == ["Test accuracy", "Training loss"] and any("Alignment" in t for t in titles)
    assert repr(res).startswith("Comparison of bp, dfa")


def test_convnet_trains_with_every_rule():
    res = bioplaus.compare(
        model="convnet",
        rules=["bp", "fa", "dfa"],
        task="digits",
        seeds=1,
        epochs=4,
        batch_size=16,
        model_options={"channels": [8, 8], "hidden": 32},
        progress=False,
    )
    acc = res.summary[res.summary["metric"] == "test/accuracy"].set_index("rule")["mean"]
    assert (acc > 0.3).all(), acc  # chance is 0.1; FA and DFA are known to be slow on conv layers


def test_taskspec_from_task():
    task = bioplaus.tasks.get("digits", batch_size=32)
    assert task.spec == TaskSpec((1, 8, 8), 10)
    assert len(task.y_train) + len(task.y_test) == 1797
    assert float(task.x_train.min()) == -1.0 and float(task.x_train.max()) == 1.0
