"""OKX test helpers as fixtures: the recorded session, an independent reference book, a
recording sink, and a fake OKX server (aiohttp on 127.0.0.1) speaking the v5 public
WebSocket protocol (subscribe/unsubscribe acks, "ping" -> "pong", scripted pushes per
subscription) plus ``GET /api/v5/market/trades``."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal

import pytest
from aiohttp import WSMsgType, web

_LINE = re.compile(r"^(?P<t>[\d.]+): (?P<body>\{.*\})$")


def _instruments(shared_fixture) -> list[dict]:
    """The first recorded response of each instrument list in OKX.0 (SPOT, SWAP, FUTURES,
    OPTION BTC-USD, OPTION ETH-USD), as raw OKX responses."""
    responses: dict[str, dict] = {}
    for line in shared_fixture("recorded", "OKX.0").read_text().splitlines():
        if " -> " not in line:
            continue  # cryptofeed's trailing configuration line
        url, rest = line.split(" -> ", 1)
        responses.setdefault(url, json.loads(rest.split(": ", 1)[1]))
    return list(responses.values())


@pytest.fixture
def okx_instruments(shared_fixture) -> list[dict]:
    return _instruments(shared_fixture)


def _book_frames(shared_fixture) -> dict[str, list[str]]:
    """Recorded ``books`` pushes per instId, raw text as received, in order."""
    frames: dict[str, list[str]] = defaultdict(list)
    for line in shared_fixture("recorded", "OKX.ws.1.0").read_text().splitlines():
        m = _LINE.match(line)
        if m and '"channel":"books"' in m["body"] and '"action"' in m["body"]:
            frames[json.loads(m["body"])["arg"]["instId"]].append(m["body"])
    return dict(frames)


@pytest.fixture
def okx_book_frames(shared_fixture) -> dict[str, list[str]]:
    return _book_frames(shared_fixture)


def with_seq_ids(frames: list[str], first: int = 1000) -> list[str]:
    """Recorded frames (2022, before OKX added seqId) with ``seqId``/``prevSeqId`` added as
    the current docs define them: the snapshot's prevSeqId is -1, each update's prevSeqId is
    the previous seqId; ids grow by uneven steps, as live ones do. Levels and checksums are
    untouched."""
    out, prev = [], -1
    for i, text in enumerate(frames):
        msg = json.loads(text)
        seq = first + i * 7 + i % 3
        for data in msg["data"]:
            data["prevSeqId"], data["seqId"] = prev, seq
        prev = seq
        out.append(json.dumps(msg, separators=(",", ":")))
    return out


@pytest.fixture
def okx_seq_frames():
    """``okx_seq_frames(frames)``: the frames with current-protocol seqId/prevSeqId."""
    return with_seq_ids


class ReferenceBook:
    """Independent rebuild in exact decimals, keyed by Decimal price, keeping OKX's text."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[Decimal, tuple[str, str]]] = {"bids": {}, "asks": {}}

    def apply(self, msg: dict) -> None:
        if msg["action"] == "snapshot":
            self.sides = {"bids": {}, "asks": {}}
        for data in msg["data"]:
            for side in ("bids", "asks"):
                for level in data[side]:
                    if Decimal(level[1]) == 0:
                        self.sides[side].pop(Decimal(level[0]), None)
                    else:
                        self.sides[side][Decimal(level[0])] = (level[0], level[1])

    def checksum(self) -> int:
        bids = [self.sides["bids"][p] for p in sorted(self.sides["bids"], reverse=True)[:25]]
        asks = [self.sides["asks"][p] for p in sorted(self.sides["asks"])[:25]]
        fields: list[str] = []
        for i in range(25):
            for side in (bids, asks):
                if i < len(side):
                    fields.extend(side[i])
        value = binascii.crc32(":".join(fields).encode("ascii"))
        return value - (1 << 32) if value >= 1 << 31 else value

    def floats(self) -> dict[str, dict[float, float]]:
        return {
            side: {float(p): float(q) for p, (_, q) in levels.items()}
            for side, levels in self.sides.items()
        }

    def decimals(self) -> dict[str, dict[Decimal, Decimal]]:
        return {
            side: {p: Decimal(q) for p, (_, q) in levels.items()}
            for side, levels in self.sides.items()
        }


@pytest.fixture
def reference_book():
    """``reference_book()``: a fresh ReferenceBook."""
    return ReferenceBook


class RecordingSink:
    """A BookSink and TradeSink that records every call, and wakes waiters."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.books: list = []
        self.trades: list = []
        self.connections: list[bool] = []  # on_connection reports, in order
        self.changed = asyncio.Event()

    def on_snapshot(self, book) -> None:
        self.events.append(("snapshot", book.update_id))
        self.books.append(book)
        self.changed.set()

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.events.append(("update", update_id, bids, asks))
        self.books[-1].apply(bids, asks, update_id, timestamp)
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))
        self.changed.set()

    def on_trades(self, trades) -> None:
        self.trades.extend(trades)
        self.changed.set()

    def on_connection(self, up: bool, reason: str = "") -> None:
        self.connections.append(up)  # (not an event: book tests compare those)
        self.changed.set()

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    async def wait_for(self, condition: Callable[[RecordingSink], bool], within: float = 5.0):
        async with asyncio.timeout(within):
            while not condition(self):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def recording_sink():
    return RecordingSink


class FakeOkx:
    """A fake OKX v5 on 127.0.0.1. ``script(arg, n)`` gives the frames (text) to push after
    the n-th (1-based) subscribe of ``arg`` ({"channel", "instId"}); ``None`` ignores the
    subscribe. Records every request, ping and connection."""

    def __init__(self, script: Callable[[dict, int], list[str] | None] | None = None) -> None:
        self.script = script or (lambda arg, n: [])
        self.requests: list[dict] = []
        self.subscribes: dict[tuple[str, str], int] = defaultdict(int)
        self.connections = 0
        self.open_connections = 0
        self.pings = 0
        self.answer_pings = True
        self.sockets: list[web.WebSocketResponse] = []
        self.trades: list[dict] = []  # GET /api/v5/market/trades rows, newest first
        self.trade_requests = 0  # GET /api/v5/market/trades served
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Event()  # set on every request, ping, connect and disconnect

    async def wait_until(self, condition: Callable[[FakeOkx], bool], within: float = 5.0):
        async with asyncio.timeout(within):
            while not condition(self):
                self.changed.clear()
                await self.changed.wait()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v5/public"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _push(self, ws: web.WebSocketResponse, frames: list[str]) -> None:
        for frame in frames:
            await ws.send_str(frame)
            await asyncio.sleep(0)  # interleave with other subscriptions, like a live feed

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.open_connections += 1
        self.sockets.append(ws)
        self.changed.set()
        replays: dict[tuple[str, str], asyncio.Task] = {}
        try:
            async for msg in ws:
                self.changed.set()
                if msg.type is not WSMsgType.TEXT:
                    break
                if msg.data == "ping":
                    self.pings += 1
                    if self.answer_pings:
                        await ws.send_str("pong")
                    continue
                req = json.loads(msg.data)
                self.requests.append(req)
                for arg in req["args"]:
                    key = (arg["channel"], arg["instId"])
                    await ws.send_str(json.dumps({"event": req["op"], "arg": arg, "connId": "f"}))
                    old = replays.pop(key, None)
                    if old is not None:
                        old.cancel()
                    if req["op"] != "subscribe":
                        continue
                    self.subscribes[key] += 1
                    frames = self.script(arg, self.subscribes[key])
                    if frames is not None:
                        task = replays[key] = asyncio.create_task(self._push(ws, frames))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        finally:
            self.open_connections -= 1
            self.changed.set()
            for task in replays.values():
                task.cancel()
        return ws

    async def _trades(self, request: web.Request) -> web.Response:
        self.trade_requests += 1
        limit = int(request.query.get("limit", "100"))
        rows = [r for r in self.trades if r["instId"] == request.query["instId"]][:limit]
        return web.json_response({"code": "0", "msg": "", "data": rows})

    async def notice(self) -> None:
        """OKX's 64008 notice (service upgrade: reconnect) to every open connection."""
        body = {"event": "notice", "code": "64008", "msg": "reconnect", "connId": "f"}
        for ws in self.sockets:
            if not ws.closed:
                await ws.send_str(json.dumps(body))

    async def __aenter__(self) -> FakeOkx:
        app = web.Application()
        app.router.add_get("/ws/v5/public", self._ws)
        app.router.add_get("/ws/v5/business", self._ws)
        app.router.add_get("/api/v5/market/trades", self._trades)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for ws in self.sockets:
            await ws.close()
        await self._runner.cleanup()


@pytest.fixture
def fake_okx():
    """``async with fake_okx(script) as server``: a FakeOkx, cleaned up on exit."""
    return FakeOkx


_PRELOADED: dict[str, object] = {}


@pytest.fixture
def okx_venue(okx_instruments):
    """``okx_venue(server, **options)``: an OkxVenue on the fake server with the recorded
    markets, injected as a ccxt object parsed once per session (parsing costs ~0.2 s)."""
    import ccxt

    from astra.venues.okx import OkxUrls, OkxVenue
    from astra.venues.okx.symbols import instruments_from_raw

    exchange = _PRELOADED.get("okx")
    if exchange is None:
        exchange = _PRELOADED["okx"] = ccxt.okx()
        exchange.set_markets(
            [exchange.parse_market(i) for i in instruments_from_raw(okx_instruments)]
        )

    def make(server: FakeOkx, **options) -> OkxVenue:
        urls = OkxUrls(server.rest_url, server.ws_url, server.ws_url.replace("public", "business"))
        return OkxVenue("OKX", urls, markets=exchange, **options)

    return make


@contextlib.asynccontextmanager
async def _background(*coros):
    """Run coroutines as tasks for the block's duration; cancel and await them on exit."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def background():
    """``async with background(coro, ...) as tasks``: tasks cancelled on exit."""
    return _background
