"""LSTM for spatio-temporal momentum (Tan, Roberts, Zohren 2023, eqs. 17-23).

At each of the tau steps the LSTM reads all N assets' d features at once
(input size N * d, element ``a * n_features + f`` = feature ``f`` of asset ``a``);
eqs. 17-23 are the standard LSTM cell plus a time-distributed head:

    f_s = sigmoid(W_f u_s + V_f h_{s-1} + b_f)     forget gate
    i_s = sigmoid(W_i u_s + V_i h_{s-1} + b_i)     input gate
    o_s = sigmoid(W_o u_s + V_o h_{s-1} + b_o)     output gate
    c_s = f_s * c_{s-1} + i_s * tanh(W_c u_s + V_c h_{s-1} + b_c)
    h_s = o_s * tanh(c_s)
    X_s = tanh(W_x^T dropout(h_s) + b_x)           head, N outputs at every step

``forward`` returns X at the last step, the date being decided.

What still differs from STMOM, and why:

* Training sees the last step only. Eq. 23 maps the window to a tau x N sequence of signals,
  so the loss could use every step; that needs the spatio-temporal layout
  (``training.datasets``) to carry each window's tau labels, masks and leverages, and a
  Sharpe / turnover reduction over (dates, steps, assets), which the one training loop
  does not have. ``forward_sequence`` already gives every step.
* Dropout: the paper does not say where it sits; here it is on the LSTM outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.models.grids import STMOM_CAPACITY, STMOM_OPTIMISATION
from training.models.layers import init_keras_lstm_

# Random-search grid of STMOM Table 8. Keys that are not config fields belong to the training
# loop.
SEARCH_SPACE: dict[str, list] = {**STMOM_CAPACITY, **STMOM_OPTIMISATION}


@dataclass(frozen=True)
class LstmConfig:
    """Hyperparameters of :class:`Lstm`.

    Parameters
    ----------
    n_assets : int
        N, the number of assets seen and traded.
    n_features : int
        d, features per asset and day.
    lookback : int
        tau, the number of steps the LSTM unrolls over (63, STMOM Table 7).
    hidden : int
        LSTM state size.
    dropout : float
        Dropout rate on the LSTM outputs before the head, in [0, 1).
    """

    n_assets: int
    n_features: int = 8
    lookback: int = 63
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "lookback", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")


def tiny(**overrides: Any) -> LstmConfig:
    """A small configuration for fast tests; keyword arguments override fields."""
    return LstmConfig(
        **{"n_assets": 5, "n_features": 8, "lookback": 10, "hidden": 8, "dropout": 0.1, **overrides}
    )


class Lstm(nn.Module):
    """Spatio-temporal LSTM with a time-distributed tanh head over all N assets.

    Initialisation follows tf.keras (see :func:`training.models.layers.init_keras_lstm_`); the head is a
    glorot-uniform ``Dense`` with zero bias.

    Parameters
    ----------
    config : LstmConfig
        Sizes and dropout.
    """

    def __init__(self, config: LstmConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.n_assets * config.n_features, config.hidden, batch_first=True)
        init_keras_lstm_(self.lstm)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.n_assets)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_sequence(self, x: Tensor) -> Tensor:
        """Positions at every step of the window (eq. 23 applied time-distributed).

        Parameters
        ----------
        x : Tensor
            ``(batch, n_assets, lookback, n_features)``, oldest step first.

        Returns
        -------
        Tensor
            ``(batch, lookback, n_assets)`` in [-1, 1]; step s depends on inputs <= s.
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.n_assets, cfg.lookback, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, n_assets, lookback, n_features) = "
                f"(batch, {cfg.n_assets}, {cfg.lookback}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        steps = x.permute(0, 2, 1, 3)  # (batch, lookback, assets, features)
        steps = steps.reshape(x.shape[0], cfg.lookback, -1)  # (batch, lookback, assets*features)
        h, _ = self.lstm(steps)  # (batch, lookback, hidden)
        return torch.tanh(self.head(self.dropout(h)))  # (batch, lookback, n_assets)

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
        return self.forward_sequence(x)[:, -1]  # (batch, n_assets)
