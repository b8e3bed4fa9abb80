"""Feedback-controlled rate RNN: exact properties of the loop, the rules and the analyses (checks 1–3 and 10).

Tests on pre-trained networks (checks 4–9) are in ``test_feedback_control_pretrained.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

import bioplaus
from bioplaus import rules
from bioplaus.analysis.feedback_control import activity_gradient, jacobian_norms, newton_alignment, rule_alignment
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.rate_rnn import RateRNN, Rollout, load_checkpoint, save_checkpoint
from bioplaus.runner.motor import KeptModel, adapt, pretrain
from bioplaus.tasks.motor import Timing, centre_out, online_trial, random_reaches, reach_errors, rotation_matrix
from bioplaus.tasks.motor_training import ConditionSGD

SHORT = Timing(T=20, cue_on=2, peak=(10, 10), peak_centre_out=(10, 10), go_to_peak=5, move_steps=12)


def _net(n: int = 8, seed: int = 0, **kwargs) -> RateRNN:
    torch.manual_seed(seed)
    model = RateRNN(n, **kwargs)
    with torch.no_grad():  # a stronger controller and recurrence than at init, so every pathway matters
        model.W_fb.mul_(4.0)
        model.W_rec.mul_(2.0)
    return model


def _loss(model: RateRNN, trials, fed_back=None) -> torch.Tensor:
    rollout = model.rollout(trials.inputs, trials.v_ref, generator=torch.Generator().manual_seed(1), fed_back=fed_back)
    return rollout.e.pow(2).mean()


def _directional_fd(fn, params, direction, eps=1e-6) -> float:
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
        up = float(fn())
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * eps * d)
        down = float(fn())
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("loop", ["included", "detached"])
def test_closed_loop_gradient_matches_finite_differences(loop, float64):
    """Check 1: BPTT of the closed loop equals finite differences (float64, n = 8, T = 20).

    Detached: autograd with the fed-back error cut equals finite differences of the open loop
    that replays the nominal run's fed-back errors as an input.
    """
    model = _net()
    trials = random_reaches(3, SHORT, torch.Generator().manual_seed(0))
    params = [model.W_rec, model.W_fb, model.W_in]
    model.detach_feedback = loop == "detached"
    grads = torch.autograd.grad(_loss(model, trials), params)
    model.detach_feedback = False
    with torch.no_grad():
        replay = model.rollout(trials.inputs, trials.v_ref, generator=torch.Generator().manual_seed(1)).fed_back
    fn = (lambda: _loss(model, trials)) if loop == "included" else (lambda: _loss(model, trials, fed_back=replay))
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction, strict=True))
        numeric = _directional_fd(fn, params, direction)
        assert abs(analytic - numeric) <= 1e-5 * abs(numeric), (analytic, numeric)
    # the two gradients differ: the loop matters in this network
    model.detach_feedback = loop != "detached"
    other = torch.autograd.grad(_loss(model, trials), params)
    assert not torch.allclose(other[0], grads[0], rtol=1e-3)


def _frozen_run(model: RateRNN, rule, trials):
    """Per step: the rule's Δ_t (= −grad) and the loop state, with frozen weights."""
    rule.attach(model)
    out = []
    for ctx in online_trial(model, rule, trials, 1.0, torch.Generator().manual_seed(3)):
        s = model.state
        out.append(
            (-model.W_rec.grad.clone(), s.x.clone(), s.r.clone(), s.r_prev.clone(), ctx.signal("feedback_error"))
        )
        model.W_rec.grad = None
    return out


@pytest.mark.parametrize("feedback", ["W_fb", "W_out"])
def test_rflo_and_fed_equal_their_definitions(feedback, float64):
    """Check 2: RFLO is (B e_t)_i P_t[i, j] with P by its recursion (not P's first row); FED is
    outer(B e_t, p̄_t). Two trials on a model split into two conditions: each trial's Δ is checked on its own."""
    model = _net(6).split_conditions(2)
    trials = random_reaches(2, SHORT, torch.Generator().manual_seed(0))
    alpha, B = model.alpha, (model.feedback_weights if feedback == "W_fb" else model.W_out.T).detach()
    rflo = _frozen_run(model, rules.get("rflo", feedback=feedback), trials)
    P = torch.zeros(2, 6, 6)
    for delta, x, _, r_prev, e in rflo:
        P = (1 - alpha) * P + alpha * (x > 0).double().unsqueeze(2) * r_prev.unsqueeze(1)
        signal = e @ B.T
        torch.testing.assert_close(delta, signal.unsqueeze(2) * P, rtol=1e-12, atol=1e-12)
        first_row_bug = signal.unsqueeze(2) * P[:, :1, :]
        assert not torch.allclose(delta, first_row_bug)
    fed = _frozen_run(model, rules.get("fed", feedback=feedback), trials)
    r0 = model.reset(2, 1.0, torch.Generator().manual_seed(3)).r
    p_bar = alpha * r0
    for delta, _, r, _, e in fed:
        p_bar = (1 - alpha) * p_bar + alpha * r
        torch.testing.assert_close(delta, torch.einsum("bi,bj->bij", e @ B.T, p_bar), rtol=1e-12, atol=1e-12)


def test_instantaneous_activity_gradient_closed_form(float64):
    """Check 3: −∂L_t/∂r_t = dt·W_outᵀ e_t / B for L_t = mean over (B × 2) of e_t²."""
    model = _net(10)
    trials = centre_out(SHORT)
    with torch.no_grad():
        rollout = trials.rollout(model)
    grad = activity_gradient(model, trials, rollout.r, rollout.e)
    closed = model.dt * rollout.e @ model.W_out / len(trials)
    torch.testing.assert_close(grad, closed, rtol=1e-6, atol=1e-10)


def test_online_bptt_equals_full_unroll_and_descends(float64):
    """Check 10: online BPTT's Δ_t (loop detached) is −∂L_t/∂W_rec of a separate unroll, and a small step
    along it lowers L_t."""
    model = _net(16)
    trials = centre_out(SHORT, targets=torch.tensor([1, 6]))
    steps = _frozen_run(model, rules.get("online_bptt"), trials)

    def loss_at(t: int) -> torch.Tensor:
        model.detach_feedback = True
        rollout = model.rollout(
            trials.inputs[:, : t + 1], trials.v_ref[:, : t + 1], generator=torch.Generator().manual_seed(3)
        )
        return rollout.e[:, t].pow(2).mean()

    for t in (3, 11, 19):
        (true,) = torch.autograd.grad(loss_at(t), model.W_rec)
        torch.testing.assert_close(steps[t][0], -true, rtol=1e-10, atol=1e-12)
        before = float(loss_at(t).detach())
        with torch.no_grad():
            model.W_rec.add_(1e-3 * steps[t][0] / steps[t][0].norm())
        assert float(loss_at(t).detach()) < before
        with torch.no_grad():
            model.W_rec.sub_(1e-3 * steps[t][0] / steps[t][0].norm())


def test_rules_train_only_w_rec_and_restore_on_detach():
    model = _net(8)
    rule = rules.get("rflo")
    rule.attach(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["W_rec"]
    assert model.detach_feedback and rule.param_groups(model)[0]["params"] == [model.W_rec]
    rule.detach(model)
    assert all(p.requires_grad for p in model.parameters()) and not model.detach_feedback
    with pytest.raises(ConfigError, match="feedback"):
        rules.get("rflo", feedback="W_in")
    with pytest.raises(ConfigError, match="RateRNN"):
        rules.get("fed").attach(torch.nn.Linear(2, 2))


# the loop --------------------------------------------------------------------------------------
def test_control_off_keeps_bias_and_equals_zero_feedback():
    """Gain 0 removes W_fb c_t but keeps b; the same as zeroing W_fb."""
    model = _net(12)
    trials = centre_out(SHORT)
    off = trials.rollout(model, 0.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.W_fb.zero_()
    zeroed = trials.rollout(model, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(off.e, zeroed.e)
    with torch.no_grad():
        model.b.zero_()
    assert not torch.allclose(trials.rollout(model, 0.0, torch.Generator().manual_seed(0)).e, off.e)


@pytest.mark.parametrize("delay", [0, 3])
def test_controller_feeds_back_the_delayed_error(delay):
    model = _net(8, fb_delay=delay)
    with torch.no_grad():
        rollout = centre_out(SHORT).rollout(model)
    e = torch.cat([torch.zeros_like(rollout.e[:, : delay + 1]), rollout.e], 1)
    torch.testing.assert_close(rollout.fed_back, e[:, : SHORT.T])  # c_t = e_{t−1−d}, zeros before the trial


def test_split_conditions_match_separate_models():
    model = _net(8)
    trials = centre_out(SHORT)
    split = RateRNN(**model.config)
    split.load_state_dict(model.state_dict())
    split.split_conditions(3)
    with torch.no_grad():
        split.W_rec[1].mul_(0.5)
        one = trials.repeat(3).rollout(model, 1.0, torch.Generator().manual_seed(0)).e
        many = trials.repeat(3).rollout(split, 1.0, torch.Generator().manual_seed(0)).e
    torch.testing.assert_close(many[:8], one[:8])
    torch.testing.assert_close(many[16:], one[16:])
    assert not torch.allclose(many[8:16], one[8:16])
    with pytest.raises(ShapeError, match="conditions"):
        split.reset(4)


def test_checkpoint_roundtrip(tmp_path):
    model = _net(8, controller=False, fb_delay=2)
    save_checkpoint(model, tmp_path / "net.pt")
    loaded = load_checkpoint(tmp_path / "net.pt")
    assert loaded.config == model.config and not loaded.W_fb.requires_grad
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ConfigError, match="pre-train"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(model.split_conditions(3), tmp_path / "split.pt")
    assert load_checkpoint(tmp_path / "split.pt").conditions == 3


# trials ----------------------------------------------------------------------------------------
def test_reference_trajectory_and_inputs_kaleb_timing():
    trials = centre_out()
    assert trials.inputs.shape == (8, 125, 3) and trials.v_ref.shape == (8, 125, 2)
    torch.testing.assert_close(trials.p_ref[:, -1], trials.target)
    torch.testing.assert_close(trials.start + 0.01 * trials.v_ref.cumsum(1)[:, -1], trials.target, atol=1e-5, rtol=0)
    speed = trials.v_ref.norm(dim=-1)
    assert int(speed[0].argmax()) in (69, 70) and 24 < float(speed.max()) < 26.5  # ≈ 24.9 units/s peak speed
    assert (trials.inputs[:, :20, :2] == 0).all() and (trials.inputs[:, 20:, :2] == trials.target.unsqueeze(1)).all()
    assert (trials.inputs[:, :20, 2] == 6).all() and (trials.inputs[:, 20:, 2] == 0).all()
    assert (speed[:, :20] == 0).all()


def test_feulner_timing_has_random_delays_and_pushes():
    g = torch.Generator().manual_seed(0)
    trials = random_reaches(64, "feulner", g, push_prob=0.5)
    assert trials.inputs.shape == (64, 300, 3)
    go = (trials.inputs[:, :, 2] > 0).sum(1)  # hold is on before the go step
    assert go.min() >= 20 and go.max() <= 170 and len(go.unique()) > 10
    assert trials.push.shape == (64, 300, 2) and set(trials.push.unique().tolist()) <= {-10.0, 0.0, 10.0}
    assert 0.3 < float((trials.push != 0).any(1).float().mean()) < 0.7
    co = centre_out("feulner", generator=g)
    assert ((co.inputs[:, :, 2] > 0).sum(1) >= 120).all()


def test_rotation_conventions():
    trials = centre_out(SHORT)
    rotated = trials.rotated(30.0, "reference")
    angle = torch.rad2deg(
        torch.atan2(rotated.target[:, 1], rotated.target[:, 0]) - torch.atan2(trials.target[:, 1], trials.target[:, 0])
    )
    torch.testing.assert_close(torch.remainder(angle, 360.0), torch.full((8,), 30.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(rotated.inputs, trials.inputs)  # the cue is not rotated
    cursor = trials.rotated(30.0, "cursor")
    torch.testing.assert_close(cursor.cursor[0], rotation_matrix(30.0))
    torch.testing.assert_close(
        rotation_matrix(90.0) @ torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0
    )
    model = _net(8)
    with torch.no_grad():  # a cursor rotation rotates the reach itself: the hand path is the same, the cursor's turns
        hand = trials.positions(trials.rollout(model, 0.0, torch.Generator().manual_seed(0)))
        turned = cursor.positions(cursor.rollout(model, 0.0, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(turned, hand @ rotation_matrix(30.0).T, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="convention"):
        trials.rotated(30.0, "hand")


def test_reach_errors_angle_is_the_rotation_without_control_or_learning():
    """A network that reaches perfectly to the unrotated target misses the rotated reference by the rotation."""
    trials = centre_out(SHORT)
    rotated = trials.rotated(-40.0)
    perfect = Rollout(
        *(torch.zeros(8, SHORT.T, 1),) * 2, trials.v_ref, rotated.p_ref - trials.p_ref, torch.zeros(8, SHORT.T, 2)
    )
    errors = reach_errors(rotated, perfect)
    torch.testing.assert_close(errors["angle"], torch.full((8,), 40.0), atol=1e-3, rtol=0)


def test_bad_configuration_raises():
    with pytest.raises(ConfigError, match="error"):
        RateRNN(4, error="force")
    with pytest.raises(ConfigError, match="peak"):
        Timing(T=100)
    with pytest.raises(ConfigError, match="timing"):
        centre_out("kaleb2024")
    with pytest.raises(ShapeError):
        _net(4).rollout(torch.zeros(2, 5), torch.zeros(2, 5, 2))
    task = bioplaus.tasks.get("reaching")
    mlp = bioplaus.nets.get("mlp", task.spec)
    with pytest.raises(ConfigError, match="drives a RateRNN"):
        task.evaluate(mlp)


# analyses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loop", [False, True])
def test_jacobian_norms_match_autograd(loop, float64):
    model = _net(6)
    trials = centre_out(SHORT, targets=torch.tensor([2]))
    norms = jacobian_norms(model, trials, loop=loop, ord="fro", generator=torch.Generator().manual_seed(0))
    t = 12  # autograd Jacobian of step t w.r.t. x_{t−1}, from the same run's state at t − 1
    with torch.no_grad():
        rollout = trials.rollout(model, 1.0, torch.Generator().manual_seed(0))
    model.detach_feedback = not loop

    def step_from(x_prev: torch.Tensor) -> torch.Tensor:
        s = model.reset(1)
        r_prev = torch.relu(x_prev)
        _, e_prev = model.readout_error(r_prev, rollout.e[:, t - 2], trials.v_ref[:, t - 1])
        s.x, s.r, s.e, s.delay_line = x_prev, r_prev, e_prev, [e_prev]
        return model.step(trials.inputs[:, t], trials.v_ref[:, t]).x

    jac = torch.autograd.functional.jacobian(step_from, rollout.x[:, t - 1])[0, :, 0, :]
    assert math.isclose(float(norms[0, t]), float(jac.norm()), rel_tol=1e-10)


def test_newton_alignment_equals_dense_hessian_solve(float64):
    """CG on Hessian-vector products gives the damped Newton direction of the dense n² × n² Hessian (n = 4)."""
    model = _net(4)
    trials = centre_out(SHORT, targets=torch.tensor([3]))
    t = 15
    model.detach_feedback = True

    def loss_t(w: torch.Tensor) -> torch.Tensor:
        e = torch.func.functional_call(model, {"W_rec": w}, (trials.inputs[:, : t + 1], trials.v_ref[:, : t + 1]))
        return e[:, t].pow(2).mean()

    w = model.W_rec.detach()
    hessian = torch.autograd.functional.hessian(lambda v: _seeded(loss_t, v), w).reshape(16, 16)
    g = torch.autograd.functional.jacobian(lambda v: _seeded(loss_t, v), w).reshape(16)
    damping = max(0.0, -float(torch.linalg.eigvalsh(hessian).min())) + 0.1
    dense = -torch.linalg.solve(hessian + damping * torch.eye(16), g).reshape(4, 4)
    rule = rules.get("rflo")
    delta = _frozen_run(model, rule, trials)[t][0]
    model.detach_feedback = False
    got = newton_alignment(
        model,
        rule,
        trials,
        [t],
        damping=damping,
        cg_iterations=100,
        tol=1e-12,
        generator=torch.Generator().manual_seed(3),
    )
    expected = float((delta * dense).sum() / (delta.norm() * dense.norm()))
    assert math.isclose(got[t], expected, rel_tol=1e-6, abs_tol=1e-9)


def _seeded(fn, v):
    torch.manual_seed(3)  # the initial state of _frozen_run's trials (a fresh generator seeded 3 draws the same)
    return fn(v)


def test_rule_alignment_of_online_bptt_with_itself_is_one(float64):
    model = _net(8)
    trials = centre_out(SHORT, targets=torch.tensor([0, 5]))
    same = rule_alignment(model, rules.get("online_bptt"), trials, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same["local"], torch.ones(SHORT.T, dtype=torch.float64))
    assert math.isclose(float(same["global"]), 1.0, rel_tol=1e-9)
    rflo = rule_alignment(model, rules.get("rflo"), trials, generator=torch.Generator().manual_seed(0))
    assert rflo["local"].shape == (SHORT.T,) and -1 < float(rflo["global"]) < 1
    assert model.state is None and model.W_rec.grad is None and all(p.requires_grad for p in model.parameters())


def test_condition_sgd_steps_each_condition_with_its_rate():
    w = torch.nn.Parameter(torch.ones(3, 2, 2))
    opt = ConditionSGD([w], [0.0, 0.1, 1.0])
    w.grad = torch.ones(3, 2, 2)
    opt.step()
    torch.testing.assert_close(w.detach()[:, 0, 0], torch.tensor([1.0, 0.9, 0.0]))
    torch.testing.assert_close(opt.path, torch.tensor([0.0, 0.2, 2.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="non-negative"):
        ConditionSGD([w], [-1.0, 0.0, 0.0])
    again = ConditionSGD([w], [1.0, 1.0, 1.0])
    again.load_state_dict(opt.state_dict())  # the learning rates and the path travel in checkpoints
    torch.testing.assert_close(again.param_groups[0]["lr"], torch.tensor([0.0, 0.1, 1.0]))
    torch.testing.assert_close(again.path, opt.path)


def test_runner_drives_pretraining_and_online_adaptation(tmp_path):
    """The registered model, tasks and rules run through ``compare``: BPTT pre-training and online RFLO adaptation."""
    pre = bioplaus.compare(model="rate_rnn", rules=["bp"], task="reaching", epochs=1, lr=1e-3, batch_size=4,
                           task_options={"iterations": 2}, model_options={"n": 16}, progress=False)  # fmt: skip
    assert set(pre.runs.status) == {"done"}
    save_checkpoint(_net(16), tmp_path / "net.pt")
    result = bioplaus.compare(model="rate_rnn", rules=["rflo", "online_bptt"], task="reach-adaptation", epochs=1,
                              optimizer="sgd", lr=1e-5, task_options={"iterations": 2},
                              model_options={"checkpoint": str(tmp_path / "net.pt")}, progress=False)  # fmt: skip
    assert set(result.runs.status) == {"done"}
    test = result.table[(result.table.split == "centre_out_off") & (result.table.metric == "mse")]
    assert len(test) == 4 and test.value.notna().all()


# the adaptation grid as a registered task ------------------------------------------------------
SHORT_TABLE = {"T": 20, "cue_on": 2, "peak": [10, 10], "peak_centre_out": [10, 10], "go_to_peak": 5, "move_steps": 12}


@pytest.fixture(scope="module")
def small_net(tmp_path_factory) -> str:
    """An n = 20 network saved with ``save_checkpoint`` (untrained: the runner's behaviour is what is tested)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("motor") / "net.pt"
    save_checkpoint(RateRNN(20), path)
    return str(path)


def _grid(small_net: str, **overrides):
    options = {"lrs": [0.0, 1e-3], "controls": [1.0, 0.0], "labels": ["still", "off"], "trials": 2,
               "timing": SHORT_TABLE} | overrides  # fmt: skip
    return {"model": "rate_rnn", "model_options": {"checkpoint": small_net}, "task": "reach-adaptation-grid",
            "epochs": 2, "batch_size": 1, "optimizer": "sgd", "task_options": options, "progress": False}  # fmt: skip


def test_adaptation_grid_runs_through_compare(small_net):
    """Both online rules adapt a saved network through ``compare``; per-condition metrics land in the tidy table."""
    result = bioplaus.compare(rules=["rflo", "online_bptt"], **_grid(small_net))
    assert set(result.runs.status) == {"done"}
    table = result.table
    for rule in ("rflo", "online_bptt"):
        rows = table[table.rule == rule]
        trials = rows[(rows.split == "adaptation") & (rows.metric == "trials")].value.tolist()
        assert trials == [0.0, 2.0, 4.0]
        for split in ("test_off", "test_on"):
            for metric in ("mse/still", "mse/off", "angle/still", "angle/off"):
                values = rows[(rows.split == split) & (rows.metric == metric)].value
                assert len(values) == 3 and values.map(math.isfinite).all(), (rule, split, metric)
        still = rows[(rows.split == "test_off") & (rows.metric == "mse/still")].value
        assert still.nunique() == 1  # lr = 0: the same weights tested on the same fixed trials
        assert {"mse", "mse/still", "mse/off"} <= set(rows[rows.split == "train"].metric)
        assert (rows[rows.metric.str.startswith("diverged/")].value == 0).all()
    assert "test_off/mse/off" in set(result.summary.metric)
    assert "test_off/mse/still" in result.report()


def test_adaptation_grid_freezes_a_diverging_condition_and_the_others_go_on(small_net):
    """A condition that blows up is reset to its start with lr 0 and reported as diverged; the others are untouched."""
    result = adapt(small_net, "rflo", [0.0, 1e-3, 100.0], [1.0, 0.0, 1.0], ["still", "slow", "fast"],
                   trials=4, eval_every=2, timing=Timing(**SHORT_TABLE))  # fmt: skip
    assert result.diverged.tolist() == [False, False, True] and result.diverged_at.tolist() == [-1, -1, 1]
    start = load_checkpoint(small_net).W_rec
    torch.testing.assert_close(result.model.W_rec[0], start, rtol=0, atol=0)
    torch.testing.assert_close(result.model.W_rec[2], start, rtol=0, atol=0)
    assert not torch.equal(result.model.W_rec[1], start)
    assert torch.isfinite(result.test_mse[:, :2]).all() and torch.isnan(result.test_mse[1:, 2]).all()
    assert result.trials == [0, 2, 4] and result.train_mse.shape == (2, 3)
    rows = {row["condition"]: row for row in result.rows()}
    assert (
        rows["fast"]["diverged"] and math.isnan(rows["fast"]["final_mse"]) and math.isfinite(rows["slow"]["final_mse"])
    )
    assert rows["still"]["final_mse"] == rows["still"]["initial_mse"]
    assert rows["slow"]["efficiency"] > 0 and math.isnan(rows["fast"]["efficiency"])


def test_adaptation_grid_bad_options_raise_config_errors(small_net):
    with pytest.raises(ConfigError, match="one control per learning rate"):
        bioplaus.compare(rules=["rflo"], **_grid(small_net, controls=[1.0]))
    with pytest.raises(ConfigError, match="convention.*one of 'reference', 'cursor'"):
        bioplaus.compare(rules=["rflo"], **_grid(small_net, convention="hand"))
    with pytest.raises(ConfigError, match="labels must be non-empty and unique"):
        bioplaus.compare(rules=["rflo"], **_grid(small_net, labels=["a", "a"]))
    with pytest.raises(ConfigError, match="one label per condition"):
        bioplaus.compare(rules=["rflo"], **_grid(small_net, labels=["a"]))
    with pytest.raises(ConfigError, match="non-negative"):
        bioplaus.compare(rules=["rflo"], **_grid(small_net, lrs=[-1.0, 0.0]))
    with pytest.raises(ConfigError, match="trains online rules"):
        bioplaus.compare(rules=["bp"], **_grid(small_net))
    with pytest.raises(ConfigError, match="multiple of eval_every"):
        adapt(small_net, "rflo", [0.0], [1.0], trials=5, eval_every=2)
    with pytest.raises(ConfigError, match="multiple of log_every"):
        pretrain(8, iterations=5, log_every=2)
    task = bioplaus.tasks.get("reach-adaptation-grid", lrs=[0.0, 1e-3], controls=[1.0, 0.0])
    split = load_checkpoint(small_net).split_conditions(2)
    with pytest.raises(ConfigError, match="already split"):
        task.prepare(split)


def test_alignment_probe_on_the_grid_is_finite_and_changes_nothing(small_net):
    """RFLO's per-step probe against online BPTT logs finite cosines and leaves the trained weights as they were."""
    weights, tables = [], []
    for every in (0, 1):
        keep = KeptModel("rate_rnn", checkpoint=small_net)
        config = _grid(small_net, lrs=[1e-3, 3e-3]) | {"model": keep, "model_options": None}
        result = bioplaus.compare(rules=["rflo"], alignment_every=every, **config)
        weights.append(keep.model.W_rec.detach().clone())
        tables.append(result.table)
    probed = tables[1][(tables[1].split == "train") & tables[1].metric.str.startswith("alignment/")]
    assert len(probed) == 4 and probed.value.map(math.isfinite).all()  # one probe per trial
    assert tables[0].metric.str.startswith("alignment/").sum() == 0
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=0)
    unprobed = tables[1][~tables[1].metric.str.startswith("alignment/")].reset_index(drop=True)
    assert unprobed.drop(columns="step").equals(tables[0].drop(columns="step"))


def test_grid_metrics_load_from_a_sweep(small_net, tmp_path):
    """The per-condition metrics are readable in ``bioplaus.results`` (a sweep's results directory)."""
    config = _grid(small_net)
    config.pop("progress")
    runs = bioplaus.sweep(config, rules=["rflo"], out=tmp_path, workers=1, progress=False)
    assert runs.status.tolist() == ["done"]
    assert math.isfinite(runs["test_off/mse/off"].iloc[0]) and runs["adaptation/trials"].iloc[0] == 4


def test_pretraining_through_the_runner_keeps_the_trained_model():
    run = pretrain(16, iterations=4, log_every=2, batch_size=4, timing=Timing(**SHORT_TABLE), push_prob=0.5)
    assert [row["iteration"] for row in run.log()] == [2, 4]
    assert {"train_mse", "test/mse", "centre_out_off/angle"} <= set(run.log()[-1])
    torch.manual_seed(0)
    untrained = RateRNN(16)
    assert run.model.config == untrained.config and not torch.equal(run.model.W_rec, untrained.W_rec)
