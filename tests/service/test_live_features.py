"""The incremental live path: stored feature states against recomputing the whole history."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from momentum.data import load_prices
from momentum.feature_state import FeatureState
from service import live_features as live_module
from service import store
from service.cycle import CycleOptions, run_cycle
from service.ingest import ingest_closes, panel_rows
from service.model import load_model

PRICES = load_prices("sp500")
TICKERS = list(PRICES.columns)
DAYS = PRICES.loc["2021-03-01":"2021-03-31"].index


def _ingest(engine, prices: pd.DataFrame, *, correction: bool = False) -> None:
    result = ingest_closes(
        engine,
        panel_rows(prices),
        universe=TICKERS,
        calendar="XNYS",
        source="test",
        correction=correction,
    )
    assert result.ok, result.rejections[:3]


@pytest.fixture
def model(served_run):
    return load_model(served_run["registry"], served_run["name"], tickers=TICKERS, device="cpu")


def _states(engine) -> list[pd.Timestamp]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.feature_states.c.as_of)).all()
    return sorted(pd.Timestamp(d) for (d,) in rows)


def _cold(engine, model, day) -> pd.DataFrame:
    """The positions of a cycle that recomputes everything (no stored state)."""
    store.drop_feature_states(engine, since="1990-01-01")
    result = run_cycle(engine, model, day)
    assert result.status == "succeeded" and result.cold_start, result.error
    return result.positions


def test_daily_cycles_resume_from_the_stored_state_and_equal_a_full_recompute(
    engine, model, served_run, monkeypatch
):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    reads = []
    real_read = store.read_closes
    monkeypatch.setattr(
        store, "read_closes", lambda *a, **k: reads.append(k.get("start")) or real_read(*a, **k)
    )
    incremental = {}
    for i, day in enumerate(DAYS):
        result = run_cycle(engine, model, day, check_parity=True)
        assert result.status == "succeeded", result.error
        assert result.cold_start == (i == 0)
        # only the first cycle reads the history; each later one the closes after its state
        # (the read before last: the parity check reads the whole history last)
        if i:
            assert reads[-2] == DAYS[i - 1] + pd.Timedelta(days=1)
        assert result.parity_max_abs == 0.0
        incremental[day] = result.positions
    assert _states(engine) == list(DAYS[-5:])  # the newest five kept
    # a restarted service (a new model object, nothing in memory) resumes from the store
    restarted = load_model(served_run["registry"], served_run["name"], tickers=TICKERS)
    again = run_cycle(engine, restarted, DAYS[-1])
    assert not again.cold_start
    pd.testing.assert_frame_equal(again.positions, incremental[DAYS[-1]])
    for day in DAYS[::7]:
        pd.testing.assert_frame_equal(_cold(engine, model, day), incremental[day])


def test_a_corrected_close_rebuilds_the_state_from_its_date(engine, model):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    for day in DAYS:
        assert run_cycle(engine, model, day).status == "succeeded"
    fix = PRICES.loc[[DAYS[-3]], ["AAPL"]] * 1.05
    _ingest(engine, fix, correction=True)
    assert _states(engine) == list(DAYS[-5:-3])  # states that used the old close are gone
    after = run_cycle(engine, model, DAYS[-1])
    assert not after.cold_start  # resumed from the state before the corrected date
    assert _states(engine)[-1] == DAYS[-1]
    pd.testing.assert_frame_equal(after.positions, _cold(engine, model, DAYS[-1]))
    # a correction older than every kept state: the next cycle rebuilds from the history
    _ingest(engine, PRICES.loc[["2020-06-01"], ["MSFT"]] * 0.97, correction=True)
    assert _states(engine) == []
    rebuilt = run_cycle(engine, model, DAYS[-1])
    assert rebuilt.cold_start and rebuilt.status == "succeeded"


def test_a_late_close_of_a_carried_session_is_used_by_the_next_cycle(engine, model):
    carry = CycleOptions(stale_policy="carry", max_carry_sessions=2)
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-26"])
    assert run_cycle(engine, model, "2021-03-26", options=carry).status == "succeeded"
    _ingest(engine, PRICES.loc[["2021-03-29"]].drop(columns="AAPL"))
    carried = run_cycle(engine, model, "2021-03-29", options=carry)
    assert carried.status == "succeeded" and carried.positions.loc["AAPL", "stale"]
    assert _states(engine)[-1] == pd.Timestamp("2021-03-26")  # a carried close is not stored
    # AAPL's close of the 29th arrives late, with the 30th
    _ingest(engine, PRICES.loc[["2021-03-29"], ["AAPL"]])
    _ingest(engine, PRICES.loc[["2021-03-30"]])
    late = run_cycle(engine, model, "2021-03-30", options=carry)
    assert not late.cold_start and not late.positions["stale"].any()
    pd.testing.assert_frame_equal(late.positions, _cold(engine, model, "2021-03-30"))


def test_a_short_gap_is_settled_only_when_a_close_ends_it(engine, model):
    carry = CycleOptions(stale_policy="carry", max_carry_sessions=3)
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-24"])
    assert run_cycle(engine, model, "2021-03-24", options=carry).status == "succeeded"
    for day in ("2021-03-25", "2021-03-26"):
        _ingest(engine, PRICES.loc[[day]].drop(columns="MSFT"))
        assert run_cycle(engine, model, day, options=carry).status == "succeeded"
    # MSFT never sends those two closes; its next one makes them an interior gap, which
    # training's loader forward-fills: the cycle does the same
    _ingest(engine, PRICES.loc[["2021-03-29"]])
    resumed = run_cycle(engine, model, "2021-03-29", options=carry, check_parity=True)
    assert resumed.parity_max_abs == 0.0 and not resumed.positions["stale"].any()
    assert _states(engine)[-1] == pd.Timestamp("2021-03-29")


def test_a_tampered_state_shows_in_the_parity_check(engine, model):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    assert run_cycle(engine, model, DAYS[-2], check_parity=True).parity_max_abs == 0.0
    key, (as_of, blob) = _only_state(engine)
    state = FeatureState.from_bytes(blob)
    state.arrays["ewm"][3, 1, 0] *= 1.01  # the vol EWM mean of one asset
    state.arrays["p_ring"][5] *= 1.001  # recent winsorised closes of another
    store.write_feature_state(engine, key, as_of, state.steps, state.to_bytes())
    result = run_cycle(engine, model, DAYS[-1], check_parity=True)
    assert result.status == "succeeded" and not result.cold_start
    assert result.parity_max_abs > 1e-9


def test_a_state_of_another_features_version_is_rebuilt(engine, model, monkeypatch):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    assert run_cycle(engine, model, DAYS[-2]).status == "succeeded"
    # a new momentum release: a new process, nothing in memory, the old state in the store
    monkeypatch.setattr(live_module, "_LAST_STORED", {})
    monkeypatch.setattr("momentum.feature_state.FEATURES_VERSION", "0.0-other")
    result = run_cycle(engine, model, DAYS[-1])
    assert result.status == "succeeded" and result.cold_start


def test_the_parity_recompute_by_chunks_of_assets_is_the_one_call_recompute(engine, model):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    result = run_cycle(engine, model, DAYS[-1])
    recent = result.features
    n = len(TICKERS)
    for assets in (1, 3, 7, n):
        assert live_module.feature_parity(engine, model, recent, assets=assets) == 0.0
    # a difference in any chunk (the last asset here) is found, whatever the chunk size
    values = recent.values.copy()
    values[-1, n - 1, 0] += 4e-9
    tampered = dataclasses.replace(recent, values=values)
    for assets in (1, 3, 7, n):
        found = live_module.feature_parity(engine, model, tampered, assets=assets)
        assert found == pytest.approx(4e-9, rel=1e-3)


def test_parity_compares_values_vol_and_missingness():
    prices = PRICES.iloc[:400, :3]
    state = FeatureState.from_prices(prices, history=10)
    full = live_module.compute_features(prices)
    live = state.recent
    assert live_module.parity_max_abs(live, full) == 0.0
    assert live_module.parity_max_abs(live, live_module.compute_features(prices.iloc[:399])) == (
        float("inf")
    )
    shifted = full.values.copy()
    shifted[-1, 0, 2] += 3e-9
    other = full.__class__(**{**full.__dict__, "values": shifted})
    assert live_module.parity_max_abs(live, other) == pytest.approx(3e-9, rel=1e-3)
    holes = full.vol.copy()
    holes[-2, 1] = np.nan
    assert live_module.parity_max_abs(live, full.__class__(**{**full.__dict__, "vol": holes})) == (
        float("inf")
    )


def _only_state(engine, before="2100-01-01") -> tuple[str, tuple[pd.Timestamp, bytes]]:
    """The one key's newest state before a date."""
    with engine.connect() as conn:
        (key,) = conn.execute(sa.select(store.feature_states.c.key).distinct()).one()
    found = store.latest_feature_state(engine, key, before=before)
    assert found is not None
    return key, found


# --------------------------------------------------------------------------------------------
# batched replay and catch-up
# --------------------------------------------------------------------------------------------


def test_batched_cycles_equal_the_per_session_cycles_position_by_position(engine, tmp_path, model):
    from service.cycle import run_cycles

    history, days = PRICES.loc["2019-06-03":"2021-02-26"], PRICES.loc["2021-03-01":"2021-06-30"]
    _ingest(engine, history)
    _ingest(engine, days)
    # one hole: MSFT has no close on 2021-04-15 (its own cycle applies the stale policy)
    with engine.begin() as conn:
        conn.execute(
            store.closes.delete().where(
                store.closes.c.date == pd.Timestamp("2021-04-15").date(),
                store.closes.c.ticker == "MSFT",
            )
        )
    carry = CycleOptions(stale_policy="carry", max_carry_sessions=2)
    batched = list(run_cycles(engine, model, days.index, options=carry))
    assert [r.as_of for r in batched] == list(days.index)
    assert all(r.status == "succeeded" for r in batched), [r.error for r in batched]
    assert batched[0].cold_start and not any(r.cold_start for r in batched[1:])
    hole = next(r for r in batched if r.as_of == pd.Timestamp("2021-04-15"))
    assert hole.positions.loc["MSFT", "stale"]

    # the reference: the same sessions one cycle at a time, on a SQLite store
    one_by_one = store.create_engine(f"sqlite:///{tmp_path / 'single.db'}")
    _ingest(one_by_one, history)
    for day in days.index:
        _ingest(one_by_one, PRICES.loc[[day]].drop(columns="MSFT" if day == hole.as_of else []))
        single = run_cycle(one_by_one, model, day, options=carry)
        assert single.status == "succeeded", single.error
        stored = store.latest_positions(one_by_one, model.name, as_of=day)
        got = store.latest_positions(engine, model.name, as_of=day)
        if day == hole.as_of:  # MSFT's close never came: carried in both
            pd.testing.assert_frame_equal(got.drop(columns="run_id"), stored.drop(columns="run_id"))
            continue
        # the model saw the same float32 windows; batch size changes nothing beyond rounding
        np.testing.assert_allclose(got["signal"], stored["signal"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got["vol"], stored["vol"])
        np.testing.assert_allclose(got["weight"], stored["weight"], rtol=0, atol=1e-6)
    one_by_one.dispose()


def test_a_batch_stores_its_sessions_one_transaction_each(sqlite_engine, model, monkeypatch):
    from service.cycle import run_cycles

    _ingest(sqlite_engine, PRICES.loc["2019-06-03":"2021-03-31"])
    real = store.write_cycle
    written: list[pd.Timestamp] = []

    def fail_on_the_fifth(conn, run, frame):
        if len(written) == 4:
            raise RuntimeError("injected")
        written.append(pd.Timestamp(run["as_of"]))
        return real(conn, run, frame)

    monkeypatch.setattr(store, "write_cycle", fail_on_the_fifth)
    results = list(run_cycles(sqlite_engine, model, DAYS))
    # every later session is tried again (and fails here), as a catch-up goes on
    assert [r.status for r in results] == ["succeeded"] * 4 + ["failed"] * (len(DAYS) - 4)
    assert store.positions_dates(sqlite_engine, model.name).tolist() == written == list(DAYS[:4])
    assert _states(sqlite_engine) == []  # the state goes with the batch's last session only


def test_the_service_checks_parity_after_a_batched_replay_and_every_n_cycles(
    served_run, sqlite_engine, clean_env
):
    from service.app import SignalService
    from service.config import load_settings
    from service.metrics import ServiceMetrics

    settings = load_settings(
        registry_dir=served_run["registry"],
        model_name=served_run["name"],
        device="cpu",
        parity_every=3,
    )
    metrics = ServiceMetrics()
    service = SignalService(settings, engine=sqlite_engine, metrics=metrics)
    assert service.ingest(panel_rows(PRICES.loc["2019-06-03":"2021-03-31"])).ok
    seen = []
    results = service.run_sessions(DAYS[:-4], each=seen.append)
    assert [r.as_of for r in seen] == list(DAYS[:-4])
    assert results[-1].parity_max_abs == 0.0  # the first cycles after start: checked
    assert metrics.feature_parity._value.get() == 0.0
    # one cycle at a time: every third one is checked (counts go on from the replay's 19)
    checked = [service.run_session(d).parity_max_abs is not None for d in DAYS[-4:]]
    assert len(DAYS) - 4 == 19 and checked == [False, True, False, False]
    # a tampered state (the one the next cycles resume from): the next check exports it
    key, (as_of, blob) = _only_state(sqlite_engine, before=DAYS[-1])
    state = FeatureState.from_bytes(blob)
    state.arrays["macd"][2, 0, 0, 0] *= 1.5
    store.write_feature_state(sqlite_engine, key, as_of, state.steps, state.to_bytes())
    for _ in range(3):
        service.run_session(DAYS[-1])
    assert metrics.feature_parity._value.get() > 1e-9


def test_a_rebuild_reads_the_history_once_and_advances_in_blocks_equal_to_the_full_pass(
    sqlite_engine, model, monkeypatch
):
    history = PRICES.loc["2019-06-03":"2021-03-31"].copy()
    # a 3-session gap of MSFT across the boundary of the rebuild's first two blocks
    monkeypatch.setattr(live_module, "_REBUILD_ROWS", 100)
    # the bulk reads stream from child processes, however small the store
    monkeypatch.setattr(store.price_reads, "_STREAM_MIN_ROWS", 0)
    streamed = []
    real_stream = store.price_reads._stream_closes
    monkeypatch.setattr(
        store.price_reads,
        "_stream_closes",
        lambda *a: streamed.append(a[0]) or real_stream(*a),
    )
    gap = history.index[98:101]
    history.loc[gap, "MSFT"] = np.nan
    _ingest(sqlite_engine, history)
    reads = []
    real_read = store.read_closes
    monkeypatch.setattr(store, "read_closes", lambda *a, **k: reads.append(k) or real_read(*a, **k))
    advanced = []
    real_advance = FeatureState.advance
    monkeypatch.setattr(
        FeatureState,
        "advance",
        lambda self, closes, **k: advanced.append(len(closes)) or real_advance(self, closes, **k),
    )
    result = run_cycle(sqlite_engine, model, DAYS[-1], check_parity=True)
    assert result.status == "succeeded" and result.cold_start
    assert result.parity_max_abs == 0.0
    rebuild = reads[0]  # then the cycle's own read and the parity check's
    assert rebuild["bulk"] and rebuild.get("start") is None
    assert rebuild["end"] == DAYS[-1] - pd.Timedelta(days=1)
    assert len(reads) == 3 and not reads[1].get("bulk") and reads[2]["bulk"]  # parity: bulk
    assert len(streamed) == 2  # the rebuild's and the parity check's
    # the history in blocks of 100 sessions, then the cycle's own session
    sessions = len(history.loc[: DAYS[-1] - pd.Timedelta(days=1)])
    assert advanced[:-1] == [100] * (sessions // 100) + [sessions % 100]
    assert advanced[-1] == 1


def test_the_next_cycle_reuses_the_state_it_stored_unless_the_store_changed(
    engine, model, monkeypatch
):
    _ingest(engine, PRICES.loc["2019-06-03":"2021-03-31"])
    assert run_cycle(engine, model, DAYS[-3]).status == "succeeded"
    blobs = []
    real = store.latest_feature_state
    monkeypatch.setattr(
        store, "latest_feature_state", lambda *a, **k: blobs.append(1) or real(*a, **k)
    )
    warm = run_cycle(engine, model, DAYS[-2], check_parity=True)
    assert not warm.cold_start and blobs == [] and warm.parity_max_abs == 0.0
    # the stored row changes (here: rewritten by someone else): read from the store again
    key, (as_of, blob) = _only_state(engine, before=DAYS[-1])
    store.write_feature_state(engine, key, as_of, FeatureState.from_bytes(blob).steps, blob)
    blobs.clear()
    again = run_cycle(engine, model, DAYS[-1], check_parity=True)
    assert blobs == [1] and again.parity_max_abs == 0.0
