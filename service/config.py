"""Service settings: environment variables ``MOMENTUM_*`` and an optional ``.env`` file.

Every setting is a field of :class:`Settings`; its environment variable is ``MOMENTUM_`` plus the
field name in upper case (``grpc_port`` -> ``MOMENTUM_GRPC_PORT``). Values are read, in order of
precedence, from keyword arguments, the process environment, and a ``.env`` file in the working
directory. An empty variable counts as unset (``MOMENTUM_GRPC_TOKEN=`` keeps the default), which
is what ``${VAR:-}`` substitutions in docker-compose files produce.

:func:`load_settings` is the entry point of the service: it validates everything at start and
turns pydantic's ``ValidationError`` into a :class:`SettingsError` whose message names each
offending environment variable, one problem per line::

    MOMENTUM_GRPC_PORT: Input should be less than or equal to 65535 (got '70000')

The field descriptions are the documentation: the README's settings table is generated from
them (see :func:`env_var`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "env_var", "load_settings"]

ENV_PREFIX = "MOMENTUM_"
"""Prefix of every environment variable the service reads."""

# Model names and versions become directory names in the registry: keep them path-safe.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BACKENDS = ("sqlite", "postgresql")
# "scheme://user:password@host" -> hide the password in messages.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def env_var(field: str) -> str:
    """Return the environment variable of a settings field.

    Parameters
    ----------
    field : str
        A field name of :class:`Settings`, e.g. ``"grpc_port"``.

    Returns
    -------
    str
        E.g. ``"MOMENTUM_GRPC_PORT"``.

    Examples
    --------
    >>> env_var("grpc_port")
    'MOMENTUM_GRPC_PORT'
    """
    return ENV_PREFIX + field.upper()


class SettingsError(ValueError):
    """Invalid settings; the message names each offending environment variable.

    Attributes
    ----------
    problems : list[tuple[str, str]]
        ``(environment variable, problem)`` pairs, one per error, in field order.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("\n".join(f"{var}: {text}" for var, text in problems))
        self.problems = problems


class Settings(BaseSettings):
    """All settings of the signal service (immutable once loaded).

    Build it with :func:`load_settings`, which reports invalid values by environment variable.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        # Other tools share the prefix (e.g. MOMENTUM_TEST_DATABASE_URL for the test suite).
        extra="ignore",
        frozen=True,
    )

    # -- storage ---------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("var"),
        description=(
            "Directory for the service's local state; the default SQLite database "
            "`momentum.db` lives here. Created on first use."
        ),
    )
    database_url: str | None = Field(
        default=None,
        validate_default=True,
        description=(
            "SQLAlchemy URL of the store, e.g. "
            "`postgresql+psycopg://user:password@host:5432/momentum`. Unset: a SQLite file "
            "`<data_dir>/momentum.db` in WAL mode. Only SQLite and PostgreSQL are supported."
        ),
    )

    # -- model -----------------------------------------------------------------------------
    registry_dir: Path = Field(
        default=Path("models"),
        description=(
            "Model registry root: `<registry_dir>/<model_name>/<version>/` holds "
            "`model.onnx` and `manifest.json`."
        ),
    )
    model_name: str = Field(
        default="slp",
        pattern=_NAME_PATTERN,
        description="Registry name of the model to serve (letters, digits, `.`, `_`, `-`).",
    )
    model_version: str | None = Field(
        default=None,
        pattern=_NAME_PATTERN,
        description=(
            "Pin a model version. Unset: follow the model's `production` pointer and reload "
            "when it moves."
        ),
    )

    # -- market data -----------------------------------------------------------------------
    universe: str = Field(
        default="sp500",
        description=(
            "The traded universe: an embedded dataset name (`sp500`) or the path of a CSV / "
            "Parquet price file whose tickers are the universe."
        ),
    )
    index_ticker: str | None = Field(
        default=None,
        description=(
            "The name under which the market index level series is ingested and stored, "
            "beside the universe's closes (ingest accepts it like a ticker). Models with "
            "extended features (beta and alpha to the index) need it, and their manifest "
            "names the same series. Unset: the embedded universe's own index (`SP500` for "
            "`sp500`); none for a price file."
        ),
    )
    calendar: str = Field(
        default="XNYS",
        description=(
            "Exchange calendar (an `exchange_calendars` name, e.g. `XNYS`, `XLON`): "
            "which days are sessions and when each session closes (early closes included)."
        ),
    )
    cycle_delay_minutes: int = Field(
        default=30,
        ge=0,
        description="Minutes after each session close at which the daily cycle runs (>= 0).",
    )
    misfire_grace_hours: float = Field(
        default=6.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "How late a missed cycle may still start (the process was down at its time); "
            "later ones run at the next start's catch-up instead."
        ),
    )

    # -- portfolio -------------------------------------------------------------------------
    vol_target: float = Field(
        default=0.15,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Annualised volatility target per asset (0.15 = 15%): weight = signal x "
            "vol_target / annualised vol / number of assets."
        ),
    )
    portfolio_vol_target: bool = Field(
        default=False,
        description=(
            "Also rescale the whole portfolio ex ante to `vol_target`, using an EWM estimate "
            "of the portfolio's own past returns."
        ),
    )
    cost_bps: float = Field(
        default=5.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Transaction cost of the paper ledger in basis points per unit of turnover (>= 0)."
        ),
    )
    model_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds between checks of the registry's production pointer by `momentum-serve "
            "run`: a newly promoted version is loaded (and health follows) without waiting "
            "for the next cycle."
        ),
    )
    min_close: float = Field(
        default=1e-4,
        gt=0,
        description=("Smallest plausible close: ingest rejects a lower one with its row (> 0)."),
    )
    max_close: float = Field(
        default=1e7,
        gt=0,
        description=(
            "Largest plausible close: ingest rejects a higher one with its row (above `min_close`)."
        ),
    )
    max_close_ratio: float = Field(
        default=5.0,
        gt=1,
        description=(
            "Largest ratio of a close to its ticker's previous close, either way (> 1): "
            "ingest rejects a bigger jump with the ratio in the reason, unless the row is sent "
            "with `override` (a split or crash someone checked)."
        ),
    )
    stale_policy: Literal["skip", "carry"] = Field(
        default="skip",
        description=(
            "What a cycle does when some assets have no close for the session: `skip` the "
            "cycle (last positions stay, marked stale), or `carry` the last close forward and "
            "flag those assets stale."
        ),
    )
    max_carry_sessions: int = Field(
        default=3,
        ge=1,
        le=5,
        description=(
            "With `stale_policy=carry`: the most consecutive sessions a close is carried "
            "forward before the cycle is skipped instead (1-5: a longer gap ends the asset, "
            "as training's loader refuses gaps of more than 5 sessions)."
        ),
    )
    parity_every: int = Field(
        default=20,
        ge=0,
        description=(
            "Every this many cycles (and on the first cycle after start) the features are "
            "also recomputed on the whole stored history and the largest difference from the "
            "incremental ones is exported as `momentum_feature_parity_max_abs` (0: never)."
        ),
    )
    feature_states_kept: int = Field(
        default=5,
        ge=1,
        description=(
            "Incremental feature states kept in the store per model universe (>= 1); a "
            "correction of a close older than all of them makes the next cycle rebuild the "
            "state from the whole history."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description=(
            "Inference device: `auto` uses CUDA when a GPU is visible and CPU otherwise; "
            "`cpu` or `cuda` force one (`cuda` fails at start without a GPU)."
        ),
    )

    # -- interfaces ------------------------------------------------------------------------
    grpc_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the gRPC server binds to (`0.0.0.0` for all interfaces).",
    )
    grpc_port: int = Field(
        default=50051, ge=1, le=65535, description="Port of the gRPC server (1-65535)."
    )
    grpc_workers: int = Field(
        default=16,
        ge=1,
        le=256,
        description=(
            "Threads that answer the store and model work of gRPC calls (reads, ingests, "
            "cycles). The server itself is asynchronous: open streams hold no thread."
        ),
    )
    grpc_max_streams: int = Field(
        default=1000,
        ge=1,
        description=(
            "Open StreamPositions calls the server accepts in all; one more is refused with "
            "RESOURCE_EXHAUSTED."
        ),
    )
    grpc_max_streams_per_client: int = Field(
        default=100,
        ge=1,
        description=(
            "Open StreamPositions calls accepted from one client address (its IP; clients "
            "behind one NAT share it); one more is refused with RESOURCE_EXHAUSTED."
        ),
    )
    grpc_stream_backlog: int = Field(
        default=64,
        ge=1,
        description=(
            "Positions sets a stream may fall behind while its client does not read; one "
            "more and the stream is dropped with RESOURCE_EXHAUSTED (the client reconnects "
            "and reads the latest set)."
        ),
    )
    grpc_reuse_port: bool = Field(
        default=False,
        description=(
            "Bind the gRPC port with SO_REUSEPORT, so that several processes on one host "
            "(a writer and `--reader` replicas) share it and the kernel spreads connections. "
            "Off: a port in use fails the start."
        ),
    )
    allow_insecure: bool = Field(
        default=False,
        description=(
            "Serve gRPC without a bearer token on a non-loopback `grpc_host`, accepting "
            "unauthenticated ingests and cycles from the network. Off: such a start is "
            "refused; on: allowed, with a WARNING and `momentum_insecure_serving` = 1."
        ),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address the Prometheus `/metrics` endpoint binds to (`0.0.0.0` for all "
            "interfaces, e.g. in a container scraped from another one)."
        ),
    )
    metrics_port: int = Field(
        default=9108,
        ge=1,
        le=65535,
        description=(
            "Port of the Prometheus `/metrics` endpoint (1-65535, different from the gRPC port)."
        ),
    )
    grpc_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token every gRPC call must present (`authorization: Bearer <token>`). "
            "Unset: no authentication, which only a loopback `grpc_host` accepts (see "
            "`allow_insecure`)."
        ),
    )
    tls_cert: FilePath | None = Field(
        default=None,
        description="PEM certificate chain for gRPC TLS; set together with `tls_key`.",
    )
    tls_key: FilePath | None = Field(
        default=None,
        validate_default=True,
        description="PEM private key for gRPC TLS; set together with `tls_cert`.",
    )
    per_ticker_metrics: bool = Field(
        default=False,
        description=(
            "Export per-ticker Prometheus series (positions, weights). Off by default: one "
            "series per asset is expensive for large universes."
        ),
    )
    log_level: str = Field(
        default="INFO",
        description="Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
    )

    # -- validators (fields are validated in declaration order, so `info.data` holds the
    # -- fields declared above the one being checked, when they were valid) ---------------

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            data_dir = info.data.get("data_dir")
            if data_dir is None:  # data_dir itself is invalid and reported on its own
                return None
            return f"sqlite:///{Path(data_dir) / 'momentum.db'}"
        # Imported here: sqlalchemy is only needed when a URL is actually given.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value.strip()).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL (expected e.g. sqlite:///var/momentum.db or "
                "postgresql+psycopg://user:password@host/db)"
            ) from None
        if backend not in _BACKENDS:
            raise ValueError(
                f"unsupported database backend {backend!r} (use {' or '.join(_BACKENDS)})"
            )
        return value.strip()

    @field_validator("universe")
    @classmethod
    def _universe(cls, value: str) -> str:
        from momentum.data import EMBEDDED

        value = value.strip()
        if value in EMBEDDED:
            return value
        if not Path(value).is_file():
            raise ValueError(
                f"neither an embedded dataset ({', '.join(EMBEDDED)}) nor an existing price file"
            )
        return value

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str) -> str:
        import exchange_calendars

        value = value.strip()
        if value not in exchange_calendars.get_calendar_names(include_aliases=True):
            raise ValueError(
                "unknown exchange calendar (see exchange_calendars.get_calendar_names(); "
                "e.g. XNYS, XLON, XTKS)"
            )
        return value

    @field_validator("max_close")
    @classmethod
    def _close_range(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_close")
        if low is not None and not value > low:
            raise ValueError(f"must be above {env_var('min_close')} ({low:g}), got {value:g}")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _distinct_ports(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("grpc_port"):
            raise ValueError(f"must differ from {env_var('grpc_port')} (both are {value})")
        return value

    @field_validator("grpc_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if not secret or any(ch.isspace() for ch in secret):
                raise ValueError("a bearer token must be non-empty and contain no whitespace")
        return value

    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert" not in info.data:  # the certificate itself was invalid
            return value
        cert = info.data["tls_cert"]
        if cert is not None and value is None:
            raise ValueError(f"required when {env_var('tls_cert')} is set (TLS needs both)")
        if cert is None and value is not None:
            raise ValueError(f"set {env_var('tls_cert')} too (TLS needs both)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @property
    def log_level_number(self) -> int:
        """The :mod:`logging` level number of :attr:`log_level` (e.g. 20 for INFO)."""
        return int(logging.getLevelName(self.log_level))


def load_settings(**overrides: Any) -> Settings:
    """Load and validate the settings; the service calls this once at start.

    Parameters
    ----------
    **overrides
        Field values that take precedence over the environment and the ``.env`` file (e.g.
        from command-line options). ``_env_file`` selects another dotenv file (``None``: none).

    Returns
    -------
    Settings
        The validated, immutable settings.

    Raises
    ------
    SettingsError
        A value is invalid, or an override names no setting. The message has one line per
        problem, starting with the environment variable, e.g.
        ``MOMENTUM_GRPC_PORT: Input should be less than or equal to 65535 (got '70000')``.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields) - {"_env_file"})
    if unknown:
        raise SettingsError([(env_var(name), "no such setting") for name in unknown])
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """One ``(variable, text)`` pair per pydantic error."""
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        text = str(error["msg"]).removeprefix("Value error, ")
        if error.get("input") is not None and error["type"] != "missing":
            text += f" (got {_shown(field, error['input'])})"
        problems.append((env_var(field) if field else "settings", text))
    return problems


def _shown(field: str, value: object) -> str:
    """The offending input for a message, with secrets hidden."""
    if field == "grpc_token":
        return "a hidden value"
    if isinstance(value, SecretStr):
        return "a hidden value"
    if field == "database_url" and isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return repr(str(value)) if isinstance(value, str | Path) else repr(value)
