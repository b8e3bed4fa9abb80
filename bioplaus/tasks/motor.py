r"""Planar reaching with a feedback-controlled rate network: trials, metrics and the training loop.

Trials follow the papers (Kaleb et al. 2024; Feulner et al. 2022).
Time is discretised in steps of ``dt`` = 10 ms. A trial of ``B`` reaches is batched as tensors
``(B, T, ·)``:

- input ``u_t = [Δx, Δy, hold]``: the cue ``Δ = end − start`` from step ``cue_on`` on, and a hold
  signal (``hold``, 6 by default) until the go step, then 0;
- reference position: a normalised sigmoid from start to end over ``move_steps`` steps from the
  go step on, $p^*_t = s + (e - s)\,\tilde\sigma(\beta\,\xi_t)$ with
  $\xi$ running linearly from −1 to 1, $\beta = 10$ and
  $\tilde\sigma(z) = (\sigma(z) - \sigma(-\beta))/(\sigma(\beta) - \sigma(-\beta))$, so the
  reach starts and ends exactly at rest (the official code samples the plain sigmoid);
- reference velocity the backward difference $v^*_t = (p^*_t - p^*_{t-1})/dt$, so the
  integrated error ``e_t`` of the model is exactly the position error ``p*_t − p_t``. (The official
  training batches shift ``v*`` one step later; we do not.)

Timing: ``"kaleb"`` is the NeurIPS configuration, ``T = 125``, cue and go together
at step 20 (no delay period), peak speed at step 70; ``"feulner"`` is the predecessor's,
``T = 300`` with a random go step (peak in [70, 220] for random reaches, [170, 220] for
centre-out reaches), used with a feedback delay (``rate_rnn(fb_delay=11)``: the controller sees
``e_{t−12}``; the predecessor's 2-step forward delay is folded into it).

Trial sets: random reaches (start and end ~ U[−6, 6]²) with optional velocity pushes (each
trial and axis with probability ``push_prob``, ``push_steps`` steps of ±``push_amplitude`` at a
random time), and centre-out reaches to 8 targets at radius 5. Visuomotor rotation by ``φ``
(positive = counter-clockwise) in two conventions: ``"reference"`` (Kaleb: the
reference trajectory is rotated, the cue is not, the error stays in the hand frame) and
``"cursor"`` (Feulner: the readout is rotated, ``v = R(φ)(W_out r + b_out + p)``, and the
controller sees the cursor error).

The training loop ([`MotorTask`][bioplaus.tasks.motor.MotorTask]) runs batch rules on whole trials (pre-training: BPTT
through the closed loop with the official non-squared norm penalties, a rate penalty and a
global gradient clip) and online rules one time step at a time with an optimizer step after
every step (adaptation). The per-step context carries ``ctx.t``, ``ctx.loss`` (``L_t =
mean e_t²`` over trials and axes), ``ctx.output`` (``v_t``), ``ctx.target`` (``v*_t``) and
``ctx.signals["feedback_error"]``: ``e_t``, target minus output (it is not
``∂L/∂y``, so it is not passed as ``ctx.error``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from bioplaus.analysis.mle_regularizer import MLERegularizer
from bioplaus.core import Capability, Context, Rule, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.rate_rnn import RateRNN, Rollout
from bioplaus.registry import did_you_mean
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics, Task

CONVENTIONS = ("reference", "cursor")
TRIAL_SETS = ("random", "centre-out")


@dataclass(frozen=True)
class Timing:
    """When things happen in a trial (in steps of ``dt``).

    Attributes:
        T: steps per trial.
        cue_on: first step with the cue ``Δ`` on.
        peak: range (inclusive) of the step of peak reference speed, random reaches.
        peak_centre_out: the same for centre-out reaches.
        go_to_peak: steps from the go step (hold signal off, movement start) to the peak.
        move_steps: duration of the reference movement.
        beta: steepness of the sigmoid.
        dt: seconds per step.
    """

    T: int = 125
    cue_on: int = 20
    peak: tuple[int, int] = (70, 70)
    peak_centre_out: tuple[int, int] = (70, 70)
    go_to_peak: int = 50
    move_steps: int = 100
    beta: float = 10.0
    dt: float = 0.01

    def __post_init__(self) -> None:
        for lo, hi in (self.peak, self.peak_centre_out):
            if not (
                self.cue_on <= lo - self.go_to_peak and lo <= hi and hi - self.go_to_peak + self.move_steps <= self.T
            ):
                raise ConfigError(
                    f"timing {self}: each peak range must satisfy cue_on ≤ peak − go_to_peak and "
                    "peak − go_to_peak + move_steps ≤ T"
                )


TIMINGS = {
    "kaleb": Timing(),
    "feulner": Timing(T=300, peak=(70, 220), peak_centre_out=(170, 220)),
}


def get_timing(name: str | Timing) -> Timing:
    """A named timing (``"kaleb"`` or ``"feulner"``), or a [`Timing`][bioplaus.tasks.motor.Timing] as it is."""
    if isinstance(name, Timing):
        return name
    if name not in TIMINGS:
        raise ConfigError(f"unknown timing {name!r}{did_you_mean(name, list(TIMINGS))}; known: {', '.join(TIMINGS)}")
    return TIMINGS[name]


def rotation_matrix(degrees: float | torch.Tensor) -> torch.Tensor:
    """``R(φ) = [[cos φ, −sin φ], [sin φ, cos φ]]`` (counter-clockwise for positive ``φ``); ``(…, 2, 2)``."""
    phi = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.get_default_dtype()))
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


@dataclass
class Trials:
    """A batch of ``B`` reaching trials of ``T`` steps.

    Attributes:
        inputs: ``u`` ``(B, T, 3)``.
        p_ref: reference position ``(B, T, 2)``.
        v_ref: reference velocity ``(B, T, 2)``.
        start: start positions ``(B, 2)``.
        target: end positions of the reference ``(B, 2)``.
        push: velocity pushes ``(B, T, 2)`` or ``None``.
        cursor: cursor rotations ``(B, 2, 2)`` or ``None``.
        dt: seconds per step.
    """

    inputs: torch.Tensor
    p_ref: torch.Tensor
    v_ref: torch.Tensor
    start: torch.Tensor
    target: torch.Tensor
    push: torch.Tensor | None = None
    cursor: torch.Tensor | None = None
    dt: float = 0.01

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def _map(self, fn) -> Trials:
        fields = ("inputs", "p_ref", "v_ref", "start", "target", "push", "cursor")
        return replace(self, **{f: None if getattr(self, f) is None else fn(getattr(self, f)) for f in fields})

    def repeat(self, times: int) -> Trials:
        """The whole batch ``times`` times over (condition-major, for per-condition weights)."""
        return self._map(lambda t: t.repeat(times, *[1] * (t.dim() - 1)))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Trials:
        """The trials on ``device`` (and in ``dtype``)."""
        return self._map(lambda t: t.to(device, dtype))

    def rotated(self, degrees: float, convention: str = "reference") -> Trials:
        """The same trials under a visuomotor rotation by ``degrees`` (see the module docstring)."""
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if degrees == 0:
            return self
        R = rotation_matrix(degrees).to(self.inputs)
        if convention == "cursor":
            cursor = R.expand(len(self), 2, 2) if self.cursor is None else R @ self.cursor
            return replace(self, cursor=cursor.contiguous())
        start = self.start.unsqueeze(1)
        return replace(
            self,
            p_ref=start + (self.p_ref - start) @ R.T,
            v_ref=self.v_ref @ R.T,
            target=self.start + (self.target - self.start) @ R.T,
        )

    def rollout(
        self, model: RateRNN, control: float | torch.Tensor = 1.0, generator: torch.Generator | None = None
    ) -> Rollout:
        """Run ``model`` on these trials with controller gain ``control``."""
        return model.rollout(self.inputs, self.v_ref, self.push, self.cursor, control, generator)

    def positions(self, rollout: Rollout) -> torch.Tensor:
        """Cursor positions ``start + Σ dt·v`` ``(B, T, 2)``."""
        return self.start.unsqueeze(1) + self.dt * rollout.v.cumsum(1)


def reference(
    start: torch.Tensor, end: torch.Tensor, go: torch.Tensor, tm: Timing
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoidal reference ``(p*, v*)``, each ``(B, T, 2)``, from ``start`` to ``end`` starting at step ``go``."""
    k = torch.arange(tm.T, dtype=start.dtype).unsqueeze(0) - go.unsqueeze(1).to(start.dtype)  # (B, T)
    xi = (2 * k / (tm.move_steps - 1) - 1).clamp(-1.0, 1.0)
    lo, hi = torch.sigmoid(torch.tensor(-tm.beta)), torch.sigmoid(torch.tensor(tm.beta))
    frac = (torch.sigmoid(tm.beta * xi) - lo) / (hi - lo)
    p_ref = start.unsqueeze(1) + frac.unsqueeze(-1) * (end - start).unsqueeze(1)
    v_ref = torch.diff(p_ref, dim=1, prepend=start.unsqueeze(1)) / tm.dt
    return p_ref, v_ref


def _trials(start: torch.Tensor, end: torch.Tensor, peak: torch.Tensor, tm: Timing, hold: float) -> Trials:
    go = peak - tm.go_to_peak
    p_ref, v_ref = reference(start, end, go, tm)
    steps = torch.arange(tm.T).unsqueeze(0)
    cue = (steps >= tm.cue_on).to(start.dtype).unsqueeze(-1) * (end - start).unsqueeze(1)
    hold_signal = hold * (steps < go.unsqueeze(1)).to(start.dtype).unsqueeze(-1)
    return Trials(torch.cat([cue, hold_signal], -1), p_ref, v_ref, start, end.clone(), dt=tm.dt)


def _peaks(n: int, span: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(span[0], span[1] + 1, (n,), generator=generator)


def random_reaches(
    n: int,
    tm: Timing | str = "kaleb",
    generator: torch.Generator | None = None,
    workspace: float = 6.0,
    hold: float = 6.0,
    push_prob: float = 0.0,
    push_amplitude: float = 10.0,
    push_steps: int = 10,
) -> Trials:
    """``n`` reaches between uniform random points of ``[−workspace, workspace]²``, with optional pushes."""
    tm = get_timing(tm)
    if not 0.0 <= push_prob <= 1.0:
        raise ConfigError(f"push_prob must be a probability in [0, 1], got {push_prob}")
    start, end = ((torch.rand(n, 2, generator=generator) * 2 - 1) * workspace for _ in range(2))
    trials = _trials(start, end, _peaks(n, tm.peak, generator), tm, hold)
    if push_prob > 0:
        on = torch.rand(n, 2, generator=generator) < push_prob
        sign = torch.randint(0, 2, (n, 2), generator=generator) * 2.0 - 1.0
        first = torch.randint(tm.cue_on, tm.T - push_steps, (n, 2), generator=generator)
        steps = torch.arange(tm.T).view(1, -1, 1)
        window = (steps >= first.unsqueeze(1)) & (steps < first.unsqueeze(1) + push_steps)
        trials.push = push_amplitude * sign.unsqueeze(1) * (window & on.unsqueeze(1)).to(start.dtype)
    return trials


def centre_out(
    tm: Timing | str = "kaleb",
    n_targets: int = 8,
    radius: float = 5.0,
    hold: float = 6.0,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Trials:
    """Reaches from the origin to targets at ``radius`` and angles ``k·360°/n_targets``.

    Args:
        tm: timing.
        n_targets: number of equally spaced targets.
        radius: reach distance.
        hold: hold-signal value before the go step.
        targets: indices of the targets to use (one trial each); ``None``: each target once.
        generator: draws the go steps when the timing has random delays.
    """
    tm = get_timing(tm)
    index = torch.arange(n_targets) if targets is None else targets
    angle = 2 * math.pi * index.to(torch.get_default_dtype()) / n_targets
    end = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return _trials(torch.zeros_like(end), end, _peaks(len(index), tm.peak_centre_out, generator), tm, hold)


def reach_errors(trials: Trials, rollout: Rollout) -> dict[str, torch.Tensor]:
    """Per trial: ``mse`` (mean position error² over steps and axes) and ``angle``.

    ``angle`` is the absolute angle in degrees between the cursor's endpoint and the reference
    endpoint, both seen from the start (the error of reach direction; meaningful for reaches of
    non-zero length).
    """
    end = trials.positions(rollout)[:, -1] - trials.start
    ref = trials.p_ref[:, -1] - trials.start
    angle = torch.atan2(end[:, 1], end[:, 0]) - torch.atan2(ref[:, 1], ref[:, 0])
    angle = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
    return {"mse": rollout.e.pow(2).mean((1, 2)), "angle": torch.rad2deg(angle).abs()}


@torch.no_grad()
def reach_scores(
    model: RateRNN, trials: Trials, control: float = 1.0, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """[`reach_errors`][bioplaus.tasks.motor.reach_errors] averaged per condition of ``model``: each metric ``(C,)``
    (``(1,)`` if unsplit)."""
    repeated = trials.repeat(model.conditions)
    errors = reach_errors(repeated, repeated.rollout(model, control, generator))
    return {k: v.reshape(model.conditions, -1).mean(1) for k, v in errors.items()}


def pretraining_loss(
    model: RateRNN, rollout: Rollout, weight_penalty: float = 1e-3, rate_penalty: float = 2e-3
) -> torch.Tensor:
    r"""The official pre-training objective .

    $$
    L = \mathrm{mean}(e^2) + \lambda_w \sum_{W} \lVert W \rVert_F + \lambda_r\, \mathrm{mean}(r^2)
    $$

    over ``W_in, W_rec, W_out, b_out, b`` and ``W_fb`` when it is trained, with plain (not
    squared) Frobenius norms; ``λ_w = 10⁻³``, ``λ_r = 2·10⁻³``.
    """
    loss = rollout.e.pow(2).mean() + rate_penalty * rollout.r.pow(2).mean()
    if weight_penalty:
        penalised = [model.W_in, model.W_rec, model.W_out, model.b_out, model.b]
        penalised += [model.W_fb] if model.W_fb.requires_grad else []
        loss = loss + weight_penalty * sum(w.norm() for w in penalised)
    return loss


def trial_steps(
    model: RateRNN,
    trials: Trials,
    control: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
    on_reset: Callable[[], None] | None = None,
) -> Generator[Context, None, torch.Tensor]:
    """Run ``trials`` one step at a time; yield each step's context; return each trial's MSE ``(B,)``.

    Resets the model (then calls ``on_reset``, where a rule resets its state). The caller acts
    between steps (``rule.step`` and an optimizer step, or reading ``p.grad`` in an analysis);
    ``model.state`` is the loop's state at the yielded step. At the end the loop's state is
    dropped (with its graph).
    """
    model.reset(len(trials), control, generator)
    if on_reset is not None:
        on_reset()
    T = trials.inputs.shape[1]
    errors = []
    for t in range(T):
        push = None if trials.push is None else trials.push[:, t]
        s = model.step(trials.inputs[:, t], trials.v_ref[:, t], push, trials.cursor)
        yield Context(
            loss=s.e.pow(2).mean(),
            output=s.v,
            target=trials.v_ref[:, t],
            t=t,
            signals={"feedback_error": s.e, "trial_end": t == T - 1},
        )
        errors.append(s.e.detach())
    model.state = None
    return torch.stack(errors, 1).pow(2).mean((1, 2))


def online_trial(
    model: RateRNN,
    rule: Rule,
    trials: Trials,
    control: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[Context]:
    """[`trial_steps`][bioplaus.tasks.motor.trial_steps] with ``rule.step`` called at each step (for analyses that read
    ``p.grad``)."""
    for ctx in trial_steps(model, trials, control, generator, lambda: rule.reset(model)):
        rule.step(model, ctx)
        yield ctx


@dataclass
class TrialBatch:
    """One update's trials and the run's generator, which draws their initial states.

    Attributes:
        trials: the batch before repetition over the model's conditions.
        generator: the run's generator.
    """

    trials: Trials
    generator: torch.Generator | None = None


class MotorTask(Task):
    """Reaching with a [`RateRNN`][bioplaus.nets.rate_rnn.RateRNN]; an epoch is ``iterations`` batches of trials.

    Batch rules (``bp``: BPTT through the closed loop) get one context per batch with the
    [`pretraining_loss`][bioplaus.tasks.motor.pretraining_loss]; online rules get one context per time step and the
    optimizer steps after every step (see the module docstring). With a model split into ``C`` conditions
    ([`RateRNN.split_conditions`][bioplaus.nets.rate_rnn.RateRNN.split_conditions]), every condition sees the same
    trials.

    Test splits (fixed trials, seed 0): ``test``/``test_off`` (64 random reaches, control on/off)
    and ``centre_out``/``centre_out_off`` (the 8 targets under the task's rotation); metrics
    ``mse`` and, for centre-out, ``angle``.

    Args:
        trial_set: ``"random"`` reaches or ``"centre-out"`` reaches to random targets of the 8.
        batch_size: trials per update (per condition).
        iterations: batches per epoch.
        timing: ``"kaleb"``, ``"feulner"`` or a [`Timing`][bioplaus.tasks.motor.Timing].
        rotation: visuomotor rotation in degrees (counter-clockwise).
        convention: ``"reference"`` or ``"cursor"`` rotation.
        control: controller gain during training, one number or one per condition.
        push_prob: probability of a velocity push per trial and axis (random reaches).
        weight_penalty: ``λ_w`` of the batch loss.
        rate_penalty: ``λ_r`` of the batch loss.
        clip_grad_norm: global gradient-norm clip before each batch update (``None``: none).
        device: torch device.
        mle_weight: weight of the MLE regulariser
            ([`bioplaus.analysis.mle_regularizer`][bioplaus.analysis.mle_regularizer]) in the batch loss: the
            finite-time maximal Lyapunov exponent of the closed loop along the batch's trials (state ``[x ; e]``, input
            ``[u ; v*]``); 0: none. Batch rules only.
    """

    requires = frozenset({Capability.CONTROLLED_RNN})
    provides = frozenset({"loss", "output", "target", "feedback_error", "t", "trial_end"})
    online_step = "time_step"

    def __init__(
        self,
        trial_set: str = "random",
        batch_size: int = 32,
        iterations: int = 100,
        timing: str | Timing = "kaleb",
        rotation: float = 0.0,
        convention: str = "reference",
        control: float | Sequence[float] = 1.0,
        push_prob: float = 0.0,
        weight_penalty: float = 1e-3,
        rate_penalty: float = 2e-3,
        clip_grad_norm: float | None = 0.2,
        device: str = "cpu",
        mle_weight: float = 0.0,
    ):
        if trial_set not in TRIAL_SETS:
            raise ConfigError(f"trial_set must be one of {TRIAL_SETS}, got {trial_set!r}")
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if min(batch_size, iterations) < 1:
            raise ConfigError(f"batch_size and iterations must be positive, got {batch_size}, {iterations}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be positive or None (no clipping), got {clip_grad_norm}")
        self.name, self.trial_set = f"reaching-{trial_set}", trial_set
        self.trial_set, self.batch_size, self.iterations = trial_set, batch_size, iterations
        self.timing = get_timing(timing)
        self.rotation, self.convention, self.push_prob = rotation, convention, push_prob
        self.control = torch.as_tensor(control, dtype=torch.get_default_dtype()).flatten()
        self.weight_penalty, self.rate_penalty, self.clip_grad_norm = weight_penalty, rate_penalty, clip_grad_norm
        self.device = device
        self.mle = MLERegularizer(mle_weight) if mle_weight != 0 else None
        self.spec = TaskSpec((self.timing.T, 3), 2)
        g = torch.Generator().manual_seed(0)
        self.test_sets = {
            "test": random_reaches(64, self.timing, g).to(device),
            "centre_out": centre_out(self.timing, generator=g).rotated(rotation, convention).to(device),
        }

    # trials ----------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator) -> Trials:
        """One training batch (before repetition over conditions)."""
        if self.trial_set == "random":
            trials = random_reaches(self.batch_size, self.timing, generator, push_prob=self.push_prob)
        else:
            targets = torch.randint(0, 8, (self.batch_size,), generator=generator)
            trials = centre_out(self.timing, targets=targets, generator=generator)
        return trials.rotated(self.rotation, self.convention).to(self.device)

    def _gains(self, model: RateRNN, per_condition: int) -> torch.Tensor:
        control = self.control.to(model.W_rec)
        if len(control) not in (1, model.conditions):
            raise ShapeError(f"control has {len(control)} values; the model has {model.conditions} conditions")
        return control.expand(model.conditions).repeat_interleave(per_condition)

    def check(self, model: nn.Module, rule: Rule) -> None:
        if rule.online and self.mle is not None:
            raise ConfigError(f"mle_weight adds a loss term that online rule '{rule.name}' never sees: use bp")

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[TrialBatch]:
        """``iterations`` batches of fresh trials."""
        self._check_model(model)
        for _ in range(self.iterations):
            yield TrialBatch(self.sample(generator), generator)

    def context(self, model: nn.Module, batch: TrialBatch) -> Context:
        """Whole trials through the closed loop: the [`pretraining_loss`][bioplaus.tasks.motor.pretraining_loss] (plus
        the MLE penalty)."""
        self._check_model(model)
        trials = batch.trials.repeat(model.conditions)
        gains = self._gains(model, len(batch.trials))
        rollout = trials.rollout(model, gains, batch.generator)
        loss = pretraining_loss(model, rollout, self.weight_penalty, self.rate_penalty)
        if self.mle is not None:
            loss = loss + self.mle(model, torch.cat([trials.inputs, trials.v_ref], -1), gains)
        return Context(loss=loss, output=rollout.v, target=trials.v_ref, signals={"feedback_error": rollout.e})

    def steps(
        self, model: nn.Module, batch: TrialBatch, on_reset: Callable[[], None]
    ) -> Generator[Context, None, torch.Tensor]:
        """The trials one step at a time ([`trial_steps`][bioplaus.tasks.motor.trial_steps]); returns each trial's
        MSE."""
        self._check_model(model)
        gains = self._gains(model, len(batch.trials))
        return (yield from trial_steps(model, batch.trials.repeat(model.conditions), gains, batch.generator, on_reset))

    def outcome_loss(self, outcome: torch.Tensor) -> torch.Tensor:
        return outcome.mean()

    def batch_metrics(self, batch: TrialBatch, outcome: Context | torch.Tensor) -> Metrics:
        """The batch's mean squared position error."""
        if isinstance(outcome, Context):
            outcome = outcome.signal("feedback_error").detach().pow(2).mean((1, 2))
        return {"mse": float(outcome.mean())}, 1.0

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, RateRNN):
            raise ConfigError(f"task '{self.name}' drives a RateRNN (model 'rate_rnn'), got {type(model).__name__}")

    def headline_metrics(self) -> tuple[str, ...]:
        """Adaptation (centre-out training trials): the control-off MSE on the rotated targets, then with
        control on; pre-training (random reaches): the test MSE, then with control off."""
        if self.trial_set == "centre-out":
            return ("centre_out_off/mse", "centre_out/mse")
        return ("test/mse", "test_off/mse")

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        self._check_model(model)
        results = {}
        for split, trials in self.test_sets.items():
            for suffix, control in (("", 1.0), ("_off", 0.0)):
                scores = reach_scores(model, trials, control, torch.Generator().manual_seed(0))
                keep = ("mse", "angle") if split == "centre_out" else ("mse",)
                results[split + suffix] = {k: float(scores[k].mean()) for k in keep}
        return results


@register("reaching")
def reaching(
    batch_size: int = 32,
    iterations: int = 100,
    timing: str | Timing = "kaleb",
    push_prob: float = 0.0,
    weight_penalty: float = 1e-3,
    rate_penalty: float = 2e-3,
    clip_grad_norm: float | None = 0.2,
    device: str = "cpu",
    mle_weight: float = 0.0,
) -> MotorTask:
    """Random planar reaches through a feedback-controlled rate RNN: pre-training (Kaleb et al. 2024)."""
    return MotorTask("random", batch_size, iterations, timing, 0.0, "reference", 1.0, push_prob,
                     weight_penalty, rate_penalty, clip_grad_norm, device, mle_weight)  # fmt: skip


@register("reach-adaptation")
def reach_adaptation(
    batch_size: int = 1,
    iterations: int = 50,
    timing: str | Timing = "kaleb",
    rotation: float = 30.0,
    convention: str = "reference",
    control: float = 1.0,
    device: str = "cpu",
) -> MotorTask:
    """Centre-out reaches under a visuomotor rotation, one trial per update: adaptation with online rules.

    One condition trained with the run's optimizer; ``reach-adaptation-grid``
    ([`AdaptationGrid`][bioplaus.tasks.motor_training.AdaptationGrid]) trains a grid of learning rates and
    controller gains in one run.
    """
    return MotorTask("centre-out", batch_size, iterations, timing, rotation, convention, control, 0.0,
                     0.0, 0.0, None, device)  # fmt: skip
