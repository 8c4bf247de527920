"""Export to the one serving contract: every registry model, parity, wrappers, run windows."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from momentum.contract import contract_inputs, predict_rows, tradable
from momentum.data import synthetic_prices
from momentum.drift import level_shares, window_psi_baseline
from momentum.features import compute_features
from momentum.registry import list_versions, load_version, production_version
from training.cli import main
from training.datasets import ModelData
from training.export import (
    PARITY_TOLERANCE,
    export_onnx,
    onnx_session,
    parity_batches_for,
    serving_module,
)
from training.models import REGISTRY
from training.train import TrainConfig, layout_for

N_ASSETS, LOOKBACK = 5, 7  # the tiny configs have 5 assets; sequence models take any lookback


def _tiny(name):
    spec = REGISTRY[name]
    torch.manual_seed(0)
    config = spec.tiny()
    return spec, config, spec.build(config).eval()


def _lookback(spec, config):
    return config.lookback if spec.layout == "spatiotemporal" else LOOKBACK


def test_the_parity_batch_is_bounded_in_windows_for_wide_universes():
    from training.export import PARITY_WINDOWS

    assert parity_batches_for(20) == (1, 256)
    assert parity_batches_for(500) == (1, PARITY_WINDOWS // 500)
    assert parity_batches_for(3103) == (1, 2)  # still above 1: the batch axis is exercised
    assert parity_batches_for(100_000) == (1, 2)
    assert all(b * 3103 <= PARITY_WINDOWS for b in parity_batches_for(3103))


def test_a_wide_universe_exports_with_a_bounded_parity_batch(tmp_path):
    spec = REGISTRY["dmn"]
    torch.manual_seed(0)
    config = spec.tiny()
    graph = export_onnx(
        "dmn",
        spec.build(config).eval(),
        n_assets=3000,
        lookback=LOOKBACK,
        n_features=config.n_features,
        path=tmp_path / "m.onnx",
    )
    assert set(graph.parity_max_abs_diff) == {"1", "2"}
    assert max(graph.parity_max_abs_diff.values()) <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_model_exports_with_onnxruntime_parity(name, tmp_path):
    spec, config, model = _tiny(name)
    lookback = _lookback(spec, config)
    graph = export_onnx(
        name,
        model,
        n_assets=N_ASSETS,
        lookback=lookback,
        n_features=config.n_features,
        path=tmp_path / "m.onnx",
    )
    assert set(graph.parity_max_abs_diff) == {"1", "256"}
    assert max(graph.parity_max_abs_diff.values()) <= PARITY_TOLERANCE
    # the batch axis is symbolic in the file itself, the others fixed
    dims = onnx.load(str(graph.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [N_ASSETS, lookback, config.n_features]
    # an independent batch size: positions in [-1, 1], equal to torch
    session = onnx_session(graph.path)
    x = torch.randn(
        3, N_ASSETS, lookback, config.n_features, generator=torch.Generator().manual_seed(7)
    )
    got = session.run(None, {"features": x.numpy()})
    with torch.no_grad():
        want = serving_module(name, model, N_ASSETS)(x)
    want = want if isinstance(want, tuple) else (want,)
    assert [o.name for o in session.get_outputs()] == [o.name for o in graph.outputs]
    assert got[0].shape == (3, N_ASSETS) and np.abs(got[0]).max() <= 1
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def panel():
    prices = synthetic_prices(n_assets=N_ASSETS, n_days=420, n_markets=1, seed=3).prices
    return ModelData.from_features(compute_features(prices))


@pytest.mark.parametrize("name", ["slp", "lstm", "dmn", "tft", "quantnet"])
def test_wrapper_gives_what_the_backtest_predicts(name, panel):
    """The contract wrapper on the contract tensor == `Layout.predict` used by backtests."""
    spec, config, model = _tiny(name)
    lookback = _lookback(spec, config)
    layout = layout_for(spec, config, TrainConfig(seq_len=lookback))
    rows = np.arange(380, 419)
    expected = layout.predict(model, panel, rows)
    with torch.no_grad():
        out = serving_module(name, model, N_ASSETS)(
            torch.from_numpy(contract_inputs(panel.features, rows, lookback))
        )
    positions = out[0] if isinstance(out, tuple) else out
    positions = np.where(tradable(panel.features)[rows], positions.numpy(), np.nan)
    assert np.isfinite(expected).any()
    np.testing.assert_allclose(positions, expected, rtol=0, atol=1e-6)


def test_slp_attributions_add_up_to_the_pre_activation():
    spec, config, model = _tiny("slp")
    x = torch.randn(4, N_ASSETS, config.lookback, config.n_features)
    with torch.no_grad():
        positions, own, cross = serving_module("slp", model, N_ASSETS)(x)
        pre = model.dense(x.reshape(4, -1))
    # STMOM: tanh(sum of input terms + b): own + cross over every feature is W^T u
    bias = model.dense.bias.detach()
    np.testing.assert_allclose((own + cross).sum(-1) + bias, pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(torch.tanh(pre), positions, atol=1e-6)
    # own terms of asset 2, feature 3 by hand: its own inputs times its own weights
    w = model.attribution_weights()  # (out, in, lookback, features)
    by_hand = (w[2, 2, :, 3] * x[:, 2, :, 3]).sum(-1)
    np.testing.assert_allclose(own[:, 2, 3], by_hand, rtol=1e-5, atol=1e-6)


def test_tft_extra_outputs_are_its_last_step_weights():
    spec, config, model = _tiny("tft")
    x = torch.randn(2, N_ASSETS, LOOKBACK, config.n_features)
    with torch.no_grad():
        positions, weights, attention = serving_module("tft", model, N_ASSETS)(x)
        asset = 3
        out = model(x[:, asset], torch.full((2,), asset))
    np.testing.assert_allclose(positions[:, asset], out.positions[:, -1], atol=1e-6)
    np.testing.assert_allclose(weights[:, asset], out.variable_weights[:, -1], atol=1e-6)
    np.testing.assert_allclose(attention[:, asset], out.attention[:, -1], atol=1e-6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------
# exporting a window of a tiny backtest run reproduces its out-of-sample positions

ARGS = ["--first-test-year", "2005", "--step-years", "1", "--end-year", "2006"]


@pytest.fixture(scope="module")
def price_file(tmp_path_factory):
    prices = synthetic_prices(n_assets=6, n_days=1650, n_markets=2, seed=5).prices
    path = tmp_path_factory.mktemp("data") / "prices.csv"
    prices.to_csv(path, index_label="date")
    return path


@pytest.mark.parametrize(("model", "extra"), [("slp", []), ("dmn", ["--seq-len", "21"])])
def test_exported_window_reproduces_the_runs_out_of_sample_positions(
    model, extra, price_file, tmp_path, capsys
):
    run, registry = tmp_path / "run", tmp_path / "registry"
    argv = ["backtest", "--model", model, "--data", str(price_file), *ARGS, *extra]
    assert main([*argv, "--seeds", "1", "--trials", "2", "--epochs", "2", "--out", str(run)]) == 0
    assert main(["export", str(run), "--window", "2005", "--registry", str(registry)]) == 0
    (version,) = list_versions(registry, model)
    loaded = load_version(registry, model, version)
    manifest = loaded.manifest
    best = json.loads((run / "seed_0" / "window_2005" / "best.json").read_text())
    assert manifest.model == model and manifest.hyperparameters == best["params"]
    assert manifest.metrics["valid_sharpe"] == pytest.approx(best["valid_sharpe"])
    assert manifest.training_window.test_start.isoformat() == best["test_start"]
    assert manifest.lookback == (21 if model == "dmn" else manifest.config["lookback"])

    stored = pd.read_parquet(run / "seed_0" / "window_2005" / "signals.parquet")
    wide = stored.pivot(index="date", columns="ticker", values="signal")[manifest.tickers]
    # the backtest's traded weight per day, eq. (1) weights, recomputed with pandas
    vol = stored.pivot(index="date", columns="ticker", values="vol")[manifest.tickers]
    lev = wide * 0.15 / (vol * np.sqrt(252))
    weights = lev.div(lev.notna().sum(axis=1), axis=0).fillna(0.0)
    traded = weights.diff().abs().sum(axis=1)
    traded.iloc[0] = weights.iloc[0].abs().sum()
    assert manifest.metrics["test_weight_turnover"] == pytest.approx(traded.mean(), rel=1e-9)
    features = compute_features(pd.read_csv(price_file, index_col="date", parse_dates=True))
    rows = np.flatnonzero(features.dates.isin(wide.index))
    session = onnx_session(loaded.model_path)
    served = session.run(
        ["positions"], {"features": contract_inputs(features, rows, manifest.lookback)}
    )[0]
    served = np.where(tradable(features)[rows], served, np.nan)
    assert np.isfinite(served).sum() > 100
    np.testing.assert_allclose(served, wide.to_numpy(), rtol=0, atol=1e-5)

    # the drift reference: deciles of the positions as served, and the baselines recomputed
    span = manifest.training_window
    dates = features.dates.date
    reference_rows = features.values[(dates >= span.train_start) & (dates <= span.valid_end)]
    valid_rows = np.flatnonzero((dates >= span.valid_start) & (dates <= span.valid_end))
    signals = predict_rows(
        lambda x: session.run(["positions"], {"features": x})[0],
        features,
        valid_rows,
        manifest.lookback,
    )
    shares = level_shares(manifest.quantile_levels)
    assert manifest.signal_quantiles[0] >= -1.0 and manifest.signal_quantiles[-1] <= 1.0
    np.testing.assert_allclose(
        manifest.signal_quantiles, np.nanquantile(signals, manifest.quantile_levels), atol=1e-6
    )
    baseline = manifest.drift_baseline
    assert baseline is not None and (baseline.window, baseline.level) == (63, 0.95)
    assert list(baseline.features) == manifest.features.names
    for i, name in enumerate(manifest.features.names):
        edges = manifest.reference_quantiles[name]
        expected = window_psi_baseline(edges, reference_rows[..., i], 63, shares)
        assert baseline.features[name] == pytest.approx(expected, rel=1e-9), name
    expected = window_psi_baseline(manifest.signal_quantiles, signals, 63, shares)
    assert baseline.signal == pytest.approx(expected, rel=1e-6, abs=1e-9)

    # promote, then list
    capsys.readouterr()
    assert main(["promote", model, version, "--registry", str(registry)]) == 0
    assert production_version(registry, model) == version
    assert main(["models", "--registry", str(registry)]) == 0
    listing = capsys.readouterr().out
    assert version in listing and "production" in listing
    assert f"{best['valid_sharpe']:.3f}" in listing


def test_production_export_trains_on_everything_up_to_end(price_file, tmp_path):
    registry = tmp_path / "registry"
    argv = ["export", "--model", "slp", "--data", str(price_file), "--end", "2005-12-30"]
    argv += ["--trials", "1", "--epochs", "1", "--registry", str(registry), "--name", "prod"]
    assert main([*argv, "--out", str(tmp_path / "search")]) == 0
    manifest = load_version(registry, "prod", list_versions(registry, "prod")[0]).manifest
    window = manifest.training_window
    assert window.test_start is None and window.valid_end < pd.Timestamp("2005-12-30").date()
    assert window.valid_end >= pd.Timestamp("2005-12-01").date()
    assert window.train_end < window.valid_start
    assert manifest.metrics["valid_sharpe"] is not None


def test_export_cli_needs_exactly_one_source(tmp_path, capsys):
    assert main(["export", "--registry", str(tmp_path)]) == 2
    assert "either a backtest RUN directory or --model" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--registry", str(tmp_path)]) == 2
    assert "not a backtest run" in capsys.readouterr().err
    assert main(["promote", "slp", "v1", "--registry", str(tmp_path)]) == 2
    assert "no version 'v1'" in capsys.readouterr().err
