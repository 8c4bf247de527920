"""Container health probe: ask the service's ``grpc.health.v1`` and exit 0 when SERVING.

Usage (the Docker image's ``HEALTHCHECK``)::

    python -m service.healthcheck [--host H] [--port P] [--service NAME] [--timeout S]
                                  [--tls-ca PEM] [--server-name NAME] [--liveness]

It sends one ``grpc.health.v1.Health/Check`` for `--service` (``""``, the default, is the
server as a whole; ``momentum.v1.SignalService`` is the signal service), prints one line such
as ``127.0.0.1:50051 (overall): SERVING`` and exits

* 0 when the answer is SERVING;
* 1 otherwise: NOT_SERVING (no model loaded yet, or shutting down), an unknown service name,
  nothing listening, a TLS mismatch, the deadline passed, or a usage error. Docker reads 1 as
  "unhealthy" and reserves 2, so usage errors exit 1 as well, not argparse's usual 2.

``--liveness`` exits 0 on any answer of the health service, NOT_SERVING included: the process
is up and its gRPC server responds. That is the question a liveness probe asks; a service
waiting for its first model (NOT_SERVING) is not helped by a restart, it is only not *ready*
(Kubernetes: deploy/k8s/deployment.yaml).

Defaults come from the service's own environment variables (the environment only: a ``.env``
file is not read, and an empty variable counts as unset, as in :mod:`service.config`), so the
probe follows the container's settings without flags:

* ``--port``: ``MOMENTUM_GRPC_PORT``, else 50051;
* ``--host``: ``MOMENTUM_GRPC_HOST`` unless it is a wildcard address (``0.0.0.0``, ``::``),
  which a client cannot dial: then ``127.0.0.1``;
* ``--tls-ca``: ``MOMENTUM_TLS_CERT`` when set (the server then speaks TLS only; its own,
  typically self-signed, certificate is the root to trust). Pass ``--server-name`` when the
  certificate does not name the host the probe dials.

Bearer-token authentication does not apply: the service keeps the health service open.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import env_var

__all__ = ["DEFAULT_PORT", "HealthStatus", "check", "main"]

DEFAULT_PORT = 50051
"""The gRPC port when neither ``--port`` nor ``MOMENTUM_GRPC_PORT`` says otherwise."""

_WILDCARDS = ("0.0.0.0", "::", "[::]", "")
_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class HealthStatus:
    """The outcome of one health check.

    Attributes
    ----------
    serving : bool
        True only when the server answered SERVING.
    status : str
        The serving status name (``SERVING``, ``NOT_SERVING``, ``UNKNOWN``,
        ``SERVICE_UNKNOWN``), or the gRPC status code name of a failed call
        (``UNAVAILABLE``, ``NOT_FOUND`` for an unknown service, ``DEADLINE_EXCEEDED``, ...).
    detail : str
        The error details of a failed call; empty when the server answered.
    answered : bool
        True when the health service answered, whatever the serving status (an unknown
        service name included); False when nothing answered in time.
    """

    serving: bool
    status: str
    detail: str = ""
    answered: bool = True


def _target(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:  # a DNS name
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def check(
    host: str,
    port: int,
    service: str = "",
    *,
    timeout: float = 3.0,
    root_certificates: bytes | None = None,
    server_name: str | None = None,
) -> HealthStatus:
    """Send one ``grpc.health.v1.Health/Check`` and report the answer.

    Parameters
    ----------
    host : str
        Address to dial (a name, an IPv4 or an IPv6 literal).
    port : int
        gRPC port, 1-65535.
    service : str, default ""
        Health entry to ask about; ``""`` is the server as a whole.
    timeout : float, default 3.0
        Deadline of the call in seconds (> 0); connecting counts towards it.
    root_certificates : bytes or None
        PEM certificates to trust; given, the call uses TLS, otherwise plaintext.
    server_name : str or None
        Name to verify in the server's certificate instead of `host` (TLS only).

    Returns
    -------
    HealthStatus
        Never raises for an unreachable or unhealthy server: that is the answer.

    Raises
    ------
    ValueError
        `port` or `timeout` out of range.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"`port` must be an int in 1..65535, got {port!r}")
    if not timeout > 0:
        raise ValueError(f"`timeout` must be positive, got {timeout!r}")
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    target = _target(host, port)
    if root_certificates is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            detail = (err.details() if isinstance(err, grpc.Call) else str(err)) or ""
            # NOT_FOUND is the health service's own answer for a name it does not know
            answered = code == grpc.StatusCode.NOT_FOUND
            return HealthStatus(serving=False, status=code.name, detail=detail, answered=answered)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return HealthStatus(serving=response.status == _SERVING, status=name)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors exiting 1: Docker reserves a health-check exit status of 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {port}")
    return port


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return seconds


def _environment(env: Mapping[str, str]) -> tuple[str, int | str, str | None]:
    """Default host, port (or the error text of a bad variable) and TLS root from `env`."""
    host = env.get(env_var("grpc_host"), "").strip()
    if host in _WILDCARDS:
        host = "127.0.0.1"  # the server listens on every interface, loopback included
    port_text = env.get(env_var("grpc_port"), "").strip()
    port: int | str = DEFAULT_PORT
    if port_text:
        try:
            port = _port(port_text)
        except argparse.ArgumentTypeError as err:
            port = f"{env_var('grpc_port')}: {err}"
    tls_ca = env.get(env_var("tls_cert"), "").strip() or None
    return host, port, tls_ca


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the probe; returns the exit status (0 SERVING, 1 anything else).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments without the program name (default ``sys.argv[1:]``).
    env : mapping, optional
        Environment to read the defaults from (default ``os.environ``).

    Returns
    -------
    int
        0 when the service answered SERVING (with ``--liveness``: answered at all), else 1.
    """
    host, env_port, env_ca = _environment(os.environ if env is None else env)
    parser = _ArgumentParser(
        prog="python -m service.healthcheck",
        description="Exit 0 when the service's gRPC health check answers SERVING, else 1.",
    )
    parser.add_argument("--host", default=host, help=f"address to dial (default {host})")
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"gRPC port (default ${env_var('grpc_port')} or {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--service",
        default="",
        help='health entry: "" for the whole server (default) or momentum.v1.SignalService',
    )
    parser.add_argument(
        "--timeout", type=_timeout, default=3.0, help="deadline in seconds (default 3)"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=None if env_ca is None else Path(env_ca),
        help=f"PEM roots to trust; uses TLS (default ${env_var('tls_cert')} when set)",
    )
    parser.add_argument(
        "--server-name", default=None, help="name to verify in the server certificate"
    )
    parser.add_argument(
        "--liveness",
        action="store_true",
        help="exit 0 on any health answer, NOT_SERVING included (the server is up)",
    )
    args = parser.parse_args(argv)

    port = args.port if args.port is not None else env_port
    if isinstance(port, str):  # MOMENTUM_GRPC_PORT is malformed and --port did not override it
        print(f"{parser.prog}: error: {port}", file=sys.stderr)
        return 1
    roots = None
    if args.tls_ca is not None:
        try:
            roots = args.tls_ca.read_bytes()
        except OSError as err:
            print(
                f"{parser.prog}: error: cannot read --tls-ca {args.tls_ca}: {err}", file=sys.stderr
            )
            return 1

    result = check(
        args.host,
        port,
        args.service,
        timeout=args.timeout,
        root_certificates=roots,
        server_name=args.server_name,
    )
    line = f"{_target(args.host, port)} ({args.service or 'overall'}): {result.status}"
    print(f"{line} ({result.detail})" if result.detail else line, flush=True)
    if args.liveness:
        return 0 if result.answered else 1
    return 0 if result.serving else 1


if __name__ == "__main__":
    sys.exit(main())
