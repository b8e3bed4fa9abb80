"""Rule state as a module: feedback matrices, learned feedback weights, eligibility traces.

A rule keeps everything it learns or accumulates (not its hyperparameters) in one
[`RuleState`][bioplaus.core.rule_state.RuleState], an ``nn.Module``: ``rule.to(device)`` moves it,
``rule.state_dict()`` saves it and ``rule.load_state_dict()`` restores it, so checkpoints carry it like the model's
weights. Rules create their state lazily (a DFA matrix is drawn when the layer widths are first seen),
so loading also creates the buffers and parameters a fresh rule has not made yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bioplaus.errors import ConfigError


def state_key(name: str) -> str:
    """A module-attribute name for a dotted layer name (``layers.fc1`` → ``layers/fc1``)."""
    return name.replace(".", "/") if name else "<root>"


class RuleState(nn.Module):
    """The tensors a rule owns, as buffers (fixed or accumulated) and parameters (learned).

    Use [`set_buffer`][bioplaus.core.rule_state.RuleState.set_buffer] to create or replace a buffer (the name may come
    from [`state_key`][bioplaus.core.rule_state.state_key]) and [`get`][bioplaus.core.rule_state.RuleState.get] to read
    one.
    """

    def set_buffer(self, name: str, value: torch.Tensor | None) -> None:
        """Create or replace the buffer ``name`` (``None`` removes its value)."""
        if name in self._buffers:
            self._buffers[name] = value
        else:
            self.register_buffer(name, value)

    def set_parameter(self, name: str, value: torch.Tensor) -> nn.Parameter:
        """Create or replace the learned parameter ``name`` (a rule's optimizer steps it); returns it."""
        parameter = value if isinstance(value, nn.Parameter) else nn.Parameter(value)
        self._buffers.pop(name, None)
        if name in self._parameters:
            self._parameters[name] = parameter
        else:
            self.register_parameter(name, parameter)
        return parameter

    def get(self, name: str) -> torch.Tensor:
        """The buffer or parameter ``name``; a missing one raises ``ConfigError``."""
        if name in self._buffers and self._buffers[name] is not None:
            return self._buffers[name]
        if name in self._parameters and self._parameters[name] is not None:
            return self._parameters[name]
        raise ConfigError(f"the rule's state has no tensor '{name}' (it has: {', '.join(self.names()) or 'none'})")

    def has(self, name: str) -> bool:
        """Whether the state holds a tensor called ``name``."""
        return self._buffers.get(name) is not None or self._parameters.get(name) is not None

    def names(self) -> list[str]:
        """Names of the tensors held directly by this state."""
        return [k for k, v in (*self._buffers.items(), *self._parameters.items()) if v is not None]

    def clear(self) -> None:
        """Drop every buffer and parameter."""
        self._buffers.clear()
        self._parameters.clear()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load ``state_dict``, first creating the buffers this state has not made yet.

        Parameters must exist already (the rule creates them when it attaches to a model).
        """
        for key, value in state_dict.items():
            owner, _, name = key.rpartition(".")
            module = self.get_submodule(owner) if owner else self
            if isinstance(module, RuleState) and name not in module._parameters and module._buffers.get(name) is None:
                module.set_buffer(name, torch.empty_like(value))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class StateFeedback:
    """A layer's feedback setting that reads its matrix from a rule's state at every forward.

    Layers hold a callable instead of the tensor itself, so moving the state (``rule.to``) or
    loading a checkpoint into it changes what the layer uses, with nothing to re-configure.
    """

    def __init__(self, state: RuleState, name: str):
        self.state, self.name = state, name

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return self.state.get(self.name)

    def __repr__(self) -> str:
        return f"StateFeedback({self.name!r})"
