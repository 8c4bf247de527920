"""Performance metrics over a daily return series, as reported in the seed papers.

Every metric is a pure function of a 1-D array of *daily* simple returns
(shape ``[T]``; numpy array, list or ``pandas.Series``). NaNs are dropped first
(inactive dates), so ``metric(r) == metric(r[~isnan(r)])``; infinities are an
error. A metric that is undefined for the data (empty series, fewer than 2
observations for a standard deviation, a zero denominator) is ``nan``.

Annualisation uses ``TRADING_DAYS = 252``, defined here once and imported by
everything else (portfolio vol scaling, the Sharpe training loss):

* E[Return] = mean * 252 (arithmetic, as in the papers' tables, not the CAGR);
* Vol = std(ddof=1) * sqrt(252);
* Sharpe = mean / std(ddof=1) * sqrt(252), zero risk-free rate. This is the one
  Sharpe definition of the project; the training loss uses the same formula.

The column names match the tables of Lim et al. (2019) and Tan, Roberts &
Zohren (2023) (``PAPER_COLUMNS``) plus the extra statistics of Boutier (2023)
(``EXTRA_COLUMNS``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Real

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EXTRA_COLUMNS",
    "PAPER_COLUMNS",
    "TRADING_DAYS",
    "TURNOVER_COLUMN",
    "annual_return",
    "annual_volatility",
    "bias_bps",
    "calmar_ratio",
    "daily_series",
    "downside_deviation",
    "hit_rate",
    "kurtosis",
    "max_drawdown",
    "performance",
    "performance_table",
    "profit_loss_ratio",
    "sharpe_ratio",
    "skewness",
    "sortino_ratio",
    "t_statistic",
    "tail_ratio",
    "to_csv",
    "to_markdown",
]

TRADING_DAYS = 252
"""Trading days per year used to annualise every daily quantity in the project."""

PAPER_COLUMNS: tuple[str, ...] = (
    "E[Return]",
    "Vol",
    "Downside Deviation",
    "MDD",
    "Sharpe",
    "Sortino",
    "Calmar",
    "Hit Rate",
    "Avg P / Avg L",
)
EXTRA_COLUMNS: tuple[str, ...] = ("Skew", "Kurtosis", "Tail Ratio", "Bias (bps)", "t-stat")
TURNOVER_COLUMN = "Turnover"

_SQRT_YEAR = math.sqrt(TRADING_DAYS)


# ------------------------------------------------------------------- helpers


def daily_series(r: ArrayLike, name: str = "r") -> NDArray[np.float64]:
    """``r`` as a 1-D float64 array of daily returns, NaNs kept; raise on a wrong shape or an
    infinity, naming `name` (and the position)."""
    try:
        arr = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be numeric daily returns: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D series of daily returns, got shape {arr.shape}")
    infinite = np.isinf(arr)
    if infinite.any():
        raise ValueError(
            f"`{name}` contains an infinite value at position {int(np.argmax(infinite))}"
        )
    return arr


def _clean(r: ArrayLike, name: str = "r") -> NDArray[np.float64]:
    """`daily_series` with NaNs dropped."""
    arr = daily_series(r, name)
    return arr[~np.isnan(arr)]


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or nan when the ratio is undefined."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def _std(x: NDArray[np.float64]) -> float:
    """Sample std (ddof=1); nan below 2 points; exactly 0 for a constant series.

    Comparing the extremes avoids the ~1e-18 residue ``np.std`` can leave on
    identical values, which would turn an undefined ratio into ~1e15.
    """
    if x.size < 2:
        return math.nan
    if x.max() == x.min():
        return 0.0
    return float(np.std(x, ddof=1))


# ------------------------------------------------------------------- metrics


def annual_return(r: ArrayLike) -> float:
    """Annualised arithmetic mean return, ``mean(r) * 252`` (the papers' E[Return]).

    Parameters
    ----------
    r : array_like, shape [T]
        Daily simple returns.

    Returns
    -------
    float

    Examples
    --------
    >>> round(annual_return([0.01, -0.02, 0.03]), 12)
    1.68
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    return float(np.mean(x)) * TRADING_DAYS


def annual_volatility(r: ArrayLike) -> float:
    """Annualised volatility, ``std(r, ddof=1) * sqrt(252)``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan with fewer than 2 observations.
    """
    return _std(_clean(r)) * _SQRT_YEAR


def downside_deviation(r: ArrayLike) -> float:
    """Annualised downside deviation below 0, ``sqrt(mean(min(r, 0)^2)) * sqrt(252)``.

    The mean runs over *all* days (gains contribute 0), as in
    ``empyrical.downside_risk(r, required_return=0)``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    losses = np.minimum(x, 0.0)
    return math.sqrt(float(np.mean(losses * losses))) * _SQRT_YEAR


def max_drawdown(r: ArrayLike) -> float:
    """Maximum drawdown as a positive fraction of the running peak.

    ``max_t 1 - V_t / max_{s<=t} V_s`` with ``V = cumprod(1 + r)`` compounded and
    the starting capital ``V = 1`` counted as a peak, so a first-day loss is a
    drawdown. Same value as ``-empyrical.max_drawdown(r)``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        0 for a path that never falls below its peak.

    Examples
    --------
    >>> round(max_drawdown([0.1, 0.1, -0.2, -0.1, 0.5]), 12)  # peak 1.21, trough 0.8712
    0.28
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + x)))
    peak = np.maximum.accumulate(wealth)
    return float(np.max(1.0 - wealth / peak))


def sharpe_ratio(r: ArrayLike, periods_per_year: float = TRADING_DAYS) -> float:
    """Annualised Sharpe ratio, ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)``.

    Zero risk-free rate (the papers' convention for futures and for excess
    returns). This is the project's single Sharpe definition.

    Parameters
    ----------
    r : array_like, shape [T]
        Returns at frequency ``periods_per_year``.
    periods_per_year : float
        252 for daily returns.

    Returns
    -------
    float
        nan with fewer than 2 observations or zero dispersion.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([0.01, -0.02, 0.03])
    >>> bool(np.isclose(sharpe_ratio(r), r.mean() / r.std(ddof=1) * np.sqrt(252)))
    True
    """
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, Real):
        raise ValueError(f"`periods_per_year` must be a number, got {periods_per_year!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"`periods_per_year` must be positive, got {periods_per_year}")
    x = _clean(r)
    if x.size < 2:
        return math.nan
    return _ratio(float(np.mean(x)), _std(x)) * math.sqrt(periods_per_year)


def sortino_ratio(r: ArrayLike) -> float:
    """Sortino ratio, ``annual_return(r) / downside_deviation(r)``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan when there is no loss (zero downside deviation).
    """
    return _ratio(annual_return(r), downside_deviation(r))


def calmar_ratio(r: ArrayLike) -> float:
    """Calmar ratio as in the seed papers, ``annual_return(r) / max_drawdown(r)``.

    The numerator is the *arithmetic* annualised mean (E[Return]), as in the
    papers' tables (e.g. a Long Only row with E[Return] 0.068 and MDD 0.235 has
    Calmar about 0.29). ``empyrical.calmar_ratio`` instead divides the compounded
    annual growth rate (CAGR) by the drawdown, so the two differ whenever the
    mean and the CAGR do (always, for a volatile series).

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan when there is no drawdown.

    Examples
    --------
    >>> round(calmar_ratio([0.01, -0.02, 0.03]), 9)  # 1.68 / 0.02
    84.0
    """
    return _ratio(annual_return(r), max_drawdown(r))


def hit_rate(r: ArrayLike) -> float:
    """Fraction of days with a strictly positive return (zero-return days count as misses).

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        In [0, 1]; nan for an empty series.
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    return float(np.count_nonzero(x > 0)) / x.size


def profit_loss_ratio(r: ArrayLike) -> float:
    """Average gain over average loss, ``mean(r[r>0]) / |mean(r[r<0])|`` ("Avg P / Avg L").

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan when there is no gain or no loss.

    Examples
    --------
    >>> round(profit_loss_ratio([0.01, -0.02, 0.03]), 12)
    1.0
    """
    x = _clean(r)
    gains, losses = x[x > 0], x[x < 0]
    if gains.size == 0 or losses.size == 0:
        return math.nan
    return float(np.mean(gains)) / abs(float(np.mean(losses)))


def _scipy_moment(x: NDArray[np.float64], which: str) -> float:
    """Bias-corrected skew or excess kurtosis; nan where scipy flags precision loss."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if which == "skew":
            value = float(scipy.stats.skew(x, bias=False))
        else:
            value = float(scipy.stats.kurtosis(x, fisher=True, bias=False))
    # scipy warns (and may return noise) when the data are (nearly) identical
    if any(issubclass(w.category, RuntimeWarning) for w in caught):
        return math.nan
    return value


def skewness(r: ArrayLike) -> float:
    """Sample skewness, bias-corrected (``scipy.stats.skew(r, bias=False)``, the G1 estimator).

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan with fewer than 3 observations or (nearly) constant data.
    """
    x = _clean(r)
    if x.size < 3 or x.max() == x.min():
        return math.nan
    return _scipy_moment(x, "skew")


def kurtosis(r: ArrayLike) -> float:
    """Sample *excess* kurtosis, bias-corrected (``scipy.stats.kurtosis(r, fisher=True, bias=False)``).

    A normal distribution scores 0.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan with fewer than 4 observations or (nearly) constant data.
    """
    x = _clean(r)
    if x.size < 4 or x.max() == x.min():
        return math.nan
    return _scipy_moment(x, "kurtosis")


def tail_ratio(r: ArrayLike) -> float:
    """Right over left tail, ``|95th percentile| / |5th percentile|`` (as ``empyrical.tail_ratio``).

    Percentiles use numpy's default linear interpolation. Below 1, losses in
    the tail are larger than gains.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan for an empty series or a zero 5th percentile.
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    upper, lower = np.percentile(x, [95.0, 5.0])
    return _ratio(abs(float(upper)), abs(float(lower)))


def bias_bps(r: ArrayLike) -> float:
    """Mean daily return in basis points (Boutier 2023's "bias"), ``mean(r) * 1e4``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
    """
    x = _clean(r)
    if x.size == 0:
        return math.nan
    return float(np.mean(x)) * 1e4


def t_statistic(r: ArrayLike) -> float:
    """t-statistic of the mean daily return, ``mean / (std(ddof=1) / sqrt(n))``.

    Parameters
    ----------
    r : array_like, shape [T]

    Returns
    -------
    float
        nan with fewer than 2 observations or zero dispersion.
    """
    x = _clean(r)
    if x.size < 2:
        return math.nan
    return _ratio(float(np.mean(x)), _std(x) / math.sqrt(x.size))


# -------------------------------------------------------------------- tables

_METRICS: dict[str, Callable[[ArrayLike], float]] = {
    "E[Return]": annual_return,
    "Vol": annual_volatility,
    "Downside Deviation": downside_deviation,
    "MDD": max_drawdown,
    "Sharpe": sharpe_ratio,
    "Sortino": sortino_ratio,
    "Calmar": calmar_ratio,
    "Hit Rate": hit_rate,
    "Avg P / Avg L": profit_loss_ratio,
    "Skew": skewness,
    "Kurtosis": kurtosis,
    "Tail Ratio": tail_ratio,
    "Bias (bps)": bias_bps,
    "t-stat": t_statistic,
}
assert tuple(_METRICS) == PAPER_COLUMNS + EXTRA_COLUMNS


def performance(r: ArrayLike, turnover: ArrayLike | None = None) -> dict[str, float]:
    """All metrics of one daily return series, keyed by table column.

    Parameters
    ----------
    r : array_like, shape [T]
        Daily returns (e.g. ``portfolio_returns(captured)`` or net returns).
    turnover : array_like, shape [T], optional
        Daily portfolio turnover, e.g. ``portfolio_returns(turnover_panel)``
        (the 1/N_t average of per-asset turnover). Its NaN-free mean is added
        under ``"Turnover"``.

    Returns
    -------
    dict[str, float]
        Keys ``PAPER_COLUMNS + EXTRA_COLUMNS`` in that order, then ``"Turnover"``
        when ``turnover`` is given.
    """
    x = _clean(r)
    out = {column: float(metric(x)) for column, metric in _METRICS.items()}
    if turnover is not None:
        to = _clean(turnover, "turnover")
        out[TURNOVER_COLUMN] = float(np.mean(to)) if to.size else math.nan
    return out


def performance_table(
    series: Mapping[str, ArrayLike],
    rescale: bool = False,
    columns: Sequence[str] = PAPER_COLUMNS,
) -> pd.DataFrame:
    """One row of metrics per named daily return series, in the mapping's order.

    Parameters
    ----------
    series : Mapping[str, array_like of shape [T]]
        Strategy name -> daily returns (lengths may differ).
    rescale : bool
        Apply ``portfolio.rescale_to_target_vol`` (ex-post, 15% a year) to each
        series first, as in the papers' "rescaled" tables.
    columns : sequence of str
        Columns to report, from ``PAPER_COLUMNS + EXTRA_COLUMNS``.

    Returns
    -------
    pandas.DataFrame, shape [len(series), len(columns)]
        Index named ``"Strategy"``.
    """
    # imported here because portfolio imports TRADING_DAYS from this module
    from momentum.portfolio import rescale_to_target_vol

    if isinstance(columns, str):
        raise ValueError(
            f"`columns` must be a sequence of column names, got the string {columns!r}"
        )
    unknown = [c for c in columns if c not in _METRICS]
    if unknown:
        raise ValueError(f"`columns` has unknown names {unknown}; choose from {list(_METRICS)}")
    rows = []
    for name, returns in series.items():
        try:
            x = _clean(returns)
            if rescale:
                x = rescale_to_target_vol(x)
        except ValueError as exc:
            raise ValueError(f"series {name!r}: {exc}") from exc
        rows.append([float(_METRICS[c](x)) for c in columns])
    index = pd.Index(list(series.keys()), name="Strategy")
    return pd.DataFrame(rows, index=index, columns=list(columns), dtype=np.float64)


def _format_cell(value: object, digits: int) -> str:
    if isinstance(value, Real) and not isinstance(value, bool):
        v = float(value)
        if math.isnan(v):
            return "nan"
        text = f"{v:.{digits}f}"
        # "-0.000" reads as a sign that is not there
        return f"{0.0:.{digits}f}" if float(text) == 0 else text
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """Render a metrics table as a GitHub pipe table (no ``tabulate`` needed).

    Parameters
    ----------
    table : pandas.DataFrame
        E.g. the output of :func:`performance_table`; the index is the first column.
    digits : int
        Decimal places for numbers; NaN prints as ``nan``.

    Returns
    -------
    str
        Header line, alignment line (numbers right-aligned), one line per row,
        trailing newline.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"Sharpe": [1.23456]}, index=pd.Index(["LSTM"], name="Strategy"))
    >>> print(to_markdown(t, digits=2), end="")
    | Strategy | Sharpe |
    |:---|---:|
    | LSTM | 1.23 |
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"`table` must be a pandas DataFrame, got {type(table).__name__}")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ValueError(f"`digits` must be a non-negative integer, got {digits!r}")
    header = [str(table.index.name or ""), *(str(c) for c in table.columns)]
    lines = [
        "| " + " | ".join(_escape(h) for h in header) + " |",
        "|:---|" + "---:|" * len(table.columns),
    ]
    for label, row in zip(table.index, table.itertuples(index=False), strict=True):
        cells = [str(label), *(_format_cell(v, digits) for v in row)]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    """Render a metrics table as CSV text at full float precision (index as first column).

    Parameters
    ----------
    table : pandas.DataFrame

    Returns
    -------
    str
        ``\\n``-terminated lines, header first.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"`table` must be a pandas DataFrame, got {type(table).__name__}")
    return table.to_csv(lineterminator="\n")
