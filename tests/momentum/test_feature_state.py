"""The incremental feature state against `compute_features` on the full history."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momentum.data import PriceDataError, validate_prices
from momentum.feature_state import FeatureState, FeatureStateError
from momentum.features import FeatureConfig, compute_features

# several windows of every length in the default and extended sets
N_DAYS = 700


def _panel(seed: int, n_assets: int, carried: bool) -> tuple[pd.DataFrame, pd.Series]:
    """Random-walk closes with staggered starts, a mid-panel listing and assets that stop."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2001-01-02", periods=N_DAYS, name="date")
    steps = rng.standard_t(4, size=(N_DAYS, n_assets)) * 0.015
    closes = 40.0 * np.exp(np.cumsum(steps, axis=0))
    if carried:  # forward-filled closes: a price that does not move for a few sessions
        for j in range(n_assets):
            at = int(rng.integers(50, N_DAYS - 10))
            closes[at : at + int(rng.integers(1, 6)), j] = closes[at - 1, j]
    closes[: int(rng.integers(1, 400)), 0] = np.nan  # lists mid-panel
    if n_assets > 1:
        closes[int(rng.integers(300, N_DAYS - 1)) :, 1] = np.nan  # stops
    for j in range(2, n_assets):
        closes[: int(rng.integers(0, 120)), j] = np.nan  # staggered starts
    index = pd.Series(1000.0 * np.exp(np.cumsum(rng.normal(0, 0.01, N_DAYS))), index=dates)
    prices = pd.DataFrame(closes, index=dates, columns=[f"A{j}" for j in range(n_assets)])
    return prices, index


def _assert_same(incremental, full, rows):
    for name in ("values", "returns", "vol"):
        got, want = getattr(incremental, name), getattr(full, name)[rows]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        assert np.nanmax(np.abs(got - want), initial=0.0) <= 1e-12, name


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_assets=st.integers(1, 5),
    extended=st.booleans(),
    carried=st.booleans(),
    cuts=st.lists(st.integers(1, N_DAYS - 1), min_size=1, max_size=12),
)
def test_incremental_equals_full_history_on_every_date(seed, n_assets, extended, carried, cuts):
    prices, index = _panel(seed, n_assets, carried)
    config = FeatureConfig(extended=extended)
    kwargs = {"index": index} if extended else {}
    full = compute_features(prices, config, **kwargs)
    state = FeatureState.empty(prices.columns, config, history=5)
    bounds = [0, *sorted(set(cuts)), N_DAYS]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        block = state.advance(prices.iloc[start:stop], **kwargs)
        _assert_same(block, full, slice(start, stop))
    # the kept rows are the last `history` rows of the full panel, targets included
    _assert_same(state.recent, full, slice(N_DAYS - 5, N_DAYS))
    assert state.steps == N_DAYS and state.last_date == prices.index[-1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), extended=st.booleans(), cut=st.integers(1, N_DAYS - 30))
def test_a_reloaded_state_equals_one_that_never_stopped(seed, extended, cut):
    prices, index = _panel(seed, 4, carried=True)
    config = FeatureConfig(extended=extended)
    kwargs = {"index": index} if extended else {}
    never = FeatureState.from_prices(prices.iloc[:cut], config, history=3, **kwargs)
    reloaded = FeatureState.from_bytes(never.to_bytes())
    for day in range(cut, cut + 30):
        level = {"index_level": index.iloc[day]} if extended else {}
        a = never.update(prices.iloc[day], prices.index[day], **level)
        b = reloaded.update(prices.iloc[day], prices.index[day], **level)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.vol, b.vol)
    np.testing.assert_array_equal(never.recent.values, reloaded.recent.values)
    np.testing.assert_array_equal(never.recent.target, reloaded.recent.target)
    for name, array in never.arrays.items():
        np.testing.assert_array_equal(array, reloaded.arrays[name], err_msg=name)


def test_update_is_one_session_of_advance():
    prices, _ = _panel(1, 3, carried=False)
    state = FeatureState.from_prices(prices.iloc[:400])
    day = state.update({"A0": prices.iat[400, 0], "A2": prices.iat[400, 2]}, prices.index[400])
    seen = prices.iloc[:401].copy()
    seen.iloc[400, 1] = np.nan
    full = compute_features(seen)
    _assert_same(day, full, slice(400, 401))
    assert np.isnan(day.values[0, 1]).all()  # A1 had no close that day


def _gappy(seed: int) -> pd.DataFrame:
    """Raw closes with interior gaps of 1-5 sessions and an asset that ends."""
    prices, _ = _panel(seed, 4, carried=False)
    rng = np.random.default_rng(seed + 1)
    raw = prices.copy()
    for j in (0, 2, 3):
        for at in range(430 + int(rng.integers(0, 20)), N_DAYS - 10, 25):
            raw.iloc[at : at + int(rng.integers(1, 6)), j] = np.nan
    # a session without any close is no session of the panel (the store has no such date)
    return raw[raw.notna().any(axis=1)]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), days=st.lists(st.integers(420, N_DAYS), min_size=1))
def test_continuing_a_raw_panel_equals_validating_the_whole_of_it(seed, days):
    """What the service does: advance the settled sessions only, cleaned as training cleans."""
    raw = _gappy(seed)
    state = FeatureState.from_prices(validate_prices(raw.iloc[:400]).reindex(columns=raw.columns))
    for day in sorted({min(d, len(raw)) for d in days}):
        block = raw.iloc[state.steps : day]
        if block.empty:
            continue
        filled, settled = state.continue_panel(block)
        today = state.copy().advance(filled)
        full = compute_features(validate_prices(raw.iloc[:day]).reindex(columns=raw.columns))
        # the settled rows are final: they equal the whole panel's, whatever comes later
        later = compute_features(validate_prices(raw).reindex(columns=raw.columns))
        _assert_same(
            today.slice_dates(0, settled), later, slice(state.steps, state.steps + settled)
        )
        # and the last row is what a full recompute on this day's data gives
        _assert_same(today.slice_dates(len(filled) - 1, len(filled)), full, slice(day - 1, day))
        if settled:
            state.advance(filled.iloc[:settled])


def test_continue_panel_refuses_a_long_gap_that_a_close_ends():
    prices, _ = _panel(3, 2, carried=False)
    prices = prices.iloc[:, [1]].iloc[:300]  # an asset that trades throughout
    state = FeatureState.from_prices(prices.iloc[:200])
    block = prices.iloc[200:220].copy()
    block.iloc[2:9] = np.nan
    with pytest.raises(PriceDataError, match="no price for 7 sessions in a row"):
        state.continue_panel(block)
    block.iloc[2:9] = prices.iloc[202:209].to_numpy()
    block.iloc[13:18] = np.nan  # five sessions: forward-filled
    filled, settled = state.continue_panel(block)
    assert settled == len(block)
    assert (filled.iloc[13:18].to_numpy() == block.iloc[12].to_numpy()).all()


def test_a_trailing_short_gap_is_not_settled():
    prices, _ = _panel(3, 3, carried=False)
    prices = prices[["A2"]]  # trades from its start to the end
    state = FeatureState.from_prices(prices.iloc[:200])
    block = prices.iloc[200:210].copy()
    block.iloc[7:, 0] = np.nan  # no close for three sessions so far
    _, settled = state.continue_panel(block)
    assert settled == 7
    block.iloc[3:, 0] = np.nan  # seven: the asset has ended, and that is final
    _, settled = state.continue_panel(block)
    assert settled == len(block)


def test_state_refuses_what_it_cannot_continue():
    prices, _ = _panel(5, 3, carried=False)
    state = FeatureState.from_prices(prices.iloc[:100])
    with pytest.raises(FeatureStateError, match="not after the state's last session"):
        state.advance(prices.iloc[99:101])
    with pytest.raises(FeatureStateError, match="tickers the state does not"):
        state.advance(prices.iloc[100:101].rename(columns={"A0": "ZZZ"}))
    bad = prices.iloc[100:102].copy()
    bad.iloc[1, 2] = -1.0
    with pytest.raises(FeatureStateError, match="-1.0 of A2 on"):
        state.advance(bad)
    assert state.steps == 100  # nothing consumed
    with pytest.raises(ValueError, match="`index` is required"):
        FeatureState.from_prices(prices, FeatureConfig(extended=True))


def test_a_state_of_other_features_is_refused():
    prices, _ = _panel(5, 2, carried=False)
    data = FeatureState.from_prices(prices.iloc[:100]).to_bytes()
    archive = dict(np.load(io.BytesIO(data)))
    meta = json.loads(bytes(archive["meta"]).decode())
    meta["features_version"] = "0.9"
    archive["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    with pytest.raises(FeatureStateError, match="features version 0.9"):
        FeatureState.from_bytes(buffer.getvalue())
    with pytest.raises(FeatureStateError, match="not a serialised FeatureState"):
        FeatureState.from_bytes(b"garbage")
