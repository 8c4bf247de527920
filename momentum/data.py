"""Daily price panels: file loaders, validation, embedded data and a synthetic generator.

Every price panel in the project follows one contract: a wide
``pandas.DataFrame`` of positive, finite adjusted closes (``float64``) whose index is a
tz-naive ``DatetimeIndex`` named ``date`` (midnight, strictly increasing, unique) and whose
columns are ticker strings (column index named ``ticker``). NaN appears only before an asset
starts trading or after it stops; short interior gaps are forward-filled, long ones rejected.

:func:`load_prices` reads the embedded dataset or a CSV / Parquet file in wide layout (a date
column and one column per ticker) or long layout (columns ``date, ticker, close``) and passes
it through :func:`validate_prices`, which the service also calls on in-memory frames. Every
problem raises :class:`PriceDataError` with a message that names the file, the row and/or
date and the ticker, e.g. ``prices.csv: row 4 (date 2020-01-06), ticker MSFT: close -1.0 is
not positive``. Row numbers count data rows from 1 (a CSV header line is not a row).

:func:`synthetic_prices` builds seeded panels of any size with regime-switching trends,
Student-t noise and per-market common factors, for scale tests and learnable-signal tests.

This module must not import torch (the service imports it).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "EMBEDDED",
    "MISSING_TOKENS",
    "PriceDataError",
    "SyntheticPanel",
    "load_index",
    "load_prices",
    "read_table",
    "markets",
    "sectors",
    "synthetic_prices",
    "validate_prices",
]

EMBEDDED: tuple[str, ...] = ("sp500",)
"""Names of the datasets shipped inside the package (``load_prices("sp500")``)."""

# dataset name -> (price panel file, index level file) inside momentum/data/
_EMBEDDED_FILES: dict[str, tuple[str, str]] = {
    "sp500": ("sp500_20_stocks_1990_2022.csv.gz", "sp500_index_1990_2022.csv.gz"),
}

# GICS sectors of the embedded stocks, from shared/data/README.md; the "markets" of QuantNet.
_SP500_SECTORS: dict[str, tuple[str, ...]] = {
    "Information Technology": ("AAPL", "AMD", "MSFT"),
    "Financials": ("BAC", "JPM"),
    "Consumer Discretionary": ("BBY", "HD"),
    "Energy": ("CVX", "RRC", "XOM"),
    "Industrials": ("GE",),
    "Health Care": ("JNJ", "LLY", "MRK", "PFE", "UNH"),
    "Consumer Staples": ("KO", "PEP", "PG", "WMT"),
}

# Cell texts that mean "no price" (compared after strip + lower-case).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a"})
"""Cell texts of a price file that mean "no price" by default (stripped, lower case)."""

_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")

# Dates are stored in the unit pandas itself gives date ranges, so panels built here compare
# equal to frames that callers build with ``pd.date_range`` (``us`` on pandas 3, ``ns`` on 2).
_DATE_DTYPE = pd.date_range("2000-01-03", periods=1).dtype

# How many offending rows an error message lists before saying "...".
_MAX_LISTED = 5


class PriceDataError(ValueError):
    """Invalid price, index or sector data.

    The message reads ``"<source>: row <r> (date <d>), ticker <t>: <detail>"``, with the parts
    that apply; the same parts are kept as attributes for programmatic use.

    Parameters
    ----------
    detail : str
        What is wrong.
    source : str, optional
        The file (or ``"<frame>"`` label) the data came from.
    row : int, optional
        1-based data row in the source (a CSV header is not counted).
    date : pandas.Timestamp, optional
        The date of the offending row.
    ticker : str, optional
        The offending ticker.
    """

    def __init__(
        self,
        detail: str,
        *,
        source: str | None = None,
        row: int | None = None,
        date: pd.Timestamp | None = None,
        ticker: str | None = None,
    ) -> None:
        where = []
        if row is not None and date is not None:
            where.append(f"row {row} (date {date:%Y-%m-%d})")
        elif row is not None:
            where.append(f"row {row}")
        elif date is not None:
            where.append(f"date {date:%Y-%m-%d}")
        if ticker is not None:
            where.append(f"ticker {ticker}")
        prefix = [part for part in (source, ", ".join(where)) if part]
        super().__init__(": ".join([*prefix, detail]))
        self.source = source
        self.row = row
        self.date = date
        self.ticker = ticker


# --------------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------------


def load_prices(
    source: str | os.PathLike[str] = "sp500",
    *,
    max_fill: int = 5,
    missing: frozenset[str] = MISSING_TOKENS,
) -> pd.DataFrame:
    """Load a validated price panel.

    Parameters
    ----------
    source : str or path-like, default "sp500"
        A name in :data:`EMBEDDED`, or the path of a ``.csv``, ``.csv.gz``, ``.parquet`` or
        ``.pq`` file. Wide layout: a ``date`` column (any case; for Parquet the index may hold
        the dates instead) plus one column per ticker. Long layout: exactly the columns
        ``date, ticker, close`` (any case); its tickers come back sorted. String dates must be
        ISO 8601 (``YYYY-MM-DD``); times are dropped and time zones removed (wall-clock date).
        An embedded name wins over a file of the same name (write ``./sp500`` for the file).
    max_fill : int, default 5
        Longest run of missing sessions inside a ticker's history that is forward-filled;
        longer runs raise. ``0`` forbids interior gaps.
    missing : frozenset of str, default MISSING_TOKENS
        Cell texts (stripped, lower case) of a text file that mean "no price". The service's
        ingest passes ``frozenset({""})``: there only an empty cell is missing and a literal
        ``nan`` is refused as not a number, as it is over gRPC.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_dates, n_tickers)``, the price-panel contract of this module.

    Raises
    ------
    PriceDataError
        The file is unreadable or violates the contract (see :func:`validate_prices`).
    FileNotFoundError
        ``source`` is neither an embedded name nor an existing file.
    """
    _check_max_fill(max_fill)
    if _is_embedded(source):
        return _embedded_prices(str(source), max_fill).copy()
    path, label = _resolve(source)
    return _validate(_read_table(path, label), label, max_fill, stacklevel=3, missing=missing)


def validate_prices(
    prices: pd.DataFrame,
    *,
    source: str = "<frame>",
    max_fill: int = 5,
    missing: frozenset[str] = MISSING_TOKENS,
) -> pd.DataFrame:
    """Check a raw price table and return it as a clean panel.

    This is the validation behind :func:`load_prices`, usable on in-memory frames.

    Parameters
    ----------
    prices : pandas.DataFrame
        Wide (dates from a column named ``date`` in any case, else from a ``DatetimeIndex`` or an
        index named ``date``; every other column is a ticker) or long (columns ``date, ticker,
        close``; a table with a ``ticker`` or ``close`` column is read as long). Cells may be
        numbers or numeric strings; empty cells and NA markers mean "no price".
    source : str, default "<frame>"
        Label used in error messages (the file name when called by :func:`load_prices`).
    max_fill : int, default 5
        Longest interior run of missing sessions that is forward-filled.
    missing : frozenset of str, default MISSING_TOKENS
        Cell texts (stripped, lower case) that mean "no price", as for :func:`load_prices`.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_dates, n_tickers)``: ``float64`` closes; index ``date`` (tz-naive,
        midnight, strictly increasing); columns ``ticker`` in input order (wide) or sorted
        (long). Leading and trailing dates on which no ticker has a price are dropped; inside
        that span such a date is a gap of every ticker.

    Raises
    ------
    PriceDataError
        Empty table; missing, unparseable or duplicate dates; missing, empty or duplicate
        ticker names; a long table without ``ticker`` or ``close``; a duplicate (date, ticker)
        pair; non-numeric, infinite, zero or negative closes; a ticker with no price at all; an
        interior gap longer than ``max_fill`` sessions.

    Warns
    -----
    UserWarning
        The dates were not in increasing order (they are sorted).

    Examples
    --------
    >>> raw = pd.DataFrame({"Date": ["2020-01-02", "2020-01-03", "2020-01-06"],
    ...                     "AAA": ["10", "", "11"]})
    >>> validate_prices(raw)["AAA"].tolist()
    [10.0, 10.0, 11.0]
    """
    _check_max_fill(max_fill)
    return _validate(prices, source, max_fill, stacklevel=3, missing=missing)


def read_table(source: str | os.PathLike[str]) -> pd.DataFrame:
    """A price file as the raw table `validate_prices` takes (CSV cells kept as text).

    For callers that take a column out before validation (the service's ``override``).

    Raises
    ------
    PriceDataError
        Unsupported type, unreadable or empty file.
    FileNotFoundError
        No such file.
    """
    path, label = _resolve(source)
    return _read_table(path, label)


def load_index(source: str | os.PathLike[str] = "sp500") -> pd.Series:
    """Load a market index level series (for beta features).

    Parameters
    ----------
    source : str or path-like, default "sp500"
        ``"sp500"`` for the embedded S&P 500 level, or a CSV / Parquet file with a date column
        and exactly one value column, validated like a price file.

    Returns
    -------
    pandas.Series
        Shape ``(n_dates,)``, ``float64``, index named ``date``; named ``"SP500"`` for the
        embedded data, else after the value column.
    """
    if _is_embedded(source):
        return _embedded_index(str(source)).copy()
    path, label = _resolve(source)
    return _one_column(_validate(_read_table(path, label), label, 5, stacklevel=3), label)


def sectors(source: str | os.PathLike[str] = "sp500") -> dict[str, str]:
    """Map tickers to sectors (the "markets" of QuantNet).

    Parameters
    ----------
    source : str or path-like, default "sp500"
        ``"sp500"`` for the GICS sectors of the embedded stocks, or a CSV / Parquet file with
        columns ``ticker`` and ``sector`` (any case; other columns are ignored).

    Returns
    -------
    dict[str, str]
        Ticker -> sector, in file order (embedded: ticker order of the price file).

    Raises
    ------
    PriceDataError
        Missing column, no rows, an empty ticker or sector, or a ticker listed twice.
    """
    if _is_embedded(source):
        pairs = [(t, sector) for sector, tickers in _SP500_SECTORS.items() for t in tickers]
        return dict(sorted(pairs))
    path, label = _resolve(source)
    table = _read_table(path, label)
    if len(table) == 0:
        raise PriceDataError("no rows", source=label)
    lower = [str(c).strip().lower() for c in table.columns]
    positions = {}
    for wanted in ("ticker", "sector"):
        if lower.count(wanted) != 1:
            problem = "missing" if wanted not in lower else "repeated"
            raise PriceDataError(
                f"column '{wanted}' is {problem} (columns: {_listing(table.columns)})",
                source=label,
            )
        positions[wanted] = lower.index(wanted)
    tickers = [_text(v) for v in table.iloc[:, positions["ticker"]]]
    names = [_text(v) for v in table.iloc[:, positions["sector"]]]
    mapping: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for row, (ticker, sector) in enumerate(zip(tickers, names, strict=True), start=1):
        if not ticker:
            raise PriceDataError("empty ticker", source=label, row=row)
        if not sector:
            raise PriceDataError("empty sector", source=label, row=row, ticker=ticker)
        if ticker in mapping:
            raise PriceDataError(
                f"ticker listed twice (rows {first_row[ticker]} and {row})",
                source=label,
                row=row,
                ticker=ticker,
            )
        mapping[ticker] = sector
        first_row[ticker] = row
    return mapping


def markets(sector_map: Mapping[str, str], tickers: Sequence[str]) -> dict[str, list[str]]:
    """Group tickers into markets (sectors) for QuantNet.

    Parameters
    ----------
    sector_map : Mapping[str, str]
        Ticker -> market name, e.g. from :func:`sectors`.
    tickers : Sequence[str]
        The universe, in panel column order.

    Returns
    -------
    dict[str, list[str]]
        Market -> its tickers in ``tickers`` order; markets ordered by first appearance.

    Raises
    ------
    PriceDataError
        A ticker appears twice in ``tickers`` or has no entry in ``sector_map``.

    Examples
    --------
    >>> markets({"A": "X", "B": "Y", "C": "X"}, ["C", "B", "A"])
    {'X': ['C', 'A'], 'Y': ['B']}
    """
    if isinstance(tickers, str):
        raise TypeError("`tickers` must be a sequence of ticker strings, not one string")
    repeated = [t for t, n in Counter(tickers).items() if n > 1]
    if repeated:
        raise PriceDataError(f"`tickers` lists {_listing(repeated)} more than once")
    missing = [t for t in tickers if t not in sector_map]
    if missing:
        raise PriceDataError(f"`sector_map` has no market for tickers {_listing(missing)}")
    groups: dict[str, list[str]] = {}
    for ticker in tickers:
        groups.setdefault(sector_map[ticker], []).append(ticker)
    return groups


# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticPanel:
    """A generated universe.

    Attributes
    ----------
    prices : pandas.DataFrame
        Shape ``(n_days, n_assets)``, the price-panel contract; business days from 2000-01-03.
    markets : dict[str, str]
        Ticker -> market name (``"M0"`` ...), in column order.
    index : pandas.Series
        Shape ``(n_days,)``: level of the daily-rebalanced equal-weight portfolio of the assets
        trading on each day, 100 on the first date, named ``"EQUAL_WEIGHT"``.
    """

    prices: pd.DataFrame
    markets: dict[str, str]
    index: pd.Series


# Generator constants (daily units). Drifts of ~0.1%/day against ~1.5%/day vol make a
# sign-of-63-day-return rule earn an annualised Sharpe of roughly 2 on 30 assets.
_REGIME_DAYS = (60.0, 120.0)  # mean regime length, drawn per series
_DRIFT = (0.0005, 0.0015)  # |drift| per series, times trend_strength
_MARKET_VOL = (0.005, 0.009)  # std of the per-market common factor shocks
_ASSET_VOL = (0.008, 0.015)  # std of the asset-specific shocks
_LOADING = (0.7, 1.3)  # exposure of an asset to its market factor
_LATE_FRACTION = 0.3  # share of assets that start after the first date when stagger=True
_START_PRICE = (10.0, 100.0)


def synthetic_prices(
    n_assets: int = 30,
    n_days: int = 2520,
    n_markets: int = 3,
    seed: int = 0,
    *,
    stagger: bool = True,
    trend_strength: float = 1.0,
) -> SyntheticPanel:
    """Generate a seeded price panel with persistent trends, fat tails and market factors.

    Daily log-return of asset i in market m on day t::

        r[t, i] = loading[i] * f[t, m] + e[t, i]
        f[t, m] = s[t, m] * mu[m] + sigma[m] * z[t, m]      (market factor)
        e[t, i] = s[t, i] * mu[i] + sigma[i] * z[t, i]      (asset-specific part)

    where each ``s`` is a two-state (+1 / -1) Markov chain that flips with probability
    ``1 / L`` per day (mean regime length ``L`` in 60..120 days), ``mu`` is in 0.05..0.15%
    per day times ``trend_strength``, and ``z`` is unit-variance Student-t noise with 4 degrees
    of freedom. The persistent drifts make time-series momentum profitable; the common factor
    correlates assets of one market. Everything is drawn from ``np.random.default_rng(seed)``
    in a fixed order, so ``trend_strength`` changes the drifts but not the noise.

    Parameters
    ----------
    n_assets : int, default 30
        Number of tickers, named ``S0000``, ``S0001``, ...
    n_days : int, default 2520
        Number of business days, from 2000-01-03.
    n_markets : int, default 3
        Number of markets ``M0`` .. ``M{n_markets-1}``; each gets at least one asset.
    seed : int, default 0
        Seed of the random generator.
    stagger : bool, default True
        If True, 30% of the assets (rounded down) start on a random day in the first half of
        the sample (NaN before); no asset ever stops.
    trend_strength : float, default 1.0
        Multiplier of the regime drifts; 0 gives driftless prices.

    Returns
    -------
    SyntheticPanel
        Prices ``(n_days, n_assets)`` starting between 10 and 100, markets and an equal-weight
        index level ``(n_days,)``.
    """
    _check_int("n_assets", n_assets, 1)
    _check_int("n_days", n_days, 2)
    _check_int("n_markets", n_markets, 1)
    if n_markets > n_assets:
        raise ValueError(f"`n_markets` ({n_markets}) must not exceed `n_assets` ({n_assets})")
    if not np.isfinite(trend_strength) or trend_strength < 0:
        raise ValueError(f"`trend_strength` must be finite and >= 0, got {trend_strength}")

    rng = np.random.default_rng(seed)
    market_of = rng.permutation(np.arange(n_assets) % n_markets)  # every market non-empty
    loading = rng.uniform(*_LOADING, n_assets)
    market = _regime_returns(rng, n_days, n_markets, _MARKET_VOL, trend_strength)
    log_ret = _regime_returns(rng, n_days, n_assets, _ASSET_VOL, trend_strength)
    log_ret += loading.astype(np.float32) * market[:, market_of]  # (days, assets)
    log_ret[0] = 0.0  # no return into the first date

    start = np.zeros(n_assets, dtype=np.int64)
    if stagger:
        n_late = int(_LATE_FRACTION * n_assets)  # < n_assets, so some asset starts on day 0
        late = rng.choice(n_assets, size=n_late, replace=False)
        start[late] = rng.integers(1, max(2, n_days // 2), size=n_late)
    log_p0 = rng.uniform(np.log(_START_PRICE[0]), np.log(_START_PRICE[1]), n_assets)

    # Prices: exp of the cumulative log-return since each asset's first day, in float64.
    day = np.arange(n_days)[:, None]
    prices = np.cumsum(log_ret, axis=0, dtype=np.float64)
    prices += log_p0 - prices[start, np.arange(n_assets)]
    np.exp(prices, out=prices)
    np.putmask(prices, day < start, np.nan)

    # Equal-weight index: mean simple return of the assets priced on both t-1 and t, taken
    # from the float64 prices so that it matches returns computed from the panel.
    del log_ret
    has_return = day[1:] > start  # (days - 1, assets)
    simple = prices[1:] / prices[:-1] - 1.0
    np.putmask(simple, ~has_return, 0.0)
    mean_return = simple.sum(axis=1) / np.maximum(has_return.sum(axis=1), 1)
    level = 100.0 * np.cumprod(np.concatenate([[1.0], 1.0 + mean_return]))

    width = max(4, len(str(n_assets - 1)))
    tickers = [f"S{i:0{width}d}" for i in range(n_assets)]
    dates = pd.DatetimeIndex(
        pd.bdate_range("2000-01-03", periods=n_days).to_numpy(), name="date"
    ).astype(_DATE_DTYPE)
    frame = pd.DataFrame(prices, index=dates, columns=pd.Index(tickers, name="ticker"), copy=False)
    index = pd.Series(level, index=dates.copy(), name="EQUAL_WEIGHT")
    names = {t: f"M{m}" for t, m in zip(tickers, market_of.tolist(), strict=True)}
    return SyntheticPanel(prices=frame, markets=names, index=index)


def _regime_returns(
    rng: np.random.Generator,
    n_days: int,
    n_series: int,
    vol_range: tuple[float, float],
    trend_strength: float,
) -> np.ndarray:
    """Daily log-returns ``s * mu + sigma * z`` of independent regime-switching series.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_days, n_series)``, float32 (ample for noise; prices accumulate in float64).
    """
    sigma = rng.uniform(*vol_range, n_series).astype(np.float32)
    mu = (rng.uniform(*_DRIFT, n_series) * trend_strength).astype(np.float32)
    flip_prob = (1.0 / rng.uniform(*_REGIME_DAYS, n_series)).astype(np.float32)
    up_at_start = rng.random(n_series) < 0.5

    # Two-state regime chain: the state flips at each Bernoulli(1/L) event, so the state on
    # day t is the first state XOR the parity of the flips so far (geometric regimes, mean L).
    up = np.logical_xor.accumulate(rng.random((n_days, n_series), dtype=np.float32) < flip_prob)
    up ^= up_at_start

    # Student-t(4) as a normal / gamma mixture: z / sqrt(G) with G ~ Gamma(2, 1) has variance
    # E[1/G] = 1, i.e. it is t(4) already scaled to unit variance.
    out = rng.standard_normal((n_days, n_series), dtype=np.float32)
    out /= np.sqrt(rng.standard_gamma(2.0, (n_days, n_series), dtype=np.float32))
    out *= sigma
    out += np.where(up, mu, -mu)
    return out


# --------------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------------


def _is_embedded(source: object) -> bool:
    return isinstance(source, str) and source in EMBEDDED


def _resolve(source: str | os.PathLike[str]) -> tuple[Path, str]:
    """Return the path of a data file and the label used in messages."""
    label = os.fspath(source)
    path = Path(label)
    if not path.is_file():
        raise FileNotFoundError(
            f"{label}: no such file (embedded datasets are {', '.join(EMBEDDED)})"
        )
    _file_kind(path, label)
    return path, label


def _file_kind(path: Path, label: str) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise PriceDataError(
        f"unsupported file type (use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)})",
        source=label,
    )


def _read_table(path: Path, label: str) -> pd.DataFrame:
    """Read a CSV (every cell as text, header row kept verbatim) or a Parquet file."""
    if _file_kind(path, label) == "parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow errors derive from these
            raise PriceDataError(f"cannot read Parquet file: {exc}", source=label) from exc
    try:
        # header=None + dtype=str: cells stay text, so a bad cell can be quoted verbatim and a
        # repeated header name is seen (pandas would rename it "X.1").
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise PriceDataError("file is empty", source=label) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise PriceDataError(f"cannot read CSV file: {exc}", source=label) from exc
    body = table.iloc[1:].reset_index(drop=True)
    body.columns = [_text(v) for v in table.iloc[0]]
    return body


@functools.cache
def _embedded_prices(name: str, max_fill: int) -> pd.DataFrame:
    file_name = _EMBEDDED_FILES[name][0]
    with resources.as_file(resources.files("momentum") / "data" / file_name) as path:
        return _validate(_read_table(path, file_name), file_name, max_fill, stacklevel=4)


@functools.cache
def _embedded_index(name: str) -> pd.Series:
    file_name = _EMBEDDED_FILES[name][1]
    with resources.as_file(resources.files("momentum") / "data" / file_name) as path:
        frame = _validate(_read_table(path, file_name), file_name, 5, stacklevel=4)
    return _one_column(frame, file_name)


def _one_column(frame: pd.DataFrame, label: str) -> pd.Series:
    if frame.shape[1] != 1:
        raise PriceDataError(
            f"an index file needs exactly one value column besides the date, "
            f"found {frame.shape[1]}: {_listing(frame.columns)}",
            source=label,
        )
    series = frame.iloc[:, 0]
    return series.rename(str(frame.columns[0]))


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _validate(
    prices: pd.DataFrame,
    source: str,
    max_fill: int,
    stacklevel: int,
    missing: frozenset[str] = MISSING_TOKENS,
) -> pd.DataFrame:
    """Shared body of :func:`validate_prices` and the loaders (see there)."""
    if not isinstance(prices, pd.DataFrame):
        raise TypeError(f"`prices` must be a pandas DataFrame, got {type(prices).__name__}")
    if len(prices) == 0:
        raise PriceDataError("no rows", source=source)
    raw_dates, body = _split_dates(prices, source)
    dates = _parse_dates(raw_dates, source)
    lower = {str(c).strip().lower() for c in body.columns}
    if lower & {"ticker", "close"}:
        values, dates, tickers, rows, unsorted = _from_long(dates, body, source, missing)
    else:
        values, dates, tickers, rows, unsorted = _from_wide(dates, body, source, missing)
    if unsorted:
        warnings.warn(
            f"{source}: dates are not in increasing order; sorted them",
            UserWarning,
            stacklevel=stacklevel,
        )
    values, dates = _check_values(values, dates, tickers, rows, source, max_fill)
    return pd.DataFrame(
        values,
        index=pd.DatetimeIndex(dates.to_numpy(), name="date"),  # drops any inferred freq
        columns=pd.Index(tickers, name="ticker"),
        copy=False,
    )


def _split_dates(prices: pd.DataFrame, source: str) -> tuple[Any, pd.DataFrame]:
    """Return (raw dates, the other columns)."""
    positions = [k for k, c in enumerate(prices.columns) if _text(c).lower() == "date"]
    if len(positions) > 1:
        raise PriceDataError("more than one date column", source=source)
    if positions:
        keep = [k for k in range(prices.shape[1]) if k != positions[0]]
        return prices.iloc[:, positions[0]], prices.iloc[:, keep]
    index = prices.index
    if isinstance(index, pd.DatetimeIndex) or _text(index.name).lower() == "date":
        return index, prices
    raise PriceDataError(
        "no date column (expected a column named 'date' or 'Date', or a DatetimeIndex)",
        source=source,
    )


def _parse_dates(raw: Any, source: str) -> pd.DatetimeIndex:
    """Parse dates to tz-naive midnights, one per input row (order kept)."""
    series = pd.Series(np.asarray(raw, dtype=object) if not _is_datetime(raw) else raw)
    if _is_datetime(series):
        parsed = series
    else:
        try:
            parsed = pd.to_datetime(series.astype("str"), format="ISO8601", errors="coerce")
        except ValueError as exc:  # e.g. offsets that differ from row to row
            raise PriceDataError(f"cannot parse dates: {exc}", source=source) from exc
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        value = series.iloc[bad[0]]
        detail = (
            "date is missing"
            if _text(value) == ""
            else f"cannot parse date {_shown(value)} (expected YYYY-MM-DD)"
        )
        raise PriceDataError(detail, source=source, row=int(bad[0]) + 1)
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        index = index.tz_localize(None)  # keep the wall-clock date of each close
    try:
        return pd.DatetimeIndex(index.normalize().astype(_DATE_DTYPE))
    except (ValueError, OverflowError) as exc:
        raise PriceDataError(f"dates out of range: {exc}", source=source) from exc


def _from_wide(
    dates: pd.DatetimeIndex, body: pd.DataFrame, source: str, missing: frozenset[str]
) -> tuple[np.ndarray, pd.DatetimeIndex, list[str], np.ndarray, bool]:
    """Wide table -> (values [T, N], sorted dates, tickers, source rows [T, N], was unsorted)."""
    if body.shape[1] == 0:
        raise PriceDataError("no ticker columns besides the date", source=source)
    tickers = []
    first_col: dict[str, int] = {}
    for k, name in enumerate(body.columns):
        if not isinstance(name, str) or not name.strip():
            raise PriceDataError(f"column {k + 1} has no ticker name (got {name!r})", source=source)
        ticker = name.strip()
        if ticker in first_col:
            raise PriceDataError(
                f"ticker appears in two columns ({first_col[ticker] + 1} and {k + 1})",
                source=source,
                ticker=ticker,
            )
        first_col[ticker] = k
        tickers.append(ticker)

    rows = np.arange(1, len(dates) + 1)
    repeated = dates.duplicated(keep=False)
    if repeated.any():
        first = dates[int(np.argmax(repeated))]
        same = rows[dates == first]
        raise PriceDataError(
            f"duplicate date (rows {_listing(same.tolist())})", source=source, date=first
        )

    values = np.empty(body.shape, dtype=np.float64)
    bad = np.zeros(body.shape, dtype=bool)
    numeric = np.array([_is_numeric(dtype) for dtype in body.dtypes])
    if numeric.any():  # one conversion for all float / int columns (the usual in-memory case)
        values[:, numeric] = body.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    for k in np.flatnonzero(~numeric).tolist():
        values[:, k], bad[:, k] = _to_numbers(body.iloc[:, k], missing)
    if bad.any():
        i, k = _first(bad)  # first bad cell in row-major order
        raise PriceDataError(
            f"value {_shown(body.iat[i, k])} is not a number",
            source=source,
            row=int(rows[i]),
            date=dates[i],
            ticker=tickers[k],
        )

    unsorted = not dates.is_monotonic_increasing
    if unsorted:
        order = np.argsort(dates.to_numpy(), kind="stable")
        dates, values, rows = dates[order], values[order], rows[order]
    return values, dates, tickers, np.broadcast_to(rows[:, None], values.shape), unsorted


def _from_long(
    dates: pd.DatetimeIndex, body: pd.DataFrame, source: str, missing: frozenset[str]
) -> tuple[np.ndarray, pd.DatetimeIndex, list[str], np.ndarray, bool]:
    """Long table -> (values [T, N], sorted dates, sorted tickers, rows [T, N], was unsorted)."""
    lower = [_text(c).lower() for c in body.columns]
    for wanted in ("ticker", "close"):
        if lower.count(wanted) != 1:
            problem = "is missing" if wanted not in lower else "appears twice"
            raise PriceDataError(
                f"long format needs columns date, ticker, close: '{wanted}' {problem} "
                f"(columns: {_listing(body.columns)})",
                source=source,
            )
    extra = [
        c for c, name in zip(body.columns, lower, strict=True) if name not in ("ticker", "close")
    ]
    if extra:
        raise PriceDataError(
            f"long format takes only columns date, ticker, close; unexpected {_listing(extra)}",
            source=source,
        )
    rows = np.arange(1, len(dates) + 1)
    names = np.array([_text(v) for v in body.iloc[:, lower.index("ticker")]], dtype=object)
    empty = np.flatnonzero(names == "")
    if empty.size:
        i = int(empty[0])
        raise PriceDataError("empty ticker", source=source, row=i + 1, date=dates[i])

    pairs = pd.DataFrame({"date": dates, "ticker": names})
    repeated = pairs.duplicated(keep=False).to_numpy()
    if repeated.any():
        i = int(np.argmax(repeated))
        same = rows[(dates == dates[i]) & (names == names[i])]
        raise PriceDataError(
            f"duplicate (date, ticker) pair (rows {_listing(same.tolist())})",
            source=source,
            date=dates[i],
            ticker=names[i],
        )

    closes = body.iloc[:, lower.index("close")]
    numbers, bad = _to_numbers(closes, missing)
    if bad.any():
        i = int(np.argmax(bad))
        raise PriceDataError(
            f"close {_shown(closes.iat[i])} is not a number",
            source=source,
            row=i + 1,
            date=dates[i],
            ticker=names[i],
        )

    tickers, ticker_code = np.unique(names, return_inverse=True)
    unique_dates, date_code = np.unique(dates.to_numpy(), return_inverse=True)
    # Row order means nothing in a long file, except that each ticker's rows should run
    # forward in time; warn only when they do not.
    by_ticker = np.lexsort((rows, ticker_code))
    same_ticker = ticker_code[by_ticker][1:] == ticker_code[by_ticker][:-1]
    backwards = date_code[by_ticker][1:] < date_code[by_ticker][:-1]
    unsorted = bool(np.any(same_ticker & backwards))

    values = np.full((unique_dates.size, tickers.size), np.nan)
    values[date_code, ticker_code] = numbers
    where = np.zeros(values.shape, dtype=np.int64)  # 0: the pair has no row in the file
    where[date_code, ticker_code] = rows
    index = pd.DatetimeIndex(pd.DatetimeIndex(unique_dates).astype(_DATE_DTYPE))
    return values, index, [str(t) for t in tickers], where, unsorted


def _check_values(
    values: np.ndarray,
    dates: pd.DatetimeIndex,
    tickers: list[str],
    rows: np.ndarray,
    source: str,
    max_fill: int,
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Check closes [T, N] (dates sorted, unique) and forward-fill short interior gaps."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (values <= 0)
    if bad.any():
        i, k = _first(bad)  # earliest date first
        value = float(values[i, k])
        problem = "is not finite" if np.isinf(value) else "is not positive"
        raise PriceDataError(
            f"close {value!r} {problem}",
            source=source,
            row=int(rows[i, k]) or None,
            date=dates[i],
            ticker=tickers[k],
        )

    valid = ~np.isnan(values)
    empty = ~valid.any(axis=0)
    if empty.any():
        names = [t for t, e in zip(tickers, empty, strict=True) if e]
        raise PriceDataError(
            "has no prices (the column is empty)" if len(names) == 1 else "have no prices",
            source=source,
            ticker=_listing(names),
        )

    # Dates before the first price or after the last price of every ticker carry nothing.
    traded = np.flatnonzero(valid.any(axis=1))
    if traded[0] > 0 or traded[-1] < len(values) - 1:
        span = slice(int(traded[0]), int(traded[-1]) + 1)
        values, valid, dates = values[span], valid[span], dates[span]

    # Interior gaps: missing after the first price and before the last price of a ticker.
    # (A date with no price at all inside the span is a gap of every ticker.)
    row = np.arange(len(values))[:, None]
    first_price = np.argmax(valid, axis=0)
    last_price = len(values) - 1 - np.argmax(valid[::-1], axis=0)
    hole = ~valid & (row > first_price) & (row < last_price)
    if not hole.any():
        return values, dates

    # Length of the gap so far at each hole: holes counted since the last valid price.
    count = np.cumsum(hole, axis=0)
    run = count - np.maximum.accumulate(np.where(hole, 0, count), axis=0)
    too_long = run > max_fill
    if too_long.any():
        i, k = _first(too_long)
        first = i - max_fill
        last = i + int(np.argmax(~hole[i:, k])) - 1  # the gap is interior: a price follows
        length = last - first + 1
        raise PriceDataError(
            f"no price for {length} session{'s' if length > 1 else ''} in a row, from "
            f"{dates[first]:%Y-%m-%d} to {dates[last]:%Y-%m-%d} (gaps of at most "
            f"max_fill={max_fill} are forward-filled)",
            source=source,
            ticker=tickers[k],
        )

    # Forward-fill: each hole takes the price of the last valid row above it.
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(len(values))[:, None], 0), axis=0)
    filled = np.take_along_axis(values, last_valid, axis=0)
    return np.where(hole, filled, values), dates


def _to_numbers(column: pd.Series, missing: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 values with NaN for missing, mask of non-numeric cells).

    A text cell is missing when its stripped, lower-case text is in `missing`.
    """
    if pd.api.types.is_bool_dtype(column):
        return np.full(len(column), np.nan), column.notna().to_numpy()
    if _is_numeric(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(column), bool)
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    text = column.astype("str").str.strip().str.lower()
    absent = (column.isna() | text.isin(missing)).to_numpy()
    return numbers, np.isnan(numbers) & ~absent


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _is_datetime(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    return dtype is not None and pd.api.types.is_datetime64_any_dtype(dtype)


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True of a 2-D mask in row-major order."""
    i, k = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(i), int(k)


def _is_numeric(dtype: Any) -> bool:
    """Numbers, but not booleans (True is no price)."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _text(value: object) -> str:
    """A cell or header as stripped text ("" for missing)."""
    if _is_missing(value) or value is pd.NA or value is pd.NaT:
        return ""
    return str(value).strip()


def _shown(value: object) -> str:
    """A raw cell for a message: text quoted, anything else as printed (True, not np.True_)."""
    return repr(value) if isinstance(value, str) else str(value)


def _listing(items: Any) -> str:
    shown = [str(x) for x in list(items)[:_MAX_LISTED]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "")


def _check_max_fill(max_fill: int) -> None:
    _check_int("max_fill", max_fill, 0)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
