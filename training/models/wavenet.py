"""WaveNet Deep Momentum Network (Lim, Zohren & Roberts 2019, section IV-A).

Dilated causal convolutions with gated activations and skip connections, in three layers
that aggregate one asset's features at weekly, monthly and quarterly frequencies; the three
states are concatenated and read by a 2-layer MLP::

    psi(u) = tanh(W u) * sigmoid(V u) + A u + b          gated activation + skip connection
    s_weekly(t)    = psi([u_{t-4}, ..., u_t])
    s_monthly(t)   = psi([s_weekly(t), s_weekly(t-5), s_weekly(t-10), s_weekly(t-15)])
    s_quarterly(t) = psi([s_monthly(t), s_monthly(t-21), s_monthly(t-42)])
    h_t = tanh(W_h [s_weekly(t); s_monthly(t); s_quarterly(t)] + b_h)
    Z_t = g(W_z h_t + b_z)

Every layer, psi's own W, V and A included, has its own weights; the states and the MLP's
hidden state share one size, the single capacity hyperparameter ``hidden``. Each psi is a
convolution of kernel width 5, 4 and 3 with dilation 1, 5 and 21, zero-padded on the left
(causal). Dropout sits on the inputs of the convolutional layers and on their outputs, the
concatenated states (section IV-B); there is none on the MLP's hidden state.

Receptive field: the output at step ``t`` reads lags 0-19, 21-40 and 42-61 (a month of
4 x 5 days is 20 days, but the months are spaced 21 days apart, so lags 20 and 41 fall
between them), 62 steps in all (`RECEPTIVE_FIELD`). Data layout "sequence" (as the LSTM
``dmn``): ``x (batch, seq, n_features) -> (batch, seq)``. The first 61 steps of a training
sequence see part of their history zero-padded; the serving path, the last step of a window
of at least 62 steps (the default sequence length, 63), sees all of it.

What differs from the paper, and why:

* Output activation: tanh for every objective, as in ``lasso.py`` (the paper: linear for
  regression, sigmoid for classification): the tanh output is the regression forecast, or
  ``(Z + 1) / 2`` the probability of a rise, and ``sgn(Z)`` the position of both
  (`momentum.sizing`), so one ONNX output contract serves every objective.
* The equations survive only in part in the copy of the paper available to this project;
  read as above: the weekly layer reads the 5 days ending at t, the monthly layer the weekly
  states at t, t-5, t-10 and t-15, the quarterly layer the monthly states at t, t-21 and t-42.
* Dropout on "the inputs of the convolutional layers" is read as the input of each of the
  three (the features, the weekly and the monthly states), one independent mask per
  element and step.
* Search grid: the paper's Appendix B grid was not available to this project; the DMN /
  Momentum Transformer grid of the LSTM DMN (``grids.DMN_TFT_*``) stands in for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.grids import DMN_TFT_CAPACITY, DMN_TFT_OPTIMISATION
from training.models.layers import check_positive_int, check_sequence_input, keras_linear

# The LSTM DMN's grid (the DMN paper's Appendix B is not available). `hidden` and `dropout`
# are config fields; `lr`, `batch_size` and `max_grad_norm` belong to the training loop.
SEARCH_SPACE: dict[str, list] = {**DMN_TFT_CAPACITY, **DMN_TFT_OPTIMISATION}

# (taps, spacing in steps) of the three dilated layers (section IV-A)
WEEKLY = (5, 1)  # u_{t-4}, ..., u_t
MONTHLY = (4, 5)  # s_weekly at t, t-5, t-10, t-15
QUARTERLY = (3, 21)  # s_monthly at t, t-21, t-42
# steps the output at t reads back to, t included: 1 + 4 + 15 + 42 = 62
RECEPTIVE_FIELD = 1 + sum((taps - 1) * spacing for taps, spacing in (WEEKLY, MONTHLY, QUARTERLY))


@dataclass(frozen=True)
class WaveNetConfig:
    """Hyperparameters of :class:`WaveNet`.

    Attributes
    ----------
    n_features : int
        Features per step (8 by default).
    hidden : int
        Size of every state: weekly, monthly, quarterly and the MLP's hidden (grid 5..160).
    dropout : float
        Dropout rate on the convolutional layers' inputs and outputs, in [0, 1).
    """

    n_features: int = 8
    hidden: int = 20
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_positive_int("n_features", self.n_features)
        check_positive_int("hidden", self.hidden)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")


def tiny(**overrides: Any) -> WaveNetConfig:
    """A small, fast config for tests; keyword arguments override its fields."""
    return replace(WaveNetConfig(n_features=8, hidden=4, dropout=0.1), **overrides)


class GatedDilatedConv(nn.Module):
    """One dilated causal layer ``psi(u) = tanh(W u) * sigmoid(V u) + A u + b``.

    ``u`` at step t is the layer input at steps ``t, t - spacing, ..., t - (taps - 1) *
    spacing`` concatenated: a convolution of kernel width `taps` and dilation `spacing`,
    zero-padded on the left so that step t reads steps <= t only. W, V and A are packed into
    one convolution; each is glorot-uniform initialised on its own (a tf.keras ``Conv1D``
    kernel each), b starts at zero. The gate has no bias, as in the paper's psi.

    Parameters
    ----------
    in_channels, out_channels : int
        State sizes in and out.
    taps, spacing : int
        Kernel width and dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, taps: int, spacing: int) -> None:
        super().__init__()
        self.taps, self.spacing = taps, spacing
        self.left_pad = (taps - 1) * spacing
        self.conv = nn.Conv1d(in_channels, 3 * out_channels, taps, dilation=spacing, bias=False)
        with torch.no_grad():
            for kernel in self.conv.weight.view(3, out_channels, in_channels, taps):  # W, V, A
                nn.init.xavier_uniform_(kernel)
        self.bias = nn.Parameter(torch.zeros(out_channels, 1))  # b, broadcast over steps

    def forward(self, u: Tensor) -> Tensor:
        """``(batch, in_channels, seq) -> (batch, out_channels, seq)``."""
        padded = F.pad(u, (self.left_pad, 0))  # (batch, in, left_pad + seq): zeros first
        filtered, gate, skip = self.conv(padded).chunk(3, dim=1)  # 3 x (batch, out, seq)
        return torch.tanh(filtered) * torch.sigmoid(gate) + skip + self.bias

    def at(self, u: Tensor, lags: Sequence[int]) -> Tensor:
        """The layer at a few steps only, ``lags`` steps before the last.

        Parameters
        ----------
        u : Tensor
            ``(batch, in_channels, seq)``, the layer's input sequence.
        lags : sequence of int
            0 is the last step.

        Returns
        -------
        Tensor
            ``(batch, out_channels, len(lags))``: ``forward(u)[..., seq - 1 - lag]`` for each
            lag, and zero for a lag before the start of the sequence (the padding that the
            next layer's full forward pass would read there).
        """
        seq, deepest = u.shape[-1], max(lags)
        padded = F.pad(u, (self.left_pad + deepest, 0))  # (batch, in, pad + seq): zeros first
        # tap j of the step `lag` before the last, oldest tap first (as the convolution's)
        index = [
            [deepest + seq - 1 - lag + j * self.spacing for j in range(self.taps)] for lag in lags
        ]
        windows = padded[:, :, torch.tensor(index, device=u.device)]  # (batch, in, lags, taps)
        exists = torch.tensor([lag < seq for lag in lags], device=u.device)  # (lags,)
        return self.gated(windows) * exists

    def gated(self, windows: Tensor) -> Tensor:
        """psi on gathered windows: ``(batch, in, n, taps) -> (batch, out, n)``."""
        z = torch.einsum("oik,bink->bon", self.conv.weight, windows)  # (batch, 3 * out, n)
        filtered, gate, skip = z.chunk(3, dim=1)  # 3 x (batch, out, n)
        return torch.tanh(filtered) * torch.sigmoid(gate) + skip + self.bias


class WaveNet(nn.Module):
    """Weekly, monthly and quarterly gated dilated layers, then a 2-layer MLP, every step.

    Initialisation follows tf.keras: glorot-uniform kernels, zero biases.

    Parameters
    ----------
    config : WaveNetConfig
    """

    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.input_dropout = nn.Dropout(config.dropout)  # on each conv layer's input
        self.weekly = GatedDilatedConv(config.n_features, hidden, *WEEKLY)
        self.monthly = GatedDilatedConv(hidden, hidden, *MONTHLY)
        self.quarterly = GatedDilatedConv(hidden, hidden, *QUARTERLY)
        self.output_dropout = nn.Dropout(config.dropout)  # on the concatenated states
        self.hidden = keras_linear(3 * hidden, hidden)  # W_h, b_h
        self.head = keras_linear(hidden, 1)  # W_z, b_z

    @property
    def receptive_field(self) -> int:
        """Steps the output at step t reads back to, t included (`RECEPTIVE_FIELD`)."""
        return RECEPTIVE_FIELD

    def _last_states(self, weekly: Tensor) -> Tensor:
        """The three states of the last step from the weekly states of every step.

        The last step reads the monthly states at lags 0, 21 and 42 only, and those the weekly
        states at 12 lags: the monthly layer runs at 3 steps and the quarterly layer at 1,
        instead of every step of the window.
        """
        (taps_q, spacing_q) = QUARTERLY
        lags = [(taps_q - 1 - j) * spacing_q for j in range(taps_q)]  # 42, 21, 0: oldest first
        monthly = self.monthly.at(self.input_dropout(weekly), lags)  # (batch, hidden, 3)
        windows = self.input_dropout(monthly).unsqueeze(2)  # (batch, hidden, 1, 3)
        quarterly = self.quarterly.gated(windows)  # (batch, hidden, 1)
        return torch.cat([weekly[..., -1:], monthly[..., -1:], quarterly], dim=1)

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
            Only the last step (the serving path): the weekly layer runs over the window, the
            monthly layer at the 3 steps and the quarterly layer and MLP at the 1 step that
            the last step reads.

        Returns
        -------
        Tensor
            ``(batch, seq)`` outputs in [-1, 1], or ``(batch, 1)`` with `last_only` (equal to
            the last column of the full output); step ``s`` depends on steps ``<= s`` only.
        """
        check_sequence_input(x, self.config.n_features)
        # dilated convolutions
        u = x.transpose(1, 2)  # (batch, features, seq)
        weekly = self.weekly(self.input_dropout(u))  # (batch, hidden, seq)
        if last_only:
            states = self._last_states(weekly)  # (batch, 3 * hidden, 1)
        else:
            monthly = self.monthly(self.input_dropout(weekly))  # (batch, hidden, seq)
            quarterly = self.quarterly(self.input_dropout(monthly))  # (batch, hidden, seq)
            states = torch.cat([weekly, monthly, quarterly], dim=1)  # (batch, 3 * hidden, seq)
        states = states.transpose(1, 2)  # (batch, seq, 3 * hidden), seq = 1 with last_only
        # 2-layer MLP head
        h = torch.tanh(self.hidden(self.output_dropout(states)))  # (batch, seq, hidden)
        return torch.tanh(self.head(h)).squeeze(-1)  # (batch, seq)
