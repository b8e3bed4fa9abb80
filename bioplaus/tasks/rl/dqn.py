r"""The DQN-style RL task: ε-greedy acting, replay, per-layer double-DQN targets, evaluation.

One loop serves three agents and never branches on the rule:

- **AD** (model ``ad``, rule ``distributed_td``): the rule detaches every cell's input;
- **AD's BP twin** (model ``ad``, rule ``bp``): the same network, errors backpropagated through
  the cells below;
- **MLP-DQN** (model ``mlp``, rule ``bp``, CleanRL-style): a plain Q-network, seen here as a
  one-layer stack.

A model is a *layered Q-function*: either an [`ADNet`][bioplaus.nets.ad.ADNet]-like module
(``forward(obs, context) -> (q (L,B,A), hidden)``, with ``initial_context``) or any module
``obs -> (B, A)``. For every layer ``l`` the task builds the double-DQN target from the layer's
own online and target heads,

$$
y_l = r + \gamma (1 - \text{term})\, Q_l\big(s', \arg\max_a Q_l(s', a; \theta); \theta^-\big),
\qquad L_l = \operatorname{mean}_B (Q_l(s, a) - y_l)^2 ,
$$

(MSE without ½, no Huber; ``reward_scale`` multiplies ``r``) and hands ``ctx.loss = Σ_l L_l``
and ``ctx.signals["layer_losses"]`` to the rule.

**Temporal context**. For a sampled transition ``t`` the context is recomputed at every
update with the current parameters, without gradient: the network runs from a
zero context over ``s_{t-K}, …, s_{t-1}`` (online params for the online chain, target params for
the target chain). Steps before the episode start leave the context at zero, as at an acting
reset, and episodes are cut at ``terminated`` *or* ``truncated`` ([`replay`][bioplaus.tasks.rl.replay]; the official
code repeats the first observation and cuts only at ``terminated``, P6). The context of ``s'`` is the
activations at ``s_t``. The acting context starts at zero at every reset and is advanced at
*every* step, random ones included (the official code freezes it on ε-steps, P7).

**Schedule** (CleanRL / official AD): act ε-greedily on the mean of the layers' Q, store, and
from ``learning_starts`` on update every ``train_every`` steps; hard target copy every
``target_every`` steps; ε as in [`schedules`][bioplaus.tasks.rl.schedules]. One runner epoch is ``steps_per_epoch``
environment steps, after which [`DQNTask.evaluate`][bioplaus.tasks.rl.dqn.DQNTask.evaluate] runs ``eval_episodes``
episodes with ε = 0.05 for the full net and, per layer ``i``, for the mean of layers ``0..i`` (the paper's
per-layer policy). A non-finite loss raises `DivergedError` (the run is
reported as diverged). The official "parallel universe" env copies (P10) are not run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bioplaus.core import Capability, Context, TaskSpec
from bioplaus.core.capabilities import declared
from bioplaus.errors import ConfigError
from bioplaus.tasks._registry import register
from bioplaus.tasks.base import Metrics, Task
from bioplaus.tasks.rl.envs import make_env
from bioplaus.tasks.rl.evaluation import evaluate
from bioplaus.tasks.rl.replay import ReplayBuffer, SequenceBatch
from bioplaus.tasks.rl.schedules import check_budget, epsilon, target_sync_due

EVAL_SEED = 10_000
"""Evaluation episodes reset with seeds ``EVAL_SEED, EVAL_SEED + 1, …`` for every agent."""

Contexts = list[torch.Tensor]
EnvOptions = dict[str, Any]
"""Keyword options of an environment (named alias: the config checker reads annotations by name)."""


@functools.cache
def _layerwise(kind: type) -> bool:
    return Capability.LAYERWISE_Q in (declared(kind) or ())


def layer_q(model: nn.Module, obs: torch.Tensor, context: Contexts | None) -> tuple[torch.Tensor, Contexts]:
    """Per-layer Q-values ``(L, B, A)`` and the next context of a layer-wise (``layerwise_q``) or plain Q-network."""
    if _layerwise(type(model)):
        q, hidden = model(obs, context)
        return q, hidden
    return model(obs).unsqueeze(0), []


def context_size(model: nn.Module, context: int) -> int:
    """Steps of context replayed per update: ``context`` for models with temporal connections, else 0."""
    return context if getattr(model, "uses_context", False) else 0


@torch.no_grad()
def replay_context(model: nn.Module, obs_seq: torch.Tensor, valid: torch.Tensor) -> Contexts | None:
    """The context after running ``model`` without gradient over ``obs_seq`` ``(K, B, …)`` from zeros.

    Where ``valid[k]`` is False (before the episode start) the context stays zero. ``None`` for
    models without connections through time, or when ``K = 0``.
    """
    if obs_seq.shape[0] == 0 or not getattr(model, "uses_context", False):
        return None
    ctx = model.initial_context(obs_seq.shape[1])
    for obs, ok in zip(obs_seq, valid, strict=True):
        _, hidden = layer_q(model, obs, ctx)
        keep = ok.unsqueeze(1).to(hidden[0].dtype)
        ctx = [h * keep for h in hidden]
    return ctx


@torch.no_grad()
def td_targets(
    model: nn.Module,
    target: nn.Module,
    batch: SequenceBatch,
    gamma: float,
    reward_scale: float = 1.0,
    next_context: Contexts | None = None,
) -> torch.Tensor:
    """Per-layer double-DQN targets ``y`` ``(L, B)``, without gradient.

    The online chain (its context of ``s'``, the argmax at ``s'``) uses ``model``; the bootstrap
    value uses ``target`` for every layer and for its own context replay (P3, P4). The context of
    ``s'`` is the activations after ``s_{t-K}, …, s_t``; ``next_context`` passes the online one
    when the caller has it already (the activations of its forward pass at ``s_t``).
    """
    tr = batch.transitions
    if next_context is None:
        next_context = replay_context(model, batch.obs_seq, batch.valid)
    q_next_online, _ = layer_q(model, tr.next_obs, next_context)
    q_next_target, _ = layer_q(target, tr.next_obs, replay_context(target, batch.obs_seq, batch.valid))
    best = q_next_online.argmax(-1, keepdim=True)
    bootstrap = q_next_target.gather(-1, best).squeeze(-1)
    return reward_scale * tr.reward + gamma * (1.0 - tr.terminated) * bootstrap


def td_losses(
    model: nn.Module, target: nn.Module, batch: SequenceBatch, gamma: float, reward_scale: float = 1.0
) -> torch.Tensor:
    """Per-layer losses ``L_l = mean_B (Q_l(s, a) − y_l)²``, ``(L,)``; the graph runs only through ``Q_l(s, a)``.

    The context of ``s_t`` is replayed without gradient (P2); the activations of the forward pass
    at ``s_t``, detached, are the online context of ``s'``.
    """
    tr = batch.transitions
    q, hidden = layer_q(model, tr.obs, replay_context(model, batch.obs_seq[:-1], batch.valid[:-1]))
    next_context = [h.detach() for h in hidden] if getattr(model, "uses_context", False) else None
    y = td_targets(model, target, batch, gamma, reward_scale, next_context)
    action = tr.action.view(1, -1, 1).expand(q.shape[0], -1, 1)
    return ((q.gather(-1, action).squeeze(-1) - y) ** 2).mean(1)


def greedy_action(model: nn.Module, obs: np.ndarray, context: Contexts | None, layers: int | None = None):
    """Greedy action on the mean Q of layers ``0..layers-1`` (all by default) and the next context."""
    with torch.inference_mode():
        q, hidden = layer_q(model, torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), context)
        return int(q[:layers].mean(0).argmax(-1)), (hidden or None)


@dataclass
class _Run:
    """Per-run state of the loop (one model trained with one rule and seed)."""

    model: nn.Module
    target: nn.Module
    env: Any
    buffer: ReplayBuffer
    rng: np.random.Generator
    obs: np.ndarray
    context: Contexts | None = None
    step: int = 0
    episode_return: float = 0.0
    finished: list[float] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)


@register("rl")
class DQNTask(Task):
    """DQN-style RL on a Gymnasium / MinAtar environment: AD, its BP twin, MLP-DQN (module docstring).

    Args:
        env: environment name ([`make_env`][bioplaus.tasks.rl.envs.make_env]).
        env_options: keyword options of the environment.
        discretize: bang-bang actions for continuous-action environments (MuJoCo).
        batch_size: transitions per update (set by the runner).
        device: torch device (set by the runner).
        steps_per_epoch: environment steps per runner epoch (evaluation after each).
        buffer_size: replay capacity (official: larger than the run, nothing overwritten).
        learning_starts: steps of random acting before the first update.
        train_every: environment steps per update.
        target_every: environment steps between hard target copies.
        gamma: discount.
        eps_start: initial ε.
        eps_end: final ε.
        eps_steps: steps over which ε decays, counted from ``learning_starts``.
        context: steps of temporal context replayed per update (``K``; official 10).
        reward_scale: factor on rewards in the TD targets (returns are reported unscaled).
        eval_episodes: evaluation episodes after each epoch (0: no evaluation).
        eval_epsilon: ε of the evaluation policy.
        eval_layers: also evaluate each layer's policy (mean of layers ``0..i``).
        progress: a tqdm bar over each epoch's steps; ``None`` shows it only on a terminal.

    Raises:
        ConfigError: for a bad environment name or option, or non-positive step counts.
    """

    name = "rl"
    requires_one_of = (frozenset({Capability.FEEDFORWARD}), frozenset({Capability.LAYERWISE_Q}))
    provides = frozenset({"loss", "layer_losses"})

    def __init__(
        self,
        env: str = "CartPole-v1",
        env_options: EnvOptions | None = None,
        discretize: bool = False,
        batch_size: int = 128,
        device: str = "cpu",
        steps_per_epoch: int = 10_000,
        buffer_size: int = 500_000,
        learning_starts: int = 10_000,
        train_every: int = 4,
        target_every: int = 1_000,
        gamma: float = 0.99,
        eps_start: float = 1.0,
        eps_end: float = 0.01,
        eps_steps: int = 75_000,
        context: int = 2,
        reward_scale: float = 1.0,
        eval_episodes: int = 10,
        eval_epsilon: float = 0.05,
        eval_layers: bool = True,
        progress: bool | None = None,
    ) -> None:
        counts = {
            "steps_per_epoch": steps_per_epoch,
            "buffer_size": buffer_size,
            "train_every": train_every,
            "target_every": target_every,
            "eps_steps": eps_steps,
            "batch_size": batch_size,
        }
        bad = {k: v for k, v in counts.items() if int(v) != v or v < 1}
        if bad or learning_starts < 0 or context < 0 or eval_episodes < 0:
            raise ConfigError(
                f"rl task: step counts must be positive integers (learning_starts, context, eval_episodes >= 0); got "
                f"{bad or {'learning_starts': learning_starts, 'context': context, 'eval_episodes': eval_episodes}}"
            )
        self.env_name, self.env_options, self.discretize = env, dict(env_options or {}), discretize
        self.batch_size, self.device = batch_size, device
        self.steps_per_epoch, self.buffer_size = steps_per_epoch, buffer_size
        self.learning_starts, self.train_every, self.target_every = learning_starts, train_every, target_every
        self.gamma, self.reward_scale, self.context_steps = gamma, reward_scale, context
        self.eps = (eps_start, eps_end, eps_steps)
        self.eval_episodes, self.eval_epsilon, self.eval_layers = eval_episodes, eval_epsilon, eval_layers
        self.progress = progress
        self._eval_env = self._make_env()
        space = self._eval_env.observation_space
        self._obs_dtype = torch.bool if space.dtype == np.bool_ else torch.float32
        self.spec = TaskSpec(tuple(space.shape), int(self._eval_env.action_space.n))
        self._run: _Run | None = None

    def __repr__(self) -> str:
        return f"DQNTask(env={self.env_name!r})"

    def _make_env(self) -> Any:
        return make_env(self.env_name, discretize=self.discretize, **self.env_options)

    def _start(self, model: nn.Module, generator: torch.Generator) -> _Run:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        env = self._make_env()
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        buffer = ReplayBuffer(self.buffer_size, self.spec.input_shape, obs_dtype=self._obs_dtype)
        target = copy.deepcopy(model).requires_grad_(False)
        return _Run(model, target, env, buffer, np.random.default_rng(seed), obs)

    def _act(self, run: _Run) -> int:
        """ε-greedy action; the acting context advances on every step (P7)."""
        greedy, run.context = greedy_action(run.model, run.obs, run.context)
        eps = epsilon(run.step, *self.eps, learning_starts=self.learning_starts)
        return int(run.env.action_space.sample()) if run.rng.random() < eps else greedy

    def _env_step(self, run: _Run) -> None:
        action = self._act(run)
        next_obs, reward, terminated, truncated, _ = run.env.step(action)
        run.buffer.add(run.obs, action, reward, next_obs, terminated, truncated)
        run.episode_return += float(reward)
        run.step += 1
        run.obs = next_obs
        if terminated or truncated:
            run.finished.append(run.episode_return)
            run.episode_return, run.context = 0.0, None
            run.obs, _ = run.env.reset()

    def check_budget(self, epochs: int) -> None:
        """Raise ``ConfigError`` when the run ends before its first update (``learning_starts``, ``train_every``)."""
        check_budget(
            self.name,
            epochs,
            self.steps_per_epoch,
            ("learning_starts", self.learning_starts),
            ("train_every", self.train_every),
        )

    def batches(self, model: nn.Module, generator: torch.Generator) -> Iterator[SequenceBatch]:
        """Run ``steps_per_epoch`` environment steps, yielding a replay batch whenever an update is due.

        The runner updates the model on each batch before the loop goes on (target copies follow
        the update of their step, as in CleanRL). The first call for a model starts its run: a
        fresh environment seeded from ``generator``, an empty buffer, a target copy.
        """
        if self._run is None or self._run.model is not model:
            self._run = self._start(model, generator)
        run = self._run
        run.finished.clear()
        run.losses.clear()
        k = context_size(model, self.context_steps)
        disable = None if self.progress is None else not self.progress  # None: only on a terminal
        for _ in tqdm(range(self.steps_per_epoch), disable=disable, leave=False, unit="step", desc=self.env_name):
            self._env_step(run)
            if run.step >= self.learning_starts and run.step % self.train_every == 0:
                yield run.buffer.sample_sequences(self.batch_size, k, generator)
            if target_sync_due(run.step, self.target_every, self.learning_starts):
                run.target.load_state_dict(model.state_dict())

    def context(self, model: nn.Module, batch: SequenceBatch) -> Context:
        """Per-layer double-DQN losses ``ctx.signals["layer_losses"]`` and their sum ``ctx.loss``."""
        if self._run is None or self._run.model is not model:
            raise ConfigError("the rl task builds contexts for the model it is training: iterate batches() first")
        layer_losses = td_losses(model, self._run.target, batch, self.gamma, self.reward_scale)
        return Context(loss=layer_losses.sum(), signals={"layer_losses": layer_losses})

    def batch_metrics(self, batch: SequenceBatch, outcome: Context) -> Metrics:
        """Nothing per batch: the TD losses are averaged over the epoch in
        [`epoch_metrics`][bioplaus.tasks.rl.dqn.DQNTask.epoch_metrics]."""
        self._run.losses.append(outcome.signal("layer_losses").detach())
        return {}, 0.0

    def epoch_metrics(self) -> dict[str, float]:
        """Environment steps, ε, the mean return of finished training episodes and the mean TD losses."""
        run = self._run
        metrics = {
            "env_steps": float(run.step),
            "epsilon": epsilon(run.step, *self.eps, learning_starts=self.learning_starts),
            "episode_return": float(np.mean(run.finished)) if run.finished else float("nan"),
        }
        if run.losses:
            per_layer = torch.stack(run.losses).mean(0)
            metrics["loss"] = float(per_layer.sum())
            metrics |= {f"td_loss/layer{i}": float(v) for i, v in enumerate(per_layer)}
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The run's environment, replay buffer, target network, exploration state and counters (pickled)."""
        return {} if self._run is None else {"run": dataclasses.replace(self._run, model=None)}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        """Go on with the run saved by [`state_dict`][bioplaus.tasks.rl.dqn.DQNTask.state_dict], now training
        ``model``."""
        run = state.get("run")
        self._run = None if run is None else dataclasses.replace(run, model=model)

    def headline_metrics(self) -> tuple[str, ...]:
        """The evaluation return."""
        return ("eval/return",)

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Mean evaluation return (ε = ``eval_epsilon``) of the full net and of each layer's policy."""
        if self.eval_episodes == 0:
            return {}
        n_layers = layer_q(model, torch.zeros(1, *self.spec.input_shape), None)[0].shape[0]
        layer_counts = range(1, n_layers + 1) if self.eval_layers else [n_layers]
        metrics = {}
        for count in layer_counts:
            result = self.evaluate_policy(model, count)
            name = "return" if count == n_layers else f"return/layer{count - 1}"
            metrics[name] = result
        return {"eval": metrics}

    def evaluate_policy(self, model: nn.Module, layers: int | None = None, seeds: Sequence[int] | None = None) -> float:
        """Mean return of the ε-greedy policy on the mean Q of the first ``layers`` layers."""
        rng = np.random.default_rng(EVAL_SEED)
        state: dict[str, Contexts | None] = {"context": None}
        env = self._eval_env

        def policy(obs: np.ndarray) -> int:
            action, state["context"] = greedy_action(model, obs, state["context"], layers)
            return int(rng.integers(env.action_space.n)) if rng.random() < self.eval_epsilon else action

        seeds = range(EVAL_SEED, EVAL_SEED + self.eval_episodes) if seeds is None else seeds
        return evaluate(env, policy, seeds, reset=lambda: state.update(context=None)).mean
