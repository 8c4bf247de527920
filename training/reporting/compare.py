"""Does a model beat the benchmarks? Standard errors, tests, per-asset and market views.

Every test here runs on one daily series per strategy: the seed-averaged portfolio return
(`training.reporting.tables.seed_mean`), whose Sharpe ratio can exceed the mean over seeds of
the per-seed Sharpe ratios the papers' table prints (averaging seeds diversifies). The
formulas are in `momentum.significance` (Lo 2002; Ledoit & Wolf 2008; Newey & West 1987) and
`scipy.stats` (Wilcoxon signed-rank, Kolmogorov-Smirnov); this module arranges them into
tables and sentences. Part of `training.report`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from momentum.data import load_index
from momentum.metrics import sharpe_ratio
from momentum.significance import (
    SharpeDifference,
    alpha_beta,
    sharpe_difference_test,
    sharpe_ratio_se,
)
from training.reporting.runs import Strategy, asset_returns

__all__ = [
    "COMPARED_BENCHMARKS",
    "LEVEL",
    "Market",
    "ROLLING_WINDOW",
    "alpha_beta_table",
    "asset_sharpes",
    "asset_sharpe_table",
    "asset_test_table",
    "difference_table",
    "index_returns",
    "market_for",
    "rolling_correlation",
    "sharpe_se_table",
    "sharpe_tests",
    "verdict",
]

COMPARED_BENCHMARKS: tuple[str, ...] = ("long_only", "tsmom")
"""Benchmarks every model is tested against, by their name in ``benchmarks.parquet``."""
LEVEL = 0.05
"""Two-sided significance level of the verdicts."""
ROLLING_WINDOW = 252
"""Sessions in the rolling correlation window (one year, STMOM Fig. 3)."""


# ---------------------------------------------------------------------------------------------
# Sharpe ratios: standard errors and differences
# ---------------------------------------------------------------------------------------------


def sharpe_se_table(mean_returns: Mapping[str, NDArray[np.float64]]) -> pd.DataFrame:
    """Each strategy's Sharpe ratio with Lo (2002)'s IID and HAC standard errors.

    Returns
    -------
    pandas.DataFrame, shape [strategies, 5]
        ``Sharpe``, ``SE (IID)``, ``SE (HAC)``, ``t (HAC)`` = Sharpe / SE (HAC), ``Days``.
    """
    rows = []
    for returns in mean_returns.values():
        sharpe = sharpe_ratio(returns)
        hac = sharpe_ratio_se(returns, method="hac")
        rows.append(
            [
                sharpe,
                sharpe_ratio_se(returns, method="iid"),
                hac,
                sharpe / hac if hac > 0 else math.nan,
                int(np.isfinite(returns).sum()),
            ]
        )
    index = pd.Index(list(mean_returns), name="Strategy")
    frame = pd.DataFrame(
        rows, index=index, columns=["Sharpe", "SE (IID)", "SE (HAC)", "t (HAC)", "Days"]
    )
    return frame.astype({"Days": np.int64})


def sharpe_tests(
    mean_returns: Mapping[str, NDArray[np.float64]],
    models: Sequence[str],
    benchmarks: Sequence[str],
) -> dict[tuple[str, str], SharpeDifference]:
    """Ledoit & Wolf (2008) HAC test of each model's Sharpe ratio against each benchmark's."""
    return {
        (model, bench): sharpe_difference_test(mean_returns[model], mean_returns[bench])
        for model in models
        for bench in benchmarks
    }


def difference_table(tests: Mapping[tuple[str, str], SharpeDifference]) -> pd.DataFrame:
    """One row per (model, benchmark) test, indexed ``"model vs benchmark"``."""
    rows = [
        [t.sharpe_a, t.sharpe_b, t.difference, t.se, t.z, t.p_value, t.n, t.lags]
        for t in tests.values()
    ]
    index = pd.Index([f"{m} vs {b}" for m, b in tests], name="Comparison")
    columns = ["Sharpe", "Benchmark Sharpe", "Difference", "SE", "Std errors", "p-value"]
    frame = pd.DataFrame(rows, index=index, columns=[*columns, "Days", "Lags"])
    return frame.astype({"Days": np.int64, "Lags": np.int64})


def verdict(model: str, benchmark: str, test: SharpeDifference, level: float = LEVEL) -> str:
    """One plain sentence: does ``model`` beat ``benchmark``, and by how many standard errors.

    Examples
    --------
    >>> t = SharpeDifference(0.9, 0.4, 0.5, 0.2, 2.5, 0.0124, 2520, 8)
    >>> verdict("slp", "tsmom", t)
    'slp beats tsmom: Sharpe 0.90 vs 0.40, higher by 0.50 = 2.5 standard errors (p = 0.012).'
    >>> verdict("slp", "long_only", SharpeDifference(0.1, 0.9, -0.8, 0.1, -8.0, 1e-15, 2520, 8))
    'slp does not beat long_only; it is significantly worse: Sharpe 0.10 vs 0.90, lower by 0.80 = 8.0 standard errors (p < 0.001).'
    """
    head = f"Sharpe {test.sharpe_a:.2f} vs {test.sharpe_b:.2f}"
    if not math.isfinite(test.z):
        why = (
            "identical returns up to leverage"
            if test.se == 0
            else "too few dates or a constant series"
        )
        return f"{model} cannot be tested against {benchmark} ({why}): {head}."
    side = "higher" if test.difference >= 0 else "lower"
    p = "p < 0.001" if test.p_value < 0.001 else f"p = {test.p_value:.3f}"
    gap = f"{side} by {abs(test.difference):.2f} = {abs(test.z):.1f} standard errors ({p})"
    if test.p_value < level and test.difference > 0:
        return f"{model} beats {benchmark}: {head}, {gap}."
    if test.p_value < level:
        return f"{model} does not beat {benchmark}; it is significantly worse: {head}, {gap}."
    return (
        f"{model} does not beat {benchmark} at the {level:.0%} level: {head}, {gap}; "
        "the difference is within noise."
    )


# ---------------------------------------------------------------------------------------------
# per-asset Sharpe ratios (QuantNet Table 1: median and MAD over assets)
# ---------------------------------------------------------------------------------------------


def asset_sharpes(strategies: Sequence[Strategy]) -> dict[str, pd.Series]:
    """Each strategy's per-asset Sharpe ratio at 0 bps (seed-averaged returns), by ticker."""
    out = {}
    for s in strategies:
        frame = asset_returns(s)
        out[s.name] = pd.Series(
            [sharpe_ratio(frame[t].to_numpy()) for t in frame.columns],
            index=frame.columns,
            dtype=np.float64,
        )
    return out


def asset_sharpe_table(sharpes: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Median and mean absolute deviation (about the mean) of the per-asset Sharpe ratios.

    QuantNet (Koshiyama et al. 2021) Table 1 prints "median and mean absolute deviation" over
    assets; the share of assets with a positive Sharpe is added.
    """
    rows = []
    for values in sharpes.values():
        x = values.to_numpy()
        x = x[np.isfinite(x)]
        if x.size == 0:
            rows.append([math.nan, math.nan, math.nan, 0])
            continue
        mad = float(np.mean(np.abs(x - x.mean())))
        rows.append([float(np.median(x)), mad, float(np.mean(x > 0)), x.size])
    index = pd.Index(list(sharpes), name="Strategy")
    return pd.DataFrame(rows, index=index, columns=["Median", "MAD", "Share > 0", "Assets"])


def _quiet(test: Callable[..., Any], *args: NDArray[np.float64]) -> tuple[float, float]:
    """``(statistic, p-value)`` of a scipy test; nan where scipy finds it undefined."""
    with warnings.catch_warnings():
        # scipy warns (and returns nan) on degenerate input such as all-zero differences;
        # the nan says so in the table
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            result = test(*args)
        except ValueError:
            return math.nan, math.nan
    return float(result.statistic), float(result.pvalue)


def asset_test_table(
    sharpes: Mapping[str, pd.Series], models: Sequence[str], benchmarks: Sequence[str]
) -> pd.DataFrame:
    """Wilcoxon signed-rank and two-sample Kolmogorov-Smirnov tests of per-asset Sharpes.

    For each model and benchmark, the assets both hold with a finite Sharpe ratio are paired
    by ticker. The Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) asks whether the
    per-asset differences are centred on zero; the Kolmogorov-Smirnov test
    (``scipy.stats.ks_2samp``) whether the two distributions differ at all (QuantNet,
    section 4.2). All differences zero: nan.
    """
    rows = []
    for model in models:
        for bench in benchmarks:
            pair = pd.concat([sharpes[model], sharpes[bench]], axis=1, join="inner").dropna()
            a, b = pair.iloc[:, 0].to_numpy(), pair.iloc[:, 1].to_numpy()
            diff = a - b
            if diff.size and np.any(diff != 0):
                w, w_p = _quiet(scipy.stats.wilcoxon, diff)
            else:
                w, w_p = math.nan, math.nan
            ks, ks_p = _quiet(scipy.stats.ks_2samp, a, b) if diff.size else (math.nan,) * 2
            median_diff = float(np.median(diff)) if diff.size else math.nan
            rows.append([len(diff), median_diff, w, w_p, ks, ks_p])
    index = pd.Index([f"{m} vs {b}" for m in models for b in benchmarks], name="Comparison")
    columns = ["Assets", "Median difference", "Wilcoxon W", "Wilcoxon p", "KS D", "KS p"]
    return pd.DataFrame(rows, index=index, columns=columns)


# ---------------------------------------------------------------------------------------------
# rolling correlation and the market regression
# ---------------------------------------------------------------------------------------------


def rolling_correlation(
    dates: pd.DatetimeIndex,
    mean_returns: Mapping[str, NDArray[np.float64]],
    names: Sequence[str],
    against: str,
    window: int = ROLLING_WINDOW,
) -> pd.DataFrame:
    """Correlation of each named strategy's daily return with ``against``'s, over the last
    ``window`` sessions (STMOM Fig. 3, right: 1-year rolling correlations of the SLP).

    Returns
    -------
    pandas.DataFrame, shape [T_common, len(names)]
        Index ``dates``; NaN until a full window of dates with both returns.
    """
    base = pd.Series(mean_returns[against], index=dates)
    out = {
        name: pd.Series(mean_returns[name], index=dates)
        .rolling(window, min_periods=window)
        .corr(base)
        for name in names
    }
    frame = pd.DataFrame(out, index=dates, columns=list(names))
    frame.index.name = "date"
    return frame


def index_returns(level: pd.Series, dates: pd.DatetimeIndex) -> NDArray[np.float64]:
    """The index's simple return over (t, t+1] for each report date t.

    A strategy's row t is earned over (t, t+1] (a position decided at the close of t), so
    the index return paired with it is ``I_{t'} / I_t - 1`` with t' the index's next date.

    Returns
    -------
    ndarray, shape [len(dates)]
        NaN where ``dates`` has a date the index lacks, and on the index's last date.
    """
    clean = level.dropna().sort_index()
    forward = (clean.shift(-1) / clean - 1.0).to_numpy()
    position = pd.DatetimeIndex(clean.index).get_indexer(dates)
    out = np.full(len(dates), np.nan)
    found = position >= 0
    out[found] = forward[position[found]]
    return out


@dataclass(frozen=True)
class Market:
    """The market series of the alpha / beta table and a sentence saying what it is."""

    returns: NDArray[np.float64]  # [T_common], earned over (t, t+1]
    name: str
    description: str


def alpha_beta_table(
    mean_returns: Mapping[str, NDArray[np.float64]], market: NDArray[np.float64]
) -> pd.DataFrame:
    """OLS alpha (annualised) and beta of each strategy on the market, Newey-West errors."""
    rows = []
    for returns in mean_returns.values():
        fit = alpha_beta(returns, market)
        rows.append(
            [fit.alpha, fit.alpha_se, fit.alpha_t, fit.beta, fit.beta_se, fit.r_squared, fit.n]
        )
    index = pd.Index(list(mean_returns), name="Strategy")
    columns = ["Alpha", "Alpha SE", "Alpha t", "Beta", "Beta SE", "R^2", "Days"]
    return pd.DataFrame(rows, index=index, columns=columns)


# proxies for the market when the data ship no index level, best first
_MARKET_PROXIES = {
    "buy_and_hold": "the equal-weight buy-and-hold portfolio of the same assets "
    "(the `buy_and_hold` benchmark)",
    "long_only": "the equal-risk long-only portfolio of the same assets "
    "(the `long_only` benchmark, each asset vol-scaled to 15%)",
}


def market_for(
    data: object,
    given: pd.Series | None,
    dates: pd.DatetimeIndex,
    mean_returns: Mapping[str, NDArray[np.float64]],
) -> Market | None:
    """The market of the alpha / beta table: ``given``, the embedded S&P 500, or a proxy.

    Parameters
    ----------
    data : object
        The first run's ``config["data"]``; ``"sp500"`` selects the embedded S&P 500 level
        (`momentum.data.load_index`).
    given : pandas.Series, optional
        An index level by date, used as is when given.
    dates : pandas.DatetimeIndex
        The report's dates.
    mean_returns : mapping
        Seed-averaged daily returns; the fallback proxy is taken from here.

    Returns
    -------
    Market or None
        None when there is neither an index nor a long-only benchmark.
    """
    if given is not None:
        name = str(given.name or "index")
        return Market(
            index_returns(given, dates), name, f"The market is the given index level `{name}`."
        )
    if data == "sp500":
        return Market(
            index_returns(load_index("sp500"), dates),
            "S&P 500",
            "The market is the S&P 500 index level shipped with the embedded `sp500` data "
            "(price index, no dividends).",
        )
    for proxy, what in _MARKET_PROXIES.items():
        if proxy in mean_returns:
            return Market(
                mean_returns[proxy],
                proxy,
                f"These runs' data (`{data}`) come with no index level, so **the market here is "
                f"not the S&P 500** but {what}.",
            )
    return None
