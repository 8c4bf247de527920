"""The gRPC server of the service: ``momentum.v1.SignalService``, health, reflection, auth, TLS.

:class:`GrpcServer` runs a ``grpc.aio`` server on its own event loop in a background thread,
behind a synchronous face (:meth:`~GrpcServer.start`, :meth:`~GrpcServer.stop`,
:meth:`~GrpcServer.wait`) for the CLI and the scheduler, which are threaded. On the loop:

* the RPC coroutines of :class:`service.grpc_servicer.SignalServicer`, whose blocking work
  (store, registry, model) runs in ``grpc_workers`` threads;
* the positions streams (:mod:`service.streams`): an open stream holds no thread, so a
  thousand idle subscribers leave GetPositions, GetModel and the health checks answering;
  subscribers are limited in all and per client, and a slow consumer is dropped;
* ``grpc.health.v1`` (its asynchronous servicer) and reflection.

The interceptors of :mod:`service.interceptors` wrap every call (metrics, bearer token,
error mapping).

Health: the overall entry ``""`` and ``momentum.v1.SignalService`` are NOT_SERVING until the
model holder has a model, SERVING after, and NOT_SERVING for good once :meth:`GrpcServer.stop`
begins. Clients of the positions stream get UNAVAILABLE when the server stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.app import SignalService
from service.config import env_var
from service.cycle import CycleResult
from service.grpc_messages import SERVICE_NAME, method_handlers, parse_date, parse_name
from service.grpc_servicer import SignalServicer
from service.interceptors import AuthInterceptor, ErrorInterceptor, MetricsInterceptor
from service.streams import StreamHub, StreamLimits

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SERVICE_NAME",
    "GrpcServer",
    "InsecureBind",
    "ServerObserver",
    "SignalServicer",
    "parse_date",
    "parse_name",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest request and response (16 MiB, ~500,000 closes in one IngestCloses batch)."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServerObserver(Protocol):
    """What the server reports (``service.metrics.ServiceMetrics`` provides it all)."""

    def observe_rpc(self, method: str, code: str, seconds: float) -> None: ...

    def observe_streams(self, open_streams: int) -> None: ...

    def observe_stream_dropped(self, reason: str) -> None: ...


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
        Host, port, bearer token, TLS files, worker threads, stream limits and port reuse
        come from ``service.settings``.
    host : str, optional
        Overrides ``settings.grpc_host``.
    port : int, optional
        Overrides ``settings.grpc_port``; 0 binds an ephemeral port (read :attr:`port`).
    metrics : ServerObserver, optional
        Receives ``observe_rpc(method, code, seconds)`` for every call but health checks,
        and the open streams and dropped ones.
    max_workers : int, optional
        Overrides ``settings.grpc_workers``: threads for the calls' blocking work.
    max_message_bytes : int, default 16 MiB
        Largest request or response; a larger one fails with RESOURCE_EXHAUSTED.
    health_interval : float, default 1.0
        Seconds between checks of the model holder for the health service (a model loaded
        by the scheduler turns health SERVING within this time; RunCycle and stored cycles
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
        metrics: ServerObserver | None = None,
        max_workers: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        health_interval: float = 1.0,
    ) -> None:
        settings = service.settings
        port = settings.grpc_port if port is None else port
        max_workers = settings.grpc_workers if max_workers is None else max_workers
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
        self._interceptors: list[grpc.aio.ServerInterceptor] = []
        if metrics is not None:
            self._interceptors.append(MetricsInterceptor(metrics))
        if token:
            self._interceptors.append(AuthInterceptor(token))
        self._interceptors.append(ErrorInterceptor())
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # off: a port already in use fails the bind instead of being silently shared
            ("grpc.so_reuseport", 1 if settings.grpc_reuse_port else 0),
        ]
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        self.hub = StreamHub(
            StreamLimits(
                total=settings.grpc_max_streams,
                per_client=settings.grpc_max_streams_per_client,
                backlog=settings.grpc_stream_backlog,
            ),
            observer=metrics,
        )
        self.servicer = SignalServicer(
            service, executor=self._executor, hub=self.hub, after_cycle=self.refresh_health
        )
        self._health = health.aio.HealthServicer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = threading.Lock()
        self._serving: bool | None = None
        self._halt = threading.Event()
        self._terminated = threading.Event()
        self._started = False
        self._stopped = False
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def tls(self) -> bool:
        """Whether the port speaks TLS."""
        return self._credentials is not None

    @property
    def address(self) -> str:
        """``host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def open_streams(self) -> int:
        """StreamPositions calls open now."""
        return self.hub.count

    # -- the event loop -----------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the server's loop from another thread and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

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
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        try:
            self._run(self._start())
        except BaseException:
            self._close_loop()
            raise
        self._unsubscribe = self.service.subscribe(self._on_cycle)
        log.info(
            "gRPC %s listening on %s (%s, %s)",
            SERVICE_NAME,
            self.address,
            "TLS" if self.tls else "plaintext",
            "bearer token" if self.service.settings.grpc_token else "no authentication",
        )
        return self

    async def _start(self) -> None:
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        server.add_generic_rpc_handlers((method_handlers(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = self.address
        try:
            if self._credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, self._credentials)
        except RuntimeError as err:
            raise RuntimeError(f"cannot bind the gRPC server to {address}: {err}") from None
        if not bound:
            raise RuntimeError(f"cannot bind the gRPC server to {address}")
        self.port = int(bound)
        self._server = server
        await self._apply_health(self._holder_serving())
        published = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self.servicer.publish_cycles(published)),
            asyncio.ensure_future(self._watch_model()),
        ]
        await published.wait()  # subscribed before the first call can open a stream
        await server.start()

    def _close_loop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        loop.close()
        self._executor.shutdown(wait=False)
        self._terminated.set()

    # -- health -------------------------------------------------------------------------------

    def _holder_serving(self) -> bool:
        return self.service.holder.current is not None and not self._halt.is_set()

    async def _apply_health(self, serving: bool) -> bool:
        with self._lock:
            changed = serving != self._serving
            self._serving = serving
        if changed:
            status = _SERVING if serving else _NOT_SERVING
            for name in (health.OVERALL_HEALTH, SERVICE_NAME):
                await self._health.set(name, status)
        return serving

    def refresh_health(self) -> bool:
        """Set both health entries from the model holder; returns whether SERVING.

        Callable from any thread; once it returns, health checks answer the new status.
        """
        serving = self._holder_serving()
        loop = self._loop
        if loop is None or self._terminated.is_set() or not loop.is_running():
            return serving  # applied when the server starts
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self._apply_health(serving))
            return serving
        try:
            return self._run(self._apply_health(serving), timeout=10)
        except (TimeoutError, RuntimeError):  # the loop stopped meanwhile: nothing to update
            return serving

    def _on_cycle(self, _result: CycleResult) -> None:
        self.refresh_health()  # the cycle may have loaded a model

    async def _watch_model(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self._apply_health(self._holder_serving())
            except Exception:  # keep watching; a failure here must not kill health updates
                log.exception("health update failed")

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully: health NOT_SERVING, streams ended, in-flight calls finish.

        New calls are refused (UNAVAILABLE) at once; calls in flight get up to `grace`
        seconds, then are cancelled. Open positions streams end with UNAVAILABLE.
        Calling it again does nothing.
        """
        if grace < 0:
            raise ValueError(f"`grace` must be >= 0 seconds, got {grace}")
        with self._lock:
            done = self._stopped or not self._started or self._terminated.is_set()
            self._stopped = True
            if done:  # stopped already, never started, or its start failed
                return
        self._halt.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        try:
            self._run(self._stop(grace))
        finally:
            self._close_loop()
        log.info("gRPC server on %s stopped", self.address)

    async def _stop(self, grace: float) -> None:
        # first, so that load balancers and watchers see NOT_SERVING (later sets are ignored)
        await self._health.enter_graceful_shutdown()
        self.hub.close_all()
        if self._server is not None:
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if `timeout` seconds passed first."""
        return self._terminated.wait(timeout)

    def __enter__(self) -> GrpcServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0)
