"""Tests for service.store on SQLite and PostgreSQL: schema, round trips, atomic writes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from momentum.data import load_prices
from service import store
from tests.service.conftest import snapshot

D1, D2, D3 = pd.Timestamp("2022-01-03"), pd.Timestamp("2022-01-04"), pd.Timestamp("2022-01-05")
T0 = datetime(2022, 1, 4, 21, 30, tzinfo=UTC)
PANEL_DTYPE = load_prices("sp500").index.dtype  # dates come back like momentum.data panels


def _closes(*rows: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date", "ticker", "close"])


def _positions(signal, vol=(0.2, 0.4), tickers=("AAA", "BBB"), stale=None) -> pd.DataFrame:
    frame = pd.DataFrame({"signal": signal, "vol": vol}, index=list(tickers))
    # eq. (1) with vol target 0.15 and N = 2 assets
    frame["weight"] = frame["signal"] * 0.15 / frame["vol"] / 2
    if stale is not None:
        frame["stale"] = stale
    return frame


def _run(as_of, version="v1", **extra):
    return {"as_of": as_of, "model_name": "slp", "model_version": version, **extra}


# --------------------------------------------------------------------------------------------
# engine
# --------------------------------------------------------------------------------------------


def test_sqlite_file_is_created_with_wal_foreign_keys_and_busy_timeout(tmp_path):
    path = tmp_path / "deep" / "er" / "momentum.db"
    engine = store.create_engine(f"sqlite:///{path}")
    try:
        assert path.is_file()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert set(sa.inspect(engine).get_table_names()) == {
            "closes",
            "close_corrections",
            "feature_states",
            "positions",
            "cycle_runs",
            "model_loads",
            "paper_ledger",
            "reruns",
        }
    finally:
        engine.dispose()


def test_opening_an_existing_store_keeps_its_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'momentum.db'}"
    first = store.create_engine(url)
    store.insert_closes(first, _closes(("2022-01-03", "AAA", 10.0)), source="t")
    first.dispose()
    second = store.create_engine(url)
    try:
        assert store.read_closes(second).loc[D1, "AAA"] == 10.0
    finally:
        second.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL 'not a url'"),
        ("mysql://svc:hunter2@db/momentum", "unsupported backend 'mysql'"),
        ("postgresql+nodriver://svc:hunter2@db/momentum", "driver not available"),
    ],
)
def test_bad_url_is_a_value_error_naming_the_url_without_password(url, message):
    with pytest.raises(ValueError, match=message) as caught:
        store.create_engine(url)
    assert "hunter2" not in str(caught.value)
    if "svc" in url:
        assert "svc:***@db" in str(caught.value)


def test_unreachable_server_is_a_connection_error_without_password():
    # Port 1 on loopback refuses at once.
    with pytest.raises(ConnectionError, match="cannot open database") as caught:
        store.create_engine("postgresql://svc:hunter2@127.0.0.1:1/momentum")
    assert "hunter2" not in str(caught.value)
    assert "postgresql://svc:***@127.0.0.1:1/momentum" in str(caught.value)  # as given


# --------------------------------------------------------------------------------------------
# closes
# --------------------------------------------------------------------------------------------


def test_closes_come_back_as_a_wide_panel(engine):
    store.insert_closes(
        engine,
        _closes(
            ("2022-01-03", "BBB", 20.0),
            ("2022-01-03", "AAA", 10.0),
            ("2022-01-04", "AAA", 10.5),
            ("2022-01-05", "BBB", 21.25),
        ),
        source="test",
    )
    wide = store.read_closes(engine, tickers=["BBB", "AAA", "CCC"])
    expected = pd.DataFrame(
        {"BBB": [20.0, np.nan, 21.25], "AAA": [10.0, 10.5, np.nan], "CCC": np.nan},
        index=pd.DatetimeIndex([D1, D2, D3], name="date").astype(PANEL_DTYPE),
    )
    expected.columns.name = "ticker"
    pd.testing.assert_frame_equal(wide, expected)
    assert list(store.read_closes(engine).columns) == ["AAA", "BBB"]  # default: sorted
    bounded = store.read_closes(engine, start="2022-01-04", end="2022-01-04")
    assert bounded.index.tolist() == [D2]
    assert bounded.columns.tolist() == ["AAA"] and bounded.loc[D2, "AAA"] == 10.5
    assert store.closes_dates(engine).tolist() == [D1, D2, D3]
    assert store.closes_dates(engine, start=D2).tolist() == [D2, D3]


def test_empty_store_reads_as_empty_panel(engine):
    for bulk in (False, True):
        wide = store.read_closes(engine, tickers=["AAA"], bulk=bulk)
        assert wide.shape == (0, 1) and list(wide.columns) == ["AAA"]
        assert wide.index.name == "date" and wide.index.dtype == PANEL_DTYPE
        assert store.read_closes(engine, bulk=bulk).shape == (0, 0)
    assert store.closes_dates(engine).empty


def test_bulk_read_of_a_sqlite_file_streams_from_child_processes(sqlite_engine, monkeypatch):
    prices = load_prices("sp500").iloc[-60:, :7]
    long = prices.stack().rename("close").reset_index()
    store.insert_closes(sqlite_engine, long, source="sp500")
    started = []
    popen = store.price_reads.subprocess.Popen

    def spy(command, **kwargs):
        started.append(command)
        return popen(command, **kwargs)

    monkeypatch.setattr(store.price_reads.subprocess, "Popen", spy)
    monkeypatch.setattr(store.price_reads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(store.price_reads, "_STREAM_PARTS", 3)
    monkeypatch.setattr(store.price_reads, "_STREAM_MIN_ROWS", 0)
    tickers = list(prices.columns)
    bulk = store.read_closes(sqlite_engine, end=prices.index[-5], tickers=tickers, bulk=True)
    pd.testing.assert_frame_equal(bulk, prices.iloc[:-4])
    # three children, each a third of the rowids (no overlap, none left out)
    assert len(started) == 3
    ranges = sorted((int(c[-3]), int(c[-2])) for c in started)
    assert ranges[0][0] == 1 and ranges[-1][1] == len(long)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    # a small table is read in this process: no child
    started.clear()
    monkeypatch.setattr(store.price_reads, "_STREAM_MIN_ROWS", len(long) + 1)
    small = store.read_closes(sqlite_engine, tickers=tickers, bulk=True)
    pd.testing.assert_frame_equal(small, prices)
    assert started == []


def test_a_failed_bulk_read_raises_and_returns_nothing(sqlite_engine, monkeypatch, tmp_path):
    prices = load_prices("sp500").iloc[-20:, :3]
    store.insert_closes(sqlite_engine, prices.stack().rename("close").reset_index(), source="t")
    # a child that writes a well-formed stream of part of the rows, then fails
    script = tmp_path / "half.py"
    real = store.price_reads._STREAM_SCRIPT
    script.write_text(
        "import runpy, sys\n"
        f"sys.argv[-2] = str(int(sys.argv[-3]) + 4)\n"
        "try:\n"
        f"    runpy.run_path({str(real)!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "print('disk I/O error', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setattr(store.price_reads, "_STREAM_SCRIPT", script)
    monkeypatch.setattr(store.price_reads, "_STREAM_MIN_ROWS", 0)
    with pytest.raises(
        RuntimeError, match=r"bulk read of the closes in .*momentum\.db failed: disk I/O error"
    ):
        store.read_closes(sqlite_engine, bulk=True)
    # without `bulk` the same store reads whole
    assert store.read_closes(sqlite_engine).notna().sum().sum() == prices.notna().sum().sum()


def test_closes_round_trip_bit_for_bit(engine):
    prices = load_prices("sp500").iloc[-30:, :5]
    long = prices.stack().rename("close").reset_index()
    store.insert_closes(engine, long, source="sp500")
    pd.testing.assert_frame_equal(store.read_closes(engine, tickers=list(prices.columns)), prices)


def test_insert_is_all_or_nothing(engine):
    store.insert_closes(engine, _closes(("2022-01-03", "AAA", 10.0)), source="first")
    before = snapshot(engine)
    with pytest.raises(sa.exc.IntegrityError):
        store.insert_closes(
            engine,
            _closes(("2022-01-04", "AAA", 11.0), ("2022-01-03", "AAA", 12.0)),
            source="second",
        )
    assert snapshot(engine) == before


def test_invalid_close_is_refused_before_writing(engine):
    with pytest.raises(ValueError, match=r"row 2 \(ticker BBB\): close -1.0"):
        store.insert_closes(
            engine, _closes(("2022-01-03", "AAA", 1.0), ("2022-01-03", "BBB", -1.0)), source="t"
        )
    assert store.read_closes(engine).empty


def test_stored_closes_aligns_with_the_rows(engine):
    store.insert_closes(engine, _closes(("2022-01-03", "AAA", 10.0)), source="t")
    keys = pd.DataFrame({"date": ["2022-01-04", "2022-01-03"], "ticker": ["AAA", "AAA"]})
    found = store.stored_closes(engine, keys)
    assert np.isnan(found.iloc[0]) and found.iloc[1] == 10.0


def test_correction_overwrites_and_is_logged(engine):
    store.insert_closes(
        engine, _closes(("2022-01-03", "AAA", 10.0), ("2022-01-03", "BBB", 20.0)), source="feed"
    )
    fix = _closes(("2022-01-03", "AAA", 10.1))
    assert store.correct_closes(engine, fix, source="vendor fix", corrected_at=T0) == 1
    assert store.read_closes(engine).loc[D1].tolist() == [10.1, 20.0]
    log = store.read_close_corrections(engine)
    assert log[["date", "ticker", "old_close", "new_close", "source"]].values.tolist() == [
        [D1, "AAA", 10.0, 10.1, "vendor fix"]
    ]
    assert log["corrected_at"].iloc[0] == T0


def test_correcting_a_missing_close_changes_nothing(engine):
    store.insert_closes(engine, _closes(("2022-01-03", "AAA", 10.0)), source="feed")
    before = snapshot(engine)
    with pytest.raises(ValueError, match="no stored close to correct for 2022-01-04, ticker AAA"):
        store.correct_closes(
            engine, _closes(("2022-01-03", "AAA", 9.0), ("2022-01-04", "AAA", 9.5)), source="x"
        )
    assert snapshot(engine) == before


# --------------------------------------------------------------------------------------------
# cycles and positions
# --------------------------------------------------------------------------------------------


def test_positions_round_trip_with_nan_as_null(engine):
    frame = _positions([0.5, np.nan], vol=(0.2, np.nan))
    run_id = store.write_cycle(engine, _run(D1, data_cutoff=D1), frame)
    got = store.latest_positions(engine, "slp")
    assert got.index.tolist() == ["AAA", "BBB"]
    assert got.loc["AAA", ["signal", "vol", "weight"]].tolist() == [
        0.5,
        0.2,
        frame.loc["AAA", "weight"],  # bit for bit
    ]
    assert got.loc["BBB", ["signal", "vol", "weight"]].isna().all()
    assert got["stale"].tolist() == [False, False]
    assert (got["as_of"] == D1).all() and (got["model_version"] == "v1").all()
    assert (got["run_id"] == run_id).all()
    with engine.connect() as conn:  # NaN is stored as NULL, not as a float NaN
        nulls = conn.execute(
            sa.select(sa.func.count()).where(store.positions.c.signal.is_(None))
        ).scalar()
    assert nulls == 1


def test_rerunning_a_date_leaves_one_set_of_rows(engine):
    store.write_cycle(engine, _run(D1), _positions([0.5, -0.5]))
    second = store.write_cycle(engine, _run(D1), _positions([0.25, 1.0], stale=[False, True]))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.positions)).all()
    assert len(rows) == 2 and {r.run_id for r in rows} == {second}
    got = store.latest_positions(engine, "slp")
    assert got["signal"].tolist() == [0.25, 1.0] and got["stale"].tolist() == [False, True]
    runs = store.read_cycle_runs(engine)
    assert runs["status"].tolist() == ["succeeded", "succeeded"]
    assert runs["n_assets"].tolist() == [2, 2] and runs["n_stale"].tolist() == [1, 0]


def test_latest_positions_picks_the_newest_set_on_or_before_as_of(engine):
    store.write_cycle(engine, _run(D1), _positions([0.1, 0.1]))
    store.write_cycle(engine, _run(D3), _positions([0.3, 0.3]))
    assert store.latest_positions(engine, "slp")["as_of"].iloc[0] == D3
    assert store.latest_positions(engine, "slp", as_of=D2)["as_of"].iloc[0] == D1
    assert store.latest_positions(engine, "slp", as_of=D3)["signal"].iloc[0] == 0.3
    assert store.latest_positions(engine, "slp", as_of="2021-12-31") is None
    assert store.latest_positions(engine, "tft") is None
    assert store.positions_dates(engine, "slp").tolist() == [D1, D3]
    assert store.positions_dates(engine, "slp").dtype == PANEL_DTYPE


def test_model_versions_are_kept_apart(engine):
    store.write_cycle(engine, _run(D1, "v1"), _positions([0.1, 0.1]))
    store.write_cycle(engine, _run(D1, "v2"), _positions([0.2, 0.2]))
    store.write_cycle(engine, _run(D2, "v1"), _positions([0.3, 0.3]))
    assert store.latest_positions(engine, "slp", as_of=D1)["model_version"].iloc[0] == "v2"
    pinned = store.latest_positions(engine, "slp", as_of=D1, model_version="v1")
    assert pinned["signal"].tolist() == [0.1, 0.1]
    assert store.latest_positions(engine, "slp", model_version="v2")["as_of"].iloc[0] == D1
    assert store.positions_dates(engine, "slp", "v2").tolist() == [D1]
    assert store.positions_dates(engine, "slp").tolist() == [D1, D2]


def test_the_newest_set_follows_the_latest_succeeded_run_not_failed_ones(engine):
    store.write_cycle(engine, _run(D1, "v1"), _positions([0.1, 0.1]))
    store.write_cycle(engine, _run(D1, "v2"), _positions([0.2, 0.2]))
    store.write_cycle(engine, _run(D1, "v1"), _positions([0.3, 0.3]))  # v1 again: written last
    assert store.latest_positions(engine, "slp")["signal"].tolist() == [0.3, 0.3]
    store.record_failed_cycle(engine, {"as_of": D2, "model_name": "slp", "error": "boom"})
    store.record_failed_cycle(
        engine, {"as_of": D3, "model_name": "slp", "model_version": "v2", "status": "skipped"}
    )
    # failed and skipped runs store no set: the dates and the newest set ignore them
    assert store.positions_dates(engine, "slp").tolist() == [D1]
    assert store.positions_dates(engine, "slp", "v2").tolist() == [D1]
    newest = store.latest_positions(engine, "slp", as_of=D3)
    assert newest["model_version"].iloc[0] == "v1" and newest["stale"].all()
    assert store.latest_positions(engine, "slp", model_version="v2")["stale"].tolist() == [
        False,
        False,
    ]


def test_positions_signals_reads_one_version_between_two_dates(engine):
    store.write_cycle(engine, _run(D1, "v1"), _positions([0.1, -0.1]))
    # a NULL signal (not tradable) reads as NaN
    store.write_cycle(engine, _run(D2, "v1"), _positions([0.2, np.nan], vol=(0.2, np.nan)))
    store.write_cycle(engine, _run(D2, "v2"), _positions([0.9, 0.9]))
    store.write_cycle(engine, _run(D3, "v1"), _positions([0.3, -0.3]))
    got = store.positions_signals(engine, "slp", "v1", start=D1, end=D2)
    assert got.dtype == np.float64
    assert np.isnan(got).sum() == 1
    assert sorted(got[~np.isnan(got)].tolist()) == [-0.1, 0.1, 0.2]
    assert len(store.positions_signals(engine, "slp", "v3", start=D1, end=D3)) == 0


@pytest.mark.parametrize(
    ("run", "frame", "message"),
    [
        (_run(D1), _positions([1.5, 0.0]), r"ticker AAA: signal 1.5 is outside \[-1, 1\]"),
        (
            _run(D1),
            _positions([0.5, 0.0], vol=(0.2, 0.0)).fillna({"weight": 0.0}),
            "ticker BBB: vol 0.0 is not positive",
        ),
        (_run(D1), _positions([0.5, 0.5], tickers=("AAA", "AAA")), "lists ticker AAA twice"),
        (_run(D1), _positions([0.5, 0.5]).drop(columns="weight"), "missing \\['weight'\\]"),
        (_run(D1), _positions([0.5, 0.5]).iloc[:0], "`positions` is empty"),
        (_run(D1, None), _positions([0.5, 0.5]), r"`run\['model_version'\]` must be a non-empty"),
        (_run(D1, status="failed"), _positions([0.5, 0.5]), "must be one of succeeded"),
        (_run(D1, started_at=datetime(2022, 1, 3)), _positions([0.5, 0.5]), "timezone-aware"),
        (_run("2022-01-03 16:00"), _positions([0.5, 0.5]), "without time of day"),
        (_run(D1, nassets=2), _positions([0.5, 0.5]), r"unknown keys \['nassets'\]"),
    ],
)
def test_invalid_cycle_is_refused_and_nothing_is_written(engine, run, frame, message):
    before = snapshot(engine)
    with pytest.raises(ValueError, match=message):
        store.write_cycle(engine, run, frame)
    assert snapshot(engine) == before


def test_infinite_weight_is_refused(engine):
    frame = _positions([0.5, 0.5])
    frame.loc["BBB", "weight"] = np.inf
    with pytest.raises(ValueError, match="ticker BBB: weight is infinite"):
        store.write_cycle(engine, _run(D1), frame)


def test_cycle_write_is_atomic_at_every_statement(engine, trap):
    """An exception at any statement of write_cycle (after the delete too) changes nothing."""
    store.write_cycle(engine, _run(D1), _positions([0.5, -0.5]))
    before = snapshot(engine)
    failed_at = []
    for n in itertools.count():
        trap.arm(engine, n)
        try:
            store.write_cycle(engine, _run(D1), _positions([0.1, 0.2]))
        except RuntimeError as exc:
            failed_at.append(str(exc))
            assert snapshot(engine) == before, f"failure at statement {n} left partial writes"
        else:
            trap.disarm()
            break
    # The run insert, the delete of the old set and the insert of the new one were all hit.
    for statement in ("INSERT INTO cycle_runs", "DELETE FROM positions", "INSERT INTO positions"):
        assert any(statement in message for message in failed_at), statement
    assert store.latest_positions(engine, "slp")["signal"].tolist() == [0.1, 0.2]


def test_failed_cycle_marks_the_last_good_positions_stale(engine):
    store.write_cycle(engine, _run(D1), _positions([0.5, -0.5]))
    store.write_cycle(engine, _run(D3), _positions([0.1, 0.1]))
    run_id = store.record_failed_cycle(
        engine,
        {"as_of": D2, "model_name": "slp", "error": "ValueError: boom", "started_at": T0},
    )
    # D2 failed: the set dated D1 (the newest on or before D2) is stale, D3 is untouched.
    assert store.latest_positions(engine, "slp", as_of=D2)["stale"].tolist() == [True, True]
    assert store.latest_positions(engine, "slp", as_of=D3)["stale"].tolist() == [False, False]
    assert store.latest_positions(engine, "slp", as_of=D2)["signal"].tolist() == [0.5, -0.5]
    runs = store.read_cycle_runs(engine, status="failed")
    assert runs["id"].tolist() == [run_id]
    assert runs["error"].iloc[0] == "ValueError: boom"
    assert runs["started_at"].iloc[0] == T0
    assert pd.isna(runs["model_version"].iloc[0])
    assert pd.isna(runs["n_assets"].iloc[0]) and runs["n_assets"].dtype == "Int64"


def test_skipped_cycle_is_recorded_and_marks_stale(engine):
    store.write_cycle(engine, _run(D1), _positions([0.5, -0.5]))
    store.record_failed_cycle(
        engine, _run(D2, status="skipped", error="no close for BBB", n_assets=2, n_stale=1)
    )
    assert store.latest_positions(engine, "slp")["stale"].all()
    runs = store.read_cycle_runs(engine, as_of=D2)
    assert runs[["status", "n_assets", "n_stale"]].values.tolist() == [["skipped", 2, 1]]


def test_failure_without_any_positions_only_records_the_run(engine):
    store.record_failed_cycle(engine, {"as_of": D1, "model_name": "slp", "error": "no model"})
    assert store.latest_positions(engine, "slp") is None
    assert store.read_cycle_runs(engine)["status"].tolist() == ["failed"]


def test_failure_record_is_atomic_at_every_statement(engine, trap):
    store.write_cycle(engine, _run(D1), _positions([0.5, -0.5]))
    before = snapshot(engine)
    failed_at = []
    for n in itertools.count():
        trap.arm(engine, n)
        try:
            store.record_failed_cycle(engine, {"as_of": D2, "model_name": "slp", "error": "x"})
        except RuntimeError as exc:
            failed_at.append(str(exc))
            assert snapshot(engine) == before, f"failure at statement {n} left partial writes"
        else:
            trap.disarm()
            break
    for statement in ("INSERT INTO cycle_runs", "UPDATE positions"):
        assert any(statement in message for message in failed_at), statement
    assert store.latest_positions(engine, "slp")["stale"].all()


def test_writes_in_one_transaction_commit_together(engine):
    before = snapshot(engine)
    with pytest.raises(RuntimeError, match="after both writes"), store.transaction(engine) as conn:
        store.write_cycle(conn, _run(D1), _positions([0.5, -0.5]))
        store.insert_closes(conn, _closes(("2022-01-03", "AAA", 1.0)), source="t")
        raise RuntimeError("after both writes")
    assert snapshot(engine) == before
    with store.transaction(engine) as conn:
        store.write_cycle(conn, _run(D1), _positions([0.5, -0.5]))
        store.insert_closes(conn, _closes(("2022-01-03", "AAA", 1.0)), source="t")
    assert store.latest_positions(engine, "slp") is not None
    assert store.read_closes(engine).shape == (1, 1)


def test_cycle_runs_keep_times_and_filter(engine):
    start, end = T0, T0 + timedelta(seconds=2.5)
    store.write_cycle(engine, _run(D1, started_at=start, finished_at=end), _positions([0, 0]))
    store.write_cycle(engine, _run(D2), _positions([0, 0]))
    store.record_failed_cycle(engine, {"as_of": D3, "model_name": "tft", "error": "e"})
    runs = store.read_cycle_runs(engine)
    assert runs["as_of"].tolist() == [D3, D2, D1]  # newest first
    assert store.read_cycle_runs(engine, model_name="slp", limit=1)["as_of"].tolist() == [D2]
    first = store.read_cycle_runs(engine, as_of=D1).iloc[0]
    assert (first["started_at"], first["finished_at"]) == (start, end)
    assert str(first["started_at"].tzinfo) == "UTC"
    with pytest.raises(ValueError, match="`status` must be one of"):
        store.read_cycle_runs(engine, status="done")


# --------------------------------------------------------------------------------------------
# model loads and the paper ledger
# --------------------------------------------------------------------------------------------


def test_model_loads_are_logged_newest_first(engine):
    paris = timezone(timedelta(hours=2))
    store.record_model_load(
        engine,
        model_name="slp",
        model_version="v1",
        ok=True,
        sha256="ab" * 32,
        provider="CPUExecutionProvider",
        loaded_at=datetime(2022, 1, 4, 23, 30, tzinfo=paris),
    )
    store.record_model_load(
        engine, model_name="slp", model_version="v2", ok=False, reason="sha256 mismatch"
    )
    loads = store.read_model_loads(engine)
    assert loads["model_version"].tolist() == ["v2", "v1"]
    assert loads["ok"].tolist() == [False, True]
    assert loads["reason"].iloc[0] == "sha256 mismatch"
    assert loads["loaded_at"].iloc[1] == datetime(2022, 1, 4, 21, 30, tzinfo=UTC)
    assert len(store.read_model_loads(engine, limit=1)) == 1
    with pytest.raises(ValueError, match="`reason` is required"):
        store.record_model_load(engine, model_name="slp", model_version="v3", ok=False)


def test_ledger_rows_replace_by_date_and_model(engine):
    row = {
        "date": D2,
        "model_name": "slp",
        "model_version": "v1",
        "gross_return": 0.01,
        "cost": 0.0005,
        "net_return": 0.0095,
        "turnover": 1.0,
        "equity": 1.0095,
    }
    store.write_ledger_row(engine, row)
    store.write_ledger_row(engine, {**row, "date": D3, "net_return": -0.02, "equity": 0.989})
    store.write_ledger_row(engine, {**row, "gross_return": 0.02, "net_return": 0.0195})
    ledger = store.read_ledger(engine, "slp")
    assert ledger.index.tolist() == [D2, D3] and ledger.index.dtype == PANEL_DTYPE
    assert ledger.loc[D2, ["gross_return", "net_return"]].tolist() == [0.02, 0.0195]
    assert ledger.loc[D3, "equity"] == 0.989
    assert store.read_ledger(engine, "slp", start=D3).index.tolist() == [D3]
    assert store.read_ledger(engine, "tft").empty


def test_ledger_refuses_non_finite_values(engine):
    row = dict.fromkeys(("gross_return", "cost", "net_return", "turnover", "equity"), 0.0)
    with pytest.raises(ValueError, match=r"`row\['equity'\]` must be finite"):
        store.write_ledger_row(engine, {**row, "date": D1, "model_name": "slp", "equity": np.nan})
    with pytest.raises(ValueError, match="missing cost"):
        store.write_ledger_row(engine, {"date": D1, "model_name": "slp", "gross_return": 0.0})
    assert store.read_ledger(engine, "slp").empty


def test_bulk_insert_stores_every_value_exactly_on_both_backends(engine, monkeypatch):
    monkeypatch.setattr(store.prices, "_BULK_ROWS", 7)  # many chunks, ticker lengths mixed
    # read back in batches of 11 rows: dates and tickers straddle batches, each one seen anew
    monkeypatch.setattr(store.price_reads, "_FETCH_ROWS", 11)
    # the bulk read (SQLite: child processes): three rowid ranges, batches of 5 rows
    monkeypatch.setattr(store.price_reads, "_STREAM_PARTS", 3)
    monkeypatch.setattr(store.price_reads, "_STREAM_ROWS", 5)
    monkeypatch.setattr(store.price_reads, "_STREAM_MIN_ROWS", 0)
    # tickers of several byte lengths (one non-ASCII), closes at full float64 precision
    tickers = ["A", "BB", "CCC", "DÉJÀ", "EEEEEEEEEE"]
    dates = pd.DatetimeIndex(pd.bdate_range("2022-01-03", periods=40), freq=None)
    rng = np.random.default_rng(3)
    values = np.exp(rng.normal(0, 3, size=(len(dates), len(tickers)))) * (1 + 1 / 3)
    values[5, 2] = np.nan  # a missing close stays missing
    panel = pd.DataFrame(values, index=dates, columns=tickers)
    rows = panel.stack().rename("close").reset_index()
    rows.columns = ["date", "ticker", "close"]
    rows = rows.dropna()
    stamp = datetime(2022, 3, 1, 21, 5, 7, 123456, tzinfo=UTC)
    assert store.insert_closes(engine, rows, source="bulk-ÿ", ingested_at=stamp) == len(rows)
    for bulk in (False, True):
        back = store.read_closes(engine, bulk=bulk)
        pd.testing.assert_frame_equal(back, panel.rename_axis(index="date", columns="ticker"))
        # a column order asked for, with a ticker never stored, and a date window
        window = store.read_closes(
            engine,
            start=dates[3],
            end=dates[30],
            tickers=["EEEEEEEEEE", "ZZZ", "DÉJÀ", "A"],
            bulk=bulk,
        )
        expected = panel.loc[dates[3] : dates[30], ["EEEEEEEEEE", "DÉJÀ", "A"]]
        pd.testing.assert_frame_equal(
            window.drop(columns="ZZZ"), expected.rename_axis(index="date", columns="ticker")
        )
        assert window["ZZZ"].isna().all()
    with engine.connect() as conn:
        meta = conn.execute(sa.select(store.closes.c.source, store.closes.c.ingested_at)).all()
    assert {m.source for m in meta} == {"bulk-ÿ"} and {m.ingested_at for m in meta} == {stamp}
    # the vectorised lookup finds each stored close, NaN for the rest
    probe = pd.DataFrame({"date": [dates[1], dates[5], dates[7]], "ticker": ["DÉJÀ", "CCC", "ZZZ"]})
    found = store.stored_closes(engine, probe)
    assert found.iloc[0] == values[1, 3] and np.isnan(found.iloc[1]) and np.isnan(found.iloc[2])
