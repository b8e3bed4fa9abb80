r"""Alignment of an online rule's updates with the exact online gradient, step by step.

An online rule writes an update $g^{\text{rule}}_t$ at time step $t$ of a trial
or sequence. Its reference is the exact online gradient of the instantaneous loss,
$\nabla_\theta L_t$, which the rule's declared ``reference`` rule computes in the same
setting (``rflo``/``fed`` → ``online_bptt``: the gradient through the whole trial so far with
the control loop detached). [`OnlineProbe`][bioplaus.analysis.online_alignment.OnlineProbe] runs the reference beside
the rule on one batch without changing anything the training sees (``.grad`` is restored after each reference
step) and reports, per layer, the mean over the steps of

$$
\cos_{\ell} = \frac{\langle g^{\text{rule}}_{\ell,t},\, G_{\ell,t}\rangle}
{\lVert g^{\text{rule}}_{\ell,t}\rVert\, \lVert G_{\ell,t}\rVert},
$$

where $G_t$ sums the reference steps since the rule's previous update, so a rule that
writes only at segment ends is held against the exact gradient of the same losses.

A rule without a reference (streaming truncated BPTT, whose summed updates over a sequence
are a batch gradient) is compared over the whole batch: its summed update against the
autograd gradient of the batch's loss with every layer at its default (full BPTT), as
[`alignment`][bioplaus.analysis.alignment] does for batch rules.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bioplaus.analysis.alignment import cuda_devices, grouped_cosines, trainable, true_gradient
from bioplaus.core import Context, Rule

ContextFn = Callable[[nn.Module, Any], Context]


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


class OnlineProbe:
    """Per-step alignment of ``rule`` with ``reference`` on one batch (module docstring).

    The runner calls [`reset`][bioplaus.analysis.online_alignment.OnlineProbe.reset] after the model's state is reset,
    [`before`][bioplaus.analysis.online_alignment.OnlineProbe.before] and
    [`after`][bioplaus.analysis.online_alignment.OnlineProbe.after] around each ``rule.step``,
    [`finish`][bioplaus.analysis.online_alignment.OnlineProbe.finish] before the optimizer step of a batch-stepped
    task, then [`result`][bioplaus.analysis.online_alignment.OnlineProbe.result].

    Args:
        rule: the online rule being trained.
        reference: the reference online rule, or ``None`` to compare the batch's summed update
            with the true gradient of ``context_fn(model, batch)``.
        model: the model, with ``rule`` attached.
        batch: the batch being probed (used when ``reference`` is ``None``).
        context_fn: the task's batch context, for the true gradient (when ``reference`` is ``None``).
    """

    def __init__(
        self,
        rule: Rule,
        reference: Rule | None,
        model: nn.Module,
        batch: Any = None,
        context_fn: ContextFn | None = None,
    ):
        self.rule, self.reference = rule, reference
        self.named = trainable(model)
        self.params = [p for _, p in self.named]
        self.cosines: list[dict[str, float]] = []
        self.seconds = 0.0
        self._pending: list[torch.Tensor] | None = None
        self._before: list[torch.Tensor] | None = None
        self._true: list[torch.Tensor] | None = None
        if reference is None:
            if context_fn is None:
                raise ValueError("an online probe without a reference rule needs the task's context function")
            start = time.perf_counter()
            saved = [p.grad for p in self.params]
            with torch.random.fork_rng(devices=cuda_devices(self.params)):
                self._true = true_gradient(model, self.params, batch, context_fn)
            for p, g in zip(self.params, saved, strict=True):
                p.grad = g
            self.seconds += time.perf_counter() - start
        else:
            shared = itertools.chain(model.modules(), model.parameters(), model.buffers())
            self.reference = copy.deepcopy(reference, {id(obj): obj for obj in shared})

    def reset(self, model: nn.Module) -> None:
        """The trial starts: reset the reference's own state."""
        if self.reference is not None:
            self.reference.reset(model)

    def before(self, model: nn.Module) -> None:
        """Called before ``rule.step``: remember ``.grad``."""
        if self.reference is not None:
            self._before = _grads(self.params)

    def after(self, model: nn.Module, ctx: Context) -> None:
        """Called after ``rule.step``: run the reference on the same context and compare."""
        if self.reference is None:
            return
        start = time.perf_counter()
        written = [now - was for now, was in zip(_grads(self.params), self._before, strict=True)]
        saved = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        try:
            with torch.random.fork_rng(devices=cuda_devices(self.params)):
                self.reference.step(model, ctx)
            exact = _grads(self.params)
        finally:
            for p, g in zip(self.params, saved, strict=True):
                p.grad = g
        pending = exact if self._pending is None else [a + b for a, b in zip(self._pending, exact, strict=True)]
        if any(bool(w.any()) for w in written):
            self.cosines.append(grouped_cosines(self.named, written, pending, "layer"))
            self._pending = None
        else:
            self._pending = pending
        self.seconds += time.perf_counter() - start

    def finish(self, model: nn.Module) -> None:
        """Before the batch's optimizer step (no reference): compare the summed update with the true gradient."""
        if self.reference is None and self._true is not None:
            self.cosines.append(grouped_cosines(self.named, _grads(self.params), self._true, "layer"))

    def result(self) -> dict[str, float]:
        """Per layer, the mean cosine over the compared steps (NaN where a layer never had both)."""
        out: dict[str, float] = {}
        for key in self.cosines[0] if self.cosines else []:
            values = [c[key] for c in self.cosines if not math.isnan(c[key])]
            out[key] = sum(values) / len(values) if values else math.nan
        return out
