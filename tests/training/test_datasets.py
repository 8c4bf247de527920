"""Layouts: what each sample contains, that every label is used once, and no look-ahead."""

import dataclasses

import numpy as np
import pytest
import torch

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training.datasets import (
    ModelData,
    PanelLayout,
    SequenceLayout,
    SpatioTemporalLayout,
    label_rows,
    make_layout,
    positions_of,
)
from training.models import REGISTRY


@pytest.fixture(scope="module")
def data():
    panel = synthetic_prices(n_assets=5, n_days=500, n_markets=2, seed=4)  # staggered starts
    return ModelData.from_features(compute_features(panel.prices))


def test_label_rows_keep_labels_inside_the_range():
    np.testing.assert_array_equal(label_rows(10, 14), [10, 11, 12])
    assert len(label_rows(5, 5)) == 0
    with pytest.raises(ValueError, match="bad row range"):
        label_rows(5, 3)


def test_model_data_masks(data):
    f = data.features
    finite = np.isfinite(f.values).all(axis=-1) & np.isfinite(f.vol)
    np.testing.assert_array_equal(data.tradable, finite)
    np.testing.assert_array_equal(data.labelled, finite & np.isfinite(f.target))
    assert not data.labelled[-1].any()  # no label on the last date
    assert np.isfinite(data.x).all() and data.x.dtype == np.float32
    assert (data.x[~np.isfinite(f.values)] == 0).all()
    expected = 0.15 / (f.vol * np.sqrt(252))
    np.testing.assert_allclose(data.leverage[finite], expected[finite], rtol=1e-6)


def test_spatiotemporal_batches(data):
    layout = SpatioTemporalLayout(lookback=4)
    rows = label_rows(320, 480)
    seen = []
    for batch in layout.batches(data, rows, 32, np.random.default_rng(0)):
        (x,) = batch.inputs
        assert x.shape[1:] == (5, 4, 8) and batch.target.shape[0] == 1
        n = x.shape[0]
        assert batch.target.shape == batch.mask.shape == batch.leverage.shape == (1, n, 5)
        # each sample is the window ending at its row, assets first
        for i in range(n):
            row = int(np.flatnonzero((data.target == batch.target[0, i].numpy()).all(axis=1))[0])
            np.testing.assert_array_equal(
                x[i].numpy(), data.x[row - 3 : row + 1].transpose(1, 0, 2)
            )
            seen.append(row)
    assert sorted(seen) == sorted(r for r in rows if data.labelled[r].any())


def test_sequence_batches_use_every_label_once(data):
    layout = SequenceLayout(seq_len=20)
    rows = label_rows(300, 480)
    count = np.zeros_like(data.labelled, dtype=int)
    for batch in layout.batches(data, rows, 16, np.random.default_rng(1)):
        x, tickers = batch.inputs
        assert x.shape[1:] == (20, 8) and batch.target.shape == (x.shape[0], 20, 1)
        for b in range(x.shape[0]):
            valid = batch.mask[b, :, 0].numpy()
            assert valid[: valid.sum()].all()  # padding only at the end
            asset = int(tickers[b])
            for s in np.flatnonzero(valid):
                matches = np.flatnonzero((data.x[:, asset] == x[b, s].numpy()).all(axis=1))
                row = int(matches[matches >= 300][0])
                assert data.target[row, asset] == batch.target[b, s, 0]
                count[row, asset] += 1
    expected = np.zeros_like(count)
    expected[rows] = data.labelled[rows]
    np.testing.assert_array_equal(count, expected)


def test_panel_batches_cover_the_rows(data):
    layout = PanelLayout(seq_len=16)
    rows = label_rows(320, 480)
    covered = np.zeros(len(data.x), dtype=int)
    for batch in layout.batches(data, rows, 4, np.random.default_rng(2)):
        (x,) = batch.inputs
        assert x.shape[1:] == (16, 5, 8) and batch.target.shape == (x.shape[0], 16, 5)
        for b in range(x.shape[0]):
            for s in np.flatnonzero(batch.mask[b].numpy().any(axis=1)):
                row = int(np.flatnonzero((data.x == x[b, s].numpy()).all(axis=(1, 2)))[0])
                covered[row] += 1
    np.testing.assert_array_equal(np.flatnonzero(covered), rows[data.labelled[rows].any(axis=1)])
    assert covered.max() == 1


@pytest.mark.parametrize("name", ["slp", "dmn", "tft", "quantnet"])
def test_predictions_use_no_future_data(data, name):
    spec = REGISTRY[name]
    torch.manual_seed(0)
    config = spec.tiny()
    model = spec.build(config)
    steps = getattr(config, "lookback", 10)
    layout = make_layout(spec.layout, steps)
    rows = np.arange(400, 420)
    base = layout.predict(model, data, rows)
    future = dataclasses.replace(data, x=data.x.copy())
    future.x[411:] += 5.0  # change everything after row 410
    moved = layout.predict(model, future, rows)
    np.testing.assert_array_equal(base[:11], moved[:11])
    assert not np.allclose(base[12:], moved[12:], equal_nan=True)


@pytest.mark.parametrize("name", ["dmn", "tft"])
@pytest.mark.parametrize("early", [False, True])
def test_sequence_prediction_is_the_last_step_of_its_window(data, name, early):
    """Late rows only (the models' last-step path) or with an early row, whose window starts
    at row 0 and ends after it (full sequences): each position is the model's output at the
    row's step of that window."""
    spec = REGISTRY[name]
    torch.manual_seed(0)
    model = spec.build(spec.tiny()).eval()
    asset = 2
    first = int(np.flatnonzero(data.tradable[:, asset])[0])
    seq_len = first + 5 if early else 10
    rows = [first + 2, 450] if early else [450, 451, 460]
    positions = SequenceLayout(seq_len).predict(model, data, np.array(rows))
    for i, row in enumerate(rows):
        start = max(row - seq_len + 1, 0)
        window = torch.from_numpy(data.x[start : start + seq_len, asset][None])
        with torch.no_grad():
            out = model(window, torch.tensor([asset]))
        direct = positions_of(out)[0, row - start].item()
        assert np.isfinite(positions[i, asset])
        assert positions[i, asset] == pytest.approx(direct, abs=1e-6)


def test_untradable_entries_get_no_position(data):
    spec = REGISTRY["dmn"]
    model = spec.build(spec.tiny())
    rows = np.arange(0, 400)
    positions = SequenceLayout(10).predict(model, data, rows)
    np.testing.assert_array_equal(np.isnan(positions), ~data.tradable[rows])


@pytest.mark.parametrize("name", ["dmn", "tft"])
def test_sequences_split_across_model_calls_give_the_same_positions(data, name):
    """A cap on sequences per model call (memory) changes how the work is cut, not the result:
    each slice keeps its own tickers, and the pieces are put back in order."""
    spec = REGISTRY[name]
    torch.manual_seed(0)
    model = spec.build(spec.tiny()).eval()
    rows = np.arange(440, 452)
    whole = SequenceLayout(10).predict(model, data, rows)
    sliced = SequenceLayout(10, sequences_per_call=7).predict(model, data, rows)
    assert np.isfinite(whole).sum() > 20
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="`sequences_per_call`"):
        SequenceLayout(10, sequences_per_call=0)
