"""Hand-computable checks of positions, captured returns, turnover and costs (STMOM eqs. 1, 10, 12, 13)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest

import momentum.portfolio as portfolio
from momentum.metrics import TRADING_DAYS
from momentum.portfolio import (
    VOL_TARGET,
    annualised_vol,
    captured_returns,
    delay_signal,
    ex_ante_vol_scale,
    leverage,
    net_returns,
    portfolio_returns,
    rescale_to_target_vol,
    target_weights,
    turnover,
)

NAN = np.nan
SQRT_YEAR = math.sqrt(TRADING_DAYS)


def daily(annual: float | list[list[float]]) -> np.ndarray:
    """Daily vol whose annualised value is ``annual`` (so hand arithmetic uses round numbers)."""
    return np.asarray(annual, dtype=np.float64) / SQRT_YEAR


def assert_same(actual: np.ndarray, expected: list | np.ndarray) -> None:
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-15)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(portfolio)
    assert result.attempted > 0
    assert result.failed == 0


def test_constants_are_the_papers() -> None:
    assert VOL_TARGET == 0.15
    assert TRADING_DAYS == 252


# ---------------------------------------------------------------- leverage


def test_annualised_vol_multiplies_by_sqrt_252() -> None:
    assert_same(annualised_vol([0.01, NAN]), [0.01 * math.sqrt(252), NAN])
    with pytest.raises(ValueError, match="`daily_vol` must be non-negative"):
        annualised_vol([0.01, -0.01])


def test_leverage_is_signal_times_target_over_annual_vol() -> None:
    signal = np.array([[1.0, -0.5, NAN]])
    vol = daily([[0.30, 0.05, 0.10]])
    # 1 * 0.15 / 0.30 = 0.5; -0.5 * 0.15 / 0.05 = -1.5; inactive stays NaN
    assert_same(leverage(signal, vol), [[0.5, -1.5, NAN]])
    assert_same(leverage(signal, vol, vol_target=0.30), [[1.0, -3.0, NAN]])


def test_leverage_is_nan_without_a_usable_vol() -> None:
    # zero vol (stale prices) has no risk estimate: NaN, never an infinite position
    out = leverage(np.array([[1.0, 1.0]]), np.array([[0.0, NAN]]))
    assert np.isnan(out).all()


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf])
def test_leverage_rejects_bad_vol_target(bad: float) -> None:
    with pytest.raises(ValueError, match="`vol_target`"):
        leverage(np.ones((1, 1)), daily([[0.2]]), vol_target=bad)


def test_leverage_rejects_negative_vol_and_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"`vol` must be non-negative.*\(1, 0\)"):
        leverage(np.ones((2, 2)), np.array([[0.01, 0.01], [-0.01, 0.01]]))


def test_shape_mismatch_names_both_parameters_and_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"`vol` has shape \(3, 2\) but `signal` has shape \(3, 3\)"
    ):
        leverage(np.ones((3, 3)), np.ones((3, 2)))
    with pytest.raises(
        ValueError, match=r"`next_returns` has shape \(2, 2\) but `signal` has shape \(3, 2\)"
    ):
        captured_returns(np.ones((3, 2)), np.ones((2, 2)))


def test_panels_must_be_two_dimensional_and_finite() -> None:
    with pytest.raises(ValueError, match=r"`signal` must be 2-D, got shape \(3,\)"):
        turnover(np.ones(3))
    with pytest.raises(ValueError, match=r"`signal` contains an infinite value at index \(0, 1\)"):
        turnover(np.array([[1.0, np.inf]]))


def test_pandas_inputs_with_different_tickers_are_refused() -> None:
    dates = pd.date_range("2020-01-01", periods=2)
    signal = pd.DataFrame(1.0, index=dates, columns=["AAA", "BBB"])
    vol = pd.DataFrame(0.01, index=dates, columns=["BBB", "AAA"])
    with pytest.raises(ValueError, match="`vol` and `signal` have different columns"):
        leverage(signal, vol)
    # same labels: accepted, numpy out
    assert isinstance(leverage(signal, vol[["AAA", "BBB"]]), np.ndarray)


# --------------------------------------------------------- captured returns


def test_captured_returns_with_vol_scaling() -> None:
    signal = np.array([[1.0, -1.0], [0.5, NAN]])
    next_returns = np.array([[0.02, 0.01], [-0.04, 0.03]])
    vol = daily([[0.30, 0.075], [0.15, 0.15]])
    # eq. (1): X * 0.15 / s * r_{t+1}
    expected = [
        [1.0 * 0.15 / 0.30 * 0.02, -1.0 * 0.15 / 0.075 * 0.01],
        [0.5 * 0.15 / 0.15 * -0.04, NAN],
    ]
    assert_same(captured_returns(signal, next_returns, vol), expected)


def test_captured_returns_without_vol_is_signal_times_next_return() -> None:
    signal = np.array([[1.0, -1.0], [0.5, NAN]])
    next_returns = np.array([[0.02, 0.01], [-0.04, NAN]])
    assert_same(captured_returns(signal, next_returns), [[0.02, -0.01], [-0.02, NAN]])


def test_portfolio_returns_average_over_active_assets_only() -> None:
    per_asset = np.array([[0.01, 0.03, NAN], [0.02, NAN, NAN], [NAN, NAN, NAN], [0.0, 0.03, -0.06]])
    assert_same(portfolio_returns(per_asset), [0.02, 0.02, NAN, -0.01])


# ----------------------------------------------------------------- turnover


def test_turnover_three_dates_two_assets_without_vol() -> None:
    # asset 1 starts on the second date
    signal = np.array([[1.0, NAN], [-1.0, 0.5], [-1.0, 1.0]])
    expected = [
        [1.0, NAN],  # first row trades from 0; inactive asset is NaN
        [2.0, 0.5],  # asset 1 enters: |0.5 - 0|
        [0.0, 0.5],
    ]
    assert_same(turnover(signal), expected)


def test_turnover_three_dates_two_assets_with_vol() -> None:
    signal = np.array([[1.0, NAN], [-1.0, 0.5], [-1.0, 1.0]])
    vol = daily([[0.30, NAN], [0.15, 0.30], [0.15, 0.15]])
    # eq. (12): 0.15 * |X_t/s_t - X_{t-1}/s_{t-1}|, missing previous position = 0
    expected = [
        [0.15 * abs(1 / 0.30 - 0), NAN],
        [0.15 * abs(-1 / 0.15 - 1 / 0.30), 0.15 * abs(0.5 / 0.30 - 0)],
        [0.15 * abs(-1 / 0.15 + 1 / 0.15), 0.15 * abs(1 / 0.15 - 0.5 / 0.30)],
    ]
    assert_same(turnover(signal, vol), expected)
    assert_same(np.array(expected), [[0.5, NAN], [1.5, 0.25], [0.0, 0.75]])


def test_turnover_reentry_after_a_gap_trades_the_full_position() -> None:
    signal = np.array([[0.4], [NAN], [0.4]])
    assert_same(turnover(signal), [[0.4], [NAN], [0.4]])


def test_net_returns_at_10_bps() -> None:
    captured = np.array([[0.01, NAN], [0.02, -0.01]])
    to = np.array([[1.0, NAN], [2.0, 0.5]])
    # eq. (13): R - c * TO with c = 10 bps = 0.001
    expected = [[0.01 - 0.001 * 1.0, NAN], [0.02 - 0.001 * 2.0, -0.01 - 0.001 * 0.5]]
    assert_same(net_returns(captured, to, cost_bps=10), expected)
    assert_same(net_returns(captured, to, cost_bps=0), captured)


def test_net_returns_on_portfolio_series_and_validation() -> None:
    assert_same(net_returns([0.01, 0.0], [1.0, 3.0], cost_bps=5), [0.0095, -0.0015])
    with pytest.raises(ValueError, match="`cost_bps` must be finite and non-negative"):
        net_returns([0.01], [1.0], cost_bps=-1)
    with pytest.raises(ValueError, match=r"`turnover` has shape \(2,\) but `captured` has shape"):
        net_returns([0.01], [1.0, 2.0], cost_bps=1)
    with pytest.raises(ValueError, match="`turnover` must be non-negative"):
        net_returns([0.01], [-1.0], cost_bps=1)


# ------------------------------------------------------------ target weights


def test_target_weights_divide_by_the_number_of_active_assets() -> None:
    signal = np.array([[1.0, NAN, NAN], [1.0, -1.0, NAN], [0.5, -1.0, 1.0], [NAN, NAN, NAN]])
    vol = daily([[0.15, 0.15, 0.15], [0.15, 0.30, 0.15], [0.15, 0.15, 0.15], [0.15, 0.15, 0.15]])
    expected = [
        [1.0, NAN, NAN],  # N_t = 1
        [0.5, -0.5 * 0.5, NAN],  # N_t = 2; asset 1 at 30% vol gets half the leverage
        [0.5 / 3, -1 / 3, 1 / 3],  # N_t = 3
        [NAN, NAN, NAN],
    ]
    assert_same(target_weights(signal, vol), expected)


def test_weights_times_next_returns_is_the_portfolio_return() -> None:
    rng = np.random.default_rng(0)
    signal = np.tanh(rng.normal(size=(6, 4)))
    signal[0, 1] = signal[3, 2] = NAN
    vol = np.abs(rng.normal(0.01, 0.003, size=(6, 4)))
    next_returns = rng.normal(0, 0.01, size=(6, 4))
    weights = target_weights(signal, vol)
    direct = np.nansum(weights * next_returns, axis=1)
    via_captured = portfolio_returns(captured_returns(signal, next_returns, vol))
    assert_same(direct, via_captured)


# ------------------------------------------------------- portfolio-level vol


def test_rescale_to_target_vol_hits_15_percent_exactly() -> None:
    r = np.array([0.01, -0.02, NAN, 0.03, 0.005])
    out = rescale_to_target_vol(r)
    assert np.isnan(out[2])
    finite = out[np.isfinite(out)]
    assert np.std(finite, ddof=1) * SQRT_YEAR == pytest.approx(0.15, rel=1e-12)
    # a pure rescaling: every return scaled by the same factor 0.15 / (std * sqrt 252)
    factor = 0.15 / (np.nanstd(r, ddof=1) * SQRT_YEAR)
    assert_same(out, r * factor)
    assert np.std(rescale_to_target_vol(r, 0.10)[[0, 1, 3, 4]], ddof=1) * SQRT_YEAR == (
        pytest.approx(0.10, rel=1e-12)
    )


def test_rescale_is_undefined_for_flat_or_tiny_series() -> None:
    assert np.isnan(rescale_to_target_vol([0.0, 0.0, 0.0])).all()
    assert np.isnan(rescale_to_target_vol([0.01, NAN])).all()
    with pytest.raises(ValueError, match="`returns` must be 1-D"):
        rescale_to_target_vol(np.ones((3, 2)))


def _ewm_std_by_hand(x: np.ndarray, span: float) -> float:
    """Bias-corrected exponentially weighted std of all of ``x`` (weights (1-a)^age)."""
    alpha = 2.0 / (span + 1.0)
    w = (1.0 - alpha) ** np.arange(len(x) - 1, -1, -1)
    mean = np.sum(w * x) / np.sum(w)
    biased = np.sum(w * (x - mean) ** 2) / np.sum(w)
    # reliability-weights correction: (sum w)^2 / ((sum w)^2 - sum w^2)
    return math.sqrt(biased * np.sum(w) ** 2 / (np.sum(w) ** 2 - np.sum(w**2)))


def test_ex_ante_vol_scale_matches_hand_formula() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.00, -0.01])
    lev = ex_ante_vol_scale(r, span=3, min_periods=2)
    # warm-up: row 0 knows nothing, row 1 knows one return (< min_periods)
    assert np.isnan(lev[:2]).all()
    # row 2 uses rows 0-1 only. span 3 -> alpha 1/2, weights (1/2, 1):
    # mean -0.01, biased var 0.0002, correction 2.25 / (2.25 - 1.25) -> var 0.00045
    assert lev[2] == pytest.approx(0.15 / (math.sqrt(0.00045) * SQRT_YEAR), rel=1e-12)
    for t in range(2, len(r)):
        expected = 0.15 / (_ewm_std_by_hand(r[:t], span=3) * SQRT_YEAR)
        assert lev[t] == pytest.approx(expected, rel=1e-12)


def test_ex_ante_vol_scale_uses_only_past_rows() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, size=40)
    base = ex_ante_vol_scale(r, span=10, min_periods=5)
    for t in range(len(r)):
        bumped = r.copy()
        bumped[t] += 0.05
        lev = ex_ante_vol_scale(bumped, span=10, min_periods=5)
        # the decision at t cannot see r[t] (realised at t+1)
        np.testing.assert_array_equal(lev[: t + 1], base[: t + 1])
        if t + 1 < len(r) and t + 1 >= 5:
            assert lev[t + 1] != base[t + 1]


def test_ex_ante_vol_scale_validates_parameters() -> None:
    with pytest.raises(ValueError, match="`span`"):
        ex_ante_vol_scale([0.01, 0.02], span=0.5)
    with pytest.raises(ValueError, match="`min_periods`"):
        ex_ante_vol_scale([0.01, 0.02], min_periods=0)
    with pytest.raises(ValueError, match="`port_returns` must be 1-D"):
        ex_ante_vol_scale(np.ones((3, 1)))
    # a flat history has no vol estimate: NaN, not infinite leverage
    assert np.isnan(ex_ante_vol_scale(np.zeros(10), span=3, min_periods=2)).all()


# ------------------------------------------------------------------- delays


def test_delay_signal_shifts_rows_down() -> None:
    signal = np.array([[1.0, -1.0], [0.5, NAN], [0.0, 0.2], [-0.3, 0.4]])
    assert_same(delay_signal(signal, 2), [[NAN, NAN], [NAN, NAN], [1.0, -1.0], [0.5, NAN]])
    same = delay_signal(signal, 0)
    assert_same(same, signal)
    same[0, 0] = 9.0  # a copy, not a view
    assert signal[0, 0] == 1.0
    assert np.isnan(delay_signal(signal, 4)).all()
    assert np.isnan(delay_signal(signal, 10)).all()


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1"])
def test_delay_signal_validates_sessions(bad: object) -> None:
    with pytest.raises(ValueError, match="`sessions`"):
        delay_signal(np.ones((3, 2)), bad)  # type: ignore[arg-type]
