"""The daily scheduler: one APScheduler 3.x job that runs the cycle after each session close.

A cron expression cannot say "16:30 New York, but 13:30 on the day after Thanksgiving, and
never on Good Friday": the exchange calendar can. :class:`SessionCloseTrigger` is therefore an
APScheduler trigger whose ``get_next_fire_time`` walks the calendar's sessions and fires at each
session's own close (early closes included, daylight saving handled by the calendar's UTC close
times) plus a delay, in the exchange's time zone.

:class:`CycleScheduler` owns one such job and knows nothing of cycles, models or the store: it
is given two callables,

* ``run_session(session)`` -- run one session (the service passes "cycle + paper ledger");
* ``pending_sessions()`` -- sessions that have closes but no positions for the current model,

and guarantees:

* :meth:`CycleScheduler.start` first catches up, in date order, every pending session whose
  scheduled time has passed (a pending session whose time has not come yet is left to the
  trigger), then starts the job;
* each firing runs the session it was scheduled for, preceded, in date order, by any older
  pending session (sessions missed while the process was down, or whose closes arrived late);
* the job runs with ``coalesce=True`` (several missed fire times run once, for the latest),
  ``max_instances=1`` and a misfire grace of hours (a fire time missed by more than that is
  skipped; its session is caught up as pending by the next firing);
* an exception from ``run_session`` (or ``pending_sessions``) is logged with its session and
  never stops the scheduler or the sessions after it.

Times: APScheduler receives tz-aware datetimes in the exchange's time zone; sessions are
tz-naive midnight :class:`pandas.Timestamp` dates (:mod:`service.calendar`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from numbers import Real
from typing import Any

import exchange_calendars as xcals
import pandas as pd
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger

from service.calendar import as_date, get_calendar
from service.config import Settings

__all__ = [
    "DEFAULT_CALENDAR",
    "DEFAULT_DELAY_MINUTES",
    "DEFAULT_MISFIRE_GRACE_HOURS",
    "JOB_ID",
    "CycleScheduler",
    "SessionCloseTrigger",
]

log = logging.getLogger(__name__)

DEFAULT_CALENDAR = "XNYS"
"""Exchange calendar used when neither settings nor an explicit calendar is given."""
DEFAULT_DELAY_MINUTES = 30
"""Minutes after the close used when neither settings nor an explicit delay is given."""
DEFAULT_MISFIRE_GRACE_HOURS = 6.0
"""How late a firing may still run (a host that slept through the close still cycles)."""
JOB_ID = "momentum-cycle"
"""APScheduler id of the cycle job."""


def _utc(moment: datetime, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    if stamp.tz is None:
        raise ValueError(f"`{name}` must be timezone-aware, got {moment!r}")
    return stamp.tz_convert("UTC")


def _delay_minutes(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"`delay_minutes` must be a number of minutes, got {value!r}")
    minutes = float(value)
    if not (math.isfinite(minutes) and minutes >= 0):
        raise ValueError(f"`delay_minutes` must be finite and >= 0, got {value!r}")
    return minutes


def _misfire_grace_hours(value: Any) -> float:
    hours = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(hours) and hours > 0):
        raise ValueError(f"`misfire_grace_hours` must be a positive number, got {value!r}")
    return hours


class SessionCloseTrigger(BaseTrigger):
    """Fire at every session's close plus a delay, in the exchange's time zone.

    Parameters
    ----------
    calendar : str or exchange_calendars.ExchangeCalendar
        E.g. ``"XNYS"``; the close of each session comes from the calendar, so early closes
        (13:00 New York on 2024-11-29) and holidays (no fire on 2024-07-04) are respected.
    delay_minutes : float, default 30
        Minutes after the close (>= 0).

    Notes
    -----
    The fire times are the calendar's UTC closes plus the delay, computed once: about 9,500
    instants from 1990 to the calendar's end (about a year after the process built it).
    Past that end the trigger has no next fire time (APScheduler then drops the job) and logs
    an error asking for a restart, which rebuilds the calendar.
    """

    def __init__(
        self,
        calendar: str | xcals.ExchangeCalendar = DEFAULT_CALENDAR,
        delay_minutes: float = DEFAULT_DELAY_MINUTES,
    ) -> None:
        self.calendar = get_calendar(calendar)
        self.delay = timedelta(minutes=_delay_minutes(delay_minutes))
        closes = self.calendar.closes  # Series: session -> UTC close (early closes included)
        self._sessions = pd.DatetimeIndex(closes.index)  # (n_sessions,) tz-naive midnights
        self._fires = pd.DatetimeIndex(closes).tz_convert("UTC") + self.delay  # (n_sessions,)
        # one delay for every session keeps the fire times in session order
        assert self._fires.is_monotonic_increasing, "calendar closes are not increasing"

    def __str__(self) -> str:
        minutes = self.delay / timedelta(minutes=1)
        return f"{self.calendar.name} session close + {minutes:g} min"

    def __repr__(self) -> str:
        minutes = self.delay / timedelta(minutes=1)
        return f"{type(self).__name__}({self.calendar.name!r}, delay_minutes={minutes:g})"

    @property
    def timezone(self) -> Any:
        """The exchange's time zone (a :class:`zoneinfo.ZoneInfo`)."""
        return self.calendar.tz

    def fire_time(self, session: Any) -> datetime:
        """When ``session`` fires: its close plus the delay, in the exchange's time zone.

        Raises
        ------
        ValueError
            ``session`` is not a session of the calendar.
        """
        day = as_date(session, "session")
        i = int(self._sessions.searchsorted(day))
        if i == len(self._sessions) or self._sessions[i] != day:
            raise ValueError(
                f"{day:%Y-%m-%d} is not a session of the {self.calendar.name} calendar"
            )
        return self._at(i)

    def _at(self, i: int) -> datetime:
        return self._fires[i].tz_convert(self.timezone).to_pydatetime()

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The next fire time: the first after ``previous_fire_time``, else the first >= ``now``.

        With a previous fire time the result may lie in the past: that is how APScheduler
        enumerates the fire times it missed (and then coalesces them).

        Parameters
        ----------
        previous_fire_time : datetime or None
            tz-aware; None when the job is scheduled for the first time.
        now : datetime
            tz-aware current time.

        Returns
        -------
        datetime or None
            tz-aware, in the exchange's time zone; None past the end of the calendar.
        """
        if previous_fire_time is not None:
            i = self._fires.searchsorted(
                _utc(previous_fire_time, "previous_fire_time"), side="right"
            )
        else:
            i = self._fires.searchsorted(_utc(now, "now"), side="left")
        if i == len(self._fires):
            log.error(
                "the %s calendar ends on %s: no session to schedule; restart the service to "
                "extend it",
                self.calendar.name,
                f"{self._sessions[-1]:%Y-%m-%d}",
            )
            return None
        return self._at(int(i))

    def session_at(self, moment: datetime) -> pd.Timestamp | None:
        """The latest session whose fire time is at or before ``moment`` (None before the first).

        This is the session a firing at ``moment`` is for: a run that starts late (within the
        misfire grace) still runs the session it was scheduled for.
        """
        i = self._fires.searchsorted(_utc(moment, "moment"), side="right")
        return None if i == 0 else as_date(self._sessions[int(i) - 1])


class CycleScheduler:
    """Run a callable for every exchange session, after its close, with catch-up at start.

    Parameters
    ----------
    run_session : callable
        ``run_session(session: pandas.Timestamp) -> Any``; called with tz-naive midnight dates.
        Its exceptions are logged, never propagated.
    pending_sessions : callable
        ``pending_sessions() -> Iterable[date-like]``: sessions with closes but no positions
        for the current model, in any order.
    settings : Settings, optional
        Supplies ``calendar`` and ``cycle_delay_minutes``; explicit arguments win.
    calendar : str or exchange_calendars.ExchangeCalendar, optional
        Default: ``settings.calendar``, else ``"XNYS"``.
    delay_minutes : float, optional
        Minutes after each close. Default: ``settings.cycle_delay_minutes``, else 30.
    misfire_grace_hours : float, default 6
        How late a firing may still run (> 0).
    scheduler : apscheduler.schedulers.base.BaseScheduler, optional
        A stopped APScheduler 3.x scheduler to add the job to (tests inject one driven by hand).
        Default: a :class:`~apscheduler.schedulers.background.BackgroundScheduler` in the
        exchange's time zone with one worker thread.
    clock : callable, optional
        ``clock() -> datetime`` (tz-aware), the current time; default ``datetime.now(UTC)``.
        Used to pick the sessions to catch up and the session a firing is for.
    run_sessions : callable, optional
        ``run_sessions(sessions: list[pandas.Timestamp]) -> Any``: runs several sessions in
        order at once (the service's batched catch-up). Used for a catch-up of more than one
        session; its exceptions are logged like ``run_session``'s. Default: one
        ``run_session`` call per session.

    Raises
    ------
    ValueError
        Invalid calendar, delay or grace.
    """

    def __init__(
        self,
        run_session: Callable[[pd.Timestamp], Any],
        pending_sessions: Callable[[], Iterable[Any]],
        *,
        settings: Settings | None = None,
        calendar: str | xcals.ExchangeCalendar | None = None,
        delay_minutes: float | None = None,
        misfire_grace_hours: float = DEFAULT_MISFIRE_GRACE_HOURS,
        scheduler: BaseScheduler | None = None,
        clock: Callable[[], datetime] | None = None,
        run_sessions: Callable[[list[pd.Timestamp]], Any] | None = None,
    ) -> None:
        if not callable(run_session):
            raise TypeError("`run_session` must be callable")
        if not callable(pending_sessions):
            raise TypeError("`pending_sessions` must be callable")
        if calendar is None:
            calendar = settings.calendar if settings is not None else DEFAULT_CALENDAR
        if delay_minutes is None:
            delay_minutes = (
                settings.cycle_delay_minutes if settings is not None else DEFAULT_DELAY_MINUTES
            )
        grace_hours = _misfire_grace_hours(misfire_grace_hours)
        self.trigger: SessionCloseTrigger = SessionCloseTrigger(calendar, delay_minutes)
        self.misfire_grace: timedelta = timedelta(hours=grace_hours)
        self._run_session: Callable[[pd.Timestamp], Any] = run_session
        self._pending_sessions: Callable[[], Iterable[Any]] = pending_sessions
        self._run_sessions = run_sessions
        self._clock: Callable[[], datetime] = clock if clock is not None else _utc_now
        self.scheduler: BaseScheduler = (
            scheduler if scheduler is not None else self._default_scheduler()
        )
        self._started: bool = False

    def _default_scheduler(self) -> BackgroundScheduler:
        # one worker: with max_instances=1 a second thread would never be used
        return BackgroundScheduler(
            timezone=self.trigger.timezone, executors={"default": ThreadPoolExecutor(1)}
        )

    # -- state ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the job is scheduled and the scheduler is running."""
        return bool(self.scheduler.running)

    @property
    def next_fire_time(self) -> datetime | None:
        """When the job fires next (exchange time zone); None when not scheduled."""
        job = self.scheduler.get_job(JOB_ID) if self._started else None
        return None if job is None else job.next_run_time

    # -- running sessions ----------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        _utc(now, "clock()")  # refuse a naive clock early, with a clear message
        return now

    def _pending(self) -> list[pd.Timestamp]:
        """``pending_sessions()`` as sorted unique dates; [] (logged) when it raises."""
        try:
            sessions = self._pending_sessions()
            return sorted({as_date(s, "pending session") for s in sessions})
        except Exception:
            log.exception("listing pending sessions failed; catching up nothing this time")
            return []

    def _run(self, session: pd.Timestamp) -> bool:
        """Run one session; True when ``run_session`` returned, False when it raised (logged)."""
        log.info("running session %s", f"{session:%Y-%m-%d}")
        try:
            self._run_session(session)
        except Exception:
            log.exception("session %s failed; the scheduler goes on", f"{session:%Y-%m-%d}")
            return False
        return True

    def catch_up(self, now: datetime | None = None) -> list[pd.Timestamp]:
        """Run, in date order, every pending session whose scheduled time is at or before ``now``.

        Parameters
        ----------
        now : datetime, optional
            tz-aware; default the clock.

        Returns
        -------
        list of pandas.Timestamp
            The sessions run (including those whose run raised).
        """
        moment = self._now() if now is None else now
        latest = self.trigger.session_at(moment)
        due = [s for s in self._pending() if latest is not None and s <= latest]
        if due:
            log.info(
                "catching up %d pending session(s): %s .. %s",
                len(due),
                f"{due[0]:%Y-%m-%d}",
                f"{due[-1]:%Y-%m-%d}",
            )
        if len(due) > 1 and self._run_sessions is not None:
            try:
                self._run_sessions(due)
            except Exception:
                log.exception(
                    "catch-up %s .. %s failed; the scheduler goes on",
                    f"{due[0]:%Y-%m-%d}",
                    f"{due[-1]:%Y-%m-%d}",
                )
            return due
        for session in due:
            self._run(session)
        return due

    def _fire(self) -> None:
        """The job: the session of this firing, after any older pending session."""
        session = self.trigger.session_at(self._now())
        if session is None:  # cannot happen for a fire time from the trigger
            log.warning("fired before the first session of %s", self.trigger.calendar.name)
            return
        older = [s for s in self._pending() if s < session]
        for day in [*older, session]:
            self._run(day)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Catch up the pending sessions (in order, in this thread), then start the job.

        The first firing is the first fire time after the moment ``start`` was called, so a
        session whose time passes during a long catch-up still fires (at once).

        Raises
        ------
        RuntimeError
            Already started.
        """
        if self._started:
            raise RuntimeError("the cycle scheduler is already started")
        started_at = self._now()
        self.catch_up(started_at)
        first = self.trigger.get_next_fire_time(None, started_at)
        self.scheduler.add_job(
            self._fire,
            trigger=self.trigger,
            id=JOB_ID,
            name="momentum daily cycle",
            next_run_time=first,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(self.misfire_grace.total_seconds()),
            replace_existing=True,
        )
        self.scheduler.start()
        self._started = True
        log.info(
            "scheduler started (%s, misfire grace %s); next run %s",
            self.trigger,
            self.misfire_grace,
            "none" if first is None else first.isoformat(),
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait`` let a running session finish first. Idempotent."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
            log.info("scheduler stopped")


def _utc_now() -> datetime:
    return datetime.now(UTC)
