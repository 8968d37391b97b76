"""Recent Coinbase trades served from the live ``market_trades`` channel (fake Coinbase on
127.0.0.1): once the venue confirms the subscription, one REST read seeds them and later reads
make no REST call; a lost connection tells WS TRADE clients at once (``resync``,
``disconnected``), and the product is live again after it."""

from __future__ import annotations

import asyncio

from tests.venues.loopback import check_down_from_the_start, check_live_trades, refused_port

from astra.marketdata.engine import MarketDataEngine
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue

MARKET = "COINBASE-SPOT-BTC-USD"


async def test_recent_trades_come_from_the_live_channel(fake_coinbase):
    fake = await fake_coinbase()
    fake.trades_paused = True  # trades are made only while ``pushed`` runs
    venue = CoinbaseVenue(
        urls=CoinbaseUrls(rest=fake.base_url, ws=fake.ws_url), send_interval=0.0,
        markets_source=fake.products_source)  # fmt: skip
    engine = MarketDataEngine({"COINBASE": venue}, linger=60.0)
    made = fake.trades["BTC-USD"]

    async def pushed() -> list[str]:
        start = len(made)
        fake.trades_paused = False
        async with asyncio.timeout(5):
            while len(made) < start + 4:  # noqa: ASYNC110 - the fake's stream makes them
                await asyncio.sleep(0.01)
        fake.trades_paused = True
        return [t["trade_id"] for t in made[start:]]

    try:
        await check_live_trades(
            engine, MARKET, rest_calls=lambda: fake.ticker_requests, pushed=pushed,
            drop=fake.cut)  # fmt: skip
    finally:
        await engine.close()


async def test_a_venue_down_from_the_start_is_reported_at_once(fake_coinbase):
    """The WebSocket refuses every connection from the start: no book ever syncs, yet every
    subscriber hears ``reconnecting: ...`` (not only the books that had synced)."""
    fake = await fake_coinbase()  # (its products; its WebSocket is never reached)
    with refused_port() as port:
        venue = CoinbaseVenue(
            urls=CoinbaseUrls(rest=fake.base_url, ws=f"ws://127.0.0.1:{port}/"),
            send_interval=0.0, markets_source=fake.products_source)  # fmt: skip
        engine = MarketDataEngine({"COINBASE": venue}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, MARKET)
        finally:
            await engine.close()
