"""QuantNet: transfer learning across markets (Koshiyama et al. 2021), and its "No Transfer" twin.

Assets are grouped into markets (``markets[i]`` = the asset columns of market i; sizes
may differ). For market i with N_i assets and features x_t^i in R^{N_i * d} at step t
(QuantNet eqs. 3-4, A4-A7):

    e_t^i = enc_i(x_{<=t}^i)              market-specific encoder: LSTM or Linear+tanh
    z_t^i = omega(e_{<=t}^i)              ONE transfer layer shared by all markets:
                                          linear (eq. A5) or LSTM (Table A2, Appendix 8)
    d_t^i = dec_i(z_{<=t}^i)              market-specific decoder, of the encoder's kind
    X_t^i = tanh(W_i d_t^i + b_i)         market-specific head, N_i positions (eq. A7)

omega is the transfer bottleneck: every market's gradient flows through it. With
``transfer=False`` ("No Transfer") omega is absent and e_t^i feeds the decoder directly.
Every block is causal, so X_t depends only on inputs at steps <= t.

The search follows Table A2: encoder/decoder kind and transfer-layer kind (its four
columns), transfer-layer dimension {10, 25, 50, 100}, 1-2 LSTM layers and dropout 0.1-0.9
for LSTM encoders/decoders and for an LSTM transfer layer, sequence length 21-504 and
learning rate 1e-4 up to 0.5, trained with AMSGrad. Table A2 gives ranges; the random
search draws from a list, so each range is a list of points that includes both ends.

Training follows Algorithm 1 (`training.datasets.PanelLayout` with markets): each
window ends at a random time t and keeps ``market_batch`` (m) random markets, the loss is
eq. 8 over the markets present, and training stops after 2000 steps (Appendix 2;
``max_steps``) or earlier on validation.

What still differs from QuantNet, and why:

* A step holds ``batch_size`` windows, each with its own t and markets (Table A2's "batch
  size" read as windows per step); the paper gives no m, so every market by default. An
  epoch (a validation check) is as many windows as non-overlapping chunks of the rows.
* Conditional ranges: Table A2 caps sequence length at 252 and batch size at 96 when an
  LSTM is present, and learning rate at 0.1 for Linear-linear; a flat list cannot depend on
  another key, so QuantNet's lists span the union (No Transfer's match its columns exactly).
  Keys that do not apply to a draw (layers and dropout of a linear block or a linear
  transfer layer) are ignored.
* Inputs: the paper feeds each market's lagged returns; here every asset's d momentum
  features (its normalised returns among them), the inputs all models of this project share.
* Gradients are clipped (``TrainConfig.max_grad_norm``, per tensor); the paper does not say.
* No Transfer is the encoder-decoder without omega, not the paper's single LSTM per market.
* Where dropout sits, the kind of a linear block (Linear + tanh) and the decoder width (each
  market's number of assets, from section 4) are not given in Table A2; our readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.models.layers import init_keras_lstm_

# Table A2 dropout range 0.1-0.9, as a list
_DROPOUTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

# Random-search grid of QuantNet Table A2 (the four QuantNet columns). Keys that are not config
# fields belong to the training loop: lr, k (= seq_len, the sequence length p and truncated-BPTT
# window), batch_size (Table A2's batch size L) and optimizer (AMSGrad, QuantNet Appendix 2).
SEARCH_SPACE: dict[str, list] = {
    "encoder": ["lstm", "linear"],  # the decoder follows: Linear-* or LSTM-* columns
    "transfer_layer": ["linear", "lstm"],  # *-linear or *-LSTM columns
    "encoder_hidden": [10, 25, 50, 100],  # TL dimension (N)
    "layers": [1, 2],  # E/D # layers
    "dropout": _DROPOUTS,  # E/D dropout
    "transfer_layers": [1, 2],  # TL # layers
    "transfer_dropout": _DROPOUTS,  # TL dropout
    "lr": [1e-4, 1e-3, 1e-2, 1e-1, 0.5],
    "k": [21, 63, 126, 252, 504],
    "batch_size": [16, 32, 64, 96, 128],
    "optimizer": ["amsgrad"],
    "max_steps": [2000],  # Appendix 2: "2000 training steps"
}

# Random-search grid of QuantNet Table A2's two No Transfer columns (Linear, LSTM).
NO_TRANSFER_SEARCH_SPACE: dict[str, list] = {
    "encoder": ["lstm", "linear"],
    "layers": [1, 2],
    "dropout": _DROPOUTS,
    "lr": [1e-4, 1e-3, 1e-2, 1e-1],
    "k": [21, 63, 126, 252, 504],
    "batch_size": [16, 32, 64, 128],
    "optimizer": ["amsgrad"],
    "max_steps": [2000],
}

BLOCK_KINDS = ("lstm", "linear")


@dataclass(frozen=True)
class QuantNetConfig:
    """Hyperparameters of :class:`QuantNet`.

    Parameters
    ----------
    markets : tuple of tuple of int
        Asset column indices of each market; non-empty, disjoint, together covering
        ``0 .. n_assets - 1`` exactly. Lists are accepted and stored as tuples.
    n_features : int
        d, features per asset and step.
    encoder : {"lstm", "linear"}
        Kind of the market-specific encoders.
    decoder : {"lstm", "linear"} or None
        Kind of the market-specific decoders; None (the default) takes the encoder's kind,
        as in every configuration of Table A2.
    encoder_hidden : int
        Width of the encoder output and of omega (square): Table A2's TL dimension.
    decoder_hidden : int or None
        Width of the decoder output; None (the default) gives each market's decoder its
        number of assets N_i (QuantNet section 4: "the same dimensionality as the decoder
        architecture (number of assets)").
    transfer : bool
        True for QuantNet (with omega), False for the "No Transfer" model.
    dropout : float
        Dropout rate of LSTM encoders and decoders (Table A2's E/D dropout; a linear block has
        none), on their outputs and between stacked layers, in [0, 1).
    layers : int
        Stacked layers of an LSTM encoder or decoder (Table A2's E/D # layers); a linear
        block has one.
    transfer_layer : {"linear", "lstm"}
        Kind of omega: linear (eq. A5) or LSTM (Table A2's *-LSTM columns).
    transfer_layers : int
        Stacked layers of an LSTM omega (Table A2's TL # layers).
    transfer_dropout : float
        Dropout rate of an LSTM omega (Table A2's TL dropout), in [0, 1).
    market_batch : int or None
        m, the markets drawn for each training window (Algorithm 1, line 2); the others'
        assets are left out of that window's loss. None: every market (the paper gives no m).
    """

    markets: tuple[tuple[int, ...], ...]
    n_features: int = 8
    encoder: str = "lstm"
    decoder: str | None = None
    encoder_hidden: int = 20
    decoder_hidden: int | None = None
    transfer: bool = True
    dropout: float = 0.0
    layers: int = 1
    transfer_layer: str = "linear"
    transfer_layers: int = 1
    transfer_dropout: float = 0.0
    market_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "markets", _validated_markets(self.markets))
        for name in (
            "n_features",
            "encoder_hidden",
            "decoder_hidden",
            "layers",
            "transfer_layers",
            "market_batch",
        ):
            value = getattr(self, name)
            if name in ("decoder_hidden", "market_batch") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("encoder", "decoder", "transfer_layer"):
            if name == "decoder" and self.decoder is None:
                continue
            if getattr(self, name) not in BLOCK_KINDS:
                raise ValueError(
                    f"`{name}` must be one of {BLOCK_KINDS}, got {getattr(self, name)!r}"
                )
        if not isinstance(self.transfer, bool):
            raise ValueError(f"`transfer` must be a bool, got {self.transfer!r}")
        for name in ("dropout", "transfer_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}")

    @property
    def n_assets(self) -> int:
        """Total number of assets over all markets."""
        return sum(len(market) for market in self.markets)

    @property
    def decoder_kind(self) -> str:
        """The decoders' kind: `decoder`, or the encoders' kind when that is None."""
        return self.encoder if self.decoder is None else self.decoder


def _validated_markets(markets: Any) -> tuple[tuple[int, ...], ...]:
    """Check that ``markets`` partitions ``0 .. n_assets - 1``; return it as nested tuples."""
    if isinstance(markets, (str, bytes)) or not isinstance(markets, (tuple, list)) or not markets:
        raise ValueError(f"`markets` must be a non-empty sequence of index tuples, got {markets!r}")
    normalised: list[tuple[int, ...]] = []
    owner: dict[int, int] = {}
    for i, market in enumerate(markets):
        if isinstance(market, (str, bytes)) or not isinstance(market, (tuple, list)) or not market:
            raise ValueError(
                f"`markets[{i}]` must be a non-empty tuple of asset indices, got {market!r}"
            )
        for index in market:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(
                    f"`markets[{i}]` holds {index!r}; asset indices must be integers >= 0"
                )
            if index in owner:
                raise ValueError(
                    f"`markets` must be disjoint: asset {index} is in markets[{owner[index]}] "
                    f"and markets[{i}]"
                )
            owner[index] = i
        normalised.append(tuple(market))
    n_assets = len(owner)
    missing = sorted(set(range(n_assets)) - owner.keys())
    if missing:
        raise ValueError(
            f"`markets` must cover assets 0..{n_assets - 1} exactly; missing {missing}, "
            f"out of range {sorted(k for k in owner if k >= n_assets)}"
        )
    return tuple(normalised)


def tiny(**overrides: Any) -> QuantNetConfig:
    """A small configuration for fast tests (5 assets in markets of sizes 1, 3 and 1,
    interleaved across columns); keyword arguments override fields."""
    return QuantNetConfig(
        **{
            "markets": ((4,), (0, 2, 3), (1,)),
            "n_features": 8,
            "encoder_hidden": 6,
            "decoder_hidden": 4,
            **overrides,
        }
    )


def _dense(in_features: int, out_features: int) -> nn.Linear:
    """tf.keras ``Dense`` initialisation: glorot-uniform kernel, zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SequenceBlock(nn.Module):
    """A causal block: a stacked LSTM with dropout, or a per-step Linear + tanh.

    Parameters
    ----------
    kind : {"lstm", "linear"}
        Which block.
    in_features, out_features : int
        Input and output widths per step.
    layers : int
        Stacked LSTM layers; ignored by a linear block.
    dropout : float
        LSTM only: dropout between stacked layers and on the output.
    """

    def __init__(
        self, kind: str, in_features: int, out_features: int, layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.kind = kind
        if kind == "lstm":
            self.lstm = nn.LSTM(
                in_features,
                out_features,
                num_layers=layers,
                batch_first=True,
                dropout=dropout if layers > 1 else 0.0,
            )
            init_keras_lstm_(self.lstm)
            self.dropout = nn.Dropout(dropout)
        else:
            self.linear = _dense(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq, in_features)`` -> ``(batch, seq, out_features)``."""
        if self.kind == "lstm":
            h, _ = self.lstm(x)
            return self.dropout(h)
        return torch.tanh(self.linear(x))


class MarketNet(nn.Module):
    """One market's encoder, decoder and position head, plus its asset columns.

    Parameters
    ----------
    assets : tuple of int
        The market's asset column indices in the panel.
    config : QuantNetConfig
        Shared sizes and block kinds.
    """

    assets: Tensor

    def __init__(self, assets: tuple[int, ...], config: QuantNetConfig) -> None:
        super().__init__()
        # a buffer (not a Python list) so index_select stays a graph op in the ONNX export
        self.register_buffer("assets", torch.tensor(assets, dtype=torch.long), persistent=False)
        self.encoder = SequenceBlock(
            config.encoder,
            len(assets) * config.n_features,
            config.encoder_hidden,
            config.layers,
            config.dropout,
        )
        # QuantNet section 4: the decoder's dimensionality is the market's number of assets
        width = len(assets) if config.decoder_hidden is None else config.decoder_hidden
        self.decoder = SequenceBlock(
            config.decoder_kind, config.encoder_hidden, width, config.layers, config.dropout
        )
        self.head = _dense(width, len(assets))

    def forward(self, x: Tensor, omega: nn.Module | None) -> Tensor:
        """This market's positions, passing its encoding through the shared ``omega``.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_assets, n_features)``, the whole panel.
        omega : nn.Module or None
            The global transfer layer, or None for No Transfer.

        Returns
        -------
        Tensor
            ``(batch, seq, N_i)`` positions in [-1, 1], columns in ``assets`` order.
        """
        xi = torch.index_select(x, 2, self.assets)  # (batch, seq, N_i, features)
        xi = xi.flatten(start_dim=2)  # (batch, seq, N_i * features)
        e = self.encoder(xi)  # (batch, seq, encoder_hidden)
        z = e if omega is None else omega(e)  # (batch, seq, encoder_hidden)
        d = self.decoder(z)  # (batch, seq, decoder width)
        return torch.tanh(self.head(d))  # (batch, seq, N_i)


class QuantNet(nn.Module):
    """QuantNet (``transfer=True``) or No Transfer (``transfer=False``) over a panel of markets.

    Initialisation follows tf.keras: glorot-uniform dense and input kernels,
    orthogonal recurrent kernels, zero biases except LSTM forget bias 1. Dropout (if
    any) is applied to the outputs of LSTM blocks and between their stacked layers, a
    choice of ours: the paper does not say where it sits.

    Parameters
    ----------
    config : QuantNetConfig
        Markets, sizes, block kinds and whether omega is present.
    """

    inverse_order: Tensor

    def __init__(self, config: QuantNetConfig) -> None:
        super().__init__()
        self.config = config
        self.market_nets = nn.ModuleList(MarketNet(m, config) for m in config.markets)
        # the single market-agnostic layer (eqs. 3, A5); absent in the No Transfer model
        h = config.encoder_hidden
        self.omega: nn.Module | None = None
        if config.transfer and config.transfer_layer == "linear":
            self.omega = _dense(h, h)
        elif config.transfer:
            self.omega = SequenceBlock(
                "lstm", h, h, config.transfer_layers, config.transfer_dropout
            )
        # concatenating market outputs yields assets in the order of `order`;
        # `inverse[j]` is where asset j sits in that concatenation
        order = torch.tensor([a for m in config.markets for a in m], dtype=torch.long)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        self.register_buffer("inverse_order", inverse, persistent=False)

    def per_market(self, x: Tensor) -> list[Tensor]:
        """Positions of each market's assets, in the order of ``config.markets``.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_assets, n_features)``, oldest step first.

        Returns
        -------
        list of Tensor
            One ``(batch, seq, N_i)`` tensor per market, columns in ``markets[i]`` order,
            values in [-1, 1]. Step t depends on inputs at steps <= t only.
        """
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[2:]) != (cfg.n_assets, cfg.n_features):
            raise ValueError(
                "`x` must have shape (batch, seq, n_assets, n_features) = "
                f"(batch, seq, {cfg.n_assets}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        # every market's encoding goes through the same omega: the transfer bottleneck
        return [net(x, self.omega) for net in self.market_nets]

    def forward(self, x: Tensor) -> Tensor:
        """Positions of all assets at every step, in asset-column order.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_assets, n_features)``, oldest step first.

        Returns
        -------
        Tensor
            ``(batch, seq, n_assets)`` positions in [-1, 1].
        """
        grouped = torch.cat(self.per_market(x), dim=-1)  # (batch, seq, n_assets), market order
        return torch.index_select(grouped, 2, self.inverse_order)  # (batch, seq, n_assets)
