r"""Analyses of feedback-controlled rate RNNs and their local rules (Kaleb et al., NeurIPS 2024, Section 3.2–3.5).

Definitions follow the official code where it has one;
the "true" gradient is always the one with the controller loop **detached** (the fed-back
error counts as an input, as in the official adaptation and alignment code) and
with the whole trial's history (the error is integrated, so ``L_t`` depends on every earlier
output). ``L_t = mean e_t²`` over the trials and both axes.

- [`feedback_alignment`][bioplaus.analysis.feedback_control.feedback_alignment]: static ``cos(M⊙W_fb, W_outᵀ)``,
  ``cos(M⊙W_fb, (W_out W_rec)ᵀ)`` (the pre-training log's ``wfbs_a``) and ``‖M⊙W_fb‖/‖W_out‖``.
- [`control_gradient_alignment`][bioplaus.analysis.feedback_control.control_gradient_alignment]: per step, ``cos(g
  (M⊙W_fb) c_t, −∂L_t/∂r_t)``, the control input against the instantaneous activity gradient, whose closed form is
  ``−∂L_t/∂r_t = dt·W_outᵀRᵀ e_t / B`` (position error).
- [`rule_alignment`][bioplaus.analysis.feedback_control.rule_alignment]: local alignment ``cos(Δ_t^rule,
  −∂L_t/∂W_rec)`` per step and global alignment ``cos(Σ_t Δ_t^rule, −Σ_t ∂L_t/∂W_rec)`` over a trial, weights frozen
 .
- [`efficiency`][bioplaus.analysis.feedback_control.efficiency]: ``‖W_end − W_start‖ / Σ_t η‖Δ_t‖`` (the official
  ``update_cost`` over ``update_cost_stepwise``, the latter with the learning rate so that a straight path gives 1).
- [`jacobian_norms`][bioplaus.analysis.feedback_control.jacobian_norms]: ``‖∂x_t/∂x_{t−1}‖`` along a trial, with the
  loop detached or included.
- [`newton_alignment`][bioplaus.analysis.feedback_control.newton_alignment]: ``cos(Δ_t^rule, s_t)`` with the damped
  Newton direction ``s_t = −(H_t + λI)^{-1} ∇L_t``, solved by conjugate gradients on Hessian-vector products
  (double backward); no ``n⁴`` Hessian is formed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from bioplaus.core import Context, Rule
from bioplaus.nets.rate_rnn import RateRNN
from bioplaus.rules.feedback_control import OnlineBPTT
from bioplaus.tasks.motor import Trials, online_trial


def _cos(a: torch.Tensor, b: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    a, b = a.detach().double(), b.detach().double()
    if dim is None:
        a, b, dim = a.flatten(), b.flatten(), 0
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim))


def feedback_alignment(model: RateRNN) -> dict[str, float]:
    """``cos(M⊙W_fb, W_outᵀ)``, ``cos(M⊙W_fb, (W_out W_rec)ᵀ)`` and ``‖M⊙W_fb‖/‖W_out‖`` (unsplit models)."""
    fb = model.feedback_weights
    return {
        "cos_fb_out": float(_cos(fb, model.W_out.T)),
        "cos_fb_out_rec": float(_cos(fb, (model.W_out @ model.W_rec).T)),
        "norm_ratio": float(fb.detach().norm() / model.W_out.detach().norm()),
    }


def activity_gradient(model: RateRNN, trials: Trials, r: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    r"""``−∂L_t/∂r_t`` for every step at once, by autograd through the model's own readout and error.

    With ``e_{t−1}`` held fixed, ``r_t`` reaches ``L_t = mean e_t²`` only through ``v_t``.

    Args:
        model: the model.
        trials: the trials ``r`` and ``e`` come from.
        r: rates ``(B, T, n)``.
        e: errors ``(B, T, n_out)``.

    Returns:
        ``(B, T, n)``.
    """
    B, T, n = r.shape
    with torch.enable_grad():
        rates = r.detach().reshape(B * T, n).requires_grad_(True)
        e_prev = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1).detach().reshape(B * T, -1)
        push = None if trials.push is None else trials.push.reshape(B * T, -1)
        cursor = None if trials.cursor is None else trials.cursor.repeat_interleave(T, 0)
        _, e_new = model.readout_error(rates, e_prev, trials.v_ref.reshape(B * T, -1), push, cursor)
        loss = e_new.pow(2).reshape(B, T, -1).mean((0, 2)).sum()  # Σ_t L_t; r_t reaches only L_t
        (grad,) = torch.autograd.grad(loss, rates)
    return -grad.reshape(B, T, n)


@torch.no_grad()
def control_gradient_alignment(
    model: RateRNN, trials: Trials, control: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per step, the mean over trials of ``cos(g (M⊙W_fb) c_t, −∂L_t/∂r_t)``: ``(T,)`` (NaN where either is 0)."""
    rollout = trials.rollout(model, control, generator)
    control_input = control * rollout.fed_back @ model.feedback_weights.T
    return _cos(control_input, activity_gradient(model, trials, rollout.r, rollout.e), dim=-1).nanmean(0)


def _take_grad(model: RateRNN) -> torch.Tensor:
    """``W_rec.grad`` (zeros if none), which is then cleared."""
    grad = model.W_rec.grad
    model.W_rec.grad = None
    return torch.zeros_like(model.W_rec) if grad is None else grad.detach().clone()


def _frozen_trial(
    model: RateRNN, rule: Rule, trials: Trials, control: float, generator: torch.Generator | None
) -> Iterator[tuple[Context, torch.Tensor]]:
    """Yield ``(ctx, Δ_t^rule)`` at each step of a trial with frozen weights (the rule attached meanwhile)."""
    rule.attach(model)
    try:
        with torch.enable_grad():
            for ctx in online_trial(model, rule, trials, control, generator):
                yield ctx, -_take_grad(model)
    finally:
        rule.detach(model)
        model.state = None


def rule_alignment(
    model: RateRNN, rule: Rule, trials: Trials, control: float = 1.0, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Local and global alignment of an online rule with online BPTT (loop detached) over one frozen-weight trial.

    Returns:
        ``local``: ``cos(Δ_t^rule, −∂L_t/∂W_rec)`` per step ``(T,)``; ``global``: ``cos(Σ_t Δ_t, −Σ_t ∂L_t/∂W_rec)``;
        ``rule_norm`` and ``true_norm``: ``‖Δ_t^rule‖`` and ``‖∂L_t/∂W_rec‖`` per step.
    """
    reference = OnlineBPTT()
    local, rule_norm, true_norm = [], [], []
    rule_sum = true_sum = 0
    for ctx, delta in _frozen_trial(model, rule, trials, control, generator):
        if ctx.t == 0:
            reference.reset(model)
        reference.step(model, ctx)
        true = _take_grad(model)
        local.append(_cos(delta, -true))
        rule_norm.append(delta.norm())
        true_norm.append(true.norm())
        rule_sum, true_sum = rule_sum + delta, true_sum - true
    return {
        "local": torch.stack(local),
        "global": _cos(rule_sum, true_sum),
        "rule_norm": torch.stack(rule_norm),
        "true_norm": torch.stack(true_norm),
    }


def efficiency(displacement: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """``‖W_end − W_start‖ / Σ_t η‖Δ_t‖``: 1 for updates that all point the same way, → 0 for ones that cancel."""
    return displacement / path.clamp_min(1e-30)


@torch.no_grad()
def jacobian_norms(
    model: RateRNN,
    trials: Trials,
    control: float = 1.0,
    loop: bool = False,
    ord: int | str = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""``‖∂x_t/∂x_{t−1}‖`` per trial and step, ``(B, T)``, along a closed-loop trial with gain ``control``.

    $$
    \frac{\partial x_t}{\partial x_{t-1}} = (1-\alpha) I + \alpha\, W_{\mathrm{eff}}\, D_{t-1},
    \qquad W_{\mathrm{eff}} = W_{rec} + [\text{loop}]\, g\,(M\odot W_{fb})\, \partial e_{t-1}/\partial r_{t-1}
    $$

    with ``D = diag φ'(x)``, ``∂e/∂r = −dt R W_out`` (position error) or ``−R W_out`` (velocity
    error). With ``loop=False`` the controller loop is detached (the adaptation setting); the loop
    term exists only for ``fb_delay = 0`` (with a delay, the error reaches the units later).

    Args:
        ord: matrix norm (``2``: spectral, ``"fro"``: Frobenius).
    """
    rollout = trials.rollout(model, control, generator)
    B, T, n = rollout.x.shape
    w = model.W_rec if model.W_rec.dim() == 3 else model.W_rec.expand(1, n, n)
    w = w.repeat_interleave(B // w.shape[0], 0)  # (B, n, n)
    if loop and model.fb_delay == 0:
        de_dr = -model.W_out.expand(B, -1, -1)
        de_dr = de_dr if trials.cursor is None else trials.cursor @ de_dr
        de_dr = de_dr * (model.dt if model.error == "position" else 1.0)
        w = w + control * model.feedback_weights @ de_dr
    eye = torch.eye(n, dtype=w.dtype)
    norms = [torch.full((B,), float("nan"), dtype=w.dtype)]  # x_0 is not recorded
    for t in range(1, T):
        d_prev = (rollout.x[:, t - 1] > 0).to(w.dtype).unsqueeze(1)  # D_{t-1} on the columns
        norms.append(torch.linalg.matrix_norm((1 - model.alpha) * eye + model.alpha * w * d_prev, ord=ord))
    return torch.stack(norms, 1)


def _conjugate_gradient(hvp, b: torch.Tensor, damping: float, iterations: int, tol: float) -> torch.Tensor:
    """Solve ``(H + λI) s = b`` by CG; stops at ``tol`` relative residual or at negative curvature."""
    s = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = (r * r).sum()
    for _ in range(iterations):
        hp = hvp(p) + damping * p
        curvature = (p * hp).sum()
        if curvature <= 0:
            break
        step = rr / curvature
        s, r = s + step * p, r - step * hp
        rr_new = (r * r).sum()
        if rr_new.sqrt() <= tol * b.norm():
            break
        p, rr = r + rr_new / rr * p, rr_new
    return s


def newton_alignment(
    model: RateRNN,
    rule: Rule,
    trials: Trials,
    steps: Iterable[int],
    control: float = 1.0,
    damping: float = 1e-3,
    cg_iterations: int = 50,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
) -> dict[int, float]:
    r"""``cos(Δ_t^rule, s_t)`` with ``s_t = −(H_t + λI)^{-1} ∇_{W_rec} L_t`` at the given steps (frozen weights).

    ``H_t = ∂²L_t/∂W_rec²`` (loop detached, whole history) enters only through Hessian-vector
    products, by double backward; the official code builds the dense ``n²×n²`` Hessian and uses a
    pseudo-inverse of ``H + 10⁻³ I``. ``H`` may be indefinite: CG stops at the first direction of
    non-positive curvature (truncated Newton).
    """
    wanted = set(steps)
    out: dict[int, float] = {}
    for ctx, delta in _frozen_trial(model, rule, trials, control, generator):
        if ctx.t not in wanted:
            continue
        loss = model.per_condition(ctx.signal("feedback_error").pow(2).mean(-1)).sum()
        (grad,) = torch.autograd.grad(loss, model.W_rec, create_graph=True, retain_graph=True)

        def hvp(v: torch.Tensor, grad=grad) -> torch.Tensor:
            return torch.autograd.grad(grad, model.W_rec, v, retain_graph=True)[0].detach()

        newton = _conjugate_gradient(hvp, -grad.detach(), damping, cg_iterations, tol)
        out[ctx.t] = float(_cos(delta, newton))
    return out
