"""Features against an independent per-ticker restatement of the formulas."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momentum.data import load_index, load_prices, synthetic_prices
from momentum.features import (
    FEATURES_VERSION,
    FeatureConfig,
    compute_features,
    ewm_halflife,
    warmup,
)

DEFAULT_NAMES = (
    "norm_ret_1d",
    "norm_ret_21d",
    "norm_ret_63d",
    "norm_ret_126d",
    "norm_ret_252d",
    "macd_8_24",
    "macd_16_48",
    "macd_32_96",
)


@pytest.fixture(scope="module")
def sp500():
    prices = load_prices("sp500")
    return prices, compute_features(prices)


def restate(close: pd.Series) -> dict[str, pd.Series]:
    """The formulas of momentum/features.py's docstring for one ticker, one pandas call per step."""
    close = close.dropna()
    ewm = close.ewm(halflife=252)
    mean, std = ewm.mean(), ewm.std()
    clipped = np.minimum(np.maximum(close, mean - 5 * std), mean + 5 * std)
    p = clipped.where(std.notna(), close)
    r = p / p.shift(1) - 1
    vol = r.ewm(span=60, min_periods=60).std()
    vol = vol.where(vol > 0)
    out = {
        f"norm_ret_{k}d": (p / p.shift(k) - 1) / (vol * np.sqrt(k)) for k in (1, 21, 63, 126, 252)
    }
    for short, long in ((8, 24), (16, 48), (32, 96)):
        hl_s = np.log(0.5) / np.log(1 - 1 / short)
        hl_l = np.log(0.5) / np.log(1 - 1 / long)
        q = (p.ewm(halflife=hl_s).mean() - p.ewm(halflife=hl_l).mean()) / p.rolling(63).std()
        out[f"macd_{short}_{long}"] = q / q.rolling(252).std()
    out["returns"] = r
    out["vol"] = vol
    out["target"] = r.shift(-1) * 0.15 / (vol * np.sqrt(252))
    return out


def test_shape_and_names(sp500):
    prices, f = sp500
    assert f.values.shape == (8313, 20, 8)
    assert f.names == DEFAULT_NAMES == FeatureConfig().names
    assert f.tickers == tuple(prices.columns)
    assert (f.dates == prices.index).all()
    assert isinstance(FEATURES_VERSION, str) and FEATURES_VERSION


def test_every_feature_matches_restatement_from_1996(sp500):
    prices, f = sp500
    rows = f.dates >= "1996-01-01"
    for j, ticker in enumerate(f.tickers):
        ref = restate(prices[ticker])
        for name in (*DEFAULT_NAMES, "returns", "vol", "target"):
            got = f.frame(name)[ticker].to_numpy()[rows]
            want = ref[name].reindex(f.dates).to_numpy()[rows]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{ticker} {name}")
            np.testing.assert_allclose(
                got, want, rtol=0, atol=1e-9, equal_nan=True, err_msg=f"{ticker} {name}"
            )
        assert j == f.tickers.index(ticker)


def test_target_is_tomorrows_scaled_return(sp500):
    _, f = sp500
    t, i = 5000, 3
    expected = f.returns[t + 1, i] * 0.15 / (f.vol[t, i] * np.sqrt(252))
    assert f.target[t, i] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(f.target[-1]).all()


def test_zero_vol_gives_nan_not_infinity(sp500):
    # RRC's close is frozen at 3.322 for the first months of 1990: zero vol.
    prices, f = sp500
    rrc = f.tickers.index("RRC")
    assert (prices["RRC"].iloc[:60] == prices["RRC"].iloc[0]).all()
    assert np.isfinite(f.values[~np.isnan(f.values)]).all()
    assert np.isnan(f.vol[60:70, rrc]).any()


def test_warmup_matches_first_values():
    panel = synthetic_prices(n_assets=6, n_days=700, n_markets=2, seed=3)
    f = compute_features(panel.prices)
    lags = warmup()
    starts = panel.prices.notna().to_numpy().argmax(axis=0)
    for i in range(f.values.shape[1]):
        for j, name in enumerate(f.names):
            first = int(np.flatnonzero(~np.isnan(f.values[:, i, j]))[0])
            assert first - starts[i] == lags[name], (name, i)
        assert int(np.flatnonzero(~np.isnan(f.vol[:, i]))[0]) - starts[i] == lags["vol"]


def test_late_starting_asset_equals_its_own_history():
    panel = synthetic_prices(n_assets=5, n_days=800, n_markets=1, seed=11)
    prices = panel.prices
    late = int(prices.notna().sum().idxmin().lstrip("S"))
    ticker = prices.columns[late]
    whole = compute_features(prices)
    alone = compute_features(prices[[ticker]].dropna())
    rows = prices[ticker].notna().to_numpy()
    # equal up to rounding: rolling sums are re-anchored at different rows
    np.testing.assert_array_equal(np.isnan(whole.values[rows, late]), np.isnan(alone.values[:, 0]))
    np.testing.assert_allclose(whole.values[rows, late], alone.values[:, 0], rtol=1e-10, atol=1e-12)


def test_inactive_assets_are_nan():
    prices = synthetic_prices(n_assets=3, n_days=600, n_markets=1, seed=2, stagger=False).prices
    prices.iloc[400:, 1] = np.nan  # the asset stops trading
    f = compute_features(prices)
    assert np.isnan(f.values[400:, 1]).all()
    assert np.isnan(f.vol[400:, 1]).all() and np.isnan(f.returns[400:, 1]).all()
    assert np.isfinite(f.values[400:, 0]).all()


def test_assets_are_computed_independently():
    prices = synthetic_prices(n_assets=7, n_days=500, n_markets=2, seed=5).prices
    whole = compute_features(prices)
    subset = compute_features(prices.iloc[:, [5, 1]])
    np.testing.assert_array_equal(whole.values[:, [5, 1]], subset.values)
    np.testing.assert_array_equal(whole.vol[:, [5, 1]], subset.vol)


def test_extended_features():
    prices = load_prices("sp500").iloc[:1500, :4]
    index = load_index("sp500")
    config = FeatureConfig(extended=True)
    f = compute_features(prices, config, index=index)
    assert f.names[:8] == DEFAULT_NAMES
    assert f.names[8:] == (
        "rvol_5d",
        "rvol_21d",
        "beta_126d",
        "beta_252d",
        "cti_21d",
        "cti_63d",
        "cti_126d",
        "cti_252d",
        "alpha_21d",
        "alpha_63d",
        "alpha_126d",
    )
    t, i = 1400, 2
    r = f.frame("returns").iloc[:, i]
    m = index.reindex(prices.index).pct_change()
    window = slice(t - 125, t + 1)
    beta = np.cov(r.iloc[window], m.iloc[window])[0, 1] / m.iloc[window].var()
    assert f.frame("beta_126d").iloc[t, i] == pytest.approx(beta, rel=1e-9)
    assert f.frame("rvol_21d").iloc[t, i] == pytest.approx(
        r.iloc[t - 20 : t + 1].std() * np.sqrt(252), rel=1e-9
    )
    logp = np.log(
        f.frame("returns").iloc[:, i].add(1).cumprod()
    )  # winsorised path up to a constant
    cti = np.corrcoef(logp.iloc[t - 62 : t + 1], np.arange(63))[0, 1]
    assert f.frame("cti_63d").iloc[t, i] == pytest.approx(cti, rel=1e-9)
    beta252 = f.frame("beta_252d").iloc[t, i]
    alpha = (r.iloc[t - 20 : t + 1].sum() - beta252 * m.iloc[t - 20 : t + 1].sum()) / (
        f.vol[t, i] * np.sqrt(21)
    )
    assert f.frame("alpha_21d").iloc[t, i] == pytest.approx(alpha, rel=1e-9)
    cti_values = f.values[:, :, f.names.index("cti_21d")]
    assert np.nanmax(np.abs(cti_values)) <= 1 + 1e-12


def test_extended_needs_index():
    prices = load_prices("sp500").iloc[:300, :2]
    with pytest.raises(ValueError, match="`index` is required"):
        compute_features(prices, FeatureConfig(extended=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"return_horizons": (0, 5)}, "`return_horizons`"),
        ({"macd_pairs": ((24, 8),)}, "`macd_pairs`"),
        ({"vol_span": 1}, "`vol_span`"),
        ({"winsor_sigmas": 0}, "`winsor_halflife`, `winsor_sigmas`"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)


def test_bad_panels_are_refused():
    with pytest.raises(TypeError, match="`prices` must be a DataFrame"):
        compute_features(np.ones((5, 2)))
    frame = pd.DataFrame({"A": [1.0, 2.0]}, index=pd.to_datetime(["2020-01-02", "2020-01-01"]))
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_features(frame)


def test_ewm_halflife_matches_timescale():
    # the halflife whose decay equals 1 - 1/S
    for s in (8, 24, 96):
        assert 0.5 ** (1 / ewm_halflife(s)) == pytest.approx(1 - 1 / s)
    with pytest.raises(ValueError, match="`timescale`"):
        ewm_halflife(1)


_PANEL = synthetic_prices(n_assets=4, n_days=420, n_markets=2, seed=21).prices


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=30, max_value=400),
    factor=st.floats(min_value=0.2, max_value=5.0),
    asset=st.integers(min_value=0, max_value=3),
)
def test_no_look_ahead(cut, factor, asset):
    """Changing closes after date t leaves features, returns and vol at t unchanged."""
    changed = _PANEL.copy()
    col = changed.columns[asset]
    changed.loc[changed.index[cut + 1] :, col] *= factor
    base, moved = compute_features(_PANEL), compute_features(changed)
    rows = slice(0, cut + 1)
    np.testing.assert_array_equal(base.values[rows], moved.values[rows])
    np.testing.assert_array_equal(base.returns[rows], moved.returns[rows])
    np.testing.assert_array_equal(base.vol[rows], moved.vol[rows])
    # the target at t uses r_{t+1}: only rows before t are untouched
    np.testing.assert_array_equal(base.target[:cut], moved.target[:cut])
