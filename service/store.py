"""The service's durable state: SQLAlchemy Core schema and the functions that use it.

Tables (:data:`metadata`):

* ``closes`` -- one adjusted close per (date, ticker), with its source and ingestion time;
* ``close_corrections`` -- the log of every stored close that was overwritten;
* ``positions`` -- one row per (as-of date, model name, model version, ticker): signal X in
  [-1, 1], annualised vol, target weight (NULL where the asset is not tradable) and a stale
  flag, pointing at the cycle run that wrote it;
* ``cycle_runs`` -- every cycle attempt: status, timings, error, counts;
* ``model_loads`` -- every attempt to load a model (accepted or refused, and why);
* ``paper_ledger`` -- the daily paper-trading track record per model;
* ``feature_states`` -- the incremental feature state (`momentum.feature_state`) as of recent
  sessions, per feature key (features, universe and rows kept), so a cycle reads the day's
  closes instead of the whole history. Writing a close on date d drops every state as of d or
  later, in the same transaction: a state never outlives the closes it was built from.

Every function takes an :class:`sqlalchemy.Engine` or a :class:`sqlalchemy.Connection` first and
speaks plain Python and pandas. Given an engine, a write function runs in its own transaction
(all or nothing); given a connection that is already in a transaction, it joins that
transaction, so a caller can make several writes atomic together.

Conventions: a *date* is a tz-naive midnight :class:`pandas.Timestamp` (what
:func:`service.calendar.as_date` accepts: ``"2022-01-03"``, ``datetime.date``, ...); a *time*
is tz-aware and stored in UTC (naive times are refused); dates come back as ``DatetimeIndex``
values in the unit of :mod:`momentum.data` panels.

SQLite (the default, a local file) runs in WAL mode with foreign keys on and a busy timeout;
SQLAlchemy, not the ``sqlite3`` module, emits ``BEGIN`` so that reads inside a write
transaction are isolated too, and write transactions take the database lock up front
(``BEGIN IMMEDIATE``) so that two writers queue instead of failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from service.calendar import as_date

__all__ = [
    "CYCLE_STATUSES",
    "clear_reruns",
    "NAME_LENGTH",
    "TICKER_LENGTH",
    "close_corrections",
    "closes",
    "closes_dates",
    "correct_closes",
    "create_engine",
    "data_version_probe",
    "cycle_runs",
    "drop_feature_states",
    "feature_state_stamp",
    "feature_states",
    "first_close_date",
    "insert_closes",
    "latest_feature_state",
    "latest_positions",
    "metadata",
    "model_loads",
    "newest_close_date",
    "paper_ledger",
    "pending_rerun",
    "positions",
    "positions_dates",
    "positions_signals",
    "read_close_corrections",
    "read_closes",
    "read_cycle_runs",
    "read_ledger",
    "read_model_loads",
    "read_positions",
    "reruns",
    "record_failed_cycle",
    "record_model_load",
    "stored_closes",
    "transaction",
    "write_cycle",
    "write_feature_state",
    "write_ledger_row",
]

CYCLE_STATUSES = ("running", "succeeded", "failed", "skipped")
"""Values of ``cycle_runs.status``."""

# Dates come back in the unit of momentum.data panels (``us`` on pandas 3, ``ns`` on 2).
_DATE_DTYPE = np.dtype(str(pd.date_range("2000-01-03", periods=1).dtype))
_BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another writer before failing
_WRITE = "momentum_write"  # execution option: this connection is about to write
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
NAME_LENGTH = 128
"""Longest model name, version or close source the store keeps (the schema's width)."""
TICKER_LENGTH = 64
"""Longest ticker the store keeps (SQLite does not enforce a width: the callers do)."""


class _UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware instant stored in UTC on every backend.

    PostgreSQL keeps it in ``timestamptz``; SQLite has no time zones, so the UTC wall-clock
    time is stored and UTC is re-attached on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pandas.Timestamp is a datetime too
            value = pd.Timestamp(value).to_pydatetime()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"times must be timezone-aware, got {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Constraint names are fixed so that migrations and error messages are stable across backends.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

closes = sa.Table(
    "closes",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("ticker", sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("source", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("ingested_at", _UtcDateTime, nullable=False),
    sa.CheckConstraint("close > 0", name="close_positive"),
)

close_corrections = sa.Table(
    "close_corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("ticker", sa.String(TICKER_LENGTH), nullable=False),
    sa.Column("old_close", sa.Double, nullable=False),
    sa.Column("new_close", sa.Double, nullable=False),
    sa.Column("source", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("corrected_at", _UtcDateTime, nullable=False),
    sa.Index(None, "date", "ticker"),
)

cycle_runs = sa.Table(
    "cycle_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("model_name", sa.String(NAME_LENGTH), nullable=False),
    # NULL when the cycle failed before a model version was known (e.g. no model loaded)
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", _UtcDateTime, nullable=False),
    sa.Column("finished_at", _UtcDateTime),
    sa.Column("error", sa.Text),
    sa.Column("n_assets", sa.Integer),
    sa.Column("n_stale", sa.Integer),
    sa.Column("data_cutoff", sa.Date),  # newest close date the cycle used
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in CYCLE_STATUSES) + ")", name="status"
    ),
    sa.Index(None, "model_name", "as_of"),
)

# The primary key is the idempotency key: re-running a date replaces one set of rows.
positions = sa.Table(
    "positions",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("ticker", sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("signal", sa.Double),  # X in [-1, 1]; NULL: not tradable on as_of
    sa.Column("vol", sa.Double),  # annualised: daily EWM std x sqrt(252)
    sa.Column("weight", sa.Double),  # eq. (1): X x vol_target / vol / N_t
    sa.Column("stale", sa.Boolean, nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("cycle_runs.id"), nullable=False),
    sa.Index(None, "model_name", "model_version", "as_of"),
)

model_loads = sa.Table(
    "model_loads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("sha256", sa.String(64)),
    sa.Column("provider", sa.String(64)),  # onnxruntime execution provider actually used
    sa.Column("loaded_at", _UtcDateTime, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),  # why a model was refused
)

paper_ledger = sa.Table(
    "paper_ledger",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("gross_return", sa.Double, nullable=False),
    sa.Column("cost", sa.Double, nullable=False),
    sa.Column("net_return", sa.Double, nullable=False),  # eq. (13): gross - c x turnover
    sa.Column("turnover", sa.Double, nullable=False),
    sa.Column("equity", sa.Double, nullable=False),
    # weighted assets whose return over the day could not be computed (a close is missing)
    sa.Column("missing", sa.Integer, nullable=False, server_default="0"),
)

# Work a changed close leaves: positions dated `since` or later were computed from the old
# value; the service reruns those sessions (oldest marker first) and then deletes the rows.
reruns = sa.Table(
    "reruns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("since", sa.Date, nullable=False),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

feature_states = sa.Table(
    "feature_states",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),  # the last session the state consumed
    sa.Column("steps", sa.Integer, nullable=False),  # sessions consumed
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),  # FeatureState.to_bytes()
)
# tens of MB of float64 a day at thousands of assets: PostgreSQL's default TOAST compression
# (pglz) costs most of a warm cycle's write and gains little on such data
event.listen(
    feature_states,
    "after_create",
    sa.DDL("ALTER TABLE feature_states ALTER COLUMN state SET STORAGE EXTERNAL").execute_if(
        dialect="postgresql"
    ),
)


# --------------------------------------------------------------------------------------------
# engine and transactions
# --------------------------------------------------------------------------------------------


def _masked(url: str | URL) -> str:
    """The URL for messages, password hidden."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _URL_PASSWORD.sub(r"\1***@", str(url))


def create_engine(url: str | URL) -> sa.Engine:
    """Open the store and create any missing tables.

    Parameters
    ----------
    url : str or sqlalchemy.URL
        ``sqlite:///path/to/momentum.db`` (the parent directory is created) or
        ``postgresql+psycopg://user:password@host:5432/db``; a bare ``postgresql://`` URL uses
        psycopg 3, the driver the service ships with.

    Returns
    -------
    sqlalchemy.Engine
        SQLite: WAL journal, foreign keys on, a 30 s busy timeout, SQLAlchemy-driven
        ``BEGIN``. PostgreSQL: connections are pinged before use (``pool_pre_ping``).

    Raises
    ------
    ValueError
        The URL cannot be parsed, names another backend, or its driver is not installed;
        the message shows the URL with the password masked.
    ConnectionError
        The database cannot be reached or opened.
    """
    shown = _masked(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"invalid database URL {shown!r}") from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = _sqlite_engine(parsed)
        elif backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        else:
            raise ValueError(
                f"database URL {shown!r}: unsupported backend {backend!r} "
                "(use sqlite or postgresql)"
            )
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ValueError(f"database URL {shown!r}: driver not available ({exc})") from None
    try:
        with transaction(engine) as conn:
            metadata.create_all(conn)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        engine.dispose()
        raise ConnectionError(f"cannot open database {shown}: {exc.orig}") from exc
    return engine


def _sqlite_engine(url: URL) -> sa.Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (below): the sqlite3 module would only begin before the
        # first INSERT/UPDATE/DELETE, leaving earlier reads outside the transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the cycle's writer
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A writer takes the lock at BEGIN: a deferred transaction that reads and then
        # writes can fail with "database is locked" when it tries to upgrade its lock.
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def data_version_probe(engine: sa.Engine) -> Callable[[], int] | None:
    """A cheap "has anything changed?" for a SQLite file store; None for other stores.

    The returned function reads ``PRAGMA data_version`` on a connection of its own, which
    never writes: the value changes whenever any other connection (of this process or
    another) has committed since the last call. A few microseconds, no pool checkout and
    no transaction, so a cache can be validated on every request. PostgreSQL and in-memory
    SQLite have no such counter: callers query what they need instead.
    """
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query:  # URI forms: leave them to the engine
        return None
    connection = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
    lock = threading.Lock()

    def probe() -> int:
        with lock:
            return int(connection.execute("PRAGMA data_version").fetchone()[0])

    return probe


@contextlib.contextmanager
def transaction(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """A write transaction: committed when the block ends, rolled back if it raises.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
        An engine: a new connection and transaction. A connection already in a transaction:
        that transaction (the caller commits). A connection without one: a new transaction on
        it.

    Yields
    ------
    sqlalchemy.Connection
    """
    if isinstance(bind, sa.Connection):
        if bind.in_transaction():
            yield bind
        else:
            with bind.begin():
                yield bind
        return
    with bind.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def _reading(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    if isinstance(bind, sa.Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


# --------------------------------------------------------------------------------------------
# value conversion
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# closes
# --------------------------------------------------------------------------------------------


def read_closes(
    bind: sa.Engine | sa.Connection,
    *,
    start: Any = None,
    end: Any = None,
    tickers: Sequence[str] | None = None,
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

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_dates, n_tickers)``, ``float64``, NaN where no close is stored; index
        ``date`` (tz-naive, increasing: every date on which one of the tickers has a close);
        columns named ``ticker``. Not forward-filled.
    """
    query = sa.select(closes.c.date, closes.c.ticker, closes.c.close)
    if start is not None:
        query = query.where(closes.c.date >= _date(start, "start"))
    if end is not None:
        query = query.where(closes.c.date <= _date(end, "end"))
    if tickers is not None:
        if isinstance(tickers, str):
            raise TypeError("`tickers` must be a sequence of tickers, not one string")
        tickers = list(tickers)
        query = query.where(closes.c.ticker.in_(tickers))
    with _reading(bind) as conn:
        if (
            tickers is not None
            and conn.dialect.name == "postgresql"
            and len(set(tickers)) == len(tickers)
        ):
            first = None if start is None else _date(start, "start")
            last = None if end is None else _date(end, "end")
            days, name_codes, unique_names, values = _copy_out_closes(conn, first, last, tickers)
        else:
            days, name_codes, unique_names, values = _fetch_closes(conn, query)
    columns = tickers if tickers is not None else sorted(unique_names.tolist())
    column = {t: k for k, t in enumerate(columns)}
    day_codes, unique_days = pd.factorize(days, sort=True)
    # scatter into the wide panel: rows by date, columns in the requested order
    where = np.array([column[t] for t in unique_names], dtype=np.int64)[name_codes]
    wide = np.full((len(unique_days), len(columns)), np.nan)
    wide[day_codes, where] = values
    index = pd.DatetimeIndex(_EPOCH + pd.to_timedelta(unique_days, unit="D"), name="date")
    return pd.DataFrame(
        wide,
        index=index.astype(_DATE_DTYPE),
        columns=pd.Index(columns, name="ticker"),
    )


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
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"


def _copy_out_closes(
    conn: sa.Connection, start: Any, end: Any, tickers: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As `_fetch_closes`, on PostgreSQL through a binary ``COPY ... TO STDOUT``.

    The server turns each row into fixed-width binary (the day number, the ticker's position
    in `tickers` through a join on ``unnest ... WITH ORDINALITY``, the close), which numpy
    reads as one structured array: no Python object per row at all.
    """
    where = ["TRUE"]
    params: list[Any] = [tickers]
    if start is not None:
        where.append("c.date >= %s")
        params.append(start)
    if end is not None:
        where.append("c.date <= %s")
        params.append(end)
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
    rows = np.frombuffer(body, dtype=_COPY_ROW)
    if len(rows) and not (rows["fields"] == 3).all():
        raise RuntimeError("unexpected COPY BINARY row layout from PostgreSQL")
    names = np.empty(len(tickers), dtype=object)
    names[:] = tickers
    return (
        rows["day"].astype(np.int64),
        rows["ticker"].astype(np.int64),
        names,
        rows["close"].astype(np.float64),
    )


_FETCH_ROWS = 262_144  # rows per fetchmany: a bounded batch of Python objects at a time


def _fetch_closes(
    conn: sa.Connection, query: sa.Select[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (date, ticker, close) of `query` as arrays, fetched in bounded batches.

    Returns ``(days, codes, tickers, closes)``: days since 2000-01-01 (int64), each row's
    ticker as an index into `tickers` (int64; `tickers` an object array of the distinct
    names), closes (float64). The DBAPI rows are read `_FETCH_ROWS` at a time and turned
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
    if not values:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, object), np.empty(0, np.float64)
    tickers = np.empty(len(code_of), dtype=object)
    tickers[:] = list(code_of)
    return np.concatenate(days), np.concatenate(codes), tickers, np.concatenate(values)


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
# would have sent. `_EPOCH` is PostgreSQL's date and timestamp origin.
_EPOCH = pd.Timestamp("2000-01-01")
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
        found_days, found_codes, found_names, found = _fetch_closes(conn, query)
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


# --------------------------------------------------------------------------------------------
# cycles and positions
# --------------------------------------------------------------------------------------------

_RUN_KEYS = (
    "as_of",
    "model_name",
    "model_version",
    "status",
    "started_at",
    "finished_at",
    "error",
    "n_assets",
    "n_stale",
    "data_cutoff",
)


def _run_row(run: Mapping[str, Any], statuses: Sequence[str], default: str) -> dict[str, Any]:
    """Validate a cycle-run mapping into column values."""
    if not isinstance(run, Mapping):
        raise TypeError(f"`run` must be a mapping, got {type(run).__name__}")
    _check_keys(run, _RUN_KEYS, "run")
    status = run.get("status", default)
    if status not in statuses:
        raise ValueError(f"`run['status']` must be one of {', '.join(statuses)}, got {status!r}")
    if "as_of" not in run:
        raise ValueError("`run` needs 'as_of'")
    started, finished, cutoff = (run.get(k) for k in ("started_at", "finished_at", "data_cutoff"))
    return {
        "as_of": _date(run["as_of"], "run['as_of']"),
        "model_name": _name(run.get("model_name"), "run['model_name']"),
        "model_version": _name(
            run.get("model_version"), "run['model_version']", optional=status != "succeeded"
        ),
        "status": status,
        "started_at": _now() if started is None else _time(started, "run['started_at']"),
        "finished_at": _now() if finished is None else _time(finished, "run['finished_at']"),
        "error": None if run.get("error") is None else str(run["error"]),
        "n_assets": _count(run.get("n_assets"), "run['n_assets']"),
        "n_stale": _count(run.get("n_stale"), "run['n_stale']"),
        "data_cutoff": None if cutoff is None else _date(cutoff, "run['data_cutoff']"),
    }


def _position_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Validate a positions frame into (ticker, signal, vol, weight, stale) records."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`positions` must be a DataFrame, got {type(frame).__name__}")
    missing = {"signal", "vol", "weight"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"`positions` needs columns signal, vol, weight; missing {sorted(missing)}"
        )
    labels = frame["ticker"] if "ticker" in frame.columns else frame.index
    tickers = [str(t) for t in labels]
    if not tickers:
        raise ValueError("`positions` is empty")
    seen: set[str] = set()
    for ticker in tickers:
        if not ticker.strip():
            raise ValueError("`positions` has an empty ticker")
        if ticker in seen:
            raise ValueError(f"`positions` lists ticker {ticker} twice")
        seen.add(ticker)
    stale = frame["stale"] if "stale" in frame.columns else pd.Series(False, index=frame.index)
    if stale.isna().any() or not pd.api.types.is_bool_dtype(stale):
        raise ValueError("`positions['stale']` must be booleans without missing values")
    values = {c: frame[c].to_numpy(dtype=np.float64) for c in ("signal", "vol", "weight")}
    records = []
    for i, ticker in enumerate(tickers):
        signal, vol, weight = (values[c][i] for c in ("signal", "vol", "weight"))
        for column, value in (("signal", signal), ("vol", vol), ("weight", weight)):
            if np.isinf(value):
                raise ValueError(f"`positions` ticker {ticker}: {column} is infinite")
        if abs(signal) > 1:  # tanh output, eq. (1) needs X in [-1, 1]
            raise ValueError(
                f"`positions` ticker {ticker}: signal {float(signal)!r} is outside [-1, 1]"
            )
        if vol <= 0:
            raise ValueError(f"`positions` ticker {ticker}: vol {float(vol)!r} is not positive")
        records.append(
            {
                "ticker": ticker,
                "signal": _nullable(signal),
                "vol": _nullable(vol),
                "weight": _nullable(weight),
                "stale": bool(stale.iloc[i]),
            }
        )
    return records


def write_cycle(
    bind: sa.Engine | sa.Connection, run: Mapping[str, Any], positions_frame: pd.DataFrame
) -> int:
    """Store a successful cycle: its positions and its run record, in one transaction.

    Any positions already stored for (as_of, model_name, model_version) are replaced, so
    running a date again leaves exactly one set of rows (and one more ``cycle_runs`` row).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    run : Mapping
        ``as_of`` (date-like), ``model_name``, ``model_version`` (required), and optionally
        ``status`` (only ``"succeeded"``), ``started_at`` / ``finished_at`` (tz-aware; default
        now), ``n_assets`` (default: number of positions), ``n_stale`` (default: stale rows),
        ``data_cutoff`` (date of the newest close used).
    positions_frame : pandas.DataFrame
        One row per asset, ticker in a ``ticker`` column or the index; columns ``signal``
        (in [-1, 1]), ``vol`` (annualised, > 0), ``weight``, optionally ``stale`` (bool,
        default False). NaN (not tradable) is stored as NULL; infinities are refused.

    Returns
    -------
    int
        The ``cycle_runs.id`` of this run (``positions.run_id`` of the new rows).

    Raises
    ------
    ValueError
        Invalid run or positions; nothing is written.
    """
    row = _run_row(run, ("succeeded",), "succeeded")
    records = _position_rows(positions_frame)
    if row["n_assets"] is None:
        row["n_assets"] = len(records)
    if row["n_stale"] is None:
        row["n_stale"] = sum(r["stale"] for r in records)
    key = {k: row[k] for k in ("as_of", "model_name", "model_version")}
    with transaction(bind) as conn:
        run_id = _new_id(conn.execute(cycle_runs.insert().values(**row)))
        conn.execute(positions.delete().where(*(positions.c[k] == v for k, v in key.items())))
        conn.execute(positions.insert(), [{**key, **r, "run_id": run_id} for r in records])
    return run_id


def record_failed_cycle(bind: sa.Engine | sa.Connection, run: Mapping[str, Any]) -> int:
    """Record a failed (or skipped) cycle and mark the last good positions stale.

    In one transaction: insert the ``cycle_runs`` row, then flag as stale the positions set
    that :func:`latest_positions` returns for ``run['model_name']`` as of ``run['as_of']``
    (the newest set dated on or before the failed date, any model version). The positions
    themselves are kept: consumers go on seeing the last good targets, flagged.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    run : Mapping
        As for :func:`write_cycle`, with ``status`` ``"failed"`` (default) or ``"skipped"``,
        ``error`` (the reason) and ``model_version`` optional.

    Returns
    -------
    int
        The ``cycle_runs.id`` of the recorded run.
    """
    row = _run_row(run, ("failed", "skipped"), "failed")
    with transaction(bind) as conn:
        run_id = _new_id(conn.execute(cycle_runs.insert().values(**row)))
        found = _latest_set(conn, row["model_name"], row["as_of"], None)
        if found is not None:
            as_of, version = found
            conn.execute(
                positions.update()
                .where(
                    positions.c.as_of == as_of,
                    positions.c.model_name == row["model_name"],
                    positions.c.model_version == version,
                )
                .values(stale=True)
            )
    return run_id


def _latest_set(
    conn: sa.Connection, model_name: str, as_of: Any, model_version: str | None
) -> tuple[Any, str] | None:
    """(as_of, model_version) of the newest positions set; ties: the latest cycle run.

    Read from ``cycle_runs``, one row per cycle: every succeeded run wrote one non-empty
    set (`write_cycle` refuses an empty one), the set of a key is the one its latest
    succeeded run wrote, and neither table loses rows otherwise. So the answer costs a
    seek on ``(model_name, as_of)``, not a scan of every stored position.
    """
    query = (
        sa.select(cycle_runs.c.as_of, cycle_runs.c.model_version)
        .where(cycle_runs.c.model_name == model_name, cycle_runs.c.status == "succeeded")
        .order_by(cycle_runs.c.as_of.desc(), cycle_runs.c.id.desc())
        .limit(1)
    )
    if as_of is not None:
        query = query.where(cycle_runs.c.as_of <= as_of)
    if model_version is not None:
        query = query.where(cycle_runs.c.model_version == model_version)
    found = conn.execute(query).first()
    return None if found is None else (found[0], found[1])


def latest_positions(
    bind: sa.Engine | sa.Connection,
    model_name: str,
    *,
    as_of: Any = None,
    model_version: str | None = None,
) -> pd.DataFrame | None:
    """The newest set of positions of a model dated on or before ``as_of``.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    as_of : date-like, optional
        Latest date to consider (default: no limit). Pass the date to get that date's set if
        it exists, else the one before.
    model_version : str, optional
        Only this version; default any version (on the same date, the most recently written).

    Returns
    -------
    pandas.DataFrame or None
        None when there is no such set. Otherwise shape ``(n_assets, 8)``, indexed by
        ``ticker`` (sorted), columns ``as_of`` (datetime64), ``model_name``,
        ``model_version``, ``signal``, ``vol``, ``weight`` (float64, NaN where not
        tradable), ``stale`` (bool), ``run_id`` (int).
    """
    name = _name(model_name, "model_name")
    day = None if as_of is None else _date(as_of, "as_of")
    version = _name(model_version, "model_version", optional=True)
    with _reading(bind) as conn:
        found = _latest_set(conn, name, day, version)  # type: ignore[arg-type]
        if found is None:
            return None
        query = (
            sa.select(
                positions.c.ticker,
                positions.c.as_of,
                positions.c.model_name,
                positions.c.model_version,
                positions.c.signal,
                positions.c.vol,
                positions.c.weight,
                positions.c.stale,
                positions.c.run_id,
            )
            .where(
                positions.c.as_of == found[0],
                positions.c.model_name == name,
                positions.c.model_version == found[1],
            )
            .order_by(positions.c.ticker)
        )
        frame = _frame(conn.execute(query), ["as_of"])
    for column in ("signal", "vol", "weight"):
        frame[column] = frame[column].astype(np.float64)  # NULL -> NaN
    frame["stale"] = frame["stale"].astype(bool)
    frame["run_id"] = frame["run_id"].astype(np.int64)
    return frame.set_index("ticker")


def positions_dates(
    bind: sa.Engine | sa.Connection, model_name: str, model_version: str | None = None
) -> pd.DatetimeIndex:
    """Dates that have positions for a model (any version if ``model_version`` is None).

    Read from the succeeded ``cycle_runs`` (one row per cycle, see `_latest_set`), so the
    cost follows the number of cycles, not of stored positions.

    Returns
    -------
    pandas.DatetimeIndex
        Increasing, tz-naive, named ``date``.
    """
    query = (
        sa.select(cycle_runs.c.as_of)
        .where(
            cycle_runs.c.model_name == _name(model_name, "model_name"),
            cycle_runs.c.status == "succeeded",
        )
        .distinct()
        .order_by(cycle_runs.c.as_of)
    )
    if model_version is not None:
        query = query.where(cycle_runs.c.model_version == _name(model_version, "model_version"))
    with _reading(bind) as conn:
        values = conn.execute(query).scalars().all()
    return pd.DatetimeIndex(_dates(values), name="date")


def positions_signals(
    bind: sa.Engine | sa.Connection,
    model_name: str,
    model_version: str,
    *,
    start: Any,
    end: Any,
) -> np.ndarray:
    """The stored signals of one model version with ``start <= as_of <= end``, NaN for NULL.

    Only the one column is read: the signal-drift metric needs a window of thousands of
    assets x 63 dates every cycle, where `read_positions` would build a frame of eight.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_rows,)``, float64, in no particular order.
    """
    query = sa.select(positions.c.signal).where(
        positions.c.model_name == _name(model_name, "model_name"),
        positions.c.model_version == _name(model_version, "model_version"),
        positions.c.as_of >= _date(start, "start"),
        positions.c.as_of <= _date(end, "end"),
    )
    with _reading(bind) as conn:
        result = conn.execute(query)
        # the DBAPI rows directly, as `_fetch_closes` (Row objects triple the cost)
        rows = result.cursor.fetchall() if result.cursor is not None else []
    return np.array(rows, dtype=np.float64).reshape(-1)  # None (NULL) -> nan


def read_positions(
    bind: sa.Engine | sa.Connection,
    model_name: str,
    *,
    start: Any = None,
    end: Any = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Every stored position of a model between two dates, long (one row per set and ticker).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    start, end : date-like, optional
        Inclusive bounds on ``as_of`` (default: everything).
    model_version : str, optional
        Only this version; default every version (a date may then hold several sets, told
        apart by ``model_version`` and ``run_id``).

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_rows, 8)``, default index, sorted by ``as_of``, ``model_version``,
        ``ticker``; columns ``as_of`` (datetime64), ``model_version``, ``ticker``, ``signal``,
        ``vol``, ``weight`` (float64, NaN where not tradable), ``stale`` (bool), ``run_id``
        (int64). Empty (same columns) when nothing is stored.
    """
    query = (
        sa.select(
            positions.c.as_of,
            positions.c.model_version,
            positions.c.ticker,
            positions.c.signal,
            positions.c.vol,
            positions.c.weight,
            positions.c.stale,
            positions.c.run_id,
        )
        .where(positions.c.model_name == _name(model_name, "model_name"))
        .order_by(positions.c.as_of, positions.c.model_version, positions.c.ticker)
    )
    if start is not None:
        query = query.where(positions.c.as_of >= _date(start, "start"))
    if end is not None:
        query = query.where(positions.c.as_of <= _date(end, "end"))
    if model_version is not None:
        query = query.where(positions.c.model_version == _name(model_version, "model_version"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query), ["as_of"])
    for column in ("signal", "vol", "weight"):
        frame[column] = frame[column].astype(np.float64)  # NULL -> NaN
    frame["stale"] = frame["stale"].astype(bool)
    frame["run_id"] = frame["run_id"].astype(np.int64)
    return frame


def read_cycle_runs(
    bind: sa.Engine | sa.Connection,
    *,
    model_name: str | None = None,
    as_of: Any = None,
    status: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Cycle runs, newest first, optionally filtered.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, as_of, model_name, model_version, status, started_at, finished_at,
        error, n_assets, n_stale, data_cutoff``; times tz-aware UTC; the counts are nullable
        ``Int64`` (missing for runs that failed before counting).
    """
    query = sa.select(cycle_runs).order_by(cycle_runs.c.id.desc())
    if model_name is not None:
        query = query.where(cycle_runs.c.model_name == model_name)
    if as_of is not None:
        query = query.where(cycle_runs.c.as_of == _date(as_of, "as_of"))
    if status is not None:
        if status not in CYCLE_STATUSES:
            raise ValueError(f"`status` must be one of {', '.join(CYCLE_STATUSES)}, got {status!r}")
        query = query.where(cycle_runs.c.status == status)
    if limit is not None:
        query = query.limit(_count(limit, "limit"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query), ["as_of"])
    frame["data_cutoff"] = _dates(frame["data_cutoff"])
    for column in ("n_assets", "n_stale"):  # NULL for runs that never counted
        frame[column] = frame[column].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------
# model loads
# --------------------------------------------------------------------------------------------


def record_model_load(
    bind: sa.Engine | sa.Connection,
    *,
    model_name: str,
    model_version: str | None,
    ok: bool,
    sha256: str | None = None,
    provider: str | None = None,
    reason: str | None = None,
    loaded_at: Any = None,
) -> int:
    """Log an attempt to load a model.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    model_version : str or None
        None when the version could not be determined (e.g. a broken ``production`` pointer).
    ok : bool
        Whether the model was accepted and is now serving.
    sha256, provider : str, optional
        Hash of ``model.onnx``; the onnxruntime execution provider in use.
    reason : str, optional
        Why a model was refused (required when ``ok`` is False).
    loaded_at : datetime-like, optional
        tz-aware; default now.

    Returns
    -------
    int
        The ``model_loads.id``.
    """
    if not isinstance(ok, bool | np.bool_):
        raise TypeError(f"`ok` must be a bool, got {type(ok).__name__}")
    if not ok and not reason:
        raise ValueError("`reason` is required for a refused model (ok=False)")
    row = {
        "model_name": _name(model_name, "model_name"),
        "model_version": _name(model_version, "model_version", optional=True),
        "sha256": sha256,
        "provider": provider,
        "loaded_at": _now() if loaded_at is None else _time(loaded_at, "loaded_at"),
        "ok": bool(ok),
        "reason": reason,
    }
    with transaction(bind) as conn:
        return _new_id(conn.execute(model_loads.insert().values(**row)))


def read_model_loads(
    bind: sa.Engine | sa.Connection, *, model_name: str | None = None, limit: int | None = None
) -> pd.DataFrame:
    """Model load attempts, newest first.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, model_name, model_version, sha256, provider, loaded_at, ok, reason``.
    """
    query = sa.select(model_loads).order_by(model_loads.c.id.desc())
    if model_name is not None:
        query = query.where(model_loads.c.model_name == model_name)
    if limit is not None:
        query = query.limit(_count(limit, "limit"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query))
    frame["ok"] = frame["ok"].astype(bool)
    return frame


# --------------------------------------------------------------------------------------------
# paper ledger
# --------------------------------------------------------------------------------------------

_LEDGER_VALUES = ("gross_return", "cost", "net_return", "turnover", "equity")


def write_ledger_row(bind: sa.Engine | sa.Connection, row: Mapping[str, Any]) -> None:
    """Store one day of the paper ledger, replacing any row for (date, model_name).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    row : Mapping
        ``date`` (date-like: the close at which the return is realised), ``model_name``,
        ``model_version`` (optional), and finite ``gross_return``, ``cost``, ``net_return``,
        ``turnover``, ``equity``; optionally ``missing`` (non-negative int, default 0: weighted
        assets without a return that day).
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"`row` must be a mapping, got {type(row).__name__}")
    _check_keys(row, ("date", "model_name", "model_version", *_LEDGER_VALUES, "missing"), "row")
    missing = [k for k in ("date", "model_name", *_LEDGER_VALUES) if k not in row]
    if missing:
        raise ValueError(f"`row` is missing {', '.join(missing)}")
    values = {
        "date": _date(row["date"], "row['date']"),
        "model_name": _name(row["model_name"], "row['model_name']"),
        "model_version": _name(row.get("model_version"), "row['model_version']", optional=True),
        **{k: _finite(row[k], f"row['{k}']") for k in _LEDGER_VALUES},
        "missing": _count(row.get("missing"), "row['missing']") or 0,
    }
    with transaction(bind) as conn:
        conn.execute(
            paper_ledger.delete().where(
                paper_ledger.c.date == values["date"],
                paper_ledger.c.model_name == values["model_name"],
            )
        )
        conn.execute(paper_ledger.insert().values(**values))


def read_ledger(
    bind: sa.Engine | sa.Connection, model_name: str, *, start: Any = None, end: Any = None
) -> pd.DataFrame:
    """The paper ledger of a model.

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (increasing, tz-naive); columns ``model_version, gross_return, cost,
        net_return, turnover, equity`` (floats ``float64``) and ``missing`` (``int64``). Empty
        when nothing is stored.
    """
    query = (
        sa.select(paper_ledger)
        .where(paper_ledger.c.model_name == _name(model_name, "model_name"))
        .order_by(paper_ledger.c.date)
    )
    if start is not None:
        query = query.where(paper_ledger.c.date >= _date(start, "start"))
    if end is not None:
        query = query.where(paper_ledger.c.date <= _date(end, "end"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query), ["date"])
    for column in _LEDGER_VALUES:
        frame[column] = frame[column].astype(np.float64)
    frame["missing"] = frame["missing"].astype(np.int64)
    return frame.drop(columns="model_name").set_index("date")


# --------------------------------------------------------------------------------------------
# feature states
# --------------------------------------------------------------------------------------------


def write_feature_state(
    bind: sa.Engine | sa.Connection,
    key: str,
    as_of: Any,
    steps: int,
    state: bytes,
    *,
    keep: int = 5,
) -> datetime:
    """Store the feature state of `key` as of a session, keeping the newest `keep` of that key.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    key : str
        What the state is of (`service.cycle.feature_key`: features, universe, rows kept).
    as_of : date-like
        The last session the state consumed; a state already stored for it is replaced.
    steps : int
        Sessions consumed.
    state : bytes
        `momentum.feature_state.FeatureState.to_bytes`.
    keep : int
        States of this key kept (older ones are deleted): a correction older than all of
        them makes the next cycle rebuild from the history.

    Returns
    -------
    datetime
        The row's ``created_at`` (with its as-of date, what `feature_state_stamp` reports).
    """
    key = _name(key, "key")  # type: ignore[assignment]
    day = _date(as_of, "as_of")
    if keep < 1:
        raise ValueError(f"`keep` must be at least 1, got {keep}")
    where = (feature_states.c.key == key, feature_states.c.as_of == day)
    created = _now()
    with transaction(bind) as conn:
        conn.execute(feature_states.delete().where(*where))
        conn.execute(
            feature_states.insert().values(
                key=key, as_of=day, steps=int(steps), created_at=created, state=state
            )
        )
        kept = (
            sa.select(feature_states.c.as_of)
            .where(feature_states.c.key == key)
            .order_by(feature_states.c.as_of.desc())
            .limit(keep)
        )
        oldest = min(d for (d,) in conn.execute(kept))
        conn.execute(
            feature_states.delete().where(
                feature_states.c.key == key, feature_states.c.as_of < oldest
            )
        )
    return created


def feature_state_stamp(
    bind: sa.Engine | sa.Connection, key: str, *, before: Any
) -> tuple[pd.Timestamp, datetime] | None:
    """``(as_of, created_at)`` of the state `latest_feature_state` would return (no blob)."""
    row = _newest_state_row(bind, key, before, feature_states.c.created_at)
    return None if row is None else (row[0], row[1])


def latest_feature_state(
    bind: sa.Engine | sa.Connection, key: str, *, before: Any
) -> tuple[pd.Timestamp, bytes] | None:
    """The newest stored state of `key` as of a session strictly before `before`, if any."""
    row = _newest_state_row(bind, key, before, feature_states.c.state)
    return None if row is None else (row[0], bytes(row[1]))


def _newest_state_row(
    bind: sa.Engine | sa.Connection, key: str, before: Any, column: sa.Column[Any]
) -> tuple[pd.Timestamp, Any] | None:
    """(as_of, `column`) of the newest state of `key` as of a session before `before`."""
    query = (
        sa.select(feature_states.c.as_of, column)
        .where(feature_states.c.key == key, feature_states.c.as_of < _date(before, "before"))
        .order_by(feature_states.c.as_of.desc())
        .limit(1)
    )
    with _reading(bind) as conn:
        row = conn.execute(query).first()
    return None if row is None else (pd.Timestamp(row[0]), row[1])


def _invalidate(conn: sa.Connection, since: Any, reason: str) -> None:
    """What a close written on date `since` makes stale, in the writing transaction.

    The feature states as of `since` or later (they consumed the old close), the paper
    ledger rows dated `since` or later (a row dated d uses the closes of d and of the
    session before; later rows chain its equity), and, when positions dated `since` or later
    exist, a :data:`reruns` marker: those sets were computed without this close.
    """
    day = _date(since, "since")
    drop_feature_states(conn, since=day)
    conn.execute(paper_ledger.delete().where(paper_ledger.c.date >= day))
    later = conn.execute(
        sa.select(cycle_runs.c.id)
        .where(cycle_runs.c.status == "succeeded", cycle_runs.c.as_of >= day)
        .limit(1)
    ).first()
    if later is not None:
        conn.execute(reruns.insert().values(since=day, created_at=_now(), reason=reason))


def pending_rerun(bind: sa.Engine | sa.Connection) -> tuple[int, pd.Timestamp] | None:
    """``(newest marker id, oldest since)`` of the :data:`reruns` not done; None if none."""
    with _reading(bind) as conn:
        newest, since = conn.execute(
            sa.select(sa.func.max(reruns.c.id), sa.func.min(reruns.c.since))
        ).one()
    return None if newest is None else (int(newest), pd.Timestamp(_dates([since])[0]))


def clear_reruns(bind: sa.Engine | sa.Connection, *, upto: int) -> int:
    """Delete the rerun markers with ``id <= upto`` (those a completed rerun covered)."""
    with transaction(bind) as conn:
        result = conn.execute(reruns.delete().where(reruns.c.id <= int(upto)))
    return int(result.rowcount or 0)


def drop_feature_states(bind: sa.Engine | sa.Connection, *, since: Any) -> int:
    """Delete every feature state as of `since` or later (its closes changed); returns how many."""
    with transaction(bind) as conn:
        result = conn.execute(
            feature_states.delete().where(feature_states.c.as_of >= _date(since, "since"))
        )
    return int(result.rowcount or 0)
