r"""Exploration and target-network schedules of DQN-style agents (CleanRL / official AD code).

ε decays linearly from ``start`` to ``end`` over ``duration`` steps counted from
``learning_starts`` (the official ``linear_schedule``):

$$
\varepsilon(t) = \max\Big(\frac{\text{end} - \text{start}}{D}\,\max(t - t_0, 0) + \text{start},\
\text{end}\Big).
$$

The target network is a hard copy of the online network every ``every`` environment steps once
learning has started (``tau = 1``).
"""

from __future__ import annotations

from bioplaus.errors import ConfigError


def epsilon(step: int, start: float, end: float, duration: int, learning_starts: int = 0) -> float:
    """ε at environment step ``step`` (formula in the module docstring).

    Raises:
        ConfigError: for a non-positive ``duration``.
    """
    if duration <= 0:
        raise ConfigError(f"the exploration duration must be a positive number of steps, got {duration}")
    slope = (end - start) / duration
    return max(slope * max(step - learning_starts, 0) + start, end)


def target_sync_due(step: int, every: int, learning_starts: int = 0) -> bool:
    """Whether the target network is overwritten by the online one after environment step ``step``."""
    return step >= learning_starts and step % every == 0
