"""Policy evaluation: run whole episodes from fixed reset seeds and report their returns.

Generic over agents: the policy is any function from an observation to an action (a discrete
index or a continuous vector), with an optional ``reset`` callback for policies that carry state
across steps (the AD acting context, a spiking actor's membrane potentials). Exploration (e.g.
the ε = 0.05 of the AD and DQN evaluations) is the policy's business, not this function's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioplaus.errors import ConfigError

Policy = Callable[[np.ndarray], Any]
"""Maps one observation (as the environment returns it) to the action passed to ``env.step``."""


@dataclass(frozen=True)
class EvalResult:
    """Undiscounted returns and lengths of the evaluation episodes, in seed order."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        """Mean episode return."""
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        """Population standard deviation of the episode returns."""
        return float(self.returns.std())


def evaluate(
    env: Any,
    policy: Policy,
    seeds: Sequence[int],
    *,
    reset: Callable[[], None] | None = None,
    max_steps: int | None = None,
) -> EvalResult:
    """Run one episode per seed with ``policy`` on a Gymnasium-style ``env``.

    Each episode starts with ``env.reset(seed=seed)`` (so the same seeds give the same start
    states for every agent) and ``reset()`` if given, and ends at ``terminated`` or ``truncated``
    (or after ``max_steps`` steps, a safety cap for environments without a time limit).

    Args:
        env: an environment with the Gymnasium API (``reset(seed=…)``, 5-tuple ``step``).
        policy: observation → action.
        seeds: one reset seed per episode.
        reset: called at each episode start, before the first action (clears policy state).
        max_steps: optional cap on steps per episode.

    Returns:
        The episodes' returns and lengths.

    Raises:
        ConfigError: when ``seeds`` is empty.
    """
    if len(seeds) == 0:
        raise ConfigError("evaluate needs at least one episode seed")
    returns, lengths = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        if reset is not None:
            reset()
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated or (max_steps is not None and steps >= max_steps)
        returns.append(total)
        lengths.append(steps)
    return EvalResult(returns=np.asarray(returns, dtype=np.float64), lengths=np.asarray(lengths))
