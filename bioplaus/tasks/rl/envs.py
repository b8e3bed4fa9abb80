"""Environments by name: Gymnasium classic control and MuJoCo, MinAtar, and a corridor MDP.

- Gymnasium ids (``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``, ``HalfCheetah-v5``, ...)
  go to ``gymnasium.make``.
- MinAtar (``MinAtar/Breakout-v1`` and the other four games, ``-v0`` or ``-v1``): gymnasium ≥ 1.0
  no longer loads MinAtar's plugin entry point, so the games are registered explicitly with
  ``minatar.gym.register_envs()`` before ``make``.
- ``Corridor``: a small MDP for tests.
- Continuous actions (MuJoCo) need ``discretize=True``: `BangBang` replaces the ``Box``
  action space by a ``Discrete`` one over the joint bang-bang actions.

Gymnasium and MinAtar are imported here, at call time, so that ``import bioplaus`` works without
the ``rl`` extra.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from bioplaus.errors import ConfigError
from bioplaus.registry import did_you_mean

CLASSIC = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
MINATAR = tuple(f"MinAtar/{game}-v1" for game in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"))


class Corridor:
    """A corridor of ``n`` cells with one-hot observations.

    The agent starts in cell 0; action 1 moves right, action 0 left (a wall at cell 0). Reaching
    cell ``n - 1`` gives +1 and terminates; every other step gives ``-0.01``. Episodes are
    truncated after ``max_steps`` steps (default ``4 n``).
    """

    def __init__(self, n: int = 6, max_steps: int | None = None) -> None:
        from gymnasium import spaces

        if n < 2:
            raise ConfigError(f"a corridor needs at least 2 cells, got n={n}")
        self.n, self.max_steps = n, max_steps or 4 * n
        self.observation_space = spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n, dtype=np.float32)
        obs[self.position] = 1.0
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self.position, self.steps = 0, 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = max(self.position + (1 if int(action) == 1 else -1), 0)
        self.steps += 1
        terminated = self.position == self.n - 1
        reward = 1.0 if terminated else -0.01
        return self._obs(), reward, terminated, self.steps >= self.max_steps and not terminated, {}

    def close(self) -> None:
        """Nothing to release."""


def bang_bang_actions(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """All ``2^d`` joint bang-bang actions, ``(2^d, d)``: each dimension at its low or high bound."""
    return np.array([np.where(bits, high, low) for bits in itertools.product((0, 1), repeat=low.shape[0])])


def make_bang_bang(env: Any) -> Any:
    """Wrap a ``Box``-action Gymnasium env into one with ``Discrete(2^d)`` bang-bang actions.

    Our re-implementation of the discretisation the official AD code imports but does not ship
    (``dmc2gym.make(..., discrete=True)``). The paper follows Seyde et
    al.'s bang-bang control; with AD's single discrete Q head the joint enumeration is the natural
    reading (HalfCheetah: ``2^6 = 64`` actions). Seyde et al.'s DecQN instead decomposes Q per
    dimension; we do not.

    Raises:
        ConfigError: for more than 10 action dimensions (over 1024 joint actions).
    """
    import gymnasium as gym

    low, high = env.action_space.low, env.action_space.high
    if low.shape[0] > 10:
        raise ConfigError(f"bang-bang enumerates 2^d joint actions; d={low.shape[0]} is too many (max 10)")
    table = bang_bang_actions(low, high).astype(env.action_space.dtype)

    class BangBang(gym.ActionWrapper):
        """Discrete action ``i`` → the ``i``-th joint bang-bang action."""

        def __init__(self, inner: gym.Env) -> None:
            super().__init__(inner)
            self.action_space = gym.spaces.Discrete(len(table))

        def action(self, action: int) -> np.ndarray:
            return table[int(action)]

    return BangBang(env)


def make_env(name: str, *, discretize: bool = False, **options: Any) -> Any:
    """Build the environment ``name`` (module docstring) with Gymnasium ``options``.

    Args:
        name: a Gymnasium id, a MinAtar id (``MinAtar/<Game>-v1``) or ``"Corridor"``.
        discretize: wrap a continuous-action env in [`make_bang_bang`][bioplaus.tasks.rl.envs.make_bang_bang].
        options: keyword arguments of the environment (``gymnasium.make`` kwargs, ``n`` for the corridor).

    Raises:
        ConfigError: for an unknown name or option, or a continuous action space without ``discretize``.
    """
    if name == "Corridor":
        return Corridor(**options)
    try:
        import gymnasium as gym
    except ImportError as err:  # pragma: no cover - the rl extra is missing
        raise ConfigError("RL environments need gymnasium: pip install 'bioplaus[rl]'") from err
    if name.startswith("MinAtar/"):
        import minatar.gym

        if name not in gym.registry:
            minatar.gym.register_envs()
    if name not in gym.registry:
        known = [*CLASSIC, *MINATAR, "Corridor"]
        raise ConfigError(
            f"unknown environment '{name}'{did_you_mean(name, [*known, *gym.registry])}; "
            f"e.g. {', '.join(known)} or any Gymnasium id (MuJoCo ones with discretize = true)"
        )
    try:
        env = gym.make(name, **options)
    except TypeError as err:
        raise ConfigError(f"environment '{name}' rejected its options {sorted(options)}: {err}") from err
    if isinstance(env.action_space, gym.spaces.Box):
        if not discretize:
            raise ConfigError(
                f"'{name}' has continuous actions; the DQN-style agents need discrete ones: "
                "set task option discretize = true (bang-bang actions)"
            )
        env = make_bang_bang(env)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(f"'{name}' has action space {env.action_space}; the DQN-style agents need Discrete")
    return env
