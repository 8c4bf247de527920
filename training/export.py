"""Export any registry model to the one ONNX serving contract.

Every graph takes ``features: float32[batch, n_assets, lookback, n_features]``
and returns ``positions: float32[batch, n_assets]`` for the last step
(`momentum.contract`); a wrapper per layout does the reshaping inside the graph
so the service has no per-model code:

* spatio-temporal (STMOM SLP, MLP, CNN, LSTM): the contract *is* their input.
  The SLP also returns its attributions (STMOM: the pre-activation
  ``W^T u + b`` split into the terms of each input), summed over lags and
  grouped into the output asset's own inputs and the other assets' inputs.
* sequence (DMN, TFT): each asset's window becomes one sequence, the ticker ids
  are graph constants (manifest order), the last step is kept. The TFT also
  returns its last-step variable-selection weights and attention row.
* panel (QuantNet): the assets axis moves behind time and the model splits it
  into markets itself (index buffers in the graph); the last step is kept.
* an ensemble (`training.ensemble.Ensemble`): the members' wrappers, each on the
  last ``lookback`` steps of the window, averaged inside the graph.

`export_onnx` writes one self-contained file with the dynamo exporter (symbolic
batch axis, no external data, a stated opset), checks it with `onnx.checker`,
and measures the torch-vs-onnxruntime difference at batch 1 and 256. The
positions must agree within `PARITY_TOLERANCE` (absolute), or within four times
torch's own float32 rounding error (measured against a float64 copy) when that
is larger; extra outputs within `PARITY_TOLERANCE` relative to their scale.
Otherwise the export fails.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from momentum.contract import INPUT_NAME, OUTPUT_NAME
from momentum.manifest import (
    MODEL_FILE,
    ManifestError,
    OutputSpec,
    check_graph_input,
    check_manifest,
    sha256_file,
)
from momentum.registry import ModelVersion
from training.datasets import positions_of
from training.models import get_spec
from training.models.slp import Slp
from training.models.tft import Tft

if TYPE_CHECKING:  # a serve extra, imported where a session is made
    import onnxruntime as ort

__all__ = [
    "PARITY_WINDOWS",
    "check_servable",
    "OPSET",
    "PARITY_BATCHES",
    "PARITY_TOLERANCE",
    "ExportError",
    "ExportedGraph",
    "export_onnx",
    "onnx_session",
    "parity_batches_for",
    "serving_module",
]

OPSET = 18
PARITY_BATCHES = (1, 256)
PARITY_TOLERANCE = 1e-5
ROUNDING_WINDOWS = 2048
"""Most (date, asset) windows the float64 rounding estimate of the parity check runs on."""


PARITY_WINDOWS = 8192
"""Most (date, asset) windows of the parity check's larger batch (two dates at least)."""


def parity_batches_for(n_assets: int, batches: Sequence[int] = PARITY_BATCHES) -> tuple[int, ...]:
    """The parity check's batch sizes for a universe: each capped so batch x assets stays
    within `PARITY_WINDOWS` windows (at least 2, so the batch axis is still exercised
    beyond 1).

    256 x 3,103 assets would be 794,000 sequences: the check alone (and the float64 copy
    of the model it runs for the rounding estimate) once went past 23 GB at 500 assets.

    >>> parity_batches_for(20), parity_batches_for(3103)
    ((1, 256), (1, 2))
    """
    cap = max(2, PARITY_WINDOWS // max(1, n_assets))
    return tuple(sorted({b if b <= 1 else min(b, cap) for b in batches}))


_POSITIONS = OutputSpec(
    name=OUTPUT_NAME,
    shape=["batch", "n_assets"],
    description="positions in [-1, 1] for the last step of each window",
)


class ExportError(RuntimeError):
    """The exported graph is not a faithful copy of the torch model."""


class ServingModule(nn.Module):
    """A contract wrapper: ``(batch, n_assets, lookback, n_features)`` in, `outputs` out."""

    outputs: tuple[OutputSpec, ...] = (_POSITIONS,)
    model: nn.Module


class SpatioTemporalServing(ServingModule):
    """STMOM models already take the contract tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model(features)  # (batch, assets)


class SlpServing(ServingModule):
    """The SLP plus its attributions, own-asset and cross-asset, per output asset and feature."""

    outputs = (
        _POSITIONS,
        OutputSpec(
            name="attribution_own",
            shape=["batch", "n_assets", "n_features"],
            description="pre-activation terms from the asset's own inputs, summed over lags",
        ),
        OutputSpec(
            name="attribution_cross",
            shape=["batch", "n_assets", "n_features"],
            description="pre-activation terms from the other assets' inputs, summed over lags",
        ),
    )

    model: Slp
    diagonal: Tensor

    def __init__(self, model: Slp) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("diagonal", torch.arange(model.config.n_assets), persistent=False)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.model.config
        weight = self.model.dense.weight.reshape(
            cfg.n_assets, cfg.n_assets, cfg.lookback, cfg.n_features
        )  # (assets_out, assets_in, lookback, features), as Slp.attribution_weights
        # STMOM: W^T u = sum over (a, t, f) of W[o, a, t, f] * x[a, t, f]
        total = torch.einsum("oatf,batf->bof", weight, features)  # (batch, assets_out, features)
        own_weight = weight[self.diagonal, self.diagonal]  # (assets, lookback, features)
        own = torch.einsum("atf,batf->baf", own_weight, features)  # (batch, assets, features)
        return self.model(features), own, total - own


class SequenceServing(ServingModule):
    """DMN / TFT: one sequence per asset, ticker ids fixed in the graph, last step kept."""

    ticker_ids: Tensor

    def __init__(self, model: nn.Module, n_assets: int) -> None:
        super().__init__()
        self.model = model
        self.n_assets = n_assets
        self.register_buffer("ticker_ids", torch.arange(n_assets), persistent=False)

    def _run(self, features: Tensor) -> tuple[Tensor, ...]:
        _, n_assets, lookback, n_features = features.shape
        x = features.reshape(-1, lookback, n_features)  # (batch * assets, lookback, features)
        tickers = self.ticker_ids.repeat(features.shape[0])  # (batch * assets,), asset-major
        # last_only: the models skip the work that only earlier steps' positions need
        out = self.model(x, tickers, last_only=True)
        return tuple(out) if isinstance(out, tuple) else (out,)

    def forward(self, features: Tensor) -> Tensor:
        positions = self._run(features)[0]  # (batch * assets, 1): the last step
        return positions[:, -1].reshape(-1, self.n_assets)  # (batch, assets)


class TftServing(SequenceServing):
    """The TFT plus its last-step variable-selection weights and attention row."""

    outputs = (
        _POSITIONS,
        OutputSpec(
            name="variable_weights",
            shape=["batch", "n_assets", "n_features"],
            description="variable-selection weights of the last step (each row sums to 1)",
        ),
        OutputSpec(
            name="attention",
            shape=["batch", "n_assets", "lookback"],
            description="attention of the last step over the window, averaged over heads",
        ),
    )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        _, n_assets, lookback, n_features = features.shape
        positions, weights, attention = self._run(features)
        return (
            positions[:, -1].reshape(-1, n_assets),  # (batch, assets)
            weights[:, -1].reshape(-1, n_assets, n_features),  # (batch, assets, features)
            attention[:, -1].reshape(-1, n_assets, lookback),  # (batch, assets, lookback)
        )


class PanelServing(ServingModule):
    """QuantNet (which splits the assets into markets itself) and the STMOM LSTM: all assets
    at every step of the window, the last step kept."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        x = features.permute(0, 2, 1, 3)  # (batch, lookback, assets, features)
        return positions_of(self.model(x))[:, -1]  # (batch, assets)


class EnsembleServing(ServingModule):
    """Members' wrappers averaged: each reads the last ``lookback`` steps of the window.

    Extra outputs (SLP attributions, TFT weights) are averaged too when every member gives
    them in one shape; a TFT's attention row has one entry per step of the member's own
    window, so members of different lookbacks serve positions only.
    """

    def __init__(self, members: Sequence[ServingModule], lookbacks: Sequence[int]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.lookbacks = tuple(lookbacks)
        first = members[0].outputs
        same = len(set(self.lookbacks)) == 1 and all(m.outputs == first for m in members)
        self.outputs = tuple(first) if same else (_POSITIONS,)

    def forward(self, features: Tensor) -> Tensor | tuple[Tensor, ...]:
        steps = features.shape[2]
        results = []
        for member, lookback in zip(self.members, self.lookbacks, strict=True):
            out = member(features[:, :, steps - lookback :, :])
            results.append(out if isinstance(out, tuple) else (out,))
        averaged = tuple(
            torch.stack([r[i] for r in results]).mean(dim=0) for i in range(len(self.outputs))
        )
        return averaged if len(averaged) > 1 else averaged[0]


def serving_module(name: str, model: nn.Module, n_assets: int) -> ServingModule:
    """The contract wrapper of registry model `name` (its ``outputs`` attribute lists outputs);
    an `training.ensemble.Ensemble` of them averages its members' wrappers."""
    from training.ensemble import Ensemble

    if isinstance(model, Ensemble):
        wrappers = [serving_module(name, m, n_assets) for m in model.members]
        return EnsembleServing(wrappers, model.lookbacks)
    layout = get_spec(name).layout
    if isinstance(model, Slp):
        return SlpServing(model)
    if layout == "spatiotemporal":
        return SpatioTemporalServing(model)
    if isinstance(model, Tft):
        return TftServing(model, n_assets)
    if layout == "sequence":
        return SequenceServing(model, n_assets)
    return PanelServing(model)


@dataclass(frozen=True)
class ExportedGraph:
    """What `export_onnx` wrote and measured."""

    path: Path
    sha256: str
    size_bytes: int
    opset: int
    outputs: tuple[OutputSpec, ...]
    parity_max_abs_diff: dict[str, float]
    parity_tolerance: float


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter, which is not about our models.

    torch.export's internals warn while tracing (pytree LeafSpec and _check_is_size
    deprecations, nn.LSTM re-assigning its weight cache; the models' forward passes
    are warning-free in the test suite), and the op registry logs one line per
    torchvision op it cannot find (torchvision is not a dependency).
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def onnx_session(path: str | Path) -> ort.InferenceSession:
    """A CPU onnxruntime session (parity checks are about numbers, not devices)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_servable(version: ModelVersion, tickers: Sequence[str] | None = None) -> None:
    """Raise `ManifestError` unless onnxruntime can serve `version` as its manifest says.

    What `momentum-train promote` runs before it moves the production pointer, so that a
    graph the service would refuse is never promoted: the graph loads in onnxruntime, its
    input and outputs are the manifest's, one run on a zero input of the manifest's shape
    (batch 1) gives finite positions of shape ``(1, n_assets)``, and with `tickers` (the
    service's universe) the manifest lists exactly those tickers, in order.
    """
    manifest = version.manifest
    label = f"{version.name} {version.version}"
    check_manifest(manifest, tickers=tickers)
    try:
        session = onnx_session(version.model_path)
    except Exception as err:  # onnxruntime raises its own types for a broken graph
        raise ManifestError(f"{label}: onnxruntime cannot load {MODEL_FILE}: {err}") from None
    check_graph_input(manifest, session.get_inputs()[0].shape)
    names = [o.name for o in session.get_outputs()]
    if names != [o.name for o in manifest.onnx.outputs]:
        raise ManifestError(
            f"{label}: graph outputs {names}, the manifest lists "
            f"{[o.name for o in manifest.onnx.outputs]}"
        )
    zeros = np.zeros((1, manifest.n_assets, manifest.lookback, manifest.n_features), np.float32)
    try:
        positions = session.run([OUTPUT_NAME], {INPUT_NAME: zeros})[0]
    except Exception as err:
        raise ManifestError(f"{label}: the graph fails on a zero input: {err}") from None
    if positions.shape != (1, manifest.n_assets) or not np.isfinite(positions).all():
        raise ManifestError(
            f"{label}: on a zero input the graph gives positions of shape {positions.shape} "
            f"(finite: {bool(np.isfinite(positions).all())}); expected (1, {manifest.n_assets})"
        )


def export_onnx(
    name: str,
    model: nn.Module,
    *,
    n_assets: int,
    lookback: int,
    n_features: int,
    path: str | Path,
    parity_batches: Sequence[int] | None = None,
    opset: int = OPSET,
    seed: int = 0,
) -> ExportedGraph:
    """Export registry model `name` to `path` under the serving contract and check it.

    Parameters
    ----------
    name : str
        Registry name (``slp``, ``dmn``, ``tft``, ``quantnet``, ...).
    model : nn.Module
        The trained module; it is put in eval mode.
    n_assets, lookback, n_features : int
        The fixed axes of the contract input (the batch axis stays symbolic).
    path : str or Path
        Output file; one self-contained ONNX file.
    parity_batches : sequence of int, optional
        Batch sizes of the torch-vs-onnxruntime check on random inputs (empty: no check);
        default `parity_batches_for` the universe (1 and up to 256, bounded in windows).

    Raises
    ------
    ExportError
        The graph breaks the contract or differs from torch by more than
        `PARITY_TOLERANCE` at some batch size.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    wrapper = serving_module(name, model, n_assets).eval()
    outputs = tuple(wrapper.outputs)
    generator = torch.Generator().manual_seed(seed)
    # a batch of 2: a batch of 1 can let the exporter specialise the axis to 1
    example = torch.randn(2, n_assets, lookback, n_features, generator=generator)
    with _quiet_exporter():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes={"features": {0: torch.export.Dim("batch")}},
            input_names=[INPUT_NAME],
            output_names=[o.name for o in outputs],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(str(path))
    session = onnx_session(path)
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT_NAME] or isinstance(inputs[0].shape[0], int):
        raise ExportError(
            f"{path}: input must be {INPUT_NAME!r} with a symbolic batch axis, got "
            f"{[(i.name, i.shape) for i in inputs]}"
        )
    names = [o.name for o in session.get_outputs()]
    if names != [o.name for o in outputs]:
        raise ExportError(f"{path}: outputs {names}, expected {[o.name for o in outputs]}")
    differences = {}
    tolerance = PARITY_TOLERANCE
    batches = parity_batches_for(n_assets) if parity_batches is None else parity_batches
    for batch in batches:
        x = torch.randn(batch, n_assets, lookback, n_features, generator=generator)
        # the rounding estimate runs a float64 copy of the model: on at most
        # ROUNDING_WINDOWS windows (one date at least), so that a wide TFT stays in memory
        rows = max(1, ROUNDING_WINDOWS // max(1, n_assets))
        tolerance = max(tolerance, 4 * float32_rounding(wrapper, x[:rows]))
        positions, extras = parity(wrapper, session, x)
        differences[str(batch)] = positions
        if not (positions <= tolerance and extras <= PARITY_TOLERANCE):
            raise ExportError(
                f"{name}: onnxruntime differs from torch at batch {batch}: positions by "
                f"{positions:.3g} (absolute, tolerance {tolerance:.3g}), other outputs by "
                f"{extras:.3g} (relative, tolerance {PARITY_TOLERANCE})"
            )
    return ExportedGraph(
        path=path,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        opset=opset,
        outputs=outputs,
        parity_max_abs_diff=differences,
        parity_tolerance=tolerance,
    )


def float32_rounding(wrapper: nn.Module, x: Tensor) -> float:
    """How far torch's own float32 positions are from a float64 copy of the model on `x`.

    A trained model with large pre-activations (an SLP summing hundreds of
    inputs) rounds to ~1e-5 in float32 whatever runs it; the export check allows
    onnxruntime a few times that, never less than `PARITY_TOLERANCE`.
    """
    wide = copy.deepcopy(wrapper).double()
    with torch.no_grad():
        single = positions_of(wrapper(x))
        double = positions_of(wide(x.double()))
    return float((single.double() - double).abs().max())


def parity(wrapper: nn.Module, session: ort.InferenceSession, x: Tensor) -> tuple[float, float]:
    """Torch vs onnxruntime on `x`: max abs difference of the positions, and the largest
    difference of any extra output relative to its scale (``max(1, max |torch value|)``).

    Positions live in [-1, 1], so their tolerance is absolute; extra outputs such
    as SLP attributions are unbounded sums, so theirs is relative.
    """
    with torch.no_grad():
        expected = wrapper(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {INPUT_NAME: x.numpy()})
    diffs = [
        float(np.max(np.abs(g - e.numpy()), initial=0.0))
        / (1.0 if i == 0 else max(1.0, float(e.abs().max())))
        for i, (g, e) in enumerate(zip(got, expected, strict=True))
    ]
    return diffs[0], max(diffs[1:], default=0.0)
