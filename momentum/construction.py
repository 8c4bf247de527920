"""Portfolio construction: the declared step from positions X_t to portfolio weights w_t.

Every strategy the project backtests or serves ends here, so the backtest, the reports and
the service hold the same weights for the same positions. Three constructions:

* ``"vol_scaled"`` (default): ``w = X * sigma_tgt / s / N_t``, each active asset at equal
  ex-ante risk (eq. 1 of Lim et al. 2019 and of STMOM; `momentum.portfolio.target_weights`).
* ``"zero_mean"``: the positions demeaned across the active assets each date, then
  vol-scaled as above: Boutier (2023)'s zero-mean layer applied as a post-step. Only the
  positions sum to zero; the vol-scaled weights carry each asset's 1/s.
* ``"sector_neutral_mv"``: Boutier (2023)'s appendix, "Mean variance framework": the
  weights maximise ``w'mu - w'Cw / (2 gamma)`` under the linear constraints ``Bw = d``,
  one row of B per sector (``B_ij = 1`` if asset j is in sector i) and ``d = 0``, whose
  closed form is::

      w = C^-1 B' (B C^-1 B')^-1 d + gamma C^-1 [mu - B' (B C^-1 B')^-1 B C^-1 mu]

  with ``mu`` the positions of the active assets (the model's forecast), ``C`` the
  Ledoit-Wolf shrunk covariance of their last ``cov_lookback`` daily returns
  (scikit-learn's `LedoitWolf`), and gamma chosen so that the gross exposure
  ``sum |w|`` is one ("each day, our portfolio invests 1 dollar"). Every sector then sums
  to zero, hence the whole book too. The paper's 15% volatility target is a
  portfolio-level leverage on top of these weights: the reports' ex-ante vol-targeted
  figures (`momentum.portfolio.ex_ante_vol_scale`) and the service's
  ``portfolio_vol_target`` option apply it; the stored weights keep gross one, as the
  paper's Table 3 (annual vol about 2%) does.

An asset is active on a date when its position is finite and (vol_scaled, zero_mean) its
vol is positive, or (sector_neutral_mv) it has a finite return on each of the last
``cov_lookback`` dates; inactive assets get NaN weights. A sector with a single active asset
constrains it to zero. When no weight survives the constraints (every sector holds at
most one active asset, or every position is zero), the active assets get weight 0.

Per-asset *leverage* ``N_t * w`` (what eq. 1 calls ``X sigma_tgt / s``) is how the
reports and the backtest files carry a constructed portfolio: the equal-weight average of
``leverage * r`` over the active assets is the portfolio return ``sum_i w_i r_i``
(`momentum.portfolio.portfolio_returns`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from momentum.portfolio import VOL_TARGET, target_weights

__all__ = [
    "CONSTRUCTIONS",
    "COV_LOOKBACK",
    "Construction",
    "check_construction",
    "construct_weights",
    "history_rows",
    "per_asset_leverage",
    "sector_neutral_mv",
    "shrunk_covariance",
]

Construction = Literal["vol_scaled", "zero_mean", "sector_neutral_mv"]
CONSTRUCTIONS: tuple[str, ...] = get_args(Construction)

COV_LOOKBACK = 252
"""Daily returns in the covariance of ``sector_neutral_mv`` (one trading year; Boutier
(2023) gives no window)."""

# gross exposures below this are "no portfolio" (all constraints bind)
_TINY_GROSS = 1e-12


def check_construction(name: object) -> Construction:
    """`name` if it is a known construction, else a ValueError listing them."""
    if name not in CONSTRUCTIONS:
        raise ValueError(f"unknown construction {name!r}; choose from {list(CONSTRUCTIONS)}")
    return name  # type: ignore[return-value]


def history_rows(construction: str, cov_lookback: int = COV_LOOKBACK) -> int:
    """Rows of trailing daily returns a construction reads (0: the date's own row only)."""
    return cov_lookback if check_construction(construction) == "sector_neutral_mv" else 0


def shrunk_covariance(returns: ArrayLike) -> NDArray[np.float64]:
    """Ledoit-Wolf shrunk covariance of ``returns`` (``[T, N]``, no NaN), scikit-learn's."""
    from sklearn.covariance import LedoitWolf  # imported here: only this construction needs it

    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or not np.isfinite(r).all():
        raise ValueError(f"`returns` must be a finite [T >= 2, N] panel, got shape {r.shape}")
    return np.asarray(LedoitWolf().fit(r).covariance_, dtype=np.float64)


def sector_neutral_mv(
    mu: ArrayLike, cov: ArrayLike, sector_ids: Sequence[int] | NDArray[np.integer]
) -> NDArray[np.float64]:
    """Sector-neutral mean-variance weights with gross exposure one (``d = 0``).

    Parameters
    ----------
    mu : array_like, shape [N]
        Forecasts (positions) of the assets.
    cov : array_like, shape [N, N]
        Their covariance, symmetric positive definite.
    sector_ids : sequence of int, length N
        Sector label of each asset; one constraint row per distinct label.

    Returns
    -------
    ndarray, shape [N]
        ``gamma C^-1 (mu - B' lambda)`` with ``lambda = (B C^-1 B')^-1 B C^-1 mu``, scaled so
        that ``sum |w| = 1``; all zeros when the constraints leave no portfolio.

    Examples
    --------
    >>> import numpy as np
    >>> w = sector_neutral_mv([0.5, -0.1, 0.3, 0.2], np.diag([1.0, 2.0, 1.0, 3.0]), [0, 0, 1, 1])
    >>> bool(abs(w[0] + w[1]) < 1e-12 and abs(w[2] + w[3]) < 1e-12), round(float(abs(w).sum()), 12)
    (True, 1.0)
    """
    m = np.asarray(mu, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    ids = np.asarray(sector_ids)
    n = m.shape[0]
    if m.ndim != 1 or c.shape != (n, n) or ids.shape != (n,):
        raise ValueError(
            f"`mu` [N], `cov` [N, N] and `sector_ids` [N] must agree, got {m.shape}, "
            f"{c.shape}, {ids.shape}"
        )
    if n == 0:
        return np.zeros(0)
    labels = np.unique(ids)
    b = (ids[None, :] == labels[:, None]).astype(np.float64)  # (sectors, N)
    # C^-1 [mu, B'] in one factorisation
    solved = np.linalg.solve(c, np.column_stack([m, b.T]))
    c_inv_mu, c_inv_bt = solved[:, 0], solved[:, 1:]
    # the multiplier that makes the adjusted forecast mu - B' lambda sector-neutral
    lam = np.linalg.solve(b @ c_inv_bt, b @ c_inv_mu)
    w = c_inv_mu - c_inv_bt @ lam
    gross = float(np.abs(w).sum())
    if not math.isfinite(gross) or gross < _TINY_GROSS:
        return np.zeros(n)
    return w / gross  # gamma = 1 / gross: one dollar of gross exposure


def _check_lookback(cov_lookback: object) -> int:
    if isinstance(cov_lookback, bool) or not isinstance(cov_lookback, Integral):
        raise ValueError(f"`cov_lookback` must be an integer, got {cov_lookback!r}")
    if int(cov_lookback) < 2:
        raise ValueError(f"`cov_lookback` must be >= 2, got {cov_lookback}")
    return int(cov_lookback)


def _sector_neutral_rows(
    signal: NDArray[np.float64],
    returns: NDArray[np.float64],
    sectors: Sequence[Sequence[int]],
    rows: NDArray[np.int64],
    lookback: int,
) -> NDArray[np.float64]:
    n = signal.shape[1]
    sector_of = np.full(n, -1)
    for k, members in enumerate(sectors):
        for j in members:
            if not 0 <= j < n:
                raise ValueError(f"sector {k} lists asset {j}, outside 0..{n - 1}")
            if sector_of[j] >= 0:
                raise ValueError(f"asset {j} is in sectors {sector_of[j]} and {k}")
            sector_of[j] = k
    if (sector_of < 0).any():
        raise ValueError(f"assets {np.flatnonzero(sector_of < 0).tolist()} have no sector")
    out = np.full((len(rows), n), np.nan)
    for i, t in enumerate(rows):
        if t + 1 < lookback:
            continue  # not enough history for any asset yet
        window = returns[t + 1 - lookback : t + 1]
        active = np.isfinite(signal[t]) & np.isfinite(window).all(axis=0)
        if not active.any():
            continue
        weights = np.zeros(int(active.sum()))
        if active.sum() >= 2:
            cov = shrunk_covariance(window[:, active])
            weights = sector_neutral_mv(signal[t, active], cov, sector_of[active])
        out[i, active] = weights
    return out


def construct_weights(
    construction: str,
    signal: ArrayLike,
    vol: ArrayLike,
    *,
    returns: ArrayLike | None = None,
    sectors: Sequence[Sequence[int]] | None = None,
    rows: ArrayLike | None = None,
    vol_target: float = VOL_TARGET,
    cov_lookback: int = COV_LOOKBACK,
) -> NDArray[np.float64]:
    """Portfolio weights of `signal` under `construction`, for the dates of `rows`.

    Parameters
    ----------
    construction : {"vol_scaled", "zero_mean", "sector_neutral_mv"}
    signal, vol : array_like, shape [T, N]
        Positions X_t (NaN: inactive) and daily vol known at t.
    returns : array_like, shape [T, N], optional
        Daily returns r_t (realised by the close of t); required for ``sector_neutral_mv``,
        which reads rows ``t - cov_lookback + 1 .. t``.
    sectors : sequence of sequences of int, optional
        Asset indices of each sector, every asset in exactly one; required for
        ``sector_neutral_mv`` (the manifest's ``markets``).
    rows : array_like of int, optional
        The dates to construct (default: every row). Earlier rows only feed the covariance.
    vol_target : float
        sigma_tgt of the vol-scaled constructions.
    cov_lookback : int
        Returns per covariance estimate.

    Returns
    -------
    ndarray, shape [len(rows), N]
        NaN where the asset is inactive.
    """
    kind = check_construction(construction)
    x = np.asarray(signal, dtype=np.float64)
    v = np.asarray(vol, dtype=np.float64)
    if x.ndim != 2 or v.shape != x.shape:
        raise ValueError(f"`signal` and `vol` must be [T, N] panels, got {x.shape} and {v.shape}")
    picked = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if picked.size and (picked.min() < 0 or picked.max() >= x.shape[0]):
        raise ValueError(f"`rows` must lie in 0..{x.shape[0] - 1}")
    if kind == "vol_scaled":
        return target_weights(x[picked], v[picked], vol_target)
    if kind == "zero_mean":
        # vol-scaling needs a positive vol: an asset without one is not in the mean either
        active = np.isfinite(x[picked]) & np.isfinite(v[picked]) & (v[picked] > 0)
        counts = np.maximum(active.sum(axis=1, keepdims=True), 1)
        mean = np.where(active, x[picked], 0.0).sum(axis=1, keepdims=True) / counts
        return target_weights(np.where(active, x[picked] - mean, np.nan), v[picked], vol_target)
    if returns is None or sectors is None:
        raise ValueError("sector_neutral_mv needs `returns` and `sectors`")
    r = np.asarray(returns, dtype=np.float64)
    if r.shape != x.shape:
        raise ValueError(f"`returns` must have the shape of `signal` {x.shape}, got {r.shape}")
    return _sector_neutral_rows(x, r, sectors, picked, _check_lookback(cov_lookback))


def per_asset_leverage(weights: ArrayLike) -> NDArray[np.float64]:
    """``N_t * w``: the leverage whose equal-weight average return is ``sum_i w_i r_i``.

    ``N_t`` counts the assets with a finite weight on each date.
    """
    w = np.asarray(weights, dtype=np.float64)
    n_active = np.isfinite(w).sum(axis=-1, keepdims=True)
    return w * n_active
