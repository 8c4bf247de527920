"""Put trained models into the registry: from a backtest window, or trained for production.

`export_window` takes the best model of one window of a backtest run (the
run's config says how its data and features were built); `export_production`
searches and trains a model on all data up to a date, as production does
(same protocol budgets as a backtest window). Both export the model to the
serving contract (`training.export`), write a manifest (`momentum.manifest`)
and publish both into the registry (`momentum.registry`) as a new version;
promoting it is a separate, explicit step.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from momentum.construction import Construction
from momentum.contract import INPUT_NAME, OUTPUT_NAME, predict_rows
from momentum.drift import BASELINE_LEVEL, DRIFT_WINDOW, level_shares, window_psi_baseline
from momentum.features import Features
from momentum.manifest import (
    QUANTILE_LEVELS,
    DriftBaseline,
    EnsembleMember,
    Manifest,
    OnnxInfo,
    TrainingWindow,
    feature_spec,
    fingerprint_prices,
    reference_quantiles,
)
from momentum.metrics import max_drawdown, sharpe_ratio
from momentum.portfolio import leverage, portfolio_returns, turnover
from momentum.registry import ModelVersion, publish, version_id
from momentum.sizing import Sizer, size_positions
from training.backtest import search_split
from training.backtest_config import (
    BacktestConfig,
    base_train_config,
    run_features,
    run_sizer,
    universe_for,
)
from training.datasets import ModelData
from training.ensemble import Ensemble, Member, members
from training.export import ExportedGraph, export_onnx, onnx_session
from training.models import Universe, get_spec
from training.splits import final_split
from training.train import split_hyperparameters

__all__ = ["export_production", "export_window", "lookback_of", "window_directory"]


def lookback_of(name: str, model_config: Any, hyper: dict[str, Any], default_seq_len: int) -> int:
    """Steps of history the served graph takes: the STMOM lookback or the sequence length."""
    if get_spec(name).layout == "spatiotemporal":
        return int(model_config.lookback)
    train_part = split_hyperparameters(get_spec(name), hyper)[1]
    return int(train_part.get("seq_len", default_seq_len))


@dataclass(frozen=True)
class Serving:
    """How the service turns the graph's output into weights: the run's sizer and
    construction, recorded in the manifest."""

    sizer: Sizer
    construction: Construction

    @classmethod
    def of(cls, config: BacktestConfig) -> Serving:
        return cls(run_sizer(config), config.construction)


def _member(member: Member) -> EnsembleMember:
    return EnsembleMember(
        trial=member.trial,
        score=_finite_or_none(member.score),
        lookback=member.lookback,
        hyperparameters=member.hyper,
        config=dataclasses.asdict(member.model_config),
    )


def window_directory(run: Path, seed: int, window: str) -> Path:
    """``RUN/seed_<seed>/window_<year>`` of a finished window; ``window="last"`` picks the latest."""
    seed_dir = run / f"seed_{seed}"
    done = sorted(p.parent for p in seed_dir.glob("window_*/signals.parquet"))
    if not done:
        raise FileNotFoundError(f"{seed_dir}: no finished window (no signals.parquet)")
    if window == "last":
        return done[-1]
    path = seed_dir / f"window_{window}"
    if path not in done:
        raise FileNotFoundError(
            f"{path}: not a finished window; finished: {[p.name.removeprefix('window_') for p in done]}"
        )
    return path


# positions the validation-signal deciles are taken over, at most: every validation row of
# a small universe, evenly spaced rows of a wide one (3,103 assets x 500 rows of the DMN
# would be minutes of inference for deciles that 250,000 values pin down as well)
SIGNAL_QUANTILE_VALUES = 262_144


def _validation_signals(
    graph: ExportedGraph, features: Features, rows: np.ndarray, lookback: int, sizer: str
) -> np.ndarray:
    """The exported model's positions on `rows` as served (sized by `sizer`), ``(rows, N)``,
    NaN if not tradable.

    A wide universe keeps evenly spaced rows only (at most SIGNAL_QUANTILE_VALUES values).
    """
    most = max(1, SIGNAL_QUANTILE_VALUES // len(features.tickers))
    if len(rows) > most:
        rows = rows[np.linspace(0, len(rows) - 1, most).round().astype(np.int64)]
    session = onnx_session(graph.path)
    outputs = predict_rows(
        lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], features, rows, lookback
    )
    return size_positions(sizer, outputs)


def _quantiles(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    return [float(q) for q in np.quantile(finite, QUANTILE_LEVELS)]


def _drift_baseline(
    reference: dict[str, list[float]],
    feature_values: np.ndarray,
    names: Sequence[str],
    signal_edges: list[float],
    signals: np.ndarray,
) -> DriftBaseline:
    """How far the reference rows drift from themselves over the live monitor's window.

    Features: their training and validation rows against their deciles; the signal: the
    validation positions against theirs (on a wide universe those rows are evenly spaced,
    less persistent than consecutive ones, so its baseline errs low: alerts err on firing).
    """
    shares = level_shares(QUANTILE_LEVELS)
    per_feature = {
        name: window_psi_baseline(reference[name], feature_values[..., i], DRIFT_WINDOW, shares)
        for i, name in enumerate(names)
    }
    return DriftBaseline(
        window=DRIFT_WINDOW,
        level=BASELINE_LEVEL,
        features=per_feature,
        signal=window_psi_baseline(signal_edges, signals, DRIFT_WINDOW, shares),
    )


def _libraries() -> dict[str, str]:
    names = ["numpy", "pandas", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu"]
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in [*names, "deep-momentum"]:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _publish(
    *,
    name: str,
    architecture: str,
    ensemble: list[Member],
    prices: pd.DataFrame,
    data_source: str,
    features: Features,
    index: pd.Series | None,
    universe: Universe,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    seeds: list[int],
    metrics: dict[str, float | None],
    source: dict[str, Any],
    test_span: tuple[pd.Timestamp, pd.Timestamp] | None,
    registry: Path,
    serving: Serving,
    log: Callable[[str], None],
) -> ModelVersion:
    spec = get_spec(architecture)
    best = ensemble[0]
    model: nn.Module = best.model if len(ensemble) == 1 else Ensemble.of(ensemble)
    model_config, hyper = best.model_config, best.hyper
    lookback = max(m.lookback for m in ensemble)
    if len(ensemble) > 1:
        log(f"an ensemble of {len(ensemble)} trials {[m.trial for m in ensemble]}")
    with tempfile.TemporaryDirectory() as tmp:
        log(f"exporting {architecture} ({universe.n_assets} assets, lookback {lookback})")
        graph = export_onnx(
            architecture,
            model,
            n_assets=universe.n_assets,
            lookback=lookback,
            n_features=universe.n_features,
            path=Path(tmp) / "model.onnx",
        )
        log(
            f"parity torch vs onnxruntime, max abs difference by batch: {graph.parity_max_abs_diff}"
        )
        dates = features.dates
        reference_rows = features.values[train_rows[0] : valid_rows[-1] + 1]
        reference = reference_quantiles(reference_rows, features.names)
        signals = _validation_signals(graph, features, valid_rows, lookback, serving.sizer)
        signal_edges = _quantiles(signals)
        created = datetime.now(UTC)
        manifest = Manifest(
            name=name,
            model=architecture,
            layout=spec.layout,
            version=version_id(created, graph.sha256),
            created=created,
            data_source=data_source,
            data_fingerprint=fingerprint_prices(prices),
            training_window=TrainingWindow(
                train_start=dates[train_rows[0]].date(),
                train_end=dates[train_rows[-1]].date(),
                valid_start=dates[valid_rows[0]].date(),
                valid_end=dates[valid_rows[-1]].date(),
                test_start=None if test_span is None else test_span[0].date(),
                test_end=None if test_span is None else test_span[1].date(),
            ),
            tickers=list(universe.tickers),
            markets=[list(m) for m in universe.markets],
            features=feature_spec(features.config, None if index is None else str(index.name)),
            lookback=lookback,
            hyperparameters=hyper,
            config=dataclasses.asdict(model_config),
            seeds=seeds,
            metrics={k: _finite_or_none(v) for k, v in metrics.items()},
            quantile_levels=list(QUANTILE_LEVELS),
            reference_quantiles=reference,
            signal_quantiles=signal_edges,
            drift_baseline=_drift_baseline(
                reference, reference_rows, features.names, signal_edges, signals
            ),
            onnx=OnnxInfo(
                sha256=graph.sha256,
                size_bytes=graph.size_bytes,
                opset=graph.opset,
                outputs=list(graph.outputs),
            ),
            libraries=_libraries(),
            parity_max_abs_diff=graph.parity_max_abs_diff,
            parity_tolerance=graph.parity_tolerance,
            source=source,
            members=None if len(ensemble) == 1 else [_member(m) for m in ensemble],
            sizer=serving.sizer,
            construction=serving.construction,
        )
        version = publish(registry, graph.path, manifest)
    log(f"published {name} {version.version} -> {version.path}")
    return version


def _test_metrics(signals: pd.DataFrame, tickers: tuple[str, ...]) -> dict[str, float | None]:
    """Out-of-sample Sharpe, max drawdown and average daily turnover of a window's positions
    (its ``position`` column, the per-asset leverage of the run's construction; windows
    written before it existed: the vol-scaled signal, eq. 1)."""
    columns = ["signal", "vol", "next_return"] + (["position"] if "position" in signals else [])
    wide = {
        column: signals.pivot(index="date", columns="ticker", values=column)
        .reindex(columns=list(tickers))
        .to_numpy()
        for column in columns
    }
    position = wide.get("position")
    if position is None:
        position = leverage(wide["signal"], wide["vol"])
    daily = portfolio_returns(position * wide["next_return"])
    daily = daily[np.isfinite(daily)]
    weights = position / np.maximum(np.isfinite(position).sum(axis=1, keepdims=True), 1)
    # traded weight per day, as the service's turnover metric and paper ledger count it
    traded = np.nansum(turnover(np.nan_to_num(weights)), axis=1)
    return {
        "test_sharpe": float(sharpe_ratio(daily)),
        "test_max_drawdown": float(max_drawdown(daily)),
        "test_turnover": float(np.nanmean(portfolio_returns(turnover(position)))),
        "test_weight_turnover": float(np.mean(traded)),
    }


def export_window(
    run: str | Path,
    *,
    registry: str | Path,
    window: str = "last",
    seed: int = 0,
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> ModelVersion:
    """Publish the best model of one window of backtest run `run` as a new registry version.

    Parameters
    ----------
    run : path
        A backtest run directory (`training.backtest.run_backtest`).
    registry : path
        The registry root.
    window : str
        ``"last"`` or the first test year of the window (``"2020"``).
    seed : int
        Which seed's model.
    name : str, optional
        Registry name; default the run's label.
    """
    run = Path(run)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run}: not a backtest run (no config.json)")
    config = BacktestConfig.from_resolved(json.loads(config_path.read_text()))
    directory = window_directory(run, seed, window)
    best = json.loads((directory / "best.json").read_text())
    # the window's ensemble as the backtest averaged it (runs before ensembles: the best)
    ranked = [(m["trial"], m["score"]) for m in best.get("members", [])]
    ensemble = members(
        config.model,
        directory,
        ranked or [(best["trial"], best.get("valid_score", math.nan))],
        len(ranked) or 1,
        base=base_train_config(config, seed),
        fixed=config.fixed,
    )
    prices, features, index = run_features(config)
    universe = universe_for(config, features)
    train = np.arange(best["train_rows"][0], best["train_rows"][1] + 1)
    valid = np.arange(best["valid_rows"][0], best["valid_rows"][1] + 1)
    metrics = {
        "valid_sharpe": best["valid_sharpe"],
        **_test_metrics(pd.read_parquet(directory / "signals.parquet"), features.tickers),
    }
    return _publish(
        name=name or config.name,
        architecture=config.model,
        ensemble=ensemble,
        prices=prices,
        data_source=config.data,
        features=features,
        index=index,
        universe=universe,
        train_rows=train,
        valid_rows=valid,
        seeds=[seed],
        metrics=metrics,
        source={"run": str(run.resolve()), "seed": seed, "window": directory.name, **best},
        test_span=(pd.Timestamp(best["test_start"]), pd.Timestamp(best["test_end"])),
        registry=Path(registry),
        serving=Serving.of(config),
        log=log,
    )


def export_production(
    config: BacktestConfig,
    *,
    registry: str | Path,
    out: str | Path,
    end: str | pd.Timestamp | None = None,
    seed: int = 0,
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> ModelVersion:
    """Search and train `config.model` on all data up to `end`, then publish it.

    The last 10% of the data up to `end` validates (early stopping and trial
    selection), exactly as in each backtest window; `config`'s protocol gives
    the budget (trials, epochs, patience), its ``fixed`` pins hyperparameters.
    The search lives in `out` and resumes if interrupted.
    """
    prices, features, index = run_features(config, end=end)
    data = ModelData.from_features(features)
    universe = universe_for(config, features)
    train, valid, folds = final_split(
        features.dates,
        start_year=config.start_year,
        valid_fraction=config.valid_fraction,
        valid_folds=config.valid_folds,
        gap=config.longest_window,
    )
    log(
        f"training {config.model} on {config.data} up to {features.dates[-1]:%Y-%m-%d}: "
        f"{len(train)} train / {len(valid)} valid rows, {config.budget.trials} trials"
    )
    result, _ = search_split(
        config, data, universe, train, valid, seed=seed, directory=out, log=log, folds=folds
    )
    ensemble = members(
        config.model,
        out,
        result,
        config.ensemble,
        base=base_train_config(config, seed),
        fixed=config.fixed,
    )
    return _publish(
        name=name or config.name,
        architecture=config.model,
        ensemble=ensemble,
        prices=prices,
        data_source=config.data,
        features=features,
        index=index,
        universe=universe,
        train_rows=train,
        valid_rows=valid,
        seeds=[seed],
        metrics={
            "valid_sharpe": result.best_attrs.get("valid_sharpe", result.best_value),
            "valid_score": result.best_value,
        },
        source={"search": str(Path(out).resolve()), "trial": result.best_trial},
        test_span=None,
        registry=Path(registry),
        serving=Serving.of(config),
        log=log,
    )
