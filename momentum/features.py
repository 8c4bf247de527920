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
asset's first one. Serving must therefore compute on the full stored history.

Warm-up (sessions of history after an asset's first close before a value
exists, default config; see `warmup`): vol 60; norm_ret_k max(60, k);
macd_* 313 (63-day price std, then 252 values of q); target 60.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from momentum import timeseries as ts
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


@numba.njit(parallel=True, cache=True)
def _base_kernel(
    closes: np.ndarray,
    horizons: np.ndarray,
    macd_decays: np.ndarray,
    winsor_decay: float,
    winsor_sigmas: float,
    vol_decay: float,
    vol_min_periods: int,
    price_window: int,
    signal_window: int,
    values: np.ndarray,
    returns: np.ndarray,
    vol: np.ndarray,
    winsorised: np.ndarray,
) -> None:  # pragma: no cover
    """The base features of every asset, one asset per iteration (module docstring)."""
    t_len, n = closes.shape
    n_h = horizons.size
    keep_prices = winsorised.shape[0] == t_len
    for j in numba.prange(n):
        raw = np.ascontiguousarray(closes[:, j])
        # winsorise: clip to the EWM mean +- k EWM std of raw closes
        mean, std = np.empty(t_len), np.empty(t_len)
        ts.ewm_mean_std_1d(raw, winsor_decay, 0, mean, std)
        p = np.empty(t_len)
        for t in range(t_len):
            band = winsor_sigmas * std[t]
            if raw[t] != raw[t] or band != band:
                p[t] = raw[t]  # NaN stays NaN; the first close has no band yet
            else:
                p[t] = min(max(raw[t], mean[t] - band), mean[t] + band)
        # daily returns and their EWM vol
        r = np.empty(t_len)
        r[0] = np.nan
        for t in range(1, t_len):
            r[t] = p[t] / p[t - 1] - 1.0
        v = np.empty(t_len)
        ts.ewm_mean_std_1d(r, vol_decay, vol_min_periods, mean, v)
        for t in range(t_len):
            # zero vol (a frozen price) is no risk estimate; an EWM carries its
            # last value past the asset's end
            if raw[t] != raw[t] or not v[t] > 0.0:
                v[t] = np.nan
            returns[t, j] = r[t]
            vol[t, j] = v[t]
            if keep_prices:
                winsorised[t, j] = p[t]
        # vol-normalised returns over k sessions
        for h in range(n_h):
            k = horizons[h]
            scale = np.sqrt(k)
            for t in range(t_len):
                values[t, j, h] = (p[t] / p[t - k] - 1.0) / (v[t] * scale) if t >= k else np.nan
        # MACD: (fast - slow EWMA) / 63-day price std, then / its own 252-day std
        price_std, q, q_std = np.empty(t_len), np.empty(t_len), np.empty(t_len)
        ts.rolling_std_1d(p, price_window, price_std)
        fast, slow = mean, std  # reuse the buffers
        for pair in range(macd_decays.shape[0]):
            ts.ewm_mean_1d(p, macd_decays[pair, 0], fast)
            ts.ewm_mean_1d(p, macd_decays[pair, 1], slow)
            for t in range(t_len):
                q[t] = (fast[t] - slow[t]) / price_std[t] if price_std[t] > 0.0 else np.nan
            ts.rolling_std_1d(q, signal_window, q_std)
            for t in range(t_len):
                values[t, j, n_h + pair] = q[t] / q_std[t] if q_std[t] > 0.0 else np.nan


def _extended(
    prices: np.ndarray,
    returns: np.ndarray,
    vol: np.ndarray,
    market_ret: np.ndarray,
    config: FeatureConfig,
) -> list[np.ndarray]:
    """Boutier (2023) cross-sectional equity features, in `FeatureConfig.names` order.

    Rolling sums come from pandas (Kahan-compensated), so the moment formulas
    below lose nothing to cancellation at these magnitudes.
    """
    frame = pd.DataFrame(returns)
    market = pd.Series(market_ret)
    out: list[np.ndarray] = []
    for w in config.realised_vol_windows:
        out.append(ts.rolling_std(returns, w) * np.sqrt(TRADING_DAYS))
    betas = {}
    for w in config.beta_windows:
        # beta = cov(r, m) / var(m) over the window (sample moments; ddof cancels)
        sum_r, sum_m = frame.rolling(w).sum(), market.rolling(w).sum()
        sum_rm = frame.mul(market, axis=0).rolling(w).sum()
        cov = sum_rm - sum_r.mul(sum_m, axis=0) / w
        var = (market * market).rolling(w).sum() - sum_m * sum_m / w
        betas[w] = cov.div(var, axis=0).to_numpy()
    out.extend(betas.values())
    # CTI (Ehlers' correlation trend indicator): the slope of log price on time,
    # standardised, i.e. their correlation over the window; in [-1, 1].
    log_p = pd.DataFrame(np.log(prices))
    log_p = log_p - log_p.bfill().iloc[0]  # centre each asset on its first level
    clock = pd.Series(np.arange(len(prices), dtype=np.float64))
    for w in config.cti_windows:
        sum_y, sum_y2 = log_p.rolling(w).sum(), (log_p * log_p).rolling(w).sum()
        sum_yt = log_p.mul(clock, axis=0).rolling(w).sum()
        cov = sum_yt - sum_y.mul(clock.rolling(w).sum(), axis=0) / w
        var_t = w * (w * w - 1) / 12.0  # sum of squared deviations of 0..w-1
        var_y = sum_y2 - sum_y * sum_y / w
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(cov.to_numpy() / np.sqrt(var_y.to_numpy() * var_t))
    # Alpha returns: the part of the k-day return not explained by the index,
    # with the beta known at t, in vol-normalised units like norm_ret_k.
    beta = betas[config.alpha_beta_window]
    for w in config.alpha_windows:
        residual = (
            frame.rolling(w).sum().to_numpy() - beta * market.rolling(w).sum().to_numpy()[:, None]
        )
        out.append(residual / (vol * np.sqrt(w)))
    return out


def _market_returns(index: pd.Series, dates: pd.DatetimeIndex) -> np.ndarray:
    market = index.reindex(dates)
    if market.isna().any():
        missing = [f"{d:%Y-%m-%d}" for d in market.index[market.isna()][:3]]
        raise ValueError(f"`index` has no level on some price dates, first: {missing}")
    level = market.to_numpy(dtype=np.float64)
    out = np.full_like(level, np.nan)
    out[1:] = level[1:] / level[:-1] - 1.0
    return out


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
        market_ret = _market_returns(index, pd.DatetimeIndex(prices.index))

    closes = np.ascontiguousarray(prices.to_numpy(dtype=np.float64))
    t_len, n = closes.shape
    values = np.empty((t_len, n, len(config.names)))
    returns = np.empty((t_len, n))
    vol = np.empty((t_len, n))
    winsorised = np.empty((t_len, n) if config.extended else (0, 0))
    decays = [[ts.decay_from_halflife(ewm_halflife(m)) for m in pair] for pair in config.macd_pairs]
    _base_kernel(
        closes,
        np.asarray(config.return_horizons, dtype=np.int64),
        np.asarray(decays, dtype=np.float64).reshape(-1, 2),
        ts.decay_from_halflife(config.winsor_halflife),
        float(config.winsor_sigmas),
        ts.decay_from_span(config.vol_span),
        int(config.vol_min_periods),
        int(config.macd_price_std_window),
        int(config.macd_signal_std_window),
        values,
        returns,
        vol,
        winsorised,
    )
    if market_ret is not None:
        n_base = len(config.return_horizons) + len(config.macd_pairs)
        extra = _extended(winsorised, returns, vol, market_ret, config)
        for j, column in enumerate(extra):
            values[:, :, n_base + j] = column

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
