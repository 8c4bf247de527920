"""Tests for service.config: defaults, environment, .env file, and errors that name variables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from service.config import Settings, SettingsError, env_var, load_settings


@pytest.fixture(autouse=True)
def _isolated(clean_env: Path) -> None:
    """Every test here starts without MOMENTUM_* variables, in an empty directory."""


def test_defaults():
    s = load_settings()
    assert s.data_dir == Path("var")
    assert s.database_url == "sqlite:///var/momentum.db"
    assert s.registry_dir == Path("models")
    assert (s.model_name, s.model_version) == ("slp", None)
    assert (s.universe, s.calendar, s.cycle_delay_minutes) == ("sp500", "XNYS", 30)
    assert (s.vol_target, s.portfolio_vol_target, s.cost_bps) == (0.15, False, 5.0)
    assert (s.stale_policy, s.max_carry_sessions, s.device) == ("skip", 3, "auto")
    assert (s.grpc_host, s.grpc_port, s.metrics_port) == ("127.0.0.1", 50051, 9108)
    assert (s.grpc_token, s.tls_cert, s.tls_key) == (None, None, None)
    assert s.per_ticker_metrics is False
    assert (s.log_level, s.log_level_number) == ("INFO", logging.INFO)


def test_default_database_lives_in_the_data_dir(monkeypatch):
    monkeypatch.setenv("MOMENTUM_DATA_DIR", "/srv/momentum")
    assert load_settings().database_url == "sqlite:////srv/momentum/momentum.db"


def test_environment_variables_override_defaults(monkeypatch, tmp_path):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_text("cert")
    key.write_text("key")
    env = {
        "MOMENTUM_DATABASE_URL": "postgresql+psycopg://svc:pw@db:5432/momentum",
        "MOMENTUM_MODEL_NAME": "tft",
        "MOMENTUM_MODEL_VERSION": "20240101-abc",
        "MOMENTUM_CALENDAR": "XLON",
        "MOMENTUM_CYCLE_DELAY_MINUTES": "0",
        "MOMENTUM_VOL_TARGET": "0.1",
        "MOMENTUM_PORTFOLIO_VOL_TARGET": "true",
        "MOMENTUM_COST_BPS": "2.5",
        "MOMENTUM_STALE_POLICY": "carry",
        "MOMENTUM_MAX_CARRY_SESSIONS": "5",
        "MOMENTUM_DEVICE": "cuda",
        "MOMENTUM_GRPC_PORT": "6000",
        "MOMENTUM_METRICS_PORT": "6001",
        "MOMENTUM_GRPC_TOKEN": "s3cret-token",
        "MOMENTUM_TLS_CERT": str(cert),
        "MOMENTUM_TLS_KEY": str(key),
        "MOMENTUM_PER_TICKER_METRICS": "1",
        "MOMENTUM_LOG_LEVEL": "debug",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.database_url == "postgresql+psycopg://svc:pw@db:5432/momentum"
    assert (s.model_name, s.model_version, s.calendar) == ("tft", "20240101-abc", "XLON")
    assert (s.cycle_delay_minutes, s.vol_target, s.cost_bps) == (0, 0.1, 2.5)
    assert s.portfolio_vol_target is True and s.per_ticker_metrics is True
    assert (s.stale_policy, s.max_carry_sessions, s.device) == ("carry", 5, "cuda")
    assert (s.grpc_port, s.metrics_port) == (6000, 6001)
    assert isinstance(s.grpc_token, SecretStr)
    assert s.grpc_token.get_secret_value() == "s3cret-token"
    assert "s3cret" not in repr(s)  # secrets never show up in logs of the settings
    assert (s.tls_cert, s.tls_key) == (cert, key)
    assert (s.log_level, s.log_level_number) == ("DEBUG", logging.DEBUG)


def test_dotenv_file_is_read_and_the_environment_wins(monkeypatch, clean_env):
    (clean_env / ".env").write_text(
        "MOMENTUM_GRPC_PORT=7000\nMOMENTUM_MODEL_NAME=dmn\nMOMENTUM_TEST_DATABASE_URL=x\n"
    )
    s = load_settings()
    assert (s.grpc_port, s.model_name) == (7000, "dmn")
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", "7001")
    assert load_settings().grpc_port == 7001
    assert load_settings(grpc_port=7002).grpc_port == 7002  # explicit overrides win over both
    assert load_settings(_env_file=None).model_name == "slp"  # the file can be switched off


def test_another_dotenv_file_can_be_named(tmp_path):
    other = tmp_path / "prod.env"
    other.write_text("MOMENTUM_COST_BPS=1.5\n")
    assert load_settings(_env_file=other).cost_bps == 1.5


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("MOMENTUM_GRPC_TOKEN", "")
    monkeypatch.setenv("MOMENTUM_DATABASE_URL", "")
    s = load_settings()
    assert s.grpc_token is None
    assert s.database_url == "sqlite:///var/momentum.db"


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.grpc_port = 1  # type: ignore[misc]


def test_universe_may_be_a_price_file(monkeypatch, tmp_path):
    prices = tmp_path / "universe.csv"
    prices.write_text("date,AAA\n2022-01-03,1.0\n")
    monkeypatch.setenv("MOMENTUM_UNIVERSE", str(prices))
    assert load_settings().universe == str(prices)


def test_every_setting_is_documented():
    # The README's settings table is generated from these descriptions.
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 20, name


def test_env_var_names():
    assert env_var("grpc_port") == "MOMENTUM_GRPC_PORT"
    assert env_var("tls_key") == "MOMENTUM_TLS_KEY"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MOMENTUM_GRPC_PORT", "70000", "Input should be less than or equal to 65535"),
        ("MOMENTUM_GRPC_PORT", "0", "Input should be greater than or equal to 1"),
        ("MOMENTUM_METRICS_PORT", "http", "Input should be a valid integer"),
        ("MOMENTUM_METRICS_PORT", "50051", "must differ from MOMENTUM_GRPC_PORT"),
        ("MOMENTUM_CALENDAR", "NOPE", "unknown exchange calendar"),
        ("MOMENTUM_CYCLE_DELAY_MINUTES", "-1", "greater than or equal to 0"),
        ("MOMENTUM_VOL_TARGET", "0", "Input should be greater than 0"),
        ("MOMENTUM_VOL_TARGET", "nan", "finite number"),
        ("MOMENTUM_COST_BPS", "-0.5", "greater than or equal to 0"),
        ("MOMENTUM_STALE_POLICY", "hold", "Input should be 'skip' or 'carry'"),
        ("MOMENTUM_MAX_CARRY_SESSIONS", "0", "greater than or equal to 1"),
        ("MOMENTUM_DEVICE", "gpu", "Input should be 'auto', 'cpu' or 'cuda'"),
        ("MOMENTUM_PORTFOLIO_VOL_TARGET", "maybe", "valid boolean"),
        ("MOMENTUM_PER_TICKER_METRICS", "sometimes", "valid boolean"),
        ("MOMENTUM_MODEL_NAME", "../etc", "should match pattern"),
        ("MOMENTUM_MODEL_VERSION", "v 1", "should match pattern"),
        ("MOMENTUM_UNIVERSE", "no_such_prices.csv", "nor an existing price file"),
        ("MOMENTUM_DATABASE_URL", "not a url", "not a SQLAlchemy URL"),
        ("MOMENTUM_DATABASE_URL", "mysql://u@h/db", "unsupported database backend 'mysql'"),
        ("MOMENTUM_GRPC_TOKEN", "two words", "no whitespace"),
        ("MOMENTUM_TLS_CERT", "missing.crt", "Path does not point to a file"),
        ("MOMENTUM_LOG_LEVEL", "loud", "must be one of DEBUG, INFO"),
    ],
)
def test_invalid_value_names_its_variable(monkeypatch, variable, value, problem):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems[0][0] == variable
    assert len(caught.value.problems) == 1
    line = str(caught.value)
    assert line.startswith(f"{variable}: ")
    assert problem in line


def test_message_matches_the_documented_form(monkeypatch):
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", "70000")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "MOMENTUM_GRPC_PORT: Input should be less than or equal to 65535 (got '70000')"
    )
    assert isinstance(caught.value, ValueError)


def test_every_problem_is_reported_one_per_line(monkeypatch):
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", "70000")
    monkeypatch.setenv("MOMENTUM_DEVICE", "tpu")
    monkeypatch.setenv("MOMENTUM_COST_BPS", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "MOMENTUM_COST_BPS",
        "MOMENTUM_DEVICE",
        "MOMENTUM_GRPC_PORT",
    ]


@pytest.mark.parametrize(("given", "required"), [("tls_cert", "tls_key"), ("tls_key", "tls_cert")])
def test_tls_needs_both_files(monkeypatch, tmp_path, given, required):
    path = tmp_path / "file.pem"
    path.write_text("pem")
    monkeypatch.setenv(env_var(given), str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    # Whichever variable carries the error, the message names the missing one.
    assert env_var(required) in str(caught.value)
    assert str(caught.value).startswith("MOMENTUM_TLS_KEY: ")


def test_secrets_are_not_echoed(monkeypatch):
    monkeypatch.setenv("MOMENTUM_GRPC_TOKEN", "top secret")
    monkeypatch.setenv("MOMENTUM_DATABASE_URL", "mysql://svc:hunter2@db/momentum")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "MOMENTUM_GRPC_TOKEN" in message and "MOMENTUM_DATABASE_URL" in message
    assert "top secret" not in message and "hunter2" not in message
    assert "mysql://svc:***@db/momentum" in message


def test_unknown_override_is_an_error():
    with pytest.raises(SettingsError, match="MOMENTUM_GRPC_PROT: no such setting"):
        load_settings(grpc_prot=1)


def test_overrides_are_validated_like_variables():
    with pytest.raises(SettingsError, match=r"MOMENTUM_MAX_CARRY_SESSIONS: .* \(got 0\)"):
        load_settings(max_carry_sessions=0)
