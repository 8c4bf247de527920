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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from momentum import benchmarks as bm
from momentum.construction import (
    Construction,
    check_construction,
    construct_weights,
    per_asset_leverage,
)
from momentum.data import EMBEDDED, load_index, load_prices, sectors
from momentum.features import FEATURES_VERSION, FeatureConfig, Features, compute_features
from momentum.metrics import sharpe_ratio
from momentum.portfolio import leverage, portfolio_returns
from momentum.sizing import Sizer, size_positions, sizer_for_loss
from training.datasets import ModelData
from training.ensemble import ensemble_positions, members
from training.explain import slp_attribution_summary, tft_summary
from training.losses import LossName
from training.models import Universe, get_spec
from training.search import SearchResult, run_search
from training.splits import ExpandingWindow, Fold, Window
from training.train import TrainConfig

__all__ = [
    "FEATURE_SETS",
    "base_train_config",
    "PROTOCOLS",
    "BacktestConfig",
    "Budget",
    "run_backtest",
    "run_features",
    "run_positions",
    "run_sizer",
    "seed_average",
    "universe_for",
]

# `--features`: the papers' 8 features, or Boutier (2023)'s extended equities set
FEATURE_SETS: dict[str, FeatureConfig] = {
    "default": FeatureConfig(),
    "extended": FeatureConfig(extended=True),
}


@dataclass(frozen=True)
class Budget:
    """Search budget of one protocol for one family of models."""

    trials: int
    max_epochs: int
    patience: int
    seeds: int


# Keyed by model name or, failing that, by layout. "paper" is each paper's budget:
# STMOM Table 7 (100 trials, up to 500 epochs, patience 25); the DMN paper's
# section IV-B (50 trials, up to 100 epochs, patience 25); the Momentum
# Transformer walkthrough's 300 epochs for the TFT; QuantNet Appendix 2's 200
# trials (its 2000 training steps have no epoch count here, so 500 epochs,
# patience 25). No paper gives its number of seeds (STMOM 5.2: "multiple random
# seeded runs"), so 5; nor the TFT its number of trials, so 100. "quick" fits a
# laptop: on the embedded data with 2 cores each backtest takes 10-30 minutes
# (docs/results.md lists the measured wall times).
_DMN_PAPER = Budget(trials=50, max_epochs=100, patience=25, seeds=5)
_RNN_PAPER_MODELS = ("rnn", "deep_rnn", "gru", "lstm_xs", "deep_lstm")

PROTOCOLS: dict[str, dict[str, Budget]] = {
    "paper": {
        "spatiotemporal": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        "dmn": _DMN_PAPER,
        "sequence": Budget(trials=100, max_epochs=300, patience=25, seeds=5),
        "panel": Budget(trials=200, max_epochs=500, patience=25, seeds=5),
        # STMOM's LSTM: Table 7, though it trains on every step in the panel layout
        "lstm": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        # the DMN paper's other architectures: its section IV-B, as the LSTM
        **dict.fromkeys(("lasso", "mlp_dmn", "wavenet"), _DMN_PAPER),
        # Boutier (2023) section 4: 250 epochs, patience 25; trials unstated (the DMN
        # paper's 50, the method it adapts)
        **dict.fromkeys(_RNN_PAPER_MODELS, Budget(trials=50, max_epochs=250, patience=25, seeds=5)),
    },
    "quick": {
        "spatiotemporal": Budget(trials=20, max_epochs=100, patience=10, seeds=3),
        "lstm": Budget(trials=20, max_epochs=100, patience=10, seeds=3),
        "sequence": Budget(trials=6, max_epochs=30, patience=6, seeds=2),
        "tft": Budget(trials=3, max_epochs=15, patience=4, seeds=1),
        "panel": Budget(trials=10, max_epochs=30, patience=8, seeds=2),
        "lasso": Budget(trials=20, max_epochs=30, patience=6, seeds=2),
        "mlp_dmn": Budget(trials=15, max_epochs=30, patience=6, seeds=2),
        "wavenet": Budget(trials=4, max_epochs=30, patience=6, seeds=2),
        # an epoch is a few steps (a batch counts windows of all assets) and validating
        # rebuilds every window, so a trial is minutes; the deep ones cost 2-3x more
        **dict.fromkeys(
            ("rnn", "gru", "lstm_xs"), Budget(trials=4, max_epochs=20, patience=5, seeds=1)
        ),
        **dict.fromkeys(
            ("deep_rnn", "deep_lstm"), Budget(trials=2, max_epochs=20, patience=5, seeds=1)
        ),
    },
}


@dataclass(frozen=True)
class BacktestConfig:
    """Everything that defines a backtest run; stored as ``config.json``.

    ``None`` budget fields take the protocol's value for the model's family.
    ``turnover_cost_bps`` trains on returns net of that cost (turnover
    regularisation); ``fixed`` pins hyperparameters instead of searching them.
    ``select`` and ``select_cost_bps`` choose what early stopping and the best
    trial are scored on (`training.train`): the validation Sharpe net of
    ``select_cost_bps`` (None: ``turnover_cost_bps``), or the training loss.
    ``features`` is the feature set (`FEATURE_SETS`): the papers' 8 features, or the
    extended set of the RNN equities paper (Boutier 2023), which also needs the market
    index levels: the embedded data's own index, or ``index`` (a file) for a price file.
    ``ensemble`` averages the positions of each window's top trials (1: the best
    trial alone); ``seed_ensemble`` averages the seeds' positions into one strategy.
    ``objective`` is the training loss (Lim et al. 2019, section III-B); ``mse`` and
    ``binary`` models trade sgn(output) (`momentum.sizing`). ``construction`` turns the
    positions into portfolio weights (`momentum.construction`), with the sectors as
    markets. ``features`` None takes the model's own default set (``ModelSpec.feature_set``).
    ``valid_fraction`` is the validation share of each training block;
    ``valid_folds`` scores every trial on that many blocked folds instead
    (`training.splits`), with a gap of the longest window the model may read.
    """

    model: str
    data: str = "sp500"
    label: str | None = None
    protocol: Literal["quick", "paper"] = "quick"
    first_test_year: int = 1995
    step_years: int = 5
    start_year: int | None = None
    end_year: int | None = None
    seeds: int | None = None
    trials: int | None = None
    epochs: int | None = None
    patience: int | None = None
    workers: int = 1
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    turnover_cost_bps: float = 0.0
    select: Literal["sharpe", "loss"] = "sharpe"
    select_cost_bps: float | None = None
    valid_fraction: float = 0.1
    valid_folds: int | None = None
    features: Literal["default", "extended"] | None = None
    objective: LossName = "sharpe"
    construction: Construction = "vol_scaled"
    index: str | None = None
    ensemble: int = 5
    seed_ensemble: bool = False
    seq_len: int = 63
    fixed: dict[str, Any] = field(default_factory=dict)
    cost_bps: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0)
    sectors: str | None = None

    def __post_init__(self) -> None:
        get_spec(self.model)  # unknown model names fail here
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"`protocol` must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.executor not in ("local", "ray"):
            raise ValueError(f"`executor` must be 'local' or 'ray', got {self.executor!r}")
        for name in ("seeds", "trials", "epochs", "workers", "ensemble"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}")
        if self.turnover_cost_bps < 0 or any(c < 0 for c in self.cost_bps):
            raise ValueError("costs must be non-negative")
        if self.select not in ("sharpe", "loss"):
            raise ValueError(f"`select` must be 'sharpe' or 'loss', got {self.select!r}")
        if self.select_cost_bps is not None and self.select_cost_bps < 0:
            raise ValueError(f"`select_cost_bps` must be non-negative, got {self.select_cost_bps}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"`valid_fraction` must be in (0, 1), got {self.valid_fraction}")
        if self.valid_folds is not None and self.valid_folds < 2:
            raise ValueError(f"`valid_folds` must be at least 2, got {self.valid_folds}")
        if self.features is None:  # frozen: resolve the model's default set once, here
            object.__setattr__(self, "features", get_spec(self.model).feature_set)
        sizer_for_loss(self.objective)  # unknown objectives fail here, naming the choices
        check_construction(self.construction)
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"`features` must be one of {sorted(FEATURE_SETS)}, got {self.features!r}"
            )
        if self.features == "extended" and self.index is None and self.data not in EMBEDDED:
            raise ValueError(
                "the extended features need the market index levels: pass --index FILE "
                f"(a date and a level column) for --data {self.data}"
            )

    @classmethod
    def from_resolved(cls, resolved: dict[str, Any]) -> BacktestConfig:
        """The config back from its stored form (``config.json``, see `resolved`)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in resolved.items() if k in fields}
        data["cost_bps"] = tuple(data.get("cost_bps", ()))
        return cls(**data)

    @property
    def budget(self) -> Budget:
        table = PROTOCOLS[self.protocol]
        base = table.get(self.model) or table[get_spec(self.model).layout]
        return Budget(
            trials=self.trials or base.trials,
            max_epochs=self.epochs or base.max_epochs,
            patience=base.patience if self.patience is None else self.patience,
            seeds=self.seeds or base.seeds,
        )

    @property
    def name(self) -> str:
        return self.label or self.model

    @property
    def longest_window(self) -> int:
        """The most sessions a model of this run may read (the gap between blocked folds):
        the largest lookback of a spatio-temporal model, else the largest sequence length
        (``--seq-len``, or QuantNet's searched truncated-BPTT length ``k``), as `fixed`,
        the search space or the defaults allow."""
        spec = get_spec(self.model)
        keys: tuple[str, ...]
        lengths: list[int]
        if spec.layout == "spatiotemporal":
            keys, lengths = ("lookback",), []
            default = {f.name: f.default for f in dataclasses.fields(spec.config_cls)}
            lengths.append(int(spec.defaults.get("lookback", default["lookback"])))
        else:
            keys, lengths = ("k", "seq_len"), [self.seq_len]
        for key in keys:
            if key in self.fixed:
                return int(self.fixed[key])
            lengths += [int(v) for v in spec.search_space.get(key, ())]
        return max(lengths)

    def resolved(self) -> dict[str, Any]:
        """The stored form: every default filled in, the budget spelled out."""
        out = dataclasses.asdict(self)
        out["cost_bps"] = list(self.cost_bps)
        out["label"] = self.name
        out["budget"] = dataclasses.asdict(self.budget)
        out["features_version"] = FEATURES_VERSION
        return out


def universe_for(config: BacktestConfig, features: Features) -> Universe:
    """Markets for QuantNet: GICS sectors for the embedded data, a sectors file, or one market."""
    if config.sectors is not None:
        market_of: dict[str, str] | None = sectors(config.sectors)
    elif config.data == "sp500":
        market_of = sectors("sp500")
    else:
        market_of = None
    return Universe.from_market_map(features.tickers, len(features.names), market_of)


def run_features(
    config: BacktestConfig, *, end: Any = None
) -> tuple[pd.DataFrame, Features, pd.Series | None]:
    """The prices of `config` up to `end`, their features (`config.features`) and the
    index levels the extended features were computed with (None for the default set)."""
    prices = load_prices(config.data)
    if end is not None:
        prices = prices.loc[: pd.Timestamp(end)]
    feature_config = FEATURE_SETS[config.features or "default"]  # None is resolved at init
    index = None
    if feature_config.extended:
        index = load_index(config.index if config.index is not None else config.data)
        index = index.loc[: prices.index[-1]]
    return prices, compute_features(prices, feature_config, index=index), index


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


def run_sizer(config: BacktestConfig) -> Sizer:
    """How the run's model outputs become positions: sgn() for the mse and binary
    objectives (`momentum.sizing`); a ``loss`` pinned with ``fixed`` wins."""
    return sizer_for_loss(str(config.fixed.get("loss", config.objective)))


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


def base_train_config(config: BacktestConfig, seed: int) -> TrainConfig:
    """The training config every trial of `config` starts from (sampled keys override it):
    the protocol's budget, the turnover cost, the selection, the sequence length, `seed`."""
    budget = config.budget
    return TrainConfig(
        max_epochs=budget.max_epochs,
        patience=budget.patience,
        cost_bps=config.turnover_cost_bps,
        loss=config.objective,
        select=config.select,
        select_cost_bps=config.select_cost_bps,
        seq_len=config.seq_len,
        seed=seed,
    )


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
