"""BINANCE user data streams (``BinanceVenue.run_user_stream``) against a fake Binance on
127.0.0.1 (no network).

The fake serves the recorded exchangeInfo excerpt (BTCUSDT spot, BTCUSDT perpetual,
BTCUSD_PERP COIN-M: the spot and USD-M ids collide on purpose), answers the spot listenKey
POST/PUT (``/api/v3/userDataStream``) and the USD-M POST (``/fapi/v1/listenKey``), refuses
the COIN-M one as a key without futures permission would be refused, and pushes events shaped
as Binance's user data stream docs show them on ``/ws/<listenKey>``:

- spot (https://developers.binance.com/docs/binance-spot-api-docs/user-data-stream):
  ``executionReport`` NEW then TRADE, and ``outboundAccountPosition``;
- USD-M (https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams):
  ``ORDER_TRADE_UPDATE`` (a TRADE).

Symbols and values are the fake's own (the docs' samples use ETHBTC); field names, types and
the extra fields Astra ignores are the docs'.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import WSCloseCode, web

from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from astra.trading.credentials import ExchangeCredentials
from astra.venues.binance import BinanceUrls, BinanceVenue

EXCHANGE_INFO = json.loads(
    (Path(__file__).parent / "data" / "trading" / "exchangeInfo.json").read_text()
)
SPOT = "BINANCE-SPOT-BTC-USDT"
PERP = "BINANCE-PERP-BTC-USDT"
SPOT_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"
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


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    headers: dict[str, str]
    body: str

    def text(self) -> str:
        return "\n".join([self.raw_path, self.body, *map(str, self.headers.items())])


class FakeUserData:
    """REST listenKey routes, exchangeInfo and the ``/ws/<listenKey>`` sockets."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.sockets: list[str] = []  # the request path of every WebSocket accepted
        self.base_url = ""
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
        if route in (("POST", "/api/v3/userDataStream"), ("POST", "/fapi/v1/listenKey")):
            key = SPOT_KEY if request.path.startswith("/api") else USDM_KEY
            return web.json_response({"listenKey": key})
        if route == ("PUT", "/api/v3/userDataStream"):
            return web.json_response({})
        if route == ("POST", "/dapi/v1/listenKey"):
            return web.json_response(
                {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                status=401,
            )
        return web.json_response({"code": -1000, "msg": "unscripted"}, status=400)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._open.add(ws)
        self.sockets.append(request.path)
        self._changed.set()
        try:
            if request.path == f"/stream/ws/{SPOT_KEY}":
                frames = [SPOT_NEW, SPOT_TRADE, SPOT_BALANCES]
            elif request.path == f"/fstream/private/ws/{USDM_KEY}":
                frames = [PERP_TRADE]
            else:
                frames = []
            for frame in frames:
                await ws.send_str(json.dumps(frame))
            async for _ in ws:  # held open until the client or the fake closes it
                pass
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
        self._changed = asyncio.Event()

    def on_orders(self, orders, fills) -> None:
        self.orders += orders
        self.fills += fills
        self._changed.set()

    def on_balances(self, balances) -> None:
        self.balances += balances
        self._changed.set()

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self._changed.set()

    async def until(self, predicate, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def fake():
    server = await FakeUserData().start()
    yield server
    await server.close()


@pytest.fixture
async def venue(fake):
    venue = BinanceVenue(urls=BinanceUrls.at(fake.base_url), sections=("spot", "usdm", "coinm"))
    venue.user_stream_keepalive = 0.05  # so the spot keep-alive PUT shows up within the test
    yield venue
    await venue.close()


@pytest.fixture
def creds():
    return ExchangeCredentials("BINANCE", api_key=secrets.token_urlsafe(48)[:64],
                               secret=secrets.token_urlsafe(48)[:64])


async def test_user_stream_normalizes_spot_and_usdm_events(fake, venue, creds):
    sink = CollectingSink()
    task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
    try:
        await sink.until(lambda: len(sink.orders) == 3 and sink.balances)
        # The spot keep-alive names its key; COIN-M (refused) was tried and is retried.
        await fake.wait_until(lambda: fake.requests("PUT", "/api/v3/userDataStream")
                              and fake.requests("POST", "/dapi/v1/listenKey"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task

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
    assert sink.balances == [
        Balance(asset="BTC", free=1.5, locked=0.0, total=1.5),
        Balance(asset="USDT", free=9969.999995, locked=90.00002,
                total=9969.999995 + 90.00002),
    ]

    # One socket per product on its own key; COIN-M never got one (its key was refused).
    assert f"/stream/ws/{SPOT_KEY}" in fake.sockets
    assert f"/fstream/private/ws/{USDM_KEY}" in fake.sockets
    assert not [p for p in fake.sockets if p.startswith("/dstream")]
    assert "user stream (re)connected" in sink.resyncs
    assert "user stream lost" in sink.resyncs  # the refused COIN-M stream's

    listen_key_calls = fake.seen
    assert {(s.method, s.path) for s in listen_key_calls} >= {
        ("POST", "/api/v3/userDataStream"),
        ("PUT", "/api/v3/userDataStream"),
        ("POST", "/fapi/v1/listenKey"),
        ("POST", "/dapi/v1/listenKey"),
    }
    for seen in listen_key_calls:
        assert seen.headers["X-MBX-APIKEY"] == creds.api_key
        assert creds.secret not in seen.text()
    put = fake.requests("PUT", "/api/v3/userDataStream")[0]
    assert put.body == f"listenKey={SPOT_KEY}"


async def test_user_stream_only_for_loaded_products(fake, creds):
    venue = BinanceVenue(urls=BinanceUrls.at(fake.base_url), sections=("spot",))
    sink = CollectingSink()
    task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
    try:
        await sink.until(lambda: len(sink.orders) == 2 and sink.balances)
        await asyncio.sleep(0.1)  # time for a wrongly started futures stream to show up
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task
        await venue.close()
    assert {s.path for s in fake.seen} == {"/api/v3/userDataStream"}
    assert fake.sockets == [f"/stream/ws/{SPOT_KEY}"]
