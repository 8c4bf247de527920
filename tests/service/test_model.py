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
