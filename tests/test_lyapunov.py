"""Lyapunov exponents (QR/Benettin method) and the MLE regulariser: known spectra, adapters, config key."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bioplaus
from bioplaus.analysis.dynamics import LSTMDynamics, RandomRNN, RateRNNDynamics, StepDynamics, as_dynamics
from bioplaus.analysis.lyapunov import (
    finite_time_mle,
    jacobian,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    plot_convergence,
    trajectory,
    trajectory_divergence,
)
from bioplaus.analysis.mle_regularizer import MLERegularizer
from bioplaus.core import Rule
from bioplaus.errors import ConfigError
from bioplaus.nets.lstm import LSTMNet
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.runner import train_epoch, train_step
from bioplaus.runner.config import RunConfig
from bioplaus.tasks.motor import MotorTask, Timing, TrialBatch, random_reaches


class LinearMap:
    """``x_{t+1} = A x_t``: exponents ``log |eig(A)|``."""

    def __init__(self, A: torch.Tensor):
        self.A, self.dim = A, A.shape[0]

    def initial_state(self, batch, generator=None):
        return torch.randn(batch, self.dim, generator=generator)

    def step(self, state, input=None):
        return state @ self.A.T


class Logistic:
    """``x_{t+1} = r x_t (1 − x_t)``: MLE ``ln 2`` at ``r = 4``; ``ln |2 − r|`` (fixed point) for 1 < r < 3."""

    dim = 1

    def __init__(self, r: float):
        self.r = r

    def initial_state(self, batch, generator=None):
        return 0.1 + 0.8 * torch.rand(batch, 1, generator=generator)

    def step(self, state, input=None):
        return self.r * state * (1 - state)


class TanhNet(nn.Module):
    """A trainable chaotic toy network ``x' = W tanh(x) + u``."""

    def __init__(self, n: int = 24, g: float = 3.0, seed: int = 0):
        super().__init__()
        self.dim = n
        self.W = nn.Parameter(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)) * g / n**0.5)

    def initial_state(self, batch, generator=None):
        return torch.randn(batch, self.dim, generator=generator)

    def step(self, state, input=None):
        drive = torch.tanh(state) @ self.W.T
        return drive if input is None else drive + input


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_adapters_satisfy_the_protocol():
    assert isinstance(RandomRNN(8), StepDynamics)
    assert isinstance(RateRNNDynamics(RateRNN(8)), StepDynamics)
    assert isinstance(LSTMDynamics(LSTMNet(2, 4, 1)), StepDynamics)
    assert isinstance(LinearMap(torch.eye(2)), StepDynamics)
    with pytest.raises(ConfigError, match="rate_rnn"):
        as_dynamics(nn.Linear(2, 2))


@pytest.mark.parametrize("method", ["jvp", "dense"])
def test_linear_map_spectrum_is_log_abs_eigenvalues(method, float64):
    g = _generator()
    eigenvalues = torch.tensor([1.3, -1.05, 0.9, 0.6, -0.45, 0.2])
    S = torch.eye(6) + 0.3 * torch.randn(6, 6, generator=g) / 6**0.5  # not normal: eigenvectors not orthogonal
    A = S @ torch.diag(eigenvalues) @ torch.linalg.inv(S)
    result = lyapunov_spectrum(LinearMap(A), steps=400, transient=100, method=method, generator=g)
    expected = eigenvalues.abs().log().sort(descending=True).values
    torch.testing.assert_close(result.spectrum, expected, atol=1e-3, rtol=0)
    # the running estimate ends at the result, and finite-time windows average to it
    torch.testing.assert_close(result.running()[-1], result.exponents)
    torch.testing.assert_close(result.finite_time(100).mean(0), result.exponents)


def test_logistic_map_mle_is_ln2_and_contracting_map_is_negative(float64):
    chaotic = lyapunov_spectrum(Logistic(4.0), steps=200, batch=8192, transient=20, generator=_generator())
    assert abs(float(chaotic.spectrum) - math.log(2)) < 1e-2
    contracting = lyapunov_spectrum(Logistic(2.5), steps=300, batch=4, transient=100, generator=_generator())
    torch.testing.assert_close(contracting.mle, torch.full((4,), math.log(0.5)), atol=1e-6, rtol=0)


def test_random_rate_rnn_is_stable_at_low_gain_and_chaotic_at_high_gain(float64):
    mle = {}
    for g in (0.5, 2.0):
        result = lyapunov_spectrum(RandomRNN(200, g, alpha=1.0, seed=0), k=2, steps=400, transient=200, batch=2)
        mle[g] = result.mle
    assert (mle[0.5] < -0.3).all(), mle  # ≈ ln 0.5: the fixed point 0 attracts
    assert (mle[2.0] > 0.05).all(), mle


def test_jvp_analytic_and_dense_paths_agree(float64):
    rnn = RandomRNN(12, 1.5, alpha=0.5, seed=1)
    inputs = 0.3 * torch.randn(3, 40, 12, generator=_generator(2))
    spectra = [
        lyapunov_spectrum(rnn, k=4, inputs=inputs, batch=3, method=m, generator=_generator(3)).exponents
        for m in ("analytic", "jvp", "dense")
    ]
    torch.testing.assert_close(spectra[1], spectra[0])
    torch.testing.assert_close(spectra[2], spectra[0])
    lstm = LSTMDynamics(LSTMNet(3, 6, 2), init_scale=0.5)
    x = torch.randn(2, 30, 3, generator=_generator(4))
    pair = [lyapunov_spectrum(lstm, inputs=x, batch=2, method=m, generator=_generator(5)) for m in ("analytic", "jvp")]
    torch.testing.assert_close(pair[0].exponents, pair[1].exponents)
    torch.manual_seed(0)
    split = (RateRNN(8).split_conditions(2), torch.tensor([1.0, 0.5]))  # per-trajectory weights and gains
    for model, control in (
        (RateRNN(8, fb_delay=2), 2.0),
        (RateRNN(8, error="velocity"), 1.0),
        (RateRNN(8), 0.0),
        split,
    ):
        rate = RateRNNDynamics(model, control)
        u = torch.randn(2, 25, 5, generator=_generator(6))
        pair = [
            lyapunov_spectrum(rate, inputs=u, batch=2, method=m, generator=_generator(7)) for m in ("analytic", "jvp")
        ]
        torch.testing.assert_close(pair[0].exponents, pair[1].exponents)
    with pytest.raises(ConfigError, match="step_with_tangents"):
        lyapunov_spectrum(LinearMap(torch.eye(2)), steps=5, method="analytic")


def test_rate_rnn_adapter_follows_the_closed_loop(float64):
    """The adapter's trajectory is the model's own rollout (control on: state [x; e]; off: x only)."""
    torch.manual_seed(0)
    model = RateRNN(10, fb_delay=1)
    with torch.no_grad():
        model.W_fb.mul_(4.0)
    tm = Timing(T=20, cue_on=2, peak=(10, 10), peak_centre_out=(10, 10), go_to_peak=5, move_steps=12)
    trials = random_reaches(3, tm, _generator())
    for control in (1.0, 0.0):
        rollout = trials.rollout(model, control, _generator(1))
        dynamics = RateRNNDynamics(model, control)
        start = dynamics.initial_state(3, _generator(1))
        states = trajectory(dynamics, start, dynamics.inputs(trials.inputs, trials.v_ref))
        torch.testing.assert_close(states[..., :10], rollout.x)
        if control:
            assert dynamics.dim == 10 + 2 * 2
            torch.testing.assert_close(states[..., -2:], rollout.e)
        else:
            assert dynamics.dim == 10
    with pytest.raises(ConfigError, match="with_error"):
        RateRNNDynamics(model, 1.0, with_error=False)
    # the analytic Jacobian of the loop without delay: ∂x_t/∂x_{t−1} block of the dense Jacobian
    model = RateRNN(6)
    dynamics = RateRNNDynamics(model, 1.0)
    J = jacobian(dynamics, dynamics.initial_state(1, _generator()) + 0.5)[0]
    D = torch.diag((dynamics.initial_state(1, _generator())[0, :6] + 0.5 > 0).double())
    torch.testing.assert_close(J[:6, :6], (1 - model.alpha) * torch.eye(6) + model.alpha * model.W_rec.detach() @ D)


def test_lstm_adapter_matches_the_model(float64):
    model = LSTMNet(3, 5, 2)
    x = torch.randn(2, 7, 3, generator=_generator())
    dynamics = LSTMDynamics(model)
    states = trajectory(dynamics, dynamics.initial_state(2), x)
    torch.testing.assert_close(dynamics.outputs(states), model(x))


def test_divergence_grows_at_the_mle_rate(float64):
    rnn = RandomRNN(100, 2.0, alpha=1.0, seed=0)
    start = trajectory(rnn, rnn.initial_state(4, _generator()), steps=200)[:, -1]
    divergence = trajectory_divergence(rnn, start, steps=60, epsilon=1e-9, generator=_generator(1))
    mle = lyapunov_spectrum(rnn, k=1, steps=1000, state=start).mle
    assert divergence["distance"].shape == (4, 60)
    assert abs(float(divergence["rate"].mean() - mle.mean())) < 0.1


def test_kaplan_yorke_dimension():
    assert kaplan_yorke_dimension(torch.tensor([-0.1, -0.5])) == 0.0
    assert kaplan_yorke_dimension(torch.tensor([0.5, -1.0, -2.0])) == 1.5
    assert kaplan_yorke_dimension(torch.tensor([0.3, 0.0, -0.2, -0.4])) == pytest.approx(3.25)
    assert math.isnan(kaplan_yorke_dimension(torch.tensor([0.3, -0.1])))


def test_convergence_plot():
    result = lyapunov_spectrum(RandomRNN(10, 1.5), k=3, steps=50, batch=2)
    ax = plot_convergence(result)
    assert len(ax.lines) == 4  # three exponents and the zero line


def test_bad_arguments_raise_config_errors():
    rnn = RandomRNN(4)
    with pytest.raises(ConfigError, match="steps"):
        lyapunov_spectrum(rnn)
    with pytest.raises(ConfigError, match="k must be"):
        lyapunov_spectrum(rnn, k=5, steps=3)
    with pytest.raises(ConfigError, match="qr_every"):
        lyapunov_spectrum(rnn, steps=10, qr_every=3)
    with pytest.raises(ConfigError, match="method"):
        lyapunov_spectrum(rnn, steps=3, method="exact")
    with pytest.raises(ConfigError, match="window"):
        lyapunov_spectrum(rnn, steps=10).finite_time(20)


def test_regulariser_gradient_is_finite_and_lowers_the_mle():
    torch.manual_seed(0)
    net = TanhNet()
    probe = net.initial_state(8, _generator(1))

    def estimated_mle() -> float:
        return float(lyapunov_spectrum(net, k=1, steps=300, transient=50, state=probe).spectrum)

    before = estimated_mle()
    assert before > 0.1  # chaotic
    regulariser = MLERegularizer(1.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    inputs = torch.zeros(16, 30, net.dim)
    for _ in range(10):
        optimizer.zero_grad()
        regulariser(net, inputs).backward()
        assert torch.isfinite(net.W.grad).all() and net.W.grad.abs().sum() > 0
        optimizer.step()
    assert estimated_mle() < before - 0.1
    # finite_time_mle is the differentiable quantity the regulariser averages
    mle = finite_time_mle(net, inputs[:2], state=probe[:2])
    assert mle.shape == (2,) and mle.requires_grad


def test_mle_weight_config_key():
    cfg = RunConfig.from_dict(
        {"task": "adding", "model": "lstm", "rules": ["bptt"], "task_options": {"mle_weight": 0.1}}
    )
    assert cfg.task_options["mle_weight"] == 0.1
    with pytest.raises(ConfigError, match="mle_weight"):
        RunConfig.from_dict({"task": "adding", "model": "lstm", "task_options": {"mle_weight": "strong"}})
    with pytest.raises(ConfigError, match="mle_wei"):
        RunConfig.from_dict({"task": "adding", "model": "lstm", "task_options": {"mle_wieght": 0.1}})
    for bad in (-0.1, math.inf):
        with pytest.raises(ConfigError, match="mle_weight"):
            bioplaus.tasks.get("delayed-recall", mle_weight=bad)
    # the penalty enters a batch rule's loss; an online rule is refused
    task = bioplaus.tasks.get("adding", T=6, batch_size=4, steps_per_epoch=2, n_test=4, mle_weight=2.0)
    plain = bioplaus.tasks.get("adding", T=6, batch_size=4, steps_per_epoch=2, n_test=4)
    model = bioplaus.nets.get("lstm", task.spec, hidden=8)
    batch = next(task.batches(model, _generator()))
    penalty = task.context(model, batch).loss - plain.context(model, batch).loss
    expected = 2.0 * MLERegularizer(1.0).mle(model, batch[0]).mean()
    torch.testing.assert_close(penalty, expected)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    assert math.isfinite(
        train_epoch(task, model, bioplaus.rules.get("bptt"), optimizer, generator=_generator())["loss"]
    )
    with pytest.raises(ConfigError, match="online"):
        train_epoch(task, model, bioplaus.rules.get("tbptt_stream"), optimizer, generator=_generator())


def test_mle_weight_on_the_reaching_task():
    """The closed loop's finite-time MLE enters the pre-training loss of the reaching task (bp)."""

    class Spy(Rule):
        def update(self, model, ctx):
            self.loss = ctx.loss.detach()
            ctx.loss.backward()

    tm = Timing(T=20, cue_on=2, peak=(10, 10), peak_centre_out=(10, 10), go_to_peak=5, move_steps=12)
    trials = random_reaches(3, tm, _generator())
    torch.manual_seed(0)
    model = RateRNN(8)
    losses = []
    for weight in (0.0, 2.0):
        task, spy = MotorTask("random", 3, 1, tm, mle_weight=weight), Spy()
        train_step(task, model, spy, torch.optim.SGD(model.parameters(), lr=0.0), TrialBatch(trials, _generator(1)))
        assert torch.isfinite(model.W_rec.grad).all() and torch.isfinite(model.W_fb.grad).all()
        losses.append(spy.loss)
    inputs = torch.cat([trials.inputs, trials.v_ref], -1)
    expected = 2.0 * MLERegularizer(1.0).mle(model, inputs, torch.ones(3)).mean()
    torch.testing.assert_close(losses[1] - losses[0], expected.detach())
    with pytest.raises(ConfigError, match="mle_weight"):
        bioplaus.tasks.get("reaching", mle_weight=-1.0)
    with pytest.raises(ConfigError, match="online"):
        train_epoch(
            MotorTask("centre-out", 1, 1, mle_weight=0.1),
            model,
            bioplaus.rules.get("rflo"),
            torch.optim.SGD(model.parameters(), lr=0.0),
            generator=_generator(),
        )
