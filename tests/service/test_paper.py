"""Tests for service.paper on SQLite and PostgreSQL: marks, costs, equity, idempotence, summary.

The numbers are chosen so that every figure can be checked by hand; the comments show the
arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from momentum import metrics
from service import paper, store
from tests.service.conftest import snapshot

# 2024-01-02 .. 2024-01-05 are four consecutive XNYS sessions (Tue .. Fri)
D1, D2, D3, D4 = (pd.Timestamp(f"2024-01-0{d}") for d in (2, 3, 4, 5))
COST_BPS = 10.0  # c = 0.001 per unit of turnover

# AAA: +10% then -10% then flat; BBB: flat, +10%, -20%
CLOSES = {
    "AAA": {D1: 100.0, D2: 110.0, D3: 99.0, D4: 99.0},
    "BBB": {D1: 50.0, D2: 50.0, D3: 55.0, D4: 44.0},
}
# target weights decided at each close; NaN = not tradable (NULL in the store)
WEIGHTS = {
    D1: {"AAA": 0.5, "BBB": -0.25},
    D2: {"AAA": 0.5, "BBB": 0.25},
    D3: {"AAA": -0.25, "BBB": np.nan},
}


def _insert_closes(engine, days, closes=CLOSES) -> None:
    rows = [(d, t, p[d]) for t, p in closes.items() for d in days if d in p]
    store.insert_closes(
        engine, pd.DataFrame(rows, columns=["date", "ticker", "close"]), source="test"
    )


def _write_positions(engine, day, weights, version="v1") -> None:
    frame = pd.DataFrame({"weight": pd.Series(weights, dtype=float)})
    # the ledger reads only the weights; signal and vol just have to be valid
    frame["signal"] = np.where(frame["weight"].isna(), np.nan, 0.5)
    frame["vol"] = 0.2
    store.write_cycle(engine, {"as_of": day, "model_name": "slp", "model_version": version}, frame)


def _setup(engine, close_days=(D1, D2, D3, D4), weights=WEIGHTS) -> None:
    _insert_closes(engine, close_days)
    for day, w in weights.items():
        _write_positions(engine, day, w)


# --------------------------------------------------------------------------------------------
# marking
# --------------------------------------------------------------------------------------------


def test_two_assets_three_days_by_hand(engine):
    _setup(engine)
    rows = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)

    # the row's date is the mark date t+1; as_of is the positions' date t
    assert [(r.as_of, r.date) for r in rows] == [(D1, D2), (D2, D3), (D3, D4)]
    # gross: D1 weights over D1->D2: 0.5 * 10% + (-0.25) * 0%        = 0.05
    #        D2 weights over D2->D3: 0.5 * -10% + 0.25 * 10%         = -0.025
    #        D3 weights over D3->D4: -0.25 * 0% + 0 (NULL) * -20%    = 0
    assert [r.gross_return for r in rows] == pytest.approx([0.05, -0.025, 0.0], abs=1e-15)
    # turnover: trade in from zero |0.5| + |-0.25| = 0.75; then |0| + |0.25 + 0.25| = 0.5;
    # then |-0.25 - 0.5| + |0 - 0.25| = 1.0 (a NULL weight is a sale to 0)
    assert [r.turnover for r in rows] == pytest.approx([0.75, 0.5, 1.0], abs=1e-15)
    # cost = 10 bps x turnover
    assert [r.cost for r in rows] == pytest.approx([0.00075, 0.0005, 0.001], abs=1e-15)
    assert [r.net_return for r in rows] == pytest.approx([0.04925, -0.0255, -0.001], abs=1e-15)
    # equity: 1.04925; 1.04925 x 0.9745 = 1.022494125; x 0.999 = 1.021471630875
    assert [r.equity for r in rows] == pytest.approx(
        [1.04925, 1.022494125, 1.021471630875], abs=1e-12
    )
    assert [r.missing for r in rows] == [0, 0, 0]
    assert {(r.model_name, r.model_version) for r in rows} == {("slp", "v1")}
    for r in rows:
        assert r.net_return == r.gross_return - r.cost

    ledger = store.read_ledger(engine, "slp")
    assert ledger.index.tolist() == [D2, D3, D4]
    assert ledger["net_return"].tolist() == [r.net_return for r in rows]
    assert ledger["equity"].tolist() == [r.equity for r in rows]
    assert ledger["missing"].tolist() == [0, 0, 0]


def test_cost_is_linear_in_bps_and_zero_without_cost(engine):
    _setup(engine)
    rows = paper.update_ledger(engine, "slp", cost_bps=0.0)
    assert [r.cost for r in rows] == [0.0, 0.0, 0.0]
    assert [r.net_return for r in rows] == [r.gross_return for r in rows]
    # equity without cost: 1.05 x 0.975 x 1.0
    assert rows[-1].equity == pytest.approx(1.05 * 0.975, abs=1e-15)


def test_running_twice_adds_nothing_and_new_closes_extend_the_ledger(engine):
    _setup(engine, close_days=(D1, D2, D3))
    first = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    # the D3 positions wait for the closes of D4
    assert [r.date for r in first] == [D2, D3]
    before = snapshot(engine)
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []
    assert snapshot(engine) == before

    _insert_closes(engine, (D4,))
    (row,) = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert (row.as_of, row.date) == (D3, D4)
    assert row.turnover == pytest.approx(1.0, abs=1e-15)  # from the D2 weights
    # equity continues from the stored 1.022494125: x (1 - 0.001)
    assert row.equity == pytest.approx(1.022494125 * 0.999, abs=1e-12)
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []
    assert len(store.read_ledger(engine, "slp")) == 3


def test_no_positions_or_no_next_closes_marks_nothing(engine):
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []
    _setup(engine, close_days=(D1,), weights={D1: WEIGHTS[D1]})
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []
    assert store.read_ledger(engine, "slp").empty


def test_a_later_sessions_closes_do_not_stand_in_for_the_next_sessions(engine):
    # D1 positions are held to the close of D2; closes of D3 alone must not mark them
    _setup(engine, close_days=(D1, D3), weights={D1: WEIGHTS[D1]})
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []
    _insert_closes(engine, (D2,))
    (row,) = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert row.date == D2 and row.gross_return == pytest.approx(0.05, abs=1e-15)


def test_the_next_session_skips_the_holiday(engine):
    # 2024-07-04 is an NYSE holiday: positions of 07-03 are held to the close of 07-05
    jul3, jul5 = pd.Timestamp("2024-07-03"), pd.Timestamp("2024-07-05")
    _insert_closes(engine, (jul3, jul5), {"AAA": {jul3: 100.0, jul5: 102.0}})
    _write_positions(engine, jul3, {"AAA": 0.5})
    (row,) = paper.update_ledger(engine, "slp", cost_bps=0.0)
    assert (row.as_of, row.date) == (jul3, jul5)
    assert row.gross_return == pytest.approx(0.5 * 0.02, abs=1e-15)


def test_a_day_waits_for_the_closes_of_every_held_asset(engine):
    closes = {"AAA": {D1: 100.0, D2: 110.0}, "BBB": {D1: 50.0, D2: 55.0}}
    _insert_closes(engine, (D1,), closes)
    _insert_closes(engine, (D2,), {"BBB": {D2: 55.0}})  # 1 of the 2 held closes of D2
    _write_positions(engine, D1, {"AAA": 0.2, "BBB": 0.4})
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []  # not complete: waits
    _insert_closes(engine, (D2,), {"AAA": {D2: 110.0}})
    (row,) = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert row.gross_return == pytest.approx(0.2 * 0.10 + 0.4 * 0.10, abs=1e-15)
    assert row.missing == 0


def test_a_late_close_redoes_the_ledger_from_its_date(engine):
    _setup(engine, close_days=(D1, D2, D3, D4))
    before = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert [r.date for r in before] == [D2, D3, D4]
    # a correction of D3's close: the rows of D3 (its end) and D4 (its start) and after go
    fixed = pd.DataFrame({"date": [D3], "ticker": ["AAA"], "close": [121.0]})
    store.correct_closes(engine, fixed, source="test")
    assert store.read_ledger(engine, "slp").index.tolist() == [D2]
    again = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert [r.date for r in again] == [D3, D4]
    # D2 weights over D2->D3 with AAA now +10%: 0.5 * 10% + 0.25 * 10%
    assert again[0].gross_return == pytest.approx(0.075, abs=1e-15)
    assert before[1].gross_return == pytest.approx(-0.025, abs=1e-15)
    # positions dated on or after D3 existed: the sessions are marked for a rerun
    assert store.pending_rerun(engine)[1] == D3


def test_a_missing_close_earns_zero_and_is_counted(engine):
    closes = {"AAA": {D1: 100.0}, "BBB": {D1: 50.0, D2: 55.0}, "CCC": {D2: 20.0}}
    _insert_closes(engine, (D1, D2), closes)
    # AAA has no close on D2, CCC none on D1: both weighted, both earn 0; DDD has weight 0.
    # The day is complete because the set of D2 flags AAA stale (the carry policy decided).
    _write_positions(engine, D1, {"AAA": 0.2, "BBB": 0.4, "CCC": -0.1, "DDD": 0.0})
    assert paper.update_ledger(engine, "slp", cost_bps=COST_BPS) == []  # AAA: no close yet
    frame = pd.DataFrame(
        {"signal": 0.5, "vol": 0.2, "weight": 0.1, "stale": [True, False]}, index=["AAA", "BBB"]
    )
    store.write_cycle(engine, {"as_of": D2, "model_name": "slp", "model_version": "v1"}, frame)
    (row,) = paper.update_ledger(engine, "slp", cost_bps=COST_BPS, upto=D1)
    assert row.gross_return == pytest.approx(0.4 * 0.10, abs=1e-15)  # BBB only
    assert row.missing == 2
    assert row.turnover == pytest.approx(0.7, abs=1e-15)
    stored = store.read_ledger(engine, "slp")
    values = ["gross_return", "cost", "net_return", "turnover", "equity"]
    assert np.isfinite(stored[values].to_numpy()).all()  # never NaN in the ledger
    assert stored["missing"].tolist() == [2]


def test_turnover_follows_the_set_held_across_a_gap_and_a_model_change(engine):
    _insert_closes(engine, (D1, D2, D3, D4))
    _write_positions(engine, D1, WEIGHTS[D1], version="v1")
    # no positions on D2 (failed cycle): the D1 set stays on the book until D3's arrives
    _write_positions(engine, D3, {"AAA": 0.1, "BBB": 0.1}, version="v2")
    rows = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert [(r.as_of, r.date, r.model_version) for r in rows] == [
        (D1, D2, "v1"),
        (D3, D4, "v2"),
    ]
    # |0.1 - 0.5| + |0.1 + 0.25| = 0.75, measured from the D1 weights
    assert rows[1].turnover == pytest.approx(0.75, abs=1e-15)
    # D3 -> D4: 0.1 x 0% + 0.1 x -20%
    assert rows[1].gross_return == pytest.approx(-0.02, abs=1e-15)


def test_same_date_rerun_by_a_new_version_replaces_the_marked_set(engine):
    _insert_closes(engine, (D1, D2))
    _write_positions(engine, D1, {"AAA": 0.5}, version="v1")
    _write_positions(engine, D1, {"AAA": -0.5}, version="v2")  # written last: the book's set
    (row,) = paper.update_ledger(engine, "slp", cost_bps=0.0)
    assert row.model_version == "v2" and row.gross_return == pytest.approx(-0.05, abs=1e-15)


def test_late_closes_redo_the_later_rows_and_chain_equity_in_date_order(engine):
    _insert_closes(engine, (D1, D3, D4))  # D2's closes arrive late
    _write_positions(engine, D1, WEIGHTS[D1])
    _write_positions(engine, D3, WEIGHTS[D3])
    (late,) = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert late.date == D4
    # D3 trades from the D1 set: |-0.25 - 0.5| + |0 + 0.25| = 1.0 -> net -0.001
    assert late.equity == pytest.approx(0.999, abs=1e-15)

    _insert_closes(engine, (D2,))  # deletes the rows from D2 on; both are marked again
    early, again = paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    assert early.date == D2 and early.equity == pytest.approx(1.04925, abs=1e-15)
    assert again.date == D4
    ledger = store.read_ledger(engine, "slp")
    assert ledger.index.tolist() == [D2, D4]
    assert ledger.loc[D4, "net_return"] == late.net_return  # only equity changes
    assert ledger.loc[D4, "equity"] == pytest.approx(1.04925 * 0.999, abs=1e-12)
    np.testing.assert_allclose(
        ledger["equity"], np.cumprod(1.0 + ledger["net_return"]), rtol=0, atol=1e-15
    )


def test_only_the_named_model_is_marked(engine):
    _setup(engine)
    store.write_cycle(
        engine,
        {"as_of": D1, "model_name": "tft", "model_version": "t1"},
        pd.DataFrame({"signal": [1.0], "vol": [0.2], "weight": [1.0]}, index=["AAA"]),
    )
    assert len(paper.update_ledger(engine, "slp", cost_bps=COST_BPS)) == 3
    assert store.read_ledger(engine, "tft").empty
    (tft,) = paper.update_ledger(engine, "tft", cost_bps=COST_BPS)
    assert tft.gross_return == pytest.approx(0.10, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost_bps": -1.0}, "`cost_bps` must be finite and non-negative"),
        ({"cost_bps": math.nan}, "`cost_bps` must be finite and non-negative"),
        ({"cost_bps": "5"}, "`cost_bps` must be a number"),
        ({"cost_bps": 5.0, "calendar": "NOPE"}, "unknown exchange calendar 'NOPE'"),
    ],
)
def test_bad_arguments_are_refused(sqlite_engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paper.update_ledger(sqlite_engine, "slp", **kwargs)
    with pytest.raises(ValueError, match="`model_name` must be a non-empty string"):
        paper.update_ledger(sqlite_engine, " ", cost_bps=1.0)


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def test_summary_of_the_hand_example(engine):
    _setup(engine)
    paper.update_ledger(engine, "slp", cost_bps=COST_BPS)
    summary = paper.ledger_summary(engine, "slp", window=2)
    net = np.array([0.04925, -0.0255, -0.001])
    assert summary.days == 3
    assert (summary.first_date, summary.last_date) == (D2, D4)
    assert summary.equity == pytest.approx(1.021471630875, abs=1e-12)
    assert summary.total_return == pytest.approx(0.021471630875, abs=1e-12)
    assert summary.sharpe == pytest.approx(net.mean() / net.std(ddof=1) * np.sqrt(252))
    last2 = net[-2:]
    assert summary.rolling_sharpe == pytest.approx(last2.mean() / last2.std(ddof=1) * np.sqrt(252))
    # peak 1.04925, trough 1.021471630875
    assert summary.max_drawdown == pytest.approx(1 - 1.021471630875 / 1.04925, abs=1e-12)
    assert summary.drawdown == pytest.approx(summary.max_drawdown, abs=1e-15)
    assert summary.missing == 0


def test_summary_matches_momentum_metrics_on_the_ledger(sqlite_engine):
    rng = np.random.default_rng(7)
    net = rng.normal(0.0005, 0.01, size=80)
    days = pd.bdate_range("2023-01-02", periods=80)
    equity = np.cumprod(1.0 + net)
    for day, r, e in zip(days, net, equity, strict=True):
        store.write_ledger_row(
            sqlite_engine,
            {
                "date": day,
                "model_name": "slp",
                "gross_return": r,
                "cost": 0.0,
                "net_return": r,
                "turnover": 0.0,
                "equity": e,
                "missing": 1,
            },
        )
    summary = paper.ledger_summary(sqlite_engine, "slp")
    assert summary.window == paper.DEFAULT_WINDOW == 63
    assert summary.days == 80 and summary.missing == 80
    assert summary.sharpe == metrics.sharpe_ratio(net)
    assert summary.rolling_sharpe == metrics.sharpe_ratio(net[-63:])
    assert summary.max_drawdown == metrics.max_drawdown(net)
    assert summary.total_return == pytest.approx(np.prod(1.0 + net) - 1.0, rel=1e-12)
    assert summary.drawdown == pytest.approx(1.0 - equity[-1] / max(1.0, equity.max()))
    # fewer days than the window: no rolling figure yet
    assert math.isnan(paper.ledger_summary(sqlite_engine, "slp", window=81).rolling_sharpe)


def test_summary_of_an_empty_ledger(engine):
    summary = paper.ledger_summary(engine, "slp")
    assert (summary.days, summary.first_date, summary.last_date) == (0, None, None)
    assert (summary.equity, summary.total_return, summary.drawdown) == (1.0, 0.0, 0.0)
    assert math.isnan(summary.sharpe) and math.isnan(summary.rolling_sharpe)
    assert math.isnan(summary.max_drawdown)


@pytest.mark.parametrize("window", [1, 2.5, True, "63"])
def test_summary_refuses_a_bad_window(sqlite_engine, window):
    with pytest.raises(ValueError, match="`window` must be an integer >= 2"):
        paper.ledger_summary(sqlite_engine, "slp", window=window)
