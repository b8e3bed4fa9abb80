"""SAB's fused attention step: the C kernel equals the PyTorch path (outputs, every gradient, the map).

The kernel serves a step through one of two autograd nodes, both tested: the C++ operator
(``bioplaus/native/sab_step.cpp``, where a C++ compiler builds it) and the Python ``AttentionStep``
(``node="function"``: the operator switched off)."""

from __future__ import annotations

import copy
import gc
import math

import pytest
import torch

from bioplaus import native, rules
from bioplaus.core import Context
from bioplaus.errors import ConfigError
from bioplaus.native import sab as kernel
from bioplaus.nets.sab import AttentiveLSTM

N_IN = 3
needs_kernel = pytest.mark.skipif(kernel.library() is None, reason="no C compiler: the kernel cannot be built")
NODES = ["operator", "function"]
"""How a kernel step enters the graph: the C++ operator, or the Python autograd.Function."""
BACKENDS = ["auto", "function", "torch"]
"""A model's backend, where ``"function"`` is ``"auto"`` with the C++ operator switched off."""


@pytest.fixture(params=NODES)
def node(request, monkeypatch) -> str:
    """Run the test with either node; the operator's variant skips where it cannot be built."""
    if request.param == "function":
        monkeypatch.setattr(kernel, "operator", lambda: None)
    elif kernel.library() is None or kernel.operator() is None:
        pytest.skip(f"the C++ operator cannot be built here: {native.status().get('sab_step')}")
    return request.param


@pytest.fixture
def operator():
    """The C++ operator of a step; the test skips where it cannot be built."""
    op = kernel.operator() if kernel.library() is not None else None
    if op is None:
        pytest.skip(f"the C++ operator cannot be built here: {native.status().get('sab_step')}")
    return op


def model_for(backend: str, monkeypatch, *args, **options) -> AttentiveLSTM:
    """An AttentiveLSTM on one of `BACKENDS`."""
    if backend == "function":
        monkeypatch.setattr(kernel, "operator", lambda: None)
    return AttentiveLSTM(*args, backend="auto" if backend == "function" else backend, **options)


def pair(seed: int = 0, **options) -> tuple[AttentiveLSTM, AttentiveLSTM]:
    """The same model twice (same weights): C kernel and PyTorch path."""
    options = {"hidden": 6, "n_out": 4, "k_top": 3, "k_att": 1} | options
    models = []
    for backend in ("auto", "torch"):
        torch.manual_seed(seed)
        models.append(AttentiveLSTM(N_IN, backend=backend, **options))
    return models[0], models[1]


def run(model: AttentiveLSTM, x: torch.Tensor, rule: str, **rule_options) -> tuple[torch.Tensor, dict]:
    rule_obj = rules.get(rule, **rule_options)
    rule_obj.attach(model)
    model.zero_grad(set_to_none=True)
    out = model(x)
    rule_obj.update(model, Context(loss=out.pow(2).mean() + out[:, -1, 0].sum(), output=out))
    return out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same(fast: AttentiveLSTM, slow: AttentiveLSTM, x: torch.Tensor, rule: str, **rule_options) -> None:
    """The kernel's float32 results are as close to a float64 run as the PyTorch path's float32 results are.

    Forty recurrent steps with a single backward accumulate float32 rounding to about 1e-5 of each
    gradient's scale on either path, so the two are compared against the exact (float64) values, not
    element by element against each other."""
    exact = copy.deepcopy(slow).double()
    out_fast, grads_fast = run(fast, x, rule, **rule_options)
    out_slow, grads_slow = run(slow, x, rule, **rule_options)
    out_exact, grads_exact = run(exact, x.double(), rule, **rule_options)
    assert fast._plan is not None and fast._plan.lib is not None, "the kernel did not serve the model"
    assert slow._plan is not None and slow._plan.lib is None and slow._plan.op is None
    assert grads_fast.keys() == grads_slow.keys() == grads_exact.keys()
    pairs = [("output", out_fast, out_slow, out_exact)]
    pairs += [(name, grads_fast[name], grads_slow[name], grads_exact[name]) for name in grads_exact]
    for name, fast_value, slow_value, exact_value in pairs:
        scale = exact_value.norm()
        error_fast = (fast_value.double() - exact_value).norm() / scale
        error_slow = (slow_value.double() - exact_value).norm() / scale
        assert error_fast <= 4 * error_slow + 1e-6, f"{name}: kernel {error_fast:.1e}, PyTorch float32 {error_slow:.1e}"


@needs_kernel
@pytest.mark.parametrize(
    "options",
    [
        {},  # k_top + 1 threshold, K = H
        {"threshold": "k", "k_top": 2},  # the official threshold
        {"score_hidden": 20, "hidden": 5},  # K not a multiple of 16, H odd
        {"k_att": 3, "k_top": 2},  # writes every third step; uniform reads for longer
        {"small_memory": "raw"},  # the official small-memory rule: the first reads leave the fused step
    ],
)
@pytest.mark.parametrize(("rule", "rule_options"), [("bptt", {}), ("tbptt", {"k_trunc": 3})])
def test_kernel_equals_the_pytorch_path(options, rule, rule_options, node):
    torch.manual_seed(1)
    x = torch.randn(5, 40, N_IN)  # 5 rows: not a multiple of the kernel's 4-row blocks; 41 slots
    fast, slow = pair(**options)
    assert_same(fast, slow, x, rule, **rule_options)
    assert (fast._plan.op is not None) == (node == "operator")


@needs_kernel
def test_kernel_equals_the_pytorch_path_with_deferred_credit(node):
    """Streaming backward: writes are separate nodes whose tokens release() back-propagates."""
    torch.manual_seed(2)
    assert_same(*pair(k_att=2), torch.randn(3, 30, N_IN), "tbptt_stream", k_trunc=4)


@needs_kernel
def test_large_queries_take_the_exact_score(node):
    """|q| beyond the fast score's range: e^{2q} e^{2κ} would overflow, and the kernel uses tanh itself."""
    fast, slow = pair()
    for model in (fast, slow):
        with torch.no_grad():
            model.scorer.query_proj.bias.copy_(torch.linspace(-60, 60, 6))
    torch.manual_seed(3)
    assert_same(fast, slow, torch.randn(4, 20, N_IN), "bptt")


@needs_kernel
def test_attention_map_and_divergence(node):
    fast, slow = pair()
    x = torch.randn(2, 15, N_IN)
    torch.testing.assert_close(fast.attention_map(x), slow.attention_map(x), rtol=1e-3, atol=1e-5)
    x[1, 4] = math.nan  # a diverged row: NaN from there on, on both paths; the other row stays finite
    out_fast, out_slow = fast(x).detach(), slow(x).detach()
    assert torch.isnan(out_fast[1, 5:]).all() and torch.isnan(out_slow[1, 5:]).all()
    torch.testing.assert_close(out_fast[0], out_slow[0], rtol=1e-4, atol=1e-5)


def test_layers_a_rule_configured_leave_the_fused_step():
    """A scorer layer with non-default settings (a rule's feedback, recording...) runs as ordinary layers."""
    model, reference = pair(k_att=2)
    model.scorer.query_proj.configure(record={"input"})
    x = torch.randn(2, 12, N_IN)
    out = model(x)
    assert model._plan is None and "input" in model.scorer.query_proj.trace
    torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-5)


def test_float64_and_the_torch_backend_never_use_the_kernel(float64):
    for model in pair():  # float64 (auto), and the torch backend
        model(torch.randn(2, 8, N_IN))
        assert model._plan is not None and model._plan.lib is None and model.bank.store.lib is None


def test_backend_choices(monkeypatch):
    with pytest.raises(ConfigError, match="backend must be one of"):
        AttentiveLSTM(N_IN, 6, 4, backend="cuda")
    monkeypatch.setenv("BIOPLAUS_NATIVE", "0")
    native.clear()
    try:
        with pytest.raises(ConfigError, match="kernel is unavailable"):
            AttentiveLSTM(N_IN, 6, 4, backend="native")
        model = AttentiveLSTM(N_IN, 6, 4)  # auto falls back to PyTorch
        model(torch.randn(2, 6, N_IN)).sum().backward()
        assert model._plan.lib is None
    finally:
        monkeypatch.delenv("BIOPLAUS_NATIVE")
        native.clear()


def test_a_machine_with_a_compiler_builds_the_kernel():
    """Guard: the tests above skip without the kernel, so a compiler that fails to build it must fail here."""
    if native._compiler() is None or not native.enabled():
        pytest.skip("no C compiler, or kernels disabled")
    assert kernel.library() is not None, native.status().get("sab")


def stepped(model: AttentiveLSTM, x: torch.Tensor) -> torch.Tensor:
    """The outputs of ``x`` fed one step at a time (the memory's length unknown in advance)."""
    model.reset_state(x.shape[0])
    return torch.stack([model.step(x[:, t]) for t in range(x.shape[1])], 1)


def scorer_grads(model: AttentiveLSTM) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.scorer.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_memory_grown_step_by_step_equals_one_allocated_at_once(backend, monkeypatch):
    """forward() allocates all 1 + T/k_att slots; step() starts with 16 and doubles (41 slots: twice): the same
    outputs and gradients."""
    torch.manual_seed(4)
    model = model_for(backend, monkeypatch, N_IN, 6, 4, k_top=3, k_att=1)
    x = torch.randn(3, 40, N_IN)
    whole = model(x)
    assert model.bank.capacity == 41
    whole.pow(2).mean().backward()
    reference = scorer_grads(model)
    model.zero_grad()
    steps = stepped(model, x)
    assert model.bank.capacity == 64
    torch.testing.assert_close(steps, whole, rtol=1e-6, atol=1e-7)  # the readout runs per step: rounding only
    steps.pow(2).mean().backward()
    for grad, expected in zip(scorer_grads(model), reference, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scorer_gradients_reach_autograd_grad_and_survive_a_reset_without_grad(backend, monkeypatch):
    """The steps hand the scorer's gradients to one node per sequence (ParamGrads): torch.autograd.grad finds it,
    and a sequence started under no_grad still orders it after every step."""
    torch.manual_seed(5)
    model = model_for(backend, monkeypatch, N_IN, 6, 4, k_top=2, k_att=2)
    x = torch.randn(3, 20, N_IN)
    model(x).pow(2).mean().backward()
    expected = scorer_grads(model)
    params = list(model.scorer.parameters())
    torch.testing.assert_close(list(torch.autograd.grad(model(x).pow(2).mean(), params)), expected)
    with torch.no_grad():
        model.reset_state(x.shape[0])
    model.zero_grad()
    torch.stack([model.step(x[:, t]) for t in range(x.shape[1])], 1).pow(2).mean().backward()
    for grad, want in zip(scorer_grads(model), expected, strict=True):
        torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scorer_weight_changed_before_the_backward_raises(backend, monkeypatch):
    """The step keeps no copy of the scorer's weights: changing one in place between forward and backward must
    fail loudly, as PyTorch's own operations do, not give a gradient of other weights."""
    model = model_for(backend, monkeypatch, N_IN, 6, 4, k_top=2, k_att=1)
    loss = model(torch.randn(2, 10, N_IN)).sum()
    with torch.no_grad():
        model.scorer.query_proj.weight.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_what_a_step_keeps_for_its_backward_is_seen_by_saved_tensor_hooks(backend, monkeypatch):
    """The step's state and winners go through save_for_backward, so memory meters (saved-tensor hooks) count them."""
    model = model_for(backend, monkeypatch, N_IN, 6, 4, k_top=2, k_att=1)
    seen = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        seen.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(torch.randn(2, 8, N_IN))
    state, idx, _ = model.bank.store.last_read
    assert state is not None and idx is not None
    assert {state.untyped_storage().data_ptr(), idx.untyped_storage().data_ptr()} <= seen
    out.sum().backward()


def test_a_frozen_scorer_still_keeps_the_memory_alive_for_the_backward(node):
    """The C++ node holds only the plan's address: the sequence's root (ReadPlan.root) keeps the buffers alive, with
    a graph even when no scorer parameter requires grad, so a backward after the model moved on is still exact."""
    fast, slow = pair(k_att=2)
    x = torch.randn(3, 16, N_IN)
    grads = []
    for model in (fast, slow):
        model.scorer.requires_grad_(False)
        loss = model(x).pow(2).mean()
        model.reset_state(3)  # drops the model's references to the sequence's memory and plan
        gc.collect()
        loss.backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_second_backward_raises_the_usual_error(node):
    fast, _ = pair(k_att=2)
    loss = fast(torch.randn(2, 10, N_IN)).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_the_operator_refuses_arguments_that_do_not_fit_its_plan(operator):
    """Called directly with a wrong shape or sizes beyond the memory, the operator raises instead of reading past
    a buffer."""
    model = AttentiveLSTM(N_IN, 6, 4, k_top=2, k_att=1)
    model.reset_state(2, 8)
    plan = model._plan
    h_hat = torch.zeros(2, 6)
    with pytest.raises(RuntimeError, match=r"shape \(2, 6\)"):
        operator(torch.zeros(3, 6), None, plan.plan_bytes, 1, 0, -1, plan._tracked)
    with pytest.raises(RuntimeError, match="does not fit"):
        operator(h_hat, None, plan.plan_bytes, 99, 3, -1, plan._tracked)
    with pytest.raises(RuntimeError, match="does not fit"):
        operator(h_hat, None, plan.plan_bytes, 1, 2, -1, plan._tracked)  # more winners than slots
    with pytest.raises(RuntimeError, match="one sab_plan"):
        operator(h_hat, None, torch.zeros(3, dtype=torch.uint8), 1, 0, -1, plan._tracked)
    h, out, *_ = operator(h_hat, None, plan.plan_bytes, 1, 0, -1, plan._tracked)  # a uniform read of h0 = 0
    assert h.shape == (2, 6) and out.shape == (2, 12)


def test_a_machine_with_a_cxx_compiler_builds_the_operator():
    """Guard: the operator's variants skip without it, so a C++ compiler that fails to build it must fail here."""
    if native._compiler() is None or native._cxx_compiler() is None or not native.enabled():
        pytest.skip("no C and C++ compilers, or kernels disabled")
    assert kernel.operator() is not None, native.status().get("sab_step")


def test_the_operator_backward_with_an_output_unused(operator):
    """Only h, or only out, reaches the loss: the other output's gradient is absent (not materialised) and counts as
    zero. A uniform read of h0 = 0: h = ĥ and out = [ĥ; 0], so both gradients are ones."""
    model = AttentiveLSTM(N_IN, 6, 4, k_top=2, k_att=1)
    model.reset_state(2, 8)
    plan = model._plan
    plan.store.grad_buffer()
    for pick in (lambda h, out: h, lambda h, out: out[:, :6]):
        h_hat = torch.randn(2, 6, requires_grad=True)
        h, out, *_ = operator(h_hat, None, plan.plan_bytes, 1, 0, -1, plan._tracked)
        (grad,) = torch.autograd.grad(pick(h, out).sum(), h_hat)
        torch.testing.assert_close(grad, torch.ones(2, 6))
