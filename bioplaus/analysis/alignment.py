"""How close is a rule's update to the true gradient? Per-layer cosine against backprop."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bioplaus.core import Context, Rule, default_settings
from bioplaus.errors import ConfigError

ContextFn = Callable[[nn.Module, Any], Context]


def cross_entropy_context(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Context:
    """Default context: ``batch = (x, labels)``, softmax cross-entropy on ``model(x)``."""
    x, y = batch
    output = model(x)
    return Context(loss=F.cross_entropy(output, y), output=output, target=y)


def _cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    u = torch.cat([t.flatten() for t in a]).double()
    v = torch.cat([t.flatten() for t in b]).double()
    denom = u.norm() * v.norm()
    return float("nan") if denom == 0 else float(u @ v / denom)


def alignment(
    model: nn.Module, rule: Rule, batch: Any, context_fn: ContextFn | None = None, by: str = "layer"
) -> dict[str, float]:
    r"""Cosine between the rule's update and the backprop gradient, per layer, on one batch.

    $$
    \cos_\ell = \frac{\langle g^{\text{rule}}_\ell,\, \nabla_\ell L\rangle}
    {\lVert g^{\text{rule}}_\ell\rVert\, \lVert \nabla_\ell L\rVert}
    $$

    where ``g_ℓ`` concatenates the gradients of a module's own parameters (weight and bias).
    The true gradient comes from a second forward pass with every layer switched back to plain
    backprop ([`default_settings`][bioplaus.core.layers.default_settings]). Nothing observable changes: ``.grad`` of
    every parameter is restored, the rule's own state is untouched (the update runs on a copy of
    the rule that shares the model), and the random number generator is restored, so logging
    alignment during training does not change the training run. Both forward passes see the
    same random numbers (same dropout masks).

    Args:
        model: the model, with the rule attached.
        rule: a batch rule (online rules have their own, per-time-step analyses).
        batch: one batch, passed to ``context_fn``.
        context_fn: ``(model, batch) -> Context``; default: ``batch = (x, y)`` with cross-entropy.
        by: ``"layer"`` (one value per module owning parameters) or ``"parameter"``.

    Returns:
        Name → cosine (NaN where either gradient is zero, e.g. a layer the rule does not train).
    """
    check_by(by)
    if rule.online:
        raise TypeError(f"rule '{rule.name}' learns online; alignment() compares batch updates")
    context_fn = context_fn or cross_entropy_context
    named = trainable(model)
    params = [p for _, p in named]
    shared = itertools.chain(model.modules(), model.parameters(), model.buffers())
    probe = copy.deepcopy(rule, {id(obj): obj for obj in shared})
    saved_grads = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.random.fork_rng(devices=cuda_devices(params)):
            rng = torch.get_rng_state()
            probe.update(model, context_fn(model, batch))
            rule_grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            torch.set_rng_state(rng)
            true_grads = true_gradient(model, params, batch, context_fn)
    finally:
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
    return grouped_cosines(named, rule_grads, true_grads, by)


def check_by(by: str) -> None:
    """Raise ``ConfigError`` unless ``by`` is ``"layer"`` or ``"parameter"``."""
    if by not in ("layer", "parameter"):
        raise ConfigError(f"alignment by must be 'layer' or 'parameter', got {by!r}")


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters that require gradients, with their names."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def cuda_devices(params: list[torch.Tensor]) -> list[int]:
    """CUDA device indices of ``params`` (whose RNGs ``fork_rng`` must save)."""
    return sorted({p.device.index for p in params if p.device.type == "cuda"})


def true_gradient(
    model: nn.Module, params: list[torch.Tensor], batch: Any, context_fn: ContextFn
) -> list[torch.Tensor]:
    """Autograd's gradient of the context's loss with every layer at its default (plain backprop); 0 if unused."""
    with default_settings(model):
        loss = context_fn(model, batch).loss
        true = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, true, strict=True)]


def grouped_cosines(
    named: list[tuple[str, nn.Parameter]], rule_grads: list[torch.Tensor], true_grads: list[torch.Tensor], by: str
) -> dict[str, float]:
    """Cosine per module (``by="layer"``: a module's own parameters together) or per parameter."""
    groups: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(named):
        key = name if by == "parameter" else name.rpartition(".")[0] or name
        groups.setdefault(key, []).append(i)
    return {key: _cosine([rule_grads[i] for i in idx], [true_grads[i] for i in idx]) for key, idx in groups.items()}
