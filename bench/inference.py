"""Time served inference, torch eager vs onnxruntime, for each model and universe size.

    python bench/inference.py [--models slp,dmn,tft,quantnet] [--assets 20,3103]
        [--repeat 50] [--repeat-large 5] [--rounds 5] [--seq-len 63] [--threads N]
        [--device cpu|cuda] [--max-params 50000000] [--out FILE]

At the served shape (batch 1: one date, all assets) each registry model is
built with its default (paper) hyperparameters, randomly initialised with a
fixed seed, exported to the ONNX serving contract with `training.export.export_onnx`
and then timed on one random input, end to end as the service sees it (numpy in,
numpy out, every output of the graph):

* torch eager: the contract wrapper `training.export.serving_module` under
  ``torch.no_grad()``;
* onnxruntime: an ``InferenceSession`` of the exported file.

Each side gets ``--warmup`` untimed runs, then ``--repeat`` timed runs
(``--repeat-large`` from `LARGE_ASSETS` assets up) split into ``--rounds``
blocks that alternate torch, onnxruntime, torch, ... so that a shared machine
slowing down or speeding up mid-measurement hits both sides alike. Each block is
followed by a `PAUSE_S` pause: both runtimes' idle workers spin for a while
after a run and would otherwise take the other side's cores. The table reports
the median latency in ms over all timed runs and the ratio torch / onnxruntime
("speed-up"); the progress line adds the lowest and highest per-round ratio, a
direct view of the machine's noise. The export checks parity at ``--parity-batches`` (default 1 only, to keep the large
exports cheap; "none" skips it); the progress line prints that value and the
difference of the two runtimes on the timed input. "onnx MB" is 10^6 bytes.

Fairness: torch runs with ``torch.set_num_threads(threads)`` and onnxruntime with
``intra_op_num_threads = threads`` (sequential execution, so no inter-op pool);
``--threads`` defaults to ``torch.get_num_threads()``. The sessions are the
CPU-provider sessions of `training.export.onnx_session` plus that thread count;
``--device cuda`` puts both sides on the GPU instead (and fails if either cannot),
the host-device copies of input and outputs included in both timings.

Lookback: the model's own config field where it has one (the SLP's tau = 5),
``--seq-len`` (63, "TFT-SHORT") for the sequence and panel models.

QuantNet markets: for the 20 embedded S&P 500 stocks, their GICS sectors
(`momentum.data.sectors`); for any other size, consecutive blocks of about
`MARKET_SIZE` (50) assets (``round(n / 50)`` markets, sizes differing by at most
one), standing in for real market groups of that scale.

A combination whose parameter count exceeds ``--max-params`` (counted on the
``meta`` device, nothing allocated) is listed as skipped, with its count; one
that fails is listed as failed, with the error, and the script exits with 1.
No row is ever dropped.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from momentum.contract import INPUT_NAME
from momentum.data import sectors
from training.export import export_onnx, serving_module
from training.models import REGISTRY, Universe, build, get_spec
from training.publish import lookback_of

DEFAULT_MODELS = "slp,dmn,tft,quantnet"
DEFAULT_ASSETS = "20,3103"
N_FEATURES = 8  # the default feature set (momentum.features.FeatureConfig)
LARGE_ASSETS = 1000  # from this many assets on, --repeat-large applies
MARKET_SIZE = 50  # QuantNet market size for synthetic universes
PAUSE_S = 0.2  # after each timed block: lets both runtimes' spinning workers go idle

COLUMNS = (
    "model",
    "assets",
    "lookback",
    "params",
    "onnx MB",
    "torch eager ms",
    "onnxruntime ms",
    "speed-up",
)


@dataclass
class Row:
    """One (model, universe size) measurement; `status` is "ok", "skipped: ..." or "failed: ..."."""

    model: str
    assets: int
    lookback: int
    params: int | None = None
    onnx_mb: float | None = None
    export_s: float | None = None
    parity_batch1: float | None = None
    max_abs_diff: float | None = None
    repeats: int = 0
    round_speed_ups: list[float] = field(default_factory=list)
    torch_ms: float | None = None
    onnxruntime_ms: float | None = None
    status: str = "ok"

    @property
    def speed_up(self) -> float | None:
        if self.torch_ms is None or not self.onnxruntime_ms:
            return None
        return self.torch_ms / self.onnxruntime_ms

    def cells(self) -> list[str]:
        """The Markdown table cells, in `COLUMNS` order."""
        head = [self.model, f"{self.assets:,}", str(self.lookback), _count(self.params)]
        if self.status != "ok":
            return [*head, self.status, "-", "-", "-"]
        assert self.onnx_mb is not None and self.torch_ms is not None
        assert self.onnxruntime_ms is not None and self.speed_up is not None
        return [
            *head,
            f"{self.onnx_mb:.2f}",
            f"{self.torch_ms:.4g}",
            f"{self.onnxruntime_ms:.4g}",
            f"{self.speed_up:.2f}x",
        ]


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def human_count(n: int) -> str:
    """A parameter count in a few digits: 385147463 -> '385M', 16020 -> '16k', 950 -> '950'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def universe_for(name: str, n_assets: int) -> Universe:
    """The universe a model is benchmarked on; markets matter only to QuantNet-like models.

    Twenty assets are the embedded S&P 500 stocks with their GICS sectors; other
    sizes get synthetic tickers and consecutive markets of about `MARKET_SIZE`.
    """
    needs_markets = "markets" in get_spec(name).config_fields
    embedded = sectors("sp500")  # ticker -> sector, in the price file's ticker order
    if n_assets == len(embedded):
        market_of = embedded if needs_markets else None
        return Universe.from_market_map(list(embedded), N_FEATURES, market_of)
    tickers = tuple(f"A{i:04d}" for i in range(n_assets))
    n_markets = max(1, round(n_assets / MARKET_SIZE))
    blocks = np.array_split(np.arange(n_assets), n_markets)  # sizes differ by at most one
    return Universe(tickers, N_FEATURES, tuple(tuple(int(i) for i in b) for b in blocks))


def served_lookback(name: str, universe: Universe, seq_len: int) -> int:
    """The served window: spatio-temporal models fix their own, sequence models take `seq_len`."""
    return lookback_of(name, get_spec(name).config(universe), {}, seq_len)


def served_input(n_assets: int, lookback: int, seed: int) -> np.ndarray:
    """One seeded standard-normal contract batch, ``(1, n_assets, lookback, N_FEATURES)``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, n_assets, lookback, N_FEATURES), dtype=np.float32)


def count_parameters(name: str, universe: Universe) -> int:
    """Parameters of model `name` on `universe`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        _, model = build(name, universe)
    return sum(p.numel() for p in model.parameters())


def times_ms(call: Callable[[], object], repeat: int) -> list[float]:
    """Wall time of each of `repeat` calls of `call`, in ms."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


@dataclass(frozen=True)
class Timing:
    """Medians of two interleaved timings and the spread of their per-round ratio."""

    first_ms: float
    second_ms: float
    round_ratios: tuple[float, ...]


def interleaved(
    first: Callable[[], object],
    second: Callable[[], object],
    *,
    warmup: int,
    repeat: int,
    rounds: int,
    pause: float = 0.0,
) -> Timing:
    """Time `first` and `second` in alternating blocks, `repeat` timed runs each in all.

    `rounds` blocks per side (fewer when `repeat` is smaller), each of about
    ``repeat / rounds`` runs, ``first`` then ``second``, with `pause` seconds
    after every block; `warmup` untimed runs of each before the first block.
    """
    for _ in range(warmup):
        first()
    for _ in range(warmup):
        second()
    rounds = max(1, min(rounds, repeat))
    sizes = [len(b) for b in np.array_split(np.arange(repeat), rounds)]
    all_first: list[float] = []
    all_second: list[float] = []
    ratios = []
    for size in sizes:
        block_first = times_ms(first, size)
        time.sleep(pause)
        block_second = times_ms(second, size)
        time.sleep(pause)
        ratios.append(statistics.median(block_first) / statistics.median(block_second))
        all_first += block_first
        all_second += block_second
    return Timing(statistics.median(all_first), statistics.median(all_second), tuple(ratios))


def ort_session(
    path: Path, threads: int, device: str, *, profile_prefix: str | None = None
):  # -> onnxruntime.InferenceSession
    """`training.export.onnx_session` with an intra-op thread count, or on CUDA; with
    `profile_prefix`, onnxruntime's profiler writes its trace there (bench/op_profile.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    # onnxruntime quietly falls back to CPU when the CUDA provider cannot load
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime could not use CUDA, got {session.get_providers()}")
    return session


def measure(name: str, n_assets: int, args: argparse.Namespace) -> Row:
    """Build, export and time model `name` on `n_assets` assets; never raises."""
    universe = universe_for(name, n_assets)
    lookback = served_lookback(name, universe, args.seq_len)
    row = Row(name, n_assets, lookback)
    try:
        row.params = count_parameters(name, universe)
        if row.params > args.max_params:
            row.status = f"skipped: {human_count(row.params)} parameters"
            return row
        torch.manual_seed(args.seed)
        _, model = build(name, universe)
        model.eval()
        with tempfile.TemporaryDirectory(prefix="bench-inference-") as folder:
            t0 = time.perf_counter()
            graph = export_onnx(
                name,
                model,
                n_assets=n_assets,
                lookback=lookback,
                n_features=N_FEATURES,
                path=Path(folder) / "model.onnx",
                parity_batches=args.parity_batches,
                seed=args.seed,
            )
            row.export_s = time.perf_counter() - t0
            row.onnx_mb = graph.size_bytes / 1e6
            row.parity_batch1 = graph.parity_max_abs_diff.get("1")
            gc.collect()  # the exporter's own session must not hold threads while torch runs

            device = torch.device(args.device)
            wrapper = serving_module(name, model, n_assets).eval().to(device)
            x = served_input(n_assets, lookback, args.seed)

            def run_torch() -> list[np.ndarray]:
                with torch.no_grad():
                    out = wrapper(torch.from_numpy(x).to(device))
                out = out if isinstance(out, tuple) else (out,)
                return [o.cpu().numpy() for o in out]  # .cpu() also waits for the GPU

            row.repeats = args.repeat_large if n_assets >= LARGE_ASSETS else args.repeat
            session = ort_session(graph.path, args.threads, args.device)

            def run_ort() -> list[np.ndarray]:
                return session.run(None, {INPUT_NAME: x})

            timing = interleaved(
                run_torch,
                run_ort,
                warmup=args.warmup,
                repeat=row.repeats,
                rounds=args.rounds,
                pause=PAUSE_S,
            )
            row.torch_ms, row.onnxruntime_ms = timing.first_ms, timing.second_ms
            row.round_speed_ups = list(timing.round_ratios)
            row.max_abs_diff = float(np.abs(run_ort()[0] - run_torch()[0]).max())
    except Exception as error:  # a benchmark reports a broken row and carries on
        row.status = f"failed: {type(error).__name__}: {error}".replace("|", "/").splitlines()[0]
    finally:
        gc.collect()  # large models: free one before building the next
    return row


def progress_line(row: Row) -> str:
    head = f"{row.model} @ {row.assets:,} assets, lookback {row.lookback}"
    if row.status != "ok":
        return f"{head}: {_count(row.params)} params: {row.status}"
    parity = "not checked" if row.parity_batch1 is None else f"{row.parity_batch1:.2e}"
    return (
        f"{head}: {row.params:,} params, onnx {row.onnx_mb:.2f} MB, export {row.export_s:.1f} s, "
        f"export parity (batch 1) {parity}, max |torch - onnxruntime| here "
        f"{row.max_abs_diff:.2e}; median of {row.repeats}: torch eager {row.torch_ms:.4g} ms, "
        f"onnxruntime {row.onnxruntime_ms:.4g} ms, speed-up {row.speed_up:.2f}x "
        f"({len(row.round_speed_ups)} rounds: {min(row.round_speed_ups):.2f}x to "
        f"{max(row.round_speed_ups):.2f}x)"
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "device": args.device,
        "seed": args.seed,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "repeat_large": args.repeat_large,
        "rounds": args.rounds,
        "large_from_assets": LARGE_ASSETS,
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def header_line(info: dict[str, Any]) -> str:
    gpu = f", gpu {info['gpu']}" if "gpu" in info else ""
    return (
        f"inputs: torch {info['torch']}, onnxruntime {info['onnxruntime']}, python "
        f"{info['python']}; device {info['device']}{gpu}; threads {info['threads']} "
        f"(torch.set_num_threads = onnxruntime intra_op_num_threads); {info['cpus']} cpus "
        f"({info['cpu']}); warm-up {info['warmup']}, median of {info['repeat']} runs "
        f"({info['repeat_large']} from {info['large_from_assets']:,} assets) in "
        f"{info['rounds']} alternating rounds; batch 1, "
        f"{N_FEATURES} features, seed {info['seed']}; {info['date']}"
    )


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {unknown or [text]}; choose from {sorted(REGISTRY)}"
        )
    return names


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _batches(text: str) -> tuple[int, ...]:
    """Parity batch sizes; "none" skips the export's parity check (quick runs only)."""
    return () if text.strip().lower() in ("", "none") else tuple(_positive_ints(text))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_names, default=_names(DEFAULT_MODELS))
    parser.add_argument("--assets", type=_positive_ints, default=_positive_ints(DEFAULT_ASSETS))
    parser.add_argument("--repeat", type=_positive_int, default=50, help="timed runs")
    parser.add_argument(
        "--repeat-large",
        type=_positive_int,
        default=5,
        help=f"timed runs from {LARGE_ASSETS} assets on",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=5,
        help="alternating torch / onnxruntime blocks the timed runs are split into",
    )
    parser.add_argument(
        "--seq-len", type=_positive_int, default=63, help="lookback of dmn, tft, quantnet"
    )
    parser.add_argument("--threads", type=_positive_int, default=torch.get_num_threads())
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--max-params", type=_positive_int, default=50_000_000)
    parser.add_argument(
        "--parity-batches",
        type=_batches,
        default=(1,),
        help='batch sizes of the export parity check, or "none"',
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the results (.json: JSON, else Markdown)"
    )
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.device == "cuda":
        import onnxruntime as ort

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            parser.error("--device cuda: onnxruntime has no CUDAExecutionProvider")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        info = environment(args)
        header = header_line(info)
        print(header, flush=True)
        rows = []
        for name in args.models:
            for n_assets in args.assets:
                row = measure(name, n_assets, args)
                print(progress_line(row), flush=True)
                rows.append(row)
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a longer process

    table = markdown_table(rows)
    command = "python bench/inference.py " + shlex.join(argv)
    print()
    print(header)
    print()
    print(table)
    print()
    print(f"command: {command.strip()}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix.lower() == ".json":
            payload = {
                "inputs": info,
                "command": command.strip(),
                "rows": [{**asdict(r), "speed_up": r.speed_up} for r in rows],
            }
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
        else:
            args.out.write_text(f"{header}\n\n{table}\n\ncommand: `{command.strip()}`\n")
    return 1 if any(r.status.startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
