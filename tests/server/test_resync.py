"""A diff lost between venue and gateway is detected and repaired: that market resyncs and
its WebSocket clients receive a fresh snapshot that again equals the simulator's book.

A small loopback proxy sits between the gateway and the simulator's WebSocket and drops one
diff event; REST snapshots go to the simulator directly.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from astra.server.gateway import Gateway
from astra.venues.aster import AsterUrls, AsterVenue


class DroppingProxy:
    """Forwards ``/sstream/ws/<stream>`` to the simulator, dropping frame ``drop_at`` of the
    first connection."""

    def __init__(self, upstream_ws: str, drop_at: int) -> None:
        self.upstream_ws, self.drop_at = upstream_ws, drop_at
        self.connections = 0
        self.dropped: list[dict] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        first = self.connections == 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        url = f"{self.upstream_ws}/ws/{request.match_info['stream']}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as up:
            count = 0
            async for msg in up:
                count += 1
                if ws.closed:
                    break
                if first and count == self.drop_at:
                    self.dropped.append(json.loads(msg.data))
                    continue
                await ws.send_str(msg.data)
        return ws


async def test_dropped_diff_resyncs_and_clients_get_a_fresh_snapshot(sim, key_store, sim_books):
    truth = sim_books(sim, "spot", "ETHUSDT")
    proxy = DroppingProxy(f"ws://127.0.0.1:{sim.port}/sstream", drop_at=8)
    app = web.Application()
    app.router.add_get("/sstream/ws/{stream}", proxy.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy_port = site._server.sockets[0].getsockname()[1]
    urls = AsterUrls.for_simulator(sim.base_url)
    venue = AsterVenue(
        "SIM",
        AsterUrls(
            urls.spot_rest, urls.perp_rest, f"ws://127.0.0.1:{proxy_port}/sstream", urls.perp_ws
        ),
    )
    token = key_store.create().token
    try:
        async with Gateway({"SIM": venue}, key_store, port=0, metrics_port=0) as gw:
            url = (
                f"{gw.base_url.replace('http', 'ws')}/ws?market=SIM-SPOT-ETH-USDT"
                "&dataType=ORDERBOOK"
            )
            headers = {"x-astra-api-key": f"Bearer {token}"}
            kinds = []
            async with (
                aiohttp.ClientSession() as s,
                s.ws_connect(url, headers=headers) as ws,
                asyncio.timeout(30),
            ):
                while kinds.count("snapshot") < 2 or kinds[-1] != "update":
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    kinds.append(msg["type"])
                    if msg["type"] == "snapshot":
                        book = {
                            side: {lv["price"]: lv["quantity"] for lv in msg[side]}
                            for side in ("bids", "asks")
                        }
                    else:
                        for side in ("bids", "asks"):
                            for lv in msg[side]:
                                if lv["quantity"] == 0:
                                    book[side].pop(lv["price"], None)
                                else:
                                    book[side][lv["price"]] = lv["quantity"]
                    if msg["updateId"] in truth.books:
                        assert book == truth.books[msg["updateId"]], msg["type"]
            assert proxy.dropped, "the proxy dropped nothing"
            assert kinds[0] == "snapshot" and "update" in kinds[1 : kinds.index("snapshot", 1)]
            assert gw.engine.stats["resyncs"] >= 1
            assert proxy.connections == 1  # repaired on the same connection, by a new snapshot
    finally:
        await runner.cleanup()


class StallingProxy(DroppingProxy):
    """Forwards the first ``stall_after`` frames of the first connection, then goes silent
    while keeping the socket open (a dead feed that does not close)."""

    def __init__(self, upstream_ws: str, stall_after: int) -> None:
        super().__init__(upstream_ws, drop_at=0)
        self.stall_after = stall_after

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        first = self.connections == 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        url = f"{self.upstream_ws}/ws/{request.match_info['stream']}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as up:
            count = 0
            async for msg in up:
                count += 1
                if ws.closed:
                    break
                if first and count > self.stall_after:
                    continue  # swallowed: the gateway hears nothing
                await ws.send_str(msg.data)
        return ws


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/sstream/ws/{stream}", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_silent_feed_is_reconnected_and_clients_resync(sim, key_store, sim_books):
    truth = sim_books(sim, "spot", "SOLUSDT")
    proxy = StallingProxy(f"ws://127.0.0.1:{sim.port}/sstream", stall_after=5)
    runner, port = await _serve(proxy.handle)
    urls = AsterUrls.for_simulator(sim.base_url)
    venue = AsterVenue(
        "SIM",
        AsterUrls(urls.spot_rest, urls.perp_rest, f"ws://127.0.0.1:{port}/sstream", urls.perp_ws),
        silence=0.5,
    )
    token = key_store.create().token
    try:
        async with Gateway({"SIM": venue}, key_store, port=0, metrics_port=0) as gw:
            url = (
                f"{gw.base_url.replace('http', 'ws')}/ws?market=SIM-SPOT-SOL-USDT"
                f"&dataType=ORDERBOOK&apiKey={token}"
            )
            async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws, asyncio.timeout(30):
                snapshots = 0
                while snapshots < 2:
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    snapshots += msg["type"] == "snapshot"
                assert proxy.connections == 2  # the silent connection was replaced
                book = {
                    side: {lv["price"]: lv["quantity"] for lv in msg[side]}
                    for side in ("bids", "asks")
                }
                while msg["updateId"] not in truth.books:  # align with a diff boundary
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    for side in ("bids", "asks"):
                        for lv in msg[side]:
                            if lv["quantity"] == 0:
                                book[side].pop(lv["price"], None)
                            else:
                                book[side][lv["price"]] = lv["quantity"]
                assert book == truth.books[msg["updateId"]]
    finally:
        await runner.cleanup()
