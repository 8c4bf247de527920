"""The feature recursions of every asset, advanced from a start state to an end state.

One compiled kernel computes every feature of `momentum.features` (module
docstring there has the formulas). It takes the running state of every
recursion, advances it over a block of sessions and writes that block's
features, returns and vol. `compute_features` runs it once over a whole panel
from an empty state; `momentum.feature_state.FeatureState` runs it one session
(or a few) at a time from a stored state. Both paths execute the same steps
(`momentum.timeseries`) in the same order, so a state advanced day by day gives
the same numbers as a full-history pass, bit for bit.

The state is a dict of float64 arrays, asset first:

============  =====================  ==============================================
``ewm``       (N, 2, 5)              winsoriser and return-vol EWM mean/std states
``macd``      (N, P, 2, 2)           fast and slow price EWM states per MACD pair
``roll``      (N, 1 + P, 4)          63-day price std, then each pair's 252-day std
``prev``      (N,)                   the previous winsorised close
``p_ring``    (N, 256)               recent winsorised closes (k-day returns, std)
``q_ring``    (N, P, 256)            recent MACD ratios q per pair
``x_roll``    (N, R, 4)              realised-vol stds (extended set)
``pair``      (N, B + C + A, 8)      beta, CTI and alpha window co-moments (extended)
``*_ring``    (N, 256)               returns r, index returns m, log p, step clock
============  =====================  ==============================================

Rings (a power of two long, at least one more than their longest window) are
indexed by the session's step number modulo their length, and rolling sums are
re-anchored at steps fixed by that number, so the state also needs the number
of sessions consumed (the caller's ``t0``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from momentum import timeseries as ts
from momentum.metrics import TRADING_DAYS

if TYPE_CHECKING:
    from momentum.features import FeatureConfig

__all__ = ["STATE_ARRAYS", "advance", "empty_state"]

STATE_ARRAYS = (
    "ewm",
    "macd",
    "roll",
    "prev",
    "p_ring",
    "q_ring",
    "x_roll",
    "pair",
    "r_ring",
    "m_ring",
    "y_ring",
    "c_ring",
)


def _extended_ring(config: FeatureConfig) -> int:
    windows = (
        *config.realised_vol_windows,
        *config.beta_windows,
        *config.cti_windows,
        *config.alpha_windows,
    )
    return ts.ring_size(max(windows))


def empty_state(config: FeatureConfig, n_assets: int) -> dict[str, np.ndarray]:
    """The state before any session: every recursion unstarted, every ring empty (NaN)."""
    n, pairs = n_assets, len(config.macd_pairs)
    p_ring = ts.ring_size(max(max(config.return_horizons), config.macd_price_std_window))
    rolls = [config.macd_price_std_window] + [config.macd_signal_std_window] * pairs
    state = {
        "ewm": np.tile(ts.ewm_mean_std_state(), (n, 2, 1)),
        "macd": np.tile(ts.ewm_mean_state(), (n, pairs, 2, 1)),
        "roll": np.tile([ts.rolling_state(w) for w in rolls], (n, 1, 1)),
        "prev": np.full(n, np.nan),
        "p_ring": np.full((n, p_ring), np.nan),
        "q_ring": np.full((n, pairs, ts.ring_size(config.macd_signal_std_window)), np.nan),
    }
    if config.extended:
        pair_windows = (*config.beta_windows, *config.cti_windows, *config.alpha_windows)
        ring = _extended_ring(config)
        state["x_roll"] = np.tile(
            [ts.rolling_state(w) for w in config.realised_vol_windows], (n, 1, 1)
        )
        state["pair"] = np.tile([ts.comoment_state(w) for w in pair_windows], (n, 1, 1))
        for name in ("r_ring", "m_ring", "y_ring", "c_ring"):
            state[name] = np.full((n, ring), np.nan)
    else:
        state["x_roll"] = np.zeros((n, 0, ts.ROLLING_STATE))
        state["pair"] = np.zeros((n, 0, ts.COMOMENT_STATE))
        for name in ("r_ring", "m_ring", "y_ring", "c_ring"):
            state[name] = np.zeros((n, 0))
    return state


def advance(
    config: FeatureConfig,
    state: dict[str, np.ndarray],
    t0: int,
    closes: np.ndarray,
    market: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance `state` (in place) over a block of sessions and return their outputs.

    Parameters
    ----------
    config : FeatureConfig
    state : dict of ndarray
        From `empty_state` (or an earlier `advance`) for the same config and assets.
    t0 : int
        Sessions the state has consumed so far (0 for an empty state).
    closes : ndarray, shape (B, N)
        Raw closes of the block's sessions; NaN where an asset has none.
    market : ndarray, shape (B,), optional
        The index's daily returns on those sessions; required when ``config.extended``.

    Returns
    -------
    values : ndarray, shape (B, N, d)
    returns, vol : ndarray, shape (B, N)
    """
    closes = np.ascontiguousarray(closes, dtype=np.float64)
    b_len, n = closes.shape
    if state["prev"].shape != (n,):
        raise ValueError(f"the state has {state['prev'].shape[0]} assets, `closes` has {n}")
    if config.extended:
        if market is None:
            raise ValueError("`market` returns are required when `config.extended` is True")
        market = np.ascontiguousarray(market, dtype=np.float64).reshape(b_len)
    else:
        market = np.zeros(b_len)
    values = np.empty((b_len, n, len(config.names)))
    returns = np.empty((b_len, n))
    vol = np.empty((b_len, n))
    decays = [[ts.decay_from_halflife(_halflife(m)) for m in pair] for pair in config.macd_pairs]
    extended = config.extended
    _advance_kernel(
        closes,
        market,
        int(t0),
        np.asarray(config.return_horizons, dtype=np.int64),
        np.asarray(decays, dtype=np.float64).reshape(-1, 2),
        ts.decay_from_halflife(config.winsor_halflife),
        float(config.winsor_sigmas),
        ts.decay_from_span(config.vol_span),
        int(config.vol_min_periods),
        int(config.macd_price_std_window),
        int(config.macd_signal_std_window),
        np.asarray(config.realised_vol_windows if extended else (), dtype=np.int64),
        np.asarray(config.beta_windows if extended else (), dtype=np.int64),
        np.asarray(config.cti_windows if extended else (), dtype=np.int64),
        np.asarray(config.alpha_windows if extended else (), dtype=np.int64),
        config.beta_windows.index(config.alpha_beta_window) if extended else 0,
        state["ewm"],
        state["macd"],
        state["roll"],
        state["prev"],
        state["p_ring"],
        state["q_ring"],
        state["x_roll"],
        state["pair"],
        state["r_ring"],
        state["m_ring"],
        state["y_ring"],
        state["c_ring"],
        values,
        returns,
        vol,
    )
    return values, returns, vol


def _halflife(timescale: float) -> float:
    # momentum.features.ewm_halflife, without importing the module that imports this one
    return float(np.log(0.5) / np.log(1.0 - 1.0 / timescale))


@numba.njit(parallel=True, cache=True)
def _advance_kernel(
    closes: np.ndarray,
    market: np.ndarray,
    t0: int,
    horizons: np.ndarray,
    macd_decays: np.ndarray,
    winsor_decay: float,
    winsor_sigmas: float,
    vol_decay: float,
    vol_min_periods: int,
    price_window: int,
    signal_window: int,
    rvol_windows: np.ndarray,
    beta_windows: np.ndarray,
    cti_windows: np.ndarray,
    alpha_windows: np.ndarray,
    alpha_beta: int,
    ewm: np.ndarray,
    macd: np.ndarray,
    roll: np.ndarray,
    prev: np.ndarray,
    p_ring: np.ndarray,
    q_ring: np.ndarray,
    x_roll: np.ndarray,
    pair: np.ndarray,
    r_ring: np.ndarray,
    m_ring: np.ndarray,
    y_ring: np.ndarray,
    c_ring: np.ndarray,
    values: np.ndarray,
    returns: np.ndarray,
    vol: np.ndarray,
) -> None:  # pragma: no cover
    """Every asset in parallel, its sessions in order (see the module docstring)."""
    b_len, n = closes.shape
    n_h, n_p = horizons.size, macd_decays.shape[0]
    n_rv, n_b, n_c = rvol_windows.size, beta_windows.size, cti_windows.size
    # ring lengths are powers of two: a step's slot is `t & (length - 1)`
    lp, lq, le = p_ring.shape[1], q_ring.shape[2], r_ring.shape[1]
    mp, mq, me = lp - 1, lq - 1, le - 1
    annual = np.sqrt(TRADING_DAYS)
    for j in numba.prange(n):
        # this asset's state, as views taken once
        winsor, vol_ewm, prices, price_roll = ewm[j, 0], ewm[j, 1], p_ring[j], roll[j, 0]
        for b in range(b_len):
            t = t0 + b
            raw = closes[b, j]
            # winsorise: clip to the EWM mean +- k EWM std of raw closes
            mean, std = ts.ewm_mean_std_step(winsor, raw, winsor_decay, 0)
            band = winsor_sigmas * std
            # NaN stays NaN; the first close has no band yet
            p = raw if raw != raw or band != band else min(max(raw, mean - band), mean + band)
            # daily return and its EWM vol
            r = p / prev[j] - 1.0
            prev[j] = p
            v = ts.ewm_mean_std_step(vol_ewm, r, vol_decay, vol_min_periods)[1]
            # zero vol (a frozen price) is no risk estimate; an EWM carries its
            # last value past the asset's end
            if raw != raw or not v > 0.0:
                v = np.nan
            returns[b, j] = r
            vol[b, j] = v
            # vol-normalised returns over k sessions
            prices[t & mp] = p
            for h in range(n_h):
                k = horizons[h]
                if t >= k:
                    values[b, j, h] = (p / prices[(t - k) & mp] - 1.0) / (v * np.sqrt(k))
                else:
                    values[b, j, h] = np.nan
            # MACD: (fast - slow EWMA) / 63-day price std, then / its own 252-day std
            price_std = ts.rolling_std_step(price_roll, prices, t, price_window)
            for k in range(n_p):
                fast = ts.ewm_mean_step(macd[j, k, 0], p, macd_decays[k, 0])
                slow = ts.ewm_mean_step(macd[j, k, 1], p, macd_decays[k, 1])
                q = (fast - slow) / price_std if price_std > 0.0 else np.nan
                q_ring[j, k, t & mq] = q
                q_std = ts.rolling_std_step(roll[j, 1 + k], q_ring[j, k], t, signal_window)
                values[b, j, n_h + k] = q / q_std if q_std > 0.0 else np.nan
            if le == 0:
                continue
            # Boutier (2023) cross-sectional equity features
            col = n_h + n_p
            slot = t & me
            r_ring[j, slot] = r
            m_ring[j, slot] = market[b]
            y_ring[j, slot] = np.log(p)
            c_ring[j, slot] = t
            for k in range(n_rv):
                std_r = ts.rolling_std_step(x_roll[j, k], r_ring[j], t, rvol_windows[k])
                values[b, j, col + k] = std_r * annual
            col += n_rv
            # beta = cov(r, m) / var(m) over the window
            for k in range(n_b):
                w = beta_windows[k]
                beta = np.nan
                if ts.comoment_step(pair[j, k], r_ring[j], m_ring[j], t, w):
                    _, _, _, var_m, cov = ts.comoment_sums(pair[j, k], w)
                    if var_m > 0.0:
                        beta = cov / var_m
                values[b, j, col + k] = beta
            beta_alpha = values[b, j, col + alpha_beta]
            col += n_b
            # CTI (Ehlers' correlation trend indicator): corr(log p, time) over the window
            for k in range(n_c):
                w = cti_windows[k]
                cti = np.nan
                if ts.comoment_step(pair[j, n_b + k], y_ring[j], c_ring[j], t, w):
                    _, _, var_y, var_c, cov = ts.comoment_sums(pair[j, n_b + k], w)
                    if var_y > 0.0 and var_c > 0.0:
                        cti = cov / np.sqrt(var_y * var_c)
                values[b, j, col + k] = cti
            col += n_c
            # alpha: the part of the w-day return the index does not explain, with the
            # beta known at t, vol-normalised like norm_ret_k
            for k in range(alpha_windows.size):
                w = alpha_windows[k]
                alpha = np.nan
                if ts.comoment_step(pair[j, n_b + n_c + k], r_ring[j], m_ring[j], t, w):
                    sum_r, sum_m, _, _, _ = ts.comoment_sums(pair[j, n_b + n_c + k], w)
                    alpha = (sum_r - beta_alpha * sum_m) / (v * np.sqrt(w))
                values[b, j, col + k] = alpha
