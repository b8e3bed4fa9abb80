r"""SAB's sparse memory read with the MLP scorer (ranking, top-k, sparsifier, sum), one autograd node.

Every slot ``[m_j; κ_j]`` (value and key) of the memory is scored, the ``R`` best are kept
(``R = k_top + 1``, or ``k_top`` for the official threshold) and read:

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
``torch.tanh`` is several times slower than ``torch.sigmoid`` on CPUs. Ranking needs no graph;
only the winners' values, ``σ(2u_j)`` and indices are saved, so the graph per step holds
``O(R)`` slots. The memory gradient ``(m̄_j, κ̄_j)`` is added into the memory's gradient buffer
at the winners' slots (:mod:`~bioplaus.nets.sab_memory`), never returned as a memory-shaped tensor.
"""

from __future__ import annotations

import torch

TINY = 1e-12
"""Floor of the normaliser when all kept scores tie: the weights are then 0, not NaN."""


def _tanh(u: torch.Tensor) -> torch.Tensor:
    """``tanh u = 2σ(2u) − 1``, overwriting ``u``."""
    return u.mul_(2).sigmoid_().mul_(2).sub_(1)


class SparseRead(torch.autograd.Function):
    """``(s, w, idx) = read(q, v, link, store, R, δ, ε)``: rank every slot, keep ``R`` winners, read them.

    Inputs: ``q`` ``(B, K)`` query term ``W_q ĥ + b_q``; ``v`` ``(1, K)`` scorer output weight;
    ``link`` the memory's token (orders this read before the writes' backward, see
    :mod:`~bioplaus.nets.sab_memory`); ``store`` the memory's buffers
    (:class:`~bioplaus.nets.sab_memory.SlotStore`, more than ``R`` slots); ``R`` winners kept
    (``k_top + 1``, or ``k_top`` for the official threshold); ``shift`` δ and ``eps`` ε.
    Outputs: the summary ``s`` ``(B, H)``, and, not differentiable (for logging), the winners'
    weights ``w`` and slots ``idx`` ``(B, R)``.

    Ranking scores every slot by ``a' = vᵀσ(2(q + κ)) = (a + Σv)/2``, an increasing function of
    ``a``, so ``topk`` returns the winners sorted, the threshold's at the end, and
    ``a_j − τ = 2(a'_j − a'_R)``. The backward adds ``(w_j g, ū_j)`` into the memory's gradient
    buffer at the winners' slots (the side channel) and returns the gradients of ``q`` and ``v``.
    """

    @staticmethod
    def forward(ctx, q, v, link, store, rank: int, shift: float, eps: float):  # type: ignore[override]
        H, n = store.hidden, store.n
        B, _, D = store.data.shape
        q2 = q.unsqueeze(1) * 2
        score = torch.add(q2, store.data[:, :n, H:], alpha=2).sigmoid_() @ v[0]  # a' = vᵀσ(2u), (B, n)
        top, idx = score.topk(rank, 1)
        r = (top - top[:, -1:]).mul_(2)
        if shift:
            r.sub_(shift).relu_()
        total = r.sum(1, keepdim=True)
        total = total.add_(eps) if eps else total.clamp_min_(TINY)
        w = r.div_(total)
        winners = store.data.view(-1, D).index_select(0, store.flat(idx)).view(B, rank, D)
        values = winners[..., :H]
        s = (w.unsqueeze(2) * values).sum(1)
        sig = torch.add(q2, winners[..., H:], alpha=2).sigmoid_()  # the winners' σ(2u), for the backward
        ctx.save_for_backward(v, values, sig, w, total, idx)
        ctx.store = store
        ctx.mark_non_differentiable(w, idx)
        return s, w, idx

    @staticmethod
    def backward(ctx, g_s, _g_w, _g_idx):  # type: ignore[override]
        v, values, sig, w, total, idx = ctx.saved_tensors
        g_w = torch.bmm(values, g_s.unsqueeze(2)).squeeze(2)
        g_r = (g_w - (w * g_w).sum(1, keepdim=True)).div_(total)
        g_a = g_r.mul_(w > 0)
        g_a[:, -1:].sub_(g_a.sum(1, keepdim=True))  # the threshold's score (its own weight is 0)
        g_u = torch.addcmul(sig, sig, sig, value=-1).mul_(v[0] * 4).mul_(g_a.unsqueeze(2))  # ā v (1 − t²)
        g_v = (g_a.view(1, -1) @ sig.view(-1, sig.shape[2])).mul_(2).sub_(g_a.sum())  # Σ ā t, t = 2σ − 1
        g_slots = torch.cat([w.unsqueeze(2) * g_s.unsqueeze(1), g_u], 2)
        store = ctx.store
        store.grad_buffer().index_add_(0, store.flat(idx), g_slots.view(-1, g_slots.shape[2]))
        return g_u.sum(1), g_v, None, None, None, None, None
