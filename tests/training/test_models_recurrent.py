"""Boutier (2023)'s cross-sectional recurrent models: rnn, deep_rnn, gru, lstm_xs, deep_lstm.

Shapes, the zero-mean layer, inactive assets, gradients, causality, the L1 penalty, batch
normalisation, the Table 1 grid, ONNX export and one training run through `train`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training.datasets import ModelData, label_rows
from training.export import export_onnx, onnx_session, serving_module
from training.models import REGISTRY, Universe, build, get_spec, recurrent
from training.models.recurrent import (
    FLAT_SPREAD,
    Recurrent,
    RecurrentConfig,
    RecurrentLayer,
    zero_mean,
)
from training.train import TrainConfig, layout_for, split_hyperparameters, train

NAMES = ["rnn", "deep_rnn", "gru", "lstm_xs", "deep_lstm"]
# (cell, stacked layers) of each name: section 4 and Table 4
EXPECTED = {
    "rnn": ("rnn", 1),
    "deep_rnn": ("rnn", 2),
    "gru": ("gru", 1),
    "lstm_xs": ("lstm", 1),
    "deep_lstm": ("lstm", 3),
}
TORCH_CELL = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
BATCH, STEPS = 3, 12
DEAD = 2  # an asset with no data at any step: every feature 0


def _model(name: str, seed: int = 0, **overrides) -> tuple[RecurrentConfig, Recurrent]:
    spec = get_spec(name)
    torch.manual_seed(seed)
    config = spec.tiny(**overrides)
    model = spec.build(config)
    assert isinstance(model, Recurrent)
    return config, model


def _inputs(config: RecurrentConfig, seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    """Random features with asset `DEAD` inactive everywhere and asset 0 inactive at steps
    3-4 of the first window."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, STEPS, config.n_assets, config.n_features), generator=g)
    x[:, :, DEAD] = 0.0
    x[0, 3:5, 0] = 0.0
    return x


def _is_active(x: torch.Tensor) -> torch.Tensor:
    return (x != 0).any(dim=-1)


def _warm_up(model: Recurrent, config: RecurrentConfig, passes: int = 5) -> None:
    """Train-mode forward passes, so the running statistics are no longer the identity."""
    model.train()
    with torch.no_grad():
        for seed in range(passes):
            model(_inputs(config, seed=100 + seed) * 2.0 + 0.5)
    model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_each_name_is_its_cell_and_depth(name):
    spec = REGISTRY[name]
    config, model = _model(name)
    cell, layers = EXPECTED[name]
    assert (config.cell, config.layers) == (cell, layers)
    assert dict(spec.defaults) == {"cell": cell, "layers": layers}
    assert spec.layout == "panel" and spec.feature_set == "extended"
    assert model.loss_reduction == "portfolio"
    assert len(model.layers) == layers
    for i, layer in enumerate(model.layers):
        assert type(layer.recurrent) is TORCH_CELL[cell]
        assert layer.recurrent.num_layers == 1  # stacked as separate layers, BN between
        assert layer.recurrent.input_size == (config.n_features if i == 0 else config.hidden)
        assert isinstance(layer.norm, nn.BatchNorm1d)
    # the registry fills the data fields and keeps the variant's cell and depth
    built, _ = build(name, Universe(tuple("ABCDEFG"), 19), hidden=8)
    assert (built.n_assets, built.n_features, built.cell, built.layers) == (7, 19, cell, layers)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_positions_are_zero_mean_with_unit_gross_over_active_assets(name, mode):
    config, model = _model(name)
    model.train(mode == "train")
    x = _inputs(config)
    positions = model(x)
    assert positions.shape == (BATCH, STEPS, config.n_assets)
    assert torch.isfinite(positions).all()
    assert positions.abs().max() <= 0.5 + 1e-6  # a zero-sum, unit-gross book: |X| <= 1/2
    active = _is_active(x)
    assert (positions[~active] == 0).all()  # inactive: the dead asset, asset 0 at steps 3-4
    assert (positions[:, :, DEAD] == 0).all()
    torch.testing.assert_close(positions.sum(-1), torch.zeros(BATCH, STEPS), rtol=0, atol=1e-6)
    torch.testing.assert_close(positions.abs().sum(-1), torch.ones(BATCH, STEPS))
    # not a constant book: the scores differ across assets
    assert positions[active].abs().min() > 0


def test_zero_mean_by_hand():
    scores = torch.tensor([[4.0, 1.0, 9.0, 1.0], [2.0, -2.0, 0.0, 0.0]])
    active = torch.tensor([[True, True, False, True], [True, True, True, True]])
    expected = torch.tensor([[0.5, -0.25, 0.0, -0.25], [0.5, -0.5, 0.0, 0.0]])
    torch.testing.assert_close(zero_mean(scores, active), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "scores, active",
    [
        ([0.3, 0.3, 0.3], [True, True, True]),  # all equal
        ([0.1 + 1e-7, 0.1, 0.1 - 1e-7], [True, True, True]),  # equal up to float32 noise
        ([0.0, 0.0, 0.0], [True, True, True]),
        ([0.7, -1.0, 2.0], [False, True, False]),  # one active asset
        ([0.7, -1.0, 2.0], [False, False, False]),  # none
    ],
)
def test_a_flat_cross_section_gives_zero_positions_and_finite_gradients(scores, active):
    s = torch.tensor([scores], requires_grad=True)
    out = zero_mean(s, torch.tensor([active]))
    assert (out == 0).all()
    (out * torch.tensor([[1.0, -2.0, 3.0]])).sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_a_small_real_spread_is_not_flat():
    s = torch.tensor([[1.0, 1.0 + 100 * FLAT_SPREAD, 1.0]])
    out = zero_mean(s, torch.ones_like(s, dtype=torch.bool))
    torch.testing.assert_close(out.abs().sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_parameter_gets_a_gradient(name, mode):
    config, model = _model(name, dropout=0.0)
    model.train(mode == "train")
    positions = model(_inputs(config))
    weights = torch.linspace(-1, 1, positions.numel()).reshape(positions.shape)
    (positions * weights).sum().backward()
    silent = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 1e-6
    ]
    assert not silent, f"{name}: no gradient reaches {silent}"


@pytest.mark.parametrize("name", NAMES)
def test_no_parameter_the_zero_mean_layer_cancels(name):
    # a head bias or a last-layer shift would add the same number to every asset's score
    config, model = _model(name)
    assert model.head.bias is None
    assert model.layers[-1].norm.bias is None
    assert all(layer.norm.bias is not None for layer in model.layers[:-1])


@pytest.mark.parametrize("name", NAMES)
def test_causal_in_eval_mode(name):
    # train-mode batch statistics pool the window's steps; eval mode uses running statistics
    config, model = _model(name)
    _warm_up(model, config)
    x = _inputs(config)
    s = 5
    changed = x.clone()
    changed[:, s + 1 :] = torch.randn_like(changed[:, s + 1 :]) * 3
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(before[:, : s + 1], after[:, : s + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, s + 1 :], after[:, s + 1 :])


@pytest.mark.parametrize("name", NAMES)
def test_penalty_is_the_l1_of_the_input_and_head_kernels(name):
    config, model = _model(name, l1=0.01)
    expected = (
        sum(layer.recurrent.weight_ih_l0.abs().sum() for layer in model.layers)
        + model.head.weight.abs().sum()
    )
    torch.testing.assert_close(model.penalty(), 0.01 * expected)
    assert len(model.penalised_weights()) == config.layers + 1
    # recurrent kernels, biases and batch normalisation are not penalised
    before = model.penalty().item()
    with torch.no_grad():
        for layer in model.layers:
            layer.recurrent.weight_hh_l0.mul_(3.0)
            layer.recurrent.bias_ih_l0.add_(1.0)
            layer.norm.weight.mul_(2.0)
    assert model.penalty().item() == pytest.approx(before)
    with torch.no_grad():
        model.layers[-1].recurrent.weight_ih_l0.mul_(2.0)
    assert model.penalty().item() > before
    _, unpenalised = _model(name, l1=0.0)
    assert unpenalised.penalty().item() == 0.0
    # the paper gives no weight: a fixed default, not a searched key
    assert RecurrentConfig(n_assets=3).l1 == 1e-5 and "l1" not in recurrent.SEARCH_SPACE


def test_grid_is_table_1_with_t_252():
    # Boutier (2023) Table 1; T = 252 from section 4 and Table 3; clipnorm 10 from section 4
    table_1 = {
        "k": [21, 63, 126, 252],
        "dropout": [0.1, 0.25, 0.5],
        "hidden": [60, 80, 100, 120],
        "batch_size": [32, 64, 128],
        "lr": [1e-3, 1e-2, 1e-1],
        "max_grad_norm": [10.0],
    }
    for name in NAMES:
        spec = REGISTRY[name]
        assert spec.search_space == table_1
        assert spec.search_space is recurrent.SEARCH_SPACE  # one definition for the five
        model_part, train_part = split_hyperparameters(
            spec, {key: values[0] for key, values in table_1.items()}
        )
        assert model_part == {"dropout": 0.1, "hidden": 60}
        assert train_part == {"seq_len": 21, "batch_size": 32, "lr": 1e-3, "max_grad_norm": 10.0}


@pytest.mark.parametrize("name", NAMES)
def test_batch_norm_is_keras_and_eval_rows_are_independent(name):
    config, model = _model(name)
    for layer in model.layers:
        assert (layer.norm.eps, layer.norm.momentum) == (1e-3, 0.01)
    _warm_up(model, config)
    for layer in model.layers:
        assert layer.norm.running_mean is not None and layer.norm.running_mean.abs().max() > 0
    x = _inputs(config, batch=4)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
        # the other samples of a batch do not move a sample's positions in eval mode...
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
        # ...while in training mode the batch statistics do
        model.train()
        model.dropout.p = 0.0
        assert not torch.allclose(model(x)[:1], model(x[:1]), atol=1e-4)


def test_training_batch_statistics_leave_out_inactive_rows():
    torch.manual_seed(0)
    layer = RecurrentLayer("gru", 4, 6).train()
    x = torch.randn(5, 7, 4)
    active = torch.ones(5, 7, dtype=torch.bool)
    active[1] = False
    active[3, :4] = False
    with torch.no_grad():
        h, _ = layer.recurrent(x)
        out = layer(x, active)
    rows = h.reshape(-1, 6)[active.reshape(-1)]
    momentum = layer.norm.momentum
    torch.testing.assert_close(layer.norm.running_mean, momentum * rows.mean(0))
    torch.testing.assert_close(
        layer.norm.running_var, (1 - momentum) + momentum * rows.var(0, unbiased=True)
    )
    # active rows are normalised by their own statistics: mean 0 after the (zero) shift
    normed = out.reshape(-1, 6)[active.reshape(-1)]
    torch.testing.assert_close(normed.mean(0), torch.zeros(6), rtol=0, atol=1e-5)


# each cell once, stacked where a name stacks it: rnn and lstm_xs are one layer of deep_rnn
# and deep_lstm, which have both kinds of normalisation (with and without the shift);
# test_export.py exports every registry model, this one with trained running statistics
@pytest.mark.parametrize("name", ["deep_rnn", "gru", "deep_lstm"])
def test_exports_with_onnxruntime_parity(name, tmp_path):
    config, model = _model(name)
    _warm_up(model, config)  # non-trivial running statistics, so the folding is exercised
    lookback = 9
    graph = export_onnx(
        name,
        model,
        n_assets=config.n_assets,
        lookback=lookback,
        n_features=config.n_features,
        path=tmp_path / "m.onnx",
    )
    assert set(graph.parity_max_abs_diff) == {"1", "256"}
    assert max(graph.parity_max_abs_diff.values()) <= 1e-5
    # the contract tensor with an inactive asset and an asset inactive at the last step
    x = _inputs(config, seed=7).permute(0, 2, 1, 3)[:, :, -lookback:].contiguous()
    x[1, 0, -1] = 0.0
    got = onnx_session(graph.path).run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        want = serving_module(name, model, config.n_assets)(x).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert (got[:, DEAD] == 0).all() and got[1, 0] == 0
    np.testing.assert_allclose(got.sum(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(got).sum(-1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def panel():
    """5 assets x 450 days of the synthetic panel, staggered starts (inactive assets)."""
    prices = synthetic_prices(n_assets=5, n_days=450, n_markets=1, seed=3).prices
    features = compute_features(prices)
    return ModelData.from_features(features), Universe(tuple(features.tickers), 8)


@pytest.mark.parametrize("name", NAMES)
def test_trains_end_to_end_on_grid_keys(name, panel):
    data, universe = panel
    hyper = {"k": 10, "hidden": 6, "dropout": 0.1, "batch_size": 8, "lr": 1e-2}
    config, result = train(
        name,
        data,
        universe,
        label_rows(320, 420),
        label_rows(420, 450),
        {**hyper, "max_grad_norm": 10.0},
        TrainConfig(max_epochs=2, patience=2, seed=0),
    )
    assert (config.cell, config.layers) == EXPECTED[name]
    assert result.stopped != "diverged" and len(result.history) == 2
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    # the trained weights moved, and the running statistics were recorded
    _, fresh = _model(name, n_assets=universe.n_assets, hidden=6, dropout=0.1)
    assert result.model.layers[0].norm.num_batches_tracked > 0
    assert not torch.equal(result.model.head.weight, fresh.head.weight)
    # the backtest's prediction path: a zero-sum, unit-gross book on dates every asset trades
    spec = get_spec(name)
    layout = layout_for(spec, config, TrainConfig(seq_len=hyper["k"]))
    positions = layout.predict(result.model, data, np.arange(425, 449))
    full = np.isfinite(positions).all(axis=1)
    assert full.any()
    np.testing.assert_allclose(positions[full].sum(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(positions[full]).sum(axis=1), 1.0, atol=1e-5)
