"""The gRPC face of the service: ``momentum.v1.SignalService``, health, reflection, auth, TLS.

Layout of this module, top to bottom:

* **conversions**: request strings -> dates and names (strict ISO dates; a malformed field is
  INVALID_ARGUMENT naming it), domain results -> protobuf messages;
* **queries**: the few domain look-ups the RPCs need on top of :class:`SignalService`
  (:class:`PositionsReader`, :func:`describe_model`, :func:`list_model_versions`,
  :func:`run_session`); they raise the domain errors of :mod:`service.errors`;
* **servicer**: :class:`SignalServicer`, one thin method per RPC (convert the request, call one
  query, convert back); no error handling of its own;
* **interceptors**: cross-cutting code outside the handlers. :class:`MetricsInterceptor`
  (outermost: sees every outcome, refusals included), :class:`AuthInterceptor` (bearer token;
  the health service stays open), :class:`ErrorInterceptor` (innermost: any exception of a
  SignalService handler becomes the status code of :func:`service.errors.status_for`);
* **server**: :class:`GrpcServer` builds a sync ``grpc.server`` on a thread pool, registers the
  servicer, ``grpc.health.v1`` and reflection, binds (TLS when the settings name a
  certificate and key), and stops gracefully.

Health: the overall entry ``""`` and ``momentum.v1.SignalService`` are NOT_SERVING until the
model holder has a model, SERVING after, and NOT_SERVING for good once :meth:`GrpcServer.stop`
begins. Clients of the positions stream get UNAVAILABLE when the server stops.
"""

from __future__ import annotations

import hmac
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import pandas as pd
import sqlalchemy as sa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from momentum.manifest import MANIFEST_FILE, Manifest, ManifestError, read_manifest
from momentum.registry import list_versions, load_version, production_version
from service import store
from service._proto import signals_pb2 as pb
from service._proto import signals_pb2_grpc as pb_grpc
from service.app import SignalService
from service.calendar import exchange_today, is_session
from service.cycle import CycleResult
from service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unauthenticated,
    Unavailable,
    details_for,
    status_for,
)
from service.ingest import IngestResult

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SERVICE_NAME",
    "AuthInterceptor",
    "ErrorInterceptor",
    "GrpcServer",
    "MetricsInterceptor",
    "ModelDescription",
    "PositionsReader",
    "PositionsSet",
    "RpcObserver",
    "SignalServicer",
    "describe_model",
    "list_model_versions",
    "parse_date",
    "parse_name",
    "run_session",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SignalService"].full_name
"""``momentum.v1.SignalService``: the name used by health checks and reflection."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest request and response (16 MiB, ~500,000 closes in one IngestCloses batch)."""

_SIGNAL_PREFIX = f"/{SERVICE_NAME}/"
_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# registry names and versions become directory names: the settings' pattern, so a request can
# never reach outside the registry ("../x" is refused before any path is built)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_LENGTH = 128
_CACHE_SIZE = 256


class RpcObserver(Protocol):
    """What the metrics interceptor needs (``service.metrics.ServiceMetrics`` provides it)."""

    def observe_rpc(self, method: str, code: str, seconds: float) -> None: ...


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


def parse_date(text: str, field: str) -> pd.Timestamp | None:
    """An ISO date field (``"2022-12-28"``) -> tz-naive midnight; ``""`` -> None.

    Raises
    ------
    InvalidArgument
        Not ``YYYY-MM-DD`` or no such day; the message names `field`.
    """
    if not text:
        return None
    if not _ISO_DATE.fullmatch(text):
        raise InvalidArgument(f"`{field}` must be an ISO date like 2022-12-28, got {text!r}")
    try:
        return pd.Timestamp(date.fromisoformat(text))
    except ValueError:
        raise InvalidArgument(f"`{field}` is not a calendar date, got {text!r}") from None


def parse_name(text: str, field: str) -> str | None:
    """A registry model name or version field; ``""`` -> None.

    Raises
    ------
    InvalidArgument
        Not letters, digits, ``.``, ``_``, ``-`` (starting with a letter or digit), or longer
        than 128 characters; the message names `field`.
    """
    if not text:
        return None
    if len(text) > _NAME_LENGTH or not _NAME.fullmatch(text):
        raise InvalidArgument(
            f"`{field}` must be letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit, at most {_NAME_LENGTH} characters), got {text!r}"
        )
    return text


def _iso(day: Any) -> str:
    return "" if day is None or pd.isna(day) else f"{pd.Timestamp(day):%Y-%m-%d}"


def _optional(value: float) -> float | None:
    """NaN (not tradable) -> None, which leaves a proto3 ``optional`` field unset."""
    return None if np.isnan(value) else float(value)


def _rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _positions_message(found: PositionsSet) -> pb.Positions:
    assets = found.assets
    rows = zip(
        assets.index,
        assets["signal"].to_numpy(),
        assets["vol"].to_numpy(),
        assets["weight"].to_numpy(),
        assets["previous_weight"].to_numpy(),
        assets["stale"].to_numpy(),
        strict=True,
    )
    return pb.Positions(
        as_of=_iso(found.as_of),
        model_name=found.model_name,
        model_version=found.model_version,
        data_cutoff=_iso(found.data_cutoff),
        stale=found.stale,
        run_id=found.run_id,
        assets=[
            pb.AssetPosition(
                ticker=str(ticker),
                signal=_optional(signal),
                annualised_vol=_optional(vol),
                target_weight=_optional(weight),
                previous_weight=float(previous),
                stale=bool(stale),
            )
            for ticker, signal, vol, weight, previous, stale in rows
        ],
    )


def _closes_frame(request: pb.IngestClosesRequest) -> pd.DataFrame:
    """The request's closes as the long ``date, ticker, close`` frame `ingest` validates."""
    return pd.DataFrame(
        {
            "date": pd.array([c.date for c in request.closes], dtype=object),
            "ticker": pd.array([c.ticker for c in request.closes], dtype=object),
            "close": np.array([c.close for c in request.closes], dtype=np.float64),
        }
    )


def _ingest_message(result: IngestResult) -> pb.IngestClosesResponse:
    return pb.IngestClosesResponse(
        accepted=result.accepted,
        unchanged=result.unchanged,
        corrected=result.corrected,
        rejections=[
            pb.Rejection(row=r.row, date=_iso(r.date), ticker=r.ticker or "", reason=r.reason)
            for r in result.rejections
        ],
    )


def _cycle_message(result: CycleResult) -> pb.CycleRun:
    return pb.CycleRun(
        run_id=result.run_id,
        as_of=_iso(result.as_of),
        model_name=result.model_name,
        model_version=result.model_version or "",
        status=result.status,
        error=result.error or "",
        data_cutoff=_iso(result.data_cutoff),
        n_assets=len(result.positions),
        n_stale=result.n_stale,
        seconds=result.seconds,
    )


def _model_message(model: ModelDescription) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        model=model.manifest.model,
        manifest_json=model.manifest.to_json(),
        sha256=model.manifest.onnx.sha256,
        execution_provider=model.provider or "",
        loaded_at=_rfc3339(model.loaded_at),
        serving=model.serving,
        production=model.production,
    )


# --------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------


def _refuse_future(service: SignalService, day: pd.Timestamp, field: str) -> None:
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
    repeated request costs one small query instead of four.
    """

    def __init__(self, service: SignalService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._sets: OrderedDict[tuple[Any, ...], PositionsSet] = OrderedDict()
        self._orders: dict[tuple[str, str], list[str]] = {}

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
        name = name or self.service.holder.name
        if as_of is not None:
            _refuse_future(self.service, as_of, "as_of")
        key = (name, as_of, version, self._watermark())
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                return found
        found = self._read(name, as_of, version)
        with self._lock:
            self._sets[key] = found
            while len(self._sets) > _CACHE_SIZE:
                self._sets.popitem(last=False)
        return found

    def _watermark(self) -> tuple[int, int | None]:
        with self.service.engine.connect() as conn:
            count, newest = conn.execute(_WATERMARK).one()
        return int(count), newest

    def _read(self, name: str, as_of: pd.Timestamp | None, version: str | None) -> PositionsSet:
        engine = self.service.engine
        current = store.latest_positions(engine, name, as_of=as_of, model_version=version)
        if current is None:
            raise self._why_none(name, as_of, version)
        day = pd.Timestamp(current["as_of"].iloc[0])
        set_version = str(current["model_version"].iloc[0])
        run_id = int(current["run_id"].max())
        # the previous set is what a trader holds now: the newest one dated before this one
        previous = store.latest_positions(
            engine, name, as_of=day - pd.Timedelta(days=1), model_version=version
        )
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


def _describe(
    service: SignalService, name: str, version: str, manifest: Manifest
) -> ModelDescription:
    current = service.holder.current
    loaded = current is not None and (current.name, current.version) == (name, version)
    return ModelDescription(
        name=name,
        version=version,
        manifest=manifest,
        provider=current.provider if loaded and current else None,
        loaded_at=current.loaded_at if loaded and current else None,
        serving=loaded,
        production=production_version(service.settings.registry_dir, name) == version,
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
    found = []
    for version in versions:
        try:
            entry = load_version(registry, name, version)
        except (LookupError, ManifestError) as err:
            log.warning("ListModels leaves out %s %s: %s", name, version, err)
            continue
        found.append(_describe(service, name, version, entry.manifest))
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
        dates = store.closes_dates(service.engine)
        if len(dates) == 0:
            raise FailedPrecondition("no closes stored yet: ingest some before running a cycle")
        day = dates[-1]
    else:
        _refuse_future(service, day, "date")
        if not is_session(service.calendar, day):
            raise InvalidArgument(
                f"`date` {day:%Y-%m-%d} is not a session of the {service.calendar.name} calendar"
            )
    return service.run_session(day)


# --------------------------------------------------------------------------------------------
# servicer
# --------------------------------------------------------------------------------------------

_ENDED = object()  # the RPC is over (client cancelled, deadline passed)
_CLOSING = object()  # the server is stopping


class _Streams:
    """Inboxes of the open StreamPositions calls, so that a stopping server can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inboxes: set[queue.SimpleQueue[Any]] = set()
        self._closing = False

    def open(self, inbox: queue.SimpleQueue[Any]) -> None:
        with self._lock:
            if self._closing:
                raise Unavailable("the server is shutting down")
            self._inboxes.add(inbox)

    def close(self, inbox: queue.SimpleQueue[Any]) -> None:
        with self._lock:
            self._inboxes.discard(inbox)

    def close_all(self) -> None:
        with self._lock:
            self._closing = True
            inboxes = list(self._inboxes)
        for inbox in inboxes:
            inbox.put(_CLOSING)


class SignalServicer(pb_grpc.SignalServiceServicer):
    """``momentum.v1.SignalService`` over a :class:`SignalService`.

    Handlers raise domain errors; :class:`ErrorInterceptor` turns them into status codes.

    Parameters
    ----------
    service : SignalService
    after_cycle : callable, optional
        Called after every RunCycle (the cycle may have loaded a model: health follows).
    """

    def __init__(
        self, service: SignalService, *, after_cycle: Callable[[], object] | None = None
    ) -> None:
        self.service = service
        self.positions = PositionsReader(service)
        self._after_cycle = after_cycle
        self._streams = _Streams()
        # encoded messages of cached sets, by identity: the entry holds the set, so its id
        # cannot be reused while the entry lives
        self._encoded: OrderedDict[int, tuple[PositionsSet, pb.Positions]] = OrderedDict()
        self._encoded_lock = threading.Lock()

    def _message(self, found: PositionsSet) -> pb.Positions:
        """`found` as a message, encoded once per cached set (the hot path of GetPositions)."""
        with self._encoded_lock:
            entry = self._encoded.get(id(found))
            if entry is not None and entry[0] is found:
                self._encoded.move_to_end(id(found))
                return entry[1]
        message = _positions_message(found)
        with self._encoded_lock:
            self._encoded[id(found)] = (found, message)
            while len(self._encoded) > _CACHE_SIZE:
                self._encoded.popitem(last=False)
        return message

    def close_streams(self) -> None:
        """End every open positions stream with UNAVAILABLE and refuse new ones."""
        self._streams.close_all()

    def GetPositions(self, request: pb.GetPositionsRequest, context: Any) -> pb.Positions:
        found = self.positions.get(
            parse_name(request.model_name, "model_name"),
            parse_date(request.as_of, "as_of"),
            parse_name(request.model_version, "model_version"),
        )
        return self._message(found)

    def StreamPositions(
        self, request: pb.StreamPositionsRequest, context: Any
    ) -> Iterator[pb.Positions]:
        name = parse_name(request.model_name, "model_name") or self.service.holder.name
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._streams.open(inbox)
        # subscribe before reading the snapshot: a cycle stored in between is not missed
        # (and not sent twice: its run id equals the snapshot's)
        unsubscribe = self.service.subscribe(inbox.put)
        context.add_callback(unsubscribe)
        context.add_callback(lambda: inbox.put(_ENDED))
        try:
            sent = -1
            try:
                snapshot: PositionsSet | None = self.positions.get(name)
            except FailedPrecondition:  # nothing stored yet: the first cycle will follow
                snapshot = None
            if snapshot is not None:
                sent = snapshot.run_id
                yield self._message(snapshot)
            while True:
                item = inbox.get()
                if item is _ENDED:
                    return
                if item is _CLOSING:
                    raise Unavailable("the server is shutting down; reconnect to another one")
                if item.status != "succeeded" or item.model_name != name or item.run_id <= sent:
                    continue
                sent = item.run_id
                yield self._message(self.positions.get(name, item.as_of, item.model_version))
        finally:
            unsubscribe()
            self._streams.close(inbox)

    def IngestCloses(
        self, request: pb.IngestClosesRequest, context: Any
    ) -> pb.IngestClosesResponse:
        result = self.service.ingest(
            _closes_frame(request), correction=request.correction, source=request.source or "grpc"
        )
        return _ingest_message(result)

    def RunCycle(self, request: pb.RunCycleRequest, context: Any) -> pb.CycleRun:
        try:
            result = run_session(self.service, parse_date(request.date, "date"))
        finally:
            if self._after_cycle is not None:
                self._after_cycle()
        return _cycle_message(result)

    def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.ModelInfo:
        found = describe_model(
            self.service, parse_name(request.name, "name"), parse_name(request.version, "version")
        )
        return _model_message(found)

    def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        found = list_model_versions(self.service, parse_name(request.name, "name"))
        return pb.ListModelsResponse(models=[_model_message(m) for m in found])


# --------------------------------------------------------------------------------------------
# interceptors
# --------------------------------------------------------------------------------------------

Behaviour = Callable[[Any, Any], Any]


def _rewrap(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behaviour, bool], Behaviour]
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind whose behaviour is ``wrap(behaviour, streams_responses)``."""
    codecs = (handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), *codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), *codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), *codecs)
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), *codecs)


def _aborted(context: Any) -> bool:
    code = context.code()
    return code is not None and code is not grpc.StatusCode.OK


def _abort(context: Any, exc: Exception) -> None:
    """End the RPC with the table's status for `exc` (raises, as ``context.abort`` does)."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error answering a request", exc_info=exc)
    context.abort(code, details_for(exc))


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps any exception of a SignalService handler to its status (:mod:`service.errors`)."""

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(_SIGNAL_PREFIX):
            return handler
        return _rewrap(handler, self._mapping)

    @staticmethod
    def _mapping(behaviour: Behaviour, streaming: bool) -> Behaviour:
        if streaming:

            def stream(request: Any, context: Any) -> Iterator[Any]:
                try:
                    yield from behaviour(request, context)
                except Exception as exc:
                    if _aborted(context):
                        raise
                    _abort(context, exc)

            return stream

        def unary(request: Any, context: Any) -> Any:
            try:
                return behaviour(request, context)
            except Exception as exc:
                if _aborted(context):
                    raise
                _abort(context, exc)

        return unary


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata on every call but health checks.

    A missing, malformed or wrong token ends the call with UNAUTHENTICATED before the
    handler runs. Tokens are compared in constant time.
    """

    def __init__(self, token: str, *, open_prefixes: Sequence[str] = (_HEALTH_PREFIX,)) -> None:
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("`token` must be non-empty and contain no whitespace")
        self._token = token.encode()
        self._open = tuple(open_prefixes)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler
        refusal = Unauthenticated(problem)

        def refuse(request: Any, context: Any) -> Any:
            _abort(context, refusal)

        return _rewrap(handler, lambda _behaviour, _streaming: refuse)

    def _problem(self, metadata: Sequence[Any]) -> str | None:
        values = [m.value for m in metadata if m.key == "authorization"]
        if not values:
            return "missing `authorization: Bearer <token>` metadata"
        value = values[0]
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return "the `authorization` metadata must be `Bearer <token>`"
        if not hmac.compare_digest(credential.strip().encode(), self._token):
            return "invalid bearer token"
        return None


def _code_name(context: Any, default: grpc.StatusCode) -> str:
    code = context.code()
    return (default if code is None else code).name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Reports every call's method, status code and wall time to ``observe_rpc``.

    `method` is the RPC's name (``"GetPositions"``), `code` the status name (``"OK"``,
    ``"NOT_FOUND"``, ``"CANCELLED"`` for a stream the client left). Health checks are not
    reported: orchestrator probes would drown the traffic. For a stream the time is its
    whole life.
    """

    def __init__(
        self, metrics: RpcObserver, *, skip_prefixes: Sequence[str] = (_HEALTH_PREFIX,)
    ) -> None:
        if not callable(getattr(metrics, "observe_rpc", None)):
            raise TypeError(
                f"`metrics` must have observe_rpc(method, code, seconds), got {metrics!r}"
            )
        self._metrics = metrics
        self._skip = tuple(skip_prefixes)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._skip):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return _rewrap(
            handler, lambda behaviour, streaming: self._timed(method, behaviour, streaming)
        )

    def _observe(self, method: str, code: str, start: float) -> None:
        try:
            self._metrics.observe_rpc(method, code, time.perf_counter() - start)
        except Exception:  # a broken metrics sink must not fail the request
            log.exception("observe_rpc failed for %s", method)

    def _timed(self, method: str, behaviour: Behaviour, streaming: bool) -> Behaviour:
        if streaming:

            def stream(request: Any, context: Any) -> Iterator[Any]:
                start = time.perf_counter()
                code = grpc.StatusCode.UNKNOWN.name
                try:
                    yield from behaviour(request, context)
                    active = context.is_active()
                    code = _code_name(context, grpc.StatusCode.OK) if active else "CANCELLED"
                except GeneratorExit:  # the server dropped the stream: the client left
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                except BaseException:
                    code = _code_name(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    self._observe(method, code, start)

            return stream

        def unary(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            try:
                response = behaviour(request, context)
            except BaseException:
                self._observe(method, _code_name(context, grpc.StatusCode.UNKNOWN), start)
                raise
            self._observe(method, _code_name(context, grpc.StatusCode.OK), start)
            return response

        return unary


# --------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------


def _server_credentials(cert: Path | None, key: Path | None) -> grpc.ServerCredentials | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both `tls_cert` and `tls_key`")
    return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


class GrpcServer:
    """The gRPC server of one :class:`SignalService`: build, :meth:`start`, :meth:`stop`.

    Parameters
    ----------
    service : SignalService
        Host, port, bearer token and TLS files come from ``service.settings``.
    host : str, optional
        Overrides ``settings.grpc_host``.
    port : int, optional
        Overrides ``settings.grpc_port``; 0 binds an ephemeral port (read :attr:`port`).
    metrics : RpcObserver, optional
        Receives ``observe_rpc(method, code, seconds)`` for every call but health checks.
    max_workers : int, default 32
        Threads answering calls. Each open StreamPositions holds one for its lifetime.
    max_message_bytes : int, default 16 MiB
        Largest request or response; a larger one fails with RESOURCE_EXHAUSTED.
    health_interval : float, default 1.0
        Seconds between checks of the model holder by the health updater (a model loaded by
        the scheduler turns health SERVING within this time; RunCycle and stored cycles
        update it at once).

    Examples
    --------
    ::

        server = GrpcServer(SignalService(load_settings())).start()
        server.wait()  # until another thread calls server.stop(grace=10)
    """

    def __init__(
        self,
        service: SignalService,
        *,
        host: str | None = None,
        port: int | None = None,
        metrics: RpcObserver | None = None,
        max_workers: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        health_interval: float = 1.0,
    ) -> None:
        settings = service.settings
        port = settings.grpc_port if port is None else port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"`port` must be an int in 0..65535, got {port!r}")
        if max_workers < 1:
            raise ValueError(f"`max_workers` must be positive, got {max_workers}")
        if max_message_bytes < 1:
            raise ValueError(f"`max_message_bytes` must be positive, got {max_message_bytes}")
        if not health_interval > 0:
            raise ValueError(f"`health_interval` must be positive, got {health_interval}")
        self.service = service
        self.host = host or settings.grpc_host
        self.port: int = port  # the bound port once started
        self.health_interval = health_interval
        self._credentials = _server_credentials(settings.tls_cert, settings.tls_key)
        token = settings.grpc_token.get_secret_value() if settings.grpc_token else None
        if token and self._credentials is None and not _loopback(self.host):
            log.warning(
                "the gRPC bearer token travels in plaintext on %s: set tls_cert and tls_key",
                self.host,
            )
        interceptors: list[grpc.ServerInterceptor] = []
        if metrics is not None:
            interceptors.append(MetricsInterceptor(metrics))
        if token:
            interceptors.append(AuthInterceptor(token))
        interceptors.append(ErrorInterceptor())
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        self._server = grpc.server(
            self._executor,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # a port already in use must fail the bind, not be silently shared
                ("grpc.so_reuseport", 0),
            ],
        )
        self.servicer = SignalServicer(service, after_cycle=self.refresh_health)
        pb_grpc.add_SignalServiceServicer_to_server(self.servicer, self._server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._lock = threading.Lock()
        self._serving: bool | None = None
        self._halt = threading.Event()
        self._started = False
        self._stopped = False
        self._unsubscribe: Callable[[], None] | None = None
        self._watcher: threading.Thread | None = None
        self.refresh_health()  # NOT_SERVING until a model is loaded

    @property
    def tls(self) -> bool:
        """Whether the port speaks TLS."""
        return self._credentials is not None

    @property
    def address(self) -> str:
        """``host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def start(self) -> GrpcServer:
        """Bind, start answering, and follow the model holder in the health service.

        Returns
        -------
        GrpcServer
            `self`, with :attr:`port` set to the bound port.

        Raises
        ------
        RuntimeError
            Started twice, or the address cannot be bound (e.g. the port is in use).
        """
        with self._lock:
            if self._started:
                raise RuntimeError("the gRPC server was started already")
            self._started = True
        address = self.address
        try:
            if self._credentials is None:
                bound = self._server.add_insecure_port(address)
            else:
                bound = self._server.add_secure_port(address, self._credentials)
        except RuntimeError as err:
            raise RuntimeError(f"cannot bind the gRPC server to {address}: {err}") from None
        if not bound:
            raise RuntimeError(f"cannot bind the gRPC server to {address}")
        self.port = int(bound)
        self._server.start()
        self._unsubscribe = self.service.subscribe(lambda _result: self.refresh_health())
        self._watcher = threading.Thread(target=self._watch_model, name="grpc-health", daemon=True)
        self._watcher.start()
        self.refresh_health()
        log.info(
            "gRPC %s listening on %s (%s, %s)",
            SERVICE_NAME,
            self.address,
            "TLS" if self.tls else "plaintext",
            "bearer token" if self.service.settings.grpc_token else "no authentication",
        )
        return self

    def refresh_health(self) -> bool:
        """Set both health entries from the model holder; returns whether SERVING."""
        serving = self.service.holder.current is not None and not self._halt.is_set()
        with self._lock:
            if serving == self._serving:
                return serving
            self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (health.OVERALL_HEALTH, SERVICE_NAME):
            self._health.set(name, status)
        return serving

    def _watch_model(self) -> None:
        while not self._halt.wait(self.health_interval):
            try:
                self.refresh_health()
            except Exception:  # keep watching; a failure here must not kill health updates
                log.exception("health update failed")

    def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully: health NOT_SERVING, streams ended, in-flight calls finish.

        New calls are refused (UNAVAILABLE) at once; calls in flight get up to `grace`
        seconds, then are cancelled. Open positions streams end with UNAVAILABLE.
        Calling it again does nothing.
        """
        if grace < 0:
            raise ValueError(f"`grace` must be >= 0 seconds, got {grace}")
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._halt.set()
        # first, so that load balancers and watchers see NOT_SERVING (and later sets are ignored)
        self._health.enter_graceful_shutdown()
        self.servicer.close_streams()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=False)  # the server does not own its pool
        if self._watcher is not None:
            self._watcher.join()
        log.info("gRPC server on %s stopped", self.address)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if `timeout` seconds passed first."""
        timed_out = self._server.wait_for_termination(timeout)
        return not timed_out

    def __enter__(self) -> GrpcServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0)
