"""The cycle's features: the stored feature state advanced over the day's closes.

A cycle for session t needs the model's lookback window of features ending at t
(and, for the drift metrics and the ex-ante portfolio scaling, a few more rows).
`live_features` gets them without reading the history:

1. the newest stored `FeatureState` of this model's features and universe as of a
   session before t (`service.store.latest_feature_state`);
2. the closes stored after that session up to t, cleaned exactly as training's
   loader cleans the whole panel (`FeatureState.continue_panel`: short interior
   gaps forward-filled, long ones refused);
3. the stale-data policy on t (``skip``, or ``carry`` an asset's last close);
4. the state advanced over those sessions (`FeatureState.advance`, O(N) each).

The state as of the newest *settled* session is stored for the next cycle, in the
transaction that stores the cycle's positions (`store_settled`): a
session is settled when no asset has a trailing gap that a later close could
still fill, and no carried close went into it. A close written on date d drops
every state as of d or later (`service.store`), so a late close or a correction
makes the next cycle resume from an older state, or rebuild from the history
when none is left (a cold start).

`feature_parity` is the other path: `compute_features` on the whole stored
history, as the service computed before states existed, a chunk of assets at a
time (an asset's features depend on its own closes only, and on the index levels
every chunk gets, so the chunks give what one call gives, in a fraction of the
memory). A model with extended features names its market index series in its
manifest; the service stores its levels beside the closes, under that name, and
both paths read them with the universe's closes (`_stored_closes`). The parity check runs it
every few cycles and compares (`parity_max_abs`): training/serving skew is
measured, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.construction import history_rows as construction_rows
from momentum.data import PriceDataError, validate_prices
from momentum.feature_state import FeatureState, FeatureStateError
from momentum.features import FEATURES_VERSION, Features, compute_features, concat_rows
from momentum.manifest import feature_config
from service import store
from service.model import LoadedModel

__all__ = [
    "BatchFeatures",
    "LiveFeatures",
    "SettledState",
    "SkipSession",
    "batch_features",
    "feature_key",
    "feature_parity",
    "history_rows",
    "live_features",
    "parity_max_abs",
    "store_settled",
]

log = logging.getLogger(__name__)

# history used for the ex-ante portfolio vol estimate (EWM span 60, see ex_ante_vol_scale)
PORTFOLIO_VOL_ROWS = 180
# sessions a state rebuilt from the history advances at a time (a year of features)
_REBUILD_ROWS = 252


class SkipSession(Exception):
    """The cycle cannot run on the data it has (recorded as ``skipped``)."""


@dataclass(frozen=True)
class LiveFeatures:
    """The features a cycle of session `as_of` uses.

    Attributes
    ----------
    recent : Features
        The last ``history_rows`` rows ending at `as_of` (fewer when less is stored).
    steps : int
        Sessions of history behind `recent` (the row index of `as_of` is ``steps - 1``).
    carried : list of str
        Tickers whose close on `as_of` is a carried one (stale policy ``carry``).
    cold : bool
        The state was rebuilt from the whole stored history (no usable stored state).
    settled : SettledState or None
        The state as of the newest settled session, to store with the cycle's positions
        (`store_settled`); None when no new session settled.
    """

    recent: Features
    steps: int
    carried: list[str]
    cold: bool
    settled: SettledState | None = None
    # seconds spent reading (stored state, closes) and computing (cleaning, advancing,
    # serialising the settled state)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchFeatures:
    """The features of several sessions computed at once (`batch_features`).

    Attributes
    ----------
    features : Features
        The rows the state kept before the run, then every session of the run.
    rows : dict
        Each batched session -> its row in `features`.
    steps : dict
        Each batched session -> sessions of history up to and including it.
    history : int
        Rows a single cycle would keep (`history_rows`).
    cold : bool
        The state was rebuilt from the whole stored history.
    settled : SettledState
        The state after the last session of the run.
    """

    features: Features
    rows: dict[pd.Timestamp, int]
    steps: dict[pd.Timestamp, int]
    history: int
    cold: bool
    settled: SettledState


@dataclass(frozen=True)
class SettledState:
    """A serialised `FeatureState` and where it goes in ``feature_states``."""

    key: str
    as_of: pd.Timestamp
    steps: int
    state: bytes
    # the state object itself, when it is not advanced further (saves decoding `state`)
    snapshot: FeatureState | None = None


def history_rows(model: LoadedModel, portfolio_vol_target: bool, drift_rows: int = 63) -> int:
    """Feature rows a cycle keeps: the lookback, the drift window, the returns the
    construction's covariance reads, and the portfolio-vol window behind all of them."""
    window = max(model.manifest.lookback, construction_rows(model.manifest.construction))
    rows = max(window, drift_rows)
    if portfolio_vol_target:
        rows = max(rows, window + PORTFOLIO_VOL_ROWS)
    return rows


def feature_key(model: LoadedModel, history: int) -> str:
    """What a stored state is of: features version and config, universe in order, rows kept."""
    spec = {
        "features_version": FEATURES_VERSION,
        "config": feature_config(model.manifest.features).as_dict(),
        "tickers": list(model.manifest.tickers),
        "history": history,
    }
    if model.manifest.features.index is not None:  # (keys of the default set unchanged)
        spec["index"] = model.manifest.features.index
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def live_features(
    engine: sa.Engine,
    model: LoadedModel,
    as_of: pd.Timestamp,
    *,
    stale_policy: str = "skip",
    max_carry_sessions: int = 3,
    portfolio_vol_target: bool = False,
    drift_rows: int = 63,
) -> LiveFeatures:
    """The features of session `as_of` from the stored state and the closes after it.

    Raises
    ------
    SkipSession
        No close stored on `as_of`, or the stale policy skips it.
    momentum.data.PriceDataError
        The stored closes have a gap training's cleaning refuses.
    """
    tickers = list(model.manifest.tickers)
    clock = time.perf_counter()
    state, key, cold = _resume(engine, model, as_of, portfolio_vol_target, drift_rows)
    raw, index = _closes_after(engine, state, as_of, _index_name(model))
    read = time.perf_counter() - clock
    if raw.empty or as_of not in raw.index:
        raise SkipSession(f"no closes stored for {as_of:%Y-%m-%d}")
    clock = time.perf_counter()
    filled, settled = state.continue_panel(raw, source="store")
    # no close ever: none before the state, none since
    empty = np.isnan(state.last_close) & filled.isna().all(axis=0).to_numpy()
    never = [tickers[j] for j in np.flatnonzero(empty)]
    if never:
        # training's loader refuses a price column without a price (validate_prices)
        raise PriceDataError(
            "has no prices (the column is empty)" if len(never) == 1 else "have no prices",
            source="store",
            ticker=", ".join(never[:5]) + (" ..." if len(never) > 5 else ""),
        )
    carried, settled = _stale_policy(
        state, filled, settled, as_of, stale_policy, max_carry_sessions
    )
    to_store = None
    if settled:
        state.advance(filled.iloc[:settled], index=index)
        assert state.last_date is not None
        final = settled == len(filled)  # else `state` goes on past the stored session
        to_store = SettledState(
            key,
            state.last_date,
            state.steps,
            state.to_bytes(),
            snapshot=state if final else None,
        )
    if settled < len(filled):
        # carried or still-open sessions: not stored
        state.advance(filled.iloc[settled:], index=index)
    return LiveFeatures(
        recent=state.recent,
        steps=state.steps,
        carried=carried,
        cold=cold,
        settled=to_store,
        timings={"read": read, "features": time.perf_counter() - clock},
    )


def batch_features(
    engine: sa.Engine,
    model: LoadedModel,
    days: list[pd.Timestamp],
    *,
    portfolio_vol_target: bool = False,
    drift_rows: int = 63,
) -> BatchFeatures | None:
    """The features of a run of sessions at once, for a batched replay or catch-up.

    The run is the leading part of `days` (increasing) whose sessions, and every stored
    session between them, have a close for every asset: then no stale policy or gap
    cleaning is involved and each session's features are the ones its own cycle would
    compute. None when `days[0]` is not such a session (its own cycle decides what to do).
    """
    state, key, cold = _resume(engine, model, days[0], portfolio_vol_target, drift_rows)
    raw, index = _closes_after(engine, state, days[-1], _index_name(model))
    complete = raw.notna().all(axis=1).to_numpy()
    usable = len(raw) if complete.all() else int(np.argmin(complete))
    block = raw.iloc[:usable]
    wanted: list[pd.Timestamp] = []
    for day in days:  # the leading days of `days` the block covers
        if day not in block.index:
            break
        wanted.append(day)
    if not wanted:
        return None
    block = block.loc[: wanted[-1]]
    before = state.recent
    features = concat_rows(before, state.advance(block, index=index))
    first = state.steps - len(block)  # sessions consumed before the block
    found = block.index.get_indexer(pd.DatetimeIndex(wanted))
    position = dict(zip(wanted, found.tolist(), strict=True))
    assert state.last_date is not None
    return BatchFeatures(
        features=features,
        rows={d: len(before.dates) + int(i) for d, i in position.items()},
        steps={d: first + int(i) + 1 for d, i in position.items()},
        history=state.history,
        cold=cold,
        settled=SettledState(key, state.last_date, state.steps, state.to_bytes(), snapshot=state),
    )


def store_settled(
    bind: sa.Engine | sa.Connection, settled: SettledState | None, *, keep: int
) -> Callable[[], None]:
    """Store a settled state (if any), keeping the newest `keep` of its key.

    Returns the function to call once the transaction has committed: it lets the next
    cycle of this process reuse the state without reading it back.
    """
    if settled is None:
        return lambda: None
    s = settled
    created = store.write_feature_state(bind, s.key, s.as_of, s.steps, s.state, keep=keep)
    engine = bind.engine if isinstance(bind, sa.Connection) else bind

    def remember() -> None:
        state = s.snapshot if s.snapshot is not None else FeatureState.from_bytes(s.state)
        with _LAST_STORED_LOCK:
            _LAST_STORED[(_store_id(engine), s.key)] = (s.as_of, created, state)

    return remember


def _store_id(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# assets recomputed at a time by the parity check: at 3,103 assets x 5,000 sessions one
# compute_features call peaks 1.4 GB above its input, chunks of 512 at 0.17 GB
PARITY_ASSETS = 512


def feature_parity(
    engine: sa.Engine, model: LoadedModel, recent: Features, *, assets: int = PARITY_ASSETS
) -> float:
    """`parity_max_abs` of `recent` against `compute_features` on every stored close up to
    its last date, cleaned as training cleans, computed `assets` assets at a time."""
    tickers = list(model.manifest.tickers)
    raw, index = _stored_closes(
        engine, tickers, _index_name(model), end=recent.dates[-1], bulk=True
    )
    closes = validate_prices(raw[raw.notna().any(axis=1)], source="store").reindex(columns=tickers)
    del raw
    config = feature_config(model.manifest.features)
    worst = 0.0
    for lo in range(0, len(tickers), assets):
        full = compute_features(closes.iloc[:, lo : lo + assets], config, index=index)
        worst = max(worst, parity_max_abs(recent.slice_assets(lo, lo + assets), full))
    return worst


def parity_max_abs(recent: Features, full: Features) -> float:
    """Largest |recent - full| over the rows of `recent` (features and vol).

    `full` is `compute_features` up to the last date of `recent`; +inf when the dates
    differ or a value is NaN on one side only.
    """
    rows = len(recent.dates)
    if rows == 0 or rows > len(full.dates) or not recent.dates.equals(full.dates[-rows:]):
        return float("inf")
    worst = 0.0
    pairs = ((recent.values, full.values[-rows:]), (recent.vol, full.vol[-rows:]))
    for got, want in pairs:
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(got - want), initial=0.0)))
    return worst


def _resume(
    engine: sa.Engine,
    model: LoadedModel,
    as_of: pd.Timestamp,
    portfolio_vol_target: bool,
    drift_rows: int,
) -> tuple[FeatureState, str, bool]:
    """The newest stored state before `as_of`, or an empty one; its key; whether empty."""
    history = history_rows(model, portfolio_vol_target, drift_rows)
    key = feature_key(model, history)
    state = _stored_state(engine, key, as_of)
    if state is not None:
        return state, key, False
    config = feature_config(model.manifest.features)
    state = FeatureState.empty(model.manifest.tickers, config, history=history)
    _rebuild(engine, state, as_of, _index_name(model))
    return state, key, True


def _rebuild(
    engine: sa.Engine, state: FeatureState, before: pd.Timestamp, index_name: str | None
) -> None:
    """Advance an empty state over every stored close before `before`.

    One bulk read (`store.read_closes` with ``bulk=True``: a SQLite file streams through
    Arrow) gives the wide panel, 124 MB at 3,103 assets x 5,000 sessions; the state then
    advances `_REBUILD_ROWS` sessions at a time, so that the features it returns on the way
    (8 float64 a cell) never exist for the whole history at once.
    """
    last = before - pd.Timedelta(days=1)
    raw, index = _stored_closes(engine, list(state.tickers), index_name, end=last, bulk=True)
    raw = raw[raw.notna().any(axis=1)]
    if raw.empty:
        return
    filled, settled = state.continue_panel(raw, source="store")
    del raw
    for lo in range(0, settled, _REBUILD_ROWS):
        state.advance(filled.iloc[lo : min(lo + _REBUILD_ROWS, settled)], index=index)


def _closes_after(
    engine: sa.Engine, state: FeatureState, end: pd.Timestamp, index_name: str | None
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The universe's stored closes after the state's last session up to `end` (sessions
    where one of them has a close), and the index levels (`_stored_closes`)."""
    start = None if state.last_date is None else state.last_date + pd.Timedelta(days=1)
    raw, index = _stored_closes(engine, list(state.tickers), index_name, start=start, end=end)
    return raw[raw.notna().any(axis=1)], index


def _stored_closes(
    engine: sa.Engine,
    tickers: list[str],
    index_name: str | None,
    *,
    start: Any = None,
    end: Any = None,
    bulk: bool = False,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The tickers' stored closes, and the levels of the index series `index_name` (stored
    beside them, for the extended features) on the dates it has any; None without one."""
    columns = tickers + ([index_name] if index_name is not None else [])
    raw = store.read_closes(engine, start=start, end=end, tickers=columns, bulk=bulk)
    if index_name is None:
        return raw, None
    return raw[tickers], raw[index_name].dropna()


def _index_name(model: LoadedModel) -> str | None:
    return model.manifest.features.index


# The newest state this process stored, per (store, key): the next cycle resumes from it
# without reading and decoding tens of MB, when the store still holds that very row (same
# as-of date and creation time; a close written since, or another writer, replaces it).
_LAST_STORED: dict[tuple[str, str], tuple[pd.Timestamp, Any, FeatureState]] = {}
_LAST_STORED_LOCK = threading.Lock()


def _stored_state(engine: sa.Engine, key: str, as_of: pd.Timestamp) -> FeatureState | None:
    stamp = store.feature_state_stamp(engine, key, before=as_of)
    if stamp is None:
        return None
    with _LAST_STORED_LOCK:
        cached = _LAST_STORED.get((_store_id(engine), key))
    if cached is not None and (cached[0], cached[1]) == stamp:
        return cached[2].copy()  # the caller advances it in place
    found = store.latest_feature_state(engine, key, before=as_of)
    if found is None:
        return None
    day, blob = found
    try:
        return FeatureState.from_bytes(blob)
    except FeatureStateError as err:
        log.warning(
            "stored feature state as of %s unusable, rebuilding: %s", f"{day:%Y-%m-%d}", err
        )
        return None


def _stale_policy(
    state: FeatureState,
    filled: pd.DataFrame,
    settled: int,
    as_of: pd.Timestamp,
    policy: str,
    max_carry_sessions: int,
) -> tuple[list[str], int]:
    """Apply the stale policy to `as_of` (the last row of `filled`, changed in place).

    Returns the carried tickers and the settled rows left: a carried close must not
    go into a stored state (the real close may still arrive).
    """
    values = filled.to_numpy()
    missing = np.flatnonzero(np.isnan(values[-1]))
    if missing.size == 0:
        return [], settled
    tickers = [str(filled.columns[int(j)]) for j in missing]
    if policy == "skip":
        raise SkipSession(f"no close on {as_of:%Y-%m-%d} for {tickers} (stale policy: skip)")
    carried: list[str] = []
    for j, ticker in zip(missing, tickers, strict=True):
        seen = np.flatnonzero(~np.isnan(values[:, j]))
        if seen.size:
            gap, last = len(values) - 1 - int(seen[-1]), float(values[seen[-1], j])
            since = f"last close {filled.index[seen[-1]]:%Y-%m-%d}"
        else:
            gap, last = int(state.gap[j]) + len(values), float(state.last_close[j])
            since = "last close"
        if gap > max_carry_sessions:
            raise SkipSession(
                f"{ticker}: {since} is {gap} sessions before {as_of:%Y-%m-%d}, beyond "
                f"max_carry_sessions={max_carry_sessions}"
            )
        # max_carry_sessions <= max_fill: a stored state never ends inside a carried gap
        assert gap <= len(values), (ticker, gap, len(values))
        filled.iloc[len(values) - gap :, j] = last
        carried.append(ticker)
        settled = min(settled, len(values) - gap)
    return carried, settled
