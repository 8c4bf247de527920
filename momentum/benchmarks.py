"""Benchmark strategies: signals X [T, N] for the same portfolio functions as the models.

Each benchmark reads a `momentum.features.Features` and returns positions
decided at the close of each date, NaN where an asset cannot be held (not
listed, or not enough history yet). `BENCHMARKS` says which are vol-scaled
(``X * 0.15 / s``, as the models' positions) and which are plain weights
(buy-and-hold, risk parity), and `benchmark_returns` evaluates any of them.

References: Moskowitz, Ooi, Pedersen (2012) for TSMOM; Baz et al. (2015) for
the MACD response function; Jegadeesh, Titman (1993) for CSMOM; Koshiyama et
al. (2021, QuantNet) eq. 9 for risk parity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from momentum import portfolio
from momentum import timeseries as ts
from momentum.features import Features

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "benchmark_returns",
    "buy_and_hold",
    "csmom",
    "long_only",
    "macd",
    "macd_response",
    "risk_parity",
    "trailing_return",
    "tsmom",
]


def _holdable(features: Features) -> np.ndarray:
    """Assets with a vol estimate at t: the models' positions exist there too."""
    return np.isfinite(features.vol)


def trailing_return(features: Features, lookback: int) -> np.ndarray:
    """Compounded return over the last ``lookback`` sessions, shape (T, N).

    Built from the (winsorised) daily returns, so it equals
    ``p_t / p_{t-lookback} - 1`` of the feature prices; NaN until
    ``lookback`` returns exist.
    """
    if lookback < 1:
        raise ValueError(f"`lookback` must be positive, got {lookback}")
    log_growth = np.log1p(features.returns)
    out = np.full_like(log_growth, np.nan)
    csum = np.nancumsum(log_growth, axis=0)
    out[lookback:] = csum[lookback:] - csum[:-lookback]
    # a window that reaches before the asset's first return is not a full window
    counts = np.cumsum(np.isfinite(log_growth), axis=0)
    full = np.zeros_like(counts)
    full[lookback:] = counts[lookback:] - counts[:-lookback]
    out[full < lookback] = np.nan
    return np.expm1(out)


def long_only(features: Features) -> np.ndarray:
    """Long every asset, X = 1."""
    return np.where(_holdable(features), 1.0, np.nan)


def tsmom(features: Features, lookback: int = 252) -> np.ndarray:
    """Time-series momentum: X = sign of the trailing 12-month return."""
    signal = np.sign(trailing_return(features, lookback))
    return np.where(_holdable(features), signal, np.nan)


def macd_response(y: np.ndarray) -> np.ndarray:
    """Baz et al. (2015) response ``phi(y) = y exp(-y^2 / 4) / 0.89``; peaks near 1 at |y| = sqrt 2."""
    return y * np.exp(-(y**2) / 4.0) / 0.89


def macd(features: Features) -> np.ndarray:
    """Average of phi(Y) over the MACD features present (the three pairs by default)."""
    columns = [j for j, name in enumerate(features.names) if name.startswith("macd_")]
    if not columns:
        raise ValueError(f"`features` has no macd_* column; have {features.names}")
    signal = macd_response(features.values[:, :, columns]).mean(axis=-1)
    return np.where(_holdable(features), signal, np.nan)


def csmom(features: Features, lookback: int = 252, quantile: float = 0.1) -> np.ndarray:
    """Cross-sectional momentum: long the top, short the bottom ``quantile`` by trailing return.

    On each date, among the assets with a trailing return, the
    ``floor(quantile * N_t)`` best get +1, as many worst get -1, the rest 0
    (at least one each side when two or more assets rank). 0.1 is the decile
    portfolio; 0.33 reproduces QuantNet's CSMOM baseline.
    """
    if not 0 < quantile <= 0.5:
        raise ValueError(f"`quantile` must be in (0, 0.5], got {quantile}")
    past = trailing_return(features, lookback)
    past = np.where(_holdable(features), past, np.nan)
    ranked = np.isfinite(past)
    n = ranked.sum(axis=1)
    # ascending order with NaN last; ties keep column order (stable sort)
    order = np.argsort(np.where(ranked, past, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(past.shape[1])[None, :].repeat(len(past), 0), axis=1)
    k = np.where(n >= 2, np.maximum(np.floor(quantile * n + 1e-9), 1), 0)[:, None]
    signal = np.where(rank < k, -1.0, np.where(rank >= n[:, None] - k, 1.0, 0.0))
    return np.where(ranked, signal, np.nan)


def buy_and_hold(features: Features, start: int | None = None) -> np.ndarray:
    """Equal dollars in every asset trading at row ``start``, then left to drift.

    Returned as ``X = N_t * w_t`` with ``w_t`` the drifted weights, so that the
    unscaled captured return ``mean_i(X r_{t+1})`` is the portfolio's return.
    ``start`` defaults to the first row with any return; assets without a
    return on that row are never bought, an asset that stops trading drops
    out, and rows before ``start`` are NaN.
    """
    returns = features.returns
    if start is None:
        start = int(np.isfinite(returns).any(axis=1).argmax())
    if not 0 <= start < len(returns):
        raise ValueError(f"`start` must be a row of the features, got {start}")
    trading = np.isfinite(returns)
    held = trading[start]
    # value at the close of t of one dollar bought at the close of `start`
    growth = np.full_like(returns, np.nan)
    growth[start:] = np.cumprod(np.where(trading[start:], 1.0 + returns[start:], np.nan), axis=0)
    growth[start:] /= growth[start]
    growth[:, ~held] = np.nan
    weights = growth / np.nansum(growth, axis=1, keepdims=True)
    return weights * np.isfinite(weights).sum(axis=1, keepdims=True)


def risk_parity(features: Features, window: int = 252) -> np.ndarray:
    """Inverse-volatility weights ``w_i = s_i^-1 / sum_j s_j^-1`` (QuantNet eq. 9).

    ``s_i`` is the ``window``-day sample vol of daily returns. Returned as
    ``X = N_t * w_t`` (unscaled), like `buy_and_hold`.
    """
    vol = ts.rolling_std(features.returns, window)
    inverse = np.where(vol > 0, 1.0 / vol, np.nan)
    with np.errstate(invalid="ignore"):
        weights = inverse / np.nansum(inverse, axis=1, keepdims=True)
    return weights * np.isfinite(weights).sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's signal function and how its positions are sized."""

    signal: Callable[[Features], np.ndarray]
    vol_scaled: bool


BENCHMARKS: dict[str, Benchmark] = {
    "long_only": Benchmark(long_only, vol_scaled=True),
    "tsmom": Benchmark(tsmom, vol_scaled=True),
    "macd": Benchmark(macd, vol_scaled=True),
    "csmom": Benchmark(csmom, vol_scaled=True),
    "buy_and_hold": Benchmark(buy_and_hold, vol_scaled=False),
    "risk_parity": Benchmark(risk_parity, vol_scaled=False),
}


def benchmark_returns(features: Features, name: str, cost_bps: float = 0.0) -> np.ndarray:
    """Daily portfolio returns of a named benchmark, net of ``cost_bps``, shape (T,).

    Row t is the return over (t, t+1] of the positions decided at t.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    vol = features.vol if bench.vol_scaled else None
    return portfolio.strategy_returns(
        bench.signal(features), features.next_returns, vol, cost_bps=cost_bps
    )
