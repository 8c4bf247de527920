"""Metrics: hand-computable cases, table rendering, and agreement with empyrical on real data."""

from __future__ import annotations

import doctest
import importlib.resources
import io
import math
import warnings

import empyrical
import numpy as np
import pandas as pd
import pytest

import momentum.metrics as metrics
from momentum.metrics import (
    EXTRA_COLUMNS,
    PAPER_COLUMNS,
    TRADING_DAYS,
    annual_return,
    annual_volatility,
    bias_bps,
    calmar_ratio,
    downside_deviation,
    hit_rate,
    kurtosis,
    max_drawdown,
    performance,
    performance_table,
    profit_loss_ratio,
    sharpe_ratio,
    skewness,
    sortino_ratio,
    t_statistic,
    tail_ratio,
    to_csv,
    to_markdown,
)
from momentum.portfolio import captured_returns, portfolio_returns

NAN = np.nan
# r = [0.01, -0.02, 0.03]: mean 2/300, deviations (1, -8, 7)/300, sum of squares 114/300^2,
# so std(ddof=1) = sqrt(57)/300.
R3 = [0.01, -0.02, 0.03]
ALL_METRICS = [
    annual_return,
    annual_volatility,
    downside_deviation,
    max_drawdown,
    sharpe_ratio,
    sortino_ratio,
    calmar_ratio,
    hit_rate,
    profit_loss_ratio,
    skewness,
    kurtosis,
    tail_ratio,
    bias_bps,
    t_statistic,
]


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics)
    assert result.attempted > 0
    assert result.failed == 0


# ------------------------------------------------------ hand-computable cases


def test_annual_return_and_bias_are_the_scaled_mean() -> None:
    assert annual_return(R3) == approx(2 / 300 * 252)  # 1.68
    assert bias_bps(R3) == approx(2 / 300 * 1e4)  # 66.67 bps a day


def test_annual_volatility_uses_sample_std() -> None:
    assert annual_volatility(R3) == approx(math.sqrt(57) / 300 * math.sqrt(252))


def test_sharpe_is_mean_over_std_times_sqrt_252() -> None:
    # (2/300) / (sqrt(57)/300) * sqrt(252)
    assert sharpe_ratio(R3) == approx(2 * math.sqrt(252 / 57))
    r = np.array(R3)
    assert sharpe_ratio(r) == approx(r.mean() / r.std(ddof=1) * np.sqrt(252))
    # one definition: Sharpe = E[Return] / Vol
    assert sharpe_ratio(R3) == approx(annual_return(R3) / annual_volatility(R3))
    # monthly data annualise with their own frequency
    assert sharpe_ratio(R3, periods_per_year=12) == approx(2 * math.sqrt(12 / 57))


@pytest.mark.parametrize("bad", [0, -252, math.nan, True])
def test_sharpe_rejects_bad_periods_per_year(bad: float) -> None:
    with pytest.raises(ValueError, match="`periods_per_year`"):
        sharpe_ratio(R3, periods_per_year=bad)


def test_downside_deviation_and_sortino() -> None:
    # min(r, 0) = (0, -0.02, 0): sqrt(0.0004 / 3) * sqrt(252) = 0.02 * sqrt(84)
    assert downside_deviation(R3) == approx(0.02 * math.sqrt(84))
    assert sortino_ratio(R3) == approx(1.68 / (0.02 * math.sqrt(84)))
    assert math.isnan(sortino_ratio([0.01, 0.02]))  # no loss: undefined


def test_max_drawdown_known_peak_and_trough() -> None:
    # wealth 1.1, 1.21 (peak), 0.968, 0.8712 (trough), 1.3068 (new peak), 1.24146
    r = [0.1, 0.1, -0.2, -0.1, 0.5, -0.05]
    assert max_drawdown(r) == approx(1 - 0.8712 / 1.21)  # 0.28
    assert max_drawdown(r[:5] + [-0.3]) == approx(0.3)  # the later, deeper fall wins


def test_max_drawdown_counts_a_first_day_loss_and_compounds() -> None:
    assert max_drawdown([-0.1, 0.05]) == approx(0.1)
    # compounded, not summed: two -10% days lose 19%
    assert max_drawdown([-0.1, -0.1]) == approx(0.19)
    assert max_drawdown([0.01, 0.02, 0.0]) == 0.0


def test_calmar_uses_the_arithmetic_mean_over_mdd() -> None:
    assert calmar_ratio(R3) == approx(1.68 / 0.02)  # MDD 1 - 0.9898/1.01 = 0.02
    assert math.isnan(calmar_ratio([0.01, 0.02]))  # no drawdown: undefined


def test_hit_rate_counts_strictly_positive_days() -> None:
    assert hit_rate(R3) == approx(2 / 3)
    assert hit_rate([0.01, 0.0, -0.01, 0.02]) == 0.5  # a flat day is not a hit


def test_profit_loss_ratio() -> None:
    assert profit_loss_ratio(R3) == approx(1.0)  # mean(0.01, 0.03) / 0.02
    assert profit_loss_ratio([0.03, -0.01, -0.02, 0.0]) == approx(0.03 / 0.015)
    assert math.isnan(profit_loss_ratio([0.01, 0.02]))


def test_skewness_is_the_bias_corrected_sample_skew() -> None:
    # in units of 1/300: deviations (1, -8, 7), m2 = 114/3 = 38, m3 = (1 - 512 + 343)/3 = -56
    g1 = -56 / 38**1.5
    n = 3
    assert skewness(R3) == approx(g1 * math.sqrt(n * (n - 1)) / (n - 2))


def test_kurtosis_is_the_bias_corrected_excess_kurtosis() -> None:
    r = [0.01, -0.01, 0.03, -0.03]
    # mean 0, m2 = 5e-4, m4 = 41e-8 -> g2 = 41/25 - 3 = -1.36
    # G2 = ((n+1) g2 + 6) (n-1) / ((n-2)(n-3)) = (5 * -1.36 + 6) * 3 / 2 = -1.2
    assert kurtosis(r) == approx(-1.2)
    assert skewness(r) == pytest.approx(0.0, abs=1e-12)  # symmetric


def test_tail_ratio_is_95th_over_5th_percentile() -> None:
    # 21 sorted points: linear percentiles land exactly on positions 1 and 19
    r = np.array([-0.05, -0.02] + [0.0] * 17 + [0.06, 0.10])
    assert tail_ratio(r) == approx(0.06 / 0.02)
    assert tail_ratio(np.random.default_rng(0).permutation(r)) == approx(3.0)
    assert tail_ratio(r) == approx(empyrical.tail_ratio(r))


def test_t_statistic() -> None:
    # (2/300) / ((sqrt(57)/300) / sqrt(3)) = 2 / sqrt(19)
    assert t_statistic(R3) == approx(2 / math.sqrt(19))


def test_nans_are_dropped_before_computing() -> None:
    with_gaps = [NAN, 0.01, NAN, -0.02, 0.03, NAN]
    for metric in ALL_METRICS:
        expected = metric([0.01, -0.02, 0.03, 0.0]) if metric is kurtosis else metric(R3)
        got = metric(with_gaps + [0.0]) if metric is kurtosis else metric(with_gaps)
        assert got == approx(expected), metric.__name__


@pytest.mark.parametrize("empty", [[], [NAN, NAN]])
def test_empty_series_give_nan(empty: list[float]) -> None:
    for metric in ALL_METRICS:
        assert math.isnan(metric(empty)), metric.__name__


def test_degenerate_series() -> None:
    assert math.isnan(annual_volatility([0.01]))
    assert math.isnan(sharpe_ratio([0.01]))
    flat = [0.001] * 10
    assert annual_volatility(flat) == 0.0
    # zero dispersion: undefined, not a ~1e15 artefact of rounding
    for metric in (sharpe_ratio, t_statistic, skewness, kurtosis):
        assert math.isnan(metric(flat)), metric.__name__
    # nearly constant data: scipy's moments lose precision, we report nan
    assert math.isnan(skewness([1.0, 1.0 + 1e-15, 1.0, 1.0]))


def test_bad_input_names_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"`r` must be a 1-D series.*\(2, 2\)"):
        sharpe_ratio(np.ones((2, 2)))
    with pytest.raises(ValueError, match="`r` contains an infinite value at position 1"):
        annual_return([0.01, np.inf])
    with pytest.raises(ValueError, match="`turnover` must be a 1-D"):
        performance(R3, turnover=np.ones((2, 2)))


def test_pandas_series_is_accepted() -> None:
    s = pd.Series(R3, index=pd.date_range("2020-01-01", periods=3))
    assert sharpe_ratio(s) == approx(sharpe_ratio(R3))


# --------------------------------------------------------------- agreement


@pytest.fixture(scope="module")
def long_only() -> np.ndarray:
    """Daily returns of the vol-scaled long-only portfolio of the embedded 20 stocks."""
    path = importlib.resources.files("momentum") / "data/sp500_20_stocks_1990_2022.csv.gz"
    with path.open("rb") as fh:
        prices = pd.read_csv(fh, index_col=0, parse_dates=True, compression="gzip")
    r = prices.pct_change()
    vol = r.ewm(span=60, min_periods=60).std()
    signal = pd.DataFrame(np.where(vol.notna(), 1.0, NAN), index=vol.index, columns=vol.columns)
    per_asset = captured_returns(signal, r.shift(-1), vol)
    port = portfolio_returns(per_asset)
    out = port[~np.isnan(port)]
    assert out.size > 8000  # about 33 years, less the 60-day warm-up
    return out


def _empyrical(fn: object, r: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(r))  # type: ignore[operator]


def test_agrees_with_empyrical_on_long_only(long_only: np.ndarray) -> None:
    r = long_only
    assert annual_volatility(r) == pytest.approx(
        _empyrical(empyrical.annual_volatility, r), abs=1e-10
    )
    assert sharpe_ratio(r) == pytest.approx(_empyrical(empyrical.sharpe_ratio, r), abs=1e-10)
    assert downside_deviation(r) == pytest.approx(_empyrical(empyrical.downside_risk, r), abs=1e-10)
    # empyrical reports drawdown as a negative number
    assert max_drawdown(r) == pytest.approx(-_empyrical(empyrical.max_drawdown, r), abs=1e-10)
    assert sortino_ratio(r) == pytest.approx(_empyrical(empyrical.sortino_ratio, r), abs=1e-10)
    assert tail_ratio(r) == pytest.approx(_empyrical(empyrical.tail_ratio, r), abs=1e-10)


def test_sharpe_equals_the_formula_on_long_only(long_only: np.ndarray) -> None:
    r = long_only
    assert sharpe_ratio(r) == approx(np.mean(r) / np.std(r, ddof=1) * np.sqrt(TRADING_DAYS))


def test_calmar_differs_from_empyrical(long_only: np.ndarray) -> None:
    r = long_only
    ours = calmar_ratio(r)
    assert ours == approx(annual_return(r) / max_drawdown(r))
    # empyrical divides the compounded growth rate (CAGR), not the arithmetic mean
    theirs = _empyrical(empyrical.calmar_ratio, r)
    assert theirs == pytest.approx(_empyrical(empyrical.annual_return, r) / max_drawdown(r))
    # here CAGR exceeds 252 * mean by ~3e-4 a year: Calmar moves by ~1e-3, far above rounding
    assert abs(ours - theirs) > 1e-6


def test_calmar_differs_from_empyrical_by_hand() -> None:
    # ours: 1.68 / 0.02 = 84; empyrical: CAGR = (1.01 * 0.98 * 1.03)^(252/3) - 1, over 0.02
    cagr = (1.01 * 0.98 * 1.03) ** (252 / 3) - 1
    assert calmar_ratio(R3) == approx(84.0)
    assert _empyrical(empyrical.calmar_ratio, np.array(R3)) == pytest.approx(cagr / 0.02, rel=1e-9)


# ------------------------------------------------------------------ tables


def test_performance_has_every_column_in_order() -> None:
    result = performance(R3)
    assert tuple(result) == PAPER_COLUMNS + EXTRA_COLUMNS
    assert result["Sharpe"] == approx(sharpe_ratio(R3))
    assert result["Calmar"] == approx(84.0)
    with_to = performance(R3, turnover=[0.2, NAN, 0.4])
    assert tuple(with_to)[-1] == "Turnover"
    assert with_to["Turnover"] == approx(0.3)


def test_performance_table_rows_in_given_order() -> None:
    series = {"Long Only": R3, "TSMOM": [0.02, -0.01, NAN, 0.01], "Flat": [0.0, 0.0]}
    table = performance_table(series)
    assert list(table.index) == ["Long Only", "TSMOM", "Flat"]
    assert list(table.columns) == list(PAPER_COLUMNS)
    assert table.loc["Long Only", "Calmar"] == approx(84.0)
    assert table.loc["TSMOM", "E[Return]"] == approx(0.02 / 3 * 252)
    assert math.isnan(table.loc["Flat", "Sharpe"])
    subset = performance_table(series, columns=["Sharpe", "t-stat"])
    assert list(subset.columns) == ["Sharpe", "t-stat"]


def test_performance_table_rescaled_has_15_percent_vol() -> None:
    series = {"A": [0.01, -0.02, 0.03, 0.0], "B": [0.001, -0.002, 0.0015]}
    raw = performance_table(series)
    rescaled = performance_table(series, rescale=True)
    assert rescaled["Vol"].to_numpy() == pytest.approx([0.15, 0.15], rel=1e-12)
    # rescaling is a positive multiple: scale-free ratios do not move
    for column in ("Sharpe", "Sortino", "Hit Rate", "Avg P / Avg L"):
        assert rescaled[column].to_numpy() == pytest.approx(raw[column].to_numpy(), rel=1e-12)


def test_performance_table_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown names \['Alpha'\]"):
        performance_table({"A": R3}, columns=["Sharpe", "Alpha"])
    with pytest.raises(ValueError, match="series 'bad': `r` contains an infinite value"):
        performance_table({"A": R3, "bad": [0.01, np.inf]})


def _table() -> pd.DataFrame:
    return performance_table({"Long Only": R3, "DMN | LSTM": [0.02, -0.01, 0.01]})


def test_to_markdown_renders_header_and_rows() -> None:
    text = to_markdown(_table(), digits=3)
    lines = text.splitlines()
    assert lines[0] == "| Strategy | " + " | ".join(PAPER_COLUMNS) + " |"
    assert lines[1] == "|:---|" + "---:|" * len(PAPER_COLUMNS)
    assert len(lines) == 4
    # E[Return] 1.680, Vol sqrt(57 * 252) / 300 = 0.39949.., ..., Calmar 84.000
    assert lines[2].startswith("| Long Only | 1.680 | 0.399 | ")
    assert "| 84.000 |" in lines[2]
    assert lines[3].startswith("| DMN \\| LSTM | ")  # a pipe in a name is escaped
    assert all(line.count("|") - line.count("\\|") == len(PAPER_COLUMNS) + 2 for line in lines)


def test_to_markdown_formats_nan_and_negative_zero() -> None:
    table = pd.DataFrame({"x": [NAN, -0.0001]}, index=pd.Index(["a", "b"], name="Strategy"))
    assert to_markdown(table, digits=2).splitlines()[2:] == ["| a | nan |", "| b | 0.00 |"]
    with pytest.raises(ValueError, match="`digits`"):
        to_markdown(table, digits=-1)


def test_to_csv_round_trips() -> None:
    table = _table()
    text = to_csv(table)
    assert text.splitlines()[0] == "Strategy," + ",".join(
        f'"{c}"' if "," in c else c for c in PAPER_COLUMNS
    )
    back = pd.read_csv(io.StringIO(text), index_col=0)
    assert list(back.index) == ["Long Only", "DMN | LSTM"]
    np.testing.assert_allclose(back.to_numpy(), table.to_numpy(), rtol=1e-15)
