"""Feedback-controlled rate RNN after pre-training (checks 4–9), on small nets and short budgets.

One network with a controller and one without are pre-trained once for the module (BPTT through
the closed loop: the registered ``reaching`` task through ``compare``) and saved; the adaptation
tests share one run of the registered ``reach-adaptation-grid`` task, a vectorised RFLO sweep
over learning rates with the controller on and off.
"""

from __future__ import annotations

import math

import pytest
import torch

from bioplaus.analysis.feedback_control import control_gradient_alignment, feedback_alignment
from bioplaus.nets.rate_rnn import RateRNN, save_checkpoint
from bioplaus.runner.motor import adapt, pretrain
from bioplaus.tasks.motor import Timing, centre_out, reach_scores

# A compressed trial (T = 80 steps, 0.4 s reach) keeps pre-training cheap; velocity pushes in a quarter of the
# pre-training trials make the small net rely on (and learn) its controller within this budget.
TIMING = Timing(T=80, cue_on=5, peak=(25, 25), peak_centre_out=(25, 25), go_to_peak=20, move_steps=40)
N, LR, PUSH = 32, 5e-3, 0.25
LRS = [1e-5, 3e-5, 1e-4, 3e-4]
ADAPT_TRIALS = 300


def _pretrained(controller: bool, iterations: int, folder) -> tuple[RateRNN, str]:
    """A pre-trained network and the checkpoint it is saved in."""
    model = pretrain(N, controller, iterations=iterations, log_every=iterations, lr=LR, timing=TIMING,
                     push_prob=PUSH).model  # fmt: skip
    path = folder / f"{'controller' if controller else 'no_controller'}.pt"
    save_checkpoint(model, path)
    return model, str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrained")


@pytest.fixture(scope="module")
def pretrained(folder) -> tuple[RateRNN, str]:
    return _pretrained(True, 800, folder)


@pytest.fixture(scope="module")
def net(pretrained) -> RateRNN:
    return pretrained[0]


@pytest.fixture(scope="module")
def sweep(pretrained):
    """RFLO over the lr grid with control on and off (and lr = 0 with control on), one vectorised run."""
    lrs = [*LRS, *LRS, 0.0]
    controls = [1.0] * len(LRS) + [0.0] * len(LRS) + [1.0]
    return adapt(pretrained[1], "rflo", lrs, controls, trials=ADAPT_TRIALS, timing=TIMING, eval_every=10)


def _rotated():
    return centre_out(TIMING).rotated(30.0)


def _scores(model, trials, control):
    return {k: float(v) for k, v in reach_scores(model, trials, control, torch.Generator().manual_seed(0)).items()}


def test_pretrained_controller_aligns_with_the_activity_gradient(net):
    """Test 4: cos(W_fb, W_outᵀ) > 0.5 and cos(control, −∂L_t/∂r_t) > 0.5; a random W_fb of the same norm ≈ 0."""
    assert feedback_alignment(net)["cos_fb_out"] > 0.5
    trials = _rotated()
    moving = slice(TIMING.cue_on, None)
    cosine = float(control_gradient_alignment(net, trials, 1.0, torch.Generator().manual_seed(0))[moving].nanmean())
    assert cosine > 0.5
    random = RateRNN(**net.config)
    random.load_state_dict(net.state_dict())
    with torch.no_grad():
        w = torch.randn(random.W_fb.shape, generator=torch.Generator().manual_seed(1))
        random.W_fb.copy_(w * net.W_fb.norm() / w.norm())
    cosine = float(control_gradient_alignment(random, trials, 1.0, torch.Generator().manual_seed(0))[moving].nanmean())
    assert abs(cosine) < 0.2


def test_acute_correction_under_rotation(net):
    """Test 5: under 30°, control on halves the MSE and keeps the endpoint angle < 10°; off misses by > 20°."""
    on, off = _scores(net, _rotated(), 1.0), _scores(net, _rotated(), 0.0)
    assert on["mse"] < 0.5 * off["mse"]
    assert on["angle"] < 10.0 < 20.0 < off["angle"]


def test_unperturbed_reaches_are_accurate(net):
    """Test 6: control on, no rotation: mean |endpoint angle| < 5°."""
    assert _scores(net, centre_out(TIMING), 1.0)["angle"] < 5.0


def test_rflo_with_control_learns_inside_the_weights(net, sweep):
    """Test 7: RFLO+c brings the control-off test MSE below 0.1× its start; lr = 0 changes nothing; only W_rec
    changes (the adapted net is tested with the controller off)."""
    rows = sweep.rows()
    best = min((r for r in rows[: len(LRS)] if not r["diverged"]), key=lambda r: r["final_mse"])
    assert best["final_mse"] < 0.1 * best["initial_mse"]
    still = rows[-1]
    assert still["lr"] == 0.0 and math.isclose(still["final_mse"], still["initial_mse"], rel_tol=1e-4)
    torch.testing.assert_close(sweep.model.W_rec[-1], net.W_rec)
    for name, p in sweep.model.named_parameters():
        if name != "W_rec":
            torch.testing.assert_close(p, net.get_parameter(name), msg=name)


def test_control_during_learning_helps_rflo(sweep):
    """Test 8: at each condition's best lr, RFLO+c beats RFLO on the same net with control off by ≥ 2×, and
    its best stable lr is at least as large."""
    rows = sweep.rows()
    best = {}
    for name, part in (("control", rows[: len(LRS)]), ("no control", rows[len(LRS) : 2 * len(LRS)])):
        best[name] = min((r for r in part if not r["diverged"]), key=lambda r: r["final_mse"])
    assert best["control"]["final_mse"] * 2 <= best["no control"]["final_mse"]
    stable = {k: max(r["lr"] for r in part if not r["diverged"]) for k, part in
              (("control", rows[: len(LRS)]), ("no control", rows[len(LRS) : 2 * len(LRS)]))}  # fmt: skip
    assert stable["control"] >= stable["no control"]


def test_rflo_from_w_out_on_a_net_without_controller(folder):
    """Test 9: RFLO with B = W_outᵀ on a net pre-trained without a controller also learns (> 5×)."""
    _, path = _pretrained(False, 300, folder)
    result = adapt(path, "rflo", LRS, [0.0] * len(LRS), trials=ADAPT_TRIALS, timing=TIMING, eval_every=30,
                   rule_options={"feedback": "W_out"})  # fmt: skip
    best = min((r for r in result.rows() if not r["diverged"]), key=lambda r: r["final_mse"])
    assert best["final_mse"] * 5 < best["initial_mse"]
