"""HTX USDT-margined swap user data (``HtxVenue.run_user_stream``) against a fake HTX on
127.0.0.1 serving both private WebSockets: the spot v2 one (``/ws/v2``: ``auth`` and ``sub``
acknowledged, nothing pushed) and the v5 notification one (``/ws/v5/notification``), which
speaks HTX's contract protocol: every frame it sends is gzip-compressed JSON in a binary frame,
``op: auth`` is checked (HmacSHA256 over ``GET\\n<host>\\n<path>\\n<sorted params>``, signature
version 2, recomputed here from the test secret) and answered with ``err-code`` 0, then the
``op: sub`` of ``orders`` and ``trade`` (``contract_code: "*"``) and ``account``; pushes are
shaped as in HTX's v5 docs (``op: notify``), and ``op: ping`` wants ``op: pong`` with the same
``ts``.

Checked: the normalized Order, Fill and Balance values of the swap market
(``HUOBI-PERP-BTC-USDT``, quantities in contracts), a dropped contract connection leading to
``on_resync``, a new ``auth`` and fresh subscriptions while the spot connection stays up, a
refused ``auth`` retried on a new connection, no contract connection without swap markets, and
the secret never on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import WSMsgType, web
from tests.venues.loopback import UserSink, serve, until

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
from astra.venues.htx import HtxUrls, HtxVenue, from_config

DATA = Path(__file__).parent / "data"
PERP = "HUOBI-PERP-BTC-USDT"
SPOT_TOPICS = {"orders#*", "trade.clearing#*#0", "accounts.update#2"}
SWAP_SUBS = {("orders", "*"), ("trade", "*"), ("account", None)}

# -- doc-shaped pushes (HTX v5 notification: orders, trade, account) ----------------------------
ORDER_NEW = {
    "op": "notify", "topic": "orders", "contract_code": "BTC-USDT", "ts": 1749457082349,
    "uid": "502061937", "data": {
        "side": "buy", "type": "limit", "price": "40000", "volume": "3", "state": "new",
        "profit": "0", "contract_code": "BTC-USDT", "position_side": "both",
        "price_match": None, "order_id": "1381668675223068672", "client_order_id": "1001",
        "margin_mode": "cross", "lever_rate": 10, "order_source": "api", "reduce_only": False,
        "time_in_force": "gtc", "trade_avg_price": "0", "trade_volume": "0",
        "trade_turnover": "0", "fee_currency": None, "fee": "0", "tp_trigger_price": "",
        "tp_order_price": "", "tp_type": "", "tp_trigger_price_type": "",
        "sl_trigger_price": "", "sl_order_price": "", "sl_type": "",
        "sl_trigger_price_type": "", "contract_type": "swap", "cancel_reason": "",
        "created_time": "1749457082341", "updated_time": "1749457082341",
        "self_match_prevent": "cancel_both",
    },
}
ORDER_PARTIAL = {**ORDER_NEW, "ts": 1749457090000, "data": {
    **ORDER_NEW["data"], "state": "partially_filled", "trade_avg_price": "40000",
    "trade_volume": "1", "trade_turnover": "40", "fee_currency": "USDT", "fee": "-0.008",
    "updated_time": "1749457089990",
}}
TRADE = {
    "op": "notify", "topic": "trade", "contract_code": "BTC-USDT", "ts": 1749457090001,
    "uid": "502061937", "data": [{
        "direction": "buy", "position_side": "both",
        "id": "100005308993680-1381668675223068672-1", "contract_code": "BTC-USDT",
        "contract_type": "swap", "order_id": "1381668675223068672",
        "trade_id": "100005308993680", "trade_volume": "1", "trade_price": "40000",
        "trade_turnover": "40", "role": "maker", "client_order_id": "1001",
        "created_time": "1749457089980", "updated_time": "1749457089990",
    }],
}
ACCOUNT = {
    "op": "notify", "topic": "account", "contract_code": "", "ts": 1734681235891,
    "uid": "413120795", "event": "snapshot", "data": {
        "equity": "10264.1114", "state": "normal", "details": [{
            "currency": "USDT", "equity": "10264.1114", "available": "10977.5114",
            "profit_unreal": "-713.4", "initial_margin": "133.9", "maintenance_margin": "6.027",
            "maintenance_margin_rate": "0.0005", "initial_margin_rate": "0.013", "voucher": "",
            "voucher_value": "", "withdraw_available": "10130.25",
            "created_time": "1734675405381", "updated_time": "1734681182933",
        }],
        "initial_margin": "133.9", "maintenance_margin": "6.027",
        "maintenance_margin_rate": "0.0005", "profit_unreal": "-713.4",
        "available_margin": "10130.17", "created_time": "1734668300071",
        "updated_time": "1734681182933", "voucher_value": "", "version": 1010,
    },
}


def _gz(obj: dict) -> bytes:
    return gzip.compress(json.dumps(obj).encode())


class FakeHtxPrivate:
    """Both private WebSockets on one server (see the module docstring). ``refuse_auth``
    contract connections (by number, 1-based) get ``err-code`` 2002 for their ``auth``."""

    def __init__(self, creds: ExchangeCredentials) -> None:
        self.creds = creds
        self.wire: list[str] = []
        self.auths: list[dict] = []  # contract auth requests that passed the check
        self.subs: list[set[tuple]] = []  # per contract connection: (topic, contract_code)
        self.sub_frames: list[dict] = []
        self.sockets: list[web.WebSocketResponse] = []  # contract connections
        self.spot_subs: list[set[str]] = []
        self.spot_sockets: list[web.WebSocketResponse] = []
        self.refuse_auth: set[int] = set()
        self.pongs: list[dict] = []
        self.subscribed = asyncio.Event()  # the latest contract connection has every topic
        self.spot_subscribed = asyncio.Event()
        self.changed = asyncio.Event()
        self.url = ""

    def check_auth(self, request: web.Request, frame: dict) -> None:
        assert (frame["type"], frame["AccessKeyId"]) == ("api", self.creds.api_key)
        assert (frame["SignatureMethod"], frame["SignatureVersion"]) == ("HmacSHA256", "2")
        signed = {k: frame[k] for k in ("AccessKeyId", "SignatureMethod", "SignatureVersion",
                                        "Timestamp")}
        host = request.host
        # ccxt signs the path relative to ``wss://<host>``; on this plain ws:// test server
        # (no TLS) that leaves the whole URL in place of the path.
        path = f"ws://{host}{request.path}"
        payload = "\n".join(["GET", host, path, urlencode(sorted(signed.items()))])
        mac = hmac.new(self.creds.secret.encode(), payload.encode(), hashlib.sha256).digest()
        assert frame["Signature"] == base64.b64encode(mac).decode()

    async def contract_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        number = len(self.sockets) + 1
        subs: set[tuple] = set()
        self.subs.append(subs)
        self.sockets.append(ws)
        self.changed.set()
        authed = False
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            self.wire.append(msg.data)
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == "auth":
                if number in self.refuse_auth:
                    await ws.send_bytes(_gz({"op": "auth", "type": "api", "err-code": 2002,
                                             "err-msg": "invalid.auth.state", "ts": 1}))
                    continue
                self.check_auth(request, frame)
                self.auths.append(frame)
                authed = True
                await ws.send_bytes(_gz({"op": "auth", "type": "api", "err-code": 0, "ts": 2,
                                         "data": {"user-id": "41312018"}}))
            elif op == "sub":
                assert authed, "subscribed before auth"
                self.sub_frames.append(frame)
                subs.add((frame["topic"], frame.get("contract_code")))
                await ws.send_bytes(_gz({"op": "sub", "cid": frame.get("cid"),
                                         "topic": frame["topic"], "err-code": 0, "ts": 3}))
                if subs >= SWAP_SUBS:
                    self.subscribed.set()
            elif op == "pong":
                self.pongs.append(frame)
            self.changed.set()
        return ws

    async def spot_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subs: set[str] = set()
        self.spot_subs.append(subs)
        self.spot_sockets.append(ws)
        async for msg in ws:
            self.wire.append(msg.data)
            frame = json.loads(msg.data)
            if frame.get("action") == "req" and frame.get("ch") == "auth":
                assert frame["params"]["accessKey"] == self.creds.api_key
                await ws.send_json({"action": "req", "code": 200, "ch": "auth", "data": {}})
            elif frame.get("action") == "sub":
                subs.add(frame["ch"])
                await ws.send_json({"action": "sub", "code": 200, "ch": frame["ch"], "data": {}})
                if subs >= SPOT_TOPICS:
                    self.spot_subscribed.set()
        return ws

    async def push(self, message: dict) -> None:
        await self.sockets[-1].send_bytes(_gz(message))

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws/v2", self.spot_ws)
        app.router.add_get("/ws/v5/notification", self.contract_ws)
        async with serve(app) as self.url:
            try:
                yield self
            finally:
                for ws in [*self.sockets, *self.spot_sockets]:
                    await ws.close()


def _instruments(with_swaps: bool) -> dict:
    body = json.loads((DATA / "private_rest.json").read_text())
    out = {"spot": body["symbols"]}
    if with_swaps:
        out["linear_swap"] = body["linear_swaps"]
    return out


@contextlib.asynccontextmanager
async def streaming(*, with_swaps: bool = True, refuse_auth: tuple[int, ...] = ()):
    creds = ExchangeCredentials(  # test credentials made here
        exchange="HUOBI", api_key=secrets.token_hex(12), secret=secrets.token_hex(18))
    fake = FakeHtxPrivate(creds)
    fake.refuse_auth.update(refuse_auth)
    instruments = _instruments(with_swaps)

    async def markets():
        return instruments

    sink = UserSink()
    async with fake.running():
        venue = HtxVenue(urls=HtxUrls.for_server(fake.url), markets_source=markets)
        task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
        try:
            yield fake, sink, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task
            await venue.close()
    for text in fake.wire:
        assert creds.secret not in text


def test_the_linear_swap_private_websocket_url_is_configurable():
    assert HtxUrls().linear_swap_private_ws == "wss://api.hbdm.com/ws/v5/notification"
    assert HtxUrls.for_server("http://127.0.0.1:5").linear_swap_private_ws == (
        "ws://127.0.0.1:5/ws/v5/notification")
    venue = from_config("HUOBI", {"linear_swap_private_ws": "wss://api.hbdm.vn/ws/v5/notification"})
    client = venue.user_stream_client({})
    for section in client.urls["api"]["ws"].values():
        assert section["swap"]["linear"]["privateV5"] == "wss://api.hbdm.vn/ws/v5/notification"
        assert section["spot"]["private"] == "wss://api.huobi.pro/ws/v2"
    # ccxt signs the host it takes from here: the contract WebSocket's.
    assert client.urls["hostnames"]["contract"] == "api.hbdm.vn"


async def test_swap_orders_fills_and_balances_are_normalized_and_a_drop_resyncs():
    async with streaming() as (fake, sink, task):
        await until(lambda: fake.subscribed.is_set() and fake.spot_subscribed.is_set(),
                    fake.changed, fake.subscribed, fake.spot_subscribed)
        assert len(fake.auths) == 1 and fake.subs[-1] == SWAP_SUBS
        # As HTX documents them: op, cid, topic (+ contract_code for orders and trade).
        assert sorted(sorted(f) for f in fake.sub_frames) == [
            ["cid", "contract_code", "op", "topic"], ["cid", "contract_code", "op", "topic"],
            ["cid", "op", "topic"]]
        assert sink.resyncs == ["user stream (re)connecting"] * 2  # spot and swaps

        await fake.push(ORDER_NEW)
        await until(lambda: sink.orders, sink.changed)
        assert sink.orders[-1] == Order(
            order_id="1381668675223068672", client_order_id="1001", market=PERP,
            side=Side.BUY, type=OrderType.LIMIT, quantity=3.0, filled_quantity=0.0,
            status=OrderStatus.NEW, price=40000.0, time_in_force=TimeInForce.GTC,
            post_only=False, reduce_only=False, created_at=1749457082341,
            updated_at=1749457082341)

        await fake.push(ORDER_PARTIAL)
        await until(lambda: len(sink.orders) == 2, sink.changed)
        partial = sink.orders[-1]
        assert (partial.status, partial.quantity, partial.filled_quantity) == (
            OrderStatus.PARTIALLY_FILLED, 3.0, 1.0)
        assert (partial.average_price, partial.market) == (40000.0, PERP)

        await fake.push(TRADE)
        await until(lambda: sink.fills, sink.changed)
        assert sink.fills == [Fill(
            fill_id="100005308993680", order_id="1381668675223068672", market=PERP,
            side=Side.BUY, price=40000.0, quantity=1.0, time=1749457089990, fee=None,
            fee_asset=None, liquidity=Liquidity.MAKER)]

        await fake.push(ACCOUNT)
        await until(lambda: sink.balances, sink.changed)
        assert sink.balances[-1] == [Balance(
            asset="USDT", free=10130.25, locked=pytest.approx(133.8614), total=10264.1114,
            account="swap")]

        # HTX's keep-alive on the contract WebSockets: ping with ts, pong with the same ts.
        await fake.push({"op": "ping", "ts": "1749457095000"})
        await until(lambda: fake.pongs, fake.changed)
        assert fake.pongs == [{"op": "pong", "ts": 1749457095000}]

        resyncs = len(sink.resyncs)
        fake.subscribed.clear()
        await fake.sockets[-1].close()
        await until(lambda: fake.subscribed.is_set(), fake.subscribed, fake.changed)
        assert sink.resyncs[resyncs:] == ["user stream lost", "user stream (re)connecting"]
        assert len(fake.auths) == 2 and fake.subs[-1] == SWAP_SUBS
        assert len(fake.spot_sockets) == 1 and not fake.spot_sockets[0].closed  # untouched
        update = {**ACCOUNT, "event": "filled", "data": {**ACCOUNT["data"], "details": [
            {**ACCOUNT["data"]["details"][0], "equity": "10300", "withdraw_available": "10200"}]}}
        await fake.push(update)
        await until(lambda: len(sink.balances) == 2, sink.changed)
        assert sink.balances[-1] == [Balance(asset="USDT", free=10200.0, locked=100.0,
                                             total=10300.0, account="swap")]
        assert not task.done()


async def test_a_refused_auth_is_retried_on_a_new_connection():
    async with streaming(refuse_auth=(1,)) as (fake, sink, _task):
        await until(lambda: fake.subscribed.is_set(), fake.subscribed, fake.changed)
        assert len(fake.sockets) == 2 and len(fake.auths) == 1
        assert fake.subs[0] == set()  # nothing subscribed on the refused connection
        assert "user stream lost" in sink.resyncs
        await fake.push(ORDER_NEW)
        await until(lambda: sink.orders, sink.changed)
        assert sink.orders[-1].market == PERP


async def test_without_swap_markets_only_the_spot_account_streams():
    async with streaming(with_swaps=False) as (fake, sink, _task):
        await until(lambda: fake.spot_subscribed.is_set(), fake.spot_subscribed)
        await asyncio.sleep(0.2)  # the two streams start together: a swap one would be here
        assert fake.sockets == [] and sink.resyncs == ["user stream (re)connecting"]
