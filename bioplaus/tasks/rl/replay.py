r"""A generic replay buffer: plain transitions and observation sequences for recurrent context.

One buffer serves every agent in bioplaus: discrete-action Q-learning (MLP-DQN, Artificial
Dopamine) and continuous-action actor-critics (TD3). Observations may have any shape and
dtype (MinAtar's bool grids are stored as bool and returned as float32), actions any shape and
dtype (``()`` + ``torch.long`` for a discrete action, ``(d,)`` + ``torch.float32`` for a
continuous one).

Transitions are stored as ``(s, a, r, s', terminated, truncated)`` in a ring of ``capacity``
slots; the oldest one is overwritten when the ring is full.

**Episode boundaries for sequences.**
[`ReplayBuffer.sample_sequences`][bioplaus.tasks.rl.replay.ReplayBuffer.sample_sequences] returns, for each sampled
transition ``t``, the observations ``s_{t-K}, …, s_t`` of the *same episode*. An episode ends at a transition that is
``terminated`` **or** ``truncated`` (a time limit). This differs from the official AD code
(``TrajectoryReplayBuffer``), which cuts only at ``terminated`` and therefore lets a sequence reach back across a time
limit into the previous episode. Steps before the episode start (or already overwritten)
are *clamped* to the episode's first stored observation, as in the official buffer, and flagged in
`SequenceBatch.valid`, so a consumer can restart its context from zeros there, as acting does at ``reset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bioplaus.errors import ConfigError, ShapeError


@dataclass(frozen=True)
class Transitions:
    """A batch of ``B`` transitions (torch tensors, batch axis first).

    Attributes:
        obs: ``s``, float32, ``(B, *obs_shape)``.
        action: ``a``, ``(B, *action_shape)`` in the buffer's action dtype.
        reward: ``r``, float32, ``(B,)``.
        next_obs: ``s'``, float32, ``(B, *obs_shape)``.
        terminated: float32 ``(B,)``, 1 where ``s'`` is terminal (no bootstrap).
        truncated: float32 ``(B,)``, 1 where the episode was cut by a time limit after this step.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


@dataclass(frozen=True)
class SequenceBatch:
    """Transitions plus the observations that precede them in their episode.

    Attributes:
        transitions: the sampled transitions; ``transitions.obs`` equals ``obs_seq[-1]``.
        obs_seq: ``(K+1, B, *obs_shape)`` float32, ``obs_seq[k] = s_{t-K+k}``; steps before the
            episode start repeat the episode's first stored observation.
        valid: ``(K+1, B)`` bool, False where ``obs_seq[k]`` lies before the episode start
            (a clamped, repeated observation). ``valid[-1]`` is always True.
    """

    transitions: Transitions
    obs_seq: torch.Tensor
    valid: torch.Tensor


class ReplayBuffer:
    """Ring buffer of transitions with uniform sampling of transitions or of sequences.

    Args:
        capacity: number of transitions kept (the oldest is overwritten beyond it).
        obs_shape: shape of one observation.
        action_shape: shape of one action: ``()`` for a discrete action index.
        action_dtype: ``torch.long`` for discrete actions, ``torch.float32`` for continuous ones.
        obs_dtype: storage dtype of observations (e.g. ``torch.bool`` for MinAtar); samples are
            always returned as float32.

    Raises:
        ConfigError: for a capacity below 1.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int] = (),
        action_dtype: torch.dtype = torch.long,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(capacity) < 1:
            raise ConfigError(f"replay buffer capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.action_shape = tuple(int(d) for d in action_shape)
        self.obs = torch.zeros((self.capacity, *self.obs_shape), dtype=obs_dtype)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros((self.capacity, *self.action_shape), dtype=action_dtype)
        self.reward = torch.zeros(self.capacity)
        self.terminated = torch.zeros(self.capacity)
        self.truncated = torch.zeros(self.capacity)
        # absolute step number of each slot's episode start (for sequence sampling)
        self.episode_start = torch.zeros(self.capacity, dtype=torch.long)
        self.added = 0
        """Transitions added so far (absolute step count; ``len(self)`` caps it at capacity)."""
        self._start = 0

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    _ROWS = ("obs", "next_obs", "action", "reward", "terminated", "truncated", "episode_start")
    """The per-slot storage, filled from slot 0 on until the ring wraps."""

    def __getstate__(self) -> dict[str, object]:
        """Pickle (checkpoints) only the filled slots: a run's checkpoint does not carry the empty capacity."""
        state = dict(self.__dict__)
        for name in self._ROWS:
            state[name] = state[name][: len(self)].clone()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        for name in self._ROWS:
            filled = getattr(self, name)
            full = filled.new_zeros((self.capacity, *filled.shape[1:]))
            full[: len(filled)] = filled
            setattr(self, name, full)

    def add(
        self,
        obs: np.ndarray | torch.Tensor,
        action: np.ndarray | torch.Tensor | int | float,
        reward: float,
        next_obs: np.ndarray | torch.Tensor,
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Store one transition; a ``terminated`` or ``truncated`` one ends the current episode.

        Raises:
            ShapeError: when ``obs``, ``next_obs`` or ``action`` do not have the buffer's shapes.
        """
        obs_t, next_t = torch.as_tensor(obs), torch.as_tensor(next_obs)
        act_t = torch.as_tensor(action)
        for name, value, shape in (("obs", obs_t, self.obs_shape), ("next_obs", next_t, self.obs_shape)):
            if tuple(value.shape) != shape:
                raise ShapeError(f"{name} has shape {tuple(value.shape)}; this buffer stores {shape}")
        if tuple(act_t.shape) != self.action_shape:
            raise ShapeError(f"action has shape {tuple(act_t.shape)}; this buffer stores {self.action_shape}")
        i = self.added % self.capacity
        self.obs[i] = obs_t
        self.next_obs[i] = next_t
        self.action[i] = act_t
        self.reward[i] = float(reward)
        self.terminated[i] = float(terminated)
        self.truncated[i] = float(truncated)
        self.episode_start[i] = self._start
        self.added += 1
        if terminated or truncated:
            self._start = self.added

    def _indices(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        if len(self) == 0:
            raise ConfigError("cannot sample from an empty replay buffer: add transitions first")
        return torch.randint(len(self), (int(batch_size),), generator=generator)

    def _gather(self, idx: torch.Tensor) -> Transitions:
        return Transitions(
            obs=self.obs[idx].float(),
            action=self.action[idx],
            reward=self.reward[idx],
            next_obs=self.next_obs[idx].float(),
            terminated=self.terminated[idx],
            truncated=self.truncated[idx],
        )

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement.

        Raises:
            ConfigError: when the buffer is empty.
        """
        return self._gather(self._indices(batch_size, generator))

    def sample_sequences(
        self, batch_size: int, context: int, generator: torch.Generator | None = None
    ) -> SequenceBatch:
        """Transitions ``t`` with the observations ``s_{t-K..t}`` of their episode (``K = context``).

        Steps before the episode start, or older than the oldest stored transition, repeat the
        first available observation of the episode and are marked invalid (module docstring).

        Raises:
            ConfigError: when the buffer is empty or ``context`` is negative.
        """
        if context < 0:
            raise ConfigError(f"context must be >= 0 steps, got {context}")
        idx = self._indices(batch_size, generator)
        absolute = self._absolute(idx)
        oldest = self.added - len(self)
        first = torch.maximum(self.episode_start[idx], torch.full_like(idx, oldest))
        offsets = torch.arange(context, -1, -1).unsqueeze(1)  # (K+1, 1): K, ..., 0
        steps = absolute.unsqueeze(0) - offsets  # (K+1, B)
        valid = steps >= first.unsqueeze(0)
        steps = torch.maximum(steps, first.unsqueeze(0))
        obs_seq = self.obs[steps % self.capacity].float()
        return SequenceBatch(transitions=self._gather(idx), obs_seq=obs_seq, valid=valid)

    def _absolute(self, idx: torch.Tensor) -> torch.Tensor:
        """Absolute step numbers of ring slots ``idx``."""
        newest = (self.added - 1) % self.capacity
        return self.added - 1 - (newest - idx) % self.capacity
