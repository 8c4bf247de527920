"""The on-disk registry: immutable versions, an atomic production pointer, verified loads."""

import json
import os

import pytest

from momentum.manifest import ManifestError, sha256_file
from momentum.registry import (
    RegistryError,
    list_models,
    list_versions,
    load_version,
    production_version,
    promote,
    publish,
    version_id,
)
from tests.momentum.manifests import make_manifest


def _model(tmp_path, content: bytes):
    path = tmp_path / f"model-{len(list(tmp_path.glob('*.onnx')))}.onnx"
    path.write_bytes(content)
    return path


def _publish(registry, tmp_path, content: bytes, version: str, name: str = "slp"):
    model = _model(tmp_path, content)
    manifest = make_manifest(model, name=name, version=version)
    return publish(registry, model, manifest)


def test_publish_list_promote_load(tmp_path):
    registry = tmp_path / "registry"
    assert list_models(registry) == [] and list_versions(registry, "slp") == []
    first = _publish(registry, tmp_path, b"one", "v1")
    second = _publish(registry, tmp_path, b"two", "v2")
    _publish(registry, tmp_path, b"three", "v1", name="dmn")
    assert list_models(registry) == ["dmn", "slp"]
    assert list_versions(registry, "slp") == ["v1", "v2"]
    assert first.model_path.read_bytes() == b"one"
    assert production_version(registry, "slp") is None
    with pytest.raises(
        RegistryError, match=r"no production version .* promote one of \['v1', 'v2'\]"
    ):
        load_version(registry, "slp")

    promote(registry, "slp", "v1", by="test")
    assert load_version(registry, "slp").version == "v1"
    promote(registry, "slp", "v2", by="test")
    loaded = load_version(registry, "slp")
    assert loaded.version == "v2" and loaded.manifest == second.manifest
    # the audit trail records each promotion and what it replaced
    log = [
        json.loads(line)
        for line in (registry / "slp" / "promotions.jsonl").read_text().splitlines()
    ]
    assert [(r["version"], r["previous"]) for r in log] == [("v1", None), ("v2", "v1")]
    # no temporary files are left behind
    assert sorted(p.name for p in (registry / "slp").iterdir()) == [
        "production",
        "promotions.jsonl",
        "v1",
        "v2",
    ]


def test_versions_are_never_overwritten(tmp_path):
    registry = tmp_path / "registry"
    _publish(registry, tmp_path, b"one", "v1")
    with pytest.raises(RegistryError, match="already exists"):
        _publish(registry, tmp_path, b"other", "v1")
    assert load_version(registry, "slp", "v1").model_path.read_bytes() == b"one"


def test_publish_refuses_a_model_whose_hash_is_not_the_manifests(tmp_path):
    model = _model(tmp_path, b"one")
    manifest = make_manifest(model, version="v1")
    model.write_bytes(b"changed after the manifest was written")
    with pytest.raises(ManifestError, match="sha256"):
        publish(tmp_path / "registry", model, manifest)
    assert list_versions(tmp_path / "registry", "slp") == []


def test_tampered_version_is_refused_and_never_promoted(tmp_path):
    registry = tmp_path / "registry"
    _publish(registry, tmp_path, b"one", "v1")
    bad = _publish(registry, tmp_path, b"two", "v2")
    promote(registry, "slp", "v1")
    bad.model_path.write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        load_version(registry, "slp", "v2")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        promote(registry, "slp", "v2")
    assert production_version(registry, "slp") == "v1"


def test_a_manifest_moved_to_another_version_folder_is_refused(tmp_path):
    registry = tmp_path / "registry"
    version = _publish(registry, tmp_path, b"one", "v1")
    os.rename(version.path, registry / "slp" / "v9")
    with pytest.raises(ManifestError, match="says slp v1, but sits at slp/v9"):
        load_version(registry, "slp", "v9")


def test_missing_version_and_missing_manifest(tmp_path):
    registry = tmp_path / "registry"
    version = _publish(registry, tmp_path, b"one", "v1")
    with pytest.raises(RegistryError, match=r"no version 'v2' .* have \['v1'\]"):
        load_version(registry, "slp", "v2")
    (version.path / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        load_version(registry, "slp", "v1")


def test_version_ids_sort_by_time():
    from datetime import UTC, datetime, timedelta

    t = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    ids = [version_id(t + timedelta(seconds=s), h * 64) for s, h in [(0, "f"), (1, "0"), (60, "a")]]
    assert ids == sorted(ids)
    assert ids[0] == "20260301T120000Z-ffffffff"


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
