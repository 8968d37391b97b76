"""Kraken test helpers, independent of the code under test: the recorded v1 sessions parsed
to plain text levels, a reference book in exact decimals that computes Kraken's checksum
from text, v1 -> v2 frame conversion, a fake Kraken v2 server on 127.0.0.1 (one pair, from a
recording), synthetic books, a recording sink, and the doc-derived samples in ``data/`` (no
``../shared`` needed for those). The subfolders add the multi-pair v2 fake (``multiplex/``)
and the Kraken Futures fake (``futures/``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web

DATA = Path(__file__).parent / "data"

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
    rest_requests: int = 0  # /0/public/Trades served
    sockets: list = field(default_factory=list)  # every connection, to cut them

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
        self.sockets.append(ws)
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
        self.rest_requests += 1
        return web.json_response(self.rest_trades)

    async def cut(self) -> None:
        """Close every connection, as the venue dropping them does."""
        for ws in self.sockets:
            await ws.close()

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


@pytest.fixture
def doc_asset_pairs() -> dict:
    """A ``GET /0/public/AssetPairs`` body written from Kraken's docs: XBT/USD, ETH/USD, SOL/USD."""
    return json.loads((DATA / "asset_pairs.json").read_text())


@pytest.fixture
def futures_instruments() -> dict:
    """A ``GET /derivatives/api/v3/instruments`` body written from Kraken Futures' docs."""
    return json.loads((DATA / "futures_instruments.json").read_text())


@dataclass
class BookScript:
    """A synthetic book as text: snapshot levels, then single-level changes
    ``(side, price, qty)`` (side ``buy`` = bid; qty 0 deletes), never crossing."""

    bids: Text
    asks: Text
    changes: list[tuple[str, str, str]]


def make_book_script(
    seed: int, mid: str, tick: str, qty_dp: int, levels: int = 10, changes: int = 60
) -> BookScript:
    rng = random.Random(seed)
    mid_, tick_ = Decimal(mid), Decimal(tick)

    def qty() -> str:
        return f"{Decimal(rng.randint(1, 10 ** (qty_dp + 2))) / 10**qty_dp:.{qty_dp}f}"

    bids = [(str(mid_ - tick_ * (i + 1)), qty()) for i in range(levels)]
    asks = [(str(mid_ + tick_ * (i + 1)), qty()) for i in range(levels)]
    out = []
    for _ in range(changes):
        side, k = rng.choice(("buy", "sell")), rng.randint(1, levels + 3)
        price = mid_ - tick_ * k if side == "buy" else mid_ + tick_ * k
        out.append((side, str(price), f"{0:.{qty_dp}f}" if rng.random() < 0.25 else qty()))
    return BookScript(bids, asks, out)


class RecordingSink:
    """A BookSink/TradeSink recording what a feed told it and rebuilding the book from it;
    ``await until(predicate)`` waits for a state (bound it with ``asyncio.timeout``)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.book: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}
        self.trades: list = []
        self.connections: list[bool] = []  # on_connection reports, in order
        self.changed = asyncio.Event()

    def _add(self, event: tuple) -> None:
        self.events.append(event)
        self.changed.set()

    def on_snapshot(self, book) -> None:
        self.book = {"bids": dict(book.bids), "asks": dict(book.asks)}
        self._add(("snapshot", book.update_id))

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        for name, levels in (("bids", bids), ("asks", asks)):
            for p, q in levels:
                if q > 0:
                    self.book[name][p] = q
                else:
                    self.book[name].pop(p, None)
        self._add(("update", update_id))

    def on_resync(self, reason: str) -> None:
        self._add(("resync", reason))

    def on_trades(self, trades) -> None:
        self.trades += trades
        self._add(("trades", len(trades)))

    def on_connection(self, up: bool, reason: str = "") -> None:
        self.connections.append(up)  # (not an event: book tests compare those)

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def resyncs(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "resync"]

    async def until(self, predicate) -> None:
        while not predicate(self):
            self.changed.clear()
            await self.changed.wait()


async def wait_until(condition, *events: asyncio.Event) -> None:
    """Until ``condition()`` holds, re-checked whenever one of ``events`` is set (the fakes'
    and the sinks' ``changed``); at most 10 s."""
    async with asyncio.timeout(10):
        while True:
            for event in events:
                event.clear()
            if condition():
                return
            waiters = [asyncio.ensure_future(event.wait()) for event in events]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


@pytest.fixture
def until():
    """``await until(condition, *events)``: see ``wait_until``."""
    return wait_until


@pytest.fixture
def book_script():
    """``book_script(seed, mid, tick, qty_dp, levels=10, changes=60)`` -> BookScript."""
    return make_book_script


@pytest.fixture
def recording_sink():
    return RecordingSink
