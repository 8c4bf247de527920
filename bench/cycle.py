"""Measure the live path at a universe size: ingest, cycles, cold start, replay, export.

    python bench/cycle.py [--assets 20,500,3103] [--sessions 5000] [--replay 249]
        [--warm 5] [--export-models dmn] [--reuse] [--trials 1] [--epochs 1]
        [--database-url URL] [--out runs/bench-cycle]

For each universe size N (each in a process of its own, so that its peak RSS is
its own) the script

1. builds a synthetic universe (`momentum.data.synthetic_prices`) of N assets on
   the last ``--sessions`` XNYS sessions up to 2022-12-30 (the ingest accepts
   sessions only) and writes it as Parquet;
2. exports each of ``--export-models`` with ``momentum-train export --model M
   --data prices.parquet --end E --trials 1 --epochs 1`` in a child process
   (E: the last session before the replayed ones), reporting its wall time and
   peak RSS (``wait4``), and promotes the first one;
3. ingests the history (every session before the cycles below) into a fresh
   store (a SQLite file, or a new schema of ``--database-url``): closes/s;
4. runs a *cold start*: the first cycle, with no stored feature state, which
   rebuilds it from the whole stored history;
5. runs ``--warm`` *warm sessions* through `service.app.SignalService.run_session`
   (the service's whole day: the cycle, the paper ledger, the metrics), one
   session each after ingesting its closes; reports the median cycle split by
   phase (read: stored state and closes; features: cleaning, advancing and
   serialising the state; inference; weights; write: one transaction) and the
   median session end to end;
6. times one feature-parity check (the full-history recompute the service runs
   every ``MOMENTUM_PARITY_EVERY`` cycles, off in the sessions above);
7. ingests ``--replay`` more sessions and replays them batched
   (`SignalService.run_sessions`, ledger and metrics included): sessions/s;
8. prints the process's peak RSS (the bulk load of step 3 runs in a child
   process and reports its own).

Every figure is printed with its inputs; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

# this checkout's packages, not an installed copy: a bench measures the code beside it
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

END = "2022-12-30"


def _sessions(n: int) -> pd.DatetimeIndex:
    from service.calendar import get_calendar

    cal = get_calendar("XNYS")
    sessions = cal.sessions_in_range("1990-01-02", END)
    if len(sessions) < n:
        raise SystemExit(f"--sessions {n}: XNYS has only {len(sessions)} sessions up to {END}")
    return pd.DatetimeIndex(sessions[-n:].tz_localize(None), name="date")


def _universe(n_assets: int, n_sessions: int, seed: int) -> tuple[pd.DataFrame, dict[str, str]]:
    from momentum.data import synthetic_prices

    markets = max(1, min(58, n_assets // 50))  # QuantNet's 58 markets at 3,103 stocks
    panel = synthetic_prices(n_assets, n_sessions, n_markets=markets, seed=seed)
    prices = panel.prices.set_axis(_sessions(n_sessions), axis=0)
    return prices, panel.markets


def _child(command: list[str], *, capture: bool = False) -> tuple[float, float, int, str]:
    """Run a command; return (wall seconds, peak RSS in GB, exit code, stdout if captured)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, text=True)
    out = process.stdout.read() if process.stdout is not None else ""
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1e6, process.returncode, out


def _engine(url: str | None, out: Path):
    """A fresh store: a new SQLite file, or a new schema of the PostgreSQL database."""
    import sqlalchemy as sa

    from service import store

    if url is None:
        path = out / "momentum.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return store.create_engine(f"sqlite:///{path}"), "sqlite", lambda: None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = store.create_engine(
        sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    )

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")

    return engine, "postgresql", drop


def _service(engine, registry: Path, name: str, data: Path):
    """The service as `momentum-serve run` builds it, on this store, with its metrics.

    The parity check is off here (timed on its own): with it on, the first session after
    start would carry a full-history recompute.
    """
    from service.app import SignalService
    from service.config import Settings
    from service.metrics import ServiceMetrics

    settings = Settings(
        registry_dir=registry,
        model_name=name,
        universe=str(data),
        parity_every=0,
        _env_file=None,
    )
    return SignalService(settings, engine=engine, metrics=ServiceMetrics())


def _ingest(engine, prices: pd.DataFrame) -> tuple[int, float]:
    from service.ingest import ingest_closes, panel_rows

    rows = panel_rows(prices)
    start = time.perf_counter()
    result = ingest_closes(
        engine,
        rows,
        universe=list(prices.columns),
        calendar="XNYS",
        today=END,
        source="bench",
    )
    seconds = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"ingest rejected: {result.rejections[:3]}")
    return len(rows), seconds


def run_one(args: argparse.Namespace, n_assets: int) -> None:
    from momentum.registry import promote
    from service.cycle import check_feature_parity, run_cycle
    from service.model import load_model

    out = args.out / f"n{n_assets}"
    out.mkdir(parents=True, exist_ok=True)
    t = args.sessions
    print(
        f"== {n_assets} assets x {t} XNYS sessions to {END}; python {platform.python_version()}, "
        f"{os.cpu_count()} cpus",
        flush=True,
    )
    start = time.perf_counter()
    prices, markets = _universe(n_assets, t, args.seed)
    data = out / "prices.parquet"
    prices.to_parquet(data)
    pd.DataFrame({"ticker": list(markets), "sector": list(markets.values())}).to_csv(
        out / "sectors.csv", index=False
    )
    print(f"universe: {prices.notna().sum().sum():,} closes, {time.perf_counter() - start:.1f} s")
    n_cycles = 1 + args.warm + args.replay
    history_end = prices.index[-n_cycles - 1]
    registry = out / "registry"
    name = None
    for model in args.export_models:
        shutil.rmtree(out / f"search-{model}", ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "training.cli",
            "export",
            "--model",
            model,
            "--data",
            str(data),
            "--end",
            f"{history_end:%Y-%m-%d}",
            "--trials",
            str(args.trials),
            "--epochs",
            str(args.epochs),
            "--registry",
            str(registry),
            "--out",
            str(out / f"search-{model}"),
            "--name",
            f"bench-{model}",
        ]
        if model in ("quantnet", "no_transfer"):
            command += ["--sectors", str(out / "sectors.csv")]
        seconds, rss, code, _ = _child(command)
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(
            f"export {model}: {status}, {seconds:.1f} s wall, peak RSS {rss:.2f} GB "
            f"(--trials {args.trials} --epochs {args.epochs}, train + export + checks)",
            flush=True,
        )
        if code == 0 and name is None:
            name = f"bench-{model}"
    if name is None and args.reuse:
        found = sorted(p.name for p in registry.glob("bench-*") if p.is_dir())
        name = found[0] if found else None
        print(f"reusing {name} from {registry} (no export timed)")
    if name is None:
        print("no model exported: no cycle figures")
        return
    from momentum.registry import list_versions

    promote(registry, name, list_versions(registry, name)[-1])
    model = load_model(registry, name, tickers=list(prices.columns), device="cpu")

    engine, backend, drop = _engine(args.database_url, out)
    try:
        # the bulk load in a child process: its peak RSS is reported apart from the cycles'
        url = engine.url.render_as_string(hide_password=False)
        command = [sys.executable, __file__, "--ingest-into", url, "--ingest-file", str(data)]
        command += ["--ingest-end", f"{history_end:%Y-%m-%d}"]
        _, rss, code, out = _child(command, capture=True)
        if code != 0:
            raise SystemExit(f"ingest failed (exit {code})")
        closes, seconds = int(out.split()[-2]), float(out.split()[-1])
        print(
            f"ingest ({backend}): {closes:,} closes in {seconds:.1f} s = "
            f"{closes / seconds:,.0f} closes/s (ingest_closes: validate and store; the loading "
            f"process's peak RSS {rss:.2f} GB)",
            flush=True,
        )
        cycle_days = prices.index[-n_cycles:]
        _ingest(engine, prices.loc[[cycle_days[0]]])
        cold = run_cycle(engine, model, cycle_days[0])
        if cold.status != "succeeded":
            raise SystemExit(f"cold start {cold.status}: {cold.error}")
        print(
            f"cold start ({len(prices.loc[:history_end]) + 1} sessions stored, state rebuilt): "
            f"{cold.seconds:.2f} s; by phase: {_phases(cold.phases)}",
            flush=True,
        )
        service = _service(engine, registry, name, data)
        service.refresh_model()  # the model's load and warm-up are not a session's cost
        warm, sessions, ingest_day = [], [], []
        for day in cycle_days[1 : 1 + args.warm]:
            ingest_day.append(_ingest(engine, prices.loc[[day]])[1])
            start = time.perf_counter()
            result = service.run_session(day)
            sessions.append(time.perf_counter() - start)
            if result.status != "succeeded" or result.cold_start:
                raise SystemExit(f"warm cycle {day:%Y-%m-%d}: {result.status} {result.error}")
            warm.append(result)
        phases = {k: statistics.median(r.phases[k] for r in warm) for k in warm[0].phases}
        print(
            f"warm cycle (median of {len(warm)}): "
            f"{statistics.median(r.seconds for r in warm) * 1e3:.1f} ms end to end; by phase: "
            f"{_phases(phases)}; the day's ingest {statistics.median(ingest_day) * 1e3:.1f} ms",
            flush=True,
        )
        print(
            f"service session (median of {len(sessions)}; cycle + paper ledger + metrics): "
            f"{statistics.median(sessions) * 1e3:.1f} ms",
            flush=True,
        )
        start = time.perf_counter()
        check_feature_parity(engine, model, warm[-1])
        print(
            f"feature parity check (full-history recompute): "
            f"{time.perf_counter() - start:.2f} s, max abs difference {warm[-1].parity_max_abs}",
            flush=True,
        )
        replay_days = cycle_days[1 + args.warm :]
        if len(replay_days):
            _ingest(engine, prices.loc[replay_days])
            start = time.perf_counter()
            results = service.run_sessions(replay_days)
            seconds = time.perf_counter() - start
            ok = sum(r.status == "succeeded" for r in results)
            print(
                f"replay (batched, ledger and metrics included): {ok}/{len(replay_days)} "
                f"sessions in {seconds:.2f} s = {len(replay_days) / seconds:.1f} sessions/s",
                flush=True,
            )
    finally:
        drop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS of this process (cycles, no export): {rss:.2f} GB", flush=True)


def _phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in phases.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default="20,500,3103", help="comma-separated universe sizes")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--replay", type=int, default=249, help="sessions replayed batched")
    parser.add_argument("--warm", type=int, default=5, help="warm cycles timed one by one")
    parser.add_argument("--export-models", default="dmn", help="comma-separated; first serves")
    parser.add_argument(
        "--reuse", action="store_true", help="serve a model an earlier run exported (no export)"
    )
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cycle"))
    parser.add_argument("--seed", type=int, default=0)
    # internal: the child process that bulk-loads a store
    parser.add_argument("--ingest-into", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ingest-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ingest-end", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_into:
        from service import store

        prices = pd.read_parquet(args.ingest_file).loc[: args.ingest_end]
        closes, seconds = _ingest(store.create_engine(args.ingest_into), prices)
        print(closes, seconds)
        return 0
    args.export_models = [m for m in args.export_models.split(",") if m]
    sizes = [int(n) for n in args.assets.split(",") if n]
    if len(sizes) == 1:
        run_one(args, sizes[0])
        return 0
    code = 0
    for n in sizes:  # one process per size: each peak RSS is that size's own
        command = [sys.executable, __file__, *_forward(sys.argv[1:]), "--assets", str(n)]
        code |= subprocess.call(command)
    return code


def _forward(argv: list[str]) -> list[str]:
    """The command line without --assets (and its value)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--assets":
            skip = True
        elif not arg.startswith("--assets="):
            out.append(arg)
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
