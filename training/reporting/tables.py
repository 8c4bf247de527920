"""Every table of the report, computed once: the papers' table over seeds, combinations.

A model trained with several seeds has one daily return series per seed. The papers print
"mean (std)" over seeds of each column (`SeedTable`); correlations, combinations and the
statistical comparisons use the seed-averaged series (`seed_mean`), the return of the portfolio
that holds each seed's positions with weight 1/S. Part of `training.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from momentum.metrics import PAPER_COLUMNS, performance_table, sharpe_ratio
from momentum.portfolio import ex_ante_vol_scale, rescale_to_target_vol
from momentum.significance import SharpeDifference
from training.reporting import compare
from training.reporting.runs import Strategy, seed_returns, seed_turnover

__all__ = [
    "DEFAULT_COMBINATIONS",
    "DIGITS",
    "PAPER_KINDS",
    "SeedTable",
    "Tables",
    "bps",
    "compute_tables",
    "json_number",
    "combination_pairs",
    "combination_table",
    "correlation",
    "ex_ante_targeted",
    "finite_mean",
    "fmt",
    "mean_sharpe",
    "paper_table",
    "seed_mean",
    "seed_table",
]

DIGITS = 3
"""Decimal places of the Markdown tables (the CSVs keep full precision)."""
# pairs of (labels) combined 50/50 after rescaling when present (STMOM Table 5)
DEFAULT_COMBINATIONS = (("tsmom", "csmom"), ("dmn", "slp"))
PAPER_KINDS = ("raw", "rescaled", "exante")
"""The papers' table as traded, times one constant (ex-post), and vol-targeted ex-ante."""

# ---------------------------------------------------------------------------------------------
# aggregation over seeds
# ---------------------------------------------------------------------------------------------


def seed_mean(series: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
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


def finite_mean(x: NDArray[np.float64]) -> float:
    """Mean of the finite values; nan when there is none."""
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass(frozen=True)
class SeedTable:
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
                fmt(m) if n < 2 else f"{fmt(m)} ({fmt(s)})"
                for m, s in zip(mean_row, std_row, strict=True)
            ]
            for mean_row, std_row, n in zip(
                self.mean.to_numpy(), self.std.to_numpy(), self.seeds.to_numpy(), strict=True
            )
        ]
        return pd.DataFrame(rows, index=self.mean.index, columns=self.mean.columns)


def fmt(value: float) -> str:
    """A number with `DIGITS` decimals, as the Markdown tables print it."""
    if math.isnan(value):
        return "nan"
    text = f"{value:.{DIGITS}f}"
    # "-0.000" reads as a sign that is not there
    return f"{0.0:.{DIGITS}f}" if float(text) == 0 else text


def paper_table(
    returns: Mapping[str, list[NDArray[np.float64]]],
    rescale: bool,
    columns: Sequence[str] = PAPER_COLUMNS,
) -> SeedTable:
    """The papers' columns (or other `momentum.metrics` columns) of each strategy's seeds, as
    mean and std over seeds.

    ``rescale`` multiplies each seed's series by the one constant 15% / its realised vol
    (`momentum.portfolio.rescale_to_target_vol`) first.
    """
    per_seed_values = {
        name: performance_table(
            {f"{name} #{i}": r for i, r in enumerate(per_seed)}, rescale=rescale, columns=columns
        ).to_numpy()
        for name, per_seed in returns.items()
    }
    return seed_table(per_seed_values, columns)


def seed_table(values: Mapping[str, NDArray[np.float64]], columns: Sequence[str]) -> SeedTable:
    """Mean and sample std over seeds of per-seed figures.

    Parameters
    ----------
    values : Mapping[str, ndarray of shape [seeds, len(columns)]]
        Strategy name -> one row of figures per seed.
    columns : sequence of str
        Names of the figures.

    Returns
    -------
    SeedTable
        Index named ``"Strategy"``, in the mapping's order; std nan with a single seed.
    """
    means, stds, seeds = [], [], []
    for per_seed in values.values():
        mean, std = _mean_std(np.asarray(per_seed, dtype=np.float64))
        means.append(mean)
        stds.append(std)
        seeds.append(len(per_seed))
    index = pd.Index(list(values), name="Strategy")
    return SeedTable(
        mean=pd.DataFrame(means, index=index, columns=list(columns), dtype=np.float64),
        std=pd.DataFrame(stds, index=index, columns=list(columns), dtype=np.float64),
        seeds=pd.Series(seeds, index=index, dtype=np.int64),
    )


def mean_sharpe(per_seed: list[NDArray[np.float64]]) -> float:
    """Mean over seeds of the Sharpe ratio."""
    return float(np.mean([sharpe_ratio(r) for r in per_seed]))


def ex_ante_targeted(returns: NDArray[np.float64]) -> NDArray[np.float64]:
    """A daily portfolio return run at 15% vol with leverage known the day before.

    ``r_t * L_t`` with ``L_t = 0.15 / (sigma_hat * sqrt 252)``, ``sigma_hat`` the EWM std
    (span 60, 20 observations at least) of the portfolio's own returns in rows <= t - 1:
    `momentum.portfolio.ex_ante_vol_scale`, the live positions' rule. Unlike
    `rescale_to_target_vol` the factor changes from day to day and uses no future return,
    so the Sharpe ratio changes too. NaN during the warm-up.
    """
    return returns * ex_ante_vol_scale(returns)


# ---------------------------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------------------------


def _resolve(name: str, strategies: list[Strategy]) -> str | None:
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


def combination_pairs(
    strategies: list[Strategy], combinations: Sequence[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs to combine (default ones when present, then the caller's) and notes on skips."""
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    for a, b in DEFAULT_COMBINATIONS:
        ra, rb = _resolve(a, strategies), _resolve(b, strategies)
        if ra is not None and rb is not None:
            pairs.append((ra, rb))
        elif (a, b) == DEFAULT_COMBINATIONS[0]:
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


def combination_table(
    pairs: list[tuple[str, str]], mean_returns: Mapping[str, NDArray[np.float64]]
) -> pd.DataFrame:
    """STMOM Table 5: each leg rescaled to 15% vol ex-post, averaged 50/50, rescaled again."""
    combined: dict[str, NDArray[np.float64]] = {}
    leg_correlation: list[float] = []
    for a, b in pairs:
        leg_a = rescale_to_target_vol(mean_returns[a])
        leg_b = rescale_to_target_vol(mean_returns[b])
        combined[f"{a}+{b}"] = 0.5 * (leg_a + leg_b)
        both = np.isfinite(leg_a) & np.isfinite(leg_b)
        leg_correlation.append(correlation(leg_a[both], leg_b[both]))
    table = performance_table(combined, rescale=True)
    table["Leg correlation"] = leg_correlation
    return table


def correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Pearson correlation of two NaN-free series; nan when either is constant or too short."""
    if a.size < 2 or a.max() == a.min() or b.max() == b.min():
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------------
# all the tables
# ---------------------------------------------------------------------------------------------


def bps(cost: float) -> str:
    """A cost as the report names it: ``5``, ``0.5``."""
    return f"{cost:g}"


def json_number(value: Any) -> float | None:
    """A float for JSON: null says "undefined for these data" (JSON has no NaN)."""
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Tables:
    """Everything the report prints, computed once."""

    paper: dict[tuple[float, str], SeedTable]  # (cost, kind of PAPER_KINDS) -> paper table
    costs: pd.DataFrame  # [strategies, costs] mean Sharpe
    turnover: pd.DataFrame  # [strategies, 2]: Turnover, Seeds
    correlation: pd.DataFrame  # [strategies, strategies]
    combinations: pd.DataFrame | None  # [pairs, paper columns + leg correlation]
    delays: pd.DataFrame  # [strategies, delays] mean Sharpe
    mean_returns: dict[str, NDArray[np.float64]]  # seed-mean daily return at 0 bps
    gross: dict[str, list[NDArray[np.float64]]]  # per seed daily return at 0 bps
    turnovers: dict[str, list[NDArray[np.float64]]]  # per seed daily turnover
    models: list[str]  # strategy names of the models
    compared: list[str]  # the COMPARED_BENCHMARKS present
    sharpe_se: pd.DataFrame  # [strategies, 5], seed-mean returns at 0 bps
    tests: dict[float, dict[tuple[str, str], SharpeDifference]]  # paper cost -> tests
    asset_sharpes: pd.DataFrame  # [tickers, strategies], each asset's Sharpe at 0 bps
    asset_sharpe: pd.DataFrame  # [strategies, 4], median and MAD over assets
    asset_tests: pd.DataFrame | None  # [models x compared, 6]; None without benchmarks
    rolling: pd.DataFrame | None  # [T_common, models]; None without a tsmom benchmark
    market: compare.Market | None
    alpha: pd.DataFrame | None  # [strategies, 7]; None without a market


def compute_tables(
    strategies: list[Strategy],
    dates: pd.DatetimeIndex,
    costs: list[float],
    net_cost: float | None,
    lags: list[int],
    pairs: list[tuple[str, str]],
    market_level: pd.Series | None,
) -> Tables:
    """Every table of the report from the strategies' positions."""
    names = [s.name for s in strategies]
    index = pd.Index(names, name="Strategy")
    paper_costs = [0.0] + ([net_cost] if net_cost is not None else [])
    by_cost = {
        c: {s.name: seed_returns(s, c, 0) for s in strategies} for c in {*paper_costs, *costs}
    }
    gross = by_cost[0.0]
    by_delay = {
        k: {s.name: seed_returns(s, 0.0, k) for s in strategies} if k else gross for k in lags
    }
    turnovers = {s.name: seed_turnover(s) for s in strategies}
    mean_returns = {name: seed_mean(r) for name, r in gross.items()}
    correlations = pd.DataFrame(mean_returns).corr()
    correlations.index.name = "Strategy"
    models = [s.name for s in strategies if s.is_model]
    benchmarks = {s.name for s in strategies if not s.is_model}
    compared = [b for b in compare.COMPARED_BENCHMARKS if b in benchmarks]
    tests = {
        c: compare.sharpe_tests({n: seed_mean(r) for n, r in by_cost[c].items()}, models, compared)
        for c in paper_costs
    }
    sharpes = compare.asset_sharpes(strategies)
    market = compare.market_for(
        strategies[0].run.config.get("data"), market_level, dates, mean_returns
    )
    return Tables(
        paper={
            (c, kind): _paper_kind(by_cost[c], kind) for c in paper_costs for kind in PAPER_KINDS
        },
        costs=pd.DataFrame(
            [[mean_sharpe(by_cost[c][n]) for c in costs] for n in names],
            index=index,
            columns=[f"{bps(c)} bps" for c in costs],
        ),
        turnover=pd.DataFrame(
            {
                "Turnover": [float(np.mean([finite_mean(t) for t in turnovers[n]])) for n in names],
                "Seeds": [len(turnovers[n]) for n in names],
            },
            index=index,
        ),
        correlation=correlations,
        combinations=combination_table(pairs, mean_returns) if pairs else None,
        delays=pd.DataFrame(
            [[mean_sharpe(by_delay[k][n]) for k in lags] for n in names],
            index=index,
            columns=[str(k) for k in lags],
        ),
        mean_returns=mean_returns,
        gross=gross,
        turnovers=turnovers,
        models=models,
        compared=compared,
        sharpe_se=compare.sharpe_se_table(mean_returns),
        tests=tests,
        asset_sharpes=pd.DataFrame(sharpes).rename_axis("Ticker"),
        asset_sharpe=compare.asset_sharpe_table(sharpes),
        asset_tests=compare.asset_test_table(sharpes, models, compared) if compared else None,
        rolling=(
            compare.rolling_correlation(dates, mean_returns, models, "tsmom")
            if "tsmom" in benchmarks
            else None
        ),
        market=market,
        alpha=compare.alpha_beta_table(mean_returns, market.returns) if market else None,
    )


def _paper_kind(returns: Mapping[str, list[NDArray[np.float64]]], kind: str) -> SeedTable:
    """The paper table of one of `PAPER_KINDS`."""
    if kind == "exante":
        targeted = {n: [ex_ante_targeted(r) for r in per_seed] for n, per_seed in returns.items()}
        return paper_table(targeted, rescale=False)
    return paper_table(returns, rescale=kind == "rescaled")
