"""Tests of training/report.py on small fake run directories.

The runs are built the way the backtest runner writes them, from a synthetic panel: the
benchmarks of `momentum.benchmarks.BENCHMARKS`, and a "model" whose positions are the TSMOM
signal itself (seed 0) and TSMOM plus clipped noise (seed 1). Expected figures are
recomputed here from the stored parquet files with pandas and `momentum.metrics`, or by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from momentum import metrics
from momentum.benchmarks import BENCHMARKS, tsmom
from momentum.data import synthetic_prices
from momentum.features import Features, compute_features
from training.report import build_report, common_dates, daily_returns, load_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SQRT_YEAR = math.sqrt(252)
FIRST_OOS_ROW = 300  # after the 252-day TSMOM look-back and the 60-day vol warm-up


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def features() -> Features:
    panel = synthetic_prices(n_assets=8, n_days=620, n_markets=2, seed=3, stagger=False)
    return compute_features(panel.prices)


def _long(features: Features, rows: np.ndarray, signal: np.ndarray) -> pd.DataFrame:
    """One row per (date, ticker) of ``rows`` (the runner's layout)."""
    n_assets = len(features.tickers)
    return pd.DataFrame(
        {
            "date": np.repeat(features.dates[rows].to_numpy(), n_assets),
            "ticker": np.tile(np.asarray(features.tickers, dtype=object), len(rows)),
            "signal": signal[rows].ravel(),
            "vol": features.vol[rows].ravel(),
            "next_return": features.next_returns[rows].ravel(),
        }
    )


def write_run(
    path: Path,
    features: Features,
    seed_signals: dict[int, np.ndarray],
    config: dict,
    rows: np.ndarray | None = None,
) -> Path:
    """A run directory: config.json, oos.parquet (one block per seed) and benchmarks.parquet."""
    rows = np.arange(FIRST_OOS_ROW, len(features.dates)) if rows is None else rows
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    frames = []
    for seed, signal in seed_signals.items():
        frame = _long(features, rows, signal)
        frame.insert(2, "seed", np.int64(seed))
        frame.insert(3, "window", features.dates[rows][0].strftime("%Y"))
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(path / "oos.parquet", index=False)
    benchmarks = []
    for name, bench in BENCHMARKS.items():
        frame = _long(features, rows, bench.signal(features))
        frame["strategy"] = name
        frame["vol_scaled"] = bench.vol_scaled
        benchmarks.append(frame[["date", "ticker", "strategy", "signal", "vol_scaled"]])
    pd.concat(benchmarks, ignore_index=True).to_parquet(path / "benchmarks.parquet", index=False)
    return path


def noisy_tsmom(features: Features) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.clip(tsmom(features) + rng.normal(0.0, 0.5, features.vol.shape), -1.0, 1.0)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, features: Features) -> Path:
    """One report over a 2-seed model run and a run whose model *is* TSMOM."""
    root = tmp_path_factory.mktemp("report")
    model = write_run(
        root / "run_model",
        features,
        {0: tsmom(features), 1: noisy_tsmom(features)},
        {"label": "model", "model": "slp", "data": "synthetic", "seeds": [0, 1]},
    )
    clone = write_run(
        root / "run_clone",
        features,
        {0: tsmom(features), 4: tsmom(features)},
        {"model": "clone", "data": "synthetic"},
    )
    (clone / "explain").mkdir()
    (clone / "explain" / "tft_variable_importance.csv").write_text(
        "feature,weight\nnorm_ret_1d,0.125\nmacd_8_24,0.875\n"
    )
    build_report([model, clone], root / "out", cost_bps=(0, 1, 5, 10), delays=(1, 21))
    return root / "out"


@pytest.fixture(scope="module")
def metrics_json(report_dir: Path) -> dict:
    return json.loads((report_dir / "metrics.json").read_text())


def stored_panels(run: Path, seed: int) -> list[pd.DataFrame]:
    """signal, vol, next_return of one seed as dates x tickers frames, read back from disk."""
    oos = pd.read_parquet(run / "oos.parquet")
    mine = oos[oos["seed"] == seed]
    return [
        mine.pivot(index="date", columns="ticker", values=c)
        for c in ("signal", "vol", "next_return")
    ]


def direct_daily(run: Path, seed: int, cost_bps: float = 0.0, delay: int = 0) -> np.ndarray:
    """Portfolio return written out from the papers' formulas (eqs. 1, 12, 13) with pandas."""
    signal, vol, nxt = stored_panels(run, seed)
    signal = signal.shift(delay)
    position = signal * 0.15 / (vol * SQRT_YEAR)
    traded = (position - position.shift(1).fillna(0.0)).abs()
    net = position * nxt - cost_bps * 1e-4 * traded
    return net.mean(axis=1, skipna=True).to_numpy()


# ---------------------------------------------------------------------------- load_run


def test_load_run_reads_the_three_files_and_the_label(tmp_path: Path, features: Features) -> None:
    run = load_run(write_run(tmp_path / "r", features, {0: tsmom(features)}, {"model": "dmn"}))
    assert run.label == "dmn"  # no "label": the model name
    assert run.seeds == [0]
    assert len(run.oos) == (len(features.dates) - FIRST_OOS_ROW) * len(features.tickers)
    assert set(run.benchmarks["strategy"]) == set(BENCHMARKS)
    assert run.oos["date"].dtype == np.dtype("datetime64[ns]")


@pytest.mark.parametrize("missing", ["oos.parquet", "benchmarks.parquet", "config.json"])
def test_missing_file_is_named(tmp_path: Path, features: Features, missing: str) -> None:
    run = write_run(tmp_path / "r", features, {0: tsmom(features)}, {"model": "slp"})
    (run / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_run(run)
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        build_report([run], tmp_path / "out")


def test_missing_column_is_named(tmp_path: Path, features: Features) -> None:
    run = write_run(tmp_path / "r", features, {0: tsmom(features)}, {"model": "slp"})
    oos = pd.read_parquet(run / "oos.parquet").drop(columns="vol")
    oos.to_parquet(run / "oos.parquet", index=False)
    with pytest.raises(ValueError, match=r"oos\.parquet.*missing column.*'vol'"):
        load_run(run)


def test_bad_values_are_named_with_file_row_and_ticker(tmp_path: Path, features: Features) -> None:
    run = write_run(tmp_path / "r", features, {0: tsmom(features)}, {"model": "slp"})
    oos = pd.read_parquet(run / "oos.parquet")
    oos.loc[10, "signal"] = 1.5  # a model position outside [-1, 1]
    oos.to_parquet(run / "oos.parquet", index=False)
    with pytest.raises(ValueError, match=rf"oos\.parquet.*row 10 .*ticker {oos.loc[10, 'ticker']}"):
        load_run(run)
    oos.loc[10, "signal"] = 0.5
    oos = pd.concat([oos, oos.iloc[[3]]], ignore_index=True)  # same date/ticker/seed twice
    oos.to_parquet(run / "oos.parquet", index=False)
    with pytest.raises(ValueError, match=r"duplicate date/ticker/seed"):
        load_run(run)


def test_seeds_with_different_vol_are_rejected(tmp_path: Path, features: Features) -> None:
    run = write_run(
        tmp_path / "r", features, {0: tsmom(features), 1: tsmom(features)}, {"model": "slp"}
    )
    oos = pd.read_parquet(run / "oos.parquet")
    oos.loc[len(oos) - 1, "vol"] *= 2.0
    oos.to_parquet(run / "oos.parquet", index=False)
    with pytest.raises(ValueError, match=r"`vol` differs between seeds"):
        daily_returns(load_run(run))


# ---------------------------------------------------------------------------- report content


def test_every_strategy_has_a_row(report_dir: Path, metrics_json: dict) -> None:
    expected = [*BENCHMARKS, "model", "clone"]
    assert list(metrics_json) == expected
    text = (report_dir / "report.md").read_text()
    for table in ("paper_raw_0bps", "paper_rescaled_0bps", "paper_raw_5bps", "paper_rescaled_5bps"):
        frame = pd.read_csv(report_dir / f"{table}.csv", index_col="Strategy")
        assert list(frame.index) == expected
        assert list(frame.columns[:9]) == list(metrics.PAPER_COLUMNS)
    for name in expected:
        assert f"| {name} |" in text
    assert "intersection of the runs' out-of-sample dates" in text


def test_raw_sharpe_equals_a_direct_recomputation(report_dir: Path, metrics_json: dict) -> None:
    run = report_dir.parent / "run_model"
    per_seed = [metrics.sharpe_ratio(direct_daily(run, seed)) for seed in (0, 1)]
    assert metrics_json["model"]["raw"]["Sharpe"] == pytest.approx(np.mean(per_seed), rel=1e-10)
    assert metrics_json["model"]["raw_std"]["Sharpe"] == pytest.approx(
        np.std(per_seed, ddof=1), rel=1e-10
    )
    assert metrics_json["model"]["seeds"] == 2
    # eq. (13) at 5 bps, recomputed from the stored signal and vol
    net = [metrics.sharpe_ratio(direct_daily(run, seed, cost_bps=5)) for seed in (0, 1)]
    assert metrics_json["model"]["sharpe_by_cost"]["5"] == pytest.approx(np.mean(net), rel=1e-10)
    mdd = [metrics.max_drawdown(direct_daily(run, seed)) for seed in (0, 1)]
    assert metrics_json["model"]["raw"]["MDD"] == pytest.approx(np.mean(mdd), rel=1e-10)


def test_mean_std_cells_as_the_papers_print_them(report_dir: Path, metrics_json: dict) -> None:
    text = (report_dir / "report.md").read_text()
    sharpe = metrics_json["model"]["raw"]["Sharpe"]
    std = metrics_json["model"]["raw_std"]["Sharpe"]
    assert f"{sharpe:.3f} ({std:.3f})" in text
    # a benchmark has one "seed": no std
    assert metrics_json["tsmom"]["raw_std"]["Sharpe"] is None


def test_rescaled_table_has_the_target_vol(metrics_json: dict) -> None:
    for name, entry in metrics_json.items():
        assert entry["rescaled"]["Vol"] == pytest.approx(0.15, rel=1e-12), name
        # rescaling is a positive multiple: the Sharpe ratio does not change
        assert entry["rescaled"]["Sharpe"] == pytest.approx(entry["raw"]["Sharpe"], rel=1e-10)


def test_cost_table_is_non_increasing_in_cost(report_dir: Path, metrics_json: dict) -> None:
    table = pd.read_csv(report_dir / "costs.csv", index_col="Strategy")
    assert list(table.columns) == ["0 bps", "1 bps", "5 bps", "10 bps"]
    assert np.all(np.diff(table.to_numpy(), axis=1) <= 1e-12)
    for name, entry in metrics_json.items():
        assert entry["sharpe_by_cost"]["0"] == pytest.approx(entry["raw"]["Sharpe"], rel=1e-12)
        # a strategy that trades pays for it
        assert entry["sharpe_by_cost"]["10"] < entry["sharpe_by_cost"]["0"], name


def test_model_identical_to_tsmom_matches_it(report_dir: Path, metrics_json: dict) -> None:
    correlation = pd.read_csv(report_dir / "correlation.csv", index_col="Strategy")
    assert correlation.loc["clone", "tsmom"] == pytest.approx(1.0, abs=1e-12)
    assert correlation.loc["model", "model"] == pytest.approx(1.0, abs=1e-12)
    for key in ("raw", "rescaled"):
        for column, value in metrics_json["tsmom"][key].items():
            assert metrics_json["clone"][key][column] == pytest.approx(value, rel=1e-12), column
    assert metrics_json["clone"]["turnover"] == pytest.approx(metrics_json["tsmom"]["turnover"])
    assert metrics_json["clone"]["raw_std"]["Sharpe"] == pytest.approx(0.0, abs=1e-12)


def test_delay_zero_is_the_undelayed_figure_and_delays_change_it(
    report_dir: Path, metrics_json: dict
) -> None:
    table = pd.read_csv(report_dir / "delays.csv", index_col="Strategy")
    assert list(table.columns) == ["0", "1", "21"]
    for name, entry in metrics_json.items():
        assert table.loc[name, "0"] == pytest.approx(entry["raw"]["Sharpe"], rel=1e-12)
        assert entry["sharpe_by_delay"]["21"] == pytest.approx(table.loc[name, "21"], rel=1e-12)
    for name in ("tsmom", "macd", "model"):
        assert table.loc[name, "21"] != pytest.approx(table.loc[name, "0"], rel=1e-6), name


def test_delayed_returns_equal_the_shifted_signal(report_dir: Path) -> None:
    run = report_dir.parent / "run_model"
    delayed = daily_returns(load_run(run), delay=5)["model"]
    for seed, series in zip((0, 1), delayed, strict=True):
        np.testing.assert_allclose(series, direct_daily(run, seed, delay=5), rtol=1e-10)
    # the first 5 sessions hold nothing yet
    assert np.isnan(delayed[0][:5]).all()


def test_turnover_section_and_model_turnover(report_dir: Path, metrics_json: dict) -> None:
    table = pd.read_csv(report_dir / "turnover.csv", index_col="Strategy")
    assert table.loc["model", "Seeds"] == 2
    assert table.loc["model", "Turnover"] == pytest.approx(metrics_json["model"]["turnover"])
    # noise on top of the TSMOM signal trades more than TSMOM itself
    assert metrics_json["model"]["turnover"] > metrics_json["tsmom"]["turnover"] > 0


def test_tsmom_csmom_combination_equals_the_scaled_average(report_dir: Path) -> None:
    table = pd.read_csv(report_dir / "combinations.csv", index_col="Strategy")
    assert "tsmom+csmom" in table.index
    returns = daily_returns([load_run(report_dir.parent / "run_model")])
    a, b = returns["tsmom"][0], returns["csmom"][0]
    # Sharpe is scale-free: the combination is a / std(a) + b / std(b) up to a factor
    expected = metrics.sharpe_ratio(a / np.nanstd(a, ddof=1) + b / np.nanstd(b, ddof=1))
    assert table.loc["tsmom+csmom", "Sharpe"] == pytest.approx(expected, rel=1e-10)
    assert table.loc["tsmom+csmom", "Vol"] == pytest.approx(0.15, rel=1e-12)


def test_plots_are_png_files(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    for name in ("cumulative_returns", "turnover", "sharpe_vs_cost"):
        file = report_dir / "plots" / f"{name}.png"
        assert file.read_bytes()[:8] == PNG_SIGNATURE
        assert f"(plots/{name}.png)" in text


def test_explanations_are_shown_verbatim(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    section = text[text.index("## 12. Model explanations") :]
    assert "tft_variable_importance.csv" in section
    assert "| norm_ret_1d | 0.125 |" in section
    assert "| macd_8_24 | 0.875 |" in section


def test_metrics_json_is_strict_json(report_dir: Path) -> None:
    # NaN is not JSON; undefined values must be null
    json.loads((report_dir / "metrics.json").read_text(), parse_constant=pytest.fail)


# ---------------------------------------------------------------------------- several runs


def test_same_label_is_disambiguated_and_dates_intersected(
    tmp_path: Path, features: Features
) -> None:
    config = {"label": "slp", "model": "slp"}
    long_rows = np.arange(FIRST_OOS_ROW, len(features.dates))
    short_rows = np.arange(FIRST_OOS_ROW + 100, len(features.dates) - 50)
    first = write_run(tmp_path / "a", features, {0: tsmom(features)}, config, long_rows)
    second = write_run(tmp_path / "b", features, {0: noisy_tsmom(features)}, config, short_rows)
    runs = [load_run(first), load_run(second)]
    assert list(common_dates(runs)) == list(features.dates[short_rows])
    returns = daily_returns(runs)
    assert "slp (a)" in returns and "slp (b)" in returns and "slp" not in returns
    assert all(len(r) == len(short_rows) for series in returns.values() for r in series)
    # the first common date pays only the trade from the run's previous position
    whole = daily_returns(runs[:1], cost_bps=10)["slp"][0]
    cut = daily_returns(runs, cost_bps=10)["slp (a)"][0]
    np.testing.assert_array_equal(cut, whole[100 : 100 + len(short_rows)])

    report = build_report([first, second], tmp_path / "out", cost_bps=(0, 2), delays=(1,))
    assert set(json.loads((tmp_path / "out" / "metrics.json").read_text())) >= {
        "slp (a)",
        "slp (b)",
    }
    text = report.read_text()
    start, end = features.dates[short_rows[0]], features.dates[short_rows[-1]]
    assert f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} ({len(short_rows)} sessions)" in text
    # no 5 bps cost given: the net table is at the first non-zero cost
    assert (tmp_path / "out" / "paper_raw_2bps.csv").exists()


def test_dmn_slp_and_requested_combinations(tmp_path: Path, features: Features) -> None:
    dmn = write_run(tmp_path / "d", features, {0: tsmom(features)}, {"model": "dmn"})
    slp = write_run(tmp_path / "s", features, {0: noisy_tsmom(features)}, {"model": "slp"})
    build_report([dmn, slp], tmp_path / "out", combinations=[("tsmom", "dmn")])
    table = pd.read_csv(tmp_path / "out" / "combinations.csv", index_col="Strategy")
    assert list(table.index) == ["tsmom+csmom", "dmn+slp", "tsmom+dmn"]
    # dmn holds exactly the TSMOM positions: combining a strategy with itself changes nothing
    raw = json.loads((tmp_path / "out" / "metrics.json").read_text())["tsmom"]["rescaled"]
    assert table.loc["tsmom+dmn", "Sharpe"] == pytest.approx(raw["Sharpe"], rel=1e-10)
    assert table.loc["tsmom+dmn", "Leg correlation"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"combinations\[0\].*'lstm'"):
        build_report([dmn], tmp_path / "out2", combinations=[("lstm", "tsmom")])


# ---------------------------------------------------------------------------- hand-made run


def test_hand_computed_run(tmp_path: Path) -> None:
    """Two assets, four dates; A's vol is on target (leverage X), B's twice it (leverage X/2)."""
    run = tmp_path / "tiny"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"label": "hand", "model": "slp"}))
    dates = np.repeat(pd.bdate_range("2020-01-06", periods=4).to_numpy(), 2)
    on_target = 0.15 / SQRT_YEAR  # daily vol whose annualised value is 15%
    signal = [[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]
    nxt = [[0.01, 0.03], [0.02, -0.01], [-0.01, 0.0], [0.02, -0.02]]
    pd.DataFrame(
        {
            "date": dates,
            "ticker": ["A", "B"] * 4,
            "seed": np.zeros(8, dtype=np.int64),
            "window": "2020",
            "signal": np.ravel(signal),
            "vol": [on_target, 2 * on_target] * 4,
            "next_return": np.ravel(nxt),
        }
    ).to_parquet(run / "oos.parquet", index=False)
    # an unscaled benchmark long one unit of each asset
    pd.DataFrame(
        {
            "date": dates,
            "ticker": ["A", "B"] * 4,
            "strategy": "hold",
            "signal": 1.0,
            "vol_scaled": False,
        }
    ).to_parquet(run / "benchmarks.parquet", index=False)

    build_report([run], tmp_path / "out", cost_bps=(0, 10), delays=(1,))
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(result) == ["hold", "hand"]

    # hand: mean(1 x 0.01, 0.5 x 0.03), mean(0.02, -0.5 x -0.01), mean(0.01, 0), mean(-0.02, 0.01)
    daily = np.array([0.0125, 0.0125, 0.005, -0.005])
    assert result["hand"]["raw"]["E[Return]"] == pytest.approx(daily.mean() * 252, rel=1e-12)
    assert result["hand"]["raw"]["Hit Rate"] == pytest.approx(0.75)
    # eq. (12) per date, mean over A and B of |L_t - L_{t-1}|, entering from 0:
    # (1 + 0.5) / 2, (0 + 1) / 2, (2 + 0) / 2, 0
    traded = np.array([0.75, 0.5, 1.0, 0.0])
    assert result["hand"]["turnover"] == pytest.approx(traded.mean(), rel=1e-12)
    net = daily - 10e-4 * traded  # eq. (13) at 10 bps
    assert result["hand"]["sharpe_by_cost"]["10"] == pytest.approx(
        metrics.sharpe_ratio(net), rel=1e-12
    )
    # delayed one session: the first date holds nothing, then yesterday's positions
    late = np.array(
        [(1 * 0.02 + 0.5 * -0.01) / 2, (1 * -0.01 + -0.5 * 0.0) / 2, (-0.02 + 0.01) / 2]
    )
    assert result["hand"]["sharpe_by_delay"]["1"] == pytest.approx(
        metrics.sharpe_ratio(late), rel=1e-12
    )

    # hold: plain weights, no vol scaling; it buys once and never trades again
    assert result["hold"]["raw"]["E[Return]"] == pytest.approx(
        np.mean(nxt, axis=1).mean() * 252, rel=1e-12
    )
    assert result["hold"]["turnover"] == pytest.approx(0.25, rel=1e-12)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "TSMOM+CSMOM is left out" in text


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost_bps": (0, -1)}, "cost_bps"),
        ({"cost_bps": ()}, "cost_bps"),
        ({"delays": (1, 2.5)}, "delays"),
        ({"delays": (-1,)}, "delays"),
    ],
)
def test_bad_arguments_name_the_parameter(
    report_dir: Path, tmp_path: Path, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_report([report_dir.parent / "run_model"], tmp_path, **kwargs)


def test_runs_without_common_dates_are_rejected(tmp_path: Path, features: Features) -> None:
    early = write_run(
        tmp_path / "e", features, {0: tsmom(features)}, {"model": "a"}, np.arange(300, 400)
    )
    late = write_run(
        tmp_path / "l", features, {0: tsmom(features)}, {"model": "b"}, np.arange(400, 500)
    )
    with pytest.raises(ValueError, match="share no out-of-sample date"):
        daily_returns([load_run(early), load_run(late)])
    with pytest.raises(ValueError, match="given twice"):
        daily_returns([load_run(early), load_run(early)])


# ------------------------------------------------------------- constructed portfolios


def test_a_constructed_run_is_reported_from_its_stored_weights(tmp_path, features):
    """A run whose construction is not eq. 1's vol scaling stores its per-asset leverage
    N_t w; the report's return of the model is then sum_i w_i r_{i,t+1}."""
    from momentum.construction import construct_weights, per_asset_leverage
    from momentum.portfolio import strategy_returns

    rows = np.arange(FIRST_OOS_ROW, len(features.dates))
    signal = noisy_tsmom(features)
    half = len(features.tickers) // 2
    sectors = [list(range(half)), list(range(half, len(features.tickers)))]
    weights = construct_weights(
        "sector_neutral_mv",
        signal,
        features.vol,
        returns=features.returns,
        sectors=sectors,
        rows=rows,
    )
    config = {"model": "slp", "data": "synthetic", "construction": "sector_neutral_mv"}
    path = write_run(tmp_path / "run", features, {0: signal}, config, rows=rows)
    oos = pd.read_parquet(path / "oos.parquet")
    bare = path.parent / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(config))
    oos.to_parquet(bare / "oos.parquet", index=False)
    (bare / "benchmarks.parquet").write_bytes((path / "benchmarks.parquet").read_bytes())
    with pytest.raises(ValueError, match=r"missing column\(s\) \['position'\]"):
        load_run(bare)

    oos["position"] = per_asset_leverage(weights).ravel()
    oos.to_parquet(path / "oos.parquet", index=False)
    model = daily_returns(load_run(path))["slp"][0]
    expected = np.nansum(weights * features.next_returns[rows], axis=1)
    earned = np.isfinite(model)  # the last date has no next return yet
    assert earned.sum() == len(rows) - 1
    np.testing.assert_allclose(model[earned], expected[earned], rtol=1e-12, atol=1e-15)
    # the vol-scaled reading of the same signal is a different strategy
    vol_scaled = strategy_returns(signal[rows], features.next_returns[rows], features.vol[rows])
    assert np.nanmax(np.abs(model - vol_scaled)) > 1e-4
