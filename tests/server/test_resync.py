"""The gateway repairs its books: a diff lost between venue and gateway, or a feed that goes
silent, resyncs that market, and its WebSocket clients receive a fresh snapshot that again
equals the simulator's book.

A small loopback proxy sits between the gateway and the simulator's WebSocket and drops or
swallows frames; REST snapshots go to the simulator directly.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from astra.server.gateway import Gateway
from astra.venues.aster import AsterUrls, AsterVenue


class Proxy:
    """Forwards ``/sstream/ws/<stream>`` to the simulator; on the first connection it drops
    frame ``drop_at``, or every frame after ``stall_after`` (a feed gone silent but open)."""

    def __init__(self, upstream_ws: str, *, drop_at: int = 0, stall_after: int = 0) -> None:
        self.upstream_ws, self.drop_at, self.stall_after = upstream_ws, drop_at, stall_after
        self.connections = 0
        self.dropped = 0

    def _forwards(self, first: bool, count: int) -> bool:
        if not first:
            return True
        return count != self.drop_at and not (self.stall_after and count > self.stall_after)

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
                if self._forwards(first, count):
                    await ws.send_str(msg.data)
                else:
                    self.dropped += 1
        return ws

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/sstream/ws/{stream}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]


def _venue(sim, proxy_port: int, **options) -> AsterVenue:
    urls = AsterUrls.for_simulator(sim.base_url)
    spot_ws = f"ws://127.0.0.1:{proxy_port}/sstream"
    return AsterVenue(
        "SIM", AsterUrls(urls.spot_rest, urls.perp_rest, spot_ws, urls.perp_ws), **options
    )


async def _watch(gw, token: str, market: str, until) -> list[dict]:
    """ORDERBOOK messages of ``market`` until ``until(messages)`` holds."""
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={market}&dataType=ORDERBOOK"
    messages: list[dict] = []
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers={"x-astra-api-key": f"Bearer {token}"}) as ws,
        asyncio.timeout(30),
    ):
        while not until(messages):
            messages.append(json.loads((await ws.receive(timeout=10)).data))
    return messages


def _assert_tracks(messages: list[dict], truth, client_book) -> int:
    """The client's book equals the simulator's at every diff boundary; returns how many."""
    book, checked = client_book(), 0
    for msg in messages:
        levels = book.apply(msg)
        if msg["type"] != "resync" and msg["updateId"] in truth.books:
            assert levels == truth.books[msg["updateId"]], (msg["type"], msg["updateId"])
            checked += 1
    return checked


def _two_snapshots_then_update(messages: list[dict]) -> bool:
    kinds = [m["type"] for m in messages]
    return kinds.count("snapshot") >= 2 and kinds[-1] == "update"


async def test_dropped_diff_resyncs_and_clients_get_a_fresh_snapshot(
    sim, key_store, sim_books, client_book
):
    truth = sim_books(sim, "spot", "ETHUSDT")
    proxy = Proxy(f"ws://127.0.0.1:{sim.port}/sstream", drop_at=8)
    runner, port = await proxy.start()
    token = key_store.create().token
    try:
        async with Gateway({"SIM": _venue(sim, port)}, key_store, port=0, metrics_port=0) as gw:
            messages = await _watch(gw, token, "SIM-SPOT-ETH-USDT", _two_snapshots_then_update)
            assert gw.engine.stats["resyncs"] >= 1
    finally:
        await runner.cleanup()
    kinds = [m["type"] for m in messages]
    assert proxy.dropped == 1 and kinds[0] == "snapshot"
    assert "update" in kinds[1 : kinds.index("snapshot", 1)]
    # Told at once, before the fresh snapshot, and only once.
    second = kinds.index("snapshot", 1)
    assert kinds[second - 1] == "resync" and kinds.count("resync") == 1
    resync = messages[second - 1]
    assert resync["state"] == "resyncing" and resync["market"] == "SIM-SPOT-ETH-USDT"
    assert resync["reason"].startswith("U=")  # the gap, as the feed saw it
    assert proxy.connections == 1  # repaired on the same connection, by a new snapshot
    assert _assert_tracks(messages, truth, client_book) >= 2


async def test_silent_feed_is_reconnected_and_clients_resync(
    sim, key_store, sim_books, client_book
):
    truth = sim_books(sim, "spot", "SOLUSDT")
    proxy = Proxy(f"ws://127.0.0.1:{sim.port}/sstream", stall_after=5)
    runner, port = await proxy.start()
    token = key_store.create().token
    try:
        venue = _venue(sim, port, silence=0.5)
        async with Gateway({"SIM": venue}, key_store, port=0, metrics_port=0) as gw:
            messages = await _watch(gw, token, "SIM-SPOT-SOL-USDT", _two_snapshots_then_update)
    finally:
        await runner.cleanup()
    assert proxy.connections == 2  # the silent connection was replaced
    kinds = [m["type"] for m in messages]
    resync = messages[kinds.index("resync")]
    assert kinds.index("resync") < kinds.index("snapshot", 1)
    assert resync["state"] == "disconnected"
    assert resync["reason"] == "reconnecting: silent for too long"
    assert _assert_tracks(messages, truth, client_book) >= 1
