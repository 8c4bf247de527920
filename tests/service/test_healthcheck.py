"""`python -m service.healthcheck` against a plain gRPC server with a health servicer.

The server here is grpc's own ``HealthServicer`` on 127.0.0.1 with an ephemeral port, not the
signal service: the probe only speaks ``grpc.health.v1``, and the statuses are set by hand.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.healthcheck import check, main

SIGNALS = "momentum.v1.SignalService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NO_ENV: dict[str, str] = {}


class HealthServer:
    """A grpc server with only the health service; statuses are set by the test."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def set(self, service: str, status: int) -> None:
        self.servicer.set(service, status)

    def stop(self) -> None:
        self.server.stop(None).wait()


@pytest.fixture
def make_server() -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def make(credentials: grpc.ServerCredentials | None = None) -> HealthServer:
        servers.append(HealthServer(credentials))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., HealthServer]) -> HealthServer:
    return make_server()


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# exit status
# --------------------------------------------------------------------------------------------


def test_serving_exits_0_and_prints_the_status(server, capsys):
    server.set("", SERVING)
    assert main(["--port", str(server.port)], env=NO_ENV) == 0
    assert capsys.readouterr().out == f"127.0.0.1:{server.port} (overall): SERVING\n"


def test_not_serving_exits_1(server, capsys):
    server.set("", NOT_SERVING)
    assert main(["--port", str(server.port)], env=NO_ENV) == 1
    assert capsys.readouterr().out.endswith(": NOT_SERVING\n")


def test_the_service_entry_is_asked_separately_from_the_overall_one(server, capsys):
    server.set("", NOT_SERVING)
    server.set(SIGNALS, SERVING)
    assert main(["--port", str(server.port), "--service", SIGNALS], env=NO_ENV) == 0
    assert f"({SIGNALS}): SERVING" in capsys.readouterr().out
    assert main(["--port", str(server.port)], env=NO_ENV) == 1

    server.set(SIGNALS, NOT_SERVING)
    assert main(["--port", str(server.port), "--service", SIGNALS], env=NO_ENV) == 1


def test_a_status_change_is_seen_by_the_next_probe(server):
    # the probe keeps no state between runs: each run asks afresh
    server.set("", NOT_SERVING)
    assert main(["--port", str(server.port)], env=NO_ENV) == 1
    server.set("", SERVING)
    assert main(["--port", str(server.port)], env=NO_ENV) == 0


def test_an_unknown_service_name_exits_1_with_not_found(server, capsys):
    server.set("", SERVING)
    assert main(["--port", str(server.port), "--service", "no.such.Service"], env=NO_ENV) == 1
    assert ": NOT_FOUND" in capsys.readouterr().out


def test_nothing_listening_exits_1_with_unavailable(capsys):
    port = _free_port()
    assert main(["--port", str(port), "--timeout", "2"], env=NO_ENV) == 1
    assert f"127.0.0.1:{port} (overall): UNAVAILABLE" in capsys.readouterr().out


def test_liveness_accepts_any_answer_of_the_health_service(server, capsys):
    # a server waiting for its first model (NOT_SERVING) is alive, only not ready
    server.set("", NOT_SERVING)
    assert main(["--port", str(server.port), "--liveness"], env=NO_ENV) == 0
    assert capsys.readouterr().out.endswith(": NOT_SERVING\n")
    server.set("", SERVING)
    assert main(["--port", str(server.port), "--liveness"], env=NO_ENV) == 0
    unknown = ["--port", str(server.port), "--service", "no.such.Service", "--liveness"]
    assert main(unknown, env=NO_ENV) == 0


def test_liveness_fails_when_nothing_answers():
    assert main(["--port", str(_free_port()), "--timeout", "2", "--liveness"], env=NO_ENV) == 1


def test_check_returns_the_status_without_raising(server):
    server.set("", SERVING)
    assert check("127.0.0.1", server.port).serving
    assert check("127.0.0.1", server.port).answered
    stopped = check("127.0.0.1", _free_port(), timeout=2)
    assert not stopped.serving and not stopped.answered
    assert stopped.status == "UNAVAILABLE"
    assert stopped.detail


# --------------------------------------------------------------------------------------------
# defaults from the environment
# --------------------------------------------------------------------------------------------


def test_port_comes_from_momentum_grpc_port(server):
    server.set("", SERVING)
    assert main([], env={"MOMENTUM_GRPC_PORT": str(server.port)}) == 0
    # an explicit --port wins over the variable
    env = {"MOMENTUM_GRPC_PORT": str(_free_port())}
    assert main(["--port", str(server.port)], env=env) == 0
    assert main(["--timeout", "2"], env=env) == 1


def test_a_wildcard_bind_address_is_dialled_on_loopback(server, capsys):
    server.set("", SERVING)
    for wildcard in ("0.0.0.0", "::"):
        env = {"MOMENTUM_GRPC_HOST": wildcard, "MOMENTUM_GRPC_PORT": str(server.port)}
        assert main([], env=env) == 0
        assert capsys.readouterr().out.startswith(f"127.0.0.1:{server.port} ")


def test_an_empty_variable_counts_as_unset(capsys):
    port = _free_port()
    env = {"MOMENTUM_GRPC_HOST": "", "MOMENTUM_GRPC_PORT": "", "MOMENTUM_TLS_CERT": ""}
    assert main(["--port", str(port), "--timeout", "2"], env=env) == 1
    assert capsys.readouterr().out.startswith(f"127.0.0.1:{port} (overall): UNAVAILABLE")


def test_a_malformed_port_variable_is_named(capsys):
    assert main([], env={"MOMENTUM_GRPC_PORT": "fifty"}) == 1
    assert "MOMENTUM_GRPC_PORT: not an integer: 'fifty'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "0"], "--port"),
        (["--port", "70000"], "--port"),
        (["--port", "http"], "--port"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "soon"], "--timeout"),
        (["--unknown"], "--unknown"),
    ],
)
def test_usage_errors_exit_1_naming_the_option(argv, named, capsys):
    # Docker reserves health-check status 2, argparse's usual exit status for usage errors
    with pytest.raises(SystemExit) as exit_info:
        main(argv, env=NO_ENV)
    assert exit_info.value.code == 1
    assert named in capsys.readouterr().err


def test_check_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`port`"):
        check("127.0.0.1", 0)
    with pytest.raises(ValueError, match="`timeout`"):
        check("127.0.0.1", 50051, timeout=0)


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def test_tls_follows_momentum_tls_cert(make_server, self_signed, capsys):
    cert, key = self_signed
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server = make_server(credentials)
    server.set("", SERVING)
    port = str(server.port)

    assert main(["--port", port], env={"MOMENTUM_TLS_CERT": str(cert)}) == 0
    assert main(["--port", port, "--tls-ca", str(cert)], env=NO_ENV) == 0
    # the certificate names localhost and 127.0.0.1; another dialled name needs --server-name
    args = ["--host", "localhost", "--port", port, "--tls-ca", str(cert)]
    assert main(args, env=NO_ENV) == 0
    capsys.readouterr()
    # a plaintext probe of a TLS-only server is refused
    assert main(["--port", port, "--timeout", "2"], env=NO_ENV) == 1
    assert ": UNAVAILABLE" in capsys.readouterr().out


def test_tls_server_name_override(make_server, self_signed):
    cert, key = self_signed
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server = make_server(credentials)
    server.set("", SERVING)
    port = str(server.port)
    base = ["--port", port, "--tls-ca", str(cert), "--timeout", "2"]
    # a name the certificate does not carry fails verification, the override fixes it
    assert main([*base, "--server-name", "signals.example"], env=NO_ENV) == 1
    assert main([*base, "--server-name", "localhost"], env=NO_ENV) == 0


def test_an_unreadable_tls_ca_is_named(tmp_path, capsys):
    missing = tmp_path / "missing.pem"
    assert main(["--tls-ca", str(missing)], env=NO_ENV) == 1
    assert f"--tls-ca {missing}" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the module as Docker runs it
# --------------------------------------------------------------------------------------------


def test_python_dash_m_exit_status(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTUM_")}
    env["MOMENTUM_GRPC_PORT"] = str(server.port)
    command = [sys.executable, "-m", "service.healthcheck"]

    server.set("", SERVING)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"127.0.0.1:{server.port} (overall): SERVING\n")

    server.set("", NOT_SERVING)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.endswith(": NOT_SERVING\n")
