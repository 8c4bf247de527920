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


def test_it_trades_from_a_live_stream(trader_module, served_run, sqlite_engine):
    """Snapshot + one RunCycle over a real server: two messages, orders, then fills."""
    import grpc

    from momentum.data import load_prices
    from service._proto import signals_pb2, signals_pb2_grpc
    from service.app import SignalService
    from service.config import load_settings
    from service.grpc_server import GrpcServer
    from service.ingest import panel_rows

    m = trader_module
    settings = load_settings(
        registry_dir=served_run["registry"], model_name=served_run["name"], device="cpu"
    )
    service = SignalService(settings, engine=sqlite_engine)
    prices = load_prices("sp500")
    assert service.ingest(panel_rows(prices.loc["2019-06-03":"2021-03-31"])).ok
    assert service.run_session("2021-03-30").status == "succeeded"
    lines: list[str] = []

    def closes(day):
        return prices.loc[pd.Timestamp(day)].dropna().to_dict()

    trader = m.PaperTrader(m.SimulatedBroker(prices), closes, out=lines.append)
    with GrpcServer(service, port=0) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        stream = stub.StreamPositions(signals_pb2.StreamPositionsRequest(), timeout=60)
        received = threading.Event()

        def consume():
            for n, message in enumerate(stream, 1):
                trader.on_positions(message.as_of, m._weights(message))
                received.set()
                if n == 2:
                    stream.cancel()
                    return

        worker = threading.Thread(target=consume)
        worker.start()
        assert received.wait(30)  # the snapshot of 2021-03-30
        assert service.run_session("2021-03-31").status == "succeeded"
        worker.join(30)
        channel.close()
    assert [line[:10] for line in lines] == ["2021-03-30", "2021-03-31"]
    assert trader.account.shares  # the first message's orders filled at 2021-03-31's close
