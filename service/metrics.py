"""Prometheus metrics of the signal service, every one defined here and nowhere else.

`ServiceMetrics` never reads the store: its callers hand it figures (what they read comes
from :mod:`service.queries`). It owns its own `prometheus_client.CollectorRegistry` (never the process-wide
default), so several instances (tests, two services in one process) do not collide. The
service feeds it from the places where things happen:

* ``observe_cycle(result, context, model=...)`` after every cycle, whatever its outcome
  (the positions stream only sees successful ones), with what the store holds around it
  (:func:`service.queries.cycle_context`);
* ``observe_history(service_history(...))`` at start, and ``observe_insecure(flag)`` when
  the gRPC server is built;
* ``observe_model(model)`` and ``observe_refusal(refused, new=...)`` after each refresh of
  the model holder;
* ``observe_ledger(ledger_summary(...))`` after the paper ledger is updated;
* ``observe_ingest(rejected_rows)`` and ``observe_closes(universe, newest_date)`` after each
  ingest batch;
* ``observe_rpc(method, code, seconds)`` from the gRPC server's interceptor.

Conventions: names ``momentum_*`` with the base unit last
(``_seconds``, ``_ratio``, ``_timestamp_seconds``); latencies are histograms; a date is
exported as the Unix time of its midnight UTC; there are no per-ticker labels unless
``per_ticker=True`` (20 tickers are fine, 2,000 are a cardinality problem). Gauges that no
observation has set yet read NaN where 0 would be a claim (drift, Sharpe, drawdown).

The portfolio figures use the target weights ``w`` of eq. (1) (already including the 1/N_t):

* turnover ``sum_i |w_{i,t} - w_{i,t-1}|`` against the model's previous stored positions set
  (any version, the newest dated before ``t``), via :func:`momentum.portfolio.turnover` on
  the two-row weight panel; a NaN weight (not tradable) and an absent set count as 0, as in
  the paper ledger (`service.paper`), so the first set trades in from zero;
* gross exposure ``sum_i |w_i|``, net exposure ``sum_i w_i``, and the count of long
  (``w > 0``) and short (``w < 0``) positions.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

from momentum.drift import DRIFT_WINDOW, feature_psi, signal_psi
from momentum.manifest import Manifest
from momentum.portfolio import turnover
from service.calendar import as_date
from service.cycle import CycleResult
from service.model import LoadedModel
from service.paper import LedgerSummary
from service.queries import CycleContext, ServiceHistory

__all__ = [
    "CYCLE_BUCKETS",
    "DRIFT_WINDOW",
    "INFERENCE_BUCKETS",
    "RPC_BUCKETS",
    "PortfolioFigures",
    "ServiceMetrics",
    "portfolio_figures",
]


# A cycle reads the stored history, computes features and writes one transaction: tenths of
# a second for 20 assets, minutes for thousands on a slow database.
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# One onnxruntime call for one date: sub-millisecond for the SLP, tens of ms for the TFT.
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# A unary RPC on loopback: the load goal is a p99 under 10 ms.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)

_STATUSES = ("succeeded", "failed", "skipped")


def _date_seconds(day: Any) -> float:
    """Unix time of a date's midnight UTC."""
    return float(pd.Timestamp(day).tz_localize("UTC").timestamp())


@dataclass(frozen=True)
class PortfolioFigures:
    """Portfolio-level figures of one positions set (see the module notes for the formulas)."""

    turnover: float
    gross_exposure: float
    net_exposure: float
    n_long: int
    n_short: int


def portfolio_figures(weights: pd.Series, previous: pd.Series | None) -> PortfolioFigures:
    """Turnover against `previous`, exposures and position counts of a set of weights.

    Parameters
    ----------
    weights : pandas.Series
        Target weights indexed by ticker, shape ``(n_assets,)``; NaN where not tradable.
    previous : pandas.Series or None
        The previous set's weights indexed by ticker (other tickers allowed); None when there
        is no previous set.

    Returns
    -------
    PortfolioFigures

    Examples
    --------
    >>> now = pd.Series({"A": 0.1, "B": -0.05})
    >>> f = portfolio_figures(now, pd.Series({"A": 0.04, "C": 0.02}))
    >>> round(f.turnover, 12), round(f.gross_exposure, 12), round(f.net_exposure, 12)
    (0.13, 0.15, 0.05)
    """
    before = pd.Series(dtype=np.float64) if previous is None else previous
    tickers = sorted(set(weights.index) | set(before.index))
    # NaN -> 0: a non-tradable asset holds nothing, so leaving it is a sale (paper ledger)
    panel = np.vstack(
        [
            before.reindex(tickers).to_numpy(dtype=np.float64),
            weights.reindex(tickers).to_numpy(dtype=np.float64),
        ]
    )  # (2, n_tickers): previous set, this set
    panel = np.where(np.isfinite(panel), panel, 0.0)
    current = panel[1]
    return PortfolioFigures(
        turnover=float(turnover(panel)[1].sum()),
        gross_exposure=float(np.abs(current).sum()),
        net_exposure=float(current.sum()),
        n_long=int((current > 0).sum()),
        n_short=int((current < 0).sum()),
    )


def _feature_series(gauge: Gauge, values: Mapping[str, float | None], shown: set[str]) -> set[str]:
    """One series of `gauge` per feature of `values` (None: NaN); the series of `shown` that
    `values` lacks (a new model without that feature) are removed. Returns the features shown.
    """
    for feature, value in values.items():
        gauge.labels(feature=feature).set(math.nan if value is None else value)
    for feature in shown - set(values):
        gauge.remove(feature)
    return set(values)


class ServiceMetrics:
    """Every Prometheus metric of the service, in a registry of its own.

    Parameters
    ----------
    per_ticker : bool, default False
        Also export ``momentum_ticker_weight_ratio{ticker}`` and
        ``momentum_ticker_signal_ratio{ticker}`` (one series per asset).
    drift_window : int, default 63
        Sessions in the trailing window of the feature and signal PSI.

    Attributes
    ----------
    registry : prometheus_client.CollectorRegistry
        What `render` and `start_http_server` expose.
    """

    def __init__(self, *, per_ticker: bool = False, drift_window: int = DRIFT_WINDOW) -> None:
        if isinstance(drift_window, bool) or not isinstance(drift_window, int) or drift_window < 1:
            raise ValueError(f"`drift_window` must be a positive int, got {drift_window!r}")
        self.per_ticker = bool(per_ticker)
        self.drift_window = drift_window
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._model_labels: tuple[str, str, str, str] | None = None
        self._features: set[str] = set()  # labels of momentum_feature_psi in use
        r = self.registry

        # cycles
        self.cycle_duration = Histogram(
            "momentum_cycle_duration_seconds",
            "Wall time of a cycle, from reading closes to the committed positions (any outcome).",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.cycles = Counter(
            "momentum_cycles",
            "Cycles run, by outcome (succeeded, failed, skipped).",
            ["status"],
            registry=r,
        )
        for status in _STATUSES:
            self.cycles.labels(status=status)  # every outcome exported from the start, at 0
        self.inference_duration = Histogram(
            "momentum_inference_duration_seconds",
            "onnxruntime time of one cycle's positions (one date, every asset).",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.feature_parity = Gauge(
            "momentum_feature_parity_max_abs",
            "Largest |incremental - full-history| difference of the served features and vol at "
            "the last parity check (MOMENTUM_PARITY_EVERY); +Inf when a value is missing on one "
            "side only. Training/serving skew: should be 0.",
            registry=r,
        )
        self.feature_state_rebuilds = Counter(
            "momentum_feature_state_rebuilds_total",
            "Cycles that rebuilt the feature state from the whole stored history (no usable "
            "stored state: first cycle, a correction older than the kept states, a new model).",
            registry=r,
        )
        self.last_success = Gauge(
            "momentum_last_successful_cycle_timestamp_seconds",
            "Unix time at which the last successful cycle was observed (0: none yet).",
            registry=r,
        )
        self.last_as_of = Gauge(
            "momentum_last_cycle_as_of_timestamp_seconds",
            "As-of date (midnight UTC) of the last successful cycle's positions (0: none yet).",
            registry=r,
        )

        # data
        self.newest_close = Gauge(
            "momentum_newest_close_timestamp_seconds",
            "Newest stored close date (midnight UTC) of a universe.",
            ["universe"],
            registry=r,
        )
        self.ingest_batches = Counter(
            "momentum_ingest_batches_total",
            "Ingest batches (gRPC IngestCloses, files) by outcome: stored, or rejected whole "
            "(the RPC still answers OK, with the rejections in its reply).",
            ["outcome"],
            registry=r,
        )
        self.ingest_rejected_rows = Counter(
            "momentum_ingest_rejected_rows_total",
            "Rows of rejected ingest batches that had a problem of their own.",
            registry=r,
        )
        self.assets_stale = Gauge(
            "momentum_assets_stale",
            "Assets of the served positions flagged stale (carried close, or a failed cycle).",
            registry=r,
        )

        # portfolio
        self.turnover = Gauge(
            "momentum_portfolio_turnover_ratio",
            "sum |w_t - w_{t-1}| of the last cycle's target weights against the previous set.",
            registry=r,
        )
        self.gross_exposure = Gauge(
            "momentum_gross_exposure_ratio",
            "sum |w| of the last successful cycle's target weights.",
            registry=r,
        )
        self.net_exposure = Gauge(
            "momentum_net_exposure_ratio",
            "sum w of the last successful cycle's target weights.",
            registry=r,
        )
        self.positions = Gauge(
            "momentum_positions",
            "Assets with a long (w > 0) or short (w < 0) target weight.",
            ["side"],
            registry=r,
        )
        for side in ("long", "short"):
            self.positions.labels(side=side)

        # drift
        self.feature_psi = Gauge(
            "momentum_feature_psi",
            "Population stability index of a feature over the trailing window against the "
            "manifest's reference deciles (warn 0.1, alert 0.2).",
            ["feature"],
            registry=r,
        )
        self.signal_psi = Gauge(
            "momentum_signal_psi",
            "Population stability index of the served signals over the trailing window against "
            "the manifest's validation deciles (warn 0.1, alert 0.2).",
            registry=r,
        )
        self.signal_psi.set(math.nan)
        self.feature_psi_baseline = Gauge(
            "momentum_feature_psi_baseline",
            "The served model's drift baseline of a feature: the 95th percentile of the PSI of "
            "trailing windows of its own reference rows (NaN: none in the manifest, or a "
            "window other than this service's). The drift alert needs PSI above it too.",
            ["feature"],
            registry=r,
        )
        self.signal_psi_baseline = Gauge(
            "momentum_signal_psi_baseline",
            "The served model's drift baseline of the signal: the 95th percentile of the PSI "
            "of trailing windows of its validation positions (NaN: none).",
            registry=r,
        )
        self.signal_psi_baseline.set(math.nan)
        self._baseline_features: set[str] = set()

        # paper trading
        self.paper_pnl = Gauge(
            "momentum_paper_pnl_ratio",
            "Total return of the paper ledger (equity - 1).",
            registry=r,
        )
        self.paper_equity = Gauge(
            "momentum_paper_equity_ratio",
            "Paper ledger equity, starting at 1.",
            registry=r,
        )
        self.paper_equity.set(1.0)
        self.paper_drawdown = Gauge(
            "momentum_paper_drawdown_ratio",
            "Current drawdown of the paper ledger, 1 - equity / peak.",
            registry=r,
        )
        self.paper_max_drawdown = Gauge(
            "momentum_paper_max_drawdown_ratio",
            "Maximum drawdown of the paper ledger (NaN while empty).",
            registry=r,
        )
        self.paper_max_drawdown.set(math.nan)
        self.paper_rolling_sharpe = Gauge(
            "momentum_paper_rolling_sharpe",
            "Annualised Sharpe ratio of the last 63 paper-ledger days (NaN until 63 days).",
            registry=r,
        )
        self.paper_rolling_sharpe.set(math.nan)

        # model
        self.model_info = Gauge(
            "momentum_model_info",
            "The model being served (value 1; one series at a time).",
            ["name", "version", "sha256", "execution_provider"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "momentum_model_loaded",
            "1 when a model is loaded and serving, else 0.",
            registry=r,
        )
        self.model_refusals = Counter(
            "momentum_model_refusals_total",
            "Model versions the service refused to load (manifest, hash, graph, universe).",
            registry=r,
        )
        self.production_refused = Gauge(
            "momentum_model_production_refused",
            "1 while the production version is refused (the service serves an older version "
            "or nothing), else 0.",
            registry=r,
        )
        self.insecure_serving = Gauge(
            "momentum_insecure_serving",
            "1 when gRPC answers unauthenticated calls on a non-loopback address "
            "(MOMENTUM_ALLOW_INSECURE=true), else 0.",
            registry=r,
        )
        # the served model's own backtest, for the alerts (manifest metrics; NaN if unknown)
        self.backtest_turnover = Gauge(
            "momentum_backtest_turnover_ratio",
            "Average daily turnover sum |w_t - w_{t-1}| of the served model on its test window.",
            registry=r,
        )
        self.backtest_max_drawdown = Gauge(
            "momentum_backtest_max_drawdown_ratio",
            "Worst drawdown of the served model's portfolio on its test window.",
            registry=r,
        )
        self.backtest_sharpe = Gauge(
            "momentum_backtest_sharpe",
            "Annualised Sharpe ratio of the served model's portfolio on its test window.",
            registry=r,
        )
        self.backtest_turnover.set(math.nan)
        self.backtest_max_drawdown.set(math.nan)
        self.backtest_sharpe.set(math.nan)

        # gRPC
        self.grpc_requests = Counter(
            "momentum_grpc_requests",
            "gRPC requests handled, by full method name and status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            "momentum_grpc_request_duration_seconds",
            "gRPC request handling time, by full method name.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.grpc_streams = Gauge(
            "momentum_grpc_streams",
            "StreamPositions calls open now.",
            registry=r,
        )
        self.grpc_streams_dropped = Counter(
            "momentum_grpc_streams_dropped",
            "StreamPositions calls ended or refused by the server: `backlog` (a slow consumer "
            "fell MOMENTUM_GRPC_STREAM_BACKLOG sets behind), `server_limit` and `client_limit` "
            "(refused at open).",
            ["reason"],
            registry=r,
        )
        for reason in ("backlog", "server_limit", "client_limit"):
            self.grpc_streams_dropped.labels(reason=reason)

        # per asset, only on request
        self.ticker_weight: Gauge | None = None
        self.ticker_signal: Gauge | None = None
        if self.per_ticker:
            self.ticker_weight = Gauge(
                "momentum_ticker_weight_ratio",
                "Target weight of an asset in the last successful cycle (NaN: not tradable).",
                ["ticker"],
                registry=r,
            )
            self.ticker_signal = Gauge(
                "momentum_ticker_signal_ratio",
                "Signal X in [-1, 1] of an asset in the last successful cycle.",
                ["ticker"],
                registry=r,
            )

    # -- observations -----------------------------------------------------------------------

    def observe_parity(self, result: CycleResult) -> None:
        """``momentum_feature_parity_max_abs`` from a cycle that checked it (else unchanged)."""
        if result.parity_max_abs is not None:
            self.feature_parity.set(result.parity_max_abs)

    def observe_cycle(
        self, result: CycleResult, context: CycleContext, *, model: LoadedModel
    ) -> None:
        """Record one cycle, whatever its outcome.

        Every cycle: ``momentum_cycle_duration_seconds`` and ``momentum_cycles_total{status}``.
        A failed or skipped cycle also sets ``momentum_assets_stale`` to the stale assets of
        the positions set now served (the store flagged the last good set stale) and leaves
        every other gauge as it was. A successful one sets the inference latency, the last
        cycle times, the stale count, the portfolio figures (turnover against the previous
        stored set), the feature parity when the cycle checked it, the feature-state
        rebuild count, the per-feature PSI of the last ``drift_window`` rows of
        ``result.features`` and the signal PSI of the stored signals of this model version on
        its last ``drift_window`` as-of dates up to ``result.as_of``.

        Parameters
        ----------
        result : service.cycle.CycleResult
            What `run_cycle` returned.
        context : service.queries.CycleContext
            What the store holds around the cycle
            (``service.queries.cycle_context(engine, result, metrics.drift_window)``).
        model : service.model.LoadedModel
            The model that ran the cycle; its manifest holds the drift reference.

        Raises
        ------
        ValueError
            `model` is not the model named in `result`.
        """
        if result.model_name != model.name or (
            result.model_version is not None and result.model_version != model.version
        ):
            raise ValueError(
                f"`model` is {model.name} {model.version} but the cycle ran "
                f"{result.model_name} {result.model_version}"
            )
        self.cycle_duration.observe(result.seconds)
        self.cycles.labels(status=result.status).inc()
        if result.status != "succeeded":
            # record_failed_cycle flagged the newest set up to this date stale: count it
            if context.served_stale is not None:
                self.assets_stale.set(context.served_stale)
            return
        self.inference_duration.observe(result.inference_seconds)
        self.observe_parity(result)
        if result.cold_start:
            self.feature_state_rebuilds.inc()
        positions = result.positions
        figures = portfolio_figures(positions["weight"], context.previous_weights)
        self.observe_drift(
            model.manifest,
            None if result.features is None else result.features.values,
            context.recent_signals,
        )
        self.assets_stale.set(result.n_stale)
        self.turnover.set(figures.turnover)
        self.gross_exposure.set(figures.gross_exposure)
        self.net_exposure.set(figures.net_exposure)
        self.positions.labels(side="long").set(figures.n_long)
        self.positions.labels(side="short").set(figures.n_short)
        if self.ticker_weight is not None and self.ticker_signal is not None:
            for ticker, row in positions.iterrows():
                self.ticker_weight.labels(ticker=str(ticker)).set(float(row["weight"]))
                self.ticker_signal.labels(ticker=str(ticker)).set(float(row["signal"]))
        self.last_as_of.set(_date_seconds(result.as_of))
        self.last_success.set(time.time())

    def observe_drift(self, manifest: Manifest, features: Any | None, signals: np.ndarray) -> None:
        """The feature PSI of the last ``drift_window`` rows of `features` (``(rows, N, d)``;
        None leaves them) and the signal PSI of `signals` (this version's stored signals on
        its last ``drift_window`` dates; empty: NaN), against `manifest`'s reference.

        A cycle calls it, and so does a starting service with the newest stored session, so
        a restart does not blank the drift gauges until the next cycle.
        """
        feature_drift = (
            None if features is None else feature_psi(manifest, features[-self.drift_window :])
        )
        signal_drift = signal_psi(manifest, signals) if len(signals) else math.nan
        with self._lock:
            if feature_drift is not None:
                self._features = _feature_series(self.feature_psi, feature_drift, self._features)
            self.signal_psi.set(signal_drift)

    def observe_model(self, model: LoadedModel | None) -> None:
        """Export the model being served (``None``: no model loaded).

        ``momentum_model_info`` keeps exactly one series, labelled with the model's name,
        version, ONNX sha256 and the execution provider onnxruntime actually uses; the old
        series is removed when the model changes (after the new one is set, so a scrape never
        sees none while a model is loaded).
        """
        with self._lock:
            old = self._model_labels
            if model is None:
                new = None
            else:
                new = (model.name, model.version, model.manifest.onnx.sha256, model.provider)
                self.model_info.labels(*new).set(1)
            if old is not None and old != new:
                self.model_info.remove(*old)
            self._model_labels = new
            self.model_loaded.set(0 if model is None else 1)
            metrics = {} if model is None else model.manifest.metrics
            for gauge, key in (
                (self.backtest_turnover, "test_weight_turnover"),
                (self.backtest_max_drawdown, "test_max_drawdown"),
                (self.backtest_sharpe, "test_sharpe"),
            ):
                value = metrics.get(key)
                gauge.set(math.nan if value is None else value)
            self._observe_baseline(None if model is None else model.manifest)

    def _observe_baseline(self, manifest: Manifest | None) -> None:
        """The drift baselines of the served manifest, if taken over this service's window."""
        baseline = None if manifest is None else manifest.drift_baseline
        if baseline is not None and baseline.window != self.drift_window:
            baseline = None  # another window's baseline says nothing about this one
        self._baseline_features = _feature_series(
            self.feature_psi_baseline,
            {} if baseline is None else baseline.features,
            self._baseline_features,
        )
        signal = None if baseline is None else baseline.signal
        self.signal_psi_baseline.set(math.nan if signal is None else signal)

    def observe_history(self, history: ServiceHistory) -> None:
        """At start: the last successful cycle and the stale count the store holds
        (``service.queries.service_history``), so a restart does not look like a service that
        never ran (and trip the alerts)."""
        if history.last_success is not None:
            self.last_success.set(history.last_success.timestamp())
        if history.last_as_of is not None:
            self.last_as_of.set(_date_seconds(history.last_as_of))
        if history.served_stale is not None:
            self.assets_stale.set(history.served_stale)

    def observe_refusal(self, refused: bool, *, new: bool) -> None:
        """The wanted version is refused (`refused`); `new`: this load attempt refused it."""
        if new:
            self.model_refusals.inc()
        self.production_refused.set(1 if refused else 0)

    def observe_insecure(self, insecure: bool) -> None:
        """Whether gRPC serves the network without a bearer token (allowed on purpose)."""
        self.insecure_serving.set(1 if insecure else 0)

    def observe_ledger(self, summary: LedgerSummary) -> None:
        """Export the paper ledger's track record (`service.paper.ledger_summary`)."""
        self.paper_pnl.set(summary.total_return)
        self.paper_equity.set(summary.equity)
        self.paper_drawdown.set(summary.drawdown)
        self.paper_max_drawdown.set(summary.max_drawdown)
        self.paper_rolling_sharpe.set(summary.rolling_sharpe)

    def observe_ingest(self, rejected_rows: int) -> None:
        """Count one ingest batch: stored (`rejected_rows` 0) or rejected whole."""
        if rejected_rows < 0:
            raise ValueError(f"`rejected_rows` must be >= 0, got {rejected_rows}")
        self.ingest_batches.labels(outcome="rejected" if rejected_rows else "stored").inc()
        self.ingest_rejected_rows.inc(rejected_rows)

    def observe_closes(self, universe: str, newest_date: Any) -> None:
        """Export the newest stored close date of `universe` (None: nothing stored, NaN).

        Parameters
        ----------
        universe : str
            Label value, e.g. ``Settings.universe`` (``"sp500"`` or a price file).
        newest_date : date-like or None
            E.g. ``service.store.newest_close_date(engine)``.
        """
        if not isinstance(universe, str) or not universe:
            raise ValueError(f"`universe` must be a non-empty string, got {universe!r}")
        value = (
            math.nan if newest_date is None else _date_seconds(as_date(newest_date, "newest_date"))
        )
        self.newest_close.labels(universe=universe).set(value)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one gRPC request and its handling time.

        Parameters
        ----------
        method : str
            Full method name, e.g. ``"/momentum.v1.SignalService/GetPositions"``.
        code : str
            ``grpc.StatusCode`` name, e.g. ``"OK"``, ``"NOT_FOUND"``.
        seconds : float
            Handling time.
        """
        self.grpc_requests.labels(method=method, code=code).inc()
        self.grpc_duration.labels(method=method).observe(seconds)

    def observe_streams(self, open_streams: int) -> None:
        """``momentum_grpc_streams``: the StreamPositions calls open now."""
        self.grpc_streams.set(open_streams)

    def observe_stream_dropped(self, reason: str) -> None:
        """Count a stream dropped (``"backlog"``) or refused at a limit."""
        self.grpc_streams_dropped.labels(reason=reason).inc()

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def start_http_server(self, port: int, host: str = "127.0.0.1") -> tuple[Any, Any]:
        """Serve ``/metrics`` (any path, in fact) on `host`:`port` from a daemon thread.

        Parameters
        ----------
        port : int
            0 lets the system pick a free port (read it back from ``server.server_port``).
        host : str, default "127.0.0.1"
            Use ``"0.0.0.0"`` to be scraped from other hosts (containers).

        Returns
        -------
        (wsgiref.simple_server.WSGIServer, threading.Thread)
            Stop with ``server.shutdown(); server.server_close(); thread.join()``.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"`port` must be an int in 0..65535, got {port!r}")
        return _start_http_server(port, addr=host, registry=self.registry)
