"""Learning rules, by name.

>>> import bioplaus
>>> bioplaus.rules.available()          # doctest: +SKIP
['bp', 'dfa', 'fa']
>>> rule = bioplaus.rules.get("dfa", low=0.0)   # doctest: +SKIP

A new rule is a [`Rule`][bioplaus.core.rule.Rule] subclass registered with ``@register("name")``;
it then works in ``compare``, the CLI, configs and notebooks.
"""

from __future__ import annotations

from typing import Any

from bioplaus.core.rule import Rule
from bioplaus.rules._registry import RULES, register
from bioplaus.rules.backprop import Backprop
from bioplaus.rules.direct_feedback_alignment import DirectFeedbackAlignment
from bioplaus.rules.distributed_td import DistributedTD
from bioplaus.rules.feedback_alignment import FeedbackAlignment
from bioplaus.rules.feedback_control import FED, RFLO, OnlineBPTT
from bioplaus.rules.gevb import GEVB, ScalarCreditBackprop
from bioplaus.rules.kolen_pollack import KolenPollack
from bioplaus.rules.layer_feedback import LayerFeedbackRule
from bioplaus.rules.sign_symmetry import SignFeedback, SignSymmetry
from bioplaus.rules.temporal import BPTT, TBPTT, StreamingTBPTT
from bioplaus.rules.weight_mirror import WeightMirror

available = RULES.available
describe = RULES.describe


def get(name: str, **kwargs: Any) -> Rule:
    """Build the rule registered as ``name`` with hyperparameters ``kwargs``.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones) or an unknown keyword.
    """
    return RULES.build(name, **kwargs)


__all__ = [
    "BPTT",
    "Backprop",
    "DirectFeedbackAlignment",
    "DistributedTD",
    "FED",
    "FeedbackAlignment",
    "GEVB",
    "KolenPollack",
    "LayerFeedbackRule",
    "OnlineBPTT",
    "RFLO",
    "ScalarCreditBackprop",
    "SignFeedback",
    "SignSymmetry",
    "Rule",
    "StreamingTBPTT",
    "TBPTT",
    "WeightMirror",
    "available",
    "describe",
    "get",
    "register",
]
