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

The model reads windows laid out as QuantNet's ("panel" layout,
``(batch, steps, assets, features)``) and ``forward`` returns X at *every* step: eq. 23 maps
the window to a tau x N sequence of signals, and training scores every step of every window
(the Sharpe ratio of the cross-asset average net return over all of them, the reduction
named by ``loss_reduction``), where the last step alone wasted tau - 1 labels per window.
The window length tau is the training sequence length (``--seq-len``, 63 as STMOM Table 7).
Serving keeps the last step of the contract window (`training.export.PanelServing`).

What still differs from STMOM, and why:

* Turnover: with a sequence of positions per window the turnover term is taken between
  consecutive days of each window (the DMN's, eq. 12), not between the shuffled samples of
  a minibatch (STMOM's localized minibatch turnover, eq. 14, meant for one-date samples).
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
    hidden : int
        LSTM state size.
    dropout : float
        Dropout rate on the LSTM outputs before the head, in [0, 1).
    """

    n_assets: int
    n_features: int = 8
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")


def tiny(**overrides: Any) -> LstmConfig:
    """A small configuration for fast tests; keyword arguments override fields."""
    return LstmConfig(**{"n_assets": 5, "n_features": 8, "hidden": 8, "dropout": 0.1, **overrides})


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

    # the objective of every step: the Sharpe ratio of the cross-asset average return
    # (STMOM's, over the window's steps too), not QuantNet's per-asset one of the layout
    loss_reduction = "portfolio"

    def forward(self, x: Tensor) -> Tensor:
        """Positions at every step of the window (eq. 23 applied time-distributed).

        Parameters
        ----------
        x : Tensor
            ``(batch, steps, n_assets, n_features)``, oldest step first.

        Returns
        -------
        Tensor
            ``(batch, steps, n_assets)`` in [-1, 1]; step s depends on inputs <= s.
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[2:]) != (cfg.n_assets, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, steps, n_assets, n_features) = "
                f"(batch, steps, {cfg.n_assets}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        steps = x.reshape(x.shape[0], x.shape[1], -1)  # (batch, steps, assets * features)
        h, _ = self.lstm(steps)  # (batch, steps, hidden)
        return torch.tanh(self.head(self.dropout(h)))  # (batch, steps, n_assets)
