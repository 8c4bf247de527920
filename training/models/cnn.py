"""Causal 1-D CNN for spatio-temporal momentum (Tan, Roberts, Zohren 2023, eqs. 15-16).

The window of all N assets' d features is read as a multichannel time series with
N * d channels (channel ``a * n_features + f`` = feature ``f`` of asset ``a``), the
tau x m' input of STMOM Appendix A.1:

    c1 = tanh(W_c1 * u + b_c1)                          (eq. 15, first causal convolution)
    c2 = tanh(W_c2 * c1 + b_c2)                         (eq. 15, second causal convolution)
    h  = P c2 = (1 / tau) sum_s c2_s                    (eq. 15, average pooling over time)
    X  = tanh(W_o^T dropout(tanh(W_h^T h + b_h)) + b_o)  (eq. 16, the MLP of eq. 7)

``*`` is a causal convolution over time: left padding of k - 1 zeros keeps step s
dependent on steps <= s only and the output length equal to tau.

What still differs from STMOM, and why:

* Kernel size and number of filters: the paper states neither; both are searched here
  (``kernel_size``, ``filters``), the filters over Table 8's hidden sizes.
* Pooling: the paper's P "performs a downsampling step" of unstated size; here it averages
  over the whole window, so the head sees one vector whatever tau is.
* Dropout: the paper does not say where it sits; here it is on the head's hidden layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.grids import STMOM_CAPACITY, STMOM_OPTIMISATION

# Random-search grid of STMOM Table 8, plus the CNN's kernel size and filters, which the paper
# does not state. Keys that are not config fields belong to the training loop.
SEARCH_SPACE: dict[str, list] = {
    "kernel_size": [2, 3, 4, 5],
    "filters": [5, 10, 20, 40, 80, 160],
    **STMOM_CAPACITY,
    **STMOM_OPTIMISATION,
}


@dataclass(frozen=True)
class CnnConfig:
    """Hyperparameters of :class:`Cnn`.

    Parameters
    ----------
    n_assets : int
        N, the number of assets seen and traded.
    n_features : int
        d, features per asset and day.
    lookback : int
        tau, days of history in the input window (63, STMOM Table 7).
    kernel_size : int
        k, width of both causal convolutions in days (may exceed ``lookback``: the
        zero padding then stands in for the missing history).
    filters : int
        Output channels of each convolution.
    hidden : int
        Width of the hidden tanh layer of the head.
    dropout : float
        Dropout rate on the head's hidden layer, in [0, 1).
    """

    n_assets: int
    n_features: int = 8
    lookback: int = 63
    kernel_size: int = 3
    filters: int = 20
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "lookback", "kernel_size", "filters", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")


def tiny(**overrides: Any) -> CnnConfig:
    """A small configuration for fast tests; keyword arguments override fields."""
    return CnnConfig(
        **{
            "n_assets": 5,
            "n_features": 8,
            "lookback": 10,
            "kernel_size": 3,
            "filters": 6,
            "hidden": 8,
            "dropout": 0.1,
            **overrides,
        }
    )


class CausalConv1d(nn.Module):
    """One layer of eq. 15: a convolution over time, step s seeing steps <= s only, then tanh.

    Initialisation follows tf.keras ``Conv1D``: glorot-uniform kernel, zero bias.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        Channel counts and kernel width in time steps.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.left_pad = kernel_size - 1
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        nn.init.xavier_uniform_(self.conv.weight)
        assert self.conv.bias is not None  # Conv1d builds a bias by default
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_channels, time)`` -> ``(batch, out_channels, time)``."""
        # pad the past only (Keras padding="causal"): output s combines inputs s-k+1 .. s
        padded = F.pad(x, (self.left_pad, 0))  # (batch, in_channels, left_pad + time)
        return torch.tanh(self.conv(padded))  # sigma = tanh (eq. 15)


class Cnn(nn.Module):
    """Spatio-temporal CNN: two causal tanh convolutions, average pooling over time, MLP head.

    Parameters
    ----------
    config : CnnConfig
        Sizes and dropout.
    """

    def __init__(self, config: CnnConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = CausalConv1d(
            config.n_assets * config.n_features, config.filters, config.kernel_size
        )
        self.conv2 = CausalConv1d(config.filters, config.filters, config.kernel_size)
        self.hidden = nn.Linear(config.filters, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.n_assets)
        for layer in (self.hidden, self.head):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def conv_features(self, x: Tensor) -> Tensor:
        """The second convolution's features at every step (eq. 15), before pooling.

        Parameters
        ----------
        x : Tensor
            ``(batch, n_assets, lookback, n_features)``, oldest step first.

        Returns
        -------
        Tensor
            ``(batch, filters, lookback)``; column s depends on input steps <= s only.
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.n_assets, cfg.lookback, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, n_assets, lookback, n_features) = "
                f"(batch, {cfg.n_assets}, {cfg.lookback}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        channels = x.permute(0, 1, 3, 2)  # (batch, assets, features, lookback)
        channels = channels.reshape(
            x.shape[0], -1, cfg.lookback
        )  # (batch, assets*features, lookback)
        return self.conv2(self.conv1(channels))  # (batch, filters, lookback)

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
        pooled = self.conv_features(x).mean(dim=-1)  # P of eq. 15: (batch, filters)
        # eq. 16: the MLP of eq. 7 on the pooled features
        h = self.dropout(torch.tanh(self.hidden(pooled)))  # (batch, hidden)
        return torch.tanh(self.head(h))  # (batch, n_assets)
