"""examples/paper_trader.py: orders from weights, idempotent ids, fills at the next close."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trader_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    return importlib.import_module("paper_trader")


def test_orders_move_the_account_to_the_target_weights(trader_module):
    m = trader_module
    account = m.Account(cash=1000.0, shares={"C": 3})
    closes = {"A": 10.0, "B": 20.0, "C": 5.0, "D": 50.0}
    weights = {"A": 0.5, "B": -0.2, "D": 0.01}
    orders = m.orders_for("2022-01-03", weights, closes, account, min_trade=0.02)
    # equity 1000 + 3 * 5 = 1015: A -> round(507.5 / 10) = 51 (50.75), B -> round(-203 / 20)
    # = -10, C held without a target -> sell 3 (15 < 2% of equity: skipped), D -> 0 shares
    assert [(o.ticker, o.quantity) for o in orders] == [("A", 51), ("B", -10)]
    assert orders[0].client_order_id == m.client_order_id("2022-01-03", "A")
    assert m.client_order_id("2022-01-03", "A") != m.client_order_id("2022-01-04", "A")


def test_a_replayed_message_never_doubles_an_order_and_fills_wait_for_the_next_close(
    trader_module,
):
    m = trader_module
    prices = pd.DataFrame(
        {"A": [10.0, 11.0, 12.0], "B": [20.0, 19.0, 18.0]},
        index=pd.to_datetime(["2022-01-03", "2022-01-04", "2022-01-05"]),
    )
    broker = m.SimulatedBroker(prices)

    def closes(day):
        return prices.loc[pd.Timestamp(day)].to_dict()

    trader = m.PaperTrader(broker, closes, capital=1000.0, min_trade=0.0, out=lambda _: None)
    first = trader.on_positions("2022-01-03", {"A": 0.5, "B": -0.5})
    assert [(o.ticker, o.quantity) for o in first] == [("A", 50), ("B", -25)]
    assert trader.on_positions("2022-01-03", {"A": 0.5, "B": -0.5}) == []  # replayed
    # the same ids resubmitted directly are refused by the broker too
    assert broker.submit(first) == []
    assert trader.account.shares == {}  # nothing fills at the close it was decided on
    trader.on_positions("2022-01-04", {"A": 0.5, "B": -0.5})
    # filled at the 2022-01-04 closes: 50 * 11 bought, 25 * 19 sold short
    assert trader.account.shares == {"A": 50, "B": -25}
    assert trader.account.cash == pytest.approx(1000.0 - 550.0 + 475.0)
    assert trader.curve[1] == ("2022-01-04", pytest.approx(1000.0 - 550 + 475 + 550 - 475))


def test_its_account_tracks_the_paper_ledger_during_a_live_replay(
    trader_module, served_run, sqlite_engine
):
    """A live server, a short replay, the trader on the stream filling at the ledger's closes.

    Its daily return can differ from the ledger's gross return only through its weights:
    each held weight is off its target by at most the trade threshold (a skipped trade) plus
    half a share (rounding), so |difference| <= sum_i (min_trade + 0.5 C_i / E) |r_i|.
    """
    import queue

    import grpc

    from momentum.data import load_prices
    from service import store
    from service._proto import signals_pb2, signals_pb2_grpc
    from service.app import SignalService
    from service.config import load_settings
    from service.grpc_server import GrpcServer
    from service.ingest import panel_rows, replay_rows

    m = trader_module
    settings = load_settings(
        registry_dir=served_run["registry"],
        model_name=served_run["name"],
        device="cpu",
        cost_bps=0.0,  # the trader pays no costs: compare with the gross ledger
    )
    service = SignalService(settings, engine=sqlite_engine)
    prices = load_prices("sp500")
    assert service.ingest(panel_rows(prices.loc["2019-06-03":"2021-03-01"])).ok
    assert service.run_session("2021-03-01").status == "succeeded"

    def closes(day):
        return prices.loc[pd.Timestamp(day)].dropna().to_dict()

    min_trade = 0.002
    broker = m.SimulatedBroker(prices, lag=0)
    trader = m.PaperTrader(
        broker, closes, capital=250_000.0, min_trade=min_trade, out=lambda _: None
    )
    seen: queue.Queue = queue.Queue()
    duplicates: list[tuple[int, list]] = []
    with GrpcServer(service, port=0) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        stream = stub.StreamPositions(signals_pb2.StreamPositionsRequest(), timeout=120)

        def consume():
            try:
                for message in stream:
                    weights = m._weights(message)
                    trader.on_positions(message.as_of, weights)
                    if message.as_of == "2021-03-03":  # the same message delivered twice
                        before = len(broker.seen)
                        again = trader.on_positions(message.as_of, weights)
                        duplicates.append((len(broker.seen) - before, again))
                    seen.put(message.as_of)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.CANCELLED

        worker = threading.Thread(target=consume)
        worker.start()
        assert seen.get(timeout=30) == "2021-03-01"  # the snapshot
        sessions = []
        for day, rows in replay_rows("2021-03-02", "2021-03-19"):
            assert service.ingest(rows, source="replay").ok
            assert service.run_session(day).status == "succeeded"
            assert seen.get(timeout=30) == f"{day:%Y-%m-%d}"
            sessions.append(day)
        stream.cancel()
        worker.join(30)
        channel.close()

    assert duplicates == [(0, [])]  # no extra order from the duplicate
    ledger = store.read_ledger(sqlite_engine, served_run["name"])
    equity = dict(trader.curve)
    compared = 0
    previous = ["2021-03-01", *[f"{d:%Y-%m-%d}" for d in sessions[:-1]]]
    for before, after in zip(previous, sessions, strict=True):
        day = f"{after:%Y-%m-%d}"
        traded = equity[day] / equity[before] - 1
        gross = float(ledger.loc[after, "gross_return"])
        c0, c1 = pd.Series(closes(before)), pd.Series(closes(day))
        bound = float(((min_trade + 0.5 * c0 / equity[before]) * (c1 / c0 - 1).abs()).sum())
        assert abs(traded - gross) <= bound + 1e-12, (day, traded, gross, bound)
        compared += 1
    assert compared == len(sessions) >= 10
    assert trader.account.shares and broker.open == []
