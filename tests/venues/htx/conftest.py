"""Shared helpers for the HTX tests: the recorded session, markets from the recorded
instrument lists, and ``FakeHtx``, a small HTX on 127.0.0.1.

``FakeHtx`` speaks HTX's market-data protocol: every frame it sends is gzip-compressed JSON
in a binary frame; it pings each connection every ``ping_interval`` seconds and closes the
connection (recording why in ``pong_failures``) when the answer is not ``{"pong": n}`` with
the same ``n`` before the next ping. Topics are either scripted ``mbp`` books (increments
with ``seqNum``/``prevSeqNum``, refreshes on ``req``) or recorded frames replayed verbatim.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gzip
import json
import random
import re
from collections import Counter

import pytest
from aiohttp import web

_RECV = re.compile(r"^(?P<t>[\d.]+): (?P<body>b['\"].*)$")
_SENT = re.compile(r"^\S+ <- (?P<t>[\d.]+): (?P<body>\{.*\})$")


def _first_response(path) -> dict:
    """The JSON body of the first ``URL -> T: {json}`` line of an instrument-list file."""
    for line in path.read_text().splitlines():
        if " -> " in line:
            return json.loads(line.split(" -> ", 1)[1].split(": ", 1)[1])
    raise AssertionError(f"no response in {path}")


# A documented-shape USDT-margined swap list (GET /linear-swap-api/v1/swap_contract_info):
# one perpetual, one dated future (left out by the venue package).
LINEAR_SWAPS = {
    "status": "ok",
    "data": [
        {
            "symbol": "BTC",
            "contract_code": "BTC-USDT",
            "contract_size": 0.001,
            "price_tick": 0.1,
            "delivery_date": "",
            "delivery_time": "",
            "create_date": "20201021",
            "contract_status": 1,
            "settlement_date": "1640764800000",
            "support_margin_mode": "all",
            "business_type": "swap",
            "pair": "BTC-USDT",
            "contract_type": "swap",
            "trade_partition": "USDT",
        },
        {
            "symbol": "BTC",
            "contract_code": "BTC-USDT-211231",
            "contract_size": 0.001,
            "price_tick": 0.1,
            "delivery_date": "20211231",
            "delivery_time": "1640937600000",
            "create_date": "20211228",
            "contract_status": 1,
            "settlement_date": "1640764800000",
            "support_margin_mode": "cross",
            "business_type": "futures",
            "pair": "BTC-USDT",
            "contract_type": "quarter",
            "trade_partition": "USDT",
        },
    ],
    "ts": 1640736207263,
}


@pytest.fixture
def instruments(shared_fixture):
    """Raw instrument lists by section: the recorded spot and coin-margined swap lists,
    and the documented linear sample."""
    return {
        "spot": _first_response(shared_fixture("recorded", "HUOBI.0")),
        "inverse_swap": _first_response(shared_fixture("recorded", "HUOBI_SWAP.0")),
        "linear_swap": LINEAR_SWAPS,
    }


@pytest.fixture
def markets_source(instruments):
    """A ``markets_source`` for HtxVenue answering from the recorded lists (no network)."""

    async def source() -> dict[str, dict]:
        return instruments

    return source


class Recording:
    """HUOBI.ws.44.0: frames received (raw gzip bytes) and messages sent, in order."""

    def __init__(self, path) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.sent: list[tuple[float, dict, str]] = []
        for line in path.read_text().splitlines():
            if m := _RECV.match(line):
                # The payload is a Python bytes literal: literal_eval parses literals only.
                self.received.append((float(m["t"]), ast.literal_eval(m["body"])))
            elif m := _SENT.match(line):
                self.sent.append((float(m["t"]), json.loads(m["body"]), m["body"]))

    def messages(self) -> list[tuple[bytes, dict]]:
        """(raw frame, decoded JSON) of every received frame."""
        return [(raw, json.loads(gzip.decompress(raw))) for _, raw in self.received]

    def frames(self, topic: str) -> list[bytes]:
        """The raw frames pushed on ``topic``."""
        return [raw for raw, msg in self.messages() if msg.get("ch") == topic]

    def depth_topics(self) -> dict[str, list[tuple[bytes, dict]]]:
        """(raw frame, decoded JSON) of each ``depth.step0`` topic's pushes, in order."""
        topics: dict[str, list[tuple[bytes, dict]]] = {}
        for raw, msg in self.messages():
            if msg.get("ch", "").endswith(".depth.step0"):
                topics.setdefault(msg["ch"], []).append((raw, msg))
        return topics


@pytest.fixture
def recording(shared_fixture) -> Recording:
    return Recording(shared_fixture("recorded", "HUOBI.ws.44.0"))


@pytest.fixture(
    params=["HUOBI_SWAP.ws.1.0", "HUOBI_SWAP.ws.2.0"], ids=["coin-margined", "usdt-margined"]
)
def swap_recording(request, shared_fixture) -> Recording:
    """A recorded HTX swap session: ``depth.step0`` and ``trade.detail`` of five contracts,
    coin-margined (``HUOBI_SWAP.ws.1.0``, /swap-ws) or USDT-margined (``.2.0``,
    /linear-swap-ws); from the same cryptofeed ``sample_data`` as ``HUOBI.ws.44.0``."""
    try:
        path = shared_fixture("recorded", request.param)
    except pytest.skip.Exception:
        pytest.skip(f"the HTX swap recording {request.param} is not in ../shared/fixtures/recorded")
    return Recording(path)


def _gz(obj: dict) -> bytes:
    return gzip.compress(json.dumps(obj).encode())


class MbpScript:
    """One scripted ``market.$symbol.mbp.$levels`` book: a seeded random walk of level
    changes, ``seqNum`` stepping by 3 (never consecutive). ``books[seqNum]`` is the served
    book (price -> size per side) after each increment; increments whose index is in
    ``drop`` change the book but are never sent (a lost message)."""

    def __init__(self, topic: str, steps: int, *, seed: int = 7, drop: tuple[int, ...] = ()):
        self.topic, self.drop = topic, set(drop)
        rng = random.Random(seed)
        self.seq = 100_020_142_010
        self.bids = {round(99.99 - i * 0.01, 2): float(i + 1) for i in range(20)}
        self.asks = {round(100.01 + i * 0.01, 2): float(i + 1) for i in range(20)}
        self.books = {self.seq: self._copy()}
        self.increments: list[dict] = []
        for _ in range(steps):
            change: dict[str, list] = {"bids": [], "asks": []}
            for side, book, lo in (("bids", self.bids, 99.5), ("asks", self.asks, 100.01)):
                for _ in range(rng.randint(0, 3)):
                    price = round(lo + rng.randint(0, 49) * 0.01, 2)
                    size = 0.0 if price in book and rng.random() < 0.4 else rng.randint(1, 900) / 7
                    change[side].append([price, size])
                    if size:
                        book[price] = size
                    else:
                        book.pop(price, None)
            prev, self.seq = self.seq, self.seq + 3
            self.books[self.seq] = self._copy()
            self.increments.append({"seqNum": self.seq, "prevSeqNum": prev, **change})
        self.sent = 0  # increments pushed so far (published, dropped or not)

    def _copy(self) -> dict:
        return {"bids": dict(self.bids), "asks": dict(self.asks)}

    @property
    def current(self) -> int:
        return self.increments[self.sent - 1]["seqNum"] if self.sent else min(self.books)

    def refresh(self) -> dict:
        book = self.books[self.current]
        return {
            "seqNum": self.current,
            "bids": sorted(([p, q] for p, q in book["bids"].items()), reverse=True),
            "asks": sorted([p, q] for p, q in book["asks"].items()),
        }


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, path: str) -> None:
        self.ws, self.path = ws, path
        self.expect: int | None = None  # the ping awaiting its pong
        self.frames = 0
        self.stalled = False

    async def send(self, obj: dict | bytes) -> None:
        if self.stalled or self.ws.closed:
            return
        self.frames += 1
        await self.ws.send_bytes(obj if isinstance(obj, bytes) else _gz(obj))


class FakeHtx:
    def __init__(
        self, *, ping_interval: float = 0.2, interval: float = 0.01, stall_after: int = 0
    ) -> None:
        self.ping_interval, self.interval, self.stall_after = ping_interval, interval, stall_after
        self.scripts: dict[str, MbpScript] = {}
        self.replays: dict[str, list[bytes]] = {}
        self.rest: dict[str, dict] = {}  # REST path -> JSON body
        self.rest_queries: list[tuple[str, dict]] = []
        self.connections: Counter[str] = Counter()
        self.client_messages: list[dict] = []
        self.pongs_ok = 0
        self.pong_failures: list[str] = []
        self._subscribers: dict[str, set[_Conn]] = {}
        self._pushers: dict[str, asyncio.Task] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_mbp(self, script: MbpScript) -> MbpScript:
        self.scripts[script.topic] = script
        return script

    def add_replay(self, topic: str, frames: list[bytes]) -> None:
        self.replays[topic] = frames

    async def __aenter__(self) -> FakeHtx:
        app = web.Application()
        for path in ("/ws", "/feed", "/swap-ws", "/linear-swap-ws"):
            app.router.add_get(path, self._ws)
        app.router.add_get("/{path:.+}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._pushers.values():
            task.cancel()
        for task in self._pushers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._runner.cleanup()

    async def _rest(self, request: web.Request) -> web.Response:
        self.rest_queries.append((request.path, dict(request.query)))
        body = self.rest.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.json_response(body)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections[request.path] += 1
        conn = _Conn(ws, request.path)
        if self.stall_after and self.connections[request.path] == 1:
            conn.stalled = None  # armed: stalls after `stall_after` frames
        pinger = asyncio.create_task(self._ping(conn))
        try:
            async for msg in ws:
                await self._on_client(conn, json.loads(msg.data))
        finally:
            pinger.cancel()
            for subs in self._subscribers.values():
                subs.discard(conn)
        return ws

    async def _fail(self, conn: _Conn, why: str) -> None:
        self.pong_failures.append(why)
        await conn.ws.close(code=4000, message=why.encode())

    async def _ping(self, conn: _Conn) -> None:
        n = 1_618_678_073_643
        while not conn.ws.closed:
            await asyncio.sleep(self.ping_interval)
            if conn.stalled:  # gone silent on purpose: no pings either
                continue
            if conn.expect is not None:
                return await self._fail(conn, f"no pong for ping {conn.expect}")
            n += 5000
            conn.expect = n
            await conn.send({"ping": n})

    async def _on_client(self, conn: _Conn, msg: dict) -> None:
        if "pong" in msg:
            if msg["pong"] != conn.expect or set(msg) != {"pong"}:
                return await self._fail(conn, f"bad pong {msg} for ping {conn.expect}")
            self.pongs_ok += 1
            conn.expect = None
            return
        self.client_messages.append(msg)
        if "sub" in msg:
            topic = msg["sub"]
            await conn.send({"id": msg.get("id"), "status": "ok", "subbed": topic, "ts": 1})
            self._subscribers.setdefault(topic, set()).add(conn)
            if topic not in self._pushers:
                self._pushers[topic] = asyncio.create_task(self._push(topic))
        elif "req" in msg:
            script = self.scripts[msg["req"]]
            reply = {"id": msg.get("id"), "rep": msg["req"], "status": "ok", "ts": 2}
            await conn.send({**reply, "data": script.refresh()})

    async def cut(self) -> None:
        """Close every subscribed connection, as a venue dropping them does."""
        for conn in {c for subs in self._subscribers.values() for c in subs}:
            await conn.ws.close()

    async def _broadcast(self, topic: str, frame: dict | bytes) -> None:
        for conn in tuple(self._subscribers.get(topic, ())):
            if conn.stalled is None and conn.frames >= self.stall_after:
                conn.stalled = True
            await conn.send(frame)

    async def _push(self, topic: str) -> None:
        """The topic's frames, one every ``interval``, to every subscriber (a venue's stream
        runs whether or not anyone listens; it starts with the first subscription)."""
        if topic in self.replays:
            for frame in self.replays[topic]:
                await asyncio.sleep(self.interval)
                await self._broadcast(topic, frame)
            return
        script = self.scripts.get(topic)
        if script is None:
            return
        for i, tick in enumerate(script.increments):
            await asyncio.sleep(self.interval)
            script.sent = i + 1
            if i not in script.drop:
                await self._broadcast(topic, {"ch": topic, "ts": 1_000 + i, "tick": tick})


@pytest.fixture
def fake_htx():
    """``async with fake_htx(**options) as server``: a FakeHtx on 127.0.0.1."""
    return FakeHtx


@pytest.fixture
def mbp_script():
    """``mbp_script(topic, steps, drop=(...))``: a scripted mbp book."""
    return MbpScript
