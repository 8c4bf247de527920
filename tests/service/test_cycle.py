"""The daily cycle: served positions equal the backtest's, idempotence, failures, stale data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from momentum.data import load_prices
from momentum.feature_state import FeatureState
from momentum.portfolio import target_weights
from service import cycle as cycle_module
from service import store
from service.cycle import CycleOptions, run_cycle
from service.ingest import ingest_closes, panel_rows
from service.model import ModelHolder, load_model
from tests.service.conftest import snapshot

PRICES = load_prices("sp500")
TICKERS = list(PRICES.columns)


def _ingest(engine, prices: pd.DataFrame) -> None:
    result = ingest_closes(
        engine, panel_rows(prices), universe=TICKERS, calendar="XNYS", source="test"
    )
    assert result.ok, result.rejections[:3]


def _history(engine, end: str) -> None:
    """Closes from mid-2019 to `end`: enough warm-up for every feature, quick to store.

    Only the parity test needs the full history (the features' EWMs remember 1990).
    """
    _ingest(engine, PRICES.loc["2019-06-03":end])


@pytest.fixture
def model(served_run):
    return load_model(served_run["registry"], served_run["name"], tickers=TICKERS, device="cpu")


def test_served_positions_equal_the_backtests_out_of_sample_positions(
    sqlite_engine, model, served_run
):
    _ingest(sqlite_engine, PRICES)
    signals, vol = served_run["signals"][TICKERS], served_run["vol"][TICKERS]
    dates = signals.index
    # the first and last test dates and a spread in between (the slow replay test does all)
    for day in [dates[0], dates[1], *dates[60:500:55], dates[-1]]:
        result = run_cycle(sqlite_engine, model, day)
        assert result.status == "succeeded", result.error
        got = result.positions.loc[TICKERS]
        np.testing.assert_allclose(got["signal"], signals.loc[day], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["vol"], vol.loc[day] * np.sqrt(252), rtol=1e-12)
        weights = target_weights(signals.loc[[day]].to_numpy(), vol.loc[[day]].to_numpy())[0]
        np.testing.assert_allclose(got["weight"], weights, rtol=0, atol=1e-6)
        assert result.data_cutoff == day and not got["stale"].any()


def test_running_the_same_cycle_twice_leaves_one_set_of_rows(engine, model):
    _history(engine, "2021-03-31")
    first = run_cycle(engine, model, "2021-03-31")
    second = run_cycle(engine, model, "2021-03-31")
    assert first.status == second.status == "succeeded"
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(store.positions)).scalar()
    assert count == len(TICKERS)
    stored = store.latest_positions(engine, model.name)
    assert stored["run_id"].unique().tolist() == [second.run_id]
    pd.testing.assert_series_equal(
        stored["signal"], first.positions["signal"].sort_index(), check_names=False
    )


# every step of a cycle, made to fail in turn
STEPS = [
    ("read_closes", lambda m: m.setattr(store, "read_closes", _boom)),
    ("continue_panel", lambda m: m.setattr(FeatureState, "continue_panel", _boom)),
    ("advance", lambda m: m.setattr(FeatureState, "advance", _boom)),
    ("contract_inputs", lambda m: m.setattr(cycle_module, "contract_inputs", _boom)),
    ("construct_weights", lambda m: m.setattr(cycle_module, "construct_weights", _boom)),
    ("write_feature_state", lambda m: m.setattr(store, "write_feature_state", _boom)),
]


def _boom(*args, **kwargs):
    raise RuntimeError("injected")


@pytest.mark.parametrize("step", [s for s, _ in STEPS] + ["inference", "write"])
def test_a_failure_at_any_step_writes_nothing_and_flags_the_last_positions_stale(
    engine, model, step, monkeypatch, request
):
    _history(engine, "2021-03-31")
    good = run_cycle(engine, model, "2021-03-30")
    assert good.status == "succeeded"
    before = snapshot(engine)
    if step == "inference":
        monkeypatch.setattr(type(model), "positions", _boom)
    elif step == "write":
        # the positions insert fails after the run row and the delete went through
        def refuse_positions(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("INSERT INTO POSITIONS"):
                raise RuntimeError("injected failure of the positions insert")

        sa.event.listen(engine, "before_cursor_execute", refuse_positions)
        request.addfinalizer(
            lambda: sa.event.remove(engine, "before_cursor_execute", refuse_positions)
        )
    else:
        dict(STEPS)[step](monkeypatch)
    result = run_cycle(engine, model, "2021-03-31")
    assert result.status == "failed" and "injected" in result.error
    after = snapshot(engine)
    # nothing of the failed cycle is stored: closes and positions rows are those of before,
    # except that the last good set is now flagged stale; one failed run is recorded
    assert after["closes"] == before["closes"]
    assert after["feature_states"] == before["feature_states"]
    assert [r[:-2] for r in after["positions"]] == [r[:-2] for r in before["positions"]]
    assert store.latest_positions(engine, model.name)["stale"].all()
    runs = store.read_cycle_runs(engine, model_name=model.name)
    assert runs["status"].tolist() == ["failed", "succeeded"]
    assert "injected" in runs["error"].iloc[0]


def test_missing_closes_skip_the_cycle_or_are_carried_and_flagged(engine, model):
    _history(engine, "2021-03-29")
    assert run_cycle(engine, model, "2021-03-29").status == "succeeded"
    # 2021-03-30 and 2021-03-31 arrive without AAPL
    partial = PRICES.loc["2021-03-30":"2021-03-31"].drop(columns="AAPL")
    assert ingest_closes(
        engine, panel_rows(partial), universe=TICKERS, calendar="XNYS", source="test"
    ).ok
    skipped = run_cycle(engine, model, "2021-03-30")
    assert skipped.status == "skipped" and "AAPL" in skipped.error
    assert store.latest_positions(engine, model.name)["stale"].all()

    carry = CycleOptions(stale_policy="carry", max_carry_sessions=1)
    carried = run_cycle(engine, model, "2021-03-30", options=carry)
    assert carried.status == "succeeded"
    assert carried.positions["stale"].tolist() == [t == "AAPL" for t in TICKERS]
    assert np.isfinite(carried.positions.loc["AAPL", "signal"])
    # two sessions without a close is beyond max_carry_sessions=1
    too_old = run_cycle(engine, model, "2021-03-31", options=carry)
    assert too_old.status == "skipped" and "max_carry_sessions=1" in too_old.error
    longer = run_cycle(
        engine,
        model,
        "2021-03-31",
        options=CycleOptions("carry", max_carry_sessions=2)
        if False
        else CycleOptions(stale_policy="carry", max_carry_sessions=2),
    )
    assert longer.status == "succeeded" and longer.n_stale == 1


def test_no_closes_for_the_date_skips(engine, model):
    _history(engine, "2021-03-29")
    result = run_cycle(engine, model, "2021-03-30")
    assert result.status == "skipped" and "no closes stored for 2021-03-30" in result.error


def test_portfolio_vol_targeting_scales_every_weight_by_one_factor(sqlite_engine, model):
    _history(sqlite_engine, "2021-06-30")
    plain = run_cycle(sqlite_engine, model, "2021-06-30")
    scaled = run_cycle(
        sqlite_engine, model, "2021-06-30", options=CycleOptions(portfolio_vol_target=True)
    )
    ratio = (scaled.positions["weight"] / plain.positions["weight"]).dropna()
    assert ratio.nunique() == 1 or np.ptp(ratio) < 1e-12
    assert ratio.iloc[0] > 0 and ratio.iloc[0] != pytest.approx(1.0)


def test_subscribers_hear_of_stored_cycles_and_a_broken_one_changes_nothing(sqlite_engine, model):
    _history(sqlite_engine, "2021-03-31")
    heard = []
    result = run_cycle(sqlite_engine, model, "2021-03-31", notify=heard.append)
    assert heard == [result]
    broken = run_cycle(sqlite_engine, model, "2021-03-31", notify=_boom)
    assert broken.status == "succeeded"
    assert store.latest_positions(sqlite_engine, model.name)["run_id"].iloc[0] == broken.run_id


def test_holder_serves_the_production_model(served_run, sqlite_engine):
    holder = ModelHolder(
        served_run["registry"],
        served_run["name"],
        tickers=TICKERS,
        device="cpu",
        engine=sqlite_engine,
    )
    outcome = holder.refresh()
    assert outcome.changed and holder.require().version == served_run["version"]
    assert holder.refresh().changed is False
