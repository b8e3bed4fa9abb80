r"""MLE regularisation: a loss term that penalises the finite-time maximal Lyapunov exponent.

Young & Pugeault (NeurIPS 2024, arXiv 2410.10674) found trained deep-RL controllers to be
deterministically chaotic (a tiny state perturbation changes the trajectory and the reward) and
added a maximal-Lyapunov-exponent (MLE) penalty to Dreamer V3's training, which made the policies
robust to small state perturbations. Here the penalty is the finite-time MLE of the network's own
state map along a training batch's input sequences,

$$
L = L_{task} + w\, \frac1B \sum_{b=1}^{B} \hat\lambda_1^{(b)}, \qquad
\hat\lambda_1 = \frac1T \sum_{t=1}^{T} \log \lVert J_t q_{t-1} \rVert, \quad
q_t = \frac{J_t q_{t-1}}{\lVert J_t q_{t-1} \rVert},
$$

with $J_t$ the state Jacobian at step ``t`` of the trajectory that starts where the model's
trials start (zero state for an LSTM, the model's random ``x_0`` for the rate RNN) and follows
the batch's inputs, and a random unit $q_0$. $J_t q$ comes from forward-mode autograd
([`finite_time_mle`][bioplaus.analysis.lyapunov.finite_time_mle]), and the whole sum is differentiated by the
usual backward pass, so the term works with every batch rule that back-propagates ``ctx.loss``
(``bp``, ``bptt``, ``tbptt``: truncation does not cut the penalty's own graph). How the paper
estimates the exponent inside the world model is not reproduced; the quantity penalised is the same.

In a config: the task option ``mle_weight`` (sequence tasks ``delayed-recall``, ``copy``,
``adding``, ``pixel-*`` with an ``lstm``; ``reaching`` with a ``rate_rnn``); 0 switches it off.
"""

from __future__ import annotations

import torch
from torch import nn

from bioplaus.analysis.dynamics import StepDynamics, as_dynamics
from bioplaus.analysis.lyapunov import finite_time_mle
from bioplaus.errors import ConfigError


def check_mle_weight(weight: float) -> float:
    """``weight`` as a float; a negative, non-finite or non-numeric weight raises ``ConfigError``."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"mle_weight expects a number ≥ 0 (0: no MLE regularisation), got {weight!r}")
    if not 0 <= weight < float("inf"):
        raise ConfigError(
            f"mle_weight must be a finite number ≥ 0 (a negative weight would reward chaos), got {weight}"
        )
    return float(weight)


class MLERegularizer:
    """The penalty ``weight · mean_b λ̂₁⁽ᵇ⁾`` of a batch, for a model or a
    [`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics].

    Args:
        weight: ``w`` (≥ 0).
        seed: seed of the regulariser's own generator (initial tangents and states), so that turning
            the term on does not change the training data's random stream.
    """

    def __init__(self, weight: float, seed: int = 0):
        self.weight = check_mle_weight(weight)
        self.generator = torch.Generator().manual_seed(seed)

    def mle(
        self, model: nn.Module | StepDynamics, inputs: torch.Tensor, control: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """The finite-time MLE per sequence ``(B,)`` along ``inputs`` ``(B, T, m)``, differentiable.

        ``model`` is a bioplaus recurrent model (``lstm``, or ``rate_rnn`` with gain ``control`` and
        inputs ``[u ; v*]``) or any [`StepDynamics`][bioplaus.analysis.dynamics.StepDynamics].
        """
        dynamics = model if isinstance(model, StepDynamics) else as_dynamics(model, control)
        state = dynamics.initial_state(inputs.shape[0], self.generator).to(inputs)
        return finite_time_mle(dynamics, inputs, state=state, generator=self.generator)

    def __call__(
        self, model: nn.Module | StepDynamics, inputs: torch.Tensor, control: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """The penalty ``w · mean λ̂₁`` (a scalar with a graph to the model's parameters)."""
        return self.weight * self.mle(model, inputs, control).mean()
