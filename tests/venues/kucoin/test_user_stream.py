"""KuCoin user data stream (``KucoinVenue.run_user_stream``) against a fake KuCoin on
127.0.0.1: ``POST /api/v1/bullet-private`` (signed with KuCoin's v2 API-key scheme, checked
here from the test secret) hands out a single-use token and the fake's WebSocket endpoint;
the WebSocket checks the token, welcomes, acks private subscribes, answers pings and pushes
order, match and balance events shaped as in KuCoin's docs. Checked: the normalized Order,
Fill and Balance values, ``on_resync`` on every (re)connect, a dropped connection leading to
a fresh token and fresh subscriptions, no secret or passphrase on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
from pathlib import Path

import pytest
from aiohttp import web

from astra.core._trading import Balance, Fill, Liquidity, OrderStatus, OrderType
from astra.core.credentials import ExchangeCredentials
from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin.symbols import parse_ccxt_markets

DATA = Path(__file__).parent / "data"
SPOT = "KUCOIN-SPOT-BTC-USDT"
OID = "5efab07953bdea00089965d2"

ORDER_OPEN = {  # /spotMarket/tradeOrders, type "open" (KuCoin docs)
    "symbol": "BTC-USDT", "orderType": "limit", "side": "buy", "orderId": OID,
    "type": "open", "orderTime": 1593487481683297666, "size": "0.1", "filledSize": "0",
    "price": "9000.0", "clientOid": "astraUserStream01", "remainSize": "0.1",
    "status": "open", "ts": 1593487481683297666,
}
ORDER_MATCH = {  # type "match": a trade of the order
    "symbol": "BTC-USDT", "orderType": "limit", "side": "buy", "liquidity": "maker",
    "orderId": OID, "type": "match", "orderTime": 1593487481683297666, "size": "0.1",
    "filledSize": "0.04", "price": "9000.0", "matchPrice": "9000.0", "matchSize": "0.04",
    "tradeId": "5efab07a4ee4c7000a82d6d9", "clientOid": "astraUserStream01",
    "remainSize": "0.06", "status": "match", "ts": 1593487482038606180,
}
BALANCE = {  # /account/balance (KuCoin docs)
    "accountId": "5c2b2a2c3f1a3c08e4f1a111", "available": "88.5", "availableChange": "-360",
    "currency": "USDT", "hold": "360", "holdChange": "360", "relationEvent": "trade.hold",
    "relationEventId": "5c21e80303aa677bd09d7dff", "relationContext": {"symbol": "BTC-USDT",
    "orderId": OID}, "time": "1593487481683", "total": "448.5",
}


def _b64_hmac(secret: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


SPOT_TOPICS = frozenset({"/spotMarket/tradeOrders", "/account/balance"})


class FakeKucoin:
    """One KuCoin REST base and its private WebSocket; ``subscribed`` is set once a connection
    has subscribed every topic of ``topics`` (the spot ones by default; the futures test
    serves the futures REST base with its own instance)."""

    def __init__(self, creds: ExchangeCredentials, topics: frozenset[str] = SPOT_TOPICS) -> None:
        self.creds = creds
        self.topics = topics
        self.tokens: set[str] = set()
        self.bullets: list[dict] = []  # headers of each bullet-private call
        self.bullet_requests: list[tuple[str, str]] = []  # (path_qs, body) of each
        self.connects: list[dict] = []  # the query of each accepted WebSocket
        self.closed = 0  # WebSocket connections ended (either side)
        self.wire: list[str] = []  # everything received, REST bodies and WS frames
        self.subscribes: list[list[dict]] = []  # per connection
        self.sockets: list[web.WebSocketResponse] = []
        self.subscribed = asyncio.Event()
        self._ids = itertools.count(1)
        self.url = ""

    async def bullet(self, request: web.Request) -> web.Response:
        body = await request.text()
        h = request.headers
        self.wire.append(json.dumps(dict(h)) + body)
        assert h["KC-API-KEY"] == self.creds.api_key
        assert h["KC-API-SIGN"] == _b64_hmac(
            self.creds.secret, h["KC-API-TIMESTAMP"] + "POST" + request.path_qs + body)
        assert h["KC-API-PASSPHRASE"] == _b64_hmac(self.creds.secret, self.creds.passphrase)
        self.bullets.append(dict(h))
        self.bullet_requests.append((request.path_qs, body))
        token = f"tok{next(self._ids)}"
        self.tokens.add(token)
        ws = "ws" + self.url[len("http"):] + "/endpoint"
        return web.json_response({"code": "200000", "data": {"token": token, "instanceServers": [
            {"endpoint": ws, "encrypt": True, "protocol": "websocket", "pingInterval": 18000,
             "pingTimeout": 10000}]}})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        token = request.query.get("token")
        if token not in self.tokens:
            raise web.HTTPUnauthorized()
        self.tokens.discard(token)  # single use
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subs: list[dict] = []
        self.subscribes.append(subs)
        self.sockets.append(ws)
        self.connects.append(dict(request.query))
        await ws.send_json({"id": request.query.get("connectId"), "type": "welcome"})
        try:
            async for msg in ws:
                self.wire.append(msg.data)
                frame = json.loads(msg.data)
                if frame["type"] == "ping":
                    await ws.send_json({"id": frame["id"], "type": "pong"})
                elif frame["type"] == "subscribe":
                    subs.append(frame)
                    await ws.send_json({"id": frame["id"], "type": "ack"})
                    if {s["topic"] for s in subs} >= self.topics:
                        self.subscribed.set()
        finally:
            self.closed += 1
        return ws

    async def push(self, topic: str, subject: str, data: dict) -> None:
        await self.sockets[-1].send_json({"type": "message", "topic": topic, "subject": subject,
                                          "channelType": "private", "data": data})

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_post("/api/v1/bullet-private", self.bullet)
        app.router.add_get("/endpoint", self.ws)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            for ws in self.sockets:
                await ws.close()
            await runner.cleanup()


class Sink:
    def __init__(self) -> None:
        self.orders: list = []
        self.fills: list = []
        self.balances: list = []
        self.resyncs: list[str] = []
        self.changed = asyncio.Event()

    def on_orders(self, orders, fills) -> None:
        self.orders += orders
        self.fills += fills
        self.changed.set()

    def on_balances(self, balances) -> None:
        self.balances += balances
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self.changed.set()

    async def until(self, check) -> None:
        async with asyncio.timeout(5):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def env():
    creds = ExchangeCredentials(  # test credentials made here
        exchange="KUCOIN", api_key=secrets.token_hex(12), secret=secrets.token_hex(18),
        passphrase="pass-" + secrets.token_urlsafe(12))
    fake = FakeKucoin(creds)
    symbols = json.loads((DATA / "private_rest.json").read_text())["symbols"]

    async def markets():
        return parse_ccxt_markets(symbols, {"data": []})

    async with fake.running():
        venue = KucoinVenue(urls=KucoinUrls.for_server(fake.url), markets_source=markets)
        try:
            yield fake, venue, creds
        finally:
            await venue.close()


async def _wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


async def test_orders_fills_and_balances_are_normalized_and_a_drop_resyncs(env):
    fake, venue, creds = env
    sink = Sink()
    task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
    try:
        await _wait(fake.subscribed)
        assert sink.resyncs  # told to re-read REST before anything streams
        subs = fake.subscribes[-1]
        assert all(s["privateChannel"] is True and s["response"] is True for s in subs)

        await fake.push("/spotMarket/tradeOrders", "orderChange", ORDER_OPEN)
        await sink.until(lambda: sink.orders)
        order = sink.orders[-1]
        assert (order.order_id, order.client_order_id, order.market) == (
            OID, "astraUserStream01", SPOT)
        assert (order.side, order.type, order.status) == ("BUY", OrderType.LIMIT, OrderStatus.NEW)
        assert (order.quantity, order.filled_quantity, order.price) == (0.1, 0.0, 9000.0)
        assert order.created_at == 1593487481683  # KuCoin's nanoseconds, as milliseconds

        await fake.push("/spotMarket/tradeOrders", "orderChange", ORDER_MATCH)
        await sink.until(lambda: sink.fills and len(sink.orders) >= 2)
        fill = sink.fills[-1]
        assert fill == Fill(fill_id="5efab07a4ee4c7000a82d6d9", order_id=OID, market=SPOT,
                            side="BUY", price=9000.0, quantity=0.04, time=1593487482038,
                            fee=fill.fee, fee_asset=fill.fee_asset, liquidity=Liquidity.MAKER)
        order = sink.orders[-1]
        assert (order.status, order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 0.04)

        await fake.push("/account/balance", "account.balance", BALANCE)
        await sink.until(lambda: sink.balances)
        assert sink.balances[-1] == Balance(asset="USDT", free=88.5, locked=360.0, total=448.5,
                                            account="spot")

        # A dropped connection: resync, a fresh token, the topics subscribed again.
        resyncs, connections = len(sink.resyncs), len(fake.subscribes)
        fake.subscribed.clear()
        await fake.sockets[-1].close()
        await _wait(fake.subscribed)
        assert len(sink.resyncs) > resyncs
        assert len(fake.subscribes) > connections and len(fake.bullets) >= 2
        await fake.push("/account/balance", "account.balance", {**BALANCE, "available": "90",
                                                                  "hold": "0", "total": "90"})
        await sink.until(lambda: sink.balances[-1].total == 90.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for text in fake.wire:
        assert creds.secret not in text and creds.passphrase not in text
