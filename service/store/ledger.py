"""The paper-trading ledger rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.store.engine import _reading, transaction
from service.store.schema import paper_ledger
from service.store.values import _check_keys, _count, _date, _finite, _frame, _name

# --------------------------------------------------------------------------------------------
# paper ledger
# --------------------------------------------------------------------------------------------

_LEDGER_VALUES = ("gross_return", "cost", "net_return", "turnover", "equity")


def write_ledger_row(bind: sa.Engine | sa.Connection, row: Mapping[str, Any]) -> None:
    """Store one day of the paper ledger, replacing any row for (date, model_name).

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    row : Mapping
        ``date`` (date-like: the close at which the return is realised), ``model_name``,
        ``model_version`` (optional), and finite ``gross_return``, ``cost``, ``net_return``,
        ``turnover``, ``equity``; optionally ``missing`` (non-negative int, default 0: weighted
        assets without a return that day).
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"`row` must be a mapping, got {type(row).__name__}")
    _check_keys(row, ("date", "model_name", "model_version", *_LEDGER_VALUES, "missing"), "row")
    missing = [k for k in ("date", "model_name", *_LEDGER_VALUES) if k not in row]
    if missing:
        raise ValueError(f"`row` is missing {', '.join(missing)}")
    values = {
        "date": _date(row["date"], "row['date']"),
        "model_name": _name(row["model_name"], "row['model_name']"),
        "model_version": _name(row.get("model_version"), "row['model_version']", optional=True),
        **{k: _finite(row[k], f"row['{k}']") for k in _LEDGER_VALUES},
        "missing": _count(row.get("missing"), "row['missing']") or 0,
    }
    with transaction(bind) as conn:
        conn.execute(
            paper_ledger.delete().where(
                paper_ledger.c.date == values["date"],
                paper_ledger.c.model_name == values["model_name"],
            )
        )
        conn.execute(paper_ledger.insert().values(**values))


def read_ledger(
    bind: sa.Engine | sa.Connection, model_name: str, *, start: Any = None, end: Any = None
) -> pd.DataFrame:
    """The paper ledger of a model.

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (increasing, tz-naive); columns ``model_version, gross_return, cost,
        net_return, turnover, equity`` (floats ``float64``) and ``missing`` (``int64``). Empty
        when nothing is stored.
    """
    query = (
        sa.select(paper_ledger)
        .where(paper_ledger.c.model_name == _name(model_name, "model_name"))
        .order_by(paper_ledger.c.date)
    )
    if start is not None:
        query = query.where(paper_ledger.c.date >= _date(start, "start"))
    if end is not None:
        query = query.where(paper_ledger.c.date <= _date(end, "end"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query), ["date"])
    for column in _LEDGER_VALUES:
        frame[column] = frame[column].astype(np.float64)
    frame["missing"] = frame["missing"].astype(np.int64)
    return frame.drop(columns="model_name").set_index("date")
