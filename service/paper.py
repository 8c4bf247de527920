"""The paper-trading ledger: the live track record of a model's stored positions.

Positions decided at the close of session ``t`` (the rows of table ``positions`` dated ``t``;
``weight`` is the target weight ``w = X * sigma_tgt / s / N_t`` of eq. 1, already including the
1/N and vol scaling) are held from the close of ``t`` to the close of the next session ``t+1``
of the exchange calendar, and marked to market with the closes of ``t+1``. One ledger row per
marked day, keyed by ``(date, model_name)`` where ``date`` is the **mark date** ``t+1`` (the
close at which the return is realised), not the positions' date ``t``:

* gross return ``R_{t+1} = sum_i w_{i,t} * (p_{i,t+1} / p_{i,t} - 1)``
  (:func:`momentum.portfolio.captured_returns` without vol scaling, summed over assets: the
  weights already carry the 1/N_t of eq. 1, so the portfolio return is a sum, not a mean);
* turnover ``TO_t = sum_i |w_{i,t} - w_{i,t-1}|``, the trade made at the close of ``t`` to move
  into ``w_t`` (:func:`momentum.portfolio.turnover` without vol scaling on the weight panel:
  the first positions trade in from zero). ``w_{t-1}`` is the positions set before ``t``
  (the one the book held, even if a failed cycle left a gap of sessions in between);
* cost ``c * TO_t`` and net return ``R_{t+1} - c * TO_t`` with ``c = cost_bps * 1e-4``
  (:func:`momentum.portfolio.net_returns`, eq. 13);
* equity compounds from 1.0: ``E = prod(1 + net)`` over the rows in date order.

Conventions, all deliberate:

* Weights are compared in weight space, not in the per-asset vol-scaled units of eq. (12):
  the ledger charges what the book trades. A NULL weight (asset not tradable) counts as 0,
  so an asset that drops out of the book is charged for being sold (unlike the research
  backtests, where leaving the universe is free).
* A positions date is marked once the next session is complete: every held asset (non-zero
  weight) has its close of ``t+1``, or the set of ``t+1`` flags the ones without it stale
  (the carry policy). Those earn 0 that day (as if the price had not moved) and are counted
  in the row's ``missing`` field; the ledger never holds NaN. Marking goes in date order and
  stops at the first incomplete date.
* Marked rows are a record: running :func:`update_ledger` again adds nothing. A close
  written later for a date (a late close or a correction) deletes the ledger rows from that
  date on, in the same transaction (`service.store`); the service reruns the cycles from
  there and marks them again, so the ledger always equals a replay over the data now
  stored. A date marked late has the ``equity`` of the later rows re-chained, so that
  ``equity`` always equals the compounded net returns in date order.
* A session without positions (failed or skipped cycle) has no ledger row of its own.

:func:`ledger_summary` turns the stored ledger into the figures the service exports (PnL,
Sharpe, drawdowns), using :mod:`momentum.metrics` for every formula it has.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.metrics import max_drawdown, sharpe_ratio
from momentum.portfolio import captured_returns, net_returns, turnover
from service import store
from service.calendar import get_calendar
from service.queries import previous_positions

__all__ = ["DEFAULT_WINDOW", "LedgerRow", "LedgerSummary", "ledger_summary", "update_ledger"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 63
"""Sessions in the rolling Sharpe of :func:`ledger_summary` (about three months)."""


@dataclass(frozen=True)
class LedgerRow:
    """One marked day of the paper ledger.

    Attributes
    ----------
    date : pandas.Timestamp
        Mark date ``t+1``: the session whose close realises the return (the row's key).
    as_of : pandas.Timestamp
        Date ``t`` of the positions held over ``(t, t+1]``.
    model_name, model_version : str
        The positions set's model (the most recently written version on ``as_of``).
    gross_return : float
        ``sum_i w_{i,t} * r_{i,t+1}``.
    turnover : float
        ``sum_i |w_{i,t} - w_{i,t-1}|``, the trade at the close of ``t``.
    cost : float
        ``cost_bps * 1e-4 * turnover``.
    net_return : float
        ``gross_return - cost``.
    equity : float
        Compounded net returns from 1.0 up to and including this row.
    missing : int
        Assets with a non-zero weight whose return could not be computed (taken as 0).
    """

    date: pd.Timestamp
    as_of: pd.Timestamp
    model_name: str
    model_version: str | None
    gross_return: float
    turnover: float
    cost: float
    net_return: float
    equity: float
    missing: int


@dataclass(frozen=True)
class LedgerSummary:
    """Track-record figures of a model's paper ledger.

    Attributes
    ----------
    model_name : str
    days : int
        Marked days (ledger rows).
    first_date, last_date : pandas.Timestamp or None
        First and last mark dates; None for an empty ledger.
    equity : float
        Last equity (1.0 when empty).
    total_return : float
        ``equity - 1``.
    sharpe : float
        :func:`momentum.metrics.sharpe_ratio` of all daily net returns (nan below 2 days).
    rolling_sharpe : float
        The same over the last ``window`` days; nan while fewer than ``window`` days exist.
    window : int
        Days in ``rolling_sharpe``.
    max_drawdown : float
        :func:`momentum.metrics.max_drawdown` of the net returns (positive fraction; nan
        when empty).
    drawdown : float
        Current drawdown ``1 - equity / peak``, the peak including the starting 1.0.
    missing : int
        Sum of the rows' ``missing`` counts.
    """

    model_name: str
    days: int
    first_date: pd.Timestamp | None
    last_date: pd.Timestamp | None
    equity: float
    total_return: float
    sharpe: float
    rolling_sharpe: float
    window: int
    max_drawdown: float
    drawdown: float
    missing: int


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`model_name` must be a non-empty string, got {value!r}")
    return value.strip()


def _cost_bps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"`cost_bps` must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"`cost_bps` must be finite and non-negative, got {value!r}")
    return number


def _window(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 2:
        raise ValueError(f"`window` must be an integer >= 2, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# marking
# --------------------------------------------------------------------------------------------


def _next_sessions(calendar: xcals.ExchangeCalendar, dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The session after each date (NaT past the calendar's end); shape ``(len(dates),)``."""
    sessions = calendar.sessions.to_numpy()  # datetime64[ns], increasing
    position = np.searchsorted(sessions, dates.to_numpy().astype(sessions.dtype), side="right")
    inside = position < len(sessions)
    values = np.full(len(dates), np.datetime64("NaT"), dtype=sessions.dtype)
    values[inside] = sessions[position[inside]]
    return pd.DatetimeIndex(values).as_unit(dates.unit)


def _positions_set(conn: sa.Connection, model_name: str, day: pd.Timestamp) -> pd.DataFrame:
    """The positions set dated ``day`` (the most recently written version of that date)."""
    frame = store.latest_positions(conn, model_name, as_of=day)
    # positions_dates listed the date inside this transaction, so the set is there
    assert frame is not None and (frame["as_of"] == day).all(), f"no positions set on {day}"
    return frame


def _weight_panel(sets: list[pd.DataFrame]) -> pd.DataFrame:
    """Weights ``[n_dates, n_tickers]`` of consecutive positions sets; NULL and absent -> 0."""
    tickers = sorted(set().union(*(s.index for s in sets)))
    rows = [s["weight"].reindex(tickers) for s in sets]
    return pd.DataFrame(rows, columns=pd.Index(tickers, name="ticker")).fillna(0.0)


def _start_end_closes(
    closes: pd.DataFrame, tickers: pd.Index, days: pd.DatetimeIndex, marks: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray]:
    """The closes ``p_{i,t}`` and ``p_{i,t+1}`` of each (t, t+1) pair, NaN where not stored;
    each of shape ``(len(days), n_tickers)``."""
    panel = closes.reindex(columns=tickers)
    start = panel.reindex(index=days).to_numpy(dtype=np.float64)
    end = panel.reindex(index=marks).to_numpy(dtype=np.float64)
    return start, end


def update_ledger(
    bind: sa.Engine | sa.Connection,
    model_name: str,
    *,
    cost_bps: float,
    calendar: str | xcals.ExchangeCalendar = "XNYS",
    upto: Any = None,
) -> list[LedgerRow]:
    """Mark, in date order, the positions dates not marked yet whose next session is complete.

    The next session ``t+1`` of a positions date ``t`` is complete when every asset the set
    of ``t`` holds (a non-zero weight) has its close of ``t+1`` stored, or the set of ``t+1``
    flags the ones without it stale (the carry policy decided; they earn 0 and count in
    ``missing``). Marking stops at the first date that is not complete yet, so a day marked
    with 1 of 20 closes can never freeze: it waits for the other 19.

    Reads and writes in one transaction: either every new row (and every re-chained equity)
    is stored, or nothing is. Running it again without new data adds nothing. A close written
    later for a marked day deletes that day's row and the later ones (`service.store`), and
    the next call marks them again.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
        The store (:mod:`service.store`).
    model_name : str
        Positions of every version of this model are marked, one set per date (the most
        recently written on that date).
    cost_bps : float
        Cost per unit of turnover in basis points (>= 0), e.g. ``Settings.cost_bps``.
    calendar : str or exchange_calendars.ExchangeCalendar, default "XNYS"
        Defines the next session ``t+1`` of a positions date ``t``.
    upto : date-like, optional
        Mark positions dates up to this one only (a rerun of several sessions marks each
        after its own cycle, never a later date whose set is about to be replaced).

    Returns
    -------
    list of LedgerRow
        The rows added, in date order (empty when there is nothing new to mark).

    Raises
    ------
    ValueError
        Invalid ``model_name``, ``cost_bps`` or ``calendar``.
    """
    name = _model_name(model_name)
    cost_bps = _cost_bps(cost_bps)
    cal = get_calendar(calendar)
    with store.transaction(bind) as conn:
        dates = store.positions_dates(conn, name)
        if len(dates) == 0:
            return []
        ledger = store.read_ledger(conn, name)
        nexts = _next_sessions(cal, dates)
        last = dates[-1] if upto is None else pd.Timestamp(upto).normalize()
        # indexes into `dates` of the positions not marked yet
        todo = [
            i
            for i, n in enumerate(nexts)
            if not pd.isna(n) and n not in ledger.index and dates[i] <= last
        ]
        if not todo:
            return []
        closes = store.read_closes(conn, start=dates[todo[0]], end=nexts[todo[-1]])
        # markable once the next session has closes; a later session's closes do not count
        todo = [i for i in todo if nexts[i] in closes.index]
        if not todo:
            return []
        rows = _mark(conn, name, dates, nexts, todo, closes, cost_bps)
        if not rows:
            return []
        rows = _store_rows(conn, name, ledger, rows)
    for row in rows:
        log.info(
            "paper ledger %s %s: gross %+.6f, turnover %.4f, net %+.6f, equity %.6f",
            name,
            f"{row.date:%Y-%m-%d}",
            row.gross_return,
            row.turnover,
            row.net_return,
            row.equity,
        )
    return rows


def _mark(
    conn: sa.Connection,
    name: str,
    dates: pd.DatetimeIndex,
    nexts: pd.DatetimeIndex,
    todo: list[int],
    closes: pd.DataFrame,
    cost_bps: float,
) -> list[LedgerRow]:
    """Ledger rows (equity not yet chained: 0.0) for the positions dates ``dates[todo]``."""
    first = todo[0]
    sets = [_positions_set(conn, name, dates[j]) for j in range(first, todo[-1] + 1)]
    # the set held before the first date to mark is turnover's previous row
    previous = previous_positions(conn, name, dates[first])
    held_before = [] if previous is None else [previous]
    weights = _weight_panel(held_before + sets)  # (n_sets, n_tickers)
    # the first set ever trades in from zero; `turnover` charges its first row that way
    traded = turnover(weights.to_numpy()).sum(axis=1)  # (n_sets,)
    rows_in_panel = [i - first + len(held_before) for i in todo]
    held = weights.to_numpy()[rows_in_panel]  # (n_todo, n_tickers)
    starts, ends = _start_end_closes(closes, weights.columns, dates[todo], nexts[todo])
    moves = ends / starts - 1.0  # p_{t+1} / p_t - 1
    unknown = (held != 0.0) & ~np.isfinite(moves)
    # held without a close of t+1: the day waits for it unless the set of t+1 flags it stale
    waiting = (held != 0.0) & ~np.isfinite(ends)
    moves = np.where(np.isfinite(moves), moves, 0.0)  # a missing close earns 0, counted below
    gross = captured_returns(held, moves).sum(axis=1)  # (n_todo,), weights already hold 1/N_t
    to = traded[rows_in_panel]
    net = net_returns(gross, to, cost_bps)  # eq. (13)
    # the same c * TO as inside `net`, so net == gross - cost exactly
    cost = -net_returns(np.zeros_like(gross), to, cost_bps)
    rows = []
    for k, i in enumerate(todo):
        if waiting[k].any() and not _flagged_stale(
            conn, name, nexts[i], weights.columns[waiting[k]]
        ):
            break  # the day is not complete yet: this and later dates wait
        if unknown[k].any():
            log.warning(
                "paper ledger %s %s: no return for %s (counted as 0, missing close)",
                name,
                f"{nexts[i]:%Y-%m-%d}",
                ", ".join(weights.columns[unknown[k]]),
            )
        positions_set = sets[i - first]
        rows.append(
            LedgerRow(
                date=nexts[i],
                as_of=dates[i],
                model_name=name,
                model_version=str(positions_set["model_version"].iloc[0]),
                gross_return=float(gross[k]),
                turnover=float(to[k]),
                cost=float(cost[k]),
                net_return=float(net[k]),
                equity=0.0,
                missing=int(unknown[k].sum()),
            )
        )
    return rows


def _flagged_stale(conn: sa.Connection, name: str, day: pd.Timestamp, tickers: pd.Index) -> bool:
    """Whether the set of `day` exists and flags every one of `tickers` stale."""
    found = store.latest_positions(conn, name, as_of=day)
    if found is None or not (found["as_of"] == day).all():
        return False
    stale = found["stale"].reindex(tickers)
    return bool(stale.notna().all() and stale.astype(bool).all())


def _store_rows(
    conn: sa.Connection, name: str, ledger: pd.DataFrame, rows: list[LedgerRow]
) -> list[LedgerRow]:
    """Chain equity through the new rows (and any later stored rows) and write them.

    Returns the new rows with their equity, in date order.
    """
    new = {row.date: row for row in rows}
    start = min(new)
    before = ledger.loc[ledger.index < start, "equity"]
    equity = float(before.iloc[-1]) if len(before) else 1.0
    rechained = 0
    for day in sorted(set(new) | set(ledger.index[ledger.index > start])):
        if day in new:
            equity *= 1.0 + new[day].net_return
            new[day] = replace(new[day], equity=equity)
            store.write_ledger_row(conn, _record(new[day]))
            continue
        stored = ledger.loc[day].to_dict()
        equity *= 1.0 + float(stored["net_return"])
        if equity != float(stored["equity"]):
            rechained += 1
            version = stored["model_version"]
            store.write_ledger_row(
                conn,
                {
                    "date": day,
                    "model_name": name,
                    "model_version": None if pd.isna(version) else str(version),
                    **{k: float(stored[k]) for k in ("gross_return", "cost", "net_return")},
                    "turnover": float(stored["turnover"]),
                    "equity": equity,
                    "missing": int(stored["missing"]),
                },
            )
    if rechained:
        log.warning(
            "paper ledger %s: %s marked late; equity of %d later rows re-chained",
            name,
            f"{start:%Y-%m-%d}",
            rechained,
        )
    return [new[day] for day in sorted(new)]


def _record(row: LedgerRow) -> dict[str, Any]:
    """A :class:`LedgerRow` as a ``paper_ledger`` row for :func:`service.store.write_ledger_row`."""
    return {
        "date": row.date,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "gross_return": row.gross_return,
        "cost": row.cost,
        "net_return": row.net_return,
        "turnover": row.turnover,
        "equity": row.equity,
        "missing": row.missing,
    }


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def ledger_summary(
    bind: sa.Engine | sa.Connection, model_name: str, window: int = DEFAULT_WINDOW
) -> LedgerSummary:
    """Track-record figures of a model's stored paper ledger.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    window : int, default 63
        Days in the rolling Sharpe (>= 2).

    Returns
    -------
    LedgerSummary
        Sharpe and max drawdown are :func:`momentum.metrics.sharpe_ratio` and
        :func:`momentum.metrics.max_drawdown` of the daily net returns (shape ``(days,)``).
    """
    name = _model_name(model_name)
    window = _window(window)
    ledger = store.read_ledger(bind, name)
    net = ledger["net_return"].to_numpy(dtype=np.float64)  # (days,)
    if len(ledger) == 0:
        return LedgerSummary(
            model_name=name,
            days=0,
            first_date=None,
            last_date=None,
            equity=1.0,
            total_return=0.0,
            sharpe=math.nan,
            rolling_sharpe=math.nan,
            window=window,
            max_drawdown=math.nan,
            drawdown=0.0,
            missing=0,
        )
    equity = ledger["equity"].to_numpy(dtype=np.float64)
    # the starting capital 1.0 is a peak too, as in momentum.metrics.max_drawdown
    peak = max(1.0, float(equity.max()))
    return LedgerSummary(
        model_name=name,
        days=len(ledger),
        first_date=ledger.index[0],
        last_date=ledger.index[-1],
        equity=float(equity[-1]),
        total_return=float(equity[-1]) - 1.0,
        sharpe=sharpe_ratio(net),
        rolling_sharpe=sharpe_ratio(net[-window:]) if len(net) >= window else math.nan,
        window=window,
        max_drawdown=max_drawdown(net),
        drawdown=1.0 - float(equity[-1]) / peak,
        missing=int(ledger["missing"].sum()),
    )
