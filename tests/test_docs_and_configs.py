"""The documentation builds strictly and every shipped experiment config is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioplaus.runner import RunConfig, load_toml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("config", sorted((ROOT / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_experiment_configs_validate(config):
    RunConfig.from_dict(load_toml(str(config)))
