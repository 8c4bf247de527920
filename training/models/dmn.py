"""LSTM Deep Momentum Network (Lim, Zohren & Roberts 2019), the reference model.

The network reads a sequence of features and outputs a position ``X in [-1, 1]`` at every
step (the paper's "sequence-to-sequence" LSTM DMN), trained elsewhere to maximise the Sharpe
ratio of vol-scaled captured returns. Architecture of the authors' tf.keras reference::

    LSTM(hidden, return_sequences=True, dropout=p)   # p drops *inputs*, one mask per sequence
    Dropout(p)                                        # on the LSTM outputs
    TimeDistributed(Dense(1, tanh, kernel_constraint=max_norm(3)))

Data layout "sequence": ``x (batch, seq, n_features) -> positions (batch, seq)``.

What still differs from the DMN paper, and why:

* Search grid: the paper defers its grid to its Appendix B, which was not available to this
  project, so the Momentum Transformer reference grid (``grids.DMN_TFT_*``) stands in for it.
* Dropout: the paper drops the LSTM's inputs, recurrent states and outputs; here inputs and
  outputs only, since ``nn.LSTM`` has no recurrent dropout and a hand-written cell would give
  up the fused (cuDNN) kernel.
* The head's ``max_norm(3)`` constraint comes from the authors' code, not the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.models.grids import DMN_TFT_CAPACITY, DMN_TFT_OPTIMISATION
from training.models.layers import (
    check_positive_int,
    check_sequence_input,
    init_keras_lstm_,
    keras_linear,
    max_norm_,
)

# Random-search grid that the Momentum Transformer paper (Wood et al. 2022) uses for its LSTM
# DMN baseline (the authors' `settings/hp_grid.py`; the DMN paper's own Appendix B grid was not
# available to this project). `hidden` and `dropout` are config fields; `lr`, `max_grad_norm`
# (per-tensor clipnorm) and `batch_size` belong to the training loop.
SEARCH_SPACE: dict[str, list] = {**DMN_TFT_CAPACITY, **DMN_TFT_OPTIMISATION}

# Keras `max_norm(3)` on the position head's kernel.
HEAD_MAX_NORM = 3.0


@dataclass(frozen=True)
class DmnConfig:
    """Hyperparameters of the LSTM DMN.

    Attributes
    ----------
    n_features : int
        Features per step (8 by default: 5 normalised returns + 3 MACD signals).
    hidden : int
        LSTM state size (grid 5..160).
    dropout : float
        Rate of both the variational input dropout and the output dropout, in [0, 1).
    """

    n_features: int = 8
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_positive_int("n_features", self.n_features)
        check_positive_int("hidden", self.hidden)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}")


def tiny(**overrides: Any) -> DmnConfig:
    """A small, fast config for tests; keyword arguments override its fields."""
    return replace(DmnConfig(n_features=8, hidden=6, dropout=0.0), **overrides)


class VariationalInputDropout(nn.Module):
    """Keras ``LSTM(dropout=p)`` input dropout: ONE mask per sequence, shared over time.

    In training, each (sample, feature) pair is kept with probability ``1 - p`` for the whole
    sequence and scaled by ``1 / (1 - p)`` (Gal & Ghahramani's variational dropout, as Keras
    implements it with its default ``implementation=2``: the same mask feeds all four gates).
    In evaluation it is the identity.

    Parameters
    ----------
    p : float
        Drop probability in [0, 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq, features) -> (batch, seq, features)``."""
        if not self.training or self.p == 0.0:
            return x
        # F.dropout on ones yields the Bernoulli(1 - p) / (1 - p) mask directly.
        mask = F.dropout(torch.ones_like(x[:, :1, :]), self.p, training=True)  # (batch, 1, feat)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dmn(nn.Module):
    """LSTM Deep Momentum Network.

    Initialisation is tf.keras's: glorot-uniform input kernel and head kernel, orthogonal
    recurrent kernel, zero biases except forget-gate bias 1. The LSTM starts from zero state
    on every sequence (Keras ``stateful=False``). Call :meth:`constrain_` after each optimiser
    step to reproduce the head's ``max_norm(3)`` kernel constraint.

    Parameters
    ----------
    config : DmnConfig
    """

    def __init__(self, config: DmnConfig) -> None:
        super().__init__()
        self.config = config
        self.input_dropout = VariationalInputDropout(config.dropout)
        self.lstm = nn.LSTM(config.n_features, config.hidden, batch_first=True)
        init_keras_lstm_(self.lstm)
        self.output_dropout = nn.Dropout(config.dropout)
        self.head = keras_linear(config.hidden, 1)

    def forward(
        self, x: Tensor, tickers: Tensor | None = None, *, last_only: bool = False
    ) -> Tensor:
        """Positions at every step, or at the last step only.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_features)`` float features, oldest step first.
        tickers : Tensor or None
            ``(batch,)`` ticker ids; accepted for the shared "sequence" signature and ignored
            (the DMN has no static input).
        last_only : bool
            Apply the head to the LSTM's final state only: what serving needs (the export
            wrapper sets it), and ``seq`` times less head work.

        Returns
        -------
        Tensor
            ``(batch, seq)`` positions in [-1, 1], or ``(batch, 1)`` with `last_only` (equal
            to the last column of the full output); step ``s`` depends on steps ``<= s`` only.
        """
        check_sequence_input(x, self.config.n_features)
        h, (h_last, _) = self.lstm(self.input_dropout(x))  # (batch, seq, hidden)
        if last_only:  # h_last (1, batch, hidden) is h[:, -1] (the LSTM's Y_h in ONNX)
            h = h_last.transpose(0, 1)  # (batch, 1, hidden)
        h = self.output_dropout(h)
        return torch.tanh(self.head(h)).squeeze(-1)  # (batch, seq)

    def constrain_(self) -> None:
        """Keras ``max_norm(3)`` on the head kernel: its L2 norm is clipped to 3."""
        max_norm_(self.head.weight, HEAD_MAX_NORM)
