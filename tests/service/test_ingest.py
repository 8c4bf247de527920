"""Tests for service.ingest (and the calendar helpers it relies on), on SQLite and PostgreSQL.

Calendar facts used below (XNYS): 2022-01-08 is a Saturday; 2022-01-17 is Martin Luther King
Day (exchange closed); 2022-11-25, the day after Thanksgiving, closes early at 13:00 New York
time (18:00 UTC); New York is UTC-5 in January and UTC-4 in July.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest

from momentum.data import load_prices
from service import store
from service.calendar import (
    as_date,
    exchange_today,
    get_calendar,
    is_session,
    session_close,
    sessions_between,
)
from service.ingest import (
    IngestResult,
    Rejection,
    ingest_closes,
    ingest_file,
    panel_rows,
    replay_rows,
)
from tests.service.conftest import snapshot

UNIVERSE = ("AAA", "BBB")
TODAY = "2022-01-21"  # a Friday
PANEL_DTYPE = load_prices("sp500").index.dtype


def _batch(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["date", "ticker", "close"])


def _ingest(engine, rows, **kwargs) -> IngestResult:
    kwargs = {"universe": UNIVERSE, "calendar": "XNYS", "today": TODAY, **kwargs}
    return ingest_closes(engine, rows, **kwargs)


@pytest.fixture
def seeded(engine):
    """A store holding AAA and BBB on 2022-01-03 and 2022-01-04."""
    result = _ingest(
        engine,
        _batch(
            ("2022-01-03", "AAA", 10.0),
            ("2022-01-03", "BBB", 20.0),
            ("2022-01-04", "AAA", 10.5),
            ("2022-01-04", "BBB", 20.5),
        ),
        source="seed",
    )
    assert (result.ok, result.accepted) == (True, 4)
    return engine


# --------------------------------------------------------------------------------------------
# accepted batches
# --------------------------------------------------------------------------------------------


def test_a_valid_batch_is_stored(seeded):
    result = _ingest(seeded, _batch(("2022-01-05", "AAA", 11.0), ("2022-01-05", "BBB", 21.0)))
    assert result == IngestResult(accepted=2, unchanged=0, corrected=0, rejections=[])
    assert result.ok
    wide = store.read_closes(seeded, tickers=list(UNIVERSE))
    assert wide.loc[pd.Timestamp("2022-01-05")].tolist() == [11.0, 21.0]
    assert wide.shape == (3, 2)


def test_dates_may_be_dates_or_timestamps_of_the_close(engine):
    closing = pd.Timestamp("2022-01-06 16:00", tz="America/New_York")
    result = _ingest(
        engine,
        _batch(
            (date(2022, 1, 5), "AAA", 11.0), (closing, "AAA", 12.0), ("2022-01-07", "AAA", "13")
        ),
    )
    assert result.accepted == 3
    wide = store.read_closes(engine)
    assert wide.index.tolist() == [pd.Timestamp(f"2022-01-0{d}") for d in (5, 6, 7)]
    assert wide["AAA"].tolist() == [11.0, 12.0, 13.0]


def test_an_empty_batch_is_a_no_op(engine):
    assert _ingest(engine, _batch()) == IngestResult(0, 0, 0, [])


# --------------------------------------------------------------------------------------------
# rejections: one test per class, each checks the reason and that nothing changed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (("2022-01-05", "BBB", np.nan), "close nan is not finite"),
        (("2022-01-05", "BBB", np.inf), "close inf is not finite"),
        (("2022-01-05", "BBB", 0.0), "close 0.0 is not positive"),
        (("2022-01-05", "BBB", -3.5), "close -3.5 is not positive"),
        (("2022-01-05", "BBB", "n/a"), "close 'n/a' is not a number"),
        (("2022-01-05", "BBB", ""), "close is missing"),
        (("2022-01-05", "CCC", 5.0), "unknown ticker 'CCC' (not in the universe)"),
        (("2022-01-05", "", 5.0), "ticker is missing"),
        (("2022-01-08", "BBB", 5.0), "date 2022-01-08 (Saturday) is not a session of the XNYS"),
        (("2022-01-17", "BBB", 5.0), "date 2022-01-17 (Monday) is not a session of the XNYS"),
        (
            ("2022-01-24", "BBB", 5.0),
            "date 2022-01-24 is in the future (today is 2022-01-21 in America/New_York)",
        ),
        (("1989-12-29", "BBB", 5.0), "date 1989-12-29 is outside the XNYS calendar (1990-01-02"),
        (("05/01/2022", "BBB", 5.0), "cannot parse date '05/01/2022' (use YYYY-MM-DD)"),
        (("", "BBB", 5.0), "date is missing"),
        (
            ("2022-01-03", "BBB", 21.0),
            "conflicts with the stored close 20.0 (got 21.0); send it with the correction flag",
        ),
    ],
)
def test_a_bad_row_rejects_the_whole_batch(seeded, bad_row, reason):
    before = snapshot(seeded)
    result = _ingest(seeded, _batch(("2022-01-05", "AAA", 11.0), bad_row))
    assert not result.ok
    assert (result.accepted, result.unchanged, result.corrected) == (0, 0, 0)
    assert len(result.rejections) == 1
    rejection = result.rejections[0]
    assert rejection.row == 2
    assert rejection.reason == reason or rejection.reason.startswith(reason)
    assert rejection.ticker == (bad_row[1] or None)
    assert snapshot(seeded) == before  # the valid first row was not stored either


def test_a_pair_sent_twice_with_different_closes_rejects_both_rows(seeded):
    before = snapshot(seeded)
    result = _ingest(
        seeded,
        _batch(
            ("2022-01-05", "AAA", 11.0), ("2022-01-05", "BBB", 21.0), ("2022-01-05", "BBB", 21.5)
        ),
    )
    assert [r.row for r in result.rejections] == [2, 3]
    for rejection in result.rejections:
        assert rejection.reason == (
            "the batch gives different closes for this date and ticker (rows 2, 3: 21.0, 21.5)"
        )
        assert (rejection.date, rejection.ticker) == (pd.Timestamp("2022-01-05"), "BBB")
    assert snapshot(seeded) == before


def test_every_bad_row_is_reported_with_all_its_reasons(seeded):
    result = _ingest(
        seeded,
        _batch(
            ("2022-01-08", "CCC", -1.0),
            ("2022-01-05", "AAA", 11.0),
            ("2022-01-05", "BBB", np.inf),
        ),
    )
    assert [r.row for r in result.rejections] == [1, 3]
    assert result.rejections[0].reason == (
        "unknown ticker 'CCC' (not in the universe); date 2022-01-08 (Saturday) is not a "
        "session of the XNYS calendar; close -1.0 is not positive"
    )
    assert (
        str(result.rejections[1]) == "row 3, date 2022-01-05, ticker BBB: close inf is not finite"
    )


def test_future_is_judged_in_the_exchange_time_zone_by_default(engine):
    tomorrow_plus = exchange_today("XNYS") + pd.Timedelta(days=2)
    result = ingest_closes(
        engine, _batch((tomorrow_plus, "AAA", 1.0)), universe=UNIVERSE, calendar="XNYS"
    )
    assert "is in the future" in result.rejections[0].reason
    assert store.read_closes(engine).empty


def test_malformed_batches_are_programming_errors(engine):
    with pytest.raises(ValueError, match="the columns date, ticker, close and optionally override"):
        _ingest(engine, pd.DataFrame({"date": ["2022-01-05"], "close": [1.0]}))
    with pytest.raises(TypeError, match="`rows` must be a pandas DataFrame"):
        _ingest(engine, [("2022-01-05", "AAA", 1.0)])
    with pytest.raises(ValueError, match="`universe` is empty"):
        _ingest(engine, _batch(("2022-01-05", "AAA", 1.0)), universe=[])
    with pytest.raises(ValueError, match="unknown exchange calendar 'XXXX'"):
        _ingest(engine, _batch(("2022-01-05", "AAA", 1.0)), calendar="XXXX")


# --------------------------------------------------------------------------------------------
# duplicates of stored closes and corrections
# --------------------------------------------------------------------------------------------


def test_an_identical_duplicate_of_a_stored_close_is_a_no_op(seeded):
    before = snapshot(seeded)  # includes source and ingestion time of the stored rows
    result = _ingest(seeded, _batch(("2022-01-03", "BBB", 20.0)), source="again")
    assert result == IngestResult(accepted=0, unchanged=1, corrected=0, rejections=[])
    assert snapshot(seeded) == before


def test_counts_add_up_to_the_batch(seeded):
    result = _ingest(
        seeded,
        _batch(
            ("2022-01-05", "AAA", 11.0),
            ("2022-01-04", "AAA", 10.5),  # equal to the stored close
            ("2022-01-05", "BBB", 21.0),
            ("2022-01-05", "AAA", 11.0),  # repeats row 1
        ),
    )
    assert (result.accepted, result.unchanged, result.corrected) == (2, 2, 0)
    assert store.read_closes(seeded).loc[pd.Timestamp("2022-01-05")].tolist() == [11.0, 21.0]


def test_equality_allows_one_part_in_a_trillion(seeded):
    same = _ingest(seeded, _batch(("2022-01-03", "BBB", 20.0 * (1 + 5e-13))))
    assert (same.ok, same.unchanged) == (True, 1)
    different = _ingest(seeded, _batch(("2022-01-03", "BBB", 20.0 * (1 + 1e-11))))
    assert not different.ok
    assert different.rejections[0].reason.startswith("conflicts with the stored close 20.0")


def test_correction_overwrites_and_logs(seeded, caplog):
    with caplog.at_level(logging.WARNING, logger="service.ingest"):
        result = _ingest(
            seeded,
            _batch(("2022-01-03", "BBB", 21.0), ("2022-01-05", "AAA", 11.0)),
            correction=True,
            source="vendor fix",
        )
    assert (result.ok, result.accepted, result.unchanged, result.corrected) == (True, 1, 0, 1)
    wide = store.read_closes(seeded)
    assert wide.loc[pd.Timestamp("2022-01-03"), "BBB"] == 21.0
    assert wide.loc[pd.Timestamp("2022-01-05"), "AAA"] == 11.0
    log = store.read_close_corrections(seeded)
    assert log[["date", "ticker", "old_close", "new_close", "source"]].values.tolist() == [
        [pd.Timestamp("2022-01-03"), "BBB", 20.0, 21.0, "vendor fix"]
    ]
    assert "corrected close of BBB on 2022-01-03: 20.0 -> 21.0 (source vendor fix)" in caplog.text


def test_correction_does_not_excuse_invalid_rows(seeded):
    before = snapshot(seeded)
    result = _ingest(
        seeded,
        _batch(("2022-01-03", "BBB", 21.0), ("2022-01-05", "AAA", -11.0)),
        correction=True,
    )
    assert [r.row for r in result.rejections] == [2]
    assert snapshot(seeded) == before


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

FILE_PANEL = pd.DataFrame(
    {"AAA": [10.0, 10.5, 11.0], "BBB": [np.nan, 20.5, 21.0]},
    index=pd.DatetimeIndex(["2022-01-03", "2022-01-04", "2022-01-05"], name="date").astype(
        PANEL_DTYPE
    ),
).rename_axis(columns="ticker")

WIDE_CSV = "date,AAA,BBB\n2022-01-03,10.0,\n2022-01-04,10.5,20.5\n2022-01-05,11.0,21.0\n"
LONG_CSV = (
    "date,ticker,close\n2022-01-03,AAA,10.0\n2022-01-04,AAA,10.5\n2022-01-04,BBB,20.5\n"
    "2022-01-05,AAA,11.0\n2022-01-05,BBB,21.0\n"
)


def _write(tmp_path, layout, kind):
    path = tmp_path / f"closes_{layout}.{kind}"
    if kind == "csv":
        path.write_text(WIDE_CSV if layout == "wide" else LONG_CSV)
    elif layout == "wide":
        FILE_PANEL.rename_axis(columns=None).reset_index().to_parquet(path)
    else:
        panel_rows(FILE_PANEL).to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_files_wide_and_long_csv_and_parquet(engine, tmp_path, layout, kind):
    path = _write(tmp_path, layout, kind)
    result = ingest_file(engine, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert (result.ok, result.accepted) == (True, 5)
    pd.testing.assert_frame_equal(store.read_closes(engine, tickers=list(UNIVERSE)), FILE_PANEL)
    with engine.connect() as conn:
        sources = set(conn.execute(store.closes.select()).scalars(store.closes.c.source))
    assert sources == {path.name}
    again = ingest_file(engine, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert (again.accepted, again.unchanged) == (0, 5)


@pytest.mark.parametrize(
    ("name", "text", "reason", "date", "ticker"),
    [
        (
            "negative.csv",
            "date,AAA\n2022-01-03,10\n2022-01-04,-1\n",
            "negative.csv: row 2 (date 2022-01-04), ticker AAA: close -1.0 is not positive",
            pd.Timestamp("2022-01-04"),
            "AAA",
        ),
        ("nodate.csv", "day,AAA\n2022-01-03,10\n", "nodate.csv: no date column", None, None),
        # a literal nan is not "no close" here (only an empty cell is), as over gRPC
        (
            "literal-nan.csv",
            "date,AAA,BBB\n2022-01-03,10,20\n2022-01-04,nan,21\n",
            "literal-nan.csv: row 2 (date 2022-01-04), ticker AAA: value 'nan' is not a number",
            pd.Timestamp("2022-01-04"),
            "AAA",
        ),
        (
            "long-na.csv",
            "date,ticker,close\n2022-01-03,AAA,10\n2022-01-03,BBB,NA\n",
            "long-na.csv: row 2",
            pd.Timestamp("2022-01-03"),
            "BBB",
        ),
        (
            "gap.csv",
            "date,AAA\n2022-01-03,10\n2022-01-04,\n2022-01-05,11\n",
            "gap.csv: ticker AAA: no price for 1 session in a row, from 2022-01-04",
            None,
            "AAA",
        ),
        (
            "closes.txt",
            "date,AAA\n2022-01-03,10\n",
            "closes.txt: unsupported file type",
            None,
            None,
        ),
        ("empty.csv", "", "empty.csv: file is empty", None, None),
    ],
)
def test_a_malformed_file_is_one_rejection_and_stores_nothing(
    engine, tmp_path, name, text, reason, date, ticker
):
    path = tmp_path / name
    path.write_text(text)
    result = ingest_file(engine, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert (result.ok, result.accepted) == (False, 0)
    assert len(result.rejections) == 1
    rejection = result.rejections[0]
    assert rejection.row == -1
    assert rejection.reason.startswith(str(tmp_path / reason))  # the loader names the file
    assert (rejection.date, rejection.ticker) == (date, ticker)
    assert store.read_closes(engine).empty


def test_rows_of_a_well_formed_file_are_checked_like_a_batch(engine, tmp_path):
    path = tmp_path / "closes.csv"
    path.write_text("date,AAA,CCC\n2022-01-03,10.0,5.0\n2022-01-04,10.5,5.5\n")
    result = ingest_file(engine, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    # panel order: date first, then column -> the CCC closes are records 2 and 4
    assert [(r.row, r.ticker) for r in result.rejections] == [(2, "CCC"), (4, "CCC")]
    assert store.read_closes(engine).empty


def test_a_missing_file_raises(engine, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv: no such file"):
        ingest_file(engine, tmp_path / "nothere.csv", universe=UNIVERSE, calendar="XNYS")


# --------------------------------------------------------------------------------------------
# replay of the embedded data
# --------------------------------------------------------------------------------------------


def test_replay_yields_the_embedded_sessions_in_order():
    prices = load_prices("sp500")
    replay = list(replay_rows("2022-12-20"))
    assert [d for d, _ in replay] == [
        pd.Timestamp(d)
        for d in ("2022-12-20", "2022-12-21", "2022-12-22", "2022-12-23", "2022-12-27")
    ] + [pd.Timestamp("2022-12-28")]
    for day, rows in replay:
        assert list(rows.columns) == ["date", "ticker", "close"]
        assert (rows["date"] == day).all()
        assert rows["ticker"].tolist() == list(prices.columns)
        assert rows["close"].tolist() == prices.loc[day].tolist()


def test_replay_bounds_are_checked_at_the_call():
    assert [d for d, _ in replay_rows("2022-12-23", "2022-12-27")] == [
        pd.Timestamp("2022-12-23"),
        pd.Timestamp("2022-12-27"),
    ]
    with pytest.raises(ValueError, match="`start` 2022-12-28 is after `end` 2022-12-01"):
        replay_rows("2022-12-28", "2022-12-01")
    with pytest.raises(ValueError, match="sp500 has no dates between 2023-01-03 and 2023-01-31"):
        replay_rows("2023-01-03", "2023-01-31")


def test_replay_through_ingest_rebuilds_the_panel(engine):
    prices = load_prices("sp500")
    for day, rows in replay_rows("2022-12-20"):
        result = ingest_closes(
            engine, rows, universe=list(prices.columns), calendar="XNYS", source="replay"
        )
        assert (result.ok, result.accepted) == (True, 20), day
    stored = store.read_closes(engine, tickers=list(prices.columns))
    pd.testing.assert_frame_equal(stored, prices.loc["2022-12-20":])


# --------------------------------------------------------------------------------------------
# calendar helpers (service.calendar), which decide what a session is for ingest
# --------------------------------------------------------------------------------------------


def test_calendars_are_cached_and_reach_back_to_1990():
    xnys = get_calendar("XNYS")
    assert get_calendar("XNYS") is xnys
    assert get_calendar(xnys) is xnys
    assert xnys.first_session == pd.Timestamp("1990-01-02")
    with pytest.raises(ValueError, match="unknown exchange calendar 'XXXX'"):
        get_calendar("XXXX")


def test_sessions_skip_weekends_and_holidays():
    sessions = sessions_between("XNYS", "2022-01-14", "2022-01-19")
    assert sessions.tolist() == [
        pd.Timestamp(d) for d in ("2022-01-14", "2022-01-18", "2022-01-19")
    ]
    assert sessions.dtype == PANEL_DTYPE and sessions.name == "date"
    assert sessions_between("XNYS", "2022-01-19", "2022-01-14").empty
    assert not is_session("XNYS", "2022-01-17") and is_session("XNYS", date(2022, 1, 18))
    with pytest.raises(ValueError, match="`date` 1985-01-02 is outside the XNYS calendar"):
        is_session("XNYS", "1985-01-02")
    with pytest.raises(ValueError, match="`start` 1989-12-01 is outside"):
        sessions_between("XNYS", "1989-12-01", "1990-01-31")


def test_session_close_respects_early_closes_and_daylight_saving():
    assert session_close("XNYS", "2022-11-25") == pd.Timestamp("2022-11-25 18:00", tz="UTC")
    assert session_close("XNYS", "2022-11-28") == pd.Timestamp("2022-11-28 21:00", tz="UTC")
    assert session_close("XNYS", "2022-07-01") == pd.Timestamp("2022-07-01 20:00", tz="UTC")
    with pytest.raises(ValueError, match="2022-01-17 is not a session of the XNYS calendar"):
        session_close("XNYS", "2022-01-17")


def test_exchange_today_uses_the_exchange_time_zone():
    assert exchange_today("XNYS", pd.Timestamp("2022-01-04 02:00", tz="UTC")) == pd.Timestamp(
        "2022-01-03"
    )
    assert exchange_today("XNYS", pd.Timestamp("2022-01-04 05:30", tz="UTC")) == pd.Timestamp(
        "2022-01-04"
    )
    with pytest.raises(ValueError, match="`now` must be timezone-aware"):
        exchange_today("XNYS", pd.Timestamp("2022-01-04 02:00"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2022-01-03 16:00", "without time of day"),
        (pd.Timestamp("2022-01-03", tz="UTC"), "without time zone"),
        ("soon", "must be a date like 2022-01-03"),
        (None, "must be a date like 2022-01-03"),
    ],
)
def test_as_date_refuses_ambiguous_values(value, message):
    with pytest.raises(ValueError, match=message):
        as_date(value, "as_of")
    assert as_date(date(2022, 1, 3)) == pd.Timestamp("2022-01-03")


def test_rejection_text_names_the_row():
    assert str(Rejection(-1, None, None, "x.csv: file is empty")) == "file: x.csv: file is empty"
