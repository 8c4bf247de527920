"""The report's plots: object-oriented matplotlib, an Agg canvas per figure.

No pyplot state and no display, so reports build in worker processes and on servers. Part of
`training.report`; every series plotted here is computed elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from momentum.portfolio import VOL_TARGET, rescale_to_target_vol
from training.reporting.runs import Strategy

__all__ = [
    "plot_cost",
    "plot_cumulative",
    "plot_rolling_correlation",
    "plot_turnover",
    "styles_of",
]

_DPI = 120


def styles_of(strategies: Sequence[Strategy]) -> dict[str, dict[str, Any]]:
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


def plot_cumulative(
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


def plot_turnover(turnovers: Mapping[str, list[NDArray[np.float64]]], file: Path) -> None:
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


def plot_cost(
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


def plot_rolling_correlation(
    rolling: pd.DataFrame, against: str, styles: Mapping[str, dict[str, Any]], file: Path
) -> None:
    """Each column of ``rolling`` (a correlation per date) over time (STMOM Fig. 3, right)."""
    figure = Figure(figsize=(10, 4.5))
    ax = figure.add_subplot()
    for name in rolling.columns:
        ax.plot(rolling.index, rolling[name].to_numpy(), label=str(name), **styles[str(name)])
    ax.set_title(f"1-year (252-session) rolling correlation of daily returns with {against}")
    ax.set_ylabel("correlation")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.grid(True, alpha=0.3)
    _save(figure, ax, file)
