"""Expanding windows: ordering, coverage and the papers' default blocks."""

import numpy as np
import pandas as pd
import pytest

from momentum.data import load_prices
from training.splits import ExpandingWindow


@pytest.fixture(scope="module")
def dates():
    return load_prices("sp500").index


def test_papers_default_windows(dates):
    windows = list(ExpandingWindow(first_test_year=1995, step_years=5).split(dates))
    assert [w.name for w in windows] == ["1995", "2000", "2005", "2010", "2015", "2020"]
    assert windows[0].test_start == pd.Timestamp("1995-01-03")
    assert windows[-1].test_end == dates[-1]
    assert windows[0].train[0] == 0  # expanding: always from the first date


def test_every_train_index_precedes_every_test_index(dates):
    for step in (1, 5):
        for w in ExpandingWindow(first_test_year=1995, step_years=step).split(dates):
            assert w.train.max() < w.valid.min()
            # labels of training and validation rows (row + 1) stay before the test block
            assert w.valid.max() + 1 < w.test.min()
            assert w.train.max() + 1 < w.valid.min()
            n_train = w.test.min()
            assert len(w.valid) == pytest.approx(0.1 * n_train, abs=2)


def test_test_blocks_tile_the_out_of_sample_period(dates):
    windows = list(ExpandingWindow(first_test_year=1995, step_years=1).split(dates))
    tested = np.concatenate([w.test for w in windows])
    np.testing.assert_array_equal(tested, np.arange(tested[0], len(dates)))
    assert len(windows) == 2022 - 1995 + 1


def test_custom_range(dates):
    windows = list(
        ExpandingWindow(first_test_year=2000, step_years=2, start_year=1992, end_year=2004).split(
            dates
        )
    )
    assert [w.name for w in windows] == ["2000", "2002", "2004"]
    assert dates[windows[0].train[0]].year == 1992
    assert windows[-1].test_end.year == 2004


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_years": 0}, "`step_years`"),
        ({"valid_fraction": 1.0}, "`valid_fraction`"),
        ({"start_year": 1996}, "`start_year`"),
        ({"end_year": 1990}, "`end_year`"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpandingWindow(**kwargs)


def test_first_test_year_outside_the_data(dates):
    with pytest.raises(ValueError, match="leaves no training or no test data"):
        list(ExpandingWindow(first_test_year=2030).split(dates))
