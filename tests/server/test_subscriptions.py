"""One upstream subscription per (market, channel), shared and reference-counted."""

from __future__ import annotations

import asyncio

import aiohttp


async def _sim_connections(sim) -> int:
    return sum(len(side.ws.connections) for side in sim.exchange.sides.values())


async def test_clients_share_one_upstream_feed_which_stops_after_the_last(gateway, sim):
    gw, token = gateway  # linger is 1 s in the fixture
    base = gw.base_url.replace("http", "ws")
    url = f"{base}/ws?market=SIM-PERP-SOL-USDT&dataType=ORDERBOOK&apiKey={token}"
    trades = f"{base}/ws?market=SIM-PERP-SOL-USDT&dataType=TRADE&apiKey={token}"
    async with aiohttp.ClientSession() as s, asyncio.timeout(20):
        clients = [await s.ws_connect(url) for _ in range(5)]
        for ws in clients:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
        assert await _sim_connections(sim) == 1  # five clients, one upstream depth stream
        trade_ws = await s.ws_connect(trades)
        await trade_ws.receive_json(timeout=10)
        assert await _sim_connections(sim) == 2  # the trade channel is its own subscription
        for ws in clients[:4]:
            await ws.close()
        await asyncio.sleep(1.5)  # past the linger: one client still holds the book feed
        assert ("SIM-PERP-SOL-USDT", "ORDERBOOK") in gw.engine.channels
        assert (await clients[4].receive_json(timeout=5))["type"] == "update"
        await clients[4].close()
        await trade_ws.close()
        for _ in range(100):  # both feeds stop once nobody uses them
            if not await _sim_connections(sim):
                break
            await asyncio.sleep(0.1)
    assert gw.engine.channels == {}


async def test_a_slow_client_is_closed_and_never_stalls_the_others(sim, key_store, stalled_ws):
    from astra.server.gateway import Gateway, venues_from_config

    token = key_store.create().token
    async with Gateway(
        venues_from_config({}, sim.base_url),
        key_store,
        port=0,
        metrics_port=0,
        max_queue=5,
        send_buffer=4096,
    ) as gw:
        path = f"/ws?market=SIM-SPOT-BTC-USDT&dataType=ORDERBOOK&apiKey={token}"
        stalled = await stalled_ws(gw.port, path)
        channel_key = ("SIM-SPOT-BTC-USDT", "ORDERBOOK")
        url = f"{gw.base_url.replace('http', 'ws')}{path}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as fast, asyncio.timeout(60):
            last = (await fast.receive_json(timeout=10))["updateId"]
            while len(gw.engine.channels[channel_key].clients) > 1:  # until it is dropped
                msg = await fast.receive_json(timeout=5)
                assert msg["type"] == "update" and msg["updateId"] > last
                last = msg["updateId"]
            for _ in range(10):  # and the fast client carries on, in sequence
                msg = await fast.receive_json(timeout=5)
                assert msg["type"] == "update" and msg["updateId"] > last
                last = msg["updateId"]
        stalled.close()
