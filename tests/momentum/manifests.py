"""A valid manifest for tests that need one without exporting a model."""

from datetime import UTC, date, datetime

import numpy as np

from momentum.features import FeatureConfig
from momentum.manifest import QUANTILE_LEVELS, Manifest, feature_spec, sha256_file

TICKERS = ["AAA", "BBB", "CCC"]


def make_manifest(model_file, **overrides):
    """A valid manifest for the bytes in `model_file` (3 assets, 8 default features)."""
    names = FeatureConfig().names
    fields = {
        "name": "slp",
        "model": "slp",
        "layout": "spatiotemporal",
        "version": "20260101T000000Z-abcdef12",
        "created": datetime(2026, 1, 1, tzinfo=UTC),
        "data_source": "sp500",
        "data_fingerprint": "0" * 64,
        "training_window": {
            "train_start": date(1990, 1, 2),
            "train_end": date(2017, 6, 1),
            "valid_start": date(2017, 6, 2),
            "valid_end": date(2019, 12, 30),
        },
        "tickers": TICKERS,
        "markets": [[0, 2], [1]],
        "features": feature_spec(FeatureConfig()),
        "lookback": 5,
        "hyperparameters": {"l1": 0.01},
        "config": {"n_assets": 3, "lookback": 5},
        "seeds": [0],
        "metrics": {"valid_sharpe": 1.2, "test_sharpe": None},
        "quantile_levels": list(QUANTILE_LEVELS),
        "reference_quantiles": {n: [float(i) for i in range(11)] for n in names},
        "signal_quantiles": [i / 5 - 1 for i in range(11)],
        "onnx": {
            "sha256": sha256_file(model_file),
            "size_bytes": model_file.stat().st_size,
            "opset": 18,
            "outputs": [{"name": "positions", "shape": ["batch", "n_assets"], "description": "x"}],
        },
        "libraries": {"numpy": np.__version__},
        "parity_max_abs_diff": {"1": 1e-7, "256": 2e-7},
        "parity_tolerance": 1e-5,
    }
    fields.update(overrides)
    return Manifest.model_validate(fields)
