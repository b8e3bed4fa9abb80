"""The documentation builds strictly and every shipped experiment config is valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bioplaus.runner import RunConfig, load_toml

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "rules" / "index.html").read_text()
    assert "DirectFeedbackAlignment" in api and "Lillicrap" in api  # docstrings were rendered


@pytest.mark.parametrize("config", sorted((ROOT / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_experiment_configs_validate(config):
    RunConfig.from_dict(load_toml(str(config)))
