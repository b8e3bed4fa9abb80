"""Run checkpoints: 1 epoch, save, load, 2 more equals 3 straight, bit for bit (rule and optimizer state included)."""

from __future__ import annotations

import pytest
import torch

import bioplaus
from bioplaus.errors import ConfigError
from bioplaus.nets.rate_rnn import RateRNN, save_checkpoint
from bioplaus.runner.checkpoint import load_model, read

CASES = {
    "fa": dict(model="mlp", task="digits", model_options={"hidden": [16]}, batch_size=128),
    "dfa": dict(model="mlp", task="digits", model_options={"hidden": [16, 16]}, batch_size=128),
    "kolen_pollack": dict(
        model="mlp",
        task="digits",
        model_options={"hidden": [16]},
        batch_size=128,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
    ),  # fmt: skip
    "weight_mirror": dict(model="mlp", task="digits", model_options={"hidden": [16]}, batch_size=128),
    "sign_symmetry": dict(
        model="mlp",
        task="digits",
        model_options={"hidden": [16]},
        batch_size=128,
        rule_options={"sign_symmetry": {"variant": "brsf"}},
    ),  # fmt: skip
    "rflo": dict(
        model="rate_rnn",
        task="reach-adaptation",
        model_options={"n": 16},
        task_options={"iterations": 2},
        batch_size=1,
        optimizer="sgd",
        lr=1e-5,
    ),
    "distributed_td": dict(
        model="ad",
        task="rl",
        model_options={"hidden": [8, 8]},
        task_options={
            "env": "CartPole-v1",
            "steps_per_epoch": 80,
            "buffer_size": 1000,
            "learning_starts": 40,
            "train_every": 2,
            "target_every": 50,
            "eps_steps": 200,
            "eval_episodes": 1,
            "progress": False,
        },
        batch_size=16,
    ),
    "td3": dict(
        model="popsan",
        task="td3",
        model_options={"hidden": [16], "act_limit": 2.0, "threshold": "bdett"},
        task_options={
            "env": "Pendulum-v1",
            "steps_per_epoch": 150,
            "start_steps": 100,
            "update_after": 100,
            "update_every": 25,
            "buffer_size": 500,
            "critic_hidden": [16],
            "eval_episodes": 1,
            "progress": False,
        },
        batch_size=16,
    ),
    "reach-adaptation-grid": dict(
        model="rate_rnn",
        task="reach-adaptation-grid",
        task_options={
            "lrs": [1e-3, 100.0],  # the second condition diverges in the first epoch and stays frozen
            "controls": [1.0, 0.0],
            "trials": 2,
            "timing": {
                "T": 20,
                "cue_on": 2,
                "peak": [10, 10],
                "peak_centre_out": [10, 10],
                "go_to_peak": 5,
                "move_steps": 12,
            },
        },  # fmt: skip
        batch_size=1,
        optimizer="sgd",
    ),
}
RULE_OF = {"td3": "bp", "reach-adaptation-grid": "rflo"}
"""The rule of the cases named after their task."""


def _table(result):
    table = result.table[result.table["metric"] != "seconds_per_step"]
    return table.drop(columns=["step"]).reset_index(drop=True), list(table["step"])


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_run_equals_straight_run(case, tmp_path):
    rule = RULE_OF.get(case, case)
    options = CASES[case] | {"rules": [rule], "seeds": 1, "progress": False, "alignment_every": 5}
    if case == "reach-adaptation-grid":  # adapts a saved network
        torch.manual_seed(0)
        save_checkpoint(RateRNN(16), tmp_path / "net.pt")
        options["model_options"] = {"checkpoint": str(tmp_path / "net.pt")}
    straight = bioplaus.compare(epochs=3, out=tmp_path / "straight", checkpoint=True, **options)
    bioplaus.compare(epochs=1, out=tmp_path / "resumed", checkpoint=True, **options)
    half = read(tmp_path / "resumed" / "checkpoints" / f"{rule}-seed0.pt")
    assert half["state"]["epoch"] == 1
    resumed = bioplaus.compare(epochs=3, out=tmp_path / "resumed", checkpoint=True, resume=True, **options)
    assert (resumed.runs["status"] == "done").all()
    a, b = _table(straight), _table(resumed)
    assert a[1] == b[1]
    assert a[0].equals(b[0])
    if case == "reach-adaptation-grid":  # the frozen condition's state survived the resume
        diverged = straight.table.query("split == 'adaptation' and metric == 'diverged/lr=100,control=0'")
        assert diverged["value"].tolist() == [0.0, 1.0, 1.0, 1.0]
    full = {name: read(tmp_path / name / "checkpoints" / f"{rule}-seed0.pt") for name in ("straight", "resumed")}
    for part in ("model", "rule"):
        assert full["straight"][part].keys() == full["resumed"][part].keys()
        for key, value in full["straight"][part].items():
            assert torch.equal(value, full["resumed"][part][key]), (part, key)


def test_rule_state_is_in_the_checkpoint_and_the_model_reloads(tmp_path):
    result = bioplaus.compare(
        model="mlp", rules=["fa"], task="digits", epochs=1, model_options={"hidden": [8]},
        progress=False, out=tmp_path, checkpoint=True,
    )  # fmt: skip
    saved = read(tmp_path / "checkpoints" / "fa-seed0.pt")
    assert {"layers/fc1", "layers/readout"} <= set(saved["rule"])
    model = load_model(tmp_path / "checkpoints" / "fa-seed0.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key])
    assert result.runs["status"].tolist() == ["done"]


def test_a_finished_run_is_not_trained_again(tmp_path):
    options = dict(model="mlp", rules=["bp"], task="digits", epochs=1, progress=False, out=tmp_path, checkpoint=True)
    first = bioplaus.compare(**options)
    again = bioplaus.compare(resume=True, **options)
    assert _table(first)[0].equals(_table(again)[0])


def test_checkpoint_needs_a_folder():
    with pytest.raises(ConfigError, match="out=DIR"):
        bioplaus.compare(model="mlp", rules=["bp"], task="digits", epochs=1, checkpoint=True, progress=False)
    with pytest.raises(ConfigError, match="no model file"):
        load_model("/nonexistent/run.pt")
