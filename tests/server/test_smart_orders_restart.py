"""A gateway stopped between sending a routed order's children and their acknowledgement: the
next gateway on the same database reconciles the parent from the venues' truth, by client
order id, and never sends a child twice."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

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

    def __init__(self, upstream: str, hold: Callable[[bytes], bool] | None = None) -> None:
        self.upstream = upstream
        self.hold = hold  # which placements to hold (by body); None: every one
        self.down = False  # True: every other REST call answers 503 once a placement is held
        self.calls: list[tuple[str, str]] = []  # (method, path) of every REST call
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
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._relay_ws(request)
        self.calls.append((request.method, request.path))
        if self.down and self.placed.is_set():
            return web.Response(status=503, text="Service Unavailable")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        data = await request.read()
        async with aiohttp.ClientSession() as http, http.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=data) as resp:
            body, status = await resp.read(), resp.status
            ctype = resp.content_type
        if request.method == "POST" and request.path.endswith("/v3/order") and (
                self.hold is None or self.hold(data + request.query_string.encode())):
            self.placed.set()
            await asyncio.Event().wait()  # the venue has the order; the answer is lost
        return web.Response(body=body, status=status, content_type=ctype)

    async def _relay_ws(self, request: web.Request) -> web.StreamResponse:
        """Market-data streams pass through untouched (a venue configured by one URL)."""
        down = web.WebSocketResponse()
        await down.prepare(request)
        url = "ws" + self.upstream[len("http"):] + request.path_qs
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as up:
            async def pump(src, dst) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    else:
                        break

            tasks = [asyncio.create_task(pump(up, down)), asyncio.create_task(pump(down, up))]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        await down.close()
        return down

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _sim2_through(desk, proxy) -> dict:
    """The desk's venues, SIM2's REST reached through ``proxy`` (which holds or drops its
    answers)."""
    venues = desk.venues()
    real = AsterUrls.for_simulator(desk.sims["SIM2"].base_url)
    venues["SIM2"] = AsterVenue("SIM2", dataclasses.replace(
        real, spot_rest=proxy.url + "/api", perp_rest=proxy.url + "/fapi"))
    return venues


@pytest.mark.parametrize("stored", [True, False], ids=["stored-credentials", "headers"])
async def test_a_gateway_stopped_mid_send_reconciles_the_parent_on_restart(sor_desk, stored):
    """Stored credentials: reconciled at startup. Header credentials: on the key's next
    request (the new gateway cannot know them before)."""
    desk = sor_desk
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000,BTC=5")
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url).start()
    try:
        venues = _sim2_through(desk, proxy)
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
        venues = _sim2_through(desk, proxy)
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


async def _proxied_sim2(desk, proxy) -> None:
    """The desk's gateway with SIM2's REST calls through ``proxy``, orders timing out in 2 s."""
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000,BTC=5")
    venues = desk.venues()
    real = AsterUrls.for_simulator(desk.sims["SIM2"].base_url)
    venues["SIM2"] = AsterVenue("SIM2", dataclasses.replace(
        real, spot_rest=proxy.url + "/api", perp_rest=proxy.url + "/fapi"))
    gw = await desk.start(venues)
    gw.trading.timeout = 2.0
    await desk.freeze()


async def test_a_child_unknown_while_its_venue_is_down_answers_202_with_the_others(sor_desk):
    """SIM2's child times out and SIM2 stays down for the immediate lookup: the POST still
    answers with the parent (202, UNKNOWN; SIM3's fill in it), not a 5xx for an order that
    traded, and the parent is left OPEN for reconciliation, not EXECUTING."""
    desk = sor_desk
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url).start()
    proxy.down = True
    try:
        await _proxied_sim2(desk, proxy)
        body = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 3.0,
                "maxSlippageBps": 500, "venues": ["SIM2", "SIM3"], "clientOrderId": "down-1"}
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(desk.gw.base_url, headers=headers) as http:
            async with asyncio.timeout(30), http.post(
                    "/orders", json={**body, "dryRun": True}) as resp:
                plan = await resp.json()
            assert {leg["venue"] for leg in plan["legs"]} == {"SIM2", "SIM3"}, plan
            async with asyncio.timeout(30), http.post("/orders", json=body) as resp:
                order = await resp.json()
            assert resp.status == 202 and order["status"] == "UNKNOWN", order
            by_venue = {c["venue"]: c for c in order["children"]}
            assert by_venue["SIM2"]["status"] == "UNKNOWN"
            sim3 = desk.sims["SIM3"].exchange.sides["spot"].trading.by_account[
                (desk.account_id("SIM3"), "BTCUSDT")]
            assert [o.client_id for o in sim3] == [by_venue["SIM3"]["clientOrderId"]]
            executed = Decimal(sim3[0].executed) / 10 ** sim3[0].state.market.qty_dp
            assert Decimal(str(by_venue["SIM3"]["filledQuantity"])) == executed > 0
            assert Decimal(str(order["filledQuantity"])) == executed
            parent = RoutingJournal(desk.key_store._engine).by_client_id(desk.key_id, "down-1")
            assert (parent.state, parent.status) == ("OPEN", "UNKNOWN")
            proxy.down = False  # SIM2 is back: a read settles the child from its truth
            async with asyncio.timeout(30), http.get(
                    f"/orders/{order['orderId']}", params={"market": SMART}) as resp:
                again = await resp.json()
        assert resp.status == 200 and again["status"] in ("FILLED", "EXPIRED"), again
        sim2 = desk.sims["SIM2"].exchange.sides["spot"].trading.by_account[
            (desk.account_id("SIM2"), "BTCUSDT")]
        assert [o.client_id for o in sim2] == [by_venue["SIM2"]["clientOrderId"]]
        sim2_filled = Decimal(sim2[0].executed) / 10 ** sim2[0].state.market.qty_dp
        assert Decimal(str(again["filledQuantity"])) == executed + sim2_filled
    finally:
        await desk.close()
        await proxy.close()


async def test_canceling_a_parent_whose_rest_was_unknown_cancels_it_at_the_venue(sor_desk):
    """A GTC rest whose answer was lost (and SIM2 down for the immediate lookup) rests at the
    venue; DELETE must find it by client order id and cancel it there, never report the
    parent CANCELED while its child still rests."""
    desk = sor_desk
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url,
                               hold=lambda data: b"GTC" in data).start()
    proxy.down = True
    try:
        await _proxied_sim2(desk, proxy)
        books = await desk.gw.engine.member_books(SMART, ["SIM2"])
        low = round(float(books.members[0].bids[0][0]) * 0.9)  # far below the ask: rests
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(desk.gw.base_url, headers=headers) as http:
            async with asyncio.timeout(30), http.post("/orders", json={
                    "market": SMART, "side": "BUY", "type": "LIMIT", "quantity": 0.5,
                    "price": low, "timeInForce": "GTC", "venues": ["SIM2"],
                    "clientOrderId": "rest-1"}) as resp:
                order = await resp.json()
            assert resp.status == 202 and order["status"] == "UNKNOWN", order
            (child,) = order["children"]
            assert child["timeInForce"] == "GTC" and child["status"] == "UNKNOWN"
            venue = desk.sims["SIM2"].exchange.sides["spot"].trading.by_account[
                (desk.account_id("SIM2"), "BTCUSDT")]
            assert [(o.client_id, o.status) for o in venue] == [(child["clientOrderId"],
                                                                 "NEW")]
            proxy.down = False
            async with asyncio.timeout(30), http.delete("/orders", params={
                    "market": SMART, "orderId": order["orderId"]}) as resp:
                canceled = await resp.json()
        assert resp.status == 200 and canceled["status"] == "CANCELED", canceled
        assert [o.status for o in venue] == ["CANCELED"]  # not resting behind the user's back
        assert canceled["children"][0]["status"] == "CANCELED"
        parent = RoutingJournal(desk.key_store._engine).by_client_id(desk.key_id, "rest-1")
        assert (parent.state, parent.status, parent.canceled) == ("DONE", "CANCELED", True)
    finally:
        await desk.close()
        await proxy.close()


async def test_startup_reconciles_what_it_can_when_a_venues_stored_row_is_unreadable(sor_desk):
    """Restarted with SIM2's stored row encrypted under another master key: the startup
    reconciliation still settles the SIM child from SIM's truth and leaves the parent OPEN
    (UNKNOWN, SIM2's child waiting for usable credentials), not EXECUTING as if another
    process were still running it."""
    from astra.core.credentials import ExchangeCredentials
    from astra.store import CredentialStore
    from astra.store.credentials import generate_master_key
    from astra.trading.paper import LayeredCredentials

    desk = sor_desk
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url).start()
    try:
        for code in ("SIM", "SIM2", "SIM3"):
            desk.fund(code, "USDT=500000,BTC=5")
        venues = _sim2_through(desk, proxy)
        await desk.start(venues)
        await desk.freeze()
        body = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 3.0,
                "maxSlippageBps": 500, "venues": ["SIM", "SIM2"], "clientOrderId": "key-1"}
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(desk.gw.base_url, headers=headers) as http:
            async with asyncio.timeout(30), http.post(
                    "/orders", json={**body, "dryRun": True}) as resp:
                plan = await resp.json()
            assert {leg["venue"] for leg in plan["legs"]} == {"SIM", "SIM2"}, plan
            posting = asyncio.create_task(http.post("/orders", json=body))
            async with asyncio.timeout(20):
                await proxy.placed.wait()
                while True:  # SIM's child at SIM too
                    sim = desk.sims["SIM"].exchange.sides["spot"].trading.by_account.get(
                        (desk.account_id("SIM"), "BTCUSDT"), [])
                    if sim:
                        break
                    await asyncio.sleep(0.01)
            await desk.gw.close()
            desk.gw = None
            posting.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await posting
        engine = desk.key_store._engine
        readable = CredentialStore(engine, bytes.fromhex(generate_master_key()))
        other = CredentialStore(engine, bytes.fromhex(generate_master_key()))
        for code, acct in desk.accounts.items():
            (other if code == "SIM2" else readable).set(desk.key_id, ExchangeCredentials(
                exchange=code, private_key=acct.signerPrivateKey))
        from astra.server.gateway import Gateway

        desk.gw = gw = await Gateway(desk.venues(), desk.key_store, port=0, metrics_port=0,
                                     linger=1.0, credentials=LayeredCredentials(readable)).start()
        async with asyncio.timeout(30):
            await gw._reconciler
        parent = RoutingJournal(engine).by_client_id(desk.key_id, "key-1")
        assert (parent.state, parent.status) == ("OPEN", "UNKNOWN")
        by_venue = {c.venue: c for c in parent.children}
        assert by_venue["SIM2"].state == "SENT"  # no usable credentials yet: left as it was
        (at_sim,) = sim
        assert by_venue["SIM"].state == "DONE"
        assert by_venue["SIM"].last_order["orderId"] == str(at_sim.id)
        assert Decimal(str(by_venue["SIM"].last_order["filledQuantity"])) == Decimal(
            at_sim.executed) / 10 ** at_sim.state.market.qty_dp
    finally:
        await desk.close()
        await proxy.close()


async def test_a_new_order_does_not_query_the_venues_of_other_parents_resting_children(
        sor_desk):
    """Before a SMART POST only parents with a child of unknown outcome are reconciled: a
    resting GTC parent's child is not looked up at its venue on every new order (latency)."""
    desk = sor_desk
    proxy = await HoldingProxy(desk.sims["SIM2"].base_url, hold=lambda data: False).start()
    try:
        await _proxied_sim2(desk, proxy)
        books = await desk.gw.engine.member_books(SMART, ["SIM2"])
        low = round(float(books.members[0].bids[0][0]) * 0.9)
        headers = {"x-astra-api-key": f"Bearer {desk.token}"}
        async with aiohttp.ClientSession(desk.gw.base_url, headers=headers) as http:
            async with asyncio.timeout(30), http.post("/orders", json={
                    "market": SMART, "side": "BUY", "type": "LIMIT", "quantity": 0.5,
                    "price": low, "timeInForce": "GTC", "venues": ["SIM2"]}) as resp:
                resting = await resp.json()
            assert resp.status == 200 and resting["status"] == "NEW", resting
            before = list(proxy.calls)
            async with asyncio.timeout(30), http.post("/orders", json={
                    "market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.1,
                    "venues": ["SIM3"]}) as resp:
                order = await resp.json()
            assert resp.status == 200 and order["status"] == "FILLED", order
            assert proxy.calls[len(before):] == []  # SIM2 was not asked about anything
            # A read of the resting parent still asks its venue.
            async with asyncio.timeout(30), http.get(
                    f"/orders/{resting['orderId']}", params={"market": SMART}) as resp:
                again = await resp.json()
            assert resp.status == 200 and again["status"] == "NEW"
            assert ("GET", "/api/v3/order") in proxy.calls[len(before):]
    finally:
        await desk.close()
        await proxy.close()


# -- the strongest form: a real `astra serve` process, SIGKILLed mid-send ------------------------

class _Serve:
    """``python -m astra serve`` as a child process on ``data_dir``; ``url`` once listening."""

    _LISTENING = re.compile(rb"Astra gateway listening on (http://127\.0\.0\.1:\d+)")

    def __init__(self, config: Path, data_dir: Path, env: dict[str, str]) -> None:
        self.config, self.data_dir, self.env = config, data_dir, env
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> _Serve:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astra", "serve", "--config", str(self.config),
            "--data-dir", str(self.data_dir), "--port", "0", "--metrics-port", "0",
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        seen = b""
        while not (found := self._LISTENING.search(seen)):
            line = await self.proc.stdout.readline()
            assert line, f"astra serve ended before listening: {seen.decode()[-2000:]}"
            seen += line
        self.url = found[1].decode()
        self._drain = asyncio.create_task(self._read_rest())  # a full pipe must not block it
        return self

    async def _read_rest(self) -> None:
        while await self.proc.stdout.read(65536):
            pass

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()
            with contextlib.suppress(Exception):
                await self._drain


async def _publish_only(server) -> None:
    """A venue whose clock is stopped still publishes what trades change, every 10 ms."""
    feeds = [side.feeds for side in server.exchange.sides.values()]
    while True:
        for f in feeds:
            f.tick()
        await asyncio.sleep(0.01)


def _venue_orders(sims, accounts, prefix: str) -> dict[str, list]:
    """Each venue's own orders whose client order id starts with ``prefix``."""
    out = {}
    for code, sim in sims.items():
        account = sim.exchange.registry.by_api_key(accounts[code].apiKey).id
        orders = sim.exchange.sides["spot"].trading.by_account.get((account, "BTCUSDT"), [])
        out[code] = [o for o in orders if o.client_id.startswith(prefix)]
    return out


async def test_a_killed_serve_process_reconciles_on_restart(sor_sims, tmp_path):
    """``astra serve`` over three in-test venues (SIM2 behind a proxy that holds the answer to
    an order placement), credentials stored under ASTRA_MASTER_KEY: the process is SIGKILLed
    while SIM2's child is at the venue unacknowledged; a new process on the same data dir
    reconciles the parent to the venues' truth, and no child reaches a venue twice."""
    from astra.core.credentials import ExchangeCredentials
    from astra.sim.admin import parse_deposits
    from astra.store import ApiKeyStore, CredentialStore, open_database
    from astra.store.credentials import generate_master_key

    sims = sor_sims
    accounts = {code: sim.exchange.create_account(parse_deposits("USDT=5000000,BTC=5"))
                for code, sim in sims.items()}
    data_dir = tmp_path / "data"
    db = open_database(data_dir=data_dir)
    token = ApiKeyStore(db).create("kill").token
    key_id = token.split(".")[0]
    master = generate_master_key()
    store = CredentialStore(db, bytes.fromhex(master))
    for code, acct in accounts.items():
        store.set(key_id, ExchangeCredentials(exchange=code, private_key=acct.signerPrivateKey))
    proxy = await HoldingProxy(sims["SIM2"].base_url).start()
    config = tmp_path / "astra.toml"
    config.write_text("".join(f'[venues.{code}]\nurl = "{url}"\n' for code, url in (
        ("SIM", sims["SIM"].base_url), ("SIM2", proxy.url), ("SIM3", sims["SIM3"].base_url))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTRA_")}
    env |= {"ASTRA_MASTER_KEY": master, "PYTHONUNBUFFERED": "1"}
    headers = {"x-astra-api-key": f"Bearer {token}"}
    # All three venues, enough that each gets a child (checked on the dry run first).
    body = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 3.0,
            "maxSlippageBps": 500, "clientOrderId": "kill-1"}
    first = second = None
    feeds: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(60):
            first = await _Serve(config, data_dir, env).start()
            async with aiohttp.ClientSession(first.url, headers=headers) as http:
                while True:  # until every member book is synced in the gateway
                    async with http.post("/orders", json={**body, "dryRun": True}) as resp:
                        plan = await resp.json()
                    if resp.status == 200 and all(m["state"] == "synced"
                                                  for m in plan["members"]):
                        break
                    await asyncio.sleep(0.1)
                # The venues' clocks stop (their feeds still publish what trades change): the
                # live order is planned on the books the dry run saw, SIM2 among its venues.
                for sim in sims.values():
                    sim.exchange._task.cancel()
                    feeds.append(asyncio.create_task(_publish_only(sim)))
                while "SIM2" not in {leg["venue"] for leg in plan["legs"]}:
                    body["quantity"] += 3.0
                    async with http.post("/orders", json={**body, "dryRun": True}) as resp:
                        plan = await resp.json()
                    assert resp.status == 200, plan
                posting = asyncio.create_task(http.post("/orders", json=body))
                await proxy.placed.wait()
                # Every other child at its venue too (else one sent but not there yet would be
                # rightly UNKNOWN for the order journal's grace period, 2 minutes). The children
                # are the live plan's, journaled with the parent: books move between the dry
                # run and the live order, so the dry run's legs may name other venues.
                journal = RoutingJournal(db)
                while True:
                    live = journal.by_client_id(key_id, "kill-1")
                    at = {o.client_id for orders in _venue_orders(sims, accounts, "kill-1-")
                          .values() for o in orders}
                    if live is not None and live.children and all(
                            c.client_order_id in at for c in live.children):
                        break
                    await asyncio.sleep(0.01)
                # SIM2 has its child; the gateway dies before hearing back from it.
                await first.kill()
                with contextlib.suppress(aiohttp.ClientError):
                    await posting
            crashed = journal.by_client_id(key_id, "kill-1")
            assert crashed.state == "EXECUTING"
            sim2 = [c for c in crashed.children if c.venue == "SIM2"]
            assert [c.state for c in sim2] == ["SENT"]  # sent, never acknowledged
            second = await _Serve(config, data_dir, env).start()
            while True:  # the startup reconciliation (stored credentials)
                parent = journal.by_client_id(key_id, "kill-1")
                if parent.state == "DONE":
                    break
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession(second.url, headers=headers) as http:
                async with http.get(f"/orders/{parent.parent_id}",
                                    params={"market": SMART}) as resp:
                    shown = await resp.json()
                assert resp.status == 200, shown
                async with http.post("/orders", json=body) as resp:  # a retry: nothing sent
                    again = await resp.json()
                assert resp.status == 200 and again["orderId"] == parent.parent_id
    finally:
        for serve in (first, second):
            if serve is not None:
                await serve.kill()
        for task in feeds:
            task.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        await proxy.close()
    venue = _venue_orders(sims, accounts, "kill-1-")
    sent = [o.client_id for orders in venue.values() for o in orders]
    assert len(sent) == len(set(sent))  # no client order id reached a venue twice
    children = {c.client_order_id: c for c in parent.children}
    for code, orders in venue.items():
        for o in orders:  # every venue order is a journaled child, with the venue's fill
            child = children[o.client_id]
            assert child.venue == code and child.state == "DONE"
            executed = Decimal(o.executed) / 10 ** o.state.market.qty_dp
            assert Decimal(str(child.last_order["filledQuantity"])) == executed
            assert child.last_order["orderId"] == str(o.id)
    assert {c.client_order_id for c in parent.children if c.state != "NOT_SENT"} == set(sent)
    truth = sum((Decimal(o.executed) / 10 ** o.state.market.qty_dp
                 for orders in venue.values() for o in orders), Decimal(0))
    assert Decimal(str(shown["filledQuantity"])) == truth == Decimal(str(again[
        "filledQuantity"]))
    assert shown["status"] == ("FILLED" if truth == Decimal(str(body["quantity"]))
                               else "EXPIRED")
    assert parent.status == shown["status"] and again["status"] == shown["status"]
    assert len(venue["SIM2"]) == 1 and venue["SIM2"][0].executed > 0
