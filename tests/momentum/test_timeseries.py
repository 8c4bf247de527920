"""The vectorised recursions against pandas and against direct window formulas."""

import numpy as np
import pandas as pd
import pytest

from momentum import timeseries as ts


@pytest.fixture(scope="module")
def panel() -> np.ndarray:
    """Prices that drift far from their start, with late starts and early ends."""
    rng = np.random.default_rng(7)
    x = 50 * np.exp(np.cumsum(rng.standard_t(4, size=(900, 6)) * 0.02, axis=0))
    x[:150, 1] = np.nan  # starts late
    x[:899, 2] = np.nan  # a single observation
    x[700:, 3] = np.nan  # ends early
    x[:, 4] = np.nan  # never trades
    return x


def _observed(x: np.ndarray) -> np.ndarray:
    return ~np.isnan(x)


@pytest.mark.parametrize("halflife", [5.19, 60.0, 252.0])
def test_ewm_mean_matches_pandas(panel, halflife):
    mine = ts.ewm_mean(panel, [ts.decay_from_halflife(halflife)])[0]
    ref = pd.DataFrame(panel).ewm(halflife=halflife).mean().to_numpy()
    obs = _observed(panel)
    np.testing.assert_allclose(mine[obs], ref[obs], rtol=1e-12)
    assert np.isnan(mine[:150, 1]).all() and np.isnan(mine[:, 4]).all()


def test_ewm_mean_several_decays_in_one_scan(panel):
    decays = [ts.decay_from_halflife(h) for h in (3.0, 30.0)]
    both = ts.ewm_mean(panel, decays)
    for k, d in enumerate(decays):
        np.testing.assert_array_equal(both[k], ts.ewm_mean(panel, [d])[0])


def test_ewm_mean_by_hand():
    # d = 0.5: weights 1, 0.5, 0.25 (newest first)
    x = np.array([[1.0], [2.0], [4.0]])
    mean = ts.ewm_mean(x, [0.5])[0, :, 0]
    assert mean == pytest.approx([1.0, (2 + 0.5) / 1.5, (4 + 1 + 0.25) / 1.75])


@pytest.mark.parametrize(("halflife", "min_periods"), [(60.0, 0), (252.0, 0), (20.0, 30)])
def test_ewm_std_matches_pandas(panel, halflife, min_periods):
    mine = ts.ewm_std(panel, ts.decay_from_halflife(halflife), min_periods)
    ref = pd.DataFrame(panel).ewm(halflife=halflife, min_periods=min_periods).std().to_numpy()
    obs = _observed(panel)
    np.testing.assert_array_equal(np.isnan(mine[obs]), np.isnan(ref[obs]))
    np.testing.assert_allclose(mine[obs], ref[obs], rtol=1e-9, equal_nan=True)


def test_ewm_std_by_hand():
    # two points, d = 0.5: weights 0.5 (old), 1 (new); W = 1.5, V = 1.25
    x = np.array([[0.0], [3.0]])
    mean = 3.0 / 1.5
    var = (0.5 * mean**2 + (3 - mean) ** 2) / 1.5 * 1.5**2 / (1.5**2 - 1.25)
    std = ts.ewm_std(x, 0.5)[:, 0]
    assert np.isnan(std[0])
    assert std[1] == pytest.approx(np.sqrt(var))


def test_ewm_span_decay():
    assert ts.decay_from_span(60) == pytest.approx(1 - 2 / 61)
    r = np.random.default_rng(0).normal(0, 0.01, size=(300, 3))
    ref = pd.DataFrame(r).ewm(span=60, min_periods=60).std().to_numpy()
    np.testing.assert_allclose(ts.ewm_std(r, ts.decay_from_span(60), 60), ref, rtol=1e-10)


@pytest.mark.parametrize("window", [2, 63, 252])
def test_rolling_std_matches_direct_windows(panel, window):
    mine = ts.rolling_std(panel, window)
    ref = np.full_like(panel, np.nan)
    for t in range(window - 1, len(panel)):
        chunk = panel[t - window + 1 : t + 1]
        full = ~np.isnan(chunk).any(axis=0)
        ref[t, full] = chunk[:, full].std(axis=0, ddof=1)
    np.testing.assert_array_equal(np.isnan(mine), np.isnan(ref))
    np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_rolling_std_shorter_than_window():
    assert np.isnan(ts.rolling_std(np.ones((3, 2)), 5)).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ts.rolling_std(np.ones((5, 2)), 1), "`window` must be at least 2"),
        (lambda: ts.ewm_std(np.ones((5, 2)), 0.5, -1), "`min_periods` must be non-negative"),
        (lambda: ts.ewm_mean(np.ones(5), [0.5]), "must be 2-D"),
        (lambda: ts.decay_from_halflife(0), "`halflife` must be positive"),
        (lambda: ts.decay_from_span(0.5), "`span` must be at least 1"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_recursions_are_causal(panel):
    changed = panel.copy()
    changed[500:] *= 1.7
    for fn in (
        lambda x: ts.ewm_mean(x, [0.9, 0.99])[1],
        lambda x: ts.ewm_std(x, 0.97),
        lambda x: ts.rolling_std(x, 63),
    ):
        np.testing.assert_array_equal(fn(panel)[:500], fn(changed)[:500])
