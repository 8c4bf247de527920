"""Tests of the paper sections of the report (training/reporting/papers.py).

Fake run directories are written as `tests/training/test_report.py` writes them; expected
figures are recomputed here from the stored parquet files with pandas, `momentum.metrics`
and `scipy.stats.linregress`, not with the report's code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from momentum import metrics
from momentum.benchmarks import tsmom
from momentum.data import synthetic_prices
from momentum.features import Features, compute_features
from momentum.significance import signal_regression
from tests.training.test_report import SQRT_YEAR, direct_daily, write_run
from training.report import build_report, load_run
from training.reporting.papers import input_length

DMN_SECTION = "The DMN paper's grid"
RNN_SECTION = "The RNN paper's table"


@pytest.fixture(scope="module")
def features() -> Features:
    panel = synthetic_prices(n_assets=6, n_days=420, n_markets=2, seed=5, stagger=False)
    return compute_features(panel.prices)


def noisy(features: Features, seed: int, scale: float = 0.5) -> np.ndarray:
    """TSMOM plus clipped noise: a model-like position in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(tsmom(features) + rng.normal(0.0, scale, features.vol.shape), -1.0, 1.0)


def write_best(run: Path, seed: int, lengths: dict[str, object], key: str = "k") -> None:
    """best.json of each window (name -> chosen input length) of one seed."""
    for window, value in lengths.items():
        folder = run / f"seed_{seed}" / f"window_{window}"
        folder.mkdir(parents=True)
        params = {"hidden": 60, "dropout": 0.25} if value is None else {key: value, "hidden": 60}
        (folder / "best.json").write_text(json.dumps({"trial": 3, "params": params}))


def add_positions(run: Path) -> None:
    """A constructed run's per-asset leverage: the signal demeaned across assets each date."""
    oos = pd.read_parquet(run / "oos.parquet")
    oos["position"] = oos["signal"] - oos.groupby(["seed", "date"])["signal"].transform("mean")
    oos.to_parquet(run / "oos.parquet", index=False)


def stored(run: Path, seed: int, column: str) -> pd.DataFrame:
    """One column of one seed's oos rows as a dates x tickers frame."""
    oos = pd.read_parquet(run / "oos.parquet")
    return oos[oos["seed"] == seed].pivot(index="date", columns="ticker", values=column)


def vol_scaled_turnover(run: Path, seed: int) -> float:
    """Eq. (12) by hand: mean over dates of the asset average of |L_t - L_{t-1}|, from 0."""
    signal, vol = stored(run, seed, "signal"), stored(run, seed, "vol")
    position = signal * 0.15 / (vol * SQRT_YEAR)
    traded = (position - position.shift(1).fillna(0.0)).abs()
    return float(traded.mean(axis=1).mean())


def constructed_daily(run: Path, seed: int) -> np.ndarray:
    """A constructed run's return: the asset average of the stored leverage x next return."""
    position, nxt = stored(run, seed, "position"), stored(run, seed, "next_return")
    return (position * nxt).mean(axis=1, skipna=True).to_numpy()


def linregress_pooled(run: Path, seed: int) -> tuple[float, float, int]:
    """R², t of the slope and pairs of OLS of next_return on signal over (date, asset) pairs."""
    oos = pd.read_parquet(run / "oos.parquet")
    mine = oos[(oos["seed"] == seed) & oos["next_return"].notna() & oos["signal"].notna()]
    fit = scipy.stats.linregress(mine["signal"], mine["next_return"])
    return fit.rvalue**2, fit.slope / fit.stderr, len(mine)


def section(text: str, title: str) -> str:
    """The Markdown of the section titled ``title``, up to the next section."""
    start = text.index(title)
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


# ---------------------------------------------------------------------------- the DMN grid


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory: pytest.TempPathFactory, features: Features) -> Path:
    """Four DMN-paper architectures, the LSTM twice with the Sharpe objective."""
    root = tmp_path_factory.mktemp("grid")
    runs = [
        # an old run: no "objective" key, so trained on the Sharpe loss
        write_run(
            root / "dmn", features, {0: tsmom(features), 1: noisy(features, 1)}, {"model": "dmn"}
        ),
        write_run(
            root / "dmn_reg",
            features,
            {0: noisy(features, 2, 0.2)},
            {"model": "dmn", "label": "dmn_reg", "objective": "sharpe", "turnover_cost_bps": 10},
        ),
        write_run(
            root / "lasso",
            features,
            {0: noisy(features, 3), 1: noisy(features, 4)},
            {"model": "lasso", "label": "lasso_mse", "objective": "mse"},
        ),
        write_run(
            root / "mlp",
            features,
            {0: noisy(features, 5, 1.0)},
            {"model": "mlp_dmn", "objective": "binary"},
        ),
        write_run(
            root / "wavenet",
            features,
            {0: noisy(features, 6, 0.8)},
            {"model": "wavenet", "objective": "returns"},
        ),
    ]
    build_report(runs, root / "out", cost_bps=(0, 1, 5), delays=(1, 5))
    return root


def test_grid_rows_are_references_then_architecture_by_objective(grid_dir: Path) -> None:
    table = pd.read_csv(grid_dir / "out" / "dmn_grid.csv", index_col=0)
    assert table.index.name == "Architecture / Objective"
    assert list(table.index) == [
        "Long Only",
        "Sgn(Returns)",
        "MACD",
        "Lasso / MSE",
        "MLP / Binary",
        "WaveNet / Ave. Returns",
        # two runs of one architecture and objective: both shown, named by their run
        "LSTM / Sharpe (dmn)",
        "LSTM / Sharpe (dmn_reg)",
    ]
    assert list(table["Strategy"]) == [
        "long_only",
        "tsmom",
        "macd",
        "lasso_mse",
        "mlp_dmn",
        "wavenet",
        "dmn",
        "dmn_reg",
    ]
    assert list(table.columns[3:7]) == [
        "Sharpe",
        "E[Return] (15% vol)",
        "MDD (15% vol)",
        "Turnover",
    ]
    text = (grid_dir / "out" / "report.md").read_text()
    assert f"## 13. {DMN_SECTION}" in text
    assert RNN_SECTION not in text
    assert "| LSTM / Sharpe (dmn_reg) |" in section(text, DMN_SECTION)


def test_grid_cells_equal_a_direct_recomputation(grid_dir: Path) -> None:
    table = pd.read_csv(grid_dir / "out" / "dmn_grid.csv", index_col=0)
    costs = pd.read_csv(grid_dir / "out" / "dmn_grid_costs.csv", index_col=0)
    for label, run, seeds in [
        ("LSTM / Sharpe (dmn)", "dmn", (0, 1)),
        ("Lasso / MSE", "lasso", (0, 1)),
        ("WaveNet / Ave. Returns", "wavenet", (0,)),
    ]:
        path = grid_dir / run
        daily = [direct_daily(path, s) for s in seeds]
        sharpe = [metrics.sharpe_ratio(r) for r in daily]
        assert table.loc[label, "Sharpe"] == pytest.approx(np.mean(sharpe), rel=1e-10), label
        # Exhibit 3: each seed's series times 15% / its realised annual vol
        rescaled = [r * 0.15 / (np.nanstd(r, ddof=1) * SQRT_YEAR) for r in daily]
        assert table.loc[label, "E[Return] (15% vol)"] == pytest.approx(
            np.mean([np.nanmean(r) * 252 for r in rescaled]), rel=1e-10
        )
        assert table.loc[label, "MDD (15% vol)"] == pytest.approx(
            np.mean([metrics.max_drawdown(r) for r in rescaled]), rel=1e-10
        )
        assert table.loc[label, "Turnover"] == pytest.approx(
            np.mean([vol_scaled_turnover(path, s) for s in seeds]), rel=1e-10
        )
        net = [metrics.sharpe_ratio(direct_daily(path, s, cost_bps=5)) for s in seeds]
        assert costs.loc[label, "5 bps"] == pytest.approx(np.mean(net), rel=1e-10)
        if len(seeds) > 1:
            assert table.loc[label, "Sharpe std"] == pytest.approx(np.std(sharpe, ddof=1))
    assert list(costs.columns) == ["0 bps", "1 bps", "5 bps"]


def test_grid_references_are_the_benchmarks_rows(grid_dir: Path) -> None:
    table = pd.read_csv(grid_dir / "out" / "dmn_grid.csv", index_col=0)
    paper = pd.read_csv(grid_dir / "out" / "paper_raw_0bps.csv", index_col="Strategy")
    rescaled = pd.read_csv(grid_dir / "out" / "paper_rescaled_0bps.csv", index_col="Strategy")
    for label, name in [("Long Only", "long_only"), ("Sgn(Returns)", "tsmom"), ("MACD", "macd")]:
        assert table.loc[label, "Sharpe"] == pytest.approx(paper.loc[name, "Sharpe"], rel=1e-12)
        assert table.loc[label, "MDD (15% vol)"] == pytest.approx(rescaled.loc[name, "MDD"])
        # the rescaled Sharpe ratio is the raw one: printed once
        assert rescaled.loc[name, "Sharpe"] == pytest.approx(table.loc[label, "Sharpe"])
    assert "csmom" not in set(table["Strategy"])


def test_grid_sharpe_matrix(grid_dir: Path) -> None:
    matrix = pd.read_csv(grid_dir / "out" / "dmn_grid_sharpe.csv", index_col="Architecture")
    table = pd.read_csv(grid_dir / "out" / "dmn_grid.csv", index_col=0)
    assert list(matrix.index) == ["Lasso", "MLP", "WaveNet", "LSTM"]
    assert list(matrix.columns) == ["Sharpe", "Ave. Returns", "MSE", "Binary"]
    assert matrix.loc["Lasso", "MSE"] == pytest.approx(table.loc["Lasso / MSE", "Sharpe"])
    assert matrix.loc["MLP", "Binary"] == pytest.approx(table.loc["MLP / Binary", "Sharpe"])
    assert matrix.loc["WaveNet", "Ave. Returns"] == pytest.approx(
        table.loc["WaveNet / Ave. Returns", "Sharpe"]
    )
    # no run, and two runs: no single number
    assert math.isnan(matrix.loc["Lasso", "Sharpe"])
    assert math.isnan(matrix.loc["LSTM", "Sharpe"])
    text = section((grid_dir / "out" / "report.md").read_text(), DMN_SECTION)
    assert "| LSTM |  |  | 2 runs |" not in text  # the cell sits under Sharpe, not MSE
    assert "| LSTM | 2 runs |  |  |  |" in text


def test_grid_metrics_json(grid_dir: Path) -> None:
    result = json.loads((grid_dir / "out" / "metrics.json").read_text())
    assert result["dmn_reg"]["dmn_grid"] == {
        "row": "LSTM / Sharpe (dmn_reg)",
        "architecture": "LSTM",
        "objective": "Sharpe",
    }
    assert result["tsmom"]["dmn_grid"] == {
        "row": "Sgn(Returns)",
        "architecture": None,
        "objective": None,
    }
    assert "dmn_grid" not in result["csmom"]
    assert all("rnn_table" not in entry for entry in result.values())


# ---------------------------------------------------------------------------- Boutier Table 3


@pytest.fixture(scope="module")
def rnn_dir(tmp_path_factory: pytest.TempPathFactory, features: Features) -> Path:
    """An LSTM pinned to 63 on constructed weights, a GRU that searched k, a pinned Deep RNN."""
    root = tmp_path_factory.mktemp("rnn")
    lstm = write_run(
        root / "lstm",
        features,
        {0: noisy(features, 11), 1: noisy(features, 12)},
        {
            "model": "lstm_xs",
            "fixed": {"k": 63},
            "seq_len": 63,
            "construction": "sector_neutral_mv",
        },
    )
    add_positions(lstm)
    gru = write_run(
        root / "gru",
        features,
        {0: noisy(features, 13), 1: noisy(features, 14)},
        {"model": "gru", "seq_len": 63},
    )
    for seed in (0, 1):
        write_best(gru, seed, {"2001": 63, "2002": 126, "2003": 21})
    deep = write_run(
        root / "deep", features, {0: noisy(features, 15)}, {"model": "deep_rnn", "seq_len": 126}
    )
    build_report([lstm, gru, deep], root / "out", cost_bps=(0, 5), delays=(1, 5, 10, 21))
    return root


def test_rnn_rows_input_length_and_construction(rnn_dir: Path) -> None:
    table = pd.read_csv(rnn_dir / "out" / "rnn_table.csv", index_col="Model", dtype={2: str})
    assert list(table.index) == ["LSTM 63", "GRU", "DEEPRNN 126"]
    assert list(table["Strategy"]) == ["lstm_xs", "gru", "deep_rnn"]
    assert list(table["Input length"]) == ["63", "63, 126, 21", "126"]
    assert list(table["Construction"]) == ["sector_neutral_mv", "vol_scaled", "vol_scaled"]
    text = (rnn_dir / "out" / "report.md").read_text()
    # no DMN-paper model: the RNN table is the first paper section
    assert f"## 13. {RNN_SECTION}" in text
    assert DMN_SECTION not in text
    assert not (rnn_dir / "out" / "dmn_grid.csv").exists()


def test_rnn_signal_regression_equals_linregress_on_the_pooled_pairs(rnn_dir: Path) -> None:
    table = pd.read_csv(rnn_dir / "out" / "rnn_table.csv", index_col="Model")
    for label, run, seeds in [("LSTM 63", "lstm", (0, 1)), ("DEEPRNN 126", "deep", (0,))]:
        fits = [linregress_pooled(rnn_dir / run, s) for s in seeds]
        r2, t, pairs = (np.array(v) for v in zip(*fits, strict=True))
        assert table.loc[label, "Signal R2"] == pytest.approx(r2.mean(), rel=1e-9)
        assert table.loc[label, "Signal t"] == pytest.approx(t.mean(), rel=1e-9)
        assert table.loc[label, "Pairs"] == pairs.min()
        if len(seeds) > 1:
            assert table.loc[label, "Signal t std"] == pytest.approx(np.std(t, ddof=1), rel=1e-9)
    # the regressor is the model's signal, not the constructed position
    oos = pd.read_parquet(rnn_dir / "lstm" / "oos.parquet")
    on_position = signal_regression(
        oos.loc[oos["seed"] == 0, "position"], oos.loc[oos["seed"] == 0, "next_return"]
    )
    assert on_position.t != pytest.approx(linregress_pooled(rnn_dir / "lstm", 0)[1], rel=1e-3)
    text = section((rnn_dir / "out" / "report.md").read_text(), RNN_SECTION)
    assert "overstates significance" in text


def test_rnn_return_columns_equal_a_direct_recomputation(rnn_dir: Path) -> None:
    table = pd.read_csv(rnn_dir / "out" / "rnn_table.csv", index_col="Model")
    # the constructed LSTM earns its stored leverage x the next return
    lstm = [constructed_daily(rnn_dir / "lstm", s) for s in (0, 1)]
    gru = [direct_daily(rnn_dir / "gru", s) for s in (0, 1)]
    for label, daily in [("LSTM 63", lstm), ("GRU", gru)]:
        for column, metric in [
            ("Sharpe", metrics.sharpe_ratio),
            ("Calmar", metrics.calmar_ratio),
            ("Sortino", metrics.sortino_ratio),
            ("Tail Ratio", metrics.tail_ratio),
            ("MDD", metrics.max_drawdown),
        ]:
            expected = np.mean([metric(r) for r in daily])
            assert table.loc[label, column] == pytest.approx(expected, rel=1e-10), column
        assert table.loc[label, "Vol"] == pytest.approx(
            np.mean([np.nanstd(r, ddof=1) * SQRT_YEAR for r in daily]), rel=1e-10
        )
        assert table.loc[label, "Bias (bps)"] == pytest.approx(
            np.mean([np.nanmean(r) * 1e4 for r in daily]), rel=1e-10
        )
    assert table.loc["GRU", "Turnover"] == pytest.approx(
        np.mean([vol_scaled_turnover(rnn_dir / "gru", s) for s in (0, 1)]), rel=1e-10
    )
    position = [stored(rnn_dir / "lstm", s, "position") for s in (0, 1)]
    traded = [(p - p.shift(1).fillna(0.0)).abs().mean(axis=1).mean() for p in position]
    assert table.loc["LSTM 63", "Turnover"] == pytest.approx(np.mean(traded), rel=1e-10)


def test_rnn_delay_rows(rnn_dir: Path) -> None:
    delays = pd.read_csv(rnn_dir / "out" / "rnn_delays.csv", index_col="Model")
    assert list(delays.index) == ["LSTM 63", "GRU", "DEEPRNN 126"]
    assert list(delays.columns) == ["0", "1", "5", "10", "21"]
    for k in (0, 5, 21):
        expected = np.mean(
            [metrics.sharpe_ratio(direct_daily(rnn_dir / "gru", s, delay=k)) for s in (0, 1)]
        )
        assert delays.loc["GRU", str(k)] == pytest.approx(expected, rel=1e-10), k
    everything = pd.read_csv(rnn_dir / "out" / "delays.csv", index_col="Strategy")
    np.testing.assert_allclose(delays.loc["LSTM 63"], everything.loc["lstm_xs"], rtol=1e-12)
    text = section((rnn_dir / "out" / "report.md").read_text(), RNN_SECTION)
    stress = text[text.index("### Delayed-signal stress test") :]
    assert "| Model | k=0 | k=1 | k=5 | k=10 | k=21 |" in stress
    assert "| LSTM 63 |" in stress


def test_rnn_metrics_json(rnn_dir: Path) -> None:
    result = json.loads((rnn_dir / "out" / "metrics.json").read_text())
    table = pd.read_csv(rnn_dir / "out" / "rnn_table.csv", index_col="Model")
    entry = result["lstm_xs"]["rnn_table"]
    assert entry["row"] == "LSTM 63"
    assert entry["input_length_pinned"] == 63
    assert entry["construction"] == "sector_neutral_mv"
    assert entry["columns"]["Signal t"] == pytest.approx(table.loc["LSTM 63", "Signal t"])
    assert entry["columns"]["Sharpe"] == pytest.approx(result["lstm_xs"]["raw"]["Sharpe"])
    assert result["gru"]["rnn_table"]["input_length_pinned"] is None
    assert result["gru"]["rnn_table"]["input_length"] == "63, 126, 21"
    assert result["deep_rnn"]["rnn_table"]["columns_std"]["Signal t"] is None  # one seed
    assert "rnn_table" not in result["tsmom"]
    json.loads((rnn_dir / "out" / "metrics.json").read_text(), parse_constant=pytest.fail)


# ---------------------------------------------------------------------------- input length


def test_input_length_pinned_searched_and_per_seed(tmp_path: Path, features: Features) -> None:
    signals = {0: noisy(features, 21), 1: noisy(features, 22)}
    fixed = write_run(
        tmp_path / "f", features, signals, {"model": "gru", "fixed": {"seq_len": 21}, "seq_len": 63}
    )
    write_best(fixed, 0, {"2001": 126})  # pinned wins over what best.json says
    assert input_length(load_run(fixed)) == (21, "21")

    searched = write_run(tmp_path / "s", features, signals, {"model": "gru", "seq_len": 63})
    write_best(searched, 0, {"2002": 126, "2001": 63})
    write_best(searched, 1, {"2001": 21, "2002": 63})
    # window order, and per seed where the seeds chose differently
    assert input_length(load_run(searched)) == (None, "seed 0: 63, 126; seed 1: 21, 63")

    no_key = write_run(tmp_path / "n", features, signals, {"model": "gru", "seq_len": 252})
    write_best(no_key, 0, {"2001": None})  # the search did not touch the length
    assert input_length(load_run(no_key)) == (252, "252")

    bare = write_run(tmp_path / "b", features, signals, {"model": "gru"})
    assert input_length(load_run(bare)) == (None, "unknown")

    broken = write_run(tmp_path / "x", features, signals, {"model": "gru"})
    write_best(broken, 0, {"2001": 63})
    (broken / "seed_0" / "window_2001" / "best.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"window_2001/best\.json"):
        input_length(load_run(broken))
    write_best(broken, 1, {"2001": 63.5})
    (broken / "seed_0" / "window_2001" / "best.json").unlink()
    with pytest.raises(ValueError, match="whole number"):
        input_length(load_run(broken))


# ---------------------------------------------------------------------------- other models


def test_no_paper_section_for_other_models(tmp_path: Path, features: Features) -> None:
    run = write_run(
        tmp_path / "slp",
        features,
        {0: noisy(features, 31)},
        {"model": "slp", "objective": "mse", "construction": "vol_scaled"},
    )
    report = build_report([run], tmp_path / "out", cost_bps=(0,), delays=(1,))
    text = report.read_text()
    assert DMN_SECTION not in text and RNN_SECTION not in text
    assert "## 13." not in text
    for file in ("dmn_grid.csv", "dmn_grid_sharpe.csv", "rnn_table.csv", "rnn_delays.csv"):
        assert not (tmp_path / "out" / file).exists()
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all("dmn_grid" not in e and "rnn_table" not in e for e in result.values())


# ---------------------------------------------------------------------------- the regression


def test_signal_regression_matches_linregress_and_drops_nan_pairs() -> None:
    rng = np.random.default_rng(4)
    signal = rng.normal(0.0, 1.0, (300, 12))
    returns = 0.002 * signal + rng.normal(0.0, 0.02, signal.shape)
    signal[5, 3] = np.nan
    returns[7, :] = np.nan  # a date without next returns
    fit = signal_regression(signal, returns)
    both = np.isfinite(signal) & np.isfinite(returns)
    ols = scipy.stats.linregress(signal[both], returns[both])
    assert fit.n == both.sum() == 300 * 12 - 12 - 1
    assert fit.slope == pytest.approx(ols.slope, rel=1e-10)
    assert fit.intercept == pytest.approx(ols.intercept, rel=1e-10)
    assert fit.slope_se == pytest.approx(ols.stderr, rel=1e-10)
    assert fit.t == pytest.approx(ols.slope / ols.stderr, rel=1e-10)
    assert fit.r_squared == pytest.approx(ols.rvalue**2, rel=1e-10)


def test_signal_regression_undefined_cases_and_bad_input() -> None:
    flat = signal_regression(np.ones((10, 3)), np.arange(30.0).reshape(10, 3))
    assert math.isnan(flat.t) and math.isnan(flat.r_squared) and flat.n == 30
    exact = signal_regression(np.arange(10.0), 2.0 * np.arange(10.0))
    assert exact.r_squared == pytest.approx(1.0) and math.isnan(exact.t)
    with pytest.raises(ValueError, match="same shape"):
        signal_regression(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="`next_return`.*infinite"):
        signal_regression(np.zeros(4), np.array([0.0, np.inf, 0.0, 0.0]))
