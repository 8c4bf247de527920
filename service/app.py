"""The service's parts wired together from `Settings`: what the CLI and the servers share.

`SignalService` owns the store engine, the model holder, the universe and the
cycle options, and offers the few domain operations every interface calls:
ingest closes, run a session (cycle then paper ledger), find pending
sessions, and publish completed cycles to subscribers (the gRPC stream).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd
import sqlalchemy as sa

from momentum.data import EMBEDDED, load_index, load_prices
from service import store
from service.calendar import as_date, exchange_today, get_calendar
from service.config import Settings
from service.cycle import CycleOptions, CycleResult, check_feature_parity, run_cycle, run_cycles
from service.errors import FailedPrecondition
from service.ingest import IngestResult, ingest_closes, ingest_file
from service.live_features import live_features
from service.metrics import DRIFT_WINDOW, ServiceMetrics
from service.model import LoadedModel, ModelHolder
from service.paper import ledger_summary, update_ledger
from service.plausibility import PlausibilityRules
from service.queries import cycle_context, recent_signals, service_history

__all__ = ["SignalService", "StoredCycle"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredCycle:
    """A cycle another process stored: what stream subscribers need to fetch it."""

    as_of: pd.Timestamp
    model_name: str
    model_version: str
    status: str
    run_id: int


class SignalService:
    """Engine, model, universe and options of one running service."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: sa.Engine | None = None,
        metrics: ServiceMetrics | None = None,
        read_only: bool = False,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # a read replica: serves what the store holds, never ingests or runs cycles
        self.read_only = read_only
        self.engine = engine or store.create_engine(str(settings.database_url))
        self.calendar = get_calendar(settings.calendar)
        self.options = CycleOptions(
            vol_target=settings.vol_target,
            portfolio_vol_target=settings.portfolio_vol_target,
            stale_policy=settings.stale_policy,
            max_carry_sessions=settings.max_carry_sessions,
            drift_rows=metrics.drift_window if metrics is not None else DRIFT_WINDOW,
            keep_states=settings.feature_states_kept,
        )
        self.plausibility = PlausibilityRules(
            min_close=settings.min_close,
            max_close=settings.max_close,
            max_ratio=settings.max_close_ratio,
        )
        self._cycles_run = 0  # parity is checked on the first cycle and every parity_every
        self.holder = ModelHolder(
            settings.registry_dir,
            settings.model_name,
            version=settings.model_version,
            tickers=self.tickers,
            index=self.index_ticker,
            device=settings.device,
            engine=self.engine,
        )
        self._subscribers: list[Callable[[CycleResult], None]] = []
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()  # one cycle at a time (scheduler, RunCycle, CLI)

    @cached_property
    def tickers(self) -> list[str]:
        """The universe: the embedded dataset's tickers, or the columns of a price file."""
        return [str(t) for t in load_prices(self.settings.universe).columns]

    @cached_property
    def index_ticker(self) -> str | None:
        """The market index series' name in the store (`Settings.index_ticker`): the
        embedded universe's own index unless set; None for a price file unless set."""
        if self.settings.index_ticker:
            return self.settings.index_ticker
        if self.universe_is_embedded:
            return str(load_index(self.settings.universe).name)
        return None

    @property
    def ingest_universe(self) -> list[str]:
        """What ingest accepts: the universe's tickers and the index series, if any."""
        index = self.index_ticker
        return self.tickers + ([index] if index is not None and index not in self.tickers else [])

    @property
    def universe_is_embedded(self) -> bool:
        return self.settings.universe in EMBEDDED

    # -- closes -----------------------------------------------------------------------------

    def ingest(
        self,
        rows: pd.DataFrame,
        *,
        correction: bool = False,
        source: str = "batch",
        today: Any = None,
    ) -> IngestResult:
        self._writable("ingest closes")
        result = ingest_closes(
            self.engine,
            rows,
            universe=self.ingest_universe,
            calendar=self.calendar,
            today=today,
            correction=correction,
            source=source,
            rules=self.plausibility,
        )
        self._observe_ingest(result)
        return result

    def ingest_file(self, path: str, *, correction: bool = False) -> IngestResult:
        self._writable("ingest closes")
        result = ingest_file(
            self.engine,
            path,
            universe=self.ingest_universe,
            calendar=self.calendar,
            correction=correction,
            rules=self.plausibility,
        )
        self._observe_ingest(result)
        return result

    def refresh_model(self) -> Any:
        """Reload the model if the production pointer moved (`ModelHolder.refresh`)."""
        outcome = self.holder.refresh()
        self._observe(lambda m: m.observe_model(self.holder.current))
        self._observe(
            lambda m: m.observe_refusal(outcome.refused is not None, new=outcome.new_refusal)
        )
        return outcome

    # -- cycles -----------------------------------------------------------------------------

    def run_session(self, session: Any) -> CycleResult:
        """The cycle of one session with the current model, then the paper ledger.

        When a close written since (a late close or a correction) left stored sessions to
        rerun up to this one (`store.pending_rerun`), they all run first, batched and in
        order, each then marked; the result of `session` is returned.
        """
        self._writable("run cycles")
        day = as_date(session, "session")
        marker = store.pending_rerun(self.engine)
        if marker is not None and marker[1] <= day:
            sessions = store.closes_dates(self.engine, start=marker[1], end=day)
            results = self.run_sessions(sorted({*sessions, day}))
            return results[-1]
        with self._cycle_lock:
            self.refresh_model()
            model = self.holder.require()
            self._cycles_run += 1
            result = run_cycle(
                self.engine,
                model,
                session,
                options=self.options,
                notify=self._publish,
                check_parity=self._parity_due(1),
            )
            self._mark(model, result)
            self._observe_cycle(result, model)
            self._observe(lambda m: m.observe_ledger(ledger_summary(self.engine, model.name)))
        return result

    def run_sessions(
        self, sessions: Any, *, each: Callable[[CycleResult], None] | None = None
    ) -> list[CycleResult]:
        """The cycles of several sessions in order, batched (`run_cycles`), each then marked.

        After every session: the paper ledger (up to that session), the metrics, then
        ``each(result)`` (progress for the CLI). The last successful session gets the parity
        check when one is due. Sessions that cover a pending rerun (from its date to the
        newest stored set, none failed) clear it.
        """
        self._writable("run cycles")
        results: list[CycleResult] = []
        with self._cycle_lock:
            self.refresh_model()
            model = self.holder.require()
            marker = store.pending_rerun(self.engine)
            # the sets a pending rerun must replace (read only when one is pending)
            stored = None if marker is None else store.positions_dates(self.engine, model.name)
            for result in run_cycles(
                self.engine, model, sessions, options=self.options, notify=self._publish
            ):
                self._cycles_run += 1
                self._mark(model, result)
                self._observe_cycle(result, model)
                results.append(result)
                if each is not None:
                    each(result)
            if marker is not None and stored is not None and _covers(results, marker[1], stored):
                store.clear_reruns(self.engine, upto=marker[0])
                log.info(
                    "reran the sessions from %s: the stored sets are current", marker[1].date()
                )
            done = [r for r in results if r.status == "succeeded"]
            if done and self._parity_due(len(results)):
                check_feature_parity(self.engine, model, done[-1])
                self._observe(lambda m: m.observe_parity(done[-1]))
            self._observe(lambda m: m.observe_ledger(ledger_summary(self.engine, model.name)))
        return results

    def _mark(self, model: LoadedModel, result: CycleResult) -> None:
        """The paper ledger up to `result`'s session (never a later set a rerun will replace)."""
        update_ledger(
            self.engine,
            model.name,
            cost_bps=self.settings.cost_bps,
            calendar=self.calendar,
            upto=result.as_of,
        )

    def _parity_due(self, cycles: int) -> bool:
        """A parity check falls in the last `cycles` cycles (the first one after start too)."""
        every = self.settings.parity_every
        if every <= 0:
            return False
        first = self._cycles_run - cycles
        return first == 0 or first // every != self._cycles_run // every

    def pending_sessions(self) -> list[pd.Timestamp]:
        """Sessions with closes but no positions of the current model version, to catch up.

        Only sessions after this model's newest positions count (a new model does
        not recompute years of history), and those from the date of a pending rerun
        (a close written for a date that already has positions); with no positions at
        all, the newest session with closes.
        """
        model = self.holder.current
        if model is None:
            return []
        newest = store.newest_close_date(self.engine)
        if newest is None:
            return []
        done = store.positions_dates(self.engine, model.name, model.version)
        if len(done) == 0:
            done = store.positions_dates(self.engine, model.name)
            if len(done) == 0:
                return [newest]
        # only the dates after the last set are read, not the whole history of closes;
        # a changed close (store.pending_rerun) reaches back to its date
        start = done[-1] + pd.Timedelta(days=1)
        marker = store.pending_rerun(self.engine)
        if marker is not None:
            start = min(start, marker[1])
        closes = store.closes_dates(self.engine, start=start)
        today = exchange_today(self.calendar)
        return [d for d in closes if d <= today]

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise FailedPrecondition(
                f"this is a read replica: it does not {what}; send writes to the instance "
                "that runs the scheduler"
            )

    def watch_model(self, interval: float | None = None) -> Callable[[], None]:
        """Follow the production pointer every `interval` seconds (default the setting
        ``model_poll_seconds``) in a thread; returns stop(). A promoted version is loaded
        without waiting for a cycle; a refused one is reported once (`refresh_model`)."""
        every = self.settings.model_poll_seconds if interval is None else interval

        def tick() -> None:
            try:
                self.refresh_model()
            except Exception:
                log.exception("following the production pointer failed")

        return _every(every, "model-watch", tick)

    def watch_store(self, interval: float = 2.0) -> Callable[[], None]:
        """Publish cycles that another process stored (read replicas); returns stop().

        Every `interval` seconds the newest succeeded cycle run is read; a new one is
        published to the subscribers (StreamPositions) like a cycle run here.
        """
        last = self._newest_run()
        newest = last.run_id if last is not None else -1

        def tick() -> None:
            nonlocal newest
            try:
                self.refresh_model()  # follow the production pointer, as the writer does
                found = self._newest_run()
            except Exception:
                log.exception("reading cycle runs failed")
                return
            if found is not None and found.run_id > newest:
                newest = found.run_id
                self._publish(found)  # type: ignore[arg-type]

        return _every(interval, "store-watch", tick)

    def _newest_run(self) -> StoredCycle | None:
        runs = store.read_cycle_runs(self.engine, status="succeeded", limit=1)
        if runs.empty:
            return None
        row = runs.iloc[0]
        return StoredCycle(
            as_of=pd.Timestamp(row["as_of"]),
            model_name=str(row["model_name"]),
            model_version=str(row["model_version"]),
            status="succeeded",
            run_id=int(row["id"]),
        )

    # -- metrics ----------------------------------------------------------------------------

    def _observe(self, update: Callable[[ServiceMetrics], None]) -> None:
        """Feed the metrics; a metrics failure is logged and never stops the service."""
        if self.metrics is None:
            return
        try:
            update(self.metrics)
        except Exception:
            log.exception("updating metrics failed")

    def prime_metrics(self) -> None:
        """Metrics from what the store already holds (at start, before any cycle)."""
        self._observe_closes()
        model = self.holder.current
        name = model.name if model is not None else self.settings.model_name
        history = service_history(self.engine, name)
        self._observe(lambda m: m.observe_history(history))
        self._observe(lambda m: m.observe_ledger(ledger_summary(self.engine, name)))
        if model is not None and history.last_as_of is not None:
            self._observe(lambda m: self._observe_drift(m, model, history.last_as_of))

    def _observe_drift(self, metrics: ServiceMetrics, model: LoadedModel, as_of: Any) -> None:
        """The drift gauges as of the newest stored session (read only: nothing is stored)."""
        window = metrics.drift_window
        features = live_features(
            self.engine,
            model,
            pd.Timestamp(as_of),
            stale_policy=self.options.stale_policy,
            max_carry_sessions=self.options.max_carry_sessions,
            portfolio_vol_target=self.options.portfolio_vol_target,
            drift_rows=window,
        ).recent
        signals = recent_signals(self.engine, model.name, model.version, as_of, window)
        metrics.observe_drift(model.manifest, features.values, signals)

    def _observe_ingest(self, result: IngestResult) -> None:
        rejected = sum(1 for r in result.rejections if r.row != -1) or len(result.rejections)
        self._observe(lambda m: m.observe_ingest(rejected))
        self._observe_closes()

    def _observe_closes(self) -> None:
        self._observe(
            lambda m: m.observe_closes(self.settings.universe, store.newest_close_date(self.engine))
        )

    def _observe_cycle(self, result: CycleResult, model: LoadedModel) -> None:
        self._observe(
            lambda m: m.observe_cycle(
                result, cycle_context(self.engine, result, m.drift_window), model=model
            )
        )

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[CycleResult], None]) -> Callable[[], None]:
        """Call `callback` after every stored cycle; returns the unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _publish(self, result: CycleResult) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(result)
            except Exception:
                log.exception("subscriber failed on cycle %s", f"{result.as_of:%Y-%m-%d}")


def _covers(results: list[CycleResult], since: pd.Timestamp, stored: pd.DatetimeIndex) -> bool:
    """Whether `results` reran every stored set from `since` on, none of them failing."""
    days = {r.as_of for r in results}
    return (
        bool(results)
        and min(days) <= since
        and all(r.status != "failed" for r in results)
        and set(stored[stored >= since]) <= days
    )


def _every(interval: float, name: str, tick: Callable[[], None]) -> Callable[[], None]:
    """Run `tick` every `interval` seconds in a daemon thread; returns stop() (joins it)."""
    if not interval > 0:
        raise ValueError(f"`interval` must be positive, got {interval}")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            tick()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=interval + 5)

    return halt
