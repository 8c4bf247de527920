"""Where served inference spends its time: per-operator totals in torch eager and onnxruntime.

    python bench/op_profile.py MODEL [--assets 20] [--seq-len 63] [--repeat 50]
        [--threads N] [--top 12] [--nodes 8] [--seed 0]

Builds, exports and feeds registry model MODEL exactly as `bench/inference.py`
does (same universe, random weights, lookback, input and session settings),
then runs each runtime ``--repeat`` times under its own profiler:

* torch eager: `torch.profiler` on the export wrapper under ``no_grad``; the
  table is ``key_averages()`` by self CPU time, per run;
* onnxruntime: the session's own profiler (``enable_profiling``); the JSON trace
  is summed per operator type (after onnxruntime's graph fusions) and, for the
  ``--nodes`` slowest nodes, per node with its input shapes.

Both profilers add overhead, so the per-run totals run above the latencies of
`bench/inference.py`; the split between operators is what this is for.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from inference import (  # bench/ is on sys.path
    N_FEATURES,
    ort_session,
    served_input,
    served_lookback,
    universe_for,
)

from momentum.contract import INPUT_NAME
from training.export import export_onnx, serving_module
from training.models import REGISTRY, build

WARMUP = 3  # unprofiled runs before the profiled ones, on each side


def onnxruntime_ops(trace: list[dict[str, Any]], runs: int, nodes: int) -> list[str]:
    """Lines of per-op-type and per-node totals (µs per run) from an onnxruntime trace."""
    by_type: Counter[str] = Counter()
    count: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    shapes: dict[str, str] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        node = event["name"].removesuffix("_kernel_time")
        by_type[op] += event["dur"]
        count[op] += 1
        by_node[f"{op} {node}"] += event["dur"]
        inputs = event["args"].get("input_type_shape", [])
        shapes[f"{op} {node}"] = " ".join(str(next(iter(i.values()))) for i in inputs)
    total = sum(by_type.values()) / runs
    lines = [f"onnxruntime kernels: {total:.1f} µs per run", "| op | µs per run | nodes |"]
    lines.append("|---|---:|---:|")
    lines += [
        f"| {op} | {t / runs:.1f} | {count[op] / runs:g} |" for op, t in by_type.most_common()
    ]
    lines += ["", f"slowest {nodes} nodes (µs per run, input shapes):"]
    lines += [
        f"  {t / runs:8.1f}  {name}  {shapes[name]}" for name, t in by_node.most_common(nodes)
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(REGISTRY))
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=63)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--top", type=int, default=12, help="torch ops to list")
    parser.add_argument("--nodes", type=int, default=8, help="onnxruntime nodes to list")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("assets", "seq_len", "repeat", "threads", "top", "nodes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")

    torch.set_num_threads(args.threads)
    universe = universe_for(args.model, args.assets)
    lookback = served_lookback(args.model, universe, args.seq_len)
    torch.manual_seed(args.seed)
    _, model = build(args.model, universe)
    model.eval()
    x = served_input(args.assets, lookback, args.seed)
    print(
        f"inputs: {args.model} @ {args.assets} assets, lookback {lookback}, {N_FEATURES} "
        f"features, batch 1; {args.repeat} profiled runs each; threads {args.threads}; "
        f"torch {torch.__version__}; seed {args.seed}"
    )

    wrapper = serving_module(args.model, model, args.assets).eval()
    with torch.no_grad():
        for _ in range(WARMUP):
            wrapper(torch.from_numpy(x))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.repeat):
                wrapper(torch.from_numpy(x))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / args.repeat
    print(f"\ntorch eager ops (self CPU): {total:.1f} µs per run")
    print("| op | µs per run | calls per run |\n|---|---:|---:|")
    for event in events[: args.top]:
        print(
            f"| {event.key} | {event.self_cpu_time_total / args.repeat:.1f} | "
            f"{event.count / args.repeat:g} |"
        )

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        graph = export_onnx(
            args.model,
            model,
            n_assets=args.assets,
            lookback=lookback,
            n_features=N_FEATURES,
            path=Path(folder) / "model.onnx",
            parity_batches=(1,),
            seed=args.seed,
        )
        session = ort_session(graph.path, args.threads, "cpu", profile_prefix=f"{folder}/ort")
        for _ in range(WARMUP + args.repeat):
            session.run(None, {INPUT_NAME: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    # the trace covers the warm-up runs too: keep what starts with the first profiled run
    runs = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e["name"] == "model_run")
    profiled = [e for e in trace if e.get("ts", 0) >= runs[WARMUP]]
    print()
    print("\n".join(onnxruntime_ops(profiled, args.repeat, args.nodes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
