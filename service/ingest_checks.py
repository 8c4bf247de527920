"""The row checks of an ingest batch: each finds its bad rows with array operations.

:func:`service.ingest.ingest_closes` normalises a batch (:func:`normalise`), then runs the
checks below; each writes a message for its bad rows only into ``reasons`` (row position ->
list of problems), so a clean batch of millions of closes costs a few passes over arrays.
The checks that need the store (conflicts, :mod:`service.plausibility`) run in the ingest's
transaction.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from service.calendar import sessions_between

__all__ = [
    "CLOSE_RTOL",
    "COLUMNS",
    "check_closes",
    "check_dates",
    "check_duplicates",
    "check_overrides",
    "check_tickers",
    "normalise",
    "same_close",
]

CLOSE_RTOL = 1e-12
"""Two closes are the same if they differ by at most this fraction of the larger one."""

COLUMNS = ("date", "ticker", "close")
_MAX_SHOWN = 5  # rows listed in one duplicate message


def normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """(date: datetime64 with NaT, ticker: str, close: float64, raw_date, raw_close)."""
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"`rows` must be a pandas DataFrame, got {type(rows).__name__}")
    names = [str(c).strip().lower() for c in rows.columns]
    if sorted(names) not in (sorted(COLUMNS), sorted((*COLUMNS, "override"))):
        raise ValueError(
            "`rows` must have the columns date, ticker, close and optionally override, got "
            f"{list(rows.columns)}"
        )
    columns = {name: rows.iloc[:, k] for k, name in enumerate(names)}
    raw_dates, raw_tickers, raw_closes = (columns[c] for c in COLUMNS)
    flags = (
        np.zeros(len(rows), dtype=np.int8)
        if "override" not in columns
        else _per_value(columns["override"], _flag, 0, np.int8)
    )
    return pd.DataFrame(
        {
            "date": _parse_dates(raw_dates),
            "ticker": _per_value(raw_tickers, _text, "", object),
            "close": pd.to_numeric(raw_closes, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            if not pd.api.types.is_bool_dtype(raw_closes)
            else np.full(len(rows), np.nan),
            "raw_date": raw_dates.to_numpy(),
            "raw_close": raw_closes.to_numpy(),
            "override": flags == 1,
            "bad_override": flags == -1,
            "raw_override": columns["override"].to_numpy() if "override" in columns else None,
        }
    )


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def _flag(value: Any) -> int:
    """An ``override`` cell: 1 true, 0 false, -1 neither (a rejection)."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower()
    return 1 if text in _TRUE else 0 if text in _FALSE else -1


def _per_value(column: pd.Series, parse: Any, missing: Any, dtype: Any) -> np.ndarray:
    """``parse`` of every cell, computed once per distinct value (``missing`` for NA cells)."""
    try:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
    except TypeError:  # unhashable cells: one by one
        return np.array([parse(v) for v in column], dtype=dtype)
    parsed = np.array([parse(v) for v in uniques] + [missing], dtype=dtype)
    return parsed[codes]  # code -1 (NA) takes the last entry


def _parse_dates(raw: pd.Series) -> pd.DatetimeIndex:
    """Dates to tz-naive midnights (the wall-clock date), NaT where unparseable."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        index = pd.DatetimeIndex(raw)
        if index.tz is not None:
            index = index.tz_localize(None)
        return index.normalize()
    stamps = _per_value(raw, _one_date, None, object)
    return pd.DatetimeIndex(stamps).normalize()


def _one_date(value: Any) -> pd.Timestamp | None:
    """One date cell -> Timestamp (time and zone kept for the caller to drop), None if bad."""
    try:
        if isinstance(value, str):
            # ISO 8601 only: "01/02/2022" means different dates on either side of the Atlantic.
            stamp = pd.Timestamp(datetime.fromisoformat(value.strip()))
        elif _is_missing(value) or (isinstance(value, float) and math.isnan(value)):
            return None
        else:
            stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT:
        return None
    return stamp.tz_localize(None) if stamp.tz is not None else stamp


def _is_missing(value: Any) -> bool:
    """None, pd.NA, NaT or blank text: no value was sent (a float NaN *was* sent)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, str) and not value.strip()


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _add(reasons: dict[int, list[str]], rows: np.ndarray, message: Any) -> None:
    """Append ``message(i)`` (or the string itself) to the reasons of each row in ``rows``."""
    for i in rows.tolist():
        reasons.setdefault(i, []).append(message(i) if callable(message) else message)


def check_tickers(
    batch: pd.DataFrame, allowed: frozenset[str], reasons: dict[int, list[str]]
) -> None:
    tickers = batch["ticker"].to_numpy(dtype=object)
    codes, uniques = pd.factorize(tickers)
    bad = {k: t for k, t in enumerate(uniques) if not t or t not in allowed}
    if not bad:
        return
    for i in np.flatnonzero(np.isin(codes, list(bad))).tolist():
        ticker = bad[codes[i]]
        reasons.setdefault(i, []).append(
            "ticker is missing"
            if not ticker
            else f"unknown ticker {ticker!r} (not in the universe)"
        )


def check_dates(
    batch: pd.DataFrame,
    cal: xcals.ExchangeCalendar,
    today: pd.Timestamp,
    reasons: dict[int, list[str]],
) -> None:
    dates = pd.DatetimeIndex(batch["date"])
    first, last = cal.first_session, cal.last_session
    missing = np.asarray(dates.isna())
    future = ~missing & np.asarray(dates > today)
    outside = ~missing & ~future & np.asarray((dates < first) | (dates > last))
    known = ~missing & ~future & ~outside
    sessions = pd.DatetimeIndex([])
    if known.any():
        sessions = sessions_between(cal, dates[known].min(), dates[known].max())
    not_session = known & ~np.asarray(dates.isin(sessions))
    raw_dates = batch["raw_date"].to_numpy()

    def unparsed(i: int) -> str:
        raw: Any = raw_dates[i]
        blank = _is_missing(raw) or (isinstance(raw, float) and math.isnan(raw))
        return "date is missing" if blank else f"cannot parse date {raw!r} (use YYYY-MM-DD)"

    # one branch per row, in this order (a row gets at most one date problem)
    _add(reasons, np.flatnonzero(missing), unparsed)
    _add(
        reasons,
        np.flatnonzero(future),
        lambda i: (
            f"date {dates[i]:%Y-%m-%d} is in the future (today is {today:%Y-%m-%d} in {cal.tz})"
        ),
    )
    _add(
        reasons,
        np.flatnonzero(outside),
        lambda i: (
            f"date {dates[i]:%Y-%m-%d} is outside the {cal.name} calendar "
            f"({first:%Y-%m-%d} .. {last:%Y-%m-%d})"
        ),
    )
    _add(
        reasons,
        np.flatnonzero(not_session),
        lambda i: (
            f"date {dates[i]:%Y-%m-%d} ({dates[i]:%A}) is not a session of the {cal.name} calendar"
        ),
    )


def check_overrides(batch: pd.DataFrame, reasons: dict[int, list[str]]) -> None:
    raws = batch["raw_override"].to_numpy()
    _add(
        reasons,
        np.flatnonzero(batch["bad_override"].to_numpy()),
        lambda i: f"override {raws[i]!r} is not true or false",
    )


def check_closes(batch: pd.DataFrame, reasons: dict[int, list[str]]) -> None:
    closes = batch["close"].to_numpy()
    raws = batch["raw_close"].to_numpy()
    if raws.dtype.kind in "fiu":
        # numbers throughout: nothing is missing or text, only non-finite or non-positive
        with np.errstate(invalid="ignore"):
            finite, positive = np.isfinite(closes), closes > 0
        _add(
            reasons, np.flatnonzero(~finite), lambda i: f"close {float(closes[i])!r} is not finite"
        )
        _add(
            reasons,
            np.flatnonzero(finite & ~positive),
            lambda i: f"close {float(closes[i])!r} is not positive",
        )
        return
    for i, (close, raw) in enumerate(zip(closes.tolist(), raws, strict=True)):
        if _is_missing(raw):
            reasons.setdefault(i, []).append("close is missing")
        elif math.isnan(close) and not isinstance(raw, float | np.floating):
            reasons.setdefault(i, []).append(f"close {raw!r} is not a number")
        elif not math.isfinite(close):
            reasons.setdefault(i, []).append(f"close {close!r} is not finite")
        elif close <= 0:
            reasons.setdefault(i, []).append(f"close {close!r} is not positive")


def check_duplicates(batch: pd.DataFrame, reasons: dict[int, list[str]]) -> np.ndarray:
    """Reject (date, ticker) pairs sent twice with different closes; flag identical copies.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_rows,)``, bool: the row repeats an earlier identical row (a no-op).
    """
    repeat = np.zeros(len(batch), dtype=bool)
    keyed_rows = (batch["date"].notna() & (batch["ticker"] != "")).to_numpy()
    twice = batch.duplicated(["date", "ticker"], keep=False).to_numpy() & keyed_rows
    if not twice.any():
        return repeat
    keyed = np.flatnonzero(twice)
    groups = batch.iloc[keyed].groupby(["date", "ticker"], sort=False).indices
    closes = batch["close"].to_numpy()
    for positions in groups.values():
        members = keyed[positions]  # positions in the batch, increasing
        first = members[0]
        if np.all(same_close(closes[members], np.full(len(members), closes[first]))):
            repeat[members[1:]] = True
            continue
        rows = ", ".join(str(i + 1) for i in members[:_MAX_SHOWN])
        values = ", ".join(repr(float(closes[i])) for i in members[:_MAX_SHOWN])
        more = ", ..." if len(members) > _MAX_SHOWN else ""
        for i in members.tolist():
            reasons.setdefault(i, []).append(
                f"the batch gives different closes for this date and ticker "
                f"(rows {rows}{more}: {values}{more})"
            )
    return repeat


def same_close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: equal within :data:`CLOSE_RTOL` of the larger magnitude (NaN: False)."""
    with np.errstate(invalid="ignore"):
        return np.abs(a - b) <= CLOSE_RTOL * np.maximum(np.abs(a), np.abs(b))
