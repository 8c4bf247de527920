"""Ensembles of the top trials of a search: positions averaged instead of the argmax.

The best of 20 trials x 100 epochs, picked on a validation Sharpe whose standard error is
0.6-1.4, is mostly the luckiest draw (the winner's curse); the papers average several runs
instead. `members` loads the top K trials of a search (`SearchResult.ranked`) with the
settings each was trained with; `ensemble_positions` averages their positions row by row
(each member on its own layout and lookback); `Ensemble` holds them for export, where
`training.export` averages them *inside* one ONNX graph under the same contract (each
member reads the last ``lookback`` steps of the window, extra outputs averaged where the
members' shapes agree), so the service serves an ensemble with no code of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from training.datasets import ModelData
from training.models import get_spec
from training.search import SearchResult, load_trial
from training.train import TrainConfig, layout_for, split_hyperparameters

__all__ = ["Ensemble", "Member", "ensemble_positions", "members"]


@dataclass(frozen=True)
class Member:
    """One trial of an ensemble: its model and how it reads the data."""

    trial: int
    score: float
    hyper: dict[str, Any]
    model: nn.Module
    model_config: Any
    train_config: TrainConfig
    lookback: int


def members(
    name: str,
    directory: str | Path,
    ranked: Sequence[tuple[int, float]] | SearchResult,
    k: int,
    *,
    base: TrainConfig,
    fixed: Mapping[str, Any] | None = None,
) -> list[Member]:
    """The top `k` trials of the search in `directory` (best first), loaded.

    `ranked` is ``SearchResult.ranked`` (or the result itself); `base` the training config
    the trials started from, `fixed` the pinned hyperparameters.
    """
    if k < 1:
        raise ValueError(f"an ensemble needs at least 1 member, got {k}")
    order = ranked.ranked if isinstance(ranked, SearchResult) else ranked
    if not order:
        raise ValueError(f"{directory}: the search has no complete trial to ensemble")
    spec = get_spec(name)
    out = []
    for trial, score in list(order)[:k]:
        model, model_config, params = load_trial(directory, trial)
        hyper = {**(fixed or {}), **params}
        train_config = dataclasses.replace(base, **split_hyperparameters(spec, hyper)[1])
        layout = layout_for(spec, model_config, train_config)
        out.append(
            Member(trial, float(score), hyper, model, model_config, train_config, layout.steps)
        )
    return out


def ensemble_positions(
    name: str, ensemble: Sequence[Member], data: ModelData, rows: np.ndarray
) -> np.ndarray:
    """The mean of the members' positions on `rows`, shape ``(len(rows), n_assets)``.

    Each member predicts on its own layout and lookback; a position is NaN where the asset
    is not tradable, for every member alike.
    """
    if not ensemble:
        raise ValueError("an ensemble needs at least 1 member")
    spec = get_spec(name)
    total = None
    for member in ensemble:
        layout = layout_for(spec, member.model_config, member.train_config)
        positions = layout.predict(member.model, data, rows)
        total = positions if total is None else total + positions
    assert total is not None
    return total / len(ensemble)


class Ensemble(nn.Module):
    """Members of one architecture, averaged at export (`training.export.EnsembleServing`)."""

    def __init__(self, models: Sequence[nn.Module], lookbacks: Sequence[int]) -> None:
        super().__init__()
        if not models or len(models) != len(lookbacks):
            raise ValueError(
                f"an ensemble needs one lookback per member, got {len(models)} models and "
                f"{len(lookbacks)} lookbacks"
            )
        self.members = nn.ModuleList(models)
        self.lookbacks = tuple(int(v) for v in lookbacks)

    @classmethod
    def of(cls, ensemble: Sequence[Member]) -> Ensemble:
        return cls([m.model for m in ensemble], [m.lookback for m in ensemble])

    @property
    def lookback(self) -> int:
        """The contract window: the longest member lookback."""
        return max(self.lookbacks)
