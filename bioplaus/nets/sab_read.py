r"""SAB's attention step with the MLP scorer (query, ranking, top-k, sparsifier, sum, write), one autograd node.

From the provisional state $\hat h$ (``(B, H)``) and every memory slot ``[m_j; κ_j]``
(value and the key ``κ_j = W_m m_j`` kept from its write):

$$
\begin{gathered}
q = W_q \hat h + b_q, \quad u_j = q + \kappa_j, \quad t_j = \tanh u_j, \quad a_j = v^\top t_j, \\
\tau = a_{(R)} + \delta, \quad r_j = \mathrm{relu}(a_j - \tau), \quad
Z = \textstyle\sum_j r_j + \epsilon, \quad w_j = r_j / Z, \quad s = \sum_j w_j m_j, \quad
\text{out} = [\hat h + s;\ s]
\end{gathered}
$$

(Ke et al. 2018, Section 3): the ``R`` best slots are kept (``R = k_top + 1``, or ``k_top`` for the
official threshold; ``δ, ε`` are 0 for ``"k+1"`` and 1e-7 for ``"k"``; with ``ε = 0`` the
normaliser is floored at 1e-12 so tied scores give zero weights). ``R = 0`` is the rule for a
memory of at most ``k_top`` slots: ``w_j = 1/n`` for every slot, no score. ``out`` is what
[`AttentiveLSTM`][bioplaus.nets.sab.AttentiveLSTM] needs, the new state ``h = ĥ + s`` and the readout's
``[h; s]``. Eager PyTorch records about twenty-five small autograd nodes for this per time step,
and at ``B = 32, H = 64`` their bookkeeping costs more than their arithmetic. This node computes
the same function and its exact gradient by hand, from the upstream ``g = ∂L/∂s = ∂L/∂h`` plus
both halves of ``∂L/∂out`` (``h`` is also an output, the next state):

$$
\begin{gathered}
\bar w_j = g \cdot m_j, \quad \bar m_j = w_j\, g, \quad
\bar r_j = (\bar w_j - \textstyle\sum_l w_l \bar w_l) / Z, \quad
\bar a_j = \bar r_j\,[r_j > 0] \;(+ \textstyle -\sum_l \bar r_l [r_l > 0] \text{ at } j = \arg\min a), \\
\bar u_j = \bar a_j\, v \odot (1 - t_j^2), \quad \bar\kappa_j = \bar u_j, \quad
\bar q = \textstyle\sum_j \bar u_j, \quad \bar v = \sum_{b, j} \bar a_j\, t_j, \quad
\bar{\hat h} = \bar h + \bar{\text{out}}_{1:H} + W_q^\top \bar q, \quad
\bar W_q = \bar q\, \hat h^\top, \quad \bar b_q = \bar q
\end{gathered}
$$

(the threshold is not detached, as in the official code, so the score defining ``τ`` gets
``−Σ ā``). The forward saves ``ĥ``, the weights, the winners' slots and ``Z``, not the winners:
their values and ``t_j`` are read again from the memory, which is never overwritten, and the query
``q`` is recomputed from ``ĥ``.
The memory gradient ``(m̄_j, κ̄_j)`` is added into the memory's gradient buffer at the winners'
slots ([`sab_memory`][bioplaus.nets.sab_memory]), never returned as a memory-shaped tensor. A step that
also writes ``h`` into the memory first adds the gradient its slot gathered to ``h̄``
([`AttentionStep`][bioplaus.nets.sab_read.AttentionStep]).

Two implementations compute this: a C kernel ([`bioplaus.native.sab`][bioplaus.native.sab], one pass per batch row,
used for float32 CPU tensors when it compiles) and PyTorch operations (everything else, and the
reference the kernel is tested against). Over the kernel, the node is C++ where a C++ compiler
builds it ([`attention_step`][bioplaus.nets.sab_read.attention_step], ``bioplaus/native/sab_step.cpp``), else this
Python node. The PyTorch path computes ``tanh u`` as ``2σ(2u) − 1``, the same value to rounding, because
``torch.tanh`` is several times slower than ``torch.sigmoid`` on CPUs.
"""

from __future__ import annotations

import torch

from bioplaus.native import sab as kernel
from bioplaus.nets.sab_memory import TINY, SlotStore


class ReadPlan:
    """What every step of one sequence shares: the memory, the threshold's constants, the scorer's
    parameters, their gradient accumulator, whether the C kernel serves them, and whether steps write
    their state themselves.

    Made once per sequence (`reset_state`), so that a
    step does no set-up work: at ``B = 32, H = 64`` each microsecond of Python per step is
    about half a percent of an LSTM step. The steps do not take the scorer's parameters as
    autograd inputs: each step's backward adds their gradient into [`grads`][bioplaus.nets.sab_read.ReadPlan.grads],
    and one node per sequence ([`ParamGrads`][bioplaus.nets.sab_read.ParamGrads], ordered after every step's backward
    by the memory's token) hands the sums on. That spares the autograd engine four gradient tensors per step.

    Args:
        store: the memory's buffers ([`SlotStore`][bioplaus.nets.sab_memory.SlotStore]).
        shift: δ added to the threshold.
        eps: ε added to the normaliser (0: floored at [`TINY`][bioplaus.nets.sab_memory.TINY]).
        params: the scorer's ``(W_q, b_q, v, W_m)``: ``b_q`` may be ``None``; ``W_m`` is ``None``
            unless steps write their state and its key ``W_m h`` themselves (single backward, the
            token chain of [`sab_memory`][bioplaus.nets.sab_memory]).
    """

    __slots__ = (
        "store", "shift", "eps", "params", "lib", "op", "plan_bytes", "writes", "grads", "sizes", "state_base",
        "_tracked", "_version", "_transposes",
    )  # fmt: skip

    def __init__(self, store: SlotStore, shift: float, eps: float, params: tuple[torch.Tensor | None, ...]):
        self.store, self.shift, self.eps, self.params = store, shift, eps, params
        w_q, b_q, v, w_m = params
        self.writes = w_m is not None
        self.sizes = tuple(w_q.shape)
        """``(K, H)``."""
        K, H = self.sizes
        self.state_base = kernel.state_size(H, 0)
        """Floats a read keeps per row besides its ``R`` weights ([`state_size`][bioplaus.native.sab.state_size])."""
        self._tracked = [p for p in params if p is not None]
        self.grads = store.data.new_zeros(2 * K * H + 2 * K)
        """Accumulated ``[∂L/∂W_q; ∂L/∂b_q; ∂L/∂v; ∂L/∂W_m]``, flat, from the backward of the steps so far."""
        self.lib = store.lib if store.lib is not None and kernel.accepts(*params) else None
        """The compiled kernels when they serve this memory and these parameters, else ``None``."""
        self.op = kernel.operator() if self.lib is not None else None
        """The step's C++ autograd node ([`operator`][bioplaus.native.sab.operator]) when it serves, else ``None``."""
        self.plan_bytes = None if self.op is None else kernel.plan_bytes(store.native)
        """The kernels' plan as the C++ node takes it."""
        self._version, self._transposes = -1, ()
        if self.lib is not None:
            plan = store.native
            plan.shift, plan.eps, plan.g_params = shift, eps, self.grads.data_ptr()
            plan.w_q, plan.v = w_q.data_ptr(), v.data_ptr()
            plan.b_q = None if b_q is None else b_q.data_ptr()
            plan.w_m = None if w_m is None else w_m.data_ptr()
            self.refresh()

    def version(self) -> int:
        """A number that changes whenever one of the parameters is modified in place (an optimiser step)."""
        version = 0
        for p in self._tracked:
            version += p._version
        return version

    def refresh(self) -> int:
        """Bring the kernel's transposed weights up to date (they are redone only after the weights changed);
        returns [`version`][bioplaus.nets.sab_read.ReadPlan.version]."""
        version = self.version()
        if version != self._version:
            w_q, _, _, w_m = self.params
            self._transposes = tuple(w.detach().t().contiguous() for w in (w_q, w_m) if w is not None)
            plan = self.store.native
            plan.w_q_t = self._transposes[0].data_ptr()
            plan.w_m_t = self._transposes[1].data_ptr() if w_m is not None else None
            self._version = version
        return version

    def root(self) -> torch.Tensor:
        """The root of the sequence's ordering ([`start`][bioplaus.nets.sab_memory.MemoryBank.start]):
        [`ParamGrads`][bioplaus.nets.sab_read.ParamGrads]' output, with a graph even where no scorer parameter requires
        grad (a fresh leaf is its extra input). Every step's node reaches it through its link, so its context, which
        holds this plan and, through it, every buffer the kernels' plan points at, lives as long as any step's node:
        the C++ node ([`attention_step`][bioplaus.nets.sab_read.attention_step]) holds only the address."""
        with torch.enable_grad():  # whichever mode the sequence starts in
            return ParamGrads.apply(self, self.grads.new_zeros(()).requires_grad_(), *self.params)

    def take_grads(self) -> tuple[torch.Tensor | None, ...]:
        """The accumulated gradients of ``(W_q, b_q, v, W_m)`` (``None`` for absent ones); the accumulator restarts
        from zero."""
        grads, (K, H) = self.grads, self.sizes
        self.grads = torch.zeros_like(grads)
        if self.lib is not None:
            self.store.native.g_params = self.grads.data_ptr()
        _, b_q, _, w_m = self.params
        KH = K * H
        return (
            grads[:KH].view(K, H),
            None if b_q is None else grads[KH : KH + K],
            grads[KH + K : KH + 2 * K].view(1, K),
            None if w_m is None else grads[KH + 2 * K :].view(K, H),
        )


class ParamGrads(torch.autograd.Function):
    """``link = ParamGrads(plan, leaf, W_q, b_q, v, W_m)``: the scorer's parameters enter a sequence's graph here, once
    (``leaf``: a tensor that requires grad, so that the link has a graph in any case,
    [`ReadPlan.root`][bioplaus.nets.sab_read.ReadPlan.root]).

    The memory's first token ([`start`][bioplaus.nets.sab_memory.MemoryBank.start]): every step of
    the sequence holds it or a later token, so this backward runs after all of theirs and hands the
    gradients they accumulated in ``plan.grads`` ([`ReadPlan.take_grads`][bioplaus.nets.sab_read.ReadPlan.take_grads])
    to the parameters. A streaming backward reaches it once per segment and hands on that segment's share. A
    ``torch.autograd.grad`` that asks for other inputs only runs the steps, not this node: their
    shares stay in the buffer and reach the parameters with the sequence's next backward (as the
    memory's slot gradients do); start a new sequence in between.
    """

    @staticmethod
    def forward(ctx, plan: ReadPlan, leaf, w_q, b_q, v, w_m):  # type: ignore[override]
        ctx.plan = plan
        return w_q.new_zeros(())

    @staticmethod
    def backward(ctx, _g_link):  # type: ignore[override]
        grads = ctx.plan.take_grads()
        return (None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[2:], strict=True)))


class AttentionStep(torch.autograd.Function):
    """``(h, out, token) = step(ĥ, link, plan, R, write)``: read the memory and, if ``write``, store the new state
    ``h`` in it.

    Inputs: ``ĥ`` ``(B, H)``; ``link`` the memory's token (orders this step before the earlier
    writes' backward and [`ParamGrads`][bioplaus.nets.sab_read.ParamGrads], see
    [`sab_memory`][bioplaus.nets.sab_memory]); ``plan`` the sequence's [`ReadPlan`][bioplaus.nets.sab_read.ReadPlan]
    (the memory, with at least ``R`` slots, δ, ε and the scorer's parameters); ``R`` winners kept (``0``: uniform
    weights over every slot).
    Outputs: the new state ``h = ĥ + s`` ``(B, H)``, the readout's input ``out = [h; s]``
    ``(B, 2H)`` (``h`` twice, so that neither use needs a slicing node) and, if ``write``, the
    new token (else ``None``). ``store.last_read`` keeps what logging needs
    ([`read_weights`][bioplaus.nets.sab_read.read_weights]).

    The backward returns ``∂L/∂ĥ`` and adds the parameters' gradient into ``plan.grads``. A
    writing step's backward first adds the gradient its slot gathered from later reads (complete by
    then: every later read and write holds this step's token or a later one) to ``∂L/∂h``:
    ``ḡm + W_mᵀ ḡκ``, with ``∂L/∂W_m += ḡκ hᵀ``; then the read's backward. One node per step
    instead of a read and a write.

    The C kernel runs where the plan has one and ``ĥ`` is contiguous, of the memory's dtype;
    otherwise the PyTorch path. The step saves (``save_for_backward``, so saved-tensor hooks such as
    [`SavedTensorMeter`][bioplaus.analysis.graph_memory.SavedTensorMeter] count them) the read's
    ``state = [ĥ, w, Z]`` ``(B, H + R + 1)`` (the query ``q = W_q ĥ + b_q`` is recomputed, which halves
    what a step keeps) and the winners' slots ``idx`` ``(B, R)`` (int32 from the kernel; a uniform
    read saves neither), and, on the PyTorch path, the state it wrote. Modifying a scorer parameter in place between the
    forward and the backward raises, as it does for PyTorch's own operations.
    """

    @staticmethod
    def forward(ctx, h_hat, link, plan: ReadPlan, rank: int, write: bool):  # type: ignore[override]
        store, lib, n = plan.store, plan.lib, plan.store.n
        j = -1
        if lib is not None and h_hat.dtype == store.data.dtype and h_hat.is_contiguous():
            ctx.version = plan.refresh()
            B, H = h_hat.shape
            h, out, state, idx = h_hat.new_empty(B, H), h_hat.new_empty(B, 2 * H), None, None
            if rank:
                state = h_hat.new_empty(B, plan.state_base + rank)
                idx = torch.empty(B, rank, dtype=torch.int32)  # a memory never holds 2³¹ slots
            if write:
                j = store.next_slot()
            kernel.check(
                lib.sab_step_forward(
                    store.native, h_hat.data_ptr(), n, rank, j, h.data_ptr(), out.data_ptr(),
                    None if state is None else state.data_ptr(), None if idx is None else idx.data_ptr(),
                )
            )  # fmt: skip
        else:
            lib, ctx.version = None, plan.version()
            h, out, state, idx = _forward(store, h_hat, *plan.params[:3], n, rank, plan.shift, plan.eps)
            if write:
                j = store.append_projected(h, plan.params[3])
        store.last_read = (state, idx, n)
        # saved (not ctx attributes) so that saved-tensor hooks, and the memory meters built on them, see them
        ctx.save_for_backward(state, idx, h if write and lib is None else None)
        ctx.plan, ctx.lib, ctx.n, ctx.rank, ctx.j = plan, lib, n, rank, j
        return h, out, h.new_zeros(()) if write else None

    @staticmethod
    def backward(ctx, g_h, g_out, _g_token):  # type: ignore[override]
        plan, rank, j = ctx.plan, ctx.rank, ctx.j
        state, idx, written = ctx.saved_tensors
        store = plan.store
        if plan.version() != ctx.version:
            raise RuntimeError(
                "a parameter of the SAB scorer was modified in place between a step's forward and its backward: "
                "call backward before the optimiser step"
            )
        if ctx.lib is not None:
            g_out = g_out if g_out.stride(1) == 1 else g_out.contiguous()
            g_h = g_h if g_h.stride(1) == 1 else g_h.contiguous()
            if store.grad is None:
                store.grad_buffer()
            g_h_hat = g_h.new_empty(g_h.shape)
            kernel.check(
                ctx.lib.sab_step_backward(
                    store.native,
                    None if state is None else state.data_ptr(),
                    None if idx is None else idx.data_ptr(),
                    ctx.n,
                    rank,
                    j,
                    g_out.data_ptr(),
                    g_out.stride(0),
                    g_h.data_ptr(),
                    g_h.stride(0),
                    g_h_hat.data_ptr(),
                )  # fmt: skip
            )
            return g_h_hat, None, None, None, None
        K, H = plan.sizes
        g_params = plan.grads
        if j >= 0:
            g_written, g_w_m = store.take_projected_grad(j, written, plan.params[3])
            if g_written is not None:
                g_h = g_h + g_written
                g_params[K * H + 2 * K :].add_(g_w_m.view(-1))
        g_h_hat = _backward(store, None if state is None else (state, idx, *plan.params[:3]), ctx.n, g_out, g_h,
                            g_params[: K * H + 2 * K])  # fmt: skip
        return g_h_hat, None, None, None, None


_apply_directly = super(torch.autograd.Function, AttentionStep).apply
"""``AttentionStep.apply`` without ``Function.apply``'s Python wrapper (≈ 3 µs a step), which only matters under
functorch transforms (then [`attention_step`][bioplaus.nets.sab_read.attention_step] takes the wrapper)."""


def attention_step(
    h_hat: torch.Tensor, link: torch.Tensor | None, plan: ReadPlan, rank: int, write: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(h, out, token)`` of one fused step (arguments and outputs as
    [`AttentionStep`][bioplaus.nets.sab_read.AttentionStep]'s).

    Where the plan has the C++ node ([`ReadPlan.op`][bioplaus.nets.sab_read.ReadPlan.op]) and ``ĥ`` is a contiguous
    float32 tensor, the step is that node: the same kernels, function and gradient as
    [`AttentionStep`][bioplaus.nets.sab_read.AttentionStep] on the kernel, without its Python bookkeeping (≈ 35 µs a
    step at ``B = 32, H = 64``, a tenth of an LSTM step's forward and backward). The memory's gradient buffer is
    allocated here, by the first step with grad enabled, because that node's backward cannot call back into Python.
    Otherwise [`AttentionStep`][bioplaus.nets.sab_read.AttentionStep].
    """
    if torch._C._are_functorch_transforms_active():
        return AttentionStep.apply(h_hat, link, plan, rank, write)
    op = plan.op
    if op is None or h_hat.dtype != torch.float32 or not h_hat.is_contiguous():
        return _apply_directly(h_hat, link, plan, rank, write)
    store = plan.store
    plan.refresh()
    n = store.n
    slot = store.next_slot() if write else -1
    if store.grad is None and torch.is_grad_enabled():
        store.grad_buffer()
    outputs = op(h_hat, link, plan.plan_bytes, n, rank, slot, plan._tracked)
    store.last_read = (outputs[2], outputs[3], n) if rank else (None, None, n)
    return outputs[0], outputs[1], outputs[4] if write else None


def read_weights(store: SlotStore, batch: int) -> torch.Tensor:
    """The latest read's weights over all slots it saw, ``(batch, n)`` (zeros where not kept), from
    ``store.last_read``."""
    state, idx, n = store.last_read
    if idx is None:
        return store.data.new_full((batch, n), 1.0 / n)
    R = idx.shape[1]
    return state.new_zeros(batch, n).scatter(1, idx.long(), state[:, -R - 1 : -1])


def _forward(
    store: SlotStore, h_hat, w_q, b_q, v, n: int, R: int, shift: float, eps: float
) -> tuple[torch.Tensor | None, ...]:
    """The PyTorch path of `AttentionStep.forward`: ``(h, out, state, idx)``, as the kernel."""
    H = store.hidden
    state = idx = None
    if not R:
        s = store.data[:, :n, :H].mean(1)
    else:
        q = h_hat @ w_q.t() if b_q is None else torch.addmm(b_q, h_hat, w_q.t())
        # rank by a' = vᵀσ(2u) = (a + Σv)/2, an increasing function of a: a_j − τ = 2(a'_j − a'_R)
        score = torch.add(q.unsqueeze(1), store.data[:, :n, H:]).mul_(2).sigmoid_() @ v[0]
        top, idx = score.topk(R, 1)
        r = (top - top[:, -1:]).mul_(2)
        if shift:
            r.sub_(shift).relu_()
        total = r.sum(1, keepdim=True)
        total = total.add_(eps) if eps else total.clamp_min_(TINY)
        w = r.div_(total)
        s = (w.unsqueeze(2) * _winners(store, idx)[..., :H]).sum(1)
        state = torch.cat([h_hat, w, total], 1)
    h = h_hat + s
    return h, torch.cat([h, s], 1), state, idx


def _winners(store: SlotStore, idx: torch.Tensor) -> torch.Tensor:
    """The slots ``idx`` ``(B, R)`` of every row, ``(B, R, H + K)``."""
    D = store.data.shape[2]
    return store.data.view(-1, D).index_select(0, store.flat(idx)).view(*idx.shape, D)


def _backward(store: SlotStore, saved, n: int, g_out, g_h, g_params: torch.Tensor) -> torch.Tensor:
    """The PyTorch path of the kernel's backward: ``g_ĥ``; the slots' gradient is added into the store and
    ``[∂L/∂W_q; ∂L/∂b_q; ∂L/∂v]`` into ``g_params``. ``saved = (state, idx, W_q, b_q, v)``, ``None`` for a uniform
    read."""
    H = store.hidden
    g_h = g_out[:, :H] + g_h
    g = g_h + g_out[:, H:]  # ∂L/∂s
    if saved is None:
        store.grad_buffer()
        store.grad[:, :n, :H].add_(g.unsqueeze(1), alpha=1.0 / n)
        return g_h
    state, idx, w_q, b_q, v = saved
    K, R = w_q.shape[0], idx.shape[1]
    h_hat, w, total = state[:, :H], state[:, H : H + R], state[:, H + R :]
    q = h_hat @ w_q.t() if b_q is None else torch.addmm(b_q, h_hat, w_q.t())
    winners = _winners(store, idx)
    g_w = torch.bmm(winners[..., :H], g.unsqueeze(2)).squeeze(2)
    g_r = (g_w - (w * g_w).sum(1, keepdim=True)).div_(total)
    g_a = g_r.mul_(w > 0)
    g_a[:, -1:].sub_(g_a.sum(1, keepdim=True))  # the threshold's score (its own weight is 0)
    sig = torch.add(q.unsqueeze(1), winners[..., H:]).mul_(2).sigmoid_()  # t = 2σ(2u) − 1
    g_u = torch.addcmul(sig, sig, sig, value=-1).mul_(v[0] * 4).mul_(g_a.unsqueeze(2))  # ā v (1 − t²)
    g_v = (g_a.view(1, -1) @ sig.view(-1, K)).mul_(2).sub_(g_a.sum())  # Σ ā t
    g_slots = torch.cat([w.unsqueeze(2) * g.unsqueeze(1), g_u], 2)
    store.grad_buffer().index_add_(0, store.flat(idx), g_slots.view(-1, H + K))
    g_q = g_u.sum(1)
    g_params.add_(torch.cat([(g_q.t() @ h_hat).view(-1), g_q.sum(0), g_v.view(-1)]))
    return g_h + g_q @ w_q
