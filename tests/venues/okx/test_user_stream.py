"""OKX user data (``OkxVenue.run_user_stream``) against a fake private WebSocket on
127.0.0.1: the login message is checked (signature recomputed from the test secret; the
secret never on the wire), then the ``orders`` (instType ANY) and ``account`` subscriptions;
doc-shaped pushes (https://www.okx.com/docs-v5/en/#order-book-trading-trade-ws-order-channel,
#trading-account-websocket-account-channel) must come out as Astra orders, fills and
balances with the pushed values; a dropped connection resyncs, logs in and resubscribes."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from astra.core._trading import Liquidity, OrderStatus, OrderType, TimeInForce
from astra.venues.okx import OkxUrls, OkxVenue, from_config

INSTRUMENTS = (Path(__file__).parent / "data" / "instruments.json").read_text()
KEY, SECRET, PASSPHRASE = "okx-test-key", "okx-test-secret-b64==", "okx-pass"

ORDER_FILL = {
    "accFillSz": "0.01", "algoClOrdId": "", "algoId": "", "amendResult": "", "avgPx": "60000",
    "cTime": "1700000000000", "cancelSource": "", "category": "normal", "ccy": "",
    "clOrdId": "astra1", "code": "0", "execType": "T", "fee": "-0.00001", "feeCcy": "BTC",
    "fillFee": "-0.00001", "fillFeeCcy": "BTC", "fillNotionalUsd": "600", "fillPx": "60000",
    "fillSz": "0.01", "fillTime": "1700000000500", "instId": "BTC-USDT", "instType": "SPOT",
    "lever": "0", "msg": "", "notionalUsd": "1200", "ordId": "601", "ordType": "limit",
    "pnl": "0", "posSide": "", "px": "60000", "rebate": "0", "rebateCcy": "USDT",
    "reduceOnly": "false", "side": "buy", "slOrdPx": "", "slTriggerPx": "",
    "state": "partially_filled", "sz": "0.02", "tag": "", "tdMode": "cash", "tgtCcy": "",
    "tpOrdPx": "", "tpTriggerPx": "", "tradeId": "9001", "uTime": "1700000000500",
}
ORDER_LIVE = {
    **ORDER_FILL, "accFillSz": "0", "avgPx": "", "clOrdId": "astra2", "execType": "",
    "fillFee": "0", "fillFeeCcy": "", "fillPx": "", "fillSz": "0", "fillTime": "",
    "instId": "BTC-USDT-SWAP", "instType": "SWAP", "ordId": "602", "px": "61000",
    "side": "sell", "state": "live", "sz": "3", "tdMode": "cross", "tradeId": "",
    "uTime": "1700000001000", "cTime": "1700000001000",
}
ACCOUNT = {
    "arg": {"channel": "account", "uid": "77"},
    "eventType": "snapshot", "curPage": 1, "lastPage": True,
    "data": [{
        "uTime": "1700000002000", "totalEq": "1500", "isoEq": "0", "adjEq": "", "ordFroz": "",
        "imr": "", "mmr": "", "notionalUsd": "", "mgnRatio": "",
        "details": [
            {"ccy": "USDT", "eq": "1000.5", "cashBal": "1000.5", "availBal": "900.5",
             "frozenBal": "100", "ordFrozen": "100", "availEq": "", "uTime": "1700000002000"},
            {"ccy": "BTC", "eq": "0.02", "cashBal": "0.02", "availBal": "0.015",
             "frozenBal": "0.005", "ordFrozen": "0.005", "availEq": "0.015",
             "uTime": "1700000002000"},
        ],
    }],
}


def _sign(timestamp: str) -> str:
    mac = hmac.new(SECRET.encode(), f"{timestamp}GET/users/self/verify".encode(), "sha256")
    return base64.b64encode(mac.digest()).decode()


class FakePrivate:
    def __init__(self) -> None:
        self.connections = 0
        self.raw: list[str] = []
        self.logins: list[dict] = []
        self.subscribed: list[list[dict]] = []  # per connection
        self.sockets: list[web.WebSocketResponse] = []

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        subs: list[dict] = []
        self.subscribed.append(subs)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            self.raw.append(msg.data)
            if msg.data == "ping":
                await ws.send_str("pong")
                continue
            body = json.loads(msg.data)
            if body.get("op") == "login":
                args = body["args"][0]
                self.logins.append(args)
                ok = (args["apiKey"] == KEY and args["passphrase"] == PASSPHRASE
                      and args["sign"] == _sign(args["timestamp"]))
                await ws.send_json({"event": "login", "code": "0" if ok else "60009",
                                    "msg": "" if ok else "Login failed.", "connId": "c1"})
            elif body.get("op") == "subscribe":
                for arg in body["args"]:
                    subs.append(arg)
                    await ws.send_json({"event": "subscribe", "arg": arg, "connId": "c1"})
                    if arg["channel"] == "account":
                        await ws.send_json(ACCOUNT)
                    if arg["channel"] == "orders":
                        await ws.send_json({"arg": {"channel": "orders", "instType": "ANY",
                                                    "uid": "77"},
                                            "data": [ORDER_FILL, ORDER_LIVE]})
        return ws


class Collect:
    def __init__(self) -> None:
        self.orders: list = []
        self.fills: list = []
        self.balances: list = []
        self.events: list[str] = []

    def on_orders(self, orders, fills) -> None:
        self.orders += orders
        self.fills += fills
        self.events.append("orders")

    def on_balances(self, balances) -> None:
        self.balances += balances
        self.events.append("balances")

    def on_resync(self, reason: str) -> None:
        self.events.append(f"resync:{reason}")


async def _until(condition, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        for _ in iter(int, 1):  # until the condition holds (bounded by the timeout)
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def fake():
    fake = FakePrivate()
    app = web.Application()
    app.router.add_get("/ws/v5/private", fake.ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/ws/v5/private"
    yield fake
    await runner.cleanup()


def test_private_ws_is_configurable():
    assert OkxUrls().private_ws == "wss://ws.okx.com:8443/ws/v5/private"
    venue = from_config("OKX", {"private_ws": "ws://127.0.0.1:1/private"})
    assert venue.urls.private_ws == "ws://127.0.0.1:1/private"


async def test_user_stream_login_subscribe_events_and_reconnect(fake):
    venue = OkxVenue(urls=OkxUrls(rest="http://127.0.0.1:9", private_ws=fake.url),
                     markets=INSTRUMENTS)
    sink = Collect()
    config = {"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE}
    task = asyncio.create_task(venue.run_user_stream(config, sink))
    try:
        await _until(lambda: len(sink.orders) >= 2 and sink.balances)
        # login, then the two subscriptions; the secret never sent
        assert fake.logins[0]["apiKey"] == KEY and fake.logins[0]["passphrase"] == PASSPHRASE
        assert fake.logins[0]["sign"] == _sign(fake.logins[0]["timestamp"])
        assert all(SECRET not in raw for raw in fake.raw)
        subs = {json.dumps(a, sort_keys=True) for a in fake.subscribed[0]}
        assert json.dumps({"channel": "orders", "instType": "ANY"}, sort_keys=True) in subs
        assert json.dumps({"channel": "account"}, sort_keys=True) in subs
        assert sink.events[0] == "resync:logged in"

        filled, live = sink.orders[:2]
        assert filled.market == "OKX-SPOT-BTC-USDT" and filled.order_id == "601"
        assert filled.client_order_id == "astra1" and filled.side == "BUY"
        assert filled.type == OrderType.LIMIT and filled.time_in_force == TimeInForce.GTC
        assert filled.quantity == 0.02 and filled.filled_quantity == 0.01
        assert filled.price == 60000 and filled.average_price == 60000
        assert filled.status == OrderStatus.PARTIALLY_FILLED
        assert filled.created_at == 1700000000000 and filled.updated_at == 1700000000500
        assert live.market == "OKX-PERP-BTC-USDT" and live.order_id == "602"
        assert live.side == "SELL" and live.quantity == 3 and live.price == 61000
        assert live.status == OrderStatus.NEW and live.filled_quantity == 0

        assert len(sink.fills) == 1
        fill = sink.fills[0]
        assert fill.fill_id == "9001" and fill.order_id == "601"
        assert fill.market == "OKX-SPOT-BTC-USDT" and fill.side == "BUY"
        assert fill.price == 60000 and fill.quantity == 0.01 and fill.time == 1700000000500
        assert fill.fee == pytest.approx(0.00001) and fill.fee_asset == "BTC"
        assert fill.liquidity == Liquidity.TAKER

        by_asset = {b.asset: b for b in sink.balances}
        assert by_asset["USDT"].total == 1000.5 and by_asset["USDT"].free == 900.5
        assert by_asset["USDT"].locked == 100
        assert by_asset["BTC"].total == 0.02 and by_asset["BTC"].free == 0.015
        assert by_asset["BTC"].locked == pytest.approx(0.005)

        # a dropped connection: resync, log in again, resubscribe
        await fake.sockets[0].close()
        await _until(lambda: len(fake.subscribed) >= 2 and len(fake.subscribed[1]) >= 2
                     and len(sink.orders) >= 4)
        assert len(fake.logins) == 2
        assert sum(e.startswith("resync:") for e in sink.events) >= 3  # login, lost, login
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await venue.close()


async def test_refused_login_resyncs_and_retries(fake):
    venue = OkxVenue(urls=OkxUrls(rest="http://127.0.0.1:9", private_ws=fake.url),
                     markets=INSTRUMENTS)
    sink = Collect()
    config = {"apiKey": KEY, "secret": "wrong-secret", "password": PASSPHRASE}
    task = asyncio.create_task(venue.run_user_stream(config, sink))
    try:
        await _until(lambda: len(fake.logins) >= 2)
        assert not sink.orders and not sink.balances
        assert any(e.startswith("resync:user stream lost") for e in sink.events)
        assert "resync:logged in" not in sink.events
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await venue.close()
