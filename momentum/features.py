"""Momentum features: the single source of truth for training and serving.

`compute_features(prices, config)` turns a price panel (see `momentum.data`) into
the inputs of every model, plus the daily returns, the ex-ante daily volatility
and the vol-scaled next-day return that the models are trained to capture.

Definitions (Lim, Zohren, Roberts 2019, "Enhancing Time Series Momentum
Strategies Using Deep Neural Networks", section 4.2, and the authors' reference
code), all computed on *winsorised* closes p:

* winsorise: clip the raw close to its EWM mean +- 5 EWM std (halflife 252),
  both estimated on raw closes up to and including t; the first close of an
  asset (no std yet) is kept as it is.
* ``r_t = p_t / p_{t-1} - 1``; ``vol_t`` = EWM std of r (span 60, 60 returns
  needed): the *daily* ex-ante volatility.
* ``norm_ret_k = (p_t / p_{t-k} - 1) / (vol_t * sqrt(k))`` for k in 1, 21, 63,
  126, 252.
* ``macd_S_L``: ``m = EWMA(p; hl(S)) - EWMA(p; hl(L))`` with
  ``hl(n) = ln(0.5) / ln(1 - 1/n)``; ``q = m / std_63(p)``; ``Y = q / std_252(q)``
  (Baz et al. 2015). The reference code back-fills the two rolling stds, which
  looks ahead; here they are NaN until their windows are full.
* target: ``r_{t+1} * 0.15 / (vol_t * sqrt(252))``, NaN on the last date; built
  only from `next_day_returns`, the one forward shift in this package.

EWMs are pandas' adjusted ones (``adjust=True``), as in the reference code, so
they have infinite memory: a feature at t depends on every close since the
asset's first one. Serving therefore either computes on the full stored history
or carries every recursion's state from session to session
(`momentum.feature_state.FeatureState`); both run the compiled steps of
`momentum.feature_kernel`, so they agree bit for bit.

Warm-up (sessions of history after an asset's first close before a value
exists, default config; see `warmup`): vol 60; norm_ret_k max(60, k);
macd_* 313 (63-day price std, then 252 values of q); target 60.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from momentum import feature_kernel
from momentum.metrics import TRADING_DAYS
from momentum.portfolio import VOL_TARGET

# Bump whenever a definition or default changes: manifests record it and the
# service refuses a model trained on other features.
FEATURES_VERSION = "1.0"

__all__ = [
    "FEATURES_VERSION",
    "FeatureConfig",
    "Features",
    "compute_features",
    "concat_rows",
    "market_returns",
    "ewm_halflife",
    "next_day_returns",
    "next_day_target",
    "warmup",
]


def ewm_halflife(timescale: float) -> float:
    """Halflife of the EWM whose centre of mass matches a timescale (Baz et al. 2015).

    >>> round(ewm_halflife(8), 4)
    5.1908
    """
    if timescale <= 1:
        raise ValueError(f"`timescale` must be greater than 1, got {timescale}")
    return float(np.log(0.5) / np.log(1.0 - 1.0 / timescale))


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of `compute_features`; the defaults are the papers'.

    ``extended=True`` appends the cross-sectional-equities features of
    Boutier (2023): realised vol, beta to the index, CTI and alpha returns;
    it needs an index series passed to `compute_features`.
    """

    return_horizons: tuple[int, ...] = (1, 21, 63, 126, 252)
    macd_pairs: tuple[tuple[int, int], ...] = ((8, 24), (16, 48), (32, 96))
    vol_span: int = 60
    vol_min_periods: int = 60
    winsor_halflife: float = 252.0
    winsor_sigmas: float = 5.0
    macd_price_std_window: int = 63
    macd_signal_std_window: int = 252
    vol_target: float = VOL_TARGET
    extended: bool = False
    realised_vol_windows: tuple[int, ...] = (5, 21)
    beta_windows: tuple[int, ...] = (126, 252)
    cti_windows: tuple[int, ...] = (21, 63, 126, 252)
    alpha_windows: tuple[int, ...] = (21, 63, 126)
    alpha_beta_window: int = 252

    def __post_init__(self) -> None:
        for name in (
            "return_horizons",
            "realised_vol_windows",
            "beta_windows",
            "cti_windows",
            "alpha_windows",
        ):
            values = getattr(self, name)
            if not values or any(int(v) != v or v < 1 for v in values):
                raise ValueError(f"`{name}` must be positive integers, got {values}")
        for short, long in self.macd_pairs:
            if not 1 < short < long:
                raise ValueError(f"`macd_pairs` need 1 < short < long, got ({short}, {long})")
        for name in ("vol_span", "vol_min_periods", "macd_price_std_window"):
            if getattr(self, name) < 2:
                raise ValueError(f"`{name}` must be at least 2, got {getattr(self, name)}")
        if self.macd_signal_std_window < 2:
            raise ValueError(
                f"`macd_signal_std_window` must be at least 2, got {self.macd_signal_std_window}"
            )
        if self.winsor_halflife <= 0 or self.winsor_sigmas <= 0 or self.vol_target <= 0:
            raise ValueError(
                "`winsor_halflife`, `winsor_sigmas` and `vol_target` must be positive, got "
                f"{self.winsor_halflife}, {self.winsor_sigmas}, {self.vol_target}"
            )
        if self.extended and self.alpha_beta_window not in self.beta_windows:
            raise ValueError(
                f"`alpha_beta_window` ({self.alpha_beta_window}) must be one of "
                f"`beta_windows` {self.beta_windows}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Every field, tuples as lists (JSON-ready); `from_dict` inverts it."""

        def lists(value: Any) -> Any:
            return [lists(v) for v in value] if isinstance(value, tuple) else value

        return {k: lists(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> FeatureConfig:
        """The config recorded by `as_dict` (JSON lists back to tuples)."""

        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        return cls(**{k: tuples(v) for k, v in fields.items()})

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in the order of the last axis of `Features.values`."""
        names = [f"norm_ret_{k}d" for k in self.return_horizons]
        names += [f"macd_{s}_{long}" for s, long in self.macd_pairs]
        if self.extended:
            names += [f"rvol_{w}d" for w in self.realised_vol_windows]
            names += [f"beta_{w}d" for w in self.beta_windows]
            names += [f"cti_{w}d" for w in self.cti_windows]
            names += [f"alpha_{w}d" for w in self.alpha_windows]
        return tuple(names)


def warmup(config: FeatureConfig | None = None) -> dict[str, int]:
    """Sessions after an asset's first close before each output is defined.

    A value exists at the asset's session index ``i`` (0 = first close) when
    ``i >= warmup(config)[name]``. Includes ``"vol"`` and ``"target"``.
    """
    config = config or FeatureConfig()
    vol = config.vol_min_periods  # needs that many returns; returns start at index 1
    out = {"vol": vol, "target": vol}
    for k in config.return_horizons:
        out[f"norm_ret_{k}d"] = max(vol, k)
    macd = config.macd_price_std_window - 1 + config.macd_signal_std_window - 1
    for s, long in config.macd_pairs:
        out[f"macd_{s}_{long}"] = macd
    if config.extended:
        for w in config.realised_vol_windows:
            out[f"rvol_{w}d"] = w
        for w in config.beta_windows:
            out[f"beta_{w}d"] = w
        for w in config.cti_windows:
            out[f"cti_{w}d"] = w - 1
        for w in config.alpha_windows:
            out[f"alpha_{w}d"] = max(vol, config.alpha_beta_window, w)
    return out


@dataclass(frozen=True)
class Features:
    """Model inputs and labels for one price panel.

    Attributes
    ----------
    values : ndarray, shape (T, N, d)
        Feature values, float64; NaN during warm-up and where an asset is inactive.
    names : tuple of str, length d
    dates : DatetimeIndex, length T
    tickers : tuple of str, length N
    returns : ndarray, shape (T, N)
        Daily returns r_t of the winsorised closes.
    vol : ndarray, shape (T, N)
        Daily EWM std of r (span 60): the ex-ante volatility used for scaling.
    target : ndarray, shape (T, N)
        r_{t+1} * vol_target / (vol_t * sqrt(252)); NaN on the last date.
    config : FeatureConfig
    """

    values: np.ndarray
    names: tuple[str, ...]
    dates: pd.DatetimeIndex
    tickers: tuple[str, ...]
    returns: np.ndarray
    vol: np.ndarray
    target: np.ndarray
    config: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        t, n, d = self.values.shape
        assert (len(self.dates), len(self.tickers), len(self.names)) == (t, n, d)
        assert self.returns.shape == self.vol.shape == self.target.shape == (t, n)

    @property
    def annualised_vol(self) -> np.ndarray:
        """``vol * sqrt(252)``, shape (T, N)."""
        return self.vol * np.sqrt(TRADING_DAYS)

    def frame(self, name: str) -> pd.DataFrame:
        """One feature (or ``returns``, ``vol``, ``target``) as a dates x tickers frame."""
        if name in ("returns", "vol", "target"):
            data = getattr(self, name)
        elif name in self.names:
            data = self.values[:, :, self.names.index(name)]
        else:
            raise KeyError(f"unknown feature {name!r}; have {self.names}")
        return pd.DataFrame(data, index=self.dates, columns=pd.Index(self.tickers, name="ticker"))

    @property
    def next_returns(self) -> np.ndarray:
        """``r_{t+1}`` on row t, shape (T, N); NaN on the last date."""
        return next_day_returns(self.returns)

    def slice_dates(self, start: int, stop: int) -> Features:
        """Rows ``start:stop`` (positional), sharing memory with this object."""
        return Features(
            values=self.values[start:stop],
            names=self.names,
            dates=self.dates[start:stop],
            tickers=self.tickers,
            returns=self.returns[start:stop],
            vol=self.vol[start:stop],
            target=self.target[start:stop],
            config=self.config,
        )

    def slice_assets(self, start: int, stop: int) -> Features:
        """Assets ``start:stop`` (positional), sharing memory with this object."""
        return Features(
            values=self.values[:, start:stop],
            names=self.names,
            dates=self.dates,
            tickers=self.tickers[start:stop],
            returns=self.returns[:, start:stop],
            vol=self.vol[:, start:stop],
            target=self.target[:, start:stop],
            config=self.config,
        )


def concat_rows(first: Features, second: Features) -> Features:
    """The rows of `first` followed by those of `second` (same assets, features, config).

    ``target`` is recomputed over the joined rows, so the last row of `first` gets the
    target its next day (the first row of `second`) implies.
    """
    if first.tickers != second.tickers or first.names != second.names:
        raise ValueError("`first` and `second` must have the same tickers and feature names")
    if len(first.dates) and len(second.dates) and second.dates[0] <= first.dates[-1]:
        raise ValueError("`second` must start after the last date of `first`")
    returns = np.concatenate([first.returns, second.returns])
    vol = np.concatenate([first.vol, second.vol])
    return Features(
        values=np.concatenate([first.values, second.values]),
        names=second.names,
        dates=pd.DatetimeIndex(first.dates.append(second.dates), name="date"),
        tickers=second.tickers,
        returns=returns,
        vol=vol,
        target=next_day_target(returns, vol, second.config.vol_target),
        config=second.config,
    )


def next_day_returns(returns: np.ndarray) -> np.ndarray:
    """``r_{t+1}`` aligned with date t: the only forward shift in this package.

    Parameters
    ----------
    returns : ndarray, shape (T, N)

    Returns
    -------
    ndarray, shape (T, N)
        Row t holds ``returns[t + 1]``; the last row is NaN.
    """
    nxt = np.full_like(returns, np.nan)
    nxt[:-1] = returns[1:]
    return nxt


def next_day_target(
    returns: np.ndarray, vol: np.ndarray, vol_target: float = VOL_TARGET
) -> np.ndarray:
    """The label: tomorrow's return scaled by today's ex-ante vol (DMN eq. 1).

    Parameters
    ----------
    returns, vol : ndarray, shape (T, N)
        Daily returns and daily ex-ante vol.

    Returns
    -------
    ndarray, shape (T, N)
        ``r_{t+1} * vol_target / (vol_t * sqrt(252))``; the last row is NaN.
    """
    return next_day_returns(returns) * vol_target / (vol * np.sqrt(TRADING_DAYS))


def market_returns(
    index: pd.Series, dates: pd.DatetimeIndex, previous: float = np.nan
) -> tuple[np.ndarray, float]:
    """Daily returns of the index on `dates`, and its level on the last of them.

    The first return is against `previous`, the level on the session before `dates`
    (NaN: none, as at the start of a panel).
    """
    market = pd.Series(index).reindex(dates)
    if market.isna().any():
        missing = [f"{d:%Y-%m-%d}" for d in market.index[market.isna()][:3]]
        raise ValueError(f"`index` has no level on some price dates, first: {missing}")
    level = np.concatenate([[previous], market.to_numpy(dtype=np.float64)])
    return level[1:] / level[:-1] - 1.0, float(level[-1])


def compute_features(
    prices: pd.DataFrame,
    config: FeatureConfig | None = None,
    *,
    index: pd.Series | None = None,
) -> Features:
    """Compute features, returns, vol and target for every asset at once.

    Parameters
    ----------
    prices : DataFrame, shape (T, N)
        The price panel of `momentum.data` (dates x tickers, positive closes,
        NaN only before an asset starts or after it ends).
    config : FeatureConfig, optional
        Defaults to the papers' 8 features.
    index : Series, optional
        Index levels on the same dates; required when ``config.extended``.

    Returns
    -------
    Features
        ``values`` has shape (T, N, len(config.names)).

    Notes
    -----
    No look-ahead: every value at t uses closes up to t only, except
    ``target`` (built by `next_day_target`).
    """
    config = config or FeatureConfig()
    _check_panel(prices)
    market_ret = None
    if config.extended:
        if index is None:
            raise ValueError("`index` is required when `config.extended` is True")
        market_ret = market_returns(index, pd.DatetimeIndex(prices.index))[0]

    closes = prices.to_numpy(dtype=np.float64)
    state = feature_kernel.empty_state(config, closes.shape[1])
    values, returns, vol = feature_kernel.advance(config, state, 0, closes, market_ret)
    return Features(
        values=values,
        names=config.names,
        dates=pd.DatetimeIndex(prices.index, name="date"),
        tickers=tuple(str(c) for c in prices.columns),
        returns=returns,
        vol=vol,
        target=next_day_target(returns, vol, config.vol_target),
        config=config,
    )


def _check_panel(prices: pd.DataFrame) -> None:
    if not isinstance(prices, pd.DataFrame):
        raise TypeError(f"`prices` must be a DataFrame, got {type(prices).__name__}")
    if not isinstance(prices.index, pd.DatetimeIndex):
        raise ValueError("`prices` must have a DatetimeIndex (use momentum.data.load_prices)")
    if not prices.index.is_monotonic_increasing or not prices.index.is_unique:
        raise ValueError("`prices` dates must be strictly increasing")
    if prices.shape[0] < 2 or prices.shape[1] < 1:
        raise ValueError(f"`prices` needs at least 2 dates and 1 ticker, got shape {prices.shape}")
