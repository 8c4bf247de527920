"""Conversions between gRPC messages and the service's domain values.

Requests: :func:`parse_date` and :func:`parse_name` turn strings into dates and registry
names (strict ISO dates; a malformed field is INVALID_ARGUMENT naming it),
:func:`closes_frame` an IngestCloses batch into the frame :mod:`service.ingest` validates.
Replies: one builder per message (:func:`positions_message`, :func:`ingest_message`,
:func:`cycle_message`, :func:`model_message`).

:func:`method_handlers` is the service's handler table. Its serializer passes bytes
through, so a positions set encoded once (:func:`encode`) is written to every GetPositions
reply and every stream without being serialised again per call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import grpc
import numpy as np
import pandas as pd

from service import store
from service._proto import signals_pb2 as pb
from service.cycle import CycleResult
from service.errors import InvalidArgument
from service.ingest import IngestResult
from service.queries import ModelDescription, PositionsSet

__all__ = [
    "SERVICE_NAME",
    "closes_frame",
    "cycle_message",
    "encode",
    "ingest_message",
    "method_handlers",
    "model_message",
    "parse_date",
    "parse_name",
    "positions_message",
]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SignalService"].full_name
"""``momentum.v1.SignalService``: the name used by health checks and reflection."""

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# registry names and versions become directory names: the settings' pattern, so a request can
# never reach outside the registry ("../x" is refused before any path is built)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_date(text: str, field: str) -> pd.Timestamp | None:
    """An ISO date field (``"2022-12-28"``) -> tz-naive midnight; ``""`` -> None.

    Raises
    ------
    InvalidArgument
        Not ``YYYY-MM-DD`` or no such day; the message names `field`.
    """
    if not text:
        return None
    if not _ISO_DATE.fullmatch(text):
        raise InvalidArgument(f"`{field}` must be an ISO date like 2022-12-28, got {text!r}")
    try:
        return pd.Timestamp(date.fromisoformat(text))
    except ValueError:
        raise InvalidArgument(f"`{field}` is not a calendar date, got {text!r}") from None


def parse_name(text: str, field: str) -> str | None:
    """A registry model name or version field; ``""`` -> None.

    Raises
    ------
    InvalidArgument
        Not letters, digits, ``.``, ``_``, ``-`` (starting with a letter or digit), or longer
        than 128 characters; the message names `field`.
    """
    if not text:
        return None
    if len(text) > store.NAME_LENGTH or not _NAME.fullmatch(text):
        raise InvalidArgument(
            f"`{field}` must be letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit, at most {store.NAME_LENGTH} characters), got {text!r}"
        )
    return text


def _iso(day: Any) -> str:
    return "" if day is None or pd.isna(day) else f"{pd.Timestamp(day):%Y-%m-%d}"


def _optional(value: float) -> float | None:
    """NaN (not tradable) -> None, which leaves a proto3 ``optional`` field unset."""
    return None if np.isnan(value) else float(value)


def _rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def positions_message(found: PositionsSet) -> pb.Positions:
    assets = found.assets
    rows = zip(
        assets.index,
        assets["signal"].to_numpy(),
        assets["vol"].to_numpy(),
        assets["weight"].to_numpy(),
        assets["previous_weight"].to_numpy(),
        assets["stale"].to_numpy(),
        strict=True,
    )
    return pb.Positions(
        as_of=_iso(found.as_of),
        model_name=found.model_name,
        model_version=found.model_version,
        data_cutoff=_iso(found.data_cutoff),
        stale=found.stale,
        run_id=found.run_id,
        assets=[
            pb.AssetPosition(
                ticker=str(ticker),
                signal=_optional(signal),
                annualised_vol=_optional(vol),
                target_weight=_optional(weight),
                previous_weight=float(previous),
                stale=bool(stale),
            )
            for ticker, signal, vol, weight, previous, stale in rows
        ],
    )


def closes_frame(request: pb.IngestClosesRequest) -> pd.DataFrame:
    """The request's closes as the long ``date, ticker, close, override`` frame `ingest`
    validates."""
    return pd.DataFrame(
        {
            "date": pd.array([c.date for c in request.closes], dtype=object),
            "ticker": pd.array([c.ticker for c in request.closes], dtype=object),
            "close": np.array([c.close for c in request.closes], dtype=np.float64),
            "override": np.array([c.override for c in request.closes], dtype=bool),
        }
    )


def ingest_message(result: IngestResult) -> pb.IngestClosesResponse:
    return pb.IngestClosesResponse(
        accepted=result.accepted,
        unchanged=result.unchanged,
        corrected=result.corrected,
        rejections=[
            pb.Rejection(row=r.row, date=_iso(r.date), ticker=r.ticker or "", reason=r.reason)
            for r in result.rejections
        ],
    )


def cycle_message(result: CycleResult) -> pb.CycleRun:
    return pb.CycleRun(
        run_id=result.run_id,
        as_of=_iso(result.as_of),
        model_name=result.model_name,
        model_version=result.model_version or "",
        status=result.status,
        error=result.error or "",
        data_cutoff=_iso(result.data_cutoff),
        n_assets=len(result.positions),
        n_stale=result.n_stale,
        seconds=result.seconds,
    )


def model_message(model: ModelDescription) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        model=model.manifest.model,
        manifest_json=model.manifest.to_json(),
        sha256=model.manifest.onnx.sha256,
        execution_provider=model.provider or "",
        loaded_at=_rfc3339(model.loaded_at),
        serving=model.serving,
        production=model.production,
        refused=model.refused or "",
    )


def encode(message: Any) -> bytes:
    """The wire form of a reply: a message serialised, bytes (encoded once) as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def method_handlers(servicer: Any) -> grpc.GenericRpcHandler:
    """The SignalService handler table over `servicer`'s coroutines (as the generated
    ``add_SignalServiceServicer_to_server`` builds it, with :func:`encode` as serializer)."""

    def unary(method: Callable[..., Any], request: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=encode
        )

    handlers = {
        "GetPositions": unary(servicer.GetPositions, pb.GetPositionsRequest),
        "StreamPositions": grpc.unary_stream_rpc_method_handler(
            servicer.StreamPositions,
            request_deserializer=pb.StreamPositionsRequest.FromString,
            response_serializer=encode,
        ),
        "IngestCloses": unary(servicer.IngestCloses, pb.IngestClosesRequest),
        "RunCycle": unary(servicer.RunCycle, pb.RunCycleRequest),
        "GetModel": unary(servicer.GetModel, pb.GetModelRequest),
        "ListModels": unary(servicer.ListModels, pb.ListModelsRequest),
    }
    declared = set(pb.DESCRIPTOR.services_by_name["SignalService"].methods_by_name)
    if set(handlers) != declared:  # the proto gained or lost a method: keep this table equal
        raise RuntimeError(
            f"handlers {sorted(handlers)} differ from the proto's {sorted(declared)}"
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
