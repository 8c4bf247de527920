"""`momentum-train promote` refuses what the service could not serve, before the pointer moves."""

from __future__ import annotations

import shutil

import pytest

from momentum.manifest import MANIFEST_FILE, MODEL_FILE, read_manifest, sha256_file
from momentum.registry import production_version, publish
from training.cli import main


@pytest.fixture
def registry(served_run, tmp_path):
    """A copy of the served run's registry (tests publish into it)."""
    copy = tmp_path / "registry"
    shutil.copytree(served_run["registry"], copy)
    return copy


def _republish(registry, name, version, new, *, model_bytes=None, **changes):
    source = registry / name / version
    manifest = read_manifest(source / MANIFEST_FILE)
    model = source / MODEL_FILE
    if model_bytes is not None:
        model = registry.parent / "broken.onnx"
        model.write_bytes(model_bytes)
        onnx = manifest.onnx.model_copy(
            update={"sha256": sha256_file(model), "size_bytes": model.stat().st_size}
        )
        changes["onnx"] = onnx
    publish(registry, model, manifest.model_copy(update={"version": new, **changes}))
    return new


def test_a_corrupted_graph_with_a_matching_hash_is_never_promoted(registry, served_run, capsys):
    name, good = served_run["name"], served_run["version"]
    original = (registry / name / good / MODEL_FILE).read_bytes()
    # half a graph: the manifest's hash is right, onnxruntime cannot load it
    broken = _republish(registry, name, good, "20990101T000000Z-broken", model_bytes=original[:500])
    assert main(["promote", name, broken, "--registry", str(registry)]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime cannot load model.onnx" in err and broken in err
    assert production_version(registry, name) == good  # the pointer did not move


def test_a_version_of_another_universe_is_refused_with_universe(registry, served_run, capsys):
    name, good = served_run["name"], served_run["version"]
    tickers = list(served_run["manifest"].tickers)
    swapped = _republish(registry, name, good, "20990101T000000Z-reversed", tickers=tickers[::-1])
    assert main(["promote", name, swapped, "--universe", "sp500", "--registry", str(registry)]) == 2
    assert "universe differs" in capsys.readouterr().err
    assert production_version(registry, name) == good
    # the right universe: promoted, and the message says what was checked
    assert main(["promote", name, good, "--universe", "sp500", "--registry", str(registry)]) == 0
    assert "loads in onnxruntime, universe sp500 matches" in capsys.readouterr().out
