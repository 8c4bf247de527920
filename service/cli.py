"""``momentum-serve``: the daily signal service.

Commands: ``run`` (scheduler: a cycle after every session close, catching up
at start), ``cycle`` (one session now), ``ingest FILE``, ``replay`` (feeds the
embedded data session by session through ingest -> cycle -> paper ledger, as
a live feed would), ``positions``, ``check-model``. Settings come from
``MOMENTUM_*`` environment variables or a ``.env`` file (README, Settings).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # imported lazily at run time: `--help` stays fast
    import grpc

    from service.app import SignalService
    from service.config import Settings
    from service.cycle import CycleResult
    from service.model import LoadedModel

__all__ = ["main"]

log = logging.getLogger("momentum.serve")


class CommandError(Exception):
    """A command that cannot do what was asked; printed without a traceback (exit 1)."""


def _service(*, chatty: bool = False, **options: Any) -> SignalService:
    """The service from the settings; one-shot commands log warnings only unless
    MOMENTUM_LOG_LEVEL says otherwise (their own output is the report)."""
    from service.app import SignalService
    from service.config import env_var, load_settings

    settings = load_settings()
    level = settings.log_level_number
    if not chatty and env_var("log_level") not in os.environ:
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return SignalService(settings, **options)


def _model(service: SignalService) -> LoadedModel:
    # a refusal is this command's error, printed once below: not also as the holder's log line
    holder_log = logging.getLogger("service.model")
    level = holder_log.level
    holder_log.setLevel(logging.CRITICAL)
    try:
        outcome = service.holder.refresh()
    finally:
        holder_log.setLevel(level)
    if outcome.model is None:
        raise CommandError(
            f"no model to serve: {outcome.refused} (registry "
            f"{service.settings.registry_dir.resolve()}, MOMENTUM_REGISTRY_DIR; export one with "
            "`momentum-train export` and `momentum-train promote` it, or set "
            "MOMENTUM_MODEL_VERSION)"
        )
    return outcome.model


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or pd.isna(value) else format(value, spec)


def _cycle_line(result: CycleResult, ledger_row: argparse.Namespace | None = None) -> str:
    line = f"{result.as_of:%Y-%m-%d} {result.status:<9}"
    if result.status == "succeeded":
        w = result.positions["weight"]
        line += f" long {int((w > 0).sum()):>3} short {int((w < 0).sum()):>3}"
        line += f" gross {_fmt(w.abs().sum(), '.3f')}"
        if result.n_stale:
            line += f" stale {result.n_stale}"
    else:
        line += f" {result.error}"
    if ledger_row is not None:
        line += (
            f" | paper {ledger_row.date:%Y-%m-%d}: net {ledger_row.net_return:+.4%}"
            f" turnover {ledger_row.turnover:.3f} equity {ledger_row.equity:.4f}"
        )
    return line


def _summary_lines(service: SignalService, name: str) -> list[str]:
    from service.paper import ledger_summary

    s = ledger_summary(service.engine, name)
    if s.days == 0:
        return ["paper ledger: no marked days yet"]
    return [
        f"paper ledger {name}: {s.days} days {s.first_date:%Y-%m-%d}..{s.last_date:%Y-%m-%d}, "
        f"cost {service.settings.cost_bps:g} bps",
        f"  PnL (total return) {s.total_return:+.2%}   Sharpe {_fmt(s.sharpe, '.2f')}   "
        f"max drawdown {_fmt(s.max_drawdown, '.2%')}   rolling {s.window}-session Sharpe "
        f"{_fmt(s.rolling_sharpe, '.2f')}",
    ]


def _ledger_row(ledger: pd.DataFrame) -> argparse.Namespace | None:
    if ledger.empty:
        return None
    row = ledger.iloc[-1]
    return argparse.Namespace(
        date=pd.Timestamp(ledger.index[-1]),
        net_return=float(row["net_return"]),
        turnover=float(row["turnover"]),
        equity=float(row["equity"]),
    )


def _replay(args: argparse.Namespace) -> int:
    from service import store
    from service.ingest import feed_panel, panel_rows, replay_rows
    from service.paper import update_ledger

    service = _service()
    model = _model(service)
    start = pd.Timestamp(args.start)
    # the embedded data's index levels ride along (extended-feature models read them)
    index = service.index_ticker if service.universe_is_embedded else None
    prices = feed_panel(service.settings.universe, index=index)
    before = prices.loc[: start - pd.Timedelta(days=1)]
    stored = store.closes_dates(service.engine, end=start - pd.Timedelta(days=1))
    if len(stored) == 0 and len(before):
        print(
            f"loading history {before.index[0]:%Y-%m-%d}..{before.index[-1]:%Y-%m-%d} "
            f"({before.notna().sum().sum():,} closes) ...",
            flush=True,
        )
        result = service.ingest(panel_rows(before), source="replay-history")
        if not result.ok:
            raise CommandError(f"history rejected: {result.rejections[:5]}")
    print(
        f"replaying {service.settings.universe} from {start:%Y-%m-%d} with {model.name} "
        f"{model.version} on {model.provider}",
        flush=True,
    )
    # the range's closes in one batch, then its sessions' cycles batched (run_sessions):
    # features over the range in one pass, inference over many sessions per model call,
    # each session still stored in its own transaction, in order
    feed = list(replay_rows(start, args.end, name=service.settings.universe, index=index))
    rows = pd.concat([r for _, r in feed], ignore_index=True)
    ingested = service.ingest(rows, source="replay")
    if not ingested.ok:
        first = ingested.rejections[0]
        raise CommandError(f"{first.date}: closes rejected: {ingested.rejections[:5]}")
    days = [day for day, _ in feed]
    done = set(store.positions_dates(service.engine, model.name, model.version))
    for day in days:
        if day in done:
            print(f"{day:%Y-%m-%d} done earlier", flush=True)

    def show(result: CycleResult) -> None:
        ledger = store.read_ledger(service.engine, model.name, start=result.as_of, end=result.as_of)
        print(_cycle_line(result, _ledger_row(ledger)), flush=True)

    clock = time.perf_counter()
    todo = [d for d in days if d not in done]
    service.run_sessions(todo, each=show)
    if todo:
        seconds = time.perf_counter() - clock
        print(
            f"{len(todo)} sessions in {seconds:.1f} s ({len(todo) / seconds:.1f} sessions/s)",
            flush=True,
        )
    else:
        update_ledger(
            service.engine,
            model.name,
            cost_bps=service.settings.cost_bps,
            calendar=service.calendar,
        )
    for line in _summary_lines(service, model.name):
        print(line)
    return 0


def _cycle(args: argparse.Namespace) -> int:
    from service import store

    service = _service()
    _model(service)
    day = pd.Timestamp(args.date) if args.date else None
    if day is None:
        day = store.newest_close_date(service.engine)
        if day is None:
            raise CommandError("no closes stored: ingest some first (momentum-serve ingest FILE)")
    result = service.run_session(day)
    print(_cycle_line(result))
    return 0 if result.status == "succeeded" else 1


def _ingest(args: argparse.Namespace) -> int:
    service = _service()
    result = service.ingest_file(args.file, correction=args.correction)
    if not result.ok:
        for r in result.rejections[:50]:
            where = f"row {r.row}" if r.row >= 0 else "file"
            print(f"rejected {where} {r.date or ''} {r.ticker or ''}: {r.reason}", file=sys.stderr)
        if len(result.rejections) > 50:
            print(f"... and {len(result.rejections) - 50} more", file=sys.stderr)
        print(
            f"{args.file}: nothing stored ({len(result.rejections)} rejected rows)", file=sys.stderr
        )
        return 1
    print(
        f"{args.file}: {result.accepted} stored, {result.unchanged} unchanged, "
        f"{result.corrected} corrected"
    )
    return 0


def _target(settings: Settings, address: str | None) -> str:
    """``host:port`` of the service (a wildcard bind address means this host)."""
    host = settings.grpc_host if settings.grpc_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return address or f"{host}:{settings.grpc_port}"


def _channel(settings: Settings, address: str | None) -> grpc.Channel:
    """A channel to the service: plaintext, or TLS trusting MOMENTUM_TLS_CERT."""
    import grpc

    target = _target(settings, address)
    if settings.tls_cert is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates=settings.tls_cert.read_bytes())
    return grpc.secure_channel(target, credentials)


def _positions(args: argparse.Namespace) -> int:
    """A thin gRPC client: GetPositions from the running service, printed as a table."""
    import grpc

    from service._proto import signals_pb2, signals_pb2_grpc
    from service.config import load_settings

    settings = load_settings()
    token = settings.grpc_token.get_secret_value() if settings.grpc_token else None
    metadata = [("authorization", f"Bearer {token}")] if token else None
    request = signals_pb2.GetPositionsRequest(as_of=args.date or "", model_name=args.model or "")
    with _channel(settings, args.address) as channel:
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        try:
            reply = stub.GetPositions(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as err:
            problem = f"{err.code().name}: {err.details()}"
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                problem = (
                    f"no service answers at {_target(settings, args.address)} ({problem}); "
                    "start one with `momentum-serve run` (same MOMENTUM_* settings), or point "
                    "--address / MOMENTUM_GRPC_HOST, MOMENTUM_GRPC_PORT at the running one"
                )
            raise CommandError(problem) from None
    print(
        f"{reply.model_name} {reply.model_version} as of {reply.as_of} (closes to "
        f"{reply.data_cutoff}, run {reply.run_id})" + (" STALE" if reply.stale else "")
    )
    print(f"{'ticker':<8} {'signal':>8} {'ann. vol':>9} {'weight':>9} {'previous':>9} stale")
    for a in reply.assets:
        signal = a.signal if a.HasField("signal") else None
        vol = a.annualised_vol if a.HasField("annualised_vol") else None
        weight = a.target_weight if a.HasField("target_weight") else None
        print(
            f"{a.ticker:<8} {_fmt(signal, '+.3f'):>8} {_fmt(vol, '.3f'):>9} "
            f"{_fmt(weight, '+.4f'):>9} {a.previous_weight:>+9.4f} {'yes' if a.stale else ''}"
        )
    return 0


def _check_model(args: argparse.Namespace) -> int:
    service = _service()
    model = _model(service)
    m = model.manifest
    print(
        f"{m.name} {m.version}: {m.model} ({m.layout}), {m.n_assets} assets, lookback "
        f"{m.lookback}, features {m.features.version} {m.features.names}"
    )
    print(
        f"  trained {m.training_window.train_start}..{m.training_window.valid_end}, "
        f"metrics {m.metrics}"
    )
    print(
        f"  onnx sha256 {m.onnx.sha256[:16]}... opset {m.onnx.opset}, outputs "
        f"{[o.name for o in m.onnx.outputs]}, parity {m.parity_max_abs_diff}"
    )
    print(f"  provider {model.provider}, warm-up {model.warmup_seconds * 1e3:.1f} ms: OK")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Scheduler, gRPC server and metrics endpoint together, until SIGTERM / Ctrl-C."""
    from service.grpc_server import GrpcServer, InsecureBind
    from service.metrics import ServiceMetrics
    from service.scheduler import CycleScheduler

    service = _service(chatty=True, read_only=args.reader)
    settings = service.settings
    metrics = service.metrics = ServiceMetrics(per_ticker=settings.per_ticker_metrics)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:  # built first: an insecure bind is refused before anything listens
        server = GrpcServer(service, metrics=metrics)
    except InsecureBind as err:
        raise CommandError(str(err)) from None
    metrics.observe_insecure(server.insecure)
    http, _ = metrics.start_http_server(settings.metrics_port, settings.metrics_host)
    server.start()
    log.info(
        "gRPC on %s:%d, metrics on %s:%d/metrics",
        server.host,
        server.port,
        settings.metrics_host,
        settings.metrics_port,
    )
    outcome = service.refresh_model()
    service.prime_metrics()
    if outcome.model is None:
        log.error(
            "no model to serve yet (%s); health stays NOT_SERVING until one is promoted",
            outcome.refused,
        )
    scheduler, halt_watch = None, None
    try:
        if args.reader:
            # a read replica: no scheduler; cycles stored by the writer reach its streams
            halt_watch = service.watch_store()
            log.info("read replica: serving the store, no scheduler")
        else:
            # a promoted version is served at once, not at the next cycle
            halt_watch = service.watch_model()
            scheduler = CycleScheduler(
                service.run_session,
                service.pending_sessions,
                settings=settings,
                misfire_grace_hours=settings.misfire_grace_hours,
                run_sessions=service.run_sessions,
            )
            scheduler.start()  # catches up pending sessions first
            log.info("next cycle at %s", scheduler.next_fire_time)
        stop.wait()
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        if halt_watch is not None:
            halt_watch()
        server.stop(grace=args.grace)
        http.shutdown()
        service.engine.dispose()
    log.info("stopped")
    return 0


def settings_table() -> str:
    """The settings as a Markdown table (variable, default, meaning): the README's table."""
    from service.config import Settings, env_var

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{env_var(name)}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"


def _settings(args: argparse.Namespace) -> int:
    print(settings_table(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="momentum-serve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run",
        help="the service: gRPC server, metrics endpoint and the daily scheduler",
        description="Start the gRPC server (MOMENTUM_GRPC_HOST:MOMENTUM_GRPC_PORT) and the "
        "Prometheus endpoint (:MOMENTUM_METRICS_PORT/metrics), load the model, catch up "
        "pending sessions, then run a cycle after every session close (MOMENTUM_CALENDAR, "
        "MOMENTUM_CYCLE_DELAY_MINUTES) until SIGTERM or Ctrl-C.",
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds open calls get at shutdown (10)"
    )
    p.add_argument(
        "--reader",
        action="store_true",
        help="read replica: gRPC and metrics over a shared PostgreSQL store, no scheduler; "
        "IngestCloses and RunCycle are refused (FAILED_PRECONDITION)",
    )
    p = sub.add_parser("cycle", help="run one session's cycle now")
    p.add_argument("--date", default=None, help="session (default: the newest with closes)")
    p = sub.add_parser("ingest", help="validate and store the closes of a file")
    p.add_argument(
        "file",
        help="CSV or Parquet, wide (date + one column per ticker) or long (date, ticker, close)",
    )
    p.add_argument(
        "--correction", action="store_true", help="overwrite stored closes that differ (logged)"
    )
    p = sub.add_parser(
        "replay",
        help="feed the embedded data session by session",
        description="Feeds the universe's data (the embedded S&P 500 set by "
        "default) session by session through ingest -> cycle -> paper ledger. "
        "History before --from is loaded first when the store has none. "
        "Rerunning resumes: sessions with positions are not recomputed.",
    )
    p.add_argument("--from", dest="start", required=True, help="first session to replay")
    p.add_argument("--to", dest="end", default=None, help="last session (default: the end)")
    p = sub.add_parser(
        "positions",
        help="fetch positions from the running service over gRPC",
        description="GetPositions from the service at MOMENTUM_GRPC_HOST:MOMENTUM_GRPC_PORT "
        "(bearer token and TLS from the same settings), printed as a table.",
    )
    p.add_argument("--date", default=None, help="as-of date (default: latest)")
    p.add_argument("--model", default=None, help="model name (default: the served model)")
    p.add_argument("--address", default=None, help="host:port (default: from the settings)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    sub.add_parser("check-model", help="load and check the served model, print its manifest")
    sub.add_parser("settings", help="print every MOMENTUM_* setting with its default and meaning")
    args = parser.parse_args(argv)
    handlers = {
        "run": _run,
        "cycle": _cycle,
        "ingest": _ingest,
        "replay": _replay,
        "positions": _positions,
        "check-model": _check_model,
        "settings": _settings,
    }
    from service.config import SettingsError

    try:
        return handlers[args.command](args)
    except SettingsError as err:
        print(f"momentum-serve: invalid settings:\n{err}", file=sys.stderr)
        return 2
    except (CommandError, ValueError, FileNotFoundError) as err:
        print(f"momentum-serve {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
