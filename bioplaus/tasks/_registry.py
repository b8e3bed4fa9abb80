"""The task registry: factories ``f(batch_size=..., device=..., **options) -> Task``."""

from __future__ import annotations

from bioplaus.registry import Registry
from bioplaus.tasks.base import Task

TASKS: Registry[Task] = Registry("task")
register = TASKS.register
