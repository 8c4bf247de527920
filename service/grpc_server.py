"""The gRPC face of the service: ``momentum.v1.SignalService``, health, reflection, auth, TLS.

Layout of this module, top to bottom:

* **conversions**: request strings -> dates and names (strict ISO dates; a malformed field is
  INVALID_ARGUMENT naming it), domain results -> protobuf messages;
* **servicer**: :class:`SignalServicer`, one thin method per RPC (convert the request, call one
  query of :mod:`service.queries`, convert back); no error handling of its own;
* **server**: :class:`GrpcServer` builds a sync ``grpc.server`` on a thread pool with the
  interceptors of :mod:`service.interceptors`, registers the servicer, ``grpc.health.v1`` and
  reflection, binds (TLS when the settings name a certificate and key), and stops gracefully.

Health: the overall entry ``""`` and ``momentum.v1.SignalService`` are NOT_SERVING until the
model holder has a model, SERVING after, and NOT_SERVING for good once :meth:`GrpcServer.stop`
begins. Clients of the positions stream get UNAVAILABLE when the server stops.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import store
from service._proto import signals_pb2 as pb
from service._proto import signals_pb2_grpc as pb_grpc
from service.app import SignalService
from service.config import env_var
from service.cycle import CycleResult
from service.errors import FailedPrecondition, InvalidArgument, Unavailable
from service.ingest import IngestResult
from service.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    RpcObserver,
)
from service.queries import (
    ModelDescription,
    PositionsReader,
    PositionsSet,
    describe_model,
    list_model_versions,
    run_session,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SERVICE_NAME",
    "GrpcServer",
    "InsecureBind",
    "SignalServicer",
    "parse_date",
    "parse_name",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SignalService"].full_name
"""``momentum.v1.SignalService``: the name used by health checks and reflection."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest request and response (16 MiB, ~500,000 closes in one IngestCloses batch)."""

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# registry names and versions become directory names: the settings' pattern, so a request can
# never reach outside the registry ("../x" is refused before any path is built)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CACHE_SIZE = 256  # encoded messages kept, as many as the reader's cached sets


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
    if len(text) > store.NAME_LENGTH or not _NAME.fullmatch(text):
        raise InvalidArgument(
            f"`{field}` must be letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit, at most {store.NAME_LENGTH} characters), got {text!r}"
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
    """The request's closes as the long ``date, ticker, close, override`` frame `ingest`
    validates."""
    return pd.DataFrame(
        {
            "date": pd.array([c.date for c in request.closes], dtype=object),
            "ticker": pd.array([c.ticker for c in request.closes], dtype=object),
            "close": np.array([c.close for c in request.closes], dtype=np.float64),
            "override": np.array([c.override for c in request.closes], dtype=bool),
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
        refused=model.refused or "",
    )


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
# server
# --------------------------------------------------------------------------------------------


class InsecureBind(RuntimeError):
    """A non-loopback bind without a bearer token, not allowed by the settings."""


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
        # no token on an address other hosts can reach (the CLI exports it as a metric)
        self.insecure = not token and not _loopback(self.host)
        if self.insecure and not settings.allow_insecure:
            raise InsecureBind(
                f"refusing to serve gRPC on {self.host} without a bearer token: anyone who "
                "reaches that address could ingest closes and run cycles. Set "
                f"{env_var('grpc_token')} (e.g. `openssl rand -hex 32`), bind "
                f"{env_var('grpc_host')}=127.0.0.1, or set {env_var('allow_insecure')}=true "
                "to accept unauthenticated calls from the network on purpose"
            )
        if self.insecure:
            log.warning(
                "gRPC on %s accepts unauthenticated calls from the network (%s=true)",
                self.host,
                env_var("allow_insecure"),
            )
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
        self._unsubscribe = self.service.subscribe(self._on_cycle)
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

    def _on_cycle(self, _result: CycleResult) -> None:
        self.refresh_health()  # the cycle may have loaded a model

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
