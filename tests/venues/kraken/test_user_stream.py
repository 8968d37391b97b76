"""Kraken spot user data (``KrakenVenue.run_user_stream``) against a fake Kraken on 127.0.0.1:
REST ``POST /0/private/GetWebSocketsToken`` (``API-Key``/``API-Sign`` recomputed here from
Kraken's documented algorithm, the secret never on the wire) and the v2 private WebSocket,
which checks that both ``subscribe`` requests carry the token just issued, then pushes
``executions`` and ``balances`` messages shaped as in Kraken's WebSocket v2 docs.

Checked: the normalized Order/Fill/Balance values equal the payloads (partial updates merged
into the order they belong to), a dropped connection -> ``on_resync``, a new token and a new
subscription, a refused subscription retried the same way, and cancellation closing it all."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest
from aiohttp import WSMsgType, web

from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from astra.core.credentials import ExchangeCredentials
from astra.venues.kraken import KrakenVenue

SPOT = "KRAKEN-SPOT-XBT-USD"
ETH = "KRAKEN-SPOT-ETH-USD"
TS0 = "2023-09-22T10:33:05.709950Z"
TS0_MS = 1695378785709
TS1 = "2023-09-22T10:34:00.000000Z"
TS1_MS = 1695378840000
TS2 = "2023-09-22T10:35:12.345000Z"
TS2_MS = 1695378912345
TS3 = "2023-09-22T10:36:00.500000Z"
TS3_MS = 1695378960500
OPEN_ID = "OQ2CJN-4NIYT-QJ3D7A"
NEW_ID = "O7IBL5-O2V6X-EEXY4U"
CID = "astraTest0000001"


def executions(kind: str, data: list[dict], sequence: int) -> dict:
    return {"channel": "executions", "type": kind, "data": data, "sequence": sequence}


# -- doc-shaped messages (Kraken WebSocket v2, "executions" and "balances") --------------------
SNAPSHOT = executions("snapshot", [{
    "order_id": OPEN_ID, "symbol": "ETH/USD", "order_qty": 1.25, "cum_qty": 0.0,
    "cum_cost": 0.0, "fee_usd_equiv": 0.0, "avg_price": 0.0, "order_type": "limit",
    "limit_price": 2500.5, "side": "buy", "time_in_force": "GTC", "order_status": "new",
    "exec_type": "new", "order_userref": 0, "timestamp": TS0, "post_only": True,
    "reduce_only": False,
}], 1)
PENDING = executions("update", [{
    "order_id": NEW_ID, "cl_ord_id": CID, "symbol": "BTC/USD", "order_qty": 0.5,
    "order_type": "limit", "limit_price": 64000.0, "time_in_force": "GTC", "side": "sell",
    "post_only": False, "reduce_only": False, "order_userref": 0, "timestamp": TS1,
    "exec_type": "pending_new", "order_status": "pending_new",
}], 2)
NEW = executions("update", [{
    "order_id": NEW_ID, "cl_ord_id": CID, "timestamp": TS1, "exec_type": "new",
    "order_status": "new",
}], 3)
TRADE = executions("update", [{
    "order_id": NEW_ID, "cl_ord_id": CID, "exec_id": "TZX2WP-XSEOP-FP7WYR",
    "exec_type": "trade", "trade_id": 365573, "symbol": "BTC/USD", "side": "sell",
    "last_qty": 0.2, "last_price": 64000.0, "liquidity_ind": "m", "cost": 12800.0,
    "order_userref": 0, "order_status": "partially_filled", "order_type": "limit",
    "fee_usd_equiv": 20.48, "timestamp": TS2, "fees": [{"asset": "USD", "qty": 20.48}],
    "cum_qty": 0.2, "cum_cost": 12800.0, "avg_price": 64000.0,
}], 4)
CANCELED = executions("update", [{
    "order_id": NEW_ID, "cl_ord_id": CID, "timestamp": TS3, "order_status": "canceled",
    "exec_type": "canceled", "cum_qty": 0.2, "cum_cost": 12800.0, "fee_usd_equiv": 20.48,
    "avg_price": 64000.0, "order_userref": 0, "cancel_reason": "User requested",
    "reason": "User requested",
}], 5)
BALANCES_SNAPSHOT = {"channel": "balances", "type": "snapshot", "sequence": 1, "data": [
    {"asset": "BTC", "asset_class": "currency", "balance": 1.5, "wallets": [
        {"type": "spot", "id": "main", "balance": 1.2},
        {"type": "earn", "id": "flexible", "balance": 0.3}]},
    {"asset": "USD", "asset_class": "currency", "balance": 10000.0, "wallets": [
        {"type": "spot", "id": "main", "balance": 10000.0}]},
]}
BALANCES_UPDATE = {"channel": "balances", "type": "update", "sequence": 2, "data": [
    {"ledger_id": "DATKX6-PEHL1-HZKND8", "ref_id": "TZX2WP-XSEOP-FP7WYR", "timestamp": TS2,
     "type": "trade", "asset": "USD", "asset_class": "currency", "category": "trade",
     "wallet_type": "spot", "wallet_id": "main", "amount": 12779.52, "fee": 20.48,
     "balance": 22779.52},
    {"ledger_id": "DATKX6-PEHL1-HZKND9", "ref_id": "RKB2ANZ-X4WMD-AJNDYW",
     "timestamp": TS2, "type": "earn", "asset": "BTC", "asset_class": "currency",
     "category": "allocation", "wallet_type": "earn", "wallet_id": "flexible",
     "amount": 0.1, "fee": 0.0, "balance": 0.4},
]}
SCRIPT = [SNAPSHOT, BALANCES_SNAPSHOT, PENDING, NEW, TRADE, BALANCES_UPDATE, CANCELED]


@dataclass
class FakeKrakenAuth:
    """``/0/private/GetWebSocketsToken`` issues ``token-<n>``; ``/v2`` wants two subscribes
    with the latest token, acknowledges them (or refuses the connections numbered in
    ``refuse``), sends the ``scripts`` of that connection (by number, 1-based), then
    heartbeats until ``drop`` is set (it closes the socket) or the client leaves."""

    secret: str
    api_key: str
    scripts: dict[int, list[dict]] = field(default_factory=dict)
    refuse: set[int] = field(default_factory=set)
    tokens: list[str] = field(default_factory=list)
    token_requests: list[tuple[dict, str]] = field(default_factory=list)
    subscribes: list[list[dict]] = field(default_factory=list)
    wire: list[str] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    drop: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def token(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = dict(request.headers)
        self.wire.append(body + " " + " ".join(headers.values()))
        self.token_requests.append((headers, body))
        form = dict(parse_qsl(body, keep_blank_values=True))
        digest = hashlib.sha256((form.get("nonce", "") + body).encode()).digest()
        mac = hmac.new(base64.b64decode(self.secret), request.path.encode() + digest,
                       hashlib.sha512)
        if (headers.get("API-Key") != self.api_key
                or headers.get("API-Sign") != base64.b64encode(mac.digest()).decode()):
            return web.json_response({"error": ["EAPI:Invalid signature"], "result": {}})
        token = f"token-{len(self.tokens) + 1}-{secrets.token_hex(4)}"
        self.tokens.append(token)
        return web.json_response({"error": [], "result": {"token": token, "expires": 900}})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        status = {"api_version": "v2", "connection_id": number, "system": "online",
                  "version": "2.0.0"}
        await ws.send_json({"channel": "status", "type": "update", "data": [status]})
        received: list[dict] = []
        self.subscribes.append(received)
        try:
            while len(received) < 2:
                msg = await ws.receive(timeout=5)
                if msg.type is not WSMsgType.TEXT:
                    return ws  # the client left (e.g. after a refusal)
                self.wire.append(msg.data)
                req = json.loads(msg.data)
                received.append(req)
                params = req["params"]
                ok = (req["method"] == "subscribe" and params.get("token") == self.tokens[-1]
                      and number not in self.refuse)
                reply = {"method": "subscribe", "req_id": req.get("req_id"), "success": ok,
                         "time_in": TS0, "time_out": TS0}
                if ok:
                    reply["result"] = {k: v for k, v in params.items() if k != "token"}
                else:
                    reply["error"] = "EAPI:Invalid token"
                await ws.send_json(reply)
            self.changed.set()
            for message in self.scripts.get(number, []):
                await ws.send_json(message)
            while not ws.closed:
                if self.drop.is_set():
                    self.drop.clear()
                    await ws.close()
                    break
                await ws.send_json({"channel": "heartbeat"})
                with contextlib.suppress(TimeoutError):  # reads the client's close, if any
                    if (await ws.receive(timeout=0.05)).type is not WSMsgType.TEXT:
                        break
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.closed += 1
            self.changed.set()
        return ws

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_post("/0/private/GetWebSocketsToken", self.token)
        app.router.add_get("/v2", self.ws)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.changed = asyncio.Event()

    def on_orders(self, orders: list[Order], fills: list[Fill]) -> None:
        self.events.append(("orders", orders, fills))
        self.changed.set()

    def on_balances(self, balances: list[Balance]) -> None:
        self.events.append(("balances", balances))
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))
        self.changed.set()

    def orders(self) -> list[Order]:
        return [o for e in self.events if e[0] == "orders" for o in e[1]]

    def fills(self) -> list[Fill]:
        return [f for e in self.events if e[0] == "orders" for f in e[2]]

    def balances(self) -> list[list[Balance]]:
        return [e[1] for e in self.events if e[0] == "balances"]

    def resyncs(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "resync"]


async def until(condition, *events: asyncio.Event) -> None:
    async with asyncio.timeout(10):
        while not condition():
            for event in events:
                event.clear()
            if condition():
                return
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


@dataclass
class Env:
    fake: FakeKrakenAuth
    venue: KrakenVenue
    creds: ExchangeCredentials
    sink: CollectingSink
    task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(
            self.venue.run_user_stream(self.creds.ccxt_config(), self.sink))

    async def wait(self, condition) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # surface a crash instead of waiting out the timeout
        await until(condition, self.sink.changed, self.fake.changed)


@pytest.fixture
async def env(doc_asset_pairs):
    creds = ExchangeCredentials(
        exchange="KRAKEN",
        api_key="kk" + secrets.token_urlsafe(40),
        secret=base64.b64encode(secrets.token_bytes(64)).decode(),
    )
    fake = FakeKrakenAuth(secret=creds.secret, api_key=creds.api_key)
    async with fake.running():
        port = fake.url.rsplit(":", 1)[1]
        venue = KrakenVenue.from_config("KRAKEN", {
            "rest": fake.url, "auth_ws": f"ws://127.0.0.1:{port}/v2",
            "ws": "ws://127.0.0.1:9/v2", "futures_ws": "ws://127.0.0.1:9/ws/v1",
            "futures_rest": "http://127.0.0.1:9", "futures": False,
        })
        venue._markets_source = lambda: copy.deepcopy(doc_asset_pairs)
        e = Env(fake, venue, creds, CollectingSink())
        try:
            yield e
        finally:
            if e.task is not None:
                e.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    async with asyncio.timeout(5):
                        await e.task
            await venue.close()


def assert_subscribed(subscribes: list[dict], token: str) -> None:
    executions_req, balances_req = subscribes
    assert executions_req["method"] == balances_req["method"] == "subscribe"
    assert executions_req["params"] == {"channel": "executions", "token": token,
                                        "snap_orders": True, "snap_trades": False}
    assert balances_req["params"] == {"channel": "balances", "token": token, "snapshot": True}


async def test_executions_and_balances_are_normalized(env):
    env.fake.scripts[1] = SCRIPT
    env.start()
    await env.wait(lambda: len(env.sink.orders()) >= 5 and len(env.sink.balances()) >= 2)

    assert env.venue.urls.auth_ws.endswith("/v2")
    (token,) = env.fake.tokens
    assert_subscribed(env.fake.subscribes[0], token)
    headers, body = env.fake.token_requests[0]
    assert headers["API-Key"] == env.creds.api_key and "nonce=" in body
    for text in env.fake.wire:  # REST and WebSocket: the secret never travels
        assert env.creds.secret not in text and env.creds.secret[:24] not in text

    assert env.sink.events[0] == ("resync", "user stream (re)connected")
    open_order, pending, new, partial, canceled = env.sink.orders()
    assert open_order == Order(
        order_id=OPEN_ID, client_order_id="", market=ETH, side=Side.BUY, type=OrderType.LIMIT,
        quantity=1.25, filled_quantity=0.0, status=OrderStatus.NEW, price=2500.5,
        time_in_force=TimeInForce.GTC, post_only=True, reduce_only=False, created_at=TS0_MS,
        updated_at=TS0_MS)
    expected = Order(
        order_id=NEW_ID, client_order_id=CID, market=SPOT, side=Side.SELL,
        type=OrderType.LIMIT, quantity=0.5, filled_quantity=0.0, status=OrderStatus.NEW,
        price=64000.0, time_in_force=TimeInForce.GTC, post_only=False, reduce_only=False,
        created_at=TS1_MS, updated_at=TS1_MS)
    assert pending == expected and new == expected
    assert partial == Order(
        **{**_fields(expected), "filled_quantity": 0.2, "average_price": 64000.0,
           "status": OrderStatus.PARTIALLY_FILLED, "updated_at": TS2_MS})
    # The cancel carries no symbol, side or quantity: merged into the order seen before.
    assert canceled == Order(
        **{**_fields(partial), "status": OrderStatus.CANCELED, "updated_at": TS3_MS})

    (fill,) = env.sink.fills()
    assert fill == Fill(
        fill_id="TZX2WP-XSEOP-FP7WYR", order_id=NEW_ID, client_order_id=CID, market=SPOT,
        side=Side.SELL, price=64000.0, quantity=0.2, time=TS2_MS, fee=20.48, fee_asset="USD",
        liquidity=Liquidity.MAKER)
    trade_event = next(e for e in env.sink.events if e[0] == "orders" and e[2])
    assert trade_event[1] == [partial]  # the order and its fill arrive together

    snapshot, update = env.sink.balances()
    assert snapshot == [
        Balance(asset="BTC", free=1.2, locked=0.0, total=1.2, account="spot"),  # the spot wallet
        Balance(asset="USD", free=10000.0, locked=0.0, total=10000.0, account="spot"),
    ]
    assert update == [Balance(asset="USD", free=22779.52, locked=0.0, total=22779.52,
                              account="spot")]
    assert env.sink.resyncs() == ["user stream (re)connected"]


def _fields(order: Order) -> dict:
    return {f: getattr(order, f) for f in order.__struct_fields__}


async def test_dropped_connection_resyncs_with_a_new_token(env):
    env.fake.scripts[1] = [SNAPSHOT]
    env.fake.scripts[2] = [PENDING, TRADE]
    env.start()
    await env.wait(lambda: len(env.sink.orders()) == 1)
    env.fake.drop.set()
    await env.wait(lambda: len(env.sink.fills()) == 1)

    assert env.fake.connections == 2 and len(env.fake.tokens) == 2
    first, second = env.fake.tokens
    assert first != second
    assert_subscribed(env.fake.subscribes[0], first)
    assert_subscribed(env.fake.subscribes[1], second)
    assert env.sink.resyncs() == ["user stream (re)connected", "user stream lost",
                                  "user stream (re)connected"]
    kinds = [e[0] for e in env.sink.events]
    assert kinds == ["resync", "orders", "resync", "resync", "orders", "orders"]
    (fill,) = env.sink.fills()
    assert (fill.market, fill.quantity, fill.price) == (SPOT, 0.2, 64000.0)


async def test_refused_subscription_is_retried_with_a_fresh_token(env):
    env.fake.refuse.add(1)
    env.fake.scripts[2] = [BALANCES_SNAPSHOT]
    env.start()
    await env.wait(lambda: len(env.sink.balances()) == 1)
    assert env.fake.connections == 2 and len(env.fake.tokens) == 2
    assert_subscribed(env.fake.subscribes[1], env.fake.tokens[1])
    assert env.sink.resyncs()[:2] == ["user stream (re)connected", "user stream lost"]


async def test_cancel_closes_the_connection(env):
    env.start()
    await env.wait(lambda: env.fake.connections == 1 and len(env.fake.subscribes[0]) == 2)
    env.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await env.task
    env.task = None
    await env.wait(lambda: env.fake.closed == 1)
    assert env.sink.resyncs() == ["user stream (re)connected"]


def test_auth_ws_is_configurable():
    venue = KrakenVenue.from_config("KRAKEN", {"auth_ws": "wss://example.invalid/v2"})
    assert venue.urls.auth_ws == "wss://example.invalid/v2"
    assert KrakenVenue().urls.auth_ws == "wss://ws-auth.kraken.com/v2"
