"""Recent HTX trades served from the live ``trade.detail`` topic (fake HTX on 127.0.0.1
replaying the recorded fil3susdt trades): once HTX acknowledges the ``sub``, one REST read seeds
them (its rows name the trade ``trade-id``, the stream ``tradeId``: the same id, so a trade on
both is kept once) and later reads make no REST call; a lost connection tells WS TRADE
clients at once (``resync``, ``disconnected``), and the topic is live again after it."""

from __future__ import annotations

import gzip
import json

import pytest
from tests.venues.loopback import check_down_from_the_start, check_live_trades, refused_port

from astra.marketdata.engine import MarketDataEngine
from astra.venues.htx import HtxUrls, HtxVenue

TOPIC = "market.fil3susdt.trade.detail"
MARKET = "HUOBI-SPOT-FIL3S-USDT"


def _rest_row(row: dict) -> dict:
    """A stream trade as ``GET /market/history/trade`` writes it (``trade-id``)."""
    keep = {"id", "ts", "amount", "price", "direction"}
    return {"trade-id": row["tradeId"], **{k: v for k, v in row.items() if k in keep}}


async def test_recent_trades_come_from_the_live_topic(fake_htx, recording, markets_source):
    frames = recording.frames(TOPIC)
    ticks = [json.loads(gzip.decompress(raw))["tick"] for raw in frames]
    rows = [r for t in ticks for r in t["data"]]
    assert len(rows) >= 3 and all(str(r["id"]) != str(r["tradeId"]) for r in rows)
    async with fake_htx(interval=0.01) as fake:
        # The REST history (batches newest first): the first batch the topic will push.
        first = {**ticks[0], "data": [_rest_row(r) for r in ticks[0]["data"]]}
        fake.rest["/market/history/trade"] = {"ch": TOPIC, "status": "ok", "data": [first]}
        fake.add_replay(TOPIC, frames)  # pushed from the first subscription on
        engine = MarketDataEngine(
            {"HUOBI": HtxVenue(urls=HtxUrls.for_server(fake.base_url),
                               markets_source=markets_source)}, linger=60.0)  # fmt: skip

        async def pushed() -> list[str]:
            return [str(r["tradeId"]) for r in rows]

        def rest_calls() -> int:
            return sum(path == "/market/history/trade" for path, _ in fake.rest_queries)

        try:
            client = await check_live_trades(
                engine, MARKET, rest_calls=rest_calls, pushed=pushed, drop=fake.cut)
        finally:
            await engine.close()
    # Each trade once, by its trade id: the seed's rows matched the stream's (not by ``id``).
    assert client.recent == [str(r["tradeId"]) for r in rows]


@pytest.mark.parametrize("symbol", [MARKET, "HUOBI-PERP-BTC-USD-COINM"])  # mbp; depth.step0
async def test_a_venue_down_from_the_start_is_reported_at_once(symbol, markets_source):
    """Every WebSocket refuses every connection from the start: the book that never synced
    and the topic that was never live are reported at once."""
    with refused_port() as port:
        venue = HtxVenue(urls=HtxUrls.for_server(f"http://127.0.0.1:{port}"),
                         markets_source=markets_source)  # fmt: skip
        engine = MarketDataEngine({"HUOBI": venue}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, symbol)
        finally:
            await engine.close()
