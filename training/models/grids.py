"""Random-search grids shared by several models, defined once.

The DMN / Momentum Transformer reference grid (the authors' ``hp_grid.py``) is
also the grid of STMOM's Table 8 for the network size, dropout and the
optimisation settings; each model file adds what only it searches.
"""

# optimisation settings, read by the training loop (`training.train.TrainConfig`)
OPTIMISATION: dict[str, list] = {
    "lr": [1e-4, 1e-3, 1e-2, 1e-1],
    "batch_size": [64, 128, 256],
    "max_grad_norm": [0.01, 1.0, 100.0],
}

# width and regularisation of the hidden layers (model config fields)
CAPACITY: dict[str, list] = {
    "hidden": [5, 10, 20, 40, 80, 160],
    "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
}
