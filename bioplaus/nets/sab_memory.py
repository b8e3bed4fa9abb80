r"""SAB's memory of past states, with a gradient side channel instead of a growing graph.

The memory holds slots $[m_j; \kappa_j]$ (a stored hidden state and its scorer key),
one written every ``k_att`` steps. Every later step reads it. Kept as an autograd tensor grown
by concatenation, each write would copy the whole memory and each read's backward would return
a memory-shaped gradient that flows back through every earlier concatenation: ``O(T²/k_att)``
time in both passes even when a read touches ``k_top + 1`` slots.

Here the slots live in a preallocated buffer without a graph
([`SlotStore.data`][bioplaus.nets.sab_memory.SlotStore.data], ``(batch, capacity, H + K)``, doubled when full). A read
is an autograd node whose backward adds the gradient of the slots it used into a buffer of the same shape
([`SlotStore.grad`][bioplaus.nets.sab_memory.SlotStore.grad], the side channel), and a write is an autograd node
([`WriteSlot`][bioplaus.nets.sab_memory.WriteSlot]) whose backward hands slot ``j``'s accumulated gradient to the graph
of ``(m_j, κ_j)`` and clears it.

**Order.** Slot ``j``'s gradient must be complete when its write's backward runs, i.e. after the
backward of every read of step ``t > t_j`` that used it. Each write outputs a scalar *token*,
the next write and every read until then take the current token as an input, so the autograd
engine runs a write's backward only after the backward of all later reads and writes (the token
carries no value: its gradient is zero). A read of slot ``j`` at step ``t`` holds the token of
the latest write ``J ≥ j`` before ``t``; write ``j`` waits for write ``j + 1``, which waits for
``j + 2``, and so on up to ``J``, which waits for the read, so no contribution comes late. Each
node runs once per backward, as in one backward through the concatenated memory, but each
step's work is ``O(k_top)`` slots (sparse read) instead of ``O(slots)``. The chain starts at
[`MemoryBank.start`][bioplaus.nets.sab_memory.MemoryBank.start]'s link (the fused step's
[`ParamGrads`][bioplaus.nets.sab_read.ParamGrads]), whose backward therefore runs after every read's and write's.

**Deferred credit** (streaming backward, [`StoredStates`][bioplaus.core.recurrent.StoredStates]):
without the token chain, segment backwards stop at the reads, which accumulate into
[`SlotStore.grad`][bioplaus.nets.sab_memory.SlotStore.grad]; each write still outputs a token of its own, and
[`MemoryBank.release`][bioplaus.nets.sab_memory.MemoryBank.release] back-propagates these, newest first, so each slot's
gradient goes through its own graph once (a slot's graph only reaches slots written before it).

**Kernel.** For a float32 CPU memory the C kernels of [`bioplaus.native.sab`][bioplaus.native.sab] write slots
(the state and, given ``W_m``, its key ``W_m m``, plus the key's exponentials that the kernel's
fast score reads, [`SlotStore.aux`][bioplaus.nets.sab_memory.SlotStore.aux]) and hand slot gradients on; the fused
attention step ([`AttentionStep`][bioplaus.nets.sab_read.AttentionStep]) writes its own state in the same call.
"""

from __future__ import annotations

import torch

from bioplaus.native import sab as kernel

TINY = 1e-12
"""Floor of the read's normaliser when all kept scores tie: the weights are then 0, not NaN."""


class SlotStore:
    """The memory's buffers, without any graph: what the autograd nodes of reads and writes hold.

    Kept apart from [`MemoryBank`][bioplaus.nets.sab_memory.MemoryBank] (which holds the written tensors and the token,
    with their graphs) so that no node of the graph refers back to the graph: a node whose context held the
    bank would close a reference cycle through the token's ``grad_fn``, which Python's collector
    cannot free, and every training iteration would leak its graph.

    Args:
        like: a tensor whose dtype and device the buffers take.
        batch: sequences in the batch.
        hidden: size ``H`` of a stored state ``m_j``.
        key_size: size ``K`` of its key ``κ_j``.
        capacity: initial slots allocated (doubled when full).
        backend: ``"auto"``: the C kernels of [`bioplaus.native.sab`][bioplaus.native.sab] serve this memory when it is
            float32 on the CPU and they compile; ``"torch"``: never.
    """

    def __init__(
        self, like: torch.Tensor, batch: int, hidden: int, key_size: int, capacity: int = 16, backend: str = "auto"
    ):
        self.hidden, self.n = hidden, 0
        self.data = like.new_zeros(batch, capacity, hidden + key_size)
        """The slots ``[m_j; κ_j]``, ``(batch, capacity, H + K)``; the first `n` are written."""
        self.grad: torch.Tensor | None = None
        """Accumulated ``∂L/∂[m_j; κ_j]`` from reads whose backward ran (allocated by the first one)."""
        self.last_read: tuple | None = None
        """``(state, idx, n)`` of the latest fused read, for logging
        ([`read_weights`][bioplaus.nets.sab_read.read_weights])."""
        self.rows = torch.arange(batch, device=like.device).unsqueeze(1)
        """Batch row of every sequence, ``(batch, 1)``, for indexing slots per row."""
        self._offsets = self.rows * capacity
        self.lib = kernel.library() if backend != "torch" and kernel.accepts(self.data) else None
        """The compiled kernels serving this memory, or ``None`` (PyTorch)."""
        self.aux = self.data.new_empty(batch, capacity, key_size + 1) if self.lib is not None else None
        """With the kernels: per slot, ``e^{2κ_j}`` and ``max |κ_j|``, what the kernel's fast score reads
        (``bioplaus/native/sab.c``); written with every slot."""
        self.native = None
        """With the kernels: their [`Plan`][bioplaus.native.sab.Plan], kept pointing at the current buffers."""
        if self.lib is not None:
            self.native = kernel.Plan(batch=batch, hidden=hidden, key_size=key_size, tiny=TINY)
            self._point()

    def _point(self) -> None:
        """Point the kernels' plan at the buffers (after they were allocated or moved)."""
        if self.native is not None:
            native = self.native
            native.data, native.aux, native.capacity = self.data.data_ptr(), self.aux.data_ptr(), self.capacity
            native.g_data = None if self.grad is None else self.grad.data_ptr()

    @property
    def capacity(self) -> int:
        return self.data.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers: slots, their ``aux`` and, once a backward allocated it, their gradient."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.aux, self.grad) if t is not None)

    def flat(self, idx: torch.Tensor) -> torch.Tensor:
        """Row-major positions of slots ``idx`` ``(batch, R)`` in the flattened buffers, ``(batch·R,)``."""
        return (idx + self._offsets).view(-1)

    def append(self, value: torch.Tensor, key: torch.Tensor) -> int:
        """Copy ``[value; key]`` into the next slot (growing the buffers if full); returns its index."""
        j = self.next_slot()
        self.data[:, j, : self.hidden] = value.detach()
        self.data[:, j, self.hidden :] = key.detach()
        if self.lib is not None:
            self.lib.sab_key_aux(self.native, j)
        return j

    def append_projected(self, value: torch.Tensor, key_weight: torch.Tensor) -> int:
        """Copy ``value`` and its key ``W_m value`` (``key_weight`` ``(K, H)``) into the next slot; returns its
        index."""
        value, key_weight = value.detach(), key_weight.detach()
        if self.lib is not None and value.is_contiguous() and key_weight.is_contiguous():
            j = self.next_slot()
            kernel.write(self.lib, self.native, value, key_weight, j)
            return j
        return self.append(value, value @ key_weight.t())

    def next_slot(self) -> int:
        """Claim the next slot (growing the buffers if full) for a write; returns its index."""
        if self.n == self.capacity:
            self.data = torch.cat([self.data, torch.zeros_like(self.data)], 1)
            if self.aux is not None:
                self.aux = torch.cat([self.aux, torch.empty_like(self.aux)], 1)
            if self.grad is not None:
                self.grad = torch.cat([self.grad, torch.zeros_like(self.grad)], 1)
            self._offsets = self.rows * self.capacity
            self._point()
        self.n += 1
        return self.n - 1

    def grad_buffer(self) -> torch.Tensor:
        """[`grad`][bioplaus.nets.sab_memory.SlotStore.grad] flattened to ``(batch·capacity, H + K)``, allocated by the
        first call; grows with the data."""
        if self.grad is None:
            self.grad = torch.zeros_like(self.data)
            self._point()
        return self.grad.view(-1, self.grad.shape[2])

    def take_projected_grad(
        self, j: int, value: torch.Tensor, key_weight: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Slot ``j``'s gradient handed through its key ``κ = W_m value``: ``(∂L/∂value, ∂L/∂W_m)``, cleared."""
        if self.grad is None:
            return None, None
        if self.lib is not None and key_weight.is_contiguous():
            return kernel.write_backward(self.lib, self.native, key_weight, j)
        g_value, g_key = self.take_grad(j)
        return torch.addmm(g_value, g_key, key_weight), g_key.t() @ value

    def take_grad(self, j: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Slot ``j``'s accumulated gradient ``(∂L/∂m_j, ∂L/∂κ_j)``, cleared in the buffer (``None`` if no read ran)."""
        if self.grad is None:
            return None, None
        g = self.grad[:, j]
        g_value, g_key = g[:, : self.hidden].clone(), g[:, self.hidden :].clone()
        g.zero_()
        return g_value, g_key


class MemoryBank:
    """The memory of one batch of sequences: its [`SlotStore`][bioplaus.nets.sab_memory.SlotStore], what was written,
    and the token.

    Args:
        like: a tensor whose dtype and device the buffers take.
        batch: sequences in the batch.
        hidden: size ``H`` of a stored state ``m_j``.
        key_size: size ``K`` of its key ``κ_j``.
        chain: order writes after later reads by the token chain (single backward); ``False``
            defers slot credit to [`release`][bioplaus.nets.sab_memory.MemoryBank.release] (streaming backward).
        backend: ``"auto"`` or ``"torch"``, see [`SlotStore`][bioplaus.nets.sab_memory.SlotStore].
        capacity: slots to allocate at first (the memory grows by doubling beyond; growing moves every
            buffer, so a caller that knows the sequence's length allocates it all at once).
    """

    def __init__(
        self,
        like: torch.Tensor,
        batch: int,
        hidden: int,
        key_size: int,
        chain: bool = True,
        backend: str = "auto",
        capacity: int = 16,
    ):
        self.store = SlotStore(like, batch, hidden, key_size, capacity, backend)
        self.chain = chain
        self.tokens: list[torch.Tensor] = []
        """Deferred mode: each write's own token, whose backward hands the slot's gradient on
        ([`release`][bioplaus.nets.sab_memory.MemoryBank.release])."""
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

    def start(self, link: torch.Tensor) -> None:
        """Make ``link`` (a tensor with a graph, e.g. [`ParamGrads`][bioplaus.nets.sab_read.ParamGrads]'s) the root of
        the
        ordering: the first write's token (chain) or the input every read holds (deferred), so that its backward
        runs after theirs. Ignored if it has no graph. Call before the first write."""
        if link.requires_grad:
            if self.chain:
                self.token = link
            else:
                self.anchor = link

    def link(self) -> torch.Tensor | None:
        """The input a read takes to be ordered before the writes' backward (token, or the deferred anchor)."""
        return self.token if self.chain else self.anchor

    def write(
        self, value: torch.Tensor, key: torch.Tensor | None = None, key_weight: torch.Tensor | None = None
    ) -> None:
        """Store ``value`` ``(batch, H)`` and its ``key`` ``(batch, K)`` as the next slot, or, with ``key_weight``
        ``W_m`` ``(K, H)`` instead of ``key``, the key ``W_m value`` computed here (in the kernel where it serves)."""
        projected = key is None
        j = self.store.append_projected(value, key_weight) if projected else self.store.append(value, key)
        source = key_weight if projected else key
        if value.requires_grad or source.requires_grad:
            token = WriteSlot.apply(value, source, self.token if self.chain else None, self.store, j, projected)
            if self.chain:
                if token.requires_grad:  # a write without graph (under no_grad) must not cut the chain
                    self.token = token
            else:
                self.tokens.append(token)

    def release(self) -> None:
        """Deferred credit: send every slot's accumulated gradient through its own graph, newest first."""
        for token in reversed(self.tokens):
            token.backward(retain_graph=True)  # retain: slots written in one truncation segment share its steps

    def read_all(self) -> torch.Tensor:
        """Every written slot, ``(batch, n, H + K)``, differentiable through the side channel (a copy)."""
        if self._all is None or self._all.shape[1] != self.n:  # one copy per write, shared by the reads until the next
            link = self.link()
            grad = link is not None and torch.is_grad_enabled()
            self._all = ReadAll.apply(link, self.store) if grad else self.store.data[:, : self.n].clone()
        return self._all


class WriteSlot(torch.autograd.Function):
    """``token = write(m_j, κ_j or W_m, token, store, j, projected)``: backward hands slot ``j``'s accumulated
    gradient to ``m_j`` and its key ``κ_j``, or, when ``projected`` (``κ_j = W_m m_j``, computed by the
    store), to ``m_j`` and ``W_m``: ``∂L/∂m_j = ḡm + W_mᵀ ḡκ``, ``∂L/∂W_m = ḡκ m_jᵀ`` summed over rows."""

    @staticmethod
    def forward(ctx, value, source, token, store: SlotStore, j: int, projected: bool):  # type: ignore[override]
        ctx.store, ctx.j, ctx.chained, ctx.projected = store, j, token is not None, projected
        if projected:
            ctx.save_for_backward(value, source)
        return value.new_zeros(())

    @staticmethod
    def backward(ctx, g_token):  # type: ignore[override]
        if ctx.projected:
            g_value, g_source = ctx.store.take_projected_grad(ctx.j, *ctx.saved_tensors)
        else:
            g_value, g_source = ctx.store.take_grad(ctx.j)
        return g_value, g_source, g_token if ctx.chained else None, None, None, None


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
