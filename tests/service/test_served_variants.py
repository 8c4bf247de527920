"""Variants of a trained model the service serves with no code of its own: a model on the
extended features (the RNN equities paper's set; the service stores the index series beside the
closes) and an ensemble of a search's top trials (averaged inside one graph). Each replays with
the backtest's positions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from momentum.features import FeatureConfig
from momentum.manifest import ManifestError, check_manifest
from service import store
from service.cli import main
from service.model import ModelRefused, load_model
from tests.service.conftest import exported_backtest


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return exported_backtest(
        tmp_path_factory.mktemp("extended"),
        label="slp-extended",
        features="extended",
        trials=1,
        fixed={"lr": 1e-3, "l1": 1e-2, "lookback": 5},
    )


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # three trials differing in what the search draws besides the pinned lr and l1
    return exported_backtest(
        tmp_path_factory.mktemp("ensemble"),
        label="slp-ensemble",
        trials=3,
        ensemble=3,
        fixed={"lr": 1e-3, "l1": 1e-2},
    )


def _serve(monkeypatch, clean_env, run) -> None:
    monkeypatch.setenv("MOMENTUM_REGISTRY_DIR", str(run["registry"]))
    monkeypatch.setenv("MOMENTUM_MODEL_NAME", run["name"])
    monkeypatch.setenv("MOMENTUM_DATA_DIR", str(clean_env / "var"))
    monkeypatch.setenv("MOMENTUM_DEVICE", "cpu")


def _replay_matches_the_backtest(env, run, capsys) -> sa.Engine:
    """Replay 2022-12-01..09 through the CLI; the stored positions are the backtest's."""
    assert main(["replay", "--from", "2022-12-01", "--to", "2022-12-09"]) == 0
    out = capsys.readouterr().out
    days = [line for line in out.splitlines() if line.startswith("2022-12-")]
    assert len(days) == 7 and all(" succeeded " in d for d in days), out
    engine = store.create_engine(f"sqlite:///{env / 'var' / 'momentum.db'}")
    for day in ("2022-12-01", "2022-12-09"):
        stored = store.latest_positions(engine, run["name"], as_of=day)["signal"]
        expected = run["signals"].loc[pd.Timestamp(day), stored.index]
        np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5)
    return engine


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


def test_a_replay_serves_the_backtests_positions_with_the_index_stored(
    extended_run, clean_env, monkeypatch, capsys
):
    _serve(monkeypatch, clean_env, extended_run)
    engine = _replay_matches_the_backtest(clean_env, extended_run, capsys)
    index = store.read_closes(engine, start="2022-12-01", end="2022-12-09", tickers=["SP500"])
    assert index["SP500"].notna().all() and len(index) == 7


def test_a_service_storing_another_index_refuses_the_model(extended_run):
    with pytest.raises(ModelRefused, match=r"index series 'SP500'.*'OTHER'"):
        load_model(extended_run["registry"], extended_run["name"], index="OTHER", device="cpu")
    with pytest.raises(ModelRefused, match="stores no index series"):
        load_model(extended_run["registry"], extended_run["name"], device="cpu")
    model = load_model(extended_run["registry"], extended_run["name"], index="SP500", device="cpu")
    assert model.manifest.features.index == "SP500"


def test_an_ensemble_is_one_graph_the_service_replays_with_the_backtests_positions(
    ensemble_run, clean_env, monkeypatch, capsys
):
    members = ensemble_run["manifest"].members
    assert members is not None and len(members) == 3
    assert [m.score for m in members] == sorted((m.score for m in members), reverse=True)
    assert len({m.trial for m in members}) == 3
    assert ensemble_run["manifest"].lookback == max(m.lookback for m in members)
    _serve(monkeypatch, clean_env, ensemble_run)
    _replay_matches_the_backtest(clean_env, ensemble_run, capsys)
