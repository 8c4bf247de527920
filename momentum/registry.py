"""The model registry on disk, readable without torch.

Layout::

    REGISTRY/<name>/<version>/model.onnx
    REGISTRY/<name>/<version>/manifest.json
    REGISTRY/<name>/production          one line: the promoted version
    REGISTRY/<name>/promotions.jsonl    every promotion, appended (audit trail)

A version folder is written under a temporary name and renamed into place, so
a reader sees either the whole version or nothing; versions are never
overwritten. ``production`` is replaced with `os.replace`, so a reader sees the
old or the new pointer, never half of one. `load_version` verifies the
manifest and the model file's hash before anyone serves it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from momentum.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    ManifestError,
    check_manifest,
    read_manifest,
    sha256_file,
)

__all__ = [
    "PRODUCTION",
    "ModelVersion",
    "RegistryError",
    "list_models",
    "list_versions",
    "load_version",
    "production_version",
    "promote",
    "publish",
    "version_id",
]

PRODUCTION = "production"
_PROMOTIONS = "promotions.jsonl"


class RegistryError(LookupError):
    """No such model or version, or a registry entry that cannot be used."""


@dataclass(frozen=True)
class ModelVersion:
    """One verified version: its folder and manifest."""

    name: str
    version: str
    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def version_id(created: datetime, sha256: str) -> str:
    """Sortable, unique version id: UTC creation time and the model hash's first 8 digits."""
    return f"{created.astimezone(UTC):%Y%m%dT%H%M%SZ}-{sha256[:8]}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def publish(
    registry: str | os.PathLike[str], model: str | os.PathLike[str], manifest: Manifest
) -> ModelVersion:
    """Copy `model` (an ONNX file) and write `manifest` as a new version of ``manifest.name``.

    The model file's hash must be the manifest's. Raises `RegistryError` if the
    version already exists (versions are immutable).
    """
    registry = Path(registry)
    check_manifest(manifest, model_path=model)
    folder = registry / manifest.name
    final = folder / manifest.version
    if final.exists():
        raise RegistryError(f"{final} already exists; versions are never overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=folder))
    try:
        shutil.copyfile(model, staging / MODEL_FILE)
        (staging / MANIFEST_FILE).write_text(manifest.to_json())
        for name in (MODEL_FILE, MANIFEST_FILE):
            _fsync_file(staging / name)
        os.rename(staging, final)  # atomic on one filesystem; fails if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ModelVersion(manifest.name, manifest.version, final, manifest)


def list_models(registry: str | os.PathLike[str]) -> list[str]:
    """Model names in the registry, sorted."""
    registry = Path(registry)
    if not registry.is_dir():
        return []
    return sorted(p.name for p in registry.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_versions(registry: str | os.PathLike[str], name: str) -> list[str]:
    """Published versions of `name`, oldest first (version ids sort by time)."""
    folder = Path(registry) / name
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def production_version(registry: str | os.PathLike[str], name: str) -> str | None:
    """The promoted version of `name`, or None when nothing was promoted."""
    pointer = Path(registry) / name / PRODUCTION
    if not pointer.is_file():
        return None
    version = pointer.read_text().strip()
    return version or None


def load_version(
    registry: str | os.PathLike[str], name: str, version: str | None = None
) -> ModelVersion:
    """A verified version of `name`: `version`, or the production one when None.

    Raises `RegistryError` when it does not exist and `ManifestError` when its
    manifest is invalid, belongs to another name or version, or its model
    file's hash differs.
    """
    registry = Path(registry)
    if version is None:
        version = production_version(registry, name)
        if version is None:
            known = list_versions(registry, name)
            raise RegistryError(
                f"{name}: no production version in {registry}"
                + (f"; promote one of {known}" if known else "; no versions published")
            )
    path = registry / name / version
    if not path.is_dir():
        raise RegistryError(
            f"{name}: no version {version!r} in {registry}; have {list_versions(registry, name)}"
        )
    manifest = read_manifest(path / MANIFEST_FILE)
    if (manifest.name, manifest.version) != (name, version):
        raise ManifestError(
            f"{path / MANIFEST_FILE}: says {manifest.name} {manifest.version}, "
            f"but sits at {name}/{version}"
        )
    if not (path / MODEL_FILE).is_file():
        raise ManifestError(f"{path}: {MODEL_FILE} is missing")
    if sha256_file(path / MODEL_FILE) != manifest.onnx.sha256:
        raise ManifestError(
            f"{path / MODEL_FILE}: sha256 does not match the manifest's {manifest.onnx.sha256} "
            "(file changed or corrupted)"
        )
    return ModelVersion(name, version, path, manifest)


def promote(
    registry: str | os.PathLike[str],
    name: str,
    version: str,
    *,
    by: str = "",
    check: Callable[[ModelVersion], None] | None = None,
) -> ModelVersion:
    """Make `version` the production version of `name`, atomically; returns it verified.

    A version that fails verification (manifest, hash), or whose `check` raises (e.g. the
    graph does not load in a runtime), is never promoted: the pointer does not move.
    """
    registry = Path(registry)
    verified = load_version(registry, name, version)
    if check is not None:
        check(verified)
    folder = registry / name
    previous = production_version(registry, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{PRODUCTION}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / PRODUCTION)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record = {
        "at": datetime.now(UTC).isoformat(),
        "version": version,
        "previous": previous,
        "by": by or os.environ.get("USER", ""),
    }
    with open(folder / _PROMOTIONS, "a") as log:
        log.write(json.dumps(record) + "\n")
    return verified
