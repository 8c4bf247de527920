"""Plausibility at ingest (service.plausibility through service.ingest), on SQLite and PostgreSQL.

Each implausible close is rejected with its figure in the reason and nothing is stored; a row
sent with override=true passes the jump check (never the absolute range).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service import store
from service.ingest import ingest_closes, ingest_file
from service.plausibility import PlausibilityRules
from tests.service.conftest import snapshot

UNIVERSE = ("AAA", "BBB")
TODAY = "2022-02-18"


def _rows(*rows, override=None) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["date", "ticker", "close"])
    if override is not None:
        frame["override"] = override
    return frame


def _ingest(engine, rows, **kwargs):
    kwargs = {"universe": UNIVERSE, "calendar": "XNYS", "today": TODAY, **kwargs}
    return ingest_closes(engine, rows, **kwargs)


@pytest.fixture
def seeded(engine):
    """AAA at 100 and BBB at 20 on 2022-01-03 and 2022-01-04."""
    result = _ingest(
        engine,
        _rows(
            ("2022-01-03", "AAA", 100.0),
            ("2022-01-03", "BBB", 20.0),
            ("2022-01-04", "AAA", 101.0),
            ("2022-01-04", "BBB", 20.5),
        ),
    )
    assert result.ok, result.rejections
    return engine


def _rejected(engine, rows, **kwargs) -> list[str]:
    before = snapshot(engine)
    result = _ingest(engine, rows, **kwargs)
    assert not result.ok
    assert snapshot(engine) == before  # nothing stored, nothing half-written
    return [r.reason for r in result.rejections]


@pytest.mark.parametrize(
    ("close", "fragment"),
    [
        (1e308, "close 1e+308 is outside the plausible range [0.0001, 1e+07]"),
        (5e-324, "close 5e-324 is outside the plausible range [0.0001, 1e+07]"),
        (101_000.0, "is 1000x the previous close 101.0, beyond the plausible 5x either way"),
        (101.0 / 6, "is 0.1667x the previous close 101.0"),
    ],
)
def test_an_implausible_close_is_rejected_with_its_figure(seeded, close, fragment):
    reasons = _rejected(seeded, _rows(("2022-01-05", "AAA", close), ("2022-01-05", "BBB", 21.0)))
    assert len(reasons) == 1 and fragment in reasons[0], reasons


def test_a_jump_inside_one_batch_is_judged_against_the_batchs_previous_row(engine):
    # an empty store, three sessions in one batch: the third AAA close is 10x the second
    reasons = _rejected(
        engine,
        _rows(
            ("2022-01-03", "AAA", 10.0),
            ("2022-01-04", "AAA", 11.0),
            ("2022-01-05", "AAA", 110.0),
            ("2022-01-05", "BBB", 5.0),
        ),
    )
    assert reasons == [
        "close 110.0 is 10x the previous close 11.0, beyond the plausible 5x either way; "
        "send it with override=true if it is right (a split, a crash)"
    ]


def test_override_passes_the_jump_check_but_not_the_range(seeded):
    split = _rows(("2022-01-05", "AAA", 101.0 / 10), override=[True])
    assert _ingest(seeded, split).ok
    assert store.read_closes(seeded).loc["2022-01-05", "AAA"] == pytest.approx(10.1)
    # the range holds whatever the flag says; a flag that is not a boolean is a rejection
    reasons = _rejected(
        seeded,
        _rows(
            ("2022-01-06", "AAA", 1e9),
            ("2022-01-06", "BBB", 20.0),
            override=[True, "maybe"],
        ),
    )
    assert "outside the plausible range" in reasons[0]
    assert reasons[1] == "override 'maybe' is not true or false"


@pytest.mark.parametrize("flag", ["true", "1", 1, np.True_])
def test_override_accepts_the_usual_spellings_of_true(seeded, flag):
    assert _ingest(seeded, _rows(("2022-01-05", "AAA", 1010.0), override=[flag])).ok


def test_a_correction_is_compared_with_the_close_before_it_not_the_one_it_replaces(seeded):
    # a bad stored close cannot be corrected when the check looked at the value replaced
    bad = _rows(("2022-01-05", "AAA", 600.0), override=[True])
    assert _ingest(seeded, bad).ok
    fixed = _ingest(seeded, _rows(("2022-01-05", "AAA", 102.0)), correction=True)
    assert fixed.ok and fixed.corrected == 1
    # and a correction that is itself a jump from the close before it is refused
    reasons = _rejected(seeded, _rows(("2022-01-04", "AAA", 2.0)), correction=True)
    assert "is 0.02x the previous close 100.0" in reasons[0]


def test_a_ticker_silent_for_longer_than_the_lookback_has_no_previous_close(seeded):
    # 2022-02-01 is 28 days after the last AAA close: only the range applies
    assert _ingest(seeded, _rows(("2022-02-01", "AAA", 1000.0))).ok


def test_the_bounds_are_settings(seeded):
    tight = PlausibilityRules(min_close=1.0, max_close=500.0, max_ratio=1.5)
    reasons = _rejected(
        seeded, _rows(("2022-01-05", "AAA", 160.0), ("2022-01-05", "BBB", 0.5)), rules=tight
    )
    assert "beyond the plausible 1.5x" in reasons[0]
    assert "outside the plausible range [1, 500]" in reasons[1]
    for bad in ({"min_close": 0.0}, {"max_close": 1e-5}, {"max_ratio": 1.0}):
        with pytest.raises(ValueError):
            PlausibilityRules(**bad)


def test_a_source_longer_than_the_schema_is_refused(seeded):
    before = snapshot(seeded)
    with pytest.raises(ValueError, match="`source` must be at most 128 characters"):
        _ingest(seeded, _rows(("2022-01-05", "AAA", 101.0)), source="x" * 100_000)
    assert snapshot(seeded) == before


def test_a_long_file_carries_override_per_row(seeded, tmp_path):
    path = tmp_path / "split.csv"
    path.write_text(
        "date,ticker,close,override\n"
        "2022-01-05,AAA,10.1,true\n"  # a 1:10 split someone checked
        "2022-01-05,BBB,200.0,\n"  # a 10x jump without the flag
    )
    result = ingest_file(seeded, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert [
        (r.ticker, "9.756x the previous close 20.5" in r.reason) for r in result.rejections
    ] == [("BBB", True)]
    path.write_text(
        "date,ticker,close,override\n2022-01-05,AAA,10.1,true\n2022-01-05,BBB,20.6,false\n"
    )
    stored = ingest_file(seeded, path, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert stored.ok and stored.accepted == 2
    # a wide file has no row per close to carry the flag
    wide = tmp_path / "wide.csv"
    wide.write_text("date,AAA,override\n2022-01-06,10.2,true\n")
    refused = ingest_file(seeded, wide, universe=UNIVERSE, calendar="XNYS", today=TODAY)
    assert "override column needs the long layout" in refused.rejections[0].reason
