"""The service's read side: what the RPCs, the metrics and the paper ledger read from the store.

:mod:`service.store` owns tables and rows; this module owns the questions asked of them on
top, each answered in one place:

* :func:`previous_positions`: the set a trader holds when a new one arrives, the newest set
  dated *before* a date. The positions replies (``previous_weight``), the turnover metric
  and the paper ledger's first turnover all use it;
* :class:`PositionsReader`: stored sets in manifest order with the previous weights, behind a
  read-through cache keyed by the ``cycle_runs`` watermark;
* :func:`describe_model`, :func:`list_model_versions`: registry versions and whether they
  are loaded, served and promoted; :func:`run_session`: the RunCycle request's checks;
* :func:`cycle_context`, :func:`service_history`: what the store holds around a cycle, and
  at start, handed to :class:`service.metrics.ServiceMetrics` as plain figures (the metrics
  never read the store).

Every function raises the domain errors of :mod:`service.errors`, never a gRPC status.
See ``docs/architecture.md`` (the service's read side).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.manifest import MANIFEST_FILE, Manifest, ManifestError, read_manifest
from momentum.registry import list_versions, load_version, production_version
from service import store
from service.calendar import exchange_today, is_session
from service.cycle import CycleResult
from service.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange

if TYPE_CHECKING:
    import exchange_calendars as xcals

    from service.config import Settings
    from service.model import ModelHolder


class SignalService(Protocol):
    """What the queries need of :class:`service.app.SignalService` (which imports this module)."""

    settings: Settings
    engine: sa.Engine
    calendar: xcals.ExchangeCalendar
    holder: ModelHolder

    @property
    def tickers(self) -> list[str]: ...

    def run_session(self, session: Any) -> CycleResult: ...


__all__ = [
    "CycleContext",
    "ModelDescription",
    "PositionsReader",
    "PositionsSet",
    "ServiceHistory",
    "cycle_context",
    "describe_model",
    "list_model_versions",
    "previous_positions",
    "recent_signals",
    "refusals",
    "refuse_future",
    "run_session",
    "service_history",
]

log = logging.getLogger(__name__)

_CACHE_SIZE = 256


def previous_positions(
    bind: sa.Engine | sa.Connection,
    model_name: str,
    as_of: Any,
    *,
    model_version: str | None = None,
) -> pd.DataFrame | None:
    """The newest positions set of `model_name` dated strictly before `as_of`.

    That is what a trader holds when the set of `as_of` arrives: the baseline of the
    ``previous_weight`` in positions replies, of the turnover metric and of the paper
    ledger's turnover (eq. (13)'s ``w_{t-1}``).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    as_of : date-like
        The date of the set whose predecessor is wanted.
    model_version : str, optional
        Only sets of this version; default any version (on one date, the latest written).

    Returns
    -------
    pandas.DataFrame or None
        As :func:`service.store.latest_positions`; None when no set is dated before `as_of`.
    """
    day = pd.Timestamp(as_of).normalize()
    return store.latest_positions(
        bind, model_name, as_of=day - pd.Timedelta(days=1), model_version=model_version
    )


def refuse_future(service: SignalService, day: pd.Timestamp, field: str) -> None:
    """Raise OutOfRange when `day` is after today in the exchange's time zone."""
    today = exchange_today(service.calendar)
    if day > today:
        raise OutOfRange(
            f"`{field}` {day:%Y-%m-%d} is in the future (today is {today:%Y-%m-%d} in "
            f"{service.calendar.tz})"
        )


@dataclass(frozen=True)
class PositionsSet:
    """One stored set of target positions with the previous set's weights.

    Attributes
    ----------
    as_of : pandas.Timestamp
        Session whose closes produced the set.
    model_name, model_version : str
    data_cutoff : pandas.Timestamp or None
        Newest close date the cycle used (None when its run record has none).
    run_id : int
        ``cycle_runs.id`` of the cycle that stored the set.
    assets : pandas.DataFrame
        Shape ``(n_assets, 5)``, indexed by ticker in manifest order; columns ``signal``,
        ``vol`` (annualised), ``weight`` (float64, NaN where not tradable),
        ``previous_weight`` (float64, 0 where the previous set had none, or there was no
        previous set) and ``stale`` (bool).
    """

    as_of: pd.Timestamp
    model_name: str
    model_version: str
    data_cutoff: pd.Timestamp | None
    run_id: int
    assets: pd.DataFrame

    @property
    def stale(self) -> bool:
        """True when any asset is stale (carried close, or the next cycle failed)."""
        return bool(self.assets["stale"].any())


_WATERMARK = sa.select(sa.func.count(), sa.func.max(store.cycle_runs.c.id))


class PositionsReader:
    """Stored positions sets, ordered as their model's manifest, with a read-through cache.

    Every write to ``positions`` goes with a new ``cycle_runs`` row (a stored cycle, or a
    failed one flagging the last set stale), and rows are never deleted from
    ``cycle_runs``; its ``(count, max id)`` is therefore a watermark that changes whenever a
    set could have changed. A cached answer is reused only under the same watermark, so a
    repeated request costs one small query instead of four. On a SQLite file store the
    watermark itself is re-read only when the store's data version moved (any commit by
    any connection), so a repeated request costs no query at all (:meth:`cached`).
    """

    def __init__(self, service: SignalService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._sets: OrderedDict[tuple[Any, ...], PositionsSet] = OrderedDict()
        self._orders: dict[tuple[str, str], list[str]] = {}
        # SQLite: the store's data version under which `_mark` (the watermark) was read
        self._probe = store.data_version_probe(service.engine)
        self._mark: tuple[int, tuple[int, int | None]] | None = None

    def get(
        self,
        name: str | None = None,
        as_of: pd.Timestamp | None = None,
        version: str | None = None,
    ) -> PositionsSet:
        """The newest set of `name` (default: the served model) dated on or before `as_of`.

        Parameters
        ----------
        name : str, optional
            Registry model name; default the served model's.
        as_of : pandas.Timestamp, optional
            Latest date to consider; default no limit (the latest set).
        version : str, optional
            Only this model version; default any (on one date, the latest written).

        Raises
        ------
        OutOfRange
            `as_of` is after today in the exchange's time zone.
        NotFound
            Unknown model or version, or no set on or before `as_of` (but later ones).
        FailedPrecondition
            No positions of that model (version) stored yet.
        """
        name = self._checked(name, as_of)
        key = (name, as_of, version, self._watermark())
        found = self._lookup(key)
        if found is not None:
            return found
        found = self._read(name, as_of, version)
        with self._lock:
            self._sets[key] = found
            while len(self._sets) > _CACHE_SIZE:
                self._sets.popitem(last=False)
        return found

    def cached(
        self,
        name: str | None = None,
        as_of: pd.Timestamp | None = None,
        version: str | None = None,
    ) -> PositionsSet | None:
        """What :meth:`get` would return, if known current without querying the store.

        On a SQLite file store, nothing committed since the cached answer (its data
        version) makes it current: microseconds, no pool, no transaction, so the gRPC
        event loop may call it directly. None otherwise: call :meth:`get`.
        """
        if self._probe is None:
            return None
        name = self._checked(name, as_of)
        mark = self._mark
        if mark is None or mark[0] != self._probe():
            return None
        return self._lookup((name, as_of, version, mark[1]))

    def _checked(self, name: str | None, as_of: pd.Timestamp | None) -> str:
        """The model name asked for (default the served one), refusing a future `as_of`."""
        if as_of is not None:
            refuse_future(self.service, as_of, "as_of")
        return name or self.service.holder.name

    def _lookup(self, key: tuple[Any, ...]) -> PositionsSet | None:
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
            return found

    def _watermark(self) -> tuple[int, int | None]:
        # the data version is read first: a commit in between changes it, and the next call
        # reads the watermark again
        data_version = None if self._probe is None else self._probe()
        mark = self._mark
        if data_version is not None and mark is not None and mark[0] == data_version:
            return mark[1]
        with self.service.engine.connect() as conn:
            count, newest = conn.execute(_WATERMARK).one()
        watermark = (int(count), newest)
        if data_version is not None:
            self._mark = (data_version, watermark)
        return watermark

    def _read(self, name: str, as_of: pd.Timestamp | None, version: str | None) -> PositionsSet:
        engine = self.service.engine
        current = store.latest_positions(engine, name, as_of=as_of, model_version=version)
        if current is None:
            raise self._why_none(name, as_of, version)
        day = pd.Timestamp(current["as_of"].iloc[0])
        set_version = str(current["model_version"].iloc[0])
        run_id = int(current["run_id"].max())
        previous = previous_positions(engine, name, day, model_version=version)
        order = self._order(name, set_version, current.index)
        assets = current.loc[order, ["signal", "vol", "weight", "stale"]]
        if previous is None:
            before = pd.Series(0.0, index=assets.index)
        else:
            before = previous["weight"].reindex(assets.index).fillna(0.0)
        assets.insert(3, "previous_weight", before.to_numpy(dtype=np.float64))
        with engine.connect() as conn:
            cutoff = conn.execute(
                sa.select(store.cycle_runs.c.data_cutoff).where(store.cycle_runs.c.id == run_id)
            ).scalar()
        return PositionsSet(
            as_of=day,
            model_name=name,
            model_version=set_version,
            data_cutoff=None if cutoff is None else pd.Timestamp(cutoff),
            run_id=run_id,
            assets=assets,
        )

    def _why_none(self, name: str, as_of: pd.Timestamp | None, version: str | None) -> Exception:
        service = self.service
        published = list_versions(service.settings.registry_dir, name)
        stored = store.positions_dates(service.engine, name)
        if len(stored) == 0 and not published and name != service.holder.name:
            return NotFound(
                f"no model named {name!r}: not in the registry {service.settings.registry_dir} "
                "and no positions stored"
            )
        label = name
        if version is not None:
            label = f"{name} {version}"
            stored = store.positions_dates(service.engine, name, version)
            if len(stored) == 0 and version not in published:
                return NotFound(f"{name} has no version {version!r}; published: {published}")
        if len(stored) == 0:
            return FailedPrecondition(
                f"no positions of {label} yet: they appear after its first successful cycle"
            )
        return NotFound(
            f"no positions of {label} on or before {as_of:%Y-%m-%d}; the first are of "
            f"{stored[0]:%Y-%m-%d}"
        )

    def _order(self, name: str, version: str, stored: pd.Index) -> list[str]:
        """Stored tickers in the manifest's order (unknown ones last, sorted)."""
        tickers = self._manifest_tickers(name, version)
        known = set(tickers)
        present = set(stored)
        return [t for t in tickers if t in present] + sorted(t for t in stored if t not in known)

    def _manifest_tickers(self, name: str, version: str) -> list[str]:
        model = self.service.holder.current
        if model is not None and (model.name, model.version) == (name, version):
            return model.manifest.tickers
        with self._lock:
            cached = self._orders.get((name, version))
        if cached is not None:
            return cached
        path = Path(self.service.settings.registry_dir) / name / version / MANIFEST_FILE
        try:
            tickers = read_manifest(path).tickers
        except (OSError, ManifestError) as err:
            # a version removed from the registry: its positions stay readable, in the
            # universe's order (every served manifest had the universe's tickers)
            log.warning("ordering %s %s by the universe: %s", name, version, err)
            return list(self.service.tickers)
        with self._lock:  # versions are immutable: cache for the process's lifetime
            self._orders[(name, version)] = tickers
        return tickers


@dataclass(frozen=True)
class ModelDescription:
    """A registry version and whether it is loaded, served and promoted."""

    name: str
    version: str
    manifest: Manifest
    provider: str | None  # onnxruntime execution provider, when loaded
    loaded_at: datetime | None  # when loaded (UTC)
    serving: bool
    production: bool
    refused: str | None = None  # why the service's last attempt to load it failed


def refusals(service: SignalService, name: str) -> dict[str, str]:
    """Version -> reason, for the versions of `name` whose newest load attempt failed."""
    loads = store.read_model_loads(service.engine, model_name=name, limit=1000)
    found: dict[str, str] = {}
    seen: set[str] = set()
    for version, ok, reason in loads[["model_version", "ok", "reason"]].itertuples(index=False):
        if version is None or pd.isna(version) or version in seen:
            continue
        seen.add(str(version))
        if not ok:
            found[str(version)] = str(reason)
    return found


def _describe(
    service: SignalService,
    name: str,
    version: str,
    manifest: Manifest,
    refused: dict[str, str] | None = None,
) -> ModelDescription:
    current = service.holder.current
    loaded = current is not None and (current.name, current.version) == (name, version)
    refused = refusals(service, name) if refused is None else refused
    return ModelDescription(
        name=name,
        version=version,
        manifest=manifest,
        provider=current.provider if loaded and current else None,
        loaded_at=current.loaded_at if loaded and current else None,
        serving=loaded,
        production=production_version(service.settings.registry_dir, name) == version,
        refused=None if loaded else refused.get(version),
    )


def describe_model(
    service: SignalService, name: str | None = None, version: str | None = None
) -> ModelDescription:
    """The served model, or a verified registry version.

    Parameters
    ----------
    name : str, optional
        Registry name; default the served model's.
    version : str, optional
        Default: for the served name the loaded model, for another name its production
        version.

    Raises
    ------
    FailedPrecondition
        (``ModelRefused``) The served model was asked for and none is loaded.
    NotFound
        (``RegistryError``) No such name or version, or no production version.
    FailedPrecondition
        (``ManifestError``) The version fails verification (manifest or hash).
    """
    name = name or service.holder.name
    if version is None and name == service.holder.name:
        model = service.holder.require()
        return _describe(service, model.name, model.version, model.manifest)
    entry = load_version(service.settings.registry_dir, name, version)
    return _describe(service, entry.name, entry.version, entry.manifest)


def list_model_versions(service: SignalService, name: str | None = None) -> list[ModelDescription]:
    """Every verified version of `name` (default: the served model), oldest first.

    Versions that fail verification are left out (and logged): they can never be served.

    Raises
    ------
    NotFound
        The registry has no version of `name`.
    """
    name = name or service.holder.name
    registry = service.settings.registry_dir
    versions = list_versions(registry, name)
    if not versions:
        raise NotFound(f"no model named {name!r} in the registry {registry}")
    refused = refusals(service, name)
    found = []
    for version in versions:
        try:
            entry = load_version(registry, name, version)
        except (LookupError, ManifestError) as err:
            log.warning("ListModels leaves out %s %s: %s", name, version, err)
            continue
        found.append(_describe(service, name, version, entry.manifest, refused))
    return found


def run_session(service: SignalService, day: pd.Timestamp | None = None) -> CycleResult:
    """The cycle of `day` (default: the newest date with closes) with the current model.

    Raises
    ------
    OutOfRange
        `day` is in the future.
    InvalidArgument
        `day` is not a session of the service's calendar.
    FailedPrecondition
        No date given and no closes stored; or no model can be loaded (``ModelRefused``).
    """
    if day is None:
        day = store.newest_close_date(service.engine)
        if day is None:
            raise FailedPrecondition("no closes stored yet: ingest some before running a cycle")
    else:
        refuse_future(service, day, "date")
        if not is_session(service.calendar, day):
            raise InvalidArgument(
                f"`date` {day:%Y-%m-%d} is not a session of the {service.calendar.name} calendar"
            )
    return service.run_session(day)


# --------------------------------------------------------------------------------------------
# what the metrics are fed
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleContext:
    """What the store holds around one cycle, as :meth:`ServiceMetrics.observe_cycle` needs it.

    Attributes
    ----------
    served_stale : int or None
        Stale assets of the set served now: the cycle's own count when it succeeded, else
        those of the newest set up to its date (a failed or skipped cycle flags the last good
        set stale); None when no set is stored.
    previous_weights : pandas.Series or None
        Weights of :func:`previous_positions` (any version) indexed by ticker; None when there
        is no earlier set or the cycle did not succeed.
    recent_signals : numpy.ndarray
        Shape ``(n,)``: the stored signals of the cycle's model version on its last `window`
        dates up to the cycle's date (NaN included); empty when the cycle did not succeed.
    """

    served_stale: int | None
    previous_weights: pd.Series | None
    recent_signals: np.ndarray


def cycle_context(
    bind: sa.Engine | sa.Connection, result: CycleResult, window: int
) -> CycleContext:
    """Read what :class:`CycleContext` holds for `result` (a succeeded cycle needs more).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
        The store the cycle wrote to.
    result : service.cycle.CycleResult
    window : int
        Dates of stored signals to read (the metrics' drift window, >= 1).
    """
    if window < 1:
        raise ValueError(f"`window` must be >= 1 dates, got {window}")
    name = result.model_name
    if result.status != "succeeded" or result.model_version is None:
        served = store.latest_positions(bind, name, as_of=result.as_of)
        stale = None if served is None else int(served["stale"].sum())
        return CycleContext(stale, None, np.empty(0, dtype=np.float64))
    previous = previous_positions(bind, name, result.as_of)
    signals = recent_signals(bind, name, result.model_version, result.as_of, window)
    return CycleContext(result.n_stale, None if previous is None else previous["weight"], signals)


def recent_signals(
    bind: sa.Engine | sa.Connection, name: str, version: str, as_of: Any, window: int
) -> np.ndarray:
    """The stored signals of one version on its last `window` as-of dates up to `as_of`.

    One version only: its manifest's signal deciles describe this version's outputs.
    """
    dates = store.positions_dates(bind, name, version)
    dates = dates[dates <= pd.Timestamp(as_of)][-window:]
    if not len(dates):
        return np.empty(0, dtype=np.float64)
    return store.positions_signals(bind, name, version, start=dates[0], end=as_of)


@dataclass(frozen=True)
class ServiceHistory:
    """What a starting service already did, so its metrics do not look like a new one's.

    Attributes
    ----------
    last_success : pandas.Timestamp or None
        When the newest succeeded cycle of the model finished (UTC); None if none did.
    last_as_of : pandas.Timestamp or None
        That cycle's session.
    served_stale : int or None
        Stale assets of the newest stored set; None when none is stored.
    """

    last_success: pd.Timestamp | None
    last_as_of: pd.Timestamp | None
    served_stale: int | None


def service_history(bind: sa.Engine | sa.Connection, model_name: str) -> ServiceHistory:
    """The newest succeeded cycle of `model_name` and the stale count of its newest set."""
    runs = store.read_cycle_runs(bind, model_name=model_name, status="succeeded", limit=1)
    finished = as_of = None
    if len(runs):
        finished = pd.Timestamp(runs["finished_at"].iloc[0])
        as_of = pd.Timestamp(runs["as_of"].iloc[0])
    latest = store.latest_positions(bind, model_name)
    stale = None if latest is None else int(latest["stale"].sum())
    return ServiceHistory(finished, as_of, stale)
