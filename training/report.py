"""The papers' tables and plots from backtest run directories.

Reads what the backtest runner writes (no torch, no models: files only)::

    RUN/config.json        {"label": ..., "model": ..., "data": ..., "seeds": ..., ...}
    RUN/oos.parquet        date, ticker, seed, [window], signal, vol, next_return (one row per
                           date x ticker x seed; extra columns are ignored)
    RUN/benchmarks.parquet date, ticker, strategy, signal, vol_scaled (on the oos dates/tickers)
    RUN/explain/*.csv      optional model explanations, shown verbatim

and writes one report over one or more runs: the papers' performance table raw and rescaled
to 15% vol (Lim et al. 2019 Tables 1-2; Tan, Roberts & Zohren 2023 Tables 2-3), the
transaction-cost table (STMOM Table 4), turnover, correlations, equal-risk combinations
(STMOM Table 5), the delayed-signal stress test (Boutier 2023) and three plots.

Every number comes from `momentum.portfolio` (positions, eqs. 1, 12, 13; ex-post rescaling;
signal delay) and `momentum.metrics` (the table columns); this module only arranges panels
and aggregates over seeds. A model's position is vol-scaled
(``X * 0.15 / (vol * sqrt 252) * r_{t+1}``); a benchmark is vol-scaled or not as its
``vol_scaled`` column says. Several seeds print as "mean (std)" (sample std over seeds),
as the papers do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from momentum.metrics import PAPER_COLUMNS, performance_table, sharpe_ratio, to_csv, to_markdown
from momentum.portfolio import (
    VOL_TARGET,
    delay_signal,
    portfolio_returns,
    rescale_to_target_vol,
    strategy_returns,
    turnover,
)

__all__ = [
    "DEFAULT_COST_BPS",
    "DEFAULT_DELAYS",
    "Run",
    "build_report",
    "common_dates",
    "daily_returns",
    "load_run",
]

DEFAULT_COST_BPS: tuple[float, ...] = (0, 0.5, 1, 2, 3, 4, 5, 10)
"""Costs of the transaction-cost table, in bps per unit of turnover (STMOM Table 4)."""
DEFAULT_DELAYS: tuple[int, ...] = (1, 5, 10, 21)
"""Sessions of delay in Boutier (2023)'s delayed-signal stress test."""

OOS_FILE = "oos.parquet"
BENCHMARKS_FILE = "benchmarks.parquet"
CONFIG_FILE = "config.json"
EXPLAIN_DIR = "explain"
# shown first, in this order, when present; any other CSV in explain/ follows by name
_KNOWN_EXPLANATIONS = ("tft_variable_importance.csv", "slp_attribution.csv")

_OOS_COLUMNS = ("date", "ticker", "seed", "signal", "vol", "next_return")
_BENCHMARK_COLUMNS = ("date", "ticker", "strategy", "signal", "vol_scaled")
# the cost of the "net" paper table when the caller's costs include it (the papers' 5 bps)
_PAPER_NET_COST = 5.0
# pairs of (labels) combined 50/50 after rescaling when present (STMOM Table 5)
_DEFAULT_COMBINATIONS = (("tsmom", "csmom"), ("dmn", "slp"))
# model positions are tanh outputs; a little slack for float32 round-trips
_SIGNAL_SLACK = 1e-6
_DIGITS = 3
_DPI = 120


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Run:
    """One backtest run directory, as read from disk.

    Attributes
    ----------
    path : Path
        The run directory.
    config : dict
        ``config.json``.
    oos : pandas.DataFrame
        ``oos.parquet``, shape [T * N * n_seeds, >= 6]: ``date`` (datetime64), ``ticker`` (str),
        ``seed`` (int64), ``signal``, ``vol``, ``next_return`` (float64) and any other
        columns of the file.
    benchmarks : pandas.DataFrame
        ``benchmarks.parquet``, shape [T * N * n_strategies, >= 5]: ``date``, ``ticker``,
        ``strategy`` (str), ``signal`` (float64), ``vol_scaled`` (bool).
    """

    path: Path
    config: dict[str, Any]
    oos: pd.DataFrame
    benchmarks: pd.DataFrame

    @property
    def label(self) -> str:
        """Strategy name of the run's model: ``config["label"]``, else ``config["model"]``."""
        return str(self.config.get("label") or self.config["model"])

    @property
    def seeds(self) -> list[int]:
        """The seeds present in ``oos``, ascending."""
        return sorted(int(s) for s in self.oos["seed"].unique())


def load_run(path: str | Path) -> Run:
    """Read a run directory written by the backtest runner.

    Parameters
    ----------
    path : str or Path
        Directory holding ``config.json``, ``oos.parquet`` and ``benchmarks.parquet``.

    Returns
    -------
    Run

    Raises
    ------
    FileNotFoundError
        The directory or one of its three files is missing (the message names the file).
    ValueError
        A file cannot be read, lacks a column, or holds bad values (the message names the
        file, and the row, date and ticker where it applies).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    config = _read_config(path / CONFIG_FILE)
    oos = _clean_oos(_read_parquet(path / OOS_FILE, _OOS_COLUMNS), path / OOS_FILE)
    benchmarks = _clean_benchmarks(
        _read_parquet(path / BENCHMARKS_FILE, _BENCHMARK_COLUMNS), path / BENCHMARKS_FILE, oos
    )
    return Run(path=path, config=config, oos=oos, benchmarks=benchmarks)


def _read_config(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: a run directory needs its {CONFIG_FILE}")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: cannot read it as JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(config).__name__}")
    if not (config.get("label") or config.get("model")):
        raise ValueError(f"{file}: needs a non-empty 'label' or 'model' to name the strategy")
    return config


def _read_parquet(file: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: a run directory needs its {file.name}")
    try:
        frame = pd.read_parquet(file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: cannot read it as Parquet: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{file}: missing column(s) {missing}; it has {list(frame.columns)} "
            f"and needs {list(columns)}"
        )
    return frame.reset_index(drop=True)


def _where(frame: pd.DataFrame, row: int) -> str:
    """``row 12 (date 2001-01-02, ticker XOM)`` for error messages."""
    date = frame["date"].iloc[row]
    shown = date.strftime("%Y-%m-%d") if isinstance(date, pd.Timestamp) else str(date)
    return f"row {row} (date {shown}, ticker {frame['ticker'].iloc[row]})"


def _numeric(frame: pd.DataFrame, column: str, file: Path) -> NDArray[np.float64]:
    series = frame[column]
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        raise ValueError(f"{file}: column `{column}` must be numeric, got dtype {series.dtype}")
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise ValueError(f"{file}: column `{column}` is infinite at {_where(frame, row)}")
    return values


def _dates(frame: pd.DataFrame, file: Path) -> pd.Series:
    try:
        dates = pd.to_datetime(frame["date"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: column `date` is not a date: {exc}") from exc
    if getattr(dates.dt, "tz", None) is not None:
        raise ValueError(f"{file}: column `date` must be tz-naive, got {dates.dt.tz}")
    if dates.isna().any():
        raise ValueError(f"{file}: column `date` is missing at row {int(dates.isna().argmax())}")
    # one resolution for every run, so that dates of different files compare equal
    return dates.astype("datetime64[ns]")


def _check_unique(frame: pd.DataFrame, keys: list[str], file: Path) -> None:
    duplicated = frame.duplicated(keys).to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        raise ValueError(f"{file}: duplicate {'/'.join(keys)} at {_where(frame, row)}")


def _clean_oos(frame: pd.DataFrame, file: Path) -> pd.DataFrame:
    out = frame.copy()
    out["date"] = _dates(frame, file)
    out["ticker"] = frame["ticker"].astype(str)
    seed = frame["seed"]
    seed_values = (
        seed.to_numpy(dtype=np.float64, na_value=np.nan)
        if pd.api.types.is_numeric_dtype(seed) and not pd.api.types.is_bool_dtype(seed)
        else None
    )
    if seed_values is None or not np.all(np.isfinite(seed_values) & (seed_values % 1 == 0)):
        raise ValueError(f"{file}: column `seed` must hold integers, got dtype {seed.dtype}")
    out["seed"] = seed_values.astype(np.int64)
    for column in ("signal", "vol", "next_return"):
        out[column] = _numeric(out, column, file)
    outside = np.abs(out["signal"].to_numpy()) > 1.0 + _SIGNAL_SLACK
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(
            f"{file}: a model position must lie in [-1, 1], got {out['signal'].iloc[row]} "
            f"at {_where(out, row)}"
        )
    negative = out["vol"].to_numpy() < 0
    if negative.any():
        row = int(np.argmax(negative))
        raise ValueError(f"{file}: `vol` is negative at {_where(out, row)}")
    if out.empty:
        raise ValueError(f"{file}: has no rows")
    _check_unique(out, ["date", "ticker", "seed"], file)
    return out


def _clean_benchmarks(frame: pd.DataFrame, file: Path, oos: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["date"] = _dates(frame, file)
    out["ticker"] = frame["ticker"].astype(str)
    out["strategy"] = frame["strategy"].astype(str)
    out["signal"] = _numeric(out, "signal", file)
    flag = frame["vol_scaled"]
    if not pd.api.types.is_bool_dtype(flag):
        raise ValueError(f"{file}: column `vol_scaled` must be boolean, got dtype {flag.dtype}")
    out["vol_scaled"] = flag.astype(bool)
    _check_unique(out, ["date", "ticker", "strategy"], file)
    mixed = out.groupby("strategy", sort=False)["vol_scaled"].nunique()
    if (mixed > 1).any():
        raise ValueError(
            f"{file}: `vol_scaled` changes within strategy {mixed[mixed > 1].index[0]!r}"
        )
    # vol and next_return come from oos.parquet, so every benchmark row needs an oos row
    known = pd.MultiIndex.from_frame(oos[["date", "ticker"]])
    unknown = ~pd.MultiIndex.from_frame(out[["date", "ticker"]]).isin(known)
    if unknown.any():
        row = int(np.argmax(unknown))
        raise ValueError(f"{file}: {_where(out, row)} is not a date/ticker of {OOS_FILE}")
    return out


# ---------------------------------------------------------------------------------------------
# panels: one [T, N] array per seed on each run's own date x ticker grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Strategy:
    """A strategy's positions on its run's grid, and the rows of the common dates."""

    name: str
    label: str
    is_model: bool
    signals: list[NDArray[np.float64]]  # per seed, each [T_run, N_run]
    vol: NDArray[np.float64] | None  # [T_run, N_run]; None = unscaled weights
    next_return: NDArray[np.float64]  # [T_run, N_run]
    rows: NDArray[np.intp]  # [T_common], rows of the run grid on the common dates
    run: Run


def _as_runs(runs: Run | Iterable[Run]) -> list[Run]:
    listed = [runs] if isinstance(runs, Run) else list(runs)
    if not listed:
        raise ValueError("`runs` must hold at least one run")
    bad = [type(r).__name__ for r in listed if not isinstance(r, Run)]
    if bad:
        raise ValueError(f"`runs` must be Run objects (see load_run), got {bad[0]}")
    paths = [r.path.resolve() for r in listed]
    repeated = [p for i, p in enumerate(paths) if p in paths[:i]]
    if repeated:
        raise ValueError(f"`runs`: run directory {repeated[0]} is given twice")
    return listed


def common_dates(runs: Run | Iterable[Run]) -> pd.DatetimeIndex:
    """The out-of-sample dates every run has, ascending: the report's evaluation period.

    Parameters
    ----------
    runs : Run or iterable of Run

    Returns
    -------
    pandas.DatetimeIndex, length T_common
    """
    listed = _as_runs(runs)
    grids = [pd.DatetimeIndex(np.unique(r.oos["date"].to_numpy())) for r in listed]
    common = reduce(lambda a, b: a.intersection(b), grids).sort_values()
    if common.empty:
        spans = ", ".join(
            f"{r.path} {g[0]:%Y-%m-%d}..{g[-1]:%Y-%m-%d}"
            for r, g in zip(listed, grids, strict=True)
        )
        raise ValueError(f"`runs` share no out-of-sample date: {spans}")
    return pd.DatetimeIndex(common, name="date")


def _model_names(runs: list[Run], taken: set[str]) -> list[str]:
    """Each run's label; suffixed with the run directory where labels collide."""
    labels = [r.label for r in runs]
    names: list[str] = []
    for run in runs:
        name = run.label
        if labels.count(name) > 1 or name in taken:
            name = f"{run.label} ({run.path.name})"
        if name in taken or name in names:
            name = f"{run.label} ({run.path})"
        names.append(name)
    return names


@dataclass(frozen=True, eq=False)
class _Grid:
    """A run's date x ticker grid and where each oos row sits on it."""

    dates: pd.DatetimeIndex  # [T_run], ascending
    tickers: pd.Index  # [N_run], in order of first appearance
    row: NDArray[np.intp]  # [len(oos)], date position of each oos row
    col: NDArray[np.intp]  # [len(oos)], ticker position of each oos row

    @classmethod
    def of(cls, oos: pd.DataFrame) -> _Grid:
        dates = pd.DatetimeIndex(np.unique(oos["date"].to_numpy()))
        col, tickers = pd.factorize(oos["ticker"], sort=False)
        return cls(dates, pd.Index(tickers), dates.get_indexer(pd.DatetimeIndex(oos["date"])), col)

    def panel(
        self, values: NDArray[np.float64], mask: NDArray[np.bool_] | None = None
    ) -> NDArray[np.float64]:
        """Scatter one value per oos row (``mask`` selects rows) into a [T_run, N_run] panel."""
        row, col = (self.row, self.col) if mask is None else (self.row[mask], self.col[mask])
        out = np.full((len(self.dates), len(self.tickers)), np.nan)
        out[row, col] = values if mask is None else values[mask]
        return out


def _shared_panel(run: Run, grid: _Grid, column: str) -> NDArray[np.float64]:
    """``vol`` or ``next_return`` as a [T_run, N_run] panel, checked equal across seeds."""
    values = run.oos[column].to_numpy()
    panel = grid.panel(values)
    # the runner writes the same vol and next-day return for every seed
    same = np.isclose(values, panel[grid.row, grid.col], rtol=1e-12, atol=0.0, equal_nan=True)
    if not same.all():
        row = int(np.argmin(same))
        raise ValueError(
            f"{run.path / OOS_FILE}: `{column}` differs between seeds at {_where(run.oos, row)}"
        )
    return panel


def _benchmark_strategies(
    run: Run,
    grid: _Grid,
    vol: NDArray[np.float64],
    nxt: NDArray[np.float64],
    rows: NDArray[np.intp],
) -> list[_Strategy]:
    bench = run.benchmarks
    b_grid = _Grid(
        grid.dates,
        grid.tickers,
        grid.dates.get_indexer(pd.DatetimeIndex(bench["date"])),
        grid.tickers.get_indexer(pd.Index(bench["ticker"])),
    )
    outside = (b_grid.row < 0) | (b_grid.col < 0)
    if outside.any():  # load_run checks this; a Run built by hand may not have been
        raise ValueError(
            f"{run.path / BENCHMARKS_FILE}: {_where(bench, int(np.argmax(outside)))} is not a "
            f"date/ticker of {OOS_FILE}"
        )
    names = bench["strategy"].to_numpy()
    signal = bench["signal"].to_numpy()
    out = []
    for name in pd.unique(names):
        mine = names == name
        scaled = bool(bench["vol_scaled"].to_numpy()[mine][0])
        panel = b_grid.panel(signal, mine)
        out.append(
            _Strategy(str(name), str(name), False, [panel], vol if scaled else None, nxt, rows, run)
        )
    return out


def _strategies(runs: list[Run]) -> list[_Strategy]:
    """Benchmarks of the first run, then one model per run, all cut to the common dates."""
    common = common_dates(runs)
    benchmarks: list[_Strategy] = []
    models: list[_Strategy] = []
    for i, run in enumerate(runs):
        grid = _Grid.of(run.oos)
        vol = _shared_panel(run, grid, "vol")
        nxt = _shared_panel(run, grid, "next_return")
        rows = grid.dates.get_indexer(common)
        seed_of_row = run.oos["seed"].to_numpy()
        signal = run.oos["signal"].to_numpy()
        signals = [grid.panel(signal, seed_of_row == seed) for seed in run.seeds]
        # eq. (1): model positions are always vol-scaled
        models.append(_Strategy(run.label, run.label, True, signals, vol, nxt, rows, run))
        if i == 0:
            benchmarks = _benchmark_strategies(run, grid, vol, nxt, rows)
    names = _model_names(runs, {b.name for b in benchmarks})
    return benchmarks + [replace(m, name=n) for m, n in zip(models, names, strict=True)]


def _returns(strategy: _Strategy, cost_bps: float, delay: int) -> list[NDArray[np.float64]]:
    out = []
    for signal in strategy.signals:
        held = delay_signal(signal, delay) if delay else signal
        # computed on the run's whole grid so that the first common date pays the trade from
        # the run's previous position (eqs. 12-13), then cut to the common dates
        daily = strategy_returns(held, strategy.next_return, strategy.vol, cost_bps=cost_bps)
        out.append(daily[strategy.rows])
    return out


def _turnover(strategy: _Strategy) -> list[NDArray[np.float64]]:
    """Per seed, the daily portfolio turnover on the common dates (eq. 12, 1/N_t average)."""
    return [
        portfolio_returns(turnover(signal, strategy.vol, VOL_TARGET))[strategy.rows]
        for signal in strategy.signals
    ]


def _check_cost(cost_bps: object, name: str = "cost_bps") -> float:
    if isinstance(cost_bps, bool) or not isinstance(cost_bps, Real):
        raise ValueError(f"`{name}` must be a number of basis points, got {cost_bps!r}")
    value = float(cost_bps)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {cost_bps!r}")
    return value


def _check_delay(delay: object, name: str = "delay") -> int:
    if isinstance(delay, bool) or not isinstance(delay, Integral) or int(delay) < 0:
        raise ValueError(f"`{name}` must be an integer number of sessions >= 0, got {delay!r}")
    return int(delay)


def daily_returns(
    runs: Run | Iterable[Run], cost_bps: float = 0.0, delay: int = 0
) -> dict[str, list[NDArray[np.float64]]]:
    """Daily portfolio returns of every strategy, per seed, on the runs' common dates.

    Benchmarks come from the first run (one "seed" each); each run adds its model under its
    label (suffixed with the run directory where two runs share a label). Returns are
    ``momentum.portfolio.strategy_returns``: ``1/N_t sum_i (captured - c * TO)`` (eqs. 1,
    12, 13), vol-scaled for models and for benchmarks flagged ``vol_scaled``.

    Parameters
    ----------
    runs : Run or iterable of Run
    cost_bps : float
        Cost per unit of turnover, in basis points (>= 0).
    delay : int
        Trade every signal this many sessions late (`momentum.portfolio.delay_signal`).

    Returns
    -------
    dict[str, list[ndarray of shape [T_common]]]
        Strategy name -> one daily series per seed; row t is earned over (t, t+1] with
        t = ``common_dates(runs)[row]``; NaN where no asset is held.
    """
    cost = _check_cost(cost_bps)
    k = _check_delay(delay)
    return {s.name: _returns(s, cost, k) for s in _strategies(_as_runs(runs))}


# ---------------------------------------------------------------------------------------------
# aggregation over seeds
# ---------------------------------------------------------------------------------------------


def _seed_mean(series: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Date-by-date mean over seeds, ignoring a seed's NaN; NaN where every seed is NaN.

    Averaging the seeds' portfolio returns is the return of the portfolio that holds each
    seed's positions with weight 1/S (each paying its own costs).
    """
    stacked = np.vstack(series)  # (seeds, T)
    finite = np.isfinite(stacked)
    count = finite.sum(axis=0)
    total = np.where(finite, stacked, 0.0).sum(axis=0)
    out = np.full(stacked.shape[1], np.nan)
    out[count > 0] = total[count > 0] / count[count > 0]
    return out


def _mean_std(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and sample std (ddof 1) over axis 0 (seeds); std NaN with a single seed."""
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.full(values.shape[1:], np.nan)
    return mean, std


def _finite_mean(x: NDArray[np.float64]) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass(frozen=True)
class _SeedTable:
    """Per-strategy mean and std over seeds of some columns."""

    mean: pd.DataFrame
    std: pd.DataFrame
    seeds: pd.Series

    def numbers(self) -> pd.DataFrame:
        """Mean columns, then ``"<column> std"`` columns, then ``Seeds``: for the CSV."""
        std = self.std.add_suffix(" std")
        return pd.concat([self.mean, std, self.seeds.rename("Seeds")], axis=1)

    def cells(self) -> pd.DataFrame:
        """``"mean (std)"`` strings as the papers print them (no std for one seed)."""
        rows = [
            [
                _fmt(m) if n < 2 else f"{_fmt(m)} ({_fmt(s)})"
                for m, s in zip(mean_row, std_row, strict=True)
            ]
            for mean_row, std_row, n in zip(
                self.mean.to_numpy(), self.std.to_numpy(), self.seeds.to_numpy(), strict=True
            )
        ]
        return pd.DataFrame(rows, index=self.mean.index, columns=self.mean.columns)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    text = f"{value:.{_DIGITS}f}"
    # "-0.000" reads as a sign that is not there
    return f"{0.0:.{_DIGITS}f}" if float(text) == 0 else text


def _paper_table(returns: Mapping[str, list[NDArray[np.float64]]], rescale: bool) -> _SeedTable:
    means, stds, seeds = [], [], []
    for name, per_seed in returns.items():
        table = performance_table(
            {f"{name} #{i}": r for i, r in enumerate(per_seed)}, rescale=rescale
        )
        mean, std = _mean_std(table.to_numpy())
        means.append(mean)
        stds.append(std)
        seeds.append(len(per_seed))
    index = pd.Index(list(returns), name="Strategy")
    return _SeedTable(
        mean=pd.DataFrame(means, index=index, columns=list(PAPER_COLUMNS)),
        std=pd.DataFrame(stds, index=index, columns=list(PAPER_COLUMNS)),
        seeds=pd.Series(seeds, index=index, dtype=np.int64),
    )


def _mean_sharpe(per_seed: list[NDArray[np.float64]]) -> float:
    return float(np.mean([sharpe_ratio(r) for r in per_seed]))


# ---------------------------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------------------------


def _resolve(name: str, strategies: list[_Strategy]) -> str | None:
    """The strategy a combination names: exact strategy name, else a model's run label, else
    a model's ``config["model"]`` (both case-insensitive); the first run wins."""
    for s in strategies:
        if s.name == name:
            return s.name
    wanted = name.lower()
    for s in strategies:
        if s.is_model and s.label.lower() == wanted:
            return s.name
    for s in strategies:
        if s.is_model and str(s.run.config.get("model", "")).lower() == wanted:
            return s.name
    return None


def _combination_pairs(
    strategies: list[_Strategy], combinations: Sequence[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs to combine (default ones when present, then the caller's) and notes on skips."""
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    for a, b in _DEFAULT_COMBINATIONS:
        ra, rb = _resolve(a, strategies), _resolve(b, strategies)
        if ra is not None and rb is not None:
            pairs.append((ra, rb))
        elif (a, b) == _DEFAULT_COMBINATIONS[0]:
            notes.append(
                f"{a.upper()}+{b.upper()} is left out: the runs lack a {a} or {b} benchmark."
            )
    for i, pair in enumerate(combinations):
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"`combinations[{i}]` must be a pair of strategy names, got {pair!r}")
        resolved = tuple(_resolve(str(p), strategies) for p in pair)
        if None in resolved:
            unknown = [p for p, r in zip(pair, resolved, strict=True) if r is None]
            raise ValueError(
                f"`combinations[{i}]` names unknown strategy {unknown[0]!r}; "
                f"have {[s.name for s in strategies]}"
            )
        if resolved[0] == resolved[1]:
            raise ValueError(f"`combinations[{i}]` pairs {pair[0]!r} with itself")
        a_name, b_name = str(resolved[0]), str(resolved[1])
        if (a_name, b_name) not in pairs and (b_name, a_name) not in pairs:
            pairs.append((a_name, b_name))
    return pairs, notes


def _combination_table(
    pairs: list[tuple[str, str]], mean_returns: Mapping[str, NDArray[np.float64]]
) -> pd.DataFrame:
    """STMOM Table 5: each leg rescaled to 15% vol ex-post, averaged 50/50, rescaled again."""
    combined: dict[str, NDArray[np.float64]] = {}
    correlation: list[float] = []
    for a, b in pairs:
        leg_a = rescale_to_target_vol(mean_returns[a])
        leg_b = rescale_to_target_vol(mean_returns[b])
        combined[f"{a}+{b}"] = 0.5 * (leg_a + leg_b)
        both = np.isfinite(leg_a) & np.isfinite(leg_b)
        correlation.append(_correlation(leg_a[both], leg_b[both]))
    table = performance_table(combined, rescale=True)
    table["Leg correlation"] = correlation
    return table


def _correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    if a.size < 2 or a.max() == a.min() or b.max() == b.min():
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------------
# plots (object-oriented matplotlib: an Agg canvas per figure, no pyplot state, no display)
# ---------------------------------------------------------------------------------------------


def _styles(strategies: Sequence[_Strategy]) -> dict[str, dict[str, Any]]:
    """One colour per strategy (tab20 beyond ten); models solid and thicker, benchmarks dashed."""
    palette = matplotlib.colormaps["tab10" if len(strategies) <= 10 else "tab20"]
    return {
        s.name: {
            "color": palette(i % palette.N),
            "linestyle": "-" if s.is_model else "--",
            "linewidth": 1.6 if s.is_model else 1.0,
        }
        for i, s in enumerate(strategies)
    }


def _save(figure: Figure, ax: Any, file: Path, legend: bool = True) -> None:
    if legend:
        # outside the axes: with a dozen strategies an inside legend hides the lines
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(file, dpi=_DPI, format="png", bbox_inches="tight")


def _plot_cumulative(
    dates: pd.DatetimeIndex,
    mean_returns: Mapping[str, NDArray[np.float64]],
    styles: Mapping[str, dict[str, Any]],
    file: Path,
) -> None:
    figure = Figure(figsize=(10, 5.5))
    ax = figure.add_subplot()
    for name, r in mean_returns.items():
        scaled = rescale_to_target_vol(r)
        # compounded growth of 1; a day without a return (NaN) leaves wealth unchanged
        wealth = np.cumprod(1.0 + np.where(np.isfinite(scaled), scaled, 0.0))
        ax.plot(dates, wealth, label=name, **styles[name])
    ax.set_yscale("log")
    ax.set_title(f"Cumulative return, each strategy rescaled to {VOL_TARGET:.0%} vol (ex-post)")
    ax.set_ylabel("growth of 1 (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    _save(figure, ax, file)


def _plot_turnover(turnovers: Mapping[str, list[NDArray[np.float64]]], file: Path) -> None:
    names = list(turnovers)
    data = []
    for name in names:
        pooled = np.concatenate(turnovers[name])
        finite = pooled[np.isfinite(pooled)]
        # an empty box would make matplotlib warn; a strategy that never holds shows at 0
        data.append(finite if finite.size else np.zeros(1))
    figure = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 5))
    ax = figure.add_subplot()
    positions = list(range(1, len(names) + 1))
    ax.boxplot(data, positions=positions, flierprops={"markersize": 2})
    ax.set_xticks(positions, names, rotation=30, ha="right")
    ax.set_title("Daily portfolio turnover (eq. 12, 1/N_t average over assets; seeds pooled)")
    ax.set_ylabel("turnover")
    ax.grid(True, axis="y", alpha=0.3)
    _save(figure, ax, file, legend=False)


def _plot_cost(
    cost_table: pd.DataFrame,
    costs: Sequence[float],
    styles: Mapping[str, dict[str, Any]],
    file: Path,
) -> None:
    figure = Figure(figsize=(8, 5))
    ax = figure.add_subplot()
    for name, row in cost_table.iterrows():
        values = row.to_numpy(dtype=np.float64)
        ax.plot(costs, values, marker="o", markersize=3, label=str(name), **styles[str(name)])
    ax.set_title("Sharpe ratio net of transaction costs (eq. 13; mean over seeds)")
    ax.set_xlabel("cost per unit of turnover (bps)")
    ax.set_ylabel("Sharpe")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.grid(True, alpha=0.3)
    _save(figure, ax, file)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """Everything the report prints, computed once."""

    paper: dict[tuple[float, bool], _SeedTable]  # (cost, rescaled) -> paper table
    costs: pd.DataFrame  # [strategies, costs] mean Sharpe
    turnover: pd.DataFrame  # [strategies, 2]: Turnover, Seeds
    correlation: pd.DataFrame  # [strategies, strategies]
    combinations: pd.DataFrame | None  # [pairs, paper columns + leg correlation]
    delays: pd.DataFrame  # [strategies, delays] mean Sharpe
    mean_returns: dict[str, NDArray[np.float64]]  # seed-mean daily return at 0 bps
    turnovers: dict[str, list[NDArray[np.float64]]]  # per seed daily turnover


def _check_arguments(
    cost_bps: Iterable[float], delays: Iterable[int]
) -> tuple[list[float], float | None, list[int]]:
    """Sorted costs, the cost of the net paper table (None: no cost given) and sorted delays."""
    if isinstance(cost_bps, (str, bytes)) or not isinstance(cost_bps, Iterable):
        raise ValueError(f"`cost_bps` must be a sequence of numbers, got {cost_bps!r}")
    given = [_check_cost(c, "cost_bps") for c in cost_bps]
    if not given:
        raise ValueError("`cost_bps` must hold at least one cost")
    nonzero = [c for c in given if c > 0]
    net_cost = _PAPER_NET_COST if _PAPER_NET_COST in given else (nonzero[0] if nonzero else None)
    if isinstance(delays, (str, bytes)) or not isinstance(delays, Iterable):
        raise ValueError(f"`delays` must be a sequence of integers, got {delays!r}")
    lags = sorted({0, *(_check_delay(d, "delays") for d in delays)})
    return sorted(set(given)), net_cost, lags


def _tables(
    strategies: list[_Strategy],
    costs: list[float],
    net_cost: float | None,
    lags: list[int],
    pairs: list[tuple[str, str]],
) -> _Tables:
    names = [s.name for s in strategies]
    index = pd.Index(names, name="Strategy")
    paper_costs = [0.0] + ([net_cost] if net_cost is not None else [])
    by_cost = {c: {s.name: _returns(s, c, 0) for s in strategies} for c in {*paper_costs, *costs}}
    gross = by_cost[0.0]
    by_delay = {k: {s.name: _returns(s, 0.0, k) for s in strategies} if k else gross for k in lags}
    turnovers = {s.name: _turnover(s) for s in strategies}
    mean_returns = {name: _seed_mean(r) for name, r in gross.items()}
    correlation = pd.DataFrame(mean_returns).corr()
    correlation.index.name = "Strategy"
    return _Tables(
        paper={
            (c, scaled): _paper_table(by_cost[c], scaled)
            for c in paper_costs
            for scaled in (False, True)
        },
        costs=pd.DataFrame(
            [[_mean_sharpe(by_cost[c][n]) for c in costs] for n in names],
            index=index,
            columns=[f"{_bps(c)} bps" for c in costs],
        ),
        turnover=pd.DataFrame(
            {
                "Turnover": [
                    float(np.mean([_finite_mean(t) for t in turnovers[n]])) for n in names
                ],
                "Seeds": [len(turnovers[n]) for n in names],
            },
            index=index,
        ),
        correlation=correlation,
        combinations=_combination_table(pairs, mean_returns) if pairs else None,
        delays=pd.DataFrame(
            [[_mean_sharpe(by_delay[k][n]) for k in lags] for n in names],
            index=index,
            columns=[str(k) for k in lags],
        ),
        mean_returns=mean_returns,
        turnovers=turnovers,
    )


def _bps(cost: float) -> str:
    return f"{cost:g}"


def _json_number(value: Any) -> float | None:
    # JSON has no NaN; null says "undefined for these data"
    number = float(value)
    return number if math.isfinite(number) else None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _section(
    text: str, shown: pd.DataFrame, stored: pd.DataFrame, out: Path, file: str, title: str = ""
) -> list[str]:
    """Markdown of one table (``shown``) and its CSV (``stored``, full precision) beside it."""
    (out / file).write_text(to_csv(stored))
    heading = [f"### {title}", ""] if title else []
    return [*heading, text, "", to_markdown(shown, _DIGITS), f"CSV: [{file}]({file})", ""]


def _header(runs: list[Run], strategies: list[_Strategy], dates: pd.DatetimeIndex) -> list[str]:
    models = [s for s in strategies if s.is_model]
    rows = []
    for s in models:
        own = pd.DatetimeIndex(np.unique(s.run.oos["date"].to_numpy()))
        has_windows = "window" in s.run.oos.columns
        rows.append(
            {
                "Run": str(s.run.path),
                "Model": str(s.run.config.get("model", "")),
                "Data": str(s.run.config.get("data", "")),
                "Seeds": ", ".join(str(x) for x in s.run.seeds),
                "Windows": str(s.run.oos["window"].nunique()) if has_windows else "",
                "OOS dates": f"{own[0]:%Y-%m-%d} .. {own[-1]:%Y-%m-%d} ({len(own)})",
            }
        )
    runs_table = pd.DataFrame(rows, index=pd.Index([s.name for s in models], name="Strategy"))
    benchmarks = [s.name for s in strategies if not s.is_model]
    unscaled = [s.name for s in strategies if not s.is_model and s.vol is None]
    return [
        "# Backtest report",
        "",
        to_markdown(runs_table),
        f"**Evaluation period.** All strategies are evaluated on the intersection of the runs' "
        f"out-of-sample dates: {dates[0]:%Y-%m-%d} .. {dates[-1]:%Y-%m-%d} ({len(dates)} "
        f"sessions). Benchmarks ({', '.join(benchmarks) or 'none'}) come from the first run, "
        f"`{runs[0].path}`.",
        "",
        "**Returns.** A position X_t decided at the close of t earns r_{t+1}. Models and "
        f"vol-scaled benchmarks hold X_t x {VOL_TARGET:.0%} / (vol_t x sqrt 252) per asset "
        "(eq. 1)"
        + (f"; {', '.join(unscaled)} hold their weights unscaled" if unscaled else "")
        + ". The portfolio return is the 1/N_t average over the assets held. Costs: "
        "R - c x TO (eq. 13), turnover TO as in section 3.",
        "",
    ]


def _markdown(tables: _Tables, lags: list[int], notes: list[str], out: Path) -> list[str]:
    """Sections 1 to 6 of report.md, writing each table's CSV into ``out``."""
    lines = [
        "## 1. Performance (the papers' table)",
        "",
        "Annualised figures from daily portfolio returns (`momentum.metrics`): E[Return] = "
        "mean x 252, Vol = std x sqrt 252, MDD as a fraction of the peak, Sharpe with zero "
        "risk-free rate. Cells are mean (std) over seeds (sample std); strategies with a "
        "single seed show the value alone. *Rescaled* multiplies each daily series by "
        f"{VOL_TARGET:.0%} / its realised annual vol (ex-post), as the papers' second table.",
        "",
    ]
    for (cost, scaled), table in tables.paper.items():
        kind = "rescaled" if scaled else "raw"
        lines += _section(
            "Gross of costs." if cost == 0 else f"Net of {_bps(cost)} bps per unit of turnover.",
            table.cells(),
            table.numbers(),
            out,
            f"paper_{kind}_{_bps(cost)}bps.csv",
            title=f"{'Rescaled to 15% vol' if scaled else 'Raw'}, {_bps(cost)} bps",
        )
    lines += ["## 2. Transaction costs", ""]
    lines += _section(
        "Sharpe ratio (mean over seeds) net of c bps per unit of turnover, R - c x TO "
        "(eq. 13), for each c.",
        tables.costs,
        tables.costs,
        out,
        "costs.csv",
    )
    lines += ["## 3. Turnover", ""]
    lines += _section(
        "Average daily portfolio turnover: the mean over dates of the 1/N_t average over assets "
        "of TO = 0.15 |X_t / s_t - X_{t-1} / s_{t-1}| (eq. 12; |X_t - X_{t-1}| for unscaled "
        "weights), then the mean over seeds. Entering the first position counts as a trade.",
        tables.turnover.astype({"Seeds": str}),
        tables.turnover,
        out,
        "turnover.csv",
    )
    lines += ["## 4. Correlation", ""]
    lines += _section(
        "Pearson correlation of daily returns at 0 bps (multi-seed strategies: the "
        "seed-averaged daily return).",
        tables.correlation,
        tables.correlation,
        out,
        "correlation.csv",
    )
    lines += ["## 5. Equal-risk combinations", ""]
    if tables.combinations is not None:
        lines += _section(
            "Each leg (seed-averaged daily return, 0 bps) is rescaled to 15% vol ex-post, the "
            "two are averaged 50/50 and the result is rescaled to 15% again (STMOM Table 5). "
            "`Leg correlation` is the correlation of the two rescaled legs.",
            tables.combinations,
            tables.combinations,
            out,
            "combinations.csv",
        )
    else:
        lines += ["No pair of strategies to combine.", ""]
    lines += [*(f"_{note}_" for note in notes), *([""] if notes else [])]
    lines += ["## 6. Delayed-signal stress test", ""]
    lines += _section(
        "Sharpe ratio (mean over seeds, 0 bps) when each signal is traded k sessions late: "
        "the position held over (t, t+1] is the one decided at t - k (Boutier 2023). "
        "k=0 is the strategy as traded.",
        tables.delays.rename(columns={str(k): f"k={k}" for k in lags}),
        tables.delays,
        out,
        "delays.csv",
    )
    return lines


def _explanations(strategies: list[_Strategy], out: Path) -> list[str]:
    """Section 8: each model run's explain/*.csv as a Markdown table, cells verbatim."""
    lines: list[str] = []
    for s in strategies:
        folder = s.run.path / EXPLAIN_DIR
        if not s.is_model or not folder.is_dir():
            continue
        present = sorted(p.name for p in folder.glob("*.csv"))
        ordered = [n for n in _KNOWN_EXPLANATIONS if n in present]
        ordered += [n for n in present if n not in _KNOWN_EXPLANATIONS]
        if not ordered:
            continue
        lines += [f"### {s.name}", ""]
        for file_name in ordered:
            source = folder / file_name
            try:
                # every cell as text: the explanation is shown as written
                frame = pd.read_csv(source, dtype=str, keep_default_na=False)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{source}: cannot read it as CSV: {exc}") from exc
            copy = f"explain_{_safe(s.name)}_{file_name}"
            (out / copy).write_text(source.read_text())
            lines += [
                f"#### {file_name}",
                "",
                to_markdown(frame.set_index(frame.columns[0]), _DIGITS),
                f"CSV: [{copy}]({copy})",
                "",
            ]
    return lines


def _metrics_json(tables: _Tables, costs: list[float], lags: list[int]) -> dict[str, Any]:
    raw, rescaled = tables.paper[(0.0, False)], tables.paper[(0.0, True)]
    out: dict[str, Any] = {}
    for n in tables.costs.index:
        out[n] = {
            "raw": {c: _json_number(raw.mean.at[n, c]) for c in PAPER_COLUMNS},
            "rescaled": {c: _json_number(rescaled.mean.at[n, c]) for c in PAPER_COLUMNS},
            "raw_std": {c: _json_number(raw.std.at[n, c]) for c in PAPER_COLUMNS},
            "rescaled_std": {c: _json_number(rescaled.std.at[n, c]) for c in PAPER_COLUMNS},
            "seeds": int(raw.seeds[n]),
            "sharpe_by_cost": {
                _bps(c): _json_number(tables.costs.at[n, f"{_bps(c)} bps"]) for c in costs
            },
            "sharpe_by_delay": {str(k): _json_number(tables.delays.at[n, str(k)]) for k in lags},
            "turnover": _json_number(tables.turnover.at[n, "Turnover"]),
        }
    return out


def build_report(
    run_paths: Sequence[str | Path],
    out: str | Path,
    cost_bps: Sequence[float] = DEFAULT_COST_BPS,
    delays: Sequence[int] = DEFAULT_DELAYS,
    *,
    combinations: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the report of one or more runs into ``out``.

    Writes ``report.md``; the tables as CSV beside it (``paper_raw_0bps.csv``,
    ``paper_rescaled_0bps.csv``, the same at the net cost, e.g. ``paper_raw_5bps.csv``,
    ``costs.csv``, ``turnover.csv``, ``correlation.csv``, ``combinations.csv``,
    ``delays.csv``, copies of the runs' explanation CSVs); ``metrics.json``;
    ``plots/cumulative_returns.png``, ``plots/turnover.png``, ``plots/sharpe_vs_cost.png``.

    Parameters
    ----------
    run_paths : sequence of str or Path
        Run directories (see `load_run`). Benchmarks come from the first; all strategies
        are evaluated on the dates every run has out of sample.
    out : str or Path
        Output directory (created; may be a run directory).
    cost_bps : sequence of float
        Costs of the transaction-cost table in bps per unit of turnover. The paper tables
        are printed at 0 bps and at 5 bps (or the first non-zero cost given).
    delays : sequence of int
        Sessions of delay in the stress test (0, the undelayed figure, is always shown).
    combinations : sequence of (str, str)
        Extra pairs for the equal-risk combination table, by strategy name or run label;
        TSMOM+CSMOM and DMN+SLP are included whenever present.

    Returns
    -------
    Path
        ``out / "report.md"``.

    Notes
    -----
    ``metrics.json`` maps each strategy to ``{"raw": {column: mean over seeds},
    "rescaled": {...}, "raw_std": {...}, "rescaled_std": {...}, "seeds": n,
    "sharpe_by_cost": {bps: mean Sharpe}, "sharpe_by_delay": {sessions: mean Sharpe},
    "turnover": mean daily turnover}``; the paper columns are at 0 bps and undefined values
    are null.
    """
    if isinstance(run_paths, (str, Path)):
        raise ValueError("`run_paths` must be a list of run directories, got a single path")
    costs, net_cost, lags = _check_arguments(cost_bps, delays)
    runs = _as_runs([load_run(p) for p in run_paths])
    dates = common_dates(runs)
    strategies = _strategies(runs)
    pairs, notes = _combination_pairs(strategies, combinations)
    tables = _tables(strategies, costs, net_cost, lags, pairs)

    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    lines = _header(runs, strategies, dates) + _markdown(tables, lags, notes, out)

    styles = _styles(strategies)
    _plot_cumulative(dates, tables.mean_returns, styles, plots / "cumulative_returns.png")
    _plot_turnover(tables.turnovers, plots / "turnover.png")
    _plot_cost(tables.costs, costs, styles, plots / "sharpe_vs_cost.png")
    lines += [
        "## 7. Plots",
        "",
        "![Cumulative returns](plots/cumulative_returns.png)",
        "",
        "![Daily turnover](plots/turnover.png)",
        "",
        "![Sharpe vs cost](plots/sharpe_vs_cost.png)",
        "",
        "## 8. Model explanations",
        "",
    ]
    lines += _explanations(strategies, out) or ["No run has an `explain/` folder with CSVs.", ""]

    metrics = _metrics_json(tables, costs, lags)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip("\n") + "\n")
    return report
