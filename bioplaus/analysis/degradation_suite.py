"""The degradation suite from one config: conditions × thresholds × episode seeds for one trained actor.

A [`SuiteConfig`][bioplaus.analysis.degradation_suite.SuiteConfig] names a
[`save_actor`][bioplaus.nets.popsan.save_actor] checkpoint, the environment, the thresholds to put into the actor (the
checkpoint's own one, or any other as a drop-in: train static, evaluate with BDETT), the conditions of
[`bioplaus.analysis.degradation`][bioplaus.analysis.degradation] and the episode seeds.
[`run_suite`][bioplaus.analysis.degradation_suite.run_suite] returns tidy rows (one per episode);
[`summarize`][bioplaus.analysis.degradation_suite.summarize] gives mean ± sd return and mean per-layer firing rates.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gymnasium as gym

from bioplaus.analysis.degradation import EpisodeResult, evaluate_degraded, get_condition
from bioplaus.errors import ConfigError
from bioplaus.nets.popsan import load_actor
from bioplaus.nets.thresholds import THRESHOLDS


@dataclass
class SuiteConfig:
    """A degradation suite.

    Attributes:
        checkpoint: path of the trained actor.
        env: Gymnasium environment id.
        thresholds: thresholds to evaluate (``static``, ``bdett``, ``alif``, ``homeostatic``).
        conditions: condition names (``bioplaus.analysis.degradation.CONDITIONS``).
        seeds: episode seeds (each seeds the reset, the weight perturbation and the noise).
        max_steps: cap on episode length (``None``: the environment's time limit).
        carry_threshold: keep threshold memory across the actor's forward calls within an episode
            (the official BDETT persistence) instead of clearing it at every call.
        threshold_options: per threshold name, its options (e.g. ``{"bdett": {"psi": 6.0}}``).
    """

    checkpoint: str
    env: str = "HalfCheetah-v5"
    thresholds: list[str] = field(default_factory=lambda: ["static", "bdett", "alif", "homeostatic"])
    conditions: list[str] = field(default_factory=lambda: ["clean", "obs_noise", "velocity_noise",
                                                           "weight_noise", "zero_weights", "quantized"])  # fmt: skip
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    max_steps: int | None = None
    carry_threshold: bool = False
    threshold_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SuiteConfig:
        """Validate a mapping (e.g. parsed TOML) into a config.

        Raises:
            ConfigError: for an unknown key, threshold or condition, or no seeds.
        """
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown degradation-suite key(s) {unknown}; allowed: {', '.join(allowed)}")
        if "checkpoint" not in raw:
            raise ConfigError("the degradation suite needs 'checkpoint', the path of a trained PopSAN actor")
        config = cls(**raw)
        for name in [*config.thresholds, *config.threshold_options]:
            if name not in THRESHOLDS:
                raise ConfigError(f"unknown threshold {name!r}; known: {', '.join(THRESHOLDS)}")
        for name in config.conditions:
            get_condition(name)
        if not config.seeds:
            raise ConfigError("the degradation suite needs at least one seed")
        return config


def run_suite(config: SuiteConfig, progress=None) -> list[EpisodeResult]:
    """Every (threshold, condition, seed) episode of ``config``.

    ``progress(rows)`` is called with each condition's episodes as they finish.
    """
    env = gym.make(config.env)
    results = []
    for threshold in config.thresholds:
        options = config.threshold_options.get(threshold, {})

        def make_actor(threshold: str = threshold, options: dict[str, Any] = options):
            return load_actor(config.checkpoint, threshold=threshold, threshold_options=options,
                              carry_threshold=config.carry_threshold)  # fmt: skip

        for name in config.conditions:
            rows = evaluate_degraded(
                env, make_actor, get_condition(name), config.seeds, config.env, threshold, config.max_steps
            )
            results += rows
            if progress is not None:
                progress(rows)
    return results


def summarize(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    """Per (condition, threshold): episodes, mean and sd of returns, mean firing rate per layer."""
    groups: dict[tuple[str, str], list[EpisodeResult]] = {}
    for r in results:
        groups.setdefault((r.condition, r.threshold), []).append(r)
    table = []
    for (condition, threshold), rows in groups.items():
        returns = [r.ret for r in rows]
        rates = {layer: statistics.fmean(r.rates[layer] for r in rows) for layer in rows[0].rates}
        table.append({
            "condition": condition, "threshold": threshold, "episodes": len(rows),
            "mean": statistics.fmean(returns), "sd": statistics.pstdev(returns), "rates": rates,
        })  # fmt: skip
    return table


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table: one row per condition, one column per threshold."""
    thresholds = list(dict.fromkeys(row["threshold"] for row in summary))
    cells = {(row["condition"], row["threshold"]): row for row in summary}
    lines = ["| condition | " + " | ".join(thresholds) + " |", "|---" * (len(thresholds) + 1) + "|"]
    for condition in dict.fromkeys(row["condition"] for row in summary):
        entries = []
        for t in thresholds:
            row = cells.get((condition, t))
            if row is None:
                entries.append("—")
                continue
            rates = " ".join(f"{v:.3f}" for v in row["rates"].values())
            entries.append(f"{row['mean']:.0f} ± {row['sd']:.0f} <br> [{rates}]")
        lines.append(f"| {condition} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def paired_differences(results: list[EpisodeResult], reference: str) -> list[dict[str, Any]]:
    """Per (condition, threshold ≠ reference): mean and standard error of the per-seed return difference.

    Seeds are matched (the same reset, weight perturbation and noise for every threshold), so the
    paired difference removes the episode-to-episode variance that dominates the raw sd.
    """
    returns = {(r.condition, r.threshold, r.seed): r.ret for r in results}
    rows = []
    for condition, threshold in dict.fromkeys((r.condition, r.threshold) for r in results):
        if threshold == reference:
            continue
        diffs = [returns[key] - returns[(condition, reference, key[2])] for key in returns
                 if key[:2] == (condition, threshold) and (condition, reference, key[2]) in returns]  # fmt: skip
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        rows.append({"condition": condition, "threshold": threshold, "reference": reference,
                     "mean": statistics.fmean(diffs), "se": se, "seeds": len(diffs)})  # fmt: skip
    return rows


def markdown_differences(rows: list[dict[str, Any]]) -> str:
    """Paired differences as a Markdown table: mean ± standard error, one column per threshold."""
    thresholds = list(dict.fromkeys(row["threshold"] for row in rows))
    cells = {(row["condition"], row["threshold"]): row for row in rows}
    ref = rows[0]["reference"] if rows else ""
    lines = ["| condition | " + " | ".join(f"{t} − {ref}" for t in thresholds) + " |",
             "|---" * (len(thresholds) + 1) + "|"]  # fmt: skip
    for condition in dict.fromkeys(row["condition"] for row in rows):
        entries = [f"{cells[(condition, t)]['mean']:+.0f} ± {cells[(condition, t)]['se']:.0f}" for t in thresholds]
        lines.append(f"| {condition} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def as_records(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    """Tidy rows (one per episode, rates flattened to ``rate/<layer>`` columns) for CSV/JSON."""
    records = []
    for r in results:
        row = {k: v for k, v in asdict(r).items() if k != "rates"}
        row.update({f"rate/{layer}": v for layer, v in r.rates.items()})
        records.append(row)
    return records


def plot_summary(summary: list[dict[str, Any]], title: str = "", path: str | None = None):
    """Grouped bars of mean ± sd return per condition (groups) and threshold (bars)."""
    import matplotlib.pyplot as plt

    conditions = list(dict.fromkeys(row["condition"] for row in summary))
    thresholds = list(dict.fromkeys(row["threshold"] for row in summary))
    cells = {(row["condition"], row["threshold"]): row for row in summary}
    width = 0.8 / len(thresholds)
    fig, ax = plt.subplots(figsize=(1.1 * len(conditions) + 2, 3.4))
    for k, t in enumerate(thresholds):
        rows = [cells.get((c, t)) for c in conditions]
        xs = [i + (k - (len(thresholds) - 1) / 2) * width for i in range(len(conditions))]
        means = [r["mean"] if r else float("nan") for r in rows]
        sds = [r["sd"] if r else 0.0 for r in rows]
        ax.bar(xs, means, width, yerr=sds, capsize=2, label=t)
    ax.set_xticks(range(len(conditions)), conditions, rotation=20, fontsize=8)
    ax.set_ylabel("episode return (mean ± sd)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
