"""A client that stops reading is dropped; it never stalls the feed or other clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from astra.sim import SimExchange, SimServer, WsLimits

STREAMS = "/".join(
    f"{s}@{c}"
    for s in ("btcusdt", "ethusdt", "solusdt")
    for c in ("depth@100ms", "depth20@100ms", "aggTrade", "trade", "bookTicker")
)


async def test_slow_client_is_dropped_and_fast_client_keeps_flowing(stalled_ws):
    # A step's frames are queued at once and a late clock runs steps back to back, so the
    # bound leaves room for a few steps' burst (a fast client on a loaded machine) and is
    # still soon reached by a client that never reads.
    limits = WsLimits(max_streams=1024, messages_per_second=5, ping_interval=180.0,
                      max_queue=400)
    async with SimServer(SimExchange(seed=2, ws_limits={"spot": limits})) as sim:
        side = sim.exchange.sides["spot"]
        stalled = await stalled_ws(sim.port, f"/sstream/stream?streams={STREAMS}")
        url = f"ws://127.0.0.1:{sim.port}/sstream/stream?streams={STREAMS}"
        received = 0
        last_u = None
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url) as fast,
            asyncio.timeout(60),
        ):
            assert len(side.ws.connections) == 2
            while len(side.ws.connections) > 1:  # until the stalled one is gone
                msg = json.loads((await fast.receive(timeout=5)).data)
                received += 1
                if msg["stream"] == "btcusdt@depth@100ms":
                    if last_u is not None:  # the fast client's chain never broke
                        assert msg["data"]["U"] == last_u + 1
                    last_u = msg["data"]["u"]
            # After the drop, the fast client still gets every event, in sequence.
            for _ in range(200):
                msg = json.loads((await fast.receive(timeout=5)).data)
                if msg["stream"] == "btcusdt@depth@100ms":
                    assert msg["data"]["U"] == last_u + 1
                    last_u = msg["data"]["u"]
        stalled.close()
    assert received > 50
