"""``momentum-train results``: the quick-protocol backtests behind ``docs/results.md``.

Runs (or resumes) one backtest per model on the embedded data, times each,
builds one report over all of them and the benchmarks, and writes
``docs/results.md`` with the measured figures next to the papers' published
claims. Whatever the numbers are, they are written as measured.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.backtest import BacktestConfig, run_backtest
from training.report import build_report

__all__ = ["RESULT_RUNS", "ResultRun", "run_results"]


@dataclass(frozen=True)
class ResultRun:
    label: str
    config: BacktestConfig
    description: str


# Every run selects its trials (early stopping, ranking) on the validation Sharpe net of
# 5 bps, the cost of the report's net column, and averages the top 5 (the defaults).
_SELECT_BPS = 5.0

RESULT_RUNS: tuple[ResultRun, ...] = (
    ResultRun(
        "slp",
        BacktestConfig(model="slp", label="slp", turnover_cost_bps=5.0),
        "STMOM SLP, L1 searched, turnover regularisation at 5 bps",
    ),
    ResultRun(
        "dmn",
        BacktestConfig(model="dmn", label="dmn", select_cost_bps=_SELECT_BPS),
        "LSTM Deep Momentum Network",
    ),
    ResultRun(
        "tft",
        BacktestConfig(model="tft", label="tft", select_cost_bps=_SELECT_BPS),
        "Momentum Transformer (TFT-SHORT, 63 steps)",
    ),
    ResultRun(
        "quantnet",
        BacktestConfig(model="quantnet", label="quantnet", select_cost_bps=_SELECT_BPS),
        "QuantNet, GICS sectors as markets",
    ),
)

# What each paper reports, from its abstract; their data differ from ours.
PUBLISHED = (
    (
        "Deep Momentum Networks (Lim, Zohren, Roberts 2019)",
        "88 continuous futures",
        "The Sharpe-optimised LSTM improved traditional methods by more than two times "
        "without transaction costs and kept outperforming up to 2-3 bps.",
    ),
    (
        "Spatio-Temporal Momentum (Tan, Roberts, Zohren 2023)",
        "46 US equities, 12 equity index futures",
        "A single-layer perceptron over all assets' features beats the benchmarks with costs "
        "up to 5-10 bps; best with L1 and turnover regularisation. Table 1 (US equities, raw "
        "signals, mean (std) over seeds): Sharpe SLP 1.114 (0.182), DMN 2.043 (0.263), LSTM "
        "0.320 (0.108), long only 0.667, TSMOM 0.177.",
    ),
    (
        "Momentum Transformer (Wood, Giegerich, Roberts, Zohren 2022)",
        "futures",
        "The decoder-only TFT outperforms the benchmarks and the LSTM DMN, more so net of costs "
        "(the walkthrough of TFT-SHORT on commodities: its worst yearly Sharpe 2016-2020 was "
        "0.67, in 2020).",
    ),
    (
        "QuantNet (Koshiyama et al. 2021)",
        "3,103 stocks in 58 equity markets",
        "51% higher Sharpe and 69% higher Calmar than the best baseline; 15% and 41% over "
        "the same model without transfer. Table 1 (median over the 3,103 stocks, mean "
        "absolute deviation): Sharpe QuantNet 0.355 (0.572), No Transfer LSTM 0.304, TSMOM "
        "0.226, CSMOM 0.235, buy and hold 0.000.",
    ),
)


def _cell(metrics: dict, strategy: str, key: str, section: str = "raw") -> str:
    value = metrics.get(strategy, {}).get(section, {}).get(key)
    return "n/a" if value is None else f"{value:.3f}"


def _sharpe_at(metrics: dict, strategy: str, bps: float) -> str:
    by_cost = metrics.get(strategy, {}).get("sharpe_by_cost", {})
    value = by_cost.get(f"{bps:g}")
    return "n/a" if value is None else f"{value:.3f}"


def _verdicts(runs: Sequence[ResultRun], metrics: dict) -> list[str]:
    """Does each model beat long-only and TSMOM, and by how many standard errors: the
    report's sentences (the HAC test of a Sharpe difference, Ledoit and Wolf 2008)."""
    lines = [
        "",
        "## Do the models beat long-only and TSMOM?",
        "",
        "Each model's seed-averaged daily return against each benchmark's on the same dates: "
        "the difference of the Sharpe ratios, its HAC standard error (Ledoit and Wolf 2008) "
        "and a two-sided p-value; one test at a time, not adjusted for the number made.",
    ]
    for cost in ("0", "5"):
        lines += ["", f"**{'Gross of costs' if cost == '0' else f'Net of {cost} bps'}.**", ""]
        for run in runs:
            versus = metrics.get(run.label, {}).get("versus", {}).get(cost, {})
            for bench in ("long_only", "tsmom"):
                test = versus.get(bench)
                if test is not None:
                    lines.append(f"* {test['verdict']}")
    return lines


def _markdown(
    runs: Sequence[ResultRun],
    metrics: dict,
    timings: dict[str, float],
    resumed: set[str],
    report: Path,
    command: str,
    note: str | None = None,
) -> str:
    lines = [
        "# Backtest results",
        "",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d} "
        f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, CPU only). Full report with every table and plot: "
        f"`{report}` (not committed; rerun the command to regenerate it).",
        "",
        "Data: the embedded 20 S&P 500 stocks, 1990-2022. Expanding windows, first training block "
        "1990-1994, 5-year test blocks 1995-2022 (the last one 2020-2022), last 10% of each "
        "training block for validation, quick protocol budgets (README, Backtests). Every model "
        "and benchmark is evaluated on the same out-of-sample dates. Model rows are the mean over "
        "seeds; costs are charged per unit of turnover (eq. 13).",
        "",
        "Every model run selects its trials (early stopping and ranking) on the validation "
        "Sharpe net of 5 bps per unit of turnover and averages the positions of its top 5 "
        "trials (README, Backtests). The standard error (SE) is Lo (2002)'s, autocorrelation-"
        "robust (Newey-West), of the seed-averaged daily return.",
        "",
        "## Measured, out of sample 1995-2022",
        "",
        "| strategy | what | seeds | Sharpe 0 bps | SE | Sharpe 5 bps | E[Return] | Vol | MDD | "
        "Calmar | avg daily turnover | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {r.label: r.description for r in runs}
    strategies = [r.label for r in runs] + [
        s for s in metrics if s not in names and s != "combinations"
    ]
    for s in strategies:
        entry = metrics.get(s, {})
        seeds = entry.get("seeds", 1)
        wall = f"{timings[s] / 60:.1f} min" if s in timings else "-"
        if s in resumed:
            wall += " (resumed run: this invocation only)"
        turnover = entry.get("turnover")
        se = entry.get("sharpe_se", {}).get("hac")
        lines.append(
            f"| {s} | {names.get(s, 'benchmark')} | {seeds} | {_sharpe_at(metrics, s, 0)} | "
            f"{'n/a' if se is None else f'{se:.2f}'} | "
            f"{_sharpe_at(metrics, s, 5)} | {_cell(metrics, s, 'E[Return]')} | "
            f"{_cell(metrics, s, 'Vol')} | {_cell(metrics, s, 'MDD')} | "
            f"{_cell(metrics, s, 'Calmar')} | "
            f"{'n/a' if turnover is None else f'{turnover:.3f}'} | {wall} |"
        )
    if note:
        lines += ["", f"Note: {note}"]
    lines += [
        "",
        "Rescaled to 15% volatility (ex-post, as the papers' second table: one constant per "
        "series, so the Sharpe ratio is the raw one), 0 bps:",
        "",
        "| strategy | E[Return] | MDD | Sharpe | Sortino | Calmar |",
        "|---|---|---|---|---|---|",
    ]
    for s in strategies:
        lines.append(
            f"| {s} | {_cell(metrics, s, 'E[Return]', 'rescaled')} | "
            f"{_cell(metrics, s, 'MDD', 'rescaled')} | {_cell(metrics, s, 'Sharpe', 'rescaled')} | "
            f"{_cell(metrics, s, 'Sortino', 'rescaled')} | {_cell(metrics, s, 'Calmar', 'rescaled')} |"
        )
    lines += [
        "",
        "Vol-targeted ex ante (each day's return times 15% / the EWM vol of the portfolio's "
        "returns up to the day before, span 60: no look-ahead; the extra trading of the "
        "daily leverage is not charged), 0 bps:",
        "",
        "| strategy | E[Return] | Vol | MDD | Sharpe | Sortino | Calmar |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in strategies:
        cells = " | ".join(
            _cell(metrics, s, key, "exante")
            for key in ("E[Return]", "Vol", "MDD", "Sharpe", "Sortino", "Calmar")
        )
        lines.append(f"| {s} | {cells} |")
    lines += _verdicts(runs, metrics)
    lines += ["", "## Published, for context", "", "| paper | data | reported |", "|---|---|---|"]
    lines += [f"| {p} | {d} | {r} |" for p, d, r in PUBLISHED]
    lines += [
        "",
        "## Why these numbers differ from the papers",
        "",
        "* Universe: 20 large US stocks, picked in hindsight (survivorship bias), against the "
        "papers' diversified futures or thousands of stocks. Long-only and buy-and-hold look "
        "strong here for that reason; trend following has few, correlated assets to diversify over.",
        "* Budget: the quick protocol searches 3-20 trials with short training, one to three seeds; "
        "the papers run 100 trials, up to 300-500 epochs and 5 seeds (`--protocol paper`).",
        "* Test blocks of 5 years for every model, where the Momentum Transformer paper retrains "
        "yearly (`--step-years 1`).",
        "* Validation windows of 126-755 days score trials on a noisy Sharpe (a standard error "
        "of 0.6-1.4): the best validation Sharpe is typically well above the test Sharpe (see "
        "each run's best.json), which is why the top 5 trials are averaged.",
        "* Selection on the validation Sharpe net of 5 bps; the papers select on their "
        "validation loss.",
    ]
    return "\n".join(lines) + "\n"


def run_results(
    out: str | Path,
    doc: str | Path = "docs/results.md",
    *,
    models: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    command: str = "momentum-train results --out runs/results",
    note: str | None = None,
) -> Path:
    """Run every result backtest into `out`, report them together, write `doc`."""
    out = Path(out)
    runs = [r for r in RESULT_RUNS if models is None or r.label in models]
    if not runs:
        raise ValueError(f"no result runs selected from {[r.label for r in RESULT_RUNS]}")
    timings: dict[str, float] = {}
    resumed: set[str] = set()
    for run in runs:
        directory = out / run.label
        timing = directory / "timing.json"
        if timing.exists() and (directory / "oos.parquet").exists():
            recorded = json.loads(timing.read_text())
            timings[run.label] = recorded["seconds"]
            if recorded.get("resumed"):
                resumed.add(run.label)
            log(f"{run.label}: done earlier ({timings[run.label] / 60:.1f} min)")
            continue
        # a run interrupted earlier resumes; its wall time then covers this invocation only
        if (directory / "config.json").exists():
            resumed.add(run.label)
        start = time.perf_counter()
        run_backtest(run.config, directory, log=log)
        timings[run.label] = time.perf_counter() - start
        timing.write_text(
            json.dumps({"seconds": timings[run.label], "resumed": run.label in resumed})
        )
    report_dir = out / "report"
    build_report([out / r.label for r in runs], report_dir)
    metrics = json.loads((report_dir / "metrics.json").read_text())
    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(
        _markdown(runs, metrics, timings, resumed, report_dir / "report.md", command, note)
    )
    log(f"wrote {doc}")
    return doc
