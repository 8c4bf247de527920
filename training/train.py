"""One training loop for every registered model.

`fit` trains a module on the training rows of a `ModelData` and early-stops
on the validation Sharpe ratio of the *cross-asset average* daily captured
return (the reference code's criterion): improvement must exceed
``min_delta`` (1e-4) within ``patience`` (25) epochs; the best weights are
restored at the end. `train` builds and seeds a registry model from a flat
dict of hyperparameters (model-config fields and `TrainConfig` fields mixed,
as a random search draws them) and fits it.

Fidelity to the authors' tf.keras code, where the papers are silent:
gradients are clipped per tensor (Keras ``clipnorm``) unless
``clip="global"``; optimisers are Adam or AMSGrad; models may define
``penalty()`` (added to the loss) and ``constrain_()`` (applied after each
step, Keras kernel constraints).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from momentum.metrics import sharpe_ratio
from momentum.portfolio import strategy_returns
from training.datasets import Layout, ModelData, make_layout, positions_of
from training.losses import LossName, Reduction, objective
from training.models import ModelSpec, Universe, get_spec

__all__ = [
    "FitResult",
    "check_rows",
    "TrainConfig",
    "fit",
    "layout_for",
    "resolve_device",
    "split_hyperparameters",
    "train",
    "validation_sharpe",
]

_REDUCTION: dict[str, Reduction] = {
    "spatiotemporal": "portfolio",
    "sequence": "pooled",
    "panel": "per_asset",
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model.

    ``seq_len`` is the window of sequence models (63 in the DMN and TFT-SHORT
    papers) and QuantNet's truncated-BPTT length k; spatio-temporal models
    take their lookback from the model config.
    """

    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 25
    min_delta: float = 1e-4
    max_grad_norm: float | None = 1.0
    clip: Literal["per_tensor", "global"] = "per_tensor"
    optimizer: Literal["adam", "amsgrad"] = "adam"
    loss: LossName = "sharpe"
    cost_bps: float = 0.0
    seq_len: int = 63
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.patience < 0 or self.min_delta < 0 or self.cost_bps < 0:
            raise ValueError("`patience`, `min_delta` and `cost_bps` must be non-negative")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be positive, got {self.lr}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"`max_grad_norm` must be positive or None, got {self.max_grad_norm}")
        if self.clip not in ("per_tensor", "global"):
            raise ValueError(f"`clip` must be 'per_tensor' or 'global', got {self.clip!r}")
        if self.optimizer not in ("adam", "amsgrad"):
            raise ValueError(f"`optimizer` must be 'adam' or 'amsgrad', got {self.optimizer!r}")
        if self.loss not in ("sharpe", "returns", "mse", "binary"):
            raise ValueError(f"`loss` must be sharpe, returns, mse or binary, got {self.loss!r}")


TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
# names the search spaces use for training settings
_ALIASES = {"k": "seq_len"}


@dataclass
class FitResult:
    """The trained model (best weights restored) and how training went."""

    model: nn.Module
    best_epoch: int
    best_valid_sharpe: float
    initial_valid_sharpe: float
    stopped: Literal["early_stopping", "max_epochs", "diverged"]
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def layout_for(spec: ModelSpec, model_config: Any, config: TrainConfig) -> Layout:
    """The data layout of a model: its lookback, or the training sequence length."""
    steps = model_config.lookback if spec.layout == "spatiotemporal" else config.seq_len
    return make_layout(spec.layout, steps)


def validation_sharpe(model: nn.Module, layout: Layout, data: ModelData, rows: np.ndarray) -> float:
    """Sharpe of the cross-asset average daily captured return on `rows` (NaN if undefined)."""
    positions = layout.predict(model, data, rows)
    f = data.features
    return float(sharpe_ratio(strategy_returns(positions, f.next_returns[rows], f.vol[rows])))


def check_rows(train_rows: np.ndarray, valid_rows: np.ndarray) -> None:
    """Training rows exist, at least 2 validation rows (a Sharpe needs them), no overlap."""
    if len(train_rows) == 0 or len(valid_rows) < 2:
        raise ValueError(
            f"need `train_rows` and at least 2 `valid_rows`, got {len(train_rows)} and "
            f"{len(valid_rows)}"
        )
    overlap = np.intersect1d(train_rows, valid_rows)
    if len(overlap):
        raise ValueError(f"`train_rows` and `valid_rows` overlap at {overlap[:5].tolist()}")


def _clip(parameters: list[nn.Parameter], config: TrainConfig) -> None:
    if config.max_grad_norm is None:
        return
    grads = [p for p in parameters if p.grad is not None]
    if config.clip == "global":
        torch.nn.utils.clip_grad_norm_(grads, config.max_grad_norm)
    else:
        # tf.keras clipnorm rescales each gradient tensor on its own
        for p in grads:
            torch.nn.utils.clip_grad_norm_([p], config.max_grad_norm)


def fit(
    model: nn.Module,
    layout: Layout,
    data: ModelData,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model`, early-stopping on validation Sharpe; best weights restored.

    Parameters
    ----------
    model : nn.Module
        A registry model (any layout).
    layout : Layout
        How to batch and predict for this model (`layout_for`).
    data : ModelData
    train_rows, valid_rows : ndarray of int
        Decision rows (see `training.datasets.label_rows`); labels of the
        training rows must not reach the validation or test period.
    config : TrainConfig
    on_epoch : callable, optional
        Called with each epoch's record (epoch, train_loss, valid_sharpe, seconds).
    """
    check_rows(train_rows, valid_rows)
    device = resolve_device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=config.lr, amsgrad=config.optimizer == "amsgrad")
    reduction = _REDUCTION[layout.name]
    markets = getattr(getattr(model, "config", None), "markets", None)
    penalty = getattr(model, "penalty", None)
    constrain = getattr(model, "constrain_", None)
    rng = np.random.default_rng(config.seed)

    initial = validation_sharpe(model, layout, data, valid_rows)
    best_sharpe, best_epoch = -math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    stopped: Literal["early_stopping", "max_epochs", "diverged"] = "max_epochs"
    history: list[dict[str, float]] = []
    for epoch in range(1, config.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        losses = []
        diverged = False
        for batch in layout.batches(data, train_rows, config.batch_size, rng):
            batch = batch.to(device)
            positions = layout.canonical(positions_of(model(*batch.inputs)), batch)
            loss = objective(
                positions,
                batch.target,
                batch.leverage,
                batch.mask,
                reduction=reduction,
                loss=config.loss,
                cost_bps=config.cost_bps,
                markets=markets,
            )
            if penalty is not None:
                loss = loss + penalty()
            if not torch.isfinite(loss):
                diverged = True
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                diverged = True
                break
            _clip(params, config)
            optimiser.step()
            if constrain is not None:
                constrain()
            losses.append(float(loss.detach()))
        if diverged:
            stopped = "diverged"
            break
        sharpe = validation_sharpe(model, layout, data, valid_rows)
        record = {
            "epoch": float(epoch),
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "valid_sharpe": sharpe,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if math.isfinite(sharpe) and sharpe > best_sharpe + config.min_delta:
            best_sharpe, best_epoch, since_best = sharpe, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best > config.patience:
                stopped = "early_stopping"
                break
    model.load_state_dict(best_state)
    if best_epoch == 0:
        best_sharpe = initial
    return FitResult(model, best_epoch, best_sharpe, initial, stopped, history)


def split_hyperparameters(
    spec: ModelSpec, hyper: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat hyperparameter dict into model-config and `TrainConfig` fields."""
    model_part, train_part = {}, {}
    for key, value in hyper.items():
        key = _ALIASES.get(key, key)
        if key in spec.config_fields:
            model_part[key] = value
        elif key in TRAIN_FIELDS:
            train_part[key] = value
        else:
            raise ValueError(
                f"{spec.name}: {key!r} is neither a model config field nor a training setting"
            )
    return model_part, train_part


def train(
    name: str,
    data: ModelData,
    universe: Universe,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    hyper: Mapping[str, Any],
    base: TrainConfig | None = None,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[Any, FitResult]:
    """Build registry model `name` with `hyper` on top of `base`, seed it, and fit it.

    Returns the model config and the `FitResult`.
    """
    spec = get_spec(name)
    model_part, train_part = split_hyperparameters(spec, hyper)
    config = dataclasses.replace(base or TrainConfig(), **train_part)
    torch.manual_seed(config.seed)
    model_config = spec.config(universe, **model_part)
    model = spec.build(model_config)
    layout = layout_for(spec, model_config, config)
    return model_config, fit(model, layout, data, train_rows, valid_rows, config, on_epoch=on_epoch)
