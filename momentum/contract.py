"""The one serving contract: how features become the input tensor of every exported model.

Every ONNX graph takes ``features: float32[batch, n_assets, lookback, n_features]``
(assets in manifest order, oldest step first) and returns
``positions: float32[batch, n_assets]`` in [-1, 1] for the last step. Training
(`training.datasets`) and serving (`service`) both build that tensor here, so
the numbers a model saw in training are the numbers it sees in production.

Features enter unscaled, as in the papers; a NaN feature (warm-up, an asset
not trading yet) enters as 0 and the asset takes no position that day
(`tradable`).

>>> import numpy as np
>>> values = np.arange(12, dtype=float).reshape(3, 2, 2)  # (T=3, N=2, d=2)
>>> values[0, 1, 0] = np.nan
>>> x = input_windows(model_values(values), np.array([1, 2]), lookback=2)
>>> x.shape, x.dtype
((2, 2, 2, 2), dtype('float32'))
>>> x[0, 1].tolist()  # asset 1 at row 1: rows 0 and 1, oldest first, NaN -> 0
[[0.0, 3.0], [6.0, 7.0]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from momentum.features import Features

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "contract_inputs",
    "input_windows",
    "model_values",
    "predict_rows",
    "served_positions",
    "tradable",
]

INPUT_NAME = "features"
OUTPUT_NAME = "positions"
# (date, asset) windows per model call in `predict_rows` (one date at least): bounds the
# contract tensor's memory and the runtime's activations, ~0.5 MB a window for a TFT of
# hidden 80 (8,192 windows of 3,103 assets took a 9.8 GB peak in onnxruntime)
MAX_WINDOWS = 2048


def model_values(values: np.ndarray) -> np.ndarray:
    """Feature values as the models take them: float32, non-finite entries 0.

    Parameters
    ----------
    values : ndarray, shape (T, N, d)

    Returns
    -------
    ndarray, shape (T, N, d), float32
    """
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def served_positions(raw: np.ndarray) -> np.ndarray:
    """A model's raw positions as served and stored: float64, clipped to [-1, 1].

    The graphs end in tanh (or a sign-preserving squash), whose float32 result can round to
    1 + 1.2e-7; X must lie in [-1, 1] (DMN eq. 1). Every consumer of positions (the cycle,
    the manifest's reference deciles of the signal) takes them through here, so the drift
    monitor compares like with like: a reference edge at 1 + 1.2e-7 against live values
    clipped to 1 splits the saturated mass into bins of float noise.

    >>> served_positions(np.array([1.0000001, -1.0000001, 0.5], dtype=np.float32)).tolist()
    [1.0, -1.0, 0.5]
    """
    return np.clip(np.asarray(raw, dtype=np.float64), -1.0, 1.0)


def tradable(features: Features) -> np.ndarray:
    """Where a position can be taken: every feature and the vol are finite, shape (T, N)."""
    return np.isfinite(features.values).all(axis=-1) & np.isfinite(features.vol)


def input_windows(x: np.ndarray, rows: np.ndarray, lookback: int) -> np.ndarray:
    """The contract tensor for decision rows `rows`: the last `lookback` steps of each.

    Parameters
    ----------
    x : ndarray, shape (T, N, d)
        Model values (`model_values`).
    rows : ndarray of int
        Decision rows; each needs a full window (``row >= lookback - 1``).
    lookback : int

    Returns
    -------
    ndarray, shape (len(rows), N, lookback, d), float32, C-contiguous
    """
    rows = np.asarray(rows, dtype=np.int64)
    if lookback < 1:
        raise ValueError(f"`lookback` must be positive, got {lookback}")
    if x.ndim != 3:
        raise ValueError(f"`x` must have shape (T, N, d), got {x.shape}")
    if rows.size and (rows.min() < lookback - 1 or rows.max() >= len(x)):
        raise ValueError(
            f"`rows` must lie in [{lookback - 1}, {len(x)}) for a lookback of {lookback}, "
            f"got {int(rows.min())}..{int(rows.max())}"
        )
    index = rows[:, None] - lookback + 1 + np.arange(lookback)[None, :]  # (rows, lookback)
    windows = x[index]  # (rows, lookback, assets, features)
    return np.ascontiguousarray(windows.transpose(0, 2, 1, 3), dtype=np.float32)


def contract_inputs(features: Features, rows: np.ndarray, lookback: int) -> np.ndarray:
    """`input_windows` of `features` for `rows`: what a served model is fed."""
    return input_windows(model_values(features.values), rows, lookback)


def predict_rows(
    positions: Callable[[np.ndarray], np.ndarray],
    features: Features,
    rows: np.ndarray,
    lookback: int,
    *,
    max_windows: int = MAX_WINDOWS,
) -> np.ndarray:
    """A served model's positions for many decision rows (:func:`served_positions`), NaN
    where not tradable.

    Parameters
    ----------
    positions : callable
        Contract tensor ``(batch, N, lookback, d)`` -> positions ``(batch, N)`` (an
        onnxruntime session's ``positions`` output, say).
    features : Features
    rows : ndarray of int
        Decision rows, each with a full window.
    lookback : int
    max_windows : int
        Rows go to the model in chunks of at most this many (row, asset) windows: the
        contract tensor of months of thousands of assets would be gigabytes.

    Returns
    -------
    ndarray, shape (len(rows), N), float64
    """
    rows = np.asarray(rows, dtype=np.int64)
    chunk = max(1, max_windows // len(features.tickers))
    out = np.full((len(rows), len(features.tickers)), np.nan)
    for lo in range(0, len(rows), chunk):
        part = rows[lo : lo + chunk]
        out[lo : lo + len(part)] = served_positions(
            positions(contract_inputs(features, part, lookback))
        )
    out[~tradable(features)[rows]] = np.nan
    return out
