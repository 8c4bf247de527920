"""The manifest that travels with every exported model (``manifest.json`` beside ``model.onnx``).

Written by the exporter (`training.export`), read and checked by the service:
the manifest says everything needed to serve and audit a model without torch
and without any per-model code (the ONNX contract is `momentum.contract`).
`check_manifest` is the one place that decides whether a manifest and its graph
are consistent with this version of `momentum`; every problem it finds is a
`ManifestError` naming the field and both values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from momentum.construction import Construction
from momentum.contract import INPUT_NAME, OUTPUT_NAME
from momentum.features import FEATURES_VERSION, FeatureConfig
from momentum.sizing import Sizer

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_VERSION",
    "MODEL_FILE",
    "QUANTILE_LEVELS",
    "DriftBaseline",
    "FeatureSpec",
    "Manifest",
    "ManifestError",
    "OnnxInfo",
    "OutputSpec",
    "TrainingWindow",
    "check_graph_input",
    "check_manifest",
    "feature_config",
    "feature_spec",
    "fingerprint_prices",
    "read_manifest",
    "reference_quantiles",
    "sha256_file",
]

MANIFEST_VERSION: Literal[1] = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
# Deciles: the bin edges of the population stability index (service drift metrics).
QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 10 for i in range(11))


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or inconsistent with its model or with `momentum`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """The features a model was trained on: names in input order, their code version, parameters.

    ``index`` names the market index level series the extended features need (their
    beta and alpha to the index): the service stores and reads it as a series of that
    name beside the universe's closes. None for the default features.
    """

    names: list[str] = Field(min_length=1)
    version: str
    config: dict[str, Any]
    index: str | None = None


class OutputSpec(_Strict):
    """One named graph output; ``shape`` uses ``batch``, ``n_assets``, ``lookback``, ``n_features``."""

    name: str
    shape: list[str]
    description: str


class OnnxInfo(_Strict):
    """The graph file: its hash, opset, input and outputs."""

    file: str = MODEL_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    opset: int = Field(ge=7)
    input: str = INPUT_NAME
    outputs: list[OutputSpec] = Field(min_length=1)

    @field_validator("outputs")
    @classmethod
    def _positions_first(cls, outputs: list[OutputSpec]) -> list[OutputSpec]:
        if outputs[0].name != OUTPUT_NAME:
            raise ValueError(f"the first output must be {OUTPUT_NAME!r}, got {outputs[0].name!r}")
        return outputs


class DriftBaseline(_Strict):
    """How far the reference period drifts from itself (``momentum.drift.window_psi_baseline``):
    the `level` quantile of the PSI of its trailing `window`-session windows, per feature
    (training and validation rows) and of the signal (validation rows). None: too few rows."""

    window: int = Field(ge=2, description="sessions per window, the live monitor's window")
    level: float = Field(gt=0, lt=1)
    features: dict[str, float | None]
    signal: float | None


class TrainingWindow(_Strict):
    """Dates the model learnt from (train), early-stopped on (valid) and was tested on (test)."""

    train_start: date
    train_end: date
    valid_start: date
    valid_end: date
    test_start: date | None = None
    test_end: date | None = None


class EnsembleMember(_Strict):
    """One model of an ensemble graph: its search trial, selection score and settings.

    The graph averages the members' outputs; each member reads the last `lookback` steps
    of the contract window (the manifest's ``lookback`` is the longest).
    """

    trial: int | None = None
    seed: int | None = None
    score: float | None = None
    lookback: int = Field(ge=1)
    hyperparameters: dict[str, Any]
    config: dict[str, Any]


class Manifest(_Strict):
    """Everything needed to serve and audit one exported model (or an ensemble: `members`)."""

    format_version: Literal[1] = MANIFEST_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: str = Field(description="registry architecture (slp, dmn, tft, quantnet, ...)")
    layout: Literal["spatiotemporal", "sequence", "panel"]
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    created: datetime
    data_source: str
    data_fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    training_window: TrainingWindow
    tickers: list[str] = Field(min_length=1)
    markets: list[list[int]]
    features: FeatureSpec
    lookback: int = Field(ge=1)
    hyperparameters: dict[str, Any]
    config: dict[str, Any] = Field(description="the architecture's config dataclass, every field")
    seeds: list[int]
    metrics: dict[str, float | None]
    quantile_levels: list[float]
    reference_quantiles: dict[str, list[float]]
    signal_quantiles: list[float]
    drift_baseline: DriftBaseline | None = Field(
        default=None, description="absent in manifests exported before it existed"
    )
    onnx: OnnxInfo
    libraries: dict[str, str]
    parity_max_abs_diff: dict[str, float] = Field(
        description="max |torch - onnxruntime| of the positions, by batch size"
    )
    parity_tolerance: float = Field(gt=0, description="the tolerance the export was held to")
    source: dict[str, Any] = Field(default_factory=dict)
    members: list[EnsembleMember] | None = Field(
        default=None,
        description=(
            "an ensemble's models, best first (`hyperparameters` and `config` are the "
            "first's); None for a single model"
        ),
    )
    sizer: Sizer = Field(
        default="identity",
        description="model output -> position (`momentum.sizing`): sgn() for forecasts",
    )
    construction: Construction = Field(
        default="vol_scaled",
        description="positions -> weights (`momentum.construction`); sectors are `markets`",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(set(self.tickers)) != len(self.tickers):
            raise ValueError("`tickers` has duplicates")
        flat = sorted(i for market in self.markets for i in market)
        if self.markets and flat != list(range(len(self.tickers))):
            raise ValueError("`markets` must partition the asset indices 0..n_assets-1")
        if set(self.reference_quantiles) != set(self.features.names):
            raise ValueError(
                f"`reference_quantiles` must have one entry per feature {self.features.names}, "
                f"got {sorted(self.reference_quantiles)}"
            )
        baseline = self.drift_baseline
        if baseline is not None and set(baseline.features) != set(self.features.names):
            raise ValueError(
                f"`drift_baseline.features` must have one entry per feature "
                f"{self.features.names}, got {sorted(baseline.features)}"
            )
        levels = len(self.quantile_levels)
        for key, values in [*self.reference_quantiles.items(), ("signal", self.signal_quantiles)]:
            if len(values) != levels or any(
                b < a for a, b in zip(values, values[1:], strict=False)
            ):
                raise ValueError(
                    f"quantiles of {key!r} must be {levels} non-decreasing values, got {values}"
                )
        if self.construction == "sector_neutral_mv" and not self.markets:
            raise ValueError("`construction` sector_neutral_mv needs `markets` (the sectors)")
        if self.members is not None:
            longest = max((m.lookback for m in self.members), default=0)
            if not self.members or longest != self.lookback:
                raise ValueError(
                    f"`members` must be non-empty with a longest lookback equal to `lookback` "
                    f"{self.lookback}, got {longest}"
                )
        return self

    @property
    def n_assets(self) -> int:
        return len(self.tickers)

    @property
    def n_features(self) -> int:
        return len(self.features.names)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and validate ``manifest.json``; every schema problem named in one `ManifestError`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (every model needs its manifest.json)") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise ManifestError(f"{path}: invalid manifest: {problems}") from None


def feature_config(spec: FeatureSpec) -> FeatureConfig:
    """The `FeatureConfig` recorded in a manifest (JSON lists back to tuples)."""
    try:
        return FeatureConfig.from_dict(spec.config)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"features.config is not a valid FeatureConfig: {err}") from None


def feature_spec(config: FeatureConfig, index: str | None = None) -> FeatureSpec:
    """The manifest's record of `config` under this version of `momentum.features`, and
    the name of the index series it was computed with (extended features only)."""
    return FeatureSpec(
        names=list(config.names),
        version=FEATURES_VERSION,
        config=config.as_dict(),
        index=index if config.extended else None,
    )


def check_manifest(
    manifest: Manifest,
    *,
    model_path: str | os.PathLike[str] | None = None,
    graph_input: Sequence[Any] | None = None,
    tickers: Sequence[str] | None = None,
) -> None:
    """Raise `ManifestError` unless the manifest can be served by this `momentum`.

    Checks that the feature version and names match `momentum.features` (the
    service recomputes them), and when given: the model file's sha256, the
    graph's input shape (`check_graph_input`) and the universe served.
    """
    if manifest.features.version != FEATURES_VERSION:
        raise ManifestError(
            f"{manifest.name} {manifest.version}: features version "
            f"{manifest.features.version!r} differs from momentum.features {FEATURES_VERSION!r}"
        )
    config = feature_config(manifest.features)
    names = list(config.names)
    if config.extended and not manifest.features.index:
        raise ManifestError(
            f"{manifest.name} {manifest.version}: extended features need the name of their "
            "index series (features.index), and the manifest has none"
        )
    if manifest.features.names != names:
        raise ManifestError(
            f"{manifest.name} {manifest.version}: feature names {manifest.features.names} differ "
            f"from what momentum.features computes for that config: {names}"
        )
    if model_path is not None:
        digest = sha256_file(model_path)
        if digest != manifest.onnx.sha256:
            raise ManifestError(
                f"{model_path}: sha256 {digest} does not match the manifest's "
                f"{manifest.onnx.sha256} (file changed or corrupted)"
            )
    if graph_input is not None:
        check_graph_input(manifest, graph_input)
    if tickers is not None and list(tickers) != manifest.tickers:
        missing = [t for t in manifest.tickers if t not in tickers]
        extra = [t for t in tickers if t not in manifest.tickers]
        raise ManifestError(
            f"{manifest.name} {manifest.version}: universe differs from the model's "
            f"({len(manifest.tickers)} tickers; missing {missing}, extra {extra}"
            + (", same tickers in another order" if not missing and not extra else "")
            + ")"
        )


def check_graph_input(manifest: Manifest, shape: Sequence[Any]) -> None:
    """The graph input must be ``[batch (symbolic), n_assets, lookback, n_features]``.

    `shape` is as onnxruntime reports it (``session.get_inputs()[0].shape``):
    symbolic axes are strings or None, fixed ones ints.
    """
    shape = list(shape)
    expected = [manifest.n_assets, manifest.lookback, manifest.n_features]
    if len(shape) != 4:
        raise ManifestError(f"graph input must have 4 axes, got shape {shape}")
    if isinstance(shape[0], int):
        raise ManifestError(f"graph input's batch axis is fixed at {shape[0]}; it must be symbolic")
    for axis, (got, want) in enumerate(zip(shape[1:], expected, strict=True), 1):
        if got != want:
            what = ("n_assets", "lookback", "n_features")[axis - 1]
            raise ManifestError(
                f"graph input axis {axis} ({what}) is {got}, the manifest says {want}"
            )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_prices(prices: pd.DataFrame) -> str:
    """sha256 of a price panel: dates, tickers and the float64 closes (NaN included)."""
    digest = hashlib.sha256()
    digest.update("\n".join(str(c) for c in prices.columns).encode())
    digest.update(pd.DatetimeIndex(prices.index).as_unit("ns").asi8.tobytes())
    digest.update(np.ascontiguousarray(prices.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def reference_quantiles(
    values: np.ndarray, names: Sequence[str], levels: Sequence[float] = QUANTILE_LEVELS
) -> dict[str, list[float]]:
    """Per-feature quantiles over all finite entries of ``values (T, N, d)``.

    The drift monitor bins live features at these edges (population stability
    index); a feature with no finite value at all is an error.
    """
    if values.ndim != 3 or values.shape[-1] != len(names):
        raise ValueError(f"`values` must have shape (T, N, {len(names)}), got {values.shape}")
    out = {}
    for i, name in enumerate(names):
        column = values[..., i].ravel()
        column = column[np.isfinite(column)]
        if column.size == 0:
            raise ValueError(f"feature {name!r} has no finite value to take quantiles of")
        out[name] = [float(q) for q in np.quantile(column, levels)]
    return out
