"""TD3 with a spiking PopSAN actor: the update's targets, the normaliser, and learning on Pendulum-v1."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from bioplaus.errors import ConfigError
from bioplaus.nets.popsan import PopSAN, RunningNorm, load_actor, save_actor
from bioplaus.tasks.rl.replay import Transitions
from bioplaus.tasks.rl.td3 import TD3, TD3Config, evaluate_actor, train_td3


def _agent(**config) -> TD3:
    torch.manual_seed(0)
    actor = PopSAN(3, 1, 2.0, hidden=(8,), pop=4, out_pop=4)
    return TD3(actor, 3, 1, 2.0, TD3Config(critic_hidden=(64,), **config))


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


@pytest.mark.parametrize("terminated", [1.0, 0.0])
def test_critic_regresses_onto_the_td3_target(terminated):
    """Frozen targets (ρ = 1): both critics fit y = r + γ(1 − d) min_k Q̄_k(s', clip(μ̄(s') + ε))."""
    agent = _agent(polyak=1.0, critic_lr=2e-2, target_noise=0.0, policy_delay=10**6)  # critic updates only
    batch = _batch(terminated, n=16)
    with torch.no_grad():  # separate the twin targets: min, max and no bootstrap give different y
        agent.critic_target.q1[-1].bias.fill_(2.0)
        agent.critic_target.q2[-1].bias.fill_(-1.0)
        next_act = agent.actor_target(batch.next_obs)
        q_next = torch.minimum(*agent.critic_target(agent.actor.norm(batch.next_obs), next_act))
        y = batch.reward + 0.99 * (1 - terminated) * q_next
    for _ in range(200):
        agent.update(batch)
    q1, q2 = agent.critic(agent.actor.norm(batch.obs), batch.action)
    torch.testing.assert_close(q1, y, atol=0.2, rtol=0)
    torch.testing.assert_close(q2, y, atol=0.2, rtol=0)


def test_policy_delay_and_polyak():
    agent = _agent(polyak=0.5, policy_delay=2)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    target_before = [p.clone() for p in agent.actor_target.parameters()]
    assert "actor_loss" not in agent.update(_batch(0.0))
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters(), strict=True))
    assert "actor_loss" in agent.update(_batch(0.0))
    for before, actor_p, target_p in zip(target_before, agent.actor.parameters(), agent.actor_target.parameters(),
                                         strict=True):  # fmt: skip
        torch.testing.assert_close(target_p, 0.5 * before + 0.5 * actor_p.detach())


def test_running_norm_matches_batch_statistics():
    norm = RunningNorm(2, clip=10.0)
    data = torch.randn(1000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    for chunk in data.split(137):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False), atol=1e-4, rtol=1e-5)
    assert norm(torch.tensor([[100.0, 0.0]]))[0, 0] == 10.0  # clipped


def test_config_validation_and_checkpoint_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        TD3Config(batch_size=0)
    actor = PopSAN(3, 1, 2.0, hidden=(8,), pop=4, out_pop=4, threshold="bdett")
    actor.norm.update(torch.randn(10, 3))
    save_actor(actor, tmp_path / "a.pt")
    obs = torch.randn(4, 3)
    torch.testing.assert_close(load_actor(tmp_path / "a.pt")(obs), actor(obs))
    assert type(load_actor(tmp_path / "a.pt", threshold="alif").layers[0].threshold).__name__ == "AdaptiveThreshold"
    with pytest.raises(ConfigError, match="no PopSAN checkpoint"):
        load_actor(tmp_path / "missing.pt")


def test_td3_improves_a_small_spiking_actor_on_pendulum():
    torch.manual_seed(0)
    env, eval_env = gym.make("Pendulum-v1"), gym.make("Pendulum-v1")
    actor = PopSAN(3, 1, 2.0, hidden=(64,), pop=10, out_pop=5)
    seeds = range(100, 106)
    before = evaluate_actor(eval_env, actor, seeds).mean
    config = TD3Config(total_steps=4000, start_steps=300, update_after=300, actor_lr=3e-3, critic_lr=3e-3,
                       gamma=0.95, critic_hidden=(64, 64))  # fmt: skip
    train_td3(env, actor, config, seed=0)
    after = evaluate_actor(eval_env, actor, seeds).mean
    assert after > before + 150, (before, after)
