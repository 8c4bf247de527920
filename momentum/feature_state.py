"""Incremental features: carry every recursion from one session to the next.

A `FeatureState` holds what `compute_features` keeps in flight at the end of a
panel: the winsoriser's and the return vol's EWM moments, the MACD EWMs, the
rolling-window sums and ring buffers of recent values (`momentum.feature_kernel`),
plus the last ``history`` rows of features (a model's lookback window) and the
raw panel's tail (each asset's last close and how many sessions ago it was).

``state.advance(closes)`` consumes the next sessions in O(N) per session and
returns their features; they equal `compute_features` on the whole history, bit
for bit, because both run the same compiled steps in the same order. A state
serialises to bytes (`to_bytes` / `from_bytes`), versioned with
`FEATURES_VERSION`, so a service can store it with each cycle and resume after
a restart without reading the history again.

`continue_panel` cleans the next raw sessions exactly as
`momentum.data.validate_prices` cleans the whole panel (short interior gaps
forward-filled, long ones refused) and says how many of them are *settled*: a
trailing gap of at most ``max_fill`` sessions may still be filled by a later
close, so sessions from its start on are not final yet.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from momentum import feature_kernel
from momentum.data import PriceDataError
from momentum.features import (
    FEATURES_VERSION,
    FeatureConfig,
    Features,
    concat_rows,
    market_returns,
    next_day_target,
)

__all__ = ["FeatureState", "FeatureStateError", "STATE_FORMAT"]

# Bump when the serialised layout changes (FEATURES_VERSION covers the maths).
STATE_FORMAT = 1


class FeatureStateError(ValueError):
    """A state that cannot be used: other features, other assets, or out-of-order dates."""


@dataclass
class FeatureState:
    """Everything needed to compute the next session's features without the history.

    Build one with `FeatureState.empty` (then `advance` over a panel) or
    `FeatureState.from_prices`. Attributes are read-only by convention; only
    `advance` changes a state (use `copy` to branch).

    Attributes
    ----------
    config : FeatureConfig
    tickers : tuple of str
        The assets, in column order.
    steps : int
        Sessions consumed so far.
    last_date : Timestamp or None
        The last session consumed.
    history : int
        Rows of features kept in `recent`.
    recent : Features
        The last ``min(history, steps)`` rows of features, returns and vol.
    last_close : ndarray, shape (N,)
        Each asset's last consumed close (NaN before its first).
    gap : ndarray, shape (N,)
        Sessions since that close (0: it closed on `last_date`).
    index_level : float
        The index level on `last_date` (extended features only; else NaN).
    arrays : dict of ndarray
        The recursions' state (`momentum.feature_kernel`).
    """

    config: FeatureConfig
    tickers: tuple[str, ...]
    steps: int
    last_date: pd.Timestamp | None
    history: int
    recent: Features
    last_close: np.ndarray
    gap: np.ndarray
    index_level: float
    arrays: dict[str, np.ndarray]

    # --- building ---------------------------------------------------------------------

    @classmethod
    def empty(
        cls, tickers: Any, config: FeatureConfig | None = None, *, history: int = 1
    ) -> FeatureState:
        """A state before any session, for these tickers (in this order)."""
        config = config or FeatureConfig()
        tickers = tuple(str(t) for t in tickers)
        if not tickers or len(set(tickers)) != len(tickers):
            raise ValueError(f"`tickers` must be unique and non-empty, got {len(tickers)}")
        if int(history) != history or history < 1:
            raise ValueError(f"`history` must be a positive integer, got {history}")
        n = len(tickers)
        return cls(
            config=config,
            tickers=tickers,
            steps=0,
            last_date=None,
            history=int(history),
            recent=_features(config, tickers, np.empty((0, n, len(config.names))), *_no_rows(n)),
            last_close=np.full(n, np.nan),
            gap=np.zeros(n, dtype=np.int64),
            index_level=np.nan,
            arrays=feature_kernel.empty_state(config, n),
        )

    @classmethod
    def from_prices(
        cls,
        prices: pd.DataFrame,
        config: FeatureConfig | None = None,
        *,
        index: pd.Series | None = None,
        history: int = 1,
    ) -> FeatureState:
        """The state at the end of a (clean) price panel; see `compute_features`."""
        state = cls.empty(prices.columns, config, history=history)
        state.advance(prices, index=index)
        return state

    def copy(self) -> FeatureState:
        """An independent copy (advancing it leaves this one as it is)."""
        return FeatureState(
            config=self.config,
            tickers=self.tickers,
            steps=self.steps,
            last_date=self.last_date,
            history=self.history,
            recent=self.recent,  # never modified in place
            last_close=self.last_close.copy(),
            gap=self.gap.copy(),
            index_level=self.index_level,
            arrays={k: v.copy() for k, v in self.arrays.items()},
        )

    # --- advancing --------------------------------------------------------------------

    def advance(self, closes: pd.DataFrame, *, index: pd.Series | None = None) -> Features:
        """Consume the next sessions and return their features.

        Parameters
        ----------
        closes : DataFrame
            Clean closes (see `continue_panel`) on sessions after `last_date`,
            increasing; columns a subset of `tickers` (the others have no close).
        index : Series, optional
            Index levels on those sessions; required for the extended features.

        Returns
        -------
        Features
            Those sessions' rows; ``target`` is NaN on the last one (tomorrow unknown).
        """
        block = self._block(closes)
        dates = pd.DatetimeIndex(block.index, name="date")
        market = None
        if self.config.extended:
            market = self._market(index, dates)
        values_raw = block.to_numpy(dtype=np.float64)
        values, returns, vol = feature_kernel.advance(
            self.config, self.arrays, self.steps, values_raw, market
        )
        # the raw panel's tail, for continue_panel and the stale policy
        for row in values_raw:
            seen = ~np.isnan(row)
            self.gap = np.where(seen, 0, self.gap + 1)
            self.last_close = np.where(seen, row, self.last_close)
        self.steps += len(dates)
        self.last_date = dates[-1]
        out = _features(self.config, self.tickers, values, returns, vol, dates)
        self.recent = _tail(self.recent, out, self.history)
        return out

    def update(
        self, closes: pd.Series | dict[str, float], date: Any, *, index_level: float | None = None
    ) -> Features:
        """`advance` by one session: ``closes`` maps ticker -> close (missing: no close)."""
        day = pd.Timestamp(date)
        row = pd.Series(closes, dtype=np.float64)
        frame = pd.DataFrame([row.to_numpy()], index=pd.DatetimeIndex([day]), columns=row.index)
        index = None if index_level is None else pd.Series([float(index_level)], index=[day])
        return self.advance(frame, index=index)

    def continue_panel(
        self, closes: pd.DataFrame, *, max_fill: int = 5, source: str = "<closes>"
    ) -> tuple[pd.DataFrame, int]:
        """Clean the next raw sessions as `validate_prices` cleans them in the whole panel.

        Parameters
        ----------
        closes : DataFrame
            Raw closes after `last_date` (NaN: none stored), columns a subset of `tickers`.
        max_fill : int
            Longest interior gap that is forward-filled (`validate_prices`).

        Returns
        -------
        filled : DataFrame
            The sessions with short interior gaps forward-filled, columns `tickers`.
        settled : int
            How many leading rows are final: the rows from the start of a trailing
            gap of at most ``max_fill`` sessions may still change when a close arrives.

        Raises
        ------
        PriceDataError
            A gap longer than ``max_fill`` sessions that a close ends.
        """
        block = self._block(closes)
        raw = block.to_numpy(dtype=np.float64)
        valid = ~np.isnan(raw)
        # sessions since each asset's previous close, before and after each row
        # (-1: the asset has not closed yet)
        run = np.where(np.isnan(self.last_close), -1, self.gap)
        before, after = np.empty(raw.shape, np.int64), np.empty(raw.shape, np.int64)
        for b in range(len(raw)):
            before[b] = run
            run = np.where(valid[b], 0, np.where(run >= 0, run + 1, -1))
            after[b] = run
        too_long = valid & (before > max_fill)
        if too_long.any():
            b, j = (int(v[0]) for v in np.nonzero(too_long))
            length = int(before[b, j])
            first = f"{block.index[b - length]:%Y-%m-%d}" if b >= length else "before the block"
            raise PriceDataError(
                f"no price for {length} sessions in a row, from {first} to "
                f"{block.index[b - 1]:%Y-%m-%d} (gaps of at most max_fill={max_fill} are "
                "forward-filled)",
                source=source,
                ticker=self.tickers[j],
            )
        # a hole: no close, an earlier one, and a later one in this block
        later = np.flip(np.logical_or.accumulate(np.flip(valid, axis=0), axis=0), axis=0)
        hole = ~valid & (after > 0) & later
        filled = raw.copy()
        last = self.last_close.copy()
        for b in range(len(raw)):
            filled[b] = np.where(hole[b], last, raw[b])
            last = np.where(valid[b], raw[b], last)
        # a trailing gap short enough to be filled by a later close: not final from its start
        pending = (run > 0) & (run <= max_fill)
        settled = len(raw) - int(run[pending].max()) if pending.any() else len(raw)
        frame = pd.DataFrame(filled, index=block.index, columns=block.columns)
        return frame, max(settled, 0)

    # --- serialising ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The state as an ``.npz`` archive (arrays plus a JSON header)."""
        meta = {
            "format": STATE_FORMAT,
            "features_version": FEATURES_VERSION,
            "config": self.config.as_dict(),
            "tickers": list(self.tickers),
            "steps": self.steps,
            "last_date": None if self.last_date is None else f"{self.last_date:%Y-%m-%d}",
            "history": self.history,
            "index_level": None if np.isnan(self.index_level) else self.index_level,
        }
        recent = self.recent
        payload = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "last_close": self.last_close,
            "gap": self.gap,
            "recent_values": recent.values,
            "recent_returns": recent.returns,
            "recent_vol": recent.vol,
            "recent_dates": recent.dates.to_numpy(dtype="datetime64[ns]").astype(np.int64),
            **{f"state_{k}": v for k, v in self.arrays.items()},
        }
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **payload)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
        """Inverse of `to_bytes`; refuses a state of another format or features version."""
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(bytes(archive["meta"]).decode())
        except Exception as err:
            raise FeatureStateError(f"not a serialised FeatureState: {err}") from None
        if meta.get("format") != STATE_FORMAT:
            raise FeatureStateError(
                f"feature state format {meta.get('format')}, this momentum reads {STATE_FORMAT}"
            )
        if meta.get("features_version") != FEATURES_VERSION:
            raise FeatureStateError(
                f"feature state of features version {meta.get('features_version')}, this "
                f"momentum computes version {FEATURES_VERSION}: rebuild it from the prices"
            )
        config = FeatureConfig.from_dict(meta["config"])
        tickers = tuple(meta["tickers"])
        dates = pd.DatetimeIndex(archive["recent_dates"].astype("datetime64[ns]"), name="date")
        recent = _features(
            config,
            tickers,
            archive["recent_values"],
            archive["recent_returns"],
            archive["recent_vol"],
            dates,
        )
        arrays = {k: archive[f"state_{k}"] for k in feature_kernel.STATE_ARRAYS}
        level = meta["index_level"]
        return cls(
            config=config,
            tickers=tickers,
            steps=int(meta["steps"]),
            last_date=None if meta["last_date"] is None else pd.Timestamp(meta["last_date"]),
            history=int(meta["history"]),
            recent=recent,
            last_close=archive["last_close"],
            gap=archive["gap"],
            index_level=np.nan if level is None else float(level),
            arrays=arrays,
        )

    # --- helpers ----------------------------------------------------------------------

    def _block(self, closes: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(closes, pd.DataFrame):
            raise TypeError(f"`closes` must be a DataFrame, got {type(closes).__name__}")
        known = frozenset(self.tickers)
        unknown = [str(c) for c in closes.columns if str(c) not in known]
        if unknown:
            raise FeatureStateError(f"`closes` has tickers the state does not: {unknown[:5]}")
        dates = pd.DatetimeIndex(closes.index)
        if len(dates) == 0:
            raise FeatureStateError("`closes` has no sessions")
        if not dates.is_monotonic_increasing or not dates.is_unique:
            raise FeatureStateError("`closes` dates must be strictly increasing")
        if self.last_date is not None and dates[0] <= self.last_date:
            raise FeatureStateError(
                f"`closes` starts on {dates[0]:%Y-%m-%d}, not after the state's last session "
                f"{self.last_date:%Y-%m-%d}"
            )
        block = closes.reindex(columns=list(self.tickers)).astype(np.float64)
        block.columns = pd.Index(self.tickers, name="ticker")
        block.index = pd.DatetimeIndex(dates, name="date")
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(block.to_numpy()) & ~(block.to_numpy() > 0) | np.isinf(block.to_numpy())
        if bad.any():
            b, j = (int(v[0]) for v in np.nonzero(bad))
            raise FeatureStateError(
                f"close {float(block.to_numpy()[b, j])!r} of {self.tickers[j]} on {dates[b]:%Y-%m-%d} is not "
                "a positive finite number"
            )
        return block

    def _market(self, index: pd.Series | None, dates: pd.DatetimeIndex) -> np.ndarray:
        if index is None:
            raise ValueError("`index` is required when `config.extended` is True")
        returns, self.index_level = market_returns(index, dates, self.index_level)
        return returns


def _no_rows(n: int) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
    return np.empty((0, n)), np.empty((0, n)), pd.DatetimeIndex([], name="date")


def _features(
    config: FeatureConfig,
    tickers: tuple[str, ...],
    values: np.ndarray,
    returns: np.ndarray,
    vol: np.ndarray,
    dates: pd.DatetimeIndex,
) -> Features:
    return Features(
        values=values,
        names=config.names,
        dates=pd.DatetimeIndex(dates, name="date"),
        tickers=tickers,
        returns=returns,
        vol=vol,
        target=next_day_target(returns, vol, config.vol_target),
        config=config,
    )


def _tail(recent: Features, new: Features, rows: int) -> Features:
    """The last `rows` rows of `recent` followed by `new` (copies: never views of `new`)."""
    keep = max(0, rows - len(new.dates))
    old = recent.slice_dates(max(0, len(recent.dates) - keep), len(recent.dates))
    tail = new.slice_dates(max(0, len(new.dates) - rows), len(new.dates))
    last = concat_rows(old, tail)
    # own arrays: a view would keep a whole panel's features alive
    return _features(
        last.config,
        last.tickers,
        last.values.copy(),
        last.returns.copy(),
        last.vol.copy(),
        last.dates,
    )
