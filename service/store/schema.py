"""The store's tables (SQLAlchemy Core) and their widths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

CYCLE_STATUSES = ("running", "succeeded", "failed", "skipped")
"""Values of ``cycle_runs.status``."""

NAME_LENGTH = 128
"""Longest model name, version or close source the store keeps (the schema's width)."""
TICKER_LENGTH = 64
"""Longest ticker the store keeps (SQLite does not enforce a width: the callers do)."""


class _UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware instant stored in UTC on every backend.

    PostgreSQL keeps it in ``timestamptz``; SQLite has no time zones, so the UTC wall-clock
    time is stored and UTC is re-attached on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pandas.Timestamp is a datetime too
            value = pd.Timestamp(value).to_pydatetime()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"times must be timezone-aware, got {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Constraint names are fixed so that migrations and error messages are stable across backends.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

closes = sa.Table(
    "closes",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("ticker", sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("source", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("ingested_at", _UtcDateTime, nullable=False),
    sa.CheckConstraint("close > 0", name="close_positive"),
)

close_corrections = sa.Table(
    "close_corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("ticker", sa.String(TICKER_LENGTH), nullable=False),
    sa.Column("old_close", sa.Double, nullable=False),
    sa.Column("new_close", sa.Double, nullable=False),
    sa.Column("source", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("corrected_at", _UtcDateTime, nullable=False),
    sa.Index(None, "date", "ticker"),
)

cycle_runs = sa.Table(
    "cycle_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("model_name", sa.String(NAME_LENGTH), nullable=False),
    # NULL when the cycle failed before a model version was known (e.g. no model loaded)
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", _UtcDateTime, nullable=False),
    sa.Column("finished_at", _UtcDateTime),
    sa.Column("error", sa.Text),
    sa.Column("n_assets", sa.Integer),
    sa.Column("n_stale", sa.Integer),
    sa.Column("data_cutoff", sa.Date),  # newest close date the cycle used
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in CYCLE_STATUSES) + ")", name="status"
    ),
    sa.Index(None, "model_name", "as_of"),
)

# The primary key is the idempotency key: re-running a date replaces one set of rows.
positions = sa.Table(
    "positions",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("ticker", sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("signal", sa.Double),  # X in [-1, 1]; NULL: not tradable on as_of
    sa.Column("vol", sa.Double),  # annualised: daily EWM std x sqrt(252)
    sa.Column("weight", sa.Double),  # eq. (1): X x vol_target / vol / N_t
    sa.Column("stale", sa.Boolean, nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("cycle_runs.id"), nullable=False),
    sa.Index(None, "model_name", "model_version", "as_of"),
)

model_loads = sa.Table(
    "model_loads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("sha256", sa.String(64)),
    sa.Column("provider", sa.String(64)),  # onnxruntime execution provider actually used
    sa.Column("loaded_at", _UtcDateTime, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),  # why a model was refused
)

paper_ledger = sa.Table(
    "paper_ledger",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("model_name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(NAME_LENGTH)),
    sa.Column("gross_return", sa.Double, nullable=False),
    sa.Column("cost", sa.Double, nullable=False),
    sa.Column("net_return", sa.Double, nullable=False),  # eq. (13): gross - c x turnover
    sa.Column("turnover", sa.Double, nullable=False),
    sa.Column("equity", sa.Double, nullable=False),
    # weighted assets whose return over the day could not be computed (a close is missing)
    sa.Column("missing", sa.Integer, nullable=False, server_default="0"),
)

# Work a changed close leaves: positions dated `since` or later were computed from the old
# value; the service reruns those sessions (oldest marker first) and then deletes the rows.
reruns = sa.Table(
    "reruns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("since", sa.Date, nullable=False),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

feature_states = sa.Table(
    "feature_states",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),  # the last session the state consumed
    sa.Column("steps", sa.Integer, nullable=False),  # sessions consumed
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),  # FeatureState.to_bytes()
)
# tens of MB of float64 a day at thousands of assets: PostgreSQL's default TOAST compression
# (pglz) costs most of a warm cycle's write and gains little on such data
event.listen(
    feature_states,
    "after_create",
    sa.DDL("ALTER TABLE feature_states ALTER COLUMN state SET STORAGE EXTERNAL").execute_if(
        dialect="postgresql"
    ),
)
