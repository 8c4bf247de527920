"""Multilayer perceptron for spatio-temporal momentum (Tan, Roberts, Zohren 2023).

The SLP's flattened input u (all N assets x tau days x d features) goes through one
hidden tanh layer before the multitask tanh head:

    h_t = tanh(W_h^T u_t + b_h),    X_t = tanh(W_o^T dropout(h_t) + b_o)

Flatten order as in ``slp.py``: input asset ``a``, step ``t`` (0 = oldest) and
feature ``f`` sit at position ``(a * lookback + t) * n_features + f`` of u.

What still differs from STMOM (eq. 7, Tables 7-8), and why: the paper does not say where its
dropout sits; here it is on the hidden layer, the only place between the two dense layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.models.grids import STMOM_CAPACITY, STMOM_OPTIMISATION

# Random-search grid of STMOM Table 8 (no L1: eq. 11 penalises the SLP only). Keys that are not
# config fields belong to the training loop.
SEARCH_SPACE: dict[str, list] = {**STMOM_CAPACITY, **STMOM_OPTIMISATION}


@dataclass(frozen=True)
class MlpConfig:
    """Hyperparameters of :class:`Mlp`.

    Parameters
    ----------
    n_assets : int
        N, the number of assets seen and traded.
    n_features : int
        d, features per asset and day.
    lookback : int
        tau, days of history in the input window (5, STMOM Table 7).
    hidden : int
        Width of the hidden tanh layer.
    dropout : float
        Dropout rate on the hidden layer, in [0, 1).
    """

    n_assets: int
    n_features: int = 8
    lookback: int = 5
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "lookback", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")

    @property
    def n_inputs(self) -> int:
        """m = N * tau * d, the length of the flattened input vector u."""
        return self.n_assets * self.lookback * self.n_features


def tiny(**overrides: Any) -> MlpConfig:
    """A small configuration for fast tests; keyword arguments override fields."""
    return MlpConfig(
        **{"n_assets": 5, "n_features": 8, "lookback": 10, "hidden": 8, "dropout": 0.1, **overrides}
    )


class Mlp(nn.Module):
    """Spatio-temporal MLP: flattened window -> hidden tanh -> dropout -> N tanh positions.

    Initialisation follows tf.keras ``Dense``: glorot-uniform kernels, zero biases.

    Parameters
    ----------
    config : MlpConfig
        Sizes and dropout.
    """

    def __init__(self, config: MlpConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden = nn.Linear(config.n_inputs, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.n_assets)
        for layer in (self.hidden, self.head):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Positions for the last day of the window.

        Parameters
        ----------
        x : Tensor
            ``(batch, n_assets, lookback, n_features)``, oldest step first.

        Returns
        -------
        Tensor
            ``(batch, n_assets)`` positions in [-1, 1].
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.n_assets, cfg.lookback, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, n_assets, lookback, n_features) = "
                f"(batch, {cfg.n_assets}, {cfg.lookback}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        u = x.reshape(x.shape[0], -1)  # (batch, n_assets * lookback * n_features)
        h = self.dropout(torch.tanh(self.hidden(u)))  # (batch, hidden)
        return torch.tanh(self.head(h))  # (batch, n_assets)
