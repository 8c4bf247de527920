"""What defines a backtest run: the search budgets, `BacktestConfig`, and its data.

`BacktestConfig` is everything a run is (stored as ``config.json``; a rerun in the same
directory must match it); `PROTOCOLS` the papers' budgets and the quick ones;
`run_features` and `universe_for` the data and markets a config trains on;
`run_sizer` and `base_train_config` how its models are sized and trained. The runner is
`training.backtest`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from momentum.construction import Construction, check_construction
from momentum.data import EMBEDDED, load_index, load_prices, sectors
from momentum.features import FEATURES_VERSION, FeatureConfig, Features, compute_features
from momentum.sizing import Sizer, sizer_for_loss
from training.losses import LossName
from training.models import Universe, get_spec
from training.train import TrainConfig

__all__ = [
    "FEATURE_SETS",
    "PROTOCOLS",
    "BacktestConfig",
    "Budget",
    "base_train_config",
    "run_features",
    "run_sizer",
    "universe_for",
]

# `--features`: the papers' 8 features, or Boutier (2023)'s extended equities set
FEATURE_SETS: dict[str, FeatureConfig] = {
    "default": FeatureConfig(),
    "extended": FeatureConfig(extended=True),
}


@dataclass(frozen=True)
class Budget:
    """Search budget of one protocol for one family of models."""

    trials: int
    max_epochs: int
    patience: int
    seeds: int


# Keyed by model name or, failing that, by layout. "paper" is each paper's budget:
# STMOM Table 7 (100 trials, up to 500 epochs, patience 25); the DMN paper's
# section IV-B (50 trials, up to 100 epochs, patience 25); the Momentum
# Transformer walkthrough's 300 epochs for the TFT; QuantNet Appendix 2's 200
# trials (its 2000 training steps have no epoch count here, so 500 epochs,
# patience 25). No paper gives its number of seeds (STMOM 5.2: "multiple random
# seeded runs"), so 5; nor the TFT its number of trials, so 100. "quick" fits a
# laptop: on the embedded data with 2 cores each backtest takes 10-30 minutes
# (docs/results.md lists the measured wall times).
_DMN_PAPER = Budget(trials=50, max_epochs=100, patience=25, seeds=5)
_RNN_PAPER_MODELS = ("rnn", "deep_rnn", "gru", "lstm_xs", "deep_lstm")

PROTOCOLS: dict[str, dict[str, Budget]] = {
    "paper": {
        "spatiotemporal": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        "dmn": _DMN_PAPER,
        "sequence": Budget(trials=100, max_epochs=300, patience=25, seeds=5),
        "panel": Budget(trials=200, max_epochs=500, patience=25, seeds=5),
        # STMOM's LSTM: Table 7, though it trains on every step in the panel layout
        "lstm": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        # the DMN paper's other architectures: its section IV-B, as the LSTM
        **dict.fromkeys(("lasso", "mlp_dmn", "wavenet"), _DMN_PAPER),
        # Boutier (2023) section 4: 250 epochs, patience 25; trials unstated (the DMN
        # paper's 50, the method it adapts)
        **dict.fromkeys(_RNN_PAPER_MODELS, Budget(trials=50, max_epochs=250, patience=25, seeds=5)),
    },
    "quick": {
        "spatiotemporal": Budget(trials=20, max_epochs=100, patience=10, seeds=3),
        "lstm": Budget(trials=20, max_epochs=100, patience=10, seeds=3),
        "sequence": Budget(trials=6, max_epochs=30, patience=6, seeds=2),
        "tft": Budget(trials=3, max_epochs=15, patience=4, seeds=1),
        "panel": Budget(trials=10, max_epochs=30, patience=8, seeds=2),
        "lasso": Budget(trials=20, max_epochs=30, patience=6, seeds=2),
        "mlp_dmn": Budget(trials=15, max_epochs=30, patience=6, seeds=2),
        "wavenet": Budget(trials=4, max_epochs=30, patience=6, seeds=2),
        # an epoch is a few steps (a batch counts windows of all assets) and validating
        # rebuilds every window, so a trial is minutes; the deep ones cost 2-3x more
        **dict.fromkeys(
            ("rnn", "gru", "lstm_xs"), Budget(trials=4, max_epochs=20, patience=5, seeds=1)
        ),
        **dict.fromkeys(
            ("deep_rnn", "deep_lstm"), Budget(trials=2, max_epochs=20, patience=5, seeds=1)
        ),
    },
}


@dataclass(frozen=True)
class BacktestConfig:
    """Everything that defines a backtest run; stored as ``config.json``.

    ``None`` budget fields take the protocol's value for the model's family.
    ``turnover_cost_bps`` trains on returns net of that cost (turnover
    regularisation); ``fixed`` pins hyperparameters instead of searching them.
    ``select`` and ``select_cost_bps`` choose what early stopping and the best
    trial are scored on (`training.train`): the validation Sharpe net of
    ``select_cost_bps`` (None: ``turnover_cost_bps``), or the training loss.
    ``features`` is the feature set (`FEATURE_SETS`): the papers' 8 features, or the
    extended set of the RNN equities paper (Boutier 2023), which also needs the market
    index levels: the embedded data's own index, or ``index`` (a file) for a price file.
    ``ensemble`` averages the positions of each window's top trials (1: the best
    trial alone); ``seed_ensemble`` averages the seeds' positions into one strategy.
    ``objective`` is the training loss (Lim et al. 2019, section III-B); ``mse`` and
    ``binary`` models trade sgn(output) (`momentum.sizing`). ``construction`` turns the
    positions into portfolio weights (`momentum.construction`), with the sectors as
    markets. ``features`` None takes the model's own default set (``ModelSpec.feature_set``).
    ``valid_fraction`` is the validation share of each training block;
    ``valid_folds`` scores every trial on that many blocked folds instead
    (`training.splits`), with a gap of the longest window the model may read.
    """

    model: str
    data: str = "sp500"
    label: str | None = None
    protocol: Literal["quick", "paper"] = "quick"
    first_test_year: int = 1995
    step_years: int = 5
    start_year: int | None = None
    end_year: int | None = None
    seeds: int | None = None
    trials: int | None = None
    epochs: int | None = None
    patience: int | None = None
    workers: int = 1
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    turnover_cost_bps: float = 0.0
    select: Literal["sharpe", "loss"] = "sharpe"
    select_cost_bps: float | None = None
    valid_fraction: float = 0.1
    valid_folds: int | None = None
    features: Literal["default", "extended"] | None = None
    objective: LossName = "sharpe"
    construction: Construction = "vol_scaled"
    index: str | None = None
    ensemble: int = 5
    seed_ensemble: bool = False
    seq_len: int = 63
    fixed: dict[str, Any] = field(default_factory=dict)
    cost_bps: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0)
    sectors: str | None = None

    def __post_init__(self) -> None:
        get_spec(self.model)  # unknown model names fail here
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"`protocol` must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.executor not in ("local", "ray"):
            raise ValueError(f"`executor` must be 'local' or 'ray', got {self.executor!r}")
        for name in ("seeds", "trials", "epochs", "workers", "ensemble"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}")
        if self.turnover_cost_bps < 0 or any(c < 0 for c in self.cost_bps):
            raise ValueError("costs must be non-negative")
        if self.select not in ("sharpe", "loss"):
            raise ValueError(f"`select` must be 'sharpe' or 'loss', got {self.select!r}")
        if self.select_cost_bps is not None and self.select_cost_bps < 0:
            raise ValueError(f"`select_cost_bps` must be non-negative, got {self.select_cost_bps}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"`valid_fraction` must be in (0, 1), got {self.valid_fraction}")
        if self.valid_folds is not None and self.valid_folds < 2:
            raise ValueError(f"`valid_folds` must be at least 2, got {self.valid_folds}")
        if self.features is None:  # frozen: resolve the model's default set once, here
            object.__setattr__(self, "features", get_spec(self.model).feature_set)
        sizer_for_loss(self.objective)  # unknown objectives fail here, naming the choices
        check_construction(self.construction)
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"`features` must be one of {sorted(FEATURE_SETS)}, got {self.features!r}"
            )
        if self.features == "extended" and self.index is None and self.data not in EMBEDDED:
            raise ValueError(
                "the extended features need the market index levels: pass --index FILE "
                f"(a date and a level column) for --data {self.data}"
            )

    @classmethod
    def from_resolved(cls, resolved: dict[str, Any]) -> BacktestConfig:
        """The config back from its stored form (``config.json``, see `resolved`)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in resolved.items() if k in fields}
        data["cost_bps"] = tuple(data.get("cost_bps", ()))
        return cls(**data)

    @property
    def budget(self) -> Budget:
        table = PROTOCOLS[self.protocol]
        base = table.get(self.model) or table[get_spec(self.model).layout]
        return Budget(
            trials=self.trials or base.trials,
            max_epochs=self.epochs or base.max_epochs,
            patience=base.patience if self.patience is None else self.patience,
            seeds=self.seeds or base.seeds,
        )

    @property
    def name(self) -> str:
        return self.label or self.model

    @property
    def longest_window(self) -> int:
        """The most sessions a model of this run may read (the gap between blocked folds):
        the largest lookback of a spatio-temporal model, else the largest sequence length
        (``--seq-len``, or QuantNet's searched truncated-BPTT length ``k``), as `fixed`,
        the search space or the defaults allow."""
        spec = get_spec(self.model)
        keys: tuple[str, ...]
        lengths: list[int]
        if spec.layout == "spatiotemporal":
            keys, lengths = ("lookback",), []
            default = {f.name: f.default for f in dataclasses.fields(spec.config_cls)}
            lengths.append(int(spec.defaults.get("lookback", default["lookback"])))
        else:
            keys, lengths = ("k", "seq_len"), [self.seq_len]
        for key in keys:
            if key in self.fixed:
                return int(self.fixed[key])
            lengths += [int(v) for v in spec.search_space.get(key, ())]
        return max(lengths)

    def resolved(self) -> dict[str, Any]:
        """The stored form: every default filled in, the budget spelled out."""
        out = dataclasses.asdict(self)
        out["cost_bps"] = list(self.cost_bps)
        out["label"] = self.name
        out["budget"] = dataclasses.asdict(self.budget)
        out["features_version"] = FEATURES_VERSION
        return out


def universe_for(config: BacktestConfig, features: Features) -> Universe:
    """Markets for QuantNet: GICS sectors for the embedded data, a sectors file, or one market."""
    if config.sectors is not None:
        market_of: dict[str, str] | None = sectors(config.sectors)
    elif config.data == "sp500":
        market_of = sectors("sp500")
    else:
        market_of = None
    return Universe.from_market_map(features.tickers, len(features.names), market_of)


def run_features(
    config: BacktestConfig, *, end: Any = None
) -> tuple[pd.DataFrame, Features, pd.Series | None]:
    """The prices of `config` up to `end`, their features (`config.features`) and the
    index levels the extended features were computed with (None for the default set)."""
    prices = load_prices(config.data)
    if end is not None:
        prices = prices.loc[: pd.Timestamp(end)]
    feature_config = FEATURE_SETS[config.features or "default"]  # None is resolved at init
    index = None
    if feature_config.extended:
        index = load_index(config.index if config.index is not None else config.data)
        index = index.loc[: prices.index[-1]]
    return prices, compute_features(prices, feature_config, index=index), index


def run_sizer(config: BacktestConfig) -> Sizer:
    """How the run's model outputs become positions: sgn() for the mse and binary
    objectives (`momentum.sizing`); a ``loss`` pinned with ``fixed`` wins."""
    return sizer_for_loss(str(config.fixed.get("loss", config.objective)))


def base_train_config(config: BacktestConfig, seed: int) -> TrainConfig:
    """The training config every trial of `config` starts from (sampled keys override it):
    the protocol's budget, the turnover cost, the selection, the sequence length, `seed`."""
    budget = config.budget
    return TrainConfig(
        max_epochs=budget.max_epochs,
        patience=budget.patience,
        cost_bps=config.turnover_cost_bps,
        loss=config.objective,
        select=config.select,
        select_cost_bps=config.select_cost_bps,
        seq_len=config.seq_len,
        seed=seed,
    )
