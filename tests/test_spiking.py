"""Spiking layers and thresholds: tests T1–T7 and the baselines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from bioplaus.errors import ConfigError
from bioplaus.nets.popsan import PopSAN
from bioplaus.nets.spiking import SpikingLinear, rectangular, reset_spiking, set_threshold
from bioplaus.nets.thresholds import BDETT, AdaptiveThreshold, HomeostaticThreshold, make_threshold

DATA = Path(__file__).parent / "data"


def _identity_layer(n: int = 3, **kwargs) -> SpikingLinear:
    layer = SpikingLinear(n, n, **kwargs)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.eye(n))
        layer.linear.bias.zero_()
    return layer


def test_t1_hand_computed_table(float64):
    """A worked example: one sample, 3 neurons, constant input current [0.2, 0.6, 1.0], ψ = 4."""
    layer = _identity_layer(threshold="bdett", psi=4.0)
    x = torch.tensor([[0.2, 0.6, 1.0]])
    V = [[0.2, 0.6, 1.0], [0.45, 0.9, 1.5], [0.35, 1.05, 1.75]]
    Theta = [[0.217753, 0.159365, 0.108266], [0.360569, 0.379841, 0.378787], [0.528880, 0.517694, 0.544754]]
    S = [[0, 1, 1], [1, 1, 1], [0, 1, 1]]
    for t in range(3):
        spikes = layer(x)
        torch.testing.assert_close(layer.v, torch.tensor([V[t]]), atol=1e-6, rtol=0)
        torch.testing.assert_close(layer.theta, torch.tensor([Theta[t]]), atol=1e-6, rtol=0)
        assert spikes.tolist() == [S[t]]
        if t == 0:  # intermediate values of the worked example at t = 0
            R = layer.threshold.rate_term(layer.v, torch.zeros(1, 3))
            torch.testing.assert_close(R, torch.tensor([[-0.064493, -0.181269, -0.283469]]), atol=1e-6, rtol=0)
            P = torch.tensor([[0.801094, 0.854844, 0.911092]])
            torch.testing.assert_close(layer.threshold.P, P, atol=1e-6, rtol=0)


def test_t2_static_equals_san_update(float64):
    """Static Θ = 0.5 reproduces the SAN update I = αI + Wx, V = βV(1−S) + I, S = V > 0.5."""
    torch.manual_seed(0)
    layer = SpikingLinear(6, 5, "static")
    xs = torch.rand(8, 4, 6)
    current = V = S = torch.zeros(4, 5)
    for x in xs:
        current = 0.5 * current + layer.linear(x)
        V = 0.75 * V * (1 - S) + current
        S = (V > 0.5).double()
        torch.testing.assert_close(layer(x).double(), S)
        torch.testing.assert_close(layer.v, V)


def test_static_equals_snntorch_leaky_with_zero_reset(float64):
    """Without the synaptic current (α = 0) the layer is snntorch's Leaky(reset_mechanism="zero")."""
    torch.manual_seed(0)
    layer = SpikingLinear(6, 5, "static", alpha=0.0)
    leaky = snn.Leaky(beta=0.75, threshold=0.5, reset_mechanism="zero")
    mem = leaky.reset_mem()
    for x in torch.rand(8, 4, 6):
        spikes_leaky, mem = leaky(layer.linear(x), mem)
        torch.testing.assert_close(layer(x).double(), spikes_leaky.double())


def test_t3_monotone_in_potential_and_depolarization(float64):
    """Raising one neuron's V raises its next-step Θ (via P); a larger depolarization lowers Θ (via R)."""
    th = BDETT(psi=4.0)
    v = torch.tensor([[0.1, 0.4, 0.7, 1.0]])
    theta = th(v, torch.zeros_like(v))
    th.observe(v, theta, (v > theta).double())
    P = th.P.clone()
    v_up = v.clone()
    v_up[0, 1] += 0.05  # and lower another one: mean, max and min (V_m, V_θ) stay fixed
    v_up[0, 2] -= 0.05
    th2 = BDETT(psi=4.0)
    th2.observe(v_up, theta, (v_up > theta).double())
    assert th2.P[0, 1] > P[0, 1] and th2.P[0, 2] < P[0, 2]
    torch.testing.assert_close(th2.P[0, [0, 3]], P[0, [0, 3]])
    # R(ΔV = 0) = 0, R(ΔV = 3) = e^{-1} − 1; Θ decreasing in ΔV at fixed P
    R = th.rate_term(torch.tensor([0.0, 3.0]), torch.zeros(2))
    torch.testing.assert_close(R, torch.tensor([0.0, math.exp(-1) - 1]))
    deltas = torch.linspace(-2, 4, 13).unsqueeze(0)
    thetas = BDETT()(deltas, torch.zeros_like(deltas))  # fixed P = p0: Θ = 0.25 + R / 2
    assert (thetas.diff() < 0).all()


def test_t4_post_spike_threshold_rise(float64):
    """A neuron that spiked and was reset sees R > 0 (Θ jumps) on the next step."""
    layer = _identity_layer(1, threshold="bdett", psi=4.0)
    x = torch.tensor([[2.0]])
    assert layer(x).item() == 1.0
    v_spiked = layer.v.clone()
    layer.linear.bias.data.fill_(-3.0)  # a weak input after the spike: V drops below the un-reset V[t-1]
    layer(x)
    assert layer.v.item() < v_spiked.item()
    assert layer.threshold.rate_term(layer.v, v_spiked).item() > 0


def test_t5_batch_invariance_with_per_sample_statistics():
    torch.manual_seed(0)
    layer = SpikingLinear(20, 30, "bdett")
    x = (torch.rand(5, 4, 20) < 0.4).float()
    other = x.clone()
    other[:, 1:] = (torch.rand(5, 3, 20) < 0.9).float()  # change every sample but the first
    out = []
    for inputs in (x, other):
        layer.reset()
        out.append(torch.stack([layer(xt) for xt in inputs]))
    torch.testing.assert_close(out[0][:, 0], out[1][:, 0])
    pooled = SpikingLinear(20, 30, "bdett", stats="batch")
    pooled.load_state_dict(layer.state_dict())
    thetas = []
    for inputs in (x, other):
        pooled.reset()
        for xt in inputs:
            pooled(xt)
        thetas.append(pooled.theta[0].clone())
    assert not torch.allclose(thetas[0], thetas[1])  # the official pooled statistics couple samples


def test_t6_gradients_reach_upstream_weights():
    torch.manual_seed(0)
    upstream = nn.Linear(10, 20)
    layers = [SpikingLinear(20, 20, "bdett"), SpikingLinear(20, 8, "bdett")]
    with torch.no_grad():
        for layer in layers:
            layer.linear.weight.mul_(3)
    x = torch.rand(6, 10) * 2
    total = 0
    for _ in range(5):
        s = upstream(x)
        for layer in layers:
            s = layer(s)
        total = total + s
    total.sum().backward()
    grad = upstream.weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(layer.theta.grad_fn is None for layer in layers)  # Θ carries no gradient


def _official_actor(saved: dict, **kwargs) -> PopSAN:
    actor = PopSAN(3, 2, 1.0, hidden=(16, 16), pop=4, out_pop=5, threshold="bdett", **kwargs)
    actor.norm.clip = math.inf  # the official actor receives observations normalised (and clipped) outside it
    sd = saved["state_dict"]
    with torch.no_grad():
        actor.encoder.mean.copy_(sd["encoder.mean"][0])
        actor.encoder.std.copy_(sd["encoder.std"][0])
        for i, name in enumerate(["snn.hidden_layers.0", "snn.hidden_layers.1", "snn.out_pop_layer"]):
            actor.layers[i].linear.weight.copy_(sd[f"{name}.weight"])
            actor.layers[i].linear.bias.copy_(sd[f"{name}.bias"])
        actor.decoder_weight.copy_(sd["decoder.decoder.weight"][:, 0])
        actor.decoder_bias.copy_(sd["decoder.decoder.bias"])
    return actor


def test_t7_regression_against_official_code():
    """Actions of the official BDETT PopSAN (tests/data/make_bdett_reference.py) are reproduced."""
    saved = torch.load(DATA / "bdett_official_traces.pt", weights_only=True)
    actor = _official_actor(saved, carry_threshold=True, threshold_options={"psi": 6.0})
    with torch.no_grad():
        actions = torch.stack([actor(obs) for obs in saved["sequence"]])
        torch.testing.assert_close(actions, saved["sequence_actions"], atol=1e-5, rtol=0)
        pooled = _official_actor(saved, threshold_options={"psi": 6.0, "stats": "batch"})
        torch.testing.assert_close(pooled(saved["batch"]), saved["batch_actions"], atol=1e-5, rtol=0)
        fresh = _official_actor(saved, threshold_options={"psi": 6.0})  # no carry: differs after the first call
        assert not torch.allclose(fresh(saved["sequence"][1]), saved["sequence_actions"][1], atol=1e-3)


def test_overflow_guard_is_opt_in():
    v_prev, v = torch.tensor([[400.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert torch.isinf(BDETT().rate_term(v, v_prev)).any()  # faithful: overflows
    guarded = BDETT(max_exponent=20.0).rate_term(v, v_prev)
    torch.testing.assert_close(guarded, torch.tensor([[math.exp(20) - 1, 0.0]]), rtol=1e-5, atol=0)


def test_alif_threshold_rises_after_spikes_and_decays():
    th = AdaptiveThreshold(theta0=0.5, beta=1.8, tau=20.0)
    v = torch.zeros(1, 2)
    assert th(v, v).tolist() == [[0.5, 0.5]]
    th.observe(v, None, torch.tensor([[1.0, 0.0]]))
    rho = math.exp(-1 / 20)
    torch.testing.assert_close(th(v, v), torch.tensor([[0.5 + 1.8 * (1 - rho), 0.5]]))
    th.observe(v, None, torch.zeros(1, 2))
    torch.testing.assert_close(th(v, v), torch.tensor([[0.5 + 1.8 * (1 - rho) * rho, 0.5]]))
    th.reset()
    assert th(v, v).tolist() == [[0.5, 0.5]]


def test_homeostatic_threshold_tracks_rate_and_survives_episode_reset():
    th = HomeostaticThreshold(theta_plus=0.01, tau=100.0)
    v = torch.zeros(4, 3)
    spikes = torch.tensor([[1.0, 0.0, 1.0]]).expand(4, 3)
    for _ in range(2000):
        th.observe(v, th(v, v), spikes)
    decay = math.exp(-1 / 100)
    steady = 0.01 / (1 - decay)  # ϑ settles at ϑ_+ r / (1 − e^{−1/τ}) ≈ ϑ_+ r τ
    torch.testing.assert_close(th(v, v)[0], torch.tensor([0.5 + steady, 0.5, 0.5 + steady]))
    th.reset()  # an episode start keeps the homeostatic variable
    assert th(v, v)[0, 0] > 0.5
    th.clear()
    assert th(v, v)[0, 0] == 0.5
    frozen = HomeostaticThreshold(adapt=False)
    frozen.observe(v, frozen(v, v), spikes)
    assert frozen(v, v).max() == 0.5


def test_snntorch_surrogates_are_usable_as_spike_grad():
    torch.manual_seed(0)
    for spike_grad in (surrogate.atan(), surrogate.fast_sigmoid(), rectangular(0.5)):
        layer = SpikingLinear(4, 3, "bdett", spike_grad=spike_grad)
        x = torch.rand(2, 4, requires_grad=True)
        (layer(x).sum() + layer(x).sum()).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_reset_and_drop_in_thresholds():
    torch.manual_seed(0)
    actor = PopSAN(3, 1, hidden=(8,), pop=4, threshold="static")
    obs = torch.randn(2, 3)
    a0 = actor(obs)
    torch.testing.assert_close(actor(obs), a0)  # every forward starts from reset state
    set_threshold(actor, "bdett", psi=6.0)
    assert all(isinstance(layer.threshold, BDETT) for layer in actor.layers)
    actor(obs)
    reset_spiking(actor)
    assert all(layer.v is None and layer.threshold.P is None for layer in actor.layers)
    with pytest.raises(ConfigError, match="unknown threshold"):
        make_threshold("dt1")
    with pytest.raises(ConfigError, match="bdett"):
        make_threshold("bdett", nope=1)
