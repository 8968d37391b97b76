"""Recent KuCoin trades served from the live ``/market/match`` topic (fake KuCoin on
127.0.0.1 replaying the recorded DAPPT-BTC matches): once KuCoin acks the subscribe, one
REST read seeds them and later reads make no REST call; a lost connection tells WS TRADE
clients at once (``resync``, ``disconnected``), and the topic is live again after it."""

from __future__ import annotations

import json

from tests.venues.loopback import check_down_from_the_start, check_live_trades, refused_port

from astra.marketdata.engine import MarketDataEngine
from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin.symbols import parse_ccxt_markets

SYMBOL = "DAPPT-BTC"
MARKET = "KUCOIN-SPOT-DAPPT-BTC"


async def test_recent_trades_come_from_the_live_topic(fake_kucoin, kucoin_recording):
    frames = kucoin_recording.matches[SYMBOL]
    datas = [json.loads(frame)["data"] for frame in frames]
    assert len(datas) >= 3

    async def markets():
        return parse_ccxt_markets(kucoin_recording.spot_symbols, None)

    async with fake_kucoin() as fake:
        stream = fake.stream(f"/market/match:{SYMBOL}", frames, hold=0)  # sent on release
        # The venue's REST history (newest first): the first two trades the topic will send.
        fake.trade_history[SYMBOL] = [
            {k: d[k] for k in ("sequence", "price", "size", "side")} | {"time": int(d["time"])}
            for d in datas[1::-1]
        ]
        venue = KucoinVenue(urls=KucoinUrls.for_server(fake.base_url), markets_source=markets)
        engine = MarketDataEngine({"KUCOIN": venue}, linger=60.0)

        async def pushed() -> list[str]:
            stream.release.set()
            return [d["sequence"] for d in datas]

        async def drop() -> None:
            for ws in fake.sockets:
                await ws.close()

        try:
            await check_live_trades(
                engine, MARKET, rest_calls=lambda: fake.history_requests, pushed=pushed,
                drop=drop)  # fmt: skip
        finally:
            await engine.close()
    assert fake.connections == 2 and fake.sent("subscribe") == [f"/market/match:{SYMBOL}"] * 2


async def test_a_venue_down_from_the_start_is_reported_at_once(kucoin_recording):
    """REST (the connection token) and WebSocket refuse every connection from the start: the
    book that never synced and the topic that was never live are reported at once."""

    async def markets():
        return parse_ccxt_markets(kucoin_recording.spot_symbols, None)

    with refused_port() as port:
        urls = KucoinUrls.for_server(f"http://127.0.0.1:{port}")
        venue = KucoinVenue(urls=urls, markets_source=markets)
        engine = MarketDataEngine({"KUCOIN": venue}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, MARKET)
        finally:
            await engine.close()
