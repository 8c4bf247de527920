"""The read side (service.queries): the previous set, the cycle context and the service history.

Sets are written by hand with `store.write_cycle` so that every date, version and weight is
known; each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service import store
from service.cycle import CycleResult
from service.queries import cycle_context, previous_positions, service_history

NAME = "slp"
TICKERS = ["AAA", "BBB", "CCC"]


def _write(engine, day: str, weights, *, version: str = "v1", signals=None, stale=False) -> int:
    frame = pd.DataFrame(
        {
            "signal": np.zeros(3) if signals is None else signals,
            "vol": 0.2,
            "weight": weights,
            "stale": stale,
        },
        index=TICKERS,
    )
    run = {"as_of": day, "model_name": NAME, "model_version": version}
    return store.write_cycle(engine, run, frame)


def _result(day: str, status: str = "succeeded", version: str | None = "v1") -> CycleResult:
    return CycleResult(
        as_of=pd.Timestamp(day),
        model_name=NAME,
        model_version=version,
        status=status,
        run_id=0,
        positions=pd.DataFrame(
            {"signal": 0.0, "vol": 0.2, "weight": 0.1, "stale": [False, True, False]},
            index=TICKERS,
        ),
    )


def test_the_previous_set_is_the_newest_dated_strictly_before(engine):
    assert previous_positions(engine, NAME, "2021-03-29") is None
    _write(engine, "2021-03-26", [0.1, 0.2, 0.3])
    _write(engine, "2021-03-29", [0.4, 0.5, 0.6])
    _write(engine, "2021-03-30", [0.7, 0.8, 0.9], version="v2")
    # the set of the day itself is never its own predecessor
    before = previous_positions(engine, NAME, "2021-03-29")
    assert before["weight"].tolist() == [0.1, 0.2, 0.3]
    # any version by default: v2's set of 03-30 is what a trader holds on 03-31
    assert previous_positions(engine, NAME, "2021-03-31")["weight"].tolist() == [0.7, 0.8, 0.9]
    # pinned to a version: v2 has nothing before 03-30, v1's newest before 03-31 is 03-29
    assert previous_positions(engine, NAME, "2021-03-30", model_version="v2") is None
    pinned = previous_positions(engine, NAME, "2021-03-31", model_version="v1")
    assert pinned["weight"].tolist() == [0.4, 0.5, 0.6]
    # a date with a time of day still means that session
    assert previous_positions(engine, NAME, pd.Timestamp("2021-03-29 16:00"))[
        "weight"
    ].tolist() == [0.1, 0.2, 0.3]


def test_cycle_context_of_a_succeeded_cycle(engine):
    _write(engine, "2021-03-25", [0.0, 0.0, 0.0], signals=[0.9, 0.9, 0.9])
    _write(engine, "2021-03-26", [0.1, 0.2, 0.3], signals=[0.1, 0.2, 0.3])
    _write(engine, "2021-03-29", [0.4, 0.5, 0.6], signals=[0.4, 0.5, 0.6], version="v2")
    _write(engine, "2021-03-30", [0.7, 0.8, 0.9], signals=[0.7, 0.8, 0.9])
    _write(engine, "2021-03-31", [0.1, 0.1, 0.1], signals=[-0.5, -0.6, -0.7])  # after as_of
    context = cycle_context(engine, _result("2021-03-30"), window=2)
    # the previous set is v2's of 03-29 (any version), the signals v1's last two dates
    assert context.previous_weights.tolist() == [0.4, 0.5, 0.6]
    np.testing.assert_array_equal(np.sort(context.recent_signals), [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert context.served_stale == 1  # the cycle's own count
    wide = cycle_context(engine, _result("2021-03-30"), window=10)
    assert len(wide.recent_signals) == 9  # three v1 dates up to 03-30


def test_cycle_context_of_a_failed_cycle_counts_the_served_sets_stale_assets(engine):
    failed = _result("2021-03-30", status="failed", version=None)
    assert cycle_context(engine, failed, window=5).served_stale is None
    _write(engine, "2021-03-26", [0.1, 0.2, 0.3], stale=[True, False, True])
    context = cycle_context(engine, failed, window=5)
    assert context.served_stale == 2
    assert context.previous_weights is None and len(context.recent_signals) == 0
    with pytest.raises(ValueError, match="`window`"):
        cycle_context(engine, failed, window=0)


def test_service_history_reads_the_newest_succeeded_cycle(engine):
    empty = service_history(engine, NAME)
    assert empty.last_success is None and empty.last_as_of is None and empty.served_stale is None
    _write(engine, "2021-03-29", [0.1, 0.2, 0.3])
    _write(engine, "2021-03-30", [0.1, 0.2, 0.3], stale=[False, True, False])
    store.record_failed_cycle(engine, {"as_of": "2021-03-31", "model_name": NAME, "error": "x"})
    history = service_history(engine, NAME)
    assert history.last_as_of == pd.Timestamp("2021-03-30")
    runs = store.read_cycle_runs(engine, model_name=NAME, status="succeeded", limit=1)
    assert history.last_success == pd.Timestamp(runs["finished_at"].iloc[0])
    # the failed cycle flagged the served set stale
    assert history.served_stale == 3
