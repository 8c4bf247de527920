"""Tests for the sequence models: TFT blocks (layers.py), the LSTM DMN and the Momentum
Transformer. Hand-computed cases pin the block equations (TFT eqs. 2-16); the model tests
check shapes, ranges, gradients, causality, Keras initialisation, constraints, validation and
ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from training.models import dmn, tft
from training.models.layers import (
    LAYER_NORM_EPS,
    GateAddNorm,
    GatedLinearUnit,
    GatedResidualNetwork,
    InterpretableMultiHeadAttention,
    VariableSelectionNetwork,
    max_norm_,
)
from training.models.tft import TftOutput

BATCH, SEQ, N_FEATURES = 3, 10, 8


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _features(batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    return torch.randn(batch, seq, N_FEATURES)


def _tickers(batch: int = BATCH) -> torch.Tensor:
    return torch.arange(batch, dtype=torch.int64) % tft.tiny().n_tickers


def _hand_layer_norm(v: torch.Tensor) -> torch.Tensor:
    """LayerNorm with unit gain and zero bias, Keras epsilon 1e-3, biased variance."""
    mean = v.mean(dim=-1, keepdim=True)
    var = ((v - mean) ** 2).mean(dim=-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + 1e-3)


# ---------------------------------------------------------------------------------------------
# layers.py: hand-computed block equations
# ---------------------------------------------------------------------------------------------


def test_glu_is_sigmoid_gate_times_linear() -> None:
    # eq. (5) with W5 = I, b5 = 0, W4 = 0, b4 = ln 3: gate = sigmoid(ln 3) = 3/4.
    glu = GatedLinearUnit(3, 3)
    with torch.no_grad():
        glu.value.weight.copy_(torch.eye(3))
        glu.value.bias.zero_()
        glu.gate.weight.zero_()
        glu.gate.bias.fill_(math.log(3.0))
    x = torch.tensor([[1.0, -2.0, 4.0]])
    torch.testing.assert_close(glu(x), torch.tensor([[0.75, -1.5, 3.0]]))


def test_gate_add_norm_uses_keras_epsilon() -> None:
    # A GLU whose linear part is zero contributes nothing: the output is LayerNorm(residual).
    block = GateAddNorm(2, 4)
    with torch.no_grad():
        block.glu.value.weight.zero_()
        block.glu.value.bias.zero_()
    residual = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # mean 2.5, variance 1.25, eps 1e-3 (PyTorch's default 1e-5 would differ at 4e-4 relative)
    expected = (residual - 2.5) / math.sqrt(1.25 + 1e-3)
    torch.testing.assert_close(block(torch.randn(1, 2), residual), expected, rtol=1e-6, atol=0)
    assert block.norm.eps == LAYER_NORM_EPS == 1e-3


def test_grn_equations_with_context() -> None:
    # eqs. (2)-(5) with W2 = 0, b2 = 0, W3 = I, W1 = I, b1 = 0, GLU = identity (gate ~ 1):
    # eta2 = ELU(c), eta1 = ELU(c), GRN(a, c) = LayerNorm(a + ELU(c)).
    grn = GatedResidualNetwork(4, 4, context_size=4)
    assert grn.context is not None
    with torch.no_grad():
        grn.fc2.weight.zero_()
        grn.fc2.bias.zero_()
        grn.context.weight.copy_(torch.eye(4))
        grn.fc1.weight.copy_(torch.eye(4))
        grn.fc1.bias.zero_()
        grn.gate_add_norm.glu.value.weight.copy_(torch.eye(4))
        grn.gate_add_norm.glu.value.bias.zero_()
        grn.gate_add_norm.glu.gate.weight.zero_()
        grn.gate_add_norm.glu.gate.bias.fill_(40.0)  # sigmoid(40) = 1 in float32
    a = torch.tensor([[0.5, 0.0, -0.5, 1.0]])
    c = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    elu_c = torch.tensor([[math.exp(-1.0) - 1.0, 0.0, 1.0, 2.0]])
    torch.testing.assert_close(grn(a, c), _hand_layer_norm(a + elu_c), rtol=1e-5, atol=1e-6)


def test_grn_skip_is_identity_or_projection() -> None:
    same = GatedResidualNetwork(4, 4)
    assert isinstance(same.skip, nn.Identity)
    with torch.no_grad():
        same.gate_add_norm.glu.value.weight.zero_()
        same.gate_add_norm.glu.value.bias.zero_()
    a = torch.tensor([[3.0, -1.0, 0.0, 2.0]])
    torch.testing.assert_close(same(a), _hand_layer_norm(a), rtol=1e-5, atol=1e-6)

    projected = GatedResidualNetwork(6, 4, output_size=3)
    assert isinstance(projected.skip, nn.Linear)
    assert projected(torch.randn(2, 5, 6)).shape == (2, 5, 3)


def test_grn_context_changes_output_and_requires_context_size() -> None:
    grn = GatedResidualNetwork(4, 4, context_size=2)
    a = torch.randn(2, 5, 4)
    c1, c2 = torch.zeros(2, 1, 2), torch.ones(2, 1, 2)
    assert not torch.allclose(grn(a, c1), grn(a, c2))
    with pytest.raises(ValueError, match="context_size"):
        GatedResidualNetwork(4, 4)(a, c1)


def test_vsn_combines_processed_variables_with_softmax_weights() -> None:
    # LayerNorm with zero gain outputs its bias: the weight GRN emits logits [0, ln 3] ->
    # softmax weights [1/4, 3/4]; variable GRNs emit constant vectors 1 and 5, so eq. (8)
    # gives 1/4 * 1 + 3/4 * 5 = 4 in every component.
    vsn = VariableSelectionNetwork(2, 4)
    with torch.no_grad():
        vsn.weights_grn.gate_add_norm.norm.weight.zero_()
        vsn.weights_grn.gate_add_norm.norm.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
        for grn, level in zip(vsn.variable_grns, (1.0, 5.0), strict=True):
            grn.gate_add_norm.norm.weight.zero_()
            grn.gate_add_norm.norm.bias.fill_(level)
    selected, weights = vsn(torch.randn(2, 3, 2))
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75]).expand(2, 3, 2))
    torch.testing.assert_close(selected, torch.full((2, 3, 4), 4.0))


def test_vsn_weights_are_a_distribution_that_depends_on_context() -> None:
    vsn = VariableSelectionNetwork(5, 6, context_size=6)
    x = torch.randn(2, 7, 5)
    selected, weights = vsn(x, torch.zeros(2, 1, 6))
    assert selected.shape == (2, 7, 6)
    assert weights.shape == (2, 7, 5)
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 7))
    _, other = vsn(x, torch.ones(2, 1, 6))
    assert not torch.allclose(weights, other)


def test_attention_with_zero_queries_averages_the_past_uniformly() -> None:
    # Zero queries give equal scores, so the causal softmax puts 1/(i+1) on each step j <= i
    # (TFT eq. 10 under the mask) and the output is W_H applied to the running mean of V W_V.
    attention = InterpretableMultiHeadAttention(8, 2)
    with torch.no_grad():
        attention.query.weight.zero_()
    x = torch.randn(2, 5, 8)
    output, weights = attention(x)
    steps = torch.arange(5)
    expected_weights = (steps[None, :] <= steps[:, None]).float() / (steps[:, None] + 1)
    torch.testing.assert_close(weights, expected_weights.expand(2, 5, 5))
    values = attention.value(x)  # (2, 5, head_size)
    running_mean = values.cumsum(dim=1) / (steps + 1).view(1, 5, 1)
    torch.testing.assert_close(output, attention.out(running_mean))


def test_attention_is_causal_and_shares_one_value_projection() -> None:
    attention = InterpretableMultiHeadAttention(5, 4)  # reference sizing: head size 5 // 4 = 1
    assert attention.head_size == 1
    assert attention.query.out_features == 4  # one query projection per head
    assert attention.value.out_features == 1  # ONE value projection for all heads
    assert attention.out.in_features == 1  # heads averaged, not concatenated (eq. 16)
    x = torch.randn(3, 6, 5)
    output, weights = attention(x)
    assert output.shape == (3, 6, 5)
    assert weights.shape == (3, 6, 6)
    assert bool((torch.triu(weights, diagonal=1) == 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))
    with pytest.raises(ValueError, match="heads"):
        InterpretableMultiHeadAttention(3, 4)


def test_max_norm_clips_each_row_like_keras() -> None:
    weight = torch.tensor([[6.0, 8.0], [0.6, 0.8]])  # row norms 10 and 1
    max_norm_(weight, 3.0)
    torch.testing.assert_close(weight, torch.tensor([[1.8, 2.4], [0.6, 0.8]]))


# ---------------------------------------------------------------------------------------------
# Shared model checks
# ---------------------------------------------------------------------------------------------

MODELS = {
    "dmn": (dmn.Dmn, dmn.tiny),
    "tft": (tft.Tft, tft.tiny),
}


def _positions(model: nn.Module, x: torch.Tensor, tickers: torch.Tensor) -> torch.Tensor:
    out = model(x, tickers)
    return out.positions if isinstance(out, TftOutput) else out


@pytest.mark.parametrize("name", MODELS)
def test_positions_shape_and_range(name: str) -> None:
    cls, tiny = MODELS[name]
    model = cls(tiny(dropout=0.2))
    for training in (True, False):
        model.train(training)
        positions = _positions(model, 5.0 * _features(), _tickers())
        assert positions.shape == (BATCH, SEQ)
        assert bool((positions.abs() <= 1).all())


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    cls, tiny = MODELS[name]
    model = cls(tiny(dropout=0.0)).train()
    positions = _positions(model, _features(), _tickers())
    (positions * torch.randn_like(positions)).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert bool(param.grad.abs().sum() > 0), pname


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("step", [0, 4, SEQ - 2])
def test_causality(name: str, step: int) -> None:
    cls, tiny = MODELS[name]
    model = cls(tiny(dropout=0.3)).eval()
    x, tickers = _features(), _tickers()
    perturbed = x.clone()
    perturbed[:, step + 1 :] += 10.0 * torch.randn_like(perturbed[:, step + 1 :])
    with torch.no_grad():
        before = model(x, tickers)
        after = model(perturbed, tickers)
    if isinstance(before, TftOutput):
        for field in ("positions", "variable_weights", "attention"):
            old, new = getattr(before, field), getattr(after, field)
            torch.testing.assert_close(new[:, : step + 1], old[:, : step + 1], rtol=0, atol=1e-6)
        before, after = before.positions, after.positions
    else:
        torch.testing.assert_close(after[:, : step + 1], before[:, : step + 1], rtol=0, atol=1e-6)
    # ... while the perturbation is visible from the next step on
    assert not torch.allclose(after[:, step + 1 :], before[:, step + 1 :])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seq", [1, 2, SEQ])
def test_last_only_is_the_last_step_of_the_full_output(name: str, seq: int) -> None:
    """The serving path (`last_only`) skips work, never changes the last step's numbers."""
    cls, tiny = MODELS[name]
    model = cls(tiny(dropout=0.3)).eval()
    with torch.no_grad():  # weights far from init, as after training
        for param in model.parameters():
            param.add_(0.5 * torch.randn_like(param))
    x, tickers = 3.0 * _features(seq=seq), _tickers()
    with torch.no_grad():
        full = model(x, tickers)
        last = model(x, tickers, last_only=True)
    if isinstance(full, TftOutput):
        assert isinstance(last, TftOutput)
        assert last.positions.shape == (BATCH, 1)
        assert last.variable_weights.shape == (BATCH, 1, N_FEATURES)
        assert last.attention.shape == (BATCH, 1, seq)  # one query row over the window
        for field in ("positions", "variable_weights", "attention"):
            want = getattr(full, field)[:, -1:]
            torch.testing.assert_close(getattr(last, field), want, rtol=0, atol=1e-6)
    else:
        assert last.shape == (BATCH, 1)
        torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)


def test_attention_last_only_is_the_last_query_row() -> None:
    attention = InterpretableMultiHeadAttention(hidden_size=8, heads=2).eval()
    x = torch.randn(BATCH, SEQ, 8)
    with torch.no_grad():
        output, weights = attention(x)
        last_output, last_weights = attention(x, last_only=True)
    assert last_output.shape == (BATCH, 1, 8) and last_weights.shape == (BATCH, 1, SEQ)
    torch.testing.assert_close(last_output, output[:, -1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(last_weights, weights[:, -1:], rtol=0, atol=1e-6)
    assert bool((last_weights[:, 0, :-1] > 0).all())  # the last step sees the whole window


@pytest.mark.parametrize("name", MODELS)
def test_keras_lstm_initialisation(name: str) -> None:
    cls, tiny = MODELS[name]
    lstm = cls(tiny()).lstm
    h = lstm.hidden_size
    expected_ih = torch.zeros(4 * h)
    expected_ih[h : 2 * h] = 1.0  # forget gate (PyTorch order i, f, g, o)
    torch.testing.assert_close(lstm.bias_ih_l0.detach(), expected_ih, rtol=0, atol=0)
    torch.testing.assert_close(lstm.bias_hh_l0.detach(), torch.zeros(4 * h), rtol=0, atol=0)
    # Keras recurrent kernel W = weight_hh.T is (h, 4h) orthogonal: W W^T = I
    w = lstm.weight_hh_l0.detach().T
    torch.testing.assert_close(w @ w.T, torch.eye(h), rtol=0, atol=1e-5)
    # glorot-uniform input kernel over the whole (in, 4h) kernel
    limit = math.sqrt(6.0 / (lstm.input_size + 4 * h))
    assert float(lstm.weight_ih_l0.detach().abs().max()) <= limit


@pytest.mark.parametrize("name", MODELS)
def test_constrain_applies_max_norm_3_to_head(name: str) -> None:
    cls, tiny = MODELS[name]
    model = cls(tiny())
    head = model.head
    assert head.weight.shape == (1, head.in_features)
    direction = torch.randn(1, head.in_features)
    direction = direction / direction.norm()
    with torch.no_grad():
        head.weight.copy_(7.0 * direction)
    model.constrain_()
    torch.testing.assert_close(head.weight.detach(), 3.0 * direction)
    with torch.no_grad():
        head.weight.copy_(0.5 * direction)
    model.constrain_()  # inside the ball: unchanged (up to Keras's 1e-7 epsilon)
    torch.testing.assert_close(head.weight.detach(), 0.5 * direction)


@pytest.mark.parametrize("name", MODELS)
def test_head_is_glorot_with_zero_bias(name: str) -> None:
    cls, tiny = MODELS[name]
    head = cls(tiny()).head
    assert float(head.weight.detach().abs().max()) <= math.sqrt(6.0 / (head.in_features + 1))
    assert float(head.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize("name", MODELS)
def test_rejects_wrong_feature_count(name: str) -> None:
    cls, tiny = MODELS[name]
    model = cls(tiny())
    with pytest.raises(ValueError, match="`x`"):
        model(torch.randn(2, 5, N_FEATURES + 1), _tickers(2))
    with pytest.raises(ValueError, match="`x`"):
        model(torch.randn(5, N_FEATURES), _tickers(2))


@pytest.mark.parametrize(
    ("config_cls", "field", "value"),
    [
        (dmn.DmnConfig, "n_features", 0),
        (dmn.DmnConfig, "hidden", -3),
        (dmn.DmnConfig, "hidden", 2.5),
        (dmn.DmnConfig, "dropout", 1.0),
        (dmn.DmnConfig, "dropout", -0.1),
        (tft.TftConfig, "n_features", 0),
        (tft.TftConfig, "n_tickers", 0),
        (tft.TftConfig, "hidden", 0),
        (tft.TftConfig, "heads", 0),
        (tft.TftConfig, "heads", 41),  # more heads than hidden = 40
        (tft.TftConfig, "dropout", 1.5),
    ],
)
def test_config_validation_names_the_field(config_cls: type, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        config_cls(**{field: value})


def test_tiny_configs_accept_overrides() -> None:
    assert dmn.tiny(hidden=3).hidden == 3
    assert tft.tiny(heads=1).heads == 1
    with pytest.raises(ValueError, match="`hidden`"):
        tft.tiny(hidden=0)
    for module in (dmn, tft):
        assert module.SEARCH_SPACE["hidden"] == [5, 10, 20, 40, 80, 160]


# ---------------------------------------------------------------------------------------------
# DMN specifics
# ---------------------------------------------------------------------------------------------


def test_dmn_defaults_match_the_paper_setup() -> None:
    config = dmn.DmnConfig()
    assert (config.n_features, config.hidden, config.dropout) == (8, 20, 0.3)


def test_dmn_ignores_tickers() -> None:
    model = dmn.Dmn(dmn.tiny()).eval()
    x = _features()
    torch.testing.assert_close(model(x, _tickers()), model(x), rtol=0, atol=0)


def test_dmn_input_dropout_mask_is_shared_over_time() -> None:
    model = dmn.Dmn(dmn.tiny(dropout=0.5)).train()
    seen: list[torch.Tensor] = []
    model.lstm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    model(torch.ones(64, SEQ, N_FEATURES))
    lstm_input = seen[0]  # (64, SEQ, 8): the dropped-out ones
    # one mask per (sample, feature), identical at every step ...
    torch.testing.assert_close(lstm_input, lstm_input[:, :1].expand_as(lstm_input))
    # ... with values 0 or 1 / (1 - p) = 2, both present, differing across samples
    assert set(lstm_input.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(lstm_input[0], lstm_input[1:].mean(0))

    model.eval()
    seen.clear()
    model(torch.ones(4, SEQ, N_FEATURES))
    torch.testing.assert_close(seen[0], torch.ones(4, SEQ, N_FEATURES), rtol=0, atol=0)


def test_dmn_output_dropout_is_not_shared_over_time() -> None:
    model = dmn.Dmn(dmn.tiny(dropout=0.5)).train()
    seen: list[torch.Tensor] = []
    model.head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    model(_features(batch=16))
    dropped = seen[0] == 0  # (16, SEQ, hidden): LSTM states are never exactly 0 otherwise
    assert bool(dropped.any())
    assert not torch.equal(dropped, dropped[:, :1].expand_as(dropped))


# ---------------------------------------------------------------------------------------------
# Momentum Transformer specifics
# ---------------------------------------------------------------------------------------------


def test_tft_defaults_match_the_paper_setup() -> None:
    config = tft.TftConfig()
    assert (config.n_features, config.hidden, config.heads) == (8, 40, 4)


def test_tft_outputs_are_interpretable_distributions() -> None:
    model = tft.Tft(tft.tiny()).eval()
    out = model(_features(), _tickers())
    assert isinstance(out, TftOutput)
    assert out.variable_weights.shape == (BATCH, SEQ, N_FEATURES)
    assert out.attention.shape == (BATCH, SEQ, SEQ)
    torch.testing.assert_close(out.variable_weights.sum(-1), torch.ones(BATCH, SEQ))
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(BATCH, SEQ))
    assert bool((torch.triu(out.attention, diagonal=1) == 0).all())
    # the first step can only attend to itself
    torch.testing.assert_close(out.attention[:, 0, 0], torch.ones(BATCH))


def test_tft_ticker_is_a_static_input() -> None:
    model = tft.Tft(tft.tiny()).eval()
    x = _features(batch=1).expand(2, SEQ, N_FEATURES)
    out = model(x, torch.tensor([0, 1]))
    # same features, different tickers: the static context changes positions and selection
    assert not torch.allclose(out.positions[0], out.positions[1])
    assert not torch.allclose(out.variable_weights[0], out.variable_weights[1])


@pytest.mark.parametrize("seq", [1, 63])
def test_tft_any_sequence_length(seq: int) -> None:
    model = tft.Tft(tft.tiny()).eval()
    out = model(_features(batch=2, seq=seq), _tickers(2))
    assert out.positions.shape == (2, seq)
    assert out.attention.shape == (2, seq, seq)


def test_tft_reference_head_sizing_for_small_hidden() -> None:
    # hidden 5 is on the paper's grid with 4 heads: per-head size 5 // 4 = 1, as in the reference
    model = tft.Tft(tft.tiny(hidden=5, heads=4)).eval()
    assert model.attention.head_size == 1
    assert model(_features(), _tickers()).positions.shape == (BATCH, SEQ)


def test_tft_keras_norm_and_embedding_init() -> None:
    model = tft.Tft(tft.tiny())
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms
    assert all(m.eps == 1e-3 for m in norms)
    assert float(model.ticker_embedding.weight.detach().abs().max()) <= 0.05


@pytest.mark.parametrize(
    ("tickers", "match"),
    [
        (None, "`tickers` is required"),
        (torch.tensor([0, 1]), r"`tickers` must have shape \(batch,\) = \(3,\)"),
        (torch.tensor([[0], [1], [2]]), r"`tickers` must have shape"),
        (torch.tensor([0.0, 1.0, 2.0]), "int64"),
        (torch.tensor([0, 1, 5]), r"`tickers` ids must lie in \[0, 5\)"),
        (torch.tensor([-1, 1, 2]), r"`tickers` ids must lie in \[0, 5\)"),
    ],
)
def test_tft_rejects_bad_tickers(tickers: torch.Tensor | None, match: str) -> None:
    model = tft.Tft(tft.tiny())
    with pytest.raises(ValueError, match=match):
        model(_features(), tickers)


# ---------------------------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------------------------


# Warnings torch 2.13's own exporter raises on its internals (nn.LSTM's flat-weight cache, its
# while_loop LSTM decomposition, pytree internals) and on the shared `batch` axis name.
@pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm._flat_weights:UserWarning")
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.filterwarnings("ignore:_check_is_size will be removed:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_keeps_batch_and_sequence_dynamic(name: str, tmp_path) -> None:
    import onnxruntime as ort
    from torch.export._patches import register_lstm_while_loop_decomposition

    cls, tiny = MODELS[name]
    # two features keep the export quick (the TFT graph grows with one GRN per feature)
    n_features = 2
    model = cls(tiny(n_features=n_features)).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    path = tmp_path / f"{name}.onnx"
    # torch 2.13 registers the while_loop LSTM decomposition only while capturing; its later
    # re-decomposition step freezes the LSTM's time axis at the example length (pytorch
    # issue #191855, fixed upstream by PR #193192). Keeping the decomposition registered
    # for the whole export is that fix.
    # the context swaps the op's Python kernel but not the kernel an earlier LSTM call in this
    # process cached on the op: clear that cache on the way in and on the way out
    lstm_op = torch.ops.aten.lstm.input
    with register_lstm_while_loop_decomposition():
        lstm_op._dispatch_cache.clear()
        torch.onnx.export(
            model,
            (torch.randn(2, SEQ, n_features), _tickers(2)),
            str(path),
            dynamo=True,
            dynamic_shapes={"x": {0: batch, 1: seq}, "tickers": {0: batch}},
            external_data=False,
        )
    lstm_op._dispatch_cache.clear()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, tickers = torch.randn(4, 7, n_features), _tickers(4)  # other batch AND sequence length
    feeds = {"x": x.numpy(), "tickers": tickers.numpy()}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    results = session.run(None, feeds)
    with torch.no_grad():
        expected = model(x, tickers)
    expected_tuple = tuple(expected) if isinstance(expected, TftOutput) else (expected,)
    assert len(results) == len(expected_tuple)
    for got, want in zip(results, expected_tuple, strict=True):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
