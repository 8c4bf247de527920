"""Model explanations: SLP attributions, TFT interpretability weights, permutation importance.

Pure computations over trained models and `training.datasets.ModelData`; they return numpy
arrays and pandas frames and never plot (reports are built in `training.report`). Models run
in eval mode under ``torch.no_grad`` and get their previous train/eval mode back.

* **SLP attributions** (Tan, Roberts & Zohren 2023, STMOM). The SLP is linear before its
  tanh, ``X_t = tanh(W^T u_t + b)``, so the pre-activation of output asset ``o`` splits
  exactly into one term per input ``(asset a, step s, feature f)``:
  ``W[o, a, s, f] * u[a, s, f]`` (weights x inputs). Summing the terms and adding ``b[o]``
  gives the pre-activation back. `slp_attribution_summary` asks the paper's question: how
  much of a position comes from the asset's *own* history and how much from the *other*
  assets' (the cross-sectional part that makes STMOM more than time-series momentum).
* **TFT interpretability** (Wood et al. 2022; Lim et al. 2021 sec. 7). The Momentum
  Transformer's variable-selection weights (TFT eq. 6) and head-averaged causal attention
  (TFT eq. 16), read at each decision step on the sliding windows that
  `training.datasets.SequenceLayout` predicts with.
* **Permutation feature importance** (Boutier 2023, after Breiman 2001). For any registry
  model: the drop in the validation Sharpe of the cross-asset average captured return
  (`training.train.validation_sharpe`) when one feature is shuffled across dates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from momentum.sizing import Sizer
from training.datasets import Layout, ModelData, SpatioTemporalLayout
from training.models.slp import Slp
from training.models.tft import Tft, TftOutput
from training.train import validation_sharpe

__all__ = [
    "permutation_importance",
    "slp_attribution_summary",
    "slp_attributions",
    "tft_summary",
]

# Bounds the (rows, out, in, lookback, features) attribution block held at once in the summary.
_MAX_ATTRIBUTION_ENTRIES = 1 << 24
# Label of the pooled block in `slp_attribution_summary` (all output assets together).
ALL_OUTPUTS = "all"


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------


def _check_rows(rows: np.ndarray | Sequence[int], n_rows: int) -> np.ndarray:
    """`rows` as a non-empty 1-D int64 array of row positions inside ``[0, n_rows)``."""
    array = np.asarray(rows)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`rows` must be a non-empty 1-D array of row positions, got {array!r}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`rows` must hold integer row positions, got dtype {array.dtype}")
    bad = array[(array < 0) | (array >= n_rows)]
    if bad.size:
        raise ValueError(f"`rows` must lie in [0, {n_rows}), got {bad[:5].tolist()}")
    return array.astype(np.int64)


def _check_names(names: Sequence[str], expected: int, what: str, parameter: str) -> list[str]:
    """Names as a list of unique strings, one per `what`."""
    names = list(names)
    if len(names) != expected:
        raise ValueError(f"`{parameter}` must name {expected} {what}, got {len(names)}: {names}")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"`{parameter}` has duplicates: {duplicates}")
    return names


def _check_feature_names(feature_names: Sequence[str], data: ModelData) -> list[str]:
    return _check_names(feature_names, data.x.shape[2], "features", "feature_names")


def _check_slp(model: nn.Module, data: ModelData) -> Slp:
    if not isinstance(model, Slp):
        raise TypeError(f"`model` must be a training.models.slp.Slp, got {type(model).__name__}")
    cfg = model.config
    if (data.n_assets, data.x.shape[2]) != (cfg.n_assets, cfg.n_features):
        raise ValueError(
            f"`data` has {data.n_assets} assets and {data.x.shape[2]} features but the SLP "
            f"was built for {cfg.n_assets} assets and {cfg.n_features} features"
        )
    return model


# ---------------------------------------------------------------------------------------------
# SLP attributions (STMOM)
# ---------------------------------------------------------------------------------------------


def _slp_attributions(model: Slp, data: ModelData, rows: np.ndarray) -> np.ndarray:
    """Attributions without validation; see `slp_attributions`."""
    u = SpatioTemporalLayout(model.config.lookback)._inputs(data, rows)  # (rows, N, L, d)
    weights = model.attribution_weights().cpu().double().numpy()  # (N_out, N_in, L, d)
    # weights x inputs: term [r, o, a, s, f] of the pre-activation W^T u of output o
    return weights[None] * u.astype(np.float64)[:, None]  # (rows, N_out, N_in, L, d)


def slp_attributions(model: Slp, data: ModelData, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """Weights-x-inputs attribution of every SLP input to every output position.

    The SLP computes ``X_t[o] = tanh(sum_{a,s,f} W[o, a, s, f] u_t[a, s, f] + b[o])``
    (STMOM's ``tanh(W^T u + b)`` with ``W`` laid out by `Slp.attribution_weights`). The
    attribution of input ``(a, s, f)`` to output ``o`` is the term
    ``W[o, a, s, f] * u_t[a, s, f]``, so, exactly,
    ``tanh(attributions[r, o].sum() + b[o])`` is the position of asset ``o`` at ``rows[r]``.

    Parameters
    ----------
    model : Slp
        A (trained) spatio-temporal SLP.
    data : ModelData
        Model inputs; ``data.x`` has shape (T, N, d) matching the model.
    rows : array_like of int, shape (R,)
        Decision rows; each needs a full lookback window (``row >= lookback - 1``).

    Returns
    -------
    ndarray, shape (R, N_out, N_in, lookback, d), float64
        ``[r, o, a, s, f]``: contribution of feature ``f`` of input asset ``a`` at step ``s``
        (0 = oldest, ``lookback - 1`` = the decision date) to the pre-activation of output
        asset ``o`` at ``rows[r]``. The inputs are the model's own, NaN already replaced by 0,
        so inactive inputs contribute exactly 0.
    """
    model = _check_slp(model, data)
    rows = _check_rows(rows, data.x.shape[0])
    return _slp_attributions(model, data, rows)


def slp_attribution_summary(
    model: Slp,
    data: ModelData,
    rows: np.ndarray | Sequence[int],
    feature_names: Sequence[str],
    tickers: Sequence[str],
) -> pd.DataFrame:
    """Mean absolute SLP attribution by input feature, own asset versus the other assets.

    For each decision row and tradable output asset ``o`` (``data.tradable``; an untradable
    position is never taken), the absolute attributions of `slp_attributions` are summed over
    the lookback steps and split by input asset:

    * ``own[f]   = sum_s |W[o, o, s, f] u[o, s, f]|`` (the asset's own history: time-series
      momentum),
    * ``cross[f] = sum_{a != o} sum_s |W[o, a, s, f] u[a, s, f]|`` (all other assets: the
      cross-sectional part STMOM adds).

    These are averaged over the (row, output) pairs of each block: one block per output ticker
    and one pooled block over all outputs.

    Parameters
    ----------
    model : Slp
    data : ModelData
    rows : array_like of int, shape (R,)
        Decision rows, each ``>= lookback - 1``.
    feature_names : sequence of str, length d
        Names of the features, in ``data.x`` order.
    tickers : sequence of str, length N
        Asset names, in ``data.x`` order; none may equal ``"all"``.

    Returns
    -------
    DataFrame
        MultiIndex ``(output, feature)``: ``output`` is ``"all"`` (pooled, first) then each
        ticker in order; ``feature`` follows `feature_names`. Columns:

        ``own``, ``cross``
            Mean absolute attribution from the output asset's own inputs / from the other
            assets' inputs (units of the pre-activation).
        ``total``
            ``own + cross``.
        ``own_share``, ``cross_share``, ``share``
            ``own``, ``cross`` and ``total`` divided by the block's total attribution (summed
            over features and both sources), so within a block ``own_share + cross_share``
            summed over features is 1, and ``cross_share.sum()`` is the fraction of the
            attribution that comes from other assets.
        ``n``
            Number of (row, output) pairs averaged. A ticker never tradable on `rows` has
            ``n = 0`` and NaN everywhere else.
    """
    model = _check_slp(model, data)
    rows = _check_rows(rows, data.x.shape[0])
    names = _check_feature_names(feature_names, data)
    tickers = _check_names(tickers, data.n_assets, "assets", "tickers")
    if ALL_OUTPUTS in tickers:
        raise ValueError(f"`tickers` must not contain {ALL_OUTPUTS!r}, the pooled block's label")

    n_assets, n_features = data.n_assets, len(names)
    own_sum = np.zeros((n_assets, n_features))  # per output asset, summed over rows
    cross_sum = np.zeros((n_assets, n_features))
    count = np.zeros(n_assets)
    per_row = n_assets * n_assets * model.config.lookback * n_features
    chunk = max(1, _MAX_ATTRIBUTION_ENTRIES // per_row)
    diagonal = np.arange(n_assets)
    for lo in range(0, len(rows), chunk):
        part = rows[lo : lo + chunk]
        magnitude = np.abs(_slp_attributions(model, data, part)).sum(axis=3)  # (c, out, in, d)
        own = magnitude[:, diagonal, diagonal]  # (c, out, d): input asset == output asset
        cross = magnitude.sum(axis=2) - own  # (c, out, d)
        traded = data.tradable[part]  # (c, out)
        own_sum += np.where(traded[..., None], own, 0.0).sum(axis=0)
        cross_sum += np.where(traded[..., None], cross, 0.0).sum(axis=0)
        count += traded.sum(axis=0)

    blocks = {ALL_OUTPUTS: (own_sum.sum(axis=0), cross_sum.sum(axis=0), count.sum())}
    for i, ticker in enumerate(tickers):
        blocks[ticker] = (own_sum[i], cross_sum[i], count[i])
    frames = []
    for label, (own_total, cross_total, n) in blocks.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            own_mean = own_total / n if n else np.full(n_features, np.nan)
            cross_mean = cross_total / n if n else np.full(n_features, np.nan)
            grand = own_mean.sum() + cross_mean.sum()
            frame = pd.DataFrame(
                {
                    "own": own_mean,
                    "cross": cross_mean,
                    "total": own_mean + cross_mean,
                    "own_share": own_mean / grand,
                    "cross_share": cross_mean / grand,
                    "share": (own_mean + cross_mean) / grand,
                    "n": np.full(n_features, int(n)),
                },
                index=pd.MultiIndex.from_product([[label], names], names=["output", "feature"]),
            )
        frames.append(frame)
    return pd.concat(frames)


# ---------------------------------------------------------------------------------------------
# TFT interpretability (Momentum Transformer)
# ---------------------------------------------------------------------------------------------


def _sequence_windows(
    data: ModelData, rows: np.ndarray, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """The windows `SequenceLayout.predict` feeds, and each row's step inside its window.

    Returns ``x`` of shape (R, N, seq_len, d), ``x[r, a]`` being asset ``a``'s window ending
    at ``rows[r]`` (oldest first), and ``step`` of shape (R,). Rows earlier than
    ``seq_len - 1`` take the first ``seq_len`` rows and read their output at step ``row``;
    the model is causal, so that output still sees rows ``<= row`` only.
    """
    starts = np.maximum(rows - seq_len + 1, 0)
    index = np.minimum(starts[:, None] + np.arange(seq_len), data.x.shape[0] - 1)  # (R, seq)
    windows = data.x[index]  # (R, seq, N, d)
    return windows.transpose(0, 2, 1, 3), np.minimum(rows, seq_len - 1)  # (R, N, seq, d), (R,)


def tft_summary(
    model: Tft,
    data: ModelData,
    rows: np.ndarray | Sequence[int],
    feature_names: Sequence[str],
    *,
    seq_len: int = 63,
    max_windows: int = 4096,
) -> dict[str, pd.DataFrame]:
    """Variable importance and attention by lag of a Momentum Transformer.

    Every asset's window of ``seq_len`` days ending at each decision row is run through the
    model, with the asset index as ticker id, exactly as `SequenceLayout(seq_len).predict`
    does; the weights are read at the decision step (the one whose position is traded). Only
    tradable (row, asset) pairs (``data.tradable``) are averaged.

    Parameters
    ----------
    model : Tft
        A (trained) Momentum Transformer with ``n_tickers >= N``.
    data : ModelData
        ``data.x`` of shape (T, N, d).
    rows : array_like of int, shape (R,)
        Decision rows.
    feature_names : sequence of str, length d
        Names of the features, in ``data.x`` order.
    seq_len : int
        Window length (63 = "TFT-SHORT"); use the training ``TrainConfig.seq_len``.
    max_windows : int
        Most (row, asset) windows run at once; bounds memory (attention is seq x seq each).

    Returns
    -------
    dict of str to DataFrame
        ``"variable_importance"``: index ``feature`` in `feature_names` order; columns
        ``mean`` and ``std`` of the variable-selection weight (TFT eq. 6) over (row, asset)
        pairs. Each pair's weights sum to 1 over features, so ``mean`` sums to 1.

        ``"attention_by_lag"``: index ``lag`` = 0 (the decision day itself, attending to
        itself) .. ``seq_len - 1``; columns ``mean`` and ``std`` of the head-averaged attention
        (TFT eq. 16) that the decision step pays to the step ``lag`` days earlier. Lags before
        the start of the data (early rows) carry weight 0, so ``mean`` sums to 1.
    """
    if not isinstance(model, Tft):
        raise TypeError(f"`model` must be a training.models.tft.Tft, got {type(model).__name__}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"`seq_len` must be a positive integer, got {seq_len!r}")
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"`max_windows` must be a positive integer, got {max_windows!r}")
    rows = _check_rows(rows, data.x.shape[0])
    names = _check_feature_names(feature_names, data)
    n_assets = data.n_assets
    if model.config.n_features != len(names):
        raise ValueError(
            f"the TFT was built for {model.config.n_features} features, `data` has {len(names)}"
        )
    if model.config.n_tickers < n_assets:
        raise ValueError(
            f"the TFT knows {model.config.n_tickers} ticker ids but `data` has {n_assets} "
            "assets (ticker id = asset index)"
        )
    traded = data.tradable[rows]  # (R, N)
    if not traded.any():
        raise ValueError("no asset is tradable on `rows`: nothing to summarise")

    device = next(model.parameters()).device
    chunk = max(1, max_windows // n_assets)
    selection, by_lag = [], []  # per tradable (row, asset): (d,) and (seq_len,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(rows), chunk):
                part = rows[lo : lo + chunk]
                windows, step = _sequence_windows(data, part, seq_len)  # (c, N, seq, d), (c,)
                n_part = len(part)
                x = windows.reshape(n_part * n_assets, seq_len, len(names))  # (c * N, seq, d)
                tickers = np.tile(np.arange(n_assets, dtype=np.int64), n_part)
                output: TftOutput = model(
                    torch.from_numpy(np.ascontiguousarray(x)).to(device),
                    torch.from_numpy(tickers).to(device),
                )
                variable = output.variable_weights.double().cpu().numpy()  # (c * N, seq, d)
                attention = output.attention.double().cpu().numpy()  # (c * N, seq, seq)
                variable = variable.reshape(n_part, n_assets, seq_len, len(names))
                attention = attention.reshape(n_part, n_assets, seq_len, seq_len)
                chosen = np.arange(n_part)
                at_step = variable[chosen, :, step]  # (c, N, d): weights at each decision step
                query = attention[chosen, :, step]  # (c, N, seq): decision step's query row
                # lag l reads key step (step - l); keys before the window start do not exist
                key = step[:, None] - np.arange(seq_len)[None, :]  # (c, seq)
                lagged = np.take_along_axis(query, np.maximum(key, 0)[:, None, :], axis=2)
                lagged = np.where((key >= 0)[:, None, :], lagged, 0.0)  # (c, N, seq)
                mask = traded[lo : lo + chunk]
                selection.append(at_step[mask])
                by_lag.append(lagged[mask])
    finally:
        model.train(was_training)

    weights = np.concatenate(selection)  # (pairs, d)
    lags = np.concatenate(by_lag)  # (pairs, seq)
    return {
        "variable_importance": pd.DataFrame(
            {"mean": weights.mean(axis=0), "std": weights.std(axis=0)},
            index=pd.Index(names, name="feature"),
        ),
        "attention_by_lag": pd.DataFrame(
            {"mean": lags.mean(axis=0), "std": lags.std(axis=0)},
            index=pd.RangeIndex(seq_len, name="lag"),
        ),
    }


# ---------------------------------------------------------------------------------------------
# Permutation feature importance (Boutier 2023)
# ---------------------------------------------------------------------------------------------


def _input_rows(rows: np.ndarray, steps: int, n_rows: int) -> np.ndarray:
    """Sorted unique data rows that the layouts read to predict `rows` (see `_windows`)."""
    starts = np.maximum(rows - steps + 1, 0)
    index = np.minimum(starts[:, None] + np.arange(steps)[None, :], n_rows - 1)
    return np.unique(index)


def _permute_feature(
    x: np.ndarray, feature: int, dates: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Copy of `x` (T, N, d) with feature `feature` shuffled across `dates`, same for all assets.

    Moving whole date slices keeps the cross-section of that feature intact (an asset's
    value moves together with every other asset's), so only its link to time is broken.
    """
    out = x.copy()
    out[dates, :, feature] = x[rng.permutation(dates), :, feature]
    return out


def permutation_importance(
    model: nn.Module,
    layout: Layout,
    data: ModelData,
    rows: np.ndarray | Sequence[int],
    feature_names: Sequence[str],
    n_repeats: int = 5,
    seed: int = 0,
    sizer: Sizer = "identity",
) -> pd.DataFrame:
    """Drop in validation Sharpe when one feature is shuffled across dates (Boutier 2023).

    The score is `training.train.validation_sharpe`: the Sharpe ratio of the cross-asset
    average vol-scaled captured return on `rows`, the same number early stopping uses. For
    feature ``j`` and each repeat, the dates that the model reads to predict `rows` (each
    row's ``layout.steps``-day window) are permuted in feature ``j`` only, one permutation for
    all assets; positions, labels, vols and the tradable mask are otherwise unchanged. A
    feature the model ignores has exactly zero importance.

    Parameters
    ----------
    model : nn.Module
        Any registry model.
    layout : Layout
        Its data layout (`training.train.layout_for`).
    data : ModelData
        ``data.x`` of shape (T, N, d).
    rows : array_like of int, shape (R,)
        Decision rows to score (at least 2 dates).
    feature_names : sequence of str, length d
        Names of the features, in ``data.x`` order.
    n_repeats : int
        Permutations per feature.
    seed : int
        Seed of the permutations; the same seed gives the same frame.
    sizer : str
        How outputs become positions (`momentum.sizing`): ``"sign"`` for a model trained
        on the mse or binary objective, so the Sharpe is of what it trades.

    Returns
    -------
    DataFrame
        Index ``feature`` in `feature_names` order. Columns: ``baseline_sharpe`` (the same for
        every feature), ``mean_drop`` and ``std_drop`` (mean and population std over the
        repeats of ``baseline - permuted Sharpe``; larger = more important) and
        ``permuted_sharpe`` (mean permuted Sharpe).
    """
    names = _check_feature_names(feature_names, data)
    rows = _check_rows(rows, data.x.shape[0])
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1:
        raise ValueError(f"`n_repeats` must be a positive integer, got {n_repeats!r}")
    baseline = validation_sharpe(model, layout, data, rows, sizer=sizer)
    if not np.isfinite(baseline):
        raise ValueError(
            "the baseline Sharpe on `rows` is undefined (fewer than 2 dates with positions, or "
            "returns without dispersion); permutation importance needs a finite baseline"
        )
    dates = _input_rows(rows, layout.steps, data.x.shape[0])
    rng = np.random.default_rng(seed)
    permuted = np.empty((len(names), n_repeats))
    for j in range(len(names)):
        for k in range(n_repeats):
            shuffled = dataclasses.replace(data, x=_permute_feature(data.x, j, dates, rng))
            permuted[j, k] = validation_sharpe(model, layout, shuffled, rows, sizer=sizer)
    drops = baseline - permuted  # (d, n_repeats)
    return pd.DataFrame(
        {
            "baseline_sharpe": np.full(len(names), baseline),
            "mean_drop": drops.mean(axis=1),
            "std_drop": drops.std(axis=1),
            "permuted_sharpe": permuted.mean(axis=1),
        },
        index=pd.Index(names, name="feature"),
    )
