"""Single Layer Perceptron for spatio-temporal momentum (Tan, Roberts, Zohren 2023).

One dense layer sees the last ``lookback`` (tau) days of all N assets' d features
and emits all N positions at once (multitask):

    X_t = tanh(W^T u_t + b),    u_t in R^m,  m = N * tau * d        (STMOM, SLP eq.)

trained with an L1 (lasso) penalty lambda_1 * sum |W| on the kernel. With tau = 5
this is the paper's best model.

Flatten order (used by ``forward`` and ``attribution_weights`` alike): ``u`` is the
C-order flattening of one sample ``(n_assets, lookback, n_features)``, so input
asset ``a``, step ``t`` (0 = oldest) and feature ``f`` sit at position
``(a * lookback + t) * n_features + f``.

What still differs from STMOM, and why: nothing in the model; the grid is Table 8's and
tau = 5 is Table 7's. The paper's budget (Table 7: 100 trials, 500 epochs, patience 25) is
the ``paper`` protocol of ``training.backtest``; its number of seeded runs is not stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.losses import l1_penalty
from training.models.grids import STMOM_L1, STMOM_OPTIMISATION

# Random-search grid of STMOM Table 8: the L1 weight alpha (eq. 11) and the optimisation
# settings; no dropout or hidden size (the SLP has neither). Keys that are not config fields
# (lr, batch_size, max_grad_norm) belong to the training loop.
SEARCH_SPACE: dict[str, list] = {"l1": STMOM_L1, **STMOM_OPTIMISATION}


@dataclass(frozen=True)
class SlpConfig:
    """Hyperparameters of :class:`Slp`.

    Parameters
    ----------
    n_assets : int
        N, the number of assets seen and traded.
    n_features : int
        d, features per asset and day.
    lookback : int
        tau, days of history fed to the layer (5, STMOM Table 7).
    l1 : float
        lambda_1, weight of the L1 penalty on the kernel W (bias not penalised).
    """

    n_assets: int
    n_features: int = 8
    lookback: int = 5
    l1: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "lookback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not (math.isfinite(self.l1) and self.l1 >= 0.0):
            raise ValueError(f"`l1` must be finite and >= 0, got {self.l1!r}")

    @property
    def n_inputs(self) -> int:
        """m = N * tau * d, the length of the flattened input vector u."""
        return self.n_assets * self.lookback * self.n_features


def tiny(**overrides: Any) -> SlpConfig:
    """A small configuration for fast tests; keyword arguments override fields."""
    return SlpConfig(**{"n_assets": 5, "n_features": 8, "lookback": 10, "l1": 1e-3, **overrides})


class Slp(nn.Module):
    """Spatio-temporal SLP: ``tanh(W^T u + b)`` over all assets' recent features.

    Initialisation follows tf.keras ``Dense``: glorot-uniform kernel, zero bias.

    Parameters
    ----------
    config : SlpConfig
        Sizes and the L1 weight.
    """

    def __init__(self, config: SlpConfig) -> None:
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.n_inputs, config.n_assets)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

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
        return torch.tanh(self.dense(u))  # (batch, n_assets)

    def penalty(self) -> Tensor:
        """STMOM's lasso term lambda_1 * sum |W| (scalar); the bias is not penalised."""
        return self.config.l1 * l1_penalty(self.dense.weight)

    def attribution_weights(self) -> Tensor:
        """The kernel W laid out by output asset and input (asset, step, feature).

        Returns
        -------
        Tensor
            ``(n_assets_out, n_assets_in, lookback, n_features)``; entry ``[o, a, t, f]``
            is the weight that input feature ``f`` of asset ``a`` at step ``t``
            (0 = oldest) has in the pre-activation of output asset ``o``. Detached.
        """
        cfg = self.config
        # nn.Linear stores (out, in); splitting `in` in C order inverts the flatten in forward.
        return self.dense.weight.detach().reshape(
            cfg.n_assets, cfg.n_assets, cfg.lookback, cfg.n_features
        )  # (assets_out, assets_in, lookback, features)
