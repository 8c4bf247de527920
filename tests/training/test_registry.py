"""Every registered model, built from its tiny config: shapes, range, gradients, causality."""

import pytest
import torch

from training.datasets import positions_of
from training.models import REGISTRY, Universe, build, get_spec, recurrent

BATCH, STEPS = 3, 12


def _inputs(spec, config, steps=STEPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    if spec.layout == "spatiotemporal":
        shape = (BATCH, config.n_assets, config.lookback, config.n_features)
        return (torch.randn(shape, generator=g),)
    if spec.layout == "sequence":
        x = torch.randn((BATCH, steps, config.n_features), generator=g)
        n_tickers = getattr(config, "n_tickers", 1)
        return x, torch.arange(BATCH) % n_tickers
    return (torch.randn((BATCH, steps, _panel_assets(config), config.n_features), generator=g),)


def _panel_assets(config):
    """Assets of a panel model: QuantNet's markets together, else the config's own count."""
    markets = getattr(config, "markets", None)
    return config.n_assets if markets is None else sum(len(m) for m in markets)


def _expected_shape(spec, config):
    if spec.layout == "spatiotemporal":
        return (BATCH, config.n_assets)
    if spec.layout == "sequence":
        return (BATCH, STEPS)
    return (BATCH, STEPS, _panel_assets(config))


@pytest.fixture(params=sorted(REGISTRY))
def entry(request):
    spec = REGISTRY[request.param]
    torch.manual_seed(0)
    config = spec.tiny()
    return spec, config, spec.build(config)


def test_shape_and_range(entry):
    spec, config, model = entry
    model.eval()
    positions = positions_of(model(*_inputs(spec, config)))
    assert tuple(positions.shape) == _expected_shape(spec, config)
    assert positions.abs().max() <= 1.0


def test_every_parameter_gets_a_gradient(entry):
    spec, config, model = entry
    model.eval()  # no dropout: every path is live
    positions = positions_of(model(*_inputs(spec, config)))
    weights = torch.linspace(-1, 1, positions.numel()).reshape(positions.shape)
    (positions * weights).sum().backward()
    silent = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not silent, f"{spec.name}: no gradient reaches {silent}"


@pytest.mark.parametrize(
    "name", sorted(n for n, s in REGISTRY.items() if s.layout != "spatiotemporal")
)
def test_sequence_models_are_causal(name):
    # spatio-temporal models emit one step from a window that ends at t
    # (tests/training/test_datasets.py checks the windows)
    spec = REGISTRY[name]
    torch.manual_seed(0)
    config = spec.tiny()
    model = spec.build(config)
    model.eval()
    args = _inputs(spec, config)
    changed = list(args)
    s = 5
    x = args[0].clone()
    x[:, s + 1 :] = torch.randn_like(x[:, s + 1 :]) * 3
    changed[0] = x
    with torch.no_grad():
        before = positions_of(model(*args))
        after = positions_of(model(*changed))
    torch.testing.assert_close(before[:, : s + 1], after[:, : s + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, s + 1 :], after[:, s + 1 :])


def test_registry_fills_data_fields():
    universe = Universe.from_market_map(["A", "B", "C"], 8, {"A": "x", "B": "y", "C": "x"})
    assert universe.markets == ((0, 2), (1,))
    config, model = build("slp", universe, lookback=3)
    assert (config.n_assets, config.n_features, config.lookback) == (3, 8, 3)
    config, _ = build("tft", universe, hidden=8)
    assert config.n_tickers == 3
    config, _ = build("no_transfer", universe)
    assert config.markets == ((0, 2), (1,)) and config.transfer is False
    _, quantnet = build("quantnet", universe)
    _, no_transfer = build("no_transfer", universe)
    assert sum(p.numel() for p in quantnet.parameters()) > sum(
        p.numel() for p in no_transfer.parameters()
    )


def test_registry_errors_name_the_problem():
    universe = Universe(("A",), 8)
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        get_spec("gpt")
    with pytest.raises(ValueError, match=r"slp: unknown config fields \['hidden'\]"):
        build("slp", universe, hidden=4)
    with pytest.raises(ValueError, match="no market for tickers"):
        Universe.from_market_map(["A", "B"], 8, {"A": "x"})


@pytest.mark.parametrize("name", sorted(recurrent.VARIANTS))
def test_zero_mean_models_hold_a_dollar_neutral_gross_one_book(name):
    # the RNN equities paper's zero-mean layer, at every step of every window
    spec = REGISTRY[name]
    torch.manual_seed(0)
    config = spec.tiny()
    model = spec.build(config)
    model.eval()
    with torch.no_grad():
        positions = positions_of(model(*_inputs(spec, config)))  # (batch, steps, assets)
    torch.testing.assert_close(positions.sum(-1), torch.zeros(BATCH, STEPS), rtol=0, atol=1e-6)
    torch.testing.assert_close(positions.abs().sum(-1), torch.ones(BATCH, STEPS), rtol=0, atol=1e-6)
