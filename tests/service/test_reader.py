"""Read replicas: serve a shared store, refuse writes, and stream the writer's cycles."""

from __future__ import annotations

import time

import grpc
import pytest

from momentum.data import load_prices
from service._proto import signals_pb2, signals_pb2_grpc
from service.app import SignalService
from service.config import load_settings
from service.errors import FailedPrecondition
from service.grpc_server import GrpcServer
from service.ingest import panel_rows


@pytest.fixture
def pair(served_run, engine):
    settings = load_settings(
        registry_dir=served_run["registry"], model_name=served_run["name"], device="cpu"
    )
    writer = SignalService(settings, engine=engine)
    reader = SignalService(settings, engine=engine, read_only=True)
    prices = load_prices("sp500").loc["2019-06-03":"2021-03-31"]
    assert writer.ingest(panel_rows(prices.loc[:"2021-03-30"])).ok
    assert writer.run_session("2021-03-30").status == "succeeded"
    return writer, reader, prices


def test_a_reader_refuses_writes(pair):
    _, reader, prices = pair
    with pytest.raises(FailedPrecondition, match="read replica"):
        reader.ingest(panel_rows(prices.loc["2021-03-31":]))
    with pytest.raises(FailedPrecondition, match="read replica"):
        reader.run_session("2021-03-31")
    reader.holder.refresh()
    with (
        GrpcServer(reader, port=0) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RunCycle(signals_pb2.RunCycleRequest(date="2021-03-30"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        served = stub.GetPositions(signals_pb2.GetPositionsRequest(), timeout=30)
        assert served.as_of == "2021-03-30"  # what the writer stored


def test_a_reader_streams_the_cycles_the_writer_stores(pair):
    writer, reader, prices = pair
    heard = []
    reader.subscribe(heard.append)
    halt = reader.watch_store(interval=0.05)
    try:
        assert writer.ingest(panel_rows(prices.loc["2021-03-31":])).ok
        stored = writer.run_session("2021-03-31")
        deadline = time.monotonic() + 20
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        halt()
    assert [(h.run_id, f"{h.as_of:%Y-%m-%d}") for h in heard] == [(stored.run_id, "2021-03-31")]
    assert heard[0].model_version == stored.model_version
