"""Blocked validation folds: no validation window meets a training window; trials score on all."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momentum.data import load_prices, synthetic_prices
from momentum.features import compute_features
from training import search
from training.backtest_config import BacktestConfig
from training.datasets import ModelData, label_rows
from training.models import Universe, get_spec
from training.search import run_search
from training.splits import ExpandingWindow, blocked_folds, final_split
from training.train import FitResult, TrainConfig


def _sessions(row: int, window: int) -> set[int]:
    """The sessions a decision row touches: its input window and its label's day."""
    return set(range(row - window + 1, row + 2))


@settings(max_examples=200, deadline=None)
@given(
    first_row=st.integers(0, 50),
    length=st.integers(40, 400),
    folds=st.integers(2, 6),
    gap=st.integers(0, 30),
)
def test_no_validation_window_overlaps_a_training_window(first_row, length, folds, gap):
    stop = first_row + length
    splits = blocked_folds(first_row, stop, folds, gap)
    assert len(splits) == folds
    blocks = [valid for _, valid in splits]
    # the validation blocks are consecutive, in order, each inside the training block
    assert all(a[-1] < b[0] for a, b in zip(blocks, blocks[1:], strict=False) if len(a) and len(b))
    for train, valid in splits:
        assert len(np.intersect1d(train, valid)) == 0
        assert train.min(initial=stop) >= first_row and train.max(initial=first_row) < stop - 1
        touched_valid = set().union(*(_sessions(v, gap) for v in valid)) if len(valid) else set()
        for t in train:
            assert not (_sessions(t, gap) & touched_valid), (t, valid[0], valid[-1])
    # the last fold trains on the past only: it is the one whose model predicts
    last_train, last_valid = splits[-1]
    assert len(last_train) == 0 or last_train.max() < last_valid.min()


def test_expanding_windows_with_folds_keep_the_last_block_as_the_main_split():
    dates = load_prices("sp500").index
    plain = list(ExpandingWindow(first_test_year=2000, step_years=5).split(dates))
    folded = list(
        ExpandingWindow(first_test_year=2000, step_years=5, valid_folds=4, gap=63).split(dates)
    )
    assert [w.name for w in folded] == [w.name for w in plain]
    for p, f in zip(plain, folded, strict=True):
        assert np.array_equal(p.test, f.test) and p.folds == ()
        assert len(f.folds) == 3
        stop = int(f.test[0])
        # four validation blocks covering the training block, the main one last
        blocks = [v for _, v in f.folds] + [f.valid]
        assert blocks[0][0] == 0 and f.valid[-1] == stop - 2
        assert f.train.max() < f.valid.min() - 63
    with pytest.raises(ValueError, match="`valid_folds` must be at least 2"):
        ExpandingWindow(valid_folds=1)


def test_final_split_returns_the_folds_of_the_production_fit():
    dates = load_prices("sp500").index
    train, valid, folds = final_split(dates, valid_folds=3, gap=10)
    assert len(folds) == 2 and valid[-1] == len(dates) - 2
    assert train.max() < valid.min() - 10
    train, valid, folds = final_split(dates, valid_fraction=0.2)
    assert folds == () and len(valid) == pytest.approx(0.2 * len(dates), abs=2)


def test_the_gap_is_the_longest_window_the_model_may_read():
    assert BacktestConfig(model="dmn").longest_window == 63
    assert BacktestConfig(model="dmn", seq_len=126).longest_window == 126
    slp_lookbacks = get_spec("slp").search_space.get("lookback", [5])
    assert BacktestConfig(model="slp").longest_window == max(slp_lookbacks)
    assert BacktestConfig(model="slp", fixed={"lookback": 3}).longest_window == 3
    k = get_spec("quantnet").search_space["k"]
    assert BacktestConfig(model="quantnet").longest_window == max(k)


def test_a_trial_with_folds_scores_the_mean_of_every_fold(tmp_path, monkeypatch):
    synthetic = synthetic_prices(n_assets=4, n_days=900, n_markets=1, seed=0)
    f = compute_features(synthetic.prices)
    data = ModelData.from_features(f)
    universe = Universe.from_market_map(f.tickers, len(f.names), synthetic.markets)
    folds = blocked_folds(320, 880, 3, gap=5)
    main_train, main_valid = folds[-1]
    trained = []

    def fake_train(name, data, universe, train_rows, valid_rows, hyper, base):
        # each split's score: a number read from its validation block's first row
        score = float(valid_rows[0]) / 1000
        trained.append((train_rows, valid_rows))
        spec = get_spec(name)
        model_config = spec.config(universe, lookback=5, l1=0.01)
        return model_config, FitResult(
            spec.build(model_config),
            best_epoch=1,
            best_valid_sharpe=score + 1,
            initial_valid_sharpe=0.0,
            stopped="max_epochs",
            best_valid_score=score,
            best_valid_net_sharpe=score,
        )

    monkeypatch.setattr(search, "train", fake_train)
    result = run_search(
        "slp",
        data,
        universe,
        main_train,
        main_valid,
        directory=tmp_path,
        n_trials=1,
        base=TrainConfig(max_epochs=1, device="cpu"),
        folds=folds[:-1],
    )
    expected = [float(v[0]) / 1000 for _, v in [folds[-1], *folds[:-1]]]
    assert result.best_value == pytest.approx(np.mean(expected))
    assert result.best_attrs["fold_scores"] == pytest.approx(expected)
    assert result.best_attrs["valid_sharpe"] == pytest.approx(np.mean(expected) + 1)
    assert [v[0] for _, v in trained] == [v[0] for _, v in [folds[-1], *folds[:-1]]]
    with pytest.raises(ValueError, match="overlap"):
        run_search(
            "slp",
            data,
            universe,
            main_train,
            main_valid,
            directory=tmp_path / "bad",
            n_trials=1,
            folds=[(label_rows(320, 500), label_rows(400, 600))],
        )


def test_the_feature_set_is_an_experiment_parameter(tmp_path):
    from training.backtest_config import FEATURE_SETS, run_features

    config = BacktestConfig(model="slp", features="extended")
    assert config.resolved()["features"] == "extended"
    prices, features, index = run_features(config, end="2000-12-29")
    assert features.config == FEATURE_SETS["extended"] and features.config.extended
    assert index is not None and index.name == "SP500" and index.index[-1] == prices.index[-1]
    _, default, none = run_features(BacktestConfig(model="slp"), end="2000-12-29")
    assert none is None and not default.config.extended
    assert features.values.shape[-1] > default.values.shape[-1]
    # a price file brings no index: the extended set needs one named
    path = tmp_path / "prices.csv"
    prices.iloc[:300, :3].to_csv(path, index_label="date")
    with pytest.raises(ValueError, match="--index FILE"):
        BacktestConfig(model="slp", data=str(path), features="extended")
    with pytest.raises(ValueError, match="`features` must be one of"):
        BacktestConfig(model="slp", features="everything")
