"""Drift of live inputs and outputs against the training reference: the population stability index.

The manifest of every exported model carries, per feature, the quantiles of that feature over
the training and validation rows (``Manifest.reference_quantiles``, deciles by default) and the
same quantiles of the model's own positions on the validation rows
(``Manifest.signal_quantiles``). Binning live values at those edges gives the share ``a_j`` of
live values in each bin, to compare with the share ``e_j`` the reference put there (10% each
for deciles):

    PSI = sum_j (a_j - e_j) * ln(a_j / e_j)

Each term is >= 0, so PSI is 0 only when every bin holds its reference share. Conventions:

* The outer bins are open-ended: a live value below the reference minimum falls in the first
  bin, one above the maximum in the last, so that out-of-range values count as drift instead
  of vanishing. Bins are closed on the right: ``(edge_j, edge_{j+1}]``.
* Shares are floored at :data:`PSI_EPSILON` (1e-4) before the logarithm, so an empty bin adds
  a large but finite term (``(1e-4 - 0.1) * ln(1e-3) ~ 0.69`` for an empty decile).
* Tied edges (a point mass in the reference, e.g. positions saturated at X = 1) make
  zero-width bins that no value can fall in; their reference share belongs to the point
  mass, so it moves to the bin that contains that point (the one whose right edge is the
  tie). Without this, a saturated model would show drift on its own reference data. When the
  tie is at the minimum (maximum), the reference has nothing below (above) it, so live values
  there fall in an outer bin whose reference share is 0.
* Non-finite live values (assets not tradable yet, warm-up rows) are ignored; with no finite
  value at all the PSI is NaN (nothing to compare).

Levels: :data:`PSI_WARN` 0.1 (a shift worth a look),
:data:`PSI_ALERT` 0.2 (the inputs no longer look like training data). Under no drift PSI is
not exactly zero: with ``n`` independent live values and ``k`` bins its expectation is about
``(k - 1) / n`` (sampling noise), 0.007 for 63 sessions x 20 assets in deciles.

**Persistent values need a baseline.** Features and signals are not independent draws: a
126-session return changes little from one day to the next, and the 20 assets move together,
so 63 sessions of it are a handful of independent observations, and a quarter of the
reference period itself scores far above 0.2 against the period's deciles. Measured on the
embedded data (2005-2020, every fifth 63-session window), the median in-sample PSI is 0.02
for the 1-day return but 0.22 for the 126-day return and 0.35-0.38 for the slow MACDs, whose
95th percentiles reach 1.0-2.7. A fixed 0.2 level alone would alert on half of the
training quarters. :func:`window_psi_baseline` measures that level on the reference rows at
export (the manifest's ``drift_baseline``: the 95th percentile of trailing-window PSIs, per
feature and for the signal), and the alerts fire only on a PSI above both 0.2 and the
baseline: a window that drifts more than 95% of the reference period's own windows did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from momentum.manifest import Manifest

__all__ = [
    "BASELINE_LEVEL",
    "BASELINE_WINDOWS",
    "DRIFT_WINDOW",
    "PSI_ALERT",
    "PSI_EPSILON",
    "PSI_WARN",
    "feature_psi",
    "level_shares",
    "psi",
    "signal_psi",
    "window_psi_baseline",
]

PSI_WARN = 0.1
"""PSI from which a feature (or the signal) is worth a look."""

PSI_ALERT = 0.2
"""PSI from which the live distribution no longer matches the training reference."""

PSI_EPSILON = 1e-4
"""Floor of the live and reference shares of a bin, so that an empty bin stays finite."""

DRIFT_WINDOW = 63
"""Sessions in the live monitor's trailing PSI window (about three months)."""

BASELINE_LEVEL = 0.95
"""Quantile of the reference period's window PSIs that the drift alerts must exceed."""

BASELINE_WINDOWS = 200
"""Windows of the reference period scored for a baseline, at most (evenly spaced)."""


def _edges(edges: Sequence[float]) -> NDArray[np.float64]:
    try:
        array = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`edges` must be a sequence of numbers, got {edges!r}") from None
    if array.ndim != 1 or array.size < 3:
        raise ValueError(
            f"`edges` must be a flat sequence of at least 3 values (2 bins), got shape "
            f"{array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"`edges` must be finite, got {array.tolist()}")
    if (np.diff(array) < 0).any():
        i = int(np.argmax(np.diff(array) < 0))
        raise ValueError(
            f"`edges` must be non-decreasing; edge {i + 1} ({array[i + 1]!r}) is below "
            f"edge {i} ({array[i]!r})"
        )
    return array


def _expected(expected: ArrayLike | None, n_bins: int) -> NDArray[np.float64]:
    if expected is None:
        return np.full(n_bins, 1.0 / n_bins)
    try:
        shares = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`expected` must be a sequence of numbers, got {expected!r}") from None
    if shares.shape != (n_bins,):
        raise ValueError(
            f"`expected` must hold one share per bin ({n_bins} = len(edges) - 1), got shape "
            f"{shares.shape}"
        )
    if not (np.isfinite(shares).all() and (shares >= 0).all()):
        raise ValueError(f"`expected` shares must be finite and >= 0, got {shares.tolist()}")
    if not math.isclose(float(shares.sum()), 1.0, abs_tol=1e-9):
        raise ValueError(f"`expected` shares must sum to 1, got {float(shares.sum())!r}")
    return shares


def level_shares(levels: Sequence[float]) -> NDArray[np.float64]:
    """Reference share of each bin between quantiles taken at `levels`, outer bins open-ended.

    Parameters
    ----------
    levels : sequence of float, length k >= 3
        Increasing quantile levels in [0, 1] (``Manifest.quantile_levels``).

    Returns
    -------
    ndarray, shape (k - 1,)
        ``levels[1] - 0, levels[2] - levels[1], ..., 1 - levels[k - 2]``: the first bin holds
        everything below the second edge and the last everything above the second-to-last
        one, whatever the outer levels are. Deciles give ten shares of 0.1.

    Examples
    --------
    >>> level_shares([0.0, 0.25, 1.0]).tolist()
    [0.25, 0.75]
    """
    array = np.asarray(levels, dtype=np.float64)
    if array.ndim != 1 or array.size < 3:
        raise ValueError(f"`levels` must hold at least 3 quantile levels, got {array.tolist()}")
    inner = array[1:-1]
    if not ((inner > 0).all() and (inner < 1).all() and (np.diff(inner) > 0).all()):
        raise ValueError(f"`levels` must be increasing inside (0, 1), got {array.tolist()}")
    return np.diff(np.concatenate([[0.0], inner, [1.0]]))


def psi(edges: Sequence[float], values: ArrayLike, expected: ArrayLike | None = None) -> float:
    """Population stability index of `values` against reference quantile edges.

    Parameters
    ----------
    edges : sequence of float, length k >= 3
        Non-decreasing reference quantiles (e.g. 11 decile edges, minimum to maximum); they
        delimit ``k - 1`` bins ``(-inf, e_1], (e_1, e_2], ..., (e_{k-2}, +inf)`` (the outer
        edges only matter for ties, see the module notes).
    values : array_like, any shape
        Live values; non-finite entries are ignored.
    expected : sequence of float, length k - 1, optional
        Reference share of each bin (>= 0, summing to 1); default ``1 / (k - 1)`` each, which
        is what quantile edges at evenly spaced levels mean.

    Returns
    -------
    float
        ``sum_j (a_j - e_j) * ln(a_j / e_j)`` with shares floored at :data:`PSI_EPSILON`;
        >= 0; NaN when `values` has no finite entry.

    Raises
    ------
    ValueError
        `edges` not a flat finite non-decreasing sequence of at least 3 values; `expected`
        of the wrong length, negative, or not summing to 1.

    Examples
    --------
    Half of the reference lies below 0, but three quarters of the live values do:

    >>> round(psi([-1.0, 0.0, 1.0], [-0.5, -0.2, -0.1, 0.4]), 6)
    0.274653
    """
    edge = _edges(edges)
    shares = _expected(expected, edge.size - 1)
    live = np.asarray(values, dtype=np.float64).ravel()
    live = live[np.isfinite(live)]
    if live.size == 0:
        return math.nan
    # bins of the distinct inner edges; bin q = (inner[q-1], inner[q]], outer ones open
    inner = np.unique(edge[1:-1])
    if edge[0] == edge[1]:
        # the reference minimum is a point mass: nothing of the reference lies below it, so
        # values below it get a bin of their own (reference share 0) instead of joining it
        inner = np.concatenate([[np.nextafter(edge[0], -np.inf)], inner])
    # each reference bin j = (e_j, e_{j+1}] moves to the distinct bin holding its right edge:
    # the same bin when untied, the bin of the point mass when it has zero width (and the last
    # one folds into the one below when the maximum itself is tied)
    target = np.searchsorted(inner, edge[1:], side="left")  # (k - 1,)
    reference = np.bincount(target, weights=shares, minlength=inner.size + 1)
    counts = np.bincount(np.searchsorted(inner, live, side="left"), minlength=inner.size + 1)
    actual = counts / live.size
    a = np.maximum(actual, PSI_EPSILON)
    e = np.maximum(reference, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(manifest: Manifest, values: ArrayLike) -> dict[str, float]:
    """PSI of each feature of a live window against the manifest's reference quantiles.

    Parameters
    ----------
    manifest : momentum.manifest.Manifest
        Supplies ``features.names``, ``reference_quantiles`` and ``quantile_levels``.
    values : array_like, shape (rows, N, d)
        Live features (``Features.values`` of the trailing window), d in manifest order;
        NaN entries (warm-up, inactive assets) are ignored.

    Returns
    -------
    dict of str to float
        One PSI per feature name, in manifest order (NaN for a feature with no finite value).

    Raises
    ------
    ValueError
        `values` is not 3-dimensional with ``d = len(manifest.features.names)``.
    """
    array = np.asarray(values, dtype=np.float64)
    names = manifest.features.names
    if array.ndim != 3 or array.shape[-1] != len(names):
        raise ValueError(
            f"`values` must have shape (rows, N, {len(names)}) for features {names}, got "
            f"{array.shape}"
        )
    shares = level_shares(manifest.quantile_levels)
    return {
        name: psi(manifest.reference_quantiles[name], array[..., i], shares)
        for i, name in enumerate(names)
    }


def signal_psi(manifest: Manifest, signals: ArrayLike) -> float:
    """PSI of live positions X against the quantiles of the model's validation positions.

    Parameters
    ----------
    manifest : momentum.manifest.Manifest
        Supplies ``signal_quantiles`` and ``quantile_levels``.
    signals : array_like, any shape (e.g. (dates, N))
        Served signals in [-1, 1]; NaN (not tradable) is ignored.

    Returns
    -------
    float
        The PSI (NaN when no signal is finite).
    """
    return psi(manifest.signal_quantiles, signals, level_shares(manifest.quantile_levels))


def window_psi_baseline(
    edges: Sequence[float],
    values: ArrayLike,
    window: int,
    expected: ArrayLike | None = None,
    *,
    level: float = BASELINE_LEVEL,
    max_windows: int = BASELINE_WINDOWS,
) -> float | None:
    """How far the reference period drifts from itself: a quantile of its windows' PSIs.

    Parameters
    ----------
    edges : sequence of float
        The reference quantiles (as for :func:`psi`).
    values : array_like, shape (rows, ...)
        The reference values in time order, rows first (e.g. ``(T, N)``); NaN ignored.
    window : int
        Rows per window: the live monitor's trailing window.
    expected : sequence of float, optional
        Reference shares per bin, as for :func:`psi`.
    level : float, default 0.95
        The quantile of the window PSIs returned.
    max_windows : int, default 200
        Windows scored at most, their starts evenly spaced over the rows.

    Returns
    -------
    float or None
        The `level` quantile of ``psi(edges, values[s : s + window])`` over window starts
        `s`; None when there are fewer than ``window`` rows or no window has a finite PSI.

    Examples
    --------
    Independent draws stay near the sampling noise; a persistent series does not:

    >>> rng = np.random.default_rng(0)
    >>> noise = rng.standard_normal((2000, 20))
    >>> walk = np.cumsum(rng.standard_normal(2000)) / 20
    >>> persistent = walk[:, None] + rng.standard_normal((2000, 20)) * 0.1
    >>> def deciles(x):
    ...     return np.quantile(x, np.linspace(0, 1, 11)).tolist()
    >>> window_psi_baseline(deciles(noise), noise, 63) < 0.05
    True
    >>> window_psi_baseline(deciles(persistent), persistent, 63) > 1.0
    True
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"`window` must be an int >= 2, got {window!r}")
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie in (0, 1), got {level!r}")
    if max_windows < 1:
        raise ValueError(f"`max_windows` must be positive, got {max_windows!r}")
    array = np.asarray(values, dtype=np.float64)
    if array.ndim < 1 or len(array) < window:
        return None
    count = min(max_windows, len(array) - window + 1)
    starts = np.unique(np.linspace(0, len(array) - window, count).round().astype(np.int64))
    scores = np.array([psi(edges, array[s : s + window], expected) for s in starts])
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return None
    return float(np.quantile(scores, level))
