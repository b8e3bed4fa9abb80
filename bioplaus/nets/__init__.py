"""Models, by name. A model factory takes the task's [`TaskSpec`][bioplaus.core.spec.TaskSpec] and options.

Every module that registers a model is imported here, so ``import bioplaus.nets`` alone knows
them all.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bioplaus.core.spec import TaskSpec
from bioplaus.nets._registry import MODELS, register
from bioplaus.nets.ad import ADNet
from bioplaus.nets.conventional import ConventionalNet
from bioplaus.nets.convnet import ConvNet
from bioplaus.nets.lstm import LSTMNet, SequenceNet
from bioplaus.nets.mlp import MLP
from bioplaus.nets.popsan import PopSAN
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.nets.sab import AttentiveLSTM
from bioplaus.nets.vnn import VNN

available = MODELS.available
describe = MODELS.describe


def get(name: str, spec: TaskSpec, **options: Any) -> nn.Module:
    """Build the model registered as ``name`` for a task with interface ``spec``.

    Raises:
        ConfigError: for an unknown name (listing the known ones) or an unknown option.
    """
    return MODELS.build(name, spec, **options)


__all__ = [
    "ADNet",
    "RateRNN",
    "MLP",
    "PopSAN",
    "AttentiveLSTM",
    "ConvNet",
    "ConventionalNet",
    "LSTMNet",
    "SequenceNet",
    "VNN",
    "available",
    "describe",
    "get",
    "register",
]
