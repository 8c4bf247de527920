"""Lasso Deep Momentum Network (Lim, Zohren & Roberts 2019, section IV-A).

The simplest model of the DMN paper's grid: a linear model of the last tau = 5 days' features
of one asset, concatenated into one vector (`layers.causal_window`), under an output
activation g, trained with an L1 penalty on its weights::

    Z_t = g(w^T u_{t-tau:t} + b),    u_{t-tau:t} = [u_{t-tau+1}^T, ..., u_t^T]^T   (IV-A)
    L~ = L + alpha ||w||_1                                                     (IV-A)

Data layout "sequence" (as the LSTM ``dmn``): ``x (batch, seq, n_features) -> (batch, seq)``,
one output per step, so the Lasso shares the DMN's batches, its validation and its serving
wrapper. Within a sequence, step ``s`` reads steps ``s - 4 .. s``; the first 4 steps of a
sequence see zero-padded history (zero features, no signal). The serving path reads the
last step of a lookback window of at least 5 steps, which sees the full 5 steps.

What differs from the paper, and why:

* Output activation: tanh for every objective. The paper uses g = tanh for direct positions
  (Sharpe and returns objectives), linear for regression (MSE) and sigmoid for binary
  classification. Here the tanh output is the regression forecast (near-linear at the scale
  of the vol-normalised next-day return it is fitted to) and ``(Z + 1) / 2`` the probability
  of a rise (`training.losses.objective`); ``sgn(Z)`` is then the position of both
  (`momentum.sizing`, sizer "sign"), so one ONNX output contract serves every objective.
* Search grid: the paper treats alpha as a hyperparameter but defers its grid to its
  Appendix B, which was not available to this project; alpha is searched over the STMOM
  Table 8 L1 values (``grids.STMOM_L1``), the optimiser settings over the DMN / Momentum
  Transformer grid the LSTM DMN uses.
* Window length: the paper writes ``u_{t-tau:t} = [u_{t-tau}^T, ..., u_t^T]^T`` with tau = 5
  (section V); read here as the 5 days ending at t (a trading week), not 6. tau is a config
  field, not searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from training.losses import l1_penalty
from training.models.grids import DMN_TFT_OPTIMISATION, STMOM_L1
from training.models.layers import (
    causal_window,
    check_positive_int,
    check_sequence_input,
    keras_linear,
)

# alpha over STMOM Table 8's L1 values (the DMN paper's own grid is not available); no hidden
# size or dropout (a linear model has neither). `lr`, `batch_size` and `max_grad_norm` belong
# to the training loop.
SEARCH_SPACE: dict[str, list] = {"alpha": STMOM_L1, **DMN_TFT_OPTIMISATION}


@dataclass(frozen=True)
class LassoConfig:
    """Hyperparameters of :class:`Lasso`.

    Attributes
    ----------
    n_features : int
        Features per step (8 by default: 5 normalised returns + 3 MACD signals).
    tau : int
        Days concatenated into the input vector (5, section V).
    alpha : float
        Weight of the L1 penalty ``alpha ||w||_1`` (the bias is not penalised).
    """

    n_features: int = 8
    tau: int = 5
    alpha: float = 1e-3

    def __post_init__(self) -> None:
        check_positive_int("n_features", self.n_features)
        check_positive_int("tau", self.tau)
        if not (math.isfinite(self.alpha) and self.alpha >= 0.0):
            raise ValueError(f"`alpha` must be finite and >= 0, got {self.alpha!r}")


def tiny(**overrides: Any) -> LassoConfig:
    """A small, fast config for tests; keyword arguments override its fields."""
    return replace(LassoConfig(n_features=8, tau=5, alpha=1e-3), **overrides)


class Lasso(nn.Module):
    """``tanh(w^T u_{t-tau:t} + b)`` at every step of a sequence.

    Initialisation follows tf.keras ``Dense``: glorot-uniform kernel, zero bias.

    Parameters
    ----------
    config : LassoConfig
    """

    def __init__(self, config: LassoConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = keras_linear(config.tau * config.n_features, 1)  # w (as a row), b

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
        return torch.tanh(self.linear(u)).squeeze(-1)  # (batch, seq)

    def penalty(self) -> Tensor:
        """The L1 term ``alpha ||w||_1`` (scalar) added to the loss (section IV-A)."""
        return self.config.alpha * l1_penalty(self.linear.weight)
