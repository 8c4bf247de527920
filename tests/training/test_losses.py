"""Losses against momentum's numpy definitions and hand computations."""

import numpy as np
import pytest
import torch

from momentum.metrics import TRADING_DAYS, sharpe_ratio
from momentum.portfolio import VOL_TARGET
from momentum.portfolio import turnover as numpy_turnover
from training.losses import (
    l1_penalty,
    masked_sharpe,
    net_returns,
    objective,
    quantnet_sharpe,
    turnover,
)

RETURNS = np.array([0.01, -0.02, 0.015, 0.003, -0.004, 0.02, -0.001])


def t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def test_sharpe_loss_is_minus_the_metric():
    positions = t(np.ones((1, len(RETURNS), 1)))
    target = t(RETURNS.reshape(1, -1, 1))
    mask = torch.ones_like(positions, dtype=torch.bool)
    for reduction in ("pooled", "portfolio"):
        loss = objective(positions, target, positions, mask, reduction=reduction)
        assert float(loss) == pytest.approx(-sharpe_ratio(RETURNS), rel=1e-12)
    # the definition both share: mean / std(ddof=1) * sqrt(252)
    assert sharpe_ratio(RETURNS) == pytest.approx(
        RETURNS.mean() / RETURNS.std(ddof=1) * np.sqrt(TRADING_DAYS), rel=1e-12
    )


def test_masked_entries_do_not_count():
    values = t(np.r_[RETURNS, 5.0, -7.0])
    mask = torch.tensor([True] * len(RETURNS) + [False, False])
    assert float(masked_sharpe(values, mask)) == pytest.approx(sharpe_ratio(RETURNS), rel=1e-12)


def test_portfolio_reduction_averages_assets_first():
    r = np.array([[0.01, 0.03], [-0.02, 0.0], [0.005, -0.01], [0.02, 0.01]])
    mask = np.array([[True, True], [True, False], [True, True], [True, True]])
    loss = objective(
        t(np.ones((1, 4, 2))),
        t(r[None]),
        t(np.ones((1, 4, 2))),
        torch.as_tensor(mask[None]),
        reduction="portfolio",
    )
    daily = np.array([0.02, -0.02, -0.0025, 0.015])  # active assets only
    assert float(loss) == pytest.approx(-sharpe_ratio(daily), rel=1e-12)


def test_localized_minibatch_turnover_by_hand():
    # three samples of one asset, in minibatch order (STMOM eq. 14)
    positions = t([[[0.5], [-0.5], [1.0]]])
    leverage = t([[[1.0], [2.0], [0.5]]])  # sigma_tgt / s_t of each sample
    mask = torch.ones((1, 3, 1), dtype=torch.bool)
    # scaled positions 0.5, -1.0, 0.5 -> |-1.5|, |1.5|; the first has no predecessor
    np.testing.assert_allclose(turnover(positions, leverage, mask).numpy().ravel(), [0, 1.5, 1.5])
    target = t([[[0.01], [0.02], [-0.03]]])
    net = net_returns(positions, target, leverage, mask, cost_bps=10)
    np.testing.assert_allclose(
        net.numpy().ravel(), [0.005, -0.01 - 0.0015, -0.03 - 0.0015], rtol=1e-12
    )


def test_turnover_matches_momentum_portfolio():
    rng = np.random.default_rng(0)
    signal = np.tanh(rng.normal(size=(6, 3)))
    vol = rng.uniform(0.005, 0.03, size=(6, 3))
    expected = numpy_turnover(signal, vol)  # eq. 12 in numpy
    leverage = VOL_TARGET / (vol * np.sqrt(TRADING_DAYS))
    # one sequence per asset: (assets, steps, 1)
    mine = turnover(
        t(signal.T[..., None]), t(leverage.T[..., None]), torch.ones((3, 6, 1), dtype=torch.bool)
    )
    np.testing.assert_allclose(mine.numpy()[..., 0].T[1:], expected[1:], rtol=1e-12)


def test_turnover_skips_masked_neighbours():
    positions = t([[[1.0], [-1.0], [1.0]]])
    mask = torch.tensor([[[True], [False], [True]]])
    np.testing.assert_array_equal(turnover(positions, torch.ones_like(positions), mask), 0.0)


def test_quantnet_objective_by_hand():
    # one window, 3 assets in markets {0} and {1, 2}
    r = np.array([[0.01, 0.02, -0.01], [0.03, -0.01, 0.02], [-0.01, 0.01, 0.04]])
    per_asset = [sharpe_ratio(r[:, i]) for i in range(3)]
    expected = (per_asset[0] + (per_asset[1] + per_asset[2]) / 2) / 2
    got = quantnet_sharpe(t(r[None]), torch.ones((1, 3, 3), dtype=torch.bool), [(0,), (1, 2)])
    assert float(got) == pytest.approx(expected, rel=1e-12)
    loss = objective(
        t(np.ones((1, 3, 3))),
        t(r[None]),
        t(np.ones((1, 3, 3))),
        torch.ones((1, 3, 3), dtype=torch.bool),
        reduction="per_asset",
        markets=[(0,), (1, 2)],
    )
    assert float(loss) == pytest.approx(-expected, rel=1e-12)


def test_fully_masked_asset_keeps_gradients_finite():
    positions = torch.zeros((2, 4, 3), dtype=torch.float64, requires_grad=True)
    target = t(np.random.default_rng(1).normal(size=(2, 4, 3)))
    mask = torch.ones((2, 4, 3), dtype=torch.bool)
    mask[:, :, 2] = False  # an asset with no valid step
    loss = objective(
        torch.tanh(positions + 0.1),
        target,
        torch.ones_like(target),
        mask,
        reduction="per_asset",
        markets=[(0, 1), (2,)],
        cost_bps=5,
    )
    loss.backward()
    assert torch.isfinite(positions.grad).all()


def test_dmn_alternative_losses():
    positions = t([[[0.5], [-0.5]]])
    target = t([[[0.02], [0.01]]])
    mask = torch.ones((1, 2, 1), dtype=torch.bool)
    kw = {"reduction": "pooled"}
    assert float(objective(positions, target, positions, mask, loss="returns", **kw)) == (
        pytest.approx(-(0.01 - 0.005) / 2 * 252)
    )
    mse = ((0.5 - 0.02) ** 2 + (-0.5 - 0.01) ** 2) / 2
    assert float(objective(positions, target, positions, mask, loss="mse", **kw)) == (
        pytest.approx(mse)
    )
    bce = -(np.log(0.75) + np.log(0.25)) / 2  # p = (X + 1) / 2, both labels positive
    assert float(objective(positions, target, positions, mask, loss="binary", **kw)) == (
        pytest.approx(bce)
    )
    with pytest.raises(ValueError, match="unknown loss"):
        objective(positions, target, positions, mask, loss="hinge", **kw)
    with pytest.raises(ValueError, match="`markets` is required"):
        objective(positions, target, positions, mask, reduction="per_asset")


def test_l1_penalty():
    assert float(l1_penalty(t([[1.0, -2.0], [0.5, 0.0]]))) == 3.5
