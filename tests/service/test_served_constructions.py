"""What the manifest declares after the model, the service applies with no code of its own:
the sector-neutral mean-variance construction (weights equal to the backtest's, zero in every
sector, gross one) and the sgn() sizer of DMNs trained by regression or classification."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from service import store
from service.cli import main
from tests.service.conftest import exported_backtest

_DAYS = ("2022-12-01", "2022-12-02", "2022-12-05", "2022-12-09")


@pytest.fixture(scope="module")
def sector_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return exported_backtest(
        tmp_path_factory.mktemp("sector"),
        label="slp-sector",
        construction="sector_neutral_mv",
        trials=1,
        fixed={"lr": 1e-3, "l1": 1e-2},
    )


def _dmn(tmp_path_factory: pytest.TempPathFactory, objective: str) -> dict[str, Any]:
    return exported_backtest(
        tmp_path_factory.mktemp(objective),
        model="dmn",
        label=f"dmn-{objective}",
        objective=objective,
        start_year=2012,
        trials=1,
        fixed={"lr": 1e-3, "hidden": 5, "dropout": 0.1, "batch_size": 256, "max_grad_norm": 1.0},
    )


@pytest.fixture(scope="module")
def mse_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _dmn(tmp_path_factory, "mse")


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _dmn(tmp_path_factory, "binary")


def _replay(monkeypatch, env, run, capsys) -> sa.Engine:
    monkeypatch.setenv("MOMENTUM_REGISTRY_DIR", str(run["registry"]))
    monkeypatch.setenv("MOMENTUM_MODEL_NAME", run["name"])
    monkeypatch.setenv("MOMENTUM_DATA_DIR", str(env / "var"))
    monkeypatch.setenv("MOMENTUM_DEVICE", "cpu")
    assert main(["replay", "--from", "2022-12-01", "--to", "2022-12-09"]) == 0
    out = capsys.readouterr().out
    days = [line for line in out.splitlines() if line.startswith("2022-12-")]
    assert len(days) == 7 and all(" succeeded " in d for d in days), out
    return store.create_engine(f"sqlite:///{env / 'var' / 'momentum.db'}")


def test_a_sector_neutral_model_replays_with_the_backtests_weights(
    sector_run, clean_env, monkeypatch, capsys
):
    manifest = sector_run["manifest"]
    assert manifest.construction == "sector_neutral_mv" and manifest.sizer == "identity"
    engine = _replay(monkeypatch, clean_env, sector_run, capsys)
    sectors = [[manifest.tickers[i] for i in market] for market in manifest.markets]
    assert len(sectors) == 7  # the embedded stocks' GICS sectors
    for day in _DAYS:
        stored = store.latest_positions(engine, sector_run["name"], as_of=day)
        weight = stored["weight"]
        expected = sector_run["weights"].loc[pd.Timestamp(day), weight.index]
        np.testing.assert_allclose(weight, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            stored["signal"], sector_run["signals"].loc[pd.Timestamp(day), weight.index], atol=1e-5
        )
        assert abs(weight.abs().sum() - 1.0) < 1e-9  # gross exposure one
        for members in sectors:
            assert abs(weight[members].sum()) < 1e-9, (day, members)
        # a long-short book, not all zeros
        assert (weight > 1e-4).any() and (weight < -1e-4).any()


@pytest.mark.parametrize("run", ["mse_run", "binary_run"])
def test_a_forecasting_dmn_is_served_as_sgn_of_its_output(
    run, request, clean_env, monkeypatch, capsys
):
    exported = request.getfixturevalue(run)
    assert exported["manifest"].sizer == "sign"
    engine = _replay(monkeypatch, clean_env, exported, capsys)
    for day in _DAYS:
        stored = store.latest_positions(engine, exported["name"], as_of=day)
        signal = stored["signal"]
        assert set(np.unique(signal)) <= {-1.0, 0.0, 1.0}, signal
        np.testing.assert_array_equal(
            signal, exported["signals"].loc[pd.Timestamp(day), signal.index]
        )
        # eq. 1 on the sized positions: |w| = 0.15 / s / N
        expected = exported["weights"].loc[pd.Timestamp(day), signal.index]
        np.testing.assert_allclose(stored["weight"], expected, rtol=0, atol=1e-9)
