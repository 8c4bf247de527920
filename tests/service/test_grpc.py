"""The real gRPC server on 127.0.0.1 (ephemeral port) with real client channels.

Every RPC's happy path, each status code of service/errors.py's table from a real bad request, the
positions stream, health, reflection, bearer-token auth, TLS, message size limits and the
metrics interceptor. Positions are either written by hand (hand-computable values) or come
from real cycles of the tiny SLP of the `served_run` fixture.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from sqlalchemy.exc import OperationalError

from momentum.data import load_prices
from momentum.manifest import MANIFEST_FILE, MODEL_FILE, ManifestError, read_manifest
from momentum.registry import RegistryError, publish
from service import store
from service._proto import signals_pb2 as pb
from service.app import SignalService
from service.calendar import exchange_today
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
from service.grpc_server import SERVICE_NAME, GrpcServer, InsecureBind
from service.ingest import panel_rows
from service.metrics import ServiceMetrics
from service.model import ModelRefused
from tests.service.polling import until

PRICES = load_prices("sp500")
TICKERS = list(PRICES.columns)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TOKEN = "s3cret-token"
WAIT = 30  # seconds: deadline of every call, so that a bug fails a test instead of hanging it


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


def _rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=WAIT, **kwargs)
    return caught.value


def _tomorrow() -> str:
    return f"{exchange_today('XNYS') + pd.Timedelta(days=1):%Y-%m-%d}"


def _hand_set(n: int = len(TICKERS)) -> pd.DataFrame:
    """Hand-computable positions: X_i = (i - 10) / 10, s_i = 0.1 + 0.01 i, eq. (1) weights."""
    i = np.arange(n, dtype=np.float64)
    signal = (i - 10) / 10
    vol = 0.1 + 0.01 * i
    return pd.DataFrame(
        {
            "signal": signal,
            "vol": vol,
            "weight": signal * 0.15 / vol / n,
            "stale": np.zeros(n, dtype=bool),
        },
        index=pd.Index(TICKERS[:n], name="ticker"),
    )


def _write(engine, name, version, day, frame, cutoff=None) -> int:
    run = {"as_of": day, "model_name": name, "model_version": version, "data_cutoff": cutoff}
    return store.write_cycle(engine, run, frame)


def _history(service: SignalService, end: str) -> None:
    """Closes from mid-2019 to `end` (enough warm-up for every feature), stored directly."""
    result = service.ingest(panel_rows(PRICES.loc["2019-06-03":end]), source="test")
    assert result.ok, result.rejections[:3]


def _closes(rows) -> list[pb.Close]:
    return [pb.Close(date=d, ticker=t, close=c) for d, t, c in rows]


# --------------------------------------------------------------------------------------------
# the status-code table
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidArgument("`as_of` ..."), grpc.StatusCode.INVALID_ARGUMENT),
        (ValueError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("no such model"), grpc.StatusCode.NOT_FOUND),
        (RegistryError("no version"), grpc.StatusCode.NOT_FOUND),
        (KeyError("x"), grpc.StatusCode.NOT_FOUND),
        (OutOfRange("future"), grpc.StatusCode.OUT_OF_RANGE),
        (FailedPrecondition("no positions yet"), grpc.StatusCode.FAILED_PRECONDITION),
        (ModelRefused("no model loaded"), grpc.StatusCode.FAILED_PRECONDITION),
        # a ValueError, but a registry entry that fails verification is not the client's fault
        (ManifestError("sha256 does not match"), grpc.StatusCode.FAILED_PRECONDITION),
        (Unavailable("shutting down"), grpc.StatusCode.UNAVAILABLE),
        (OperationalError("SELECT 1", {}, Exception("locked")), grpc.StatusCode.UNAVAILABLE),
        (Unauthenticated("invalid bearer token"), grpc.StatusCode.UNAUTHENTICATED),
        (ZeroDivisionError("bug"), grpc.StatusCode.INTERNAL),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_one_table_maps_exceptions_to_status_codes(exc, code):
    assert status_for(exc) is code


def test_internal_errors_do_not_echo_the_exception_text():
    assert details_for(NotFound("no model named 'x'")) == "no model named 'x'"
    hidden = details_for(RuntimeError("password=hunter2 in /etc/secret"))
    assert "hunter2" not in hidden and "RuntimeError" in hidden


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("no model 'x' in the registry /models", "no model 'x' in the registry <server path>"),
        ("bad file /srv/data/a.csv: row 3", "bad file <server path>: row 3"),
        # not paths: dates with slashes, URLs, relative names, rates, a lone slash
        ("2021/03/01 http://host:8080/x/y models/slp 5 closes/s a / b", None),
    ],
)
def test_details_never_name_a_server_path(message, shown):
    assert details_for(NotFound(message)) == (message if shown is None else shown)


# --------------------------------------------------------------------------------------------
# happy paths
# --------------------------------------------------------------------------------------------


def test_get_positions_serves_a_stored_set_with_previous_weights_unset_nans_and_stale(
    connect, sqlite_engine, served_run
):
    client = connect(load=False)
    name, version = served_run["name"], served_run["version"]
    first = _hand_set()
    first.loc["BAC", "weight"] = np.nan  # not tradable on day 1: previous weight 0 on day 2
    second = _hand_set()
    second["signal"] = -second["signal"]
    second["weight"] = -second["weight"]
    second.loc["AMD", ["signal", "weight"]] = np.nan  # not tradable on day 2
    second.loc["GE", "stale"] = True  # its close was carried
    _write(sqlite_engine, name, version, "2021-03-30", first, cutoff="2021-03-30")
    run_id = _write(sqlite_engine, name, version, "2021-03-31", second, cutoff="2021-03-30")

    latest = client.stub.GetPositions(pb.GetPositionsRequest(), timeout=WAIT)
    assert (latest.as_of, latest.model_name, latest.model_version) == ("2021-03-31", name, version)
    assert latest.data_cutoff == "2021-03-30" and latest.run_id == run_id
    assert latest.stale  # GE is stale
    assert [a.ticker for a in latest.assets] == TICKERS
    for asset in latest.assets:
        row, before = second.loc[asset.ticker], first.loc[asset.ticker]
        assert asset.annualised_vol == row["vol"]
        assert asset.stale == (asset.ticker == "GE")
        if asset.ticker == "AMD":
            assert not asset.HasField("signal") and not asset.HasField("target_weight")
        else:
            assert asset.signal == row["signal"] and asset.target_weight == row["weight"]
        expected_previous = 0.0 if asset.ticker == "BAC" else before["weight"]
        assert asset.previous_weight == expected_previous

    # an as-of date gives that date's set, or the newest before it; the first has no previous
    day_one = client.stub.GetPositions(pb.GetPositionsRequest(as_of="2021-03-30"), timeout=WAIT)
    assert day_one.as_of == "2021-03-30" and not day_one.stale
    assert [a.previous_weight for a in day_one.assets] == [0.0] * len(TICKERS)
    assert not next(a for a in day_one.assets if a.ticker == "BAC").HasField("target_weight")
    holiday = client.stub.GetPositions(pb.GetPositionsRequest(as_of="2021-04-02"), timeout=WAIT)
    assert holiday.as_of == "2021-03-31" and holiday.run_id == run_id


def _publish_reversed(registry: Path, name: str, version: str) -> str:
    """Publish the served model again as a new version whose manifest lists tickers reversed."""
    source = registry / name / version
    manifest = read_manifest(source / MANIFEST_FILE)
    new = "20990101T000000Z-reversed"
    edited = manifest.model_copy(update={"version": new, "tickers": TICKERS[::-1]})
    publish(registry, source / MODEL_FILE, edited)
    return new


def test_a_refused_production_version_shows_in_get_model_and_list_models(
    connect, registry, served_run
):
    name, good = served_run["name"], served_run["version"]
    client = connect()  # serving `good`
    refused = _publish_reversed(registry, name, good)  # the service's universe check refuses it
    (registry / name / "production").write_text(refused + "\n")  # an operator's hand edit
    outcome = client.service.refresh_model()
    assert outcome.new_refusal and client.service.holder.require().version == good
    info = client.stub.GetModel(pb.GetModelRequest(version=refused), timeout=WAIT)
    assert info.production and not info.serving and "universe differs" in info.refused
    listed = {
        m.version: m for m in client.stub.ListModels(pb.ListModelsRequest(), timeout=WAIT).models
    }
    assert "universe differs" in listed[refused].refused
    assert listed[good].serving and listed[good].refused == ""


def test_assets_come_in_the_manifest_order_of_the_sets_model_version(
    connect, sqlite_engine, registry, served_run
):
    name = served_run["name"]
    reversed_version = _publish_reversed(registry, name, served_run["version"])
    client = connect(load=False)
    frame = _hand_set()
    _write(sqlite_engine, name, reversed_version, "2021-03-31", frame)
    _write(sqlite_engine, name, served_run["version"], "2021-03-30", frame)

    got = client.stub.GetPositions(
        pb.GetPositionsRequest(model_version=reversed_version), timeout=WAIT
    )
    assert [a.ticker for a in got.assets] == TICKERS[::-1]
    assert [a.signal for a in got.assets] == frame["signal"].tolist()[::-1]
    # the served version's set, in its own (alphabetical) manifest order
    served = client.stub.GetPositions(
        pb.GetPositionsRequest(model_version=served_run["version"]), timeout=WAIT
    )
    assert served.as_of == "2021-03-30" and [a.ticker for a in served.assets] == TICKERS


def test_ingest_then_run_cycles_then_get_positions(connect, sqlite_engine, served_run):
    client = connect()
    window = PRICES.loc["2019-06-03":"2021-03-31"]
    rows = panel_rows(window)
    request = pb.IngestClosesRequest(
        closes=_closes(
            zip(rows["date"].dt.strftime("%Y-%m-%d"), rows["ticker"], rows["close"], strict=True)
        ),
        source="test-feed",
    )
    ingested = client.stub.IngestCloses(request, timeout=WAIT)
    assert (ingested.accepted, ingested.unchanged, ingested.corrected) == (len(rows), 0, 0)
    assert not ingested.rejections
    stored = store.read_closes(sqlite_engine, tickers=TICKERS)
    pd.testing.assert_frame_equal(stored, window, check_names=False, check_freq=False)

    first = client.stub.RunCycle(pb.RunCycleRequest(date="2021-03-30"), timeout=WAIT)
    newest = client.stub.RunCycle(pb.RunCycleRequest(), timeout=WAIT)  # newest date with closes
    for run, day in ((first, "2021-03-30"), (newest, "2021-03-31")):
        assert (run.status, run.error, run.as_of, run.data_cutoff) == ("succeeded", "", day, day)
        assert (run.model_name, run.model_version) == (served_run["name"], served_run["version"])
        assert (run.n_assets, run.n_stale) == (len(TICKERS), 0) and run.seconds > 0
    assert newest.run_id > first.run_id

    got = client.stub.GetPositions(pb.GetPositionsRequest(), timeout=WAIT)
    now = store.latest_positions(sqlite_engine, served_run["name"])
    before = store.latest_positions(sqlite_engine, served_run["name"], as_of="2021-03-30")
    assert got.as_of == "2021-03-31" and got.run_id == newest.run_id and not got.stale
    assert [a.ticker for a in got.assets] == TICKERS
    np.testing.assert_array_equal([a.signal for a in got.assets], now.loc[TICKERS, "signal"])
    np.testing.assert_array_equal([a.target_weight for a in got.assets], now.loc[TICKERS, "weight"])
    np.testing.assert_array_equal(
        [a.previous_weight for a in got.assets], before.loc[TICKERS, "weight"]
    )


def test_ingest_lists_every_rejected_row_and_stores_nothing_then_corrects(connect, sqlite_engine):
    client = connect(load=False)
    bad = pb.IngestClosesRequest(
        closes=_closes(
            [
                ("2021-03-30", "AAPL", 120.0),
                ("2021-03-30", "NOPE", 10.0),  # not in the universe
                ("2021-03-30", "MSFT", -1.0),  # not positive
                ("03/30/2021", "KO", 50.0),  # not ISO
            ]
        )
    )
    rejected = client.stub.IngestCloses(bad, timeout=WAIT)
    assert rejected.accepted == rejected.unchanged == rejected.corrected == 0
    assert [(r.row, r.ticker) for r in rejected.rejections] == [(2, "NOPE"), (3, "MSFT"), (4, "KO")]
    assert all(r.reason for r in rejected.rejections)
    assert rejected.rejections[0].date == "2021-03-30"
    assert len(store.closes_dates(sqlite_engine)) == 0

    good = _closes([("2021-03-30", "AAPL", 120.0), ("2021-03-30", "MSFT", 230.0)])
    assert client.stub.IngestCloses(pb.IngestClosesRequest(closes=good), timeout=WAIT).accepted == 2
    fix = pb.IngestClosesRequest(
        closes=_closes([("2021-03-30", "AAPL", 121.0), ("2021-03-30", "MSFT", 230.0)]),
        correction=True,
    )
    fixed = client.stub.IngestCloses(fix, timeout=WAIT)
    assert (fixed.accepted, fixed.unchanged, fixed.corrected) == (0, 1, 1)
    assert store.read_closes(sqlite_engine, tickers=["AAPL"]).iloc[0, 0] == 121.0


def test_an_implausible_close_is_rejected_over_grpc_unless_overridden(connect, sqlite_engine):
    client = connect(load=False, max_close_ratio=4.0)
    client.service.metrics = metrics = ServiceMetrics()
    first = _closes([("2021-03-29", "AAPL", 120.0)])
    assert client.stub.IngestCloses(pb.IngestClosesRequest(closes=first), timeout=WAIT).accepted
    jump = _closes([("2021-03-30", "AAPL", 120_000.0)])
    rejected = client.stub.IngestCloses(pb.IngestClosesRequest(closes=jump), timeout=WAIT)
    (reason,) = [r.reason for r in rejected.rejections]
    assert "1000x the previous close 120.0, beyond the plausible 4x" in reason
    assert "override" in reason
    checked = [pb.Close(date="2021-03-30", ticker="AAPL", close=12.0, override=True)]
    assert client.stub.IngestCloses(pb.IngestClosesRequest(closes=checked), timeout=WAIT).accepted
    too_long = pb.IngestClosesRequest(
        closes=_closes([("2021-03-31", "AAPL", 12.1)]), source="x" * 200
    )
    error = _rpc_error(client.stub.IngestCloses, too_long)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "`source`" in error.details()
    assert store.read_closes(sqlite_engine)["AAPL"].tolist() == [120.0, 12.0]
    # the rejected batch answered OK, and the metrics count it
    assert metrics.ingest_batches.labels(outcome="rejected")._value.get() == 1
    assert metrics.ingest_batches.labels(outcome="stored")._value.get() == 2
    assert metrics.ingest_rejected_rows._value.get() == 1


def test_get_model_and_list_models_describe_registry_versions(connect, registry, served_run):
    name, version = served_run["name"], served_run["version"]
    other = _publish_reversed(registry, name, version)  # published, never promoted
    client = connect()
    loaded = client.service.holder.current

    served = client.stub.GetModel(pb.GetModelRequest(), timeout=WAIT)
    assert (served.name, served.version, served.model) == (name, version, "slp")
    assert served.sha256 == served_run["manifest"].onnx.sha256
    assert json.loads(served.manifest_json) == json.loads(served_run["manifest"].to_json())
    assert served.execution_provider == "CPUExecutionProvider"
    assert dt.datetime.fromisoformat(served.loaded_at) == loaded.loaded_at
    assert served.serving and served.production

    named = client.stub.GetModel(pb.GetModelRequest(name=name, version=other), timeout=WAIT)
    assert named.version == other and not named.serving and not named.production
    assert named.execution_provider == "" and named.loaded_at == ""
    assert json.loads(named.manifest_json)["tickers"] == TICKERS[::-1]

    listed = client.stub.ListModels(pb.ListModelsRequest(), timeout=WAIT).models
    assert [(m.version, m.serving, m.production) for m in listed] == [
        (version, True, True),
        (other, False, False),
    ]


# --------------------------------------------------------------------------------------------
# status codes from real bad requests
# --------------------------------------------------------------------------------------------

BAD_REQUESTS = {
    "as_of not ISO": ("GetPositions", pb.GetPositionsRequest(as_of="2021-3-31"), "INVALID_ARGUMENT", "`as_of`"),
    "as_of no such day": ("GetPositions", pb.GetPositionsRequest(as_of="2021-02-30"), "INVALID_ARGUMENT", "`as_of`"),
    "date not ISO": ("RunCycle", pb.RunCycleRequest(date="31/03/2021"), "INVALID_ARGUMENT", "`date`"),
    "date not a session": ("RunCycle", pb.RunCycleRequest(date="2021-04-03"), "INVALID_ARGUMENT", "not a session"),
    "name escapes the registry": ("GetPositions", pb.GetPositionsRequest(model_name="../slp"), "INVALID_ARGUMENT", "`model_name`"),
    "unknown model": ("GetPositions", pb.GetPositionsRequest(model_name="nope"), "NOT_FOUND", "'nope'"),
    "unknown version": ("GetPositions", pb.GetPositionsRequest(model_version="20990101T000000Z-00000000"), "NOT_FOUND", "no version"),
    "unknown model info": ("GetModel", pb.GetModelRequest(name="nope"), "NOT_FOUND", "nope"),
    "unknown version info": ("GetModel", pb.GetModelRequest(version="20990101T000000Z-00000000"), "NOT_FOUND", "no version"),
    "unknown model list": ("ListModels", pb.ListModelsRequest(name="nope"), "NOT_FOUND", "'nope'"),
    "no positions on or before": ("GetPositions", pb.GetPositionsRequest(as_of="2021-03-01"), "NOT_FOUND", "on or before 2021-03-01"),
    "future as_of": ("GetPositions", pb.GetPositionsRequest(as_of="TOMORROW"), "OUT_OF_RANGE", "in the future"),
    "future cycle": ("RunCycle", pb.RunCycleRequest(date="TOMORROW"), "OUT_OF_RANGE", "in the future"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_its_status_code_and_a_message_naming_the_problem(
    connect, sqlite_engine, served_run, case
):
    method, request, code, fragment = BAD_REQUESTS[case]
    for field in ("as_of", "date"):
        if getattr(request, field, None) == "TOMORROW":
            request = type(request)(**{field: _tomorrow()})
    client = connect()
    _write(sqlite_engine, served_run["name"], served_run["version"], "2021-03-31", _hand_set())
    error = _rpc_error(getattr(client.stub, method), request)
    assert error.code().name == code
    assert fragment in error.details()


def test_not_ready_is_failed_precondition(connect):
    client = connect()  # a model, but no closes and no positions yet
    error = _rpc_error(client.stub.GetPositions, pb.GetPositionsRequest())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no positions" in error.details()
    error = _rpc_error(client.stub.RunCycle, pb.RunCycleRequest())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no closes" in error.details()


def test_no_model_loaded_is_failed_precondition(connect):
    client = connect(load=False, model_name="ghost")  # nothing of that name in the registry
    for call, request in (
        (client.stub.GetModel, pb.GetModelRequest()),
        (client.stub.RunCycle, pb.RunCycleRequest(date="2021-03-31")),
    ):
        error = _rpc_error(call, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no model loaded for ghost" in error.details()
    assert client.check() == NOT_SERVING


def test_a_request_over_the_size_limit_is_refused(connect, sqlite_engine):
    client = connect(load=False, server={"max_message_bytes": 1024})
    big = pb.IngestClosesRequest(closes=_closes([("2021-03-30", "AAPL", 1.0)] * 100))
    assert big.ByteSize() > 1024
    error = _rpc_error(client.stub.IngestCloses, big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(store.closes_dates(sqlite_engine)) == 0


# --------------------------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------------------------


def test_bearer_token_is_required_everywhere_but_health(connect):
    client = connect(grpc_token=TOKEN)
    for metadata, fragment in (
        ((), "missing"),
        ((("authorization", "Bearer wrong"),), "invalid bearer token"),
        ((("authorization", f"Basic {TOKEN}"),), "Bearer <token>"),
    ):
        error = _rpc_error(client.stub.GetModel, pb.GetModelRequest(), metadata=metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and fragment in error.details()
    # a server-streaming call is refused the same way, before its handler runs
    stream = client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=WAIT)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # so is reflection (bidirectional streaming)
    with pytest.raises(grpc.RpcError) as caught:
        list(ProtoReflectionDescriptorDatabase(client.channel).get_services())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    good = [("authorization", f"Bearer {TOKEN}")]
    info = client.stub.GetModel(pb.GetModelRequest(), metadata=good, timeout=WAIT)
    assert info.serving
    assert client.check() == SERVING  # no token: health stays open


# --------------------------------------------------------------------------------------------
# stream, health, shutdown
# --------------------------------------------------------------------------------------------


def test_stream_sends_the_snapshot_then_each_cycle_and_closes_on_cancel(connect, served_run):
    client = connect()
    service = client.service
    _history(service, "2021-03-31")
    snapshot_run = service.run_session("2021-03-30")

    stream = client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=WAIT)
    snapshot = next(stream)
    assert snapshot.as_of == "2021-03-30" and snapshot.run_id == snapshot_run.run_id
    assert client.server.open_streams == 1
    # neither the snapshot's own cycle (published late) nor another model's is sent
    service._publish(snapshot_run)
    service._publish(dataclasses.replace(snapshot_run, model_name="other", run_id=10**6))
    run = client.stub.RunCycle(pb.RunCycleRequest(date="2021-03-31"), timeout=WAIT)
    update = next(stream)
    assert update.as_of == "2021-03-31" and update.run_id == run.run_id
    assert update.model_version == served_run["version"]
    stored = store.latest_positions(service.engine, served_run["name"])
    assert [a.ticker for a in update.assets] == TICKERS
    np.testing.assert_array_equal([a.target_weight for a in update.assets], stored["weight"])
    np.testing.assert_array_equal(
        [a.previous_weight for a in update.assets], [a.target_weight for a in snapshot.assets]
    )
    stream.cancel()
    assert until(lambda: client.server.open_streams == 0)


def test_health_follows_the_model_and_shutdown_ends_streams(connect, sqlite_engine, served_run):
    # no periodic check of the model holder: RunCycle itself must update health
    client = connect(load=False, server={"health_interval": 3600.0})
    assert client.check() == NOT_SERVING and client.check(SERVICE_NAME) == NOT_SERVING
    watch = client.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=WAIT)
    assert next(watch).status == NOT_SERVING

    # RunCycle loads the production model (the cycle itself skips: no closes)
    run = client.stub.RunCycle(pb.RunCycleRequest(date="2021-03-31"), timeout=WAIT)
    assert run.status == "skipped" and "no closes" in run.error
    assert next(watch).status == SERVING
    assert client.check() == SERVING and client.check(SERVICE_NAME) == SERVING

    _write(sqlite_engine, served_run["name"], served_run["version"], "2021-03-31", _hand_set())
    stream = client.stub.StreamPositions(pb.StreamPositionsRequest(), timeout=WAIT)
    assert next(stream).as_of == "2021-03-31"  # the stream is open on the server

    stopping = threading.Thread(target=client.server.stop, kwargs={"grace": 5.0})
    stopping.start()
    assert next(watch).status == NOT_SERVING
    watch.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    # ended by the server's shutdown, not cancelled when the grace period ran out
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in caught.value.details()
    stopping.join(WAIT)
    assert not stopping.is_alive() and client.server.wait(timeout=0)
    error = _rpc_error(client.health.Check, health_pb2.HealthCheckRequest())
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_health_turns_serving_when_another_part_of_the_service_loads_the_model(connect):
    client = connect(load=False, server={"health_interval": 0.05})
    watch = client.health.Watch(health_pb2.HealthCheckRequest(), timeout=WAIT)
    assert next(watch).status == NOT_SERVING
    assert client.service.holder.refresh().model is not None  # as the scheduler does
    assert next(watch).status == SERVING
    watch.cancel()


def test_a_failed_cycle_after_a_cached_read_is_seen_as_stale(connect, sqlite_engine, served_run):
    client = connect(load=False)
    name, version = served_run["name"], served_run["version"]
    _write(sqlite_engine, name, version, "2021-03-30", _hand_set())
    request = pb.GetPositionsRequest()
    assert not client.stub.GetPositions(request, timeout=WAIT).stale
    assert not client.stub.GetPositions(request, timeout=WAIT).stale  # answered from the cache
    # the next session's cycle fails: the stored set is flagged stale, and so is the answer
    store.record_failed_cycle(
        sqlite_engine,
        {"as_of": "2021-03-31", "model_name": name, "model_version": version, "error": "boom"},
    )
    again = client.stub.GetPositions(request, timeout=WAIT)
    assert again.stale and all(a.stale for a in again.assets) and again.as_of == "2021-03-30"


def test_a_repeated_read_on_sqlite_sends_no_sql_yet_sees_another_process_write(
    connect, sqlite_engine, served_run
):
    client = connect(load=False)
    name, version = served_run["name"], served_run["version"]
    _write(sqlite_engine, name, version, "2021-03-30", _hand_set())
    request = pb.GetPositionsRequest()
    assert client.stub.GetPositions(request, timeout=WAIT).as_of == "2021-03-30"
    statements = []
    sa.event.listen(
        sqlite_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    for _ in range(3):
        assert client.stub.GetPositions(request, timeout=WAIT).as_of == "2021-03-30"
    assert statements == []  # answered from the cache: SQLite's data version did not move
    # another process (an engine of its own on the same file) stores the next set
    other = store.create_engine(sqlite_engine.url)
    try:
        _write(other, name, version, "2021-03-31", _hand_set())
    finally:
        other.dispose()
    assert client.stub.GetPositions(request, timeout=WAIT).as_of == "2021-03-31"


def test_only_a_sqlite_file_store_has_a_data_version_probe(tmp_path):
    memory = store.create_engine("sqlite://")
    assert store.data_version_probe(memory) is None
    engine = store.create_engine(f"sqlite:///{tmp_path / 'probe.db'}")
    probe = store.data_version_probe(engine)
    assert probe is not None
    before = probe()
    assert probe() == before  # nothing committed
    _write(engine, "slp", "v1", "2021-03-30", _hand_set())
    assert probe() != before
    engine.dispose()


def test_reflection_lists_the_service_and_its_methods(connect):
    client = connect(load=False)
    database = ProtoReflectionDescriptorDatabase(client.channel)
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(database.get_services())
    service = DescriptorPool(database).FindServiceByName(SERVICE_NAME)
    assert {m.name for m in service.methods} == {
        "GetPositions",
        "StreamPositions",
        "IngestCloses",
        "RunCycle",
        "GetModel",
        "ListModels",
    }


def test_no_server_path_reaches_a_client(connect, registry):
    """The registry's directory is named in the server's log, never in a status's details."""
    client = connect()
    for call, request in (
        (client.stub.ListModels, pb.ListModelsRequest(name="nope")),
        (client.stub.GetModel, pb.GetModelRequest(name="nope")),
        (client.stub.GetPositions, pb.GetPositionsRequest(model_name="nope")),
    ):
        error = _rpc_error(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "'nope'" in error.details() or "nope" in error.details()
        assert str(registry) not in error.details() and "/" not in error.details(), error.details()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_network_bind_without_a_token_is_refused_unless_allowed(connect, host):
    client = connect(load=False)
    with pytest.raises(InsecureBind, match="MOMENTUM_GRPC_TOKEN") as refused:
        GrpcServer(client.service, host=host, port=0)
    assert "MOMENTUM_ALLOW_INSECURE" in str(refused.value)
    # with a token, or on loopback, the same server is built
    token = connect(load=False, grpc_token="s3cret")
    assert GrpcServer(token.service, host=host, port=0).insecure is False
    assert GrpcServer(client.service, host="127.0.0.1", port=0).insecure is False


def test_an_insecure_bind_allowed_on_purpose_warns_and_says_so(connect, caplog):
    client = connect(load=False, allow_insecure=True)
    with caplog.at_level(logging.WARNING, logger="service.grpc_server"):
        server = GrpcServer(client.service, host="0.0.0.0", port=0)
    assert server.insecure is True
    assert any("unauthenticated calls from the network" in r.message for r in caplog.records)


def test_a_second_server_on_a_port_in_use_fails_to_start(connect):
    client = connect(load=False)
    second = GrpcServer(client.service, host="127.0.0.1", port=client.server.port)
    with pytest.raises(
        RuntimeError, match=f"cannot bind the gRPC server to 127.0.0.1:{second.port}"
    ):
        second.start()
    second.stop(grace=0)


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def test_tls_with_a_self_signed_certificate_and_a_plaintext_client_is_refused(connect, self_signed):
    cert, key = self_signed
    trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    # the standard client credentials send `authorization: Bearer <token>` over TLS
    with_token = grpc.composite_channel_credentials(
        trusted, grpc.access_token_call_credentials(TOKEN)
    )
    client = connect(tls_cert=cert, tls_key=key, grpc_token=TOKEN, credentials=with_token)
    assert client.server.tls
    info = client.stub.GetModel(pb.GetModelRequest(), timeout=WAIT)
    assert info.serving and client.check() == SERVING

    with grpc.insecure_channel(f"127.0.0.1:{client.server.port}") as plaintext:
        error = _rpc_error(
            health_pb2_grpc.HealthStub(plaintext).Check, health_pb2.HealthCheckRequest()
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


class RecordingMetrics:
    """A stand-in for ServiceMetrics: records observe_rpc calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.stream_done = threading.Event()

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.calls.append((method, code, seconds))
        if method == "StreamPositions":
            self.stream_done.set()


def test_metrics_interceptor_observes_method_code_and_time_of_every_call(
    connect, sqlite_engine, served_run
):
    metrics = RecordingMetrics()
    client = connect(metrics=metrics, grpc_token=TOKEN)
    good = [("authorization", f"Bearer {TOKEN}")]
    client.stub.GetModel(pb.GetModelRequest(), metadata=good, timeout=WAIT)
    _rpc_error(client.stub.GetPositions, pb.GetPositionsRequest(model_name="nope"), metadata=good)
    _rpc_error(client.stub.GetPositions, pb.GetPositionsRequest(as_of="soon"), metadata=good)
    _rpc_error(client.stub.GetModel, pb.GetModelRequest())  # no token
    client.check()  # health: not observed
    assert [(m, c) for m, c, _ in metrics.calls] == [
        ("GetModel", "OK"),
        ("GetPositions", "NOT_FOUND"),
        ("GetPositions", "INVALID_ARGUMENT"),
        ("GetModel", "UNAUTHENTICATED"),
    ]
    assert all(np.isfinite(s) and s >= 0 for _, _, s in metrics.calls)

    _write(sqlite_engine, served_run["name"], served_run["version"], "2021-03-31", _hand_set())
    stream = client.stub.StreamPositions(pb.StreamPositionsRequest(), metadata=good, timeout=WAIT)
    assert next(stream).as_of == "2021-03-31"  # the snapshot; then the client leaves
    stream.cancel()
    assert metrics.stream_done.wait(WAIT)
    assert metrics.calls[-1][:2] == ("StreamPositions", "CANCELLED")
