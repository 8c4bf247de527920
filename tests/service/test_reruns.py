"""A changed close propagates: the sessions after it rerun and the paper ledger is redone.

The reference is a service that never saw the wrong close: a fresh store fed the corrected
data and replayed over the same sessions. Positions and ledger must equal it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from momentum.data import load_prices
from service import store
from service.app import SignalService
from service.config import load_settings
from service.ingest import panel_rows

PRICES = load_prices("sp500")
HISTORY = PRICES.loc["2019-06-03":"2021-03-31"]
DAYS = HISTORY.loc["2021-03-01":].index


@pytest.fixture
def settings(served_run, clean_env):
    # tests ask for `engine` first: clean_env clears MOMENTUM_TEST_DATABASE_URL
    return load_settings(
        registry_dir=served_run["registry"],
        model_name=served_run["name"],
        device="cpu",
        parity_every=0,
        _env_file=None,
    )


def _replayed(settings, engine, prices: pd.DataFrame) -> SignalService:
    service = SignalService(settings, engine=engine)
    assert service.ingest(panel_rows(prices.loc[: DAYS[0] - pd.Timedelta(days=1)])).ok
    assert service.ingest(panel_rows(prices.loc[DAYS[0] :])).ok
    results = service.run_sessions(DAYS)
    assert all(r.status == "succeeded" for r in results)
    return service


def _sets(engine, name: str) -> dict[pd.Timestamp, pd.DataFrame]:
    return {
        day: store.latest_positions(engine, name, as_of=day)[["signal", "vol", "weight", "stale"]]
        for day in store.positions_dates(engine, name)
    }


def test_a_correction_reruns_the_later_sessions_and_the_ledger_equals_a_replay(
    engine, settings, tmp_path
):
    service = _replayed(settings, engine, HISTORY)
    name = service.holder.require().name
    day = DAYS[8]
    held = store.latest_positions(engine, name, as_of=DAYS[7])
    ticker = str(held["weight"].abs().idxmax())  # the biggest position into `day`
    corrected = HISTORY.copy()
    corrected.loc[day, ticker] *= 1.04
    before = store.read_ledger(engine, name)

    fix = service.ingest(panel_rows(corrected.loc[[day], [ticker]]), correction=True)
    assert fix.ok and fix.corrected == 1
    # the rows that used the old close are gone; the sessions from `day` wait for a rerun
    assert store.read_ledger(engine, name).index.max() < day
    assert store.pending_rerun(engine)[1] == day
    assert service.pending_sessions() == list(DAYS[day <= DAYS])

    service.run_session(DAYS[-1])  # the next cycle reruns from the corrected date first
    assert store.pending_rerun(engine) is None

    reference = store.create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    _replayed(settings, reference, corrected)
    got, want = store.read_ledger(engine, name), store.read_ledger(reference, name)
    assert got.index.equals(want.index)
    columns = ["gross_return", "cost", "net_return", "turnover", "equity", "missing"]
    np.testing.assert_allclose(got[columns], want[columns], rtol=0, atol=1e-12)
    # the correction moved the ledger (it is not equal to the one before by accident)
    assert not np.allclose(got.loc[day:, "net_return"], before.loc[day:, "net_return"])
    sets, reference_sets = _sets(engine, name), _sets(reference, name)
    assert sets.keys() == reference_sets.keys()
    for date, frame in sets.items():
        pd.testing.assert_frame_equal(frame, reference_sets[date], rtol=0, atol=1e-12)


def test_a_close_for_a_new_session_leaves_nothing_to_rerun(engine, settings):
    service = SignalService(settings, engine=engine)
    assert service.ingest(panel_rows(HISTORY.loc[: DAYS[-2]])).ok
    assert all(r.status == "succeeded" for r in service.run_sessions(DAYS[:-1]))
    assert store.pending_rerun(engine) is None
    assert service.ingest(panel_rows(HISTORY.loc[[DAYS[-1]]])).ok  # the next day's closes
    assert store.pending_rerun(engine) is None
    assert service.pending_sessions() == [DAYS[-1]]
