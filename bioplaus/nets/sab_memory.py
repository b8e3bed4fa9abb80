r"""SAB's memory of past states, with a gradient side channel instead of a growing graph.

The memory holds slots :math:`[m_j; \kappa_j]` (a stored hidden state and its scorer key),
one written every ``k_att`` steps. Every later step reads it. Kept as an autograd tensor grown
by concatenation, each write would copy the whole memory and each read's backward would return
a memory-shaped gradient that flows back through every earlier concatenation: ``O(T²/k_att)``
time in both passes even when a read touches ``k_top + 1`` slots.

Here the slots live in a preallocated buffer without a graph (:attr:`MemoryBank.data`,
``(batch, capacity, H + K)``, doubled when full). A read is an autograd node whose backward
adds the gradient of the slots it used into a buffer of the same shape (:attr:`MemoryBank.grad`,
the side channel), and a write is an autograd node (:class:`WriteSlot`) whose backward hands
slot ``j``'s accumulated gradient to the graph of ``(m_j, κ_j)`` and clears it.

**Order.** Slot ``j``'s gradient must be complete when its write's backward runs, i.e. after the
backward of every read of step ``t > t_j`` that used it. Each write outputs a scalar *token*,
the next write and every read until then take the current token as an input, so the autograd
engine runs a write's backward only after the backward of all later reads and writes (the token
carries no value: its gradient is zero). A read of slot ``j`` at step ``t`` holds the token of
the latest write ``J ≥ j`` before ``t``; write ``j`` waits for write ``j + 1``, which waits for
``j + 2``, and so on up to ``J``, which waits for the read, so no contribution comes late. Each
node runs once per backward, as in one backward through the concatenated memory, but each
step's work is ``O(k_top)`` slots (sparse read) instead of ``O(slots)``.

**Deferred credit** (streaming backward, :class:`~bioplaus.core.recurrent.StoredStates`):
without the token chain, segment backwards stop at the reads, which accumulate into
:attr:`MemoryBank.grad`; :meth:`MemoryBank.release` then sends each slot's gradient through its
own graph once, newest first (a slot's graph only reaches slots written before it).
"""

from __future__ import annotations

import torch


class SlotStore:
    """The memory's buffers, without any graph: what the autograd nodes of reads and writes hold.

    Kept apart from :class:`MemoryBank` (which holds the written tensors and the token, with their
    graphs) so that no node of the graph refers back to the graph: a node whose context held the
    bank would close a reference cycle through the token's ``grad_fn``, which Python's collector
    cannot free, and every training iteration would leak its graph.

    Args:
        like: a tensor whose dtype and device the buffers take.
        batch: sequences in the batch.
        hidden: size ``H`` of a stored state ``m_j``.
        key_size: size ``K`` of its key ``κ_j``.
        capacity: initial slots allocated (doubled when full).
    """

    def __init__(self, like: torch.Tensor, batch: int, hidden: int, key_size: int, capacity: int = 16):
        self.hidden, self.n = hidden, 0
        self.data = like.new_zeros(batch, capacity, hidden + key_size)
        """The slots ``[m_j; κ_j]``, ``(batch, capacity, H + K)``; the first :attr:`n` are written."""
        self.grad: torch.Tensor | None = None
        """Accumulated ``∂L/∂[m_j; κ_j]`` from reads whose backward ran (allocated by the first one)."""
        self.rows = torch.arange(batch, device=like.device).unsqueeze(1)
        """Batch row of every sequence, ``(batch, 1)``, for indexing slots per row."""
        self._offsets = self.rows * capacity

    @property
    def capacity(self) -> int:
        return self.data.shape[1]

    def flat(self, idx: torch.Tensor) -> torch.Tensor:
        """Row-major positions of slots ``idx`` ``(batch, R)`` in the flattened buffers, ``(batch·R,)``."""
        return (idx + self._offsets).view(-1)

    def append(self, value: torch.Tensor, key: torch.Tensor) -> int:
        """Copy ``[value; key]`` into the next slot (growing the buffers if full); returns its index."""
        if self.n == self.capacity:
            self.data = torch.cat([self.data, torch.zeros_like(self.data)], 1)
            self._offsets = self.rows * self.capacity
        self.data[:, self.n, : self.hidden] = value.detach()
        self.data[:, self.n, self.hidden :] = key.detach()
        self.n += 1
        return self.n - 1

    def grad_buffer(self) -> torch.Tensor:
        """:attr:`grad` flattened to ``(batch·capacity, H + K)``, allocated or grown to the data's capacity."""
        if self.grad is None:
            self.grad = torch.zeros_like(self.data)
        elif self.grad.shape[1] < self.capacity:
            self.grad = torch.cat([self.grad, torch.zeros_like(self.data[:, self.grad.shape[1] :])], 1)
        return self.grad.view(-1, self.grad.shape[2])

    def take_grad(self, j: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Slot ``j``'s accumulated gradient ``(∂L/∂m_j, ∂L/∂κ_j)``, cleared in the buffer (``None`` if no read ran)."""
        if self.grad is None:
            return None, None
        g = self.grad[:, j]
        g_value, g_key = g[:, : self.hidden].clone(), g[:, self.hidden :].clone()
        g.zero_()
        return g_value, g_key


class MemoryBank:
    """The memory of one batch of sequences: its :class:`SlotStore`, what was written, and the token.

    Args:
        like: a tensor whose dtype and device the buffers take.
        batch: sequences in the batch.
        hidden: size ``H`` of a stored state ``m_j``.
        key_size: size ``K`` of its key ``κ_j``.
        chain: order writes after later reads by the token chain (single backward); ``False``
            defers slot credit to :meth:`release` (streaming backward).
    """

    def __init__(self, like: torch.Tensor, batch: int, hidden: int, key_size: int, chain: bool = True):
        self.store = SlotStore(like, batch, hidden, key_size)
        self.chain = chain
        self.slots: list[tuple[torch.Tensor, torch.Tensor]] = []
        """What was written, with its graph: ``(m_j, κ_j)``."""
        self.token: torch.Tensor | None = None
        """Output of the latest write with a graph (chain mode); reads take it as an input."""
        self.anchor = None if chain else like.new_zeros(()).requires_grad_()
        self._all: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Slots written."""
        return self.store.n

    @property
    def capacity(self) -> int:
        return self.store.capacity

    def link(self) -> torch.Tensor | None:
        """The input a read takes to be ordered before the writes' backward (token, or the deferred anchor)."""
        return self.token if self.chain else self.anchor

    def write(self, value: torch.Tensor, key: torch.Tensor) -> None:
        """Store ``[value; key]`` (``(batch, H)``, ``(batch, K)``) as the next slot."""
        j = self.store.append(value, key)
        self.slots.append((value, key))
        if self.chain and (value.requires_grad or key.requires_grad):
            self.token = WriteSlot.apply(value, key, self.token, self.store, j)

    def release(self) -> None:
        """Deferred credit: send every slot's accumulated gradient through its own graph, newest first."""
        for j in range(self.n - 1, -1, -1):
            value, key = self.slots[j]
            if not (value.requires_grad or key.requires_grad):
                continue
            g_value, g_key = self.store.take_grad(j)
            if g_value is not None:
                pairs = [(t, g) for t, g in ((value, g_value), (key, g_key)) if t.requires_grad]
                # retain: slots written in one truncation segment share its steps
                torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs], retain_graph=True)

    def read_all(self) -> torch.Tensor:
        """Every written slot, ``(batch, n, H + K)``, differentiable through the side channel (a copy)."""
        if self._all is None or self._all.shape[1] != self.n:  # one copy per write, shared by the reads until the next
            link = self.link()
            grad = link is not None and torch.is_grad_enabled()
            self._all = ReadAll.apply(link, self.store) if grad else self.store.data[:, : self.n].clone()
        return self._all


class WriteSlot(torch.autograd.Function):
    """``token = write(m_j, κ_j, token)``: backward hands slot ``j``'s accumulated gradient to ``(m_j, κ_j)``."""

    @staticmethod
    def forward(ctx, value, key, token, store: SlotStore, j: int):  # type: ignore[override]
        ctx.store, ctx.j, ctx.chained = store, j, token is not None
        return value.new_zeros(())

    @staticmethod
    def backward(ctx, g_token):  # type: ignore[override]
        g_value, g_key = ctx.store.take_grad(ctx.j)
        return g_value, g_key, g_token if ctx.chained else None, None, None


class ReadAll(torch.autograd.Function):
    """A copy of every written slot; backward adds its gradient into the store's side channel."""

    @staticmethod
    def forward(ctx, link, store: SlotStore):  # type: ignore[override]
        ctx.store, ctx.n = store, store.n
        return store.data[:, : store.n].clone()

    @staticmethod
    def backward(ctx, g_slots):  # type: ignore[override]
        store = ctx.store
        store.grad_buffer()
        store.grad[:, : ctx.n].add_(g_slots)
        return None, None
