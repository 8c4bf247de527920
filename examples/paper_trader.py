"""A paper-trading client of the signal service: target weights in, orders out.

    python examples/paper_trader.py [--address 127.0.0.1:50051] [--capital 1000000]
        [--min-trade 0.001] [--fill next|same] [--max-messages N] [--token TOKEN]

Subscribes to ``StreamPositions`` and keeps a simulated account (cash and
shares). For every positions message (as of session t):

1. orders waiting from the previous message fill at the close of t (the
   session after they were decided), and the account is marked to market;
2. the new target weights become orders: target shares
   ``round(weight * equity / close_t)`` minus the shares held, skipping trades
   worth less than ``--min-trade`` of equity; they fill at the next close.

``--fill same`` fills them at the close of t itself instead: what the paper
ledger and the backtests assume (positions decided at close t are held from
close t), so the account then tracks the ledger up to share rounding and the
trade threshold. ``next`` (the default) is what a live account gets: the
positions arrive after the close, so the orders wait for the next one.

Each order's client order id is derived from (as-of date, ticker) only, so a
replayed or duplicated message produces the same ids and the broker refuses
the second copy: a message never doubles an order. `SimulatedBroker` fills at
closes from a price source (the embedded data by default); a real broker plugs
in by implementing `Broker` (submit orders with their client ids; report fills).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Order:
    """A share order decided at the close of `as_of`, to fill at the next close."""

    client_order_id: str
    as_of: str
    ticker: str
    quantity: int  # shares; negative sells


@dataclass(frozen=True)
class Fill:
    client_order_id: str
    ticker: str
    quantity: int
    price: float
    date: str


def client_order_id(as_of: str, ticker: str) -> str:
    """Deterministic per (as-of date, ticker): a replayed message yields the same id."""
    return "mom-" + hashlib.sha256(f"{as_of}|{ticker}".encode()).hexdigest()[:20]


class Broker(Protocol):
    """Where a real broker API plugs in."""

    def submit(self, orders: Iterable[Order]) -> list[Order]:
        """Accept new orders; returns those accepted (ids seen before are refused)."""
        ...

    def fill(self, date: str) -> list[Fill]:
        """Fills of the open orders at the close of `date`."""
        ...


class SimulatedBroker:
    """Fills open orders at a close from `prices` (dates x tickers).

    ``lag=1``: at the first close after the order's as-of date (the next close);
    ``lag=0``: already at the as-of date's own close.
    """

    def __init__(self, prices: pd.DataFrame, *, lag: int = 1) -> None:
        if lag not in (0, 1):
            raise ValueError(f"`lag` must be 0 or 1, got {lag}")
        self.prices = prices
        self.lag = lag
        self.seen: set[str] = set()
        self.open: list[Order] = []

    def submit(self, orders: Iterable[Order]) -> list[Order]:
        accepted = [o for o in orders if o.client_order_id not in self.seen]
        self.seen.update(o.client_order_id for o in accepted)
        self.open.extend(accepted)
        return accepted

    def fill(self, date: str) -> list[Fill]:
        day = pd.Timestamp(date)
        fills, still_open = [], []
        for order in self.open:
            price = self.prices.at[day, order.ticker] if day in self.prices.index else float("nan")
            too_early = day < pd.Timestamp(order.as_of) + pd.Timedelta(days=self.lag)
            if too_early or not pd.notna(price):
                still_open.append(order)
                continue
            fills.append(Fill(order.client_order_id, order.ticker, order.quantity, price, date))
        self.open = still_open
        return fills


@dataclass
class Account:
    """Cash and shares; equity marked at the closes given."""

    cash: float
    shares: dict[str, int] = field(default_factory=dict)

    def apply(self, fill: Fill) -> None:
        self.shares[fill.ticker] = self.shares.get(fill.ticker, 0) + fill.quantity
        self.cash -= fill.quantity * fill.price

    def equity(self, closes: Mapping[str, float]) -> float:
        held = sum(n * closes[t] for t, n in self.shares.items() if n)
        return self.cash + held


def orders_for(
    as_of: str,
    weights: Mapping[str, float],
    closes: Mapping[str, float],
    account: Account,
    *,
    min_trade: float,
) -> list[Order]:
    """Orders moving `account` to `weights` of its equity at `closes` (target minus held)."""
    equity = account.equity(closes)
    orders = []
    for ticker in sorted(set(weights) | {t for t, n in account.shares.items() if n}):
        price = closes.get(ticker)
        if price is None or not price > 0:
            continue
        target = round(weights.get(ticker, 0.0) * equity / price)
        quantity = target - account.shares.get(ticker, 0)
        if quantity == 0 or abs(quantity * price) < min_trade * equity:
            continue
        orders.append(Order(client_order_id(as_of, ticker), as_of, ticker, int(quantity)))
    return orders


class PaperTrader:
    """Turns positions messages into orders and fills; prints the equity curve."""

    def __init__(
        self,
        broker: Broker,
        closes: Callable[[str], Mapping[str, float]],
        *,
        capital: float = 1_000_000.0,
        min_trade: float = 0.001,
        out: Callable[[str], None] = print,
    ) -> None:
        self.broker = broker
        self.closes = closes
        self.account = Account(cash=capital)
        self.min_trade = min_trade
        self.out = out
        self.processed: set[str] = set()
        self.curve: list[tuple[str, float]] = []

    def on_positions(self, as_of: str, weights: Mapping[str, float]) -> list[Order]:
        """Handle one positions message; a message seen before changes nothing."""
        closes = self.closes(as_of)
        for fill in self.broker.fill(as_of):
            self.account.apply(fill)
        equity = self.account.equity(closes)
        if as_of in self.processed:
            return []
        self.processed.add(as_of)
        planned = orders_for(as_of, weights, closes, self.account, min_trade=self.min_trade)
        accepted = self.broker.submit(planned)
        for fill in self.broker.fill(as_of):  # with lag 0 they fill at this very close
            self.account.apply(fill)
        self.curve.append((as_of, equity))
        self.out(
            f"{as_of} equity {equity:,.2f} cash {self.account.cash:,.2f} "
            f"orders {len(accepted)} (of {len(planned)} planned)"
        )
        return accepted


def _weights(message) -> dict[str, float]:
    return {a.ticker: a.target_weight for a in message.assets if a.HasField("target_weight")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None, help="bearer token, if the service needs one")
    parser.add_argument("--capital", type=float, default=1_000_000.0)
    parser.add_argument("--min-trade", type=float, default=0.001, help="share of equity")
    parser.add_argument("--prices", default="sp500", help="price source for fills")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after N messages")
    parser.add_argument(
        "--fill",
        choices=["next", "same"],
        default="next",
        help="fill at the next close (live) or at the as-of close (the paper ledger's timing)",
    )
    args = parser.parse_args(argv)

    import grpc

    from momentum.data import load_prices
    from service._proto import signals_pb2, signals_pb2_grpc

    prices = load_prices(args.prices)

    def closes(as_of: str) -> dict[str, float]:
        row = prices.loc[pd.Timestamp(as_of)]
        return {t: float(v) for t, v in row.items() if pd.notna(v)}

    trader = PaperTrader(
        SimulatedBroker(prices, lag=1 if args.fill == "next" else 0),
        closes,
        capital=args.capital,
        min_trade=args.min_trade,
    )
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    with grpc.insecure_channel(args.address) as channel:
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        stream = stub.StreamPositions(signals_pb2.StreamPositionsRequest(), metadata=metadata)
        try:
            for n, message in enumerate(stream, 1):
                trader.on_positions(message.as_of, _weights(message))
                if args.max_messages is not None and n >= args.max_messages:
                    stream.cancel()
                    break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                print(f"stream ended: {err.code().name}: {err.details()}", file=sys.stderr)
                return 1
    if trader.curve:
        first, last = trader.curve[0][1], trader.curve[-1][1]
        print(
            f"equity {first:,.2f} -> {last:,.2f} ({last / first - 1:+.3%}) over "
            f"{len(trader.curve)} messages"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
