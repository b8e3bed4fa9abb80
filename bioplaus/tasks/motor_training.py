r"""Vectorised adaptation of the feedback-controlled rate RNN: several conditions trained in one run.

The registered task ``reach-adaptation-grid`` ([`AdaptationGrid`][bioplaus.tasks.motor_training.AdaptationGrid]) adapts
a pre-trained [`RateRNN`][bioplaus.nets.rate_rnn.RateRNN] to a visuomotor rotation under ``C`` conditions at once,
condition ``c`` being a learning rate $\eta_c$ and a controller gain $g_c$ during
learning. [`AdaptationGrid.prepare`][bioplaus.tasks.motor_training.AdaptationGrid.prepare] splits the model into one
``W_rec`` per condition ([`split_conditions`][bioplaus.nets.rate_rnn.RateRNN.split_conditions]), every condition sees
the same trial sequence, and [`AdaptationGrid.optimizer`][bioplaus.tasks.motor_training.AdaptationGrid.optimizer] steps
them with [`ConditionSGD`][bioplaus.tasks.motor_training.ConditionSGD],

$$
W_{rec}[c] \leftarrow W_{rec}[c] - \eta_c\, \Delta_t[c]
$$

after every time step ``t`` of a trial, $\Delta_t$ being the online rule's update. The
runner owns the training step ([`bioplaus.runner.train_step`][bioplaus.runner.training.train_step]); the task owns what
is specific to the grid: a condition that diverges is frozen while the others go on, and the
metrics are reported per condition. [`AdaptationResult`][bioplaus.tasks.motor_training.AdaptationResult] reads a run's
tidy table back into per-condition curves ([`bioplaus.runner.motor.adapt`][bioplaus.runner.motor.adapt] does both in
one call).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from bioplaus.analysis import feedback_control as feedback_analysis
from bioplaus.core import Rule
from bioplaus.errors import ConfigError
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics
from bioplaus.tasks.motor import MotorTask, Timing, TrialBatch, centre_out, reach_scores

if TYPE_CHECKING:
    import pandas as pd

EVAL_SEED = 10_000
"""Seed of the generator that draws the test trials' initial states (the same at every evaluation)."""


class ConditionSGD(torch.optim.Optimizer):
    r"""Plain SGD with one learning rate per condition: ``W[c] ← W[c] − η_c ∇W[c]``.

    Every parameter has the conditions on its first axis. The optimizer also sums the length of
    each condition's steps, $\sum_t \eta_c \lVert \nabla W_t[c] \rVert$ (`path`), for
    the efficiency analysis; `state_dict` carries it.

    Args:
        params: parameters (or parameter groups) with a leading condition axis of size ``len(lrs)``.
        lrs: the learning rates.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lrs: Sequence[float] | torch.Tensor):
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

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"path": self.path.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.path = state.pop("path").to(torch.float64).clone()
        super().load_state_dict(state)


def condition_labels(lrs: Sequence[float], controls: Sequence[float]) -> list[str]:
    """The default condition names ``lr=…,control=…``."""
    return [f"lr={lr:g},control={g:g}" for lr, g in zip(lrs, controls, strict=True)]


@dataclass
class _Run:
    """What one run of the grid carries besides the model's weights.

    Attributes:
        model: the split model being trained.
        start: ``W_rec`` at the start, ``(C, n, n)``; a diverged condition is reset to it.
        diverged_at: the trial after which each condition diverged (``-1``: never), ``(C,)``.
        optimizer: the run's [`ConditionSGD`][bioplaus.tasks.motor_training.ConditionSGD] (its learning rates and
            `path`).
        trials: trials trained so far.
        epoch_sum: per condition, the sum of this epoch's training-trial MSEs before divergence.
        epoch_count: the number of those trials.
    """

    model: RateRNN
    start: torch.Tensor
    diverged_at: torch.Tensor
    optimizer: ConditionSGD | None = None
    trials: int = 0
    epoch_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    epoch_count: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


class AdaptationGrid(MotorTask):
    r"""Adaptation to a rotation under ``C`` conditions (learning rate × controller gain) in one run.

    Each trial is one centre-out reach to a random target of the 8 (the same sequence for every
    condition; batch 1 as the official ``do_adaptation.py``), learned online by the run's rule
    (``rflo``, ``fed``, ``online_bptt``) with [`ConditionSGD`][bioplaus.tasks.motor_training.ConditionSGD] stepping
    after every time step; the run's own optimizer and learning rate are not used. An epoch is ``trials`` trials;
    after each (and before the first) the 8 rotated targets are tested with control off and on,
    from initial states drawn with the fixed seed [`EVAL_SEED`][bioplaus.tasks.motor_training.EVAL_SEED].

    **Divergence.** A condition whose training-trial MSE (after the trial) or control-off test MSE
    (at an evaluation) is non-finite or above ``diverge_above`` is frozen: its ``W_rec`` is reset
    to its start and its learning rate set to 0, and from then on it reports ``diverged/<label>``
    = 1 and ``diverged_at/<label>`` (the trial count) instead of metrics; the run and the other
    conditions go on. The loss the runner checks after each trial is the mean MSE of the
    conditions still finite ([`outcome_loss`][bioplaus.tasks.motor_training.AdaptationGrid.outcome_loss]).

    **Metrics** (``<label>`` is the condition's label):

    - ``train``: ``mse`` (the trials' MSE over the conditions not diverged) and ``mse/<label>``
      (the mean MSE of the epoch's trials before the condition diverged);
    - ``test_off`` and ``test_on`` (control off / on): ``mse/<label>`` and ``angle/<label>``
      (mean |endpoint angle| in degrees);
    - ``adaptation``: ``trials`` (trials done), ``diverged/<label>`` (0 or 1),
      ``diverged_at/<label>``, ``displacement/<label>`` $\lVert W_c - W_c^0 \rVert_F$,
      ``path/<label>`` $\sum_t \eta_c \lVert \Delta_t[c] \rVert$ and ``efficiency/<label>``
      (displacement ÷ path, once the path is non-zero).

    Args:
        lrs: learning rate per condition.
        controls: controller gain during learning per condition (0: control off, 1: on).
        labels: condition names, unique (default ``lr=…,control=…``).
        trials: trials per epoch (between two evaluations).
        rotation: degrees, counter-clockwise.
        convention: ``"reference"`` or ``"cursor"`` rotation.
        timing: ``"kaleb"``, ``"feulner"`` or a [`Timing`][bioplaus.tasks.motor.Timing].
        diverge_above: a training-trial or control-off test MSE above this counts as diverged.
        batch_size: trials per update and condition.
        device: torch device.
    """

    def __init__(
        self,
        lrs: Sequence[float],
        controls: Sequence[float],
        labels: Sequence[str] | None = None,
        trials: int = 10,
        rotation: float = 30.0,
        convention: str = "reference",
        timing: str | Timing = "kaleb",
        diverge_above: float = 1e3,
        batch_size: int = 1,
        device: str = "cpu",
    ):
        lrs, controls = [float(x) for x in lrs], [float(x) for x in controls]
        if not lrs or len(lrs) != len(controls):
            raise ConfigError(f"need one control per learning rate, got {len(lrs)} lrs and {len(controls)} controls")
        if not all(lr >= 0 and math.isfinite(lr) for lr in lrs):
            raise ConfigError(f"learning rates must be finite and non-negative, got {lrs}")
        labels = condition_labels(lrs, controls) if labels is None else [str(label) for label in labels]
        if len(labels) != len(lrs):
            raise ConfigError(f"need one label per condition, got {len(labels)} labels for {len(lrs)} conditions")
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated or not all(labels):
            raise ConfigError(f"condition labels must be non-empty and unique, got {labels}")
        if not diverge_above > 0:
            raise ConfigError(f"diverge_above must be positive, got {diverge_above}")
        super().__init__("centre-out", batch_size, trials, timing, rotation, convention, controls, 0.0,
                         0.0, 0.0, None, device)  # fmt: skip
        self.name = "reach-adaptation-grid"
        self.lrs, self.controls, self.labels, self.diverge_above = lrs, controls, labels, diverge_above
        test = centre_out(self.timing, generator=torch.Generator().manual_seed(0))
        self.test_sets = {"centre_out": test.rotated(rotation, convention).to(device)}
        self._run: _Run | None = None

    @property
    def conditions(self) -> int:
        """``C``, the number of conditions."""
        return len(self.lrs)

    # the run -----------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Split the pre-trained ``model`` into one ``W_rec`` per condition; start the run's bookkeeping."""
        self._check_model(model)
        if model.conditions != 1:
            raise ConfigError(
                f"task '{self.name}' splits a pre-trained model into its conditions; this one is already "
                f"split into {model.conditions}"
            )
        model.split_conditions(self.conditions)
        start = model.W_rec.detach().clone()
        self._run = _Run(model, start, torch.full((self.conditions,), -1))
        return model

    def _state(self, model: nn.Module) -> _Run:
        if self._run is None or self._run.model is not model:
            raise ConfigError(f"task '{self.name}': call prepare(model) on the model before training or evaluating it")
        return self._run

    def check(self, model: nn.Module, rule: Rule) -> None:
        if not rule.online:
            raise ConfigError(
                f"task '{self.name}' trains online rules (rflo, fed, online_bptt); '{rule.name}' learns per batch"
            )
        super().check(model, rule)

    def optimizer(self, param_groups: list[dict[str, Any]]) -> ConditionSGD:
        """[`ConditionSGD`][bioplaus.tasks.motor_training.ConditionSGD] with the conditions' learning rates over the
        rule's parameters (``W_rec``)."""
        for group in param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != self.conditions:
                    raise ConfigError(
                        f"task '{self.name}' steps parameters with one slice per condition ({self.conditions}); "
                        f"the rule trains one of shape {tuple(p.shape)}"
                    )
        optimizer = ConditionSGD(param_groups, self.lrs)
        if self._run is not None:
            self._run.optimizer = optimizer
        return optimizer

    def _freeze(self, run: _Run, bad: torch.Tensor) -> None:
        """Mark the conditions ``bad`` as diverged after ``run.trials`` trials and freeze them at their start."""
        bad = bad & (run.diverged_at < 0)
        if not bad.any():
            return
        run.diverged_at[bad] = run.trials
        w = run.model.W_rec
        with torch.no_grad():
            w[bad.to(w.device)] = run.start[bad].to(w)
        if run.optimizer is not None:
            for group in run.optimizer.param_groups:
                group["lr"] = group["lr"].masked_fill(bad, 0.0)

    def _diverging(self, mse: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(mse) | (mse > self.diverge_above)

    # training ----------------------------------------------------------------------------------
    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[TrialBatch]:
        """``trials`` centre-out trials (one random target each)."""
        run = self._state(model)
        run.epoch_sum = torch.zeros(self.conditions, dtype=torch.float64)
        run.epoch_count = torch.zeros(self.conditions, dtype=torch.long)
        yield from super().batches(model, generator)

    def outcome_loss(self, outcome: torch.Tensor) -> torch.Tensor:
        """The mean trial MSE of the conditions still finite (0 if none is): one blow-up does not end the run."""
        finite = outcome[torch.isfinite(outcome)]
        return finite.mean() if len(finite) else outcome.new_zeros(())

    def batch_metrics(self, batch: TrialBatch, outcome: torch.Tensor) -> Metrics:
        """Each condition's MSE on the trial; freezes the conditions that diverged on it."""
        run = self._run
        if run is None:
            raise ConfigError(f"task '{self.name}': call prepare(model) before training")
        mse = outcome.detach().reshape(self.conditions, -1).mean(1).cpu()
        run.trials += 1
        self._freeze(run, self._diverging(mse))
        alive = run.diverged_at < 0
        run.epoch_sum[alive] += mse[alive].double()
        run.epoch_count[alive] += 1
        return ({"mse": float(mse[alive].mean())} if alive.any() else {}), 1.0

    def epoch_metrics(self) -> dict[str, float]:
        """``mse/<label>``: the mean MSE of the epoch's trials before each condition diverged."""
        run = self._run
        if run is None:
            return {}
        mean = run.epoch_sum / run.epoch_count.clamp_min(1)
        return {f"mse/{label}": float(mean[c]) for c, label in enumerate(self.labels) if run.epoch_count[c] > 0}

    # evaluation --------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Test the 8 rotated targets per condition with control off and on (see the class docstring).

        Freezes the conditions whose control-off test MSE diverged.
        """
        run = self._state(model)
        trials = self.test_sets["centre_out"]
        off, on = (reach_scores(model, trials, g, torch.Generator().manual_seed(EVAL_SEED)) for g in (0.0, 1.0))
        off, on = ({k: v.cpu() for k, v in scores.items()} for scores in (off, on))
        self._freeze(run, self._diverging(off["mse"]))
        w = model.W_rec.detach()
        displacement = (w - run.start.to(w)).flatten(1).norm(dim=1).double().cpu()
        path = run.optimizer.path if run.optimizer is not None else torch.zeros(self.conditions, dtype=torch.float64)
        ratio = feedback_analysis.efficiency(displacement, path)
        results: dict[str, dict[str, float]] = {
            "test_off": {},
            "test_on": {},
            "adaptation": {"trials": float(run.trials)},
        }
        adaptation = results["adaptation"]
        for c, label in enumerate(self.labels):
            gone = bool(run.diverged_at[c] >= 0)
            adaptation[f"diverged/{label}"] = float(gone)
            if gone:
                adaptation[f"diverged_at/{label}"] = float(run.diverged_at[c])
                continue
            for split, scores in (("test_off", off), ("test_on", on)):
                for metric in ("mse", "angle"):
                    value = float(scores[metric][c])
                    if math.isfinite(value):  # control on can fail where control off did not
                        results[split][f"{metric}/{label}"] = value
            adaptation[f"displacement/{label}"] = float(displacement[c])
            adaptation[f"path/{label}"] = float(path[c])
            if path[c] > 0:
                adaptation[f"efficiency/{label}"] = float(ratio[c])
        return results

    # checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        run = self._run
        if run is None:
            return {}
        return {"trials": run.trials, "diverged_at": run.diverged_at.clone(), "start": run.start.clone()}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        run = self._state(model)
        run.trials = int(state["trials"])
        run.diverged_at = state["diverged_at"].clone()
        run.start = state["start"].clone()


@register("reach-adaptation-grid")
def reach_adaptation_grid(
    lrs: Sequence[float] = (1e-4,),
    controls: Sequence[float] = (1.0,),
    labels: Sequence[str] | None = None,
    trials: int = 10,
    rotation: float = 30.0,
    convention: Literal["reference", "cursor"] = "reference",
    timing: str | Timing = "kaleb",
    diverge_above: float = 1e3,
    batch_size: int = 1,
    device: str = "cpu",
) -> AdaptationGrid:
    """Adaptation to a rotation under several conditions (lr × control) in one run, each with its own W_rec."""
    return AdaptationGrid(
        lrs, controls, labels, trials, rotation, convention, timing, diverge_above, batch_size, device
    )


@dataclass
class AdaptationResult:
    """One adaptation run, per condition ``c`` (columns) and evaluation (rows), read from the runner's table.

    Attributes:
        labels: condition labels.
        lrs: learning rate per condition.
        controls: controller gain during learning per condition.
        trials: trials done at each evaluation (0 = before learning).
        test_mse: control-off test MSE on the 8 rotated targets ``(evals, C)`` (NaN once diverged).
        test_mse_on: the same with control on.
        test_angle: control-off mean |endpoint angle| in degrees ``(evals, C)``.
        train_mse: mean training-trial MSE between two evaluations ``(evals − 1, C)``.
        diverged_at: trial after which each condition diverged (``-1``: never).
        displacement: ``‖W_end − W_start‖_F`` per condition (NaN if diverged).
        path: ``Σ_t η‖Δ_t‖``, the summed step lengths (NaN if diverged).
        model: the split model after adaptation (diverged conditions at their start).
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

    @classmethod
    def from_table(
        cls,
        table: pd.DataFrame,
        labels: Sequence[str],
        lrs: Sequence[float],
        controls: Sequence[float],
        model: RateRNN | None = None,
    ) -> AdaptationResult:
        """Read the tidy metrics of one ``reach-adaptation-grid`` run (one rule, one seed) into curves.

        Args:
            table: the run's rows (``Comparison.table``), columns epoch, split, metric, value.
            labels: the task's condition labels; ``lrs``, ``controls``: its conditions.
            model: the trained model, if at hand.
        """
        runs = table[["rule", "seed"]].drop_duplicates()
        if len(runs) != 1:
            raise ConfigError(f"an adaptation result reads one run (one rule and seed), got {len(runs)}")
        epochs = sorted(table["epoch"].unique())

        def grid(split: str, metric: str, epochs: list[int], dtype: torch.dtype) -> torch.Tensor:
            """``(epochs, C)`` values of ``split``/``metric/<label>``, NaN where a condition has none."""
            rows = table[table["split"] == split]
            names = [f"{metric}/{label}" for label in labels]
            wide = rows.pivot_table(index="epoch", columns="metric", values="value", aggfunc="last")
            values = wide.reindex(index=epochs, columns=names).to_numpy(dtype=float)
            return torch.tensor(values.tolist(), dtype=dtype)

        done = table[(table["split"] == "adaptation") & (table["metric"] == "trials")].sort_values("epoch")
        last = table[(table["split"] == "adaptation") & (table["epoch"] == epochs[-1])].set_index("metric")["value"]
        diverged_at = [int(last.get(f"diverged_at/{label}", -1)) for label in labels]

        def final(metric: str) -> torch.Tensor:
            """``(C,)`` values of ``adaptation``/``metric/<label>`` at the last evaluation, NaN where absent."""
            return torch.tensor(
                [float(last.get(f"{metric}/{label}", math.nan)) for label in labels], dtype=torch.float64
            )

        dtype = torch.get_default_dtype()
        return cls(
            list(labels),
            [float(x) for x in lrs],
            [float(x) for x in controls],
            trials=[int(v) for v in done["value"]],
            test_mse=grid("test_off", "mse", epochs, dtype),
            test_mse_on=grid("test_on", "mse", epochs, dtype),
            test_angle=grid("test_off", "angle", epochs, dtype),
            train_mse=grid("train", "mse", epochs[1:], dtype),
            diverged_at=torch.tensor(diverged_at),
            displacement=final("displacement"),
            path=final("path"),
            model=model,
        )

    @property
    def diverged(self) -> torch.Tensor:
        """Whether each condition diverged."""
        return self.diverged_at >= 0

    @property
    def efficiency(self) -> torch.Tensor:
        """Net weight change over summed step lengths
        ([`bioplaus.analysis.feedback_control.efficiency`][bioplaus.analysis.feedback_control.efficiency])."""
        return feedback_analysis.efficiency(self.displacement, self.path)

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
