r"""Global error-vector broadcasting (GEVB) and exact scalar-credit BP for vectorized nonnegative networks.

Clark, Abbott & Chung (2021), "Credit Assignment Through Broadcasting a Global Error Vector",
NeurIPS; equations and the official code's layout in the GEVB page of the documentation. In a VNN
with the gates fixed, ``∂h^L/∂h^ℓ_i = δ^ℓ_i I_K`` with a *scalar* credit per unit,

$$
δ^L = 1, \qquad δ^ℓ_i = G^ℓ_i \sum_m W^{ℓ+1}_{mi}\, δ^{ℓ+1}_m ,
$$

so with the output error ``e = ∂L/∂h^L = softmax − onehot`` (per example, ÷B for a mean loss)

$$
\frac{∂L}{∂W^ℓ_{ij}} = δ^ℓ_i\,(e · r^{ℓ-1}_j), \qquad \frac{∂L}{∂b^ℓ_i} = δ^ℓ_i\, e .
$$

**GEVB** replaces ``δ^ℓ_i`` by the postsynaptic gate ``G^ℓ_i ∈ \{0, 1\}``: a three-factor rule,
presynaptic ``e · r_j``, postsynaptic "active or not", global ``e``; the readout gets its exact
gradient (``δ^L = 1``). In a nonnegative VNN ``δ^ℓ_i ≥ 0`` and ``δ^ℓ_i = 0`` whenever
``G^ℓ_i = 0``, so each example's GEVB update is sign-matched to the gradient.

Both rules compute "project ``e · r`` first, then one ordinary weight gradient" per layer (
item 10): no per-synapse K-vectors, no K-fold backward. ``scalar_bp`` propagates δ through a
scalar "shadow" of the network (the same weights, gates fixed, 1/K of the vector cost) — the
official code's hand-written BP, which it checks against autograd; here it is tested against
autograd to float64 precision. bioplaus follows the official code where the paper text was not
available; departures: the first layer holds ``K × n₀`` weights instead of
multiplying a block-diagonal expanded input (same function, K× fewer FLOPs).
"""

from __future__ import annotations

import torch
from torch import nn

from bioplaus.core import Capability, Context, Rule
from bioplaus.errors import ConfigError
from bioplaus.nets.vnn import VNN, VectorLayer
from bioplaus.rules._registry import register


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    """``param.grad += grad``; ``grad`` is a fresh tensor, so it is stored without a copy."""
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad.add_(grad.detach())


class ScalarCreditRule(Rule):
    """Shared machinery of ``gevb`` and ``scalar_bp``: they differ only in the per-unit credit."""

    requires = frozenset({Capability.VECTORIZED})
    signals = frozenset({"loss", "output"})

    def attach(self, model: nn.Module) -> None:
        if not isinstance(model, VNN):
            raise ConfigError(
                f"rule '{self.name}' trains vectorized networks (bioplaus.nets.vnn: models vnn, vnn_conv, vnn_lc), "
                f"not {type(model).__name__}"
            )
        for layer in self.weight_layers(model):
            layer.configure(record={"input", "gate"}, detach_input=True)

    @staticmethod
    def weight_layers(model: VNN) -> list[VectorLayer]:
        return [m for m in model.layers if isinstance(m, VectorLayer)]

    def credits(self, model: VNN) -> list[torch.Tensor]:
        """One scalar credit tensor per weight layer, shaped like its units (no K axis)."""
        raise NotImplementedError

    def update(self, model: nn.Module, ctx: Context) -> None:
        ctx.require("loss", "output", rule=f"rule '{self.name}'")
        error = ctx.output_error()
        for layer, credit in zip(self.weight_layers(model), self.credits(model), strict=True):
            grad_w, grad_b = layer.credit_grads(layer.recorded("input"), credit, error)
            _accumulate(layer.weight, grad_w)
            _accumulate(layer.bias, grad_b)


@register("gevb")
class GEVB(ScalarCreditRule):
    r"""GEVB: ``ΔW^ℓ_{ij} ∝ −G^ℓ_i (e · r^{ℓ−1}_j)``, ``Δb^ℓ_i ∝ −G^ℓ_i e``; readout exact.

    Clark, Abbott & Chung (NeurIPS 2021). No feedback weights and no backward
    pass: the credit of a hidden unit is its own gate (the mask of the nonlinearity right after
    its weight layer, computed from the pre-gate ``h`` with its bias).
    """

    def credits(self, model: VNN) -> list[torch.Tensor]:
        *hidden, readout = self.weight_layers(model)
        x = readout.recorded("input")
        return [*(layer.recorded("gate") for layer in hidden), x.new_ones(x.shape[0], readout.weight.shape[0])]


@register("scalar_bp")
class ScalarCreditBackprop(ScalarCreditRule):
    r"""Exact BP in a VNN with one scalar credit per unit: ``δ^ℓ_i = G^ℓ_i Σ_m W^{ℓ+1}_{mi} δ^{ℓ+1}_m``.

    Equals autograd's gradient on every parameter (tested in float64) at a fraction of its cost:
    the credit travels through a scalar copy of the network with the gates fixed (one value per
    unit instead of K), then each layer takes one weight gradient of the projected input ``e·r``.
    """

    def credits(self, model: VNN) -> list[torch.Tensor]:
        first, *rest = model.layers
        gate = first.recorded("gate")
        with torch.enable_grad():
            a = torch.zeros_like(gate, requires_grad=True)
            pres, s = [a], a * gate
            for module in rest:
                if isinstance(module, VectorLayer):
                    a = module.op.inner.forward(s, module.weight.detach(), None)
                    pres.append(a)
                    s = a * module.recorded("gate") if module.gated else a
                else:
                    s = module.credit_forward(s)
            return list(torch.autograd.grad(s.sum(), pres))
