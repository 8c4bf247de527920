"""The one training loop: learning on a trending panel, determinism, clipping, guards."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from momentum.data import synthetic_prices
from momentum.features import compute_features
from momentum.metrics import sharpe_ratio
from momentum.portfolio import strategy_returns
from training.datasets import ModelData, SequenceLayout, label_rows
from training.models import REGISTRY, Universe, get_spec
from training.train import (
    TrainConfig,
    _clip,
    fit,
    layout_for,
    split_hyperparameters,
    train,
    validation_sharpe,
)


@pytest.fixture(scope="module")
def trending():
    """10 assets x 3000 days of the synthetic regime-switching panel (TSMOM works on it)."""
    panel = synthetic_prices(n_assets=10, n_days=3000, n_markets=1, seed=0)
    f = compute_features(panel.prices)
    data = ModelData.from_features(f)
    split = int(len(f.dates) * 0.75)
    return {
        "data": data,
        "universe": Universe.from_market_map(f.tickers, len(f.names), panel.markets),
        "train": label_rows(320, split),
        "valid": label_rows(split, len(f.dates)),
        "features": f,
    }


def test_slp_learns_the_trend(trending):
    # STMOM's finding holds here too: without a strong L1 the cross-asset SLP
    # fits noise within an epoch (in-sample Sharpe > 10, out-of-sample < 0).
    _, result = train(
        "slp",
        trending["data"],
        trending["universe"],
        trending["train"],
        trending["valid"],
        {"lookback": 5, "l1": 0.1, "lr": 1e-2, "batch_size": 64},
        TrainConfig(max_epochs=40, patience=10, seed=0),
    )
    assert result.best_valid_sharpe > 0.5
    assert result.best_valid_sharpe > result.initial_valid_sharpe
    assert result.history[result.best_epoch - 1]["valid_sharpe"] == result.best_valid_sharpe


def test_dmn_learns_the_trend(trending):
    _, result = train(
        "dmn",
        trending["data"],
        trending["universe"],
        trending["train"],
        trending["valid"],
        {"hidden": 10, "dropout": 0.1, "lr": 1e-2, "batch_size": 64},
        TrainConfig(max_epochs=15, patience=5, seed=0),
    )
    assert result.best_valid_sharpe > 0.5
    assert result.best_valid_sharpe > result.initial_valid_sharpe


def test_best_weights_are_restored(trending):
    spec = get_spec("slp")
    torch.manual_seed(0)
    config = spec.config(trending["universe"], lookback=5, l1=0.1)
    model = spec.build(config)
    train_config = TrainConfig(max_epochs=12, patience=2, lr=1e-2)
    layout = layout_for(spec, config, train_config)
    result = fit(
        model, layout, trending["data"], trending["train"], trending["valid"], train_config
    )
    again = validation_sharpe(result.model, layout, trending["data"], trending["valid"])
    assert again == pytest.approx(result.best_valid_sharpe, abs=1e-12)
    if result.stopped == "early_stopping":
        assert len(result.history) == result.best_epoch + train_config.patience + 1


def test_quantnet_trains_on_markets_of_different_sizes(trending):
    tickers = trending["features"].tickers
    market_of = {t: ("A" if i < 2 else "B" if i < 5 else "C") for i, t in enumerate(tickers)}
    universe = Universe.from_market_map(tickers, 8, market_of)
    assert [len(m) for m in universe.markets] == [2, 3, 5]
    config, result = train(
        "quantnet",
        trending["data"],
        universe,
        trending["train"],
        trending["valid"],
        {"encoder": "linear", "decoder": "linear", "lr": 1e-3, "batch_size": 4, "k": 63},
        TrainConfig(max_epochs=8, patience=8, seed=0),
    )
    assert config.markets == universe.markets
    assert result.stopped != "diverged"
    assert np.isfinite(result.best_valid_sharpe)
    assert result.best_valid_sharpe > result.initial_valid_sharpe


def test_training_is_deterministic(trending):
    args = (
        "slp",
        trending["data"],
        trending["universe"],
        trending["train"],
        trending["valid"],
        {"lookback": 2, "l1": 0.01},
        TrainConfig(max_epochs=3, patience=3, seed=7),
    )
    (_, first), (_, second) = train(*args), train(*args)

    def without_timing(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert without_timing(first.history) == without_timing(second.history)
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_trains_through_fit(name):
    spec = REGISTRY[name]
    tiny = spec.tiny()
    n_assets = getattr(tiny, "n_assets", getattr(tiny, "n_tickers", 5))
    panel = synthetic_prices(n_assets=n_assets, n_days=450, n_markets=1, seed=3, stagger=False)
    f = compute_features(panel.prices)
    data = ModelData.from_features(f)
    config = TrainConfig(max_epochs=2, patience=2, batch_size=16, seq_len=10)
    torch.manual_seed(0)
    model = spec.build(tiny)
    layout = layout_for(spec, tiny, config)
    result = fit(model, layout, data, label_rows(320, 420), label_rows(420, 450), config)
    assert result.stopped != "diverged"
    assert len(result.history) >= 1
    positions = layout.predict(result.model, data, np.arange(425, 430))
    assert positions.shape == (5, n_assets)
    assert np.nanmax(np.abs(positions)) <= 1


class _TinyForecast(nn.Module):
    """A "sequence" model whose outputs are 1e-3 x the 1-day normalised return: tiny,
    varying in size, signed like the feature."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1e-3))

    def forward(self, x, tickers=None, *, last_only=False):
        out = self.scale * x[..., 0]  # (batch, seq)
        return out[:, -1:] if last_only else out


@pytest.mark.parametrize("loss", ["sharpe", "returns", "mse", "binary"])
def test_validation_sharpe_is_of_the_sized_positions(trending, loss):
    # a regression or classification model outputs a forecast and trades sgn(forecast)
    # (DMN paper, section III-B): early stopping and selection must score that
    data, rows = trending["data"], trending["valid"]
    layout = SequenceLayout(21)
    model = _TinyForecast()
    raw = layout.predict(model, data, rows)
    f = data.features

    def sharpe(positions):
        return float(sharpe_ratio(strategy_returns(positions, f.next_returns[rows], f.vol[rows])))

    assert abs(sharpe(np.sign(raw)) - sharpe(raw)) > 1e-3  # the two can be told apart
    traded = np.sign(raw) if loss in ("mse", "binary") else raw
    config = TrainConfig(loss=loss, max_epochs=1, max_steps=1, seq_len=21, device="cpu")
    result = fit(model, layout, data, trending["train"], rows, config)
    assert result.initial_valid_sharpe == pytest.approx(sharpe(traded), abs=1e-12)
    assert validation_sharpe(_TinyForecast(), layout, data, rows, sizer="sign") == pytest.approx(
        sharpe(np.sign(raw)), abs=1e-12
    )


def test_per_tensor_clipping_bounds_each_gradient():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    _clip([a, b], TrainConfig(max_grad_norm=1.0, clip="per_tensor"))
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # already under 1: untouched
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    _clip([a, b], TrainConfig(max_grad_norm=1.0, clip="global"))
    total = torch.sqrt(a.grad.pow(2).sum() + b.grad.pow(2).sum())
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]) / np.hypot(5.0, 0.5))


def test_nan_guard_stops_and_keeps_finite_weights(trending):
    data = trending["data"]
    poisoned = dataclasses.replace(data, target=data.target.copy())
    poisoned.target[trending["train"][5], 0] = np.inf  # a corrupt label
    spec = get_spec("slp")
    torch.manual_seed(0)
    config = spec.config(trending["universe"], lookback=1)
    model = spec.build(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_config = TrainConfig(max_epochs=3, batch_size=4096)
    layout = layout_for(spec, config, train_config)
    result = fit(model, layout, poisoned, trending["train"], trending["valid"], train_config)
    assert result.stopped == "diverged"
    for key, value in result.model.state_dict().items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, before[key])  # nothing better was found: initial weights


def test_rows_must_not_overlap(trending):
    spec = get_spec("slp")
    config = spec.config(trending["universe"], lookback=1)
    with pytest.raises(ValueError, match="overlap"):
        fit(
            spec.build(config),
            layout_for(spec, config, TrainConfig()),
            trending["data"],
            np.arange(400, 500),
            np.arange(490, 600),
            TrainConfig(max_epochs=1),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "`lr`"),
        ({"batch_size": 0}, "`batch_size`"),
        ({"clip": "sometimes"}, "`clip`"),
        ({"optimizer": "sgd"}, "`optimizer`"),
        ({"loss": "hinge"}, "`loss`"),
        ({"max_grad_norm": -1.0}, "`max_grad_norm`"),
    ],
)
def test_train_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_split_hyperparameters():
    spec = get_spec("quantnet")
    model, training = split_hyperparameters(spec, {"encoder_hidden": 5, "lr": 1e-3, "k": 21})
    assert model == {"encoder_hidden": 5}
    assert training == {"lr": 1e-3, "seq_len": 21}
    with pytest.raises(ValueError, match="'banana' is neither"):
        split_hyperparameters(spec, {"banana": 1})
    for name, s in REGISTRY.items():  # every search-space key is usable
        split_hyperparameters(s, {k: v[0] for k, v in s.search_space.items()})
        assert name
