"""What the command line prints about itself: its version and one registered entry's options."""

from __future__ import annotations

import time

import pytest
from cli_helpers import run_cli as run

import bioplaus
from bioplaus.nets import MLP
from bioplaus.plotting import metric_label


def test_version_flag_prints_the_package_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"bioplaus {bioplaus.__version__}"


@pytest.mark.parametrize(
    ("argv", "lines"),
    [
        (["tasks", "rl"], ["task 'rl':", "learning_starts  an integer, default 10000", "steps of random acting"]),
        (["rules", "fa"], ["rule 'fa': Feedback alignment", "scale  a number, default 1.0", "rule_options.fa"]),
        (["models", "mlp"], ["model 'mlp':", "hidden      a list of integers, default (256, 256)"]),
        (["rules", "bp"], ["rule 'bp':", "no options"]),
    ],
)
def test_listing_one_entry_shows_its_options_types_and_defaults(capsys, argv, lines):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    for line in lines:
        assert line in out, out
    assert "batch_size  " not in out  # set by the runner, not a task option


@pytest.mark.parametrize("kind", ["tasks", "rules", "models"])
def test_unknown_entry_is_one_line_with_the_known_names(capsys, kind):
    code, out, err = run(capsys, kind, "nosuch")
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and "unknown" in err and "known" in err and "'nosuch'" in err


@pytest.mark.parametrize(
    ("task", "model", "options", "named"),
    [
        ("rl", "mlp", {"steps_per_epoch": 100, "learning_starts": 500}, "task_options.learning_starts"),
        ("td3", "popsan", {"env": "Pendulum-v1", "steps_per_epoch": 100, "update_after": 300}, "update_after"),
    ],
)
def test_rl_budget_that_ends_before_learning_is_refused_before_training(task, model, options, named):
    pytest.importorskip("gymnasium")
    model_options = {"act_limit": 2.0} if model == "popsan" else {}
    with pytest.raises(bioplaus.errors.ConfigError, match="before the first update") as err:
        bioplaus.compare(
            model=model, rules=["bp"], task=task, epochs=2, task_options=options, model_options=model_options,
            progress=False,
        )  # fmt: skip
    assert named in str(err.value) and "epochs" in str(err.value)


@pytest.mark.parametrize(
    ("task", "options", "headline"),
    [
        ("digits", {}, ("test/accuracy",)),
        ("delayed-recall", {"T": 5, "transfer": [2]}, ("test/accuracy", "test_T10/accuracy")),
        ("adding", {"T": 5, "transfer": [2]}, ("test/loss", "test_T10/loss")),
        ("reaching", {}, ("test/mse", "test_off/mse")),
        ("reach-adaptation", {}, ("centre_out_off/mse", "centre_out/mse")),
    ],
)
def test_tasks_declare_their_headline_metrics(task, options, headline):
    assert bioplaus.tasks.get(task, **options).headline_metrics() == headline


def test_report_and_figure_show_the_headline_metrics_first():
    result = bioplaus.compare(rules=["bp"], task="digits", epochs=1, progress=False)
    result.config["headline_metrics"] = ["test/loss"]
    header = result.report().splitlines()[0].split()
    assert header[1] == "test/loss", header
    assert result.plot().axes[0].get_title() == "Test loss"


class _Clock:
    """A stand-in for ``time.perf_counter`` that moves only when a model trains on a batch."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _SlowFirstUpdate(MLP):
    """An MLP whose training forward passes take 1 s on the clock, the first one 100 s (a one-time cost)."""

    clock = _Clock()

    def __init__(self, spec):
        super().__init__(spec.in_features, [8], spec.n_out)
        self.warm = False

    def forward(self, x):
        if self.training:
            self.clock.now += 1.0 if self.warm else 100.0
            self.warm = True
        return super().forward(x)


def test_time_per_update_leaves_out_the_warm_up_step_also_after_a_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "perf_counter", _SlowFirstUpdate.clock)
    opts = dict(task="synthetic", model=_SlowFirstUpdate, rules=["bp"], progress=False, out=tmp_path, checkpoint=True)
    first = bioplaus.compare(epochs=1, **opts).runs.iloc[0]
    assert first["seconds"] == first["steps"] - 1 and first["seconds_per_step"] == 1.0
    again = bioplaus.compare(epochs=2, resume=True, **opts).runs.iloc[0]  # a fresh model: it warms up again
    assert again["steps"] == 2 * first["steps"]
    assert again["seconds"] == again["steps"] - 2 and again["seconds_per_step"] == 1.0


@pytest.mark.parametrize(
    ("name", "title", "unit"),
    [
        ("test/accuracy", "Test accuracy", "accuracy (fraction correct)"),
        ("test_T40/accuracy", "Test (T = 40) accuracy", "accuracy (fraction correct)"),
        ("centre_out_off/mse", "Centre-out, control off MSE", "mean squared error"),
        ("eval/return", "Evaluation return", "return (reward per episode)"),
        ("train/alignment/fc1", "Alignment with the reference, fc1", "cosine"),
    ],
)
def test_metric_names_become_titles_and_units(name, title, unit):
    assert metric_label(name) == (title, unit)


def test_figure_titles_ticks_markers_chance_and_reference():
    import matplotlib.pyplot as plt

    result = bioplaus.compare(rules=["bp", "fa"], task="digits", epochs=1, progress=False)
    fig = result.plot()
    acc, loss = fig.axes[:2]
    assert fig._suptitle.get_text() == "digits · mlp · bp, fa (mean ± sd over 1 seed)"
    assert (acc.get_title(), acc.get_ylabel()) == ("Test accuracy", "accuracy (fraction correct)")
    assert list(acc.get_xticks()) == [0, 1] and list(loss.get_xticks()) == [1]
    lines = {line.get_label(): line for line in acc.get_lines()}
    assert lines["bp (reference)"].get_linestyle() == "--" and lines["fa"].get_linestyle() == "-"
    assert lines["chance"].get_linestyle() == ":" and lines["chance"].get_ydata()[0] == pytest.approx(0.1)
    assert any(text.get_text() == "chance 0.1" for text in acc.texts)
    assert "chance" not in {line.get_label() for line in loss.get_lines()}  # no chance level for a loss
    assert all(line.get_marker() == "o" for line in loss.get_lines())  # one epoch: one point per curve
    assert all(line.get_marker() in ("None", None) for line in acc.get_lines())  # epochs 0 and 1
    plt.close(fig)
