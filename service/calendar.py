"""Exchange-calendar helpers: which dates are sessions, and when a session closes.

A thin layer over ``exchange_calendars`` so that the rest of the service speaks one date
convention: a *date* is a tz-naive midnight :class:`pandas.Timestamp` (the index convention of
price panels in :mod:`momentum.data`), a *time* is a tz-aware UTC timestamp. Calendars are built
from 1990-01-01 (``exchange_calendars`` defaults to only ~20 years back, shorter than the
embedded history) up to about a year ahead of the day they are built; asking about a date
outside that range raises instead of guessing.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd

__all__ = [
    "CALENDAR_START",
    "as_date",
    "exchange_today",
    "get_calendar",
    "is_session",
    "session_close",
    "sessions_between",
]

CALENDAR_START = "1990-01-01"
"""First date of every calendar built here (the embedded prices start on 1990-01-02)."""

# Dates use the unit pandas gives date ranges (``us`` on pandas 3), like momentum.data panels,
# so that indexes built here compare equal to theirs.
_DATE_DTYPE = np.dtype(str(pd.date_range("2000-01-03", periods=1).dtype))


@functools.lru_cache(maxsize=8)
def _build(name: str) -> xcals.ExchangeCalendar:
    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.13 builds its schedule with `Series.values` on tz-aware
            # data, deprecated in pandas 3.1; the warning is about their code, not ours.
            warnings.filterwarnings(
                "ignore", message=r".*drops timezone information", category=DeprecationWarning
            )
            return xcals.get_calendar(name, start=CALENDAR_START)
    except xcals.errors.InvalidCalendarName:
        raise ValueError(
            f"unknown exchange calendar {name!r} (see exchange_calendars.get_calendar_names(); "
            "e.g. XNYS, XLON, XTKS)"
        ) from None


def get_calendar(name: str | xcals.ExchangeCalendar) -> xcals.ExchangeCalendar:
    """Return an exchange calendar covering 1990-01-01 to about a year from now (cached).

    Parameters
    ----------
    name : str or exchange_calendars.ExchangeCalendar
        An ``exchange_calendars`` name or alias (``"XNYS"``, ``"NYSE"``, ...). A calendar
        object is returned unchanged, so every helper here accepts either.

    Returns
    -------
    exchange_calendars.ExchangeCalendar

    Raises
    ------
    ValueError
        Unknown calendar name.
    """
    if isinstance(name, xcals.ExchangeCalendar):
        return name
    if not isinstance(name, str):
        raise TypeError(f"`calendar` must be a calendar name, got {type(name).__name__}")
    return _build(name.strip())


def as_date(value: Any, name: str = "date") -> pd.Timestamp:
    """Convert a date-like value to a tz-naive midnight :class:`pandas.Timestamp`.

    Parameters
    ----------
    value : str, datetime.date, numpy.datetime64 or pandas.Timestamp
        ``"2022-01-03"``, ``date(2022, 1, 3)``, ... A time of day other than midnight or a time
        zone is refused: it would make "which date" ambiguous.
    name : str, default "date"
        Parameter name used in error messages.

    Returns
    -------
    pandas.Timestamp

    Raises
    ------
    ValueError
        Unparseable, missing, with a time zone, or with a time of day.

    Examples
    --------
    >>> as_date("2022-01-03")
    Timestamp('2022-01-03 00:00:00')
    """
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"`{name}` must be a date like 2022-01-03, got {value!r}") from exc
    if stamp is pd.NaT:
        raise ValueError(f"`{name}` must be a date like 2022-01-03, got {value!r}")
    if stamp.tz is not None:
        raise ValueError(f"`{name}` must be a date without time zone, got {value!r}")
    if stamp != stamp.normalize():
        raise ValueError(f"`{name}` must be a date without time of day, got {value!r}")
    return stamp


def _in_range(calendar: xcals.ExchangeCalendar, date: pd.Timestamp, name: str) -> None:
    if not calendar.first_session <= date <= calendar.last_session:
        raise ValueError(
            f"`{name}` {date:%Y-%m-%d} is outside the {calendar.name} calendar "
            f"({calendar.first_session:%Y-%m-%d} .. {calendar.last_session:%Y-%m-%d})"
        )


def sessions_between(
    calendar: str | xcals.ExchangeCalendar, start: Any, end: Any
) -> pd.DatetimeIndex:
    """Sessions from ``start`` to ``end``, both included.

    Parameters
    ----------
    calendar : str or exchange_calendars.ExchangeCalendar
    start, end : date-like
        Inside the calendar's range. ``start > end`` gives an empty index.

    Returns
    -------
    pandas.DatetimeIndex
        Shape ``(n_sessions,)``, tz-naive midnights named ``date``, increasing.

    Raises
    ------
    ValueError
        A bound is not a date or lies outside the calendar's range.
    """
    cal = get_calendar(calendar)
    first, last = as_date(start, "start"), as_date(end, "end")
    _in_range(cal, first, "start")
    _in_range(cal, last, "end")
    if first > last:
        return pd.DatetimeIndex([], dtype=_DATE_DTYPE, name="date")
    sessions = cal.sessions_in_range(first, last)
    return pd.DatetimeIndex(sessions.to_numpy().astype(_DATE_DTYPE), name="date")


def is_session(calendar: str | xcals.ExchangeCalendar, date: Any) -> bool:
    """Whether the exchange trades on ``date``.

    Raises
    ------
    ValueError
        ``date`` is not a date or lies outside the calendar's range.
    """
    cal = get_calendar(calendar)
    day = as_date(date)
    _in_range(cal, day, "date")
    return bool(cal.is_session(day))


def session_close(calendar: str | xcals.ExchangeCalendar, date: Any) -> pd.Timestamp:
    """The time the session of ``date`` closes (early closes respected).

    Returns
    -------
    pandas.Timestamp
        tz-aware, UTC; e.g. 2022-11-25 (day after Thanksgiving) closes at 18:00 UTC, 13:00 in
        New York.

    Raises
    ------
    ValueError
        ``date`` is not a session of the calendar.
    """
    cal = get_calendar(calendar)
    day = as_date(date)
    if not is_session(cal, day):
        raise ValueError(f"{day:%Y-%m-%d} is not a session of the {cal.name} calendar")
    return pd.Timestamp(cal.session_close(day)).tz_convert("UTC")


def exchange_today(
    calendar: str | xcals.ExchangeCalendar, now: pd.Timestamp | None = None
) -> pd.Timestamp:
    """Today's date in the exchange's time zone.

    Parameters
    ----------
    calendar : str or exchange_calendars.ExchangeCalendar
    now : pandas.Timestamp, optional
        A tz-aware instant (tests inject one); default: the current time.

    Returns
    -------
    pandas.Timestamp
        tz-naive midnight. At 23:00 UTC on 2022-01-03 it is still 2022-01-03 in New York; at
        02:00 UTC on 2022-01-04 it is 2022-01-03 there too.
    """
    cal = get_calendar(calendar)
    if now is None:
        now = pd.Timestamp.now(tz="UTC")
    else:
        now = pd.Timestamp(now)
        if now.tz is None:
            raise ValueError(f"`now` must be timezone-aware, got {now!r}")
    return now.tz_convert(cal.tz).normalize().tz_localize(None)
