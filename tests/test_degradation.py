"""Degraded conditions are applied exactly as specified; the suite runs from one config; homeostasis sweep."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from bioplaus.analysis.degradation import (
    CONDITIONS,
    add_weight_noise_,
    degraded_policy,
    get_condition,
    perturb_weights_,
    quantize_,
    sensor_dims,
    zero_entries_,
)
from bioplaus.analysis.degradation_suite import SuiteConfig, markdown_table, paired_differences, run_suite, summarize
from bioplaus.analysis.homeostasis import input_scale_sweep
from bioplaus.analysis.spikes import FiringRates
from bioplaus.errors import ConfigError
from bioplaus.nets.popsan import PopSAN, save_actor


def _actor(threshold: str = "static") -> PopSAN:
    torch.manual_seed(0)
    return PopSAN(3, 1, 2.0, hidden=(12,), pop=4, out_pop=4, threshold=threshold)


def test_zero_entries_sets_exactly_thirty_percent():
    w = torch.randn(40, 25) + 5.0  # no zero entries before
    zero_entries_(w, 0.3, torch.Generator().manual_seed(0))
    assert int((w == 0).sum()) == 300


def test_quantized_values_lie_on_the_255_level_grid():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(20, 10, generator=g), torch.randn(20, generator=g) * 3
    scale = quantize_(w, b, 255)
    assert scale == pytest.approx(255 / max(w.abs().max(), b.abs().max()).item(), rel=1e-2)
    for t in (w, b):
        k = t * scale
        torch.testing.assert_close(k, k.round(), atol=1e-3, rtol=0)
        assert k.abs().max() <= 255 + 1e-3
    assert (b * scale).abs().max().item() == pytest.approx(255)  # the largest magnitude maps to ±255


def test_weight_noise_has_the_specified_std():
    w = torch.zeros(300, 300)
    add_weight_noise_(w, 0.05, torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(w.mean().item()) < 1e-3


def test_perturbations_touch_spiking_weights_only_and_follow_the_seed():
    actor = _actor()
    before = {k: v.clone() for k, v in actor.state_dict().items()}
    perturb_weights_(actor, get_condition("weight_noise"), torch.Generator().manual_seed(3))
    after = actor.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"layers.{i}.linear.weight" for i in range(2)}
    again = _actor()
    perturb_weights_(again, get_condition("weight_noise"), torch.Generator().manual_seed(3))
    torch.testing.assert_close(again.state_dict(), after)
    scaled = _actor()
    perturb_weights_(scaled, get_condition("scale_2"), torch.Generator())
    torch.testing.assert_close(scaled.layers[0].linear.bias, 2 * before["layers.0.linear.bias"])


def test_observation_conditions():
    actor = _actor()
    seen = []
    actor.register_forward_pre_hook(lambda module, args: seen.append(args[0][0].clone()))
    obs = np.array([0.5, -0.5, 1.0], dtype=np.float32)
    g = torch.Generator().manual_seed(0)
    policy, reset = degraded_policy(actor, get_condition("velocity_noise"), sensor_dims("Pendulum-v1", "velocity"), g)
    reset()
    for _ in range(200):
        policy(obs)
    seen_v = torch.stack(seen)
    torch.testing.assert_close(seen_v[:, :2], torch.tensor(obs[:2]).expand(200, 2))  # other dims untouched
    assert seen_v[:, 2].std().item() == pytest.approx(10.0, rel=0.15)  # replaced by N(0, 10)
    seen.clear()
    policy, reset = degraded_policy(actor, get_condition("obs_noise"), (), g)
    reset()
    for _ in range(400):
        policy(obs)
    noise = torch.stack(seen) - torch.tensor(obs)
    assert noise.std().item() == pytest.approx(0.1, rel=0.1)
    assert sensor_dims("HalfCheetah-v5", "pose") == tuple(range(8))
    with pytest.raises(ConfigError):
        sensor_dims("CartPole-v1", "pose")


def test_firing_rates_hooks_count_spikes_and_are_removed():
    actor = _actor()
    obs = torch.randn(5, 3)
    with FiringRates(actor) as monitor:
        actor(obs)
    rates = monitor.rates()
    assert set(rates) == {"layers.0", "layers.1"} and all(0 <= r <= 1 for r in rates.values())
    manual = []
    hook = actor.layers[0].register_forward_hook(lambda m, i, o: manual.append(o))
    actor(obs)
    hook.remove()
    assert rates["layers.0"] == pytest.approx(torch.stack(manual).mean().item())
    assert not actor.layers[0]._forward_hooks


def test_suite_runs_from_one_config(tmp_path):
    actor = _actor()
    actor.norm.update(torch.randn(64, 3))
    save_actor(actor, tmp_path / "actor.pt")
    config = SuiteConfig.from_dict({
        "checkpoint": str(tmp_path / "actor.pt"), "env": "Pendulum-v1", "thresholds": ["static", "bdett"],
        "conditions": ["clean", "zero_weights", "pose_noise"], "seeds": [0, 1], "max_steps": 20,
    })  # fmt: skip
    results = run_suite(config)
    assert len(results) == 2 * 3 * 2
    assert all(r.length == 20 and math.isfinite(r.ret) for r in results)
    summary = summarize(results)
    assert {(row["condition"], row["threshold"]) for row in summary} == {
        (c, t) for c in ("clean", "zero_weights", "pose_noise") for t in ("static", "bdett")
    }
    assert "| zero_weights |" in markdown_table(summary)
    differences = {(d["condition"], d["threshold"]): d for d in paired_differences(results, "static")}
    by = {(r.condition, r.threshold, r.seed): r.ret for r in results}
    expected = (by[("clean", "bdett", 0)] - by[("clean", "static", 0)] + by[("clean", "bdett", 1)]
                - by[("clean", "static", 1)]) / 2  # fmt: skip
    assert set(differences) == {(c, "bdett") for c in ("clean", "zero_weights", "pose_noise")}
    assert differences[("clean", "bdett")]["mean"] == pytest.approx(expected)
    # the same seeds give the same episode for the same threshold
    env = gym.make("Pendulum-v1")
    from bioplaus.analysis.degradation import evaluate_degraded
    from bioplaus.nets.popsan import load_actor

    again = evaluate_degraded(env, lambda: load_actor(tmp_path / "actor.pt"), CONDITIONS["clean"], [1], "Pendulum-v1",
                              "static", max_steps=20)  # fmt: skip
    assert again[0].ret == pytest.approx(results[1].ret)
    with pytest.raises(ConfigError, match="unknown degradation-suite key"):
        SuiteConfig.from_dict({"checkpoint": "x", "thresholdz": []})
    with pytest.raises(ConfigError, match="unknown degradation"):
        SuiteConfig.from_dict({"checkpoint": "x", "conditions": ["rain"]})


def test_input_scale_sweep_reproduces_the_note_toy():
    """Toy layer: static rates rise with the input scale; faithful BDETT collapses (Θ < 0) at ×8."""
    rows = input_scale_sweep(
        {"static": ("static", {}), "bdett": ("bdett", {"psi": 4.0})}, scales=(0.5, 1.0, 8.0), steps=30
    )
    by = {(r["threshold"], r["scale"]): r for r in rows}
    assert by[("static", 0.5)]["rate"] < by[("static", 1.0)]["rate"] < by[("static", 8.0)]["rate"]
    assert by[("static", 1.0)]["median_theta"] == 0.5
    assert by[("bdett", 1.0)]["rate"] < by[("static", 1.0)]["rate"]  # BDETT fires less at ×1
    assert by[("bdett", 8.0)]["median_theta"] < 0 and by[("bdett", 8.0)]["rate"] > 0.9
