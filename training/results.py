"""``momentum-train results``: the quick-protocol backtests behind ``docs/results.md``.

Runs (or resumes) one backtest per model on the embedded data, times each,
builds one report over all of them and the benchmarks, and writes
``docs/results.md`` with the measured figures next to the papers' published
claims. Whatever the numbers are, they are written as measured.

The page has one part per *suite* of runs, each regenerated on its own
(``--suite``): ``core`` (the page's head: SLP, DMN, TFT, QuantNet), ``dmn_grid``
(the DMN paper's architectures and objectives) and ``rnn`` (the RNN equities
paper's models, sector-neutral and vol-scaled). A suite other than ``core``
writes its part between ``<!-- results:NAME -->`` markers and leaves the rest of
the page as it was; ``core`` rewrites the head and keeps the other parts.
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

from momentum.construction import Construction
from training.backtest import run_backtest
from training.backtest_config import BacktestConfig
from training.losses import LossName
from training.report import build_report

__all__ = [
    "DMN_GRID_RUNS",
    "RESULT_RUNS",
    "RNN_RUNS",
    "SUITES",
    "ResultRun",
    "Suite",
    "run_results",
]


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

_OBJECTIVES: tuple[tuple[LossName, str], ...] = (
    ("returns", "average-return objective"),
    ("mse", "regression (MSE) traded as sgn(forecast)"),
    ("binary", "classification (cross-entropy) traded as sgn(p - 0.5)"),
)
_CONSTRUCTIONS: tuple[tuple[str, Construction, str], ...] = (
    ("_mv", "sector_neutral_mv", "sector-neutral mean-variance weights, gross one"),
    ("", "vol_scaled", "each asset vol-scaled (eq. 1)"),
)

# The DMN paper's grid (Lim, Zohren & Roberts 2019, section IV): each architecture with the
# Sharpe objective, and the LSTM with all four objectives (section III-B)
DMN_GRID_RUNS: tuple[ResultRun, ...] = (
    *(
        ResultRun(
            name,
            BacktestConfig(model=name, label=name, select_cost_bps=_SELECT_BPS),
            f"{what}, Sharpe objective",
        )
        for name, what in (
            ("lasso", "Lasso (linear, tau = 5 days, L1)"),
            ("mlp_dmn", "MLP (tau = 5 days)"),
            ("wavenet", "WaveNet (weekly, monthly, quarterly dilated layers)"),
            ("dmn", "LSTM"),
        )
    ),
    *(
        ResultRun(
            f"dmn_{objective}",
            BacktestConfig(
                model="dmn",
                label=f"dmn_{objective}",
                objective=objective,
                select_cost_bps=_SELECT_BPS,
            ),
            f"LSTM, {what}",
        )
        for objective, what in _OBJECTIVES
    ),
)

# The RNN equities paper (Boutier 2023): each recurrent model on its extended features,
# with the paper's sector-neutral mean-variance construction and with eq. 1's vol scaling
RNN_RUNS: tuple[ResultRun, ...] = tuple(
    ResultRun(
        f"{name}{suffix}",
        BacktestConfig(
            model=name,
            label=f"{name}{suffix}",
            construction=construction,
            select_cost_bps=_SELECT_BPS,
        ),
        f"{what}, {how}",
    )
    for name, what in (
        ("rnn", "RNN"),
        ("deep_rnn", "two-layer RNN"),
        ("gru", "GRU"),
        ("lstm_xs", "LSTM"),
        ("deep_lstm", "three-layer LSTM"),
    )
    for suffix, construction, how in _CONSTRUCTIONS
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


DMN_GRID_PUBLISHED = (
    (
        "Deep Momentum Networks (Lim, Zohren, Roberts 2019), Exhibit 2",
        "88 continuous futures, 1995-2015, no costs",
        "The Sharpe-optimised LSTM beats the best other network (the Sharpe-optimised MLP) by "
        "44% and Sgn(Returns) by more than two times; WaveNet underperforms the benchmarks and "
        "the linear model; within each architecture the Sharpe objective beats average "
        "returns (except the MLP), with regression and classification third and fourth. "
        "Machine-learning models trade about 10 times more than Long Only and stay profitable "
        "up to about 4 bps (Exhibits 6-7).",
    ),
)

RNN_PUBLISHED = (
    (
        "Boutier (2023), Table 3",
        "206 largest S&P 500 stocks, 1998-2023, no costs, sector-neutral weights of gross one",
        "Sharpe LSTM 63 2.17 (turnover 47%), LSTM 21 1.83, GRU 63 1.82, RNN 21 1.73, DeepRNN "
        "21 1.50; every model's annual vol about 2%. The three-layer LSTM did worse than the "
        "LSTM. Trading one day late forfeits most of the PnL (Figure 7).",
    ),
)


@dataclass(frozen=True)
class Suite:
    """A part of the results page: its runs, heading, what it is about, published figures."""

    name: str
    title: str
    intro: str
    published: tuple[tuple[str, str, str], ...]
    sections: tuple[str, ...]  # headings of the report's sections copied into the page


SUITES: dict[str, Suite] = {
    "core": Suite("core", "Backtest results", "", PUBLISHED, ()),
    "dmn_grid": Suite(
        "dmn_grid",
        "The DMN paper's grid of architectures and objectives",
        "Lim, Zohren & Roberts (2019) compare four architectures (Lasso, MLP, WaveNet, LSTM) "
        "and four objectives (Sharpe, average returns, and regression or classification "
        "traded as sgn() of the forecast). Here: every architecture with the Sharpe "
        "objective, and the LSTM with all four, on the embedded data with the quick budgets "
        "(README, Backtests) and the same selection as above.",
        DMN_GRID_PUBLISHED,
        ("The DMN paper's grid",),
    ),
    "rnn": Suite(
        "rnn",
        "The RNN equities paper's models",
        "Boutier (2023)'s recurrent models (RNN, two-layer RNN, GRU, LSTM, three-layer LSTM, "
        "each with batch normalisation, L1 and a zero-mean output layer, input length "
        "searched over 21-252 sessions) on the extended features, each once with the paper's "
        "sector-neutral mean-variance weights (GICS sectors of the 20 stocks, gross "
        "exposure one; rows `_mv`) and once vol-scaled per asset (eq. 1), quick budgets.",
        RNN_PUBLISHED,
        ("The RNN paper's table",),
    ),
}
_SUITE_RUNS: dict[str, tuple[ResultRun, ...]] = {"dmn_grid": DMN_GRID_RUNS, "rnn": RNN_RUNS}


def suite_runs(suite: str) -> tuple[ResultRun, ...]:
    """The runs of `suite` (``core``: `RESULT_RUNS`)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    return RESULT_RUNS if suite == "core" else _SUITE_RUNS[suite]


def _cell(metrics: dict, strategy: str, key: str, section: str = "raw") -> str:
    value = metrics.get(strategy, {}).get(section, {}).get(key)
    return "n/a" if value is None else f"{value:.3f}"


def _sharpe_at(metrics: dict, strategy: str, bps: float) -> str:
    by_cost = metrics.get(strategy, {}).get("sharpe_by_cost", {})
    value = by_cost.get(f"{bps:g}")
    return "n/a" if value is None else f"{value:.3f}"


def _verdicts(runs: Sequence[ResultRun], metrics: dict, level: str = "##") -> list[str]:
    """Does each model beat long-only and TSMOM, and by how many standard errors: the
    report's sentences (the HAC test of a Sharpe difference, Ledoit and Wolf 2008)."""
    lines = [
        "",
        f"{level} Do the models beat long-only and TSMOM?",
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


def _generated(command: str, report: Path) -> str:
    return (
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d} "
        f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, CPU only). Full report with every table and plot: "
        f"`{report}` (not committed; rerun the command to regenerate it)."
    )


def _measured(
    runs: Sequence[ResultRun],
    metrics: dict,
    timings: dict[str, float],
    resumed: set[str],
    note: str | None,
) -> list[str]:
    """The measured tables: raw with SE and costs, rescaled ex-post, vol-targeted ex-ante."""
    lines = [
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
    return lines


def _published(rows: Sequence[tuple[str, str, str]], level: str) -> list[str]:
    lines = ["", f"{level} Published, for context", "", "| paper | data | reported |"]
    return [*lines, "|---|---|---|", *(f"| {p} | {d} | {r} |" for p, d, r in rows)]


def _markdown(
    runs: Sequence[ResultRun],
    metrics: dict,
    timings: dict[str, float],
    resumed: set[str],
    report: Path,
    command: str,
    note: str | None = None,
) -> str:
    """The page's head (the ``core`` suite)."""
    lines = [
        "# Backtest results",
        "",
        _generated(command, report),
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
        *_measured(runs, metrics, timings, resumed, note),
    ]
    lines += _verdicts(runs, metrics)
    lines += _published(PUBLISHED, "##")
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


def _report_sections(report: Path, titles: Sequence[str]) -> list[str]:
    """The report's sections whose heading contains one of `titles`, one level down, without
    their CSV links (relative to the report's folder)."""
    out: list[str] = []
    keep = False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            keep = any(t in line for t in titles)
            if keep:  # "## 13. The RNN paper's table" -> "### The RNN paper's table"
                out.append("### " + line[3:].split(". ", 1)[-1])
                continue
        if keep and not line.startswith("CSV: ["):
            out.append("#" + line if line.startswith("### ") else line)
    return out


def _marker(suite: str) -> tuple[str, str]:
    return f"<!-- results:{suite} -->", f"<!-- /results:{suite} -->"


def _suite_block(
    suite: Suite,
    runs: Sequence[ResultRun],
    metrics: dict,
    timings: dict[str, float],
    resumed: set[str],
    report: Path,
    command: str,
    note: str | None,
) -> str:
    begin, end = _marker(suite.name)
    lines = [
        begin,
        f"## {suite.title}",
        "",
        _generated(command, report),
        "",
        suite.intro,
        "",
        *_measured(runs, metrics, timings, resumed, note),
        *_verdicts(runs, metrics, "###"),
        "",
        *_report_sections(report, suite.sections),
        *_published(suite.published, "###"),
        end,
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _blocks(text: str) -> dict[str, str]:
    """The suite parts of a page, by suite name, markers included."""
    out = {}
    for name in SUITES:
        begin, end = _marker(name)
        if begin in text and end in text:
            out[name] = text[text.index(begin) : text.index(end) + len(end)] + "\n"
    return out


def _page(head: str, blocks: dict[str, str]) -> str:
    """The head, then each suite's part in the order of `SUITES`."""
    parts = [head.rstrip("\n") + "\n"]
    parts += [blocks[name] for name in SUITES if name in blocks]
    return "\n".join(parts)


def _run_all(
    runs: Sequence[ResultRun], out: Path, log: Callable[[str], None]
) -> tuple[dict[str, float], set[str]]:
    """Run (or reuse, or resume) every run into ``out/<label>``; wall times and the resumed."""
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
    return timings, resumed


def run_results(
    out: str | Path,
    doc: str | Path = "docs/results.md",
    *,
    models: Sequence[str] | None = None,
    suite: str = "core",
    log: Callable[[str], None] = print,
    command: str = "momentum-train results --out runs/results",
    note: str | None = None,
) -> Path:
    """Run every backtest of `suite` into `out`, report them together, write its part of
    `doc` (the other suites' parts are kept)."""
    out = Path(out)
    available = suite_runs(suite)
    runs = [r for r in available if models is None or r.label in models]
    if not runs:
        raise ValueError(f"no result runs selected from {[r.label for r in available]}")
    timings, resumed = _run_all(runs, out, log)
    report_dir = out / "report"
    build_report([out / r.label for r in runs], report_dir)
    metrics = json.loads((report_dir / "metrics.json").read_text())
    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    existing = doc.read_text() if doc.exists() else ""
    blocks = _blocks(existing)
    report = report_dir / "report.md"
    if suite == "core":
        head = _markdown(runs, metrics, timings, resumed, report, command, note)
    else:
        first = min((existing.find(_marker(n)[0]) for n in blocks), default=-1)
        head = existing[:first] if first >= 0 else existing
        args = (runs, metrics, timings, resumed, report, command, note)
        blocks[suite] = _suite_block(SUITES[suite], *args)
    doc.write_text(_page(head, blocks))
    log(f"wrote {doc}")
    return doc
