"""A gateway stopped between sending a routed order's children and their acknowledgement: the
next gateway on the same database reconciles the parent from the venues' truth, by client
order id, and never sends a child twice."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import aiohttp
import pytest
from aiohttp import web

from astra.store.routing_journal import RoutingJournal
from astra.venues.aster import AsterUrls, AsterVenue

SMART = "SMART-SPOT-BTC-USDT"


class HoldingProxy:
    """A loopback proxy in front of a venue's REST API: every request is forwarded, but the
    answer to an order placement is held forever (the order reaches the venue, its
    acknowledgement never reaches the gateway)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.placed = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> HoldingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        async with aiohttp.ClientSession() as http, http.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=await request.read()) as resp:
            body, status = await resp.read(), resp.status
            ctype = resp.content_type
        if request.method == "POST" and request.path.endswith("/v3/order"):
            self.placed.set()
            await asyncio.Event().wait()  # the venue has the order; the answer is lost
        return web.Response(body=body, status=status, content_type=ctype)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.mark.parametrize("stored", [True, False], ids=["stored-credentials", "headers"])
async def test_a_gateway_stopped_mid_send_reconciles_the_parent_on_restart(sor_desk, stored):
    """Stored credentials: reconciled at startup. Header credentials: on the key's next
    request (the new gateway cannot know them before)."""
    desk = sor_desk
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000,BTC=5")
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url).start()
    try:
        venues = desk.venues()
        real = AsterUrls.for_simulator(desk.sims["SIM2"].base_url)
        venues["SIM2"] = AsterVenue("SIM2", dataclasses.replace(
            real, spot_rest=proxy.url + "/api", perp_rest=proxy.url + "/fapi"))
        gw = await desk.start(venues)
        await desk.freeze()
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
            posting = asyncio.create_task(http.post("/orders", json={
                "market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.4,
                "venues": ["SIM2"], "clientOrderId": "crash-1"}))
            async with asyncio.timeout(20):
                await proxy.placed.wait()
            # The child is at the venue; the gateway goes down before hearing back.
            await desk.gw.close()
            desk.gw = None
            posting.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await posting
        journal = RoutingJournal(desk.key_store._engine)
        parent = journal.by_client_id(desk.key_id, "crash-1")
        assert parent.state == "EXECUTING"
        assert [c.state for c in parent.children] == ["SENT"]
        # The restarted gateway (direct URLs, the same database).
        gw = await desk.start(stored=stored)
        async with asyncio.timeout(30):
            await gw._reconciler
        if not stored:
            # At startup it became an orphan whose child's outcome is still unknown.
            waiting = journal.by_client_id(desk.key_id, "crash-1")
            assert (waiting.state, waiting.status) == ("OPEN", "UNKNOWN")
            headers["x-astra-exchange-private-key"] = desk.accounts["SIM2"].signerPrivateKey
            async with aiohttp.ClientSession(gw.base_url, headers=headers) as http, \
                    asyncio.timeout(30), http.get("/orders", params={"market": SMART}) as resp:
                assert resp.status == 200 and await resp.json() == []
        parent = journal.by_client_id(desk.key_id, "crash-1")
        assert parent.state == "DONE" and parent.status == "FILLED"
        child = parent.children[0]
        assert child.state == "DONE" and child.last_order["status"] == "FILLED"
        venue_orders = desk.sims["SIM2"].exchange.sides["spot"].trading.by_account[
            (desk.account_id("SIM2"), "BTCUSDT")]
        assert [o.client_id for o in venue_orders] == ["crash-1-100"]  # sent once, ever
        assert child.last_order["orderId"] == str(venue_orders[0].id)
        async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
            # A retry of the same POST answers with the reconciled parent; nothing is sent.
            async with asyncio.timeout(20), http.post("/orders", json={
                    "market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.4,
                    "venues": ["SIM2"], "clientOrderId": "crash-1"}) as resp:
                again = await resp.json()
        assert resp.status == 200 and again["orderId"] == parent.parent_id
        assert again["status"] == "FILLED" and again["filledQuantity"] == 0.4
        assert len(desk.sims["SIM2"].exchange.sides["spot"].trading.by_account[
            (desk.account_id("SIM2"), "BTCUSDT")]) == 1
    finally:
        await desk.close()
        await proxy.close()


async def test_a_child_that_times_out_is_resolved_by_client_order_id_not_resent(sor_desk):
    desk = sor_desk
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000,BTC=5")
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url).start()
    try:
        venues = desk.venues()
        real = AsterUrls.for_simulator(desk.sims["SIM2"].base_url)
        venues["SIM2"] = AsterVenue("SIM2", dataclasses.replace(
            real, spot_rest=proxy.url + "/api", perp_rest=proxy.url + "/fapi"))
        gw = await desk.start(venues)
        gw.trading.timeout = 2.0  # the venue's answer is lost: time out soon
        await desk.freeze()
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(gw.base_url, headers=headers) as http, \
                asyncio.timeout(30), http.post("/orders", json={
                    "market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.3,
                    "venues": ["SIM2"], "clientOrderId": "slow-1"}) as resp:
            order = await resp.json()
        assert resp.status == 200 and order["status"] == "FILLED", order
        (child,) = order["children"]
        assert child["status"] == "FILLED" and child["latencyMs"] >= 2000
        venue_orders = desk.sims["SIM2"].exchange.sides["spot"].trading.by_account[
            (desk.account_id("SIM2"), "BTCUSDT")]
        assert [o.client_id for o in venue_orders] == ["slow-1-100"]
        assert child["orderId"] == str(venue_orders[0].id)
    finally:
        await desk.close()
        await proxy.close()
