"""One training loop for every registered model.

`fit` trains a module on the training rows of a `ModelData` and early-stops
on a validation *score*: improvement must exceed ``min_delta`` (1e-4) within
``patience`` (25) epochs; the best weights are restored at the end. The score
(``TrainConfig.select``) is what is traded: ``"sharpe"`` (default), the Sharpe
ratio of the cross-asset average daily return (the reference code's criterion)
*net* of ``select_cost_bps`` per unit of turnover (default: the run's own
``cost_bps``, so a run trained with a turnover penalty is also selected net of
it; 0 gives the gross figure), or ``"loss"``, minus the training objective
itself (its penalty included) on the validation rows. The gross and net
Sharpe ratios of every epoch are recorded either way. Selecting on the gross
Sharpe let a model whose cost regulariser worked lose to one that churns. The
Sharpe ratios are of the traded positions: a model trained by regression or
classification (``loss`` ``"mse"`` or ``"binary"``) outputs a forecast, scored
as the ``sgn`` of it (`momentum.sizing.sizer_for_loss`). `train` builds and
seeds a registry model from a flat dict of hyperparameters (model-config fields
and `TrainConfig` fields mixed, as a random search draws them) and fits it.

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
from momentum.sizing import Sizer, size_positions, sizer_for_loss
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
    "validation_loss",
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
    select: Literal["sharpe", "loss"] = "sharpe"
    select_cost_bps: float | None = None
    seq_len: int = 63
    max_steps: int | None = None
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
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"`max_steps` must be positive or None, got {self.max_steps}")
        if self.select not in ("sharpe", "loss"):
            raise ValueError(f"`select` must be 'sharpe' or 'loss', got {self.select!r}")
        cost = self.select_cost_bps
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"`select_cost_bps` must be finite and >= 0 or None, got {cost}")

    @property
    def selection_cost_bps(self) -> float:
        """The cost the selection Sharpe is net of: `select_cost_bps`, else `cost_bps`."""
        return self.cost_bps if self.select_cost_bps is None else self.select_cost_bps


TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
# names the search spaces use for training settings
_ALIASES = {"k": "seq_len"}


@dataclass
class FitResult:
    """The trained model (best weights restored) and how training went.

    ``best_valid_score`` is the selection score of the best epoch (see the module
    docstring); ``best_valid_sharpe`` and ``best_valid_net_sharpe`` are that epoch's
    gross and net validation Sharpe ratios, recorded whatever was selected on.
    """

    model: nn.Module
    best_epoch: int
    best_valid_sharpe: float
    initial_valid_sharpe: float
    stopped: Literal["early_stopping", "max_epochs", "max_steps", "diverged"]
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid_score: float = math.nan
    best_valid_net_sharpe: float = math.nan


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def layout_for(spec: ModelSpec, model_config: Any, config: TrainConfig) -> Layout:
    """The data layout of a model: its lookback, or the training sequence length."""
    steps = model_config.lookback if spec.layout == "spatiotemporal" else config.seq_len
    # QuantNet (a config with markets) samples windows and markets as its Algorithm 1
    return make_layout(
        spec.layout,
        steps,
        markets=getattr(model_config, "markets", None),
        market_batch=getattr(model_config, "market_batch", None),
    )


def validation_sharpe(
    model: nn.Module,
    layout: Layout,
    data: ModelData,
    rows: np.ndarray,
    cost_bps: float = 0.0,
    *,
    sizer: Sizer = "identity",
) -> float:
    """Sharpe of the cross-asset average daily return on `rows`, net of `cost_bps` per unit
    of turnover between consecutive rows (eqs. 12-13; 0: gross); NaN if undefined. The
    model's outputs become positions through `sizer` (`momentum.sizing`)."""
    return _sharpes(layout.predict(model, data, rows), data, rows, (cost_bps,), sizer)[0]


def _sharpes(
    outputs: np.ndarray,
    data: ModelData,
    rows: np.ndarray,
    costs: tuple[float, ...],
    sizer: Sizer,
) -> list[float]:
    """Sharpe ratios of what is traded: `outputs` sized into positions, net of each cost."""
    f = data.features
    # a forecast (mse, binary objectives) is traded as sgn(forecast), not as its raw value
    positions = size_positions(sizer, outputs)
    return [
        float(
            sharpe_ratio(
                strategy_returns(positions, f.next_returns[rows], f.vol[rows], cost_bps=cost)
            )
        )
        for cost in costs
    ]


_LOSS_SEED = 0  # validation batches are shuffled like training ones, the same way every epoch


def validation_loss(
    model: nn.Module, layout: Layout, data: ModelData, rows: np.ndarray, config: TrainConfig
) -> float:
    """The training objective on `rows` as one batch (its penalty included), in eval mode.

    One batch, because the Sharpe objectives are not means over batches; spatio-temporal
    layouts shuffle it as training does (their turnover is STMOM's localized minibatch
    turnover, eq. 14), with a fixed seed so that epochs compare.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        rng = np.random.default_rng(_LOSS_SEED)
        batches = list(layout.batches(data, rows, max(len(rows) * data.n_assets, 1), rng))
        if not batches:
            return math.nan
        (batch,) = batches
        batch = batch.to(device)
        with torch.no_grad():
            loss = _loss(model, layout, batch, config)
        return float(loss)
    finally:
        model.train(was_training)


def _loss(model: nn.Module, layout: Layout, batch: Any, config: TrainConfig) -> torch.Tensor:
    """The training objective of one batch, plus the model's penalty where it has one."""
    positions = layout.canonical(positions_of(model(*batch.inputs)), batch)
    loss = objective(
        positions,
        batch.target,
        batch.leverage,
        batch.mask,
        # a model may name its own (the STMOM LSTM in the panel layout: "portfolio")
        reduction=getattr(model, "loss_reduction", _REDUCTION[layout.name]),
        loss=config.loss,
        cost_bps=config.cost_bps,
        markets=getattr(getattr(model, "config", None), "markets", None),
    )
    penalty = getattr(model, "penalty", None)
    return loss if penalty is None else loss + penalty()


def _scores(
    model: nn.Module, layout: Layout, data: ModelData, rows: np.ndarray, config: TrainConfig
) -> dict[str, float]:
    """The validation figures of one epoch: gross and net Sharpe, and the selection score."""
    gross, net = _sharpes(
        layout.predict(model, data, rows),
        data,
        rows,
        (0.0, config.selection_cost_bps),
        sizer_for_loss(config.loss),
    )
    score = -validation_loss(model, layout, data, rows, config) if config.select == "loss" else net
    return {"valid_sharpe": gross, "valid_net_sharpe": net, "valid_score": score}


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
    """Train `model`, early-stopping on the validation score; best weights restored.

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
        Called with each epoch's record (epoch, train_loss, valid_sharpe, valid_net_sharpe,
        valid_score, seconds).
    """
    check_rows(train_rows, valid_rows)
    device = resolve_device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=config.lr, amsgrad=config.optimizer == "amsgrad")
    constrain = getattr(model, "constrain_", None)
    rng = np.random.default_rng(config.seed)

    initial = _scores(model, layout, data, valid_rows, config)
    best = {"valid_score": -math.inf}
    best_epoch = 0
    best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    stopped: Literal["early_stopping", "max_epochs", "max_steps", "diverged"] = "max_epochs"
    history: list[dict[str, float]] = []
    steps = 0
    for epoch in range(1, config.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        losses = []
        diverged = False
        for batch in layout.batches(data, train_rows, config.batch_size, rng):
            loss = _loss(model, layout, batch.to(device), config)
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
            steps += 1
            if config.max_steps is not None and steps >= config.max_steps:
                break
        if diverged:
            stopped = "diverged"
            break
        scores = _scores(model, layout, data, valid_rows, config)
        record = {
            "epoch": float(epoch),
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            **scores,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = scores["valid_score"]
        if math.isfinite(score) and score > best["valid_score"] + config.min_delta:
            best, best_epoch, since_best = scores, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best > config.patience:
                stopped = "early_stopping"
                break
        if config.max_steps is not None and steps >= config.max_steps:
            stopped = "max_steps"  # (the epoch cut short is scored above, as any other)
            break
    model.load_state_dict(best_state)
    if best_epoch == 0:
        best = initial
    return FitResult(
        model,
        best_epoch,
        best["valid_sharpe"],
        initial["valid_sharpe"],
        stopped,
        history,
        best_valid_score=best["valid_score"],
        best_valid_net_sharpe=best["valid_net_sharpe"],
    )


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
