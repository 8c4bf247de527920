"""bench/inference.py: the table it prints, skipped and failed rows, QuantNet markets, arguments."""

import importlib.util
import json
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch

from momentum.data import sectors
from training.models import Universe

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "inference.py"
COLUMNS = [
    "model",
    "assets",
    "lookback",
    "params",
    "onnx MB",
    "torch eager ms",
    "onnxruntime ms",
    "speed-up",
]


@pytest.fixture(scope="module")
def bench():
    """The script as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _table(stdout):
    """Rows of the Markdown table (header first, separator dropped) as lists of cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [cells[0], *cells[2:]]


def test_prints_one_row_per_model_and_size_and_skips_by_parameter_count(bench, tmp_path, capsys):
    out = tmp_path / "inference.json"
    # SLP parameters = N * (N * tau * d) + N: 1,005 at 5 assets, 16,020 at 20 (tau 5, d 8)
    code = bench.main(
        [
            "--models", "slp",
            "--assets", "5,20",
            "--max-params", "5000",
            "--repeat", "2",
            "--warmup", "0",
            "--threads", "1",
            "--parity-batches", "none",
            "--out", str(out),
        ]
    )  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0

    header, *rows = _table(stdout)
    assert header == COLUMNS
    assert [r[:4] for r in rows] == [["slp", "5", "5", "1,005"], ["slp", "20", "5", "16,020"]]
    ran, skipped = rows
    onnx_mb, torch_ms, ort_ms = (float(c) for c in ran[4:7])
    assert onnx_mb > 0 and torch_ms > 0 and ort_ms > 0
    assert skipped[4:] == ["skipped: 16k parameters", "-", "-", "-"]

    # the inputs line names versions and the thread count given to both runtimes
    inputs = next(line for line in stdout.splitlines() if line.startswith("inputs:"))
    assert f"torch {torch.__version__}" in inputs
    assert f"onnxruntime {onnxruntime.__version__}" in inputs
    assert "threads 1 " in inputs
    # progress: one line per combination, printed before the table
    progress = [line for line in stdout.splitlines() if line.startswith("slp @ ")]
    assert len(progress) == 2 and "export parity (batch 1) not checked" in progress[0]
    assert progress[1].endswith("skipped: 16k parameters")
    assert "command: python bench/inference.py --models slp --assets 5,20" in stdout

    written = json.loads(out.read_text())
    assert written["inputs"]["threads"] == 1
    assert [(r["assets"], r["params"], r["status"]) for r in written["rows"]] == [
        (5, 1005, "ok"),
        (20, 16020, "skipped: 16k parameters"),
    ]
    measured = written["rows"][0]
    assert measured["repeats"] == 2
    # the table shows the JSON's medians, and speed-up is torch over onnxruntime
    assert torch_ms == pytest.approx(measured["torch_ms"], rel=1e-3)
    assert ort_ms == pytest.approx(measured["onnxruntime_ms"], rel=1e-3)
    assert measured["speed_up"] == measured["torch_ms"] / measured["onnxruntime_ms"]
    assert ran[7] == f"{measured['speed_up']:.2f}x"
    assert written["rows"][1]["torch_ms"] is None
    # the timed inputs give the same positions in both runtimes
    assert written["rows"][0]["max_abs_diff"] < 1e-5


def test_a_failing_export_is_reported_as_a_row_and_the_exit_code(bench, capsys, monkeypatch):
    def broken(name, model, **kwargs):
        raise RuntimeError(f"cannot export {name}")

    monkeypatch.setattr(bench, "export_onnx", broken)
    code = bench.main(["--models", "dmn", "--assets", "3", "--repeat", "1", "--warmup", "0"])
    _, row = _table(capsys.readouterr().out)
    assert code == 1
    # DMN: LSTM 4 * (20 * (8 + 20) + 2 * 20) = 2,400 (two bias vectors) + head 20 + 1
    assert row == ["dmn", "3", "63", "2,421", "failed: RuntimeError: cannot export dmn"] + ["-"] * 3


def test_parameters_are_counted_without_building_the_weights(bench):
    universe = Universe(tuple(f"A{i}" for i in range(3103)), 8)
    # the brief's infeasible case: the SLP's W is N x (N * tau * d), plus N biases
    assert bench.count_parameters("slp", universe) == 3103 * 3103 * 5 * 8 + 3103
    assert bench.human_count(3103 * 3103 * 5 * 8 + 3103) == "385M"
    assert bench.human_count(16020) == "16k"
    assert bench.human_count(950) == "950"


def test_quantnet_markets_are_sectors_for_the_embedded_stocks_else_blocks_of_about_50(bench):
    sector_of = sectors("sp500")
    embedded = bench.universe_for("quantnet", 20)
    assert embedded.tickers == tuple(sector_of)
    for market in embedded.markets:
        assert len({sector_of[embedded.tickers[i]] for i in market}) == 1
    assert len(embedded.markets) == len(set(sector_of.values()))

    # 120 assets: round(120 / 50) = 2 markets of 60; 3,103: 62 markets of 50 or 51
    assert [len(m) for m in bench.universe_for("quantnet", 120).markets] == [60, 60]
    large = bench.universe_for("quantnet", 3103).markets
    assert len(large) == 62 and {len(m) for m in large} == {50, 51}
    assert [i for m in large for i in m] == list(range(3103))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "dmn,nope"], "unknown model(s) ['nope']"),
        (["--assets", "20,0"], "expected positive integers, got '20,0'"),
        (["--repeat", "0"], "expected a positive integer, got '0'"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ],
)
def test_bad_arguments_name_what_is_wrong(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_timed_runs_alternate_between_the_runtimes_in_rounds(bench):
    calls = []
    timing = bench.interleaved(
        lambda: calls.append("torch"),
        lambda: calls.append("ort"),
        warmup=1,
        repeat=7,
        rounds=3,
    )
    # one warm-up of each, then blocks of 3, 2 and 2 timed runs, torch first in each round
    expected = ["torch", "ort"]
    for size in (3, 2, 2):
        expected += ["torch"] * size + ["ort"] * size
    assert calls == expected
    assert len(timing.round_ratios) == 3
    assert timing.first_ms > 0 and timing.second_ms > 0
    # never more rounds than timed runs
    few = bench.interleaved(lambda: None, lambda: None, warmup=0, repeat=2, rounds=5)
    assert len(few.round_ratios) == 2


def test_op_profile_splits_each_runtime_by_operator(monkeypatch, capsys):
    """bench/op_profile.py: a torch table and an onnxruntime table, per profiled run."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # it imports its neighbour inference.py
    spec = importlib.util.spec_from_file_location(
        "bench_op_profile", SCRIPT.parent / "op_profile.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["dmn", "--assets", "3", "--seq-len", "5", "--repeat", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("inputs: dmn @ 3 assets, lookback 5, 8 features, batch 1; 4 profiled")
    torch_part, ort_part = out.split("onnxruntime kernels:")
    assert "| aten::lstm | " in torch_part
    # one fused LSTM node per run: the warm-up runs are not counted
    lstm = next(line for line in ort_part.splitlines() if line.startswith("| LSTM |"))
    assert lstm.split("|")[3].strip() == "1"
    assert "slowest 8 nodes" in ort_part
