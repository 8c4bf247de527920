"""Model loading: every check that refuses a model, and the last good model keeps serving."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from momentum.data import load_prices
from momentum.manifest import MANIFEST_FILE, MODEL_FILE
from momentum.registry import promote
from service import store
from service.cycle import run_cycle
from service.ingest import ingest_closes, panel_rows
from service.model import ModelHolder, ModelRefused, load_model, providers_for

TICKERS = list(load_prices("sp500").columns)


@pytest.fixture
def registry(served_run, tmp_path):
    """A private copy of the served registry, which the tests may damage."""
    path = tmp_path / "registry"
    shutil.copytree(served_run["registry"], path)
    return path


def _variant(registry, name, good, new, edit=None, model_bytes=None):
    """Publish a copy of version `good` as `new`, its manifest edited, then promote it."""
    source, target = registry / name / good, registry / name / new
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["version"] = new
    if edit is not None:
        edit(manifest)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    if model_bytes is not None:
        (target / MODEL_FILE).write_bytes(model_bytes)
    # bypass promote()'s own verification: the pointer is what an operator could break
    (registry / name / "production").write_text(new + "\n")


def _bad_features(manifest):
    manifest["features"]["version"] = "0.9"


def _other_universe(manifest):
    manifest["tickers"] = list(reversed(manifest["tickers"]))


def _other_lookback(manifest):
    manifest["lookback"] += 1


CASES = {
    "wrong hash": ({}, "sha256 does not match"),
    "wrong feature version": ({"edit": _bad_features}, "features version '0.9'"),
    "different universe": ({"edit": _other_universe}, "universe differs"),
    "lookback not the graph's": ({"edit": _other_lookback}, r"axis 2 \(lookback\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_model_is_refused_and_the_previous_one_keeps_serving(
    case, registry, served_run, sqlite_engine
):
    name, good = served_run["name"], served_run["version"]
    holder = ModelHolder(registry, name, tickers=TICKERS, device="cpu", engine=sqlite_engine)
    assert holder.refresh().changed
    kwargs, message = CASES[case]
    if case == "wrong hash":
        kwargs = {"model_bytes": (registry / name / good / MODEL_FILE).read_bytes() + b"\0"}
    _variant(registry, name, good, "bad", **kwargs)

    outcome = holder.refresh()
    assert not outcome.changed and outcome.refused is not None
    assert re.search(message, outcome.refused)
    assert holder.require().version == good
    loads = store.read_model_loads(sqlite_engine, model_name=name)
    assert loads["ok"].tolist() == [False, True]  # newest first
    assert loads["model_version"].iloc[0] == "bad"

    # the previous model still produces positions
    prices = load_prices("sp500").loc["2019-06-03":"2021-03-31"]
    assert ingest_closes(
        sqlite_engine, panel_rows(prices), universe=TICKERS, calendar="XNYS", source="t"
    ).ok
    result = run_cycle(sqlite_engine, holder.require(), "2021-03-31")
    assert result.status == "succeeded" and result.model_version == good


def test_a_refused_version_is_tried_once_and_a_restart_serves_the_last_good_one(
    registry, served_run, sqlite_engine, caplog
):
    name, good = served_run["name"], served_run["version"]
    holder = ModelHolder(registry, name, tickers=TICKERS, device="cpu", engine=sqlite_engine)
    assert holder.refresh().changed
    _variant(registry, name, good, "bad", edit=_bad_features)
    first = holder.refresh()
    assert first.new_refusal and not first.fallback and holder.require().version == good
    again = holder.refresh()  # the same refused version: not loaded, not recorded again
    assert not again.new_refusal and again.refused == first.refused
    assert len(store.read_model_loads(sqlite_engine, model_name=name)) == 2

    # a restart with the pointer still on the refused version: the last good one serves
    restarted = ModelHolder(registry, name, tickers=TICKERS, device="cpu", engine=sqlite_engine)
    with caplog.at_level("WARNING", logger="service.model"):
        outcome = restarted.refresh()
    assert outcome.changed and outcome.fallback and outcome.new_refusal
    assert restarted.require().version == good and restarted.fallback
    assert "serving " + good in caplog.text and "features version '0.9'" in caplog.text
    loads = store.read_model_loads(sqlite_engine, model_name=name)
    assert loads["reason"].iloc[0] == "fallback: production bad refused"
    # a servable version promoted later replaces the fallback
    _variant(registry, name, good, "v3")
    assert restarted.refresh().model.version == "v3" and not restarted.fallback


def test_the_service_serves_a_promoted_version_without_a_cycle(
    registry, served_run, sqlite_engine, clean_env
):
    import time

    from service.app import SignalService
    from service.config import load_settings

    name, good = served_run["name"], served_run["version"]
    settings = load_settings(registry_dir=registry, model_name=name, device="cpu", _env_file=None)
    service = SignalService(settings, engine=sqlite_engine)
    assert service.refresh_model().model.version == good
    halt = service.watch_model(interval=0.1)
    try:
        _variant(registry, name, good, "v2")  # promoted: no cycle runs in this test
        deadline = time.monotonic() + 20
        while service.holder.require().version != "v2":
            assert time.monotonic() < deadline, "the promoted version was never loaded"
            time.sleep(0.05)
    finally:
        halt()
    assert store.read_cycle_runs(sqlite_engine).empty
    with pytest.raises(ValueError, match="`interval`"):
        service.watch_model(interval=0)


def test_with_no_good_version_before_a_restart_serves_nothing(registry, served_run, sqlite_engine):
    name, good = served_run["name"], served_run["version"]
    _variant(registry, name, good, "bad", edit=_bad_features)
    holder = ModelHolder(registry, name, tickers=TICKERS, device="cpu", engine=sqlite_engine)
    outcome = holder.refresh()
    assert outcome.model is None and not outcome.fallback and outcome.refused is not None
    with pytest.raises(ModelRefused, match="features version"):
        holder.require()


def test_the_holder_follows_the_production_pointer(registry, served_run):
    name, good = served_run["name"], served_run["version"]
    holder = ModelHolder(registry, name, tickers=TICKERS, device="cpu")
    holder.refresh()
    _variant(registry, name, good, "v2")  # an identical model under another version
    promote(registry, name, "v2")
    outcome = holder.refresh()
    assert outcome.changed and holder.require().version == "v2"
    pinned = ModelHolder(registry, name, version=good, tickers=TICKERS, device="cpu")
    assert pinned.refresh().model.version == good


def test_nothing_to_serve_says_why(tmp_path):
    holder = ModelHolder(tmp_path / "empty", "slp", device="cpu")
    outcome = holder.refresh()
    assert outcome.model is None and "no production version" in outcome.refused
    with pytest.raises(ModelRefused, match="no model loaded for slp: .*no production version"):
        holder.require()


def test_loaded_model_reports_the_provider_in_use(served_run):
    model = load_model(served_run["registry"], served_run["name"], device="cpu")
    assert model.provider == "CPUExecutionProvider"
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    x = np.zeros((2, model.manifest.n_assets, model.manifest.lookback, 8), np.float32)
    outputs = model.run(x)
    assert list(outputs) == [o.name for o in model.manifest.onnx.outputs]
    assert outputs["positions"].shape == (2, model.manifest.n_assets)


CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("device", "available", "gpu", "expected"),
    [
        ("cpu", CUDA, True, ["CPUExecutionProvider"]),
        ("auto", CUDA, False, ["CPUExecutionProvider"]),  # onnxruntime-gpu on a CPU host
        ("auto", CUDA, True, CUDA),
        ("auto", ["CPUExecutionProvider"], True, ["CPUExecutionProvider"]),
        ("cuda", CUDA, True, CUDA),
    ],
)
def test_cuda_is_asked_for_only_when_a_gpu_is_visible(device, available, gpu, expected):
    assert providers_for(device, available, gpu=gpu) == expected


def test_cuda_without_a_gpu_is_refused_with_the_reason():
    with pytest.raises(ModelRefused, match="no GPU is visible"):
        providers_for("cuda", CUDA, gpu=False)
    with pytest.raises(ModelRefused, match="no CUDA provider"):
        providers_for("cuda", ["CPUExecutionProvider"], gpu=True)
