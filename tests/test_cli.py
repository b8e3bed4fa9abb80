"""The bioplaus command line: listings, a learning comparison, and clear errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from cli_helpers import run_cli as run


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("rules", ["bp", "fa", "dfa"]),
        ("models", ["mlp", "convnet"]),
        ("tasks", ["digits", "fashion-mnist", "synthetic"]),
    ],
)
def test_listings_have_one_line_descriptions(capsys, command, names):
    code, out, _ = run(capsys, command)
    assert code == 0
    lines = {line.split()[0]: line for line in out.strip().splitlines()}
    for name in names:
        assert len(lines[name].split()) > 3, lines[name]


def test_compare_on_digits_learns_with_every_rule(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "compare",
        "--task",
        "digits",
        "--rules",
        "bp,fa,dfa",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert code == 0, out
    assert "test/accuracy" in out and "wrote" in out
    summary = pd.read_csv(tmp_path / "summary.csv")
    acc = summary[summary["metric"] == "test/accuracy"].set_index("rule")["mean"]
    assert set(acc.index) == {"bp", "fa", "dfa"}
    assert (acc > 0.6).all(), acc  # chance is 0.1


def test_run_config_file_with_overrides(capsys, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(
        'task = "synthetic"\nrules = ["bp", "dfa"]\nepochs = 1\n[model_options]\nhidden = [16]\n'
        "[rule_options.dfa]\nlow = 0.0\n"
    )
    code, out, err = run(capsys, "run", str(config), "--out", str(tmp_path / "o"), "--set", "seeds=[4, 5]", "--quiet")
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert sorted(runs["seed"].unique()) == [4, 5] and set(runs["rule"]) == {"bp", "dfa"}
    assert '"low": 0.0' in (tmp_path / "o" / "config.json").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--rules", "bp,xyz"], "unknown rule 'xyz'; known rules: bp, "),
        (["compare", "--set", "lr=fast"], "lr expects a number, got 'fast'"),
        (["compare", "--set", "epochs=2.5"], "epochs expects an integer, got 2.5"),
        (["compare", "--set", "lrr=0.1"], "unknown config key 'lrr' (did you mean 'lr'?)"),
        (["compare", "--set", "lr"], "--set expects key=value"),
        (["compare", "--set", "model_options.hiden=[3]"], "model 'mlp' has no option 'hiden'"),
        (["compare", "--set", "model_options.hidden=3"], "model_options.hidden expects a list, got 3"),
        (
            ["compare", "--rules", "bp", "--set", "rule_options.fa.scale=2"],
            "rule_options.fa is set but 'fa' is not among rules",
        ),
        (["compare", "--task", "fashion"], "unknown task 'fashion'"),
        (["compare", "--optimizer", "adma"], "optimizer must be one of adam, adamw, sgd, rmsprop, got 'adma'"),
        (["compare", "--epochs", "three"], "argument --epochs: invalid int value: 'three'"),
        (["compare", "--task", "fashion-mnist", "--set", "task_options.root=/nonexistent/fm"], "/nonexistent/fm"),
        (["run", "/nonexistent.toml"], "config file '/nonexistent.toml' does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["compare", "--device", "gpu0"], "device expects a torch device such as 'cpu' or 'cuda:0', got 'gpu0'"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_message(capsys, argv, message):
    code, out, err = run(capsys, *argv, "--quiet") if argv[0] in ("compare", "run") else run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""
    assert err.startswith("bioplaus: error: ")


def test_bad_toml_key_and_syntax(capsys, tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text('task = "digits"\nepoch = 3\n')
    code, _, err = run(capsys, "run", str(bad_key))
    assert code == 2 and "unknown config key 'epoch' (did you mean 'epochs'?)" in err
    bad_syntax = tmp_path / "b.toml"
    bad_syntax.write_text("task = \n")
    code, _, err = run(capsys, "run", str(bad_syntax))
    assert code == 2 and "is not valid TOML" in err and str(bad_syntax) in err


def test_console_script_is_installed():
    out = subprocess.run(["bioplaus", "rules"], capture_output=True, text=True, check=True).stdout
    assert "dfa" in out
    out = subprocess.run([sys.executable, "-m", "bioplaus.cli", "--help"], capture_output=True, text=True, check=True)
    assert "compare" in out.stdout
