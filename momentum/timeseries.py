"""Causal time-series operators over (T, N) panels, compiled once with numba.

pandas computes EWMs and rolling moments column by column with Python-level
overhead per column, and a vectorised numpy version is bound by memory
traffic (every intermediate is a fresh T x N array). These kernels walk each
asset's history once, keep the running state in registers, and run assets in
parallel. They reproduce pandas' definitions:

* `ewm_mean`: ``DataFrame.ewm(halflife=h).mean()`` (``adjust=True``,
  ``ignore_na=False``).
* `ewm_mean_std`: the same mean and ``DataFrame.ewm(...).std()``
  (``bias=False``, ``min_periods``), with pandas' online weighted update.
* `rolling_std`: ``DataFrame.rolling(w).std()`` (``ddof=1``, full windows
  only), from sums re-anchored every window so rounding cannot accumulate.

Inputs may hold NaN before an asset starts and after it ends (the price
panel contract). Compiled code is cached beside the module on first use.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "COMOMENT_STATE",
    "EWM_MEAN_STATE",
    "EWM_MEAN_STD_STATE",
    "ROLLING_STATE",
    "comoment_step",
    "comoment_sums",
    "decay_from_halflife",
    "decay_from_span",
    "ewm_mean",
    "ewm_mean_1d",
    "ewm_mean_state",
    "ewm_mean_std_state",
    "ewm_mean_step",
    "ewm_mean_std_step",
    "ewm_mean_std",
    "ewm_mean_std_1d",
    "ewm_std",
    "rolling_std",
    "comoment_state",
    "ring_size",
    "rolling_state",
    "rolling_std_1d",
    "rolling_std_step",
]


def decay_from_halflife(halflife: float) -> float:
    """Weight ratio between consecutive observations, ``1 - alpha = 0.5 ** (1 / halflife)``."""
    if halflife <= 0:
        raise ValueError(f"`halflife` must be positive, got {halflife}")
    return float(0.5 ** (1.0 / halflife))


def decay_from_span(span: float) -> float:
    """``1 - alpha`` with ``alpha = 2 / (span + 1)``."""
    if span < 1:
        raise ValueError(f"`span` must be at least 1, got {span}")
    return 1.0 - 2.0 / (span + 1.0)


def _as_panel(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (dates, assets), got shape {x.shape}")
    return x


# One-series recursions, written once as *steps*: each takes its running state
# (a small float64 array, updated in place) and one new observation, and returns
# the output at that step. The one-series functions below loop a step over a
# whole series; `momentum.feature_kernel` runs the same steps for every asset of a
# panel, either over a full history or one session at a time from a stored
# state, so the full-panel and the incremental paths do identical arithmetic.

EWM_MEAN_STATE = 2  # mean, total weight
EWM_MEAN_STD_STATE = 5  # mean, weighted variance, sum of weights, sum of squared weights, count
# anchor, sum of deviations, sum of squared deviations, run length, next re-anchoring step
ROLLING_STATE = 5
# run length, anchor x, anchor y, sums of dx, dy, dx^2, dy^2, dx*dy, next re-anchoring step
COMOMENT_STATE = 9


def ring_size(window: int) -> int:
    """Length of a ring buffer for a window: a power of two (indexed by ``step & (size - 1)``)
    holding at least ``window + 1`` values."""
    return 1 << int(window).bit_length()


def ewm_mean_state() -> np.ndarray:
    """The state of `ewm_mean_step` before any observation."""
    return np.array([np.nan, 0.0])


def ewm_mean_std_state() -> np.ndarray:
    """The state of `ewm_mean_std_step` before any observation."""
    return np.array([np.nan, 0.0, 0.0, 0.0, 0.0])


def rolling_state(window: int) -> np.ndarray:
    """The state of `rolling_std_step` over `window` values before any observation."""
    state = np.zeros(ROLLING_STATE)
    state[4] = window - 1  # windows are re-anchored at steps window - 1, 2 window - 1, ...
    return state


def comoment_state(window: int) -> np.ndarray:
    """The state of `comoment_step` over `window` pairs before any observation."""
    state = np.zeros(COMOMENT_STATE)
    state[8] = window - 1
    return state


@numba.njit(cache=True)
def ewm_mean_step(state: np.ndarray, value: float, decay: float) -> float:  # pragma: no cover
    """One step of the adjusted EWM mean; NaN before the first value, carried over NaN."""
    mean, weight = state[0], state[1] * decay
    if value == value:
        # mean form of the adjusted EWM: W_t = d W_{t-1} + 1,
        # m_t = m_{t-1} + (x_t - m_{t-1}) / W_t; exact at the start
        weight += 1.0
        mean = value if weight == 1.0 else mean + (value - mean) / weight
    state[0], state[1] = mean, weight
    return mean


@numba.njit(cache=True)
def ewm_mean_std_step(
    state: np.ndarray, value: float, decay: float, min_periods: int
) -> tuple[float, float]:  # pragma: no cover
    """One step of the adjusted EWM mean and bias-corrected EWM std."""
    mean, var = state[0], state[1]
    sum_w, sum_w2, count = state[2] * decay, state[3] * decay * decay, state[4]
    if value == value:
        count += 1.0
        if count == 1.0:
            mean = value
        else:
            # the new point enters with weight 1 against the decayed weight of
            # the past (the online update pandas uses)
            new_mean = (sum_w * mean + value) / (sum_w + 1.0)
            shift = mean - new_mean
            var = (sum_w * (var + shift * shift) + (value - new_mean) ** 2) / (sum_w + 1.0)
            mean = new_mean
        sum_w += 1.0
        sum_w2 += 1.0
    state[0], state[1], state[2], state[3], state[4] = mean, var, sum_w, sum_w2, count
    denom = sum_w * sum_w - sum_w2
    if count >= min_periods and count >= 2.0 and denom > 0.0:
        # unbiased weighted variance: V * W^2 / (W^2 - sum w^2)
        return mean, np.sqrt(max(var * sum_w * sum_w / denom, 0.0))
    return mean, np.nan


@numba.njit(cache=True)
def _anchoring(state: np.ndarray, slot: int, t: int, window: int) -> bool:  # pragma: no cover
    """Whether step ``t`` is a re-anchoring step (``t = window - 1 + i * window``)."""
    if t < state[slot]:
        return False
    state[slot] += window
    return True


@numba.njit(cache=True)
def rolling_std_step(
    state: np.ndarray, ring: np.ndarray, t: int, window: int
) -> float:  # pragma: no cover
    """Sample std of the last ``window`` values at step ``t`` (NaN unless all observed).

    ``ring`` holds the series: ``ring[u & (ring.size - 1)]`` is its value at step u
    (`ring_size`: a power of two, at least ``window + 1``), the one at ``t`` already
    written. The step must be called at every step t = 0, 1, 2, ... (NaN included).
    """
    # sums of (x - anchor) over the window; re-anchored and recomputed exactly every
    # `window` steps (at steps fixed by t, so a resumed state re-anchors where a full
    # pass does) so rounding cannot pile up
    mask = ring.size - 1
    anchoring = _anchoring(state, 4, t, window)
    value = ring[t & mask]
    if value != value:
        state[3] = 0.0
        return np.nan
    anchor, s1, s2, run = state[0], state[1], state[2], state[3] + 1.0
    if run == 1.0 or (run >= window and anchoring):
        first = t - int(min(run, window)) + 1
        anchor, s1, s2 = ring[first & mask], 0.0, 0.0
        for u in range(first, t + 1):
            dev = ring[u & mask] - anchor
            s1 += dev
            s2 += dev * dev
    else:
        dev = value - anchor
        s1 += dev
        s2 += dev * dev
        if run > window:
            old = ring[(t - window) & mask] - anchor
            s1 -= old
            s2 -= old * old
    state[0], state[1], state[2], state[3] = anchor, s1, s2, run
    if run >= window:
        return np.sqrt(max((s2 - s1 * s1 / window) / (window - 1), 0.0))
    return np.nan


@numba.njit(cache=True)
def comoment_step(
    state: np.ndarray, ring_x: np.ndarray, ring_y: np.ndarray, t: int, window: int
) -> bool:  # pragma: no cover
    """Window sums of two series at step ``t``; True when all ``window`` pairs are observed.

    The state then holds, over the last ``window`` steps, the sums of
    ``dx = x - anchor_x``, ``dy``, ``dx^2``, ``dy^2`` and ``dx * dy`` (see
    `comoment_sums`). Rings and calls as in `rolling_std_step`; a pair counts as
    observed when both values are.
    """
    mask = ring_x.size - 1
    anchoring = _anchoring(state, 8, t, window)
    x, y = ring_x[t & mask], ring_y[t & mask]
    if x != x or y != y:
        state[0] = 0.0
        return False
    run = state[0] + 1.0
    ax, ay = state[1], state[2]
    sx, sy, sxx, syy, sxy = state[3], state[4], state[5], state[6], state[7]
    if run == 1.0 or (run >= window and anchoring):
        first = t - int(min(run, window)) + 1
        ax, ay = ring_x[first & mask], ring_y[first & mask]
        sx, sy, sxx, syy, sxy = 0.0, 0.0, 0.0, 0.0, 0.0
        for u in range(first, t + 1):
            dx, dy = ring_x[u & mask] - ax, ring_y[u & mask] - ay
            sx, sy, sxx, syy, sxy = sx + dx, sy + dy, sxx + dx * dx, syy + dy * dy, sxy + dx * dy
    else:
        dx, dy = x - ax, y - ay
        sx, sy, sxx, syy, sxy = sx + dx, sy + dy, sxx + dx * dx, syy + dy * dy, sxy + dx * dy
        if run > window:
            u = (t - window) & mask
            dx, dy = ring_x[u] - ax, ring_y[u] - ay
            sx, sy, sxx, syy, sxy = sx - dx, sy - dy, sxx - dx * dx, syy - dy * dy, sxy - dx * dy
    state[0], state[1], state[2] = run, ax, ay
    state[3], state[4], state[5], state[6], state[7] = sx, sy, sxx, syy, sxy
    return run >= window


@numba.njit(cache=True)
def comoment_sums(
    state: np.ndarray, window: int
) -> tuple[float, float, float, float, float]:  # pragma: no cover
    """``(sum x, sum y, n var x, n var y, n cov xy)`` of a full window (`comoment_step`).

    The last three are sums of squared (cross) deviations from the window means;
    divide by ``window - 1`` for sample moments.
    """
    ax, ay, sx, sy = state[1], state[2], state[3], state[4]
    sxx, syy, sxy = state[5], state[6], state[7]
    return (
        sx + window * ax,
        sy + window * ay,
        sxx - sx * sx / window,
        syy - sy * sy / window,
        sxy - sx * sy / window,
    )


@numba.njit(cache=True)
def ewm_mean_1d(x: np.ndarray, decay: float, out: np.ndarray) -> None:  # pragma: no cover
    """Adjusted EWM mean of one series into ``out`` (NaN before the first value)."""
    state = np.array([np.nan, 0.0])
    for t in range(x.size):
        out[t] = ewm_mean_step(state, x[t], decay)


@numba.njit(cache=True)
def ewm_mean_std_1d(
    x: np.ndarray, decay: float, min_periods: int, mean_out: np.ndarray, std_out: np.ndarray
) -> None:  # pragma: no cover
    """Adjusted EWM mean and bias-corrected EWM std of one series."""
    state = np.array([np.nan, 0.0, 0.0, 0.0, 0.0])
    for t in range(x.size):
        mean_out[t], std_out[t] = ewm_mean_std_step(state, x[t], decay, min_periods)


@numba.njit(cache=True)
def _pow2_above(window: int) -> int:  # pragma: no cover
    """`ring_size` inside compiled code."""
    size = 1
    while size <= window:
        size *= 2
    return size


@numba.njit(cache=True)
def rolling_std_1d(x: np.ndarray, window: int, out: np.ndarray) -> None:  # pragma: no cover
    """Sample std over the last ``window`` values of one series (NaN unless all observed)."""
    state = np.zeros(5)
    state[4] = window - 1
    ring = np.empty(_pow2_above(window))
    mask = ring.size - 1
    for t in range(x.size):
        ring[t & mask] = x[t]
        out[t] = rolling_std_step(state, ring, t, window)


@numba.njit(parallel=True, cache=True)
def _ewm_mean_kernel(x: np.ndarray, decays: np.ndarray) -> np.ndarray:  # pragma: no cover
    out = np.empty((decays.size, x.shape[1], x.shape[0]))  # (decay, asset, time)
    for j in numba.prange(x.shape[1]):
        column = np.ascontiguousarray(x[:, j])
        for k in range(decays.size):
            ewm_mean_1d(column, decays[k], out[k, j])
    return out


@numba.njit(parallel=True, cache=True)
def _ewm_mean_std_kernel(
    x: np.ndarray, decay: float, min_periods: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    means = np.empty((x.shape[1], x.shape[0]))  # (asset, time)
    stds = np.empty((x.shape[1], x.shape[0]))
    for j in numba.prange(x.shape[1]):
        ewm_mean_std_1d(np.ascontiguousarray(x[:, j]), decay, min_periods, means[j], stds[j])
    return means, stds


@numba.njit(parallel=True, cache=True)
def _rolling_std_kernel(x: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover
    out = np.empty((x.shape[1], x.shape[0]))  # (asset, time)
    for j in numba.prange(x.shape[1]):
        rolling_std_1d(np.ascontiguousarray(x[:, j]), window, out[j])
    return out


def ewm_mean(x: np.ndarray, decays: np.ndarray | list[float]) -> np.ndarray:
    """Adjusted exponentially weighted means for several decay rates at once.

    Parameters
    ----------
    x : ndarray, shape (T, N)
    decays : array-like, shape (K,)
        ``1 - alpha`` for each EWM.

    Returns
    -------
    ndarray, shape (K, T, N)
        ``sum_i d^(t-i) x_i / sum_i d^(t-i)`` over observed ``i <= t``; NaN
        before an asset's first observation, the last mean carried over NaN.
    """
    x = _as_panel(x, "x")
    d = np.ascontiguousarray(decays, dtype=np.float64).reshape(-1)
    if ((d <= 0) | (d >= 1)).any():
        raise ValueError(f"`decays` must lie in (0, 1), got {d.tolist()}")
    return np.ascontiguousarray(_ewm_mean_kernel(x, d).transpose(0, 2, 1))


def ewm_mean_std(
    x: np.ndarray, decay: float, min_periods: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted EWM mean and bias-corrected EWM standard deviation, one pass.

    Parameters
    ----------
    x : ndarray, shape (T, N)
    decay : float
        ``1 - alpha``.
    min_periods : int
        Observations needed before a std is returned.

    Returns
    -------
    mean, std : ndarray, shape (T, N)
        pandas' ``ewm(...).mean()`` and ``ewm(...).std()``: with weights
        ``w_i = d^(t-i)``, ``W = sum w``, the weighted variance ``V`` times
        ``W^2 / (W^2 - sum w^2)``; NaN with fewer than two observations or
        fewer than ``min_periods``.
    """
    x = _as_panel(x, "x")
    if min_periods < 0:
        raise ValueError(f"`min_periods` must be non-negative, got {min_periods}")
    if not 0 < decay < 1:
        raise ValueError(f"`decay` must lie in (0, 1), got {decay}")
    mean, std = _ewm_mean_std_kernel(x, float(decay), int(min_periods))
    return np.ascontiguousarray(mean.T), np.ascontiguousarray(std.T)


def ewm_std(x: np.ndarray, decay: float, min_periods: int = 0) -> np.ndarray:
    """Bias-corrected EWM standard deviation (pandas' ``ewm(...).std()``); see `ewm_mean_std`."""
    return ewm_mean_std(x, decay, min_periods)[1]


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample standard deviation over the last ``window`` rows.

    Parameters
    ----------
    x : ndarray, shape (T, N)
    window : int
        At least 2; a value needs ``window`` consecutive observations.

    Returns
    -------
    ndarray, shape (T, N)
        ``std(x[t - window + 1 : t + 1], ddof=1)``; NaN where the window is
        not fully observed.
    """
    x = _as_panel(x, "x")
    if window < 2:
        raise ValueError(f"`window` must be at least 2, got {window}")
    return np.ascontiguousarray(_rolling_std_kernel(x, int(window)).T)
