"""The log of model loads, accepted or refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.store.engine import _reading, transaction
from service.store.schema import model_loads
from service.store.values import _count, _frame, _name, _new_id, _now, _time

# --------------------------------------------------------------------------------------------
# model loads
# --------------------------------------------------------------------------------------------


def record_model_load(
    bind: sa.Engine | sa.Connection,
    *,
    model_name: str,
    model_version: str | None,
    ok: bool,
    sha256: str | None = None,
    provider: str | None = None,
    reason: str | None = None,
    loaded_at: Any = None,
) -> int:
    """Log an attempt to load a model.

    Parameters
    ----------
    bind : sqlalchemy.Engine or sqlalchemy.Connection
    model_name : str
    model_version : str or None
        None when the version could not be determined (e.g. a broken ``production`` pointer).
    ok : bool
        Whether the model was accepted and is now serving.
    sha256, provider : str, optional
        Hash of ``model.onnx``; the onnxruntime execution provider in use.
    reason : str, optional
        Why a model was refused (required when ``ok`` is False).
    loaded_at : datetime-like, optional
        tz-aware; default now.

    Returns
    -------
    int
        The ``model_loads.id``.
    """
    if not isinstance(ok, bool | np.bool_):
        raise TypeError(f"`ok` must be a bool, got {type(ok).__name__}")
    if not ok and not reason:
        raise ValueError("`reason` is required for a refused model (ok=False)")
    row = {
        "model_name": _name(model_name, "model_name"),
        "model_version": _name(model_version, "model_version", optional=True),
        "sha256": sha256,
        "provider": provider,
        "loaded_at": _now() if loaded_at is None else _time(loaded_at, "loaded_at"),
        "ok": bool(ok),
        "reason": reason,
    }
    with transaction(bind) as conn:
        return _new_id(conn.execute(model_loads.insert().values(**row)))


def read_model_loads(
    bind: sa.Engine | sa.Connection, *, model_name: str | None = None, limit: int | None = None
) -> pd.DataFrame:
    """Model load attempts, newest first.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, model_name, model_version, sha256, provider, loaded_at, ok, reason``.
    """
    query = sa.select(model_loads).order_by(model_loads.c.id.desc())
    if model_name is not None:
        query = query.where(model_loads.c.model_name == model_name)
    if limit is not None:
        query = query.limit(_count(limit, "limit"))
    with _reading(bind) as conn:
        frame = _frame(conn.execute(query))
    frame["ok"] = frame["ok"].astype(bool)
    return frame
