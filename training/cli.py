"""``momentum-train``: research commands (backtest, report, results, export, promote, models).

Run ``momentum-train COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: `--help` needs no torch
    from training.backtest_config import BacktestConfig

__all__ = ["main"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _training_options(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    """What to train and with which budget: shared by `backtest` and `export --model`."""
    p.add_argument(
        "--model",
        required=model_required,
        default=None,
        help="architecture: slp, mlp, cnn, lstm, dmn, "
        "lasso, mlp_dmn, wavenet, tft, quantnet, no_transfer, rnn, deep_rnn, gru, lstm_xs, "
        "deep_lstm",
    )
    p.add_argument(
        "--data",
        default="sp500",
        help="'sp500' (embedded) or a price file (CSV/Parquet, wide or long)",
    )
    p.add_argument(
        "--sectors",
        default=None,
        help="ticker,sector CSV giving QuantNet's markets for --data PATH",
    )
    p.add_argument(
        "--features",
        choices=("default", "extended"),
        default=None,
        help="feature set: the papers' 8 or the RNN equities paper's extended set "
        "(adds realised vol, beta, CTI and alpha returns; needs the market index levels); "
        "default: the model's own (extended for the RNN paper's models, else the 8)",
    )
    p.add_argument(
        "--objective",
        choices=("sharpe", "returns", "mse", "binary"),
        default="sharpe",
        help="training loss (DMN paper III-B): the Sharpe ratio (default) or average return "
        "of the positions, or a regression (mse) / classification (binary) forecast of the "
        "next vol-scaled return traded as sgn(forecast)",
    )
    p.add_argument(
        "--construction",
        choices=("vol_scaled", "zero_mean", "sector_neutral_mv"),
        default="vol_scaled",
        help="positions -> portfolio weights: each asset vol-scaled to 15%% (default), "
        "demeaned across assets then vol-scaled, or the RNN paper's sector-neutral "
        "mean-variance weights (gross one, sectors from --sectors or the embedded GICS)",
    )
    p.add_argument(
        "--index",
        default=None,
        metavar="FILE",
        help="market index levels (date and one value column) for --features extended with "
        "--data PATH; the embedded data brings its own",
    )
    p.add_argument(
        "--protocol",
        choices=["quick", "paper"],
        default="quick",
        help="search budget (default quick)",
    )
    p.add_argument("--start-year", type=int, default=None, help="first year of training data")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="random-search trials per window (protocol default)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs per trial (protocol default)"
    )
    p.add_argument(
        "--patience", type=int, default=None, help="early-stopping patience (protocol default)"
    )
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing a search")
    p.add_argument(
        "--turnover-cost",
        type=float,
        default=0.0,
        help="train on returns net of this cost in bps (turnover regularisation)",
    )
    p.add_argument(
        "--select",
        choices=("sharpe", "loss"),
        default="sharpe",
        help="what early stopping and the best trial are scored on: the validation Sharpe "
        "net of --select-cost (default), or the validation value of the training loss",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=5,
        metavar="K",
        help="average the positions of each window's top K trials (default 5; 1: the best "
        "trial alone); an export averages them inside one graph",
    )
    p.add_argument(
        "--seed-ensemble",
        action="store_true",
        help="average the seeds' positions into one strategy instead of reporting each seed",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of each training block (its end) that validates (default 0.1)",
    )
    p.add_argument(
        "--valid-folds",
        type=int,
        default=None,
        metavar="K",
        help="score every trial on K blocked folds of the training block instead, with a "
        "gap of the longest model window between training and validation rows",
    )
    p.add_argument(
        "--select-cost",
        type=float,
        default=None,
        metavar="BPS",
        help="cost per unit of turnover the selection Sharpe is net of (default: "
        "--turnover-cost; 0 selects on the gross Sharpe)",
    )
    p.add_argument(
        "--fixed",
        type=_json_object,
        default={},
        help="hyperparameters pinned instead of searched, e.g. '{\"l1\": 0.1}'",
    )
    p.add_argument(
        "--seq-len", type=int, default=63, help="sequence length of dmn/tft, QuantNet's k"
    )
    p.add_argument(
        "--label", default=None, help="strategy name in reports (default: the model name)"
    )


def _backtest_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest",
        help="expanding-window backtest with random search",
        description=(
            "Expanding-window backtest: for every seed and test block, random-search the "
            "model on the training block, keep the best by validation Sharpe, predict the "
            "test block. Rerunning the same command resumes an interrupted run."
        ),
    )
    _training_options(p, model_required=True)
    p.add_argument("--first-test-year", type=int, default=1995)
    p.add_argument(
        "--step-years",
        type=int,
        default=5,
        help="test block length (1 = Momentum Transformer protocol)",
    )
    p.add_argument("--end-year", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (protocol default)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    p.add_argument(
        "--cost-bps",
        type=_floats,
        default=(0, 0.5, 1, 2, 3, 4, 5, 10),
        help="report costs, comma-separated",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (created; reused to resume)"
    )


def _registry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        type=Path,
        default=Path(os.environ.get("MOMENTUM_REGISTRY_DIR", "models")),
        help="model registry directory (default $MOMENTUM_REGISTRY_DIR or ./models)",
    )


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX and publish it in the registry",
        description=(
            "Either export the best model of one window of a backtest run (RUN), or train a "
            "model on all data up to --end and export it (--model, what production uses). "
            "Either way the graph follows the one serving contract, is checked against torch "
            "with onnxruntime, and is published as a new registry version (not promoted)."
        ),
    )
    p.add_argument("run", nargs="?", type=Path, default=None, help="backtest run directory")
    p.add_argument(
        "--window", default="last", help="'last' or the first test year of the window (RUN)"
    )
    p.add_argument("--seed", type=int, default=0, help="which seed's model (RUN) / seed (--model)")
    p.add_argument("--name", default=None, help="registry name (default: the run's label)")
    _registry_option(p)
    _training_options(p, model_required=False)
    p.add_argument("--end", default=None, help="last date of training data (--model)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="search directory of --model (default runs/production/<name>-<end>); resumes",
    )


def _promote_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "promote",
        help="make a registry version the production one",
        description="Verify a published version and point NAME's production pointer at it.",
    )
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument(
        "--universe",
        default=None,
        help="also check the manifest's tickers against this universe (the service's "
        "MOMENTUM_UNIVERSE: an embedded name or a price file)",
    )
    _registry_option(p)


def _models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list registry versions with their key metrics",
        description="Every published version (or those of NAME), with its metrics.",
    )
    p.add_argument("name", nargs="?", default=None)
    _registry_option(p)


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the papers' tables and plots over one or more runs",
        description="One report over several backtest runs and all benchmarks.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: the first run)"
    )
    p.add_argument("--cost-bps", type=_floats, default=(0, 0.5, 1, 2, 3, 4, 5, 10))


def _results_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="the quick-protocol backtests of docs/results.md",
        description=(
            "Run (or resume) one suite of quick-protocol backtests on the embedded data, "
            "report them with all benchmarks, and write that suite's part of docs/results.md: "
            "core (slp, dmn, tft, quantnet), dmn_grid (the DMN paper's architectures and "
            "objectives) or rnn (the RNN equities paper's models, sector-neutral and "
            "vol-scaled). Finished runs are reused, interrupted ones resume."
        ),
    )
    p.add_argument(
        "--suite", choices=("core", "dmn_grid", "rnn"), default="core", help="default core"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/results[-SUITE])"
    )
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    p.add_argument("--models", default=None, help="comma-separated subset of the suite's runs")
    p.add_argument("--note", default=None, help="a remark printed under the results table")


def _results(args: argparse.Namespace) -> int:
    from training.results import run_results

    models = args.models.split(",") if args.models else None
    suite = args.suite
    out = args.out or Path("runs/results" if suite == "core" else f"runs/results-{suite}")
    command = f"momentum-train results --out {out}" + (
        "" if suite == "core" else f" --suite {suite}"
    )
    run_results(out, args.doc, models=models, suite=suite, command=command, note=args.note)
    return 0


def _training_config(args: argparse.Namespace, **extra: Any) -> BacktestConfig:
    from training.backtest_config import BacktestConfig

    return BacktestConfig(
        model=args.model,
        data=args.data,
        label=args.label,
        protocol=args.protocol,
        start_year=args.start_year,
        trials=args.trials,
        epochs=args.epochs,
        patience=args.patience,
        workers=args.workers,
        turnover_cost_bps=args.turnover_cost,
        select=args.select,
        select_cost_bps=args.select_cost,
        valid_fraction=args.valid_fraction,
        valid_folds=args.valid_folds,
        features=args.features,
        objective=args.objective,
        construction=args.construction,
        index=args.index,
        ensemble=args.ensemble,
        seed_ensemble=args.seed_ensemble,
        seq_len=args.seq_len,
        fixed=args.fixed,
        sectors=args.sectors,
        **extra,
    )


def _backtest(args: argparse.Namespace) -> int:
    from training.backtest import run_backtest

    config = _training_config(
        args,
        first_test_year=args.first_test_year,
        step_years=args.step_years,
        end_year=args.end_year,
        seeds=args.seeds,
        executor=args.executor,
        ray_address=args.ray_address,
        cost_bps=tuple(args.cost_bps),
    )
    run_backtest(config, args.out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.publish import export_production, export_window

    if (args.run is None) == (args.model is None):
        raise ValueError("give either a backtest RUN directory or --model (not both, not neither)")
    if args.run is not None:
        version = export_window(
            args.run, registry=args.registry, window=args.window, seed=args.seed, name=args.name
        )
    else:
        config = _training_config(args)
        out = (
            args.out or Path("runs/production") / f"{args.name or config.name}-{args.end or 'all'}"
        )
        version = export_production(
            config, registry=args.registry, out=out, end=args.end, seed=args.seed, name=args.name
        )
    print(f"{version.name} {version.version}")
    print(f"promote it with: momentum-train promote {version.name} {version.version}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from momentum.data import load_prices
    from momentum.registry import ModelVersion, promote
    from training.export import check_servable

    tickers = None
    if args.universe:
        tickers = [str(t) for t in load_prices(args.universe).columns]

    def servable(version: ModelVersion) -> None:
        check_servable(version, tickers)

    version = promote(args.registry, args.name, args.version, check=servable)
    print(
        f"{version.name}: production is now {version.version} (loads in onnxruntime"
        + (f", universe {args.universe} matches)" if tickers else ")")
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from momentum.registry import list_models, list_versions, load_version, production_version

    names = [args.name] if args.name else list_models(args.registry)
    if not names:
        print(
            f"no models in {args.registry.resolve()} (the registry: --registry or "
            "MOMENTUM_REGISTRY_DIR; `make demo` writes to runs/demo/models)"
        )
        return 0
    header = (
        f"{'name':<14} {'version':<26} {'model':<11} {'trained to':<11} {'valid':>7} "
        f"{'test':>7} {'parity':>8}  "
    )
    print(header)
    for name in names:
        production = production_version(args.registry, name)
        for version in list_versions(args.registry, name):
            try:
                m = load_version(args.registry, name, version).manifest
            except (LookupError, ValueError) as err:
                print(f"{name:<14} {version:<26} INVALID: {err}")
                continue
            metric = m.metrics
            parity = max(m.parity_max_abs_diff.values(), default=float("nan"))
            print(
                f"{name:<14} {version:<26} {m.model:<11} {m.training_window.valid_end!s:<11} "
                f"{_fmt(metric.get('valid_sharpe')):>7} {_fmt(metric.get('test_sharpe')):>7} "
                f"{parity:>8.1e}  {'production' if version == production else ''}"
            )
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _report(args: argparse.Namespace) -> int:
    from training.report import build_report

    out = args.out or args.runs[0]
    path = build_report(list(args.runs), out, cost_bps=tuple(args.cost_bps))
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="momentum-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _backtest_parser(sub)
    _report_parser(sub)
    _results_parser(sub)
    _export_parser(sub)
    _promote_parser(sub)
    _models_parser(sub)
    args = parser.parse_args(argv)
    import optuna

    # one summary line per trial comes from the backtest itself
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handlers = {
        "backtest": _backtest,
        "report": _report,
        "results": _results,
        "export": _export,
        "promote": _promote,
        "models": _models,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, LookupError, FileNotFoundError) as err:
        print(f"momentum-train {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
