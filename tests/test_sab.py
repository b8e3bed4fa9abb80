"""Sparse attentive backtracking: properties of the pieces, each able to fail."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.func import functional_call

from bioplaus import nets, rules
from bioplaus.analysis.graph_memory import SavedTensorMeter
from bioplaus.core import Context, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets.sab import AttentiveLSTM, sparsify
from bioplaus.runner import train_epoch
from bioplaus.tasks.sequence import SyntheticSequenceTask

N_IN = 3


def sab(seed: int = 0, hidden: int = 6, **options) -> AttentiveLSTM:
    torch.manual_seed(seed)
    return AttentiveLSTM(N_IN, hidden, 4, **{"k_top": 3, "k_att": 1} | options)


def train_grads(model: torch.nn.Module, rule_name: str, x: torch.Tensor, **rule_options) -> dict[str, torch.Tensor]:
    rule = rules.get(rule_name, **rule_options)
    rule.attach(model)
    model.zero_grad(set_to_none=True)
    out = model(x)
    rule.update(model, Context(loss=out.pow(2).mean() + out[:, -1, 0].sum(), output=out))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_forward_does_not_depend_on_k_trunc_but_gradients_do(float64):
    x = torch.randn(2, 16, N_IN)
    outs, grads = {}, {}
    for k in (1, 4, 100):
        model = sab()
        rules.get("tbptt", k_trunc=k).attach(model)
        outs[k] = model(x)
        outs[k][:, -1].sum().backward()
        grads[k] = model.lstm.weight.grad.clone()
    assert torch.equal(outs[1], outs[100]) and torch.equal(outs[4], outs[100])
    assert not torch.allclose(grads[1], grads[100]) and not torch.allclose(grads[4], grads[100])


@pytest.mark.parametrize("threshold", ["k+1", "k"])
def test_gradcheck_with_k_trunc_at_least_T(threshold, float64):
    """With no truncation the SAB gradient is the exact gradient of its forward (top-k included)."""
    model = sab(hidden=4, k_top=2, threshold=threshold)
    with torch.no_grad():  # spread the scores so the finite differences never cross a top-k boundary
        model.scorer.v.weight.mul_(20)
    rules.get("tbptt", k_trunc=100).attach(model)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    x = torch.randn(2, 9, N_IN, requires_grad=True)

    def f(x, *ps):
        return functional_call(model, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"k_att": 2},
        {"threshold": "k", "small_memory": "raw"},
        {"scorer": "official", "threshold": "k", "small_memory": "raw"},
        {"score_hidden": 5, "k_top": 1},
    ],
    ids=["paper", "k_att2", "official-threshold", "official", "k_top1"],
)
@pytest.mark.parametrize("k_trunc", [1, 5])
def test_sparse_gather_equals_dense_masked(options, k_trunc, float64):
    x = torch.randn(3, 14, N_IN)
    out_g, out_d = (sab(**options, gather=g) for g in (True, False))
    g_gather = train_grads(out_g, "tbptt", x, k_trunc=k_trunc)
    g_dense = train_grads(out_d, "tbptt", x, k_trunc=k_trunc)
    torch.testing.assert_close(out_g(x), out_d(x), rtol=0, atol=1e-12)
    assert g_gather.keys() == g_dense.keys()
    for n, g in g_dense.items():
        torch.testing.assert_close(g_gather[n], g, rtol=0, atol=1e-10, msg=n)
    if options.get("k_top", 5) > 1:  # with one memory kept its weight is identically 1: no score gradient
        assert g_gather["scorer." + next(iter(dict(out_g.scorer.named_parameters())))].abs().sum() > 0


def test_memory_growth_and_repeated_backward_keep_gradients_exact(float64):
    """Past the memory buffer's first capacity (16 slots), and over two backward passes of one graph
    (the memory's gradient side channel must not keep stale credit), gather = dense."""
    x = torch.randn(2, 40, N_IN)
    grads = {}
    for gather in (True, False):
        model = sab(gather=gather)
        rules.get("tbptt", k_trunc=5).attach(model)
        loss = model(x).pow(2).mean()
        first = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
        second = torch.autograd.grad(loss, list(model.parameters()))
        assert model.memory_slots == 41 and model.bank.capacity > 16
        for a, b in zip(first, second, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        grads[gather] = first
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_a_finished_sequence_frees_its_memory_and_graph():
    """No reference cycle through the memory's graph: starting the next sequence frees the last one."""
    model = sab()
    model(torch.randn(2, 12, N_IN)).sum().backward()
    store, token = weakref.ref(model.bank.store), weakref.ref(model.bank.token)
    model.reset_state(2)
    assert store() is None and token() is None  # by reference counting alone, no collector pass


def test_credit_locality_tbptt_cannot_reach_x0_sab_can(float64):
    """∂L_T/∂x_0 is exactly 0 under TBPTT(2); SAB(k_trunc=2) reaches x_0 through selected memories."""
    T, spec = 24, TaskSpec((24, N_IN), 4)
    x = torch.randn(2, T, N_IN)

    def credit(model: torch.nn.Module, rule: str, **options) -> float:
        rules.get(rule, **options).attach(model)
        xg = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(model(xg)[:, -1].sum(), xg)
        return g[:, 0].norm().item()

    torch.manual_seed(0)
    assert credit(nets.get("lstm", spec, hidden=8), "tbptt", k_trunc=2) == 0.0
    assert credit(sab(hidden=8, k_top=2, k_att=1), "tbptt", k_trunc=2) > 1e-3
    assert credit(sab(hidden=8, k_top=2, k_att=1, attention="softmax"), "tbptt", k_trunc=2) > 1e-3


def test_sparsifier_keeps_exactly_k_top_weights_summing_to_one(float64):
    scores = torch.randn(50, 12)
    for k in (1, 3, 11):
        w = sparsify(scores, k)
        assert ((w > 0).sum(1) == k).all()
        torch.testing.assert_close(w.sum(1), torch.ones(50))
        assert (w[scores < scores.topk(k, 1).values[:, -1:]] == 0).all()
    official = sparsify(scores, 3, threshold="k")
    assert ((official > 0).sum(1) == 2).all()  # the official code keeps k_top − 1
    with pytest.raises(ShapeError, match="at least 4 scores"):
        sparsify(scores[:, :3], 3)


def test_attention_weights_over_time(float64):
    """Exactly k_top memories once the memory exceeds k_top; 1/|M| before (the stated rule)."""
    model = sab(k_top=3, k_att=2)
    w = model.attention_map(torch.randn(4, 20, N_IN))
    assert w.shape == (4, 20, 1 + 19 // 2)  # step 19 attends before h_19 is written
    for t in range(20):
        slots = 1 + t // 2
        if slots <= 3:
            torch.testing.assert_close(w[:, t, :slots], torch.full((4, slots), 1 / slots))
        else:
            assert ((w[:, t] > 0).sum(1) == 3).all()
        torch.testing.assert_close(w[:, t].sum(1), torch.ones(4))
        assert (w[:, t, slots:] == 0).all()
    dense = sab(attention="softmax").attention_map(torch.randn(2, 6, N_IN))
    assert (dense[:, -1] > 0).all()
    torch.testing.assert_close(dense.sum(2), torch.ones(2, 6))


def test_official_scorer_ignores_the_query(float64):
    """w·tanh([ĥ; m]) separates, so the sparsified weights are the same for any query."""
    model = sab(scorer="official", threshold="k", k_top=3)
    model(torch.randn(1, 12, N_IN))  # fill the memory
    summaries = [model._attend(torch.randn(1, 6) * 3, write=False)[1][:, 6:] for _ in range(2)]  # (h, [h; s])
    torch.testing.assert_close(summaries[0], summaries[1])
    mlp = sab(k_top=3)
    mlp(torch.randn(1, 12, N_IN))
    assert not torch.allclose(
        mlp._attend(torch.randn(1, 6) * 3, write=False)[1][:, 6:],
        mlp._attend(torch.randn(1, 6) * 3, write=False)[1][:, 6:],
    )


@pytest.mark.parametrize("k_att", [1, 3, 7])
def test_memory_slots(k_att):
    model = sab(k_att=k_att)
    for T in (1, 6, 7, 20):
        model(torch.randn(2, T, N_IN))
        assert model.memory_slots == 1 + T // k_att


def _saved_bytes(model: torch.nn.Module, rule_name: str, T: int, **options) -> int:
    """Peak saved-tensor bytes of one training step, run by a sequence task (online rules step by step)."""
    x, y = torch.randn(4, T, N_IN), torch.zeros(4, T, dtype=torch.long)
    task = SyntheticSequenceTask(
        "probe", lambda n, length, g: (x, y), T, 4, "ce", None, 1, None, steps_per_epoch=1, transfer=()
    )
    rule = rules.get(rule_name, **options)
    rule.attach(model)
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        train_epoch(task, model, rule, torch.optim.SGD(model.parameters(), lr=0.0), generator=torch.Generator())
    return meter.peak


def test_a_known_length_sizes_the_memory_once():
    """reset_state(batch, length) allocates the 1 + ⌊T/k_att⌋ slots at once (forward() and the online runner pass
    it); stepping past the length still grows the memory; a bad length is a ConfigError."""
    model, x = sab(k_att=3), torch.randn(2, 20, N_IN)
    model.reset_state(2, length=20)
    assert model.bank.capacity == 7
    stepped = torch.stack([model.step(x[:, t]) for t in range(20)], 1)
    assert model.bank.capacity == 7 and model.memory_slots == 7
    torch.testing.assert_close(stepped, model(x))
    buffers = [t for t in (model.bank.store.data, model.bank.store.aux, model.bank.store.grad) if t is not None]
    assert model.memory_bytes == sum(t.numel() * t.element_size() for t in buffers)
    model.reset_state(2, length=4)
    for t in range(20):
        model.step(x[:, t])
    assert model.memory_slots == 7 and model.bank.capacity >= 7
    _saved_bytes(model, "tbptt_stream", 30, k_trunc=5)  # the online runner knows T
    assert model.bank.capacity == 1 + 30 // 3
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="length"):
            model.reset_state(2, length=bad)


def test_retained_graph_grows_linearly_with_gather_quadratically_without():
    sizes = {g: [_saved_bytes(sab(hidden=8, k_att=1, gather=g), "tbptt", T) for T in (30, 60, 120)] for g in (1, 0)}
    gather, dense = sizes[1], sizes[0]
    assert gather[1] <= 2.2 * gather[0] and gather[2] <= 2.2 * gather[1]
    assert dense[2] >= 3 * dense[1]


def test_streaming_retains_less_than_full_bptt():
    T, options = 200, {"hidden": 8, "k_att": 20, "k_top": 3}
    full = _saved_bytes(sab(**options), "bptt", T)
    stream = _saved_bytes(sab(**options), "tbptt_stream", T, k_trunc=5)
    lstm = _saved_bytes(nets.get("lstm", TaskSpec((T, N_IN), 4), hidden=8), "bptt", T)
    assert stream < 0.4 * full and stream < lstm


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"threshold": "k+2"}, "threshold"),
        ({"scorer": "dot"}, "scorer"),
        ({"attention": "hard"}, "attention"),
        ({"small_memory": "zero"}, "small_memory"),
        ({"k_top": 0}, "k_top"),
        ({"k_att": 1.5}, "k_att"),
        ({"threshold": "k", "k_top": 1}, "k_top ≥ 2"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        sab(**options)


def test_registered_models_build_from_a_sequence_spec():
    spec = TaskSpec((52, 10), 9)
    for name in ("lstm", "sab_lstm", "attn_lstm"):
        model = nets.get(name, spec)
        assert model(torch.randn(2, 7, 10)).shape == (2, 7, 9)
