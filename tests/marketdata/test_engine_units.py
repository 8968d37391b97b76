"""The engine serves base units on contract markets: REST books, WebSocket snapshots and
updates, live and recent trades; the synced book itself keeps the venue's contracts."""

from __future__ import annotations

import asyncio

import msgspec

from astra.core import AssetType, DataType, MarketMetadata, Side, Trade
from astra.marketdata.engine import MarketDataEngine
from astra.venues.base import Capabilities, Venue, VenueMarket
from astra.venues.book import L2Book

LINEAR = VenueMarket("OKX-PERP-BTC-USDT", "BTC-USDT-SWAP", "swap", MarketMetadata(
    symbol="OKX-PERP-BTC-USDT", asset_type=AssetType.PERP, base_asset="BTC",
    quote_asset="USDT", contract_size=0.01))
INVERSE = VenueMarket("OKX-PERP-BTC-USD-COINM", "BTC-USD-SWAP", "swap", MarketMetadata(
    symbol="OKX-PERP-BTC-USD-COINM", asset_type=AssetType.PERP, base_asset="BTC",
    quote_asset="USD", contract_size=100.0))
TRADES = [Trade(price=50000.0, quantity=4, side=Side.BUY, time=1, trade_id="t1")]


class ContractVenue(Venue):
    """A venue whose feeds speak contracts: one snapshot, one update, one trade batch."""

    code = "OKX"
    capabilities = Capabilities(asset_types=("PERP",), orderbook="test", trades="test",
                                rest="test")

    async def load_markets(self) -> dict[str, VenueMarket]:
        return {m.symbol: m for m in (LINEAR, INVERSE)}

    async def run_book_feed(self, market: VenueMarket, sink) -> None:
        book = L2Book(market.symbol)
        book.reset([(50000.0, 3.0), (49999.5, 10.0)], [(50000.5, 7.0)], 1, 1000)
        sink.on_snapshot(book)
        sink.on_update(2, 1001, [(49999.5, 0.0), (49999.0, 5.0)], [])
        await asyncio.Event().wait()

    async def run_trade_feed(self, market: VenueMarket, sink) -> None:
        sink.on_trades(list(TRADES))
        await asyncio.Event().wait()

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        return list(TRADES)

    async def close(self) -> None:
        pass


class Frames:
    def __init__(self) -> None:
        self.frames: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(msgspec.json.decode(frame))


async def until(condition) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - frames arrive from the engine's tasks
            await asyncio.sleep(0.01)


def levels(side: list[dict]) -> list[tuple[float, float]]:
    return [(lv["price"], lv["quantity"]) for lv in side]


async def test_linear_contract_books_and_trades_leave_in_base_units():
    venue = ContractVenue()
    engine = MarketDataEngine({"OKX": venue}, linger=0.01)
    client = Frames()
    engine.subscribe(venue, LINEAR, DataType.ORDERBOOK, client)
    engine.subscribe(venue, LINEAR, DataType.TRADE, client)
    try:
        await until(lambda: len(client.frames) >= 3)
        books = [f for f in client.frames if "type" in f]
        assert [f["type"] for f in books] == ["snapshot", "update"]
        assert levels(books[0]["bids"]) == [(50000.0, 0.03), (49999.5, 0.1)]
        assert levels(books[0]["asks"]) == [(50000.5, 0.07)]
        assert levels(books[1]["bids"]) == [(49999.5, 0.0), (49999.0, 0.05)]
        (trades,) = [f["trades"] for f in client.frames if "trades" in f]
        assert [(t["price"], t["quantity"]) for t in trades] == [(50000.0, 0.04)]

        rest = msgspec.json.decode(await engine.order_book(LINEAR.symbol))
        assert levels(rest["bids"]) == [(50000.0, 0.03), (49999.0, 0.05)]
        channel = engine.channels[(LINEAR.symbol, DataType.ORDERBOOK)]
        assert channel.book.bids == {50000.0: 3.0, 49999.0: 5.0}  # contracts, as synced
    finally:
        for channel in list(engine.channels.values()):
            await channel.stop()


async def test_inverse_contracts_convert_at_each_levels_price():
    venue = ContractVenue()
    engine = MarketDataEngine({"OKX": venue}, linger=0.01)
    try:
        rest = msgspec.json.decode(await engine.order_book(INVERSE.symbol))
        # 3 contracts of 100 USD at 50,000 USD per BTC: 0.006 BTC
        assert levels(rest["bids"]) == [(50000.0, 0.006), (49999.0, round(500 / 49999.0, 14))]
        (trade,) = await engine.recent_trades(INVERSE.symbol, 10)
        assert (trade.price, trade.quantity, trade.trade_id) == (50000.0, 0.008, "t1")
        assert TRADES[0].quantity == 4  # the venue's own list is untouched
    finally:
        for channel in list(engine.channels.values()):
            await channel.stop()
