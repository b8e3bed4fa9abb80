r"""Sparse attentive backtracking (SAB) LSTM and the dense self-attention LSTM baseline.

Ke, Goyal, Bilaniuk, Binas, Mozer, Pal & Bengio, "Sparse Attentive Backtracking: Temporal
Credit Assignment Through Reminding", NeurIPS 2018 (arXiv 1809.03702); equations, what the
official code computes and its pitfalls: the SAB page of the documentation.

Per step ``t`` (memory $\mathcal M_t = \{m_0 = h_0, m_1, \dots\}$, one entry written every
``k_att`` steps):

$$
\begin{aligned}
\hat h_t, c_t &= \mathrm{LSTM}(x_t, h_{t-1}, c_{t-1}) \\
a_{t,i} &= v^\top \tanh(W_q \hat h_t + b_q + W_m m_i) \qquad (\text{key } W_m m_i \text{ kept from the write}) \\
\tau_t &= (k_{top}+1)\text{-th largest } a_{t,i}, \qquad
w_{t,i} = \frac{\mathrm{relu}(a_{t,i} - \tau_t)}{\sum_j \mathrm{relu}(a_{t,j} - \tau_t)} \\
s_t &= \textstyle\sum_i w_{t,i}\, m_i, \qquad h_t = \hat h_t + s_t, \qquad y_t = W_o [h_t; s_t] + b_o
\end{aligned}
$$

and $h_t$ joins the memory after step ``t`` when ``(t+1) mod k_att = 0`` (so after ``T``
steps the memory holds ``1 + ⌊T/k_att⌋`` slots). The cell state ``c`` is never touched by the
attention. Training is any temporal rule: SAB proper is this model under ``tbptt(k_trunc)``,
where the gradient still reaches stored memories through the ``k_top`` non-zero weights, and
from each memory back along the LSTM to the start of its own truncation segment.

Choices where the paper, the official code and this module differ (all selectable):

- ``threshold="k+1"`` (default) subtracts the (k_top+1)-th score, leaving exactly ``k_top``
  non-zero weights (the sparsifier of the authors' later code; the only choice that keeps
  ``k_top``). ``"k"`` is the official code: it subtracts the k-th score plus 1e-7 (so only
  ``k_top − 1`` memories are kept) and divides by ``Σ + 1e-7``.
- ``scorer="mlp"`` (default) is the paper's MLP of ``[ĥ; m]``. ``"official"`` is the official
  ``wᵀ tanh([ĥ; m])``: without a hidden layer it separates into ``w_qᵀ tanh ĥ + w_mᵀ tanh m``,
  so which memories win does not depend on the query at all.
- ``small_memory="uniform"`` (default): while the memory holds ``≤ k_top`` slots, every slot
  gets ``1/|M|`` (the paper is silent). ``"raw"`` is the official code: the raw scores are used
  as weights, unnormalised.
- The threshold $\tau_t$ is not detached (as in the official code): the SAB gradient is
  the exact gradient of this forward function, and the (k_top+1)-th memory receives gradient
  through its score, not through its value.

Implementation (``gather=True``): the scores of all memories are computed without a graph to
rank them; only the winners (``k_top + 1`` of them, the threshold's included) enter the graph,
picked by their indices, which is all the graph saves of the memory (``torch.gather`` would
save all of it). The attention graph thus grows as ``O(T · k_top)``, not ``O(T²/k_att)``;
``gather=False`` scores every memory with the graph and masks, the same function and gradients
at quadratic memory (kept as the test oracle). With the MLP scorer the whole step (query,
ranking, top-k, sparsifier, weighted sum, ``h = ĥ + s`` and, at write steps, the write of ``h``
with its key) is one autograd node with a hand-written backward
([`AttentionStep`][bioplaus.nets.sab_read.AttentionStep]; the scorer's parameters enter the graph once per
sequence, [`ParamGrads`][bioplaus.nets.sab_read.ParamGrads]) over a C kernel
([`bioplaus.native.sab`][bioplaus.native.sab]; PyTorch operations where it cannot run, or with ``backend="torch"``);
the official scorer, and scorer layers that a rule configured, run the same steps as ordinary autograd operations. The
memory is a [`MemoryBank`][bioplaus.nets.sab_memory.MemoryBank]:
a buffer without graph whose gradient reaches each stored state through a side channel, so
neither writes nor reads cost time in proportion to the memory's size, beyond the ranking.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bioplaus import native
from bioplaus.core import Linear, TaskSpec
from bioplaus.core.recurrent import StoredStates
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets._registry import register
from bioplaus.nets.lstm import SequenceNet, sequence_sizes
from bioplaus.nets.sab_memory import TINY, MemoryBank
from bioplaus.nets.sab_read import ReadPlan, attention_step, read_weights
from bioplaus.registry import did_you_mean

THRESHOLDS: dict[str, tuple[int, float, float]] = {"k+1": (1, 0.0, 0.0), "k": (0, 1e-7, 1e-7)}
"""threshold → (extra rank, shift added to τ, ε added to the normaliser)."""
SMALL_MEMORY = ("uniform", "raw")
ATTENTIONS = ("sparse", "softmax")
SCORERS = ("mlp", "official")


def _choice(value: str, choices: tuple[str, ...] | dict, what: str) -> str:
    if value not in choices:
        names = list(choices)
        raise ConfigError(f"unknown {what} {value!r}{did_you_mean(str(value), names)}; choose one of {names}")
    return value


def sparsify(scores: torch.Tensor, k_top: int, threshold: str = "k+1") -> torch.Tensor:
    r"""SAB's sparsifier: ``w_i = relu(a_i − τ) / Σ_j relu(a_j − τ)`` over rows of ``scores`` ``(batch, n)``.

    ``τ`` is the (k_top+1)-th largest score (``threshold="k+1"``; exactly ``k_top`` non-zero
    weights summing to 1, barring ties) or, as in the official code, the k_top-th plus 1e-7
    (``"k"``; ``k_top − 1`` non-zeros, normaliser ``Σ + 1e-7``). Needs ``n ≥`` the threshold's rank.
    """
    extra, shift, eps = THRESHOLDS[_choice(threshold, THRESHOLDS, "threshold")]
    rank = k_top + extra
    if scores.shape[1] < rank:
        raise ShapeError(f"sparsify needs at least {rank} scores per row for k_top={k_top}, got {scores.shape[1]}")
    tau = scores.topk(rank, 1).values[:, -1:]
    r = F.relu(scores - (tau + shift if shift else tau))
    total = r.sum(1, keepdim=True)
    return r / (total + eps if eps else total.clamp_min(TINY))


def _plain(layer: Linear) -> bool:
    """Whether a rule left ``layer`` as plain backprop (default settings), so its weight may be used directly."""
    return layer.settings == layer.settings_type()


class MLPScorer(nn.Module):
    """``a_i = vᵀ tanh(W_q ĥ + b_q + W_m m_i)``; keys ``W_m m_i`` are computed once per memory.

    Args:
        hidden: size of ``ĥ`` and of the memories.
        score_hidden: width of the MLP's hidden layer.
    """

    def __init__(self, hidden: int, score_hidden: int):
        super().__init__()
        self.key_size = score_hidden
        self.query_proj = Linear(hidden, score_hidden)
        self.key_proj = Linear(hidden, score_hidden, bias=False)
        self.v = Linear(score_hidden, 1, bias=False)

    def key(self, m: torch.Tensor) -> torch.Tensor:
        """Key of a memory being written, ``(batch, hidden) → (batch, score_hidden)``."""
        return self.key_proj(m)

    def query(self, h_hat: torch.Tensor) -> torch.Tensor:
        """Query term of the provisional state, ``(batch, hidden) → (batch, score_hidden)``."""
        return self.query_proj(h_hat)

    def score(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Scores ``(batch, n)`` of ``n`` keys ``(batch, n, score_hidden)``."""
        return self.v(torch.tanh(q.unsqueeze(1) + keys)).squeeze(2)

    @property
    def fused(self) -> bool:
        """Whether the fused read ([`plan`][bioplaus.nets.sab.MLPScorer.plan]) applies: the query and output layers run
        plain backprop (no rule configured them), so the step may use their weights directly."""
        return all(_plain(layer) for layer in (self.query_proj, self.v))

    @property
    def fused_key(self) -> bool:
        """Whether the memory may compute keys itself (``κ = W_m m``,
        [`MemoryBank.write`][bioplaus.nets.sab_memory.MemoryBank.write])."""
        return _plain(self.key_proj)

    def plan(self, bank: MemoryBank, threshold: str, writes: bool) -> ReadPlan:
        """The plan of a sequence's fused steps (`AttentionStep`); ``writes``: steps store their state
        and its key themselves."""
        _, shift, eps = THRESHOLDS[threshold]
        key_weight = self.key_proj.weight if writes else None
        return ReadPlan(
            bank.store, shift, eps, (self.query_proj.weight, self.query_proj.bias, self.v.weight, key_weight)
        )


class OfficialScorer(nn.Module):
    """The official code's ``a_i = wᵀ tanh([ĥ; m_i]) = w_qᵀ tanh ĥ + w_mᵀ tanh m_i``, ``w ~ N(0, 0.01²)``.

    The query adds the same term to every score, so score differences, and with them the
    sparsified weights once the memory exceeds ``k_top``, do not depend on ``ĥ``.
    """

    fused = fused_key = False

    def __init__(self, hidden: int):
        super().__init__()
        self.key_size = 1
        self.w_query = Linear(hidden, 1, bias=False)
        self.w_key = Linear(hidden, 1, bias=False)
        for layer in (self.w_query, self.w_key):
            nn.init.normal_(layer.weight, std=0.01)

    def key(self, m: torch.Tensor) -> torch.Tensor:
        return self.w_key(torch.tanh(m))

    def query(self, h_hat: torch.Tensor) -> torch.Tensor:
        return self.w_query(torch.tanh(h_hat))

    def score(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return q + keys.squeeze(2)


def gather_read(
    scorer: MLPScorer | OfficialScorer, q: torch.Tensor, bank: MemoryBank, k_top: int, threshold: str
) -> tuple[torch.Tensor, ...]:
    """Summary ``s``, weights and slots of the winners with autograd operations (any scorer, any layer settings).

    Every slot is ranked without a graph; the winners are rescored with it, picked by advanced
    indexing, which saves only their indices (``torch.gather`` would save the whole memory).
    """
    slots, H = bank.read_all(), bank.store.hidden
    with torch.no_grad():
        idx = scorer.score(q, slots[..., H:]).topk(k_top + THRESHOLDS[threshold][0], 1).indices
    winners = slots[bank.store.rows, idx]
    w = sparsify(scorer.score(q, winners[..., H:]), k_top, threshold)
    return (w.unsqueeze(2) * winners[..., :H]).sum(1), w, idx


class AttentiveLSTM(SequenceNet, StoredStates):
    """LSTM whose provisional state attends over a memory of its past states (SAB, or dense softmax).

    Args:
        n_in: input size per step.
        hidden: LSTM size ``H``.
        n_out: output size per step.
        k_top: memories kept by the sparse attention.
        k_att: a memory is written every ``k_att`` steps.
        attention: ``"sparse"`` (SAB) or ``"softmax"`` (dense self-attention over every memory).
        scorer: ``"mlp"`` (paper) or ``"official"`` (query-free, see
            [`OfficialScorer`][bioplaus.nets.sab.OfficialScorer]).
        score_hidden: hidden width of the MLP scorer (default ``H``).
        threshold: ``"k+1"`` (k_top memories kept) or ``"k"`` (official; k_top − 1 kept).
        small_memory: weights while the memory has ``≤ k_top`` slots: ``"uniform"`` or ``"raw"`` (official).
        gather: rank without graph and rescore only the winners (``True``), or score every memory
            with the graph and mask (``False``; same function, quadratic memory; a test oracle).
        backend: with the MLP scorer and ``gather``, how the attention step runs: ``"auto"`` (a C
            kernel for float32 CPU tensors, PyTorch otherwise), ``"native"`` (the kernel must
            compile) or ``"torch"`` ([`AttentionStep`][bioplaus.nets.sab_read.AttentionStep]).
    """

    _transient = ("state", "bank", "_plan", "_log")

    def __init__(
        self,
        n_in: int,
        hidden: int = 64,
        n_out: int = 10,
        k_top: int = 5,
        k_att: int = 2,
        attention: str = "sparse",
        scorer: str = "mlp",
        score_hidden: int | None = None,
        threshold: str = "k+1",
        small_memory: str = "uniform",
        gather: bool = True,
        backend: str = "auto",
    ):
        super().__init__(n_in, hidden, n_out, 2 * hidden)
        for name, value in (("k_top", k_top), ("k_att", k_att), ("score_hidden", score_hidden or hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.attention = _choice(attention, ATTENTIONS, "attention")
        self.threshold = _choice(threshold, THRESHOLDS, "threshold")
        self.small_memory = _choice(small_memory, SMALL_MEMORY, "small_memory")
        if attention == "sparse" and threshold == "k" and k_top < 2:
            raise ConfigError("threshold 'k' keeps k_top − 1 memories, so k_top=1 would keep none: use k_top ≥ 2")
        self.k_top, self.k_att, self.gather = k_top, k_att, gather
        self.backend = native.check_backend(backend, "sab", "SAB")
        self.scorer = (
            MLPScorer(hidden, score_hidden or hidden)
            if _choice(scorer, SCORERS, "scorer") == "mlp"
            else OfficialScorer(hidden)
        )
        self.bank: MemoryBank | None = None
        """The memory of this sequence (slots ``[m_i; key_i]``), made by `reset_state`."""
        self._plan: ReadPlan | None = None
        """The sequence's read plan when the fused step applies (MLP scorer, gather, layers not configured)."""
        self._project_keys = False
        """Whether the memory computes keys itself, ``W_m m`` (MLP scorer, key layer not configured)."""
        self._rank = k_top + THRESHOLDS[self.threshold][0]
        """Winners a sparse read keeps (the threshold's included)."""
        self._log: list[torch.Tensor] | None = None

    @property
    def memory_slots(self) -> int:
        """Memories stored so far in this sequence (``1 + ⌊t/k_att⌋`` after ``t`` steps)."""
        return 0 if self.bank is None else self.bank.n

    @property
    def memory_bytes(self) -> int:
        """Bytes of this sequence's memory buffers (slots, key exponentials, slot gradients): memory the backward
        needs that autograd's saved tensors do not include ([`SlotStore`][bioplaus.nets.sab_memory.SlotStore])."""
        return 0 if self.bank is None else self.bank.store.nbytes

    def _reset_core(self, batch_size: int, length: int | None) -> None:
        # a known length allocates the memory's 1 + ⌊T/k_att⌋ slots at once (else 16, doubled when full)
        h0 = self.state[0]
        backend = "torch" if self.backend == "torch" else "auto"
        self.bank = MemoryBank(
            h0,
            batch_size,
            self.hidden,
            self.scorer.key_size,
            chain=not self.defer_credit,
            backend=backend,
            capacity=16 if length is None else 1 + length // self.k_att,
        )
        scorer = self.scorer
        self._project_keys = scorer.fused_key
        fused = self.attention == "sparse" and self.gather and scorer.fused
        writes = self._project_keys and not self.defer_credit  # merged writes need the token chain
        self._plan = plan = scorer.plan(self.bank, self.threshold, writes) if fused else None
        if plan is not None:
            self.bank.start(plan.root())
        self._write(h0)

    def release_credit(self) -> None:
        if self.bank is not None:
            self.bank.release()

    def _write(self, h: torch.Tensor) -> None:
        """Append ``h`` and its key (computed once, here or by the memory) to the memory."""
        if self._project_keys:
            self.bank.write(h, key_weight=self.scorer.key_proj.weight)
        else:
            self.bank.write(h, self.scorer.key(h))

    def _attend(self, h_hat: torch.Tensor, write: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h_t, [h_t; s_t])``: the new state ``h_t = ĥ_t + s_t`` and the readout's input, ``s_t = Σ_i w_i m_i``;
        ``h_t`` joins the memory if ``write``."""
        bank, plan = self.bank, self._plan
        small = bank.store.n <= self.k_top
        if plan is not None and not (small and self.small_memory == "raw"):
            merged = write and plan.writes
            h, out, token = attention_step(h_hat, bank.link(), plan, 0 if small else self._rank, merged)
            if self._log is not None:
                self._log.append(read_weights(bank.store, h_hat.shape[0]))
            if merged:
                bank.token = token
            elif write:
                self._write(h)
            return h, out
        H, n, sparse, scorer = self.hidden, bank.n, self.attention == "sparse", self.scorer
        B = h_hat.shape[0]
        if sparse and small and self.small_memory == "uniform":
            s = bank.read_all()[..., :H].mean(1)
            self._record(lambda: h_hat.new_full((B, n), 1.0 / n))
        elif sparse and self.gather and not small:
            s, w, idx = gather_read(scorer, scorer.query(h_hat), bank, self.k_top, self.threshold)
            self._record(lambda: self._scatter(h_hat, n, w, idx))
        else:
            q, slots = scorer.query(h_hat), bank.read_all()
            scores = scorer.score(q, slots[..., H:])
            if self.attention == "softmax":
                w = torch.softmax(scores, 1)
            elif small:  # raw scores as weights (official)
                w = scores
            else:
                w = sparsify(scores, self.k_top, self.threshold)
            self._record(lambda: w)
            s = (w.unsqueeze(2) * slots[..., :H]).sum(1)
        h = h_hat + s
        if write:
            self._write(h)
        return h, torch.cat([h, s], 1)

    @staticmethod
    def _scatter(like: torch.Tensor, n: int, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Weights ``w`` of slots ``idx`` ``(batch, R)`` spread over all ``n`` slots, ``(batch, n)``."""
        return like.new_zeros(like.shape[0], n).scatter(1, idx, w)

    def _record(self, weights: Callable[[], torch.Tensor]) -> None:
        """Log this step's attention over every slot (``(batch, slots)``) when
        [`attention_map`][bioplaus.nets.sab.AttentiveLSTM.attention_map] asks."""
        if self._log is not None:
            self._log.append(weights().detach())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h_hat, (_, c) = self.lstm(x, self.state, self.t)
        h, out = self._attend(h_hat, write=(self.t + 1) % self.k_att == 0)
        self.state = (h, c)
        return out

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights of every step over every memory slot, ``(batch, T, slots)`` (zero-padded).

        Slot 0 is the initial state ``h_0``; slot ``j ≥ 1`` is ``h_t`` written after step
        ``t = j·k_att − 1``.
        """
        self._log = []
        try:
            self(x)
            log = self._log
        finally:
            self._log = None
        slots = log[-1].shape[1]
        return torch.stack([F.pad(w, (0, slots - w.shape[1])) for w in log], 1)


@register("sab_lstm")
def sab_lstm(
    spec: TaskSpec,
    hidden: int = 64,
    k_top: int = 5,
    k_att: int = 2,
    scorer: str = "mlp",
    score_hidden: int | None = None,
    threshold: str = "k+1",
    small_memory: str = "uniform",
    gather: bool = True,
    backend: str = "auto",
) -> AttentiveLSTM:
    """SAB-LSTM (Ke et al. 2018): sparse top-k attention over past states; train with tbptt(k_trunc)."""
    n_in, n_out = sequence_sizes(spec)
    return AttentiveLSTM(
        n_in, hidden, n_out, k_top, k_att, "sparse", scorer, score_hidden, threshold, small_memory, gather, backend
    )


@register("attn_lstm")
def attn_lstm(
    spec: TaskSpec, hidden: int = 64, k_att: int = 1, scorer: str = "mlp", score_hidden: int | None = None
) -> AttentiveLSTM:
    """LSTM with dense softmax self-attention over its past states (the paper's other baseline)."""
    n_in, n_out = sequence_sizes(spec)
    return AttentiveLSTM(
        n_in, hidden, n_out, k_att=k_att, attention="softmax", scorer=scorer, score_hidden=score_hidden
    )
