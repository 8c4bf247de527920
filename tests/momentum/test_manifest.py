"""The manifest schema and the checks the service relies on before serving a model."""

import json

import numpy as np
import pandas as pd
import pytest

from momentum.features import FEATURES_VERSION, FeatureConfig
from momentum.manifest import (
    QUANTILE_LEVELS,
    ManifestError,
    check_graph_input,
    check_manifest,
    feature_config,
    feature_spec,
    fingerprint_prices,
    read_manifest,
    reference_quantiles,
)
from tests.momentum.manifests import TICKERS, make_manifest


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but hashed all the same")
    return path


def test_round_trip_through_json(model_file, tmp_path):
    manifest = make_manifest(model_file)
    path = tmp_path / "manifest.json"
    path.write_text(manifest.to_json())
    again = read_manifest(path)
    assert again == manifest
    assert again.n_assets == 3 and again.n_features == 8
    assert feature_config(again.features) == FeatureConfig()
    check_manifest(again, model_path=model_file, graph_input=["batch", 3, 5, 8], tickers=TICKERS)


def test_missing_field_is_named(model_file, tmp_path):
    raw = json.loads(make_manifest(model_file).to_json())
    del raw["lookback"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"lookback: Field required"):
        read_manifest(path)


def test_unknown_field_and_bad_json_are_refused(model_file, tmp_path):
    raw = json.loads(make_manifest(model_file).to_json())
    raw["surprise"] = 1
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="surprise"):
        read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "absent.json")


def test_tampered_model_file_is_detected(model_file):
    manifest = make_manifest(model_file)
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="sha256 .* does not match"):
        check_manifest(manifest, model_path=model_file)


def test_feature_version_mismatch_is_detected(model_file):
    spec = feature_spec(FeatureConfig()).model_copy(update={"version": FEATURES_VERSION + ".x"})
    with pytest.raises(ManifestError, match="features version"):
        check_manifest(make_manifest(model_file, features=spec))


def test_feature_names_that_momentum_does_not_compute_are_detected(model_file):
    spec = feature_spec(FeatureConfig())
    names = list(reversed(spec.names))
    renamed = spec.model_copy(update={"names": names})
    quantiles = {n: [float(i) for i in range(11)] for n in names}
    manifest = make_manifest(model_file, features=renamed, reference_quantiles=quantiles)
    with pytest.raises(ManifestError, match="feature names"):
        check_manifest(manifest)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (["batch", 3, 21, 8], r"axis 2 \(lookback\) is 21, the manifest says 5"),
        (["batch", 4, 5, 8], r"axis 1 \(n_assets\) is 4"),
        (["batch", 3, 5, 7], r"axis 3 \(n_features\) is 7"),
        ([2, 3, 5, 8], "batch axis is fixed"),
        (["batch", 3, 5], "4 axes"),
    ],
)
def test_graph_input_that_differs_from_the_manifest_is_detected(model_file, shape, message):
    with pytest.raises(ManifestError, match=message):
        check_graph_input(make_manifest(model_file), shape)


def test_universe_mismatch_names_missing_and_extra(model_file):
    manifest = make_manifest(model_file)
    with pytest.raises(ManifestError, match=r"missing \['CCC'\], extra \['DDD'\]"):
        check_manifest(manifest, tickers=["AAA", "BBB", "DDD"])
    with pytest.raises(ManifestError, match="another order"):
        check_manifest(manifest, tickers=["BBB", "AAA", "CCC"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"markets": [[0, 1]]}, "partition"),
        ({"tickers": ["AAA", "AAA", "CCC"]}, "duplicates"),
        ({"signal_quantiles": [1.0] + [0.0] * 10}, "non-decreasing"),
        ({"reference_quantiles": {"norm_ret_1d": [0.0] * 11}}, "one entry per feature"),
        ({"version": "../escape"}, "version"),
        (
            {"drift_baseline": {"window": 63, "level": 0.95, "features": {}, "signal": None}},
            "drift_baseline.features",
        ),
        (
            {"drift_baseline": {"window": 1, "level": 0.95, "features": {}, "signal": None}},
            "window",
        ),
    ],
)
def test_inconsistent_manifests_are_refused(model_file, override, message):
    with pytest.raises(ValueError, match=message):
        make_manifest(model_file, **override)


def test_a_drift_baseline_round_trips_and_an_older_manifest_has_none(model_file, tmp_path):
    names = FeatureConfig().names
    baseline = {"window": 63, "level": 0.95, "features": dict.fromkeys(names, 0.3), "signal": 0.5}
    manifest = make_manifest(model_file, drift_baseline=baseline)
    path = tmp_path / "manifest.json"
    path.write_text(manifest.to_json())
    assert read_manifest(path).drift_baseline == manifest.drift_baseline
    older = json.loads(manifest.to_json())
    del older["drift_baseline"]  # exported before baselines existed: still served
    path.write_text(json.dumps(older))
    assert read_manifest(path).drift_baseline is None


def test_reference_quantiles_ignore_nan_and_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 4, 2))
    values[:10, 0, 1] = np.nan
    out = reference_quantiles(values, ["a", "b"])
    finite = values[..., 1][np.isfinite(values[..., 1])]
    assert out["b"] == pytest.approx(np.quantile(finite, QUANTILE_LEVELS).tolist())
    assert out["a"][0] == values[..., 0].min() and out["a"][-1] == values[..., 0].max()
    with pytest.raises(ValueError, match="no finite value"):
        reference_quantiles(np.full((3, 2, 1), np.nan), ["empty"])


def test_price_fingerprint_changes_with_any_close_date_or_ticker():
    dates = pd.date_range("2020-01-01", periods=4, name="date")
    prices = pd.DataFrame({"A": [1.0, 2.0, 3.0, 4.0], "B": [5.0, np.nan, 6.0, 7.0]}, index=dates)
    base = fingerprint_prices(prices)
    assert fingerprint_prices(prices.copy()) == base
    changed = prices.copy()
    changed.iloc[2, 1] = 6.000001
    assert fingerprint_prices(changed) != base
    assert fingerprint_prices(prices.rename(columns={"B": "C"})) != base
    assert fingerprint_prices(prices.set_axis(dates + pd.Timedelta(days=1))) != base
