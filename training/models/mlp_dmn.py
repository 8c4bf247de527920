"""MLP Deep Momentum Network (Lim, Zohren & Roberts 2019, section IV-A).

A 2-layer perceptron on the Lasso's input, the last tau = 5 days' features of one asset
concatenated (`layers.causal_window`), with a tanh hidden state::

    h_t = tanh(W_h u_{t-tau:t} + b_h)                                         (IV-A)
    Z_t = g(W_z h_t + b_z)                                                    (IV-A)

Dropout sits on the inputs and on the hidden state (section IV-B).

Data layout "sequence" (as the LSTM ``dmn``): ``x (batch, seq, n_features) -> (batch, seq)``.
Step ``s`` reads steps ``s - 4 .. s``; the first 4 steps of a sequence see zero-padded
history, the serving path (last step of a lookback window of at least 5 steps) the full 5.

What differs from the paper, and why:

* Output activation: tanh for every objective, as in ``lasso.py`` (the paper: linear for
  regression, sigmoid for classification): the tanh output is the regression forecast, or
  ``(Z + 1) / 2`` the probability of a rise, and ``sgn(Z)`` the position of both
  (`momentum.sizing`), so one ONNX output contract serves every objective.
* Search grid: the paper's Appendix B grid was not available to this project; the DMN /
  Momentum Transformer grid of the LSTM DMN (``grids.DMN_TFT_*``) stands in for it.
* Window length: 5 days ending at t, as in ``lasso.py``; a config field, not searched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from training.models.grids import DMN_TFT_CAPACITY, DMN_TFT_OPTIMISATION
from training.models.layers import (
    causal_window,
    check_positive_int,
    check_sequence_input,
    keras_linear,
)

# The LSTM DMN's grid (the DMN paper's Appendix B is not available). `hidden` and `dropout`
# are config fields; `lr`, `batch_size` and `max_grad_norm` belong to the training loop.
SEARCH_SPACE: dict[str, list] = {**DMN_TFT_CAPACITY, **DMN_TFT_OPTIMISATION}


@dataclass(frozen=True)
class MlpDmnConfig:
    """Hyperparameters of :class:`MlpDmn`.

    Attributes
    ----------
    n_features : int
        Features per step (8 by default).
    tau : int
        Days concatenated into the input vector (5, section V).
    hidden : int
        Size of the tanh hidden state (grid 5..160).
    dropout : float
        Dropout rate on the inputs and on the hidden state, in [0, 1).
    """

    n_features: int = 8
    tau: int = 5
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_positive_int("n_features", self.n_features)
        check_positive_int("tau", self.tau)
        check_positive_int("hidden", self.hidden)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")


def tiny(**overrides: Any) -> MlpDmnConfig:
    """A small, fast config for tests; keyword arguments override its fields."""
    return replace(MlpDmnConfig(n_features=8, tau=5, hidden=6, dropout=0.1), **overrides)


class MlpDmn(nn.Module):
    """``tanh(W_z tanh(W_h u_{t-tau:t} + b_h) + b_z)`` at every step of a sequence.

    Initialisation follows tf.keras ``Dense``: glorot-uniform kernels, zero biases.

    Parameters
    ----------
    config : MlpDmnConfig
    """

    def __init__(self, config: MlpDmnConfig) -> None:
        super().__init__()
        self.config = config
        self.input_dropout = nn.Dropout(config.dropout)
        self.hidden = keras_linear(config.tau * config.n_features, config.hidden)  # W_h, b_h
        self.hidden_dropout = nn.Dropout(config.dropout)
        self.head = keras_linear(config.hidden, 1)  # W_z, b_z

    @property
    def receptive_field(self) -> int:
        """Steps the output at step s reads: ``s - tau + 1 .. s``."""
        return self.config.tau

    def forward(
        self, x: Tensor, tickers: Tensor | None = None, *, last_only: bool = False
    ) -> Tensor:
        """Positions at every step, or at the last step only.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_features)`` float features, oldest step first.
        tickers : Tensor or None
            ``(batch,)`` ticker ids; accepted for the shared "sequence" signature and ignored.
        last_only : bool
            Only the last step (the serving path).

        Returns
        -------
        Tensor
            ``(batch, seq)`` outputs in [-1, 1], or ``(batch, 1)`` with `last_only` (equal to
            the last column of the full output); step ``s`` reads steps ``s - tau + 1 .. s``.
        """
        check_sequence_input(x, self.config.n_features)
        u = causal_window(x, self.config.tau, last_only=last_only)  # (batch, seq, tau * feat)
        h = torch.tanh(self.hidden(self.input_dropout(u)))  # (batch, seq, hidden)
        return torch.tanh(self.head(self.hidden_dropout(h))).squeeze(-1)  # (batch, seq)
