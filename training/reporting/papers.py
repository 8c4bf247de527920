"""Two seed papers' own tables, shown only when their models are among the runs.

* **The DMN paper's grid** (Lim, Zohren & Roberts 2019, section V-C): each architecture
  (Lasso, MLP, WaveNet, LSTM) trained on each objective (Sharpe, Ave. Returns, MSE, Binary)
  beside the reference benchmarks (Long Only, Sgn(Returns), MACD): the Sharpe ratio
  (Exhibit 2), E[Return] and MDD rescaled to 15% vol (Exhibit 3), turnover (Exhibit 6) and
  the Sharpe ratio net of costs (Exhibit 7), in "architecture / objective" rows as the
  exhibits print them, and the Sharpe ratios as an architecture x objective matrix.
* **The RNN paper's table** (Boutier 2023, section 5, Table 3): each recurrent model by its
  input length, with the columns the runs allow (alpha and beta are in the report's section
  4), the paper's R² and t-statistic of the signal regression, and the delayed-signal
  stress test.

The grid's figures are the report's (`training.reporting.tables.Tables`), relabelled. Table
3's tail ratio and bias come from the same per-seed returns at 0 bps (`momentum.metrics`),
its R² and t from `momentum.significance.signal_regression`. Several runs of one
architecture and objective (e.g. a turnover-regularised LSTM beside the plain one, the
paper's Exhibit 8 "LSTM + Reg.") are all shown, each row named by its run; their cell of the
matrix counts them instead of picking one. Part of `training.report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from momentum.metrics import performance_table
from momentum.significance import signal_regression
from training.reporting.runs import Run, Strategy
from training.reporting.sections import table_block
from training.reporting.tables import (
    SeedTable,
    Tables,
    finite_mean,
    fmt,
    json_number,
    seed_table,
)

__all__ = [
    "BEST_FILE",
    "DMN_ARCHITECTURES",
    "DMN_OBJECTIVES",
    "DMN_REFERENCES",
    "RNN_COLUMNS",
    "RNN_MODELS",
    "DmnGrid",
    "PaperTables",
    "RnnTable",
    "compute_papers",
    "dmn_grid",
    "input_length",
    "metrics_entries",
    "paper_sections",
    "rnn_table",
]

DMN_ARCHITECTURES: dict[str, str] = {
    "lasso": "Lasso",
    "mlp_dmn": "MLP",
    "wavenet": "WaveNet",
    "dmn": "LSTM",
}
"""The DMN paper's architectures by registry name, named and ordered as its exhibits."""
DMN_OBJECTIVES: dict[str, str] = {
    "sharpe": "Sharpe",
    "returns": "Ave. Returns",
    "mse": "MSE",
    "binary": "Binary",
}
"""Training objectives (``config["objective"]``) as the DMN paper labels them."""
DMN_REFERENCES: dict[str, str] = {
    "long_only": "Long Only",
    "tsmom": "Sgn(Returns)",
    "macd": "MACD",
}
"""The DMN paper's reference benchmarks by benchmark name (section V-B)."""
RNN_MODELS: dict[str, str] = {
    "rnn": "RNN",
    "deep_rnn": "DEEPRNN",
    "gru": "GRU",
    "lstm_xs": "LSTM",
    "deep_lstm": "DEEPLSTM",
}
"""Boutier (2023)'s recurrent models by registry name, named as Table 3 (and section 5)."""
RNN_COLUMNS: tuple[str, ...] = (
    "Sharpe",
    "Calmar",
    "Sortino",
    "Vol",
    "Tail Ratio",
    "MDD",
    "Turnover",
    "Bias (bps)",
    "Signal R2",
    "Signal t",
)
"""Boutier (2023) Table 3's columns the runs allow, in its order (no alpha, no beta)."""
BEST_FILE = "best.json"
"""Per seed and window, the chosen trial: ``RUN/seed_<s>/window_<year>/best.json``."""

_GRID_COLUMNS = ("Sharpe", "E[Return] (15% vol)", "MDD (15% vol)", "Turnover")
# Table 3's columns that are `momentum.metrics` columns of the daily return, at 0 bps
_RETURN_COLUMNS = ("Sharpe", "Calmar", "Sortino", "Vol", "Tail Ratio", "MDD", "Bias (bps)")
# the search spaces call the input length k, the training loop seq_len (`training.train`)
_LENGTH_KEYS = ("k", "seq_len")


def _unique_labels(labels: list[str], names: list[str]) -> list[str]:
    """Each label; those several rows share get their strategy name appended."""
    return [
        f"{label} ({name})" if labels.count(label) > 1 else label
        for label, name in zip(labels, names, strict=True)
    ]


def _seed_turnover(tables: Tables, name: str) -> NDArray[np.float64]:
    """Average daily turnover of each seed, shape [seeds] (section 7's figure per seed)."""
    return np.array([finite_mean(t) for t in tables.turnovers[name]])


# ---------------------------------------------------------------------------------------------
# the DMN paper's grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmnGrid:
    """The DMN paper's grid over the runs: references first, then architecture by objective.

    Attributes
    ----------
    rows : pandas.DataFrame, shape [rows, 3]
        Index ``"Architecture / Objective"`` (e.g. ``"LSTM / Sharpe"``, ``"Sgn(Returns)"``);
        columns ``Strategy`` (the report's name), ``Architecture`` and ``Objective`` (empty
        for a reference benchmark).
    table : SeedTable
        Mean and std over seeds of `_GRID_COLUMNS`, indexed like ``rows``.
    sharpe : pandas.DataFrame, shape [architectures, objectives]
        Mean Sharpe ratio of the one run of each cell; nan where no run or several.
    runs : pandas.DataFrame, shape [architectures, objectives]
        Number of runs of each cell.
    costs : pandas.DataFrame, shape [rows, costs]
        Mean Sharpe ratio net of each cost, indexed like ``rows``.
    """

    rows: pd.DataFrame
    table: SeedTable
    sharpe: pd.DataFrame
    runs: pd.DataFrame
    costs: pd.DataFrame


def dmn_grid(strategies: list[Strategy], tables: Tables) -> DmnGrid | None:
    """The DMN paper's grid, or None when no run's model is one of `DMN_ARCHITECTURES`."""
    models = [
        (i, s)
        for i, s in enumerate(strategies)
        if s.is_model and str(s.run.config.get("model")) in DMN_ARCHITECTURES
    ]
    if not models:
        return None
    architectures, objectives = list(DMN_ARCHITECTURES), list(DMN_OBJECTIVES)

    def order(item: tuple[int, Strategy]) -> tuple[int, int, int]:
        i, s = item
        objective = s.run.objective
        rank = objectives.index(objective) if objective in objectives else len(objectives)
        return architectures.index(str(s.run.config["model"])), rank, i

    present = {s.name for s in strategies if not s.is_model}
    names = [b for b in DMN_REFERENCES if b in present]
    cells: list[tuple[str, str]] = [(DMN_REFERENCES[b], "") for b in names]
    for _, s in sorted(models, key=order):
        names.append(s.name)
        cells.append(
            (
                DMN_ARCHITECTURES[str(s.run.config["model"])],
                DMN_OBJECTIVES.get(s.run.objective, s.run.objective),
            )
        )
    labels = [f"{a} / {o}" if o else a for a, o in cells]
    index = pd.Index(_unique_labels(labels, names), name="Architecture / Objective")
    rows = pd.DataFrame(
        {
            "Strategy": names,
            "Architecture": [a if o else "" for a, o in cells],
            "Objective": [o for _, o in cells],
        },
        index=index,
    )

    raw, rescaled = tables.paper[(0.0, "raw")], tables.paper[(0.0, "rescaled")]
    turnover = seed_table({n: _seed_turnover(tables, n)[:, None] for n in names}, ["Turnover"])
    parts = [
        (raw, "Sharpe", "Sharpe"),
        (rescaled, "E[Return]", "E[Return] (15% vol)"),
        (rescaled, "MDD", "MDD (15% vol)"),
        (turnover, "Turnover", "Turnover"),
    ]

    def gather(kind: str) -> pd.DataFrame:
        frame = pd.DataFrame(
            {shown: getattr(t, kind).loc[names, column].to_numpy() for t, column, shown in parts},
            index=index,
        )
        return frame[list(_GRID_COLUMNS)]

    table = SeedTable(
        mean=gather("mean"),
        std=gather("std"),
        seeds=pd.Series(raw.seeds.loc[names].to_numpy(), index=index, dtype=np.int64),
    )

    graded = rows[rows["Objective"] != ""]
    shown_architectures = [
        a for a in DMN_ARCHITECTURES.values() if a in set(graded["Architecture"])
    ]
    shown_objectives = [o for o in DMN_OBJECTIVES.values() if o in set(graded["Objective"])]
    shown_objectives += sorted(set(graded["Objective"]) - set(shown_objectives))
    counts = pd.DataFrame(0, index=shown_architectures, columns=shown_objectives, dtype=np.int64)
    sharpe = pd.DataFrame(np.nan, index=shown_architectures, columns=shown_objectives)
    graded_sharpe = table.mean.loc[graded.index, "Sharpe"].to_numpy()
    for architecture, objective, value in zip(
        graded["Architecture"], graded["Objective"], graded_sharpe, strict=True
    ):
        counts.loc[architecture, objective] += 1
        sharpe.loc[architecture, objective] = value
    sharpe = sharpe.where(counts == 1)
    for frame in (counts, sharpe):
        frame.index.name = "Architecture"

    costs = tables.costs.loc[names].set_axis(index, axis=0)
    return DmnGrid(rows=rows, table=table, sharpe=sharpe, runs=counts, costs=costs)


# ---------------------------------------------------------------------------------------------
# the RNN paper's Table 3
# ---------------------------------------------------------------------------------------------


def _read_best(file: Path) -> dict[str, Any]:
    try:
        best = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: cannot read it as JSON: {exc}") from exc
    params = best.get("params") if isinstance(best, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"{file}: expected an object with a 'params' object")
    return params


def _length(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{where}: the input length must be a whole number, got {value!r}")
    return int(value)


def input_length(run: Run) -> tuple[int | None, str]:
    """The input length (sessions per sequence) of a run's model, and how to print it.

    Pinned, when ``config["fixed"]`` holds ``k`` or ``seq_len``: that value. Searched, when
    the seeds' ``seed_<s>/window_<year>/best.json`` params hold it: the value chosen in each
    window, in window order (``"63, 126, 21"``; per seed, ``"seed 0: 63, 126; seed 1: 21,
    63"``, where the seeds chose differently). Otherwise the run's ``config["seq_len"]``
    (``--seq-len``, pinned).

    Parameters
    ----------
    run : Run

    Returns
    -------
    (int or None, str)
        The pinned length (None when searched or unknown) and the text of the table.

    Raises
    ------
    ValueError
        A ``best.json`` is unreadable or a length is not a whole number (naming the file).
    """
    fixed = run.config.get("fixed") or {}
    for key in _LENGTH_KEYS:
        if key in fixed:
            value = _length(fixed[key], f"{run.path} config.json 'fixed'")
            return value, str(value)
    chosen: dict[int, list[int]] = {}
    for seed in run.seeds:
        files = sorted((run.path / f"seed_{seed}").glob(f"window_*/{BEST_FILE}"))
        lengths = []
        for file in files:
            params = _read_best(file)
            named = [k for k in _LENGTH_KEYS if k in params]
            if named:
                lengths.append(_length(params[named[0]], str(file)))
        if lengths:
            chosen[seed] = lengths
    if chosen:
        texts = {seed: ", ".join(str(v) for v in lengths) for seed, lengths in chosen.items()}
        if len(set(texts.values())) == 1:
            return None, next(iter(texts.values()))
        return None, "; ".join(f"seed {seed}: {text}" for seed, text in texts.items())
    if "seq_len" in run.config:
        value = _length(run.config["seq_len"], f"{run.path} config.json 'seq_len'")
        return value, str(value)
    return None, "unknown"


def _signal_fits(strategy: Strategy, dates: pd.DatetimeIndex) -> NDArray[np.float64]:
    """Per seed, (R², t, pairs) of the signal regression on the common dates, [seeds, 3]."""
    oos = strategy.run.oos
    on_dates = oos["date"].isin(dates).to_numpy()
    seed = oos["seed"].to_numpy()
    # the model's own output, before any portfolio construction turned it into weights
    signal, nxt = oos["signal"].to_numpy(), oos["next_return"].to_numpy()
    out = []
    for s in strategy.run.seeds:
        mine = on_dates & (seed == s)
        fit = signal_regression(signal[mine], nxt[mine])
        out.append([fit.r_squared, fit.t, fit.n])
    return np.array(out, dtype=np.float64)


@dataclass(frozen=True)
class RnnTable:
    """Boutier (2023) Table 3 over the runs of its recurrent models.

    Attributes
    ----------
    rows : pandas.DataFrame, shape [models, 3]
        Index ``"Model"`` (``"LSTM 63"`` when the input length is pinned, else ``"LSTM"``;
        the strategy name appended where two rows would share one); columns ``Strategy``,
        ``Input length`` (text, see `input_length`) and ``Construction``.
    pinned : list of (int or None)
        The pinned input length of each row.
    table : SeedTable
        Mean and std over seeds of `RNN_COLUMNS`, indexed like ``rows``.
    pairs : pandas.Series
        (date, asset) pairs of the signal regression, the fewest of any seed.
    delays : pandas.DataFrame, shape [models, delays]
        Mean Sharpe ratio with the signal traded k sessions late (`Tables.delays`).
    """

    rows: pd.DataFrame
    pinned: list[int | None]
    table: SeedTable
    pairs: pd.Series
    delays: pd.DataFrame


def rnn_table(
    strategies: list[Strategy], tables: Tables, dates: pd.DatetimeIndex
) -> RnnTable | None:
    """Boutier (2023) Table 3, or None when no run's model is one of `RNN_MODELS`."""
    models = [s for s in strategies if s.is_model and str(s.run.config.get("model")) in RNN_MODELS]
    if not models:
        return None
    names = [s.name for s in models]
    lengths = [input_length(s.run) for s in models]
    labels = [
        f"{RNN_MODELS[str(s.run.config['model'])]}" + ("" if pinned is None else f" {pinned}")
        for s, (pinned, _) in zip(models, lengths, strict=True)
    ]
    index = pd.Index(_unique_labels(labels, names), name="Model")
    rows = pd.DataFrame(
        {
            "Strategy": names,
            "Input length": [text for _, text in lengths],
            "Construction": [s.run.construction for s in models],
        },
        index=index,
    )
    per_seed: dict[str, NDArray[np.float64]] = {}
    pairs = []
    for s in models:
        returns = tables.gross[s.name]
        metrics = performance_table(
            {f"{s.name} #{i}": r for i, r in enumerate(returns)}, columns=_RETURN_COLUMNS
        )
        fits = _signal_fits(s, dates)
        pairs.append(int(fits[:, 2].min()))
        by_column = {
            **{c: metrics[c].to_numpy() for c in _RETURN_COLUMNS},
            "Turnover": _seed_turnover(tables, s.name),
            "Signal R2": fits[:, 0],
            "Signal t": fits[:, 1],
        }
        per_seed[s.name] = np.column_stack([by_column[c] for c in RNN_COLUMNS])
    table = seed_table(per_seed, RNN_COLUMNS)
    table = SeedTable(
        mean=table.mean.set_axis(index, axis=0),
        std=table.std.set_axis(index, axis=0),
        seeds=table.seeds.set_axis(index),
    )
    return RnnTable(
        rows=rows,
        pinned=[pinned for pinned, _ in lengths],
        table=table,
        pairs=pd.Series(pairs, index=index, name="Pairs", dtype=np.int64),
        delays=tables.delays.loc[names].set_axis(index, axis=0),
    )


# ---------------------------------------------------------------------------------------------
# both, their Markdown and their metrics.json entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperTables:
    """The paper-specific tables; None where no run has the paper's models."""

    dmn: DmnGrid | None
    rnn: RnnTable | None


def compute_papers(
    strategies: list[Strategy], tables: Tables, dates: pd.DatetimeIndex
) -> PaperTables:
    """The DMN paper's grid and Boutier (2023) Table 3 of the runs, where they apply."""
    return PaperTables(dmn=dmn_grid(strategies, tables), rnn=rnn_table(strategies, tables, dates))


def _matrix_cells(grid: DmnGrid) -> pd.DataFrame:
    """The Sharpe matrix as printed: the value, empty for no run, "n runs" for several."""
    cells = [
        [
            fmt(value) if n == 1 else ("" if n == 0 else f"{n} runs")
            for value, n in zip(values, counts, strict=True)
        ]
        for values, counts in zip(grid.sharpe.to_numpy(), grid.runs.to_numpy(), strict=True)
    ]
    return pd.DataFrame(cells, index=grid.sharpe.index, columns=grid.sharpe.columns)


def _dmn_section(grid: DmnGrid, number: int, out: Path) -> list[str]:
    lines = [
        f"## {number}. The DMN paper's grid (Lim, Zohren & Roberts 2019)",
        "",
        "Each architecture of the paper (Lasso, MLP, WaveNet, and LSTM: the Deep Momentum "
        "Network) trained on each of its objectives: Sharpe (the Sharpe-ratio loss) and Ave. "
        "Returns (average strategy return) output positions directly; MSE (regression) and "
        "Binary (classification) forecast the next return or its sign and trade the sign. "
        "Beside them the paper's references: Long Only, Sgn(Returns) (TSMOM) and MACD. "
        "Cells are mean (std) over seeds, gross of costs as the paper's section V-C. "
        "Architectures or objectives without a run are left out. Several runs of one "
        "architecture and objective (say a turnover-regularised LSTM, the paper's Exhibit 8) "
        "each get a row, named by their run.",
        "",
    ]
    lines += table_block(
        "`Sharpe`: the Sharpe ratio of the raw signal outputs (Exhibit 2). The paper's "
        "rescaled table (Exhibit 3) has the same Sharpe ratio: multiplying a return series by "
        "one positive constant changes no ratio, so it is printed once. `E[Return] (15% vol)` "
        "and `MDD (15% vol)`: the returns rescaled ex-post to 15% vol (Exhibit 3; section 1's "
        "rescaled table). `Turnover`: average daily turnover (Exhibit 6a; section 7).",
        pd.concat([grid.rows[["Strategy"]], grid.table.cells()], axis=1),
        pd.concat([grid.rows, grid.table.numbers()], axis=1),
        out,
        "dmn_grid.csv",
        title="Exhibits 2, 3 and 6",
    )
    lines += table_block(
        "The Sharpe ratio above (mean over seeds) by architecture and objective, the "
        "comparison of the paper's section V-C. Empty: no run; `n runs`: several runs, each "
        "in its own row above (the CSV leaves those cells empty).",
        _matrix_cells(grid),
        grid.sharpe,
        out,
        "dmn_grid_sharpe.csv",
        title="Sharpe ratio, architecture x objective",
    )
    lines += table_block(
        "Sharpe ratio (mean over seeds) net of c bps per unit of turnover, R - c x TO "
        "(eq. 13), as the bars of Exhibit 7 (section 6's figures).",
        grid.costs,
        grid.costs,
        out,
        "dmn_grid_costs.csv",
        title="Exhibit 7: Sharpe ratio net of costs",
    )
    return lines


def _rnn_section(rnn: RnnTable, lags: list[int], number: int, out: Path) -> list[str]:
    lines = [
        f"## {number}. The RNN paper's table (Boutier 2023)",
        "",
        "Boutier (2023) Table 3's columns, at 0 bps (the paper's backtest is frictionless), "
        "mean (std) over seeds. Row `LSTM 63` is an LSTM whose input length is pinned to 63 "
        "sessions (`fixed` k or seq_len, else `--seq-len`); a row without a number searched "
        "it, and `Input length` lists the length chosen in each window (`best.json`), in "
        "window order. `Vol` is the annual vol, `Tail Ratio` the 95th over the 5th "
        "percentile of daily returns (in size), `Bias (bps)` the mean daily return x 1e4 "
        "(the paper's eq. 15). `Turnover` is section 7's average daily turnover; for a "
        "constructed portfolio (weights w) that is sum_i |w_t - w_{t-1}|, and 100 times it is "
        "the paper's eq. 13 percentage. Alpha and beta, also in Table 3, are in section 4.",
        "",
        "`Signal R2` and `Signal t` are the paper's R² and \"T-statistic of the signal in the "
        'regression" of subsequent stock returns on the predicted signals: ordinary least '
        "squares of r_{i,t+1} = a + b s_{i,t} + e pooled over every (date, asset) pair of "
        "the common dates (`Pairs`: the fewest of any seed), s the model's output before any "
        "portfolio construction (`momentum.significance.signal_regression`), per seed. "
        "**The t-statistic overstates significance**: its OLS standard error treats the "
        "pairs as independent, but the returns of one date move together across stocks and "
        "the signal persists from day to day, so there are far fewer independent "
        "observations than pairs and |t| > 1.96 is not a 5% test. The HAC tests of section 2 "
        "are the ones to trust.",
        "",
    ]
    shown = pd.concat([rnn.rows, rnn.table.cells(), rnn.pairs.astype(str)], axis=1)
    stored = pd.concat([rnn.rows, rnn.table.numbers(), rnn.pairs], axis=1)
    lines += table_block(
        "Backtest statistics of the recurrent models.",
        shown,
        stored,
        out,
        "rnn_table.csv",
        title="Table 3",
    )
    lines += table_block(
        "Sharpe ratio (mean over seeds, 0 bps) when each signal is traded k sessions late, "
        "the paper's stress test (its Figure 7; section 10's figures). k=0 is the strategy "
        "as traded.",
        rnn.delays.rename(columns={str(k): f"k={k}" for k in lags}),
        rnn.delays,
        out,
        "rnn_delays.csv",
        title="Delayed-signal stress test",
    )
    return lines


def paper_sections(papers: PaperTables, lags: list[int], out: Path, first: int) -> list[str]:
    """The sections of the papers whose models the runs have, numbered from ``first``.

    Writes ``dmn_grid.csv``, ``dmn_grid_sharpe.csv``, ``dmn_grid_costs.csv`` (DMN grid) and
    ``rnn_table.csv``, ``rnn_delays.csv`` (Table 3) into ``out``.
    """
    lines: list[str] = []
    number = first
    if papers.dmn is not None:
        lines += _dmn_section(papers.dmn, number, out)
        number += 1
    if papers.rnn is not None:
        lines += _rnn_section(papers.rnn, lags, number, out)
    return lines


def metrics_entries(papers: PaperTables) -> dict[str, dict[str, Any]]:
    """Per strategy, the ``metrics.json`` keys of the paper sections it appears in.

    ``"dmn_grid": {"row", "architecture", "objective"}`` (architecture and objective null
    for a reference benchmark; its figures are the strategy's other entries) and
    ``"rnn_table": {"row", "input_length", "input_length_pinned", "construction",
    "columns": {column: mean over seeds}, "columns_std": {...}, "signal_pairs"}``.
    """
    out: dict[str, dict[str, Any]] = {}
    if papers.dmn is not None:
        grid = papers.dmn.rows
        for label, name, architecture, objective in zip(
            grid.index, grid["Strategy"], grid["Architecture"], grid["Objective"], strict=True
        ):
            out.setdefault(str(name), {})["dmn_grid"] = {
                "row": str(label),
                "architecture": architecture or None,
                "objective": objective or None,
            }
    if papers.rnn is not None:
        rnn = papers.rnn
        mean, std = rnn.table.mean, rnn.table.std
        for i, label in enumerate(rnn.rows.index):
            out.setdefault(str(rnn.rows["Strategy"].iloc[i]), {})["rnn_table"] = {
                "row": str(label),
                "input_length": str(rnn.rows["Input length"].iloc[i]),
                "input_length_pinned": rnn.pinned[i],
                "construction": str(rnn.rows["Construction"].iloc[i]),
                "columns": {c: json_number(mean[c].iloc[i]) for c in RNN_COLUMNS},
                "columns_std": {c: json_number(std[c].iloc[i]) for c in RNN_COLUMNS},
                "signal_pairs": int(rnn.pairs.iloc[i]),
            }
    return out
