"""``momentum-serve``: replay, ingest, cycle, positions, check-model, and a kill mid-replay."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from momentum.data import load_prices
from service import store
from service.cli import main


@pytest.fixture
def env(served_run, clean_env, monkeypatch):
    """Settings pointing at the served registry and a fresh store in a temporary folder."""
    monkeypatch.setenv("MOMENTUM_REGISTRY_DIR", str(served_run["registry"]))
    monkeypatch.setenv("MOMENTUM_MODEL_NAME", served_run["name"])
    monkeypatch.setenv("MOMENTUM_DATA_DIR", str(clean_env / "var"))
    monkeypatch.setenv("MOMENTUM_DEVICE", "cpu")
    return clean_env


def _engine(env):
    return store.create_engine(f"sqlite:///{env / 'var' / 'momentum.db'}")


def test_replay_prints_each_day_and_the_ledger_and_serves_the_backtests_positions(
    env, served_run, capsys
):
    assert main(["replay", "--from", "2022-12-01", "--to", "2022-12-09"]) == 0
    out = capsys.readouterr().out
    days = [line for line in out.splitlines() if line.startswith("2022-12-")]
    assert [d[:10] for d in days] == [
        "2022-12-01",
        "2022-12-02",
        "2022-12-05",
        "2022-12-06",
        "2022-12-07",
        "2022-12-08",
        "2022-12-09",
    ]
    assert all(" succeeded " in d for d in days)
    assert "paper 2022-12-02: net" in days[1]  # positions of 12-01 marked with 12-02 closes
    assert "paper ledger slp: 6 days 2022-12-02..2022-12-09" in out
    assert "Sharpe" in out and "max drawdown" in out
    engine = _engine(env)
    for day in ("2022-12-01", "2022-12-09"):
        stored = store.latest_positions(engine, served_run["name"], as_of=day)["signal"]
        expected = served_run["signals"].loc[pd.Timestamp(day), stored.index]
        np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5)
    # replaying again recomputes nothing and says so
    assert main(["replay", "--from", "2022-12-08", "--to", "2022-12-09"]) == 0
    assert capsys.readouterr().out.count("done earlier") == 2


def test_ingest_cycle_positions_and_check_model(env, tmp_path, capsys):
    prices = load_prices("sp500").loc["2019-06-03":"2021-03-31"]
    good = tmp_path / "closes.csv"
    prices.to_csv(good, index_label="date")
    assert main(["ingest", str(good)]) == 0
    assert f"{prices.notna().sum().sum()} stored" in capsys.readouterr().out
    # a file with one bad close stores nothing and names the row
    bad = prices.iloc[-1:].copy()
    bad.index = [pd.Timestamp("2021-04-01")]
    bad.iloc[0, 2] = -1.0
    bad_file = tmp_path / "bad.csv"
    bad.to_csv(bad_file, index_label="date")
    assert main(["ingest", str(bad_file)]) == 1
    err = capsys.readouterr().err
    assert "nothing stored" in err
    assert store.closes_dates(_engine(env))[-1] == pd.Timestamp("2021-03-31")

    assert main(["cycle"]) == 0
    assert capsys.readouterr().out.startswith("2021-03-31 succeeded")
    # `positions` is a gRPC client of a running service
    from service.app import SignalService
    from service.config import load_settings
    from service.grpc_server import GrpcServer

    with GrpcServer(SignalService(load_settings()), port=0) as server:
        assert main(["positions", "--address", f"127.0.0.1:{server.port}"]) == 0
        table = capsys.readouterr().out
        assert (
            main(["positions", "--address", f"127.0.0.1:{server.port}", "--date", "1999-01-04"])
            == 1
        )
        assert "NOT_FOUND" in capsys.readouterr().err
    assert "as of 2021-03-31" in table and "AAPL" in table and "previous" in table
    assert main(["check-model"]) == 0
    assert "CPUExecutionProvider" in capsys.readouterr().out


def test_no_model_and_bad_settings_are_clear_errors(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("MOMENTUM_REGISTRY_DIR", str(clean_env / "nothing"))
    assert main(["check-model"]) == 1
    assert "no model to serve" in capsys.readouterr().err
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", "70000")
    assert main(["check-model"]) == 2
    assert "MOMENTUM_GRPC_PORT" in capsys.readouterr().err


def test_run_on_the_network_without_a_token_refuses_to_start(env, monkeypatch, capsys):
    grpc_port, metrics_port = _free_port(), _free_port()
    monkeypatch.setenv("MOMENTUM_GRPC_HOST", "0.0.0.0")
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", str(grpc_port))
    monkeypatch.setenv("MOMENTUM_METRICS_PORT", str(metrics_port))
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert "refusing to serve gRPC on 0.0.0.0 without a bearer token" in err
    assert "MOMENTUM_ALLOW_INSECURE=true" in err
    # nothing was left listening: both ports are free again
    for port in (grpc_port, metrics_port):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_a_replay_killed_mid_cycle_resumes_to_one_complete_set_per_session(env, served_run):
    """SIGKILL while cycles run, restart: every session ends with exactly one set of positions."""
    command = [sys.executable, "-m", "service.cli", "replay", "--from", "2022-11-01"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    ) as child:
        seen = 0
        for line in child.stdout:
            seen += " succeeded " in line
            if seen == 5:
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    finished = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    assert finished.returncode == 0, finished.stderr
    assert "done earlier" in finished.stdout
    engine = _engine(env)
    sessions = served_run["signals"].loc["2022-11-01":].index
    with engine.connect() as conn:
        counts = conn.execute(
            sa.select(store.positions.c.as_of, sa.func.count()).group_by(store.positions.c.as_of)
        ).all()
    per_day = {pd.Timestamp(d): n for d, n in counts}
    assert set(per_day) == set(sessions)
    assert set(per_day.values()) == {len(served_run["manifest"].tickers)}
    ledger = store.read_ledger(engine, served_run["name"])
    assert list(ledger.index) == list(sessions[1:])  # each session marked once


@pytest.mark.slow
def test_replaying_2021_2022_serves_the_backtests_positions_on_every_date(env, served_run, capsys):
    """Training and serving agree: every replayed session equals the backtest (1e-5)."""
    assert main(["replay", "--from", "2021-01-04"]) == 0
    assert "paper ledger slp" in capsys.readouterr().out
    expected = served_run["signals"]
    with _engine(env).connect() as conn:
        rows = conn.execute(
            sa.select(store.positions.c.as_of, store.positions.c.ticker, store.positions.c.signal)
        ).all()
    served = pd.DataFrame(rows, columns=["date", "ticker", "signal"])
    served["date"] = pd.to_datetime(served["date"])
    served = served.pivot(index="date", columns="ticker", values="signal")
    assert list(served.index) == list(expected.index)  # every test session, once
    diff = (served[expected.columns] - expected).abs().to_numpy()
    assert np.isnan(diff).sum() == expected.isna().sum().sum()
    assert np.nanmax(diff) <= 1e-5


def test_readme_settings_table_is_the_codes():
    from pathlib import Path

    from service.cli import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert settings_table() in readme, "README settings table is stale: momentum-serve settings"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_grpc_and_metrics_and_stops_cleanly_on_sigterm(env, monkeypatch):
    import time
    import urllib.request

    grpc_port, metrics_port = _free_port(), _free_port()
    monkeypatch.setenv("MOMENTUM_GRPC_PORT", str(grpc_port))
    monkeypatch.setenv("MOMENTUM_METRICS_PORT", str(metrics_port))
    command = [sys.executable, "-m", "service.cli", "run", "--grace", "1"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as child:
        try:
            health = [sys.executable, "-m", "service.healthcheck", "--port", str(grpc_port)]
            deadline = time.monotonic() + 60
            while subprocess.run(health, capture_output=True).returncode != 0:
                assert child.poll() is None, child.stderr.read()
                assert time.monotonic() < deadline, "never SERVING"
                time.sleep(0.5)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            assert "momentum_model_loaded 1.0" in text
        finally:
            child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
        assert "stopped" in child.stderr.read()
