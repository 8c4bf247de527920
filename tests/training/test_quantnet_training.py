"""QuantNet trains as its Algorithm 1: random window ends, a minibatch of markets, eq. 8 over
the markets present, and a budget of training steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training.datasets import ModelData, PanelLayout, label_rows
from training.losses import quantnet_sharpe
from training.models import REGISTRY, Universe
from training.train import TrainConfig, fit, layout_for

MARKETS = ((0, 1), (2,), (3, 4))


@pytest.fixture(scope="module")
def data():
    prices = synthetic_prices(n_assets=5, n_days=700, n_markets=1, seed=4).prices
    return ModelData.from_features(compute_features(prices))


def test_windows_end_at_random_rows_and_keep_the_drawn_markets(data):
    layout = PanelLayout(16, markets=MARKETS, market_batch=2)
    rows = label_rows(320, 640)
    rng = np.random.default_rng(0)
    ends, windows = [], 0
    for batch in layout.batches(data, rows, 4, rng):
        mask = batch.mask.numpy()  # (windows, steps, assets)
        for w in range(mask.shape[0]):
            kept = mask[w].any(axis=0)
            # assets of two of the three markets at most (an asset may also lack labels)
            assert sum(any(kept[list(m)]) for m in MARKETS) <= 2
            (x,) = batch.inputs
            last = int(np.flatnonzero(mask[w].any(axis=1))[-1])
            row = int(np.flatnonzero((data.x == x[w, last].numpy()).all(axis=(1, 2)))[0])
            ends.append(row)
        windows += mask.shape[0]
    # as many windows as the chunked epoch (chunks at a random phase: 20 or 21 here), ending
    # anywhere in the rows rather than on one grid of chunk boundaries
    assert len(rows) // 16 <= windows <= len(rows) // 16 + 2
    assert min(ends) >= rows[0] and max(ends) <= rows[-1]
    assert len({(e - rows[0]) % 16 for e in ends}) > 4
    # the draw itself: whole markets, two of three, for each window
    keep = layout._market_mask(200, 5, np.random.default_rng(3))
    for row in keep:
        drawn = [bool(row[list(m)].all()) for m in MARKETS]
        assert sum(drawn) == 2 and row.sum() == sum(
            len(m) for m, d in zip(MARKETS, drawn, strict=True) if d
        )
    assert len({tuple(r) for r in keep}) == 3  # each pair of markets comes up
    # every market without market_batch
    full = PanelLayout(16, markets=MARKETS)
    seen = np.zeros(5, dtype=bool)
    for batch in full.batches(data, rows, 4, np.random.default_rng(1)):
        seen |= batch.mask.numpy().any(axis=(0, 1))
    # no market left out (asset 0 has labels on 5 of these rows only: drawn or not)
    assert seen[1:].all()
    with pytest.raises(ValueError, match="market_batch"):
        PanelLayout(16, market_batch=2)


def test_eq_8_averages_over_the_markets_present():
    gen = torch.Generator().manual_seed(0)
    returns = torch.randn(2, 30, 5, generator=gen) * 0.01
    mask = torch.ones(2, 30, 5, dtype=torch.bool)
    mask[:, :, 2] = False  # market (2,) absent from the batch
    both = quantnet_sharpe(returns, mask, MARKETS)
    present = quantnet_sharpe(returns[..., [0, 1, 3, 4]], mask[..., [0, 1, 3, 4]], ((0, 1), (2, 3)))
    torch.testing.assert_close(both, present)


def test_quantnet_samples_as_algorithm_1_and_stops_after_its_steps(data):
    spec = REGISTRY["quantnet"]
    universe = Universe(tuple(f"A{i}" for i in range(5)), data.x.shape[-1], MARKETS)
    config = spec.config(universe, market_batch=2)
    train_config = TrainConfig(
        seq_len=16, batch_size=4, max_epochs=50, patience=50, max_steps=7, device="cpu"
    )
    layout = layout_for(spec, config, train_config)
    assert isinstance(layout, PanelLayout) and layout.market_batch == 2
    assert layout.markets is not None and len(layout.markets) == 3
    torch.manual_seed(0)
    result = fit(
        spec.build(config), layout, data, label_rows(320, 600), label_rows(600, 690), train_config
    )
    # 280 rows: 18 windows of 16, 5 steps of 4 an epoch; 7 steps end in the second epoch
    assert result.stopped == "max_steps" and len(result.history) == 2
    assert 2000 in spec.search_space["max_steps"]
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
