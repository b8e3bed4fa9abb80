"""What the command line prints about itself: its version and one registered entry's options."""

from __future__ import annotations

import pytest
from cli_helpers import run_cli as run

import bioplaus


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
