"""Random-search grids shared by several models, each paper's grid defined once.

Keys that are not model config fields (``lr``, ``batch_size``, ``max_grad_norm``)
belong to the training loop (`training.train.TrainConfig`).

* STMOM Table 8 for the spatio-temporal slp, mlp, cnn and lstm.
* The Momentum Transformer authors' reference grid (their ``hp_grid.py``) for
  the DMN and the TFT. The DMN paper defers its grid to its Appendix B, which
  was not available to this project; the values the Momentum Transformer
  walkthrough reports as chosen (hidden 10, dropout 0.1, lr 0.01, batch 256,
  max gradient norm 0.01 or 1.0) all lie on this grid.
* Boutier (2023) Table 1 for the cross-sectional recurrent models (rnn, deep_rnn, gru,
  lstm_xs, deep_lstm), with the input length T = 252 that its section 4 and Table 3 also
  train.
"""

# STMOM Table 8: learning rate, minibatch size and max gradient norm
STMOM_OPTIMISATION: dict[str, list] = {
    "lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
    "batch_size": [32, 64, 128, 256],
    "max_grad_norm": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0],
}

# STMOM Table 8: hidden layer size and dropout rate (model config fields)
STMOM_CAPACITY: dict[str, list] = {
    "hidden": [5, 10, 20, 40, 80, 160],
    "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
}

# STMOM Table 8: L1 regularisation weight alpha, for the SLP's lasso term (eq. 11)
STMOM_L1: list[float] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]

# DMN / TFT: the Momentum Transformer reference grid
DMN_TFT_OPTIMISATION: dict[str, list] = {
    "lr": [1e-4, 1e-3, 1e-2, 1e-1],
    "batch_size": [64, 128, 256],
    "max_grad_norm": [0.01, 1.0, 100.0],
}

DMN_TFT_CAPACITY: dict[str, list] = {
    "hidden": [5, 10, 20, 40, 80, 160],
    "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
}

# Boutier (2023) Table 1 for the recurrent cross-sectional models. `k` is the input length T
# (the panel window, `TrainConfig.seq_len`, as QuantNet's k): Table 1 lists 21, 63 and 126, but
# section 4 ("T = 21, 63, 126, 252 days") and Table 3 train 252 too, so it is on the grid.
# The gradient norm is fixed, not searched: Adam with Keras `clipnorm=10` (section 4).
BOUTIER_TABLE_1: dict[str, list] = {
    "k": [21, 63, 126, 252],
    "dropout": [0.1, 0.25, 0.5],
    "hidden": [60, 80, 100, 120],
    "batch_size": [32, 64, 128],
    "lr": [1e-3, 1e-2, 1e-1],
    "max_grad_norm": [10.0],
}
