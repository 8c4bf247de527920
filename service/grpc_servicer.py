"""``momentum.v1.SignalService`` over a :class:`~service.app.SignalService`, on ``grpc.aio``.

One thin coroutine per RPC: convert the request (:mod:`service.grpc_messages`), run one query
of :mod:`service.queries` or one call of the service in the worker threads (the store and the
model block; the event loop never does), convert back. Errors are domain exceptions, mapped
to status codes by :class:`service.interceptors.ErrorInterceptor`.

Positions are encoded once per stored set: GetPositions replies and every stream write the
same bytes. New cycles reach the streams through one subscription of the servicer: a single
task reads each set once and offers it to every open stream of that model
(:class:`service.streams.StreamHub`), so a thousand subscribers cost one read, not a thousand.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from service._proto import signals_pb2 as pb
from service.app import SignalService
from service.cycle import CycleResult
from service.errors import FailedPrecondition
from service.grpc_messages import (
    closes_frame,
    cycle_message,
    ingest_message,
    model_message,
    parse_date,
    parse_name,
    positions_message,
)
from service.queries import (
    PositionsReader,
    PositionsSet,
    describe_model,
    list_model_versions,
    run_session,
)
from service.streams import StreamHub, client_of

__all__ = ["SignalServicer"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CACHE_SIZE = 256  # encoded messages kept, as many as the reader's cached sets


class SignalServicer:
    """The six RPCs of ``momentum.v1.SignalService`` as coroutines.

    Parameters
    ----------
    service : SignalService
    executor : concurrent.futures.Executor
        Runs the blocking work (store, registry, model, ingest, cycles).
    hub : StreamHub
        The open streams and their limits.
    after_cycle : callable, optional
        Called (in a worker thread) after every RunCycle: the cycle may have loaded a model.
    """

    def __init__(
        self,
        service: SignalService,
        *,
        executor: Executor,
        hub: StreamHub,
        after_cycle: Callable[[], object] | None = None,
    ) -> None:
        self.service = service
        self.positions = PositionsReader(service)
        self.hub = hub
        self._executor = executor
        self._after_cycle = after_cycle
        # encoded messages of cached sets, by identity: the entry holds the set, so its id
        # cannot be reused while the entry lives
        self._encoded: OrderedDict[int, tuple[PositionsSet, bytes]] = OrderedDict()
        self._encoded_lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------------

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args))

    def _encode(self, found: PositionsSet) -> bytes:
        """`found` as wire bytes, encoded once per cached set (the hot path of GetPositions)."""
        with self._encoded_lock:
            entry = self._encoded.get(id(found))
            if entry is not None and entry[0] is found:
                self._encoded.move_to_end(id(found))
                return entry[1]
        message = positions_message(found).SerializeToString()
        with self._encoded_lock:
            self._encoded[id(found)] = (found, message)
            while len(self._encoded) > _CACHE_SIZE:
                self._encoded.popitem(last=False)
        return message

    def _positions(
        self, name: str | None, as_of: Any = None, version: str | None = None
    ) -> tuple[PositionsSet, bytes]:
        found = self.positions.get(name, as_of, version)
        return found, self._encode(found)

    # -- the fan-out of new cycles to the streams --------------------------------------------

    async def publish_cycles(self, started: asyncio.Event) -> None:
        """Run on the loop until cancelled: each stored cycle, read once, to its streams."""
        loop = asyncio.get_running_loop()
        cycles: asyncio.Queue[CycleResult] = asyncio.Queue()

        def arrived(result: CycleResult) -> None:  # in the thread that stored the cycle
            loop.call_soon_threadsafe(cycles.put_nowait, result)

        unsubscribe = self.service.subscribe(arrived)
        started.set()
        try:
            while True:
                result = await cycles.get()
                if result.status != "succeeded" or result.model_name not in self.hub.names():
                    continue
                try:
                    _, message = await self._blocking(
                        self._positions, result.model_name, result.as_of, result.model_version
                    )
                except Exception:  # the streams wait for the next set; the server lives on
                    log.exception("reading the positions of run %d for streams", result.run_id)
                    continue
                self.hub.deliver(result.model_name, (result.run_id, message))
        finally:
            unsubscribe()

    # -- RPCs ---------------------------------------------------------------------------------

    async def GetPositions(self, request: pb.GetPositionsRequest, context: Any) -> bytes:
        name = parse_name(request.model_name, "model_name")
        as_of = parse_date(request.as_of, "as_of")
        version = parse_name(request.model_version, "model_version")
        found = self.positions.cached(name, as_of, version)  # no store query: on the loop
        if found is not None:
            return self._encode(found)
        _, message = await self._blocking(self._positions, name, as_of, version)
        return message

    async def StreamPositions(self, request: pb.StreamPositionsRequest, context: Any) -> None:
        name = parse_name(request.model_name, "model_name") or self.service.holder.name
        # open before reading the snapshot: a cycle stored in between is queued, not missed
        # (and not sent twice: its run id equals the snapshot's)
        subscription = self.hub.open(name, client_of(context.peer()))
        try:
            sent = -1
            try:
                snapshot, message = await self._blocking(self._positions, name)
            except FailedPrecondition:  # nothing stored yet: the first cycle will follow
                pass
            else:
                sent = snapshot.run_id
                await subscription.send(context.write, message)
            while True:
                run_id, message = await subscription.next()
                if run_id <= sent:
                    continue
                sent = run_id
                await subscription.send(context.write, message)
        finally:
            self.hub.close(subscription)

    async def IngestCloses(
        self, request: pb.IngestClosesRequest, context: Any
    ) -> pb.IngestClosesResponse:
        def ingest() -> pb.IngestClosesResponse:
            result = self.service.ingest(
                closes_frame(request),
                correction=request.correction,
                source=request.source or "grpc",
            )
            return ingest_message(result)

        return await self._blocking(ingest)

    async def RunCycle(self, request: pb.RunCycleRequest, context: Any) -> pb.CycleRun:
        day = parse_date(request.date, "date")

        def run() -> pb.CycleRun:
            try:
                return cycle_message(run_session(self.service, day))
            finally:
                if self._after_cycle is not None:
                    self._after_cycle()

        return await self._blocking(run)

    async def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.ModelInfo:
        name = parse_name(request.name, "name")
        version = parse_name(request.version, "version")
        found = await self._blocking(describe_model, self.service, name, version)
        return model_message(found)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        name = parse_name(request.name, "name")
        found = await self._blocking(list_model_versions, self.service, name)
        return pb.ListModelsResponse(models=[model_message(m) for m in found])
