"""Tasks, by name: what is learned and how one epoch of training runs."""

from __future__ import annotations

from typing import Any

from bioplaus.tasks._registry import TASKS, register
from bioplaus.tasks.base import Task, check_finite
from bioplaus.tasks.classification import ClassificationTask
from bioplaus.tasks.motor import MotorTask
from bioplaus.tasks.motor_training import AdaptationGrid
from bioplaus.tasks.rl.dqn import DQNTask
from bioplaus.tasks.rl.td3 import TD3Task
from bioplaus.tasks.sequence import SequenceTask

available = TASKS.available
describe = TASKS.describe


def get(name: str, **options: Any) -> Task:
    """Build the task registered as ``name``.

    Raises:
        ConfigError: for an unknown name (listing the known ones) or an unknown option.
        DataError: when the task's data cannot be found (the message says how to get it).
    """
    return TASKS.build(name, **options)


__all__ = [
    "AdaptationGrid",
    "ClassificationTask",
    "DQNTask",
    "MotorTask",
    "SequenceTask",
    "TD3Task",
    "Task",
    "available",
    "check_finite",
    "describe",
    "get",
    "register",
]
