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


def check_budget(task: str, epochs: int, steps_per_epoch: int, start: tuple[str, int], every: tuple[str, int]) -> None:
    """Raise ``ConfigError`` if ``epochs × steps_per_epoch`` environment steps end before the first update.

    The first update comes at the first step $s \\ge \\max(t_0, 1)$ that is a multiple of the
    update period: $s_1 = \\lceil \\max(t_0, 1) / k \\rceil\\, k$.

    Args:
        task: the task's name, for the message.
        epochs: the run's epochs.
        steps_per_epoch: environment steps per epoch.
        start: the option that delays learning and its value (``("learning_starts", t_0)``).
        every: the option giving the update period and its value (``("train_every", k)``).
    """
    (start_key, t0), (every_key, k) = start, every
    first = -(-max(t0, 1) // k) * k
    total = epochs * steps_per_epoch
    if total < first:
        raise ConfigError(
            f"{task} task: the run's {epochs} epochs × steps_per_epoch {steps_per_epoch} = {total} environment "
            f"steps end before the first update at step {first} ({start_key} {t0}, {every_key} {k}); raise epochs "
            f"or task_options.steps_per_epoch, or lower task_options.{start_key}"
        )
