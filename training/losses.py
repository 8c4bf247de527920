"""Training objectives on canonical ``(batch, steps, assets)`` tensors.

Every objective works on the positions a model emits, the label
``target = r_{t+1} * sigma_tgt / s_t`` and the leverage ``sigma_tgt / s_t``
of `training.datasets.Batch`, with a mask of the entries that count.

* captured return (eq. 1): ``X * target``;
* turnover (eq. 12): ``|X_s L_s - X_{s-1} L_{s-1}|`` between consecutive
  steps, i.e. consecutive days of a sequence, or, for spatio-temporal
  minibatches laid out as one pseudo-sequence, consecutive samples of the
  shuffled minibatch (localized minibatch turnover, STMOM eq. 14);
* net return (eq. 13): ``captured - c * turnover``.

The Sharpe ratio here is `momentum.metrics.sharpe_ratio` in torch: the same
``mean / std(ddof=1) * sqrt(TRADING_DAYS)``, with the constant imported from
there; a test pins the two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from momentum.metrics import TRADING_DAYS

Reduction = Literal["portfolio", "pooled", "per_asset"]
LossName = Literal["sharpe", "returns", "mse", "binary"]

__all__ = [
    "LossName",
    "Reduction",
    "l1_penalty",
    "masked_sharpe",
    "net_returns",
    "objective",
    "portfolio_mean",
    "quantnet_sharpe",
    "turnover",
]

_BPS = 1e-4


def masked_sharpe(returns: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Annualised Sharpe ``mean / std(ddof=1) * sqrt(252)`` over the masked entries.

    Over every entry when ``dim`` is None (a scalar), else along ``dim``.
    Needs two entries; a zero std gives 0 rather than inf (a constant series
    has no risk-adjusted return to maximise).
    """
    m = mask.to(returns.dtype)
    count = m.sum() if dim is None else m.sum(dim)
    total = (returns * m).sum() if dim is None else (returns * m).sum(dim)
    mean = total / count.clamp_min(1.0)
    centred = (returns - (mean if dim is None else mean.unsqueeze(dim))) * m
    squares = (centred**2).sum() if dim is None else (centred**2).sum(dim)
    variance = squares / (count - 1.0).clamp_min(1.0)
    # clamp before the sqrt: its gradient at 0 is infinite and would turn the
    # whole update into NaN even where the result is masked out below
    std = torch.sqrt(variance.clamp_min(1e-20))
    return torch.where(variance > 0, mean / std, torch.zeros_like(mean)) * (TRADING_DAYS**0.5)


def turnover(positions: Tensor, leverage: Tensor, mask: Tensor) -> Tensor:
    """Eq. (12) between consecutive steps (dim 1); 0 on a step without a valid predecessor."""
    scaled = positions * leverage
    out = torch.zeros_like(scaled)
    both = mask[:, 1:] & mask[:, :-1]
    out[:, 1:] = torch.where(both, (scaled[:, 1:] - scaled[:, :-1]).abs(), 0.0)
    return out


def net_returns(
    positions: Tensor, target: Tensor, leverage: Tensor, mask: Tensor, cost_bps: float = 0.0
) -> Tensor:
    """Captured return (eq. 1) net of ``cost_bps`` per unit of turnover (eq. 13)."""
    captured = positions * target
    if cost_bps:
        captured = captured - cost_bps * _BPS * turnover(positions, leverage, mask)
    return captured


def portfolio_mean(returns: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Equal-weight mean over active assets (last dim): (returns, any-active mask)."""
    m = mask.to(returns.dtype)
    count = m.sum(-1)
    return (returns * m).sum(-1) / count.clamp_min(1.0), count > 0


def quantnet_sharpe(returns: Tensor, mask: Tensor, markets: Sequence[Sequence[int]]) -> Tensor:
    """QuantNet's objective: mean over markets of the mean over assets of per-asset Sharpe.

    Per-asset Sharpe is taken over the steps of each window (dim 1) and
    averaged over the windows of the batch; assets with fewer than two valid
    steps in a window are left out of that window's average.
    """
    per_asset = masked_sharpe(returns, mask, dim=1)  # (batch, assets)
    usable = (mask.sum(1) >= 2).to(returns.dtype)
    market_means, present = [], []
    for assets in markets:
        idx = torch.as_tensor(list(assets), device=returns.device)
        weight = usable.index_select(1, idx)
        mean = (per_asset.index_select(1, idx) * weight).sum() / weight.sum().clamp_min(1.0)
        market_means.append(mean)
        present.append(weight.sum() > 0)
    # eq. 8 averages over the markets of the minibatch (Algorithm 1): a market with no
    # usable asset in this batch (not drawn, or not trading yet) is not one of them
    means, here = torch.stack(market_means), torch.stack(present).to(returns.dtype)
    return (means * here).sum() / here.sum().clamp_min(1.0)


def objective(
    positions: Tensor,
    target: Tensor,
    leverage: Tensor,
    mask: Tensor,
    *,
    reduction: Reduction,
    loss: LossName = "sharpe",
    cost_bps: float = 0.0,
    markets: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """The scalar to minimise for one canonical batch.

    ``loss="sharpe"`` (default) is minus the Sharpe ratio of net returns:
    of the cross-asset portfolio return per step (``reduction="portfolio"``,
    STMOM), of all asset-steps pooled (``"pooled"``, the DMN reference), or
    QuantNet's market-averaged per-asset Sharpe (``"per_asset"``). The DMN
    paper's alternatives: ``"returns"`` (minus the annualised mean net return),
    ``"mse"`` (positions regressed on the label) and ``"binary"``
    (cross-entropy of ``(X + 1) / 2`` against the label's sign).
    """
    if loss == "mse":
        m = mask.to(positions.dtype)
        return ((positions - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)
    if loss == "binary":
        m = mask.to(positions.dtype)
        p = ((positions + 1.0) / 2.0).clamp(1e-6, 1 - 1e-6)
        up = (target > 0).to(positions.dtype)
        bce = -(up * torch.log(p) + (1 - up) * torch.log(1 - p))
        return (bce * m).sum() / m.sum().clamp_min(1.0)
    net = net_returns(positions, target, leverage, mask, cost_bps)
    if loss == "returns":
        m = mask.to(net.dtype)
        return -(net * m).sum() / m.sum().clamp_min(1.0) * TRADING_DAYS
    if loss != "sharpe":
        raise ValueError(f"unknown loss {loss!r}; choose sharpe, returns, mse or binary")
    if reduction == "portfolio":
        portfolio, active = portfolio_mean(net, mask)
        return -masked_sharpe(portfolio, active)
    if reduction == "pooled":
        return -masked_sharpe(net, mask)
    if reduction == "per_asset":
        if markets is None:
            raise ValueError("`markets` is required for the per_asset reduction")
        return -quantnet_sharpe(net, mask, markets)
    raise ValueError(f"unknown reduction {reduction!r}")


def l1_penalty(weight: Tensor) -> Tensor:
    """Lasso term ``sum |W|`` (STMOM's lambda_1 multiplies it)."""
    return weight.abs().sum()
