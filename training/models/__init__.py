"""Model registry: every architecture by name, with how to feed and search it.

A `ModelSpec` ties a name to its config dataclass, its module, its data
layout (see `training.datasets`), its random-search space and a tiny config
for tests. `build(name, universe, **hyper)` fills the data-dependent config
fields (number of assets, features, tickers, market split) from a `Universe`
so callers only pass hyperparameters.

Layouts:

* ``"spatiotemporal"``: ``model(x)``, x ``(batch, assets, lookback, features)``
  -> positions ``(batch, assets)`` (STMOM's slp, mlp, cnn).
* ``"sequence"``: ``model(x, tickers)``, x ``(batch, seq, features)`` ->
  positions ``(batch, seq)`` (dmn; the DMN paper's lasso, mlp_dmn and wavenet, each
  step reading a causal window; tft returns a `TftOutput` whose first field is the
  positions).
* ``"panel"``: ``model(x)``, x ``(batch, seq, assets, features)`` -> positions
  ``(batch, seq, assets)`` (quantnet and no_transfer; STMOM's lstm, trained on every step;
  Boutier's rnn, deep_rnn, gru, lstm_xs and deep_lstm, also trained on every step, whose
  positions are zero-mean with unit gross across the assets at each step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from training.models import (
    cnn,
    dmn,
    lasso,
    lstm,
    mlp,
    mlp_dmn,
    quantnet,
    recurrent,
    slp,
    tft,
    wavenet,
)

Layout = Literal["spatiotemporal", "sequence", "panel"]

__all__ = ["REGISTRY", "Layout", "ModelSpec", "Universe", "build", "get_spec"]


@dataclass(frozen=True)
class Universe:
    """What a model must know about its data: assets in order and their markets."""

    tickers: tuple[str, ...]
    n_features: int
    markets: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.tickers:
            raise ValueError("`tickers` must not be empty")
        if self.n_features < 1:
            raise ValueError(f"`n_features` must be positive, got {self.n_features}")

    @property
    def n_assets(self) -> int:
        return len(self.tickers)

    @classmethod
    def from_market_map(
        cls, tickers: Sequence[str], n_features: int, market_of: Mapping[str, str] | None = None
    ) -> Universe:
        """Markets from a ticker -> market map, in order of first appearance; one market if None."""
        tickers = tuple(tickers)
        if market_of is None:
            return cls(tickers, n_features, (tuple(range(len(tickers))),))
        missing = [t for t in tickers if t not in market_of]
        if missing:
            raise ValueError(f"no market for tickers {missing}")
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(tickers):
            groups.setdefault(market_of[t], []).append(i)
        return cls(tickers, n_features, tuple(tuple(g) for g in groups.values()))


@dataclass(frozen=True)
class ModelSpec:
    """Everything generic code needs to train, search and export one architecture."""

    name: str
    config_cls: type
    module_cls: type[nn.Module]
    layout: Layout
    search_space: Mapping[str, Sequence[Any]]
    tiny: Callable[..., Any]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # the feature set a backtest uses unless told otherwise (`training.backtest_config.FEATURE_SETS`)
    feature_set: str = "default"

    @property
    def config_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self.config_cls))

    def config(self, universe: Universe, **hyper: Any) -> Any:
        """The model config for `universe`; unknown keys are an error naming them."""
        unknown = set(hyper) - self.config_fields
        if unknown:
            raise ValueError(
                f"{self.name}: unknown config fields {sorted(unknown)}; "
                f"have {sorted(self.config_fields)}"
            )
        data: dict[str, Any] = {"n_features": universe.n_features}
        if "n_assets" in self.config_fields:
            data["n_assets"] = universe.n_assets
        if "n_tickers" in self.config_fields:
            data["n_tickers"] = universe.n_assets
        if "markets" in self.config_fields:
            data["markets"] = universe.markets or (tuple(range(universe.n_assets)),)
        return self.config_cls(**{**self.defaults, **data, **hyper})

    def build(self, config: Any) -> nn.Module:
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"{self.name} needs a {self.config_cls.__name__}, got {type(config).__name__}"
            )
        return self.module_cls(config)


REGISTRY: dict[str, ModelSpec] = {
    "slp": ModelSpec("slp", slp.SlpConfig, slp.Slp, "spatiotemporal", slp.SEARCH_SPACE, slp.tiny),
    "mlp": ModelSpec("mlp", mlp.MlpConfig, mlp.Mlp, "spatiotemporal", mlp.SEARCH_SPACE, mlp.tiny),
    "cnn": ModelSpec("cnn", cnn.CnnConfig, cnn.Cnn, "spatiotemporal", cnn.SEARCH_SPACE, cnn.tiny),
    "lstm": ModelSpec("lstm", lstm.LstmConfig, lstm.Lstm, "panel", lstm.SEARCH_SPACE, lstm.tiny),
    "dmn": ModelSpec("dmn", dmn.DmnConfig, dmn.Dmn, "sequence", dmn.SEARCH_SPACE, dmn.tiny),
    # the DMN paper's other architectures (Lim, Zohren & Roberts 2019, section IV-A)
    "lasso": ModelSpec(
        "lasso", lasso.LassoConfig, lasso.Lasso, "sequence", lasso.SEARCH_SPACE, lasso.tiny
    ),
    "mlp_dmn": ModelSpec(
        "mlp_dmn",
        mlp_dmn.MlpDmnConfig,
        mlp_dmn.MlpDmn,
        "sequence",
        mlp_dmn.SEARCH_SPACE,
        mlp_dmn.tiny,
    ),
    "wavenet": ModelSpec(
        "wavenet",
        wavenet.WaveNetConfig,
        wavenet.WaveNet,
        "sequence",
        wavenet.SEARCH_SPACE,
        wavenet.tiny,
    ),
    "tft": ModelSpec("tft", tft.TftConfig, tft.Tft, "sequence", tft.SEARCH_SPACE, tft.tiny),
    "quantnet": ModelSpec(
        "quantnet",
        quantnet.QuantNetConfig,
        quantnet.QuantNet,
        "panel",
        quantnet.SEARCH_SPACE,
        quantnet.tiny,
    ),
    "no_transfer": ModelSpec(
        "no_transfer",
        quantnet.QuantNetConfig,
        quantnet.QuantNet,
        "panel",
        quantnet.NO_TRANSFER_SEARCH_SPACE,
        lambda **overrides: quantnet.tiny(**{"transfer": False, **overrides}),
        defaults={"transfer": False},
    ),
    # Boutier (2023): one recurrent module, five cells and depths (`recurrent.VARIANTS`)
    **{
        name: ModelSpec(
            name,
            recurrent.RecurrentConfig,
            recurrent.Recurrent,
            "panel",
            recurrent.SEARCH_SPACE,
            recurrent.tiny_for(name),
            defaults=variant,
            feature_set="extended",
        )
        for name, variant in recurrent.VARIANTS.items()
    },
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or an error listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(REGISTRY)}") from None


def build(name: str, universe: Universe, **hyper: Any) -> tuple[Any, nn.Module]:
    """Config and freshly initialised module of model `name` for `universe`."""
    spec = get_spec(name)
    config = spec.config(universe, **hyper)
    return config, spec.build(config)
