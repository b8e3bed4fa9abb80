"""TD3 with a spiking PopSAN actor as the task ``td3``: the update's targets and order, the normaliser,
options, divergence, state round trip, and learning on Pendulum-v1 through the runner and the CLI."""

from __future__ import annotations

import io

import pytest
import torch
from cli_helpers import run_cli

import bioplaus
from bioplaus import nets, rules, tasks
from bioplaus.core import Capability, TaskSpec, capabilities_of
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.popsan import PopSAN, RunningNorm, load_actor, save_actor
from bioplaus.runner.training import train_epoch
from bioplaus.tasks.rl.replay import Transitions
from bioplaus.tasks.rl.td3 import TD3Task

SMALL_ACTOR = {"hidden": (8,), "pop": 4, "out_pop": 4}


def _task(**options) -> TD3Task:
    defaults = {"env": "Pendulum-v1", "critic_hidden": (64,), "buffer_size": 2_000, "eval_episodes": 0}
    return tasks.get("td3", **(defaults | options))


def _prepared(task: TD3Task, seed: int = 0, **actor) -> PopSAN:
    """A small actor for ``task``, built from ``seed`` and prepared (critic and targets built)."""
    torch.manual_seed(seed)
    return task.prepare(nets.get("popsan", task.spec, **({"act_limit": task.act_limit} | SMALL_ACTOR | actor)))


def _batch(terminated: float, n: int = 32) -> Transitions:
    g = torch.Generator().manual_seed(0)
    return Transitions(
        obs=torch.randn(n, 3, generator=g),
        action=torch.rand(n, 1, generator=g) * 4 - 2,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, 3, generator=g),
        terminated=torch.full((n,), terminated),
        truncated=torch.zeros(n),
    )


def test_popsan_is_a_registered_spiking_model():
    actor = nets.get("popsan", TaskSpec((3,), 2), hidden=(8,), pop=4, threshold="bdett")
    assert isinstance(actor, PopSAN) and actor(torch.randn(5, 3)).shape == (5, 2)
    assert Capability.SPIKING in capabilities_of(actor)
    with pytest.raises(ShapeError, match="observation vectors"):
        nets.get("popsan", TaskSpec((1, 28, 28), 10))


@pytest.mark.parametrize("terminated", [1.0, 0.0])
def test_critic_regresses_onto_the_td3_target(terminated):
    """Frozen targets: both critics fit y = r + γ(1 − d) min_k Q̄_k(s', clip(μ̄(s') + ε))."""
    task = _task(critic_lr=2e-2, target_noise=0.0)
    actor = _prepared(task)
    run = task._run
    batch = _batch(terminated, n=16)
    with torch.no_grad():  # separate the twin targets: min, max and no bootstrap give different y
        run.critic_target.q1[-1].bias.fill_(2.0)
        run.critic_target.q2[-1].bias.fill_(-1.0)
        next_act = run.actor_target(batch.next_obs)
        q_next = torch.minimum(*run.critic_target(actor.norm(batch.next_obs), next_act))
        y = batch.reward + 0.99 * (1 - terminated) * q_next
    for _ in range(200):
        task._critic_update(run, batch, None)
    q1, q2 = run.critic(actor.norm(batch.obs), batch.action)
    torch.testing.assert_close(q1, y, atol=0.2, rtol=0)
    torch.testing.assert_close(q2, y, atol=0.2, rtol=0)


def test_batches_yield_every_policy_delay_updates_and_polyak_follows_the_actor_step():
    task = _task(start_steps=10, update_after=10, update_every=10, policy_delay=2, polyak=0.5, steps_per_epoch=20)
    actor = _prepared(task)
    run = task._run
    batches = task.batches(actor, torch.Generator().manual_seed(0))
    next(batches)
    assert (run.step, run.updates) == (10, 2)  # two critic updates, then the actor's turn
    target_before = [p.clone() for p in run.actor_target.parameters()]
    critic_target_before = [p.clone() for p in run.critic_target.parameters()]
    with torch.no_grad():  # stands for the runner's actor step
        for p in actor.parameters():
            p.add_(1.0)
    next(batches)
    assert run.updates == 4
    for before, p, p_t in zip(target_before, actor.parameters(), run.actor_target.parameters(), strict=True):
        torch.testing.assert_close(p_t, 0.5 * before + 0.5 * p.detach())
    moved = [not torch.equal(b, p) for b, p in zip(critic_target_before, run.critic_target.parameters(), strict=True)]
    assert all(moved)
    assert len(list(batches)) == 8  # bursts of 10 updates at steps 10 and 20: 10 actor turns in all
    assert run.step == 20 and run.updates == 20


def test_actor_context_is_minus_q1_and_leaves_the_critic_without_gradient():
    task = _task()
    actor = _prepared(task)
    batch = _batch(0.0)
    ctx = task.context(actor, batch)
    ctx.loss.backward()
    q1 = task._run.critic.q1(torch.cat([actor.norm(batch.obs), actor(batch.obs)], -1)).mean()
    torch.testing.assert_close(ctx.loss, -q1)
    assert all(p.grad is None for p in task._run.critic.parameters())
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.requires_grad for p in task._run.critic.parameters())


def test_running_norm_matches_batch_statistics():
    norm = RunningNorm(2, clip=10.0)
    data = torch.randn(1000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    for chunk in data.split(137):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False), atol=1e-4, rtol=1e-5)
    assert norm(torch.tensor([[100.0, 0.0]]))[0, 0] == 10.0  # clipped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"policy_delay": 1.5}, "policy_delay"),
        ({"start_steps": -1}, "start_steps"),
        ({"critic_hidden": (64, 0)}, "critic_hidden"),
        ({"polyak": 1.5}, "polyak"),
        ({"critic_lr": 0.0}, "critic_lr"),
        ({"act_noise": -0.1}, "act_noise"),
        ({"device": "cuda"}, "CPU"),
        ({"env": "Pendulum-v9"}, "did you mean 'Pendulum-v1'"),
        ({"env": "CartPole-v1"}, "continuous actions"),
        ({"env_options": {"no_such_option": 1}}, "rejected its options"),
        ({"gama": 0.9}, "did you mean 'gamma'"),
    ],
)
def test_bad_options_raise_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        _task(**options)


def test_the_actor_must_fit_the_environment():
    task = _task()
    with pytest.raises(ConfigError, match="act_limit = 2.0"):
        _prepared(task, act_limit=1.0)
    with pytest.raises(ConfigError, match="observation normaliser"):
        task.prepare(nets.get("mlp", task.spec))
    with pytest.raises(ConfigError, match="iterate batches"):
        task.context(PopSAN(3, 1, 2.0, hidden=(8,)), _batch(0.0))


def test_actor_checkpoint_round_trip(tmp_path):
    actor = PopSAN(3, 1, 2.0, hidden=(8,), pop=4, out_pop=4, threshold="bdett")
    actor.norm.update(torch.randn(10, 3))
    save_actor(actor, tmp_path / "a.pt")
    obs = torch.randn(4, 3)
    torch.testing.assert_close(load_actor(tmp_path / "a.pt")(obs), actor(obs))
    assert type(load_actor(tmp_path / "a.pt", threshold="alif").layers[0].threshold).__name__ == "AdaptiveThreshold"
    with pytest.raises(ConfigError, match="no PopSAN checkpoint"):
        load_actor(tmp_path / "missing.pt")


ROUND_TRIP = {"steps_per_epoch": 150, "start_steps": 60, "update_after": 60, "update_every": 30, "batch_size": 16}


def _run_parts(env: str, seed: int = 0) -> tuple[TD3Task, PopSAN, object, torch.optim.Optimizer]:
    """A fresh task, its prepared actor with ``bp`` attached, and the actor's optimizer, as a run builds them."""
    task = _task(env=env, **ROUND_TRIP)
    actor = _prepared(task, seed)
    rule = rules.get("bp")
    rule.attach(actor)
    return task, actor, rule, task.optimizer(rule.param_groups(actor))


@pytest.mark.parametrize("env", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_state_round_trip_continues_bit_for_bit(env):
    """Saving after one epoch (torch.save of state_dict) and loading into a fresh task and actor goes on
    exactly as the uninterrupted run."""
    task, actor, rule, optimizer = _run_parts(env)
    generator = torch.Generator().manual_seed(0)
    train_epoch(task, actor, rule, optimizer, generator=generator)
    saved = io.BytesIO()
    parts = {"task": task.state_dict(), "actor": actor.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(parts | {"generator": generator.get_state()}, saved)
    reference = train_epoch(task, actor, rule, optimizer, generator=generator)

    saved.seek(0)
    state = torch.load(saved, weights_only=False)
    task2, actor2, rule2, optimizer2 = _run_parts(env, seed=123)  # initial weights overwritten by the load
    actor2.load_state_dict(state["actor"])
    optimizer2.load_state_dict(state["optimizer"])
    task2.load_state_dict(state["task"], actor2)
    generator2 = torch.Generator()
    generator2.set_state(state["generator"])
    resumed = train_epoch(task2, actor2, rule2, optimizer2, generator=generator2)

    torch.testing.assert_close(resumed, reference, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(actor.state_dict().values(), actor2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for name in ("critic", "critic_target", "actor_target"):
        for a, b in zip(getattr(task._run, name).parameters(), getattr(task2._run, name).parameters(), strict=True):
            assert torch.equal(a, b)
    assert (task2._run.step, task2._run.updates) == (300, task._run.updates) and task._run.updates > 0
    assert torch.equal(task2._run.buffer.obs, task._run.buffer.obs)


PENDULUM = {  # a small, fast learner: one actor step per critic step, 2 × 1500 environment steps
    "env": "Pendulum-v1",
    "steps_per_epoch": 1500,
    "start_steps": 300,
    "update_after": 300,
    "actor_lr": 3e-3,
    "critic_lr": 3e-3,
    "gamma": 0.95,
    "policy_delay": 1,
    "critic_hidden": (64, 64),
    "buffer_size": 3000,
    "eval_episodes": 5,
}


def test_runner_trains_the_actor_and_it_improves_on_pendulum():
    result = bioplaus.compare(
        model="popsan",
        rules=["bp"],
        task="td3",
        epochs=2,
        batch_size=64,
        task_options=PENDULUM,
        model_options={"hidden": (32,), "pop": 10, "out_pop": 5, "T": 2, "act_limit": 2.0},
        progress=False,
    )
    assert result.runs.status.tolist() == ["done"]
    table = result.table
    evals = table[(table.split == "eval") & (table.metric == "return")].sort_values("epoch").value.tolist()
    assert len(evals) == 3  # before training and after each epoch
    assert evals[-1] > evals[0] + 150, evals
    train = set(table[table.split == "train"].metric)
    assert {"actor_loss", "critic_loss", "episode_return", "env_steps"} <= train
    assert result.runs.steps.item() == 55 * 50  # bursts of 50 updates at steps 300, 350, …, 3000


@pytest.mark.parametrize("poisoned", ["critic", "actor"])
def test_a_nan_loss_marks_the_run_diverged(poisoned, monkeypatch):
    task = _task(start_steps=20, update_after=20, update_every=10, steps_per_epoch=50, batch_size=8)
    prepare = task.prepare

    def poisoning(model):
        prepare(model)
        target = task._run.critic.q1[0].weight if poisoned == "critic" else model.decoder_bias
        with torch.no_grad():
            target.fill_(float("nan"))
        return model

    monkeypatch.setattr(task, "prepare", poisoning)
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = bioplaus.compare(model="popsan", rules=["bp"], task=task, epochs=2,
                                  model_options={"hidden": (8,), "act_limit": 2.0}, progress=False)  # fmt: skip
    run = result.runs.iloc[0]
    assert run.status == "diverged"
    assert ("critic loss became nan" if poisoned == "critic" else "loss became nan at step 0") in run.message


def test_cli_compare_trains_a_popsan_actor(capsys, tmp_path):
    code, out, err = run_cli(
        capsys,
        "compare",
        "--task", "td3",
        "--model", "popsan",
        "--rules", "bp",
        "--epochs", "1",
        "--batch-size", "16",
        "--set", "task_options.env=Pendulum-v1",
        "--set", "task_options.steps_per_epoch=100",
        "--set", "task_options.start_steps=50",
        "--set", "task_options.update_after=50",
        "--set", "task_options.eval_episodes=1",
        "--set", "task_options.critic_hidden=[32]",
        "--set", "model_options.hidden=[16]",
        "--set", "model_options.act_limit=2.0",
        "--out", str(tmp_path),
        "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "runs.csv" in {p.name for p in tmp_path.iterdir()}
    assert "done" in (tmp_path / "runs.csv").read_text()
