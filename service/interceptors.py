"""gRPC server interceptors: the cross-cutting code that runs around every handler.

Outermost first, as :class:`service.grpc_server.GrpcServer` installs them:

* :class:`MetricsInterceptor` sees every outcome, refusals included, and reports the
  method, status code and wall time to ``observe_rpc`` (health checks left out);
* :class:`AuthInterceptor` requires ``authorization: Bearer <token>`` on every call but
  health checks and refuses the others with UNAUTHENTICATED before a handler runs;
* :class:`ErrorInterceptor` turns any exception of a ``momentum.v1.SignalService`` handler
  into the status code of :func:`service.errors.status_for`, so handlers raise domain
  errors and never touch a gRPC context.

The server is ``grpc.aio``: handlers are coroutines, and each interceptor rewraps a handler
with :func:`_rewrap` into a coroutine of the same kind. A response-streaming handler may be
an async generator (the reflection service's) or a coroutine that writes with
``context.write`` (``StreamPositions``, health's ``Watch``); the wrapper always writes, so
both kinds pass through every interceptor alike.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health

from service._proto import signals_pb2 as pb
from service.errors import Unauthenticated, details_for, status_for

__all__ = [
    "HEALTH_PREFIX",
    "SIGNAL_PREFIX",
    "AuthInterceptor",
    "ErrorInterceptor",
    "MetricsInterceptor",
    "RpcObserver",
]

log = logging.getLogger(__name__)

SIGNAL_PREFIX = f"/{pb.DESCRIPTOR.services_by_name['SignalService'].full_name}/"
"""Method-name prefix of ``momentum.v1.SignalService`` calls."""
HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
"""Method-name prefix of ``grpc.health.v1.Health`` calls (open, and not reported)."""


class RpcObserver(Protocol):
    """What the metrics interceptor needs (``service.metrics.ServiceMetrics`` provides it)."""

    def observe_rpc(self, method: str, code: str, seconds: float) -> None: ...


# (request or request iterator, context) -> the response (unary) or None (streaming: written)
Behaviour = Callable[[Any, Any], Awaitable[Any]]


def _as_coroutine(behaviour: Callable[[Any, Any], Any], streaming: bool) -> Behaviour:
    """`behaviour` as a coroutine function; a streaming one writes its responses itself."""
    if not streaming:
        return behaviour

    async def written(request: Any, context: Any) -> None:
        result = behaviour(request, context)
        if inspect.isasyncgen(result):
            async for message in result:
                await context.write(message)
        elif inspect.isawaitable(result):
            await result
        else:  # pragma: no cover - every handler of this server is asynchronous
            raise TypeError(f"a synchronous streaming handler cannot run here: {behaviour!r}")

    return written


def _rewrap(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behaviour, bool], Behaviour]
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind whose behaviour is ``wrap(behaviour, streams_responses)``."""
    codecs = (handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        behaviour = wrap(_as_coroutine(handler.stream_stream, True), True)
        return grpc.stream_stream_rpc_method_handler(behaviour, *codecs)
    if handler.request_streaming:
        behaviour = wrap(_as_coroutine(handler.stream_unary, False), False)
        return grpc.stream_unary_rpc_method_handler(behaviour, *codecs)
    if handler.response_streaming:
        behaviour = wrap(_as_coroutine(handler.unary_stream, True), True)
        return grpc.unary_stream_rpc_method_handler(behaviour, *codecs)
    behaviour = wrap(_as_coroutine(handler.unary_unary, False), False)
    return grpc.unary_unary_rpc_method_handler(behaviour, *codecs)


async def _abort(context: Any, exc: Exception) -> None:
    """End the RPC with the table's status for `exc` (raises, as ``context.abort`` does)."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error answering a request", exc_info=exc)
    await context.abort(code, details_for(exc))


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps any exception of a SignalService handler to its status (:mod:`service.errors`)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SIGNAL_PREFIX):
            return handler
        return _rewrap(handler, self._mapping)

    @staticmethod
    def _mapping(behaviour: Behaviour, streaming: bool) -> Behaviour:
        async def mapped(request: Any, context: Any) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:  # ended with its status already
                raise
            except Exception as exc:
                await _abort(context, exc)

        return mapped


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata on every call but health checks.

    A missing, malformed or wrong token ends the call with UNAUTHENTICATED before the
    handler runs. Tokens are compared in constant time.
    """

    def __init__(self, token: str, *, open_prefixes: Sequence[str] = (HEALTH_PREFIX,)) -> None:
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("`token` must be non-empty and contain no whitespace")
        self._token = token.encode()
        self._open = tuple(open_prefixes)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler
        refusal = Unauthenticated(problem)

        async def refuse(request: Any, context: Any) -> Any:
            await _abort(context, refusal)

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


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Reports every call's method, status code and wall time to ``observe_rpc``.

    `method` is the RPC's name (``"GetPositions"``), `code` the status name (``"OK"``,
    ``"NOT_FOUND"``, ``"CANCELLED"`` for a stream the client left). Health checks are not
    reported: orchestrator probes would drown the traffic. For a stream the time is its
    whole life.
    """

    def __init__(
        self, metrics: RpcObserver, *, skip_prefixes: Sequence[str] = (HEALTH_PREFIX,)
    ) -> None:
        if not callable(getattr(metrics, "observe_rpc", None)):
            raise TypeError(
                f"`metrics` must have observe_rpc(method, code, seconds), got {metrics!r}"
            )
        self._metrics = metrics
        self._skip = tuple(skip_prefixes)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._skip):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return _rewrap(handler, lambda behaviour, _streaming: self._timed(method, behaviour))

    def _observe(self, method: str, code: str, start: float) -> None:
        try:
            self._metrics.observe_rpc(method, code, time.perf_counter() - start)
        except Exception:  # a broken metrics sink must not fail the request
            log.exception("observe_rpc failed for %s", method)

    def _timed(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def timed(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN.name
            try:
                response = await behaviour(request, context)
                code = _code_name(context, grpc.StatusCode.OK)
                return response
            except asyncio.CancelledError:  # the client left or its deadline passed
                code = grpc.StatusCode.CANCELLED.name
                raise
            except BaseException:
                code = _code_name(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._observe(method, code, start)

        return timed
