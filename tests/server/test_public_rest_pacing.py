"""Public REST on SIM, paced by the venue's limiter: concurrent ``GET /trades`` share one
REST fetch and never hold up a book snapshot; once the trade feed runs, recent trades come
from it with no REST call at all. On the real simulator, over loopback."""

from __future__ import annotations

import asyncio

import aiohttp

from astra.core import DataType
from astra.server.gateway import Gateway, venues_from_config

MARKET = "SIM-SPOT-BTC-USDT"


async def _enough_trades(state, n: int) -> None:
    async with asyncio.timeout(30):
        while len(state.aggs) < n:  # noqa: ASYNC110 - the simulator's flow fills it
            await asyncio.sleep(0.05)


async def _used_weight(session: aiohttp.ClientSession, sim) -> int:
    """The simulator's request weight used this minute by 127.0.0.1 (the gateway's and the
    test's requests alike), read from a weight-1 ping."""
    async with session.get(f"{sim.base_url}/api/v3/ping") as resp:
        return int(resp.headers["X-MBX-USED-WEIGHT-1M"])


def _check_against_sim(trades: list[dict], state, limit: int) -> None:
    """The answer is the simulator's last ``limit`` aggregate trades up to the newest one it
    holds, exactly, oldest first: nothing lost between the REST seed and the live feed."""
    by_id = {a.id: a for a in state.aggs}
    market = state.market
    ids = [int(t["tradeId"]) for t in trades]
    assert ids == [a.id for a in state.aggs if a.id <= ids[-1]][-limit:]
    for trade in trades:
        agg = by_id[int(trade["tradeId"])]
        assert trade["price"] == float(market.format_price(agg.price))
        assert trade["quantity"] == float(market.format_qty(agg.qty))
        assert trade["time"] == agg.time


async def test_concurrent_trades_share_one_fetch_and_never_starve_the_book(sim, key_store):
    state = sim.exchange.sides["spot"].states["BTCUSDT"]
    await _enough_trades(state, 60)
    token = key_store.create().token
    venues = venues_from_config({}, sim.base_url)
    async with (
        Gateway(venues, key_store, port=0, metrics_port=0) as gw,
        aiohttp.ClientSession(headers={"x-astra-api-key": f"Bearer {token}"}) as s,
    ):
        # The snapshot's deadline: before the fix the book waited behind ccxt's queue of
        # aggTrades calls (6.7 s each) and got a 504 after it.
        gw.engine.book_wait = 5.0
        # One budget per venue: trading paces with the limiter public REST uses.
        assert gw.trading._limiter("SIM") is venues["SIM"].limiter

        async def get(path: str, **query: str) -> tuple[int, dict]:
            async with s.get(gw.base_url + path, params=query) as resp:
                return resp.status, await resp.json()

        async def book() -> tuple[int, dict]:
            await asyncio.sleep(0.05)  # behind the trades
            return await get("/orderbook", market="SIM-PERP-ETH-USDT", depth="5")

        pending = [asyncio.create_task(get("/trades", market=MARKET, limit="50")) for _ in "123456"]
        async with asyncio.timeout(20):  # bounds the test; the book is bounded by book_wait
            book_status, book_body = await book()
            assert book_status == 200, book_body  # before: 504 VENUE_TIMEOUT after 5 s
            trades = await asyncio.gather(*pending)
        assert book_body["market"] == "SIM-PERP-ETH-USDT"
        assert len(book_body["bids"]) == 5 and len(book_body["asks"]) == 5
        assert book_body["bids"][0]["price"] < book_body["asks"][0]["price"]
        assert [status for status, _ in trades] == [200] * 6
        first = trades[0][1]["trades"]
        assert len(first) == 50
        assert all(body["trades"] == first for _, body in trades)  # one shared fetch
        _check_against_sim(first, state, 50)

        # The trade feed is up and seeded: /trades is served from it, no REST call.
        channel = gw.engine.channels[(MARKET, DataType.TRADE)]
        async with asyncio.timeout(10):
            while not channel.complete:
                await get("/trades", market=MARKET, limit="1")
                await asyncio.sleep(0.05)
        await _enough_trades(state, len(state.aggs) + 3)  # some arrive over the feed only
        for _ in range(3):  # a minute window may roll over between the two pings
            before = await _used_weight(s, sim)
            newest = state.aggs[-1].id
            answers = await asyncio.gather(
                *(get("/trades", market=MARKET, limit="200") for _ in range(6))
            )
            after = await _used_weight(s, sim)
            if after > before:
                break
        assert after == before + 1  # the second ping: the gateway sent nothing
        for status, body in answers:
            assert status == 200
            assert int(body["trades"][-1]["tradeId"]) >= newest  # up to date
            _check_against_sim(body["trades"], state, 200)
