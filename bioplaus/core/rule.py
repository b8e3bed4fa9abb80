"""The [`Rule`][bioplaus.core.rule.Rule] base class: the contract every learning rule keeps.

1. A rule produces gradients and never steps weights: it writes ``p.grad`` with the descent sign
   (accumulating, like ``loss.backward()``), and a ``torch.optim`` optimizer applies it.
2. ``attach(model)`` configures the model's layers (recording, detached inputs, feedback weights);
   ``detach(model)`` undoes it. The model's ``forward(x)`` never depends on the rule.
3. Global signals arrive in a [`Context`][bioplaus.core.context.Context]: ``update(model, ctx)``
   once per batch, or ``step(model, ctx)`` once per time step for online rules (``online = True``).
4. Nothing anywhere branches on a rule's name.
5. The contract is typed: ``requires`` names the model capabilities the rule needs and
   ``signals`` the context fields it reads ([`bioplaus.core.capabilities`][bioplaus.core.capabilities]); the runner
   checks both against the model and the task before anything trains.
6. What the rule learns or accumulates lives in [`Rule.state`][bioplaus.core.rule.Rule.state], an ``nn.Module``
   ([`RuleState`][bioplaus.core.rule_state.RuleState]), never in a hyperparameter's attribute;
   ``attach`` twice to the same model is the same as once.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from bioplaus.core.capabilities import Capability
from bioplaus.core.context import Context
from bioplaus.core.layers import weight_layers
from bioplaus.core.rule_state import RuleState


class Rule:
    """Base class of learning rules.

    Subclasses override [`update`][bioplaus.core.rule.Rule.update] (batch rules) or
    [`step`][bioplaus.core.rule.Rule.step] (online rules, with ``online = True``) and usually
    [`attach`][bioplaus.core.rule.Rule.attach]. Keyword arguments of ``__init__`` are the rule's hyperparameters: store
    each under the same attribute name so [`hparams`][bioplaus.core.rule.Rule.hparams] can report them in run configs.
    """

    name: ClassVar[str] = "rule"
    """Registry name; set by ``bioplaus.rules.register``."""

    online: ClassVar[bool] = False
    """True for rules that learn at every time step through [`step`][bioplaus.core.rule.Rule.step]."""

    needs_graph: ClassVar[bool] = True
    """False for rules that compute their update from recorded values without autograd: a task
    may then run the forward pass without recording a graph (faster, less memory)."""

    requires: ClassVar[frozenset[Capability]] = frozenset()
    """Model capabilities the rule needs (checked before training)."""

    excludes: ClassVar[frozenset[Capability]] = frozenset()
    """Model capabilities the rule cannot work with (e.g. DFA and per-step sequence outputs)."""

    signals: ClassVar[frozenset[str]] = frozenset({"loss"})
    """Context fields and signals the rule reads (checked against the task's ``provides``)."""

    reference: ClassVar[str | None] = None
    """For online rules: the registered online rule whose step is the exact online gradient in the
    same setting, which per-step alignment compares against (batch rules are compared with
    autograd's gradient with every layer at its default)."""

    @property
    def state(self) -> RuleState:
        """The rule's state module (feedback matrices, traces, ...), created empty on first use."""
        state = self.__dict__.get("_state")
        if state is None:
            state = self.__dict__["_state"] = RuleState()
        return state

    def to(self, *args: Any, **kwargs: Any) -> Rule:
        """Move the rule's state, as ``nn.Module.to``; returns the rule."""
        self.state.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The rule's state tensors (what a checkpoint saves)."""
        return self.state.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state saved by [`state_dict`][bioplaus.core.rule.Rule.state_dict] (call after
        [`attach`][bioplaus.core.rule.Rule.attach])."""
        self.state.load_state_dict(state_dict)

    def attach(self, model: nn.Module) -> None:
        """Configure ``model``'s layers for this rule (called once, before training)."""

    def detach(self, model: nn.Module) -> None:
        """Undo [`attach`][bioplaus.core.rule.Rule.attach]: every layer back to plain backprop."""
        for _, layer in weight_layers(model):
            layer.reset_settings()

    def update(self, model: nn.Module, ctx: Context) -> None:
        """Write this rule's gradients for one batch into ``p.grad`` (descent sign, accumulated)."""
        raise NotImplementedError(f"rule '{self.name}' learns online: call step() at every time step")

    def step(self, model: nn.Module, ctx: Context) -> None:
        """Write this rule's gradients for one time step ``ctx.t`` (online rules only)."""
        raise TypeError(f"rule '{self.name}' is not online: call update() once per batch")

    def reset(self, model: nn.Module) -> None:
        """Clear per-sequence state (eligibility traces, ...) at a trial or episode start."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; rules that need per-layer groups override this."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise `ConfigError` if `optimizer` cannot apply this rule's updates as the rule needs.

        The runner calls it once the optimizer is built. The default accepts any optimizer; a rule
        whose correctness depends on the optimizer (Kolen-Pollack needs `W` and `B` to receive
        identical updates, so no coupled L2 decay) overrides it.
        """

    def hparams(self) -> dict[str, Any]:
        """The rule's hyperparameters (its ``__init__`` keyword arguments and their values)."""
        params = inspect.signature(type(self).__init__).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {p.name: getattr(self, p.name, None) for p in params if p.kind in kinds and p.name != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return repr(value)
