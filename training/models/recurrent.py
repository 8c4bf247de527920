"""Cross-sectional recurrent networks for US equities (Boutier 2023): rnn, deep_rnn, gru,
lstm_xs and deep_lstm.

Every asset's features run through the same recurrent stack (weights shared across assets,
one sequence per asset); a time-distributed Dense(1) scores each asset at each step, and a
zero-mean layer turns the scores of one step into a dollar-neutral book (Boutier 2023,
section 4, Tables 2 and 4):

    h^1_s = BN(cell_1(x_{<=s}))              per asset; BN over the hidden features
    h^l_s = BN(cell_l(h^{l-1}_{<=s}))        l = 2 .. layers (stacked, Table 4)
    y_s   = w^T dropout(h^L_s)               time-distributed Dense(1), one score per asset
    X_s   = (y_s - mean_a y_s) / sum_a |y_s - mean_a y_s|    zero-mean layer, active assets

"Prior to calculating the Sharpe Ratio Loss, we apply a normalization layer [that] centers
our predictions around 0 and ensures that they have an absolute sum of 1" (section 4): at
every step the positions of the active assets sum to 0 and their absolute values to 1, so
each lies in [-1/2, 1/2]. An asset is *active* at a step unless every one of its input
features is exactly 0 there: the serving contract feeds a missing feature as 0
(`momentum.contract`), so an all-zero row is an asset with no data that day. Inactive
assets get position 0 and no share of the mean or the gross. A step whose active scores are
all equal (to float32 rounding), or that has fewer than two active assets, gets all-zero
positions rather than 0 / 0.

The five registry names are one module with different ``cell`` and ``layers``
(`VARIANTS`): SimpleRNN (``rnn``), two stacked SimpleRNNs (``deep_rnn``, "Deep RNN with two
layers", section 4.1), GRU (``gru``), one LSTM (``lstm_xs``; ``lstm`` is STMOM's) and three
stacked LSTMs (``deep_lstm``, Table 4). Training uses the panel layout (`training.datasets`):
windows of all assets over ``seq_len`` days, the input length T of the paper, scored at
every step by the Sharpe ratio of the cross-asset average return (``loss_reduction =
"portfolio"``, the paper's Sharpe Ratio Loss). Serving keeps the last step
(`training.export.PanelServing`).

Keras fidelity (the paper's code is tf.keras, section 4): glorot-uniform input and head
kernels, orthogonal recurrent kernels, zero biases, LSTM forget-gate bias 1, SimpleRNN tanh,
GRU with the reset gate applied after the recurrent product (Keras's ``reset_after=True``,
which is PyTorch's GRU); BatchNormalization with epsilon 1e-3 and moving-average momentum
0.99 (PyTorch's ``momentum=0.01``); Adam with per-tensor ``clipnorm=10`` (the grid's fixed
``max_grad_norm`` and `training.train`'s default per-tensor clipping).

What differs from the paper, and why:

* Dropout: one dropout layer after the last batch normalisation, before the head, as Tables 2
  and 4 list them (none between stacked layers).
* L1 regularisation: the paper says L1 "notably enhance[s] the model's performance" (section
  5) but gives neither its weight nor the weights it applies to. Here ``l1`` (default 1e-5,
  not searched) multiplies the summed absolute values of the recurrent layers' input kernels
  and of the head kernel; recurrent kernels, biases and batch-norm parameters are not
  penalised (`Recurrent.penalised_weights`).
* Dead parameters dropped: Table 2's head bias and the last batch normalisation's shift
  (beta) add the same number to every asset's score, which the zero-mean layer subtracts
  again: the bias would never get a gradient, and the shift one from dropout noise only.
* Batch statistics: in training, each batch normalisation pools every (window, asset, step)
  row of the minibatch whose asset is active; inactive rows take the running statistics, as
  they do in eval mode (their states still feed the asset's later steps), instead of
  dragging the batch statistics towards the response to an all-zero input. Pooling the
  steps of a window, as Keras's BatchNormalization over ``(batch, time, hidden)`` does, lets
  a training position see the window's later steps through two summary statistics per
  feature; in eval mode (validation, backtests, serving) the running statistics are used and
  every position depends on steps <= its own.
* PyTorch's recurrent layers carry two bias vectors per gate (input and recurrent) where a
  Keras SimpleRNN or LSTM has one: ``hidden`` (x 1, 4) more parameters per layer, the same
  functions.
* Inputs: meant for the project's extended feature set (the registry's ``feature_set``; 19
  features, where the paper's appendix lists 21: this project computes no weekly normalised
  return and no alpha variance ratio).
* Warm-up: an asset whose first features are defined but not yet all of them (a new listing)
  is active here, though the backtest and the service give it no position until every
  feature is finite; the zero mean then holds over the active assets, not the traded ones.
* The paper's best LSTM 63 used lr 0.005 (section 5), a value off its own Table 1 grid; the
  grid here is Table 1's (`training.models.grids.BOUTIER_TABLE_1`).
* Minibatches: ``batch_size`` counts windows of all assets (the panel layout), so a batch of
  32 holds 32 x N asset sequences; the paper does not say what its minibatch holds.

The paper's protocol (section 4: refit every year on an expanding window from 1990-1997,
20% of each training sample for validation, up to 250 epochs with patience 25) belongs to
the backtest (`training.backtest`), not to the model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from training.losses import l1_penalty
from training.models.grids import BOUTIER_TABLE_1
from training.models.layers import init_keras_lstm_, keras_linear

Cell = Literal["rnn", "gru", "lstm"]
CELLS: tuple[Cell, ...] = ("rnn", "gru", "lstm")

# Random-search grid of Boutier (2023) Table 1 (plus T = 252). Keys that are not config fields
# belong to the training loop: k (= seq_len, the input length T), lr, batch_size and the fixed
# max_grad_norm 10 (Keras clipnorm).
SEARCH_SPACE: dict[str, list] = BOUTIER_TABLE_1

# The registry's five models: one architecture, by cell and depth (section 4, Table 4)
VARIANTS: dict[str, dict[str, Any]] = {
    "rnn": {"cell": "rnn", "layers": 1},
    "deep_rnn": {"cell": "rnn", "layers": 2},
    "gru": {"cell": "gru", "layers": 1},
    "lstm_xs": {"cell": "lstm", "layers": 1},
    "deep_lstm": {"cell": "lstm", "layers": 3},
}

# tf.keras BatchNormalization defaults: epsilon 1e-3 and moving average
# `moving = 0.99 * moving + 0.01 * batch` (PyTorch's momentum weighs the batch)
KERAS_BATCH_NORM_EPS = 1e-3
KERAS_BATCH_NORM_MOMENTUM = 0.01

# A step whose spread sum |y - mean y| is below this fraction of sum |y| is flat: float32
# resolves ~1e-7 relative, so a smaller spread is rounding noise of the mean, not a signal.
FLAT_SPREAD = 1e-5

_MODULES: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True)
class RecurrentConfig:
    """Hyperparameters of :class:`Recurrent`.

    Parameters
    ----------
    n_assets : int
        N, the number of assets seen and traded (the cross-section of the zero-mean layer).
    n_features : int
        d, features per asset and day.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell: Keras SimpleRNN (tanh), GRU or LSTM.
    layers : int
        Stacked recurrent layers, each followed by batch normalisation (2 for the Deep RNN,
        3 for the Deep LSTM of Table 4).
    hidden : int
        Units of every recurrent layer (Table 1: 60-120; 120 in the best LSTM 63, section 5).
    dropout : float
        Rate of the dropout before the head, in [0, 1) (0.25 in the best LSTM 63).
    l1 : float
        Weight of the L1 penalty on the input and head kernels; the paper gives none.
    """

    n_assets: int
    n_features: int = 8
    cell: Cell = "lstm"
    layers: int = 1
    hidden: int = 120
    dropout: float = 0.25
    l1: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_assets", "n_features", "layers", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {CELLS}, got {self.cell!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        if not (math.isfinite(self.l1) and self.l1 >= 0.0):
            raise ValueError(f"`l1` must be finite and >= 0, got {self.l1!r}")


def tiny(**overrides: Any) -> RecurrentConfig:
    """A small configuration for fast tests; keyword arguments override fields (the registry
    passes each variant's ``cell`` and ``layers``)."""
    return RecurrentConfig(
        **{"n_assets": 5, "n_features": 8, "hidden": 6, "dropout": 0.1, "l1": 1e-3, **overrides}
    )


def tiny_for(name: str) -> Callable[..., RecurrentConfig]:
    """`tiny` with the cell and depth of variant `name` (the registry's tiny configs)."""
    return functools.partial(tiny, **VARIANTS[name])


@torch.no_grad()
def init_keras_recurrent_(module: nn.RNNBase) -> None:
    """Initialise an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM`` in place like its tf.keras layer.

    Glorot-uniform input kernels, orthogonal recurrent kernels and zero biases, plus the
    LSTM's forget-gate bias 1 (`training.models.layers.init_keras_lstm_`).
    """
    if isinstance(module, nn.LSTM):
        init_keras_lstm_(module)
        return
    for name, param in module.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(param)
        else:
            nn.init.zeros_(param)


def zero_mean(scores: Tensor, is_active: Tensor) -> Tensor:
    """Boutier's zero-mean layer: demean across active assets, divide by the gross.

    Parameters
    ----------
    scores : Tensor
        ``(..., assets)`` raw scores of one cross-section per leading index.
    is_active : Tensor
        ``(..., assets)`` bool; True where the asset takes part in the cross-section.

    Returns
    -------
    Tensor
        ``(..., assets)``: over the active assets the positions sum to 0 and their absolute
        values to 1; inactive assets, and every asset of a flat cross-section (equal scores
        to float32 rounding, or fewer than two active assets), get 0.

    Examples
    --------
    >>> zero_mean(torch.tensor([4.0, 1.0, 9.0, 1.0]), torch.tensor([True, True, False, True]))
    tensor([ 0.5000, -0.2500,  0.0000, -0.2500])
    """
    weight = is_active.to(scores.dtype)
    count = weight.sum(-1, keepdim=True)
    mean = (scores * weight).sum(-1, keepdim=True) / count.clamp_min(1.0)
    centred = (scores - mean) * weight  # (..., assets); 0 where inactive
    gross = centred.abs().sum(-1, keepdim=True)
    level = (scores.abs() * weight).sum(-1, keepdim=True)
    is_flat = gross <= FLAT_SPREAD * level  # also all-zero scores and single-asset steps
    # the clamp keeps the unused branch finite, so its gradient is 0 rather than NaN
    spread = gross.clamp_min(torch.finfo(scores.dtype).tiny)
    return torch.where(is_flat, torch.zeros_like(centred), centred / spread)


class RecurrentLayer(nn.Module):
    """One recurrent layer over each asset's sequence, then batch normalisation of its
    hidden features (section 4.1: "All our RNNs models tested include a Batch Normalization
    layer").

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
    in_features, hidden : int
        Input and output widths per step.
    shift : bool
        Whether the normalisation has its learned shift (beta); the last layer's would only
        add one number to every asset's score, which the zero-mean layer removes.
    """

    def __init__(self, cell: Cell, in_features: int, hidden: int, shift: bool = True) -> None:
        super().__init__()
        self.recurrent = _MODULES[cell](in_features, hidden, batch_first=True)
        init_keras_recurrent_(self.recurrent)
        self.norm = nn.BatchNorm1d(
            hidden, eps=KERAS_BATCH_NORM_EPS, momentum=KERAS_BATCH_NORM_MOMENTUM
        )
        if not shift:
            self.norm.register_parameter("bias", None)  # as nn.Linear(bias=False) does

    def forward(self, x: Tensor, is_active: Tensor) -> Tensor:
        """``(sequences, steps, in_features)`` -> ``(sequences, steps, hidden)``.

        ``is_active`` ``(sequences, steps)`` names the rows whose statistics a training
        batch normalisation pools (see the module docstring); eval mode ignores it.
        """
        h, _ = self.recurrent(x)  # (sequences, steps, hidden)
        rows = h.reshape(-1, h.shape[-1])  # (sequences * steps, hidden)
        return self._normalise(rows, is_active.reshape(-1)).reshape(h.shape)

    def _normalise(self, rows: Tensor, is_active: Tensor) -> Tensor:
        if not self.training or bool(is_active.all()):
            return self.norm(rows)  # eval: the running statistics, each row on its own
        # training with inactive rows: they take the running statistics, as in eval (their
        # states still feed the asset's later steps), and are left out of the batch's
        n = self.norm
        assert n.running_mean is not None and n.running_var is not None
        out = nn.functional.batch_norm(
            rows, n.running_mean, n.running_var, n.weight, n.bias, training=False, eps=n.eps
        )
        if int(is_active.sum()) > 1:  # a batch statistic needs two rows
            out = out.index_put((is_active,), n(rows[is_active]))
        return out


class Recurrent(nn.Module):
    """Boutier (2023)'s cross-sectional recurrent model: a shared recurrent stack per asset,
    a time-distributed Dense(1) head and the zero-mean layer.

    Parameters
    ----------
    config : RecurrentConfig
        Cell, depth, sizes, dropout and the L1 weight.
    """

    # the paper's Sharpe Ratio Loss: of the cross-asset average return, at every step
    loss_reduction = "portfolio"

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.n_features] + [config.hidden] * config.layers
        self.layers = nn.ModuleList(
            RecurrentLayer(config.cell, width, config.hidden, shift=i < config.layers - 1)
            for i, width in enumerate(widths[:-1])
        )
        self.dropout = nn.Dropout(config.dropout)
        # no bias: the zero-mean layer removes any constant added to every asset's score
        self.head = keras_linear(config.hidden, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Positions of every asset at every step of the window.

        Parameters
        ----------
        x : Tensor
            ``(batch, steps, n_assets, n_features)``, oldest step first; an asset whose
            features are all 0 at a step is inactive there.

        Returns
        -------
        Tensor
            ``(batch, steps, n_assets)``; at each step the active assets' positions sum to 0
            with absolute sum 1, inactive ones are 0. In eval mode step s depends on
            inputs at steps <= s only.
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[2:]) != (cfg.n_assets, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, steps, n_assets, n_features) = "
                f"(batch, steps, {cfg.n_assets}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        batch, steps, n_assets, n_features = x.shape
        # True = the asset has data at that step (the contract feeds a missing feature as 0)
        is_active = (x != 0).any(dim=-1)  # (batch, steps, assets)

        # recurrent layers: one sequence per asset, weights shared across assets
        h = x.permute(0, 2, 1, 3).reshape(batch * n_assets, steps, n_features)
        rows_active = is_active.permute(0, 2, 1).reshape(batch * n_assets, steps)
        for layer in self.layers:
            h = layer(h, rows_active)  # (batch * assets, steps, hidden)

        # time-distributed Dense(1)
        scores = self.head(self.dropout(h)).reshape(batch, n_assets, steps)
        scores = scores.transpose(1, 2)  # (batch, steps, assets)

        # zero-mean layer: a dollar-neutral, unit-gross cross-section at every step
        return zero_mean(scores, is_active)  # (batch, steps, assets)

    def penalised_weights(self) -> list[Tensor]:
        """The kernels the L1 term sums over: each recurrent layer's input kernel (all gates)
        and the head kernel."""
        kernels = [p for name, p in self.named_parameters() if name.endswith("weight_ih_l0")]
        return [*kernels, self.head.weight]

    def penalty(self) -> Tensor:
        """``l1 * sum |W|`` over `penalised_weights` (scalar), added to the loss by the fit
        loop."""
        total = torch.stack([l1_penalty(w) for w in self.penalised_weights()]).sum()
        return self.config.l1 * total
