"""The RL building blocks: replay buffer, evaluation, schedules, environments, the DQN loop."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bioplaus.errors import ConfigError, ShapeError
from bioplaus.tasks.rl import ReplayBuffer, evaluate


def _fill(buffer: ReplayBuffer, episodes: list[tuple[int, str]]) -> None:
    """Add episodes of the given lengths; observation value = absolute step; end by 'term'/'trunc'."""
    step = 0
    for length, end in episodes:
        for k in range(length):
            last = k == length - 1
            buffer.add(
                np.full(buffer.obs_shape, step, dtype=np.float32),
                step % 3,
                1.0,
                np.full(buffer.obs_shape, step + 1, dtype=np.float32),
                terminated=last and end == "term",
                truncated=last and end == "trunc",
            )
            step += 1


def test_sample_returns_tensors_of_the_stored_shapes():
    buffer = ReplayBuffer(10, (2, 3), action_shape=(4,), action_dtype=torch.float32)
    for i in range(4):
        buffer.add(np.ones((2, 3)) * i, np.full(4, 0.5), 1.0, np.ones((2, 3)), False, False)
    batch = buffer.sample(5, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (5, 2, 3) and batch.obs.dtype == torch.float32
    assert batch.action.shape == (5, 4) and batch.action.dtype == torch.float32
    assert batch.reward.shape == batch.terminated.shape == batch.truncated.shape == (5,)
    assert len(buffer) == 4


def test_ring_overwrites_the_oldest_and_keeps_bool_obs_compact():
    buffer = ReplayBuffer(3, (2,), obs_dtype=torch.bool)
    for i in range(5):
        buffer.add(np.array([i % 2, 1], dtype=bool), i, float(i), np.zeros(2, dtype=bool), False, False)
    assert len(buffer) == 3 and buffer.obs.dtype == torch.bool
    assert sorted(buffer.reward.tolist()) == [2.0, 3.0, 4.0]
    assert buffer.sample(2).obs.dtype == torch.float32


@pytest.mark.parametrize("episodes", [[(3, "term"), (4, "trunc")], [(40, "term"), (90, "trunc")]])
def test_a_pickled_buffer_keeps_only_its_filled_slots_and_goes_on_identically(episodes):
    """Checkpoints pickle the buffer: before the ring wraps only the filled slots are written; after
    loading, samples and later additions are those of the original buffer."""
    buffer = ReplayBuffer(100, (5,))
    _fill(buffer, episodes)
    saved = pickle.dumps(buffer)
    if len(buffer) < buffer.capacity:  # less than the empty capacity's observations alone
        assert len(saved) < buffer.obs.nbytes + buffer.next_obs.nbytes
    loaded = pickle.loads(saved)
    for name in ReplayBuffer._ROWS:
        assert torch.equal(getattr(loaded, name), getattr(buffer, name)), name
    for copy in (buffer, loaded):
        _fill(copy, [(5, "term")])
    a, b = (c.sample_sequences(32, context=3, generator=torch.Generator().manual_seed(1)) for c in (buffer, loaded))
    assert torch.equal(a.obs_seq, b.obs_seq) and torch.equal(a.valid, b.valid)


@pytest.mark.parametrize("end", ["term", "trunc"])
def test_sequences_are_cut_at_terminated_and_at_truncated(end):
    buffer = ReplayBuffer(100, (1,))
    _fill(buffer, [(3, end), (4, "term")])  # steps 0-2 | 3-6
    seq = buffer.sample_sequences(64, context=2, generator=torch.Generator().manual_seed(0))
    t = seq.transitions.obs[:, 0]
    assert torch.equal(seq.obs_seq[-1], seq.transitions.obs)
    for b in range(64):
        start = 0 if t[b] < 3 else 3
        expect = [max(t[b].item() - k, start) for k in (2, 1, 0)]
        assert seq.obs_seq[:, b, 0].tolist() == expect  # clamped: the first obs repeats
        assert seq.valid[:, b].tolist() == [t[b].item() - k >= start for k in (2, 1, 0)]


def test_sequences_do_not_reach_into_overwritten_slots():
    buffer = ReplayBuffer(4, (1,))
    _fill(buffer, [(10, "term")])  # steps 6..9 remain
    seq = buffer.sample_sequences(32, context=3, generator=torch.Generator().manual_seed(1))
    t = seq.transitions.obs[:, 0]
    unclamped = t.unsqueeze(0) - torch.tensor([3.0, 2.0, 1.0, 0.0]).unsqueeze(1)
    assert torch.equal(seq.obs_seq[..., 0], unclamped.clamp(min=6))
    assert torch.equal(seq.valid, unclamped >= 6)


def test_bad_buffer_input_raises_clear_errors():
    with pytest.raises(ConfigError, match="capacity"):
        ReplayBuffer(0, (1,))
    buffer = ReplayBuffer(4, (2,))
    with pytest.raises(ConfigError, match="empty"):
        buffer.sample(1)
    with pytest.raises(ShapeError, match="obs has shape"):
        buffer.add(np.zeros(3), 0, 0.0, np.zeros(2), False, False)
    with pytest.raises(ShapeError, match="action"):
        buffer.add(np.zeros(2), np.zeros(2), 0.0, np.zeros(2), False, False)


class _CountEnv:
    """Episode of ``seed + 2`` steps with reward 1 per step."""

    def reset(self, seed: int):
        self.left = seed + 2
        return np.zeros(1), {}

    def step(self, action):
        self.left -= 1
        return np.zeros(1), float(action), self.left == 0, False, {}


def test_evaluate_runs_one_episode_per_seed_and_calls_reset():
    resets = []
    result = evaluate(_CountEnv(), lambda obs: 1, [0, 3], reset=lambda: resets.append(1))
    assert result.returns.tolist() == [2.0, 5.0] and result.lengths.tolist() == [2, 5]
    assert result.mean == 3.5 and len(resets) == 2
    assert evaluate(_CountEnv(), lambda obs: 1, [10], max_steps=4).lengths.tolist() == [4]
    with pytest.raises(ConfigError):
        evaluate(_CountEnv(), lambda obs: 1, [])


def test_epsilon_and_target_sync_follow_their_formulas():
    from bioplaus.tasks.rl.schedules import epsilon, target_sync_due

    for step in [0, 100, 150, 600, 1100, 5000]:
        expected = max((0.01 - 1.0) / 1000 * max(step - 100, 0) + 1.0, 0.01)
        assert epsilon(step, 1.0, 0.01, 1000, learning_starts=100) == pytest.approx(expected)
    assert epsilon(600, 1.0, 0.01, 1000, learning_starts=100) == pytest.approx(0.505)
    due = [s for s in range(1, 3001) if target_sync_due(s, 500, learning_starts=1000)]
    assert due == [1000, 1500, 2000, 2500, 3000]
    with pytest.raises(ConfigError, match="duration"):
        epsilon(0, 1.0, 0.1, 0)


def test_environments_by_name_and_clear_errors():
    from bioplaus.tasks.rl.envs import bang_bang_actions, make_env

    assert make_env("MinAtar/Breakout-v1").observation_space.shape == (10, 10, 4)  # P11: registered for us
    assert make_env("Corridor", n=4).reset()[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="did you mean 'CartPole-v1'"):
        make_env("CartPol-v1")
    with pytest.raises(ConfigError, match="rejected its options"):
        make_env("CartPole-v1", gravity_x=1)
    with pytest.raises(ConfigError, match="discretize = true"):
        make_env("Pendulum-v1")
    assert make_env("Pendulum-v1", discretize=True).action_space.n == 2
    table = bang_bang_actions(np.array([-1.0, 0.0]), np.array([1.0, 2.0]))
    assert table.tolist() == [[-1.0, 0.0], [-1.0, 2.0], [1.0, 0.0], [1.0, 2.0]]


def test_bad_task_options_raise_config_errors():
    from bioplaus import tasks

    with pytest.raises(ConfigError, match="train_every"):
        tasks.get("rl", env="Corridor", train_every=0)
    with pytest.raises(ConfigError, match="unknown environment"):
        tasks.get("rl", env="Nope-v0")
    with pytest.raises(ConfigError, match="has no option"):
        tasks.get("rl", env="Corridor", epsilon=0.1)


def test_a_nan_loss_ends_the_run_as_diverged():
    from bioplaus.runner.compare import compare

    class NaNQ(torch.nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(spec.in_features, spec.n_out))

        def forward(self, obs):
            return obs.flatten(1) @ self.w * float("nan")

    options = {"env": "Corridor", "steps_per_epoch": 50, "learning_starts": 10, "eval_episodes": 0, "progress": False}
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = compare(model=NaNQ, rules=["bp"], task="rl", task_options=options, epochs=2, progress=False)
    assert result.runs.status.tolist() == ["diverged"]
    assert "loss became nan" in result.runs.message.iloc[0]
