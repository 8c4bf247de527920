"""Vol-scaled positions, captured returns, turnover and transaction costs.

Conventions (shared by every function here and by ``momentum.metrics``):

* Arrays are numpy ``float64``. Panels are ``[T, N]`` (dates x assets), rows in
  date order. NaN means "asset inactive that date" (not yet listed, delisted, or
  no risk estimate yet) and propagates: an inactive asset earns NaN, not 0.
* A signal ``X_t`` in [-1, 1] is decided at the close of date ``t`` and held to
  the close of ``t + 1``. Row ``t`` of a captured-return panel is the return
  earned over ``(t, t+1]`` by the decision taken at ``t``; ``next_returns[t]``
  is therefore ``r_{t+1}``, the asset's return over that same interval.
* ``vol`` is the *daily* EWM standard deviation of returns (as produced by
  ``momentum.features``); the annualised vol is ``s_t = vol_t * sqrt(252)``.
* ``VOL_TARGET`` (15% a year, as in all seed papers) is defined here once;
  ``TRADING_DAYS`` is defined once in ``momentum.metrics``.

Equation numbers follow Tan, Roberts & Zohren (2023), "Spatio-Temporal
Momentum" (STMOM); eq. (1) is also eq. (1) of Lim et al. (2019), "Enhancing
Time Series Momentum Strategies Using Deep Neural Networks".

A zero daily vol (e.g. a stale price repeated for the whole EWM window, as in
the embedded RRC series in early 1990) gives no usable risk estimate, so the
position is NaN (inactive) rather than an infinite leverage.

Inputs may be numpy arrays or pandas objects; outputs are always numpy arrays.
When two pandas inputs are passed together their labels must agree, because
converting to numpy would otherwise pair the wrong dates or tickers silently.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from momentum.metrics import TRADING_DAYS

__all__ = [
    "VOL_TARGET",
    "annualised_vol",
    "captured_returns",
    "delay_signal",
    "ex_ante_vol_scale",
    "leverage",
    "net_returns",
    "portfolio_returns",
    "rescale_to_target_vol",
    "strategy_returns",
    "target_weights",
    "turnover",
]

VOL_TARGET = 0.15
"""Annualised volatility target sigma_tgt of every seed paper (15%)."""

_ANNUALISE = math.sqrt(TRADING_DAYS)
_BPS = 1e-4


# ---------------------------------------------------------------- validation


def _as_float_array(x: ArrayLike, name: str, ndims: tuple[int, ...]) -> NDArray[np.float64]:
    """Convert ``x`` to a float64 array with one of ``ndims`` dimensions, no infinities."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be numeric, could not convert it: {exc}") from exc
    if arr.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"`{name}` must be {wanted}, got shape {arr.shape}")
    infinite = np.isinf(arr)
    if infinite.any():
        where = tuple(int(i) for i in np.argwhere(infinite)[0])
        raise ValueError(f"`{name}` contains an infinite value at index {where}")
    return arr


def _check_same_shape(
    name: str, arr: NDArray[np.float64], ref_name: str, ref: NDArray[np.float64]
) -> None:
    if arr.shape != ref.shape:
        raise ValueError(
            f"`{name}` has shape {arr.shape} but `{ref_name}` has shape {ref.shape}; "
            "they must match"
        )


def _check_same_labels(name: str, x: object, ref_name: str, ref: object) -> None:
    """Refuse two pandas inputs whose dates or tickers differ (positional pairing would be wrong)."""
    for attr in ("index", "columns"):
        a, b = getattr(x, attr, None), getattr(ref, attr, None)
        if isinstance(a, pd.Index) and isinstance(b, pd.Index) and not a.equals(b):
            raise ValueError(
                f"`{name}` and `{ref_name}` have different {attr}; align them first "
                "(e.g. `vol.reindex_like(signal)`)"
            )


def _check_vol_target(vol_target: float) -> float:
    if isinstance(vol_target, bool) or not isinstance(vol_target, Real):
        raise ValueError(f"`vol_target` must be a number, got {vol_target!r}")
    if not (math.isfinite(vol_target) and vol_target > 0):
        raise ValueError(f"`vol_target` must be positive and finite, got {vol_target}")
    return float(vol_target)


def _check_vol(vol: NDArray[np.float64], name: str = "vol") -> None:
    negative = vol < 0  # NaN compares False: inactive entries pass
    if negative.any():
        where = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"`{name}` must be non-negative, got {vol[where]} at index {where}")


def _panel_pair(
    a: ArrayLike, a_name: str, b: ArrayLike, b_name: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two ``[T, N]`` panels of the same shape (and same labels when both are pandas)."""
    a_arr = _as_float_array(a, a_name, (2,))
    b_arr = _as_float_array(b, b_name, (2,))
    _check_same_shape(b_name, b_arr, a_name, a_arr)
    _check_same_labels(b_name, b, a_name, a)
    return a_arr, b_arr


# ----------------------------------------------------------------- positions


def annualised_vol(daily_vol: ArrayLike) -> NDArray[np.float64]:
    """Annualise a daily volatility: ``s = vol * sqrt(252)``.

    Parameters
    ----------
    daily_vol : array_like, any shape
        Daily standard deviation of returns; NaN where unknown.

    Returns
    -------
    ndarray, same shape as ``daily_vol``

    Examples
    --------
    >>> float(annualised_vol(0.01) / 0.01) == 252 ** 0.5
    True
    """
    vol = _as_float_array(daily_vol, "daily_vol", (0, 1, 2, 3))
    _check_vol(vol, "daily_vol")
    return vol * _ANNUALISE


def leverage(
    signal: ArrayLike, vol: ArrayLike, vol_target: float = VOL_TARGET
) -> NDArray[np.float64]:
    """Per-asset vol-scaled position ``X_t * sigma_tgt / s_t`` (the factor of eq. 1).

    This is the position held per unit of capital allocated to the asset; the
    portfolio weight divides it further by the number of active assets (see
    :func:`target_weights`).

    Parameters
    ----------
    signal : array_like, shape [T, N]
        Positions X_t, normally in [-1, 1]; NaN where the asset is inactive.
    vol : array_like, shape [T, N]
        Daily EWM vol of returns known at the close of t. NaN or 0 -> NaN position.
    vol_target : float
        Annualised target volatility sigma_tgt.

    Returns
    -------
    ndarray, shape [T, N]

    Examples
    --------
    >>> import numpy as np
    >>> daily = 0.30 / 252 ** 0.5  # 30% annualised
    >>> leverage(np.array([[1.0, -0.5]]), np.array([[daily, daily]])).round(12)
    array([[ 0.5 , -0.25]])
    """
    x, v = _panel_pair(signal, "signal", vol, "vol")
    target = _check_vol_target(vol_target)
    _check_vol(v)
    s = v * _ANNUALISE
    out = np.full_like(x, np.nan)
    # eq. (1): equal ex-ante risk per asset; s = 0 has no risk estimate, so stays NaN
    usable = np.isfinite(x) & (s > 0)
    out[usable] = x[usable] * target / s[usable]
    return out


def captured_returns(
    signal: ArrayLike,
    next_returns: ArrayLike,
    vol: ArrayLike | None = None,
    vol_target: float = VOL_TARGET,
) -> NDArray[np.float64]:
    """Return captured by each asset's position over (t, t+1].

    With ``vol``: ``X_t * sigma_tgt / s_t * r_{t+1}`` (eq. 1 per asset, eq. 10).
    Without ``vol``: ``X_t * r_{t+1}``, unscaled (buy-and-hold, risk parity).

    Parameters
    ----------
    signal : array_like, shape [T, N]
        Positions decided at the close of t.
    next_returns : array_like, shape [T, N]
        ``next_returns[t] = r_{t+1}``, i.e. the daily returns shifted up one row
        (NaN in the last row).
    vol : array_like, shape [T, N], optional
        Daily vol known at t; ``None`` disables vol scaling.
    vol_target : float
        Annualised target volatility (ignored when ``vol`` is None).

    Returns
    -------
    ndarray, shape [T, N]
        NaN where the position or the next return is missing.

    Examples
    --------
    >>> import numpy as np
    >>> captured_returns(np.array([[1.0, -1.0]]), np.array([[0.02, 0.01]]))
    array([[ 0.02, -0.01]])
    """
    x, nxt = _panel_pair(signal, "signal", next_returns, "next_returns")
    if vol is None:
        return x * nxt
    _check_same_labels("vol", vol, "signal", signal)
    position = leverage(x, _as_float_array(vol, "vol", (2,)), vol_target)
    return position * nxt


def portfolio_returns(per_asset: ArrayLike) -> NDArray[np.float64]:
    """Equal-weight average over the assets active each date (``1/N_t`` sum, eq. 1).

    Parameters
    ----------
    per_asset : array_like, shape [T, N]
        Per-asset captured (or net) returns; NaN where inactive.

    Returns
    -------
    ndarray, shape [T]
        Mean over the non-NaN entries of each row; NaN where no asset is active.

    Examples
    --------
    >>> import numpy as np
    >>> portfolio_returns(np.array([[0.01, 0.03], [0.02, np.nan], [np.nan, np.nan]]))
    array([0.02, 0.02,  nan])
    """
    x = _as_float_array(per_asset, "per_asset", (2,))
    active = np.isfinite(x)
    n_active = active.sum(axis=1)
    total = np.where(active, x, 0.0).sum(axis=1)
    out = np.full(x.shape[0], np.nan)
    # N_t changes as assets enter and leave; an empty row is undefined, not 0
    has_any = n_active > 0
    out[has_any] = total[has_any] / n_active[has_any]
    return out


def turnover(
    signal: ArrayLike, vol: ArrayLike | None = None, vol_target: float = VOL_TARGET
) -> NDArray[np.float64]:
    """Per-asset turnover ``sigma_tgt * |X_t / s_t - X_{t-1} / s_{t-1}|`` (eq. 12).

    Without ``vol`` the raw change ``|X_t - X_{t-1}|`` is returned. A missing
    previous position (first row, or asset inactive at t-1) counts as 0, so
    entering a position trades its full size. Leaving the universe is not
    charged: the row of an asset inactive at t is NaN.

    Parameters
    ----------
    signal : array_like, shape [T, N]
        Positions X_t; NaN where inactive.
    vol : array_like, shape [T, N], optional
        Daily vol known at t; ``None`` disables vol scaling.
    vol_target : float
        Annualised target volatility (ignored when ``vol`` is None).

    Returns
    -------
    ndarray, shape [T, N]
        Row t is the trade made at the close of t to move into X_t, aligned
        with row t of :func:`captured_returns`.

    Examples
    --------
    >>> import numpy as np
    >>> turnover(np.array([[1.0], [-1.0], [-1.0]]))
    array([[1.],
           [2.],
           [0.]])
    """
    if vol is None:
        position = _as_float_array(signal, "signal", (2,))
    else:
        # sigma_tgt * |X_t/s_t - X_{t-1}/s_{t-1}| = |leverage_t - leverage_{t-1}|
        position = leverage(signal, vol, vol_target)
    previous = np.zeros_like(position)
    previous[1:] = position[:-1]
    previous[~np.isfinite(previous)] = 0.0
    return np.abs(position - previous)


def net_returns(captured: ArrayLike, turnover: ArrayLike, cost_bps: float) -> NDArray[np.float64]:
    """Returns net of proportional costs: ``R - c * TO`` with ``c = cost_bps * 1e-4`` (eq. 13).

    Parameters
    ----------
    captured : array_like, shape [T, N] or [T]
        Captured returns (row t earned by the position taken at t).
    turnover : array_like, same shape as ``captured``
        Turnover of the trade made at t (:func:`turnover`).
    cost_bps : float
        Cost per unit of turnover in basis points, >= 0.

    Returns
    -------
    ndarray, same shape as the inputs
        NaN where either input is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> net_returns(np.array([0.01]), np.array([2.0]), cost_bps=10).round(12)
    array([0.008])
    """
    r = _as_float_array(captured, "captured", (1, 2))
    to = _as_float_array(turnover, "turnover", (1, 2))
    _check_same_shape("turnover", to, "captured", r)
    _check_same_labels("turnover", turnover, "captured", captured)
    if isinstance(cost_bps, bool) or not isinstance(cost_bps, Real):
        raise ValueError(f"`cost_bps` must be a number, got {cost_bps!r}")
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"`cost_bps` must be finite and non-negative, got {cost_bps}")
    negative = to < 0
    if negative.any():
        where = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"`turnover` must be non-negative, got {to[where]} at index {where}")
    return r - cost_bps * _BPS * to


def target_weights(
    signal: ArrayLike, vol: ArrayLike, vol_target: float = VOL_TARGET
) -> NDArray[np.float64]:
    """Portfolio weights ``w = X * sigma_tgt / s / N_t`` (eq. 1).

    ``N_t`` is the number of assets with a defined position that date (finite
    signal and positive vol), so each active asset gets the same ex-ante risk
    and the portfolio return ``sum_i w_i r_i`` equals
    ``portfolio_returns(captured_returns(signal, next_returns, vol))``.

    Parameters
    ----------
    signal : array_like, shape [T, N]
    vol : array_like, shape [T, N]
        Daily vol known at t.
    vol_target : float

    Returns
    -------
    ndarray, shape [T, N]
        NaN where the asset is inactive.

    Examples
    --------
    >>> import numpy as np
    >>> daily = 0.15 / 252 ** 0.5  # vol already on target: leverage = X
    >>> target_weights(np.array([[1.0, -1.0, np.nan]]), np.full((1, 3), daily)).round(12)
    array([[ 0.5, -0.5,  nan]])
    """
    position = leverage(signal, vol, vol_target)
    n_active = np.isfinite(position).sum(axis=1, keepdims=True)
    # where n_active is 0 every position in the row is NaN; dividing by 1 keeps it NaN
    return position / np.maximum(n_active, 1)


# ------------------------------------------------------ portfolio-level scaling


def rescale_to_target_vol(
    returns: ArrayLike, vol_target: float = VOL_TARGET
) -> NDArray[np.float64]:
    """Ex-post rescaling to the target vol: ``r * sigma_tgt / (std(r, ddof=1) * sqrt(252))``.

    This is what the papers' "rescaled to target volatility" tables do; it uses
    the whole sample's vol, so it is for research tables only (live positions use
    :func:`ex_ante_vol_scale`).

    Parameters
    ----------
    returns : array_like, shape [T]
        Daily portfolio returns; NaNs are ignored in the vol and kept in place.
    vol_target : float

    Returns
    -------
    ndarray, shape [T]
        All NaN when the vol is undefined (fewer than 2 observations) or zero
        (e.g. a model that collapsed to zero positions).

    Examples
    --------
    >>> import numpy as np
    >>> out = rescale_to_target_vol(np.array([0.01, -0.01, 0.02, np.nan]))
    >>> round(float(np.nanstd(out, ddof=1) * 252 ** 0.5), 12)
    0.15
    """
    r = _as_float_array(returns, "returns", (1,))
    target = _check_vol_target(vol_target)
    finite = r[np.isfinite(r)]
    if finite.size < 2 or finite.max() == finite.min():
        # compare extremes, not std: a constant series can leave a ~1e-18 std residue
        return np.full_like(r, np.nan)
    realised = float(np.std(finite, ddof=1)) * _ANNUALISE
    return r * (target / realised)


def ex_ante_vol_scale(
    port_returns: ArrayLike,
    vol_target: float = VOL_TARGET,
    span: float = 60,
    min_periods: int = 20,
) -> NDArray[np.float64]:
    """Ex-ante portfolio leverage ``L_t = sigma_tgt / (sigma_hat_{t-1} * sqrt(252))``.

    ``sigma_hat_{t-1}`` is the EWM std (pandas ``ewm(span, min_periods).std()``,
    bias-corrected) of the portfolio's own daily returns in rows ``<= t-1``:
    row ``t-1`` is realised at the close of t, when the decision for t is made,
    and row t is not known until t+1. Multiply the weights decided at t by
    ``L_t``.

    Parameters
    ----------
    port_returns : array_like, shape [T]
        Daily returns of the unscaled portfolio (row t earned over (t, t+1]).
    vol_target : float
        Annualised target volatility.
    span : float
        EWM span (>= 1), in trading days.
    min_periods : int
        Observations needed before the estimate is used (>= 1).

    Returns
    -------
    ndarray, shape [T]
        NaN during warm-up and where the estimated vol is zero.

    Examples
    --------
    >>> import numpy as np
    >>> lev = ex_ante_vol_scale(np.array([0.01, -0.01, 0.01, -0.01]), span=3, min_periods=2)
    >>> bool(np.isnan(lev[:2]).all()), bool(np.isfinite(lev[2:]).all())
    (True, True)
    """
    r = _as_float_array(port_returns, "port_returns", (1,))
    target = _check_vol_target(vol_target)
    if isinstance(span, bool) or not isinstance(span, Real) or not span >= 1:
        raise ValueError(f"`span` must be a number >= 1, got {span!r}")
    if isinstance(min_periods, bool) or not isinstance(min_periods, Integral) or min_periods < 1:
        raise ValueError(f"`min_periods` must be an integer >= 1, got {min_periods!r}")
    ewm_std = pd.Series(r).ewm(span=float(span), min_periods=int(min_periods)).std().to_numpy()
    # known at t: the estimate that ends at row t-1 (no look-ahead)
    known = np.full_like(ewm_std, np.nan)
    known[1:] = ewm_std[:-1] * _ANNUALISE
    out = np.full_like(r, np.nan)
    usable = np.isfinite(known) & (known > 0)
    out[usable] = target / known[usable]
    return out


def delay_signal(signal: ArrayLike, sessions: int) -> NDArray[np.float64]:
    """Trade ``sessions`` sessions late: shift rows down by k, NaN in the first k rows.

    Boutier (2023)'s delayed-signal stress test (k = 1, 5, 10, 21): the position
    held over (t, t+1] is the one decided at t - k.

    Parameters
    ----------
    signal : array_like, shape [T, N] (or [T])
    sessions : int
        Delay k >= 0; k = 0 returns a copy.

    Returns
    -------
    ndarray, same shape as ``signal``

    Examples
    --------
    >>> import numpy as np
    >>> delay_signal(np.array([[1.0], [2.0], [3.0]]), 1)
    array([[nan],
           [ 1.],
           [ 2.]])
    """
    x = _as_float_array(signal, "signal", (1, 2))
    if isinstance(sessions, bool) or not isinstance(sessions, Integral):
        raise ValueError(f"`sessions` must be an integer, got {sessions!r}")
    k = int(sessions)
    if k < 0:
        raise ValueError(f"`sessions` must be >= 0 (a delay, not a look-ahead), got {k}")
    out = np.full_like(x, np.nan)
    if k < x.shape[0]:
        out[k:] = x[: x.shape[0] - k]
    return out


def strategy_returns(
    signal: ArrayLike,
    next_returns: ArrayLike,
    vol: ArrayLike | None = None,
    *,
    cost_bps: float = 0.0,
    vol_target: float = VOL_TARGET,
) -> NDArray[np.float64]:
    """Daily portfolio return of a signal, net of costs: eqs. (1), (12), (13) together.

    Parameters
    ----------
    signal, next_returns : array_like, shape [T, N]
        As in :func:`captured_returns`.
    vol : array_like, shape [T, N], optional
        Daily vol; ``None`` for unscaled weights.
    cost_bps : float
        Cost per unit of turnover in basis points.

    Returns
    -------
    ndarray, shape [T]
        ``1/N_t sum_i (captured - c * TO)``; row t is earned over (t, t+1].

    Examples
    --------
    >>> import numpy as np
    >>> strategy_returns(np.array([[1.0], [1.0]]), np.array([[0.01], [0.02]]), cost_bps=10)
    array([0.009, 0.02 ])
    """
    captured = captured_returns(signal, next_returns, vol, vol_target)
    traded = turnover(signal, vol, vol_target)
    return portfolio_returns(net_returns(captured, traded, cost_bps))
