"""A model trained on the extended features (the RNN equities paper's set) is exported and
served: the service stores the index series beside the closes and gives the backtest's positions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from momentum.features import FeatureConfig
from momentum.manifest import ManifestError, check_manifest
from service import store
from service.cli import main
from service.model import ModelRefused, load_model


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny SLP backtest on the extended features (tested 2021-2022), exported."""
    from momentum.registry import promote
    from training.backtest import BacktestConfig, run_backtest
    from training.publish import export_window

    root = tmp_path_factory.mktemp("extended")
    config = BacktestConfig(
        model="slp",
        label="slp-extended",
        features="extended",
        first_test_year=2021,
        step_years=2,
        seeds=1,
        trials=1,
        epochs=2,
        fixed={"lr": 1e-3, "l1": 1e-2, "lookback": 5},
    )
    run = run_backtest(config, root / "run", log=lambda _: None, report=False)
    registry = root / "registry"
    version = export_window(run, registry=registry, log=lambda _: None)
    promote(registry, version.name, version.version)
    signals = pd.read_parquet(run / "seed_0" / "window_2021" / "signals.parquet")
    return {
        "registry": registry,
        "name": version.name,
        "manifest": version.manifest,
        "signals": signals.pivot(index="date", columns="ticker", values="signal"),
    }


@pytest.fixture
def env(extended_run, clean_env, monkeypatch):
    monkeypatch.setenv("MOMENTUM_REGISTRY_DIR", str(extended_run["registry"]))
    monkeypatch.setenv("MOMENTUM_MODEL_NAME", extended_run["name"])
    monkeypatch.setenv("MOMENTUM_DATA_DIR", str(clean_env / "var"))
    monkeypatch.setenv("MOMENTUM_DEVICE", "cpu")
    return clean_env


def test_the_manifest_records_the_extended_features_and_their_index(extended_run):
    features = extended_run["manifest"].features
    assert features.names == list(FeatureConfig(extended=True).names)
    assert features.config["extended"] is True and features.index == "SP500"
    # an extended manifest without the index's name cannot be served
    broken = extended_run["manifest"].model_copy(
        update={"features": features.model_copy(update={"index": None})}
    )
    with pytest.raises(ManifestError, match=r"features\.index"):
        check_manifest(broken)


def test_a_replay_serves_the_backtests_positions_with_the_index_stored(env, extended_run, capsys):
    assert main(["replay", "--from", "2022-12-01", "--to", "2022-12-09"]) == 0
    out = capsys.readouterr().out
    days = [line for line in out.splitlines() if line.startswith("2022-12-")]
    assert len(days) == 7 and all(" succeeded " in d for d in days), out
    engine = store.create_engine(f"sqlite:///{env / 'var' / 'momentum.db'}")
    index = store.read_closes(engine, start="2022-12-01", end="2022-12-09", tickers=["SP500"])
    assert index["SP500"].notna().all() and len(index) == 7
    for day in ("2022-12-01", "2022-12-09"):
        stored = store.latest_positions(engine, extended_run["name"], as_of=day)["signal"]
        expected = extended_run["signals"].loc[pd.Timestamp(day), stored.index]
        np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5)
    # the first cycle checked parity against the full-history recompute (index included)
    runs = store.read_cycle_runs(engine)
    assert runs["status"].eq("succeeded").all()


def test_a_service_storing_another_index_refuses_the_model(extended_run):
    with pytest.raises(ModelRefused, match=r"index series 'SP500'.*'OTHER'"):
        load_model(extended_run["registry"], extended_run["name"], index="OTHER", device="cpu")
    with pytest.raises(ModelRefused, match="stores no index series"):
        load_model(extended_run["registry"], extended_run["name"], device="cpu")
    model = load_model(extended_run["registry"], extended_run["name"], index="SP500", device="cpu")
    assert model.manifest.features.index == "SP500"
