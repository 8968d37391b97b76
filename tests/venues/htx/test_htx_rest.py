"""``recent_trades`` over HTX's REST trade history (served by ``FakeHtx``): spot batches from
the recorded trade stream, and the swap shape whose numbers are strings."""

from __future__ import annotations

import gzip
import json

from astra.core import Side
from astra.venues.htx import HtxUrls, HtxVenue


async def test_spot_recent_trades_are_the_newest_oldest_first(fake_htx, recording, markets_source):
    frames = recording.frames("market.omgbtc.trade.detail")
    ticks = [json.loads(gzip.decompress(raw))["tick"] for raw in frames]
    rows = [r for t in ticks for r in t["data"]]
    async with fake_htx() as fake:
        # GET /market/history/trade answers batches newest first.
        fake.rest["/market/history/trade"] = {"ch": "x", "status": "ok", "data": ticks[::-1]}
        venue = HtxVenue(urls=HtxUrls.for_server(fake.base_url), markets_source=markets_source)
        try:
            market = (await venue.load_markets())["HUOBI-SPOT-OMG-BTC"]
            trades = await venue.recent_trades(market, 3)
        finally:
            await venue.close()
    assert fake.rest_queries == [("/market/history/trade", {"symbol": "omgbtc", "size": "3"})]
    assert [t.trade_id for t in trades] == [str(r["tradeId"]) for r in rows[-3:]]
    assert [t.time for t in trades] == sorted(t.time for t in trades)


async def test_swap_recent_trades_accept_numbers_as_strings(fake_htx, markets_source):
    body = {
        "ch": "market.BTC-USD.trade.detail",
        "status": "ok",
        "data": [
            {
                "id": 1703698706589,
                "ts": 1703698706589,
                "data": [
                    {
                        "amount": "6",
                        "quantity": "0.0159",
                        "ts": 1703698704594,
                        "id": 1000001187811060000,
                        "price": "37735.6",
                        "direction": "sell",
                        "contract_code": "BTC-USD",
                    }
                ],
            }
        ],
        "ts": 1703698706589,
    }
    async with fake_htx() as fake:
        fake.rest["/swap-ex/market/history/trade"] = body
        venue = HtxVenue(urls=HtxUrls.for_server(fake.base_url), markets_source=markets_source)
        try:
            market = (await venue.load_markets())["HUOBI-PERP-BTC-USD-COINM"]
            (trade,) = await venue.recent_trades(market, 10)
        finally:
            await venue.close()
    assert fake.rest_queries[0][1] == {"contract_code": "BTC-USD", "size": "10"}
    assert (trade.price, trade.quantity, trade.side) == (37735.6, 6.0, Side.SELL)  # contracts
    assert trade.trade_id == "1000001187811060000"
