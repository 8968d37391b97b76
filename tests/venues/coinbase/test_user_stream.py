"""Coinbase user data (``CoinbaseVenue.run_user_stream``) against a fake on 127.0.0.1: the
``user`` subscription on the private endpoint carries an ES256 JWT that verifies with the
CDP key (the secret never on the wire); doc-shaped ``user`` messages
(https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels#user-channel) come out as
Astra orders and (derived) fills; balances come from REST ``/api/v3/brokerage/accounts`` at
connection and after a fill; a dropped connection resyncs and resubscribes."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets

import pytest
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from astra.core._trading import OrderStatus, OrderType, TimeInForce
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue

from .test_trading import ACCOUNTS, PRODUCTS

ROW = {
    "order_id": "OID-1", "client_order_id": "astra1", "cumulative_quantity": "0",
    "leaves_quantity": "0.002", "avg_price": "0", "total_fees": "0", "status": "OPEN",
    "product_id": "BTC-USD", "creation_time": "2024-03-01T10:00:00.123456Z",
    "order_side": "BUY", "order_type": "Limit", "limit_price": "60000", "stop_price": "",
    "filled_value": "0", "number_of_fills": "0", "time_in_force": "GOOD_UNTIL_CANCELLED",
    "post_only": False,
}
FILLED = {**ROW, "cumulative_quantity": "0.001", "leaves_quantity": "0.001",
          "avg_price": "59990", "total_fees": "0.36", "filled_value": "59.99",
          "number_of_fills": "1"}


def _msg(kind: str, rows: list[dict], seq: int) -> dict:
    return {"channel": "user", "client_id": "", "timestamp": "2024-03-01T10:00:05.25012345Z",
            "sequence_num": seq, "events": [{"type": kind, "orders": rows}]}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class Fake:
    def __init__(self) -> None:
        self.subscribes: list[dict] = []
        self.raw: list[str] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.balance_calls = 0

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            self.raw.append(msg.data)
            body = json.loads(msg.data)
            if body.get("type") == "subscribe":
                self.subscribes.append(body)
                # after a reconnection the snapshot already shows the fill
                await ws.send_json(_msg("snapshot", [ROW if len(self.subscribes) == 1
                                                     else FILLED], 0))
                await ws.send_json(_msg("update", [FILLED], 1))
        return ws

    async def accounts(self, request: web.Request) -> web.Response:
        self.balance_calls += 1
        self.raw.append(request.headers.get("Authorization", ""))
        return web.json_response(ACCOUNTS)


class Collect:
    def __init__(self) -> None:
        self.orders, self.fills, self.balances, self.events = [], [], [], []

    def on_orders(self, orders, fills) -> None:
        self.orders += orders
        self.fills += fills

    def on_balances(self, balances) -> None:
        self.balances.append(balances)

    def on_resync(self, reason: str) -> None:
        self.events.append(reason)


async def _until(condition, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        for _ in iter(int, 1):  # until the condition holds (bounded by the timeout)
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def fake():
    fake = Fake()
    app = web.Application()
    app.router.add_get("/user", fake.ws)
    app.router.add_get("/api/v3/brokerage/accounts", fake.accounts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.base, fake.ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/user"
    yield fake
    await runner.cleanup()


async def _products() -> list[dict]:
    return PRODUCTS


def test_private_ws_default():
    assert CoinbaseUrls().private_ws == "wss://advanced-trade-ws-user.coinbase.com"


async def test_user_stream(fake):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    name = f"organizations/{secrets.token_hex(8)}/apiKeys/{secrets.token_hex(8)}"
    venue = CoinbaseVenue("COINBASE", CoinbaseUrls(rest=fake.base, private_ws=fake.ws_url),
                          markets_source=_products)
    sink = Collect()
    task = asyncio.create_task(venue.run_user_stream({"apiKey": name, "secret": pem}, sink))
    try:
        await _until(lambda: len(sink.orders) >= 2 and len(sink.balances) >= 2)
        sub = fake.subscribes[0]
        assert sub["channel"] == "user"
        head, payload, signature = sub["jwt"].split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(payload))
        assert header["alg"] == "ES256" and header["kid"] == name and claims["sub"] == name
        raw = _b64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        key.public_key().verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        assert all(line not in text for text in fake.raw for line in pem.splitlines()[1:-1])
        assert sink.events[0] == "connecting"

        opened, partial = sink.orders[:2]
        for order in (opened, partial):
            assert order.market == "COINBASE-SPOT-BTC-USD" and order.order_id == "OID-1"
            assert order.client_order_id == "astra1" and order.side == "BUY"
            assert order.type == OrderType.LIMIT and order.time_in_force == TimeInForce.GTC
            assert order.quantity == 0.002 and order.price == 60000
            assert order.created_at == 1709287200123
        assert opened.status == OrderStatus.NEW and opened.filled_quantity == 0
        assert partial.status == OrderStatus.PARTIALLY_FILLED
        assert partial.filled_quantity == 0.001 and partial.average_price == 59990
        assert partial.updated_at == 1709287205250

        (fill,) = sink.fills
        assert fill.fill_id == "OID-1:1" and fill.order_id == "OID-1"
        assert fill.market == "COINBASE-SPOT-BTC-USD" and fill.side == "BUY"
        assert fill.price == pytest.approx(59990) and fill.quantity == 0.001
        assert fill.fee == pytest.approx(0.36) and fill.fee_asset == "USD"
        assert fill.time == 1709287205250

        by_asset = {b.asset: b for b in sink.balances[-1]}
        assert by_asset["BTC"].free == 0.5 and by_asset["USD"].free == 1000

        await fake.sockets[0].close()
        await _until(lambda: len(fake.subscribes) >= 2 and len(sink.orders) >= 4)
        assert any(e.startswith("user stream lost") for e in sink.events)
        assert sink.events.count("connecting") >= 2
        assert len(sink.fills) == 1  # the snapshot after reconnecting is a baseline only
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await venue.close()
