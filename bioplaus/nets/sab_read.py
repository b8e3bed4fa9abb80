r"""SAB's sparse memory read with the MLP scorer, fused into one autograd node.

For the ``R`` winners ``j`` of a row (picked beforehand by ranking, ``R = k_top + 1``, or
``k_top`` for the official threshold), with memory slots ``[m_j; κ_j]`` (value and key):

.. math::

    u_j = q + \kappa_j, \quad t_j = \tanh u_j, \quad a_j = v^\top t_j, \quad
    \tau = \min_j a_j + \delta, \quad r_j = \mathrm{relu}(a_j - \tau), \quad
    Z = \textstyle\sum_j r_j + \epsilon, \quad w_j = r_j / Z, \quad s = \sum_j w_j m_j

(Ke et al. 2018, §3; ``δ, ε`` are 0 for the ``"k+1"`` threshold and 1e-7 for the official
``"k"``; with ``ε = 0`` the normaliser is floored at 1e-12 so tied scores give zero weights).
Eager PyTorch records about twenty small autograd nodes for this per time step, and at
``B = 32, H = 64`` their bookkeeping costs more than their arithmetic. This node computes the
same function and its exact gradient by hand, from the upstream ``g = ∂L/∂s``:

.. math::

    \bar w_j = g \cdot m_j, \quad \bar m_j = w_j\, g, \quad
    \bar r_j = (\bar w_j - \textstyle\sum_l w_l \bar w_l) / Z, \quad
    \bar a_j = \bar r_j\,[r_j > 0] \;(+ \textstyle -\sum_l \bar r_l [r_l > 0] \text{ at } j = \arg\min a), \\
    \bar u_j = \bar a_j\, v \odot (1 - t_j^2), \quad \bar\kappa_j = \bar u_j, \quad
    \bar q = \textstyle\sum_j \bar u_j, \quad \bar v = \sum_{b, j} \bar a_j\, t_j

(the threshold is not detached, as in the official code, so the score defining ``τ`` gets
``−Σ ā``). ``tanh u`` is computed as ``2σ(2u) − 1``, the same value to rounding, because
``torch.tanh`` is several times slower than ``torch.sigmoid`` on CPUs. The memory gradient is
scattered into a bank-shaped tensor (the winners' indices are saved, never the bank), so the
graph per step holds ``O(R)`` slots, as with advanced indexing.
"""

from __future__ import annotations

import torch

TINY = 1e-12
"""Floor of the normaliser when all kept scores tie: the weights are then 0, not NaN."""


def _tanh(u: torch.Tensor) -> torch.Tensor:
    """``tanh u = 2σ(2u) − 1``, overwriting ``u``."""
    return u.mul_(2).sigmoid_().mul_(2).sub_(1)


class SparseRead(torch.autograd.Function):
    """``(s, w) = read(q, v, bank, rows, idx)``; see the module docstring for the maths.

    Inputs: ``q`` ``(B, K)`` query term ``W_q ĥ + b_q``; ``v`` ``(1, K)`` scorer output weight;
    ``bank`` ``(B, S, H + K)`` memory slots ``[m; κ]``; ``rows`` ``(B, 1)`` and ``idx`` ``(B, R)``
    the winners' batch rows and slots; ``shift`` δ and ``eps`` ε. Outputs: the summary ``s``
    ``(B, H)`` and the winners' weights ``w`` ``(B, R)`` (not differentiable; for logging).
    """

    @staticmethod
    def forward(ctx, q, v, bank, rows, idx, shift: float, eps: float):  # type: ignore[override]
        B, S, D = bank.shape
        H, R = D - q.shape[1], idx.shape[1]
        flat = (rows * S + idx).view(-1)
        winners = bank.reshape(B * S, D).index_select(0, flat).view(B, R, D)
        values = winners[..., :H]
        t = _tanh(winners[..., H:] + q.unsqueeze(1))
        a = t @ v[0]
        low, low_at = a.min(1, keepdim=True)
        r = (a - low).sub_(shift).relu_() if shift else (a - low).relu_()
        total = r.sum(1, keepdim=True)
        total = total.add_(eps) if eps else total.clamp_min_(TINY)
        w = r.div_(total)
        s = (w.unsqueeze(2) * values).sum(1)
        ctx.save_for_backward(v, values, t, w, total, low_at, flat)
        ctx.bank_shape = bank.shape
        ctx.mark_non_differentiable(w)
        return s, w

    @staticmethod
    def backward(ctx, g_s, _g_w):  # type: ignore[override]
        v, values, t, w, total, low_at, flat = ctx.saved_tensors
        B, S, D = ctx.bank_shape
        g_w = (values * g_s.unsqueeze(1)).sum(2)
        g_r = (g_w - (w * g_w).sum(1, keepdim=True)).div_(total)
        g_a = g_r.mul_(w > 0)
        g_a.scatter_add_(1, low_at, -g_a.sum(1, keepdim=True))
        g_u = (1 - t * t).mul_(g_a.unsqueeze(2) * v)
        g_v = (g_a.unsqueeze(2) * t).sum((0, 1)).unsqueeze(0)
        g_winners = torch.cat([w.unsqueeze(2) * g_s.unsqueeze(1), g_u], 2).view(-1, D)
        g_bank = g_winners.new_zeros(B * S, D).index_add_(0, flat, g_winners).view(B, S, D)
        return g_u.sum(1), g_v, g_bank, None, None, None, None
