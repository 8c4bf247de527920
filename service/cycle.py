"""One daily cycle: the stored closes up to a session become stored target positions.

``run_cycle(date)``:

1-3. the features up to `date` (`service.live_features`): the stored feature state
   advanced over the closes stored since, cleaned exactly as training's loader
   cleans a price file, with missing closes on `date` following the stale-data
   policy (``skip`` the cycle, or ``carry`` an asset's last close for at most
   ``max_carry_sessions`` sessions and flag it stale); the same numbers
   `compute_features` gives on the full stored history;
4. the contract tensor (`momentum.contract`) of that one date -> onnxruntime;
5. positions ``X`` from the graph's output by the manifest's sizer (`momentum.sizing`:
   the output itself, or sgn() of a forecast), then weights by the manifest's
   construction (`momentum.construction`): ``w = X * sigma_tgt / s / N_t`` (eq. 1,
   the default), demeaned first, or the sector-neutral mean-variance weights of gross
   one over the manifest's markets; optionally scaled by the ex-ante portfolio leverage
   (`ex_ante_vol_scale`) of the model's own recent returns;
6. one transaction (`service.store.write_cycle`), then subscribers are notified.

A failure at any step writes nothing of the cycle: the failure is recorded in
``cycle_runs`` and the last good positions stay in place, flagged stale. Running
a date again replaces its positions for that model version (one set per date
and version).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.construction import construct_weights, history_rows
from momentum.contract import contract_inputs, predict_rows, served_positions, tradable
from momentum.features import Features
from momentum.portfolio import VOL_TARGET, ex_ante_vol_scale
from momentum.sizing import size_positions
from service import store
from service.live_features import (
    PORTFOLIO_VOL_ROWS,
    BatchFeatures,
    LiveFeatures,
    SkipSession,
    batch_features,
    feature_parity,
    live_features,
    store_settled,
)
from service.model import LoadedModel

__all__ = [
    "CycleError",
    "CycleOptions",
    "CycleResult",
    "check_feature_parity",
    "run_cycle",
    "run_cycles",
]

log = logging.getLogger(__name__)


class CycleError(RuntimeError):
    """A cycle that cannot produce positions; the message says why."""


@dataclass(frozen=True)
class CycleOptions:
    """How a cycle turns signals into weights and treats missing closes (`service.config`)."""

    vol_target: float = VOL_TARGET
    portfolio_vol_target: bool = False
    stale_policy: Literal["skip", "carry"] = "skip"
    max_carry_sessions: int = 3
    # feature rows kept for the drift metrics (ServiceMetrics.drift_window)
    drift_rows: int = 63
    # feature states stored per model universe (older ones are pruned)
    keep_states: int = 5


@dataclass
class CycleResult:
    """What one cycle did; `positions` is indexed by ticker (empty unless it succeeded)."""

    as_of: pd.Timestamp
    model_name: str
    model_version: str | None
    status: Literal["succeeded", "failed", "skipped"]
    run_id: int
    error: str | None = None
    data_cutoff: pd.Timestamp | None = None
    seconds: float = 0.0
    inference_seconds: float = 0.0
    positions: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the feature rows up to as_of the cycle used, for the drift metrics (None unless it
    # succeeded), and whether they came from a state rebuilt from the whole history
    features: Features | None = None
    cold_start: bool = False
    # largest |incremental - full-history| feature difference, when the cycle checked it
    parity_max_abs: float | None = None
    # seconds by phase of a single cycle: read, features, inference, weights, write
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def n_stale(self) -> int:
        return int(self.positions["stale"].sum()) if len(self.positions) else 0


def model_weights(
    model: LoadedModel,
    features: Features,
    rows: np.ndarray,
    signal: np.ndarray,
    vol_target: float = VOL_TARGET,
) -> np.ndarray:
    """Weights ``[len(rows), N]`` of the positions `signal` (``[len(rows), N]``, NaN where
    not tradable) under the manifest's construction, its markets as the sectors; the
    covariance of ``sector_neutral_mv`` reads the returns of the rows before each date."""
    manifest = model.manifest
    if manifest.construction == "vol_scaled":  # the row's own vol only
        full, picked = signal, np.arange(len(rows))
        vol, returns = features.vol[rows], None
    else:
        full = np.full(features.vol.shape, np.nan)
        full[rows] = signal
        picked, vol, returns = rows, features.vol, features.returns
    return construct_weights(
        manifest.construction,
        full,
        vol,
        returns=returns,
        sectors=manifest.markets,
        rows=picked,
        vol_target=vol_target,
    )


def model_signal(model: LoadedModel, raw: np.ndarray) -> np.ndarray:
    """The graph's output as a served position: clipped to [-1, 1], sized by the manifest."""
    return size_positions(model.manifest.sizer, served_positions(raw))


def _portfolio_leverage(
    model: LoadedModel, features: Features, row: int, vol_target: float
) -> float:
    """Ex-ante leverage from the model's own unscaled portfolio over the recent past."""
    lookback = model.manifest.lookback
    first = max(lookback - 1, row - PORTFOLIO_VOL_ROWS)
    rows = np.arange(first, row + 1)
    signal = size_positions(
        model.manifest.sizer, predict_rows(model.positions, features, rows, lookback)
    )
    weights = model_weights(model, features, rows, signal, vol_target)
    # the unscaled book's daily return sum_i w_i r_i, NaN where it holds nothing
    held = np.isfinite(weights).any(axis=1)
    daily = np.where(held, np.nansum(weights * features.next_returns[rows], axis=1), np.nan)
    scale = ex_ante_vol_scale(daily, vol_target)[-1]
    return float(scale) if np.isfinite(scale) else 1.0


def _positions_frame(
    model: LoadedModel,
    features: Features,
    row: int,
    signal: np.ndarray,
    carried: list[str],
    options: CycleOptions,
) -> pd.DataFrame:
    """Outputs of the model at `row` -> the stored positions set (signal, vol, weight, stale)."""
    signal = np.where(tradable(features)[row], model_signal(model, signal), np.nan)
    weights = model_weights(model, features, np.array([row]), signal[None], options.vol_target)[0]
    if options.portfolio_vol_target:
        weights = weights * _portfolio_leverage(model, features, row, options.vol_target)
    return pd.DataFrame(
        {
            "signal": signal,
            "vol": features.annualised_vol[row],
            "weight": weights,
            "stale": [t in carried for t in model.manifest.tickers],
        },
        index=pd.Index(model.manifest.tickers, name="ticker"),
    )


def _needed_sessions(model: LoadedModel) -> int:
    """Stored sessions before a first cycle: the lookback, and the returns the
    construction's covariance reads (the first session has no return)."""
    returns = history_rows(model.manifest.construction)
    return max(model.manifest.lookback, returns + 1 if returns else 0)


def _compute(
    engine: sa.Engine, model: LoadedModel, as_of: pd.Timestamp, options: CycleOptions
) -> tuple[pd.DataFrame, float, LiveFeatures]:
    live = live_features(
        engine,
        model,
        as_of,
        stale_policy=options.stale_policy,
        max_carry_sessions=options.max_carry_sessions,
        portfolio_vol_target=options.portfolio_vol_target,
        drift_rows=options.drift_rows,
    )
    features = live.recent
    row = len(features.dates) - 1
    lookback = model.manifest.lookback
    if live.steps < lookback:
        raise CycleError(f"{live.steps} sessions stored; the model needs {lookback}")
    if live.steps < _needed_sessions(model):
        returns = history_rows(model.manifest.construction)
        raise CycleError(
            f"{live.steps} sessions stored; the {model.manifest.construction} construction "
            f"needs {returns} daily returns ({returns + 1} sessions)"
        )
    x = contract_inputs(features, np.array([row]), lookback)
    start = time.perf_counter()
    signal = model.positions(x)[0]
    inference = time.perf_counter() - start
    frame = _positions_frame(model, features, row, signal, live.carried, options)
    live.timings["inference"] = inference
    live.timings["weights"] = time.perf_counter() - start - inference
    return frame, inference, live


def run_cycle(
    engine: sa.Engine,
    model: LoadedModel,
    as_of: Any,
    *,
    options: CycleOptions | None = None,
    notify: Callable[[CycleResult], None] | None = None,
    check_parity: bool = False,
) -> CycleResult:
    """Compute, store and publish the positions of `model` for session `as_of`.

    Never raises for a data, model or write problem: the result says ``failed`` or
    ``skipped`` with the reason, which is also recorded in ``cycle_runs`` (and the
    last good positions are flagged stale). Only an error while recording that
    failure (the store is unreachable) propagates.

    With ``check_parity`` the features are also recomputed on the whole stored history
    and ``result.parity_max_abs`` says how far the incremental ones are from them.
    """
    options = options or CycleOptions()
    day = pd.Timestamp(as_of).normalize()
    clock = time.perf_counter()
    run = _run_record(model, day)
    try:
        frame, inference, live = _compute(engine, model, day, options)
        write = time.perf_counter()
        # one transaction: the positions, the run record and the feature state, or nothing
        with store.transaction(engine) as conn:
            run_id = store.write_cycle(
                conn, {**run, "finished_at": datetime.now(UTC), "data_cutoff": day}, frame
            )
            remember = store_settled(conn, live.settled, keep=options.keep_states)
        remember()  # committed: the next cycle may resume from this state in memory
        live.timings["write"] = time.perf_counter() - write
    except SkipSession as err:
        return _unsuccessful(engine, run, "skipped", str(err), clock)
    except Exception as err:
        return _failed(engine, run, err, clock)
    result = _stored(run, run_id, time.perf_counter() - clock, inference, frame, live.recent)
    result.cold_start, result.phases = live.cold, dict(live.timings)
    if check_parity:
        check_feature_parity(engine, model, result)
    _succeeded(result, notify)
    return result


def run_cycles(
    engine: sa.Engine,
    model: LoadedModel,
    sessions: Iterable[Any],
    *,
    options: CycleOptions | None = None,
    notify: Callable[[CycleResult], None] | None = None,
) -> Iterator[CycleResult]:
    """The cycles of several sessions, in date order, batched where the data allows.

    A run of sessions with every close stored (`service.live_features.batch_features`)
    gets its features in one pass and its positions from one model call per chunk of
    sessions (the contract's batch axis); each session is then stored in its own
    transaction, in order, and yielded, so a process killed in the middle leaves whole
    sessions only. Any other session goes through `run_cycle` alone (stale policy, gaps,
    too little history): the positions are the ones `run_cycle` stores for each session.

    Yields
    ------
    CycleResult
        One per session, as soon as it is stored.
    """
    options = options or CycleOptions()
    pending = sorted({pd.Timestamp(s).normalize() for s in sessions})
    while pending:
        try:
            batch = batch_features(
                engine,
                model,
                pending,
                portfolio_vol_target=options.portfolio_vol_target,
                drift_rows=options.drift_rows,
            )
        except Exception:  # the session's own cycle records what is wrong
            log.exception("batched features failed from %s", f"{pending[0]:%Y-%m-%d}")
            batch = None
        needed = _needed_sessions(model)
        days = [] if batch is None else [d for d in batch.rows if batch.steps[d] >= needed]
        if batch is None or not days or days[0] != pending[0]:
            yield run_cycle(engine, model, pending.pop(0), options=options, notify=notify)
            continue
        done = 0
        for result in _stored_batch(engine, model, batch, days, options, notify):
            done += 1
            yield result
            if result.status != "succeeded":
                break
        pending = pending[done:]


def _stored_batch(
    engine: sa.Engine,
    model: LoadedModel,
    batch: BatchFeatures,
    days: list[pd.Timestamp],
    options: CycleOptions,
    notify: Callable[[CycleResult], None] | None,
) -> Iterator[CycleResult]:
    """Positions of the batched `days` from one pass of inference, stored one by one."""
    lookback = model.manifest.lookback
    rows = np.array([batch.rows[d] for d in days])
    start = time.perf_counter()
    signals = predict_rows(model.positions, batch.features, rows, lookback)
    inference = (time.perf_counter() - start) / len(days)
    for i, day in enumerate(days):
        clock = time.perf_counter()
        run = _run_record(model, day)
        row = int(rows[i])
        try:
            frame = _positions_frame(model, batch.features, row, signals[i], [], options)
            last = i == len(days) - 1 and batch.settled.as_of == day
            with store.transaction(engine) as conn:
                run_id = store.write_cycle(
                    conn, {**run, "finished_at": datetime.now(UTC), "data_cutoff": day}, frame
                )
                remember = store_settled(
                    conn, batch.settled if last else None, keep=options.keep_states
                )
            remember()
        except Exception as err:
            yield _failed(engine, run, err, clock)
            return
        features = batch.features.slice_dates(max(0, row + 1 - batch.history), row + 1)
        seconds = time.perf_counter() - clock + inference
        result = _stored(run, run_id, seconds, inference, frame, features)
        result.cold_start = batch.cold and i == 0
        _succeeded(result, notify)
        yield result


def check_feature_parity(engine: sa.Engine, model: LoadedModel, result: CycleResult) -> None:
    """Set ``result.parity_max_abs``: its features against a recompute on the whole history.

    A failure of the check itself is logged and leaves the figure unset.
    """
    if result.features is None:
        return
    try:
        result.parity_max_abs = feature_parity(engine, model, result.features)
    except Exception:
        log.exception("feature parity check failed for %s", f"{result.as_of:%Y-%m-%d}")


def _run_record(model: LoadedModel, day: pd.Timestamp) -> dict[str, Any]:
    """The ``cycle_runs`` fields known when a cycle of `day` starts."""
    return {
        "as_of": day,
        "model_name": model.name,
        "model_version": model.version,
        "started_at": datetime.now(UTC),
    }


def _stored(
    run: dict[str, Any],
    run_id: int,
    seconds: float,
    inference: float,
    frame: pd.DataFrame,
    features: Features,
) -> CycleResult:
    """The result of a cycle whose positions `run_id` stored."""
    return CycleResult(
        as_of=run["as_of"],
        model_name=run["model_name"],
        model_version=run["model_version"],
        status="succeeded",
        run_id=run_id,
        data_cutoff=run["as_of"],
        seconds=seconds,
        inference_seconds=inference,
        positions=frame,
        features=features,
    )


def _failed(engine: sa.Engine, run: dict[str, Any], err: Exception, clock: float) -> CycleResult:
    """Log and record a cycle that raised."""
    log.error("cycle %s failed: %s\n%s", f"{run['as_of']:%Y-%m-%d}", err, traceback.format_exc())
    return _unsuccessful(engine, run, "failed", f"{type(err).__name__}: {err}", clock)


def _succeeded(result: CycleResult, notify: Callable[[CycleResult], None] | None) -> None:
    log.info(
        "cycle %s stored: %s %s, %d assets (%d stale), %.3f s",
        f"{result.as_of:%Y-%m-%d}",
        result.model_name,
        result.model_version,
        len(result.positions),
        result.n_stale,
        result.seconds,
    )
    if notify is not None:
        try:
            notify(result)
        except Exception:  # a broken subscriber must not undo a stored cycle
            log.exception("cycle subscriber failed for %s", f"{result.as_of:%Y-%m-%d}")


def _unsuccessful(
    engine: sa.Engine,
    run: dict[str, Any],
    status: Literal["failed", "skipped"],
    error: str,
    clock: float,
) -> CycleResult:
    run_id = store.record_failed_cycle(
        engine, {**run, "status": status, "error": error, "finished_at": datetime.now(UTC)}
    )
    log.warning("cycle %s %s: %s", f"{run['as_of']:%Y-%m-%d}", status, error)
    return CycleResult(
        as_of=run["as_of"],
        model_name=run["model_name"],
        model_version=run["model_version"],
        status=status,
        run_id=run_id,
        error=error,
        seconds=time.perf_counter() - clock,
    )
