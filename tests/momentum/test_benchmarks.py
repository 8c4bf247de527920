"""Benchmarks on hand-made panels, and their no-look-ahead property."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momentum.benchmarks import (
    BENCHMARKS,
    benchmark_returns,
    buy_and_hold,
    csmom,
    long_only,
    macd,
    macd_response,
    risk_parity,
    trailing_return,
    tsmom,
)
from momentum.data import synthetic_prices
from momentum.features import Features, compute_features
from momentum.portfolio import portfolio_returns


def make_features(returns, vol=None, macd_values=None) -> Features:
    """A Features object from hand-written returns (and optionally vol and MACD values)."""
    returns = np.asarray(returns, dtype=float)
    t, n = returns.shape
    vol = np.full((t, n), 0.01) if vol is None else np.asarray(vol, dtype=float)
    names = ("macd_8_24", "macd_16_48", "macd_32_96")
    values = np.zeros((t, n, 3)) if macd_values is None else np.asarray(macd_values, dtype=float)
    return Features(
        values=values,
        names=names,
        dates=pd.bdate_range("2020-01-01", periods=t, name="date"),
        tickers=tuple(f"A{i}" for i in range(n)),
        returns=returns,
        vol=vol,
        target=np.full((t, n), np.nan),
    )


def test_long_only_holds_where_vol_exists():
    vol = np.array([[np.nan, 0.01], [0.02, 0.01]])
    f = make_features(np.zeros((2, 2)), vol=vol)
    np.testing.assert_array_equal(long_only(f), [[np.nan, 1.0], [1.0, 1.0]])


def test_trailing_return_is_compounded():
    r = np.array([[np.nan], [0.1], [-0.5], [0.2]])
    out = trailing_return(make_features(r), 2)[:, 0]
    assert np.isnan(out[:2]).all()  # row 1 would need the return of row 0
    assert out[2] == pytest.approx(1.1 * 0.5 - 1)
    assert out[3] == pytest.approx(0.5 * 1.2 - 1)


def test_trailing_return_equals_price_ratio_of_feature_prices():
    f = compute_features(synthetic_prices(n_assets=3, n_days=400, n_markets=1, seed=4).prices)
    k = 21
    ratio = f.frame("norm_ret_21d").to_numpy() * f.vol * np.sqrt(k)  # p_t / p_{t-k} - 1
    mine = trailing_return(f, k)
    both = np.isfinite(ratio) & np.isfinite(mine)
    assert both.sum() > 300 * 3 * 0.8
    np.testing.assert_allclose(mine[both], ratio[both], rtol=1e-10, atol=1e-12)


def test_tsmom_is_sign_of_past_return():
    r = np.array([[np.nan, np.nan], [0.1, -0.1], [0.1, -0.1], [-0.3, 0.3]])
    x = tsmom(make_features(r), lookback=2)
    np.testing.assert_array_equal(x[2], [1.0, -1.0])
    np.testing.assert_array_equal(x[3], [-1.0, 1.0])  # 1.1 * 0.7 < 1, 0.9 * 1.3 > 1
    assert np.isnan(x[:2]).all()


def test_macd_averages_the_response_function():
    assert macd_response(np.sqrt(2.0)) == pytest.approx(np.sqrt(2) * np.exp(-0.5) / 0.89)
    values = np.array([[[0.0, 1.0, -2.0]]])
    x = macd(make_features(np.zeros((1, 1)), macd_values=values))
    expected = (0.0 + np.exp(-0.25) / 0.89 - 2 * np.exp(-1.0) / 0.89) / 3
    assert x[0, 0] == pytest.approx(expected)


def test_csmom_takes_two_long_two_short_of_twenty_at_decile():
    past = np.arange(20, dtype=float)  # asset i has the i-th smallest return
    rng = np.random.default_rng(0)
    order = rng.permutation(20)
    r = np.full((2, 20), np.nan)
    r[1] = (past[order] - 10) / 100  # one-day lookback: the signal ranks these returns
    x = csmom(make_features(r), lookback=1, quantile=0.1)[1]
    assert (x == 1).sum() == 2 and (x == -1).sum() == 2 and (x == 0).sum() == 16
    assert set(np.flatnonzero(x == 1)) == set(np.flatnonzero(order >= 18))
    assert set(np.flatnonzero(x == -1)) == set(np.flatnonzero(order <= 1))


def test_csmom_counts_only_ranked_assets():
    r = np.full((2, 20), np.nan)
    r[1, :15] = np.linspace(-0.05, 0.05, 15)  # five assets without a return
    x = csmom(make_features(r), lookback=1, quantile=0.1)[1]
    assert (x == 1).sum() == 1 and (x == -1).sum() == 1  # floor(0.1 * 15) = 1
    assert x[14] == 1 and x[0] == -1 and np.isnan(x[15:]).all()
    x33 = csmom(make_features(r), lookback=1, quantile=0.33)[1]
    assert (x33 == 1).sum() == 4  # floor(0.33 * 15)
    with pytest.raises(ValueError, match="`quantile`"):
        csmom(make_features(r), quantile=0.7)


def test_buy_and_hold_weights_drift_with_prices():
    r = np.array([[np.nan, np.nan], [0.0, 0.0], [1.0, 0.0], [0.5, -0.5], [0.0, 0.0]])
    f = make_features(r)
    x = buy_and_hold(f)
    # bought at row 1 in equal dollars; after row 2 asset 0 is worth 2, asset 1 worth 1
    np.testing.assert_allclose(x[1], [1.0, 1.0])
    np.testing.assert_allclose(x[2], [2 * 2 / 3, 2 * 1 / 3])
    # unscaled captured return = the return of the drifting portfolio
    captured = portfolio_returns(x * f.next_returns)
    value = np.array([2.0, 2.0, 3.0, 3.5, 3.5])  # portfolio value at each close from row 1
    np.testing.assert_allclose(captured[1:4], value[2:5] / value[1:4] - 1)
    assert np.isnan(x[0]).all()


def test_risk_parity_is_inverse_vol():
    r = np.array([[0.01, 0.02], [-0.01, -0.02], [0.01, 0.02]])
    x = risk_parity(make_features(r), window=2)
    # asset 1 has twice the vol of asset 0: weights 2/3, 1/3; X = N * w
    np.testing.assert_allclose(x[1], [4 / 3, 2 / 3])
    np.testing.assert_allclose(x[2], [4 / 3, 2 / 3])
    assert np.isnan(x[0]).all()


def test_benchmark_returns_by_name():
    f = compute_features(synthetic_prices(n_assets=4, n_days=500, n_markets=2, seed=8).prices)
    for name, bench in BENCHMARKS.items():
        gross = benchmark_returns(f, name)
        net = benchmark_returns(f, name, cost_bps=10)
        assert gross.shape == (len(f.dates),)
        ok = np.isfinite(gross) & np.isfinite(net)
        assert ok.sum() > 100, name
        assert (net[ok] <= gross[ok] + 1e-15).all(), name
        assert bench.vol_scaled == (name not in ("buy_and_hold", "risk_parity"))
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmark_returns(f, "nope")


_PRICES = synthetic_prices(n_assets=6, n_days=420, n_markets=2, seed=31).prices


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=20, max_value=410),
    factor=st.floats(min_value=0.3, max_value=4.0),
    asset=st.integers(min_value=0, max_value=5),
)
def test_no_benchmark_looks_ahead(cut, factor, asset):
    changed = _PRICES.copy()
    changed.iloc[cut + 1 :, asset] *= factor
    base, moved = compute_features(_PRICES), compute_features(changed)
    for name, bench in BENCHMARKS.items():
        a = bench.signal(base)[: cut + 1]
        b = bench.signal(moved)[: cut + 1]
        np.testing.assert_array_equal(a, b, err_msg=name)
