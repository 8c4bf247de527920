"""Cycle runs and positions sets: writing a cycle atomically, reading sets back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.store.engine import _reading, transaction
from service.store.schema import CYCLE_STATUSES, cycle_runs, positions
from service.store.values import (
    _check_keys,
    _count,
    _date,
    _dates,
    _frame,
    _name,
    _new_id,
    _now,
    _nullable,
    _time,
)

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
