"""Closes read back as a wide panel, by the fastest route each store offers.

Three readers return the same arrays (day numbers, ticker codes, the distinct tickers,
closes) and `read_closes` scatters them into the panel:

* `_fetch_closes`: any SQLAlchemy connection, DBAPI rows in bounded batches;
* `_copy_out_closes`: PostgreSQL's binary ``COPY ... TO STDOUT``, read by numpy;
* `_stream_closes`: a SQLite file's whole history (``bulk=True``), read into Arrow by the
  ADBC SQLite driver in a child process (:mod:`service.store.sqlite_stream` says why a
  child). 14.3 M closes: about 5 s, where the ``sqlite3`` module needs about 17 s.
"""

from __future__ import annotations

import contextlib
import importlib.util
import operator
import os
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from service.store.engine import _reading, sqlite_file
from service.store.schema import closes
from service.store.values import _DATE_DTYPE, _EPOCH, _date


def read_closes(
    bind: sa.Engine | sa.Connection,
    *,
    start: Any = None,
    end: Any = None,
    tickers: Sequence[str] | None = None,
    bulk: bool = False,
) -> pd.DataFrame:
    """Stored closes as a wide price panel.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    start, end : date-like, optional
        Inclusive date bounds (default: everything).
    tickers : sequence of str, optional
        Columns, in this order; a ticker with nothing stored is an all-NaN column. Default:
        every ticker with a close between ``start`` and ``end``, sorted.
    bulk : bool, default False
        A read of much of the history (a cold start, the parity check). On a SQLite file
        (`bind` an engine) the rows are streamed through Arrow by a child process, about
        3x faster than the ``sqlite3`` module and at a start-up cost of a fraction of a
        second, so a day's read leaves it off. Elsewhere it changes nothing.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_dates, n_tickers)``, ``float64``, NaN where no close is stored; index
        ``date`` (tz-naive, increasing: every date on which one of the tickers has a close);
        columns named ``ticker``. Not forward-filled.
    """
    first = None if start is None else _date(start, "start")
    last = None if end is None else _date(end, "end")
    query = sa.select(closes.c.date, closes.c.ticker, closes.c.close)
    if first is not None:
        query = query.where(closes.c.date >= first)
    if last is not None:
        query = query.where(closes.c.date <= last)
    if tickers is not None:
        if isinstance(tickers, str):
            raise TypeError("`tickers` must be a sequence of tickers, not one string")
        tickers = list(tickers)
        query = query.where(closes.c.ticker.in_(tickers))
    streamed = _streamed_table(bind) if bulk else None
    if streamed is not None:
        chunks, unique_names = _stream_closes(*streamed, first, last, tickers)
    else:
        with _reading(bind) as conn:
            if (
                tickers is not None
                and conn.dialect.name == "postgresql"
                and len(set(tickers)) == len(tickers)
            ):
                chunks, unique_names = _copy_out_closes(conn, first, last, tickers, bulk=bulk)
            else:
                chunks, unique_names = _fetch_closes(conn, query)
    columns = tickers if tickers is not None else sorted(unique_names.tolist())
    column = {t: k for k, t in enumerate(columns)}
    where = np.array([column[t] for t in unique_names], dtype=np.int64)
    # the distinct days, increasing, and each day's row: day numbers span a few thousand,
    # so a mark per day and a running count do in one pass what a sort of every row would
    lo = min((int(c[0].min()) for c in chunks), default=0)
    hi = max((int(c[0].max()) for c in chunks), default=-1)
    present = np.zeros(hi - lo + 1, dtype=bool)
    for days, _, _ in chunks:
        present[days - lo] = True
    unique_days = np.flatnonzero(present) + lo
    row_of = np.cumsum(present) - 1
    # scatter into the wide panel: rows by date, columns in the requested order
    wide = np.full((len(unique_days), len(columns)), np.nan)
    for days, codes, values in chunks:
        wide[row_of[days - lo], where[codes]] = values
    index = pd.DatetimeIndex(_EPOCH + pd.to_timedelta(unique_days, unit="D"), name="date")
    return pd.DataFrame(
        wide,
        index=index.astype(_DATE_DTYPE),
        columns=pd.Index(columns, name="ticker"),
    )


_Rows = tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]
"""What each reader returns: chunks of rows as ``(days, codes, closes)`` arrays (days since
2000-01-01, integers; each row's ticker as an index into the names; float64 closes) and the
distinct ticker names (an object array)."""


def _names(code_of: dict[str, int]) -> np.ndarray:
    """The names of `code_of` as an object array, in code order."""
    names = np.empty(len(code_of), dtype=object)
    names[:] = list(code_of)
    return names


def joined(rows: _Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`rows` as four arrays: days, ticker codes, ticker names, closes."""
    chunks, names = rows
    if not chunks:
        empty = np.empty(0, np.int64)
        return empty, empty, names, np.empty(0, np.float64)
    days, codes, values = (np.concatenate([c[k] for c in chunks]) for k in range(3))
    return days.astype(np.int64), codes.astype(np.int64), names, values


# one row of `_copy_out_closes`'s binary COPY: field count, then (length, value) per field
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("day_length", ">i4"),
        ("day", ">i4"),
        ("ticker_length", ">i4"),
        ("ticker", ">i4"),
        ("close_length", ">i4"),
        ("close", ">f8"),
    ]
)
# the head of the 2-D float8 array of a per-ticker COPY row: its length, dimensions, null
# flag, element type, then (size, lower bound) of each dimension
_ARRAY_HEAD = struct.Struct(">iiiIiiii")
_COPY_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])  # one float8 of the array
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"


def _copy_out_closes(
    conn: sa.Connection, start: Any, end: Any, tickers: list[str], *, bulk: bool
) -> _Rows:
    """As `_fetch_closes`, on PostgreSQL through a binary ``COPY ... TO STDOUT``.

    A day's read comes as one fixed-width row per close (day number, the ticker's position
    in `tickers` through a join on ``unnest ... WITH ORDINALITY``, close), which numpy reads
    as one structured array. A bulk read comes as one row per ticker: its name and a 2-D
    float8 array of its (day, close) pairs (one aggregate, so each day stays with its
    close; days are integers, exact in float8). psycopg hands each COPY message to Python
    on its own, about 1 us a message: 14.3 M closes a row each took 20-30 s here, a
    ticker a row takes the server's 7 s.
    """
    where = ["TRUE"]
    params: list[Any] = [tickers]
    if start is not None:
        where.append("c.date >= %s")
        params.append(start)
    if end is not None:
        where.append("c.date <= %s")
        params.append(end)
    if bulk:
        statement = (
            "COPY (SELECT c.ticker, "
            "array_agg(ARRAY[(c.date - DATE '2000-01-01')::float8, c.close]) "
            f"FROM closes AS c WHERE c.ticker = ANY(%s) AND {' AND '.join(where)} "
            "GROUP BY c.ticker) TO STDOUT (FORMAT BINARY)"
        )
        # the per-ticker arrays of 14 M closes take ~400 MB in the server's hash table;
        # at the default 4 MB work_mem it spills to disk (10 s instead of 7); LOCAL: this
        # read's transaction only
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    else:
        statement = (
            "COPY (SELECT (c.date - DATE '2000-01-01')::int4, (u.idx - 1)::int4, c.close "
            "FROM closes AS c JOIN unnest(%s::text[]) WITH ORDINALITY AS u(ticker, idx) "
            f"ON c.ticker = u.ticker WHERE {' AND '.join(where)}) TO STDOUT (FORMAT BINARY)"
        )
    buffer = bytearray()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(statement, params) as copy:
        for block in copy:
            buffer += block
    if not buffer.startswith(_COPY_HEADER):
        raise RuntimeError("unexpected COPY BINARY header from PostgreSQL")
    extension = int.from_bytes(buffer[15:19], "big")
    body = memoryview(buffer)[19 + extension : len(buffer) - 2]  # less the -1 trailer
    names = np.empty(len(tickers), dtype=object)
    names[:] = tickers
    if bulk:
        return _per_ticker_rows(body, {t: k for k, t in enumerate(tickers)}), names
    rows = np.frombuffer(body, dtype=_COPY_ROW)
    if len(rows) and not (rows["fields"] == 3).all():
        raise RuntimeError("unexpected COPY BINARY row layout from PostgreSQL")
    if not len(rows):
        return [], names
    return [(rows["day"].astype(np.int64), rows["ticker"], rows["close"].astype(np.float64))], names


def _per_ticker_rows(
    body: memoryview, code_of: dict[str, int]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The chunks of a per-ticker COPY body: one ticker's (days, codes, closes) each."""
    chunks = []
    at = 0
    while at < len(body):
        fields, length = struct.unpack_from(">hi", body, at)
        ticker = bytes(body[at + 6 : at + 6 + length]).decode()
        at += 6 + length
        size, dimensions, nulls, _, rows, _, columns, _ = _ARRAY_HEAD.unpack_from(body, at)
        if fields != 2 or dimensions != 2 or nulls != 0 or columns != 2:
            raise RuntimeError("unexpected COPY BINARY row layout from PostgreSQL")
        pairs = np.frombuffer(
            body, dtype=_COPY_ELEMENT, count=2 * rows, offset=at + _ARRAY_HEAD.size
        )
        if not (pairs["length"] == 8).all():
            raise RuntimeError("unexpected COPY BINARY array element from PostgreSQL")
        values = pairs["value"].reshape(rows, 2)
        code = np.full(rows, code_of[ticker], np.int64)
        chunks.append((values[:, 0].astype(np.int64), code, values[:, 1].copy()))
        at += 4 + size  # the array's length field, then the array
    return chunks


_FETCH_ROWS = 262_144  # rows per fetchmany: a bounded batch of Python objects at a time


def _fetch_closes(conn: sa.Connection, query: sa.Select[Any]) -> _Rows:
    """Rows (date, ticker, close) of `query` as `_Rows`, fetched in bounded batches.

    The DBAPI rows are read `_FETCH_ROWS` at a time and turned
    into arrays at once: SQLAlchemy Row objects cost ~0.6 s per 150k closes, and 13.5 M
    rows held as Python tuples take ~3 GB, where these arrays take 24 bytes a row. Each
    distinct date is parsed once (SQLite returns ISO strings, psycopg dates).
    """
    result = conn.execute(query)
    cursor = result.cursor
    day_of: dict[Any, int] = {}
    code_of: dict[str, int] = {}
    days, codes, values = [], [], []
    while cursor is not None:
        rows = cursor.fetchmany(_FETCH_ROWS)
        if not rows:
            break
        # column by column (zip(*rows) is 8x slower on millions of rows)
        values.append(np.fromiter(map(operator.itemgetter(2), rows), np.float64, len(rows)))
        local, uniques = pd.factorize(np.array(list(map(operator.itemgetter(0), rows)), object))
        new = [d for d in uniques if d not in day_of]
        if new:
            parsed = pd.DatetimeIndex(pd.to_datetime(new))
            day_of.update(zip(new, (parsed - _EPOCH).days.tolist(), strict=True))
        days.append(np.array([day_of[d] for d in uniques], np.int64)[local])
        local, uniques = pd.factorize(np.array(list(map(operator.itemgetter(1), rows)), object))
        for name in uniques:
            code_of.setdefault(name, len(code_of))
        codes.append(np.array([code_of[t] for t in uniques], np.int64)[local])
        del rows
    return list(zip(days, codes, values, strict=True)), _names(code_of)


_STREAM_ROWS = 262_144  # rows per Arrow record batch from a child
_STREAM_PARTS = 2  # children scanning rowid ranges side by side (at most one per CPU)
_STREAM_MIN_ROWS = 250_000  # smaller tables: the sqlite3 fetch (a child starts in ~0.2 s)
_STREAM_SCRIPT = Path(__file__).with_name("sqlite_stream.py")


def _streamed_table(bind: sa.Engine | sa.Connection) -> tuple[str, int, int] | None:
    """``(file, first rowid, last rowid)`` when a bulk read of `bind` should stream: an
    engine on a SQLite file, the driver installed, and at least `_STREAM_MIN_ROWS` rowids
    (below that the ``sqlite3`` fetch ends before a child has started)."""
    database = sqlite_file(bind) if isinstance(bind, sa.Engine) else None
    if database is None or importlib.util.find_spec("adbc_driver_sqlite") is None:
        return None
    with _reading(bind) as conn:
        # SQLite's implicit row id; two subqueries, as SQLite looks one min or max up in
        # the B-tree but scans the table for both in one query
        first, last = conn.execute(
            sa.text("SELECT (SELECT min(rowid) FROM closes), (SELECT max(rowid) FROM closes)")
        ).one()
    if first is None or last - first + 1 < _STREAM_MIN_ROWS:
        return None
    return database, int(first), int(last)


def _stream_closes(
    database: str, first: int, last: int, start: Any, end: Any, tickers: list[str] | None
) -> _Rows:
    """As `_fetch_closes`, from rowids `first`..`last` of a SQLite file, through
    `sqlite_stream` in child processes.

    The rowid range is split between up to `_STREAM_PARTS` children, each read by
    a thread of this process, so that SQLite's scans run side by side and this process
    converts one part while a child still reads another. Each part is its own read
    transaction: a close committed meanwhile may be in one part and not another, as it
    may land just after any read; the write's own invalidation (`states._invalidate`)
    reruns what it changes. Rows added past `last` since are not read.

    The children read every ticker; rows of tickers outside `tickers` are dropped here (a
    ``ticker IN`` filter costs SQLite more than it saves). Each batch's tickers are
    dictionary-encoded by Arrow, so a Python object is made per distinct ticker and batch,
    never per row. A child's exit status is checked after its stream ends: a failure
    half-way raises rather than returning part of the history.
    """
    parts = max(1, min(_STREAM_PARTS, os.cpu_count() or 1, last - first + 1))
    edges = np.linspace(first, last + 1, parts + 1).round().astype(np.int64).tolist()
    since = "" if start is None else start.isoformat()
    until = "" if end is None else end.isoformat()
    wanted = None if tickers is None else {t: k for k, t in enumerate(tickers)}
    code_of: dict[str, int] = {} if wanted is None else dict(wanted)
    lock = threading.Lock()  # code_of is shared by the parts

    def read_part(lo: int, hi: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for batch in _child_batches(database, since, until, lo, hi):
            encoded = batch.column(1).dictionary_encode()
            names = encoded.dictionary.to_pylist()
            with lock:
                if wanted is None:
                    for name in names:
                        code_of.setdefault(name, len(code_of))
                local = np.array([code_of.get(name, -1) for name in names], np.int64)
            code = local[encoded.indices.to_numpy()]
            days = batch.column(0).to_numpy()
            values = batch.column(2).to_numpy()
            if wanted is not None and (code < 0).any():
                keep = code >= 0
                code, days, values = code[keep], days[keep], values[keep]
            out.append((days, code, values))
        return out

    with ThreadPoolExecutor(parts, thread_name_prefix="closes-read") as pool:
        parts_read = pool.map(read_part, edges[:-1], [e - 1 for e in edges[1:]])
        chunks = [chunk for part in parts_read for chunk in part]
    return chunks, _names(code_of)


def _child_batches(
    database: str, start: str, end: str, first: int, last: int
) -> Iterator[pa.RecordBatch]:
    """The record batches `sqlite_stream` writes for rowids `first`..`last` of `database`."""
    command = [
        sys.executable,
        "-P",
        str(_STREAM_SCRIPT),
        database,
        start,
        end,
        str(first),
        str(last),
        str(_STREAM_ROWS),
    ]
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        assert child.stdout is not None
        try:
            # a child that dies mid-stream leaves it truncated: its status says why, below
            with contextlib.suppress(pa.ArrowInvalid):
                yield from pa.ipc.open_stream(child.stdout)
            child.stdout.close()
            status = child.wait()
        finally:
            if child.poll() is None:  # the consumer stopped early
                child.kill()
                child.wait()
        if status != 0:
            stderr.seek(0)
            reason = stderr.read().decode(errors="replace").strip() or f"exit status {status}"
            raise RuntimeError(f"bulk read of the closes in {database} failed: {reason}")
