"""Shared fixtures of the service tests: a store on SQLite and on PostgreSQL, a clean env.

The PostgreSQL variant runs against the server named by ``MOMENTUM_TEST_DATABASE_URL`` (CI
always sets it) and is skipped only when that variable is unset. Each test gets a schema of
its own, dropped at teardown, so tests are independent and may run in parallel.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import store
from service._proto import signals_pb2_grpc as pb_grpc
from service.app import SignalService
from service.config import ENV_PREFIX, load_settings
from service.grpc_server import GrpcServer

PG_URL_VARIABLE = "MOMENTUM_TEST_DATABASE_URL"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A store in a SQLite file under a directory that does not exist yet."""
    engine = store.create_engine(f"sqlite:///{tmp_path / 'state' / 'momentum.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine() -> Iterator[sa.Engine]:
    """A store in a fresh PostgreSQL schema (dropped afterwards)."""
    url = os.environ.get(PG_URL_VARIABLE)
    if not url:
        pytest.skip(f"{PG_URL_VARIABLE} is not set")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    # libpq's `options` puts every connection of the engine on the new schema.
    schema_url = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = store.create_engine(schema_url)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """The store under test, once per backend."""
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_engine")


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a deterministic order (to compare before / after)."""
    tables = {}
    with engine.connect() as conn:
        for table in store.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            tables[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return tables


class StatementTrap:
    """Makes the n-th SQL statement (0-based, BEGIN included) sent to an engine raise."""

    def __init__(self) -> None:
        self._armed: list[tuple[sa.Engine, Callable[..., None]]] = []

    def arm(self, engine: sa.Engine, n: int) -> None:
        """Raise RuntimeError at statement ``n`` from now on (replaces any earlier trap)."""
        self.disarm()
        seen = [0]

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen[0] += 1
            if seen[0] == n + 1:
                raise RuntimeError(f"injected failure at statement {n}: {statement[:40]}")

        sa.event.listen(engine, "before_cursor_execute", before)
        self._armed.append((engine, before))

    def disarm(self) -> None:
        while self._armed:
            engine, listener = self._armed.pop()
            sa.event.remove(engine, "before_cursor_execute", listener)


@pytest.fixture
def trap() -> Iterator[StatementTrap]:
    """A :class:`StatementTrap`, disarmed at teardown."""
    statement_trap = StatementTrap()
    yield statement_trap
    statement_trap.disarm()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``MOMENTUM_*`` variables and an empty working directory (so no stray ``.env``)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def exported_backtest(root: Path, **config: Any) -> dict[str, Any]:
    """A tiny SLP backtest on the embedded data (tested 2021-2022), its 2021 window exported
    to a registry and promoted; `config` adds to or overrides the `BacktestConfig`.

    Training code (torch) is only used here to make the model; the service code under test
    never imports it.
    """
    from momentum.registry import promote
    from training.backtest import run_backtest
    from training.backtest_config import BacktestConfig
    from training.publish import export_window

    fields = {"model": "slp", "first_test_year": 2021, "step_years": 2, "seeds": 1, "epochs": 2}
    run = run_backtest(
        BacktestConfig(**{**fields, **config}), root / "run", log=lambda _: None, report=False
    )
    registry = root / "registry"
    version = export_window(run, registry=registry, log=lambda _: None)
    promote(registry, version.name, version.version)
    signals = pd.read_parquet(run / "seed_0" / "window_2021" / "signals.parquet")
    position = signals.pivot(index="date", columns="ticker", values="position")
    return {
        "registry": registry,
        "name": version.name,
        "version": version.version,
        "manifest": version.manifest,
        "signals": signals.pivot(index="date", columns="ticker", values="signal"),
        "vol": signals.pivot(index="date", columns="ticker", values="vol"),
        # the backtest's weights: its per-asset leverage N_t w over N_t
        "weights": position.div(position.notna().sum(axis=1), axis=0),
    }


@pytest.fixture(scope="session")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`exported_backtest` with one trial. lr and l1 pinned to the gentle end of the grid: a
    model trained with lr=0.1 saturates (pre-activations in the hundreds), where torch and
    onnxruntime float32 already differ by ~1e-5 (README, Export); here the 1e-5 agreement
    tests the code, not the rounding."""
    return exported_backtest(
        tmp_path_factory.mktemp("served"), trials=1, fixed={"lr": 1e-3, "l1": 1e-2}
    )


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for localhost / 127.0.0.1, valid from yesterday to
    tomorrow, and its key: PEM files ``server.crt`` and ``server.key`` in `tmp_path`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --------------------------------------------------------------------------------------------
# a real gRPC server and its clients
# --------------------------------------------------------------------------------------------

GRPC_WAIT = 30  # seconds: deadline of a call, so that a bug fails a test instead of hanging it


@pytest.fixture
def registry(served_run, tmp_path):
    """A private copy of the served registry (some tests publish more versions)."""
    path = tmp_path / "registry"
    shutil.copytree(served_run["registry"], path)
    return path


class Client:
    """A channel to a started server with its stubs."""

    def __init__(self, server: GrpcServer, credentials: grpc.ChannelCredentials | None = None):
        target = f"127.0.0.1:{server.port}"
        if credentials is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(target, credentials)
        self.server = server
        self.service = server.service
        self.stub = pb_grpc.SignalServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, service: str = "", timeout: float = GRPC_WAIT, **kwargs) -> int:
        return self.health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, **kwargs
        ).status


@pytest.fixture
def connect(sqlite_engine, clean_env, registry, served_run):
    """``connect(load=True, metrics=None, server={...}, **settings) -> Client``."""
    servers: list[GrpcServer] = []
    clients: list[Client] = []

    def make(*, load=True, metrics=None, server=None, credentials=None, **settings) -> Client:
        values = {
            "registry_dir": registry,
            "model_name": served_run["name"],
            "device": "cpu",
            "data_dir": clean_env / "var",
            "_env_file": None,
            **settings,
        }
        service = SignalService(load_settings(**values), engine=sqlite_engine)
        if load:
            assert service.holder.refresh().model is not None
        started = GrpcServer(
            service, host="127.0.0.1", port=0, metrics=metrics, **(server or {})
        ).start()
        servers.append(started)
        client = Client(started, credentials)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.channel.close()
    for server in servers:
        server.stop(grace=0)
