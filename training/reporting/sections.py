"""The report's Markdown: each section's prose and tables, each table's CSV beside it.

Numbers come from `training.reporting.tables.Tables`; this module only says what they are.
Part of `training.report`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from momentum.metrics import to_csv, to_markdown
from momentum.portfolio import VOL_TARGET
from momentum.significance import newey_west_lags
from training.reporting import compare
from training.reporting.runs import Run, Strategy
from training.reporting.tables import DIGITS, Tables, bps

__all__ = [
    "EXPLAIN_DIR",
    "comparisons",
    "explanations",
    "header",
    "market",
    "per_asset",
    "performance",
    "rolling",
    "table_block",
    "trading",
]

EXPLAIN_DIR = "explain"
# shown first, in this order, when present; any other CSV in explain/ follows by name
_KNOWN_EXPLANATIONS = ("tft_variable_importance.csv", "slp_attribution.csv")
_TITLES = {
    "raw": "Raw",
    "rescaled": f"Rescaled to {VOL_TARGET:.0%} vol (one constant, ex-post)",
    "exante": f"Vol-targeted to {VOL_TARGET:.0%} ex-ante",
}


def table_block(
    text: str, shown: pd.DataFrame, stored: pd.DataFrame, out: Path, file: str, title: str = ""
) -> list[str]:
    """Markdown of one table (``shown``) and its CSV (``stored``, full precision) beside it."""
    (out / file).write_text(to_csv(stored))
    heading = [f"### {title}", ""] if title else []
    return [*heading, text, "", to_markdown(shown, DIGITS), f"CSV: [{file}]({file})", ""]


def _cost_name(cost: float) -> str:
    return "Gross of costs" if cost == 0 else f"Net of {bps(cost)} bps per unit of turnover"


def header(runs: list[Run], strategies: list[Strategy], dates: pd.DatetimeIndex) -> list[str]:
    """Title, the runs, the evaluation period and how returns are formed."""
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
        "R - c x TO (eq. 13), turnover TO as in section 7.",
        "",
    ]


def performance(tables: Tables, out: Path) -> list[str]:
    """Section 1: the papers' table raw, times one constant, and vol-targeted ex-ante."""
    lines = [
        "## 1. Performance (the papers' table)",
        "",
        "Annualised figures from daily portfolio returns (`momentum.metrics`): E[Return] = "
        "mean x 252, Vol = std x sqrt 252, MDD as a fraction of the peak, Sharpe with zero "
        "risk-free rate. Cells are mean (std) over seeds (sample std); strategies with a "
        "single seed show the value alone. Three versions:",
        "",
        "* **Raw**: the returns as traded.",
        f"* **Rescaled to {VOL_TARGET:.0%} vol (one constant, ex-post)**, as the papers' "
        "second table: each seed's daily series is multiplied by a single number, "
        f"{VOL_TARGET:.0%} / its realised annual vol over the whole period. That number uses "
        "hindsight, and multiplying by one positive constant changes no ratio: Sharpe, "
        "Sortino, Hit Rate and Avg P / Avg L are exactly the raw ones (Calmar moves a little "
        "only because drawdowns compound). It puts E[Return], Vol, downside deviation and MDD "
        "on a common scale, nothing more; it is not evidence that a strategy is better.",
        f"* **Vol-targeted to {VOL_TARGET:.0%} ex-ante**: each seed's daily portfolio return "
        f"times L_t = {VOL_TARGET:.0%} / (sigma_t x sqrt 252), sigma_t the EWM std (span 60, "
        "at least 20 observations) of the portfolio's own returns up to the day before "
        "(`momentum.portfolio.ex_ante_vol_scale`, the rule live positions use). No future "
        "return enters and L changes daily, so the Sharpe ratio changes too: this is what a "
        f"book run at {VOL_TARGET:.0%} would have earned. The warm-up sessions are left out, "
        "and the extra trading of the daily leverage changes is not charged.",
        "",
    ]
    for (cost, kind), table in tables.paper.items():
        lines += table_block(
            f"{_cost_name(cost)}.",
            table.cells(),
            table.numbers(),
            out,
            f"paper_{kind}_{bps(cost)}bps.csv",
            title=f"{_TITLES[kind]}, {bps(cost)} bps",
        )
    return lines


def comparisons(tables: Tables, out: Path) -> list[str]:
    """Section 2: Sharpe standard errors, and does each model beat long-only and TSMOM."""
    days = len(next(iter(tables.mean_returns.values())))
    lines = [
        "## 2. Do the models beat long-only and TSMOM?",
        "",
        "Each model's daily portfolio return is compared with each benchmark's on the same "
        "dates. A model with several seeds enters as its seed-averaged return (the portfolio "
        "holding each seed with weight 1/S), whose Sharpe ratio can exceed the mean over seeds "
        "of section 1. The statistic is the difference of annualised Sharpe ratios; its "
        'standard error (SE) is the HAC delta-method error of Ledoit & Wolf (2008), "Robust '
        'performance hypothesis testing with the Sharpe ratio", which uses the correlation of '
        "the two strategies and allows for fat tails and serial correlation (Newey-West, "
        f"Bartlett kernel, lag {newey_west_lags(days)} = floor(4 (T/100)^(2/9))). "
        "`Std errors` = difference / SE; p-values are two-sided from the normal distribution, "
        "one comparison at a time (not adjusted for the number of comparisons). A model "
        f'"beats" a benchmark when its Sharpe ratio is higher with p < {compare.LEVEL:.0%}.',
        "",
    ]
    if not tables.compared:
        lines += [
            f"The first run has no {' or '.join(compare.COMPARED_BENCHMARKS)} benchmark: there "
            "is nothing to test the models against.",
            "",
        ]
    for cost, tests in tables.tests.items():
        if not tests:
            continue
        lines += [f"**{_cost_name(cost)}.**", ""]
        lines += [f"* {compare.verdict(m, b, t)}" for (m, b), t in tests.items()]
        lines += [""]
    lines += table_block(
        "Sharpe ratio of each strategy's seed-averaged daily return at 0 bps with two "
        'standard errors from Lo (2002), "The Statistics of Sharpe Ratios": `SE (IID)` = '
        "sqrt((1 + SR_d^2 / 2) / T) x sqrt 252 for IID normal returns (SR_d the daily Sharpe), "
        "`SE (HAC)` his GMM version with Newey-West weights, robust to fat tails and serial "
        "correlation. `t (HAC)` = Sharpe / SE (HAC): |t| > 1.96 means the Sharpe ratio is "
        "distinguishable from zero at 5%.",
        tables.sharpe_se.astype({"Days": str}),
        tables.sharpe_se,
        out,
        "sharpe_se.csv",
        title="Sharpe ratios and their standard errors, 0 bps",
    )
    for cost, tests in tables.tests.items():
        if not tests:
            continue
        frame = compare.difference_table(tests)
        lines += table_block(
            f"{_cost_name(cost)}: `Difference` = model Sharpe - benchmark Sharpe, `SE` its HAC "
            "standard error, `Lags` the Newey-West lag.",
            frame.astype({"Days": str, "Lags": str}),
            frame,
            out,
            f"sharpe_tests_{bps(cost)}bps.csv",
            title=f"Sharpe differences, {bps(cost)} bps",
        )
    return lines


def per_asset(tables: Tables, out: Path) -> list[str]:
    """Section 3: per-asset Sharpe ratios and the Wilcoxon and KS tests."""
    (out / "asset_sharpes.csv").write_text(to_csv(tables.asset_sharpes))
    lines = ["## 3. Per-asset Sharpe ratios", ""]
    lines += table_block(
        "Each asset's own Sharpe ratio at 0 bps (its captured return, seeds averaged), "
        "summarised over assets as QuantNet (Koshiyama et al. 2021) Table 1 does: the median "
        "and the mean absolute deviation about the mean (`MAD`); `Share > 0` is the fraction "
        "of assets with a positive Sharpe ratio. Every asset's figure: "
        "[asset_sharpes.csv](asset_sharpes.csv).",
        tables.asset_sharpe.astype({"Assets": str}),
        tables.asset_sharpe,
        out,
        "asset_sharpe.csv",
    )
    if tables.asset_tests is not None:
        lines += table_block(
            "Each model's per-asset Sharpe ratios against each benchmark's on the assets both "
            "hold (QuantNet, section 4.2): the Wilcoxon signed-rank test of the paired "
            "differences (is their median zero?) and the two-sample Kolmogorov-Smirnov test "
            "(are the two distributions the same?), both `scipy.stats`. With tens of assets "
            "these tests have little power; nan where every difference is zero.",
            tables.asset_tests.astype({"Assets": str}),
            tables.asset_tests,
            out,
            "asset_tests.csv",
            title="Tests against the benchmarks",
        )
    return lines


def market(tables: Tables, out: Path) -> list[str]:
    """Section 4: OLS alpha and beta against the market."""
    lines = ["## 4. Alpha and beta against the market", ""]
    if tables.market is None or tables.alpha is None:
        return [
            *lines,
            "These runs have no index level and no long-only benchmark: no regression.",
            "",
        ]
    days = len(tables.market.returns)
    return lines + table_block(
        f"{tables.market.description} Ordinary least squares of each strategy's daily return "
        "(seed-averaged, 0 bps) on the market's return over the same interval (t, t+1]: "
        "r = a + b m + e. `Alpha` = 252 a (annualised); `Alpha SE` and `Alpha t` are "
        "Newey-West HAC (Bartlett kernel, lag about "
        f"{newey_west_lags(days)}, `momentum.significance.alpha_beta`), so |t| > 1.96 is an "
        "alpha different from zero at 5%.",
        tables.alpha.astype({"Days": str}),
        tables.alpha,
        out,
        "alpha_beta.csv",
    )


def rolling(tables: Tables, out: Path, plot: str | None) -> list[str]:
    """Section 5: 1-year rolling correlation of each model with TSMOM."""
    lines = ["## 5. Rolling correlation with TSMOM", ""]
    if tables.rolling is None:
        return [*lines, "The first run has no tsmom benchmark.", ""]
    (out / "rolling_correlation_tsmom.csv").write_text(to_csv(tables.rolling))
    frame = tables.rolling
    summary = pd.DataFrame(
        {
            "Mean": frame.mean(),
            "Min": frame.min(),
            "Max": frame.max(),
            "Last": frame.ffill().iloc[-1] if len(frame) else math.nan,
        }
    )
    summary.index.name = "Strategy"
    lines += [
        "Correlation of each model's daily return (seed-averaged, 0 bps) with TSMOM's over "
        f"the last {compare.ROLLING_WINDOW} sessions, as STMOM (Tan, Roberts & Zohren 2023) "
        "Fig. 3, right; summarised over the dates with a full window (nan: fewer than "
        f"{compare.ROLLING_WINDOW} sessions). Every date: "
        "[rolling_correlation_tsmom.csv](rolling_correlation_tsmom.csv).",
        "",
        to_markdown(summary, DIGITS),
    ]
    if plot is not None:
        lines += [f"![Rolling correlation with TSMOM]({plot})", ""]
    return lines


def trading(tables: Tables, lags: list[int], notes: list[str], out: Path) -> list[str]:
    """Sections 6 to 10: costs, turnover, correlation, combinations, delayed signals."""
    lines = ["## 6. Transaction costs", ""]
    lines += table_block(
        "Sharpe ratio (mean over seeds) net of c bps per unit of turnover, R - c x TO "
        "(eq. 13), for each c.",
        tables.costs,
        tables.costs,
        out,
        "costs.csv",
    )
    lines += ["## 7. Turnover", ""]
    lines += table_block(
        "Average daily portfolio turnover: the mean over dates of the 1/N_t average over assets "
        "of TO = 0.15 |X_t / s_t - X_{t-1} / s_{t-1}| (eq. 12; |X_t - X_{t-1}| for unscaled "
        "weights), then the mean over seeds. Entering the first position counts as a trade.",
        tables.turnover.astype({"Seeds": str}),
        tables.turnover,
        out,
        "turnover.csv",
    )
    lines += ["## 8. Correlation", ""]
    lines += table_block(
        "Pearson correlation of daily returns at 0 bps (multi-seed strategies: the "
        "seed-averaged daily return).",
        tables.correlation,
        tables.correlation,
        out,
        "correlation.csv",
    )
    lines += ["## 9. Equal-risk combinations", ""]
    if tables.combinations is not None:
        lines += table_block(
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
    lines += ["## 10. Delayed-signal stress test", ""]
    lines += table_block(
        "Sharpe ratio (mean over seeds, 0 bps) when each signal is traded k sessions late: "
        "the position held over (t, t+1] is the one decided at t - k (Boutier 2023). "
        "k=0 is the strategy as traded.",
        tables.delays.rename(columns={str(k): f"k={k}" for k in lags}),
        tables.delays,
        out,
        "delays.csv",
    )
    return lines


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def explanations(strategies: list[Strategy], out: Path) -> list[str]:
    """Each model run's explain/*.csv as a Markdown table, cells verbatim."""
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
                to_markdown(frame.set_index(frame.columns[0]), DIGITS),
                f"CSV: [{copy}]({copy})",
                "",
            ]
    return lines
