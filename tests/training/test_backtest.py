"""Tiny end-to-end backtests through the CLI: the run directory, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from momentum.benchmarks import BENCHMARKS
from momentum.data import synthetic_prices
from momentum.features import FeatureConfig
from momentum.metrics import sharpe_ratio
from training.cli import main

# 8 assets from 2000-01-03 over ~6.3 years: windows test 2005 and 2006
ARGS = ["--first-test-year", "2005", "--step-years", "1", "--end-year", "2006"]


@pytest.fixture(scope="module")
def price_file(tmp_path_factory):
    panel = synthetic_prices(n_assets=6, n_days=1650, n_markets=2, seed=5)
    path = tmp_path_factory.mktemp("data") / "prices.csv"
    panel.prices.to_csv(path, index_label="date")
    return path


def _run(model, price_file, out, *extra):
    argv = ["backtest", "--model", model, "--data", str(price_file), *ARGS]
    argv += ["--seeds", "2", "--trials", "2", "--epochs", "2", "--out", str(out), *extra]
    assert main(argv) == 0


@pytest.mark.parametrize(
    ("model", "extra"),
    [("slp", ["--turnover-cost", "2"]), ("dmn", ["--seq-len", "21"])],
)
def test_tiny_backtest_run_directory(model, extra, price_file, tmp_path):
    out = tmp_path / model
    _run(model, price_file, out, *extra)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == model and config["budget"]["trials"] == 2
    oos = pd.read_parquet(out / "oos.parquet")
    dates = pd.read_csv(price_file, index_col=0, parse_dates=True).index
    test_dates = dates[(dates.year >= 2005) & (dates.year <= 2006)]
    for seed in (0, 1):
        part = oos[oos.seed == seed]
        # every out-of-sample date appears once per ticker
        assert not part.duplicated(["date", "ticker"]).any()
        assert set(pd.DatetimeIndex(part.date.unique())) == set(test_dates)
        for window in ("2005", "2006"):
            best = json.loads((out / f"seed_{seed}" / f"window_{window}" / "best.json").read_text())
            first_test = dates.get_loc(pd.Timestamp(best["test_start"]))
            # no training or validation label reaches the window's first test date
            assert best["train_rows"][1] + 1 < first_test
            assert best["valid_rows"][1] + 1 < first_test
    # metrics.json equals metrics recomputed from the stored returns
    metrics = json.loads((out / "metrics.json").read_text())
    per_seed = [
        sharpe_ratio(oos[oos.seed == s].groupby("date")["captured"].mean().to_numpy())
        for s in (0, 1)
    ]
    assert metrics[model]["raw"]["Sharpe"] == pytest.approx(np.mean(per_seed), rel=1e-9)
    report = (out / "report.md").read_text()
    for name in BENCHMARKS:
        assert name in report
    bench = pd.read_parquet(out / "benchmarks.parquet")
    assert set(pd.DatetimeIndex(bench.date.unique())) == set(test_dates)
    if model == "slp":
        # SLP attributions of every window's best model, averaged into the report
        explain = pd.read_csv(out / "explain" / "slp_attribution.csv", index_col="feature")
        assert tuple(explain.index) == FeatureConfig().names
        assert explain["own_share"].sum() + explain["cross_share"].sum() == pytest.approx(1.0)
        assert "slp_attribution" in report


def test_a_sector_neutral_seed_ensemble_stores_its_weights(price_file, tmp_path):
    """--construction sector_neutral_mv with --sectors: each date's stored per-asset leverage
    N_t w is zero in every sector and gross one over N_t, also after --seed-ensemble averages
    the seeds' signals (the weights are rebuilt from the averaged signal)."""
    panel = synthetic_prices(n_assets=6, n_days=1650, n_markets=2, seed=5)
    sectors = tmp_path / "sectors.csv"
    pd.Series(panel.markets, name="sector").rename_axis("ticker").to_csv(sectors)
    out = tmp_path / "run"
    _run(
        "slp",
        price_file,
        out,
        "--construction",
        "sector_neutral_mv",
        "--sectors",
        str(sectors),
        "--seed-ensemble",
    )
    assert json.loads((out / "config.json").read_text())["construction"] == "sector_neutral_mv"
    oos = pd.read_parquet(out / "oos.parquet")
    assert set(oos.seed) == {0}
    oos["sector"] = oos.ticker.map(panel.markets)
    held = oos.dropna(subset=["position"])
    n_t = held.groupby("date")["position"].transform("size")
    weight = held["position"] / n_t
    gross = weight.abs().groupby(held["date"]).sum()
    assert len(gross) > 300 and np.allclose(gross, 1.0, atol=1e-9)
    net = weight.groupby([held["date"], held["sector"]]).sum()
    assert np.abs(net).max() < 1e-9
    # the averaged signal of the two seeds, not either seed's
    seeds = [pd.read_parquet(p) for p in sorted(out.glob("seed_*/window_2005/signals.parquet"))]
    mean = (seeds[0]["signal"].to_numpy() + seeds[1]["signal"].to_numpy()) / 2
    first = oos[oos.window == "2005"].sort_values(["date", "ticker"])
    order = seeds[0].sort_values(["date", "ticker"]).index
    np.testing.assert_allclose(first["signal"].to_numpy(), mean[order], atol=1e-12)
    np.testing.assert_allclose(first["captured"], first["position"] * first["next_return"])


def test_an_older_run_without_the_new_settings_resumes(price_file, tmp_path):
    """A config.json written before --objective and --construction existed ran on their
    defaults: resuming it is not refused as a different backtest."""
    out = tmp_path / "run"
    _run("slp", price_file, out)
    path = out / "config.json"
    stored = json.loads(path.read_text())
    for key in ("objective", "construction"):
        del stored[key]
    path.write_text(json.dumps(stored))
    _run("slp", price_file, out)  # resumes (every window done): no refusal
    argv = ["backtest", "--model", "slp", "--data", str(price_file), *ARGS, "--seeds", "2"]
    argv += ["--trials", "2", "--epochs", "2", "--out", str(out), "--objective", "mse"]
    assert main(argv) == 2  # another objective is another experiment


def test_rerun_with_other_settings_is_refused(price_file, tmp_path):
    out = tmp_path / "run"
    _run("slp", price_file, out)
    argv = ["backtest", "--model", "slp", "--data", str(price_file), *ARGS, "--seeds", "2"]
    argv += ["--trials", "3", "--epochs", "2", "--out", str(out)]
    assert main(argv) == 2  # a different budget in the same directory


def test_killed_backtest_resumes_without_redoing_the_first_window(price_file, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "training.cli", "backtest", "--model", "slp"]
    command += ["--data", str(price_file), *ARGS, "--seeds", "1", "--trials", "2", "--epochs", "30"]
    command += ["--patience", "30", "--out", str(out)]
    first = out / "seed_0" / "window_2005" / "signals.parquet"
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.exists(), "the first window never finished"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "oos.parquet").exists()  # killed before the end
    stamp = first.stat().st_mtime_ns
    trials = sorted(p.name for p in (first.parent / "trials").iterdir())
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    assert first.stat().st_mtime_ns == stamp  # not redone
    assert sorted(p.name for p in (first.parent / "trials").iterdir()) == trials
    oos = pd.read_parquet(out / "oos.parquet")
    assert set(oos.window) == {"2005", "2006"}


@pytest.mark.slow
def test_ray_executor_matches_local_executor(price_file, tmp_path):
    _run("slp", price_file, tmp_path / "local")
    _run("slp", price_file, tmp_path / "ray", "--executor", "ray")
    local = pd.read_parquet(tmp_path / "local" / "oos.parquet")
    remote = pd.read_parquet(tmp_path / "ray" / "oos.parquet")
    pd.testing.assert_frame_equal(local, remote)
    for seed in (0, 1):
        for window in ("2005", "2006"):
            a = json.loads(
                (tmp_path / "local" / f"seed_{seed}/window_{window}/best.json").read_text()
            )
            b = json.loads(
                (tmp_path / "ray" / f"seed_{seed}/window_{window}/best.json").read_text()
            )
            assert a == b
