"""Reinforcement learning: replay, evaluation, schedules, environments and the DQN-style loop.

Gymnasium and MinAtar are imported only when an environment is built, so ``import bioplaus``
works without the ``rl`` extra.
"""

from __future__ import annotations

from bioplaus.tasks.rl.evaluation import EvalResult, Policy, evaluate
from bioplaus.tasks.rl.replay import ReplayBuffer, SequenceBatch, Transitions

__all__ = [
    "EvalResult",
    "Policy",
    "ReplayBuffer",
    "SequenceBatch",
    "Transitions",
    "evaluate",
]
