"""Closes: inserts (COPY on PostgreSQL), corrections and their log, look-ups by pair.

The wide-panel read lives in :mod:`service.store.price_reads`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.store.engine import _reading, transaction
from service.store.price_reads import _fetch_closes, joined
from service.store.schema import close_corrections, closes
from service.store.states import _invalidate
from service.store.values import (
    _EPOCH,
    _date,
    _date_list,
    _dates,
    _frame,
    _long_closes,
    _name,
    _now,
    _time,
)


def first_close_date(bind: sa.Engine | sa.Connection) -> pd.Timestamp | None:
    """The date of the oldest stored close (None when none is stored)."""
    with _reading(bind) as conn:
        value = conn.execute(sa.select(sa.func.min(closes.c.date))).scalar()
    return None if value is None else pd.Timestamp(_dates([value])[0])


def newest_close_date(bind: sa.Engine | sa.Connection) -> pd.Timestamp | None:
    """The date of the newest stored close (None when none is stored); one index look-up."""
    with _reading(bind) as conn:
        value = conn.execute(sa.select(sa.func.max(closes.c.date))).scalar()
    return None if value is None else pd.Timestamp(_dates([value])[0])


def closes_dates(
    bind: sa.Engine | sa.Connection, *, start: Any = None, end: Any = None
) -> pd.DatetimeIndex:
    """Dates on which at least one close is stored, increasing (tz-naive, named ``date``)."""
    query = sa.select(closes.c.date).distinct().order_by(closes.c.date)
    if start is not None:
        query = query.where(closes.c.date >= _date(start, "start"))
    if end is not None:
        query = query.where(closes.c.date <= _date(end, "end"))
    with _reading(bind) as conn:
        values = conn.execute(query).scalars().all()
    return pd.DatetimeIndex(_dates(values), name="date")


def insert_closes(
    bind: sa.Engine | sa.Connection,
    rows: pd.DataFrame,
    *,
    source: str,
    ingested_at: Any = None,
) -> int:
    """Insert new closes (the ingest path validates them first; see :mod:`service.ingest`).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    rows : pandas.DataFrame
        Long, columns ``date, ticker, close``; positive finite closes, (date, ticker) pairs
        not stored yet.
    source : str
        Where the closes came from (``"batch"``, a file name, ``"replay:sp500"``).
    ingested_at : datetime-like, optional
        tz-aware; default now.

    Returns
    -------
    int
        Rows inserted.

    Raises
    ------
    ValueError
        A column is missing or a close is not positive and finite.
    sqlalchemy.exc.IntegrityError
        A pair is already stored (nothing is inserted).
    """
    _long_closes(rows, "rows")
    stamp = _now() if ingested_at is None else _time(ingested_at, "ingested_at")
    label = str(_name(source, "source"))
    if len(rows) == 0:
        return 0
    days = _day_numbers(rows["date"], "rows['date']")
    tickers = rows["ticker"].astype(str).to_numpy(dtype=object)
    values = rows["close"].to_numpy(dtype=np.float64)
    with transaction(bind) as conn:
        if conn.dialect.name == "postgresql":
            _copy_closes(conn, days, tickers, values, label, stamp)
        else:
            _executemany_closes(conn, days, tickers, values, label, stamp)
        _invalidate(conn, _EPOCH + pd.Timedelta(days=int(days.min())), "late close")
    return len(rows)


# Bulk inserts bypass SQLAlchemy's per-row parameter processing (most of the time of a
# million-row insert): the values are converted once, as arrays, to what the column types
# would have sent.
_CLOSE_COLUMNS = ("date", "ticker", "close", "source", "ingested_at")
_BULK_ROWS = 262_144  # rows converted and sent at a time (one transaction either way)


def _day_numbers(values: pd.Series, name: str) -> np.ndarray:
    """Dates -> days since 2000-01-01 (int64), refusing a time of day."""
    if pd.api.types.is_datetime64_dtype(values):
        index = pd.DatetimeIndex(values)
        if index.hasnans or not (index == index.normalize()).all():
            raise ValueError(f"`{name}` must hold dates without time of day")
    else:
        index = pd.DatetimeIndex(_date_list(values, name))
    return np.asarray((index - _EPOCH).days, dtype=np.int64)


def _executemany_closes(
    conn: sa.Connection,
    days: np.ndarray,
    tickers: np.ndarray,
    values: np.ndarray,
    source: str,
    stamp: datetime,
) -> None:
    """SQLite: one executemany of plain tuples, values as the column types store them.

    Dates and times go in as the text sqlite3's default adapters would make of them (what
    SQLAlchemy's SQLite types hand to sqlite3), computed once per distinct value instead of
    once per row.
    """
    date_type, time_type = closes.c.date.type, closes.c.ingested_at.type
    to_date = date_type.bind_processor(conn.dialect) or _sqlite_text
    to_time = time_type.bind_processor(conn.dialect)
    unique, codes = np.unique(days, return_inverse=True)
    texts = np.array(
        [to_date((_EPOCH + pd.Timedelta(days=int(d))).date()) for d in unique], dtype=object
    )[codes]
    stored_at = _sqlite_text(to_time(stamp) if to_time is not None else stamp)
    sql = f"INSERT INTO closes ({', '.join(_CLOSE_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"
    for lo in range(0, len(values), _BULK_ROWS):  # bounded memory: the tuples of one chunk
        hi = min(lo + _BULK_ROWS, len(values))
        size = hi - lo
        rows = zip(
            texts[lo:hi],
            tickers[lo:hi],
            values[lo:hi].tolist(),
            [source] * size,
            [stored_at] * size,
            strict=True,
        )
        conn.exec_driver_sql(sql, list(rows))


def _sqlite_text(value: Any) -> Any:
    """sqlite3's default adaptation of a date or datetime (``isoformat``, a space before the
    time); anything else as it is."""
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _copy_closes(
    conn: sa.Connection,
    days: np.ndarray,
    tickers: np.ndarray,
    values: np.ndarray,
    source: str,
    stamp: datetime,
) -> None:
    """PostgreSQL: one binary COPY, the rows built as numpy records (one dtype per ticker
    length, since a record's text field has a fixed width)."""
    micros = int((pd.Timestamp(stamp).tz_convert("UTC").tz_localize(None) - _EPOCH).value // 1000)
    codes, uniques = pd.factorize(tickers)
    encoded = [str(t).encode() for t in uniques]
    lengths = np.array([len(t) for t in encoded])[codes]
    src = source.encode()
    names = {length: np.array(encoded, dtype=f"S{length}") for length in np.unique(lengths)}

    def records(lo: int, hi: int) -> Iterator[bytes]:
        for length in np.unique(lengths[lo:hi]):
            rows = lo + np.flatnonzero(lengths[lo:hi] == length)
            yield _copy_records(rows, length, days, names[length][codes[rows]], values, src, micros)

    raw = conn.connection.driver_connection
    assert raw is not None
    statement = f"COPY closes ({', '.join(_CLOSE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            # the same connection as `conn`: inside its transaction
            copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))  # signature, flags, extension
            for lo in range(0, len(values), _BULK_ROWS):  # bounded memory
                for chunk in records(lo, min(lo + _BULK_ROWS, len(values))):
                    copy.write(chunk)
            copy.write((-1).to_bytes(2, "big", signed=True))
    except conn.dialect.loaded_dbapi.IntegrityError as err:
        # what SQLAlchemy raises for the same violation through an INSERT
        raise sa.exc.IntegrityError(statement, None, err) from err


def _copy_records(
    rows: np.ndarray,
    length: int,
    days: np.ndarray,
    tickers: np.ndarray,
    values: np.ndarray,
    source: bytes,
    micros: int,
) -> bytes:
    """Binary COPY tuples of `rows`, whose tickers are all `length` bytes long."""
    record = np.empty(
        len(rows),
        dtype=[
            ("fields", ">i2"),
            ("date_len", ">i4"),
            ("date", ">i4"),
            ("ticker_len", ">i4"),
            ("ticker", f"S{length}"),
            ("close_len", ">i4"),
            ("close", ">f8"),
            ("source_len", ">i4"),
            ("source", f"S{len(source)}"),
            ("time_len", ">i4"),
            ("time", ">i8"),
        ],
    )
    record["fields"] = len(_CLOSE_COLUMNS)
    record["date_len"], record["date"] = 4, days[rows]
    record["ticker_len"], record["ticker"] = length, tickers
    record["close_len"], record["close"] = 8, values[rows]
    record["source_len"], record["source"] = len(source), source
    record["time_len"], record["time"] = 8, micros
    return record.tobytes()


def correct_closes(
    bind: sa.Engine | sa.Connection,
    rows: pd.DataFrame,
    *,
    source: str,
    corrected_at: Any = None,
) -> int:
    """Overwrite stored closes and log each change in ``close_corrections``.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    rows : pandas.DataFrame
        Long, columns ``date, ticker, close`` (the new values); every pair must be stored.
    source : str
        Origin of the corrected values.
    corrected_at : datetime-like, optional
        tz-aware; default now.

    Returns
    -------
    int
        Closes overwritten.

    Raises
    ------
    ValueError
        A pair has no stored close (nothing is changed).
    """
    _long_closes(rows, "rows")
    stamp = _now() if corrected_at is None else _time(corrected_at, "corrected_at")
    source = _name(source, "source")  # type: ignore[assignment]
    if len(rows) == 0:
        return 0
    new = [
        (d, str(t), float(c))
        for d, t, c in zip(
            _date_list(rows["date"], "rows['date']"), rows["ticker"], rows["close"], strict=True
        )
    ]
    with transaction(bind) as conn:
        old = _stored(conn, [(d, t) for d, t, _ in new])
        missing = [(d, t) for d, t, _ in new if (d, t) not in old]
        if missing:
            d, t = missing[0]
            raise ValueError(f"no stored close to correct for {d:%Y-%m-%d}, ticker {t}")
        conn.execute(
            closes.update()
            .where(closes.c.date == sa.bindparam("b_date"))
            .where(closes.c.ticker == sa.bindparam("b_ticker"))
            .values(close=sa.bindparam("b_close"), source=source, ingested_at=stamp),
            [{"b_date": d, "b_ticker": t, "b_close": c} for d, t, c in new],
        )
        conn.execute(
            close_corrections.insert().values(source=source, corrected_at=stamp),
            [{"date": d, "ticker": t, "old_close": old[(d, t)], "new_close": c} for d, t, c in new],
        )
        _invalidate(conn, min(d for d, _, _ in new), "corrected close")
    return len(new)


def _stored(conn: sa.Connection, keys: Sequence[tuple[Any, str]]) -> dict[tuple[Any, str], float]:
    """Stored closes for (date, ticker) keys, as {(datetime.date, ticker): close}."""
    if not keys:
        return {}
    dates = [d for d, _ in keys]
    tickers = sorted({t for _, t in keys})
    query = sa.select(closes.c.date, closes.c.ticker, closes.c.close).where(
        closes.c.date.between(min(dates), max(dates)), closes.c.ticker.in_(tickers)
    )
    wanted = set(keys)
    return {(d, t): c for d, t, c in conn.execute(query) if (d, t) in wanted}


def stored_closes(bind: sa.Engine | sa.Connection, rows: pd.DataFrame) -> pd.Series:
    """The stored close of each (date, ticker) row, NaN where none is stored.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    rows : pandas.DataFrame
        Columns ``date`` (date-like) and ``ticker``.

    Returns
    -------
    pandas.Series
        Shape ``(len(rows),)``, ``float64``, aligned with ``rows.index``.
    """
    if len(rows) == 0:
        return pd.Series(np.empty(0), index=rows.index, name="stored_close")
    days = _day_numbers(rows["date"], "rows['date']")
    tickers = rows["ticker"].astype(str).to_numpy(dtype=object)
    first = _EPOCH + pd.Timedelta(days=int(days.min()))
    last = _EPOCH + pd.Timedelta(days=int(days.max()))
    query = sa.select(closes.c.date, closes.c.ticker, closes.c.close).where(
        closes.c.date.between(first.date(), last.date()),
        closes.c.ticker.in_(sorted(set(tickers.tolist()))),
    )
    with _reading(bind) as conn:
        found_days, found_codes, found_names, found = joined(_fetch_closes(conn, query))
    if not len(found):  # a bulk load into an empty range: no index of the batch to build
        return pd.Series(np.full(len(rows), np.nan), index=rows.index, name="stored_close")
    stored = pd.MultiIndex.from_arrays([found_days, found_names[found_codes]])
    position = stored.get_indexer(pd.MultiIndex.from_arrays([days, tickers]))
    values = np.where(
        position >= 0, found[np.maximum(position, 0)] if len(found) else np.nan, np.nan
    )
    return pd.Series(values, index=rows.index, name="stored_close")


def read_close_corrections(bind: sa.Engine | sa.Connection) -> pd.DataFrame:
    """The correction log, oldest first.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, date, ticker, old_close, new_close, source, corrected_at``.
    """
    query = sa.select(close_corrections).order_by(close_corrections.c.id)
    with _reading(bind) as conn:
        return _frame(conn.execute(query), ["date"])
