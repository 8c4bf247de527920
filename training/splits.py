"""Time splits for expanding-window backtests (skfolio's WalkForward, qlib's ROLL_EX).

Every window trains on all data from the first date up to its test block,
holds out the last ``valid_fraction`` of that training block for early
stopping and model selection, and predicts the test block. The papers use a
first training block 1990-1995 and test blocks of 5 years (DMN, STMOM); the
Momentum Transformer retrains every year (``step_years=1``).

Rows are positions on the date axis. Training and validation rows are
*decision rows whose labels stay inside their block* (`label_rows`), so no
label of a training row is the return of a validation or test date.

One validation block at the end of a training block is a single, short and
noisy measurement (126 days in the first window: a Sharpe standard error near
1.4). ``valid_folds=K`` scores each trial on K blocked folds instead: the
training block is cut into K consecutive validation blocks; fold k validates
on block k and trains on the rest, less ``gap`` sessions on each side of the
block, so that no training row's input window or label reaches a validation
row's window (purged and embargoed cross-validation; ``gap`` is the longest
window a model reads, the sequence length). The last fold, which trains on the
past only, is the window's *main* split: its model predicts the test block.
The other folds train on data on both sides of their block and only score.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.datasets import label_rows

__all__ = ["ExpandingWindow", "Fold", "Window", "blocked_folds", "final_split"]

Fold = tuple[np.ndarray, np.ndarray]
"""Training rows and validation rows of one split."""


def _train_valid(first_row: int, stop: int, valid_fraction: float) -> Fold:
    """Decision rows of a training block ``[first_row, stop)``: the last share validates."""
    valid_from = first_row + int(round((stop - first_row) * (1 - valid_fraction)))
    return label_rows(first_row, valid_from), label_rows(valid_from, stop)


def blocked_folds(first_row: int, stop: int, folds: int, gap: int) -> list[Fold]:
    """`folds` blocked folds of the training block ``[first_row, stop)``, in time order.

    Fold k validates on the k-th of `folds` consecutive blocks and trains on the
    decision rows before it up to `gap` sessions short of it, and on those from `gap`
    sessions after it. With windows of at most ``gap`` sessions, a training row's window
    and label and a validation row's window and label never share a session.
    """
    if folds < 2:
        raise ValueError(f"`folds` must be at least 2, got {folds}")
    if gap < 0:
        raise ValueError(f"`gap` must be non-negative, got {gap}")
    edges = np.linspace(first_row, stop, folds + 1).round().astype(int).tolist()
    out = []
    for lo, hi in itertools.pairwise(edges):
        valid = label_rows(lo, hi)
        before = label_rows(first_row, max(first_row, lo - gap))
        after = label_rows(min(stop, hi + gap), stop)
        out.append((np.concatenate([before, after]), valid))
    return out


def _splits(
    first_row: int, stop: int, valid_fraction: float, valid_folds: int | None, gap: int
) -> tuple[Fold, tuple[Fold, ...]]:
    """The main split of a training block and the extra scoring folds (none by default)."""
    if valid_folds is None:
        return _train_valid(first_row, stop, valid_fraction), ()
    folds = blocked_folds(first_row, stop, valid_folds, gap)
    return folds[-1], tuple(folds[:-1])


@dataclass(frozen=True)
class Window:
    """One expanding window: row arrays and the test block's calendar span."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # last test date (inclusive)
    folds: tuple[Fold, ...] = ()  # the other scoring folds, with ``valid_folds``

    @property
    def name(self) -> str:
        """Stable identifier, e.g. ``"1995"`` (the first test year)."""
        return str(self.test_start.year)


@dataclass(frozen=True)
class ExpandingWindow:
    """Expanding training block, fixed-length test blocks.

    Parameters
    ----------
    first_test_year : int
        First year of the first test block (1995 in the papers).
    step_years : int
        Length of each test block in years (5; 1 for the Momentum Transformer).
    end_year : int, optional
        Last year tested (inclusive); default the last year of the data.
    start_year : int, optional
        Data before this year is not used for training; default all data.
    valid_fraction : float
        Share of each training block (its end) kept for validation.
    valid_folds : int, optional
        Score on this many blocked folds instead (module docstring); `valid_fraction`
        is then unused.
    gap : int
        Sessions left out on each side of a fold's validation block (with
        `valid_folds`): the longest window a model reads.
    """

    first_test_year: int = 1995
    step_years: int = 5
    end_year: int | None = None
    start_year: int | None = None
    valid_fraction: float = 0.1
    valid_folds: int | None = None
    gap: int = 0

    def __post_init__(self) -> None:
        if self.step_years < 1:
            raise ValueError(f"`step_years` must be at least 1, got {self.step_years}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"`valid_fraction` must be in (0, 1), got {self.valid_fraction}")
        if self.valid_folds is not None and self.valid_folds < 2:
            raise ValueError(f"`valid_folds` must be at least 2, got {self.valid_folds}")
        if self.gap < 0:
            raise ValueError(f"`gap` must be non-negative, got {self.gap}")
        if self.start_year is not None and self.start_year >= self.first_test_year:
            raise ValueError(
                f"`start_year` ({self.start_year}) must precede `first_test_year` "
                f"({self.first_test_year})"
            )
        if self.end_year is not None and self.end_year < self.first_test_year:
            raise ValueError(
                f"`end_year` ({self.end_year}) is before `first_test_year` ({self.first_test_year})"
            )

    def split(self, dates: pd.DatetimeIndex) -> Iterator[Window]:
        """Yield the windows over `dates` in time order."""
        dates = pd.DatetimeIndex(dates)
        years = dates.year.to_numpy()
        last_year = int(years.max()) if self.end_year is None else self.end_year
        first_row = 0 if self.start_year is None else int(np.searchsorted(years, self.start_year))
        if self.first_test_year > int(years.max()) or self.first_test_year <= int(years.min()):
            raise ValueError(
                f"`first_test_year` {self.first_test_year} leaves no training or no test data in "
                f"{dates[0]:%Y-%m-%d}..{dates[-1]:%Y-%m-%d}"
            )
        for year in range(self.first_test_year, last_year + 1, self.step_years):
            test_from = int(np.searchsorted(years, year))
            test_to = int(np.searchsorted(years, min(year + self.step_years, last_year + 1)))
            if test_from >= test_to:
                continue
            (train, valid), folds = _splits(
                first_row, test_from, self.valid_fraction, self.valid_folds, self.gap
            )
            yield Window(
                train=train,
                valid=valid,
                test=np.arange(test_from, test_to),
                test_start=dates[test_from],
                test_end=dates[test_to - 1],
                folds=folds,
            )


def final_split(
    dates: pd.DatetimeIndex,
    *,
    end: pd.Timestamp | None = None,
    start_year: int | None = None,
    valid_fraction: float = 0.1,
    valid_folds: int | None = None,
    gap: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[Fold, ...]]:
    """Train and validation rows of a model fit on all data up to `end` (production),
    and the extra scoring folds (with `valid_folds`; else none).

    The same split as each `ExpandingWindow` training block, with the block ending
    at `end` (inclusive; default the last date). The last date has no label yet,
    so it is never a training or validation row.
    """
    dates = pd.DatetimeIndex(dates)
    if not 0 < valid_fraction < 1:
        raise ValueError(f"`valid_fraction` must be in (0, 1), got {valid_fraction}")
    stop = len(dates) if end is None else int(dates.searchsorted(pd.Timestamp(end), side="right"))
    first_row = 0 if start_year is None else int(np.searchsorted(dates.year, start_year))
    if valid_folds is not None and valid_folds < 2:
        raise ValueError(f"`valid_folds` must be at least 2, got {valid_folds}")
    (train, valid), folds = _splits(first_row, stop, valid_fraction, valid_folds, gap)
    if any(len(t) == 0 or len(v) == 0 for t, v in ((train, valid), *folds)):
        raise ValueError(
            f"no training or validation rows between {dates[first_row]:%Y-%m-%d} and `end` {end}"
        )
    return train, valid, folds
