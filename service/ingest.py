"""Ingest closes: validate a batch, a file or the embedded replay, then store it atomically.

Three entry points feed the ``closes`` table of :mod:`service.store`:

* :func:`ingest_closes` -- a long batch ``(date, ticker, close)``, e.g. from gRPC
  ``IngestCloses``;
* :func:`ingest_file` -- a CSV / Parquet file, wide or long, read and checked by
  :func:`momentum.data.load_prices` (the same loader training uses);
* :func:`replay_rows` -- the embedded data session by session, as a live feed would send it.

Each row is checked for: a known ticker (in the universe), a date that is a session of the
exchange calendar and not in the future (in the exchange's time zone), a finite positive close,
no conflicting duplicate inside the batch, no conflict with a close already stored for the
same date and ticker (beyond a relative difference of 1e-12), and a plausible close
(:mod:`service.plausibility`: an absolute range, and no jump beyond a ratio from the previous
close unless the row's ``override`` flag is set). Re-sending a stored close is a
no-op; ``correction=True`` overwrites conflicting stored closes and logs each change (table
``close_corrections`` and a WARNING log line). A batch with *any* rejected row is rejected
whole: nothing is stored, and every offending row is reported with its reasons.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.data import (
    EMBEDDED,
    PriceDataError,
    load_index,
    load_prices,
    read_table,
    validate_prices,
)
from service import store
from service.calendar import as_date, exchange_today, get_calendar
from service.ingest_checks import (
    CLOSE_RTOL,
    COLUMNS,
    check_closes,
    check_dates,
    check_duplicates,
    check_overrides,
    check_tickers,
    normalise,
    same_close,
)
from service.plausibility import PlausibilityRules, check_plausible

__all__ = [
    "CLOSE_RTOL",
    "IngestResult",
    "Rejection",
    "feed_panel",
    "ingest_closes",
    "ingest_file",
    "panel_rows",
    "replay_rows",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """Why one row of a batch (or a whole file) was refused.

    Attributes
    ----------
    row : int
        1-based row of the batch (for :func:`ingest_file`: the position of the close in
        :func:`panel_rows` order, i.e. by date, then by ticker column); ``-1``: the file as a
        whole could not be loaded.
    date : pandas.Timestamp or None
        The row's date when it could be parsed.
    ticker : str or None
        The row's ticker when there is one.
    reason : str
        What is wrong; several problems of one row are joined by ``"; "``.
    """

    row: int
    date: pd.Timestamp | None
    ticker: str | None
    reason: str

    def __str__(self) -> str:
        where = [f"row {self.row}" if self.row >= 0 else "file"]
        if self.date is not None:
            where.append(f"date {self.date:%Y-%m-%d}")
        if self.ticker:
            where.append(f"ticker {self.ticker}")
        return f"{', '.join(where)}: {self.reason}"


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ingest call.

    Attributes
    ----------
    accepted : int
        Closes newly stored.
    unchanged : int
        Rows identical to a stored close or to an earlier row of the batch (no-ops).
    corrected : int
        Stored closes overwritten (only with ``correction=True``).
    rejections : list[Rejection]
        Empty on success. When not empty, nothing was stored (all counts are 0).
    """

    accepted: int
    unchanged: int
    corrected: int
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the batch was stored (no row was rejected)."""
        return not self.rejections

    def __str__(self) -> str:
        if self.ok:
            return (
                f"stored {self.accepted} new closes, {self.corrected} corrected, "
                f"{self.unchanged} unchanged"
            )
        lines = [f"rejected: {len(self.rejections)} bad rows, nothing stored"]
        return "\n".join(lines + [f"  {r}" for r in self.rejections])


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


def ingest_closes(
    engine: sa.Engine | sa.Connection,
    rows: pd.DataFrame,
    *,
    universe: Sequence[str],
    calendar: str | xcals.ExchangeCalendar,
    today: Any = None,
    correction: bool = False,
    source: str = "batch",
    rules: PlausibilityRules | None = None,
) -> IngestResult:
    """Validate a batch of closes and store it in one transaction, or reject it whole.

    Parameters
    ----------
    engine : sqlalchemy.Engine or sqlalchemy.Connection
        The store (a connection joins the caller's transaction).
    rows : pandas.DataFrame
        Long: the columns ``date, ticker, close`` (any case), and optionally ``override``, one
        row per close, shape ``(n_rows, 3 or 4)``. Dates are ISO strings, ``datetime.date`` or
        timestamps (a time of day is dropped, a time zone removed: the wall-clock date
        counts); closes numbers or numeric strings; ``override`` booleans (or ``true`` /
        ``false``, ``1`` / ``0``; missing: false) exempting a row from the jump check.
    universe : sequence of str
        The tickers the service trades; any other ticker is rejected.
    calendar : str or exchange_calendars.ExchangeCalendar
        Exchange calendar (e.g. ``"XNYS"``): only its sessions are accepted.
    today : date-like, optional
        Today in the exchange's time zone (tests inject it); later dates are "in the future".
        Default: the current date in the calendar's time zone.
    correction : bool, default False
        Overwrite stored closes that conflict with the batch (logged in
        ``close_corrections``) instead of rejecting those rows.
    source : str, default "batch"
        Recorded with each stored close (at most ``store.NAME_LENGTH`` characters).
    rules : PlausibilityRules, optional
        Absolute range and largest ratio to the previous close
        (:mod:`service.plausibility`); default ``PlausibilityRules()``.

    Returns
    -------
    IngestResult
        ``accepted + unchanged + corrected == len(rows)`` on success; on rejection every
        count is 0 and ``rejections`` lists each bad row (in row order) with its reasons.

    Raises
    ------
    ValueError
        ``rows`` does not have the three columns, or an argument is invalid (a programming
        error, not bad data).
    """
    allowed = _universe(universe)
    cal = get_calendar(calendar)
    day = exchange_today(cal) if today is None else as_date(today, "today")
    if not isinstance(correction, bool):
        raise TypeError(f"`correction` must be a bool, got {type(correction).__name__}")
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"`source` must be a non-empty string, got {source!r}")
    if len(source) > store.NAME_LENGTH:
        raise ValueError(
            f"`source` must be at most {store.NAME_LENGTH} characters, got {len(source)}"
        )
    rules = PlausibilityRules() if rules is None else rules
    batch = normalise(rows)
    if len(batch) == 0:
        return IngestResult(0, 0, 0, [])

    # row -> its problems, for bad rows only: every check finds its rows with array
    # operations and writes messages for those alone (a bulk load is millions of rows)
    reasons: dict[int, list[str]] = {}
    check_tickers(batch, allowed, reasons)
    check_dates(batch, cal, day, reasons)
    check_closes(batch, reasons)
    check_overrides(batch, reasons)
    repeat = check_duplicates(batch, reasons)  # True: identical copy of an earlier row

    with store.transaction(engine) as conn:
        # The stored closes are read inside the write transaction, so the conflict check and
        # the write see the same table.
        candidates = ~repeat
        candidates[list(reasons)] = False
        stored = np.full(len(batch), np.nan)
        if candidates.any():
            stored[candidates] = store.stored_closes(conn, batch.loc[candidates]).to_numpy()
        has_stored = ~np.isnan(stored)
        closes = batch["close"].to_numpy(dtype=np.float64)
        differs = has_stored & ~same_close(closes, stored)
        if not correction:
            for i in np.flatnonzero(differs).tolist():
                reasons.setdefault(i, []).append(
                    f"conflicts with the stored close {float(stored[i])!r} (got "
                    f"{float(closes[i])!r}); send it with the correction flag to overwrite"
                )
        valid = np.ones(len(batch), dtype=bool)
        valid[list(reasons)] = False
        check_plausible(conn, batch, valid, batch["override"].to_numpy(), rules, reasons)
        dates = pd.DatetimeIndex(batch["date"])
        tickers = batch["ticker"].to_numpy()
        rejections = [
            Rejection(
                row=i + 1,
                date=None if dates[i] is pd.NaT else dates[i],
                ticker=str(tickers[i]) or None,
                reason="; ".join(reasons[i]),
            )
            for i in sorted(reasons)
        ]
        if rejections:
            log.warning("rejected a batch of %d closes: %d bad rows", len(batch), len(rejections))
            return IngestResult(0, 0, 0, rejections)

        new = candidates & ~has_stored
        store.insert_closes(conn, batch.loc[new, list(COLUMNS)], source=source)
        corrected = batch.loc[differs, list(COLUMNS)]
        if len(corrected):
            store.correct_closes(conn, corrected, source=source)
            for (_, row), old in zip(corrected.iterrows(), stored[differs], strict=True):
                log.warning(
                    "corrected close of %s on %s: %r -> %r (source %s)",
                    row["ticker"],
                    f"{row['date']:%Y-%m-%d}",
                    float(old),
                    float(row["close"]),
                    source,
                )
    result = IngestResult(
        accepted=int(new.sum()),
        unchanged=int(repeat.sum() + (has_stored & ~differs).sum()),
        corrected=len(corrected),
        rejections=[],
    )
    log.info("ingested closes from %s: %s", source, result)
    return result


def _universe(universe: Sequence[str]) -> frozenset[str]:
    if isinstance(universe, str) or not isinstance(universe, Sequence | pd.Index | np.ndarray):
        raise TypeError("`universe` must be a sequence of ticker strings")
    tickers = frozenset(str(t) for t in universe)
    if not tickers:
        raise ValueError("`universe` is empty")
    return tickers


# --------------------------------------------------------------------------------------------
# files and the embedded replay
# --------------------------------------------------------------------------------------------


def panel_rows(prices: pd.DataFrame) -> pd.DataFrame:
    """A wide price panel as a long batch for :func:`ingest_closes`.

    Parameters
    ----------
    prices : pandas.DataFrame
        Shape ``(n_dates, n_tickers)``, the :mod:`momentum.data` panel contract.

    Returns
    -------
    pandas.DataFrame
        Columns ``date, ticker, close``: one row per non-NaN cell, by date, then in column
        order; shape ``(n_closes, 3)``.

    Examples
    --------
    >>> panel = pd.DataFrame({"A": [1.0, 2.0], "B": [np.nan, 3.0]},
    ...                      index=pd.to_datetime(["2022-01-03", "2022-01-04"]))
    >>> panel_rows(panel)["ticker"].tolist()
    ['A', 'A', 'B']
    """
    values = prices.to_numpy(dtype=np.float64)
    i, k = np.nonzero(~np.isnan(values))  # row-major: date first, then column order
    return pd.DataFrame(
        {
            "date": pd.DatetimeIndex(prices.index)[i],
            "ticker": np.asarray(prices.columns, dtype=object)[k],
            "close": values[i, k],
        }
    )


def ingest_file(
    engine: sa.Engine | sa.Connection,
    path: str | os.PathLike[str],
    *,
    universe: Sequence[str],
    calendar: str | xcals.ExchangeCalendar,
    today: Any = None,
    correction: bool = False,
    source: str | None = None,
    rules: PlausibilityRules | None = None,
) -> IngestResult:
    """Validate and store the closes of a CSV or Parquet file (wide or long).

    The file is read and checked by :func:`momentum.data.load_prices` (the training loader)
    with ``max_fill=0``: a close missing inside a ticker's history is never invented here
    (the cycle's stale-data policy decides what a missing close means). Only an empty cell
    is missing: ``nan``, ``NA`` or ``null`` written in a text file is not a number and
    rejects the file with its row, as a NaN close does over gRPC. Its closes then go
    through :func:`ingest_closes`.

    Parameters
    ----------
    engine : sqlalchemy.Engine or sqlalchemy.Connection
    path : str or path-like
        ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq``; layouts as for ``load_prices``. (A
        name in :data:`momentum.data.EMBEDDED` loads that embedded dataset.)
    universe, calendar, today, correction, rules
        As for :func:`ingest_closes`.
    source : str, optional
        Recorded with each close; default the file name.

    Returns
    -------
    IngestResult
        A malformed file -- anything the loader refuses: unreadable, bad header, unparseable
        date, non-numeric or non-positive close, duplicate rows, a gap inside a ticker's
        history -- gives exactly one :class:`Rejection` with ``row=-1``, the loader's message
        as ``reason`` (it names the file and, where it applies, the row, date and ticker) and
        the loader's date and ticker. Nothing is stored.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (not a data problem: nothing to report per row).
    """
    label = os.fspath(path)
    flags = None
    try:
        if label in EMBEDDED:
            prices = load_prices(label, max_fill=0, missing=_EMPTY_ONLY)
        else:
            table, flags = _split_override(read_table(path), label)
            prices = validate_prices(table, source=label, max_fill=0, missing=_EMPTY_ONLY)
    except PriceDataError as exc:
        log.warning("rejected file %s: %s", label, exc)
        return IngestResult(0, 0, 0, [Rejection(-1, exc.date, exc.ticker, str(exc))])
    rows = panel_rows(prices)
    if flags is not None:
        key = pd.MultiIndex.from_arrays([pd.DatetimeIndex(rows["date"]), rows["ticker"]])
        rows["override"] = flags.reindex(key).fillna("").to_numpy()
    return ingest_closes(
        engine,
        rows,
        universe=universe,
        calendar=calendar,
        today=today,
        correction=correction,
        source=Path(label).name[: store.NAME_LENGTH] if source is None else source,
        rules=rules,
    )


# only an empty cell is "no close" in a file ingested here: a literal nan is refused, as over
# gRPC, where a close is a number
_EMPTY_ONLY = frozenset({""})


def _split_override(table: pd.DataFrame, label: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """The table without its ``override`` column, and that column by (date, ticker).

    Only a long table (``date, ticker, close``) has one flag per close; the flags keep their
    text (``ingest_closes`` parses them and rejects what is neither true nor false).
    """
    names = [str(c).strip().lower() for c in table.columns]
    if "override" not in names:
        return table, None
    if "ticker" not in names or "date" not in names:
        raise PriceDataError(
            "an override column needs the long layout: date, ticker, close, override",
            source=label,
        )
    column = {name: table.columns[k] for k, name in enumerate(names)}
    dates = pd.to_datetime(table[column["date"]], errors="coerce", format="ISO8601")
    flags = pd.Series(
        table[column["override"]].astype(str).to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex(dates).normalize(), table[column["ticker"]].astype(str).str.strip()]
        ),
    )
    flags = flags[~flags.index.duplicated(keep="last")]
    return table.drop(columns=column["override"]), flags


def feed_panel(name: str = "sp500", *, index: str | None = None) -> pd.DataFrame:
    """The prices of dataset `name` (`load_prices`) as a feed delivers them: with the
    embedded data's own market index levels as one more column named `index` when given
    (the series extended-feature models read; a price file brings none)."""
    prices = load_prices(name)
    if index is None:
        return prices
    if name not in EMBEDDED:
        raise ValueError(f"{name} is a price file: it has no index series to feed as {index!r}")
    levels = load_index(name).reindex(prices.index)
    return prices.assign(**{index: levels.to_numpy()}).rename_axis(columns="ticker")


def replay_rows(
    start: Any, end: Any = None, *, name: str = "sp500", index: str | None = None
) -> Iterator[tuple[pd.Timestamp, pd.DataFrame]]:
    """The embedded data, one session at a time, as a live feed would deliver it.

    Parameters
    ----------
    start : date-like
        First date to replay.
    end : date-like, optional
        Last date to replay (inclusive); default the last date of the data.
    name : str, default "sp500"
        Dataset for :func:`momentum.data.load_prices` (an embedded name or a price file).
    index : str, optional
        Also feed the embedded data's market index levels, as this ticker (`feed_panel`).

    Returns
    -------
    Iterator[tuple[pandas.Timestamp, pandas.DataFrame]]
        For each date of the data in ``[start, end]``, in order: the date and its closes as a
        long batch (columns ``date, ticker, close``; tickers without a close that day are
        absent), ready for :func:`ingest_closes`.

    Raises
    ------
    ValueError
        ``start`` is after ``end``, or the data has no date in the range (raised at the call,
        not at the first ``next``).
    """
    first = as_date(start, "start")
    prices = feed_panel(name, index=index)
    last = prices.index[-1] if end is None else as_date(end, "end")
    if first > last:
        raise ValueError(f"`start` {first:%Y-%m-%d} is after `end` {last:%Y-%m-%d}")
    window = prices.loc[first:last]
    if window.empty:
        raise ValueError(
            f"{name} has no dates between {first:%Y-%m-%d} and {last:%Y-%m-%d} (it covers "
            f"{prices.index[0]:%Y-%m-%d} .. {prices.index[-1]:%Y-%m-%d})"
        )
    return _replay(window)


def _replay(window: pd.DataFrame) -> Iterator[tuple[pd.Timestamp, pd.DataFrame]]:
    for k, date in enumerate(window.index):
        yield date, panel_rows(window.iloc[k : k + 1])
