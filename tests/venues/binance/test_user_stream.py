"""BINANCE user data streams (``BinanceVenue.run_user_stream``) against a fake Binance on
127.0.0.1 (no network).

The fake serves the recorded exchangeInfo excerpt (BTCUSDT spot, BTCUSDT perpetual,
BTCUSD_PERP COIN-M: the spot and USD-M ids collide on purpose) and:

- spot: the WebSocket API (``/ws-api/v3``, https://developers.binance.com/docs/
  binance-spot-api-docs/websocket-api/user-data-stream-requests). It checks each
  ``userDataStream.subscribe.signature`` on its own (the HMAC-SHA256 recomputed with the test
  secret over the sorted params, the API key, the timestamp within ``recvWindow``), answers
  ``{"id", "status": 200, "result": {"subscriptionId": 0}}`` or refuses as Binance does
  (``status`` 401, ``error`` -2015, the connection left open), then plays a per-connection
  script: events wrapped in ``{"subscriptionId", "event"}``, unwrapped frames
  (``serverShutdown``) or ``DROP`` (the fake closes the socket);
- futures: answers the USD-M listenKey POST (``/fapi/v1/listenKey``), refuses the COIN-M one
  as a key without futures permission would be refused, and pushes events on
  ``/ws/<listenKey>``. It still answers nothing on the retired spot listenKey route, and
  records any request there.

Event payloads are shaped as Binance's docs show them: spot
(https://developers.binance.com/docs/binance-spot-api-docs/user-data-stream)
``executionReport`` NEW then TRADE and ``outboundAccountPosition``; USD-M
(https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams)
``ORDER_TRADE_UPDATE`` (a TRADE) then ``ACCOUNT_UPDATE``. Symbols and values are the fake's
own (the docs' samples use ETHBTC); field names, types and the extra fields Astra ignores
are the docs'.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import ccxt
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from astra.core.credentials import ExchangeCredentials
from astra.venues.binance import BinanceUrls, BinanceVenue
from astra.venues.binance.userdata import sign_params

EXCHANGE_INFO = json.loads(
    (Path(__file__).parent / "data" / "trading" / "exchangeInfo.json").read_text()
)
SPOT = "BINANCE-SPOT-BTC-USDT"
PERP = "BINANCE-PERP-BTC-USDT"
USDM_KEY = "XaEAKTsQSRLZAGH9tuIu37plSRsdjmlAVBoNYPUITlTAko1WI22PgmBMpI1rS8Yh"


def execution_report(x: str, **changes) -> dict:
    event = {
        "e": "executionReport", "E": 1499405658658, "s": "BTCUSDT",
        "c": "mUvoqJxFIILMdfAW5iGSOW", "S": "BUY", "o": "LIMIT", "f": "GTC",
        "q": "0.00200000", "p": "60000.01000000", "P": "0.00000000", "F": "0.00000000",
        "g": -1, "C": "", "x": x, "X": "NEW", "r": "NONE", "i": 4293153,
        "l": "0.00000000", "z": "0.00000000", "L": "0.00000000", "n": "0", "N": None,
        "T": 1499405658657, "t": -1, "I": 8641984, "w": True, "m": False, "M": False,
        "O": 1499405658657, "Z": "0.00000000", "Y": "0.00000000", "Q": "0.00000000",
        "W": 1499405658657, "V": "NONE",
    }  # fmt: skip
    return {**event, **changes}


SPOT_NEW = execution_report("NEW")
SPOT_TRADE = execution_report(
    "TRADE", E=1499405660000, X="PARTIALLY_FILLED", l="0.00050000", z="0.00050000",
    L="60000.01000000", n="0.00000050", N="BTC", T=1499405659999, t=12345, I=8641990,
    m=True, Z="30.00000500", Y="30.00000500",
)  # fmt: skip
SPOT_BALANCES = {
    "e": "outboundAccountPosition", "E": 1564034571105, "u": 1564034571073,
    "B": [{"a": "BTC", "f": "1.50000000", "l": "0.00000000"},
          {"a": "USDT", "f": "9969.99999500", "l": "90.00002000"}],
}  # fmt: skip
PERP_TRADE = {
    "e": "ORDER_TRADE_UPDATE", "E": 1568879465651, "T": 1568879465650,
    "o": {
        "s": "BTCUSDT", "c": "perp-7", "S": "SELL", "o": "LIMIT", "f": "GTC",
        "q": "0.010", "p": "61000.10", "ap": "61000.10", "sp": "0", "x": "TRADE",
        "X": "FILLED", "i": 8886774, "l": "0.010", "z": "0.010", "L": "61000.10",
        "N": "USDT", "n": "0.24400040", "T": 1568879465650, "t": 99, "b": "0", "a": "0",
        "m": False, "R": True, "wt": "CONTRACT_PRICE", "ot": "LIMIT", "ps": "BOTH",
        "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_TAKER",
        "pm": "NONE", "gtd": 0,
    },
}  # fmt: skip

PERP_BALANCES = {
    "e": "ACCOUNT_UPDATE", "E": 1564745798939, "T": 1564745798938,
    "a": {"m": "ORDER",
          "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
          "P": []},
}  # fmt: skip


STREAM_TERMINATED = {"e": "eventStreamTerminated", "E": 1728973001334}
SERVER_SHUTDOWN = {"event": {"e": "serverShutdown", "E": 1770123456789}}  # no subscriptionId
DROP = "drop"  # script step: the fake closes the connection
REFUSED = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
RATE_LIMITS = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": 6000, "count": 2}]  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    headers: dict[str, str]
    body: str

    def text(self) -> str:
        return "\n".join([self.raw_path, self.body, *map(str, self.headers.items())])


@dataclass
class Subscribe:
    """One request received on the WebSocket API, and the fake's verdict."""

    connection: int  # index of the WebSocket API connection it came on
    at: float  # loop time of arrival
    frame: str  # the request as sent
    params: dict
    status: int  # answered
    signature_ok: bool


class FakeUserData:
    """exchangeInfo, the futures listenKey routes and ``/ws/<listenKey>`` sockets, and the
    spot WebSocket API (see the module docstring)."""

    def __init__(self, api_key: str, secret: str) -> None:
        self.api_key, self.secret = api_key, secret
        self.seen: list[Seen] = []
        self.sockets: list[str] = []  # the request path of every WebSocket accepted
        self.subscribes: list[Subscribe] = []
        self.refuse = 0  # how many valid subscribes to refuse first (-2015)
        self.scripts: list[list] = []  # per accepted subscription, in order
        self.base_url = ""
        self._connections = 0
        self._changed = asyncio.Event()
        self._open: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None

    async def _rest(self, request: web.Request) -> web.Response:
        section = {"/api/v3": "spot", "/fapi/v1": "usdm", "/dapi/v1": "coinm"}
        if request.path.endswith("/exchangeInfo"):
            return web.json_response(EXCHANGE_INFO[section[request.path.rsplit("/", 1)[0]]])
        self.seen.append(Seen(request.method, request.path, request.raw_path,
                              dict(request.headers), await request.text()))
        self._changed.set()
        route = (request.method, request.path)
        if route == ("POST", "/fapi/v1/listenKey"):
            return web.json_response({"listenKey": USDM_KEY})
        if route == ("POST", "/dapi/v1/listenKey"):
            return web.json_response(REFUSED, status=401)
        return web.json_response({"code": -1000, "msg": "unscripted"}, status=400)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._open.add(ws)
        self.sockets.append(request.path)
        self._changed.set()
        try:
            if request.path == f"/fstream/private/ws/{USDM_KEY}":
                await ws.send_str(json.dumps(PERP_TRADE))
                await ws.send_str(json.dumps(PERP_BALANCES))
            async for _ in ws:  # held open until the client or the fake closes it
                pass
        finally:
            self._open.discard(ws)
        return ws

    def _verdict(self, params: dict) -> tuple[int, dict | None, bool]:
        """Binance's checks of a signed request: (status, error, signature valid)."""
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        signature_ok = str(params.get("signature", "")).lower() == expected
        if params.get("apiKey") != self.api_key:
            return 401, REFUSED, signature_ok
        if not signature_ok:
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}, False
        window = params.get("recvWindow", 5000)
        if not -1000 < time.time() * 1000 - params["timestamp"] <= window:
            return 400, {"code": -1021, "msg": "Timestamp outside of the recvWindow."}, True
        if self.refuse > 0:
            self.refuse -= 1
            return 401, REFUSED, True
        return 200, None, True

    async def _ws_api(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # no server pings: a silent socket stays silent
        await ws.prepare(request)
        self._open.add(ws)
        self.sockets.append(request.path)
        connection, self._connections = self._connections, self._connections + 1
        self._changed.set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                request_frame = json.loads(msg.data)
                params = request_frame.get("params", {})
                if request_frame.get("method") == "userDataStream.subscribe.signature":
                    status, error, signature_ok = self._verdict(params)
                else:
                    status, error, signature_ok = 400, {"code": -1100, "msg": "method"}, False
                self.subscribes.append(Subscribe(
                    connection, asyncio.get_running_loop().time(), msg.data, params, status,
                    signature_ok))  # fmt: skip
                self._changed.set()
                answer = {"id": request_frame.get("id"), "status": status}
                if status != 200:  # Binance keeps the connection open after an error
                    await ws.send_json({**answer, "error": error, "rateLimits": RATE_LIMITS})
                    continue
                await ws.send_json({**answer, "result": {"subscriptionId": 0},
                                    "rateLimits": RATE_LIMITS})  # fmt: skip
                for step in self.scripts.pop(0) if self.scripts else []:
                    if step == DROP:
                        await ws.close(code=WSCloseCode.GOING_AWAY)
                        break
                    await ws.send_json(step if "event" in step
                                       else {"subscriptionId": 0, "event": step})  # fmt: skip
        finally:
            self._open.discard(ws)
        return ws

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]

    async def wait_until(self, predicate, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> FakeUserData:
        app = web.Application()
        app.router.add_get("/ws-api/v3", self._ws_api)
        app.router.add_get("/{root:(stream|fstream/private|dstream)}/ws/{key}", self._socket)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        for ws in list(self._open):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()


class CollectingSink:
    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self.balances: list[Balance] = []
        self.resyncs: list[str] = []
        self.log: list[str] = []  # resync reasons and order statuses, in arrival order
        self._changed = asyncio.Event()

    def on_orders(self, orders, fills) -> None:
        self.orders += orders
        self.fills += fills
        self.log += [f"order {o.status.value}" for o in orders]
        self._changed.set()

    def on_balances(self, balances) -> None:
        self.balances += balances
        self._changed.set()

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self.log.append(reason)
        self._changed.set()

    async def until(self, predicate, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def creds():
    return ExchangeCredentials("BINANCE", api_key=secrets.token_urlsafe(48)[:64],
                               secret=secrets.token_urlsafe(48)[:64])


@pytest.fixture
async def fake(creds):
    server = await FakeUserData(creds.api_key, creds.secret).start()
    yield server
    await server.close()


@pytest.fixture
async def venue(fake):
    venue = BinanceVenue(urls=BinanceUrls.at(fake.base_url), sections=("spot", "usdm", "coinm"))
    yield venue
    await venue.close()


@pytest.fixture
async def spot_venue(fake):
    venue = BinanceVenue(urls=BinanceUrls.at(fake.base_url), sections=("spot",))
    yield venue
    await venue.close()


@contextlib.asynccontextmanager
async def streaming(venue: BinanceVenue, creds: ExchangeCredentials, sink: CollectingSink):
    """``venue.run_user_stream`` in a task, cancelled (within 5 s) on exit."""
    task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task


def assert_signed(subscribe: Subscribe, creds: ExchangeCredentials) -> None:
    assert subscribe.signature_ok
    assert set(subscribe.params) == {"apiKey", "recvWindow", "signature", "timestamp"}
    assert subscribe.params["apiKey"] == creds.api_key
    assert creds.secret not in subscribe.frame


async def test_user_stream_normalizes_spot_and_usdm_events(fake, venue, creds):
    fake.scripts = [[SPOT_NEW, SPOT_TRADE, SPOT_BALANCES]]
    sink = CollectingSink()
    async with streaming(venue, creds, sink):
        await sink.until(lambda: len(sink.orders) == 3 and len(sink.balances) == 3)
        # COIN-M (refused) was tried and its stream resynced, to be retried.
        await fake.wait_until(lambda: fake.requests("POST", "/dapi/v1/listenKey"))
        await sink.until(lambda: "user stream lost" in sink.resyncs)

    spot_orders = [o for o in sink.orders if o.market == SPOT]
    assert spot_orders == [
        Order(order_id="4293153", client_order_id="mUvoqJxFIILMdfAW5iGSOW", market=SPOT,
              side="BUY", type=OrderType.LIMIT, quantity=0.002, filled_quantity=0.0,
              status=OrderStatus.NEW, price=60000.01, time_in_force=TimeInForce.GTC,
              created_at=1499405658657, updated_at=1499405658657),
        Order(order_id="4293153", client_order_id="mUvoqJxFIILMdfAW5iGSOW", market=SPOT,
              side="BUY", type=OrderType.LIMIT, quantity=0.002, filled_quantity=0.0005,
              status=OrderStatus.PARTIALLY_FILLED, price=60000.01,
              time_in_force=TimeInForce.GTC, created_at=1499405658657,
              updated_at=1499405659999),
    ]  # fmt: skip
    # BTCUSDT on the futures socket is the perpetual, not the spot market of the same id.
    assert [o for o in sink.orders if o.market == PERP] == [
        Order(order_id="8886774", client_order_id="perp-7", market=PERP, side="SELL",
              type=OrderType.LIMIT, quantity=0.01, filled_quantity=0.01,
              status=OrderStatus.FILLED, price=61000.1, average_price=61000.1,
              time_in_force=TimeInForce.GTC, reduce_only=True, updated_at=1568879465650),
    ]  # fmt: skip
    assert sorted(sink.fills, key=lambda f: f.market) == [
        Fill(fill_id="99", order_id="8886774", market=PERP, side="SELL", price=61000.1,
             quantity=0.01, time=1568879465650, fee=0.2440004, fee_asset="USDT",
             liquidity=Liquidity.TAKER, client_order_id="perp-7"),
        Fill(fill_id="12345", order_id="4293153", market=SPOT, side="BUY", price=60000.01,
             quantity=0.0005, time=1499405659999, fee=0.0000005, fee_asset="BTC",
             liquidity=Liquidity.MAKER, client_order_id="mUvoqJxFIILMdfAW5iGSOW"),
    ]  # fmt: skip
    # Spot and USD-M USDT both arrive as "USDT": the account (the ``GET /balances?account=``
    # value reading it) tells them apart.
    assert sorted(sink.balances, key=lambda b: (b.account or "", b.asset)) == [
        Balance(asset="USDT", free=100.12345678, locked=122624.12345678 - 100.12345678,
                total=122624.12345678, account="future"),
        Balance(asset="BTC", free=1.5, locked=0.0, total=1.5, account="spot"),
        Balance(asset="USDT", free=9969.999995, locked=90.00002,
                total=9969.999995 + 90.00002, account="spot"),
    ]

    # Spot: one signed subscription on the WebSocket API, no listenKey any more.
    [subscribe] = fake.subscribes
    assert subscribe.status == 200
    assert_signed(subscribe, creds)
    assert not [s for s in fake.seen if s.path.startswith("/api/")]
    assert not [p for p in fake.sockets if p.startswith("/stream")]
    # Futures: one socket per product on its own key; COIN-M never got one (key refused).
    assert f"/fstream/private/ws/{USDM_KEY}" in fake.sockets
    assert not [p for p in fake.sockets if p.startswith("/dstream")]
    assert "user stream (re)connected" in sink.resyncs
    assert "user stream lost" in sink.resyncs  # the refused COIN-M stream's

    assert {(s.method, s.path) for s in fake.seen} == {
        ("POST", "/fapi/v1/listenKey"),
        ("POST", "/dapi/v1/listenKey"),
    }
    for seen in fake.seen:
        assert seen.headers["X-MBX-APIKEY"] == creds.api_key
        assert creds.secret not in seen.text()


async def test_user_stream_only_for_loaded_products(fake, spot_venue, creds):
    fake.scripts = [[SPOT_NEW, SPOT_TRADE, SPOT_BALANCES]]
    sink = CollectingSink()
    async with streaming(spot_venue, creds, sink):
        await sink.until(lambda: len(sink.orders) == 2 and sink.balances)
        await asyncio.sleep(0.1)  # time for a wrongly started futures stream to show up
    assert fake.seen == []  # no listenKey, spot or futures
    assert fake.sockets == ["/ws-api/v3"]
    # The resync comes once the subscription is confirmed, before its first event.
    assert sink.log == ["user stream (re)connected", "order NEW", "order PARTIALLY_FILLED"]


async def test_refused_subscribe_retries_on_new_connections_with_backoff(
    fake, spot_venue, creds, caplog
):
    caplog.set_level(logging.INFO, logger="astra.venues.binance")
    fake.refuse = 2
    fake.scripts = [[SPOT_NEW]]
    sink = CollectingSink()
    async with streaming(spot_venue, creds, sink):
        await sink.until(lambda: sink.orders, within=10)

    assert [(s.connection, s.status) for s in fake.subscribes] == [(0, 401), (1, 401), (2, 200)]
    for subscribe in fake.subscribes:
        assert_signed(subscribe, creds)
    first, second, third = (s.at for s in fake.subscribes)
    assert second - first >= 0.5  # backoff(1)
    assert third - second >= 1.0  # backoff(2): it grows while refused
    assert sink.log == ["user stream lost", "user stream lost", "user stream (re)connected",
                        "order NEW"]  # fmt: skip
    assert "code -2015" in caplog.text
    assert creds.secret not in caplog.text
    assert not any(s.params["signature"] in caplog.text for s in fake.subscribes)


async def test_dropped_connection_resyncs_and_resubscribes(fake, spot_venue, creds):
    fake.scripts = [[SPOT_NEW, DROP], [SPOT_TRADE]]
    sink = CollectingSink()
    async with streaming(spot_venue, creds, sink):
        await sink.until(lambda: len(sink.orders) == 2)
    assert sink.log == ["user stream (re)connected", "order NEW", "user stream lost",
                        "user stream (re)connected", "order PARTIALLY_FILLED"]  # fmt: skip
    assert [(s.connection, s.status) for s in fake.subscribes] == [(0, 200), (1, 200)]
    for subscribe in fake.subscribes:
        assert_signed(subscribe, creds)


@pytest.mark.parametrize("ending", [STREAM_TERMINATED, SERVER_SHUTDOWN],
                         ids=["eventStreamTerminated", "serverShutdown"])  # fmt: skip
async def test_ending_event_reconnects(fake, spot_venue, creds, ending):
    # The fake keeps the first connection open: only the event can make the client move.
    fake.scripts = [[SPOT_NEW, ending], [SPOT_TRADE]]
    sink = CollectingSink()
    async with streaming(spot_venue, creds, sink):
        await sink.until(lambda: len(sink.orders) == 2)
    assert [(s.connection, s.status) for s in fake.subscribes] == [(0, 200), (1, 200)]
    assert sink.log == ["user stream (re)connected", "order NEW", "user stream lost",
                        "user stream (re)connected", "order PARTIALLY_FILLED"]  # fmt: skip


@pytest.mark.parametrize("limit", ["silence", "max_age"])
async def test_silent_or_old_connection_is_replaced(fake, creds, limit):
    venue = BinanceVenue(urls=BinanceUrls.at(fake.base_url), sections=("spot",),
                         max_connection_age=0.3 if limit == "max_age" else None)  # fmt: skip
    if limit == "silence":
        venue.user_stream_silence = 0.3
    fake.scripts = [[SPOT_NEW], [SPOT_TRADE]]  # then nothing: no events, no pings
    sink = CollectingSink()
    try:
        async with streaming(venue, creds, sink):
            await sink.until(lambda: len(sink.orders) == 2)
    finally:
        await venue.close()
    first, second = fake.subscribes
    assert (first.connection, second.connection) == (0, 1)
    assert second.at - first.at >= 0.3
    assert sink.log[-2:] == ["user stream (re)connected", "order PARTIALLY_FILLED"]


def test_sign_params_matches_the_docs_hmac_example():
    # The docs' "SIGNED request example (HMAC)": its key, secret, params and signature.
    client = ccxt.binance({
        "apiKey": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        "secret": "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    })  # fmt: skip
    params = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.01000000", "price": "52000.00", "recvWindow": 100,
              "timestamp": 1645423376532}  # fmt: skip
    signed = sign_params(client, params)
    assert signed["signature"] == (
        "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
    )
    # Without params: the subscribe's own, sorted; ccxt's recvWindow and a fresh timestamp.
    plain = sign_params(client)
    assert list(plain) == ["apiKey", "recvWindow", "timestamp", "signature"]
    assert plain["recvWindow"] == 10000
    assert abs(plain["timestamp"] - time.time() * 1000) < 5000


def test_sign_params_with_an_ed25519_key():
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    signed = sign_params(ccxt.binance({"apiKey": "k" * 64, "secret": pem}))
    payload = f"apiKey={'k' * 64}&recvWindow=10000&timestamp={signed['timestamp']}"
    key.public_key().verify(base64.b64decode(signed["signature"]), payload.encode())


def test_spot_ws_api_url_is_configurable():
    assert BinanceUrls().spot_ws_api == "wss://ws-api.binance.com:443/ws-api/v3"
    venue = BinanceVenue.from_config({"spot_ws_api": "ws://127.0.0.1:1/ws-api/v3"})
    assert venue.urls.spot_ws_api == "ws://127.0.0.1:1/ws-api/v3"
    assert BinanceUrls.at("http://127.0.0.1:2").spot_ws_api == "ws://127.0.0.1:2/ws-api/v3"
