"""Sweep grids: parse ``--grid key=v1,v2`` and TOML ``[grid]`` tables, expand them into single runs.

A run is one resolved configuration of one grid cell, with one rule and one seed. Its id is a
hash of that configuration's canonical JSON, so the same run gets the same id in every sweep
and a sweep that is started again finds the runs it already did.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bioplaus.errors import ConfigError
from bioplaus.runner.config import RunConfig, parse_value, set_key

# Keys that a sweep expands by itself: every rule in ``rules`` and every seed runs in every cell.
NOT_GRID_KEYS = {
    "rules": "every rule in 'rules' already runs in every grid cell; list them with rules = [...] or --set rules=[...]",
    "seeds": "every seed already runs in every grid cell; set how many with --seeds N (or seeds = N)",
}
# Keys that do not change what a run computes, so they are not part of its id.
NOT_RUN_KEYS = ("reference",)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id and its resolved single-run config (one rule, one seed).

    Attributes:
        run_id: 12 hex digits of the SHA-256 of the canonical JSON of ``config``.
        config: the keys of [`RunConfig`][bioplaus.runner.config.RunConfig] with ``rules = [rule]``,
            ``seeds = [seed]`` and only that rule's ``rule_options``; ``reference`` left out.
    """

    run_id: str
    config: dict[str, Any]

    @property
    def rule(self) -> str:
        """The run's rule."""
        return self.config["rules"][0]

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config["seeds"][0]


def canonical_json(config: Mapping[str, Any]) -> str:
    """The JSON text that a run id hashes: sorted keys, no spaces, floats in repr form."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_id(config: Mapping[str, Any]) -> str:
    """The stable id of a resolved single-run config (12 hex digits of its SHA-256)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,…`` at the commas outside brackets and quotes: ``[64],[128,128]`` gives two values."""
    values, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced '{char}' in grid values '{text}'")
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ConfigError(f"unclosed {quote or 'bracket'} in grid values '{text}'")
    values.append(text[start:].strip())
    return values


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """Parse one ``--grid key=v1,v2,…`` option; each value is read as TOML (``1e-3``, ``[64, 64]``, ``"x"``)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or " " in key:
        raise ConfigError(f"--grid expects key=v1,v2,... (e.g. --grid lr=1e-3,1e-2), got '{text}'")
    if not values.strip():
        raise ConfigError(f"--grid {key}= lists no values; give them comma-separated, e.g. --grid {key}=1,2")
    parts = split_values(values)
    if "" in parts:
        raise ConfigError(f"--grid {key}={values} has an empty value (two commas in a row or a trailing comma)")
    return key, [parse_value(part) for part in parts]


def grid_from_table(table: Any, prefix: str = "") -> dict[str, list[Any]]:
    """Flatten a TOML ``[grid]`` table (nested tables or quoted dotted keys) into ``dotted key -> values``."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"grid expects a table of key = [values] (a TOML [grid] section), got {table!r}")
    grid: dict[str, list[Any]] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            grid |= grid_from_table(value, f"{name}.")
        elif isinstance(value, list) and value:
            grid[name] = value
        else:
            raise ConfigError(
                f"grid.{name} expects a non-empty list of values, e.g. {name} = [1e-3, 1e-2], got {value!r}"
            )
    return grid


def check_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Check the shape of a grid (``key -> list of values``) before its cells are validated as configs."""
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"grid key {key!r} is not a config key such as lr or model_options.hidden")
        root = key.split(".")[0]
        if root in NOT_GRID_KEYS:
            raise ConfigError(f"'{key}' cannot be a grid key: {NOT_GRID_KEYS[root]}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"grid key '{key}' expects a non-empty list of values, got {values!r}")
        texts = [canonical_json(v) for v in values]
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise ConfigError(f"grid key '{key}' lists the value {repeated[0]} more than once")
        out[key] = list(values)
    return out


def _single_run(cfg: RunConfig, rule: str, seed: int) -> dict[str, Any]:
    config = cfg.to_dict()
    for key in NOT_RUN_KEYS:
        del config[key]
    config["rules"], config["seeds"] = [rule], [seed]
    config["rule_options"] = {rule: cfg.rule_options[rule]} if rule in cfg.rule_options else {}
    return config


def expand(raw: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[PlannedRun]:
    """Every (grid cell, rule, seed) of a sweep as a validated single run, duplicates merged.

    ``raw`` holds config keys (as in a TOML file, without ``grid``); each grid cell sets its
    dotted keys on a copy and is validated by [`RunConfig.from_dict`][bioplaus.runner.config.RunConfig.from_dict]
    before anything runs. A run that two cells share (BP in cells that differ only in ``rule_options.fa.*``) is planned
    once.

    Raises:
        ConfigError: naming the grid cell and the key that is invalid.
    """
    grid = check_grid(grid)
    runs: dict[str, PlannedRun] = {}
    for values in itertools.product(*grid.values()):
        cell = dict(zip(grid, values, strict=True))
        config = dict(raw)
        for key, value in cell.items():
            config = set_key(config, key, value, flag="--grid")
        try:
            cfg = RunConfig.from_dict(config)
        except ConfigError as err:
            where = ", ".join(f"{k}={canonical_json(v)}" for k, v in cell.items())
            raise ConfigError(f"grid cell {where}: {err}" if cell else str(err)) from None
        for rule in cfg.rules:
            for seed in cfg.seeds:
                single = _single_run(cfg, rule, seed)
                runs.setdefault(run_id(single), PlannedRun(run_id(single), single))
    return list(runs.values())
