r"""TD3 (Fujimoto et al., ICML 2018) with a spiking PopSAN actor and a deep (MLP) twin critic.

The PopSAN/BDETT setup (``shared/research/bdett.md`` §2.2, the PopSAN repository's defaults):
actor lr 1e-4, critic lr 1e-3 (Adam), batch 100, γ = 0.99, Polyak 0.995, uniform random
actions for the first ``start_steps``, Gaussian exploration noise 0.1·a_max, target policy
smoothing noise 0.2·a_max clipped to 0.5·a_max, policy delay 2, one update per environment step
(done in bursts of ``update_every``). Per update, with twin critics :math:`Q_{1,2}`, target
networks :math:`\bar Q_{1,2}, \bar\mu` and :math:`\tilde a' = \operatorname{clip}(\bar\mu(s')
+ \operatorname{clip}(\epsilon, -c, c), -a_{\max}, a_{\max})`:

.. math::

    y &= r + \gamma (1 - d) \min_k \bar Q_k(s', \tilde a'), \qquad
    L_Q = \textstyle\sum_k \operatorname{mean}(Q_k(s, a) - y)^2\\
    L_\mu &= -\operatorname{mean} Q_1(s, \mu(s)) \quad\text{(every ``policy_delay`` updates)},
    \qquad \bar\theta \leftarrow \rho \bar\theta + (1 - \rho)\theta

``d`` is ``terminated`` only: a time-limit truncation bootstraps. Observations are normalised by
the actor's :class:`~bioplaus.nets.popsan.RunningNorm`, whose statistics are collected from the
observations of the first ``update_after`` (random-action) steps and then frozen (the official
code froze them too); the critic sees the same normalised observations. Replay and evaluation
are the RL package's shared :class:`~bioplaus.tasks.rl.replay.ReplayBuffer` and
:func:`~bioplaus.tasks.rl.evaluation.evaluate`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bioplaus.errors import ConfigError, DivergedError
from bioplaus.nets.popsan import PopSAN
from bioplaus.tasks.rl.evaluation import EvalResult, evaluate
from bioplaus.tasks.rl.replay import ReplayBuffer, Transitions


@dataclass
class TD3Config:
    """TD3 hyperparameters (defaults: the PopSAN repository's, ``bdett.md`` §2.2).

    Attributes:
        total_steps: environment steps of training.
        start_steps: steps with uniform random actions before the actor acts.
        update_after: steps before the first update; the observation statistics come from them.
        update_every: environment steps between bursts of as many updates.
        batch_size: transitions per update.
        buffer_size: replay capacity.
        gamma: discount.
        polyak: target-network averaging factor ``ρ``.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        act_noise: exploration noise std, as a fraction of ``a_max``.
        target_noise: target smoothing noise std, fraction of ``a_max``.
        noise_clip: target noise clip, fraction of ``a_max``.
        policy_delay: critic updates per actor update.
        critic_hidden: hidden widths of each critic MLP.
        eval_every: environment steps between evaluations (0: only at the end).
        eval_episodes: episodes per evaluation (reset seeds 10⁶, 10⁶+1, ...).
    """

    total_steps: int = 100_000
    start_steps: int = 10_000
    update_after: int = 1_000
    update_every: int = 50
    batch_size: int = 100
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    polyak: float = 0.995
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    act_noise: float = 0.1
    target_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    critic_hidden: Sequence[int] = field(default=(256, 256))
    eval_every: int = 0
    eval_episodes: int = 5

    def __post_init__(self) -> None:
        positive = (
            "total_steps",
            "update_after",
            "update_every",
            "batch_size",
            "buffer_size",
            "policy_delay",
            "eval_episodes",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"TD3 {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.polyak <= 1 or not 0 <= self.gamma <= 1:
            raise ConfigError(f"TD3 gamma and polyak must lie in [0, 1], got {self.gamma}, {self.polyak}")


class TwinCritic(nn.Module):
    """Two MLP critics ``Q_k(s, a)`` (ReLU hidden layers), the PopSAN "deep critic"."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q1, self.q2 = (self._mlp(obs_dim + act_dim, hidden) for _ in range(2))

    @staticmethod
    def _mlp(n_in: int, hidden: Sequence[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(n_in, width), nn.ReLU()]
            n_in = width
        return nn.Sequential(*layers, nn.Linear(n_in, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class TD3:
    """A TD3 learner around an actor (any module ``obs → action`` with a ``norm`` :class:`RunningNorm`).

    Args:
        actor: the policy network (e.g. :class:`~bioplaus.nets.popsan.PopSAN`).
        obs_dim: observation dimensions.
        act_dim: action dimensions.
        act_limit: ``a_max``.
        config: hyperparameters.
    """

    def __init__(self, actor: PopSAN, obs_dim: int, act_dim: int, act_limit: float, config: TD3Config) -> None:
        self.actor, self.config, self.act_limit = actor, config, float(act_limit)
        self.critic = TwinCritic(obs_dim, act_dim, config.critic_hidden)
        self.actor_target, self.critic_target = copy.deepcopy(actor), copy.deepcopy(self.critic)
        for p in (*self.actor_target.parameters(), *self.critic_target.parameters()):
            p.requires_grad_(False)
        # foreach: one multi-tensor kernel per Adam step instead of a Python loop over parameters
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=config.actor_lr, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, foreach=True)
        self.updates = 0

    def act(self, obs: np.ndarray, noise: float = 0.0, generator: torch.Generator | None = None) -> np.ndarray:
        """The actor's action for one observation, plus Gaussian noise ``noise · a_max``, clipped."""
        a = actor_action(self.actor, obs)
        if noise > 0:
            a = a + noise * self.act_limit * torch.randn(a.shape, generator=generator).numpy()
        return np.clip(a, -self.act_limit, self.act_limit)

    def update(self, batch: Transitions, generator: torch.Generator | None = None) -> dict[str, float]:
        """One TD3 update (critic every call, actor and targets every ``policy_delay`` calls)."""
        cfg, lim = self.config, self.act_limit
        norm = self.actor.norm
        obs, next_obs = norm(batch.obs), norm(batch.next_obs)
        with torch.no_grad():
            eps = (cfg.target_noise * lim * torch.randn(batch.action.shape, generator=generator)).clamp(
                -cfg.noise_clip * lim, cfg.noise_clip * lim
            )
            next_act = (self.actor_target(batch.next_obs) + eps).clamp(-lim, lim)
            q_next = torch.minimum(*self.critic_target(next_obs, next_act))
            y = batch.reward + cfg.gamma * (1 - batch.terminated) * q_next
        q1, q2 = self.critic(obs, batch.action)
        critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        out = {"critic_loss": critic_loss.item()}
        if self.updates % cfg.policy_delay == 0:
            for p in self.critic.parameters():
                p.requires_grad_(False)
            actor_loss = -self.critic.q1(torch.cat([obs, self.actor(batch.obs)], -1)).mean()
            for p in self.critic.parameters():
                p.requires_grad_(True)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self._polyak()
            out["actor_loss"] = actor_loss.item()
        if not np.isfinite(out["critic_loss"]):
            raise DivergedError(f"TD3 critic loss became {out['critic_loss']} at update {self.updates}")
        return out

    @torch.no_grad()
    def _polyak(self) -> None:
        rho = self.config.polyak
        for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for p, p_t in zip(net.parameters(), target.parameters(), strict=True):
                p_t.mul_(rho).add_(p, alpha=1 - rho)
            for b, b_t in zip(net.buffers(), target.buffers(), strict=True):
                b_t.copy_(b)


Log = Callable[[dict[str, float]], None]


def actor_action(actor: nn.Module, obs: np.ndarray) -> np.ndarray:
    """The deterministic action of ``actor`` for one observation (inference mode, batch of one)."""
    with torch.inference_mode():
        return actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].numpy()


def evaluate_actor(env: Any, actor: PopSAN, seeds: Sequence[int], max_steps: int | None = None) -> EvalResult:
    """Deterministic returns of ``actor`` on ``env`` from reset seeds ``seeds`` (actor reset per episode)."""
    return evaluate(env, lambda obs: actor_action(actor, obs), seeds, reset=actor.reset, max_steps=max_steps)


def train_td3(
    env: Any,
    actor: PopSAN,
    config: TD3Config,
    *,
    seed: int = 0,
    eval_env: Any = None,
    log: Log | None = None,
) -> TD3:
    """Train ``actor`` by TD3 on a Gymnasium ``env`` with a continuous action space.

    Args:
        env: the training environment.
        actor: the policy (its ``norm`` statistics are set from the first ``update_after`` steps).
        config: hyperparameters.
        seed: seeds the environment resets, exploration and replay sampling.
        eval_env: environment for periodic evaluation (every ``config.eval_every`` steps and at
            the end); ``None``: no evaluation.
        log: called with a record per finished training episode and per evaluation.

    Returns:
        The trained learner (actor, critic and targets).
    """
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    act_limit = float(env.action_space.high[0])
    agent = TD3(actor, obs_dim, act_dim, act_limit, config)
    buffer = ReplayBuffer(min(config.buffer_size, config.total_steps), (obs_dim,), (act_dim,), torch.float32)
    g = torch.Generator().manual_seed(seed)
    emit = log or (lambda record: None)
    obs, _ = env.reset(seed=seed)
    ep_return, ep_len, episode, start = 0.0, 0, 0, time.perf_counter()
    warmup_obs = [obs]
    for step in range(1, config.total_steps + 1):
        if step <= config.start_steps:
            action = ((torch.rand(act_dim, generator=g) * 2 - 1) * act_limit).numpy()
        else:
            action = agent.act(obs, config.act_noise, g)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        obs = next_obs
        if step < config.update_after:
            warmup_obs.append(obs)
        elif step == config.update_after:
            actor.norm.update(torch.as_tensor(np.asarray(warmup_obs), dtype=torch.float32))
        if terminated or truncated:
            emit({"step": step, "episode": episode, "return": ep_return, "length": ep_len})
            obs, _ = env.reset()
            ep_return, ep_len, episode = 0.0, 0, episode + 1
        if step >= config.update_after and step % config.update_every == 0:
            for _ in range(config.update_every):
                agent.update(buffer.sample(config.batch_size, g), g)
        if eval_env is not None and (
            step == config.total_steps or (config.eval_every and step % config.eval_every == 0)
        ):
            seeds = range(10**6, 10**6 + config.eval_episodes)
            result = evaluate_actor(eval_env, actor, seeds)
            emit({"step": step, "eval_return": result.mean, "eval_std": result.std,
                  "seconds": time.perf_counter() - start})  # fmt: skip
    return agent
