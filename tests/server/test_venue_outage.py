"""A venue that goes down: REST book reads fail at once with 503 and the feed's state instead
of waiting for a snapshot that cannot come; WebSocket clients hear ``resync`` at once, before
the snapshot that follows the venue's return. The venue is the real simulator, stopped and
started again on the same loopback port."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from astra.server.gateway import Gateway, venues_from_config
from astra.sim import SimExchange, SimServer

MARKET = "SIM-SPOT-BTC-USDT"


async def test_venue_down_fails_fast_and_websocket_clients_hear_resync(key_store):
    sim = await SimServer(SimExchange(seed=1)).start()
    port = sim.port
    token = key_store.create().token
    headers = {"x-astra-api-key": f"Bearer {token}"}
    ws_url_tail = f"/ws?market={MARKET}&dataType=ORDERBOOK"
    try:
        async with (
            Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0) as gw,
            aiohttp.ClientSession(headers=headers) as s,
        ):
            # Far longer than the client's 5 s: an answer proves no wait for a snapshot.
            gw.engine.book_wait = 30.0
            client_timeout = aiohttp.ClientTimeout(total=5)

            async def get_book(market: str) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
                url = f"{gw.base_url}/orderbook"
                async with s.get(url, params={"market": market}, timeout=client_timeout) as r:
                    return r.status, await r.json(), r.headers

            async with s.ws_connect(gw.base_url.replace("http", "ws") + ws_url_tail) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                assert first["type"] == "snapshot"
                assert (await get_book(MARKET))[0] == 200

                down_at = int(time.time() * 1000)
                await sim.close()

                # The client is told at once, before anything else.
                async with asyncio.timeout(5):
                    while True:
                        msg = json.loads((await ws.receive()).data)
                        if msg["type"] != "update":  # updates already in flight may land
                            break
                assert msg["type"] == "resync" and msg["market"] == MARKET
                assert msg["state"] == "disconnected" and msg["since"] >= down_at - 1000
                assert msg["reason"].startswith("reconnecting: ")
                assert "127.0.0.1" not in msg["reason"] and str(port) not in msg["reason"]

                # REST: a 503 with the book's state, well within the client's 5 s.
                status, body, resp_headers = await get_book(MARKET)
                assert status == 503, body
                assert body["code"] == "VENUE_UNAVAILABLE" and body["venue"] == "SIM"
                assert body["feed"]["state"] == "disconnected"
                assert down_at - 1000 <= body["feed"]["since"] <= int(time.time() * 1000)
                assert body["feed"]["reason"].startswith("reconnecting: ")
                assert int(resp_headers["Retry-After"]) >= 1
                # Recent trades: a 503 that names the venue, not its address.
                async with s.get(f"{gw.base_url}/trades", params={"market": MARKET},
                                 timeout=client_timeout) as r:
                    status, body = r.status, await r.json()
                assert status == 503 and body["code"] == "VENUE_UNAVAILABLE", body
                assert "127.0.0.1" not in body["message"] and str(port) not in body["message"]
                # A market whose feed never ran fails as fast: its connection is refused.
                status, body, _ = await get_book("SIM-PERP-BTC-USDT")
                assert status == 503 and body["feed"]["state"] == "disconnected", body

                # The venue returns: the next book message is a fresh snapshot, no update
                # before it, and REST serves the book again.
                sim = await SimServer(SimExchange(seed=2), port=port).start()
                async with asyncio.timeout(30):
                    kinds = []
                    while not kinds or kinds[-1] != "snapshot":
                        kinds.append(json.loads((await ws.receive()).data)["type"])
                assert set(kinds[:-1]) <= {"resync"}
                status, body, _ = await get_book(MARKET)
                assert status == 200 and body["bids"] and body["asks"]
    finally:
        await sim.close()
