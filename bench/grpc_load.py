"""Load-test GetPositions of the gRPC service on loopback.

    python bench/grpc_load.py [--clients 4] [--duration 10] [--warmup 2]
        [--registry DIR --name NAME] [--workers 16]

Sets up a real service on the embedded 20-stock universe (a SQLite store in a
temporary folder holding the last sessions' closes and two cycles of positions,
so replies carry previous weights), starts `service.grpc_server.GrpcServer` on an
ephemeral loopback port in this process, then runs ``--clients`` client
processes (spawned, one channel each, back-to-back unary calls) for
``--duration`` seconds after ``--warmup`` seconds of untimed calls. Prints the
inputs, the total requests per second and the p50 / p90 / p99 / max latency of
all calls as the clients saw them.

Without ``--registry`` a small SLP is trained and exported first (about a
minute; torch needed); with it, that registry's production model is served.
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


def _client(address: str, warmup: float, duration: float, start_at: float, out: str) -> None:
    """One client process: untimed calls until `start_at + warmup`, then timed ones."""
    import grpc

    from service._proto import signals_pb2, signals_pb2_grpc

    request = signals_pb2.GetPositionsRequest()
    latencies = []
    errors = 0
    with grpc.insecure_channel(address) as channel:
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        while time.time() < start_at:
            time.sleep(0.001)
        measure_from = start_at + warmup
        stop_at = measure_from + duration
        while True:
            t0 = time.perf_counter()
            now = time.time()
            if now >= stop_at:
                break
            try:
                stub.GetPositions(request, timeout=5)
            except grpc.RpcError:
                errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - t0)
    np.save(out, np.array([*latencies, -float(errors)]))


def _model_registry(tmp: Path) -> tuple[Path, str]:
    """Train a small SLP on the embedded data and publish + promote it."""
    from momentum.registry import promote
    from training.backtest import BacktestConfig
    from training.publish import export_production

    config = BacktestConfig(model="slp", trials=1, epochs=2, fixed={"lr": 1e-3, "l1": 1e-2})
    registry = tmp / "registry"
    version = export_production(
        config, registry=registry, out=tmp / "search", log=lambda m: print(f"  {m}")
    )
    promote(registry, version.name, version.version)
    return registry, version.name


def _service(tmp: Path, registry: Path, name: str):
    from momentum.data import load_prices
    from service.app import SignalService
    from service.config import load_settings
    from service.ingest import panel_rows

    settings = load_settings(
        registry_dir=registry, model_name=name, data_dir=tmp / "var", device="cpu"
    )
    service = SignalService(settings)
    prices = load_prices("sp500").iloc[-400:]
    result = service.ingest(panel_rows(prices), source="bench")
    assert result.ok, result.rejections[:3]
    for day in prices.index[-2:]:
        cycle = service.run_session(day)
        assert cycle.status == "succeeded", cycle.error
    return service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first (2)")
    parser.add_argument("--workers", type=int, default=16, help="server threads (16)")
    parser.add_argument("--registry", type=Path, default=None, help="serve this registry")
    parser.add_argument("--name", default="slp", help="model name in --registry (slp)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.workers < 1:
        parser.error("--clients and --workers must be >= 1, --duration > 0, --warmup >= 0")

    import grpc

    from service.grpc_server import GrpcServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.registry is None:
            print("training and exporting a small SLP to serve ...", flush=True)
            registry, name = _model_registry(tmp)
        else:
            registry, name = args.registry, args.name
        service = _service(tmp, registry, name)
        server = GrpcServer(service, host="127.0.0.1", port=0, max_workers=args.workers).start()
        address = f"127.0.0.1:{server.port}"
        context = mp.get_context("spawn")
        start_at = time.time() + 3.0  # every client connected and waiting
        outs = [str(tmp / f"client{i}.npy") for i in range(args.clients)]
        clients = [
            context.Process(target=_client, args=(address, args.warmup, args.duration, start_at, o))
            for o in outs
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        server.stop(grace=1)
        parts = [np.load(o) for o in outs if os.path.exists(o)]
    if len(parts) != args.clients:
        print(f"only {len(parts)} of {args.clients} clients reported", file=sys.stderr)
        return 1
    errors = int(-sum(p[-1] for p in parts))
    latencies = np.concatenate([p[:-1] for p in parts]) * 1e3
    print(f"command: python bench/grpc_load.py {shlex.join(argv or sys.argv[1:])}")
    print(
        f"inputs: GetPositions (latest, 20 assets), {args.clients} client processes, "
        f"{args.duration:g} s timed after {args.warmup:g} s warm-up, server threads "
        f"{args.workers}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"grpcio {grpc.__version__}, Python {platform.python_version()}"
    )
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    print(
        f"result: {len(latencies) / args.duration:,.0f} req/s, latency p50 {p50:.2f} ms, "
        f"p90 {p90:.2f} ms, p99 {p99:.2f} ms, max {latencies.max():.2f} ms, "
        f"{len(latencies):,} calls, {errors} errors"
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
