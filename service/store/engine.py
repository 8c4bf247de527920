"""Opening the store (SQLite or PostgreSQL), transactions, and SQLite's change counter."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from service.store.schema import metadata

# --------------------------------------------------------------------------------------------
# engine and transactions
# --------------------------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")

_WRITE = "momentum_write"  # execution option: this connection is about to write

_BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another writer before failing


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


def sqlite_file(engine: sa.Engine) -> str | None:
    """The path of the engine's SQLite file; None for PostgreSQL, in-memory SQLite and URI
    forms (``file:...`` or query options), which only the engine itself should open."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query:
        return None
    return database


def data_version_probe(engine: sa.Engine) -> Callable[[], int] | None:
    """A cheap "has anything changed?" for a SQLite file store; None for other stores.

    The returned function reads ``PRAGMA data_version`` on a connection of its own, which
    never writes: the value changes whenever any other connection (of this process or
    another) has committed since the last call. A few microseconds, no pool checkout and
    no transaction, so a cache can be validated on every request. PostgreSQL and in-memory
    SQLite have no such counter: callers query what they need instead.
    """
    database = sqlite_file(engine)
    if database is None:
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
