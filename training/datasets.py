"""Model inputs and training batches built from `momentum.features.Features`.

Rows are positions on the features' date axis. A *decision row* t has inputs
from rows <= t and the label ``target[t]`` (the vol-scaled return of t+1), so
time splits only ever need row ranges: `label_rows(start, stop)` gives the
decision rows whose labels stay inside ``[start, stop)``.

Every layout turns a batch into the model's arguments plus three canonical
``(batch, steps, assets)`` tensors: the label, a mask of the entries that
count, and the leverage ``sigma_tgt / s_t`` that turns a position into the
vol-scaled position of eq. (1). The losses and the one training loop only
see that canonical form:

* spatio-temporal (STMOM): a minibatch of B dates of all N assets is one
  pseudo-sequence ``(1, B, N)``; consecutive samples of the shuffled minibatch
  are neighbours, which is exactly the localized minibatch turnover (eq. 14).
* sequence (DMN, TFT): non-overlapping chunks of ``seq_len`` steps of one
  asset, padded and masked at the end of a run: ``(B, seq_len, 1)``.
* panel (QuantNet): chunks of ``seq_len`` steps of all assets: ``(B, seq_len, N)``.

Prediction (`Layout.predict`) gives every requested row a position from data
up to that row only: sequence and panel models run a sliding window ending at
the row and keep the last step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from momentum.contract import input_windows, model_values, tradable
from momentum.features import Features
from momentum.portfolio import VOL_TARGET, annualised_vol

__all__ = [
    "Batch",
    "Layout",
    "ModelData",
    "PanelLayout",
    "SequenceLayout",
    "SpatioTemporalLayout",
    "label_rows",
    "make_layout",
    "positions_of",
]


def label_rows(start: int, stop: int) -> np.ndarray:
    """Decision rows in ``[start, stop)`` whose label ``r_{t+1}`` is also before ``stop``."""
    if start < 0 or stop < start:
        raise ValueError(f"bad row range [{start}, {stop})")
    return np.arange(start, max(start, stop - 1))


def positions_of(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    """Positions from a model output (the TFT returns a NamedTuple, positions first)."""
    return output[0] if isinstance(output, tuple) else output


@dataclass(frozen=True)
class ModelData:
    """Float32 model arrays for every row of a `Features` object.

    Attributes
    ----------
    x : ndarray, shape (T, N, d), float32
        Features with NaN replaced by 0 (features enter unscaled, as in the papers).
    target, leverage : ndarray, shape (T, N), float32
        Label and ``sigma_tgt / s_t``; 0 where undefined.
    tradable : ndarray, shape (T, N), bool
        Every feature and the vol are finite: a position can be taken at t.
    labelled : ndarray, shape (T, N), bool
        Tradable and the label is finite: the entry counts in a loss.
    features : Features
        The source, for float64 evaluation.
    """

    x: np.ndarray
    target: np.ndarray
    leverage: np.ndarray
    tradable: np.ndarray
    labelled: np.ndarray
    features: Features

    @classmethod
    def from_features(cls, features: Features) -> ModelData:
        can_trade = tradable(features)
        labelled = can_trade & np.isfinite(features.target)
        with np.errstate(divide="ignore", invalid="ignore"):
            leverage = VOL_TARGET / annualised_vol(features.vol)
        return cls(
            x=model_values(features.values),  # the serving contract's values (momentum.contract)
            target=np.where(labelled, features.target, 0.0).astype(np.float32),
            leverage=np.where(can_trade, leverage, 0.0).astype(np.float32),
            tradable=can_trade,
            labelled=labelled,
            features=features,
        )

    @property
    def n_assets(self) -> int:
        return self.x.shape[1]


@dataclass
class Batch:
    """Model arguments plus canonical ``(batch, steps, assets)`` label, mask and leverage."""

    inputs: tuple[Tensor, ...]
    target: Tensor
    mask: Tensor
    leverage: Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(
            tuple(t.to(device) for t in self.inputs),
            self.target.to(device),
            self.mask.to(device),
            self.leverage.to(device),
        )


class Layout:
    """How one family of models is fed: training batches and row-wise prediction."""

    name: str
    steps: int  # lookback (spatio-temporal) or sequence length

    def batches(
        self, data: ModelData, rows: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> Iterator[Batch]:
        raise NotImplementedError

    def canonical(self, positions: Tensor, batch: Batch) -> Tensor:
        """Model positions reshaped like ``batch.target``."""
        raise NotImplementedError

    def _predict_rows(
        self, model: nn.Module, data: ModelData, rows: np.ndarray, device: torch.device
    ) -> Tensor:
        """(len(rows), n_assets) positions, each from data up to its row."""
        raise NotImplementedError

    def predict(
        self,
        model: nn.Module,
        data: ModelData,
        rows: np.ndarray,
        *,
        max_windows: int = 16384,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """Positions for each row, shape (len(rows), N), float64; NaN where not tradable.

        Rows are processed in chunks of at most ``max_windows`` (row, asset)
        windows, which bounds memory for wide universes.
        """
        rows = np.asarray(rows, dtype=np.int64)
        device = device or next(model.parameters()).device
        out = np.full((len(rows), data.n_assets), np.nan)
        chunk = max(1, max_windows // data.n_assets)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for lo in range(0, len(rows), chunk):
                    part = rows[lo : lo + chunk]
                    positions = self._predict_rows(model, data, part, device)
                    out[lo : lo + len(part)] = positions.double().cpu().numpy()
        finally:
            model.train(was_training)
        out[~data.tradable[rows]] = np.nan
        return out


def _windows(array: np.ndarray, rows: np.ndarray, length: int) -> np.ndarray:
    """``array[t - length + 1 : t + 1]`` for each t, stacked: (len(rows), length, ...).

    Rows too early for a full window take the first ``length`` rows instead;
    the models are causal, so the output at step t still sees only rows <= t
    (see `_window_offsets`).
    """
    starts = np.maximum(rows - length + 1, 0)
    index = starts[:, None] + np.arange(length)[None, :]
    return array[np.minimum(index, len(array) - 1)]


def _window_offsets(rows: np.ndarray, length: int) -> np.ndarray:
    """Step of each row inside its window (``length - 1`` unless the row is early)."""
    return np.minimum(rows, length - 1)


class SpatioTemporalLayout(Layout):
    """STMOM: one sample = one date, all assets, the last ``lookback`` days."""

    name = "spatiotemporal"

    def __init__(self, lookback: int) -> None:
        if lookback < 1:
            raise ValueError(f"`lookback` must be positive, got {lookback}")
        self.steps = lookback

    def _inputs(self, data: ModelData, rows: np.ndarray) -> np.ndarray:
        if (rows < self.steps - 1).any():
            raise ValueError(f"rows before {self.steps - 1} have no full lookback window")
        return input_windows(data.x, rows, self.steps)  # (rows, assets, lookback, features)

    def _predict_rows(
        self, model: nn.Module, data: ModelData, rows: np.ndarray, device: torch.device
    ) -> Tensor:
        return positions_of(model(torch.from_numpy(self._inputs(data, rows)).to(device)))

    def batches(
        self, data: ModelData, rows: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> Iterator[Batch]:
        rows = rows[(rows >= self.steps - 1) & data.labelled[rows].any(axis=1)]
        order = rng.permutation(rows)
        for lo in range(0, len(order), batch_size):
            part = order[lo : lo + batch_size]
            x = self._inputs(data, part)
            yield Batch(
                (torch.from_numpy(x),),
                torch.from_numpy(data.target[part])[None],  # (1, batch, assets)
                torch.from_numpy(data.labelled[part])[None],
                torch.from_numpy(data.leverage[part])[None],
            )

    def canonical(self, positions: Tensor, batch: Batch) -> Tensor:
        return positions[None]  # (1, batch, assets): samples in minibatch order


def _runs(rows: np.ndarray) -> list[np.ndarray]:
    """Split sorted rows into runs of consecutive rows."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.split(rows, breaks)


def _chunks(rows: np.ndarray, length: int) -> list[np.ndarray]:
    """Non-overlapping chunks of at most `length` consecutive rows."""
    out: list[np.ndarray] = []
    for run in _runs(np.sort(rows)):
        out.extend(run[i : i + length] for i in range(0, len(run), length))
    return out


def _padded(chunk: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk rows padded to `length` by repeating the last row, and the valid-step mask."""
    index = np.concatenate([chunk, np.full(length - len(chunk), chunk[-1])])
    return index, np.arange(length) < len(chunk)


class SequenceLayout(Layout):
    """DMN / TFT: one sample = one asset over ``seq_len`` consecutive days."""

    name = "sequence"

    def __init__(self, seq_len: int = 63, *, sequences_per_call: int = 2048) -> None:
        if seq_len < 1:
            raise ValueError(f"`seq_len` must be positive, got {seq_len}")
        if sequences_per_call < 1:
            raise ValueError(f"`sequences_per_call` must be positive, got {sequences_per_call}")
        self.steps = seq_len
        self.sequences_per_call = sequences_per_call

    def _predict_rows(
        self, model: nn.Module, data: ModelData, rows: np.ndarray, device: torch.device
    ) -> Tensor:
        windows = _windows(data.x, rows, self.steps)  # (rows, seq, assets, features)
        n_rows, _, n_assets, n_features = windows.shape
        # every asset's window becomes one sequence: (rows * assets, seq, features)
        x = windows.transpose(0, 2, 1, 3).reshape(n_rows * n_assets, self.steps, n_features)
        tickers = np.tile(np.arange(n_assets, dtype=np.int64), n_rows)
        offsets = _window_offsets(rows, self.steps)
        # windows that end at their row (all but the first rows of the data) need only the
        # last step: the models' serving path, which skips the other steps' heads
        last_only = bool((offsets == self.steps - 1).all())
        inputs = torch.from_numpy(np.ascontiguousarray(x))
        ids = torch.from_numpy(tickers)
        # the model's activations, not its input, set the memory: a TFT of hidden 80 holds
        # ~0.5 MB per 63-step sequence, so a call sees at most `sequences_per_call` of them
        parts = [
            positions_of(
                model(
                    inputs[lo : lo + self.sequences_per_call].to(device),
                    ids[lo : lo + self.sequences_per_call].to(device),
                    last_only=last_only,
                )
            )
            for lo in range(0, len(inputs), self.sequences_per_call)
        ]
        positions = torch.cat(parts)  # (rows * assets, seq), or (rows * assets, 1) with last_only
        step = torch.from_numpy(np.repeat(offsets - (self.steps - positions.shape[1]), n_assets))
        picked = positions[
            torch.arange(positions.shape[0], device=positions.device), step.to(positions.device)
        ]
        return picked.reshape(n_rows, n_assets)

    def batches(
        self, data: ModelData, rows: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> Iterator[Batch]:
        samples = []  # (asset, padded rows, valid steps)
        for asset in range(data.n_assets):
            for chunk in _chunks(rows[data.labelled[rows, asset]], self.steps):
                index, valid = _padded(chunk, self.steps)
                samples.append((asset, index, valid))
        order = rng.permutation(len(samples))
        for lo in range(0, len(order), batch_size):
            part = [samples[i] for i in order[lo : lo + batch_size]]
            assets = np.array([a for a, _, _ in part])
            index = np.stack([i for _, i, _ in part])  # (batch, seq)
            valid = np.stack([v for _, _, v in part])
            x = data.x[index, assets[:, None]]  # (batch, seq, features)
            yield Batch(
                (torch.from_numpy(x), torch.from_numpy(assets)),
                torch.from_numpy(data.target[index, assets[:, None]])[..., None],
                torch.from_numpy(valid)[..., None],
                torch.from_numpy(data.leverage[index, assets[:, None]])[..., None],
            )

    def canonical(self, positions: Tensor, batch: Batch) -> Tensor:
        return positions[..., None]  # (batch, seq, 1)


class PanelLayout(Layout):
    """One sample = all assets over ``seq_len`` consecutive days (truncated BPTT).

    By default an epoch cuts the rows into consecutive chunks at a random phase (the STMOM
    LSTM). With `markets` it samples as QuantNet's Algorithm 1: each window ends at a row
    drawn at random (line 3, with replacement) and keeps the assets of `market_batch`
    markets drawn at random (line 2; all markets when None), the others masked out of the
    loss; an epoch draws as many windows as the chunked epoch holds.
    """

    name = "panel"

    def __init__(
        self,
        seq_len: int = 63,
        *,
        markets: Sequence[Sequence[int]] | None = None,
        market_batch: int | None = None,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"`seq_len` must be positive, got {seq_len}")
        if market_batch is not None and (markets is None or market_batch < 1):
            raise ValueError(
                f"`market_batch` needs `markets` and must be at least 1, got {market_batch}"
            )
        self.steps = seq_len
        self.markets = None if markets is None else [np.asarray(m, np.int64) for m in markets]
        self.market_batch = market_batch

    def _predict_rows(
        self, model: nn.Module, data: ModelData, rows: np.ndarray, device: torch.device
    ) -> Tensor:
        x = np.ascontiguousarray(
            _windows(data.x, rows, self.steps)
        )  # (rows, seq, assets, features)
        positions = positions_of(model(torch.from_numpy(x).to(device)))  # (rows, seq, assets)
        step = torch.from_numpy(_window_offsets(rows, self.steps)).to(positions.device)
        return positions[torch.arange(positions.shape[0], device=positions.device), step]

    def batches(
        self, data: ModelData, rows: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> Iterator[Batch]:
        rows = rows[data.labelled[rows].any(axis=1)]
        # a random phase each epoch, so chunk boundaries move
        shift = int(rng.integers(self.steps)) if len(rows) > self.steps else 0
        chunks = _chunks(rows[shift:], self.steps) + _chunks(rows[:shift], self.steps)
        if self.markets is not None:  # QuantNet, Algorithm 1: random ends, with replacement
            ends = rng.choice(len(rows), size=len(chunks), replace=True)
            chunks = [_ending(rows, int(e), self.steps) for e in ends]
        order = rng.permutation(len(chunks))
        for lo in range(0, len(order), batch_size):
            padded = [_padded(chunks[i], self.steps) for i in order[lo : lo + batch_size]]
            index = np.stack([i for i, _ in padded])  # (batch, seq)
            valid = np.stack([v for _, v in padded])[..., None] & data.labelled[index]
            if self.markets is not None and self.market_batch is not None:
                valid = valid & self._market_mask(len(padded), data.n_assets, rng)[:, None, :]
            yield Batch(
                (torch.from_numpy(data.x[index]),),
                torch.from_numpy(data.target[index]),
                torch.from_numpy(valid),
                torch.from_numpy(data.leverage[index]),
            )

    def _market_mask(self, windows: int, n_assets: int, rng: np.random.Generator) -> np.ndarray:
        """(windows, assets): the assets of `market_batch` markets drawn for each window."""
        assert self.markets is not None and self.market_batch is not None
        keep = np.zeros((windows, n_assets), dtype=bool)
        m = min(self.market_batch, len(self.markets))
        for w in range(windows):
            for i in rng.choice(len(self.markets), size=m, replace=False):
                keep[w, self.markets[i]] = True
        return keep

    def canonical(self, positions: Tensor, batch: Batch) -> Tensor:
        return positions


def _ending(rows: np.ndarray, end: int, length: int) -> np.ndarray:
    """The run of consecutive rows of `rows` ending at ``rows[end]``, at most `length` long."""
    start = end
    while start > 0 and end - start + 1 < length and rows[start - 1] == rows[start] - 1:
        start -= 1
    return rows[start : end + 1]


def make_layout(
    layout: str,
    steps: int,
    *,
    markets: Sequence[Sequence[int]] | None = None,
    market_batch: int | None = None,
) -> Layout:
    """The layout object for a registry layout name and its lookback / sequence length;
    `markets` (and `market_batch`) make a panel layout sample as QuantNet's Algorithm 1."""
    if layout == "spatiotemporal":
        return SpatioTemporalLayout(steps)
    if layout == "sequence":
        return SequenceLayout(steps)
    if layout == "panel":
        return PanelLayout(steps, markets=markets, market_batch=market_batch)
    raise ValueError(f"unknown layout {layout!r}")
