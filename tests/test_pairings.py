"""The typed contracts tell the truth: every (model, rule) pair that ``bioplaus rules --model M --task T``
lists for a task trains one short epoch through ``compare``, and the pairs it leaves out fail before
anything trains, with a ConfigError that names what fits.

One small setting per task family (classification, sequences, motor, both RL tasks); the pairs are
read from the registry, so a new model, rule or capability is checked by being registered.
"""

from __future__ import annotations

import pytest

import bioplaus
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.runner import preflight

TIMING = {"T": 20, "cue_on": 2, "peak": [10, 10], "peak_centre_out": [10, 10], "go_to_peak": 5, "move_steps": 12}
TASKS = {  # task -> (task options, batch size)
    "digits": ({}, 512),
    "adding": ({"T": 5, "steps_per_epoch": 2, "n_test": 8, "transfer": []}, 4),
    "reaching": ({"iterations": 2, "timing": TIMING}, 2),
    "rl": (
        {
            "env": "CartPole-v1",
            "steps_per_epoch": 40,
            "learning_starts": 20,
            "train_every": 4,
            "eval_episodes": 1,
            "progress": False,
        },
        8,
    ),  # fmt: skip
    "td3": (
        {
            "env": "Pendulum-v1",
            "steps_per_epoch": 60,
            "start_steps": 40,
            "update_after": 40,
            "update_every": 10,
            "buffer_size": 100,
            "critic_hidden": [8],
            "eval_episodes": 0,
            "progress": False,
        },
        8,
    ),  # fmt: skip
}
MODELS = {  # the smallest options of each model
    "mlp": {"hidden": [8, 8]},
    "convnet": {"channels": [2, 2], "hidden": 8},
    "vnn": {"hidden": [8]},
    "ad": {"hidden": [8, 8], "heads": 2},
    "lstm": {"hidden": 4},
    "attn_lstm": {"hidden": 4},
    "sab_lstm": {"hidden": 4, "k_top": 2, "k_att": 1},
    "rate_rnn": {"n": 8},
    "popsan": {"hidden": [8], "T": 2, "pop": 2, "out_pop": 2, "act_limit": 2.0},
}
RULES = {"tbptt": {"k_trunc": 2}, "tbptt_stream": {"k_trunc": 2}}
SLOW = {"conventional_conv", "conventional_fc", "conventional_lc", "vnn_conv", "vnn_lc"}
"""Models at the GEVB paper's sizes (no small option): covered by their own tests, not trained here."""


def _listed() -> list[tuple[str, str, str]]:
    out = []
    for task in TASKS:
        for model in sorted(preflight.fitting("models", task=task) - SLOW):
            out += [(task, model, rule) for rule in sorted(preflight.fitting("rules", model=model, task=task))]
    return out


def _compare(task: str, model: str, rule: str):
    options, batch_size = TASKS[task]
    return bioplaus.compare(
        model=model, rules=[rule], task=task, epochs=1, batch_size=batch_size, task_options=options,
        model_options=MODELS[model], rule_options={rule: RULES[rule]} if rule in RULES else None, progress=False,
        optimizer="sgd", lr=1e-4,
    )  # fmt: skip


def test_every_listed_model_has_small_options():
    listed = {model for _, model, _ in _listed()}
    assert listed <= set(MODELS), f"add the smallest options of {sorted(listed - set(MODELS))} to MODELS"
    assert {"mlp", "vnn", "ad", "lstm", "rate_rnn", "popsan"} <= listed


@pytest.mark.parametrize(("task", "model", "rule"), _listed(), ids=["-".join(pair) for pair in _listed()])
def test_a_listed_pair_trains(task, model, rule):
    """It trains, or the model's factory refuses this task's input shape (a conv net on CartPole's
    vectors; the capabilities say what a model is, the factory checks the shapes)."""
    try:
        result = _compare(task, model, rule)
    except (ConfigError, ShapeError) as err:
        assert "shape" in str(err), err
        return
    assert result.runs["status"].iloc[0] == "done", result.runs["message"].iloc[0]  # SGD at 1e-4: no divergence


UNLISTED = [
    ("digits", "rate_rnn", "bp", "drives models that are feedforward"),
    ("digits", "ad", "bp", "drives models that are feedforward"),
    ("adding", "lstm", "dfa", "cannot train a model that is sequence"),
    ("rl", "rate_rnn", "bp", "drives models that are feedforward or layerwise_q"),
    ("td3", "mlp", "bp", "is not one|policy"),
]


@pytest.mark.parametrize(("task", "model", "rule", "message"), UNLISTED, ids=lambda x: str(x)[:20])
def test_an_unlisted_pair_fails_before_training(task, model, rule, message):
    assert (task, model, rule) not in _listed()
    options = MODELS.get(model, {"hidden": [8]})
    with pytest.raises(ConfigError, match=message):
        bioplaus.compare(model=model, rules=["bp", rule] if rule != "bp" else [rule], task=task, epochs=1,
                         task_options=TASKS[task][0], model_options=options, progress=False)  # fmt: skip
