"""Prometheus metrics: scraped over HTTP after real cycles, parsed with prometheus_client's parser."""

from __future__ import annotations

import dataclasses
import math
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from momentum.data import load_prices
from momentum.drift import PSI_ALERT, PSI_WARN
from momentum.manifest import DriftBaseline, reference_quantiles
from momentum.portfolio import turnover
from service import store
from service.app import SignalService
from service.config import load_settings
from service.cycle import CycleResult, run_cycle
from service.ingest import ingest_closes, panel_rows
from service.metrics import ServiceMetrics, portfolio_figures
from service.model import load_model
from service.paper import LedgerSummary, ledger_summary, update_ledger
from service.queries import cycle_context, service_history

PRICES = load_prices("sp500")
TICKERS = list(PRICES.columns)
D1, D2, D3 = "2021-03-29", "2021-03-30", "2021-03-31"

# every metric of the service, as its samples are named in the exposition
METRICS = [
    "momentum_cycle_duration_seconds_count",
    "momentum_cycles_total",
    "momentum_inference_duration_seconds_count",
    "momentum_last_successful_cycle_timestamp_seconds",
    "momentum_last_cycle_as_of_timestamp_seconds",
    "momentum_newest_close_timestamp_seconds",
    "momentum_assets_stale",
    "momentum_portfolio_turnover_ratio",
    "momentum_gross_exposure_ratio",
    "momentum_net_exposure_ratio",
    "momentum_positions",
    "momentum_feature_psi",
    "momentum_signal_psi",
    "momentum_paper_pnl_ratio",
    "momentum_paper_equity_ratio",
    "momentum_paper_drawdown_ratio",
    "momentum_paper_max_drawdown_ratio",
    "momentum_paper_rolling_sharpe",
    "momentum_model_info",
    "momentum_model_loaded",
    "momentum_grpc_requests_total",
    "momentum_grpc_request_duration_seconds_count",
]


def _samples(text: str) -> dict[str, dict[frozenset, float]]:
    """Sample name -> {label set: value}."""
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def _value(samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def _rendered(metrics: ServiceMetrics):
    return _samples(metrics.render().decode())


def _observe(metrics: ServiceMetrics, result: CycleResult, engine, model) -> None:
    """Feed a cycle as the service does: what the store holds around it, then the figures."""
    metrics.observe_cycle(result, cycle_context(engine, result, metrics.drift_window), model=model)


def _date_seconds(day: str) -> float:
    return pd.Timestamp(day, tz="UTC").timestamp()


@pytest.fixture
def model(served_run):
    return load_model(served_run["registry"], served_run["name"], tickers=TICKERS, device="cpu")


@pytest.fixture
def history(sqlite_engine):
    """Closes from mid-2019 (feature warm-up) to D3, as in test_cycle."""
    rows = panel_rows(PRICES.loc["2019-06-03":D3])
    result = ingest_closes(sqlite_engine, rows, universe=TICKERS, calendar="XNYS", source="test")
    assert result.ok, result.rejections[:3]
    return sqlite_engine


# --------------------------------------------------------------------------------------------
# the scrape
# --------------------------------------------------------------------------------------------


def test_scraped_metrics_after_cycles(history, model):
    engine = history
    metrics = ServiceMetrics()
    server, thread = metrics.start_http_server(0)
    try:
        metrics.observe_model(model)
        first = run_cycle(engine, model, D2)
        _observe(metrics, first, engine, model)
        # the first set ever trades in from zero: turnover = gross exposure
        early = _rendered(metrics)
        assert _value(early, "momentum_portfolio_turnover_ratio") == pytest.approx(
            _value(early, "momentum_gross_exposure_ratio"), rel=1e-12
        )
        before = time.time()
        second = run_cycle(engine, model, D3)
        _observe(metrics, second, engine, model)
        after = time.time()
        assert first.status == second.status == "succeeded"
        update_ledger(engine, model.name, cost_bps=5.0, calendar="XNYS")
        summary = ledger_summary(engine, model.name)
        metrics.observe_ledger(summary)
        metrics.observe_closes("sp500", store.closes_dates(engine)[-1])
        method = "/momentum.v1.SignalService/GetPositions"
        metrics.observe_rpc(method, "OK", 0.002)
        metrics.observe_rpc(method, "OK", 0.004)
        metrics.observe_rpc(method, "NOT_FOUND", 0.001)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            samples = _samples(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    missing = [name for name in METRICS if name not in samples]
    assert not missing, missing
    assert not any("ticker" in dict(labels) for s in samples.values() for labels in s)

    # cycles
    assert _value(samples, "momentum_cycles_total", status="succeeded") == 2
    assert _value(samples, "momentum_cycles_total", status="failed") == 0
    assert _value(samples, "momentum_cycle_duration_seconds_count") == 2
    assert _value(samples, "momentum_cycle_duration_seconds_sum") == pytest.approx(
        first.seconds + second.seconds
    )
    assert _value(samples, "momentum_inference_duration_seconds_count") == 2
    assert 0 < _value(samples, "momentum_inference_duration_seconds_sum") < 60
    assert before <= _value(samples, "momentum_last_successful_cycle_timestamp_seconds") <= after
    assert _value(samples, "momentum_last_cycle_as_of_timestamp_seconds") == _date_seconds(D3)
    assert _value(samples, "momentum_assets_stale") == 0

    # portfolio: against the two stored sets
    w0 = store.latest_positions(engine, model.name, as_of=D2)["weight"]
    w1 = store.latest_positions(engine, model.name, as_of=D3)["weight"]
    assert w0.notna().all() and w1.notna().all()
    panel = np.vstack([w0.to_numpy(), w1.reindex(w0.index).to_numpy()])
    traded = turnover(panel)[1].sum()
    got = _value(samples, "momentum_portfolio_turnover_ratio")
    assert got == pytest.approx(traded, rel=1e-12)
    assert got == pytest.approx(float((w1 - w0).abs().sum()), rel=1e-12)
    assert got > 0
    assert _value(samples, "momentum_gross_exposure_ratio") == pytest.approx(w1.abs().sum())
    assert _value(samples, "momentum_net_exposure_ratio") == pytest.approx(w1.sum())
    n_long = _value(samples, "momentum_positions", side="long")
    n_short = _value(samples, "momentum_positions", side="short")
    assert (n_long, n_short) == ((w1 > 0).sum(), (w1 < 0).sum())
    assert n_long + n_short == len(TICKERS)

    # drift: one PSI per feature of the manifest, each a finite non-negative number
    psi = samples["momentum_feature_psi"]
    assert {dict(labels)["feature"] for labels in psi} == set(model.manifest.features.names)
    assert all(math.isfinite(v) and v >= 0 for v in psi.values())
    signal = _value(samples, "momentum_signal_psi")
    assert math.isfinite(signal) and signal >= 0

    # paper ledger: D2's positions marked with D3's closes
    ledger = store.read_ledger(engine, model.name)
    assert len(ledger) == 1 and summary.days == 1
    equity = float(ledger["equity"].iloc[-1])
    assert _value(samples, "momentum_paper_equity_ratio") == pytest.approx(equity)
    assert _value(samples, "momentum_paper_pnl_ratio") == pytest.approx(equity - 1)
    assert _value(samples, "momentum_paper_drawdown_ratio") == pytest.approx(max(0.0, 1 - equity))
    assert _value(samples, "momentum_paper_max_drawdown_ratio") == pytest.approx(
        summary.max_drawdown
    )
    assert math.isnan(_value(samples, "momentum_paper_rolling_sharpe"))  # 1 day < 63

    # model
    info = samples["momentum_model_info"]
    assert list(info.values()) == [1.0]
    assert dict(next(iter(info))) == {
        "name": model.name,
        "version": model.version,
        "sha256": model.manifest.onnx.sha256,
        "execution_provider": "CPUExecutionProvider",
    }
    assert _value(samples, "momentum_model_loaded") == 1

    # closes, gRPC
    assert _value(
        samples, "momentum_newest_close_timestamp_seconds", universe="sp500"
    ) == _date_seconds(D3)
    assert _value(samples, "momentum_grpc_requests_total", method=method, code="OK") == 2
    assert _value(samples, "momentum_grpc_requests_total", method=method, code="NOT_FOUND") == 1
    assert _value(samples, "momentum_grpc_request_duration_seconds_count", method=method) == 3
    assert _value(
        samples, "momentum_grpc_request_duration_seconds_sum", method=method
    ) == pytest.approx(0.007)


def test_a_skipped_cycle_counts_but_leaves_the_exposures(history, model):
    engine = history
    metrics = ServiceMetrics()
    good = run_cycle(engine, model, D3)
    _observe(metrics, good, engine, model)
    before = _rendered(metrics)
    skipped = run_cycle(engine, model, "2021-04-01")  # no closes stored for that session
    assert skipped.status == "skipped"
    _observe(metrics, skipped, engine, model)
    after = _rendered(metrics)
    assert _value(after, "momentum_cycles_total", status="skipped") == 1
    assert _value(after, "momentum_cycles_total", status="succeeded") == 1
    assert _value(after, "momentum_cycle_duration_seconds_count") == 2
    assert _value(after, "momentum_inference_duration_seconds_count") == 1
    unchanged = [
        "momentum_portfolio_turnover_ratio",
        "momentum_gross_exposure_ratio",
        "momentum_net_exposure_ratio",
        "momentum_positions",
        "momentum_feature_psi",
        "momentum_signal_psi",
        "momentum_last_cycle_as_of_timestamp_seconds",
        "momentum_last_successful_cycle_timestamp_seconds",
    ]
    for name in unchanged:
        assert after[name] == before[name], name
    # the store flagged the last good set stale: every served asset is stale now
    assert _value(before, "momentum_assets_stale") == 0
    assert _value(after, "momentum_assets_stale") == len(TICKERS)


def test_feature_psi_is_near_zero_on_the_reference_rows_and_alerts_after_a_two_std_shift(
    history, model
):
    engine = history
    result = run_cycle(engine, model, D3)
    assert result.status == "succeeded"
    names = model.manifest.features.names
    window = result.features.values[-63:]  # (63, N, d): what the metric looks at
    # a manifest whose reference is exactly the live rows: training features = live features
    reference = model.manifest.model_copy(
        update={"reference_quantiles": reference_quantiles(window, names)}
    )
    same = dataclasses.replace(model, manifest=reference)
    metrics = ServiceMetrics()
    _observe(metrics, result, engine, same)
    samples = _rendered(metrics)
    for name in names:
        assert _value(samples, "momentum_feature_psi", feature=name) < PSI_WARN, name
    # the stored signal (one set of 20) is compared with the manifest's signal deciles
    assert math.isfinite(_value(samples, "momentum_signal_psi"))

    # the live window shifted by two of its standard deviations, feature by feature
    std = np.nanstd(window, axis=(0, 1))  # (d,)
    values = result.features.values.copy()
    values[-63:] += 2 * std
    shifted = dataclasses.replace(
        result, features=dataclasses.replace(result.features, values=values)
    )
    metrics = ServiceMetrics()
    _observe(metrics, shifted, engine, same)
    samples = _rendered(metrics)
    for name in names:
        assert _value(samples, "momentum_feature_psi", feature=name) > PSI_ALERT, name


def test_signal_psi_covers_this_versions_sets_in_the_trailing_window(sqlite_engine, model):
    """Stored sets written by hand: signal deciles -1, -0.8, ..., 1 and signals at bin centres."""
    engine = sqlite_engine
    reference = model.manifest.model_copy(
        update={"signal_quantiles": [round(i / 5 - 1, 12) for i in range(11)]}
    )
    pinned = dataclasses.replace(model, manifest=reference)
    tickers = [f"T{i}" for i in range(10)]
    centres = np.linspace(-0.9, 0.9, 10)  # one signal in each reference bin

    def write(day, signals, version=model.version):
        frame = pd.DataFrame({"signal": signals, "vol": 0.2, "weight": 0.0}, index=tickers)
        run = {"as_of": day, "model_name": model.name, "model_version": version}
        return store.write_cycle(engine, run, frame), frame

    write("2021-03-26", np.full(10, 0.95))  # all in the top bin: drift
    write("2021-03-29", centres)
    write("2021-03-30", np.full(10, 0.95), version="another-version")  # not this version's
    run_id, frame = write("2021-03-31", centres)
    result = CycleResult(
        as_of=pd.Timestamp("2021-03-31"),
        model_name=model.name,
        model_version=model.version,
        status="succeeded",
        run_id=run_id,
        positions=frame.assign(stale=False),
    )
    two_sets = ServiceMetrics(drift_window=2)
    _observe(two_sets, result, engine, pinned)
    assert _value(_rendered(two_sets), "momentum_signal_psi") == pytest.approx(0.0, abs=1e-12)
    # three sets of this version: 12 of 30 signals in the top bin, 2 of 30 in each other bin
    three_sets = ServiceMetrics(drift_window=3)
    _observe(three_sets, result, engine, pinned)
    by_hand = 9 * (2 / 30 - 0.1) * math.log(2 / 30 / 0.1) + (12 / 30 - 0.1) * math.log(4)
    assert _value(_rendered(three_sets), "momentum_signal_psi") == pytest.approx(by_hand, rel=1e-12)
    assert by_hand > PSI_ALERT


def test_per_ticker_gauges_only_when_asked(history, model):
    engine = history
    result = run_cycle(engine, model, D3)
    metrics = ServiceMetrics(per_ticker=True)
    _observe(metrics, result, engine, model)
    samples = _rendered(metrics)
    stored = store.latest_positions(engine, model.name)
    for ticker in TICKERS:
        assert _value(samples, "momentum_ticker_weight_ratio", ticker=ticker) == pytest.approx(
            stored.loc[ticker, "weight"], rel=1e-12
        )
        assert _value(samples, "momentum_ticker_signal_ratio", ticker=ticker) == pytest.approx(
            stored.loc[ticker, "signal"], rel=1e-12
        )
    plain = ServiceMetrics()
    _observe(plain, result, engine, model)
    assert b"ticker" not in plain.render()


def test_feature_psi_series_follow_the_models_features(history, model):
    result = run_cycle(history, model, D3)
    metrics = ServiceMetrics()
    _observe(metrics, result, history, model)
    # a model whose features are named differently (same values): the old series go away
    renamed = [f"x{i}" for i in range(model.manifest.n_features)]
    old = model.manifest
    manifest = old.model_copy(
        update={
            "features": old.features.model_copy(update={"names": renamed}),
            "reference_quantiles": {
                new: old.reference_quantiles[name]
                for new, name in zip(renamed, old.features.names, strict=True)
            },
        }
    )
    first = _rendered(metrics)["momentum_feature_psi"]
    _observe(metrics, result, history, dataclasses.replace(model, manifest=manifest))
    second = _rendered(metrics)["momentum_feature_psi"]
    assert sorted(dict(labels)["feature"] for labels in second) == sorted(renamed)
    assert sorted(second.values()) == sorted(first.values())


def test_observe_cycle_refuses_another_models_result(history, model):
    result = run_cycle(history, model, D3)
    other = dataclasses.replace(model, version="20990101T000000Z-00000000")
    with pytest.raises(ValueError, match="`model` is"):
        _observe(ServiceMetrics(), result, history, other)


# --------------------------------------------------------------------------------------------
# observations without a cycle
# --------------------------------------------------------------------------------------------


def test_model_info_keeps_one_series_and_drops_the_old_one(model):
    metrics = ServiceMetrics()
    samples = _rendered(metrics)
    assert _value(samples, "momentum_model_loaded") == 0
    assert "momentum_model_info" not in samples
    metrics.observe_model(model)
    newer = dataclasses.replace(model, version="20990101T000000Z-00000000", provider="CUDA")
    metrics.observe_model(newer)
    info = _rendered(metrics)["momentum_model_info"]
    assert [dict(labels)["version"] for labels in info] == [newer.version]
    assert [dict(labels)["execution_provider"] for labels in info] == ["CUDA"]
    metrics.observe_model(None)
    samples = _rendered(metrics)
    assert "momentum_model_info" not in samples
    assert _value(samples, "momentum_model_loaded") == 0


def test_the_served_manifests_drift_baseline_is_exported_for_this_window_only(model):
    names = model.manifest.features.names
    baseline = DriftBaseline(
        window=63,
        level=0.95,
        features={n: (None if i == 0 else 0.1 * i) for i, n in enumerate(names)},
        signal=0.8,
    )
    with_baseline = dataclasses.replace(
        model, manifest=model.manifest.model_copy(update={"drift_baseline": baseline})
    )
    metrics = ServiceMetrics()
    metrics.observe_model(with_baseline)
    samples = _rendered(metrics)
    assert _value(samples, "momentum_signal_psi_baseline") == 0.8
    assert _value(samples, "momentum_feature_psi_baseline", feature=names[2]) == pytest.approx(0.2)
    assert math.isnan(_value(samples, "momentum_feature_psi_baseline", feature=names[0]))
    # another window's baseline says nothing about this service's 21-session window
    short = ServiceMetrics(drift_window=21)
    short.observe_model(with_baseline)
    samples = _rendered(short)
    assert math.isnan(_value(samples, "momentum_signal_psi_baseline"))
    assert "momentum_feature_psi_baseline" not in samples
    # a model without one (exported before baselines existed) drops the series
    without = dataclasses.replace(
        model, manifest=model.manifest.model_copy(update={"drift_baseline": None})
    )
    metrics.observe_model(without)
    samples = _rendered(metrics)
    assert "momentum_feature_psi_baseline" not in samples
    assert math.isnan(_value(samples, "momentum_signal_psi_baseline"))


def test_a_restarted_service_primes_the_drift_gauges_of_the_newest_session(
    history, served_run, clean_env
):
    settings = load_settings(
        registry_dir=served_run["registry"],
        model_name=served_run["name"],
        device="cpu",
        data_dir=clean_env / "var",
        _env_file=None,
    )
    running = SignalService(settings, engine=history, metrics=ServiceMetrics())
    for day in ("2021-03-26", "2021-03-29", D3):
        assert running.run_session(day).status == "succeeded"
    after_cycle = _rendered(running.metrics)
    assert math.isfinite(_value(after_cycle, "momentum_signal_psi"))

    restarted = SignalService(settings, engine=history, metrics=ServiceMetrics())
    assert restarted.refresh_model().model is not None
    fresh = _rendered(restarted.metrics)
    assert math.isnan(_value(fresh, "momentum_signal_psi"))
    assert "momentum_feature_psi" not in fresh
    restarted.prime_metrics()
    primed = _rendered(restarted.metrics)
    # the same figures as the cycle of that session left: nothing to wait for
    assert primed["momentum_feature_psi"] == pytest.approx(after_cycle["momentum_feature_psi"])
    assert _value(primed, "momentum_signal_psi") == pytest.approx(
        _value(after_cycle, "momentum_signal_psi")
    )
    assert store.read_cycle_runs(history)["id"].size == 3  # priming stored nothing


def test_a_restarted_service_exports_the_stored_history(history, model):
    fresh = _rendered(ServiceMetrics())
    assert _value(fresh, "momentum_last_cycle_as_of_timestamp_seconds") == 0
    assert run_cycle(history, model, D3).status == "succeeded"
    skipped = run_cycle(history, model, "2021-04-01")  # no closes: flags the set stale
    assert skipped.status == "skipped"
    metrics = ServiceMetrics()
    metrics.observe_history(service_history(history, model.name))
    samples = _rendered(metrics)
    assert _value(samples, "momentum_last_cycle_as_of_timestamp_seconds") == _date_seconds(D3)
    finished = store.read_cycle_runs(history, status="succeeded", limit=1)["finished_at"].iloc[0]
    assert _value(samples, "momentum_last_successful_cycle_timestamp_seconds") == pytest.approx(
        pd.Timestamp(finished).timestamp()
    )
    assert _value(samples, "momentum_assets_stale") == len(TICKERS)


def test_ledger_figures_are_exported_as_given():
    metrics = ServiceMetrics()
    fresh = _rendered(metrics)
    assert _value(fresh, "momentum_paper_equity_ratio") == 1.0
    assert math.isnan(_value(fresh, "momentum_paper_rolling_sharpe"))
    summary = LedgerSummary(
        model_name="slp",
        days=70,
        first_date=pd.Timestamp("2021-01-04"),
        last_date=pd.Timestamp("2021-04-14"),
        equity=1.05,
        total_return=0.05,
        sharpe=1.1,
        rolling_sharpe=0.8,
        window=63,
        max_drawdown=0.04,
        drawdown=0.01,
        missing=0,
    )
    metrics.observe_ledger(summary)
    samples = _rendered(metrics)
    assert _value(samples, "momentum_paper_pnl_ratio") == 0.05
    assert _value(samples, "momentum_paper_equity_ratio") == 1.05
    assert _value(samples, "momentum_paper_drawdown_ratio") == 0.01
    assert _value(samples, "momentum_paper_max_drawdown_ratio") == 0.04
    assert _value(samples, "momentum_paper_rolling_sharpe") == 0.8


def test_refusals_are_counted_once_each_and_the_production_flag_follows():
    metrics = ServiceMetrics()
    metrics.observe_refusal(True, new=True)
    metrics.observe_refusal(True, new=False)  # the same refusal remembered
    samples = _rendered(metrics)
    assert _value(samples, "momentum_model_refusals_total") == 1
    assert _value(samples, "momentum_model_production_refused") == 1
    metrics.observe_refusal(False, new=False)
    assert _value(_rendered(metrics), "momentum_model_production_refused") == 0


def test_ingest_batches_are_counted_by_outcome_with_their_rejected_rows():
    metrics = ServiceMetrics()
    metrics.observe_ingest(0)
    metrics.observe_ingest(3)
    metrics.observe_ingest(1)
    samples = _rendered(metrics)
    assert _value(samples, "momentum_ingest_batches_total", outcome="stored") == 1
    assert _value(samples, "momentum_ingest_batches_total", outcome="rejected") == 2
    assert _value(samples, "momentum_ingest_rejected_rows_total") == 4
    with pytest.raises(ValueError, match="`rejected_rows`"):
        metrics.observe_ingest(-1)


def test_newest_close_per_universe_and_bad_input():
    metrics = ServiceMetrics()
    metrics.observe_closes("sp500", "2022-12-28")
    metrics.observe_closes("synthetic", pd.Timestamp("2022-12-27"))
    samples = _rendered(metrics)
    name = "momentum_newest_close_timestamp_seconds"
    # 2022-12-28 00:00 UTC = 19,354 days after the epoch
    assert _value(samples, name, universe="sp500") == 19_354 * 86_400
    assert _value(samples, name, universe="synthetic") == 19_353 * 86_400
    with pytest.raises(ValueError, match="`universe`"):
        metrics.observe_closes("", "2022-12-28")
    with pytest.raises(ValueError, match="`newest_date`"):
        metrics.observe_closes("sp500", "not a date")


def test_instances_have_their_own_registries():
    a, b = ServiceMetrics(), ServiceMetrics()
    a.observe_rpc("/momentum.v1.SignalService/RunCycle", "INVALID_ARGUMENT", 0.01)
    name = "momentum_grpc_requests_total"
    assert name in _rendered(a)
    assert name not in _rendered(b)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_bad_drift_window(window):
    with pytest.raises(ValueError, match="`drift_window`"):
        ServiceMetrics(drift_window=window)


def test_bad_port():
    with pytest.raises(ValueError, match="`port`"):
        ServiceMetrics().start_http_server(70_000)


def test_portfolio_figures_by_hand():
    now = pd.Series({"A": 0.10, "B": -0.05, "C": np.nan})
    before = pd.Series({"A": 0.04, "C": 0.02, "D": -0.03})
    f = portfolio_figures(now, before)
    # |0.10 - 0.04| + |-0.05 - 0| + |0 - 0.02| (C not tradable: sold) + |0 + 0.03| (D left)
    assert f.turnover == pytest.approx(0.06 + 0.05 + 0.02 + 0.03, rel=1e-12)
    assert f.gross_exposure == pytest.approx(0.15, rel=1e-12)
    assert f.net_exposure == pytest.approx(0.05, rel=1e-12)
    assert (f.n_long, f.n_short) == (1, 1)
    first = portfolio_figures(now, None)
    assert first.turnover == pytest.approx(first.gross_exposure, rel=1e-12)


# --------------------------------------------------------------------------------------------
# store.read_positions
# --------------------------------------------------------------------------------------------


def _set(signal, tickers=("AAA", "BBB"), vol=(0.2, 0.4)):
    frame = pd.DataFrame({"signal": signal, "vol": vol}, index=list(tickers))
    frame["weight"] = frame["signal"] * 0.15 / frame["vol"] / len(tickers)  # eq. (1)
    return frame


def test_read_positions_long_history(engine):
    def write(day, version, signal):
        run = {"as_of": day, "model_name": "slp", "model_version": version}
        return store.write_cycle(engine, run, _set(signal))

    first = write("2022-01-03", "v1", [0.5, -0.5])
    second = write("2022-01-04", "v1", [1.0, np.nan])
    third = write("2022-01-04", "v2", [0.2, 0.4])
    store.write_cycle(
        engine, {"as_of": "2022-01-04", "model_name": "other", "model_version": "v1"}, _set([0, 0])
    )
    frame = store.read_positions(engine, "slp")
    assert list(frame.columns) == [
        "as_of", "model_version", "ticker", "signal", "vol", "weight", "stale", "run_id",
    ]  # fmt: skip
    assert (
        frame["as_of"].dt.strftime("%Y-%m-%d").tolist() == ["2022-01-03"] * 2 + ["2022-01-04"] * 4
    )
    assert frame["model_version"].tolist() == ["v1", "v1", "v1", "v1", "v2", "v2"]
    assert frame["ticker"].tolist() == ["AAA", "BBB"] * 3
    assert frame["run_id"].tolist() == [first, first, second, second, third, third]
    np.testing.assert_array_equal(frame["signal"], [0.5, -0.5, 1.0, np.nan, 0.2, 0.4])
    # eq. (1): 0.5 * 0.15 / 0.2 / 2 for AAA on the first date; NULL weight -> NaN
    assert frame["weight"].iloc[0] == pytest.approx(0.1875)
    assert np.isnan(frame["weight"].iloc[3])
    assert frame["stale"].dtype == bool and not frame["stale"].any()
    assert frame["as_of"].dtype == PRICES.index.dtype

    v1 = store.read_positions(engine, "slp", model_version="v1", start="2022-01-04")
    assert v1["run_id"].tolist() == [second, second]
    until = store.read_positions(engine, "slp", end="2022-01-03")
    assert until["run_id"].tolist() == [first, first]
    empty = store.read_positions(engine, "nobody")
    assert empty.empty and list(empty.columns) == list(frame.columns)
    with pytest.raises(ValueError, match="`model_name`"):
        store.read_positions(engine, "")
    with pytest.raises(ValueError, match="`start`"):
        store.read_positions(engine, "slp", start="not a date")
