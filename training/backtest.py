"""Expanding-window backtests: search, keep the best model, predict the test block.

For every seed and every window of `training.splits.ExpandingWindow`, a random
search (`training.search.run_search`) trains models on the window's training
rows, picks the best by validation Sharpe, and the best model predicts every
test date from data up to that date. Out-of-sample signals are stitched over
windows; benchmarks are evaluated on exactly the same dates.

The run directory is written as the run goes, so an interrupted run resumes
where it stopped (a window is done once its ``signals.parquet`` exists; an
unfinished window resumes its Optuna study)::

    RUN/config.json                       resolved configuration (a rerun must match it)
    RUN/seed_<s>/window_<year>/study.db   the Optuna study of that window
    RUN/seed_<s>/window_<year>/trials/    every trial's weights
    RUN/seed_<s>/window_<year>/best.json  best trial, its hyperparameters and validation Sharpe
    RUN/seed_<s>/window_<year>/signals.parquet   out-of-sample positions of the window
    RUN/oos.parquet                       date, ticker, seed, window, signal, vol, next_return,
                                          position, captured
    RUN/benchmarks.parquet                date, ticker, strategy, signal, vol_scaled
    RUN/report.md, *.csv, metrics.json, plots/   the report (`training.report`)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum import benchmarks as bm
from momentum.construction import (
    construct_weights,
    per_asset_leverage,
)
from momentum.features import Features
from momentum.metrics import sharpe_ratio
from momentum.portfolio import leverage, portfolio_returns
from momentum.sizing import size_positions
from training.backtest_config import (
    BacktestConfig,
    base_train_config,
    run_features,
    run_sizer,
    universe_for,
)
from training.datasets import ModelData
from training.ensemble import ensemble_positions, members
from training.explain import slp_attribution_summary, tft_summary
from training.models import Universe
from training.search import SearchResult, run_search
from training.splits import ExpandingWindow, Fold, Window
from training.train import TrainConfig

__all__ = ["run_backtest", "run_positions", "search_split", "seed_average"]

# settings newer than some stored runs; those runs used the default (features: "default")
_ADDED_SETTINGS = ("objective", "construction")


def _check_config(path: Path, resolved: dict[str, Any]) -> None:
    """A rerun in the same directory must be the same experiment (resuming it)."""
    stored = json.loads(path.read_text())
    # a setting added after the run was started is absent from its file: it ran on the default
    defaults = {f.name: f.default for f in dataclasses.fields(BacktestConfig)}
    stored = {**{k: defaults[k] for k in _ADDED_SETTINGS if k not in stored}, **stored}
    keys = [k for k in resolved if k not in ("workers", "executor", "ray_address")]
    diff = {k: (stored.get(k), resolved[k]) for k in keys if stored.get(k) != resolved[k]}
    if diff:
        details = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{path} belongs to a different backtest ({details}); use another --out")


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _long(
    features: Features,
    rows: np.ndarray,
    signal: np.ndarray,
    position: np.ndarray | None = None,
    **columns: Any,
) -> pd.DataFrame:
    """One row per (date, ticker) of `rows` with the signal, vol and next-day return, and
    with a `position` panel (per-asset leverage) its captured return ``position * r``."""
    n_rows, n_assets = signal.shape
    dates = np.repeat(features.dates[rows].to_numpy(), n_assets)
    nxt = features.next_returns[rows]
    frame = pd.DataFrame(
        {
            "date": dates,
            "ticker": np.tile(np.asarray(features.tickers, dtype=object), n_rows),
            "signal": signal.ravel(),
            "vol": features.vol[rows].ravel(),
            "next_return": nxt.ravel(),
        }
    )
    if position is not None:
        frame["position"] = position.ravel()
        frame["captured"] = (position * nxt).ravel()
    for key, value in columns.items():
        frame[key] = value
    return frame


def run_positions(
    config: BacktestConfig,
    universe: Universe,
    features: Features,
    rows: np.ndarray,
    signal: np.ndarray,
) -> np.ndarray:
    """Per-asset leverage of `signal` (``[len(rows), N]``) under the run's construction.

    ``vol_scaled``: ``X sigma_tgt / s`` (eq. 1); otherwise ``N_t w`` of the constructed
    weights (`momentum.construction.per_asset_leverage`), with the universe's markets as
    the sectors and the full return history feeding the covariance.
    """
    if config.construction == "vol_scaled":
        return leverage(signal, features.vol[rows])
    full = np.full(features.vol.shape, np.nan)
    full[rows] = signal
    sectors = universe.markets or (tuple(range(universe.n_assets)),)
    weights = construct_weights(
        config.construction,
        full,
        features.vol,
        returns=features.returns,
        sectors=sectors,
        rows=rows,
    )
    return per_asset_leverage(weights)


def _window_sharpe(features: Features, rows: np.ndarray, position: np.ndarray) -> float:
    return float(sharpe_ratio(portfolio_returns(position * features.next_returns[rows])))


def search_split(
    config: BacktestConfig,
    data: ModelData,
    universe: Universe,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    *,
    seed: int,
    directory: str | Path,
    log: Callable[[str], None],
    folds: tuple[Fold, ...] = (),
) -> tuple[SearchResult, TrainConfig]:
    """`config`'s random search on one train / validation split, resuming in `directory`.

    Returns the search result and the training config every trial started from
    (the protocol's budget, the turnover cost, the selection, the sequence length,
    `seed`).
    """
    budget = config.budget
    base = base_train_config(config, seed)

    def on_trial(record: dict[str, Any]) -> None:
        log(
            f"  trial {record['complete']}/{record['of']}: valid score {record['value']:.3f} "
            f"(best {record['best']:.3f})"
        )

    result = run_search(
        config.model,
        data,
        universe,
        train_rows,
        valid_rows,
        directory=directory,
        n_trials=budget.trials,
        base=base,
        workers=config.workers,
        seed=seed,
        fixed=config.fixed,
        folds=folds,
        executor=config.executor,
        ray_address=config.ray_address,
        progress=on_trial,
    )
    return result, base


def _run_window(
    config: BacktestConfig,
    data: ModelData,
    universe: Universe,
    window: Window,
    seed: int,
    directory: Path,
    log: Callable[[str], None],
) -> pd.DataFrame:
    features = data.features
    result, base = search_split(
        config,
        data,
        universe,
        window.train,
        window.valid,
        seed=seed,
        directory=directory,
        log=log,
        folds=window.folds,
    )
    ensemble = members(
        config.model, directory, result, config.ensemble, base=base, fixed=config.fixed
    )
    best = ensemble[0]
    # the top `config.ensemble` trials' outputs averaged (one trial: the argmax), then sized
    outputs = ensemble_positions(config.model, ensemble, data, window.test)
    signal = size_positions(run_sizer(config), outputs)
    position = run_positions(config, universe, features, window.test, signal)
    shutil.copyfile(directory / "trials" / f"{result.best_trial}.pt", directory / "model.pt")
    _explain_window(config.model, best.model, data, window.test, best.train_config, directory)
    _write_json(
        directory / "best.json",
        {
            "trial": result.best_trial,
            "params": best.hyper,
            # selected on valid_score; the gross and net Sharpe of the same epoch beside it
            "valid_score": result.best_value,
            "valid_sharpe": result.best_attrs.get("valid_sharpe", result.best_value),
            "valid_net_sharpe": result.best_attrs.get("valid_net_sharpe", result.best_value),
            # the trials whose positions `test_sharpe` and the signals average, best first
            "members": [{"trial": m.trial, "score": m.score} for m in ensemble],
            "test_sharpe": _window_sharpe(features, window.test, position),
            "train_rows": [int(window.train[0]), int(window.train[-1])],
            "valid_rows": [int(window.valid[0]), int(window.valid[-1])],
            "test_start": f"{window.test_start:%Y-%m-%d}",
            "test_end": f"{window.test_end:%Y-%m-%d}",
        },
    )
    frame = _long(features, window.test, signal, position, seed=seed, window=window.name)
    _write_parquet(directory / "signals.parquet", frame)  # written last: the window is done
    return frame


def seed_average(
    oos: pd.DataFrame,
    positions: Callable[[np.ndarray, np.ndarray], np.ndarray],
    features: Features,
) -> pd.DataFrame:
    """The seeds' signals averaged per (date, ticker) into one strategy (``seed`` 0), as the
    papers average several runs of a model; its positions and captured returns recomputed
    from the averaged signal by `positions` (``(rows, signal panel) -> leverage panel``,
    e.g. `run_positions`)."""
    keys = ["date", "ticker", "window"] if "window" in oos.columns else ["date", "ticker"]
    averaged = (
        oos.groupby(keys, sort=True)
        .agg(signal=("signal", "mean"), vol=("vol", "first"), next_return=("next_return", "first"))
        .reset_index()
    )
    row = features.dates.get_indexer(pd.DatetimeIndex(averaged["date"]))
    col = pd.Index(features.tickers).get_indexer(pd.Index(averaged["ticker"]))
    rows = np.unique(row)
    panel = np.full((len(rows), len(features.tickers)), np.nan)
    at = np.searchsorted(rows, row)
    panel[at, col] = averaged["signal"].to_numpy()
    averaged["position"] = positions(rows, panel)[at, col]
    averaged["captured"] = averaged["position"] * averaged["next_return"]
    averaged["seed"] = 0
    return averaged[[c for c in oos.columns if c in averaged.columns]]


# model name -> file written into each window directory and averaged into RUN/explain/
_EXPLAIN_FILES = {"slp": "slp_attribution.csv", "tft": "tft_variable_importance.csv"}


def _explain_window(
    name: str,
    model: Any,
    data: ModelData,
    rows: np.ndarray,
    train_config: TrainConfig,
    directory: Path,
) -> None:
    """Interpretability summary of the window's best model on its test rows (SLP, TFT)."""
    f = data.features
    if name == "slp":
        summary = slp_attribution_summary(model, data, rows, f.names, f.tickers)
        table = summary.loc["all", ["own", "cross", "own_share", "cross_share"]]
    elif name == "tft":
        table = tft_summary(model, data, rows, f.names, seq_len=train_config.seq_len)[
            "variable_importance"
        ][["mean"]].rename(columns={"mean": "weight"})
    else:
        return
    table.rename_axis("feature").to_csv(directory / _EXPLAIN_FILES[name])


def _average_explanations(name: str, out: Path) -> None:
    """Mean over every window and seed of the per-window summaries, into RUN/explain/."""
    if name not in _EXPLAIN_FILES:
        return
    parts = [pd.read_csv(p) for p in sorted(out.glob(f"seed_*/window_*/{_EXPLAIN_FILES[name]}"))]
    if not parts:
        return
    mean = pd.concat(parts).groupby("feature", sort=False).mean()
    (out / "explain").mkdir(exist_ok=True)
    mean.to_csv(out / "explain" / _EXPLAIN_FILES[name])


def _benchmarks(features: Features, rows: np.ndarray) -> pd.DataFrame:
    frames = []
    for name, bench in bm.BENCHMARKS.items():
        # buy-and-hold starts on the first out-of-sample date, like an investor would
        signal = (
            bm.buy_and_hold(features, start=int(rows[0]))
            if name == "buy_and_hold"
            else bench.signal(features)
        )
        frame = _long(features, rows, signal[rows], strategy=name, vol_scaled=bench.vol_scaled)
        frames.append(frame[["date", "ticker", "strategy", "signal", "vol_scaled"]])
    return pd.concat(frames, ignore_index=True)


@contextmanager
def _ray_session(config: BacktestConfig) -> Iterator[None]:
    """One Ray connection for the whole run (each window's search reuses it)."""
    if config.executor != "ray":
        yield
        return
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--executor ray needs the `ray` extra: pip install '.[ray]'") from err
    ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _run_windows(
    config: BacktestConfig,
    data: ModelData,
    universe: Universe,
    windows: list[Window],
    out: Path,
    log: Callable[[str], None],
) -> list[pd.DataFrame]:
    """Every (seed, window), skipping those already done; their signals frames."""
    frames: list[pd.DataFrame] = []
    for seed in range(config.budget.seeds):
        done: list[pd.DataFrame] = []
        for i, window in enumerate(windows, 1):
            directory = out / f"seed_{seed}" / f"window_{window.name}"
            directory.mkdir(parents=True, exist_ok=True)
            signals = directory / "signals.parquet"
            start = time.perf_counter()
            if signals.exists():
                frame = pd.read_parquet(signals)
                status = "done earlier"
            else:
                log(
                    f"seed {seed}, window {i}/{len(windows)}: test {window.test_start:%Y-%m-%d}.."
                    f"{window.test_end:%Y-%m-%d}, {len(window.train)} train / "
                    f"{len(window.valid)} valid rows"
                )
                frame = _run_window(config, data, universe, window, seed, directory, log)
                status = f"{time.perf_counter() - start:.0f} s"
            done.append(frame)
            best = json.loads((directory / "best.json").read_text())
            daily = pd.concat(done, ignore_index=True).groupby("date")["captured"].mean()
            log(
                f"seed {seed}, window {window.name}: best valid Sharpe {best['valid_sharpe']:.3f} "
                f"(net {best.get('valid_net_sharpe', math.nan):.3f}), "
                f"test Sharpe {best['test_sharpe']:.3f}, out-of-sample so far "
                f"{sharpe_ratio(daily.to_numpy()):.3f} ({status})"
            )
        frames.extend(done)
    return frames


def run_backtest(
    config: BacktestConfig,
    out: str | Path,
    *,
    log: Callable[[str], None] = print,
    report: bool = True,
) -> Path:
    """Run (or resume) a backtest into directory `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = config.resolved()
    config_path = out / "config.json"
    if config_path.exists():
        _check_config(config_path, resolved)
        log(f"resuming {out}")
    else:
        _write_json(config_path, resolved)

    _, features, _ = run_features(config)
    data = ModelData.from_features(features)
    universe = universe_for(config, features)
    splitter = ExpandingWindow(
        first_test_year=config.first_test_year,
        step_years=config.step_years,
        start_year=config.start_year,
        end_year=config.end_year,
        valid_fraction=config.valid_fraction,
        valid_folds=config.valid_folds,
        gap=config.longest_window,
    )
    windows = list(splitter.split(features.dates))
    budget = config.budget
    log(
        f"{config.name}: {config.model} on {config.data} ({len(features.tickers)} assets), "
        f"{len(windows)} windows x {budget.seeds} seeds, {budget.trials} trials, "
        f"up to {budget.max_epochs} epochs (patience {budget.patience})"
    )
    with _ray_session(config):
        frames = _run_windows(config, data, universe, windows, out, log)

    oos = pd.concat(frames, ignore_index=True)
    if config.seed_ensemble:
        oos = seed_average(
            oos,
            lambda rows, signal: run_positions(config, universe, features, rows, signal),
            features,
        )
    _write_parquet(out / "oos.parquet", oos)
    rows = np.flatnonzero(features.dates.isin(pd.DatetimeIndex(oos["date"].unique())))
    _write_parquet(out / "benchmarks.parquet", _benchmarks(features, rows))
    _average_explanations(config.model, out)
    if report:
        from training.report import build_report

        build_report([out], out, cost_bps=config.cost_bps)
        log(f"report: {out / 'report.md'}")
    return out
