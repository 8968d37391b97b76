"""KuCoin test helpers: the recorded session, an independent book rebuild, a fake KuCoin.

- ``kucoin_recording()``: ``KUCOIN.http.0.0`` snapshots and ``KUCOIN.ws.1.0`` frames per symbol.
- ``reference_states(snapshot, datas, bounds)``: KuCoin's documented procedure written again,
  in exact decimals and independently of ``astra.venues.kucoin``: yields ``(sequence, book,
  changed)`` for the snapshot, then after every message past it; ``bounds=(bid_floor,
  ask_cap)`` keeps only that price range (what a top-N snapshot vouches for).
- ``FakeKucoin``: an aiohttp server on 127.0.0.1 speaking KuCoin's REST (bullet-public,
  snapshots, trade history) and WebSocket protocol (single-use tokens, welcome, subscribe and
  unsubscribe of comma-joined symbols with ack, pong, error), replaying frames per topic from
  one stream cursor shared by all connections (the venue's stream goes on while a client
  reconnects), with hooks to hold, drop or cut frames; it records every request.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import itertools
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web

DATA = Path(__file__).parent / "data"
_HTTP = re.compile(r"^\S+symbol=(?P<sym>[\w-]+) -> (?P<t>[\d.]+): (?P<body>.*)$")
_WS = re.compile(r"^(?P<t>[\d.]+): (?P<body>\{.*\})$")
SECRET, PASSPHRASE = "s3cret", "pass-phrase"


@dataclass
class Recording:
    spot_symbols: dict  # the GET /api/v1/symbols body
    snapshots: dict[str, tuple[float, dict]]  # symbol -> (received at, data)
    level2: dict[str, list[tuple[float, str]]]  # symbol -> [(received at, frame text)]
    matches: dict[str, list[str]]


def _load_recording(shared_fixture) -> Recording:
    return _parse_recording(*(shared_fixture("recorded", f"KUCOIN.{n}") for n in _FILES))


_FILES = ("0", "http.0.0", "ws.1.0")


@functools.cache  # parsed once per session: the tests only read it
def _parse_recording(symbols: Path, http: Path, ws: Path) -> Recording:
    first = symbols.read_text().splitlines()[0]
    spot_symbols = json.loads(first.split(": ", 1)[1])
    snapshots = {}
    for line in http.read_text().splitlines():
        m = _HTTP.match(line)
        if m:
            snapshots[m["sym"]] = (float(m["t"]), json.loads(m["body"])["data"])
    level2, matches = defaultdict(list), defaultdict(list)
    for line in ws.read_text().splitlines():
        m = _WS.match(line)
        if not m or '"type":"message"' not in m["body"]:
            continue
        frame = json.loads(m["body"])
        topic, symbol = frame["topic"].split(":", 1)
        if topic == "/market/level2":
            level2[symbol].append((float(m["t"]), m["body"]))
        elif topic == "/market/match":
            matches[symbol].append(m["body"])
    return Recording(spot_symbols, snapshots, dict(level2), dict(matches))


@pytest.fixture
def kucoin_recording(shared_fixture):
    return _load_recording(shared_fixture)


def top_bounds(snapshot: dict, depth: int = 100) -> tuple[Decimal | None, Decimal | None]:
    """(bid floor, ask cap) of the top-``depth`` cut of a full snapshot; None: not cut."""
    bids = sorted((Decimal(p) for p, _ in snapshot["bids"]), reverse=True)
    asks = sorted(Decimal(p) for p, _ in snapshot["asks"])
    return (
        bids[depth - 1] if len(bids) >= depth else None,
        asks[depth - 1] if len(asks) >= depth else None,
    )


def reference_states(snapshot: dict, datas: list[dict], bounds=(None, None)):
    floor, cap = bounds
    inside = {
        "bids": (lambda p: floor is None or p >= floor),
        "asks": (lambda p: cap is None or p <= cap),
    }
    book = {
        side: {Decimal(p): Decimal(q) for p, q in snapshot[side] if inside[side](Decimal(p))}
        for side in ("bids", "asks")
    }
    seq = int(snapshot["sequence"])
    yield seq, book, False
    for d in datas:
        if d["sequenceEnd"] <= seq:
            continue
        assert d["sequenceStart"] <= seq + 1, f"reference: gap after {seq}"
        changes = sorted(
            (int(c[2]), side, Decimal(c[0]), Decimal(c[1]))
            for side in ("bids", "asks")
            for c in d["changes"][side]
        )
        changed = False
        for cseq, side, price, size in changes:
            if cseq <= seq or price == 0 or not inside[side](price):
                continue
            changed = True
            if size == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = size
        seq = d["sequenceEnd"]
        yield seq, book, changed


def as_decimals(levels: dict[str, dict[float, float]]) -> dict:
    """A float book as exact decimals: repr() round-trips the venue's decimal text."""
    return {
        side: {Decimal(repr(p)): Decimal(repr(q)) for p, q in levels[side].items()}
        for side in ("bids", "asks")
    }


@pytest.fixture
def kucoin_reference():
    """``(reference_states, top_bounds, as_decimals)``."""
    return reference_states, top_bounds, as_decimals


@dataclass
class Stream:
    """One topic's frames: ``cursor`` frames are published (sent, or dropped on the way)."""

    frames: list[str]
    cursor: int = 0
    hold: int | None = None  # publish nothing past this index until ``release`` is set
    release: asyncio.Event = field(default_factory=asyncio.Event)
    drop_at: int | None = None  # this frame is lost on the way (once)
    close_after: int | None = None  # the first connection is cut after sending this many
    dropped: int = 0


class FakeKucoin:
    """KuCoin on loopback. ``level2(symbol, snapshot, frames)`` serves a spot book whose
    snapshots are the recorded one first, then the true book at the stream cursor."""

    def __init__(
        self,
        ping_interval_ms: int = 18_000,
        ping_timeout_ms: int = 10_000,
        answer_pings: bool = True,
        rate_limit_snapshots: int = 0,
    ) -> None:
        self.ping_interval_ms, self.ping_timeout_ms = ping_interval_ms, ping_timeout_ms
        self.answer_pings = answer_pings
        self.rate_limit_snapshots = rate_limit_snapshots  # answer the first N with a 429
        self.streams: dict[str, Stream] = {}
        self.books: dict[str, tuple[dict, list[dict]]] = {}  # symbol -> (snapshot, datas)
        self.served: list[tuple[str, int, tuple]] = []  # (symbol, sequence, bounds)
        self.futures_snapshots: dict[str, dict] = {}
        self.trade_history: dict[str, list[dict]] = {}
        self.history_requests = 0  # trade history (REST) served
        self.sockets: list[web.WebSocketResponse] = []  # every connection, to cut them
        self.tokens: set[str] = set()
        self.bullets = self.connections = self.pings = 0
        self.requests: list[tuple[int, dict]] = []  # (connection number, request), in order
        self.signed_requests = 0
        self._token_ids = itertools.count(1)
        self._changed = asyncio.Event()  # set whenever a counter above moves
        self._runner: web.AppRunner | None = None
        self.port = 0

    def stream(self, topic: str, frames: list[str], **options) -> Stream:
        """Replay ``frames`` to whoever subscribes ``topic``."""
        s = self.streams[topic] = Stream(frames, **options)
        return s

    def level2(self, symbol: str, snapshot: dict, frames: list[str], **options) -> Stream:
        self.books[symbol] = (snapshot, [json.loads(f)["data"] for f in frames])
        return self.stream(f"/market/level2:{symbol}", frames, **options)

    def truth(self, symbol: str) -> dict:
        """The venue's whole book at the stream cursor (recorded snapshot + published)."""
        snapshot, datas = self.books[symbol]
        cursor = self.streams[f"/market/level2:{symbol}"].cursor
        for seq, book, _ in reference_states(snapshot, datas[:cursor]):  # noqa: B007
            pass  # to the last state
        return {
            "sequence": str(seq),
            "time": 0,
            "bids": [[format(p, "f"), format(book["bids"][p], "f")]
                     for p in sorted(book["bids"], reverse=True)],
            "asks": [[format(p, "f"), format(book["asks"][p], "f")] for p in sorted(book["asks"])],
        }  # fmt: skip

    async def wait_until(self, predicate) -> None:
        """Until ``predicate()`` holds (at most 5 s), re-checked when the counters move."""
        async with asyncio.timeout(5.0):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeKucoin:
        app = web.Application()
        app.router.add_post("/api/v1/bullet-public", self._bullet)
        app.router.add_get("/api/v1/market/orderbook/level2_100", self._spot_top100)
        app.router.add_get("/api/v3/market/orderbook/level2", self._spot_full)
        app.router.add_get("/api/v1/level2/snapshot", self._futures_snapshot)
        app.router.add_get("/api/v1/market/histories", self._history)
        app.router.add_get("/api/v1/trade/history", self._history)
        app.router.add_get("/endpoint", self._ws)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.streams.values():
            s.release.set()
        await self._runner.cleanup()

    @staticmethod
    def _ok(data) -> web.Response:
        return web.json_response({"code": "200000", "data": data})

    async def _bullet(self, request: web.Request) -> web.Response:
        self.bullets += 1
        self._changed.set()
        token = f"token-{next(self._token_ids)}"
        self.tokens.add(token)
        server = {
            "endpoint": f"ws://127.0.0.1:{self.port}/endpoint",
            "protocol": "websocket",
            "encrypt": False,
            "pingInterval": self.ping_interval_ms,
            "pingTimeout": self.ping_timeout_ms,
        }
        return self._ok({"token": token, "instanceServers": [server]})

    def _spot_snapshot(self, request: web.Request, depth: int | None) -> web.Response:
        symbol = request.query["symbol"]
        first = not any(served == symbol for served, _, _ in self.served)
        snap = self.books[symbol][0] if first else self.truth(symbol)
        if depth is not None:
            snap = dict(snap, bids=snap["bids"][:depth], asks=snap["asks"][:depth])
        bounds = top_bounds(snap, depth) if depth else (None, None)
        self.served.append((symbol, int(snap["sequence"]), bounds))
        return self._ok(snap)

    async def _spot_top100(self, request: web.Request) -> web.Response:
        if self.rate_limit_snapshots > 0:
            self.rate_limit_snapshots -= 1
            body = {"code": "429000", "msg": "Too Many Requests"}
            return web.json_response(body, status=429, headers={"Retry-After": "0.3"})
        return self._spot_snapshot(request, 100)

    async def _spot_full(self, request: web.Request) -> web.Response:
        h = request.headers
        payload = f"{h['KC-API-TIMESTAMP']}GET{request.path_qs}".encode()
        sign = base64.b64encode(hmac.new(SECRET.encode(), payload, hashlib.sha256).digest())
        phrase = hmac.new(SECRET.encode(), PASSPHRASE.encode(), hashlib.sha256).digest()
        if (
            h.get("KC-API-SIGN") != sign.decode()
            or h.get("KC-API-PASSPHRASE") != base64.b64encode(phrase).decode()
            or h.get("KC-API-KEY-VERSION") != "2"
        ):
            return web.json_response({"code": "400005", "msg": "Invalid KC-API-SIGN"}, status=401)
        self.signed_requests += 1
        return self._spot_snapshot(request, None)

    async def _futures_snapshot(self, request: web.Request) -> web.Response:
        return self._ok(self.futures_snapshots[request.query["symbol"]])

    async def _history(self, request: web.Request) -> web.Response:
        self.history_requests += 1
        return self._ok(self.trade_history[request.query["symbol"]])

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token not in self.tokens:  # tokens are single-use here: every connect gets its own
            return web.json_response({"code": "401", "msg": "token invalid"}, status=401)
        self.tokens.discard(token)
        self.connections += 1
        number = self.connections
        self._changed.set()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({"id": request.query.get("connectId", ""), "type": "welcome"}))
        senders: dict[str, asyncio.Task] = {}  # topic -> its replay on this connection
        try:
            async for msg in ws:
                m = json.loads(msg.data)
                if m["type"] == "ping":
                    self.pings += 1
                    self._changed.set()
                    if self.answer_pings:
                        await ws.send_str(json.dumps({"id": m["id"], "type": "pong"}))
                    continue
                self.requests.append((number, m))
                self._changed.set()
                # One channel, symbols comma-joined: each symbol is its own topic.
                channel, _, symbols = m["topic"].partition(":")
                topics = [f"{channel}:{symbol}" for symbol in symbols.split(",")]
                if m["type"] == "subscribe":
                    unknown = [t for t in topics if t not in self.streams]
                    if unknown:  # the whole request is refused
                        err = {"id": m["id"], "type": "error", "code": 404,
                               "data": f"topic {unknown[0]} is not found"}  # fmt: skip
                        await ws.send_str(json.dumps(err))
                        continue
                    await ws.send_str(json.dumps({"id": str(m["id"]), "type": "ack"}))
                    for topic in topics:
                        task = asyncio.create_task(self._replay(ws, self.streams[topic]))
                        senders[topic] = task
                elif m["type"] == "unsubscribe":
                    for topic in topics:
                        if (task := senders.pop(topic, None)) is not None:
                            task.cancel()
                    await ws.send_str(json.dumps({"id": str(m["id"]), "type": "ack"}))
        finally:
            for task in senders.values():
                task.cancel()
        return ws

    def sent(self, kind: str) -> list[str]:
        """The ``topic`` of every ``kind`` request received, in order."""
        return [m["topic"] for _, m in self.requests if m["type"] == kind]

    async def _replay(self, ws: web.WebSocketResponse, stream: Stream) -> None:
        sent = 0
        while stream.cursor < len(stream.frames):
            if stream.hold is not None and stream.cursor >= stream.hold:
                await stream.release.wait()
            i = stream.cursor
            stream.cursor += 1
            if i == stream.drop_at:
                stream.drop_at, stream.dropped = None, stream.dropped + 1
                continue
            await ws.send_str(stream.frames[i])
            sent += 1
            if stream.close_after is not None and sent >= stream.close_after:
                stream.close_after = None
                await ws.close()
                return
            if sent % 64 == 0:
                await asyncio.sleep(0)  # let the other side breathe, as a network would


@pytest.fixture
def fake_kucoin():
    """``FakeKucoin(ping_interval_ms=...)``; use as ``async with``."""
    return FakeKucoin


@pytest.fixture
def kucoin_credentials():
    from astra.venues.kucoin import KucoinCredentials

    return KucoinCredentials("key-id", SECRET, PASSPHRASE)


@pytest.fixture
def contracts_active() -> dict:
    return json.loads((DATA / "contracts_active.json").read_text())
