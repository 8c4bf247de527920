"""The papers' tables, honest comparisons and plots from backtest run directories.

Reads what the backtest runner writes (see `training.reporting.runs`; no torch, no models)::

    RUN/config.json        {"label": ..., "model": ..., "data": ..., "seeds": ..., ...}
    RUN/oos.parquet        date, ticker, seed, [window], signal, vol, next_return
    RUN/benchmarks.parquet date, ticker, strategy, signal, vol_scaled
    RUN/explain/*.csv      optional model explanations, shown verbatim

and writes one report over one or more runs:

1. the papers' performance table (Lim et al. 2019 Tables 1-2; Tan, Roberts & Zohren 2023
   Tables 2-3) raw, times the one constant that brings it to 15% vol (ex-post, the papers'
   "rescaled" table: no ratio changes), and vol-targeted ex-ante (leverage from the
   portfolio's own past returns only);
2. whether each model beats long-only and TSMOM: Sharpe standard errors (Lo 2002) and the
   HAC test of the difference of two Sharpe ratios (Ledoit & Wolf 2008), in plain sentences;
3. per-asset Sharpe ratios, median and MAD (QuantNet Table 1), Wilcoxon and KS tests;
4. alpha and beta against the S&P 500 index (or a stated proxy), Newey-West t-statistics;
5. 1-year rolling correlations with TSMOM (STMOM Fig. 3);
6-10. transaction costs (STMOM Table 4), turnover, correlations, equal-risk combinations
   (STMOM Table 5), the delayed-signal stress test (Boutier 2023); 11. plots;
   12. model explanations;
13-14. only when such runs are given: the DMN paper's grid of architectures x objectives
   (Lim, Zohren & Roberts 2019, Exhibits 2, 3, 6, 7; lasso, mlp_dmn, wavenet, dmn runs) and
   Boutier (2023) Table 3 with the R² and t-statistic of its signal regression and the
   delayed-signal rows (rnn, deep_rnn, gru, lstm_xs, deep_lstm runs).

Every number comes from `momentum.portfolio` (positions, eqs. 1, 12, 13; rescaling; signal
delay), `momentum.metrics` (the table columns) and `momentum.significance` (standard errors
and tests); the `training.reporting` modules arrange panels, aggregate over seeds and write
Markdown. Several seeds print as "mean (std)" (sample std over seeds), as the papers do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum.metrics import PAPER_COLUMNS
from training.reporting import papers, plots, sections
from training.reporting.compare import verdict
from training.reporting.runs import (
    Run,
    as_runs,
    build_strategies,
    check_cost,
    check_delay,
    common_dates,
    daily_returns,
    load_run,
)
from training.reporting.tables import (
    PAPER_KINDS,
    Tables,
    bps,
    combination_pairs,
    compute_tables,
    json_number,
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

# the cost of the "net" paper table when the caller's costs include it (the papers' 5 bps)
_PAPER_NET_COST = 5.0


def _check_arguments(
    cost_bps: Iterable[float], delays: Iterable[int]
) -> tuple[list[float], float | None, list[int]]:
    """Sorted costs, the cost of the net paper table (None: no cost given) and sorted delays."""
    if isinstance(cost_bps, (str, bytes)) or not isinstance(cost_bps, Iterable):
        raise ValueError(f"`cost_bps` must be a sequence of numbers, got {cost_bps!r}")
    given = [check_cost(c, "cost_bps") for c in cost_bps]
    if not given:
        raise ValueError("`cost_bps` must hold at least one cost")
    nonzero = [c for c in given if c > 0]
    net_cost = _PAPER_NET_COST if _PAPER_NET_COST in given else (nonzero[0] if nonzero else None)
    if isinstance(delays, (str, bytes)) or not isinstance(delays, Iterable):
        raise ValueError(f"`delays` must be a sequence of integers, got {delays!r}")
    lags = sorted({0, *(check_delay(d, "delays") for d in delays)})
    return sorted(set(given)), net_cost, lags


def _paper_json(tables: Tables, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in PAPER_KINDS:
        table = tables.paper[(0.0, kind)]
        out[kind] = {c: json_number(table.mean.at[name, c]) for c in PAPER_COLUMNS}
        out[f"{kind}_std"] = {c: json_number(table.std.at[name, c]) for c in PAPER_COLUMNS}
    return out


def _comparison_json(tables: Tables, name: str) -> dict[str, Any]:
    se = tables.sharpe_se.loc[name]
    asset = tables.asset_sharpe.loc[name]
    out: dict[str, Any] = {
        "sharpe_se": {
            "sharpe": json_number(se["Sharpe"]),
            "iid": json_number(se["SE (IID)"]),
            "hac": json_number(se["SE (HAC)"]),
        },
        "per_asset_sharpe": {
            "median": json_number(asset["Median"]),
            "mad": json_number(asset["MAD"]),
            "assets": int(tables.asset_sharpe["Assets"].astype(np.int64)[name]),
        },
        "alpha_beta": None,
    }
    if tables.alpha is not None and tables.market is not None:
        fit = tables.alpha.loc[name]
        out["alpha_beta"] = {
            "market": tables.market.name,
            "alpha": json_number(fit["Alpha"]),
            "alpha_t": json_number(fit["Alpha t"]),
            "beta": json_number(fit["Beta"]),
        }
    if name in tables.models:
        out["versus"] = {
            bps(cost): {
                bench: {
                    "sharpe": json_number(t.sharpe_a),
                    "benchmark_sharpe": json_number(t.sharpe_b),
                    "difference": json_number(t.difference),
                    "se": json_number(t.se),
                    "std_errors": json_number(t.z),
                    "p_value": json_number(t.p_value),
                    "days": t.n,
                    "verdict": verdict(model, bench, t),
                }
                for (model, bench), t in tests.items()
                if model == name
            }
            for cost, tests in tables.tests.items()
        }
    return out


def _metrics_json(tables: Tables, costs: list[float], lags: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in tables.costs.index:
        out[n] = {
            **_paper_json(tables, n),
            "seeds": int(tables.paper[(0.0, "raw")].seeds[n]),
            "sharpe_by_cost": {
                bps(c): json_number(tables.costs.at[n, f"{bps(c)} bps"]) for c in costs
            },
            "sharpe_by_delay": {str(k): json_number(tables.delays.at[n, str(k)]) for k in lags},
            "turnover": json_number(tables.turnover.at[n, "Turnover"]),
            **_comparison_json(tables, n),
        }
    return out


def build_report(
    run_paths: Sequence[str | Path],
    out: str | Path,
    cost_bps: Sequence[float] = DEFAULT_COST_BPS,
    delays: Sequence[int] = DEFAULT_DELAYS,
    *,
    combinations: Sequence[tuple[str, str]] = (),
    market: pd.Series | None = None,
) -> Path:
    """Write the report of one or more runs into ``out``.

    Writes ``report.md``; the tables as CSV beside it (``paper_raw_0bps.csv``,
    ``paper_rescaled_0bps.csv``, ``paper_exante_0bps.csv``, the same at the net cost, e.g.
    ``paper_raw_5bps.csv``; ``sharpe_se.csv``, ``sharpe_tests_0bps.csv``,
    ``sharpe_tests_5bps.csv``, ``asset_sharpes.csv``, ``asset_sharpe.csv``,
    ``asset_tests.csv``, ``alpha_beta.csv``, ``rolling_correlation_tsmom.csv``,
    ``costs.csv``, ``turnover.csv``, ``correlation.csv``, ``combinations.csv``,
    ``delays.csv``, copies of the runs' explanation CSVs; with the DMN paper's models
    ``dmn_grid.csv``, ``dmn_grid_sharpe.csv``, ``dmn_grid_costs.csv``; with Boutier's
    ``rnn_table.csv``, ``rnn_delays.csv``); ``metrics.json``;
    ``plots/cumulative_returns.png``, ``plots/turnover.png``, ``plots/sharpe_vs_cost.png``,
    ``plots/rolling_correlation_tsmom.png``.

    Parameters
    ----------
    run_paths : sequence of str or Path
        Run directories (see `load_run`). Benchmarks come from the first; all strategies
        are evaluated on the dates every run has out of sample.
    out : str or Path
        Output directory (created; may be a run directory).
    cost_bps : sequence of float
        Costs of the transaction-cost table in bps per unit of turnover. The paper tables
        and the Sharpe tests are printed at 0 bps and at 5 bps (or the first non-zero cost
        given).
    delays : sequence of int
        Sessions of delay in the stress test (0, the undelayed figure, is always shown).
    combinations : sequence of (str, str)
        Extra pairs for the equal-risk combination table, by strategy name or run label;
        TSMOM+CSMOM and DMN+SLP are included whenever present.
    market : pandas.Series, optional
        Index level by date for the alpha / beta table. Default: the embedded S&P 500 level
        when the first run's ``config["data"]`` is ``"sp500"``, else the equal-weight
        buy-and-hold (or long-only) benchmark as a stated proxy.

    Returns
    -------
    Path
        ``out / "report.md"``.

    Notes
    -----
    ``metrics.json`` maps each strategy to ``{"raw": {column: mean over seeds},
    "rescaled": {...}, "exante": {...}, "raw_std": {...}, "rescaled_std": {...},
    "exante_std": {...}, "seeds": n, "sharpe_by_cost": {bps: mean Sharpe},
    "sharpe_by_delay": {sessions: mean Sharpe}, "turnover": mean daily turnover,
    "sharpe_se": {"sharpe", "iid", "hac"}, "per_asset_sharpe": {"median", "mad", "assets"},
    "alpha_beta": {"market", "alpha", "alpha_t", "beta"} or null}``, and for a model
    ``"versus": {bps: {benchmark: {"sharpe", "benchmark_sharpe", "difference", "se",
    "std_errors", "p_value", "days", "verdict"}}}`` (the verdict: one plain sentence). The
    paper columns are at 0 bps; the standard errors and tests use the seed-averaged return;
    undefined values are null. Strategies of the paper sections also have ``"dmn_grid"`` or
    ``"rnn_table"`` (see `training.reporting.papers.metrics_entries`).
    """
    if isinstance(run_paths, (str, Path)):
        raise ValueError("`run_paths` must be a list of run directories, got a single path")
    if market is not None and not isinstance(market, pd.Series):
        raise ValueError(f"`market` must be a pandas Series of index levels, got {market!r}")
    costs, net_cost, lags = _check_arguments(cost_bps, delays)
    runs = as_runs([load_run(p) for p in run_paths])
    dates = common_dates(runs)
    strategies = build_strategies(runs)
    pairs, notes = combination_pairs(strategies, combinations)
    tables = compute_tables(strategies, dates, costs, net_cost, lags, pairs, market)
    paper_tables = papers.compute_papers(strategies, tables, dates)

    out = Path(out)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    styles = plots.styles_of(strategies)
    rolling_plot = None
    if tables.rolling is not None:
        rolling_plot = "plots/rolling_correlation_tsmom.png"
        plots.plot_rolling_correlation(tables.rolling, "tsmom", styles, out / rolling_plot)
    plots.plot_cumulative(dates, tables.mean_returns, styles, plot_dir / "cumulative_returns.png")
    plots.plot_turnover(tables.turnovers, plot_dir / "turnover.png")
    plots.plot_cost(tables.costs, costs, styles, plot_dir / "sharpe_vs_cost.png")

    lines = sections.header(runs, strategies, dates)
    lines += sections.performance(tables, out)
    lines += sections.comparisons(tables, out)
    lines += sections.per_asset(tables, out)
    lines += sections.market(tables, out)
    lines += sections.rolling(tables, out, rolling_plot)
    lines += sections.trading(tables, lags, notes, out)
    lines += [
        "## 11. Plots",
        "",
        "![Cumulative returns](plots/cumulative_returns.png)",
        "",
        "![Daily turnover](plots/turnover.png)",
        "",
        "![Sharpe vs cost](plots/sharpe_vs_cost.png)",
        "",
        "## 12. Model explanations",
        "",
    ]
    lines += sections.explanations(strategies, out) or [
        "No run has an `explain/` folder with CSVs.",
        "",
    ]
    lines += papers.paper_sections(paper_tables, lags, out, first=13)

    metrics = _metrics_json(tables, costs, lags)
    for name, entries in papers.metrics_entries(paper_tables).items():
        metrics[name].update(entries)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip("\n") + "\n")
    return report
