"""Load-test GetPositions of the gRPC service on loopback, optionally with idle subscribers.

    python bench/grpc_load.py [--clients 4] [--duration 10] [--warmup 2]
        [--servers 1] [--streams 0] [--registry DIR --name NAME] [--workers 16]

Sets up a real service on the embedded 20-stock universe (a SQLite store in a temporary
folder holding the last sessions' closes and two cycles of positions, so replies carry
previous weights) and starts `service.grpc_server.GrpcServer` on an ephemeral loopback port
in this process. With ``--servers N`` (N > 1), N - 1 read replicas (``SignalService`` with
``read_only=True`` on the same store, as ``momentum-serve run --reader`` runs) are spawned
and bind the same port with SO_REUSEPORT (``MOMENTUM_GRPC_REUSE_PORT``), so the kernel
spreads the connections over N event loops.

With ``--streams K``, a subscriber process opens K ``StreamPositions`` calls (on 8 channels)
that stay idle for the whole run, and reports at the end how many were still open.

Then ``--clients`` client processes (spawned, one channel each, back-to-back unary calls) run
for ``--duration`` seconds after ``--warmup`` seconds of untimed calls. Prints the inputs,
the total requests per second, the p50 / p90 / p99 / max latency of all calls as the clients
saw them, and the CPU seconds per call of the servers and of the clients over the timed
window (clients and servers share the machine's cores).

Without ``--registry`` a small SLP is trained and exported first (about a minute; torch
needed); with it, that registry's production model is served.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STREAM_CHANNELS = 8


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.05))


def _client(address: str, warmup: float, duration: float, start_at: float, out: str) -> None:
    """One client process: untimed calls until `start_at + warmup`, then timed ones."""
    import grpc

    from service._proto import signals_pb2, signals_pb2_grpc

    request = signals_pb2.GetPositionsRequest()
    latencies = []
    errors = 0
    cpu_from = None
    with grpc.insecure_channel(address) as channel:
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        _sleep_until(start_at)
        measure_from = start_at + warmup
        stop_at = measure_from + duration
        while True:
            t0 = time.perf_counter()
            now = time.time()
            if now >= stop_at:
                break
            if cpu_from is None and now >= measure_from:
                cpu_from = time.process_time()
            try:
                stub.GetPositions(request, timeout=5)
            except grpc.RpcError:
                errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - t0)
    cpu = time.process_time() - (cpu_from or time.process_time())
    np.save(out, np.array([*latencies, cpu, -float(errors)]))


def _subscriber(address: str, streams: int, ready: str, window: str, out: str) -> None:
    """Open `streams` StreamPositions calls, read each snapshot, keep them idle until the
    timed window (the file `window`) ends, then write how many are still open to `out`."""
    import grpc

    from service._proto import signals_pb2, signals_pb2_grpc

    channels = [grpc.insecure_channel(address) for _ in range(STREAM_CHANNELS)]
    calls = []
    for i in range(streams):
        stub = signals_pb2_grpc.SignalServiceStub(channels[i % STREAM_CHANNELS])
        calls.append(stub.StreamPositions(signals_pb2.StreamPositionsRequest()))
    for call in calls:
        next(call)  # the snapshot: the stream is open on a server
    Path(ready).touch()
    while not Path(window).exists():
        time.sleep(0.05)
    _sleep_until(float(Path(window).read_text().split()[1]))
    still_open = sum(1 for call in calls if not call.done())
    for call in calls:
        call.cancel()
    for channel in channels:
        channel.close()
    Path(out).write_text(str(still_open))


def _replica(data_dir: str, registry: str, name: str, port: int, ready: str) -> None:
    """A read replica on the shared port: serve until the timed window (read from the file
    ``window`` beside `ready` once every process is up) ends, and report its CPU seconds."""
    from service.app import SignalService
    from service.config import load_settings
    from service.grpc_server import GrpcServer

    settings = load_settings(
        registry_dir=Path(registry),
        model_name=name,
        data_dir=Path(data_dir),
        device="cpu",
        grpc_reuse_port=True,
        _env_file=None,
    )
    service = SignalService(settings, read_only=True)
    service.holder.refresh()
    server = GrpcServer(service, host="127.0.0.1", port=port).start()
    Path(ready).touch()
    window_file = Path(ready).with_name("window")
    while not window_file.exists():
        time.sleep(0.05)
    window = [float(x) for x in window_file.read_text().split()]
    _sleep_until(window[0])
    cpu = time.process_time()
    _sleep_until(window[1])
    Path(ready).with_suffix(".cpu").write_text(str(time.process_time() - cpu))
    _sleep_until(window[1] + 2.0)  # the last calls drain
    server.stop(grace=1)


def _model_registry(tmp: Path) -> tuple[Path, str]:
    """Train a small SLP on the embedded data and publish + promote it."""
    from momentum.registry import promote
    from training.backtest_config import BacktestConfig
    from training.publish import export_production

    config = BacktestConfig(model="slp", trials=1, epochs=2, fixed={"lr": 1e-3, "l1": 1e-2})
    registry = tmp / "registry"
    version = export_production(
        config, registry=registry, out=tmp / "search", log=lambda m: print(f"  {m}")
    )
    promote(registry, version.name, version.version)
    return registry, version.name


def _service(tmp: Path, registry: Path, name: str, *, reuse_port: bool):
    from momentum.data import load_prices
    from service.app import SignalService
    from service.config import load_settings
    from service.ingest import panel_rows

    settings = load_settings(
        registry_dir=registry,
        model_name=name,
        data_dir=tmp / "var",
        device="cpu",
        grpc_reuse_port=reuse_port,
        grpc_max_streams_per_client=10_000,
        grpc_max_streams=10_000,
        _env_file=None,
    )
    service = SignalService(settings)
    prices = load_prices("sp500").iloc[-400:]
    result = service.ingest(panel_rows(prices), source="bench")
    assert result.ok, result.rejections[:3]
    for day in prices.index[-2:]:
        cycle = service.run_session(day)
        assert cycle.status == "succeeded", cycle.error
    return service


def _wait_for(paths: list[Path], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not all(p.exists() for p in paths):
        if time.time() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first (2)")
    parser.add_argument(
        "--servers", type=int, default=1, help="server processes sharing the port (1)"
    )
    parser.add_argument("--streams", type=int, default=0, help="idle subscribers (0)")
    parser.add_argument("--workers", type=int, default=16, help="server worker threads (16)")
    parser.add_argument("--registry", type=Path, default=None, help="serve this registry")
    parser.add_argument("--name", default="slp", help="model name in --registry (slp)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.workers < 1:
        parser.error("--clients and --workers must be >= 1, --duration > 0, --warmup >= 0")
    if args.servers < 1 or args.streams < 0:
        parser.error("--servers must be >= 1 and --streams >= 0")

    import grpc

    from service.grpc_server import GrpcServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.registry is None:
            print("training and exporting a small SLP to serve ...", flush=True)
            registry, name = _model_registry(tmp)
        else:
            registry, name = args.registry, args.name
        service = _service(tmp, registry, name, reuse_port=args.servers > 1)
        server = GrpcServer(service, host="127.0.0.1", port=0, max_workers=args.workers).start()
        address = f"127.0.0.1:{server.port}"
        context = mp.get_context("spawn")
        children = []
        replicas = [tmp / f"replica{i}.ready" for i in range(args.servers - 1)]
        for ready in replicas:
            process = context.Process(
                target=_replica,
                args=(str(tmp / "var"), str(registry), name, server.port, str(ready)),
            )
            process.start()
            children.append(process)
        _wait_for(replicas, 180, "the read replicas")
        # the subscribers hold their streams until the timed window ends (known only then)
        window_file = tmp / "window"
        subscribed = tmp / "subscriber.ready"
        if args.streams:
            process = context.Process(
                target=_subscriber,
                args=(address, args.streams, str(subscribed), str(window_file), str(tmp / "n")),
            )
            process.start()
            children.append(process)
            _wait_for([subscribed], 180, "the subscribers")
        start_at = time.time() + 5.0  # the clients started, connected and waiting
        measure_from = start_at + args.warmup
        stop_at = measure_from + args.duration
        window_file.write_text(f"{measure_from!r} {stop_at!r}")
        outs = [str(tmp / f"client{i}.npy") for i in range(args.clients)]
        clients = [
            context.Process(target=_client, args=(address, args.warmup, args.duration, start_at, o))
            for o in outs
        ]
        for c in clients:
            c.start()
        _sleep_until(measure_from)
        server_cpu = time.process_time()
        _sleep_until(stop_at)
        server_cpu = time.process_time() - server_cpu
        streams_seen = server.open_streams
        for c in [*clients, *children]:
            c.join()
        server_cpu += sum(float(r.with_suffix(".cpu").read_text()) for r in replicas)
        still_open = int((tmp / "n").read_text()) if args.streams else 0
        server.stop(grace=1)
        parts = [np.load(o) for o in outs if os.path.exists(o)]
    if len(parts) != args.clients:
        print(f"only {len(parts)} of {args.clients} clients reported", file=sys.stderr)
        return 1
    errors = int(-sum(p[-1] for p in parts))
    client_cpu = float(sum(p[-2] for p in parts))
    latencies = np.concatenate([p[:-2] for p in parts]) * 1e3
    print(f"command: python bench/grpc_load.py {shlex.join(argv or sys.argv[1:])}")
    print(
        f"inputs: GetPositions (latest, 20 assets), {args.clients} client processes, "
        f"{args.duration:g} s timed after {args.warmup:g} s warm-up, {args.servers} server "
        f"process(es) ({args.workers} worker threads each), {args.streams} idle subscribers, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"grpcio {grpc.__version__}, Python {platform.python_version()}"
    )
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    calls = len(latencies)
    print(
        f"result: {calls / args.duration:,.0f} req/s, latency p50 {p50:.2f} ms, "
        f"p90 {p90:.2f} ms, p99 {p99:.2f} ms, max {latencies.max():.2f} ms, "
        f"{calls:,} calls, {errors} errors"
    )
    print(
        f"cpu: servers {server_cpu / max(calls, 1) * 1e6:.0f} us/call, clients "
        f"{client_cpu / max(calls, 1) * 1e6:.0f} us/call, "
        f"{(server_cpu + client_cpu) / args.duration:.2f} of {os.cpu_count()} cores busy"
    )
    if args.streams:
        print(
            f"streams: {still_open} of {args.streams} idle subscribers open at the end "
            f"({streams_seen} of them on this process's server)"
        )
    failed = errors > 0 or (args.streams and still_open != args.streams)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
