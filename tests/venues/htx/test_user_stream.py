"""HTX user data stream (``HtxVenue.run_user_stream``) against a fake HTX v2 WebSocket on
127.0.0.1: the ``auth`` request (HmacSHA256 over ``GET\\n<host>\\n<path>\\n<sorted params>``,
signature version 2.1, recomputed here from the test secret), then ``sub`` of ``orders#*``,
``trade.clearing#*#0`` and ``accounts.update#2``, each answered with code 200; pushes shaped
as in HTX's docs. Checked: the normalized Order, Fill and Balance values, ``on_resync`` on
every (re)connect, a dropped connection leading to a new ``auth`` and fresh subscriptions,
the secret never on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web

from astra.core._trading import Balance, Fill, Liquidity, OrderStatus, OrderType
from astra.core.credentials import ExchangeCredentials
from astra.venues.htx import HtxUrls, HtxVenue

DATA = Path(__file__).parent / "data"
SPOT = "HUOBI-SPOT-BTC-USDT"
TOPICS = {"orders#*", "trade.clearing#*#0", "accounts.update#2"}

ORDER_CREATED = {  # orders#${symbol}, eventType "creation" (HTX docs)
    "orderSize": "0.1", "orderCreateTime": 1640000000000, "accountId": 10000001,
    "orderPrice": "40000", "type": "buy-limit", "orderId": 478861479986886,
    "clientOrderId": "astraHtxStream01", "orderSource": "spot-api", "orderStatus": "submitted",
    "symbol": "btcusdt", "eventType": "creation",
}
CLEARING = {  # trade.clearing#${symbol}#0 (HTX docs)
    "eventType": "trade", "symbol": "btcusdt", "orderId": 478861479986886,
    "tradePrice": "40000", "tradeVolume": "0.04", "orderSide": "buy", "orderType": "buy-limit",
    "aggressor": False, "tradeId": 101541578884, "tradeTime": 1640000001000,
    "transactFee": "0.00008", "feeCurrency": "btc", "feeDeduct": "0", "feeDeductType": "",
    "accountId": 10000001, "source": "spot-api", "orderPrice": "40000", "orderSize": "0.1",
    "clientOrderId": "astraHtxStream01", "orderCreateTime": 1640000000000,
    "orderStatus": "partial-filled",
}
ACCOUNT = {  # accounts.update#2 (HTX docs)
    "currency": "usdt", "accountId": 10000001, "balance": "448.5", "available": "88.5",
    "changeType": "order.place", "accountType": "trade", "seqNum": "86872993928",
    "changeTime": 1640000000500,
}


class FakeHtx:
    def __init__(self, creds: ExchangeCredentials) -> None:
        self.creds = creds
        self.wire: list[str] = []
        self.auths: list[dict] = []
        self.subs: list[set[str]] = []  # per connection
        self.sockets: list[web.WebSocketResponse] = []
        self.subscribed = asyncio.Event()
        self.url = ""

    def check_auth(self, request: web.Request, params: dict) -> None:
        assert params["authType"] == "api" and params["accessKey"] == self.creds.api_key
        assert (params["signatureMethod"], params["signatureVersion"]) == ("HmacSHA256", "2.1")
        signed = {k: v for k, v in params.items() if k not in ("authType", "signature")}
        host = request.host
        # ccxt signs the path relative to ``wss://<host>``; on this plain ws:// test server
        # (no TLS) that leaves the whole URL in place of the path.
        path = f"ws://{host}{request.path}"
        payload = "\n".join(["GET", host, path, urlencode(sorted(signed.items()))])
        mac = hmac.new(self.creds.secret.encode(), payload.encode(), hashlib.sha256).digest()
        assert params["signature"] == base64.b64encode(mac).decode()
        self.auths.append(params)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subs: set[str] = set()
        self.subs.append(subs)
        self.sockets.append(ws)
        authed = False
        async for msg in ws:
            self.wire.append(msg.data)
            frame = json.loads(msg.data)
            if frame.get("action") == "req" and frame.get("ch") == "auth":
                self.check_auth(request, frame["params"])
                authed = True
                await ws.send_json({"action": "req", "code": 200, "ch": "auth", "data": {}})
            elif frame.get("action") == "sub":
                assert authed, "subscribed before auth"
                subs.add(frame["ch"])
                await ws.send_json({"action": "sub", "code": 200, "ch": frame["ch"], "data": {}})
                if subs >= TOPICS:
                    self.subscribed.set()
        return ws

    async def push(self, ch: str, data: dict) -> None:
        await self.sockets[-1].send_json({"action": "push", "ch": ch, "data": data})

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws/v2", self.ws)
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
        exchange="HUOBI", api_key=secrets.token_hex(12), secret=secrets.token_hex(18))
    fake = FakeHtx(creds)
    body = json.loads((DATA / "private_rest.json").read_text())
    # Spot only: with swaps loaded a second stream (test_user_stream_swaps.py) would run
    # against this spot-only fake, failing and resyncing in the background.
    instruments = {"spot": body["symbols"]}

    async def markets():
        return instruments

    async with fake.running():
        venue = HtxVenue(urls=HtxUrls.for_server(fake.url), markets_source=markets)
        try:
            yield fake, venue, creds
        finally:
            await venue.close()


async def _wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


def test_the_private_websocket_url_is_configurable():
    from astra.venues.htx import from_config

    assert HtxUrls().spot_private_ws == "wss://api.huobi.pro/ws/v2"
    venue = from_config("HUOBI", {"spot_private_ws": "wss://api-aws.huobi.pro/ws/v2"})
    assert venue.user_stream_client({}).urls["api"]["ws"]["api"]["spot"]["private"] == (
        "wss://api-aws.huobi.pro/ws/v2")


async def test_orders_fills_and_balances_are_normalized_and_a_drop_resyncs(env):
    fake, venue, creds = env
    sink = Sink()
    task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
    try:
        await _wait(fake.subscribed)
        assert sink.resyncs and len(fake.auths) == 1

        await fake.push("orders#btcusdt", ORDER_CREATED)
        await sink.until(lambda: sink.orders)
        order = sink.orders[-1]
        assert (order.order_id, order.client_order_id, order.market) == (
            "478861479986886", "astraHtxStream01", SPOT)
        assert (order.side, order.type, order.status) == ("BUY", OrderType.LIMIT, OrderStatus.NEW)
        assert (order.quantity, order.price, order.created_at) == (0.1, 40000.0, 1640000000000)

        await fake.push("trade.clearing#btcusdt#0", CLEARING)
        await sink.until(lambda: sink.fills)
        assert sink.fills[-1] == Fill(
            fill_id="101541578884", order_id="478861479986886", market=SPOT, side="BUY",
            price=40000.0, quantity=0.04, time=1640000001000, fee=0.00008, fee_asset="BTC",
            liquidity=Liquidity.MAKER)

        await fake.push("accounts.update#2", ACCOUNT)
        await sink.until(lambda: sink.balances)
        assert sink.balances[-1] == Balance(asset="USDT", free=88.5, locked=360.0, total=448.5,
                                            account="spot")

        resyncs = len(sink.resyncs)
        fake.subscribed.clear()
        await fake.sockets[-1].close()
        await _wait(fake.subscribed)
        assert len(sink.resyncs) > resyncs and len(fake.auths) == 2 and fake.subs[-1] >= TOPICS
        await fake.push("accounts.update#2", {**ACCOUNT, "balance": "90", "available": "90"})
        await sink.until(lambda: sink.balances[-1].total == 90.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for text in fake.wire:
        assert creds.secret not in text
