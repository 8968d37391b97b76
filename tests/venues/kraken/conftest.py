"""Kraken test helpers, independent of the code under test: the recorded v1 sessions parsed
to plain text levels, a reference book in exact decimals that computes Kraken's checksum
from text, v1 -> v2 frame conversion, and a fake Kraken v2 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiohttp import web

_WS = re.compile(r"^(?P<t>[\d.]+): (?P<body>[\[{].*)$")
Text = list[tuple[str, str]]


@dataclass
class V1Book:
    """One v1 ``book-<depth>`` message: ``as``/``bs`` (snapshot) or ``a``/``b`` (+ ``c``)."""

    t: float
    pair: str
    snapshot: bool
    asks: Text
    bids: Text
    checksum: int | None


@dataclass
class V1Trade:
    pair: str
    price: str
    volume: str
    time: str
    side: str  # b | s


def read_v1(path) -> tuple[list[V1Book], list[V1Trade]]:
    books, trades = [], []
    for line in path.read_text().splitlines():
        m = _WS.match(line)
        if not m:
            continue
        msg = json.loads(m["body"])
        if not isinstance(msg, list):
            continue  # heartbeat, systemStatus, subscriptionStatus
        name, pair, parts = msg[-2], msg[-1], msg[1:-2]
        if name == "trade":
            trades += [V1Trade(pair, *row[:4]) for row in parts[0]]
            continue
        assert name.startswith("book-"), name
        if "as" in parts[0] or "bs" in parts[0]:
            lv = parts[0]
            books.append(
                V1Book(
                    float(m["t"]),
                    pair,
                    True,
                    [tuple(x[:2]) for x in lv.get("as", [])],
                    [tuple(x[:2]) for x in lv.get("bs", [])],
                    None,
                )
            )
            continue
        asks = [tuple(x[:2]) for p in parts for x in p.get("a", [])]
        bids = [tuple(x[:2]) for p in parts for x in p.get("b", [])]
        checksum = next(int(p["c"]) for p in reversed(parts) if "c" in p)
        books.append(V1Book(float(m["t"]), pair, False, asks, bids, checksum))
    return books, trades


def _strip(text: str) -> str:
    return text.replace(".", "").lstrip("0")


class RefBook:
    """Reference book: Decimal keys, the wire text kept as values; truncated to ``depth``."""

    def __init__(self, depth: int = 1000) -> None:
        self.depth = depth
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.bids: dict[Decimal, tuple[str, str]] = {}

    def apply(self, asks: Text, bids: Text) -> None:
        for side, levels in ((self.asks, asks), (self.bids, bids)):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, q)
        for side, worst in ((self.asks, max), (self.bids, min)):
            while len(side) > self.depth:
                del side[worst(side)]

    def top(self, n: int = 10) -> tuple[Text, Text]:
        asks = [self.asks[k] for k in sorted(self.asks)[:n]]
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)[:n]]
        return asks, bids

    def checksum_v1(self) -> int:
        """From the text as sent (v1)."""
        asks, bids = self.top()
        return zlib.crc32("".join(_strip(p) + _strip(q) for p, q in asks + bids).encode())

    def checksum_v2(self, price_dp: int, qty_dp: int) -> int:
        """From exact decimals written at the pair's precision (v2 sends numbers)."""
        asks, bids = self.top()
        text = "".join(
            _strip(f"{Decimal(p):.{price_dp}f}") + _strip(f"{Decimal(q):.{qty_dp}f}")
            for p, q in asks + bids
        )
        return zlib.crc32(text.encode())

    def levels(self) -> dict:
        """``{"bids": {price: qty}, "asks": ...}`` as exact decimals."""
        return {
            "bids": {k: Decimal(q) for k, (_, q) in self.bids.items()},
            "asks": {k: Decimal(q) for k, (_, q) in self.asks.items()},
        }


def v2_number(text: str) -> str:
    """A JSON number for a decimal text, trailing zeros dropped as in Kraken's docs."""
    d = Decimal(text).normalize()
    return format(d, "f") if d else "0"


def v2_levels(levels: Text) -> str:
    return ",".join(f'{{"price":{v2_number(p)},"qty":{v2_number(q)}}}' for p, q in levels)


def v2_book_frame(kind: str, symbol: str, asks: Text, bids: Text, checksum: int, t: float) -> str:
    ts = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
        f'"bids":[{v2_levels(bids)}],"asks":[{v2_levels(asks)}],'
        f'"checksum":{checksum},"timestamp":"{ts}"}}]}}'
    )


@dataclass
class FakeKrakenV2:
    """Kraken v2 on 127.0.0.1: ``/v2`` answers subscribe/unsubscribe/ping.

    A ``book`` subscription gets a snapshot of the current book (correct checksum), then the
    remaining updates in order; with ``withhold_first_snapshot`` the first one gets only
    heartbeats. On the first subscription, update ``corrupt_at`` is sent with one level's
    quantity altered (its checksum is the true book's). A ``trade`` subscription gets
    ``trade_snapshot`` then ``trade_updates`` (v2 trade dicts). ``/0/public/Trades`` serves
    ``rest_trades``.
    """

    symbol: str
    price_dp: int
    qty_dp: int
    snapshot: V1Book
    updates: list[V1Book]
    corrupt_at: int | None = None
    withhold_first_snapshot: bool = False
    trade_snapshot: list[dict] = field(default_factory=list)
    trade_updates: list[dict] = field(default_factory=list)
    rest_trades: dict = field(default_factory=dict)
    book: RefBook = field(default_factory=RefBook)
    position: int = 0
    book_subscriptions: int = 0
    connections: int = 0
    requests: list[dict] = field(default_factory=list)
    snapshots_sent: list[dict] = field(default_factory=list)  # levels of each snapshot
    done: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def __post_init__(self) -> None:
        self.book.apply(self.snapshot.asks, self.snapshot.bids)

    async def _heartbeats(self, ws: web.WebSocketResponse) -> None:
        while True:
            await ws.send_str('{"channel":"heartbeat"}')
            await asyncio.sleep(0.1)

    async def _send_book(self, ws: web.WebSocketResponse, first: bool) -> None:
        if first and self.withhold_first_snapshot:
            await self._heartbeats(ws)  # subscribed, alive, but never a snapshot
        asks, bids = self.book.top(1000)
        self.snapshots_sent.append(self.book.levels())
        checksum = self.book.checksum_v2(self.price_dp, self.qty_dp)
        await ws.send_str(
            v2_book_frame("snapshot", self.symbol, asks, bids, checksum, self.snapshot.t)
        )
        while self.position < len(self.updates):
            u = self.updates[self.position]
            self.position += 1
            self.book.apply(u.asks, u.bids)
            checksum = self.book.checksum_v2(self.price_dp, self.qty_dp)
            asks, bids = u.asks, u.bids
            if first and self.position - 1 == self.corrupt_at:
                side = list(asks or bids)
                p, q = side[0]
                side[0] = (p, str(Decimal(q) + Decimal(1)))  # a level the venue never had
                asks, bids = (side, bids) if asks else (asks, side)
            await ws.send_str(v2_book_frame("update", self.symbol, asks, bids, checksum, u.t))
            if self.position == len(self.updates):
                self.done.set()
            await asyncio.sleep(0.002)
        self.done.set()
        await self._heartbeats(ws)

    async def _send_trades(self, ws: web.WebSocketResponse) -> None:
        frames = [("snapshot", self.trade_snapshot), ("update", self.trade_updates)]
        for kind, data in frames:
            msg = {"channel": "trade", "type": kind, "data": data}
            await ws.send_str(json.dumps(msg))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        status = {"system": "online", "api_version": "v2", "connection_id": 1, "version": "2"}
        await ws.send_json({"channel": "status", "type": "update", "data": [status]})
        task: asyncio.Task | None = None
        try:
            async for msg in ws:
                req = json.loads(msg.data)
                self.requests.append(req)
                method, params = req["method"], req.get("params", {})
                reply = {"method": method, "success": True, "req_id": req.get("req_id")}
                if method == "ping":
                    await ws.send_json({**reply, "method": "pong"})
                    continue
                if params.get("symbol") != [self.symbol]:
                    await ws.send_json({**reply, "success": False, "error": "Unknown pair"})
                    continue
                await ws.send_json({**reply, "result": {**params, "symbol": self.symbol}})
                if method == "unsubscribe" and task is not None:
                    task.cancel()
                elif method == "subscribe" and params["channel"] == "book":
                    self.book_subscriptions += 1
                    first = self.book_subscriptions == 1
                    task = asyncio.create_task(self._send_book(ws, first))
                elif method == "subscribe" and params["channel"] == "trade":
                    task = asyncio.create_task(self._send_trades(ws))
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
        return ws

    async def trades(self, request: web.Request) -> web.Response:
        return web.json_response(self.rest_trades)

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/v2", self.handle)
        app.router.add_get("/0/public/Trades", self.trades)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            await runner.cleanup()


@pytest.fixture
def asset_pairs(shared_fixture) -> dict:
    """The recorded ``GET /0/public/AssetPairs`` body."""
    line = shared_fixture("recorded", "KRAKEN.0").read_text().splitlines()[0]
    return json.loads(line.split(": ", 1)[1])


@pytest.fixture
def v1_session(shared_fixture):
    """``v1_session("KRAKEN.ws.50.0")`` -> (book messages, trades) of a recorded v1 session."""
    return lambda name: read_v1(shared_fixture("recorded", name))


@pytest.fixture
def ref_book():
    return RefBook


@pytest.fixture
def fake_kraken():
    return FakeKrakenV2


@pytest.fixture
def v2_frame():
    return v2_book_frame
