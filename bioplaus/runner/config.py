"""Run configuration: the keys of a TOML config, ``--set key=value`` overrides, and their validation.

Every key is checked before anything runs; a bad one raises
`ConfigError` with a message that names the key and what is allowed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bioplaus.errors import ConfigError
from bioplaus.nets._registry import MODELS
from bioplaus.registry import Registry, did_you_mean
from bioplaus.rules._registry import RULES
from bioplaus.runner.option_types import check_value, option_hints
from bioplaus.tasks._registry import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
RUNNER_TASK_OPTIONS = ("batch_size", "device")


@dataclass
class RunConfig:
    """A comparison of rules against BP on one task and model, resolved and validated.

    Attributes:
        task: registered task name (``bioplaus tasks``).
        model: registered model name (``bioplaus models``).
        rules: registered rule names (``bioplaus rules``); BP is the reference when present.
        seeds: seeds; each (rule, seed) gets a fresh model with the seed's initial weights.
        epochs: training epochs per run (the shared budget).
        batch_size: examples per update.
        optimizer: ``adam``, ``adamw``, ``sgd`` or ``rmsprop`` (torch.optim), the same for every rule.
        lr: learning rate.
        momentum: SGD/RMSprop momentum.
        weight_decay: L2 weight decay of the optimizer.
        fused: use PyTorch's fused optimizer kernel where there is one (several times faster on a
            CPU); ``False``: torch's default per-tensor implementation, which rounds differently in
            the last bit (results recorded with it, such as the motor pre-training, reproduce).
        alignment_every: log per-layer cosine with the BP gradient every this many updates (0: never).
        reference: the rule the others are held against in reports and figures (``bp``; ``scalar_bp`` in VNNs).
        device: torch device (``cpu``, ``cuda``).
        task_options: options of the task factory (e.g. ``n_train``, ``root``).
        model_options: options of the model factory (e.g. ``hidden``).
        rule_options: per rule name, options of that rule (e.g. ``{"fa": {"scale": 0.5}}``).
    """

    task: str = "digits"
    model: str = "mlp"
    rules: list[str] = field(default_factory=lambda: ["bp", "fa", "dfa"])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    fused: bool = True
    alignment_every: int = 0
    reference: str = "bp"
    device: str = "cpu"
    task_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Validate a mapping (parsed TOML, CLI flags) into a config; defaults fill missing keys."""
        allowed = [f.name for f in fields(cls)]
        for key in raw:
            if key == "grid":
                raise ConfigError(
                    "this config has a [grid] table: run it with 'bioplaus sweep CONFIG.toml' (bioplaus.sweep)"
                )
            if key not in allowed:
                raise ConfigError(
                    f"unknown config key '{key}'{did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}"
                )
        cfg = cls()
        values = {**asdict(cfg), **raw}
        cfg.task = _name(values["task"], TASKS, "task")
        cfg.model = _name(values["model"], MODELS, "model")
        cfg.rules = _rules(values["rules"])
        cfg.seeds = _seeds(values["seeds"])
        cfg.epochs = _integer(values["epochs"], "epochs", minimum=1)
        cfg.batch_size = _integer(values["batch_size"], "batch_size", minimum=1)
        cfg.optimizer = _choice(values["optimizer"], "optimizer", OPTIMIZERS)
        cfg.lr = _number(values["lr"], "lr", positive=True)
        cfg.momentum = _number(values["momentum"], "momentum")
        cfg.weight_decay = _number(values["weight_decay"], "weight_decay")
        cfg.fused = _flag(values["fused"], "fused")
        cfg.alignment_every = _integer(values["alignment_every"], "alignment_every", minimum=0)
        cfg.reference = _string(values["reference"], "reference")
        cfg.device = _device(values["device"])
        cfg.task_options = _options(values["task_options"], TASKS, cfg.task, "task_options", RUNNER_TASK_OPTIONS)
        cfg.model_options = _options(values["model_options"], MODELS, cfg.model, "model_options", ())
        cfg.rule_options = check_rule_options(values["rule_options"], cfg.rules)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what ``config.json`` stores)."""
        return asdict(self)


def check_rule_options(value: Any, rules: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Validate ``rule_options``: a table per rule name among ``rules``, holding that rule's options."""
    table = _table(value, "rule_options")
    for name in table:
        if name not in rules:
            listing = ", ".join(rules) or "none given by name"
            raise ConfigError(f"rule_options.{name} is set but '{name}' is not among rules ({listing})")
    return {name: _options(opts, RULES, name, f"rule_options.{name}", ()) for name, opts in table.items()}


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file; a syntax error raises ``ConfigError`` naming the file and line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from None


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as TOML (``3``, ``1e-3``, ``true``, ``[64, 64]``, ``"x"``); else a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` assignments (dotted keys reach into tables) to a copy of ``raw``."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. --set lr=0.01), got '{text}'")
        out = set_key(out, key, parse_value(value.strip()))
    return out


def set_key(raw: Mapping[str, Any], key: str, value: Any, flag: str = "--set") -> dict[str, Any]:
    """A copy of ``raw`` with the dotted ``key`` (``lr``, ``model_options.hidden``) set to ``value``.

    Tables along the path are copied, never modified; ``flag`` names the source in error messages.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    *path, leaf = key.split(".")
    node = out
    for part in path:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{flag} {key}: '{part}' is not a table of options")
        else:
            child = node[part] = dict(child)
        node = child
    node[leaf] = value
    return out


# --- validators ---------------------------------------------------------------------------------


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} expects a non-empty string, got {value!r}")
    return value


def _device(value: Any) -> str:
    import torch

    try:
        device = torch.device(_string(value, "device"))
    except RuntimeError:
        raise ConfigError(f"device expects a torch device such as 'cpu' or 'cuda:0', got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {value!r} was asked for, but this machine has no CUDA GPU; use device='cpu'")
    return value


def _name(value: Any, registry: Registry[Any], key: str) -> str:
    registry.entry(_string(value, key))
    return value


def _choice(value: Any, key: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(
            f"{key} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), list(choices))}"
        )
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    return value


def _integer(value: Any, key: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value}")
    return value


def _number(value: Any, key: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{key} must be positive, got {value}")
    return float(value)


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} expects a table of options (TOML [{key}] or --set {key}.NAME=VALUE), got {value!r}")
    return dict(value)


def _rules(value: Any) -> list[str]:
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"rules expects a non-empty list of rule names (e.g. bp,fa,dfa), got {value!r}")
    for name in names:
        RULES.entry(name)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"rules lists {', '.join(duplicated)} more than once")
    return names


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"seeds must be a count ≥ 1 or a list of integers, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"seeds lists a seed more than once: {value}")
        return list(value)
    raise ConfigError(f"seeds must be a count ≥ 1 or a list of integers, got {value!r}")


def _options(value: Any, registry: Registry[Any], name: str, key: str, reserved: Sequence[str]) -> dict[str, Any]:
    options = _table(value, key)
    for opt in options:
        if opt in reserved:
            raise ConfigError(f"{key}.{opt} is set by the runner; use the top-level key '{opt}' instead")
    registry.check_options(name, options)
    hints = option_hints(registry.entry(name))
    return {opt: check_value(v, hints[opt], f"{key}.{opt}") for opt, v in options.items()}
