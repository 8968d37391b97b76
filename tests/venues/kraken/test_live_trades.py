"""Recent Kraken spot trades served from the live v2 ``trade`` subscription (fake Kraken v2
on 127.0.0.1): once Kraken confirms the subscribe, one REST read seeds them and later reads
make no REST call; a lost connection tells WS TRADE clients at once (``resync``,
``disconnected``), and the pair is live again after it."""

from __future__ import annotations

import pytest
from tests.venues.loopback import check_down_from_the_start, check_live_trades, refused_port

from astra.marketdata.engine import MarketDataEngine
from astra.venues.kraken import KrakenUrls, KrakenVenue

MARKET = "KRAKEN-SPOT-XMR-USD"


def _v2(n: int) -> dict:
    return {"symbol": "XMR/USD", "side": "buy" if n % 2 else "sell", "price": 350.0 + n,
            "qty": 0.5, "ord_type": "limit", "trade_id": n,
            "timestamp": f"2021-04-17T16:49:{n % 60:02d}.000000Z"}  # fmt: skip


def _rest(n: int) -> list:  # [price, volume, time (s), b/s, ordertype, misc, trade id]
    return [f"{350.0 + n:.8f}", "0.50000000", 1618678140.0 + n, "b" if n % 2 else "s", "l", "", n]


async def test_recent_trades_come_from_the_live_subscription(
    v1_session, fake_kraken, asset_pairs
):
    books, _ = v1_session("KRAKEN.ws.50.0")
    server = fake_kraken(
        "XMR/USD", 2, 8, next(m for m in books if m.pair == "XMR/USD"), [],
        trade_snapshot=[_v2(n) for n in (501, 500)],  # history, newest first: not sent
        trade_updates=[_v2(n) for n in range(500, 508)],  # 500, 501 again: sent once
        rest_trades={"error": [], "result": {"XXMRZUSD": [_rest(n) for n in (499, 500, 501)],
                                             "last": "1618678141000000000"}},
    )  # fmt: skip
    async with server.running():
        base = f"127.0.0.1:{server.port}"
        venue = KrakenVenue("KRAKEN", KrakenUrls(rest=f"http://{base}", ws=f"ws://{base}/v2"),
                            markets_source=lambda: asset_pairs, futures=False)  # fmt: skip
        engine = MarketDataEngine({"KRAKEN": venue}, linger=60.0)

        async def pushed() -> list[str]:  # sent on subscribe, after the snapshot
            return [str(n) for n in range(502, 508)]

        try:
            client = await check_live_trades(
                engine, MARKET, rest_calls=lambda: server.rest_requests, pushed=pushed,
                drop=server.cut)  # fmt: skip
        finally:
            await engine.close()
    assert client.recent == [str(n) for n in range(499, 508)]
    assert server.connections == 2


@pytest.mark.parametrize("symbol", ["KRAKEN-SPOT-XBT-USD", "KRAKEN-PERP-XBT-USD"])
async def test_a_venue_down_from_the_start_is_reported_at_once(
    symbol, doc_asset_pairs, futures_instruments
):
    """Spot and futures WebSockets refuse every connection from the start: the book that
    never synced and the subscription that was never live are reported at once."""
    with refused_port() as port:
        base = f"127.0.0.1:{port}"
        http, ws = f"http://{base}", f"ws://{base}"
        urls = KrakenUrls(rest=http, ws=f"{ws}/v2", futures_rest=http, futures_ws=f"{ws}/ws/v1")
        venue = KrakenVenue(
            "KRAKEN",
            urls,
            markets_source=lambda: doc_asset_pairs,
            futures_markets_source=lambda: futures_instruments,
        )
        engine = MarketDataEngine({"KRAKEN": venue}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, symbol)
        finally:
            await engine.close()
