r"""The task ``td3``: TD3 (Fujimoto et al., ICML 2018) trains a spiking PopSAN actor against a deep twin critic.

The PopSAN/BDETT setup (the PopSAN repository's defaults):
actor lr 1e-4, critic lr 1e-3 (Adam), batch 100, γ = 0.99, Polyak 0.995, uniform random
actions for the first ``start_steps``, Gaussian exploration noise 0.1·a_max, target policy
smoothing noise 0.2·a_max clipped to 0.5·a_max, policy delay 2, one update per environment step
(done in bursts of ``update_every``). Per update, with twin critics $Q_{1,2}$, target
networks $\bar Q_{1,2}, \bar\mu$ and $\tilde a' = \operatorname{clip}(\bar\mu(s')
+ \operatorname{clip}(\epsilon, -c, c), -a_{\max}, a_{\max})$:

$$
\begin{aligned}
y &= r + \gamma (1 - d) \min_k \bar Q_k(s', \tilde a'), \qquad
L_Q = \textstyle\sum_k \operatorname{mean}(Q_k(s, a) - y)^2\\
L_\mu &= -\operatorname{mean} Q_1(s, \mu(s)) \quad\text{(every ``policy_delay`` updates)},
\qquad \bar\theta \leftarrow \rho \bar\theta + (1 - \rho)\theta
\end{aligned}
$$

``d`` is ``terminated`` only: a time-limit truncation bootstraps. Observations are normalised by
the actor's [`RunningNorm`][bioplaus.nets.popsan.RunningNorm], whose statistics are collected from the
observations of the first ``update_after`` (random-action) steps and then frozen (the official
code froze them too); the critic sees the same normalised observations.

**Who trains what.** The model of a run is the *actor* μ (model ``popsan``): the runner
([`bioplaus.runner.train_step`][bioplaus.runner.training.train_step]) zeroes its gradients, the rule (normally ``bp``)
writes them from the context ``ctx.loss = L_μ``, and the runner checks the loss and steps the actor's
optimizer. The critic, the target networks, the replay buffer, exploration and the environment
are the task's per-run state, on the environment's side of the seam: to the actor the critic is
a learned loss function, and the question BDETT asks is about the spiking actor. The critic is
a deep ANN (PopSAN's "deep critic") trained by its TD regression ``L_Q`` with its own Adam inside
[`TD3Task.batches`][bioplaus.tasks.rl.td3.TD3Task.batches]; letting the rule under study train it too would change two
networks at once, and a run trains one model.

**One update, in today's order.** [`TD3Task.batches`][bioplaus.tasks.rl.td3.TD3Task.batches] runs the environment; at
every update it samples a batch and steps the critic, and every ``policy_delay``-th update it *yields* that
batch: the runner takes the actor step on it, then the generator goes on with the Polyak update
of both targets (critic step, actor step, Polyak, all on one batch, as TD3 does). One runner
epoch is ``steps_per_epoch`` environment steps (the budget is epochs × ``steps_per_epoch``),
followed by a deterministic evaluation of ``eval_episodes`` episodes (reset seeds 10⁶, 10⁶ + 1,
…) by a fresh copy of the actor with its weights, so that evaluating leaves no trace in training
(carried threshold memory, a homeostatic ϑ).

**Random streams.** The run's generator (seeded with the run's seed) draws, in order within each
step, the random actions, the exploration noise, the replay indices and the target smoothing
noise; the training environment's first reset uses the generator's seed. The critic is built
from torch's global generator in [`TD3Task.prepare`][bioplaus.tasks.rl.td3.TD3Task.prepare], right after the actor, so
every rule of a seed meets the same critic. A non-finite critic or actor loss raises
`DivergedError` (the runner reports the run as diverged).

**Checkpoints.** [`TD3Task.state_dict`][bioplaus.tasks.rl.td3.TD3Task.state_dict] holds the critic, the targets and the
critic's optimizer (their state dicts), the replay buffer, the counters and the environment as its reset
seed and the actions sent to it: loading replays them, which rebuilds any deterministic
environment exactly (MuJoCo's state, warm starts included, does not survive a pickle). With the
runner's checkpoint of the actor, its optimizer and the generator, a resumed run equals an
uninterrupted one bit for bit. State outside a module's ``state_dict`` (a homeostatic ϑ,
threshold memory carried across calls) is not saved.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bioplaus.core import Capability, Context, TaskSpec, capabilities_of
from bioplaus.errors import ConfigError, DivergedError
from bioplaus.nets.popsan import PopSAN
from bioplaus.registry import did_you_mean
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics, Task
from bioplaus.tasks.rl.evaluation import EvalResult, evaluate
from bioplaus.tasks.rl.replay import ReplayBuffer, Transitions
from bioplaus.tasks.rl.schedules import check_budget

EVAL_SEED = 10**6
"""Evaluation episodes reset with seeds ``EVAL_SEED, EVAL_SEED + 1, …``."""

EnvOptions = dict[str, Any]
"""Keyword options of an environment (named alias: the config checker reads annotations by name)."""


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


def actor_action(actor: nn.Module, obs: np.ndarray) -> np.ndarray:
    """The deterministic action of ``actor`` for one observation (inference mode, batch of one)."""
    with torch.inference_mode():
        return actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].numpy()


def evaluate_actor(env: Any, actor: PopSAN, seeds: Sequence[int], max_steps: int | None = None) -> EvalResult:
    """Deterministic returns of ``actor`` on ``env`` from reset seeds ``seeds`` (actor reset per episode)."""
    return evaluate(env, lambda obs: actor_action(actor, obs), seeds, reset=actor.reset, max_steps=max_steps)


def make_continuous_env(name: str, **options: Any) -> Any:
    """A Gymnasium environment with a box of actions ``[−a_max, a_max]^d`` and vector observations.

    Raises:
        ConfigError: for an unknown id or option, a missing dependency (MuJoCo), or spaces TD3's
            actor cannot serve (discrete actions, asymmetric or unequal bounds, non-vector observations).
    """
    try:
        import gymnasium as gym
    except ImportError as err:  # pragma: no cover - the rl extra is missing
        raise ConfigError("RL environments need gymnasium: pip install 'bioplaus[rl]'") from err
    if name not in gym.registry:
        raise ConfigError(
            f"unknown environment '{name}'{did_you_mean(name, list(gym.registry))}; e.g. Pendulum-v1, "
            "MountainCarContinuous-v0, HalfCheetah-v5, Hopper-v5"
        )
    try:
        env = gym.make(name, **options)
    except TypeError as err:
        raise ConfigError(f"environment '{name}' rejected its options {sorted(options)}: {err}") from err
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(f"environment '{name}' needs a missing dependency: {err}") from err
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
        raise ConfigError(f"td3 needs a vector of continuous actions; '{name}' has action space {act}")
    if not (np.all(act.high == act.high[0]) and np.all(act.low == -act.high)):
        raise ConfigError(f"td3's actor acts in [−a_max, a_max] in every dimension; '{name}' has {act}")
    if len(obs.shape) != 1:
        raise ConfigError(f"td3's actor takes observation vectors; '{name}' has observation space {obs}")
    return env


_MODULES = ("critic", "actor_target", "critic_target", "critic_opt")
"""The per-run modules and optimizer that [`TD3Task.state_dict`][bioplaus.tasks.rl.td3.TD3Task.state_dict] saves by
their ``state_dict``."""


@dataclass
class _Run:
    """Per-run state of TD3 (one actor trained with one rule and seed): everything but the actor's weights.

    ``eval_template`` is a copy of the untrained actor that never runs: each evaluation copies it
    and loads the actor's weights. ``actions`` logs every action sent to the environment (rows
    ``0 … step − 1``; the capacity doubles when full): a checkpoint rebuilds the environment by
    replaying them from its seeded reset.
    """

    actor: nn.Module
    critic: TwinCritic
    actor_target: nn.Module
    critic_target: TwinCritic
    critic_opt: torch.optim.Optimizer
    eval_template: nn.Module
    env: Any = None
    env_seed: int = 0
    actions: np.ndarray | None = None
    buffer: ReplayBuffer | None = None
    obs: np.ndarray | None = None
    warmup_obs: list[np.ndarray] = field(default_factory=list)
    step: int = 0
    updates: int = 0
    episode_return: float = 0.0
    finished: list[float] = field(default_factory=list)
    critic_losses: list[float] = field(default_factory=list)


@register("td3")
class TD3Task(Task):
    """TD3 on a continuous-action Gymnasium environment; the runner trains the actor (module docstring).

    Args:
        env: Gymnasium id ([`make_continuous_env`][bioplaus.tasks.rl.td3.make_continuous_env]).
        env_options: keyword options of the environment.
        batch_size: transitions per update (set by the runner; PopSAN: 100).
        device: torch device (set by the runner); TD3 runs on the CPU.
        steps_per_epoch: environment steps per runner epoch (evaluation after each).
        start_steps: steps with uniform random actions before the actor acts.
        update_after: steps before the first update; the observation statistics come from them.
        update_every: environment steps between bursts of as many updates.
        buffer_size: replay capacity, allocated at the run's start and saved whole in checkpoints
            (any capacity of at least the budget draws the same samples).
        gamma: discount.
        polyak: target-network averaging factor ``ρ``.
        actor_lr: learning rate of the actor's Adam, the run's optimizer
            ([`optimizer`][bioplaus.tasks.rl.td3.TD3Task.optimizer]; the run's ``optimizer`` and ``lr`` settings do not
            apply to this task).
        critic_lr: learning rate of the critic's Adam.
        act_noise: exploration noise std, as a fraction of ``a_max``.
        target_noise: target smoothing noise std, fraction of ``a_max``.
        noise_clip: target noise clip, fraction of ``a_max``.
        policy_delay: critic updates per actor update.
        critic_hidden: hidden widths of each critic MLP.
        eval_episodes: deterministic evaluation episodes after each epoch (0: no evaluation).
        progress: a tqdm bar over each epoch's steps; ``None`` shows it only on a terminal.

    Raises:
        ConfigError: for a bad environment or option value.
    """

    name = "td3"
    requires = frozenset({Capability.POLICY})
    provides = frozenset({"loss"})

    def __init__(
        self,
        env: str = "HalfCheetah-v5",
        env_options: EnvOptions | None = None,
        batch_size: int = 100,
        device: str = "cpu",
        steps_per_epoch: int = 5_000,
        start_steps: int = 10_000,
        update_after: int = 1_000,
        update_every: int = 50,
        buffer_size: int = 1_000_000,
        gamma: float = 0.99,
        polyak: float = 0.995,
        actor_lr: float = 1e-4,
        critic_lr: float = 1e-3,
        act_noise: float = 0.1,
        target_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
        critic_hidden: Sequence[int] = (256, 256),
        eval_episodes: int = 5,
        progress: bool | None = None,
    ) -> None:
        counts = {
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "update_after": update_after,
            "update_every": update_every,
            "buffer_size": buffer_size,
            "policy_delay": policy_delay,
        }
        bad = {k: v for k, v in counts.items() if int(v) != v or v < 1}
        bad |= {k: v for k, v in (("start_steps", start_steps), ("eval_episodes", eval_episodes)) if v < 0}
        bad |= {f"critic_hidden[{i}]": w for i, w in enumerate(critic_hidden) if int(w) != w or w < 1}
        if bad:
            raise ConfigError(
                f"td3 task: step counts, sizes and widths must be positive integers (start_steps and "
                f"eval_episodes >= 0); got {bad}"
            )
        unit = {"gamma": gamma, "polyak": polyak}
        rates = {"actor_lr": actor_lr, "critic_lr": critic_lr}
        noises = {"act_noise": act_noise, "target_noise": target_noise, "noise_clip": noise_clip}
        wrong = (
            {k: v for k, v in unit.items() if not 0 <= v <= 1}
            | {k: v for k, v in rates.items() if not v > 0}
            | {k: v for k, v in noises.items() if not v >= 0}
        )
        if wrong:
            raise ConfigError(
                f"td3 task: gamma and polyak lie in [0, 1], learning rates are positive, noises >= 0; got {wrong}"
            )
        if torch.device(device).type != "cpu":
            raise ConfigError(f"td3 runs on the CPU (one environment, an action per step); got device={device!r}")
        self.env_name, self.env_options = env, dict(env_options or {})
        self.batch_size, self.device, self.steps_per_epoch = int(batch_size), device, int(steps_per_epoch)
        self.start_steps, self.update_after, self.update_every = int(start_steps), int(update_after), int(update_every)
        self.buffer_size, self.gamma, self.polyak = int(buffer_size), float(gamma), float(polyak)
        self.actor_lr, self.critic_lr = float(actor_lr), float(critic_lr)
        self.act_noise, self.target_noise, self.noise_clip = float(act_noise), float(target_noise), float(noise_clip)
        self.policy_delay, self.critic_hidden = int(policy_delay), tuple(int(w) for w in critic_hidden)
        self.eval_episodes, self.progress = int(eval_episodes), progress
        self._eval_env = make_continuous_env(env, **self.env_options)
        obs_space, act_space = self._eval_env.observation_space, self._eval_env.action_space
        self.act_limit = float(act_space.high[0])
        """``a_max``, the environment's action bound."""
        self.spec = TaskSpec((int(obs_space.shape[0]),), int(act_space.shape[0]))
        self._run: _Run | None = None

    def __repr__(self) -> str:
        return f"TD3Task(env={self.env_name!r})"

    def prepare(self, model: nn.Module) -> nn.Module:
        """Check the actor and build the run's critic, target networks and critic optimizer.

        The critic's initial weights come from torch's global generator right after the actor's,
        before the rule attaches, so they depend on the seed alone.

        Raises:
            ConfigError: when ``model`` has no observation normaliser ``norm`` and action bound
                ``act_limit`` (model ``popsan`` has both), or its bound is not the environment's.
        """
        if Capability.POLICY not in capabilities_of(model):
            raise ConfigError(
                f"task 'td3' trains a policy (capability 'policy': an observation normaliser `norm` and an "
                f"action bound `act_limit`), such as model 'popsan'; {type(model).__name__} is not one"
            )
        if not math.isclose(float(model.act_limit), self.act_limit):
            raise ConfigError(
                f"the actor's act_limit is {model.act_limit} but {self.env_name}'s actions lie in "
                f"[-{self.act_limit}, {self.act_limit}]: build it with model option act_limit = {self.act_limit}"
            )
        critic = TwinCritic(self.spec.in_features, self.spec.n_out, self.critic_hidden)
        actor_target, critic_target = copy.deepcopy(model), copy.deepcopy(critic)
        for p in (*actor_target.parameters(), *critic_target.parameters()):
            p.requires_grad_(False)
        # foreach: one multi-tensor kernel per Adam step instead of a Python loop over parameters
        critic_opt = torch.optim.Adam(critic.parameters(), lr=self.critic_lr, foreach=True)
        self._run = _Run(model, critic, actor_target, critic_target, critic_opt, copy.deepcopy(actor_target))
        return model

    def optimizer(self, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The actor's optimizer: Adam at ``actor_lr``, multi-tensor (``foreach``) as TD3 always stepped it.

        The runner's configured optimizer is fused Adam, which rounds differently in the last bit;
        this keeps recorded runs reproducible bit for bit. The run's ``optimizer`` and ``lr`` do not
        apply to this task.
        """
        return torch.optim.Adam(param_groups, lr=self.actor_lr, foreach=True)

    def _run_of(self, model: nn.Module) -> _Run:
        if self._run is None or self._run.actor is not model:
            self.prepare(model)
        return self._run

    def _start(self, run: _Run, generator: torch.Generator) -> None:
        run.env_seed = generator.initial_seed()
        run.actions = np.empty((1024, self.spec.n_out), dtype=np.float32)
        run.env, run.obs = self._replay(run.env_seed, run.actions[:0])
        run.buffer = ReplayBuffer(self.buffer_size, self.spec.input_shape, (self.spec.n_out,), torch.float32)
        run.warmup_obs = [run.obs]

    def _replay(self, seed: int, actions: np.ndarray) -> tuple[Any, np.ndarray]:
        """A training environment reset with ``seed`` and stepped through ``actions``, and its observation."""
        env = make_continuous_env(self.env_name, **self.env_options)
        obs, _ = env.reset(seed=seed)
        for action in actions:
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
        return env, obs

    def _act(self, run: _Run, generator: torch.Generator) -> np.ndarray:
        """Uniform random actions for the first ``start_steps`` steps, then ``clip(μ(s) + N(0, (σ a_max)²))``."""
        lim = self.act_limit
        if run.step < self.start_steps:
            return ((torch.rand(self.spec.n_out, generator=generator) * 2 - 1) * lim).numpy()
        action = actor_action(run.actor, run.obs)
        if self.act_noise > 0:
            action = action + self.act_noise * lim * torch.randn(action.shape, generator=generator).numpy()
        return np.clip(action, -lim, lim)

    def _env_step(self, run: _Run, generator: torch.Generator) -> None:
        """One environment step; at step ``update_after`` the warm-up observations set the actor's statistics."""
        action = self._act(run, generator)
        if run.step == len(run.actions):
            run.actions = np.concatenate([run.actions, np.empty_like(run.actions)])
        run.actions[run.step] = action
        next_obs, reward, terminated, truncated, _ = run.env.step(action)
        run.buffer.add(run.obs, action, reward, next_obs, terminated, truncated)
        run.episode_return += float(reward)
        run.step += 1
        run.obs = next_obs
        if run.step < self.update_after:
            run.warmup_obs.append(run.obs)
        elif run.step == self.update_after:
            run.actor.norm.update(torch.as_tensor(np.asarray(run.warmup_obs), dtype=torch.float32))
            run.warmup_obs = []
        if terminated or truncated:
            run.finished.append(run.episode_return)
            run.obs, _ = run.env.reset()
            run.episode_return = 0.0

    def _critic_update(self, run: _Run, batch: Transitions, generator: torch.Generator) -> None:
        """One Adam step of the twin critic on ``L_Q`` (module docstring).

        Raises:
            DivergedError: when ``L_Q`` is not finite (checked before the step).
        """
        lim, norm = self.act_limit, run.actor.norm
        obs, next_obs = norm(batch.obs), norm(batch.next_obs)
        with torch.no_grad():
            eps = (self.target_noise * lim * torch.randn(batch.action.shape, generator=generator)).clamp(
                -self.noise_clip * lim, self.noise_clip * lim
            )
            next_act = (run.actor_target(batch.next_obs) + eps).clamp(-lim, lim)
            q_next = torch.minimum(*run.critic_target(next_obs, next_act))
            y = batch.reward + self.gamma * (1 - batch.terminated) * q_next
        q1, q2 = run.critic(obs, batch.action)
        critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        run.updates += 1
        value = critic_loss.item()
        if not math.isfinite(value):
            raise DivergedError(f"TD3 critic loss became {value} at update {run.updates}")
        run.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        run.critic_opt.step()
        run.critic_losses.append(value)

    @torch.no_grad()
    def _polyak(self, run: _Run) -> None:
        """``θ̄ ← ρ θ̄ + (1 − ρ) θ`` for the actor's and the critic's targets; buffers (the normaliser) are copied."""
        rho = self.polyak
        for net, target in ((run.actor, run.actor_target), (run.critic, run.critic_target)):
            for p, p_t in zip(net.parameters(), target.parameters(), strict=True):
                p_t.mul_(rho).add_(p, alpha=1 - rho)
            for b, b_t in zip(net.buffers(), target.buffers(), strict=True):
                b_t.copy_(b)

    def check_budget(self, epochs: int) -> None:
        """Raise ``ConfigError`` when the run ends before its first update (``update_after``, ``update_every``)."""
        check_budget(
            self.name,
            epochs,
            self.steps_per_epoch,
            ("update_after", self.update_after),
            ("update_every", self.update_every),
        )

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[Transitions]:
        """Run ``steps_per_epoch`` environment steps and critic updates; yield a batch when an actor update is due.

        The runner takes the actor step on the yielded batch before the loop goes on with the
        Polyak update. The first call for a model starts its run: a fresh environment reset with
        the generator's seed, an empty buffer (the critic and the targets come from
        [`prepare`][bioplaus.tasks.rl.td3.TD3Task.prepare]).

        Raises:
            DivergedError: when the critic loss becomes non-finite.
        """
        run = self._run_of(model)
        if run.actions is None:
            self._start(run, generator)
        run.finished.clear()
        run.critic_losses.clear()
        disable = None if self.progress is None else not self.progress  # None: only on a terminal
        for _ in tqdm(range(self.steps_per_epoch), disable=disable, leave=False, unit="step", desc=self.env_name):
            self._env_step(run, generator)
            if run.step >= self.update_after and run.step % self.update_every == 0:
                for _ in range(self.update_every):
                    batch = run.buffer.sample(self.batch_size, generator)
                    self._critic_update(run, batch, generator)
                    if run.updates % self.policy_delay == 0:
                        yield batch  # the runner's actor step on this batch
                        self._polyak(run)

    def context(self, model: nn.Module, batch: Transitions) -> Context:
        """The actor loss ``ctx.loss = L_μ = −mean Q_1(s, μ(s))``; the graph runs through the actor only."""
        if self._run is None or self._run.actor is not model:
            raise ConfigError("the td3 task builds contexts for the actor it is training: iterate batches() first")
        critic = self._run.critic
        critic.requires_grad_(False)
        try:
            loss = -critic.q1(torch.cat([model.norm(batch.obs), model(batch.obs)], -1)).mean()
        finally:
            critic.requires_grad_(True)
        return Context(loss=loss)

    def batch_metrics(self, batch: Transitions, outcome: Context) -> Metrics:
        """The actor loss of the update."""
        return {"actor_loss": float(outcome.loss.detach())}, 1.0

    def epoch_metrics(self) -> dict[str, float]:
        """Environment steps, the mean return of the epoch's finished training episodes and the mean critic loss."""
        run = self._run
        metrics = {
            "env_steps": float(run.step),
            "episode_return": float(np.mean(run.finished)) if run.finished else float("nan"),
        }
        if run.critic_losses:
            metrics["critic_loss"] = float(np.mean(run.critic_losses))
        return metrics

    def headline_metrics(self) -> tuple[str, ...]:
        """The evaluation return."""
        return ("eval/return",)

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Mean and sd of the deterministic return over ``eval_episodes`` episodes.

        They are run by a fresh copy of the actor with its weights, so evaluating leaves no trace in
        training (carried threshold memory, a homeostatic ϑ start from zero, as in a saved actor).
        """
        if self.eval_episodes == 0:
            return {}
        if self._run is None or self._run.actor is not model:
            with torch.random.fork_rng():  # a model evaluated before training: no critic draws
                self.prepare(model)
        actor = copy.deepcopy(self._run.eval_template)
        actor.load_state_dict(model.state_dict())
        seeds = range(EVAL_SEED, EVAL_SEED + self.eval_episodes)
        result = evaluate_actor(self._eval_env, actor, seeds)
        return {"eval": {"return": result.mean, "return_std": result.std}}

    def state_dict(self) -> dict[str, Any]:
        """The run's state for a checkpoint: critic, targets and critic optimizer (their state dicts), replay
        buffer, exploration state, counters, and the environment as its seed and the actions sent to it."""
        if self._run is None:
            return {}
        run = self._run
        actions = None if run.actions is None else run.actions[: run.step].copy()  # None: not started
        saved = dataclasses.replace(
            run, actor=None, env=None, eval_template=None, actions=actions, **dict.fromkeys(_MODULES)
        )
        return {"run": saved, **{name: getattr(run, name).state_dict() for name in _MODULES}}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        """Go on with the run saved by [`state_dict`][bioplaus.tasks.rl.td3.TD3Task.state_dict], now training ``model``.

        The environment is rebuilt by replaying the saved actions from its seeded reset.

        Raises:
            ConfigError: when the replayed environment does not reach the saved observation
                (an environment that is not deterministic given its seed and actions).
        """
        saved = state.get("run")
        if saved is None:
            self._run = None
            return
        if self._run is None or self._run.actor is not model:
            with torch.random.fork_rng():  # modules to load into; their initial weights are not used
                self.prepare(model)
        modules = {name: getattr(self._run, name) for name in _MODULES}
        for name, module in modules.items():
            module.load_state_dict(state[name])
        self._run = dataclasses.replace(saved, actor=model, eval_template=self._run.eval_template, **modules)
        if saved.actions is not None:
            env, obs = self._replay(saved.env_seed, saved.actions)
            if not np.array_equal(obs, saved.obs):
                raise ConfigError(f"{self.env_name} did not replay to its saved state: it is not deterministic")
            actions = np.empty((max(1024, 2 * len(saved.actions)), self.spec.n_out), dtype=np.float32)
            actions[: len(saved.actions)] = saved.actions
            self._run.env, self._run.actions = env, actions
