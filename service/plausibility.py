"""Plausibility of closes at ingest: a sane absolute range, and no jump from the previous close.

A close that is finite and positive can still be wrong by orders of magnitude (a price
sent in cents, a bad tick, ``1e308``); stored, it feeds the features, the positions and the
paper ledger. :func:`check_plausible` rejects, per row and with the figure in the reason:

* a close outside ``[min_close, max_close]``;
* a close whose ratio to the ticker's previous close is above ``max_ratio`` or below
  ``1 / max_ratio`` (default 5x either way), unless the row carries ``override=True``
  (a real split or crash the desk has checked).

The previous close of a row is the newest close of its ticker dated before it, among the
closes already stored and the other rows of the batch (a batch may hold many sessions),
within :data:`LOOKBACK_DAYS` calendar days: a ticker silent for longer has no previous
close here and only the absolute range applies. A row that replaces a stored close
(a correction) is compared with the close before it, not with the value it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service import store

__all__ = ["LOOKBACK_DAYS", "PlausibilityRules", "check_plausible"]

LOOKBACK_DAYS = 14
"""Calendar days back in which a previous close is looked for (~10 sessions)."""


@dataclass(frozen=True)
class PlausibilityRules:
    """Bounds a close must satisfy (``Settings.min_close``, ``max_close``, ``max_close_ratio``).

    Attributes
    ----------
    min_close, max_close : float
        Inclusive absolute range; defaults 1e-4 and 1e7 (any listed share's price in any
        currency unit a desk would feed).
    max_ratio : float
        Largest ratio to the previous close either way (> 1); default 5.
    """

    min_close: float = 1e-4
    max_close: float = 1e7
    max_ratio: float = 5.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_close) and self.min_close > 0):
            raise ValueError(f"`min_close` must be finite and positive, got {self.min_close}")
        if not (np.isfinite(self.max_close) and self.max_close > self.min_close):
            raise ValueError(
                f"`max_close` must be finite and above `min_close` ({self.min_close}), "
                f"got {self.max_close}"
            )
        if not (np.isfinite(self.max_ratio) and self.max_ratio > 1):
            raise ValueError(f"`max_ratio` must be finite and above 1, got {self.max_ratio}")


def check_plausible(
    conn: sa.Connection,
    batch: pd.DataFrame,
    valid: np.ndarray,
    override: np.ndarray,
    rules: PlausibilityRules,
    reasons: dict[int, list[str]],
) -> None:
    """Add the reasons of implausible rows of `batch` to `reasons` (row position -> list).

    Parameters
    ----------
    conn : sqlalchemy.Connection
        The ingest's transaction: the previous closes are read where the batch is written.
    batch : pandas.DataFrame
        Normalised rows: ``date`` (datetime64), ``ticker`` (str), ``close`` (float64).
    valid : numpy.ndarray
        Shape ``(len(batch),)``, bool: rows that passed the other checks (only those are
        judged, and only those serve as another row's previous close).
    override : numpy.ndarray
        Shape ``(len(batch),)``, bool: rows exempt from the ratio check.
    rules : PlausibilityRules
    reasons : dict
        Updated in place.
    """
    closes = batch["close"].to_numpy(dtype=np.float64)
    outside = valid & ((closes < rules.min_close) | (closes > rules.max_close))
    for i in np.flatnonzero(outside).tolist():
        reasons.setdefault(i, []).append(
            f"close {float(closes[i])!r} is outside the plausible range "
            f"[{rules.min_close:g}, {rules.max_close:g}]"
        )
    judged = valid & ~outside
    if not judged.any():
        return
    dates = pd.DatetimeIndex(batch["date"])
    rows = np.flatnonzero(judged)
    previous = _previous_closes(conn, dates[rows], batch["ticker"].to_numpy()[rows], closes[rows])
    ratio = closes[rows] / previous  # NaN where there is no previous close
    with np.errstate(invalid="ignore"):
        jump = (ratio > rules.max_ratio) | (ratio < 1 / rules.max_ratio)
    for k in np.flatnonzero(jump & ~override[rows]).tolist():
        i = int(rows[k])
        reasons.setdefault(i, []).append(
            f"close {float(closes[i])!r} is {float(ratio[k]):.4g}x the previous close "
            f"{float(previous[k])!r}, beyond the plausible {rules.max_ratio:g}x either way; "
            "send it with override=true if it is right (a split, a crash)"
        )


def _previous_closes(
    conn: sa.Connection, dates: pd.DatetimeIndex, tickers: np.ndarray, closes: np.ndarray
) -> np.ndarray:
    """Each row's previous close (NaN: none within `LOOKBACK_DAYS`); shape ``(len(dates),)``."""
    lookback = pd.Timedelta(days=LOOKBACK_DAYS)
    stored = store.read_closes(
        conn,
        start=dates.min() - lookback,
        end=dates.max(),
        tickers=sorted(set(tickers.tolist())),
    )
    # the stored closes, long, less those the batch replaces; then the batch's own rows
    values = stored.to_numpy()
    i, k = np.nonzero(~np.isnan(values))
    stored_days = stored.index.to_numpy(dtype="datetime64[ns]")[i]
    stored_tickers = stored.columns.to_numpy(dtype=object)[k]
    batch_days = dates.to_numpy(dtype="datetime64[ns]")
    replaced = np.zeros(len(stored_days), dtype=bool)
    if len(stored_days):  # (a bulk load into an empty range has nothing to replace)
        replaced = pd.MultiIndex.from_arrays([stored_days, stored_tickers]).isin(
            pd.MultiIndex.from_arrays([batch_days, tickers])
        )
    day = np.concatenate([stored_days[~replaced], batch_days])
    close = np.concatenate([values[i, k][~replaced], closes])
    row = np.concatenate([np.full((~replaced).sum(), -1), np.arange(len(dates))])
    codes, _ = pd.factorize(np.concatenate([stored_tickers[~replaced], tickers]))
    order = np.lexsort((day, codes))  # by ticker, then date
    day, close, row, codes = day[order], close[order], row[order], codes[order]
    before = np.full(len(order), np.nan)
    same = (codes[1:] == codes[:-1]) & (day[1:] - day[:-1] <= lookback.to_timedelta64())
    before[1:] = np.where(same, close[:-1], np.nan)
    out = np.full(len(dates), np.nan)
    mine = row >= 0
    out[row[mine]] = before[mine]
    return out
