"""Backtest run directories read from disk, and each strategy's daily returns on them.

Reads what the backtest runner writes (no torch, no models: files only)::

    RUN/config.json        {"label": ..., "model": ..., "data": ..., "seeds": ..., ...}
    RUN/oos.parquet        date, ticker, seed, [window], signal, vol, next_return, and position
                           (per-asset leverage) when config.json's construction is not
                           vol_scaled (one row per date x ticker x seed; extra columns ignored)
    RUN/benchmarks.parquet date, ticker, strategy, signal, vol_scaled (on the oos dates/tickers)

Every return comes from `momentum.portfolio` (positions, eqs. 1, 12, 13; signal delay); this
module only lays the rows out as [T, N] panels on each run's own date x ticker grid and cuts
them to the dates every run has. Part of `training.report`, which re-exports the public names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from momentum.portfolio import (
    VOL_TARGET,
    captured_returns,
    delay_signal,
    portfolio_returns,
    strategy_returns,
    turnover,
)

__all__ = [
    "BENCHMARKS_FILE",
    "CONFIG_FILE",
    "OOS_FILE",
    "Run",
    "Strategy",
    "as_runs",
    "asset_returns",
    "build_strategies",
    "check_cost",
    "check_delay",
    "common_dates",
    "daily_returns",
    "seed_returns",
    "seed_turnover",
]

OOS_FILE = "oos.parquet"
BENCHMARKS_FILE = "benchmarks.parquet"
CONFIG_FILE = "config.json"

_OOS_COLUMNS = ("date", "ticker", "seed", "signal", "vol", "next_return")
_BENCHMARK_COLUMNS = ("date", "ticker", "strategy", "signal", "vol_scaled")
# model positions are tanh outputs; a little slack for float32 round-trips
_SIGNAL_SLACK = 1e-6

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
    def construction(self) -> str:
        """``config["construction"]``: how positions became weights (default vol_scaled)."""
        return str(self.config.get("construction", "vol_scaled"))

    @property
    def objective(self) -> str:
        """``config["objective"]``: the training loss (default sharpe, as runs before it)."""
        return str(self.config.get("objective", "sharpe"))

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
    # a constructed portfolio (not eq. 1's vol scaling) is carried as its per-asset leverage
    constructed = config.get("construction", "vol_scaled") != "vol_scaled"
    columns = (*_OOS_COLUMNS, "position") if constructed else _OOS_COLUMNS
    oos = _clean_oos(_read_parquet(path / OOS_FILE, columns), path / OOS_FILE)
    if constructed:
        oos["position"] = _numeric(oos, "position", path / OOS_FILE)
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
class Strategy:
    """A strategy's positions on its run's grid, and the rows of the common dates."""

    name: str
    label: str
    is_model: bool
    signals: list[NDArray[np.float64]]  # per seed, each [T_run, N_run]
    vol: NDArray[np.float64] | None  # [T_run, N_run]; None = unscaled weights
    next_return: NDArray[np.float64]  # [T_run, N_run]
    rows: NDArray[np.intp]  # [T_common], rows of the run grid on the common dates
    run: Run
    tickers: pd.Index  # [N_run], the columns of the panels


def as_runs(runs: Run | Iterable[Run]) -> list[Run]:
    """``runs`` as a non-empty list of distinct `Run` objects."""
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
    listed = as_runs(runs)
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
) -> list[Strategy]:
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
        sized = vol if scaled else None
        out.append(
            Strategy(str(name), str(name), False, [panel], sized, nxt, rows, run, grid.tickers)
        )
    return out


def build_strategies(runs: list[Run]) -> list[Strategy]:
    """Benchmarks of the first run, then one model per run, all cut to the common dates."""
    common = common_dates(runs)
    benchmarks: list[Strategy] = []
    models: list[Strategy] = []
    for i, run in enumerate(runs):
        grid = _Grid.of(run.oos)
        vol = _shared_panel(run, grid, "vol")
        nxt = _shared_panel(run, grid, "next_return")
        rows = grid.dates.get_indexer(common)
        seed_of_row = run.oos["seed"].to_numpy()
        # eq. (1) vol-scales the signal; any other construction stored its per-asset
        # leverage N_t w (`momentum.construction`), whose 1/N_t average return is sum_i w_i r_i
        scaled = run.construction == "vol_scaled"
        signal = run.oos["signal" if scaled else "position"].to_numpy()
        signals = [grid.panel(signal, seed_of_row == seed) for seed in run.seeds]
        sized = vol if scaled else None
        models.append(
            Strategy(run.label, run.label, True, signals, sized, nxt, rows, run, grid.tickers)
        )
        if i == 0:
            benchmarks = _benchmark_strategies(run, grid, vol, nxt, rows)
    names = _model_names(runs, {b.name for b in benchmarks})
    return benchmarks + [replace(m, name=n) for m, n in zip(models, names, strict=True)]


def seed_returns(strategy: Strategy, cost_bps: float, delay: int) -> list[NDArray[np.float64]]:
    """Per seed, the daily portfolio return on the common dates (eqs. 1, 12, 13)."""
    out = []
    for signal in strategy.signals:
        held = delay_signal(signal, delay) if delay else signal
        # computed on the run's whole grid so that the first common date pays the trade from
        # the run's previous position (eqs. 12-13), then cut to the common dates
        daily = strategy_returns(held, strategy.next_return, strategy.vol, cost_bps=cost_bps)
        out.append(daily[strategy.rows])
    return out


def seed_turnover(strategy: Strategy) -> list[NDArray[np.float64]]:
    """Per seed, the daily portfolio turnover on the common dates (eq. 12, 1/N_t average)."""
    return [
        portfolio_returns(turnover(signal, strategy.vol, VOL_TARGET))[strategy.rows]
        for signal in strategy.signals
    ]


def check_cost(cost_bps: object, name: str = "cost_bps") -> float:
    """A cost in bps per unit of turnover, checked finite and >= 0."""
    if isinstance(cost_bps, bool) or not isinstance(cost_bps, Real):
        raise ValueError(f"`{name}` must be a number of basis points, got {cost_bps!r}")
    value = float(cost_bps)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {cost_bps!r}")
    return value


def check_delay(delay: object, name: str = "delay") -> int:
    """A delay in sessions, checked an integer >= 0."""
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
    cost = check_cost(cost_bps)
    k = check_delay(delay)
    return {s.name: seed_returns(s, cost, k) for s in build_strategies(as_runs(runs))}


def asset_returns(strategy: Strategy) -> pd.DataFrame:
    """Each asset's daily captured return at 0 bps on the common dates, averaged over seeds.

    The per-asset counterpart of the seed-averaged portfolio return: column i is
    ``X_t * 0.15 / s_t * r_{t+1}`` (eq. 1; ``X_t r_{t+1}`` for unscaled weights) of asset i,
    the mean over seeds where a seed holds it.

    Returns
    -------
    pandas.DataFrame, shape [T_common, N_run]
        Columns are the run's tickers; NaN where no seed holds the asset.
    """
    stacked = np.stack(
        [
            captured_returns(signal, strategy.next_return, strategy.vol)[strategy.rows]
            for signal in strategy.signals
        ]
    )  # (seeds, T_common, N_run)
    held = np.isfinite(stacked)
    count = held.sum(axis=0)
    total = np.where(held, stacked, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    return pd.DataFrame(mean, columns=strategy.tickers)
