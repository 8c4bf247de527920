"""The report's comparisons: ex-ante vol targeting, Sharpe tests, per-asset, rolling, alpha.

Runs are built like tests/training/test_report.py's (synthetic panel, the runner's layout):
"model" is TSMOM (seed 0) and TSMOM plus noise (seed 1), "oracle" trades the sign of the next
return (far better than TSMOM), "contrarian" the opposite of TSMOM (far worse) and "clone"
TSMOM itself. Expected figures are recomputed from the stored files with pandas, numpy and
scipy, or come from `momentum.significance` where the report only arranges its numbers.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import training.report
import training.reporting.compare
from momentum import metrics
from momentum.benchmarks import tsmom
from momentum.data import SyntheticPanel, load_index, synthetic_prices
from momentum.features import Features, compute_features
from momentum.portfolio import ex_ante_vol_scale
from momentum.significance import alpha_beta, sharpe_difference_test, sharpe_ratio_se
from tests.training.test_report import PNG_SIGNATURE, noisy_tsmom, stored_panels, write_run
from training.report import build_report, daily_returns, load_run
from training.reporting.compare import market_for
from training.reporting.tables import ex_ante_targeted

SQRT_YEAR = math.sqrt(252)
MODELS = ("model", "oracle", "contrarian", "clone")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def panel() -> SyntheticPanel:
    return synthetic_prices(n_assets=8, n_days=620, n_markets=2, seed=3, stagger=False)


@pytest.fixture(scope="module")
def features(panel: SyntheticPanel) -> Features:
    return compute_features(panel.prices)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, features: Features) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    oracle = np.nan_to_num(np.sign(features.next_returns))
    signals = {
        "model": {0: tsmom(features), 1: noisy_tsmom(features)},
        "oracle": {0: oracle},
        "contrarian": {0: -tsmom(features)},
        "clone": {0: tsmom(features)},
    }
    return [
        write_run(root / name, features, seeds, {"model": name, "data": "synthetic"})
        for name, seeds in signals.items()
    ]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, runs: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(runs, out, cost_bps=(0, 5), delays=(1,))
    return out


@pytest.fixture(scope="module")
def text(report_dir: Path) -> str:
    return (report_dir / "report.md").read_text()


@pytest.fixture(scope="module")
def mean_returns(runs: list[Path]) -> dict[str, np.ndarray]:
    """Seed-averaged daily return of every strategy at 0 bps, from the public API."""
    per_seed = daily_returns([load_run(r) for r in runs])
    return {name: seed_mean(series) for name, series in per_seed.items()}


def seed_mean(series: list[np.ndarray]) -> np.ndarray:
    """Date-by-date mean over the seeds that have a return; NaN where none has."""
    stacked = np.vstack(series)
    count = np.isfinite(stacked).sum(axis=0)
    total = np.nansum(stacked, axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def csv(report_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report_dir / name, index_col=0)


# ---------------------------------------------------------------------------- the split


def test_doctests() -> None:
    assert doctest.testmod(training.reporting.compare).failed == 0


def test_the_public_names_still_come_from_training_report() -> None:
    for name in training.report.__all__:
        assert hasattr(training.report, name), name
    assert {"build_report", "load_run", "daily_returns", "common_dates", "Run"} <= set(
        training.report.__all__
    )


# ---------------------------------------------------------------------------- vol targeting


@pytest.mark.parametrize("t", [25, 120, 298])
def test_ex_ante_scale_uses_no_return_from_day_t_on(t: int) -> None:
    rng = np.random.default_rng(t)
    r = rng.normal(0.0004, 0.01, 300)
    changed = r.copy()
    changed[t:] = rng.normal(0.0, 0.05, 300 - t)  # everything earned from the decision at t on
    before, after = ex_ante_vol_scale(r), ex_ante_vol_scale(changed)
    # the leverage decided at t (and before) is the same; the scaled returns before t too
    np.testing.assert_array_equal(after[: t + 1], before[: t + 1])
    np.testing.assert_array_equal(ex_ante_targeted(changed)[:t], ex_ante_targeted(r)[:t])
    # ... and the rule does react to r_t the next day, so the check above is not vacuous
    assert after[t + 1] != before[t + 1]


def test_ex_ante_table_equals_a_pandas_recomputation(
    report_dir: Path, mean_returns: dict[str, np.ndarray], metrics_json: dict
) -> None:
    table = csv(report_dir, "paper_exante_0bps.csv")
    r = mean_returns["tsmom"]
    # EWM std (span 60, 20 observations) of returns up to the day before, annualised
    sigma = pd.Series(r).ewm(span=60, min_periods=20).std().shift(1).to_numpy() * SQRT_YEAR
    scaled = r * 0.15 / sigma
    assert table.loc["tsmom", "Sharpe"] == pytest.approx(metrics.sharpe_ratio(scaled), rel=1e-10)
    assert table.loc["tsmom", "Vol"] == pytest.approx(0.15, abs=0.03)
    # a leverage that moves day by day changes the Sharpe ratio, unlike the constant rescale
    assert metrics_json["tsmom"]["exante"]["Sharpe"] != pytest.approx(
        metrics_json["tsmom"]["raw"]["Sharpe"], rel=1e-3
    )
    assert metrics_json["tsmom"]["rescaled"]["Sharpe"] == pytest.approx(
        metrics_json["tsmom"]["raw"]["Sharpe"], rel=1e-12
    )
    assert (report_dir / "paper_exante_5bps.csv").exists()


def test_the_text_says_what_each_scaling_does(text: str) -> None:
    assert "### Rescaled to 15% vol (one constant, ex-post), 0 bps" in text
    assert "multiplying by one positive constant changes no ratio" in text
    assert "### Vol-targeted to 15% ex-ante, 0 bps" in text
    assert "up to the day before" in text


# ---------------------------------------------------------------------------- Sharpe tests


@pytest.fixture(scope="module")
def metrics_json(report_dir: Path) -> dict:
    return json.loads((report_dir / "metrics.json").read_text())


def test_sharpe_standard_errors_are_lo_2002(
    report_dir: Path, mean_returns: dict[str, np.ndarray]
) -> None:
    table = csv(report_dir, "sharpe_se.csv")
    for name, r in mean_returns.items():
        assert table.loc[name, "Sharpe"] == pytest.approx(metrics.sharpe_ratio(r), rel=1e-12)
        r_clean = r[np.isfinite(r)]
        sr_daily = r_clean.mean() / r_clean.std(ddof=1)
        iid = math.sqrt((1 + sr_daily**2 / 2) / r_clean.size) * SQRT_YEAR
        assert table.loc[name, "SE (IID)"] == pytest.approx(iid, rel=1e-10)
        assert table.loc[name, "SE (HAC)"] == pytest.approx(sharpe_ratio_se(r), rel=1e-12)
        assert table.loc[name, "Days"] == r_clean.size


def test_sharpe_difference_rows_are_the_ledoit_wolf_test(
    report_dir: Path, mean_returns: dict[str, np.ndarray], runs: list[Path]
) -> None:
    table = csv(report_dir, "sharpe_tests_0bps.csv")
    expected = [f"{m} vs {b}" for m in MODELS for b in ("long_only", "tsmom")]
    assert list(table.index) == expected
    test = sharpe_difference_test(mean_returns["model"], mean_returns["tsmom"])
    row = table.loc["model vs tsmom"]
    assert row["Difference"] == pytest.approx(test.difference, rel=1e-12)
    assert row["SE"] == pytest.approx(test.se, rel=1e-12)
    assert row["p-value"] == pytest.approx(test.p_value, rel=1e-12)
    # net of 5 bps the same test runs on the net seed-averaged returns
    net = daily_returns([load_run(r) for r in runs], cost_bps=5)
    net_test = sharpe_difference_test(seed_mean(net["oracle"]), net["tsmom"][0])
    net_table = csv(report_dir, "sharpe_tests_5bps.csv")
    assert net_table.loc["oracle vs tsmom", "Std errors"] == pytest.approx(net_test.z, rel=1e-12)
    assert math.isnan(table.loc["clone vs tsmom", "p-value"])


def test_verdicts_say_plainly_who_beats_whom(text: str, metrics_json: dict) -> None:
    section = text[text.index("## 2. ") : text.index("## 3. ")]
    assert "* oracle beats tsmom: Sharpe" in section
    assert "* oracle beats long_only: Sharpe" in section
    assert "* contrarian does not beat tsmom; it is significantly worse" in section
    assert "* clone cannot be tested against tsmom (identical returns up to leverage)" in section
    # one sentence per model, benchmark and cost (0 and 5 bps), with its standard errors
    for model in MODELS:
        for bench in ("long_only", "tsmom"):
            sentences = [
                line
                for line in section.splitlines()
                if line.startswith(f"* {model} ") and f" {bench}" in line
            ]
            assert len(sentences) == 2, (model, bench)
            z = metrics_json[model]["versus"]["0"][bench]["std_errors"]
            if z is not None:
                assert f"{abs(z):.1f} standard errors" in sentences[0]
    oracle = metrics_json["oracle"]["versus"]["0"]["tsmom"]
    assert oracle["p_value"] < 0.01 and oracle["std_errors"] > 3


# ---------------------------------------------------------------------------- per asset


def per_asset_sharpe(run: Path, seeds: list[int]) -> pd.Series:
    """Each ticker's Sharpe ratio of the seed-averaged captured return, from the files."""
    captured = []
    for seed in seeds:
        signal, vol, nxt = stored_panels(run, seed)
        captured.append(signal * 0.15 / (vol * SQRT_YEAR) * nxt)
    mean = sum(captured) / len(captured)
    return mean.apply(lambda column: metrics.sharpe_ratio(column.to_numpy()))


def test_per_asset_sharpes_median_mad_and_tests(report_dir: Path, runs: list[Path]) -> None:
    sharpes = csv(report_dir, "asset_sharpes.csv")
    model = per_asset_sharpe(runs[0], [0, 1])
    clone = per_asset_sharpe(runs[3], [0])
    np.testing.assert_allclose(sharpes.loc[model.index, "model"], model, rtol=1e-10)
    # the clone holds TSMOM's positions, so the benchmark's per-asset figures are the same
    np.testing.assert_allclose(sharpes.loc[clone.index, "tsmom"], clone, rtol=1e-10)

    summary = csv(report_dir, "asset_sharpe.csv")
    assert summary.loc["model", "Median"] == pytest.approx(np.median(model), rel=1e-10)
    mad = np.mean(np.abs(model - model.mean()))
    assert summary.loc["model", "MAD"] == pytest.approx(mad, rel=1e-10)
    assert summary.loc["model", "Assets"] == len(model)

    tests = csv(report_dir, "asset_tests.csv")
    wilcoxon = scipy.stats.wilcoxon(model.to_numpy() - clone.to_numpy())
    ks = scipy.stats.ks_2samp(model.to_numpy(), clone.to_numpy())
    assert tests.loc["model vs tsmom", "Wilcoxon p"] == pytest.approx(wilcoxon.pvalue, rel=1e-10)
    assert tests.loc["model vs tsmom", "KS D"] == pytest.approx(ks.statistic, rel=1e-10)
    assert tests.loc["model vs tsmom", "KS p"] == pytest.approx(ks.pvalue, rel=1e-10)
    # identical per-asset Sharpes: no signed-rank test, and KS sees no difference
    assert math.isnan(tests.loc["clone vs tsmom", "Wilcoxon p"])
    assert tests.loc["clone vs tsmom", "KS p"] == pytest.approx(1.0)
    # the oracle wins on every asset
    assert tests.loc["oracle vs tsmom", "Wilcoxon p"] < 0.01


# ---------------------------------------------------------------------------- rolling correlation


def test_rolling_correlation_with_tsmom(
    report_dir: Path, text: str, mean_returns: dict[str, np.ndarray]
) -> None:
    frame = pd.read_csv(report_dir / "rolling_correlation_tsmom.csv", index_col=0)
    assert list(frame.columns) == list(MODELS)
    base = pd.Series(mean_returns["tsmom"])
    expected = pd.Series(mean_returns["model"]).rolling(252).corr(base)
    np.testing.assert_allclose(frame["model"].to_numpy(), expected.to_numpy(), rtol=1e-10)
    # a full window from the 252nd date on; the last date has no next-day return, so its
    # window holds only 251
    assert frame["model"].iloc[:251].isna().all() and frame["model"].iloc[251:-1].notna().all()
    np.testing.assert_allclose(frame["clone"].dropna(), 1.0, atol=1e-12)
    assert (frame["contrarian"].dropna() < -0.99).all()
    plot = report_dir / "plots" / "rolling_correlation_tsmom.png"
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert "(plots/rolling_correlation_tsmom.png)" in text


# ---------------------------------------------------------------------------- alpha and beta


def test_without_an_index_the_proxy_is_said_plainly(report_dir: Path, text: str) -> None:
    section = text[text.index("## 4. ") : text.index("## 5. ")]
    assert "**the market here is not the S&P 500**" in section
    assert "buy_and_hold" in section
    table = csv(report_dir, "alpha_beta.csv")
    assert table.loc["buy_and_hold", "Beta"] == pytest.approx(1.0, rel=1e-10)
    assert math.isnan(table.loc["buy_and_hold", "Alpha t"])  # an exact fit has no t


def test_alpha_beta_on_a_given_index(
    tmp_path: Path, runs: list[Path], panel: SyntheticPanel, mean_returns: dict[str, np.ndarray]
) -> None:
    build_report(runs[:1], tmp_path, cost_bps=(0,), delays=(), market=panel.index)
    table = csv(tmp_path, "alpha_beta.csv")
    dates = pd.DatetimeIndex(pd.read_csv(tmp_path / "rolling_correlation_tsmom.csv")["date"])
    # the index return over (t, t+1], the interval a position decided at t earns
    forward = (panel.index.shift(-1) / panel.index - 1.0).reindex(dates).to_numpy()
    fit = alpha_beta(mean_returns["model"], forward)
    assert table.loc["model", "Alpha"] == pytest.approx(fit.alpha, rel=1e-10)
    assert table.loc["model", "Alpha t"] == pytest.approx(fit.alpha_t, rel=1e-10)
    assert table.loc["model", "Beta"] == pytest.approx(fit.beta, rel=1e-10)
    assert "given index level `EQUAL_WEIGHT`" in (tmp_path / "report.md").read_text()
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["model"]["alpha_beta"]["market"] == "EQUAL_WEIGHT"


def test_sp500_runs_use_the_embedded_index(tmp_path: Path, features: Features) -> None:
    level = load_index("sp500")
    dates = pd.DatetimeIndex(level.index[5000:5300]).astype("datetime64[ns]")
    market = market_for("sp500", None, dates, {})
    assert market is not None and market.name == "S&P 500"
    expected = (level.shift(-1) / level - 1.0).iloc[5000:5300].to_numpy()
    np.testing.assert_allclose(market.returns, expected, rtol=1e-12)
    # end to end: a run whose config says sp500 regresses on the S&P 500, not on a proxy
    run = write_run(tmp_path / "r", features, {0: tsmom(features)}, {"model": "m", "data": "sp500"})
    text = build_report([run], tmp_path / "out", cost_bps=(0,), delays=()).read_text()
    section = text[text.index("## 4. ") : text.index("## 5. ")]
    assert "S&P 500 index level shipped with the embedded `sp500` data" in section
    assert "not the S&P 500" not in section
