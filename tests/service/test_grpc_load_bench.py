"""bench/grpc_load.py runs end to end against a real server and prints its figures."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_load_bench_prints_inputs_and_rates(served_run, capsys, monkeypatch):
    # importable by name: the spawned client processes import the module again
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("grpc_load")
    argv = ["--clients", "1", "--duration", "0.5", "--warmup", "0"]
    argv += ["--registry", str(served_run["registry"]), "--name", served_run["name"]]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 client processes" in out
    found = re.search(
        r"result: ([\d,]+) req/s, latency p50 ([\d.]+) ms.* ([\d,]+) calls, 0 errors", out
    )
    assert found, out
    rate, calls = (int(found.group(i).replace(",", "")) for i in (1, 3))
    assert calls > 0 and rate == round(calls / 0.5)


def test_load_bench_with_a_read_replica_on_the_shared_port_and_idle_subscribers(
    served_run, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("grpc_load")
    argv = ["--clients", "1", "--duration", "1", "--warmup", "0", "--servers", "2"]
    argv += ["--streams", "40", "--registry", str(served_run["registry"])]
    argv += ["--name", served_run["name"]]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 server process(es)" in out and "40 idle subscribers" in out
    assert re.search(r"result: [\d,]+ req/s, .* [\d,]+ calls, 0 errors", out), out
    assert re.search(r"cpu: servers \d+ us/call, clients \d+ us/call", out), out
    # every subscriber stayed open (on either process: the kernel spreads the connections)
    assert "streams: 40 of 40 idle subscribers open at the end" in out, out
