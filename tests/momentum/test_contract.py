"""The serving contract's input tensor and the chunked prediction over many rows."""

import doctest

import numpy as np
import pytest

from momentum import contract
from momentum.contract import contract_inputs, predict_rows, tradable
from momentum.data import synthetic_prices
from momentum.features import compute_features


def test_doctests():
    assert doctest.testmod(contract).failed == 0


@pytest.fixture(scope="module")
def features():
    return compute_features(synthetic_prices(n_assets=4, n_days=400, n_markets=1, seed=2).prices)


def _mean_of_window(x):
    # (batch, assets): any deterministic function of the window, inside [-1, 1]
    return np.tanh(x.mean(axis=(2, 3)))


def test_chunks_give_what_one_call_gives_and_untradable_entries_are_nan(features):
    rows = np.arange(300, 399)
    one_call = _mean_of_window(contract_inputs(features, rows, 5))
    calls = []

    def model(x):
        calls.append(len(x))
        return _mean_of_window(x)

    got = predict_rows(model, features, rows, 5, max_windows=4 * 10)  # 10 rows per call
    assert calls == [10] * 9 + [9]
    mask = tradable(features)[rows]
    np.testing.assert_array_equal(got[mask], one_call[mask])
    assert np.isnan(got[~mask]).all()
    early = predict_rows(model, features, np.arange(4, 80), 5)
    assert np.isnan(early[:40]).any()  # warm-up rows: no position


def test_positions_come_out_as_served_within_minus_one_and_one(features):
    # float32 tanh rounds to 1 + 1.2e-7 for large inputs: served (and stored) as exactly 1
    rows = np.arange(300, 399)

    def saturated(x):
        out = np.full(x.shape[:2], np.float32(1.0000001), dtype=np.float32)
        out[:, 0] = np.float32(-1.0000001)
        return out

    got = predict_rows(saturated, features, rows, 5)
    mask = tradable(features)[rows]
    assert mask.any() and got.dtype == np.float64
    np.testing.assert_array_equal(got[:, 0][mask[:, 0]], -1.0)
    np.testing.assert_array_equal(got[:, 1:][mask[:, 1:]], 1.0)
