"""One daily cycle: the stored closes up to a session become stored target positions.

``run_cycle(date)``:

1. closes of the model's universe up to `date` from the store, cleaned exactly as
   training's loader cleans a price file (`momentum.data.validate_prices`);
2. missing closes on `date` follow the stale-data policy: ``skip`` the cycle, or
   ``carry`` an asset's last close for at most ``max_carry_sessions`` sessions and
   flag it stale;
3. `momentum.features.compute_features` on the full stored history: the same
   numbers training computed for that date (the EWMs have infinite memory);
4. the contract tensor (`momentum.contract`) of that one date -> onnxruntime;
5. weights ``w = X * sigma_tgt / s / N_t`` (eq. 1, `momentum.portfolio.target_weights`),
   optionally scaled by the ex-ante portfolio leverage (`ex_ante_vol_scale`) of
   the model's own recent returns;
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from momentum.contract import contract_inputs, predict_rows, tradable
from momentum.data import validate_prices
from momentum.features import Features, compute_features
from momentum.manifest import feature_config
from momentum.portfolio import (
    VOL_TARGET,
    ex_ante_vol_scale,
    strategy_returns,
    target_weights,
)
from service import store
from service.model import LoadedModel

__all__ = ["CycleError", "CycleOptions", "CycleResult", "run_cycle"]

log = logging.getLogger(__name__)

# history used for the ex-ante portfolio vol estimate (EWM span 60, see ex_ante_vol_scale)
_PORTFOLIO_VOL_ROWS = 180


class CycleError(RuntimeError):
    """A cycle that cannot produce positions; the message says why."""


@dataclass(frozen=True)
class CycleOptions:
    """How a cycle turns signals into weights and treats missing closes (`service.config`)."""

    vol_target: float = VOL_TARGET
    portfolio_vol_target: bool = False
    stale_policy: Literal["skip", "carry"] = "skip"
    max_carry_sessions: int = 3


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
    # what the cycle computed, for the drift metrics (None unless it succeeded)
    features: Features | None = None

    @property
    def n_stale(self) -> int:
        return int(self.positions["stale"].sum()) if len(self.positions) else 0


class _Skip(Exception):
    """The cycle cannot run on the data it has (recorded as ``skipped``)."""


def _closes(
    engine: sa.Engine, model: LoadedModel, as_of: pd.Timestamp, options: CycleOptions
) -> tuple[pd.DataFrame, list[str]]:
    """Clean closes up to `as_of` and the tickers whose close on `as_of` is carried."""
    tickers = model.manifest.tickers
    raw = store.read_closes(engine, end=as_of, tickers=tickers)
    if raw.empty or as_of not in raw.index:
        raise _Skip(f"no closes stored for {as_of:%Y-%m-%d}")
    # training cleaned its price file with the same function (load_prices -> validate_prices)
    closes = validate_prices(raw, source="store")
    closes = closes.reindex(columns=tickers)
    today = closes.loc[as_of]
    missing = [t for t in tickers if not np.isfinite(today[t])]
    carried: list[str] = []
    if missing:
        if options.stale_policy == "skip":
            raise _Skip(f"no close on {as_of:%Y-%m-%d} for {missing} (stale policy: skip)")
        for ticker in missing:
            column = closes[ticker]
            known = column[column.notna()]
            if known.empty:
                continue  # never traded yet: no position, nothing to carry
            gap = len(closes.loc[known.index[-1] :]) - 1  # sessions since its last close
            if gap > options.max_carry_sessions:
                raise _Skip(
                    f"{ticker}: last close {known.index[-1]:%Y-%m-%d} is {gap} sessions before "
                    f"{as_of:%Y-%m-%d}, beyond max_carry_sessions={options.max_carry_sessions}"
                )
            closes.loc[known.index[-1] :, ticker] = known.iloc[-1]
            carried.append(ticker)
    return closes, carried


def _portfolio_leverage(model: LoadedModel, features: Any, row: int, vol_target: float) -> float:
    """Ex-ante leverage from the model's own unscaled portfolio over the recent past."""
    lookback = model.manifest.lookback
    first = max(lookback - 1, row - _PORTFOLIO_VOL_ROWS)
    rows = np.arange(first, row + 1)
    signal = predict_rows(model.positions, features, rows, lookback)
    daily = strategy_returns(signal, features.next_returns[rows], features.vol[rows])
    scale = ex_ante_vol_scale(daily, vol_target)[-1]
    return float(scale) if np.isfinite(scale) else 1.0


def _compute(
    engine: sa.Engine, model: LoadedModel, as_of: pd.Timestamp, options: CycleOptions
) -> tuple[pd.DataFrame, pd.Timestamp, float, Features]:
    closes, carried = _closes(engine, model, as_of, options)
    features = compute_features(closes, feature_config(model.manifest.features))
    row = len(features.dates) - 1
    lookback = model.manifest.lookback
    if row < lookback - 1:
        raise CycleError(f"{row + 1} sessions stored; the model needs {lookback}")
    x = contract_inputs(features, np.array([row]), lookback)
    start = time.perf_counter()
    # float32 tanh can round to 1 + 1.2e-7; X must lie in [-1, 1] (eq. 1)
    signal = np.clip(model.positions(x)[0].astype(np.float64), -1.0, 1.0)
    inference = time.perf_counter() - start
    signal = np.where(tradable(features)[row], signal, np.nan)
    vol = features.vol[row]
    weights = target_weights(signal[None], vol[None], options.vol_target)[0]
    if options.portfolio_vol_target:
        weights = weights * _portfolio_leverage(model, features, row, options.vol_target)
    frame = pd.DataFrame(
        {
            "signal": signal,
            "vol": features.annualised_vol[row],
            "weight": weights,
            "stale": [t in carried for t in model.manifest.tickers],
        },
        index=pd.Index(model.manifest.tickers, name="ticker"),
    )
    return frame, closes.index[-1], inference, features


def run_cycle(
    engine: sa.Engine,
    model: LoadedModel,
    as_of: Any,
    *,
    options: CycleOptions | None = None,
    notify: Callable[[CycleResult], None] | None = None,
) -> CycleResult:
    """Compute, store and publish the positions of `model` for session `as_of`.

    Never raises for a data, model or write problem: the result says ``failed`` or
    ``skipped`` with the reason, which is also recorded in ``cycle_runs`` (and the
    last good positions are flagged stale). Only an error while recording that
    failure (the store is unreachable) propagates.
    """
    options = options or CycleOptions()
    day = pd.Timestamp(as_of).normalize()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    run: dict[str, Any] = {
        "as_of": day,
        "model_name": model.name,
        "model_version": model.version,
        "started_at": started,
    }
    try:
        frame, cutoff, inference, features = _compute(engine, model, day, options)
        # one transaction: the positions and the run record, or nothing
        run_id = store.write_cycle(
            engine, {**run, "finished_at": datetime.now(UTC), "data_cutoff": cutoff}, frame
        )
    except _Skip as err:
        return _unsuccessful(engine, run, "skipped", str(err), clock)
    except Exception as err:
        log.error("cycle %s failed: %s\n%s", f"{day:%Y-%m-%d}", err, traceback.format_exc())
        return _unsuccessful(engine, run, "failed", f"{type(err).__name__}: {err}", clock)
    result = CycleResult(
        as_of=day,
        model_name=model.name,
        model_version=model.version,
        status="succeeded",
        run_id=run_id,
        data_cutoff=cutoff,
        seconds=time.perf_counter() - clock,
        inference_seconds=inference,
        positions=frame,
        features=features,
    )
    if notify is not None:
        try:
            notify(result)
        except Exception:  # a broken subscriber must not undo a stored cycle
            log.exception("cycle subscriber failed for %s", f"{day:%Y-%m-%d}")
    return result


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
