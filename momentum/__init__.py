"""Torch-free domain core shared by training and the service.

Prices, momentum features, vol-scaled positions, costs, benchmarks and metrics
live here once, so that research and production compute the same numbers.
Importing this package must never import torch.
"""

__version__ = "0.1.0"
