"""Portfolio constructions: the closed form on a hand-built covariance, the constraints, the
covariance estimate, activity rules, and the per-asset leverage the reports carry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from momentum.construction import (
    CONSTRUCTIONS,
    COV_LOOKBACK,
    construct_weights,
    history_rows,
    per_asset_leverage,
    sector_neutral_mv,
)
from momentum.portfolio import VOL_TARGET, portfolio_returns, target_weights
from momentum.sizing import size_positions, sizer_for_loss

# a hand-built covariance: 5 assets, correlated, not diagonal; sectors {0, 1, 2} and {3, 4}
_A = np.array(
    [
        [1.0, 0.2, 0.0, 0.1, 0.0],
        [0.3, 1.0, 0.1, 0.0, 0.2],
        [0.0, 0.4, 1.0, 0.0, 0.1],
        [0.1, 0.0, 0.2, 1.0, 0.3],
        [0.0, 0.1, 0.0, 0.5, 1.0],
    ]
)
COV = (_A @ _A.T) * 1e-4
MU = np.array([0.8, -0.3, 0.1, 0.5, -0.9])
SECTORS = [0, 0, 0, 1, 1]
B = np.array([[1.0, 1, 1, 0, 0], [0, 0, 0, 1, 1]])


def test_sector_neutral_weights_are_the_closed_form_and_meet_the_constraints():
    w = sector_neutral_mv(MU, COV, SECTORS)
    # the paper's closed form with d = 0, written with explicit inverses
    c_inv = np.linalg.inv(COV)
    lam = np.linalg.inv(B @ c_inv @ B.T) @ B @ c_inv @ MU
    closed = c_inv @ (MU - B.T @ lam)
    closed /= np.abs(closed).sum()  # gamma: gross exposure one
    np.testing.assert_allclose(w, closed, rtol=0, atol=1e-12)
    np.testing.assert_allclose(B @ w, 0.0, atol=1e-14)  # each sector sums to zero
    assert abs(np.abs(w).sum() - 1.0) < 1e-12
    # optimality (KKT): mu - C w / gamma lies in the row space of B
    gamma = 1.0 / np.abs(c_inv @ (MU - B.T @ lam)).sum()
    residual = MU - COV @ w / gamma
    eta, *_ = np.linalg.lstsq(B.T, residual, rcond=None)
    np.testing.assert_allclose(B.T @ eta, residual, atol=1e-10)


def test_sector_neutral_weights_do_not_depend_on_the_order_of_the_assets():
    order = np.array([4, 2, 0, 3, 1])
    w = sector_neutral_mv(MU, COV, SECTORS)
    shuffled = sector_neutral_mv(MU[order], COV[np.ix_(order, order)], np.asarray(SECTORS)[order])
    np.testing.assert_allclose(shuffled, w[order], atol=1e-12)


def test_a_lone_asset_in_its_sector_is_held_at_zero_and_no_portfolio_is_all_zero():
    w = sector_neutral_mv(MU[:4], COV[:4, :4], [0, 0, 0, 1])
    assert w[3] == pytest.approx(0.0, abs=1e-14) and abs(np.abs(w).sum() - 1) < 1e-12
    assert (sector_neutral_mv(MU[:2], COV[:2, :2], [0, 1]) == 0).all()
    assert (sector_neutral_mv(np.zeros(5), COV, SECTORS) == 0).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must agree"):
        sector_neutral_mv(MU, COV[:4, :4], SECTORS)


def _panel(t: int = 300, n: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.01, (t, n)) @ _A.T
    signal = np.tanh(rng.normal(size=(t, n)))
    vol = np.full((t, n), 0.01)
    return signal, vol, returns


def test_construct_sector_neutral_uses_ledoit_wolf_on_the_trailing_window():
    signal, vol, returns = _panel()
    sectors = [[0, 1, 2], [3, 4]]
    t = 280
    w = construct_weights(
        "sector_neutral_mv", signal, vol, returns=returns, sectors=sectors, rows=[t]
    )[0]
    cov = LedoitWolf().fit(returns[t + 1 - COV_LOOKBACK : t + 1]).covariance_
    np.testing.assert_allclose(w, sector_neutral_mv(signal[t], cov, SECTORS), atol=1e-14)
    # a return after t changes nothing (no look-ahead); one inside the window does
    later = returns.copy()
    later[t + 1 :] *= 3
    again = construct_weights(
        "sector_neutral_mv", signal, vol, returns=later, sectors=sectors, rows=[t]
    )[0]
    np.testing.assert_array_equal(again, w)
    inside = returns.copy()
    inside[t - 5, 0] += 0.05
    moved = construct_weights(
        "sector_neutral_mv", signal, vol, returns=inside, sectors=sectors, rows=[t]
    )[0]
    assert np.abs(moved - w).max() > 1e-6


def test_construct_sector_neutral_activity_rules():
    signal, vol, returns = _panel()
    sectors = [[0, 1, 2], [3, 4]]
    signal[290, 1] = np.nan  # inactive that day
    returns[200, 2] = np.nan  # a gap inside the covariance window of rows 200..451
    rows = np.array([COV_LOOKBACK - 2, 290])
    w = construct_weights(
        "sector_neutral_mv", signal, vol, returns=returns, sectors=sectors, rows=rows
    )
    assert np.isnan(w[0]).all()  # too little history for anyone
    assert np.isnan(w[1, [1, 2]]).all() and np.isfinite(w[1, [0, 3, 4]]).all()
    # asset 0 is alone in its sector among the active ones: held at zero
    assert w[1, 0] == pytest.approx(0.0, abs=1e-14)
    assert abs(np.abs(w[1, [0, 3, 4]]).sum() - 1.0) < 1e-12
    assert abs(w[1, 3] + w[1, 4]) < 1e-14


@pytest.mark.parametrize(
    ("sectors", "match"),
    [
        ([[0, 1, 2], [3]], "no sector"),
        ([[0, 1, 2], [2, 3, 4]], "sectors 0 and 1"),
        ([[0, 9]], "outside"),
    ],
)
def test_bad_sectors_are_named(sectors, match):
    signal, vol, returns = _panel()
    with pytest.raises(ValueError, match=match):
        construct_weights(
            "sector_neutral_mv", signal, vol, returns=returns, sectors=sectors, rows=[290]
        )


def test_vol_scaled_is_eq_1_and_zero_mean_demeans_the_positions_first():
    signal, vol, _ = _panel(t=40)
    vol = vol * np.linspace(0.5, 2.0, 5)  # unequal vols
    signal[3, 2] = np.nan
    np.testing.assert_array_equal(
        construct_weights("vol_scaled", signal, vol), target_weights(signal, vol)
    )
    w = construct_weights("zero_mean", signal, vol)
    # undo eq. 1's scaling: the positions behind the weights sum to zero on every date
    x = w * vol * np.sqrt(252) / VOL_TARGET * np.isfinite(w).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.nansum(x, axis=1), 0.0, atol=1e-12)
    assert np.isnan(w[3, 2]) and np.isfinite(w[3, [0, 1, 3, 4]]).all()
    # the demeaned positions keep their order
    assert (np.argsort(x[0]) == np.argsort(signal[0])).all()


def test_per_asset_leverage_averages_to_the_portfolio_return():
    signal, vol, returns = _panel()
    w = construct_weights(
        "sector_neutral_mv",
        signal,
        vol,
        returns=returns,
        sectors=[[0, 1, 2], [3, 4]],
        rows=np.arange(260, 299),
    )
    nxt = returns[261:300]
    np.testing.assert_allclose(
        portfolio_returns(per_asset_leverage(w) * nxt), np.nansum(w * nxt, axis=1), atol=1e-15
    )


def test_unknown_names_and_missing_inputs_are_refused():
    signal, vol, returns = _panel(t=10)
    with pytest.raises(ValueError, match="unknown construction 'equal'"):
        construct_weights("equal", signal, vol)
    with pytest.raises(ValueError, match="needs `returns` and `sectors`"):
        construct_weights("sector_neutral_mv", signal, vol)
    assert set(CONSTRUCTIONS) == {"vol_scaled", "zero_mean", "sector_neutral_mv"}
    assert history_rows("vol_scaled") == 0 and history_rows("sector_neutral_mv") == COV_LOOKBACK


def test_sizers_follow_the_dmn_papers_objectives():
    out = np.array([[0.3, -1e-4, 0.0, np.nan]])
    np.testing.assert_array_equal(size_positions("identity", out), out)
    np.testing.assert_array_equal(size_positions("sign", out), [[1.0, -1.0, 0.0, np.nan]])
    assert [sizer_for_loss(x) for x in ("sharpe", "returns", "mse", "binary")] == [
        "identity",
        "identity",
        "sign",
        "sign",
    ]
    with pytest.raises(ValueError, match="unknown sizer"):
        size_positions("tanh", out)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        sizer_for_loss("hinge")
