"""Model explanations: SLP attributions, TFT interpretability weights, permutation importance.

Data are built by hand (a `Features` object with chosen values, returns and vols) so the
expected numbers follow from the inputs: products of chosen weights and inputs for the SLP,
softmax of forced logits for the TFT, a feature that is the sign of tomorrow's return for
permutation importance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from momentum.features import Features
from momentum.portfolio import VOL_TARGET
from training.datasets import ModelData, SpatioTemporalLayout, label_rows
from training.explain import (
    _input_rows,
    _permute_feature,
    permutation_importance,
    slp_attribution_summary,
    slp_attributions,
    tft_summary,
)
from training.models import REGISTRY, get_spec
from training.models.slp import Slp, SlpConfig
from training.models.tft import Tft, tiny
from training.train import TrainConfig, layout_for, validation_sharpe


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _model_data(values: np.ndarray, returns: np.ndarray, vol: np.ndarray) -> ModelData:
    """ModelData over hand-made features (T, N, d), daily returns (T, N) and vols (T, N)."""
    t, n, d = values.shape
    next_returns = np.full((t, n), np.nan)
    next_returns[:-1] = returns[1:]
    features = Features(
        values=values,
        names=tuple(f"f{j}" for j in range(d)),
        dates=pd.bdate_range("2020-01-01", periods=t, name="date"),
        tickers=tuple(f"T{i}" for i in range(n)),
        returns=returns,
        vol=vol,
        target=next_returns * VOL_TARGET / (vol * math.sqrt(252)),
    )
    return ModelData.from_features(features)


def _random_data(t: int, n: int, d: int, seed: int = 0) -> ModelData:
    rng = np.random.default_rng(seed)
    return _model_data(
        rng.normal(size=(t, n, d)),
        rng.normal(scale=0.01, size=(t, n)),
        rng.uniform(0.005, 0.02, size=(t, n)),
    )


def _set_slp_weights(model: Slp, weights: np.ndarray) -> None:
    """Load ``W`` given as (out, in, lookback, features) into the SLP's kernel; bias 0."""
    with torch.no_grad():
        model.dense.weight.copy_(torch.from_numpy(weights.reshape(model.config.n_assets, -1)))
        model.dense.bias.zero_()


# ---------------------------------------------------------------------------------------------
# SLP attributions
# ---------------------------------------------------------------------------------------------


def test_slp_attributions_are_weight_times_input() -> None:
    # x[t, a, f] = 100 t + 10 a + f, so every input is identifiable by its value.
    t, n, lookback, d = 6, 2, 2, 2
    values = (
        100.0 * np.arange(t)[:, None, None]
        + 10.0 * np.arange(n)[None, :, None]
        + np.arange(d)[None, None, :]
    )
    data = _model_data(values, np.zeros((t, n)), np.full((t, n), 0.01))
    model = Slp(SlpConfig(n_assets=n, n_features=d, lookback=lookback))
    weights = np.arange(n * n * lookback * d, dtype=np.float32).reshape(n, n, lookback, d) / 8
    _set_slp_weights(model, weights)

    out = slp_attributions(model, data, np.array([3, 5]))

    assert out.shape == (2, n, n, lookback, d)
    # row 5, output 1, input asset 0, oldest step (date 4), feature 1: W[1, 0, 0, 1] * x[4, 0, 1]
    assert out[1, 1, 0, 0, 1] == weights[1, 0, 0, 1] * 401.0 == 9 / 8 * 401.0
    for r, row in enumerate([3, 5]):
        for o in range(n):
            for a in range(n):
                for s in range(lookback):
                    for f in range(d):
                        date = row - lookback + 1 + s  # step 0 is the oldest day
                        expected = weights[o, a, s, f] * values[date, a, f]
                        assert out[r, o, a, s, f] == pytest.approx(expected)


def test_slp_attributions_plus_bias_give_the_model_positions() -> None:
    data = _random_data(40, 4, 3)
    model = Slp(SlpConfig(n_assets=4, n_features=3, lookback=5))
    with torch.no_grad():
        model.dense.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    rows = np.arange(4, 40)

    out = slp_attributions(model, data, rows)

    preactivation = out.sum(axis=(2, 3, 4)) + model.dense.bias.detach().double().numpy()
    positions = SpatioTemporalLayout(5).predict(model, data, rows)
    np.testing.assert_allclose(np.tanh(preactivation), positions, rtol=0, atol=1e-6)


def test_slp_attributions_reject_early_rows_and_other_models() -> None:
    data = _random_data(20, 2, 3)
    model = Slp(SlpConfig(n_assets=2, n_features=3, lookback=5))
    with pytest.raises(ValueError, match="lookback window"):
        slp_attributions(model, data, np.array([3, 10]))
    with pytest.raises(ValueError, match="`rows` must lie in"):
        slp_attributions(model, data, np.array([10, 20]))
    with pytest.raises(ValueError, match="2 assets and 3 features"):
        slp_attributions(Slp(SlpConfig(n_assets=3, n_features=3)), data, np.array([10]))
    with pytest.raises(TypeError, match="Slp"):
        slp_attributions(Tft(tiny(n_features=3)), data, np.array([10]))  # type: ignore[arg-type]


def _summary_case() -> tuple[Slp, ModelData]:
    """Two assets, lookback 1, two features, constant inputs x[., 0] = (1, 2), x[., 1] = (3, -4).

    Kernel W[o, a, 0, :]: W[0, 0] = (1, 0), W[0, 1] = (0, 0.5), W[1, 1] = (-2, 0),
    W[1, 0] = (0.25, 1). Absolute attributions per output (own | cross), by feature:
    output 0: own (|1 * 1|, 0) = (1, 0);     cross (0, |0.5 * -4|) = (0, 2)
    output 1: own (|-2 * 3|, 0) = (6, 0);    cross (|0.25 * 1|, |1 * 2|) = (0.25, 2)
    """
    t = 5
    values = np.empty((t, 2, 2))
    values[:, 0] = [1.0, 2.0]
    values[:, 1] = [3.0, -4.0]
    vol = np.full((t, 2), 0.01)
    vol[2, 1] = np.nan  # asset 1 cannot be traded on row 2: its output must not be averaged
    data = _model_data(values, np.zeros((t, 2)), vol)
    model = Slp(SlpConfig(n_assets=2, n_features=2, lookback=1))
    weights = np.zeros((2, 2, 1, 2), dtype=np.float32)
    weights[0, 0, 0] = [1.0, 0.0]
    weights[0, 1, 0] = [0.0, 0.5]
    weights[1, 1, 0] = [-2.0, 0.0]
    weights[1, 0, 0] = [0.25, 1.0]
    _set_slp_weights(model, weights)
    return model, data


def test_slp_attribution_summary_hand_computed() -> None:
    model, data = _summary_case()
    summary = slp_attribution_summary(model, data, [1, 2, 3], ["mom", "macd"], ["AAA", "BBB"])

    assert list(summary.index.names) == ["output", "feature"]
    assert list(summary.index) == [
        ("all", "mom"),
        ("all", "macd"),
        ("AAA", "mom"),
        ("AAA", "macd"),
        ("BBB", "mom"),
        ("BBB", "macd"),
    ]
    aaa, bbb, pooled = summary.loc["AAA"], summary.loc["BBB"], summary.loc["all"]
    np.testing.assert_allclose(aaa["own"], [1.0, 0.0])
    np.testing.assert_allclose(aaa["cross"], [0.0, 2.0])
    np.testing.assert_allclose(aaa["total"], [1.0, 2.0])
    np.testing.assert_allclose(aaa["share"], [1 / 3, 2 / 3])
    np.testing.assert_allclose(bbb["own"], [6.0, 0.0])
    np.testing.assert_allclose(bbb["cross"], [0.25, 2.0])
    np.testing.assert_allclose(bbb["own_share"], [6 / 8.25, 0.0])
    np.testing.assert_allclose(bbb["cross_share"], [0.25 / 8.25, 2 / 8.25])
    assert aaa["n"].tolist() == [3, 3]
    assert bbb["n"].tolist() == [2, 2]  # row 2 is not tradable for BBB
    # pooled over 3 AAA and 2 BBB (row, output) pairs
    np.testing.assert_allclose(pooled["own"], [(3 * 1 + 2 * 6) / 5, 0.0])
    np.testing.assert_allclose(pooled["cross"], [(2 * 0.25) / 5, (3 * 2 + 2 * 2) / 5])
    assert pooled["n"].tolist() == [5, 5]
    for block in (aaa, bbb, pooled):
        assert block["own_share"].sum() + block["cross_share"].sum() == pytest.approx(1.0)
        assert block["share"].sum() == pytest.approx(1.0)


def test_slp_attribution_summary_separates_own_from_cross_assets() -> None:
    data = _random_data(30, 3, 2)
    model = Slp(SlpConfig(n_assets=3, n_features=2, lookback=4))
    weights = np.random.default_rng(1).normal(size=(3, 3, 4, 2)).astype(np.float32)
    own_only = weights * np.eye(3, dtype=np.float32)[:, :, None, None]
    rows = np.arange(5, 29)

    _set_slp_weights(model, own_only)
    own = slp_attribution_summary(model, data, rows, ["a", "b"], ["X", "Y", "Z"])
    assert (own["cross"] == 0).all()
    assert (own["own"] > 0).all()

    _set_slp_weights(model, weights - own_only)
    cross = slp_attribution_summary(model, data, rows, ["a", "b"], ["X", "Y", "Z"])
    assert (cross["own"] == 0).all()
    assert cross.loc["all", "cross_share"].sum() == pytest.approx(1.0)


def test_slp_attribution_summary_validates_names() -> None:
    model, data = _summary_case()
    with pytest.raises(ValueError, match="`feature_names` must name 2 features"):
        slp_attribution_summary(model, data, [1], ["mom"], ["AAA", "BBB"])
    with pytest.raises(ValueError, match="`tickers` must name 2 assets"):
        slp_attribution_summary(model, data, [1], ["mom", "macd"], ["AAA"])
    with pytest.raises(ValueError, match="`tickers` has duplicates"):
        slp_attribution_summary(model, data, [1], ["mom", "macd"], ["AAA", "AAA"])
    with pytest.raises(ValueError, match="must not contain 'all'"):
        slp_attribution_summary(model, data, [1], ["mom", "macd"], ["AAA", "all"])


# ---------------------------------------------------------------------------------------------
# TFT interpretability
# ---------------------------------------------------------------------------------------------

TFT_FEATURES = ["mom", "vol", "macd"]


def _tft(n_assets: int = 3) -> Tft:
    return Tft(tiny(n_features=len(TFT_FEATURES), n_tickers=n_assets))


def test_tft_summary_weights_are_distributions() -> None:
    data = _random_data(30, 3, len(TFT_FEATURES))
    summary = tft_summary(_tft(), data, np.arange(2, 29), TFT_FEATURES, seq_len=8)

    importance, by_lag = summary["variable_importance"], summary["attention_by_lag"]
    assert importance.index.name == "feature"
    assert list(importance.index) == TFT_FEATURES
    assert importance["mean"].sum() == pytest.approx(1.0)
    assert ((importance["mean"] > 0) & (importance["mean"] < 1)).all()
    assert by_lag.index.name == "lag"
    assert list(by_lag.index) == list(range(8))
    assert by_lag["mean"].sum() == pytest.approx(1.0)
    assert (by_lag["mean"] >= 0).all()


def test_tft_variable_importance_follows_feature_names() -> None:
    # Force the selection logits (TFT eq. 6) to (0, 0, 10): the weights GRN ends in a
    # LayerNorm, so zero gain and bias (0, 0, 10) make its output that constant vector.
    model = _tft()
    norm = model.variable_selection.weights_grn.gate_add_norm.norm
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.copy_(torch.tensor([0.0, 0.0, 10.0]))
    data = _random_data(30, 3, len(TFT_FEATURES))

    importance = tft_summary(model, data, np.arange(10, 29), TFT_FEATURES, seq_len=8)[
        "variable_importance"
    ]

    dominant = math.exp(10) / (math.exp(10) + 2)
    other = 1 / (math.exp(10) + 2)
    np.testing.assert_allclose(importance["mean"], [other, other, dominant], rtol=1e-5)
    np.testing.assert_allclose(importance["std"], 0.0, atol=1e-6)
    assert importance["mean"].idxmax() == "macd"


def test_tft_attention_by_lag_with_uniform_attention() -> None:
    # Zero queries make every score 0: causal softmax spreads weight 1 / (s + 1) over the
    # s + 1 visible steps. A row with a full window (step 7 of 8) gives 1/8 at every lag;
    # row 3 sits at step 3 of the first window, so 1/4 at lags 0..3 and nothing before.
    model = _tft()
    with torch.no_grad():
        model.attention.query.weight.zero_()
    data = _random_data(30, 3, len(TFT_FEATURES))

    by_lag = tft_summary(model, data, [3, 20], TFT_FEATURES, seq_len=8)["attention_by_lag"]

    expected = (np.array([1 / 4] * 4 + [0.0] * 4) + np.full(8, 1 / 8)) / 2
    np.testing.assert_allclose(by_lag["mean"], expected, atol=1e-6)


def test_tft_first_row_attends_only_to_itself() -> None:
    data = _random_data(30, 3, len(TFT_FEATURES))
    by_lag = tft_summary(_tft(), data, [0], TFT_FEATURES, seq_len=8)["attention_by_lag"]
    np.testing.assert_allclose(by_lag["mean"], [1.0] + [0.0] * 7, atol=1e-6)


def test_tft_summary_skips_untradable_pairs() -> None:
    # On row 20 only asset 0 trades, so the summary is that one window's weights: the same as
    # on a one-asset panel holding asset 0 alone (same window, same ticker id 0), std 0.
    values = np.random.default_rng(0).normal(size=(30, 3, len(TFT_FEATURES)))
    vol = np.full((30, 3), 0.01)
    vol[20, 1:] = np.nan
    model = _tft()
    panel = tft_summary(
        model, _model_data(values, np.zeros((30, 3)), vol), [20], TFT_FEATURES, seq_len=8
    )
    alone = tft_summary(
        model,
        _model_data(values[:, :1], np.zeros((30, 1)), vol[:, :1]),
        [20],
        TFT_FEATURES,
        seq_len=8,
    )
    everyone = tft_summary(
        model,
        _model_data(values, np.zeros((30, 3)), np.full((30, 3), 0.01)),
        [20],
        TFT_FEATURES,
        seq_len=8,
    )
    for key in ("variable_importance", "attention_by_lag"):
        pd.testing.assert_frame_equal(panel[key], alone[key], atol=1e-6)
        assert (panel[key]["std"] == 0).all()
        assert not np.allclose(panel[key]["mean"], everyone[key]["mean"], rtol=0, atol=1e-9)
    vol[:, :] = np.nan
    with pytest.raises(ValueError, match="no asset is tradable"):
        tft_summary(
            model, _model_data(values, np.zeros((30, 3)), vol), [20], TFT_FEATURES, seq_len=8
        )


def test_tft_summary_validation_and_mode() -> None:
    data = _random_data(30, 3, len(TFT_FEATURES))
    model = _tft()
    model.train()
    with pytest.raises(ValueError, match="`feature_names` must name 3 features"):
        tft_summary(model, data, [20], ["mom"], seq_len=8)
    with pytest.raises(ValueError, match="`seq_len` must be a positive integer"):
        tft_summary(model, data, [20], TFT_FEATURES, seq_len=0)
    with pytest.raises(ValueError, match="ticker ids"):
        tft_summary(_tft(n_assets=2), data, [20], TFT_FEATURES, seq_len=8)
    with pytest.raises(TypeError, match="Tft"):
        tft_summary(Slp(SlpConfig(n_assets=3, n_features=3)), data, [20], TFT_FEATURES)  # type: ignore[arg-type]
    tft_summary(model, data, [20], TFT_FEATURES, seq_len=8)
    assert model.training  # the caller's mode comes back


def test_tft_summary_chunking_does_not_change_results() -> None:
    data = _random_data(30, 3, len(TFT_FEATURES))
    model = Tft(tiny(n_features=len(TFT_FEATURES), n_tickers=3, dropout=0.3))
    rows = np.arange(5, 29)
    whole = tft_summary(model, data, rows, TFT_FEATURES, seq_len=8)
    chunked = tft_summary(model, data, rows, TFT_FEATURES, seq_len=8, max_windows=4)
    for key in whole:
        pd.testing.assert_frame_equal(whole[key], chunked[key], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Permutation importance
# ---------------------------------------------------------------------------------------------


def test_input_rows_are_the_prediction_windows() -> None:
    # windows of 3 ending at 5, 6 and 20; an early row reads the first 3 rows, as `_windows`
    np.testing.assert_array_equal(
        _input_rows(np.array([5, 6, 20]), 3, 30), [3, 4, 5, 6, 18, 19, 20]
    )
    np.testing.assert_array_equal(_input_rows(np.array([1]), 3, 30), [0, 1, 2])


def test_permute_feature_moves_whole_dates_of_one_feature() -> None:
    t, n, d = 12, 4, 3
    # x[t, a, f] = 100 f + 10 t + a: the date of a value is readable from it
    x = (
        100.0 * np.arange(d)[None, None, :]
        + 10.0 * np.arange(t)[:, None, None]
        + np.arange(n)[None, :, None]
    )
    dates = np.array([2, 3, 4, 7, 8])
    out = _permute_feature(x, 1, dates, np.random.default_rng(3))

    np.testing.assert_array_equal(out[:, :, [0, 2]], x[:, :, [0, 2]])  # other features
    outside = np.setdiff1d(np.arange(t), dates)
    np.testing.assert_array_equal(out[outside], x[outside])  # other dates
    source = (out[dates, :, 1] - 100.0 - np.arange(n)) / 10.0  # (dates, assets): source date
    assert (source == source[:, :1]).all()  # all assets took the same source date
    assert sorted(source[:, 0].tolist()) == dates.tolist()  # a permutation of the dates
    assert not np.array_equal(source[:, 0], dates)
    np.testing.assert_array_equal(x[:, :, 1], (100.0 + 10.0 * np.arange(t))[:, None] + np.arange(n))


def _sign_data(t: int = 200, n: int = 2, d: int = 3, seed: int = 0) -> ModelData:
    """Feature 1 is the sign of tomorrow's return; features 0 and 2 are noise."""
    rng = np.random.default_rng(seed)
    returns = rng.choice([-1.0, 1.0], size=(t, n)) * rng.uniform(0.005, 0.02, size=(t, n))
    values = rng.normal(size=(t, n, d))
    values[:-1, :, 1] = np.sign(returns[1:])
    return _model_data(values, returns, np.full((t, n), 0.01))


def _one_feature_slp(n: int = 2, d: int = 3, feature: int = 1, step: int = -1) -> Slp:
    """An SLP whose position is tanh(5 x[step, own asset, feature]) (lookback 2; -1 = today)."""
    model = Slp(SlpConfig(n_assets=n, n_features=d, lookback=2))
    weights = np.zeros((n, n, 2, d), dtype=np.float32)
    for o in range(n):
        weights[o, o, step, feature] = 5.0
    _set_slp_weights(model, weights)
    return model


def test_permutation_importance_of_the_only_used_feature() -> None:
    data = _sign_data()
    model = _one_feature_slp()
    layout = SpatioTemporalLayout(2)
    rows = label_rows(1, 200)

    result = permutation_importance(model, layout, data, rows, ["noise_a", "sign", "noise_b"])

    assert result.index.name == "feature"
    assert list(result.index) == ["noise_a", "sign", "noise_b"]
    baseline = validation_sharpe(model, layout, data, rows)
    # every day's captured return is positive, so the baseline Sharpe is large
    assert baseline > 5
    assert (result["baseline_sharpe"] == baseline).all()
    # ignored features: the positions do not move at all
    assert result.loc[["noise_a", "noise_b"], "mean_drop"].tolist() == [0.0, 0.0]
    assert result.loc[["noise_a", "noise_b"], "std_drop"].tolist() == [0.0, 0.0]
    # shuffling the sign breaks its link with tomorrow's return: most of the Sharpe goes
    assert result.loc["sign", "mean_drop"] > 0.5 * baseline
    assert result.loc["sign", "std_drop"] > 0
    assert result.loc["sign", "permuted_sharpe"] == pytest.approx(
        baseline - result.loc["sign", "mean_drop"]
    )


def test_permutation_importance_is_reproducible_for_a_seed() -> None:
    data = _sign_data()
    model = _one_feature_slp()
    layout = SpatioTemporalLayout(2)
    rows = label_rows(1, 200)
    names = ["noise_a", "sign", "noise_b"]

    first = permutation_importance(model, layout, data, rows, names, n_repeats=3, seed=7)
    again = permutation_importance(model, layout, data, rows, names, n_repeats=3, seed=7)
    other = permutation_importance(model, layout, data, rows, names, n_repeats=3, seed=8)

    pd.testing.assert_frame_equal(first, again)
    assert first.loc["sign", "mean_drop"] != other.loc["sign", "mean_drop"]


def test_permutation_importance_shuffles_the_whole_input_window() -> None:
    # Rows 10 days apart, and the model reads yesterday only: the dates to shuffle are the
    # days before the rows, which a shuffle over the decision dates alone would never touch.
    data = _sign_data()
    model = _one_feature_slp(step=0)
    rows = np.arange(10, 199, 10)
    result = permutation_importance(model, SpatioTemporalLayout(2), data, rows, ["a", "b", "c"])
    assert result.loc["b", "mean_drop"] != 0
    assert result.loc[["a", "c"], "mean_drop"].tolist() == [0.0, 0.0]


def test_permutation_importance_leaves_data_untouched() -> None:
    data = _sign_data()
    before = data.x.copy()
    permutation_importance(
        _one_feature_slp(), SpatioTemporalLayout(2), data, label_rows(1, 200), ["a", "b", "c"]
    )
    np.testing.assert_array_equal(data.x, before)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_permutation_importance_runs_for_every_registry_model(name: str) -> None:
    spec = get_spec(name)
    config = spec.tiny()  # 5 assets, 8 features
    data = _random_data(60, 5, 8, seed=1)
    model = spec.build(config)
    layout = layout_for(spec, config, TrainConfig(seq_len=10))
    rows = label_rows(20, 60)
    names = [f"f{j}" for j in range(8)]

    result = permutation_importance(model, layout, data, rows, names, n_repeats=2)

    assert list(result.index) == names
    assert np.isfinite(result.to_numpy()).all()
    assert result["baseline_sharpe"].iloc[0] == validation_sharpe(model, layout, data, rows)


def test_permutation_importance_validation() -> None:
    data = _sign_data()
    model, layout, rows = _one_feature_slp(), SpatioTemporalLayout(2), label_rows(1, 200)
    with pytest.raises(ValueError, match="`n_repeats` must be a positive integer"):
        permutation_importance(model, layout, data, rows, ["a", "b", "c"], n_repeats=0)
    with pytest.raises(ValueError, match="`feature_names` must name 3 features"):
        permutation_importance(model, layout, data, rows, ["a", "b"])
    with pytest.raises(ValueError, match="`rows` must be a non-empty"):
        permutation_importance(model, layout, data, [], ["a", "b", "c"])
    with pytest.raises(ValueError, match="`rows` must hold integer"):
        permutation_importance(model, layout, data, np.array([1.0, 2.0]), ["a", "b", "c"])
    flat = Slp(model.config)
    _set_slp_weights(flat, np.zeros((2, 2, 2, 3), dtype=np.float32))  # positions all 0
    with pytest.raises(ValueError, match="baseline Sharpe on `rows` is undefined"):
        permutation_importance(flat, layout, data, rows, ["a", "b", "c"])


def test_tft_summary_reads_the_decision_step_of_each_window() -> None:
    # The model is causal, so the weights at a row's step equal the last step of a plain run
    # over the days up to that row (at most seq_len of them): row 3 -> days 0..3, row 20 ->
    # days 13..20. Averaged over the three assets (ticker id = asset index).
    data = _random_data(30, 3, len(TFT_FEATURES))
    model = _tft().eval()
    for row, first in [(3, 0), (20, 13)]:
        summary = tft_summary(model, data, [row], TFT_FEATURES, seq_len=8)
        x = torch.from_numpy(data.x[first : row + 1].transpose(1, 0, 2).copy())  # (assets, days, d)
        with torch.no_grad():
            direct = model(x, torch.arange(3))
        np.testing.assert_allclose(
            summary["variable_importance"]["mean"],
            direct.variable_weights[:, -1].double().mean(dim=0).numpy(),
            atol=1e-6,
        )
        lags = direct.attention[:, -1].flip(-1).double().mean(dim=0).numpy()  # lag 0 first
        expected = np.zeros(8)
        expected[: len(lags)] = lags
        np.testing.assert_allclose(summary["attention_by_lag"]["mean"], expected, atol=1e-6)


def test_permutation_importance_scores_what_a_sign_sized_model_trades() -> None:
    data = _sign_data()
    model = _one_feature_slp()
    with torch.no_grad():  # a small bias: longs and shorts of unequal size, the same signs
        model.dense.bias.fill_(0.5)
    layout = SpatioTemporalLayout(2)
    rows = label_rows(1, 200)
    sized = permutation_importance(model, layout, data, rows, ["a", "sign", "b"], sizer="sign")
    baseline = validation_sharpe(model, layout, data, rows, sizer="sign")
    assert (sized["baseline_sharpe"] == baseline).all()
    assert baseline != validation_sharpe(model, layout, data, rows)
