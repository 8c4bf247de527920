"""Tests for momentum.data: embedded data, file round trips, validation errors, synthetic panels."""

from __future__ import annotations

import csv
import gzip
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from momentum.data import (
    EMBEDDED,
    PriceDataError,
    SyntheticPanel,
    load_index,
    load_prices,
    markets,
    sectors,
    synthetic_prices,
    validate_prices,
)

# A small wide file: 2020-01-01 is a Wednesday, so data row 4 is Monday 2020-01-06.
DATES = ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]
AAPL = ["10.0", "10.5", "11.0", "11.5", "12.0", "12.5"]
MSFT = ["20.0", "20.5", "21.0", "21.5", "22.0", "22.5"]


def _wide_text(aapl: list[str] = AAPL, msft: list[str] = MSFT, dates: list[str] = DATES) -> str:
    lines = ["date,AAPL,MSFT"]
    lines += [f"{d},{a},{m}" for d, a, m in zip(dates, aapl, msft, strict=True)]
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _embedded_csv_rows(file_name: str) -> list[list[str]]:
    """The embedded file parsed with the csv module only (independent of the loader)."""
    ref = resources.files("momentum") / "data" / file_name
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        return list(csv.reader(text))


def _sharpe(daily: pd.Series) -> float:
    return float(daily.mean() / daily.std() * np.sqrt(252))


def _tsmom_sharpe(prices: pd.DataFrame, *, long_only: bool = False) -> float:
    """Sign of the 63-day return, vol-scaled (eq. 1 of Lim et al.), held over the next day.

    ``long_only`` replaces the sign by +1 (vol-scaled buy and hold).
    """
    returns = prices / prices.shift(1) - 1
    signal = np.sign(prices / prices.shift(63) - 1)
    if long_only:
        signal = signal.abs()
    vol = returns.ewm(span=60, min_periods=60).std()
    captured = ((signal / vol).shift(1) * returns).mean(axis=1).dropna()
    return _sharpe(captured)


# ------------------------------------------------------------------------------------------
# embedded data
# ------------------------------------------------------------------------------------------


def test_embedded_prices_follow_the_contract() -> None:
    prices = load_prices("sp500")
    rows = _embedded_csv_rows("sp500_20_stocks_1990_2022.csv.gz")
    assert prices.shape == (8313, 20) == (len(rows) - 1, len(rows[0]) - 1)
    assert prices.index.name == "date"
    assert prices.columns.name == "ticker"
    assert list(prices.columns) == rows[0][1:]  # file order (alphabetical here)
    assert prices.index[0] == pd.Timestamp("1990-01-02")
    assert prices.index[-1] == pd.Timestamp("2022-12-28")
    assert isinstance(prices.index, pd.DatetimeIndex)
    assert prices.index.tz is None
    assert prices.index.is_monotonic_increasing and prices.index.is_unique
    assert (prices.index == prices.index.normalize()).all()
    assert (prices.dtypes == np.float64).all()
    assert not prices.isna().any().any()
    assert (prices.to_numpy() > 0).all()


def test_embedded_prices_match_the_file_cell_for_cell() -> None:
    prices = load_prices()
    rows = _embedded_csv_rows("sp500_20_stocks_1990_2022.csv.gz")
    expected = np.array([[float(x) for x in row[1:]] for row in rows[1:]])
    np.testing.assert_array_equal(prices.to_numpy(), expected)
    assert prices.loc["1990-01-02", "AAPL"] == 0.264  # first data line of the file
    assert [f"{d:%Y-%m-%d}" for d in prices.index[:2]] == [rows[1][0], rows[2][0]]


def test_embedded_prices_are_a_fresh_copy_each_call() -> None:
    first = load_prices()
    first.iloc[0, 0] = -1.0
    assert load_prices().iloc[0, 0] == 0.264


def test_embedded_names() -> None:
    assert EMBEDDED == ("sp500",)


def test_load_index_is_aligned_with_the_embedded_prices() -> None:
    index = load_index()
    prices = load_prices()
    rows = _embedded_csv_rows("sp500_index_1990_2022.csv.gz")
    assert index.name == "SP500"
    assert index.dtype == np.float64
    assert index.index.name == "date"
    assert index.index.equals(prices.index)
    assert index.iloc[0] == float(rows[1][1]) == 359.69
    assert index.iloc[-1] == float(rows[-1][1])


def test_embedded_sectors_cover_every_ticker() -> None:
    sector_of = sectors()
    assert set(sector_of) == set(load_prices().columns)
    assert len(set(sector_of.values())) == 7
    by_sector = markets(sector_of, sorted(sector_of))
    assert by_sector["Information Technology"] == ["AAPL", "AMD", "MSFT"]
    assert by_sector["Health Care"] == ["JNJ", "LLY", "MRK", "PFE", "UNH"]
    assert by_sector["Industrials"] == ["GE"]
    assert sum(len(v) for v in by_sector.values()) == 20


# ------------------------------------------------------------------------------------------
# markets
# ------------------------------------------------------------------------------------------


def test_markets_keep_ticker_order_within_and_across_markets() -> None:
    got = markets({"A": "X", "B": "Y", "C": "X", "D": "Z"}, ["C", "B", "A"])
    assert got == {"X": ["C", "A"], "Y": ["B"]}
    assert list(got) == ["X", "Y"]


def test_markets_name_tickers_missing_from_the_map() -> None:
    with pytest.raises(PriceDataError, match="no market for tickers QQQ, ZZZ"):
        markets({"A": "X"}, ["A", "QQQ", "ZZZ"])


def test_markets_reject_repeated_tickers_and_a_bare_string() -> None:
    with pytest.raises(PriceDataError, match="lists A more than once"):
        markets({"A": "X"}, ["A", "A"])
    with pytest.raises(TypeError, match="tickers"):
        markets({"A": "X"}, "A")


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


@pytest.fixture
def panel() -> pd.DataFrame:
    """Real prices plus a late starter and an early leaver (legal leading / trailing NaN)."""
    frame = load_prices().iloc[:300, :6].copy()
    frame.iloc[:40, 1] = np.nan
    frame.iloc[250:, 4] = np.nan
    return frame


def _long(frame: pd.DataFrame) -> pd.DataFrame:
    """Long layout, ticker-major row order, missing cells left out."""
    long = frame.reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    return long.dropna(subset=["close"])


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("wide.csv", lambda f, p: f.to_csv(p)),
        ("wide.csv.gz", lambda f, p: f.to_csv(p)),
        ("wide.parquet", lambda f, p: f.to_parquet(p)),
        ("wide_column.pq", lambda f, p: f.reset_index().to_parquet(p, index=False)),
        ("long.csv", lambda f, p: _long(f).to_csv(p, index=False)),
        ("long.parquet", lambda f, p: _long(f).to_parquet(p, index=False)),
        (
            "long_shuffled.csv",
            lambda f, p: _long(f).sample(frac=1.0, random_state=1).to_csv(p, index=False),
        ),
    ],
)
def test_file_round_trips_give_identical_frames(
    tmp_path: Path,
    panel: pd.DataFrame,
    name: str,
    writer: Callable[[pd.DataFrame, Path], None],
) -> None:
    path = tmp_path / name
    writer(panel, path)
    if name == "long_shuffled.csv":
        # shuffled rows put some ticker's dates out of order: sorted, with a warning
        with pytest.warns(UserWarning, match="long_shuffled.csv: dates are not in increasing"):
            loaded = load_prices(path)
    else:
        loaded = load_prices(str(path))
    pd.testing.assert_frame_equal(loaded, panel, check_exact=True)


def test_random_floats_survive_a_csv_round_trip_exactly(tmp_path: Path) -> None:
    frame = synthetic_prices(5, 50, 1, seed=3).prices
    frame.to_csv(tmp_path / "p.csv")
    pd.testing.assert_frame_equal(load_prices(tmp_path / "p.csv"), frame, check_exact=True)


def test_long_headers_are_case_insensitive_and_tickers_sorted(tmp_path: Path) -> None:
    text = "Date,Ticker,Close\n2020-01-02,ZZZ,1.0\n2020-01-02,AAA,2.0\n2020-01-03,ZZZ,1.5\n"
    text += "2020-01-03,AAA,2.5\n"
    prices = load_prices(_write(tmp_path, "long.csv", text))
    assert list(prices.columns) == ["AAA", "ZZZ"]
    assert prices.loc["2020-01-03"].tolist() == [2.5, 1.5]


def test_validate_prices_accepts_a_clean_frame_unchanged(panel: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(validate_prices(panel), panel, check_exact=True)


def test_validate_prices_reads_a_date_column_and_text_cells() -> None:
    raw = pd.DataFrame({"Date": ["2020-01-02", "2020-01-03"], "AAA": ["10", " 11.5 "]})
    prices = validate_prices(raw)
    assert prices["AAA"].tolist() == [10.0, 11.5]
    assert list(prices.index) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]


def test_times_and_time_zones_reduce_to_the_wall_clock_date() -> None:
    index = pd.DatetimeIndex(["2020-01-02 16:00", "2020-01-03 16:00"]).tz_localize(
        "America/New_York"
    )
    prices = validate_prices(pd.DataFrame({"AAA": [1.0, 2.0]}, index=index))
    assert prices.index.tz is None
    assert list(prices.index) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]


def test_empty_dates_are_trimmed_at_the_ends_and_filled_inside(tmp_path: Path) -> None:
    aapl = ["", "10", "", "12", "13", ""]
    msft = ["", "20", "", "22", "23", ""]
    prices = load_prices(_write(tmp_path, "p.csv", _wide_text(aapl, msft)))
    assert list(prices.index) == [pd.Timestamp(d) for d in DATES[1:5]]
    assert prices["AAPL"].tolist() == [10.0, 10.0, 12.0, 13.0]  # 2020-01-03 is a 1-day gap
    assert prices["MSFT"].tolist() == [20.0, 20.0, 22.0, 23.0]


def test_a_single_column_gap_follows_the_gap_rule() -> None:
    raw = pd.DataFrame(
        {"Date": ["2020-01-02", "2020-01-03", "2020-01-06"], "AAA": ["10", "", "11"]}
    )
    assert validate_prices(raw)["AAA"].tolist() == [10.0, 10.0, 11.0]
    with pytest.raises(
        PriceDataError, match="<frame>: ticker AAA: no price for 1 session in a row"
    ):
        validate_prices(raw, max_fill=0)


# ------------------------------------------------------------------------------------------
# validation errors: each names the file, the row and/or date, and the ticker
# ------------------------------------------------------------------------------------------


def test_non_numeric_value_names_file_row_date_ticker_and_value(tmp_path: Path) -> None:
    msft = MSFT.copy()
    msft[3] = "abc"
    path = _write(tmp_path, "prices.csv", _wide_text(msft=msft))
    expected = "prices.csv: row 4 (date 2020-01-06), ticker MSFT: value 'abc' is not a number"
    with pytest.raises(PriceDataError, match=re.escape(expected)) as info:
        load_prices(path)
    assert (info.value.row, info.value.ticker) == (4, "MSFT")
    assert info.value.date == pd.Timestamp("2020-01-06")


@pytest.mark.parametrize(
    ("cell", "detail"),
    [
        ("-1.0", "close -1.0 is not positive"),
        ("0", "close 0.0 is not positive"),
        ("inf", "close inf is not finite"),
        ("-Infinity", "close -inf is not finite"),
    ],
)
def test_bad_prices_name_file_row_date_and_ticker(tmp_path: Path, cell: str, detail: str) -> None:
    msft = MSFT.copy()
    msft[3] = cell
    path = _write(tmp_path, "prices.csv", _wide_text(msft=msft))
    expected = f"prices.csv: row 4 (date 2020-01-06), ticker MSFT: {detail}"
    with pytest.raises(PriceDataError, match=re.escape(expected)):
        load_prices(path)


def test_the_earliest_bad_cell_is_reported(tmp_path: Path) -> None:
    aapl, msft = AAPL.copy(), MSFT.copy()
    aapl[4] = "-3"
    msft[2] = "-2"
    path = _write(tmp_path, "prices.csv", _wide_text(aapl, msft))
    with pytest.raises(PriceDataError, match=r"row 3 \(date 2020-01-03\), ticker MSFT"):
        load_prices(path)


def test_bad_parquet_value_names_row_date_and_ticker(tmp_path: Path, panel: pd.DataFrame) -> None:
    panel.iloc[10, 2] = -5.0
    path = tmp_path / "prices.parquet"
    panel.to_parquet(path)
    date = f"{panel.index[10]:%Y-%m-%d}"
    expected = f"prices.parquet: row 11 (date {date}), ticker {panel.columns[2]}: close -5.0"
    with pytest.raises(PriceDataError, match=re.escape(expected)):
        load_prices(path)


def test_in_memory_errors_use_the_given_source_label(panel: pd.DataFrame) -> None:
    panel.iloc[0, 0] = np.inf
    with pytest.raises(PriceDataError, match=r"^batch 7: row 1 \(date 1990-01-02\), ticker AAPL"):
        validate_prices(panel, source="batch 7")


def test_duplicate_date_names_the_date_and_rows(tmp_path: Path) -> None:
    dates = DATES.copy()
    dates[3] = "2020-01-03"
    path = _write(tmp_path, "prices.csv", _wide_text(dates=dates))
    with pytest.raises(PriceDataError, match=r"prices.csv: date 2020-01-03: .*rows 3, 4"):
        load_prices(path)


def test_duplicate_long_pair_names_date_ticker_and_rows(tmp_path: Path) -> None:
    text = "date,ticker,close\n2020-01-02,AAA,1\n2020-01-02,BBB,2\n2020-01-02,AAA,1.5\n"
    with pytest.raises(
        PriceDataError,
        match=r"long.csv: date 2020-01-02, ticker AAA: duplicate \(date, ticker\) pair \(rows 1, 3\)",
    ):
        load_prices(_write(tmp_path, "long.csv", text))


def test_long_bad_close_names_the_long_file_row(tmp_path: Path) -> None:
    text = "date,ticker,close\n2020-01-02,AAA,1\n2020-01-02,BBB,x1\n"
    expected = "long.csv: row 2 (date 2020-01-02), ticker BBB: close 'x1' is not a number"
    with pytest.raises(PriceDataError, match=re.escape(expected)):
        load_prices(_write(tmp_path, "long.csv", text))
    text = "date,ticker,close\n2020-01-02,AAA,1\n2020-01-02,BBB,-1\n"
    expected = "long.csv: row 2 (date 2020-01-02), ticker BBB: close -1.0 is not positive"
    with pytest.raises(PriceDataError, match=re.escape(expected)):
        load_prices(_write(tmp_path, "long.csv", text))


def test_unsorted_dates_warn_and_come_back_sorted(tmp_path: Path) -> None:
    order = [0, 2, 1, 3, 5, 4]
    text = _wide_text([AAPL[i] for i in order], [MSFT[i] for i in order], [DATES[i] for i in order])
    path = _write(tmp_path, "shuffled.csv", text)
    with pytest.warns(UserWarning, match="shuffled.csv: dates are not in increasing order"):
        prices = load_prices(path)
    assert list(prices.index) == [pd.Timestamp(d) for d in DATES]
    assert prices["AAPL"].tolist() == [float(x) for x in AAPL]
    assert prices["MSFT"].tolist() == [float(x) for x in MSFT]


def _gap_csv(tmp_path: Path, n_missing: int) -> Path:
    """AAA has `n_missing` empty sessions after its first price, then prices again."""
    dates = pd.bdate_range("2020-01-01", periods=n_missing + 3)
    aaa = ["10"] + [""] * n_missing + ["11", "12"]
    bbb = [str(20 + k) for k in range(len(dates))]
    lines = ["date,AAA,BBB"] + [
        f"{d:%Y-%m-%d},{a},{b}" for d, a, b in zip(dates, aaa, bbb, strict=True)
    ]
    return _write(tmp_path, "gaps.csv", "\n".join(lines) + "\n")


def test_a_three_session_gap_is_forward_filled(tmp_path: Path) -> None:
    prices = load_prices(_gap_csv(tmp_path, 3))
    assert prices["AAA"].tolist() == [10.0, 10.0, 10.0, 10.0, 11.0, 12.0]
    assert prices["BBB"].tolist() == [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]


def test_a_six_session_gap_names_ticker_and_first_and_last_missing_date(tmp_path: Path) -> None:
    # business days from 2020-01-01: the gap is rows 2..7 = 2020-01-02 .. 2020-01-09
    with pytest.raises(
        PriceDataError,
        match=r"gaps.csv: ticker AAA: no price for 6 sessions in a row, from 2020-01-02 to 2020-01-09",
    ):
        load_prices(_gap_csv(tmp_path, 6))
    assert load_prices(_gap_csv(tmp_path, 6), max_fill=6)["AAA"].iloc[6] == 10.0


def test_max_fill_zero_forbids_every_interior_gap(tmp_path: Path) -> None:
    with pytest.raises(PriceDataError, match=r"ticker AAA: no price for 1 session in a row"):
        load_prices(_gap_csv(tmp_path, 1), max_fill=0)


def test_a_gap_in_a_long_file_is_forward_filled(tmp_path: Path) -> None:
    # AAA has no row for 2020-01-03; BBB has none after 2020-01-03 (it ended).
    text = "date,ticker,close\n2020-01-02,AAA,1\n2020-01-02,BBB,4\n2020-01-06,AAA,2\n"
    text += "2020-01-03,BBB,5\n"
    prices = load_prices(_write(tmp_path, "long.csv", text))
    assert prices["AAA"].tolist() == [1.0, 1.0, 2.0]
    assert prices["BBB"].iloc[:2].tolist() == [4.0, 5.0]
    assert np.isnan(prices["BBB"].iloc[2])  # trailing NaN is not filled


def test_leading_and_trailing_missing_prices_are_legal(tmp_path: Path) -> None:
    aapl = ["", "", "11", "12", "13", "14"]
    msft = ["20", "21", "22", "23", "", ""]
    prices = load_prices(_write(tmp_path, "p.csv", _wide_text(aapl, msft)))
    assert prices["AAPL"].isna().tolist() == [True, True, False, False, False, False]
    assert prices["MSFT"].isna().tolist() == [False, False, False, False, True, True]


def test_an_empty_column_names_the_ticker(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", _wide_text(msft=[""] * 6))
    with pytest.raises(PriceDataError, match=r"p.csv: ticker MSFT: has no prices"):
        load_prices(path)


def test_an_empty_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PriceDataError, match=r"empty.csv: file is empty"):
        load_prices(_write(tmp_path, "empty.csv", ""))
    with pytest.raises(PriceDataError, match=r"header_only.csv: no rows"):
        load_prices(_write(tmp_path, "header_only.csv", "date,AAPL,MSFT\n"))


def test_an_unparseable_date_names_row_and_value(tmp_path: Path) -> None:
    dates = DATES.copy()
    dates[4] = "2020-13-45"
    path = _write(tmp_path, "p.csv", _wide_text(dates=dates))
    with pytest.raises(PriceDataError, match=r"p.csv: row 5: cannot parse date '2020-13-45'"):
        load_prices(path)


def test_a_blank_date_names_the_row(tmp_path: Path) -> None:
    dates = DATES.copy()
    dates[1] = ""
    path = _write(tmp_path, "p.csv", _wide_text(dates=dates))
    with pytest.raises(PriceDataError, match=r"p.csv: row 2: date is missing"):
        load_prices(path)


def test_a_missing_date_column_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "nodate.csv", "day,AAPL\n2020-01-02,1\n")
    with pytest.raises(PriceDataError, match=r"nodate.csv: no date column"):
        load_prices(path)


@pytest.mark.parametrize(
    ("header", "missing"), [("date,ticker,price", "close"), ("date,symbol,close", "ticker")]
)
def test_a_long_file_missing_ticker_or_close_names_the_column(
    tmp_path: Path, header: str, missing: str
) -> None:
    path = _write(tmp_path, "long.csv", f"{header}\n2020-01-02,AAA,1\n")
    with pytest.raises(PriceDataError, match=rf"long.csv: .*'{missing}' is missing"):
        load_prices(path)


def test_repeated_and_blank_ticker_headers_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", "date,AAA,BBB,AAA\n2020-01-02,1,2,3\n")
    with pytest.raises(PriceDataError, match=r"p.csv: ticker AAA: .*columns \(1 and 3\)"):
        load_prices(path)
    path = _write(tmp_path, "q.csv", "date,AAA,\n2020-01-02,1,2\n")
    with pytest.raises(PriceDataError, match=r"q.csv: column 2 has no ticker name"):
        load_prices(path)


def test_unknown_source_and_file_type(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"sp50: no such file .*embedded datasets are sp500"
    ):
        load_prices("sp50")
    path = _write(tmp_path, "prices.xlsx", "x")
    with pytest.raises(PriceDataError, match=r"prices.xlsx: unsupported file type"):
        load_prices(path)


def test_max_fill_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError, match="`max_fill` must be >= 0, got -1"):
        load_prices(max_fill=-1)
    with pytest.raises(TypeError, match="`max_fill` must be an int"):
        validate_prices(pd.DataFrame(), max_fill=2.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# index and sector files
# ------------------------------------------------------------------------------------------


def test_load_index_from_a_file_needs_one_value_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "idx.csv", "Date,SPX\n2020-01-02,100\n2020-01-03,101\n")
    index = load_index(path)
    assert index.name == "SPX"
    assert index.tolist() == [100.0, 101.0]
    path = _write(tmp_path, "two.csv", "date,A,B\n2020-01-02,1,2\n")
    with pytest.raises(PriceDataError, match=r"two.csv: .*exactly one value column"):
        load_index(path)


def test_sectors_from_a_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.csv", "Ticker,Sector,Name\nAAA,Energy,a\nBBB, Financials ,b\n")
    assert sectors(path) == {"AAA": "Energy", "BBB": "Financials"}


def test_sectors_reject_duplicates_empty_sectors_and_missing_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.csv", "ticker,sector\nAAA,Energy\nBBB,Energy\nAAA,Financials\n")
    with pytest.raises(PriceDataError, match=r"dup.csv: row 3, ticker AAA: .*rows 1 and 3"):
        sectors(path)
    path = _write(tmp_path, "blank.csv", "ticker,sector\nAAA,Energy\nBBB,\n")
    with pytest.raises(PriceDataError, match=r"blank.csv: row 2, ticker BBB: empty sector"):
        sectors(path)
    path = _write(tmp_path, "nocol.csv", "ticker,industry\nAAA,Energy\n")
    with pytest.raises(PriceDataError, match=r"nocol.csv: column 'sector' is missing"):
        sectors(path)


# ------------------------------------------------------------------------------------------
# synthetic generator
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic() -> SyntheticPanel:
    return synthetic_prices(30, 2520, 3, seed=0)


def test_synthetic_is_reproducible_by_seed(synthetic: SyntheticPanel) -> None:
    again = synthetic_prices(30, 2520, 3, seed=0)
    pd.testing.assert_frame_equal(again.prices, synthetic.prices, check_exact=True)
    pd.testing.assert_series_equal(again.index, synthetic.index, check_exact=True)
    assert again.markets == synthetic.markets
    other = synthetic_prices(30, 2520, 3, seed=1)
    assert not np.allclose(other.prices.fillna(0), synthetic.prices.fillna(0))


def test_synthetic_panel_follows_the_price_contract(synthetic: SyntheticPanel) -> None:
    prices = synthetic.prices
    assert prices.shape == (2520, 30)
    assert list(prices.columns) == [f"S{i:04d}" for i in range(30)]
    assert prices.index[0] == pd.Timestamp("2000-01-03")
    assert (prices.index.day_of_week < 5).all()
    assert (prices.dtypes == np.float64).all()
    values = prices.to_numpy()
    observed = values[~np.isnan(values)]
    assert np.isfinite(observed).all() and (observed > 0).all()
    # the panel passes the same validation as a loaded file, unchanged
    pd.testing.assert_frame_equal(validate_prices(prices), prices, check_exact=True)


def test_synthetic_starts_are_staggered_and_nothing_ends(synthetic: SyntheticPanel) -> None:
    prices = synthetic.prices
    first = prices.apply(lambda col: col.first_valid_index())
    assert (first > prices.index[0]).sum() == 9  # 30% of 30 assets start late
    assert (first == prices.index[0]).sum() == 21
    assert not prices.iloc[-1].isna().any()
    late = prices.loc[:, first > prices.index[0]]
    start_prices = np.array([late[t].dropna().iloc[0] for t in late])
    assert ((start_prices >= 10) & (start_prices <= 100)).all()
    assert not synthetic_prices(30, 300, 3, seed=0, stagger=False).prices.isna().any().any()


def test_synthetic_markets_partition_the_tickers(synthetic: SyntheticPanel) -> None:
    assert list(synthetic.markets) == list(synthetic.prices.columns)
    groups = markets(synthetic.markets, list(synthetic.prices.columns))
    assert sorted(groups) == ["M0", "M1", "M2"]
    assert all(len(members) == 10 for members in groups.values())
    many = synthetic_prices(12, 30, 12, seed=5)
    assert sorted(set(many.markets.values())) == sorted(f"M{m}" for m in range(12))


def test_same_market_assets_are_more_correlated(synthetic: SyntheticPanel) -> None:
    corr = np.log(synthetic.prices).diff().corr().to_numpy()
    market = np.array([synthetic.markets[t] for t in synthetic.prices.columns])
    same = market[:, None] == market[None, :]
    off_diagonal = ~np.eye(len(market), dtype=bool)
    assert corr[same & off_diagonal].mean() > corr[~same].mean() + 0.1


def test_synthetic_returns_are_fat_tailed_with_realistic_vol(synthetic: SyntheticPanel) -> None:
    log_returns = np.log(synthetic.prices).diff()
    vol = log_returns.std()
    assert vol.between(0.008, 0.025).all()  # "~1-2% daily"
    assert vol.max() / vol.min() > 1.2  # heterogeneous across assets
    standardised = (log_returns - log_returns.mean()) / vol
    assert standardised.stack().kurt() > 1.0  # a normal would give ~0


def test_sign_of_63_day_return_is_profitable(synthetic: SyntheticPanel) -> None:
    assert _tsmom_sharpe(synthetic.prices) > 0.5


def test_the_trend_is_what_makes_momentum_pay(synthetic: SyntheticPanel) -> None:
    # trend_strength changes only the drifts (same noise), so the Sharpe gap is the trend's.
    flat = synthetic_prices(30, 2520, 3, seed=0, trend_strength=0.0)
    assert _tsmom_sharpe(synthetic.prices) - _tsmom_sharpe(flat.prices) > 0.5


def test_momentum_beats_holding_because_trends_switch_sign(synthetic: SyntheticPanel) -> None:
    # With drifts of one sign, holding long would pay as well as following the trend.
    gain = _tsmom_sharpe(synthetic.prices) - _tsmom_sharpe(synthetic.prices, long_only=True)
    assert gain > 0.5


def test_synthetic_index_is_the_equal_weight_portfolio(synthetic: SyntheticPanel) -> None:
    index = synthetic.index
    prices = synthetic.prices
    assert index.index.equals(prices.index)
    assert index.iloc[0] == 100.0
    # mean simple return of the assets priced on both days (pandas skips NaN in mean)
    expected = (prices / prices.shift(1) - 1).mean(axis=1).iloc[1:]
    np.testing.assert_allclose((index / index.shift(1) - 1).iloc[1:], expected, atol=1e-12)


def test_synthetic_scales_to_thousands_of_assets() -> None:
    big = synthetic_prices(3103, 40, 30, seed=2)
    assert big.prices.shape == (40, 3103)
    assert big.prices.columns[-1] == "S3102"
    assert len(set(big.markets.values())) == 30


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_assets": 0}, "n_assets"),
        ({"n_days": 1}, "n_days"),
        ({"n_markets": 0}, "n_markets"),
        ({"n_assets": 2, "n_markets": 3}, "n_markets"),
        ({"trend_strength": -1.0}, "trend_strength"),
        ({"trend_strength": float("nan")}, "trend_strength"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        synthetic_prices(**kwargs)  # type: ignore[arg-type]


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, momentum.data; assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
