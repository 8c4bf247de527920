"""Each model's search grid, fixed parameters and `--protocol paper` budget, value by value.

The expected values are written out from the papers' tables, so a change to a grid fails here
until the table it cites says otherwise.
"""

from __future__ import annotations

import pytest

from training.backtest_config import PROTOCOLS, BacktestConfig, Budget
from training.models import (
    REGISTRY,
    cnn,
    dmn,
    lasso,
    lstm,
    mlp,
    mlp_dmn,
    quantnet,
    recurrent,
    slp,
    tft,
    wavenet,
)
from training.train import TrainConfig

# STMOM Table 8, row by row
STMOM_MINIBATCH = [32, 64, 128, 256]
STMOM_DROPOUT = [0.1, 0.2, 0.3, 0.4, 0.5]
STMOM_HIDDEN = [5, 10, 20, 40, 80, 160]
STMOM_LR = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0]
STMOM_MAX_GRAD_NORM = [1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1]
STMOM_L1 = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0]


def test_slp_grid_is_stmom_table_8_with_the_l1_weight():
    # STMOM Table 8; the L1 weight alpha penalises the SLP only (eq. 11), and the SLP has no
    # hidden layer or dropout
    assert slp.SEARCH_SPACE == {
        "l1": STMOM_L1,
        "lr": STMOM_LR,
        "batch_size": STMOM_MINIBATCH,
        "max_grad_norm": STMOM_MAX_GRAD_NORM,
    }


@pytest.mark.parametrize("module", [mlp, lstm], ids=["mlp", "lstm"])
def test_mlp_and_lstm_grids_are_stmom_table_8(module):
    # STMOM Table 8
    assert module.SEARCH_SPACE == {
        "hidden": STMOM_HIDDEN,
        "dropout": STMOM_DROPOUT,
        "lr": STMOM_LR,
        "batch_size": STMOM_MINIBATCH,
        "max_grad_norm": STMOM_MAX_GRAD_NORM,
    }


def test_cnn_grid_is_stmom_table_8_plus_its_unstated_kernel_and_filters():
    # STMOM Table 8; the paper states no kernel size or filter count (eq. 15), so those two
    # are this project's, the filters over Table 8's hidden sizes
    assert cnn.SEARCH_SPACE == {
        "kernel_size": [2, 3, 4, 5],
        "filters": [5, 10, 20, 40, 80, 160],
        "hidden": STMOM_HIDDEN,
        "dropout": STMOM_DROPOUT,
        "lr": STMOM_LR,
        "batch_size": STMOM_MINIBATCH,
        "max_grad_norm": STMOM_MAX_GRAD_NORM,
    }


def test_temporal_history_is_stmom_table_7():
    # STMOM Table 7: temporal history 5 (SLP, MLP) and 63 (CNN, LSTM); fixed, not searched
    assert slp.SlpConfig(n_assets=3).lookback == 5
    assert mlp.MlpConfig(n_assets=3).lookback == 5
    assert cnn.CnnConfig(n_assets=3).lookback == 63
    # the LSTM trains on every step of 63-session windows (eq. 23): its history is the
    # training sequence length, 63 by default, and the served window the same
    assert REGISTRY["lstm"].layout == "panel" and TrainConfig().seq_len == 63
    assert BacktestConfig(model="lstm").longest_window == 63
    for module in (slp, mlp, cnn, lstm):
        assert "lookback" not in module.SEARCH_SPACE


@pytest.mark.parametrize("module", [dmn, tft], ids=["dmn", "tft"])
def test_dmn_and_tft_keep_the_momentum_transformer_reference_grid(module):
    # the Momentum Transformer authors' hp_grid.py (the DMN paper's Appendix B grid is not
    # available); the walkthrough's chosen values (hidden 10, dropout 0.1, lr 0.01, batch 256,
    # max gradient norm 0.01 or 1.0) all lie on it
    assert module.SEARCH_SPACE == {
        "hidden": [5, 10, 20, 40, 80, 160],
        "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],
        "batch_size": [64, 128, 256],
        "max_grad_norm": [0.01, 1.0, 100.0],
    }


@pytest.mark.parametrize("module", [mlp_dmn, wavenet], ids=["mlp_dmn", "wavenet"])
def test_dmn_paper_mlp_and_wavenet_keep_the_lstm_dmn_grid(module):
    # the DMN paper's Appendix B grid is not available: the LSTM DMN's grid stands in
    assert module.SEARCH_SPACE == {
        "hidden": [5, 10, 20, 40, 80, 160],
        "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],
        "batch_size": [64, 128, 256],
        "max_grad_norm": [0.01, 1.0, 100.0],
    }


def test_dmn_paper_lasso_searches_alpha_over_the_stmom_l1_values():
    # the DMN paper treats alpha as a hyperparameter (IV-A) but its grid is not available:
    # STMOM Table 8's L1 values; the LSTM DMN's optimisation grid; no hidden size or dropout
    assert lasso.SEARCH_SPACE == {
        "alpha": STMOM_L1,
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],
        "batch_size": [64, 128, 256],
        "max_grad_norm": [0.01, 1.0, 100.0],
    }


QUANTNET_DROPOUT = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # Table A2: 0.1-0.9


def test_quantnet_grid_is_table_a2():
    # QuantNet Table A2, QuantNet columns (Linear-linear, Linear-LSTM, LSTM-linear, LSTM-LSTM):
    # ranges as lists including both ends, over the union of the columns; AMSGrad (Appendix 2)
    assert quantnet.SEARCH_SPACE == {
        "encoder": ["lstm", "linear"],
        "transfer_layer": ["linear", "lstm"],
        "encoder_hidden": [10, 25, 50, 100],  # TL dimension (N)
        "layers": [1, 2],  # E/D # layers
        "dropout": QUANTNET_DROPOUT,  # E/D dropout
        "transfer_layers": [1, 2],  # TL # layers
        "transfer_dropout": QUANTNET_DROPOUT,  # TL dropout
        "lr": [1e-4, 1e-3, 1e-2, 1e-1, 0.5],  # 0.0001-0.1 (Linear-linear), 0.0001-0.5
        "k": [21, 63, 126, 252, 504],  # sequence length p: 21-504 (Linear-linear), 21-252
        "batch_size": [16, 32, 64, 96, 128],  # batch size L: 16-128 (Linear-linear), 16-96
        "optimizer": ["amsgrad"],
        "max_steps": [2000],  # training steps: 2000
    }


def test_no_transfer_grid_is_table_a2():
    # QuantNet Table A2, No Transfer columns (Linear, LSTM); AMSGrad (Appendix 2)
    assert quantnet.NO_TRANSFER_SEARCH_SPACE == {
        "encoder": ["lstm", "linear"],
        "layers": [1, 2],  # E/D # layers
        "dropout": QUANTNET_DROPOUT,  # E/D dropout
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],  # 0.0001-0.1
        "k": [21, 63, 126, 252, 504],  # sequence length p: 21-504
        "batch_size": [16, 32, 64, 128],  # batch size L: 16-128
        "optimizer": ["amsgrad"],
        "max_steps": [2000],  # training steps: 2000
    }


def test_the_registry_searches_each_module_grid():
    expected = {
        "slp": slp.SEARCH_SPACE,
        "mlp": mlp.SEARCH_SPACE,
        "cnn": cnn.SEARCH_SPACE,
        "lstm": lstm.SEARCH_SPACE,
        "dmn": dmn.SEARCH_SPACE,
        "lasso": lasso.SEARCH_SPACE,
        "mlp_dmn": mlp_dmn.SEARCH_SPACE,
        "wavenet": wavenet.SEARCH_SPACE,
        "tft": tft.SEARCH_SPACE,
        "quantnet": quantnet.SEARCH_SPACE,
        "no_transfer": quantnet.NO_TRANSFER_SEARCH_SPACE,
        # Boutier (2023) Table 1, one grid for the five (tests/training/test_models_recurrent.py)
        **dict.fromkeys(recurrent.VARIANTS, recurrent.SEARCH_SPACE),
    }
    assert {name: spec.search_space for name, spec in REGISTRY.items()} == expected


def test_quantnet_lstm_configurations_build_from_their_grid():
    # every Table A2 architecture draw builds: Linear/LSTM encoder-decoder x Linear/LSTM omega
    for encoder in quantnet.SEARCH_SPACE["encoder"]:
        for transfer_layer in quantnet.SEARCH_SPACE["transfer_layer"]:
            config = quantnet.tiny(
                encoder=encoder,
                transfer_layer=transfer_layer,
                layers=2,
                transfer_layers=2,
                dropout=0.9,
                transfer_dropout=0.9,
            )
            assert quantnet.QuantNet(config).config.decoder_kind == encoder


# `--protocol paper`, model by model
PAPER_BUDGETS = {
    # STMOM Table 7: 100 random-search iterations, 500 epochs, patience 25
    "slp": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
    "mlp": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
    "cnn": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
    "lstm": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
    # DMN section IV-B: 50 iterations of random search, at most 100 epochs, patience 25
    "dmn": Budget(trials=50, max_epochs=100, patience=25, seeds=5),
    "lasso": Budget(trials=50, max_epochs=100, patience=25, seeds=5),
    "mlp_dmn": Budget(trials=50, max_epochs=100, patience=25, seeds=5),
    "wavenet": Budget(trials=50, max_epochs=100, patience=25, seeds=5),
    # Momentum Transformer walkthrough: 300 epochs
    "tft": Budget(trials=100, max_epochs=300, patience=25, seeds=5),
    # QuantNet Appendix 2: 200 random-search samples
    "quantnet": Budget(trials=200, max_epochs=500, patience=25, seeds=5),
    "no_transfer": Budget(trials=200, max_epochs=500, patience=25, seeds=5),
    # Boutier (2023) section 4: 250 epochs, patience 25 (trials: the DMN paper's 50)
    **{
        name: Budget(trials=50, max_epochs=250, patience=25, seeds=5)
        for name in ("rnn", "deep_rnn", "gru", "lstm_xs", "deep_lstm")
    },
}


@pytest.mark.parametrize("name", sorted(PAPER_BUDGETS))
def test_paper_protocol_budgets(name):
    assert BacktestConfig(model=name, protocol="paper").budget == PAPER_BUDGETS[name]


def test_paper_protocol_table():
    assert PROTOCOLS["paper"] == {
        "spatiotemporal": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        "dmn": Budget(trials=50, max_epochs=100, patience=25, seeds=5),
        "sequence": Budget(trials=100, max_epochs=300, patience=25, seeds=5),
        "panel": Budget(trials=200, max_epochs=500, patience=25, seeds=5),
        # the STMOM LSTM reads the panel layout but keeps STMOM Table 7's budget
        "lstm": Budget(trials=100, max_epochs=500, patience=25, seeds=5),
        **{m: PAPER_BUDGETS[m] for m in ("lasso", "mlp_dmn", "wavenet")},
        **{m: PAPER_BUDGETS[m] for m in ("rnn", "deep_rnn", "gru", "lstm_xs", "deep_lstm")},
    }
    assert set(PAPER_BUDGETS) == set(REGISTRY)  # every model's budget is pinned above
