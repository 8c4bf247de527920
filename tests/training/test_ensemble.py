"""Ensembles of the top trials: averaged positions in the backtest and inside one ONNX graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training.datasets import ModelData, label_rows
from training.ensemble import Ensemble, Member, ensemble_positions
from training.export import export_onnx, onnx_session, serving_module
from training.models import REGISTRY, Universe
from training.train import TrainConfig, layout_for

N_ASSETS = 5


def _models(name: str, lookbacks: list[int]) -> list[torch.nn.Module]:
    spec = REGISTRY[name]
    out = []
    for seed, lookback in enumerate(lookbacks):
        torch.manual_seed(seed)
        config = spec.tiny(lookback=lookback) if spec.layout == "spatiotemporal" else spec.tiny()
        out.append(spec.build(config).eval())
    return out


@pytest.mark.parametrize(
    ("name", "lookbacks"), [("slp", [4, 10, 7]), ("dmn", [6, 6]), ("tft", [6, 6])]
)
def test_an_ensemble_graph_gives_the_mean_of_its_members(name, lookbacks, tmp_path):
    models = _models(name, lookbacks)
    spec = REGISTRY[name]
    n_features = models[0].config.n_features
    ensemble = Ensemble(models, lookbacks)
    graph = export_onnx(
        name,
        ensemble,
        n_assets=N_ASSETS,
        lookback=ensemble.lookback,
        n_features=n_features,
        path=tmp_path / "ensemble.onnx",
    )
    assert set(graph.parity_max_abs_diff) == {"1", "256"}  # the export's own parity check
    session = onnx_session(graph.path)
    names = [o.name for o in session.get_outputs()]
    # extra outputs only when every member gives them in one shape (one lookback)
    same = len(set(lookbacks)) == 1
    assert names == [o.name for o in serving_module(name, models[0], N_ASSETS).outputs] or (
        not same and names == ["positions"]
    )
    generator = torch.Generator().manual_seed(7)
    for batch in (1, 256):
        x = torch.randn(batch, N_ASSETS, ensemble.lookback, n_features, generator=generator)
        got = session.run(None, {"features": x.numpy()})
        with torch.no_grad():
            each = []
            for model, lookback in zip(models, lookbacks, strict=True):
                out = serving_module(name, model, N_ASSETS)(x[:, :, -lookback:, :])
                each.append(out if isinstance(out, tuple) else (out,))
        for i, value in enumerate(got):
            mean = torch.stack([e[i] for e in each]).mean(0).numpy()
            np.testing.assert_allclose(value, mean, rtol=0, atol=1e-5)
    assert spec.layout in ("spatiotemporal", "sequence")


def test_backtest_positions_are_the_mean_of_the_members_predictions():
    synthetic = synthetic_prices(n_assets=N_ASSETS, n_days=700, n_markets=1, seed=2)
    f = compute_features(synthetic.prices)
    data = ModelData.from_features(f)
    universe = Universe.from_market_map(f.tickers, len(f.names), synthetic.markets)
    spec = REGISTRY["slp"]
    rows = label_rows(600, 690)
    team = []
    for seed, lookback in enumerate([3, 5]):
        torch.manual_seed(seed)
        config = spec.config(universe, lookback=lookback, l1=0.01)
        train_config = TrainConfig(device="cpu")
        team.append(
            Member(seed, 1.0 - seed, {}, spec.build(config).eval(), config, train_config, lookback)
        )
    averaged = ensemble_positions("slp", team, data, rows)
    each = [
        layout_for(spec, m.model_config, m.train_config).predict(m.model, data, rows) for m in team
    ]
    np.testing.assert_allclose(averaged, (each[0] + each[1]) / 2, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="at least 1 member"):
        ensemble_positions("slp", [], data, rows)
    with pytest.raises(ValueError, match="one lookback per member"):
        Ensemble([team[0].model], [3, 5])
