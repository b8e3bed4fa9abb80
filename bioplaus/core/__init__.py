"""The core: layers a rule can configure, the context of global signals, the Rule base class."""

from bioplaus.core.capabilities import Capability, capabilities_of
from bioplaus.core.context import Context
from bioplaus.core.convert import convert
from bioplaus.core.layers import (
    ACTIVATIONS,
    Conv2d,
    Layer,
    LayerSettings,
    Linear,
    Local2d,
    default_settings,
    install_projections,
    require_layers,
    weight_layers,
)
from bioplaus.core.recurrent import LSTMCell, RecurrentLayer, RecurrentSettings, recurrent_layers
from bioplaus.core.rule import Rule
from bioplaus.core.rule_state import RuleState
from bioplaus.core.spec import TaskSpec
from bioplaus.core.weight_ops import Conv2dOp, FeedbackTransform, LinearOp, Local2dOp

__all__ = [
    "ACTIVATIONS",
    "Capability",
    "Context",
    "Conv2d",
    "Conv2dOp",
    "FeedbackTransform",
    "Layer",
    "LayerSettings",
    "Linear",
    "LSTMCell",
    "LinearOp",
    "Local2d",
    "Local2dOp",
    "RecurrentLayer",
    "RecurrentSettings",
    "Rule",
    "RuleState",
    "TaskSpec",
    "capabilities_of",
    "convert",
    "default_settings",
    "install_projections",
    "recurrent_layers",
    "require_layers",
    "weight_layers",
]
