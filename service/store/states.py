"""Feature states, and the invalidation a changed close leaves (states dropped, reruns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from service.store.engine import _reading, transaction
from service.store.schema import cycle_runs, feature_states, paper_ledger, reruns
from service.store.values import _date, _dates, _name, _now

# --------------------------------------------------------------------------------------------
# feature states
# --------------------------------------------------------------------------------------------


def write_feature_state(
    bind: sa.Engine | sa.Connection,
    key: str,
    as_of: Any,
    steps: int,
    state: bytes,
    *,
    keep: int = 5,
) -> datetime:
    """Store the feature state of `key` as of a session, keeping the newest `keep` of that key.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    key : str
        What the state is of (`service.cycle.feature_key`: features, universe, rows kept).
    as_of : date-like
        The last session the state consumed; a state already stored for it is replaced.
    steps : int
        Sessions consumed.
    state : bytes
        `momentum.feature_state.FeatureState.to_bytes`.
    keep : int
        States of this key kept (older ones are deleted): a correction older than all of
        them makes the next cycle rebuild from the history.

    Returns
    -------
    datetime
        The row's ``created_at`` (with its as-of date, what `feature_state_stamp` reports).
    """
    key = _name(key, "key")  # type: ignore[assignment]
    day = _date(as_of, "as_of")
    if keep < 1:
        raise ValueError(f"`keep` must be at least 1, got {keep}")
    where = (feature_states.c.key == key, feature_states.c.as_of == day)
    created = _now()
    with transaction(bind) as conn:
        conn.execute(feature_states.delete().where(*where))
        conn.execute(
            feature_states.insert().values(
                key=key, as_of=day, steps=int(steps), created_at=created, state=state
            )
        )
        kept = (
            sa.select(feature_states.c.as_of)
            .where(feature_states.c.key == key)
            .order_by(feature_states.c.as_of.desc())
            .limit(keep)
        )
        oldest = min(d for (d,) in conn.execute(kept))
        conn.execute(
            feature_states.delete().where(
                feature_states.c.key == key, feature_states.c.as_of < oldest
            )
        )
    return created


def feature_state_stamp(
    bind: sa.Engine | sa.Connection, key: str, *, before: Any
) -> tuple[pd.Timestamp, datetime] | None:
    """``(as_of, created_at)`` of the state `latest_feature_state` would return (no blob)."""
    row = _newest_state_row(bind, key, before, feature_states.c.created_at)
    return None if row is None else (row[0], row[1])


def latest_feature_state(
    bind: sa.Engine | sa.Connection, key: str, *, before: Any
) -> tuple[pd.Timestamp, bytes] | None:
    """The newest stored state of `key` as of a session strictly before `before`, if any."""
    row = _newest_state_row(bind, key, before, feature_states.c.state)
    return None if row is None else (row[0], bytes(row[1]))


def _newest_state_row(
    bind: sa.Engine | sa.Connection, key: str, before: Any, column: sa.Column[Any]
) -> tuple[pd.Timestamp, Any] | None:
    """(as_of, `column`) of the newest state of `key` as of a session before `before`."""
    query = (
        sa.select(feature_states.c.as_of, column)
        .where(feature_states.c.key == key, feature_states.c.as_of < _date(before, "before"))
        .order_by(feature_states.c.as_of.desc())
        .limit(1)
    )
    with _reading(bind) as conn:
        row = conn.execute(query).first()
    return None if row is None else (pd.Timestamp(row[0]), row[1])


def _invalidate(conn: sa.Connection, since: Any, reason: str) -> None:
    """What a close written on date `since` makes stale, in the writing transaction.

    The feature states as of `since` or later (they consumed the old close), the paper
    ledger rows dated `since` or later (a row dated d uses the closes of d and of the
    session before; later rows chain its equity), and, when positions dated `since` or later
    exist, a :data:`reruns` marker: those sets were computed without this close.
    """
    day = _date(since, "since")
    drop_feature_states(conn, since=day)
    conn.execute(paper_ledger.delete().where(paper_ledger.c.date >= day))
    later = conn.execute(
        sa.select(cycle_runs.c.id)
        .where(cycle_runs.c.status == "succeeded", cycle_runs.c.as_of >= day)
        .limit(1)
    ).first()
    if later is not None:
        conn.execute(reruns.insert().values(since=day, created_at=_now(), reason=reason))


def pending_rerun(bind: sa.Engine | sa.Connection) -> tuple[int, pd.Timestamp] | None:
    """``(newest marker id, oldest since)`` of the :data:`reruns` not done; None if none."""
    with _reading(bind) as conn:
        newest, since = conn.execute(
            sa.select(sa.func.max(reruns.c.id), sa.func.min(reruns.c.since))
        ).one()
    return None if newest is None else (int(newest), pd.Timestamp(_dates([since])[0]))


def clear_reruns(bind: sa.Engine | sa.Connection, *, upto: int) -> int:
    """Delete the rerun markers with ``id <= upto`` (those a completed rerun covered)."""
    with transaction(bind) as conn:
        result = conn.execute(reruns.delete().where(reruns.c.id <= int(upto)))
    return int(result.rowcount or 0)


def drop_feature_states(bind: sa.Engine | sa.Connection, *, since: Any) -> int:
    """Delete every feature state as of `since` or later (its closes changed); returns how many."""
    with transaction(bind) as conn:
        result = conn.execute(
            feature_states.delete().where(feature_states.c.as_of >= _date(since, "since"))
        )
    return int(result.rowcount or 0)
