"""Conversions between Python/pandas values and what the columns store, with clear errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.calendar import as_date

# --------------------------------------------------------------------------------------------
# value conversion
# --------------------------------------------------------------------------------------------

# Dates come back in the unit of momentum.data panels (``us`` on pandas 3, ``ns`` on 2).
_DATE_DTYPE = np.dtype(str(pd.date_range("2000-01-03", periods=1).dtype))

# Bulk reads and writes carry dates as day numbers from here: PostgreSQL's date origin.
_EPOCH = pd.Timestamp("2000-01-01")


def _date(value: Any, name: str) -> Any:
    """A date-like value -> ``datetime.date`` for a DATE column."""
    return as_date(value, name).date()


def _date_list(values: pd.Series, name: str) -> list[Any]:
    """A column of date-likes -> ``datetime.date`` objects (vectorised for datetime64)."""
    if pd.api.types.is_datetime64_dtype(values):  # tz-naive only; the fast path for big batches
        index = pd.DatetimeIndex(values)
        if index.hasnans or not (index == index.normalize()).all():
            raise ValueError(f"`{name}` must hold dates without time of day")
        return list(index.date)
    return [_date(v, name) for v in values]


def _dates(values: Any) -> pd.DatetimeIndex:
    """DATE column values -> tz-naive DatetimeIndex in the momentum.data unit."""
    parsed = pd.to_datetime(list(values))  # datetime.date objects (or None)
    return pd.DatetimeIndex(np.asarray(parsed, dtype=_DATE_DTYPE))


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: Any, name: str) -> datetime:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"`{name}` must be a timezone-aware time, got {value!r}") from exc
    if stamp is pd.NaT or stamp.tz is None:
        raise ValueError(f"`{name}` must be a timezone-aware time, got {value!r}")
    return stamp.tz_convert("UTC").to_pydatetime()


def _name(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{name}` must be a non-empty string, got {value!r}")
    return value.strip()


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int, got {value!r}")
    return int(value)


def _nullable(value: Any) -> float | None:
    """A float for the database: NaN (not tradable) becomes NULL."""
    number = float(value)
    return None if math.isnan(number) else number


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    return number


def _check_keys(row: Mapping[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(row) - set(allowed))
    if unknown:
        raise ValueError(f"`{name}` has unknown keys {unknown} (allowed: {', '.join(allowed)})")


def _new_id(result: sa.CursorResult[Any]) -> int:
    """The autoincrement id of a single-row INSERT."""
    key = result.inserted_primary_key
    assert key is not None, "not a single-row INSERT"
    return int(key[0])


def _frame(result: sa.CursorResult[Any], date_columns: Sequence[str] = ()) -> pd.DataFrame:
    keys = list(result.keys())
    rows = result.all()
    # column by column: pandas probes every Row object when handed the rows (seconds per
    # 100k closes, every cycle)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
    frame = pd.DataFrame({k: list(v) for k, v in zip(keys, columns, strict=True)}, columns=keys)
    for column in date_columns:
        frame[column] = _dates(frame[column])
    return frame


def _long_closes(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check a long (date, ticker, close) frame of validated closes (an internal contract)."""
    missing = {"date", "ticker", "close"} - set(rows.columns)
    if missing:
        raise ValueError(f"`{name}` needs columns date, ticker, close; missing {sorted(missing)}")
    values = rows["close"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"`{name}` row {i + 1} (ticker {rows['ticker'].iloc[i]}): close {float(values[i])!r} "
            "is not a positive finite number"
        )
    return rows
