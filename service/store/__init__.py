"""The service's durable state: SQLAlchemy Core schema and the functions that use it.

One module per concern: :mod:`~service.store.schema` (the tables),
:mod:`~service.store.engine` (opening the store, transactions),
:mod:`~service.store.prices` (writing the closes), :mod:`~service.store.price_reads`
(reading them as a panel; :mod:`~service.store.sqlite_stream` its child process),
:mod:`~service.store.cycles` (cycle runs and positions), :mod:`~service.store.loads` (model
loads), :mod:`~service.store.ledger` and
:mod:`~service.store.states` (feature states and the reruns a changed close leaves);
:mod:`~service.store.values` converts values for all of them. Callers use this package's
names (``from service import store; store.read_closes(...)``).

Tables (:data:`metadata`):

* ``closes`` -- one adjusted close per (date, ticker), with its source and ingestion time;
* ``close_corrections`` -- the log of every stored close that was overwritten;
* ``positions`` -- one row per (as-of date, model name, model version, ticker): signal X in
  [-1, 1], annualised vol, target weight (NULL where the asset is not tradable) and a stale
  flag, pointing at the cycle run that wrote it;
* ``cycle_runs`` -- every cycle attempt: status, timings, error, counts;
* ``model_loads`` -- every attempt to load a model (accepted or refused, and why);
* ``paper_ledger`` -- the daily paper-trading track record per model;
* ``feature_states`` -- the incremental feature state (`momentum.feature_state`) as of recent
  sessions, per feature key (features, universe and rows kept), so a cycle reads the day's
  closes instead of the whole history. Writing a close on date d drops every state as of d or
  later, in the same transaction: a state never outlives the closes it was built from.

Every function takes an :class:`sqlalchemy.Engine` or a :class:`sqlalchemy.Connection` first and
speaks plain Python and pandas. Given an engine, a write function runs in its own transaction
(all or nothing); given a connection that is already in a transaction, it joins that
transaction, so a caller can make several writes atomic together.

Conventions: a *date* is a tz-naive midnight :class:`pandas.Timestamp` (what
:func:`service.calendar.as_date` accepts: ``"2022-01-03"``, ``datetime.date``, ...); a *time*
is tz-aware and stored in UTC (naive times are refused); dates come back as ``DatetimeIndex``
values in the unit of :mod:`momentum.data` panels.

SQLite (the default, a local file) runs in WAL mode with foreign keys on and a busy timeout;
SQLAlchemy, not the ``sqlite3`` module, emits ``BEGIN`` so that reads inside a write
transaction are isolated too, and write transactions take the database lock up front
(``BEGIN IMMEDIATE``) so that two writers queue instead of failing on a lock upgrade.
"""

from __future__ import annotations

from service.store.cycles import (
    latest_positions,
    positions_dates,
    positions_signals,
    read_cycle_runs,
    read_positions,
    record_failed_cycle,
    write_cycle,
)
from service.store.engine import (
    create_engine,
    data_version_probe,
    transaction,
)
from service.store.ledger import (
    read_ledger,
    write_ledger_row,
)
from service.store.loads import (
    read_model_loads,
    record_model_load,
)
from service.store.price_reads import read_closes
from service.store.prices import (
    closes_dates,
    correct_closes,
    first_close_date,
    insert_closes,
    newest_close_date,
    read_close_corrections,
    stored_closes,
)
from service.store.schema import (
    CYCLE_STATUSES,
    NAME_LENGTH,
    TICKER_LENGTH,
    close_corrections,
    closes,
    cycle_runs,
    feature_states,
    metadata,
    model_loads,
    paper_ledger,
    positions,
    reruns,
)
from service.store.states import (
    clear_reruns,
    drop_feature_states,
    feature_state_stamp,
    latest_feature_state,
    pending_rerun,
    write_feature_state,
)

__all__ = [
    "CYCLE_STATUSES",
    "clear_reruns",
    "NAME_LENGTH",
    "TICKER_LENGTH",
    "close_corrections",
    "closes",
    "closes_dates",
    "correct_closes",
    "create_engine",
    "data_version_probe",
    "cycle_runs",
    "drop_feature_states",
    "feature_state_stamp",
    "feature_states",
    "first_close_date",
    "insert_closes",
    "latest_feature_state",
    "latest_positions",
    "metadata",
    "model_loads",
    "newest_close_date",
    "paper_ledger",
    "pending_rerun",
    "positions",
    "positions_dates",
    "positions_signals",
    "read_close_corrections",
    "read_closes",
    "read_cycle_runs",
    "read_ledger",
    "read_model_loads",
    "read_positions",
    "reruns",
    "record_failed_cycle",
    "record_model_load",
    "stored_closes",
    "transaction",
    "write_cycle",
    "write_feature_state",
    "write_ledger_row",
]
