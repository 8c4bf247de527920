"""Tests for service.scheduler: the session-close trigger and the scheduler, on a fake clock.

Nothing here sleeps. Two levels:

* :class:`SessionCloseTrigger` is a pure function of (previous fire time, now): tested by
  calling ``get_next_fire_time`` directly, with expected times worked out from the NYSE
  calendar by hand (holidays, early closes at 13:00, daylight saving).
* :class:`CycleScheduler` runs on APScheduler's own job processing (due-time computation,
  coalescing, misfire grace, max instances) under a fake clock: the ``clock`` fixture replaces
  ``datetime`` in the two APScheduler modules that read the time, and the same clock is given
  to the scheduler. Most tests use :class:`ManualScheduler`, APScheduler's ``BaseScheduler``
  with the debug executor, stepped by calling ``tick()`` (no thread, deterministic); one test
  runs the production ``BackgroundScheduler`` thread and wakes it after moving the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pandas as pd
import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from service.config import load_settings
from service.scheduler import JOB_ID, CycleScheduler, SessionCloseTrigger

NEW_YORK = ZoneInfo("America/New_York")


def et(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A New York wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


# --------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------


class FakeClock:
    """The current time, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock that APScheduler reads too (its scheduler loop and its misfire check)."""
    fake = FakeClock(et(2000, 1, 3))

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return fake.now.astimezone(tz)

    for module in (apscheduler.schedulers.base, apscheduler.executors.base):
        monkeypatch.setattr(module, "datetime", ClockDatetime)
    return fake


class ManualScheduler(BaseScheduler):
    """APScheduler's job processing without its thread: the test calls ``tick()``."""

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def wakeup(self) -> None:
        """Nothing to wake: jobs are processed when the test ticks."""

    def tick(self) -> None:
        self._process_jobs()


class FakeService:
    """Stands in for the store and the cycle: sessions with closes, and the ones run."""

    def __init__(self, closes=(), failing=()) -> None:
        self.closes = {day(d) for d in closes}
        self.failing = {day(d) for d in failing}
        self.done: set[pd.Timestamp] = set()
        self.runs: list[pd.Timestamp] = []
        self.run_times: list[datetime] = []
        self.clock: FakeClock | None = None
        self.pending_error: Exception | None = None
        self.on_run: Callable[[pd.Timestamp], None] | None = None  # observes each run

    def run_session(self, session: pd.Timestamp) -> str:
        self.runs.append(session)
        if self.clock is not None:
            self.run_times.append(self.clock())
        if self.on_run is not None:
            self.on_run(session)
        if session in self.failing:
            raise RuntimeError(f"cycle {session:%Y-%m-%d} exploded")
        self.done.add(session)
        return "ok"

    def pending_sessions(self) -> list[pd.Timestamp]:
        if self.pending_error is not None:
            raise self.pending_error
        return sorted(self.closes - self.done, reverse=True)  # any order is allowed


def make(service: FakeService, clock: FakeClock, **kwargs) -> tuple[CycleScheduler, list]:
    """A CycleScheduler on a ManualScheduler; returns it and the list of job events."""
    service.clock = clock
    manual = ManualScheduler(timezone=NEW_YORK, executors={"default": DebugExecutor()})
    events: list = []
    manual.add_listener(events.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler = CycleScheduler(
        service.run_session,
        service.pending_sessions,
        calendar="XNYS",
        delay_minutes=kwargs.pop("delay_minutes", 30),
        scheduler=manual,
        clock=clock,
        **kwargs,
    )
    return scheduler, events


# --------------------------------------------------------------------------------------------
# the trigger
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trigger() -> SessionCloseTrigger:
    return SessionCloseTrigger("XNYS", delay_minutes=30)


def test_fires_at_the_close_plus_delay_in_new_york_time(trigger):
    assert trigger.fire_time("2024-07-02") == et(2024, 7, 2, 16, 30)
    assert trigger.fire_time("2024-07-02").tzinfo == NEW_YORK
    # daylight saving starts on 2024-03-10: the same 16:30 in New York is an hour earlier in UTC
    assert trigger.fire_time("2024-03-08").astimezone(UTC) == datetime(
        2024, 3, 8, 21, 30, tzinfo=UTC
    )
    assert trigger.fire_time("2024-03-11").astimezone(UTC) == datetime(
        2024, 3, 11, 20, 30, tzinfo=UTC
    )
    assert SessionCloseTrigger("XNYS", 0).fire_time("2024-07-02") == et(2024, 7, 2, 16, 0)
    assert str(trigger) == "XNYS session close + 30 min"


def test_respects_the_early_close_after_thanksgiving(trigger):
    # 2024-11-28 is Thanksgiving (closed); 2024-11-29 closes at 13:00
    after_wednesday = trigger.get_next_fire_time(trigger.fire_time("2024-11-27"), et(2024, 11, 1))
    assert after_wednesday == et(2024, 11, 29, 13, 30)
    assert trigger.get_next_fire_time(None, et(2024, 11, 29, 13, 0)) == et(2024, 11, 29, 13, 30)
    assert SessionCloseTrigger("XNYS", 45).fire_time("2024-11-29") == et(2024, 11, 29, 13, 45)


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        # 07-03 closes early (13:00); 07-04 Independence Day is skipped
        (et(2024, 7, 3, 13, 30), et(2024, 7, 5, 16, 30)),
        # 12-24 closes early; Christmas is skipped
        (et(2024, 12, 24, 13, 30), et(2024, 12, 26, 16, 30)),
        # Friday -> Monday
        (et(2024, 7, 5, 16, 30), et(2024, 7, 8, 16, 30)),
        # Good Friday 2024-03-29 is a holiday
        (et(2024, 3, 28, 16, 30), et(2024, 4, 1, 16, 30)),
    ],
)
def test_skips_holidays_and_weekends(trigger, previous, expected):
    assert trigger.get_next_fire_time(previous, et(2020, 1, 2)) == expected


def test_a_whole_year_fires_once_per_session(trigger):
    fires = []
    fire = trigger.get_next_fire_time(None, et(2024, 1, 1))
    while fire < et(2025, 1, 1):
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)
    # 262 weekdays in 2024 minus the 10 NYSE holidays
    holidays = {
        day(d)
        for d in [
            "2024-01-01",
            "2024-01-15",
            "2024-02-19",
            "2024-03-29",
            "2024-05-27",
            "2024-06-19",
            "2024-07-04",
            "2024-09-02",
            "2024-11-28",
            "2024-12-25",
        ]
    }
    assert len(fires) == 252
    dates = [pd.Timestamp(f.date()) for f in fires]
    assert len(set(dates)) == 252 and not holidays & set(dates)
    assert all(d.day_of_week < 5 for d in dates)
    early = [d for d, f in zip(dates, fires, strict=True) if (f.hour, f.minute) == (13, 30)]
    assert early == [day("2024-07-03"), day("2024-11-29"), day("2024-12-24")]
    assert all(
        (f.hour, f.minute) == (16, 30) for d, f in zip(dates, fires, strict=True) if d not in early
    )


def test_first_fire_time_is_at_or_after_now(trigger):
    fire = et(2024, 7, 2, 16, 30)
    assert trigger.get_next_fire_time(None, fire) == fire
    assert trigger.get_next_fire_time(None, fire + timedelta(microseconds=1)) == et(
        2024, 7, 3, 13, 30
    )
    assert trigger.get_next_fire_time(None, et(2024, 7, 4, 12)) == et(2024, 7, 5, 16, 30)
    # another time zone for `now` is the same instant
    assert trigger.get_next_fire_time(None, datetime(2024, 7, 2, 20, 30, tzinfo=UTC)) == fire


def test_session_at_is_the_session_a_firing_is_for(trigger):
    assert trigger.session_at(et(2024, 7, 2, 16, 30)) == day("2024-07-02")
    assert trigger.session_at(et(2024, 7, 2, 16, 29)) == day("2024-07-01")
    assert trigger.session_at(et(2024, 7, 4, 23)) == day("2024-07-03")
    assert trigger.session_at(et(1989, 12, 1)) is None


def test_trigger_refuses_bad_input(trigger):
    with pytest.raises(ValueError, match="`delay_minutes` must be finite and >= 0"):
        SessionCloseTrigger("XNYS", -5)
    with pytest.raises(ValueError, match="unknown exchange calendar 'NOPE'"):
        SessionCloseTrigger("NOPE")
    with pytest.raises(ValueError, match="`now` must be timezone-aware"):
        trigger.get_next_fire_time(None, datetime(2024, 7, 2, 12))
    with pytest.raises(ValueError, match="2024-07-04 is not a session of the XNYS calendar"):
        trigger.fire_time("2024-07-04")


# --------------------------------------------------------------------------------------------
# the scheduler
# --------------------------------------------------------------------------------------------


def test_job_options_and_settings(clean_env, clock):
    service = FakeService()
    scheduler, _ = make(service, clock)
    clock.now = et(2024, 7, 2, 12)
    scheduler.start()
    job = scheduler.scheduler.get_job(JOB_ID)
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)
    assert job.trigger is scheduler.trigger
    assert scheduler.next_fire_time == et(2024, 7, 2, 16, 30)
    scheduler.shutdown()
    assert not scheduler.running
    scheduler.shutdown()  # idempotent

    settings = load_settings(_env_file=None, calendar="XLON", cycle_delay_minutes=5)
    from_settings = CycleScheduler(service.run_session, service.pending_sessions, settings=settings)
    assert from_settings.trigger.calendar.name == "XLON"
    assert from_settings.trigger.delay == timedelta(minutes=5)
    assert isinstance(from_settings.scheduler, BackgroundScheduler)
    explicit = CycleScheduler(
        service.run_session,
        service.pending_sessions,
        settings=settings,
        delay_minutes=10,
        misfire_grace_hours=2,
    )
    assert explicit.trigger.delay == timedelta(minutes=10)
    assert explicit.misfire_grace == timedelta(hours=2)
    with pytest.raises(ValueError, match="`misfire_grace_hours` must be a positive number"):
        CycleScheduler(service.run_session, service.pending_sessions, misfire_grace_hours=0)
    with pytest.raises(TypeError, match="`run_session` must be callable"):
        CycleScheduler(None, service.pending_sessions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # Independence Day week: 07-03 closes at 13:00, 07-04 closed, weekend 07-06/07
        (
            et(2024, 7, 1, 9),
            et(2024, 7, 9, 9),
            [
                ("2024-07-01", et(2024, 7, 1, 16, 30)),
                ("2024-07-02", et(2024, 7, 2, 16, 30)),
                ("2024-07-03", et(2024, 7, 3, 13, 30)),
                ("2024-07-05", et(2024, 7, 5, 16, 30)),
                ("2024-07-08", et(2024, 7, 8, 16, 30)),
            ],
        ),
        # Thanksgiving: 11-28 closed, 11-29 closes at 13:00
        (
            et(2024, 11, 27, 9),
            et(2024, 12, 1, 9),
            [("2024-11-27", et(2024, 11, 27, 16, 30)), ("2024-11-29", et(2024, 11, 29, 13, 30))],
        ),
        # Christmas: 12-24 closes at 13:00, 12-25 closed
        (
            et(2024, 12, 23, 9),
            et(2024, 12, 28, 9),
            [
                ("2024-12-23", et(2024, 12, 23, 16, 30)),
                ("2024-12-24", et(2024, 12, 24, 13, 30)),
                ("2024-12-26", et(2024, 12, 26, 16, 30)),
                ("2024-12-27", et(2024, 12, 27, 16, 30)),
            ],
        ),
    ],
)
def test_runs_each_session_at_its_close_and_never_on_other_days(clock, start, end, expected):
    service = FakeService()
    scheduler, events = make(service, clock)
    clock.now = start
    scheduler.start()
    while clock.now < end:  # a quarter-hour at a time: every fire time is hit exactly
        clock.now += timedelta(minutes=15)
        scheduler.scheduler.tick()
    assert [(f"{s:%Y-%m-%d}", t) for s, t in zip(service.runs, service.run_times, strict=True)] == (
        expected
    )
    assert [e.code for e in events] == [EVENT_JOB_EXECUTED] * len(expected)
    scheduler.shutdown()


def test_coalesces_missed_fire_times_into_one_run(clock):
    service = FakeService()
    # a grace long enough for every missed fire time: only coalescing makes it one run
    scheduler, events = make(service, clock, misfire_grace_hours=120)
    clock.now = et(2024, 11, 25, 12)
    scheduler.start()
    # the process stalls: the fire times of 11-25, 11-26, 11-27 and 11-29 (13:30) all pass
    clock.now = et(2024, 11, 29, 14)
    scheduler.scheduler.tick()
    assert service.runs == [day("2024-11-29")]  # the latest session, once
    assert len(events) == 1 and events[0].code == EVENT_JOB_EXECUTED
    assert events[0].scheduled_run_time == et(2024, 11, 29, 13, 30)
    assert scheduler.next_fire_time == et(2024, 12, 2, 16, 30)
    scheduler.scheduler.tick()
    assert len(service.runs) == 1
    scheduler.shutdown()


def test_a_firing_missed_beyond_the_grace_is_skipped_and_its_session_caught_up_later(clock):
    service = FakeService(closes=["2024-11-25", "2024-11-26", "2024-11-27"])
    scheduler, events = make(service, clock)
    clock.now = et(2024, 11, 25, 12)
    scheduler.start()
    assert service.runs == []  # nothing was due at start
    # 11-27 16:30 missed by 6.5 hours (> 6 h grace): APScheduler drops the run
    clock.now = et(2024, 11, 27, 23)
    scheduler.scheduler.tick()
    assert service.runs == [] and [e.code for e in events] == [EVENT_JOB_MISSED]
    # the next firing runs the pending sessions first, in date order, then its own
    clock.now = et(2024, 11, 29, 13, 30)
    scheduler.scheduler.tick()
    assert service.runs == [
        day(d) for d in ("2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29")
    ]
    scheduler.shutdown()


def test_start_catches_up_pending_sessions_in_order_before_scheduling(clock):
    service = FakeService(closes=["2024-07-05", "2024-07-02", "2024-07-08", "2024-07-03"])
    scheduler, _ = make(service, clock)
    seen_running = []
    service.on_run = lambda _: seen_running.append(scheduler.running)
    clock.now = et(2024, 7, 8, 16, 10)  # the 07-08 closes are in, its 16:30 run is not due
    scheduler.start()
    assert service.runs == [day("2024-07-02"), day("2024-07-03"), day("2024-07-05")]
    assert seen_running == [False, False, False]  # caught up before the job started
    assert scheduler.running and scheduler.next_fire_time == et(2024, 7, 8, 16, 30)
    clock.now = et(2024, 7, 8, 16, 30)
    scheduler.scheduler.tick()
    assert service.runs[3:] == [day("2024-07-08")]
    assert scheduler.catch_up() == []  # nothing left
    with pytest.raises(RuntimeError, match="already started"):
        scheduler.start()
    scheduler.shutdown()


def test_a_catch_up_of_several_sessions_is_one_batched_call(clock, caplog):
    service = FakeService(closes=["2024-07-02", "2024-07-03", "2024-07-05"])
    batches: list[list[pd.Timestamp]] = []

    def run_sessions(sessions):
        batches.append(list(sessions))
        for session in sessions:
            service.run_session(session)

    scheduler, _ = make(service, clock, run_sessions=run_sessions)
    clock.now = et(2024, 7, 5, 17)
    assert scheduler.catch_up() == [day("2024-07-02"), day("2024-07-03"), day("2024-07-05")]
    assert batches == [[day("2024-07-02"), day("2024-07-03"), day("2024-07-05")]]
    # one pending session goes through run_session; a failing batch is logged, not raised
    service.closes.add(day("2024-07-08"))
    clock.now = et(2024, 7, 8, 17)
    assert scheduler.catch_up() == [day("2024-07-08")] and len(batches) == 1
    service.closes |= {day("2024-07-09"), day("2024-07-10")}
    service.failing.add(day("2024-07-09"))
    clock.now = et(2024, 7, 10, 17)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        assert scheduler.catch_up() == [day("2024-07-09"), day("2024-07-10")]
    assert "catch-up 2024-07-09 .. 2024-07-10 failed" in caplog.text


def test_a_session_due_while_catching_up_fires_at_once(clock):
    service = FakeService(closes=["2024-07-01"])
    scheduler, _ = make(service, clock)
    clock.now = et(2024, 7, 2, 16)
    # the catch-up outlasts the 07-02 16:30 fire time
    service.on_run = lambda _: setattr(clock, "now", et(2024, 7, 2, 17))
    scheduler.start()
    service.on_run = None
    assert scheduler.next_fire_time == et(2024, 7, 2, 16, 30)  # not tomorrow's
    scheduler.scheduler.tick()
    assert service.runs == [day("2024-07-01"), day("2024-07-02")]
    scheduler.shutdown()


def test_a_failing_session_is_logged_and_later_sessions_still_run(clock, caplog):
    service = FakeService(closes=["2024-07-02", "2024-07-03", "2024-07-05"], failing=["2024-07-03"])
    scheduler, events = make(service, clock)
    clock.now = et(2024, 7, 5, 17)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.start()
    assert service.runs == [day("2024-07-02"), day("2024-07-03"), day("2024-07-05")]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "session 2024-07-03 failed; the scheduler goes on"
    ]
    assert "cycle 2024-07-03 exploded" in failures[0].exc_text

    # the failed session is still pending: retried before the next firing's own session,
    # which fails too; the scheduler keeps its job and the day after runs normally
    service.failing.add(day("2024-07-08"))
    service.closes.add(day("2024-07-08"))
    clock.now = et(2024, 7, 8, 16, 30)
    scheduler.scheduler.tick()
    assert service.runs[3:] == [day("2024-07-03"), day("2024-07-08")]
    service.failing.clear()
    clock.now = et(2024, 7, 9, 16, 30)
    scheduler.scheduler.tick()
    assert service.runs[5:] == [day("2024-07-03"), day("2024-07-08"), day("2024-07-09")]
    # the job itself never failed: errors stay inside the sessions
    assert [e.code for e in events] == [EVENT_JOB_EXECUTED, EVENT_JOB_EXECUTED]
    assert scheduler.running and scheduler.next_fire_time == et(2024, 7, 10, 16, 30)
    scheduler.shutdown()


def test_a_failing_pending_sessions_call_still_runs_the_fired_session(clock, caplog):
    service = FakeService()
    service.pending_error = ConnectionError("database is down")
    scheduler, _ = make(service, clock)
    clock.now = et(2024, 7, 2, 12)
    scheduler.start()
    clock.now = et(2024, 7, 2, 16, 30)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.scheduler.tick()
    assert service.runs == [day("2024-07-02")]
    assert any("listing pending sessions failed" in r.getMessage() for r in caplog.records)
    scheduler.shutdown()


def test_a_naive_clock_is_refused(clock):
    service = FakeService()
    scheduler, _ = make(service, FakeClock(datetime(2024, 7, 2, 12)))
    with pytest.raises(ValueError, match=r"`clock\(\)` must be timezone-aware"):
        scheduler.start()


def test_the_background_scheduler_thread_runs_a_session_when_the_clock_reaches_it(clock):
    service = FakeService()
    ran = threading.Event()
    service.on_run = lambda _: ran.set()
    scheduler = CycleScheduler(
        service.run_session,
        service.pending_sessions,
        calendar="XNYS",
        delay_minutes=30,
        clock=clock,
    )
    assert isinstance(scheduler.scheduler, BackgroundScheduler)
    clock.now = et(2024, 11, 29, 12)
    scheduler.start()
    try:
        assert scheduler.next_fire_time == et(2024, 11, 29, 13, 30)
        clock.now = et(2024, 11, 29, 13, 30)
        scheduler.scheduler.wakeup()  # the thread re-reads the (fake) time and finds the job due
        # a guard against a hang, not a timing assertion: the run itself takes microseconds
        assert ran.wait(timeout=60), "the scheduler thread never ran the session"
    finally:
        scheduler.shutdown(wait=True)
    assert service.runs == [day("2024-11-29")]
    assert not scheduler.running


def test_past_the_calendars_end_there_is_no_fire_time_and_an_error_is_logged(trigger, caplog):
    last = trigger.calendar.last_session
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        assert trigger.get_next_fire_time(trigger.fire_time(last), et(2020, 1, 2)) is None
    assert f"the XNYS calendar ends on {last:%Y-%m-%d}" in caplog.text
    assert "restart the service" in caplog.text
