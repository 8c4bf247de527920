"""Domain errors of the service and the one table that maps errors to gRPC status codes.

Domain code raises plain exceptions that say what is wrong; the gRPC layer turns them into
status codes with :func:`status_for` and nothing else, so a status code is decided in exactly
one place:

=======================  ===================================================================
status                   raised for
=======================  ===================================================================
INVALID_ARGUMENT         bad input: a malformed date or name (:class:`InvalidArgument`, any
                         other ``ValueError``)
NOT_FOUND                no such date or model (:class:`NotFound`, ``RegistryError``, any
                         other ``LookupError``)
OUT_OF_RANGE             a date after today in the exchange's time zone (:class:`OutOfRange`)
FAILED_PRECONDITION      not ready: no model loaded or a model refused (``ModelRefused``), a
                         registry entry that cannot be served (``ManifestError``), no
                         positions or closes yet (:class:`FailedPrecondition`)
UNAVAILABLE              shutting down (:class:`Unavailable`), the store unreachable or
                         locked (``sqlalchemy.exc.OperationalError``): retry later
UNAUTHENTICATED          missing or wrong bearer token (:class:`Unauthenticated`)
RESOURCE_EXHAUSTED       a stream refused at a subscriber limit or dropped for falling behind
                         (:class:`ResourceExhausted`)
INTERNAL                 anything else (a bug); the details do not echo the exception
=======================  ===================================================================

The table is looked up along the exception's method resolution order, so the most specific
entry wins: ``ManifestError`` is a ``ValueError`` but maps to FAILED_PRECONDITION.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import grpc
from sqlalchemy.exc import OperationalError

from momentum.manifest import ManifestError
from momentum.registry import RegistryError
from service.model import ModelRefused

__all__ = [
    "STATUS_CODES",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "ResourceExhausted",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "details_for",
    "status_for",
]


class ServiceError(Exception):
    """Base of the service's own domain errors; the message is shown to the client."""


class InvalidArgument(ServiceError, ValueError):
    """A request field is malformed; the message names the field."""


class NotFound(ServiceError, LookupError):
    """No such date, model or version."""


class OutOfRange(ServiceError, ValueError):
    """A date after today in the exchange's time zone."""


class FailedPrecondition(ServiceError, RuntimeError):
    """The service is not ready for this request (no model, no positions, no closes yet)."""


class Unavailable(ServiceError, RuntimeError):
    """The service cannot answer now (shutting down); the client may retry elsewhere or later."""


class ResourceExhausted(ServiceError, RuntimeError):
    """A limit of the server was reached (open streams, a stream's backlog); retry later."""


class Unauthenticated(ServiceError, PermissionError):
    """The bearer token is missing or wrong."""


StatusCode = grpc.StatusCode

STATUS_CODES: Mapping[type[BaseException], grpc.StatusCode] = MappingProxyType(
    {
        # the service's own errors
        InvalidArgument: StatusCode.INVALID_ARGUMENT,
        NotFound: StatusCode.NOT_FOUND,
        OutOfRange: StatusCode.OUT_OF_RANGE,
        FailedPrecondition: StatusCode.FAILED_PRECONDITION,
        Unavailable: StatusCode.UNAVAILABLE,
        Unauthenticated: StatusCode.UNAUTHENTICATED,
        ResourceExhausted: StatusCode.RESOURCE_EXHAUSTED,
        # errors of the layers below, by what they mean to a client
        ModelRefused: StatusCode.FAILED_PRECONDITION,
        ManifestError: StatusCode.FAILED_PRECONDITION,  # an entry that fails verification
        RegistryError: StatusCode.NOT_FOUND,
        OperationalError: StatusCode.UNAVAILABLE,  # database down or locked: transient
        # generic fallbacks: validation errors of the domain code and failed look-ups
        ValueError: StatusCode.INVALID_ARGUMENT,
        LookupError: StatusCode.NOT_FOUND,
    }
)
"""Exception type -> gRPC status code; :func:`status_for` walks the MRO, INTERNAL otherwise."""


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code of an exception.

    Parameters
    ----------
    exc : BaseException
        Raised by domain code while answering a request.

    Returns
    -------
    grpc.StatusCode
        The entry of :data:`STATUS_CODES` for the nearest class in ``type(exc).__mro__``;
        ``INTERNAL`` when none matches.

    Examples
    --------
    >>> status_for(NotFound("no model named 'x'")).name
    'NOT_FOUND'
    >>> status_for(KeyError("x")).name
    'NOT_FOUND'
    >>> status_for(ZeroDivisionError()).name
    'INTERNAL'
    """
    for cls in type(exc).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return StatusCode.INTERNAL


# an absolute POSIX path: a slash not preceded by a word character, ':' or '/' (so neither
# "2021/03/01" nor the "//" of a URL) and followed by a name, e.g. "/models", "/srv/a/b.db"
_SERVER_PATH = re.compile(r"(?<![\w:/])/[\w.@+-]+(?:/[\w.@+-]*)*")


def details_for(exc: BaseException) -> str:
    """The status details a client sees: the message of a mapped error, nothing of a bug.

    An unmapped exception (INTERNAL) may carry SQL or file paths; clients get its type only
    and the server logs the traceback. A mapped one's message names the problem; any
    absolute server path in it (a registry or store directory, which the same message
    names in the server's log and CLI) reads ``<server path>``.
    """
    if status_for(exc) is StatusCode.INTERNAL:
        return f"internal error ({type(exc).__name__}); see the server log"
    return _SERVER_PATH.sub("<server path>", str(exc)) or type(exc).__name__
