"""Load the promoted (or pinned) ONNX model, check it, and keep the last good one serving.

A model is served only after every check passes: the registry entry verifies
(manifest schema, model file sha256), the manifest agrees with `momentum`
(feature names and version), its universe is the service's, and the graph's
input is the contract ``[batch, n_assets, lookback, n_features]`` the manifest
describes. The onnxruntime session asks for ``CUDAExecutionProvider`` only
when a GPU is actually visible: onnxruntime-gpu lists CUDA even on CPU-only
hosts and prints an error when a session asks for it there. The provider in
use is read back from the session (``get_providers()``), never assumed.

`ModelHolder` owns the model being served. `refresh()` follows the registry's
production pointer (or the pinned version); a version that fails any check is
refused with its reason, recorded in the store, and the previous model keeps
serving.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa

from momentum.contract import INPUT_NAME, OUTPUT_NAME
from momentum.manifest import Manifest, ManifestError, check_graph_input, check_manifest
from momentum.registry import RegistryError, load_version, production_version
from service import store

__all__ = [
    "LoadedModel",
    "ModelHolder",
    "ModelRefused",
    "gpu_visible",
    "load_model",
    "providers_for",
]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


class ModelRefused(RuntimeError):
    """A model that may not be served; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    """A checked model with its warm onnxruntime session."""

    name: str
    version: str
    manifest: Manifest
    path: Path
    session: Any  # onnxruntime.InferenceSession
    provider: str
    loaded_at: datetime
    warmup_seconds: float

    def run(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output for a contract tensor ``float32[batch, n_assets, lookback, d]``."""
        names = [o.name for o in self.manifest.onnx.outputs]
        values = self.session.run(names, {INPUT_NAME: features})
        return dict(zip(names, values, strict=True))

    def positions(self, features: np.ndarray) -> np.ndarray:
        """``positions`` only: ``(batch, n_assets)`` in [-1, 1]."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: features})[0]


def gpu_visible() -> bool:
    """Whether the CUDA driver sees at least one GPU (without torch and without onnxruntime).

    ``CUDA_VISIBLE_DEVICES`` set to an empty string or ``-1`` hides every GPU.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0:
            return False
        return cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


def providers_for(
    device: Device, available: Sequence[str], *, gpu: bool | None = None
) -> list[str]:
    """Execution providers to ask for, best first.

    ``auto`` asks for CUDA only when the runtime has it *and* a GPU is visible;
    ``cuda`` requires both and raises `ModelRefused` otherwise; ``cpu`` never asks.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"`device` must be auto, cpu or cuda, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu":
        return ["CPUExecutionProvider"]
    visible = gpu_visible() if gpu is None else gpu
    if device == "cuda" and not (has_cuda and visible):
        why = "no GPU is visible" if not visible else "this onnxruntime has no CUDA provider"
        raise ModelRefused(f"device 'cuda' was asked for but {why}")
    if has_cuda and visible:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(path: Path, providers: list[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the provider in use is logged by us
    return ort.InferenceSession(str(path), options, providers=providers)


def load_model(
    registry: str | os.PathLike[str],
    name: str,
    version: str | None = None,
    *,
    tickers: Sequence[str] | None = None,
    index: str | None = None,
    device: Device = "auto",
) -> LoadedModel:
    """Load, check and warm up one model version (the production one when `version` is None).

    `index` is the name of the market index series the service stores (None: none); a
    model with extended features is served only when its manifest names that series.

    Raises
    ------
    ModelRefused
        With the reason: not in the registry, invalid or tampered manifest or file,
        features that `momentum` does not compute, another universe, a graph whose
        input is not the manifest's contract tensor, or a device that cannot be used.
    """
    try:
        entry = load_version(registry, name, version)
        manifest = entry.manifest
        check_manifest(manifest, tickers=tickers)
        wanted = manifest.features.index
        if wanted is not None and index is None:
            raise ManifestError(
                f"its extended features need the market index series {wanted!r}, and this "
                "service stores no index series (MOMENTUM_INDEX_TICKER)"
            )
        if wanted is not None and wanted != index:
            raise ManifestError(
                f"its extended features were computed with the index series {wanted!r}, and "
                f"this service stores the index as {index!r} (MOMENTUM_INDEX_TICKER)"
            )
        import onnxruntime as ort

        providers = providers_for(device, ort.get_available_providers())
        session = _session(entry.model_path, providers)
        inputs = session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ManifestError(
                f"graph inputs {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]"
            )
        check_graph_input(manifest, inputs[0].shape)
        outputs = [o.name for o in session.get_outputs()]
        declared = [o.name for o in manifest.onnx.outputs]
        if outputs != declared:
            raise ManifestError(f"graph outputs {outputs} differ from the manifest's {declared}")
    except (RegistryError, ManifestError) as err:
        raise ModelRefused(str(err)) from err
    except Exception as err:  # onnxruntime refusing the file, say
        if isinstance(err, ModelRefused):
            raise
        raise ModelRefused(
            f"{name} {version or '(production)'}: {type(err).__name__}: {err}"
        ) from err
    start = time.perf_counter()
    warm = np.zeros((1, manifest.n_assets, manifest.lookback, manifest.n_features), np.float32)
    session.run(None, {INPUT_NAME: warm})
    provider = session.get_providers()[0]
    log.info("loaded %s %s on %s", entry.name, entry.version, provider)
    return LoadedModel(
        name=entry.name,
        version=entry.version,
        manifest=manifest,
        path=entry.path,
        session=session,
        provider=provider,
        loaded_at=datetime.now(UTC),
        warmup_seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class LoadOutcome:
    """What `ModelHolder.refresh` did."""

    changed: bool
    model: LoadedModel | None
    refused: str | None = None  # why the wanted version is not served (this call or before)
    new_refusal: bool = False  # this call tried the wanted version and refused it
    fallback: bool = False  # serving another version than the refused production one


class ModelHolder:
    """The model being served, reloaded when the production pointer moves.

    Thread-safe: readers take `current` (an immutable `LoadedModel`); `refresh`
    swaps it only after the new model passed every check.
    """

    def __init__(
        self,
        registry: str | os.PathLike[str],
        name: str,
        *,
        version: str | None = None,
        tickers: Sequence[str] | None = None,
        index: str | None = None,
        device: Device = "auto",
        engine: sa.Engine | None = None,
    ) -> None:
        self.registry = Path(registry)
        self.name = name
        self.pinned = version
        self.tickers = None if tickers is None else list(tickers)
        self.index = index
        self.device = device
        self.engine = engine
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        # the refused version and why (registry versions are immutable: never retried)
        self._refused: tuple[str | None, str] | None = None
        self.fallback = False  # serving an older version because production was refused

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def last_refusal(self) -> str | None:
        """Why the wanted version is not served (None once a version loaded)."""
        return None if self._refused is None else self._refused[1]

    def require(self) -> LoadedModel:
        """The current model, or `ModelRefused` saying why none is loaded."""
        model = self._current
        if model is None:
            raise ModelRefused(
                f"no model loaded for {self.name}"
                + (f": {self.last_refusal}" if self.last_refusal else "")
            )
        return model

    def wanted_version(self) -> str | None:
        """The pinned version, else what the production pointer names now."""
        return self.pinned or production_version(self.registry, self.name)

    def refresh(self, *, force: bool = False) -> LoadOutcome:
        """Load the wanted version if it differs from the current one (or `force`).

        A refused version is remembered and not tried again (versions are immutable) until
        the pointer names another one, or `force`. When nothing is being served (a start,
        or a first load) and the production version is refused, the newest version that
        loaded successfully before (``model_loads``) is served instead, with a WARNING.
        """
        with self._lock:
            wanted = self.wanted_version()
            current = self._current
            if not force and current is not None and current.version == wanted:
                self.fallback = False
                return LoadOutcome(False, current)
            if not force and self._refused is not None and self._refused[0] == wanted:
                return LoadOutcome(False, current, refused=self._refused[1], fallback=self.fallback)
            try:
                model = load_model(
                    self.registry,
                    self.name,
                    wanted,
                    tickers=self.tickers,
                    index=self.index,
                    device=self.device,
                )
            except ModelRefused as err:
                return self._refuse(wanted, str(err), current)
            self._current = model
            self._refused = None
            self.fallback = False
            self._record(
                model.version, ok=True, sha256=model.manifest.onnx.sha256, provider=model.provider
            )
            return LoadOutcome(True, model)

    def _refuse(self, wanted: str | None, reason: str, current: LoadedModel | None) -> LoadOutcome:
        self._refused = (wanted, reason)
        self._record(wanted, ok=False, reason=reason)
        label = self.name if wanted is None else f"{self.name} {wanted}"
        if current is None and self.pinned is None:
            model = self._last_good(exclude=wanted)
            if model is not None:
                self._current = model
                self.fallback = True
                log.warning(
                    "refused %s: %s; serving %s, the last version that loaded, until a servable "
                    "version is promoted",
                    label,
                    reason,
                    model.version,
                )
                self._record(
                    model.version,
                    ok=True,
                    sha256=model.manifest.onnx.sha256,
                    provider=model.provider,
                    reason=f"fallback: production {wanted} refused",
                )
                return LoadOutcome(True, model, refused=reason, new_refusal=True, fallback=True)
        log.error(
            "refused %s: %s (still serving %s)",
            label,
            reason,
            current.version if current else "nothing",
        )
        return LoadOutcome(False, current, refused=reason, new_refusal=True, fallback=self.fallback)

    def _last_good(self, exclude: str | None) -> LoadedModel | None:
        """The newest version that loaded before and still loads now (None: none)."""
        if self.engine is None:
            return None
        loads = store.read_model_loads(self.engine, model_name=self.name, limit=200)
        tried: set[str] = set()
        for version in loads.loc[loads["ok"], "model_version"].dropna().astype(str):
            if version == exclude or version in tried:
                continue
            tried.add(version)
            try:
                return load_model(
                    self.registry,
                    self.name,
                    version,
                    tickers=self.tickers,
                    index=self.index,
                    device=self.device,
                )
            except ModelRefused as err:
                log.warning("fallback %s %s refused too: %s", self.name, version, err)
        return None

    def _record(self, version: str | None, **fields: Any) -> None:
        if self.engine is not None:
            store.record_model_load(
                self.engine, model_name=self.name, model_version=version, **fields
            )
