"""Temporal rules (bptt, tbptt, tbptt_stream) and the recurrent layer kind they configure."""

from __future__ import annotations

import copy

import pytest
import torch

from bioplaus import nets, rules, tasks
from bioplaus.analysis.graph_memory import SavedTensorMeter
from bioplaus.core import Context, LSTMCell, RecurrentSettings, TaskSpec
from bioplaus.errors import ConfigError, ShapeError
from bioplaus.nets import MLP
from bioplaus.runner import train_epoch

SPEC = TaskSpec((12, 3), 4)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def rule_grads(model: torch.nn.Module, rule: rules.Rule, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    rule.attach(model)
    model.zero_grad(set_to_none=True)
    out = model(x)
    rule.update(model, Context(loss=out.pow(2).mean()))
    return out.detach(), grads(model)


def _model(name: str = "lstm", seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return nets.get(name, SPEC, hidden=6, **options)


@pytest.mark.parametrize("name", ["lstm", "sab_lstm", "attn_lstm"])
def test_tbptt_with_k_at_least_T_is_bptt_exactly(name, float64):
    x = torch.randn(3, 12, 3)
    out_b, g_b = rule_grads(_model(name), rules.get("bptt"), x)
    for k in (12, 50):
        out_t, g_t = rule_grads(_model(name), rules.get("tbptt", k_trunc=k), x)
        assert torch.equal(out_t, out_b)
        for n in g_b:
            assert torch.equal(g_t[n], g_b[n]), n


def test_truncation_changes_gradients_not_outputs(float64):
    x = torch.randn(3, 12, 3)
    out_b, g_b = rule_grads(_model(), rules.get("bptt"), x)
    out_t, g_t = rule_grads(_model(), rules.get("tbptt", k_trunc=3), x)
    assert torch.equal(out_t, out_b)
    assert not torch.allclose(g_t["lstm.weight"], g_b["lstm.weight"])
    torch.testing.assert_close(g_t["readout.weight"], g_b["readout.weight"], rtol=0, atol=0)


def test_truncation_grid_cuts_before_multiples_of_k(float64):
    """With k = 4, ∂h_t/∂x_s ≠ 0 exactly when s and t share a segment [0,4), [4,8), [8,12)."""
    model = _model()
    rules.get("tbptt", k_trunc=4).attach(model)
    x = torch.randn(1, 12, 3, requires_grad=True)
    state, hs = model.lstm.initial_state(1), []
    for t in range(12):
        h, state = model.lstm(x[:, t], state, t)
        hs.append(h)
    for t in (3, 4, 7, 11):
        (g,) = torch.autograd.grad(hs[t].sum(), x, retain_graph=True)
        reached = [s for s in range(12) if g[0, s].abs().sum() > 0]
        assert reached == list(range(t - t % 4, t + 1)), (t, reached)


@pytest.mark.parametrize("name", ["lstm", "sab_lstm"])
def test_streaming_backward_equals_single_backward(name, float64):
    """tbptt_stream (a backward per segment, run online by the task) == tbptt's single backward."""
    task = tasks.get("delayed-recall", T=9, batch_size=3, steps_per_epoch=1, n_test=1, transfer=[], clip_grad_norm=None)
    results = {}
    for rule_name in ("tbptt", "tbptt_stream"):
        torch.manual_seed(0)
        options = {"k_top": 2, "k_att": 2} if name == "sab_lstm" else {}
        model = nets.get(name, task.spec, hidden=6, **options)
        rule = rules.get(rule_name, k_trunc=3)
        rule.attach(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        train_epoch(task, model, rule, optimizer, generator=torch.Generator().manual_seed(1))
        results[rule_name] = grads(model)
    for n, g in results["tbptt"].items():
        assert g.abs().sum() > 0, n
        torch.testing.assert_close(results["tbptt_stream"][n], g, rtol=1e-12, atol=1e-13, msg=n)


def test_streaming_keeps_only_what_memories_reach():
    """Plain LSTM: the streaming peak is one segment, whatever T; full BPTT grows with T."""
    task = tasks.get("delayed-recall", T=60, batch_size=4, steps_per_epoch=1, n_test=1, transfer=[])
    peaks = {}
    for rule_name, options in (("bptt", {}), ("tbptt_stream", {"k_trunc": 5})):
        torch.manual_seed(0)
        model = nets.get("lstm", task.spec, hidden=8)
        rule = rules.get(rule_name, **options)
        rule.attach(model)
        with SavedTensorMeter(exclude=model.parameters()) as meter:
            train_epoch(task, model, rule, torch.optim.SGD(model.parameters(), lr=0.0), generator=torch.Generator())
        peaks[rule_name] = meter.peak
    assert peaks["tbptt_stream"] < peaks["bptt"] / 8


def test_rules_configure_recurrent_layers_and_detach_resets():
    model = _model()
    rule = rules.get("tbptt", k_trunc=7)
    rule.attach(model)
    assert model.lstm.settings.truncate_every == 7
    rules.get("bptt").attach(model)
    assert model.lstm.settings.truncate_every is None
    rule.attach(model)
    rule.detach(model)
    assert model.lstm.settings == RecurrentSettings()


def test_temporal_rules_report_their_hparams():
    assert rules.get("tbptt", k_trunc=3).hparams() == {"k_trunc": 3}
    assert rules.get("bptt").hparams() == {}
    assert rules.get("tbptt_stream").online and not rules.get("tbptt").online


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "5"])
def test_bad_k_trunc_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="k_trunc"):
        rules.get("tbptt", k_trunc=bad)
    with pytest.raises(ConfigError, match="truncate_every"):
        _model().lstm.configure(truncate_every=bad)


def test_temporal_rule_on_a_model_without_recurrent_layers_is_a_config_error():
    with pytest.raises(ConfigError, match="recurrent"):
        rules.get("tbptt").attach(MLP(4, (8,), 2))


def test_lstm_cell_matches_torch_lstm_cell(float64):
    torch.manual_seed(0)
    ours = LSTMCell(3, 5)
    ref = torch.nn.LSTMCell(3, 5)
    with torch.no_grad():
        ref.weight_ih.copy_(ours.weight[:, :3])
        ref.weight_hh.copy_(ours.weight[:, 3:])
        ref.bias_ih.copy_(ours.bias)
        ref.bias_hh.zero_()
        # torch orders the gates (i, f, g, o); ours (i, f, o, g)
        for p in (ref.weight_ih, ref.weight_hh, ref.bias_ih):
            i, f, o, g = p.chunk(4, 0)
            p.copy_(torch.cat([i, f, g, o], 0))
    x, h, c = torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5)
    h1, (_, c1) = ours(x, (h, c), 0)
    h2, c2 = ref(x, (h, c))
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)


def test_recurrent_layer_records_per_step_and_checks_shapes():
    cell = LSTMCell(3, 4)
    cell.configure(record={"input", "pre", "output"})
    h, state = cell(torch.randn(2, 3), cell.initial_state(2), 0)
    assert cell.recorded("input").shape == (2, 7) and cell.recorded("pre").shape == (2, 16)
    assert cell.recorded("output") is h
    with pytest.raises(ShapeError, match="one time step"):
        cell(torch.randn(2, 5), state, 1)


def test_sequence_models_check_inputs_and_state():
    model = _model()
    with pytest.raises(ShapeError, match=r"\(batch, T, 3\)"):
        model(torch.randn(2, 3))
    with pytest.raises(ConfigError, match="reset_state"):
        _model().step(torch.randn(2, 3))
    with pytest.raises(ConfigError, match="sequence task"):
        nets.get("lstm", TaskSpec((784,), 10))


def test_models_copy_after_a_forward_pass():
    model = _model("sab_lstm")
    model(torch.randn(2, 12, 3)).sum().backward()
    clone = copy.deepcopy(model)
    assert clone.state is None and clone.bank is None
    torch.testing.assert_close(clone(torch.ones(1, 4, 3)), model(torch.ones(1, 4, 3)))


def test_streaming_defers_memory_credit_and_detach_undoes_it():
    model = _model("sab_lstm")
    rule = rules.get("tbptt_stream")
    rule.attach(model)
    assert model.defer_credit
    model(torch.randn(2, 12, 3))
    assert not model.bank.chain and model.bank.token is None  # no write waits on later reads
    rule.detach(model)
    model(torch.randn(2, 12, 3))
    assert model.bank.chain and model.bank.token is not None
    assert not model.defer_credit and model.lstm.settings == RecurrentSettings()
