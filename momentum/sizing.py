"""Position sizing: how a model's output becomes a position X in [-1, 1].

Lim, Zohren & Roberts (2019), section III-B: a model trained to *position* directly
(Sharpe or average-return objective) outputs X itself (``"identity"``); a model trained
by regression (MSE on next-day vol-normalised returns) or by binary classification
(cross-entropy on the sign of that return) outputs a forecast, and the position is
``X = sgn(forecast)`` ("Position Sizing": a full long when the expected return is
positive, or the probability of a rise is above one half). The models here emit the
classification probability as ``(y + 1) / 2`` of a tanh output ``y`` (`training.losses`),
so ``sgn(p - 0.5) = sgn(y)`` and one ``"sign"`` sizer serves both objectives.

The manifest declares the sizer (`momentum.manifest.Manifest.sizer`); training,
backtests and the service all call :func:`size_positions`, so the service needs no
per-model code.

>>> import numpy as np
>>> size_positions("sign", np.array([0.2, -0.01, 0.0, np.nan])).tolist()
[1.0, -1.0, 0.0, nan]
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SIZERS", "Sizer", "check_sizer", "size_positions", "sizer_for_loss"]

Sizer = Literal["identity", "sign"]
SIZERS: tuple[str, ...] = get_args(Sizer)

# the DMN paper's objectives (section III-B) and the sizer each implies
_SIZER_OF_LOSS: dict[str, Sizer] = {
    "sharpe": "identity",
    "returns": "identity",
    "mse": "sign",
    "binary": "sign",
}


def check_sizer(name: object) -> Sizer:
    """`name` if it is a known sizer, else a ValueError listing them."""
    if name not in SIZERS:
        raise ValueError(f"unknown sizer {name!r}; choose from {list(SIZERS)}")
    return name  # type: ignore[return-value]


def sizer_for_loss(loss: str) -> Sizer:
    """The sizer a model trained on `loss` needs: sgn() for ``mse`` and ``binary``."""
    try:
        return _SIZER_OF_LOSS[loss]
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}; choose from {sorted(_SIZER_OF_LOSS)}") from None


def size_positions(sizer: str, output: ArrayLike) -> NDArray[np.float64]:
    """Positions from model outputs under `sizer`; NaN (inactive) stays NaN.

    Parameters
    ----------
    sizer : {"identity", "sign"}
    output : array_like, any shape
        Model outputs.

    Returns
    -------
    ndarray, float64, same shape
    """
    kind = check_sizer(sizer)
    out = np.asarray(output, dtype=np.float64)
    if kind == "identity":
        return out.copy()
    # sgn(0) = 0: a forecast of exactly zero takes no position
    return np.sign(out)
