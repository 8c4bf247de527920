"""The results page: measured rows for every run and benchmark, reruns reuse finished runs."""

import json

import pytest

from momentum.benchmarks import BENCHMARKS
from momentum.data import synthetic_prices
from training import results
from training.backtest_config import BacktestConfig
from training.results import ResultRun, run_results


@pytest.fixture
def tiny_runs(tmp_path, monkeypatch):
    path = tmp_path / "prices.csv"
    synthetic_prices(n_assets=5, n_days=1400, n_markets=1, seed=9).prices.to_csv(
        path, index_label="date"
    )
    common = {"data": str(path), "first_test_year": 2004, "step_years": 2, "end_year": 2005}
    budget = {"seeds": 1, "trials": 1, "epochs": 1}
    runs = (
        ResultRun("slp", BacktestConfig(model="slp", label="slp", **common, **budget), "tiny SLP"),
        ResultRun("dmn", BacktestConfig(model="dmn", label="dmn", **common, **budget), "tiny DMN"),
    )
    monkeypatch.setattr(results, "RESULT_RUNS", runs)
    return runs


def test_results_page(tiny_runs, tmp_path):
    doc = run_results(tmp_path / "runs", tmp_path / "results.md", log=lambda _: None)
    text = doc.read_text()
    for name in ["slp", "dmn", *BENCHMARKS]:
        assert f"| {name} |" in text
    assert "tiny SLP" in text and "## Published, for context" in text
    metrics = json.loads((tmp_path / "runs" / "report" / "metrics.json").read_text())
    assert f"{metrics['slp']['sharpe_by_cost']['0']:.3f}" in text
    # the Sharpe's standard error beside it, the ex-ante table, and a verdict per model,
    # benchmark and cost, taken from the report's tests
    assert f"| {metrics['slp']['sharpe_se']['hac']:.2f} |" in text
    assert "Vol-targeted ex ante" in text
    assert f"{metrics['dmn']['exante']['Sharpe']:.3f}" in text
    for model in ("slp", "dmn"):
        for cost in ("0", "5"):
            for bench in ("long_only", "tsmom"):
                sentence = metrics[model]["versus"][cost][bench]["verdict"]
                assert sentence.startswith(f"{model} ") and f"* {sentence}" in text
    timing = json.loads((tmp_path / "runs" / "slp" / "timing.json").read_text())
    assert timing["seconds"] > 0
    # a second call reuses the finished runs
    messages = []
    run_results(
        tmp_path / "runs", tmp_path / "results.md", log=messages.append, note="shared cores"
    )
    assert "Note: shared cores" in (tmp_path / "results.md").read_text()
    assert any("slp: done earlier" in m for m in messages)
    assert json.loads((tmp_path / "runs" / "slp" / "timing.json").read_text()) == timing


def test_unknown_models_are_refused(tiny_runs, tmp_path):
    with pytest.raises(ValueError, match="no result runs selected"):
        run_results(tmp_path / "runs", tmp_path / "r.md", models=["gpt"])


def test_a_resumed_run_says_its_wall_time_is_partial(tiny_runs, tmp_path):
    run_results(tmp_path / "runs", tmp_path / "results.md", models=["slp"], log=lambda _: None)
    assert "(resumed run" not in (tmp_path / "results.md").read_text()
    # as if interrupted after its windows were done but before the run finished
    (tmp_path / "runs" / "slp" / "timing.json").unlink()
    (tmp_path / "runs" / "slp" / "oos.parquet").unlink()
    run_results(tmp_path / "runs", tmp_path / "results.md", models=["slp"], log=lambda _: None)
    assert "(resumed run: this invocation only)" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "runs" / "slp" / "timing.json").read_text())["resumed"]


def test_a_suite_writes_its_own_part_and_keeps_the_rest(tiny_runs, tmp_path, monkeypatch):
    """--suite dmn_grid writes its part between markers, with the report's grid section;
    rerunning the core suite rewrites the head and keeps that part."""
    path = tmp_path / "prices.csv"
    common = {"data": str(path), "first_test_year": 2004, "step_years": 2, "end_year": 2005}
    budget = {"seeds": 1, "trials": 1, "epochs": 1}
    grid = (
        ResultRun("lasso", BacktestConfig(model="lasso", label="lasso", **common, **budget), "L"),
        ResultRun(
            "dmn_mse",
            BacktestConfig(model="dmn", label="dmn_mse", objective="mse", **common, **budget),
            "LSTM regression",
        ),
    )
    monkeypatch.setitem(results._SUITE_RUNS, "dmn_grid", grid)
    doc = tmp_path / "results.md"
    run_results(tmp_path / "core", doc, log=lambda _: None)
    head = doc.read_text()
    run_results(tmp_path / "grid", doc, suite="dmn_grid", log=lambda _: None, command="grid-cmd")
    text = doc.read_text()
    assert text.startswith(head.rstrip("\n"))  # the head is untouched
    part = text[text.index("<!-- results:dmn_grid -->") : text.index("<!-- /results:dmn_grid -->")]
    assert "## The DMN paper's grid of architectures and objectives" in part
    assert "`grid-cmd`" in part and "| lasso | L |" in part and "| dmn_mse |" in part
    # the report's own grid table, one heading level down, its CSV link dropped
    report = (tmp_path / "grid" / "report" / "report.md").read_text()
    assert "### The DMN paper's grid" in part and "CSV: [" not in part
    row = next(line for line in report.splitlines() if line.startswith("| Lasso / Sharpe |"))
    assert row in part
    assert "LSTM / MSE" in part and "Published, for context" in part
    # the core suite again: a fresh head, the grid's part kept after it
    run_results(tmp_path / "core", doc, log=lambda _: None, note="again")
    again = doc.read_text()
    assert "Note: again" in again.split("<!-- results:dmn_grid -->")[0]
    assert part in again


def test_unknown_suites_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown suite 'ablation'"):
        run_results(tmp_path / "runs", tmp_path / "r.md", suite="ablation")
