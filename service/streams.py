"""Open ``StreamPositions`` calls: how many, from whom, how far behind, and when to let go.

A :class:`StreamHub` lives on the gRPC server's event loop (every method but
:attr:`StreamHub.count` must be called from that loop). Each stream is a
:class:`Subscription` with a bounded backlog of encoded positions sets:

* **limits at open**: at most ``total`` streams in all and ``per_client`` from one client
  address (the peer's IP, so processes behind one NAT share it); one more is refused with
  RESOURCE_EXHAUSTED naming the limit and its setting;
* **slow consumers**: a set is queued for every stream without waiting for anyone; a stream
  whose client does not read lets its writes block on the transport (HTTP/2 flow control),
  its backlog fills, and when it would exceed ``backlog`` sets the stream is dropped with
  RESOURCE_EXHAUSTED, even in the middle of a blocked write. The other streams, the unary
  calls and the health checks never wait for it: no stream holds a thread;
* **shutdown**: :meth:`StreamHub.close_all` ends every stream with UNAVAILABLE.

The queued items are shared, already encoded messages, so a backlog costs references, not
copies; memory stays bounded by ``total * backlog`` references.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from service.config import env_var
from service.errors import ResourceExhausted, ServiceError, Unavailable

__all__ = ["StreamHub", "StreamLimits", "StreamObserver", "Subscription", "client_of"]

log = logging.getLogger(__name__)


class StreamObserver(Protocol):
    """What the hub reports (``service.metrics.ServiceMetrics`` provides it)."""

    def observe_streams(self, open_streams: int) -> None: ...

    def observe_stream_dropped(self, reason: str) -> None: ...


@dataclass(frozen=True)
class StreamLimits:
    """Subscriber limits (the settings ``grpc_max_streams``, ``grpc_max_streams_per_client``
    and ``grpc_stream_backlog``)."""

    total: int = 1000
    per_client: int = 100
    backlog: int = 64

    def __post_init__(self) -> None:
        for field in ("total", "per_client", "backlog"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{field}` must be a positive int, got {value!r}")


def client_of(peer: str) -> str:
    """The client address of a gRPC peer string: its IP, without the port.

    >>> client_of("ipv4:10.1.2.3:51234")
    '10.1.2.3'
    >>> client_of("ipv6:[::1]:51234")
    '::1'
    >>> client_of("unix:/tmp/grpc.sock")
    'unix:/tmp/grpc.sock'
    """
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6") and ":" in rest:
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


Item = tuple[int, bytes]  # (run id, encoded positions message)
_END = object()  # wakes a waiting stream once it was dropped or the server closes


class Subscription:
    """One open stream: its model name, its client and its backlog of encoded sets."""

    def __init__(self, name: str, client: str, backlog: int) -> None:
        self.name = name
        self.client = client
        self._backlog = backlog
        self._inbox: asyncio.Queue[object] = asyncio.Queue()  # bounded by `offer`
        self._ended = asyncio.Event()
        self.reason: ServiceError | None = None

    @property
    def pending(self) -> int:
        """Sets queued and not yet written."""
        return self._inbox.qsize() - (1 if self._ended.is_set() else 0)

    def offer(self, item: Item) -> bool:
        """Queue `item`; False if the stream ended or (ending it) the backlog is full."""
        if self.reason is not None:
            return False
        if self._inbox.qsize() >= self._backlog:
            self.end(
                ResourceExhausted(
                    f"this stream fell {self._backlog} positions sets behind (the client is "
                    f"not reading; {env_var('grpc_stream_backlog')}); reconnect: the stream "
                    "restarts with the latest set, and GetPositions with `as_of` returns the "
                    "days in between"
                )
            )
            return False
        self._inbox.put_nowait(item)
        return True

    def end(self, reason: ServiceError) -> None:
        """End the stream with `reason` (the first reason wins)."""
        if self.reason is None:
            self.reason = reason
            self._ended.set()
            self._inbox.put_nowait(_END)

    async def next(self) -> Item:
        """The next queued set; raises the stream's end reason once it ended."""
        if self.reason is not None:
            raise self.reason
        item = await self._inbox.get()
        if item is _END:
            assert self.reason is not None
            raise self.reason
        return item  # type: ignore[return-value]

    async def send(self, write: Callable[[bytes], Awaitable[object]], message: bytes) -> None:
        """``await write(message)``, abandoned with the end reason if the stream ends first
        (a client that stopped reading blocks the write for good)."""
        if self.reason is not None:
            raise self.reason
        writing = asyncio.ensure_future(write(message))
        ending = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait((writing, ending), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the handler itself is cancelled (the client left)
            ending.cancel()
            if not writing.done():
                writing.cancel()
        if not writing.done():  # the stream ended first: the write is abandoned
            assert self.reason is not None
            raise self.reason
        writing.result()  # a failed write raises here


class StreamHub:
    """The open streams of one server, their limits, and the fan-out of new sets.

    Parameters
    ----------
    limits : StreamLimits
    observer : StreamObserver, optional
        Gets the number of open streams after every change, and each drop or refusal
        (reasons ``"backlog"``, ``"server_limit"``, ``"client_limit"``).
    """

    def __init__(self, limits: StreamLimits, observer: StreamObserver | None = None) -> None:
        self.limits = limits
        self._observer = observer
        self._open: set[Subscription] = set()
        self._by_client: Counter[str] = Counter()
        self._closing = False

    @property
    def count(self) -> int:
        """Open streams (safe to read from any thread)."""
        return len(self._open)

    def names(self) -> set[str]:
        """Model names with at least one open stream."""
        return {s.name for s in self._open}

    def open(self, name: str, client: str) -> Subscription:
        """Register a stream of `name` from `client`.

        Raises
        ------
        Unavailable
            The server is shutting down.
        ResourceExhausted
            The total or the client's limit is reached.
        """
        if self._closing:
            raise Unavailable("the server is shutting down; reconnect to another one")
        if len(self._open) >= self.limits.total:
            self._report_drop("server_limit")
            raise ResourceExhausted(
                f"the server has {self.limits.total} open positions streams, its limit "
                f"({env_var('grpc_max_streams')}); retry later or use GetPositions"
            )
        if self._by_client[client] >= self.limits.per_client:
            self._report_drop("client_limit")
            raise ResourceExhausted(
                f"{self.limits.per_client} positions streams are open from {client}, the "
                f"limit per client ({env_var('grpc_max_streams_per_client')}); close one "
                "first (one stream per consumer is enough: each receives every set)"
            )
        subscription = Subscription(name, client, self.limits.backlog)
        self._open.add(subscription)
        self._by_client[client] += 1
        self._report_open()
        return subscription

    def close(self, subscription: Subscription) -> None:
        """Forget a stream (its handler returned); a second call does nothing."""
        if subscription not in self._open:
            return
        self._open.discard(subscription)
        self._by_client[subscription.client] -= 1
        if self._by_client[subscription.client] <= 0:
            del self._by_client[subscription.client]
        self._report_open()

    def deliver(self, name: str, item: Item) -> int:
        """Offer `item` to every stream of `name`; returns how many were dropped for it."""
        dropped = 0
        for subscription in [s for s in self._open if s.name == name and s.reason is None]:
            if not subscription.offer(item):  # it fell `backlog` sets behind: dropped
                dropped += 1
                self._report_drop("backlog")
                log.warning(
                    "dropped a positions stream of %s from %s: %d sets behind",
                    name,
                    subscription.client,
                    self.limits.backlog,
                )
        return dropped

    def close_all(self) -> None:
        """End every stream with UNAVAILABLE and refuse new ones (the server is stopping)."""
        self._closing = True
        for subscription in list(self._open):
            subscription.end(Unavailable("the server is shutting down; reconnect to another one"))

    def _report_open(self) -> None:
        if self._observer is not None:
            try:
                self._observer.observe_streams(len(self._open))
            except Exception:  # metrics must never fail a stream
                log.exception("observe_streams failed")

    def _report_drop(self, reason: str) -> None:
        if self._observer is not None:
            try:
                self._observer.observe_stream_dropped(reason)
            except Exception:
                log.exception("observe_stream_dropped failed")
