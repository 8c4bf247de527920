"""Sharpe standard errors, the Sharpe-difference test and the market regression.

Closed forms on IID normal returns (Lo 2002), Monte Carlo dispersion of the estimators, the
size and power of the Ledoit-Wolf (2008) HAC test on simulated pairs, and scipy's
``linregress`` as an independent OLS. Every simulation is seeded and small.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats

import momentum.significance as significance
from momentum.metrics import sharpe_ratio
from momentum.significance import (
    alpha_beta,
    long_run_covariance,
    newey_west_lags,
    sharpe_difference_test,
    sharpe_ratio_se,
)

SQRT_YEAR = math.sqrt(252)


def ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float) -> np.ndarray:
    """Stationary AR(1) noise along axis 1 with unit innovations: x_t = phi x_{t-1} + e_t."""
    e = rng.standard_normal(shape)
    e[:, 0] /= math.sqrt(1 - phi * phi)  # start from the stationary distribution
    return scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=1)


def test_doctests() -> None:
    assert doctest.testmod(significance).failed == 0


# ---------------------------------------------------------------------------- long-run covariance


def test_newey_west_lags_rule_of_thumb() -> None:
    for n in (0, 1, 99, 100, 320, 2520, 8313):
        expected = math.floor(4 * (n / 100) ** (2 / 9)) if n else 0
        assert newey_west_lags(n) == expected
    with pytest.raises(ValueError, match="`n`"):
        newey_west_lags(-1)


def test_lag_zero_is_the_plain_covariance() -> None:
    y = np.random.default_rng(0).standard_normal((200, 3))
    np.testing.assert_allclose(long_run_covariance(y, 0), np.cov(y.T, ddof=0), rtol=1e-12)


def test_long_run_variance_of_an_ar1_matches_its_closed_form() -> None:
    # AR(1) with unit innovations: long-run variance 1 / (1 - phi)^2 = 4 at phi = 0.5,
    # while the plain variance is only 1 / (1 - phi^2) = 4/3
    phi = 0.5
    x = ar1(np.random.default_rng(1), (1, 200_000), phi)[0]
    assert long_run_covariance(x, 0)[0, 0] == pytest.approx(1 / (1 - phi**2), rel=0.05)
    # Bartlett weights at lag 100 leave a bias of about 1.3%, sampling noise about 2.5%
    assert long_run_covariance(x, 100)[0, 0] == pytest.approx(1 / (1 - phi) ** 2, rel=0.1)


def test_long_run_covariance_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        long_run_covariance(np.array([1.0, np.nan, 2.0]), 1)
    with pytest.raises(ValueError, match="`lags`"):
        long_run_covariance(np.ones(5), -1)


# ---------------------------------------------------------------------------- Sharpe standard errors


def test_iid_se_is_lo_closed_form() -> None:
    r = np.random.default_rng(2).normal(0.0006, 0.01, 1500)
    sr_daily = r.mean() / r.std(ddof=1)
    expected = math.sqrt((1 + sr_daily**2 / 2) / r.size) * SQRT_YEAR
    assert sharpe_ratio_se(r, method="iid") == pytest.approx(expected, rel=1e-12)
    # annualised consistently with the Sharpe itself: the t-ratio does not depend on the year
    assert sharpe_ratio_se(r, method="iid", periods_per_year=1) * SQRT_YEAR == pytest.approx(
        sharpe_ratio_se(r, method="iid"), rel=1e-12
    )


def test_hac_se_on_iid_normal_returns_is_close_to_the_closed_form() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 20_000)
    sr_daily = r.mean() / r.std(ddof=1)
    closed = math.sqrt((1 + sr_daily**2 / 2) / r.size) * SQRT_YEAR
    assert sharpe_ratio_se(r, method="hac", lags=0) == pytest.approx(closed, rel=0.03)
    assert sharpe_ratio_se(r) == pytest.approx(closed, rel=0.05)


def test_se_matches_the_monte_carlo_dispersion_of_the_sharpe_ratio() -> None:
    # 2,000 two-year histories of IID normal returns with an annual Sharpe of 1.6
    rng = np.random.default_rng(4)
    paths = rng.normal(0.001, 0.01, (2000, 504))
    sharpes = np.array([sharpe_ratio(p) for p in paths])
    truth = sharpes.std(ddof=1)
    assert np.mean([sharpe_ratio_se(p, method="iid") for p in paths]) == pytest.approx(
        truth, rel=0.06
    )
    assert np.mean([sharpe_ratio_se(p) for p in paths]) == pytest.approx(truth, rel=0.08)


def test_hac_se_widens_for_autocorrelated_returns_and_iid_does_not() -> None:
    # positively autocorrelated daily returns (phi = 0.3): the Sharpe is noisier than IID
    # theory says; the HAC error tracks the Monte Carlo truth, the IID one is too small
    rng = np.random.default_rng(5)
    paths = 0.0008 + 0.01 * ar1(rng, (1000, 1000), 0.3)
    truth = np.std([sharpe_ratio(p) for p in paths], ddof=1)
    iid = np.mean([sharpe_ratio_se(p, method="iid") for p in paths])
    hac = np.mean([sharpe_ratio_se(p) for p in paths])
    assert iid < 0.85 * truth  # theory: sqrt((1 - phi) / (1 + phi)) = 0.73 of the truth
    assert hac == pytest.approx(truth, rel=0.15)


def test_se_is_nan_when_undefined_and_validates_arguments() -> None:
    assert math.isnan(sharpe_ratio_se([0.01, 0.01, 0.01, 0.01]))
    assert math.isnan(sharpe_ratio_se([0.01, np.nan, -0.01]))  # two observations left
    with pytest.raises(ValueError, match="`method`"):
        sharpe_ratio_se([0.01, 0.02, -0.01], method="bootstrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="infinite"):
        sharpe_ratio_se([0.01, np.inf, -0.01])


# ---------------------------------------------------------------------------- Sharpe differences


def correlated_pair(
    rng: np.random.Generator, n: int, sharpe_a: float, sharpe_b: float, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns of two strategies with given annual Sharpe ratios and correlation rho."""
    z1, z2 = rng.standard_normal((2, n))
    a = sharpe_a / SQRT_YEAR + z1
    b = sharpe_b / SQRT_YEAR + rho * z1 + math.sqrt(1 - rho * rho) * z2
    return 0.01 * a, 0.01 * b


def test_difference_test_has_the_right_size_under_the_null() -> None:
    # equal Sharpe ratios (1.0), correlation 0.6: p-values should be uniform
    rng = np.random.default_rng(6)
    p = np.array(
        [
            sharpe_difference_test(*correlated_pair(rng, 750, 1.0, 1.0, 0.6)).p_value
            for _ in range(600)
        ]
    )
    assert 0.025 <= np.mean(p < 0.05) <= 0.08
    assert 0.06 <= np.mean(p < 0.10) <= 0.14
    assert scipy.stats.kstest(p, "uniform").pvalue > 0.01


def test_difference_test_detects_a_large_difference() -> None:
    # annual Sharpe 3 against 0 over four years, correlation 0.5
    rng = np.random.default_rng(7)
    tests = [sharpe_difference_test(*correlated_pair(rng, 1008, 3.0, 0.0, 0.5)) for _ in range(50)]
    assert np.mean([t.p_value < 0.01 for t in tests]) >= 0.9
    assert all(t.difference > 0 and t.z > 0 for t in tests if t.p_value < 0.05)


def test_difference_uses_the_project_sharpe_and_is_scale_free() -> None:
    a, b = correlated_pair(np.random.default_rng(8), 800, 1.5, 0.5, 0.3)
    test = sharpe_difference_test(a, b)
    assert test.sharpe_a == pytest.approx(sharpe_ratio(a), rel=1e-12)
    assert test.difference == pytest.approx(sharpe_ratio(a) - sharpe_ratio(b), rel=1e-12)
    assert test.z == pytest.approx(test.difference / test.se, rel=1e-12)
    assert test.p_value == pytest.approx(2 * scipy.stats.norm.sf(abs(test.z)), rel=1e-12)
    # leverage changes no Sharpe ratio, so it changes neither the difference nor its error
    scaled = sharpe_difference_test(3.0 * a, 0.5 * b)
    assert scaled.se == pytest.approx(test.se, rel=1e-9)
    assert scaled.p_value == pytest.approx(test.p_value, rel=1e-9)
    # swapping the two flips the sign only
    swapped = sharpe_difference_test(b, a)
    assert swapped.z == pytest.approx(-test.z, rel=1e-12)


def test_correlation_makes_the_test_sharper() -> None:
    # the same two Sharpe ratios are told apart with a smaller error when the strategies move
    # together: the point of testing the difference rather than each Sharpe alone
    rng = np.random.default_rng(9)
    loose = sharpe_difference_test(*correlated_pair(rng, 2000, 1.5, 1.0, 0.0))
    tight = sharpe_difference_test(*correlated_pair(rng, 2000, 1.5, 1.0, 0.95))
    assert tight.se < 0.5 * loose.se


def test_identical_or_misaligned_series() -> None:
    r = np.random.default_rng(10).normal(0.0005, 0.01, 300)
    same = sharpe_difference_test(r, r.copy())
    assert same.difference == 0 and same.se == 0
    assert math.isnan(same.z) and math.isnan(same.p_value)
    with pytest.raises(ValueError, match="aligned"):
        sharpe_difference_test(r, r[:-1])
    # NaN dates of either series are dropped from both
    b = r * 0.5 + np.random.default_rng(11).normal(0, 0.01, 300)
    b[:10] = np.nan
    assert sharpe_difference_test(r, b).n == 290


# ---------------------------------------------------------------------------- alpha and beta


def test_ols_alpha_beta_match_scipy_linregress() -> None:
    rng = np.random.default_rng(12)
    market = rng.normal(0.0003, 0.01, 1200)
    r = 0.0002 + 0.7 * market + rng.normal(0, 0.008, 1200)
    fit = alpha_beta(r, market, hac=False)
    ref = scipy.stats.linregress(market, r)
    assert fit.beta == pytest.approx(ref.slope, rel=1e-10)
    assert fit.alpha == pytest.approx(252 * ref.intercept, rel=1e-10)
    assert fit.beta_se == pytest.approx(ref.stderr, rel=1e-10)
    assert fit.alpha_se == pytest.approx(252 * ref.intercept_stderr, rel=1e-10)
    assert fit.r_squared == pytest.approx(ref.rvalue**2, rel=1e-10)
    assert fit.lags is None
    # HAC errors on IID data are close to the classical ones
    hac = alpha_beta(r, market)
    assert hac.alpha == fit.alpha
    assert hac.alpha_se == pytest.approx(fit.alpha_se, rel=0.1)
    assert hac.lags == newey_west_lags(1200)


def test_hac_with_lag_zero_is_white_hc0() -> None:
    rng = np.random.default_rng(13)
    market = rng.normal(0, 0.01, 500)
    r = 0.5 * market + np.abs(market) * rng.standard_normal(500)  # heteroskedastic errors
    fit = alpha_beta(r, market, lags=0)
    x = np.column_stack([np.ones(500), market])
    e = r - x @ np.linalg.lstsq(x, r, rcond=None)[0]
    bread = np.linalg.inv(x.T @ x)
    white = bread @ (x.T * e**2) @ x @ bread
    assert fit.beta_se == pytest.approx(math.sqrt(white[1, 1]), rel=1e-10)
    assert fit.alpha_se == pytest.approx(252 * math.sqrt(white[0, 0]), rel=1e-10)


def test_hac_alpha_t_tracks_autocorrelated_errors() -> None:
    # errors with AR(1) phi = 0.5: classical OLS t-statistics of a zero alpha are too wide
    # spread; Newey-West ones are close to standard normal
    rng = np.random.default_rng(14)
    market = rng.normal(0, 0.01, (400, 750))
    errors = 0.005 * ar1(rng, (400, 750), 0.5)
    ols_t = [alpha_beta(m + e, m, hac=False).alpha_t for m, e in zip(market, errors, strict=True)]
    hac_t = [alpha_beta(m + e, m).alpha_t for m, e in zip(market, errors, strict=True)]
    assert np.std(ols_t) > 1.4
    assert np.std(hac_t) == pytest.approx(1.0, abs=0.2)


def test_exact_fit_has_no_alpha_t_and_bad_inputs_fail() -> None:
    market = np.random.default_rng(15).normal(0, 0.01, 100)
    fit = alpha_beta(market, market)
    assert fit.beta == pytest.approx(1.0) and fit.r_squared == pytest.approx(1.0)
    assert math.isnan(fit.alpha_t)
    assert math.isnan(alpha_beta(market, np.full(100, 0.01)).beta)  # constant market
    with pytest.raises(ValueError, match="aligned"):
        alpha_beta(market, market[:50])
