"""Binance test helpers: the recorded responses, an independent book rebuild, a fake Binance
on 127.0.0.1 (REST depth + WebSocket replay of a recorded session) and a recording sink."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import WSCloseCode, web

DATA = Path(__file__).parent / "data"
_HTTP = re.compile(r"^\S+symbol=(?P<sym>\w+)\S* -> (?P<t>[\d.]+): (?P<body>.*)$")
_WS = re.compile(r"^(?P<t>[\d.]+): (?P<body>\{.*\})$")


@functools.cache  # 2 MB of JSON: read once per session; tests treat it as read-only
def _first_response(path: Path) -> dict:
    """The JSON body of the first ``URL -> T: {json}`` line of a recorded file."""
    return json.loads(path.read_text().splitlines()[0].split(": ", 1)[1])


@functools.cache
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def exchange_info(shared_fixture):
    """The recorded exchangeInfo responses by section, plus the options sample (from docs)."""
    return {
        "spot": _first_response(shared_fixture("recorded", "BINANCE.0")),
        "usdm": _first_response(shared_fixture("recorded", "BINANCE_FUTURES.0")),
        "coinm": _first_response(shared_fixture("recorded", "BINANCE_DELIVERY.0")),
        "option": _json(DATA / "eapi_exchangeInfo.json"),
    }


class Recording:
    """One symbol of BINANCE.http.0.0 + BINANCE.ws.1.0: the REST snapshot, the raw depth
    frames (unwrapped from the combined stream) and the aggTrade frames, in order."""

    def __init__(self, shared_fixture, symbol: str) -> None:
        self.symbol = symbol
        for line in shared_fixture("recorded", "BINANCE.http.0.0").read_text().splitlines():
            m = _HTTP.match(line)
            if m and m["sym"] == symbol:
                self.snapshot = json.loads(m["body"])
        self.depth: list[str] = []
        self.trades: list[str] = []
        for line in shared_fixture("recorded", "BINANCE.ws.1.0").read_text().splitlines():
            m = _WS.match(line)
            if not m:
                continue
            wrapped = json.loads(m["body"])
            if wrapped["data"].get("s") != symbol:
                continue
            if wrapped["stream"].endswith("@depth@100ms"):
                self.depth.append(json.dumps(wrapped["data"]))
            elif wrapped["stream"].endswith("@aggTrade"):
                self.trades.append(json.dumps(wrapped["data"]))
        self.events = [json.loads(f) for f in self.depth]
        self._decimal_snapshot: dict | None = None
        self._decimal_events: list = []

    def truth(self, upto_u: int) -> dict[str, dict[Decimal, Decimal]]:
        """Independent rebuild in exact decimals: the recorded snapshot, then every event
        reaching past it (spot: ``u > lastUpdateId``) with ``u <= upto_u``."""
        if self._decimal_snapshot is None:  # parsed once: tests ask after every event
            snap = self.snapshot
            self._decimal_snapshot = {
                side: {Decimal(p): Decimal(q) for p, q in snap[side]} for side in ("bids", "asks")
            }
            self._decimal_events = [
                (e["u"], [[(Decimal(p), Decimal(q)) for p, q in e[k]] for k in ("b", "a")])
                for e in self.events
            ]
        book = {side: dict(levels) for side, levels in self._decimal_snapshot.items()}
        for u, (bids, asks) in self._decimal_events:
            if u <= self.snapshot["lastUpdateId"] or u > upto_u:
                continue
            for side, changes in (("bids", bids), ("asks", asks)):
                for p, q in changes:
                    if q == 0:
                        book[side].pop(p, None)
                    else:
                        book[side][p] = q
        return book

    def truth_floats(self, upto_u: int) -> dict[str, dict[float, float]]:
        """The rebuild as the gateway's clients see it (floats parsed from the decimals)."""
        return {
            side: {float(p): float(q) for p, q in levels.items()}
            for side, levels in self.truth(upto_u).items()
        }

    @property
    def final_u(self) -> int:
        return self.events[-1]["u"]


@pytest.fixture
def recording(shared_fixture):
    """``recording("NKNUSDT")``: that symbol's recorded spot session."""
    return lambda symbol: Recording(shared_fixture, symbol)


class FakeBinance:
    """Binance spot on 127.0.0.1, serving one recorded session.

    The recorded frames are a tape shared by every connection (the venue's "now"): each
    WebSocket connection streams from the tape's current position. The first depth request
    gets the recorded snapshot; later ones get the truth at the last frame sent, as the
    venue would answer then. Knobs: ``hold_after`` (stop the tape at that frame until
    ``release`` is set), ``per_connection`` (frames per connection, then stay silent),
    ``drop`` (tape positions not sent on the first connection), ``refusals`` (``(status,
    retry_after)`` answers to the first depth requests).
    """

    def __init__(
        self,
        rec: Recording,
        *,
        hold_after: int | None = None,
        per_connection: int | None = None,
        drop: tuple[int, ...] = (),
        refusals: tuple[tuple[int, int], ...] = (),
        exchange_info: dict | None = None,
    ) -> None:
        self.rec, self.hold_after, self.per_connection = rec, hold_after, per_connection
        self.drop, self.refusals = set(drop), list(refusals)
        self.exchange_info = exchange_info
        self.pos = 0
        self.release = asyncio.Event()
        self.connections = 0
        self.streams: list[str] = []
        self.depth_requests: list[tuple[float, dict]] = []  # (time.monotonic(), query)
        self.served_ids: list[int] = []
        self.dropped: list[int] = []
        self._runner: web.AppRunner | None = None
        self._open: set[web.WebSocketResponse] = set()
        self.base_url = ""

    def _snapshot_body(self) -> dict:
        if not self.served_ids:
            return self.rec.snapshot
        upto = self.rec.events[self.pos - 1]["u"]
        book = self.rec.truth(upto)
        return {
            "lastUpdateId": upto,
            "bids": [[str(p), str(q)] for p, q in sorted(book["bids"].items(), reverse=True)],
            "asks": [[str(p), str(q)] for p, q in sorted(book["asks"].items())],
        }

    async def depth(self, request: web.Request) -> web.Response:
        self.depth_requests.append((time.monotonic(), dict(request.query)))
        if self.refusals:
            status, retry_after = self.refusals.pop(0)
            return web.json_response(
                {"code": -1003, "msg": "Too many requests; please use the websocket."},
                status=status,
                headers={"Retry-After": str(retry_after)},
            )
        body = self._snapshot_body()
        self.served_ids.append(body["lastUpdateId"])
        return web.json_response(body)

    async def exchange_info_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.exchange_info)

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        first = self.connections == 1
        name = request.match_info["stream"]
        self.streams.append(name)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._open.add(ws)
        try:
            await self._replay(ws, name, first)
            async for _ in ws:  # stay open (and silent) until the client leaves
                pass
        finally:
            self._open.discard(ws)
        return ws

    async def _replay(self, ws: web.WebSocketResponse, name: str, first: bool) -> None:
        if name.endswith("@aggTrade"):
            for frame in self.rec.trades:
                await ws.send_str(frame)
        else:
            sent = 0
            tape = self.rec.depth
            while self.pos < len(tape) and not ws.closed:
                if self.per_connection is not None and sent >= self.per_connection:
                    break
                if self.pos == self.hold_after:
                    await self.release.wait()
                i, self.pos = self.pos, self.pos + 1
                sent += 1
                if first and i in self.drop:
                    self.dropped.append(i)
                    continue
                try:
                    await ws.send_str(tape[i])
                except ConnectionError:
                    break
                await asyncio.sleep(0)  # interleave with the client, as a live stream does

    async def start(self) -> FakeBinance:
        app = web.Application()
        app.router.add_get("/api/v3/depth", self.depth)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info_route)
        app.router.add_get("/stream/ws/{stream}", self.stream)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        self.release.set()  # unblock held handlers so the runner can shut down
        if self._runner is not None:
            for ws in list(self._open):
                await ws.close(code=WSCloseCode.GOING_AWAY)
            await self._runner.cleanup()


@pytest.fixture
async def fake_binance():
    """``await fake_binance(recording, **knobs)``: a started FakeBinance, closed after the test."""
    servers: list[FakeBinance] = []

    async def start(rec: Recording, **knobs) -> FakeBinance:
        server = await FakeBinance(rec, **knobs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


class RecordingSink:
    """A BookSink that keeps the book it is given and logs every call, so a test can
    check the book after each step and wait for a condition."""

    def __init__(self) -> None:
        self.book = None
        self.log: list[tuple[str, object]] = []
        self.checks: list = []  # callables run on (sink) after every snapshot/update
        self._changed = asyncio.Event()

    def _step(self, kind: str, value: object) -> None:
        self.log.append((kind, value))
        for check in self.checks:
            check(self)
        self._changed.set()

    def on_snapshot(self, book) -> None:
        self.book = book
        self._step("snapshot", book.update_id)

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)
        self._step("update", update_id)

    def on_resync(self, reason: str) -> None:
        self._step("resync", reason)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]

    def levels(self) -> dict[str, dict[float, float]]:
        return {"bids": dict(self.book.bids), "asks": dict(self.book.asks)}

    async def until(self, predicate, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def book_sink():
    """``book_sink()``: a fresh RecordingSink."""
    return RecordingSink
