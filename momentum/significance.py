"""How sure a Sharpe ratio, an alpha or a signal is: standard errors and tests.

Pure functions of 1-D arrays of *daily* simple returns, like `momentum.metrics` (NaNs are
dropped, infinities are an error, undefined results are ``nan``), and one regression over
(date, asset) panels of signals and next-day returns (`signal_regression`). Figures are
annualised with ``TRADING_DAYS``: a Sharpe ratio and its standard error both scale by
sqrt(252), so their ratio (the number of standard errors) does not depend on the frequency.

References
----------
* Lo, A. W. (2002). "The Statistics of Sharpe Ratios". Financial Analysts Journal 58(4).
  The standard error of an estimated Sharpe ratio: sqrt((1 + SR^2 / 2) / T) for IID normal
  returns, and a GMM (delta-method) version with Newey-West weights for serially
  correlated, non-normal returns.
* Ledoit, O. and Wolf, M. (2008). "Robust performance hypothesis testing with the Sharpe
  ratio". Journal of Empirical Finance 15(5). The difference of two Sharpe ratios from
  paired returns, with a HAC standard error by the delta method (their section 3.1).
* Newey, W. K. and West, K. D. (1987). "A simple, positive semi-definite,
  heteroskedasticity and autocorrelation consistent covariance matrix". Econometrica 55(3):
  the Bartlett-weighted long-run covariance used throughout.
* Newey, W. K. and West, K. D. (1994). "Automatic lag selection in covariance matrix
  estimation". Review of Economic Studies 61(4): the default lag floor(4 (T / 100)^(2/9)).
* Boutier, M. (2023). "Systematic trading: predicting cross-sectional returns of US Equities
  using Recurrent Neural Networks", appendix "Metrics to assess the performance of a long short strategy": the R²
  and the t-statistic of the signal in the regression of subsequent stock returns on the
  model's predicted signals (`signal_regression`).

Where this module differs from Ledoit & Wolf: they recommend a prewhitened quadratic-spectral
kernel (or their studentised circular block bootstrap) for small samples; this module uses the
plain Bartlett kernel, which is positive semi-definite and adequate for the thousands of
daily observations of a backtest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike, NDArray

from momentum.metrics import TRADING_DAYS, daily_series, sharpe_ratio

__all__ = [
    "Regression",
    "SharpeDifference",
    "SignalRegression",
    "alpha_beta",
    "long_run_covariance",
    "newey_west_lags",
    "sharpe_difference_test",
    "sharpe_ratio_se",
    "signal_regression",
]

_SQRT_YEAR = math.sqrt(TRADING_DAYS)
# below 3 observations there is no lag-1 term and no residual degree of freedom to speak of
_MIN_OBS = 3


def _paired(
    a: ArrayLike, b: ArrayLike, names: tuple[str, str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The rows where both series are finite (the same dates of two strategies)."""
    x, y = daily_series(a, names[0]), daily_series(b, names[1])
    if x.shape != y.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must be aligned on the same dates, "
            f"got lengths {x.size} and {y.size}"
        )
    both = np.isfinite(x) & np.isfinite(y)
    return x[both], y[both]


def _check_lags(lags: int | None, n: int) -> int:
    if lags is None:
        return newey_west_lags(n)
    if isinstance(lags, bool) or not isinstance(lags, Integral) or int(lags) < 0:
        raise ValueError(f"`lags` must be an integer >= 0 or None, got {lags!r}")
    return int(lags)


def newey_west_lags(n: int) -> int:
    """Newey & West (1994)'s rule-of-thumb lag for a Bartlett kernel, ``floor(4 (n/100)^(2/9))``.

    Parameters
    ----------
    n : int
        Number of observations (>= 0).

    Returns
    -------
    int

    Examples
    --------
    >>> newey_west_lags(100), newey_west_lags(2520), newey_west_lags(8000)
    (4, 8, 10)
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"`n` must be a number of observations >= 0, got {n!r}")
    return int(math.floor(4.0 * (int(n) / 100.0) ** (2.0 / 9.0))) if n else 0


def long_run_covariance(moments: ArrayLike, lags: int | None) -> NDArray[np.float64]:
    """Newey-West (1987) estimate of the long-run covariance of the rows of ``moments``.

    ``Omega = G_0 + sum_{j=1..L} (1 - j / (L + 1)) (G_j + G_j')`` with
    ``G_j = 1/T sum_t y_t y_{t-j}'`` over the demeaned rows ``y_t``. ``Omega / T`` is the
    covariance of the sample mean of the rows under serial correlation; ``lags = 0`` gives the
    plain (White) covariance ``G_0``.

    Parameters
    ----------
    moments : array_like, shape [T, k] (or [T])
        One row per date, no NaN.
    lags : int or None
        Bartlett truncation lag L >= 0 (lags beyond T - 1 add nothing); None for
        `newey_west_lags` (T).

    Returns
    -------
    ndarray, shape [k, k]
        Symmetric, positive semi-definite.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, -1.0, 1.0, -1.0])
    >>> float(long_run_covariance(y, 0)[0, 0]), float(long_run_covariance(y, 1)[0, 0])
    (1.0, 0.25)
    """
    y = np.asarray(moments, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"`moments` must be a non-empty [T, k] array, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("`moments` must be finite (drop the NaN dates first)")
    lag = _check_lags(lags, y.shape[0])
    n = y.shape[0]
    y = y - y.mean(axis=0)
    omega = y.T @ y / n
    for j in range(1, min(lag, n - 1) + 1):
        gamma = y[j:].T @ y[:-j] / n  # G_j: today's row against the row j dates earlier
        omega += (1.0 - j / (lag + 1.0)) * (gamma + gamma.T)
    return omega


def _sharpe_moments(r: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Moment conditions (r - mu, r^2 - E[r^2]) and the gradient of the daily Sharpe in them.

    ``SR = mu / sqrt(g - mu^2)`` with ``g = E[r^2]`` (Lo 2002; Ledoit & Wolf 2008, section 2):
    ``dSR/dmu = g / s^3`` and ``dSR/dg = -mu / (2 s^3)`` with ``s^2 = g - mu^2``.
    """
    mu = float(r.mean())
    g = float(np.mean(r * r))
    s3 = (g - mu * mu) ** 1.5
    moments = np.column_stack([r - mu, r * r - g])  # (T, 2)
    gradient = np.array([g / s3, -mu / (2.0 * s3)])
    return moments, gradient


def _has_spread(x: NDArray[np.float64]) -> bool:
    # comparing extremes, as momentum.metrics does: a constant series has no Sharpe ratio
    return x.size >= _MIN_OBS and bool(x.max() > x.min())


def sharpe_ratio_se(
    r: ArrayLike,
    *,
    method: Literal["iid", "hac"] = "hac",
    lags: int | None = None,
    periods_per_year: float = TRADING_DAYS,
) -> float:
    """Standard error of the annualised Sharpe ratio ``momentum.metrics.sharpe_ratio(r)``.

    * ``"iid"``: Lo (2002) for IID normal returns, ``sqrt((1 + SR_d^2 / 2) / T)`` for the
      per-period Sharpe ``SR_d``, times ``sqrt(periods_per_year)``.
    * ``"hac"``: Lo (2002)'s GMM estimator for non-IID returns: the delta method on the
      moments (mean, mean square) with their Newey-West (1987) long-run covariance, so fat
      tails, skew and serial correlation all widen or narrow the error. With ``lags=0`` this
      is the IID formula for non-normal returns (skew and kurtosis terms included).

    Parameters
    ----------
    r : array_like, shape [T]
        Daily returns; NaNs are dropped.
    method : {"hac", "iid"}
    lags : int, optional
        Newey-West lag for ``"hac"``; default `newey_west_lags` (T).
    periods_per_year : float
        252 for daily returns.

    Returns
    -------
    float
        nan with fewer than 3 observations or a constant series.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0).normal(0.0005, 0.01, 2520)
    >>> sr_d = r.mean() / r.std(ddof=1)
    >>> iid = sharpe_ratio_se(r, method="iid")
    >>> bool(np.isclose(iid, np.sqrt((1 + sr_d**2 / 2) / r.size) * np.sqrt(252)))
    True
    """
    if method not in ("iid", "hac"):
        raise ValueError(f"`method` must be 'iid' or 'hac', got {method!r}")
    x = daily_series(r, "r")
    x = x[np.isfinite(x)]
    if not _has_spread(x):
        return math.nan
    per_year = math.sqrt(periods_per_year)
    if method == "iid":
        sr_d = sharpe_ratio(x, periods_per_year=1)
        return math.sqrt((1.0 + 0.5 * sr_d * sr_d) / x.size) * per_year
    moments, gradient = _sharpe_moments(x)
    omega = long_run_covariance(moments, _check_lags(lags, x.size))
    return math.sqrt(max(float(gradient @ omega @ gradient), 0.0) / x.size) * per_year


@dataclass(frozen=True)
class SharpeDifference:
    """Test of ``H0: SR_a = SR_b`` on paired daily returns (Ledoit & Wolf 2008, section 3.1).

    Attributes
    ----------
    sharpe_a, sharpe_b : float
        Annualised Sharpe ratios (`momentum.metrics.sharpe_ratio`) on the paired dates.
    difference : float
        ``sharpe_a - sharpe_b``.
    se : float
        HAC standard error of the difference (annualised, delta method).
    z : float
        ``difference / se``: how many standard errors apart the two are.
    p_value : float
        Two-sided, from the standard normal; nan (with ``se`` 0) when the two series are the
        same up to leverage, so that their Sharpe ratios cannot differ, and nan (with ``se``
        nan) with fewer than 3 dates or a constant series.
    n : int
        Paired dates used.
    lags : int
        Newey-West lag used.
    """

    sharpe_a: float
    sharpe_b: float
    difference: float
    se: float
    z: float
    p_value: float
    n: int
    lags: int


def sharpe_difference_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    lags: int | None = None,
    periods_per_year: float = TRADING_DAYS,
) -> SharpeDifference:
    """Is strategy ``a``'s Sharpe ratio different from ``b``'s on the same dates?

    Ledoit & Wolf (2008)'s HAC inference: with ``v = (mu_a, mu_b, g_a, g_b)`` the means and
    mean squares, ``Delta = f(v) = SR_a - SR_b`` and
    ``se(Delta) = sqrt(grad f' Psi grad f / T)`` where ``Psi`` is the Newey-West long-run
    covariance of the four moment series. Unlike testing each Sharpe ratio alone, this uses
    the correlation of the two strategies: two highly correlated strategies are told apart
    with much less data.

    Parameters
    ----------
    a, b : array_like, shape [T]
        Daily returns of the two strategies on the same dates; dates where either is NaN are
        dropped.
    lags : int, optional
        Newey-West lag; default `newey_west_lags` (T).
    periods_per_year : float
        252 for daily returns.

    Returns
    -------
    SharpeDifference

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> common = rng.normal(0.0, 0.01, 2000)
    >>> good = common + rng.normal(0.001, 0.005, 2000)
    >>> test = sharpe_difference_test(good, common)
    >>> test.difference > 0, test.p_value < 0.01
    (True, True)
    """
    x, y = _paired(a, b, ("a", "b"))
    lag = _check_lags(lags, x.size)
    sharpe_a = sharpe_ratio(x, periods_per_year) if x.size >= 2 else math.nan
    sharpe_b = sharpe_ratio(y, periods_per_year) if y.size >= 2 else math.nan
    difference = sharpe_a - sharpe_b
    if not (_has_spread(x) and _has_spread(y)):
        return SharpeDifference(sharpe_a, sharpe_b, difference, *(math.nan,) * 3, x.size, lag)
    moments_a, grad_a = _sharpe_moments(x)
    moments_b, grad_b = _sharpe_moments(y)
    # v = (mu_a, mu_b, g_a, g_b), the parameter vector of Ledoit & Wolf (2008)
    moments = np.column_stack([moments_a[:, 0], moments_b[:, 0], moments_a[:, 1], moments_b[:, 1]])
    gradient = np.array([grad_a[0], -grad_b[0], grad_a[1], -grad_b[1]])
    psi = long_run_covariance(moments, lag)
    variance = float(gradient @ psi @ gradient)
    # each Sharpe's own variance: a difference variance at rounding level of these means the
    # two return series are the same up to scale, and no test is possible
    own = float(gradient[[0, 2]] @ psi[np.ix_([0, 2], [0, 2])] @ gradient[[0, 2]]) + float(
        gradient[[1, 3]] @ psi[np.ix_([1, 3], [1, 3])] @ gradient[[1, 3]]
    )
    if not variance > 1e-12 * own:
        return SharpeDifference(
            sharpe_a, sharpe_b, difference, 0.0, math.nan, math.nan, x.size, lag
        )
    se = math.sqrt(variance / x.size) * math.sqrt(periods_per_year)
    z = difference / se
    p_value = float(2.0 * scipy.stats.norm.sf(abs(z)))
    return SharpeDifference(sharpe_a, sharpe_b, difference, se, z, p_value, x.size, lag)


@dataclass(frozen=True)
class Regression:
    """OLS of a strategy's daily returns on a market's: ``r_t = alpha + beta m_t + e_t``.

    Attributes
    ----------
    alpha : float
        Annualised intercept, ``252 * alpha_daily``.
    beta : float
    alpha_se, beta_se : float
        Standard errors (``alpha_se`` annualised like ``alpha``).
    alpha_t : float
        ``alpha / alpha_se``.
    r_squared : float
    n : int
        Dates used (both series finite).
    lags : int or None
        Newey-West lag of the HAC errors; None for classical OLS errors.
    """

    alpha: float
    beta: float
    alpha_se: float
    beta_se: float
    alpha_t: float
    r_squared: float
    n: int
    lags: int | None


def alpha_beta(
    r: ArrayLike,
    market: ArrayLike,
    *,
    hac: bool = True,
    lags: int | None = None,
    periods_per_year: float = TRADING_DAYS,
) -> Regression:
    """Jensen's alpha and the market beta of daily returns, with HAC or OLS standard errors.

    The coefficients are ordinary least squares. With ``hac=True`` their covariance is the
    Newey-West (1987) sandwich ``(X'X)^-1 (T Omega) (X'X)^-1``, ``Omega`` the long-run
    covariance of ``x_t e_t``; with ``hac=False`` it is the classical ``s^2 (X'X)^-1``.

    Parameters
    ----------
    r, market : array_like, shape [T]
        Daily returns of the strategy and of the market over the same intervals; dates where
        either is NaN are dropped.
    hac : bool
        Newey-West errors (default) or classical OLS errors.
    lags : int, optional
        Newey-West lag; default `newey_west_lags` (T).
    periods_per_year : float
        Annualises alpha and its error.

    Returns
    -------
    Regression
        All nan with fewer than 3 dates or a constant market.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.random.default_rng(2).normal(0.0, 0.01, 500)
    >>> fit = alpha_beta(0.0001 + 0.5 * m, m)
    >>> round(fit.alpha, 6), round(fit.beta, 6)
    (0.0252, 0.5)
    """
    y, m = _paired(r, market, ("r", "market"))
    n = y.size
    lag = _check_lags(lags, n) if hac else None
    if not _has_spread(m):
        return Regression(*(math.nan,) * 6, n, lag)
    design = np.column_stack([np.ones(n), m])  # (T, 2): intercept, market
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    inverse = np.linalg.inv(design.T @ design)
    if hac:
        assert lag is not None
        meat = n * long_run_covariance(design * residual[:, None], lag)
        covariance = inverse @ meat @ inverse
    else:
        covariance = inverse * float(residual @ residual) / (n - 2)
    se = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    total = float(np.sum((y - y.mean()) ** 2))
    unexplained = float(residual @ residual)
    r_squared = 1.0 - unexplained / total if total > 0 else math.nan
    alpha, alpha_se = coef[0] * periods_per_year, se[0] * periods_per_year
    # an exact fit (the market regressed on itself) leaves rounding noise as the error, and
    # alpha / noise is no t-statistic
    exact = unexplained <= 1e-20 * max(total, float(y @ y))
    alpha_t = alpha / alpha_se if alpha_se > 0 and not exact else math.nan
    return Regression(
        float(alpha), float(coef[1]), float(alpha_se), float(se[1]), alpha_t, r_squared, n, lag
    )


@dataclass(frozen=True)
class SignalRegression:
    """Pooled OLS of next-day asset returns on a signal: ``r_{i,t+1} = a + b s_{i,t} + e``.

    Attributes
    ----------
    slope : float
        ``b``, return per unit of signal.
    intercept : float
        ``a``, daily.
    slope_se : float
        Classical OLS standard error of ``b``, ``sqrt(s^2 / sum (s_i - mean s)^2)`` with
        ``s^2`` the residual variance on ``n - 2`` degrees of freedom.
    t : float
        ``slope / slope_se``, Boutier (2023)'s "T-statistic of the signal".
    r_squared : float
        Boutier (2023)'s "R²": the share of the returns' variance the signal explains.
    n : int
        (date, asset) pairs used (signal and return both finite).
    """

    slope: float
    intercept: float
    slope_se: float
    t: float
    r_squared: float
    n: int


def signal_regression(signal: ArrayLike, next_return: ArrayLike) -> SignalRegression:
    """Boutier (2023)'s R² and t-statistic of a signal: pooled OLS of next-day returns on it.

    The paper's definition (appendix, "Metrics to assess the performance of a long short
    strategy"): the coefficient of determination of "the regression between the model's
    predicted signals for each stock and their subsequent returns", and the t-statistic of
    the signal in that regression. Every (date, asset) pair is one observation: the panels
    are flattened, pairs where either value is NaN dropped, and ``r = a + b s + e`` fitted by
    ordinary least squares with the classical standard error of ``b``.

    That standard error treats the pairs as independent. They are not: the returns of one
    date move together across assets (the market, sectors), and a signal that persists from
    day to day repeats the same bet, so the effective number of observations is far below
    ``n`` and the t-statistic overstates the significance of the signal (|t| > 1.96 is not
    a 5% test here). Clustered or Newey-West errors, or the t-statistic of the daily
    cross-sectional slopes (Fama-MacBeth), would be honest; this function gives the paper's
    figure, to compare with its Table 3.

    Parameters
    ----------
    signal : array_like
        The signal decided at the close of t, e.g. a [T, N] panel of a model's outputs.
    next_return : array_like, same shape as ``signal``
        Each asset's return over (t, t+1].

    Returns
    -------
    SignalRegression
        Slope, its error, t and R² are nan with fewer than 3 pairs or a constant signal; t
        is nan for an exact fit.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.stats
    >>> rng = np.random.default_rng(3)
    >>> s = rng.normal(0.0, 1.0, (250, 20))
    >>> r = 0.001 * s + rng.normal(0.0, 0.02, (250, 20))
    >>> fit = signal_regression(s, r)
    >>> ols = scipy.stats.linregress(s.ravel(), r.ravel())
    >>> bool(np.isclose(fit.t, ols.slope / ols.stderr))
    True
    >>> bool(np.isclose(fit.r_squared, ols.rvalue**2))
    True
    """
    try:
        x = np.asarray(signal, dtype=np.float64)
        y = np.asarray(next_return, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`signal` and `next_return` must be numeric arrays: {exc}") from exc
    if x.shape != y.shape:
        raise ValueError(
            f"`signal` and `next_return` must have the same shape, got {x.shape} and {y.shape}"
        )
    for name, values in (("signal", x), ("next_return", y)):
        if np.isinf(values).any():
            raise ValueError(f"`{name}` contains an infinite value")
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]  # (n,): one pair per (date, asset)
    n = x.size
    if not _has_spread(x):
        intercept = float(y.mean()) if n else math.nan
        return SignalRegression(math.nan, intercept, math.nan, math.nan, math.nan, n)
    dx, dy = x - x.mean(), y - y.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ dy) / sxx
    intercept = float(y.mean()) - slope * float(x.mean())
    residual = dy - slope * dx
    unexplained = float(residual @ residual)
    total = float(dy @ dy)
    r_squared = 1.0 - unexplained / total if total > 0 else math.nan
    slope_se = math.sqrt(unexplained / (n - 2) / sxx)
    # an exact fit leaves rounding noise as the error, and slope / noise is no t-statistic
    exact = unexplained <= 1e-20 * max(total, float(y @ y))
    t = slope / slope_se if slope_se > 0 and not exact else math.nan
    return SignalRegression(slope, intercept, slope_se, t, r_squared, n)
