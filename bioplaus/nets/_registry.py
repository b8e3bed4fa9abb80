"""The model registry: factories ``f(spec: TaskSpec, **options) -> nn.Module``."""

from __future__ import annotations

from torch import nn

from bioplaus.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register = MODELS.register
