"""The runner: ``compare`` rules × seeds on a task and model, from Python or from a config; ``sweep`` grids of them."""

from bioplaus.runner.compare import build_optimizer, compare, run_config, train_run
from bioplaus.runner.config import RunConfig, apply_overrides, load_toml, parse_value
from bioplaus.runner.result import Comparison
from bioplaus.runner.sweep import sweep
from bioplaus.runner.training import train_epoch, train_step

__all__ = [
    "Comparison",
    "RunConfig",
    "apply_overrides",
    "build_optimizer",
    "compare",
    "load_toml",
    "parse_value",
    "run_config",
    "sweep",
    "train_epoch",
    "train_run",
    "train_step",
]
