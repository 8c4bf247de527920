"""Selection on what is traded: early stopping and the best trial use the net validation score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training import search
from training.datasets import ModelData, label_rows
from training.models import Universe, get_spec
from training.search import run_search
from training.train import (
    FitResult,
    TrainConfig,
    fit,
    layout_for,
    validation_loss,
    validation_sharpe,
)


@pytest.fixture(scope="module")
def panel():
    synthetic = synthetic_prices(n_assets=6, n_days=1400, n_markets=1, seed=3)
    f = compute_features(synthetic.prices)
    split = int(len(f.dates) * 0.8)
    return {
        "data": ModelData.from_features(f),
        "universe": Universe.from_market_map(f.tickers, len(f.names), synthetic.markets),
        "train": label_rows(320, split),
        "valid": label_rows(split, len(f.dates)),
    }


def _slp(panel, config: TrainConfig) -> tuple[nn.Module, object]:
    spec = get_spec("slp")
    model_config = spec.config(panel["universe"], lookback=5, l1=0.01)
    return spec.build(model_config), layout_for(spec, model_config, config)


def test_a_turnover_cost_lowers_the_validation_sharpe_of_a_churning_signal(panel):
    config = TrainConfig(max_epochs=1, seed=0, device="cpu")
    model, layout = _slp(panel, config)
    gross = validation_sharpe(model, layout, panel["data"], panel["valid"])
    net = validation_sharpe(model, layout, panel["data"], panel["valid"], cost_bps=50.0)
    assert math.isfinite(gross) and net < gross
    assert validation_sharpe(model, layout, panel["data"], panel["valid"], cost_bps=0.0) == gross


@pytest.mark.parametrize("select", ["sharpe", "loss"])
def test_early_stopping_keeps_the_epoch_with_the_best_selection_score(panel, select):
    config = TrainConfig(
        lr=3e-2,
        max_epochs=8,
        patience=8,
        min_delta=0.0,
        cost_bps=2.0,
        select=select,
        select_cost_bps=25.0,
        seed=1,
        device="cpu",
    )
    model, layout = _slp(panel, config)
    seen = []

    def check(record):  # the figures of the model as it stands after this epoch
        data, rows = panel["data"], panel["valid"]
        assert record["valid_sharpe"] == validation_sharpe(model, layout, data, rows)
        assert record["valid_net_sharpe"] == validation_sharpe(model, layout, data, rows, 25.0)
        if select == "loss":
            assert record["valid_score"] == -validation_loss(model, layout, data, rows, config)
        else:
            assert record["valid_score"] == record["valid_net_sharpe"]
        seen.append(record)

    result = fit(
        model, layout, panel["data"], panel["train"], panel["valid"], config, on_epoch=check
    )
    scores = [r["valid_score"] for r in seen]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    best = seen[result.best_epoch - 1]
    assert result.best_valid_score == best["valid_score"]
    assert result.best_valid_sharpe == best["valid_sharpe"]  # the gross figure, recorded
    assert result.best_valid_net_sharpe == best["valid_net_sharpe"]
    # the restored weights are that epoch's
    restored = validation_sharpe(model, layout, panel["data"], panel["valid"], 25.0)
    assert restored == pytest.approx(best["valid_net_sharpe"], abs=1e-12)


def test_the_loss_score_is_the_training_objective_with_its_penalty(panel):
    config = TrainConfig(loss="sharpe", cost_bps=5.0, device="cpu")
    model, layout = _slp(panel, config)
    with_penalty = validation_loss(model, layout, panel["data"], panel["valid"], config)
    model.config = type(model.config)(**{**vars(model.config), "l1": 0.0})
    without = validation_loss(model, layout, panel["data"], panel["valid"], config)
    assert with_penalty > without  # the L1 term is added (weights are not all zero)
    assert model.training  # left as it was found


@pytest.mark.parametrize(("select_cost", "winner"), [(None, 1), (0.0, 0)])
def test_a_trial_with_higher_gross_but_lower_net_sharpe_loses_the_selection(
    panel, tmp_path: Path, monkeypatch, select_cost, winner
):
    # trial 0 churns (gross 1.6, net 0.3 at the run's cost), trial 1 is steady (gross 1.1,
    # net 0.9): the search keeps the net winner, unless the selection cost is 0 (gross)
    figures = [(1.6, 0.3), (1.1, 0.9)]
    calls = []

    def fake_train(name, data, universe, train_rows, valid_rows, hyper, base):
        gross, net = figures[len(calls)]
        calls.append(hyper)
        spec = get_spec(name)
        model_config = spec.config(universe, lookback=5, l1=0.01)
        result = FitResult(
            spec.build(model_config),
            best_epoch=1,
            best_valid_sharpe=gross,
            initial_valid_sharpe=0.0,
            stopped="max_epochs",
            # what fit scores with this config: the net figure, the gross one at cost 0
            best_valid_score=net if base.selection_cost_bps > 0 else gross,
            best_valid_net_sharpe=net,
        )
        return model_config, result

    monkeypatch.setattr(search, "train", fake_train)
    base = TrainConfig(max_epochs=1, cost_bps=5.0, select_cost_bps=select_cost, device="cpu")
    result = run_search(
        "slp",
        panel["data"],
        panel["universe"],
        panel["train"],
        panel["valid"],
        directory=tmp_path,
        n_trials=2,
        base=base,
    )
    assert len(calls) == 2
    assert result.best_trial == winner
    gross, net = figures[winner]
    assert result.best_attrs["valid_sharpe"] == gross
    assert result.best_attrs["valid_net_sharpe"] == net
