"""What vectorised adaptation experiments with the feedback-controlled rate RNN need from the task side.

Adaptation runs several conditions (learning rate × control on/off) in one pass: the model is
split into one ``W_rec`` per condition, every condition sees the same trial sequence,
:class:`ConditionSGD` steps each condition with its own learning rate, and
:class:`AdaptationTrials` lets a condition diverge without ending the others. The driver is
:func:`bioplaus.runner.motor.adapt`; what it measured is an :class:`AdaptationResult`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from bioplaus.analysis.feedback_control import efficiency
from bioplaus.errors import ConfigError
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.tasks.motor import MotorTask


class ConditionSGD(torch.optim.Optimizer):
    r"""Plain SGD with one learning rate per condition: ``W[c] ← W[c] − η_c ∇W[c]``.

    Every parameter has the conditions on its first axis. The optimizer also sums the length of
    each condition's steps, :math:`\sum_t \eta_c \lVert \nabla W_t[c] \rVert` (:attr:`path`), for
    the efficiency analysis.

    Args:
        params: parameters with a leading condition axis of size ``len(lrs)``.
        lrs: the learning rates.
    """

    def __init__(self, params: Iterable[torch.Tensor], lrs: Sequence[float] | torch.Tensor):
        lrs = torch.as_tensor(lrs, dtype=torch.get_default_dtype()).flatten()
        if (lrs < 0).any():
            raise ConfigError(f"learning rates must be non-negative, got {lrs.tolist()}")
        super().__init__(params, {"lr": lrs})
        self.path = torch.zeros(len(lrs), dtype=torch.float64)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                lr = group["lr"].to(p)
                self.path += (lr * torch.linalg.vector_norm(p.grad.flatten(1), dim=1)).double().cpu()
                p.addcmul_(lr.view(-1, *[1] * (p.dim() - 1)), p.grad, value=-1)


@dataclass
class AdaptationResult:
    """What :func:`adapt` measured, per condition ``c`` (columns) and evaluation point (rows).

    Attributes:
        labels: condition labels.
        lrs: learning rate per condition.
        controls: controller gain during learning per condition.
        trials: trials done at each evaluation (0 = before learning).
        test_mse: control-off test MSE on the 8 rotated targets ``(evals, C)``.
        test_mse_on: the same with control on.
        test_angle: control-off mean |endpoint angle| in degrees ``(evals, C)``.
        train_mse: each training trial's MSE ``(trials, C)``.
        diverged_at: trial at which each condition diverged (``-1``: never).
        displacement: ``‖W_end − W_start‖_F`` per condition (weights before divergence).
        path: ``Σ_t η‖∇_t‖``, the summed step lengths.
        model: the split model after adaptation.
    """

    labels: list[str]
    lrs: list[float]
    controls: list[float]
    trials: list[int] = field(default_factory=list)
    test_mse: torch.Tensor | None = None
    test_mse_on: torch.Tensor | None = None
    test_angle: torch.Tensor | None = None
    train_mse: torch.Tensor | None = None
    diverged_at: torch.Tensor | None = None
    displacement: torch.Tensor | None = None
    path: torch.Tensor | None = None
    model: RateRNN | None = None

    @property
    def diverged(self) -> torch.Tensor:
        """Whether each condition diverged."""
        return self.diverged_at >= 0

    @property
    def efficiency(self) -> torch.Tensor:
        """Net weight change over summed step lengths (:func:`bioplaus.analysis.feedback_control.efficiency`)."""
        return efficiency(self.displacement, self.path)

    def rows(self, final_fraction: float = 0.1) -> list[dict[str, float | str | bool]]:
        """One dict per condition: initial, final and best control-off MSE, angle, efficiency, divergence.

        "Final" metrics average the evaluations in the last ``final_fraction`` of the trials (at
        least the last one): with one trial per update the weights move with every trial.
        """
        tail = [i for i, done in enumerate(self.trials) if done >= (1 - final_fraction) * self.trials[-1]]
        out = []
        for c, label in enumerate(self.labels):
            bad = bool(self.diverged[c])
            metrics = {"final_mse": self.test_mse, "final_mse_on": self.test_mse_on, "final_angle": self.test_angle}
            final = {name: math.nan if bad else float(values[tail, c].mean()) for name, values in metrics.items()}
            out.append({
                "condition": label, "lr": self.lrs[c], "control": self.controls[c], "diverged": bad,
                "initial_mse": float(self.test_mse[0, c]), **final,
                "min_mse": float(self.test_mse[:, c].nan_to_num(math.inf).min()),
                "efficiency": math.nan if bad else float(self.efficiency[c]),
            })  # fmt: skip
        return out


class AdaptationTrials(MotorTask):
    """Centre-out trials for condition-split adaptation: a diverged condition does not end the run.

    The loss checked after each trial is the mean MSE of the conditions that are still finite;
    the driver freezes the others (:func:`bioplaus.runner.motor.adapt`).
    """

    def outcome_loss(self, outcome: torch.Tensor) -> torch.Tensor:
        finite = outcome[torch.isfinite(outcome)]
        return finite.mean() if len(finite) else outcome.new_zeros(())
