"""QuantNet: transfer learning across markets (Koshiyama et al. 2021), and its "No Transfer" twin.

Assets are grouped into markets (``markets[i]`` = the asset columns of market i; sizes
may differ). For market i with N_i assets and features x_t^i in R^{N_i * d} at step t
(QuantNet eqs. 4-6):

    e_t^i = enc_i(x_{<=t}^i)              market-specific encoder: LSTM or Linear+tanh
    g_t^i = omega e_t^i                   ONE global linear layer shared by all markets
    d_t^i = dec_i(g_{<=t}^i)              market-specific decoder: LSTM or Linear+tanh
    X_t^i = tanh(W_i d_t^i + b_i)         market-specific head, N_i positions

omega is the transfer bottleneck: every market's gradient flows through it. With
``transfer=False`` ("No Transfer") omega is absent and e_t^i feeds the decoder directly.
Every block is causal, so X_t depends only on inputs at steps <= t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.models.layers import init_keras_lstm_

# Random-search grid after QuantNet Table A2. Keys that are not config fields belong to the
# training loop (lr for AMSGrad, k = truncated-BPTT window, batch_size = markets per minibatch).
SEARCH_SPACE: dict[str, list] = {
    "encoder": ["lstm", "linear"],
    "decoder": ["lstm", "linear"],
    "encoder_hidden": [5, 10, 20, 40],
    "decoder_hidden": [5, 10, 20, 40],
    "dropout": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "lr": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2],
    "k": [21, 63, 126, 252],
    "batch_size": [1, 5, 10, 20],
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
    encoder, decoder : {"lstm", "linear"}
        Kind of the market-specific encoder and decoder.
    encoder_hidden : int
        Width of the encoder output and of omega (square).
    decoder_hidden : int
        Width of the decoder output.
    transfer : bool
        True for QuantNet (with omega), False for the "No Transfer" model.
    dropout : float
        Dropout rate on the encoder and decoder outputs, in [0, 1).
    """

    markets: tuple[tuple[int, ...], ...]
    n_features: int = 8
    encoder: str = "lstm"
    decoder: str = "lstm"
    encoder_hidden: int = 20
    decoder_hidden: int = 20
    transfer: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "markets", _validated_markets(self.markets))
        for name in ("n_features", "encoder_hidden", "decoder_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("encoder", "decoder"):
            if getattr(self, name) not in BLOCK_KINDS:
                raise ValueError(
                    f"`{name}` must be one of {BLOCK_KINDS}, got {getattr(self, name)!r}"
                )
        if not isinstance(self.transfer, bool):
            raise ValueError(f"`transfer` must be a bool, got {self.transfer!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")

    @property
    def n_assets(self) -> int:
        """Total number of assets over all markets."""
        return sum(len(market) for market in self.markets)


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
    """A causal per-market encoder or decoder: an LSTM, or a per-step Linear + tanh.

    Parameters
    ----------
    kind : {"lstm", "linear"}
        Which block.
    in_features, out_features : int
        Input and output widths per step.
    """

    def __init__(self, kind: str, in_features: int, out_features: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "lstm":
            self.lstm = nn.LSTM(in_features, out_features, batch_first=True)
            init_keras_lstm_(self.lstm)
        else:
            self.linear = _dense(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq, in_features)`` -> ``(batch, seq, out_features)``."""
        if self.kind == "lstm":
            h, _ = self.lstm(x)
            return h
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
            config.encoder, len(assets) * config.n_features, config.encoder_hidden
        )
        self.decoder = SequenceBlock(config.decoder, config.encoder_hidden, config.decoder_hidden)
        self.head = _dense(config.decoder_hidden, len(assets))

    def forward(self, x: Tensor, omega: nn.Module | None, dropout: nn.Module) -> Tensor:
        """This market's positions, passing its encoding through the shared ``omega``.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, n_assets, n_features)``, the whole panel.
        omega : nn.Module or None
            The global transfer layer, or None for No Transfer.
        dropout : nn.Module
            Dropout applied to the encoder and decoder outputs.

        Returns
        -------
        Tensor
            ``(batch, seq, N_i)`` positions in [-1, 1], columns in ``assets`` order.
        """
        xi = torch.index_select(x, 2, self.assets)  # (batch, seq, N_i, features)
        xi = xi.flatten(start_dim=2)  # (batch, seq, N_i * features)
        e = dropout(self.encoder(xi))  # (batch, seq, encoder_hidden)
        g = e if omega is None else omega(e)  # (batch, seq, encoder_hidden)
        d = dropout(self.decoder(g))  # (batch, seq, decoder_hidden)
        return torch.tanh(self.head(d))  # (batch, seq, N_i)


class QuantNet(nn.Module):
    """QuantNet (``transfer=True``) or No Transfer (``transfer=False``) over a panel of markets.

    Initialisation follows tf.keras: glorot-uniform dense and input kernels,
    orthogonal recurrent kernels, zero biases except LSTM forget bias 1. Dropout (if
    any) is applied to the encoder and decoder outputs, a choice of ours: the paper
    does not say where it sits.

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
        # the single market-agnostic layer (eqs. 4-6); absent in the No Transfer model
        self.omega = (
            _dense(config.encoder_hidden, config.encoder_hidden) if config.transfer else None
        )
        self.dropout = nn.Dropout(config.dropout)
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
        return [net(x, self.omega, self.dropout) for net in self.market_nets]

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
