"""Positions streams under load: idle subscribers, limits, slow consumers (real server).

The asynchronous server must keep answering GetPositions, GetModel and the health checks
whatever the streams do: hundreds of idle subscribers, a client that never reads. Limits are
enforced at open with RESOURCE_EXHAUSTED, a slow consumer is dropped with its reason, and
``momentum_grpc_streams`` / ``momentum_grpc_streams_dropped_total`` count them.
"""

from __future__ import annotations

import re

import grpc
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2

from momentum.data import load_prices
from service import healthcheck, store
from service._proto import signals_pb2 as pb
from service._proto import signals_pb2_grpc as pb_grpc
from service.app import StoredCycle
from service.metrics import ServiceMetrics
from service.streams import StreamHub, StreamLimits, Subscription, client_of
from tests.service.polling import until

TICKERS = list(load_prices("sp500").columns)
DAYS = load_prices("sp500").index[-80:]
SERVING = health_pb2.HealthCheckResponse.SERVING
DEADLINE = 5.0  # seconds: what a caller would allow a read while the streams are open


def _set(day_number: int) -> pd.DataFrame:
    """A positions set whose first weight tells the day apart."""
    n = len(TICKERS)
    weight = np.full(n, 0.01)
    weight[0] = day_number / 1000
    return pd.DataFrame(
        {
            "signal": np.linspace(-1, 1, n),
            "vol": np.full(n, 0.2),
            "weight": weight,
            "stale": np.zeros(n, dtype=bool),
        },
        index=pd.Index(TICKERS, name="ticker"),
    )


def _store_set(service, served_run, number: int) -> StoredCycle:
    """Store the set of day `number` (as a cycle would) and return what a cycle publishes."""
    day = DAYS[number]
    run = {
        "as_of": day,
        "model_name": served_run["name"],
        "model_version": served_run["version"],
        "data_cutoff": day,
    }
    run_id = store.write_cycle(service.engine, run, _set(number))
    return StoredCycle(day, served_run["name"], served_run["version"], "succeeded", run_id)


def _value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_500_idle_subscribers_leave_every_other_call_answering(connect, served_run):
    metrics = ServiceMetrics()
    client = connect(metrics=metrics, grpc_max_streams_per_client=500)
    _store_set(client.service, served_run, 0)
    # several connections, as several subscriber processes would open
    channels = [grpc.insecure_channel(f"127.0.0.1:{client.server.port}") for _ in range(5)]
    streams = []
    try:
        for i in range(500):
            stub = pb_grpc.SignalServiceStub(channels[i % len(channels)])
            streams.append(stub.StreamPositions(pb.StreamPositionsRequest()))
        assert until(lambda: client.server.open_streams == 500)
        assert _value(metrics, "momentum_grpc_streams") == 500

        # each call answers within its deadline, several times over
        for _ in range(20):
            positions = client.stub.GetPositions(pb.GetPositionsRequest(), timeout=DEADLINE)
            assert positions.as_of == f"{DAYS[0]:%Y-%m-%d}"
            assert client.stub.GetModel(pb.GetModelRequest(), timeout=DEADLINE).serving
            assert client.check(timeout=DEADLINE) == SERVING
        # the Kubernetes liveness and readiness probes
        probe = ["--host", "127.0.0.1", "--port", str(client.server.port), "--timeout", "5"]
        assert healthcheck.main([*probe, "--liveness"], env={}) == 0
        assert healthcheck.main(probe, env={}) == 0

        # one more from this client is refused, naming the limit
        with pytest.raises(grpc.RpcError) as refused:
            next(client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=DEADLINE))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MOMENTUM_GRPC_MAX_STREAMS_PER_CLIENT" in refused.value.details()
        assert _value(metrics, "momentum_grpc_streams_dropped_total", reason="client_limit") == 1

        # a new set reaches every subscriber
        published = _store_set(client.service, served_run, 1)
        client.service._publish(published)
        for stream in streams[::50]:
            first, second = next(stream), next(stream)
            assert (first.as_of, second.as_of) == (f"{DAYS[0]:%Y-%m-%d}", f"{DAYS[1]:%Y-%m-%d}")
            assert second.run_id == published.run_id
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
    assert until(lambda: client.server.open_streams == 0)
    assert _value(metrics, "momentum_grpc_streams") == 0


@pytest.mark.parametrize(
    ("limits", "refused_by", "variable"),
    [
        ({"grpc_max_streams": 3, "grpc_max_streams_per_client": 10}, "server_limit", "STREAMS"),
        (
            {"grpc_max_streams": 10, "grpc_max_streams_per_client": 3},
            "client_limit",
            "STREAMS_PER_CLIENT",
        ),
    ],
)
def test_a_stream_over_a_limit_is_refused_and_a_closed_one_frees_its_place(
    connect, served_run, limits, refused_by, variable
):
    metrics = ServiceMetrics()
    client = connect(metrics=metrics, **limits)
    _store_set(client.service, served_run, 0)
    open_ = [client.stub.StreamPositions(pb.StreamPositionsRequest()) for _ in range(3)]
    for stream in open_:
        next(stream)  # the snapshot: each is open on the server
    with pytest.raises(grpc.RpcError) as refused:
        next(client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=DEADLINE))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.search(rf"\bMOMENTUM_GRPC_MAX_{variable}\b", refused.value.details())
    assert _value(metrics, "momentum_grpc_streams_dropped_total", reason=refused_by) == 1
    open_.pop().cancel()
    assert until(lambda: client.server.open_streams == 2)
    again = client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=DEADLINE)
    assert next(again).as_of == f"{DAYS[0]:%Y-%m-%d}"
    for stream in [*open_, again]:
        stream.cancel()


def test_a_slow_consumer_is_dropped_with_its_status_and_the_others_keep_up(connect, served_run):
    metrics = ServiceMetrics()
    client = connect(metrics=metrics, grpc_stream_backlog=2)
    service = client.service
    _store_set(service, served_run, 0)
    target = f"127.0.0.1:{client.server.port}"
    # a consumer that never reads, with a small receive window: the server's writes block
    slow_channel = grpc.insecure_channel(
        target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    slow = pb_grpc.SignalServiceStub(slow_channel).StreamPositions(pb.StreamPositionsRequest())
    fast = client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=60)
    assert next(fast).as_of == f"{DAYS[0]:%Y-%m-%d}"
    assert until(lambda: client.server.open_streams == 2)

    received = []
    for number in range(1, 40):
        cycle = _store_set(service, served_run, number)
        service._publish(cycle)
        update = next(fast)  # the reading consumer gets every set, in order
        received.append(update.run_id)
        assert update.as_of == f"{DAYS[number]:%Y-%m-%d}"
        # meanwhile GetPositions answers the newest set
        latest = client.stub.GetPositions(pb.GetPositionsRequest(), timeout=DEADLINE)
        assert latest.run_id == cycle.run_id
    assert received == sorted(received)
    assert until(lambda: client.server.open_streams == 1)  # the slow one was dropped
    assert _value(metrics, "momentum_grpc_streams_dropped_total", reason="backlog") == 1
    assert _value(metrics, "momentum_grpc_streams") == 1

    # the slow client, reading at last, gets what was sent, then the reason
    got = []
    with pytest.raises(grpc.RpcError) as dropped:
        for message in slow:
            got.append(message.as_of)
    assert dropped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell 2 positions sets behind" in dropped.value.details()
    assert "MOMENTUM_GRPC_STREAM_BACKLOG" in dropped.value.details()
    assert got[0] == f"{DAYS[0]:%Y-%m-%d}" and len(got) < 40
    fast.cancel()
    slow_channel.close()


# --------------------------------------------------------------------------------------------
# the hub alone (on an event loop, no server)
# --------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.open: list[int] = []
        self.dropped: list[str] = []

    def observe_streams(self, open_streams: int) -> None:
        self.open.append(open_streams)

    def observe_stream_dropped(self, reason: str) -> None:
        self.dropped.append(reason)


def test_the_hub_queues_up_to_the_backlog_then_ends_a_blocked_write():
    import asyncio

    async def scenario() -> None:
        recorder = Recorder()
        hub = StreamHub(StreamLimits(total=5, per_client=5, backlog=2), observer=recorder)
        sub = hub.open("slp", "10.0.0.1")
        other = hub.open("other", "10.0.0.2")
        assert hub.names() == {"slp", "other"} and recorder.open == [1, 2]
        blocked = asyncio.Event()

        async def never_returns(message: bytes) -> None:
            blocked.set()
            await asyncio.Event().wait()

        sending = asyncio.ensure_future(sub.send(never_returns, b"first"))
        await blocked.wait()
        assert hub.deliver("slp", (1, b"a")) == 0
        assert hub.deliver("slp", (2, b"b")) == 0
        assert sub.pending == 2 and other.pending == 0
        assert hub.deliver("slp", (3, b"c")) == 1  # a third set would exceed the backlog
        assert hub.deliver("slp", (4, b"d")) == 0  # ended already: not counted twice
        with pytest.raises(Exception, match="fell 2 positions sets behind"):
            await sending  # the blocked write is abandoned at once
        with pytest.raises(Exception, match="fell 2 positions sets behind"):
            await sub.next()
        assert recorder.dropped == ["backlog"]
        hub.close(sub)
        hub.close(sub)  # twice: nothing
        assert hub.count == 1 and recorder.open[-1] == 1
        hub.close_all()
        with pytest.raises(Exception, match="shutting down"):
            await other.next()
        with pytest.raises(Exception, match="shutting down"):
            hub.open("slp", "10.0.0.3")

    asyncio.run(scenario())


def test_a_subscription_hands_out_its_sets_in_order():
    import asyncio

    async def scenario() -> list[tuple[int, bytes]]:
        sub = Subscription("slp", "10.0.0.1", backlog=3)
        for item in [(1, b"a"), (2, b"b"), (3, b"c")]:
            assert sub.offer(item)
        return [await sub.next() for _ in range(3)]

    assert asyncio.run(scenario()) == [(1, b"a"), (2, b"b"), (3, b"c")]


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        ("ipv4:10.1.2.3:51234", "10.1.2.3"),
        ("ipv6:[::1]:51234", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("unix:/tmp/grpc.sock", "unix:/tmp/grpc.sock"),
    ],
)
def test_a_client_is_its_address_without_the_port(peer, client):
    assert client_of(peer) == client


@pytest.mark.parametrize("field", ["total", "per_client", "backlog"])
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=field):
        StreamLimits(**{field: 0})
