"""Binance test helpers: the recorded responses, an independent book rebuild, a fake Binance
on 127.0.0.1 (REST depth + a combined-stream WebSocket replaying recorded sessions, with live
SUBSCRIBE/UNSUBSCRIBE) and a recording sink."""

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


class Tape:
    """One symbol's recorded frames as the venue's "now": every subscription of its depth
    stream plays from the current position, on whichever connection it was made."""

    def __init__(self, rec: Recording, drop: tuple[int, ...] = ()) -> None:
        self.rec, self.drop = rec, set(drop)
        self.pos = 0
        self.served_ids: list[int] = []  # lastUpdateId of each depth response
        self.dropped: list[int] = []


class FakeBinance:
    """Binance spot on 127.0.0.1, serving recorded sessions (one or more symbols).

    REST ``depth``: the first request of a symbol gets its recorded snapshot, later ones the
    truth at the last frame its tape sent, as the venue would answer then. WebSocket: the
    combined-stream endpoint (``/stream/stream``), answering live ``SUBSCRIBE``/``UNSUBSCRIBE``
    with ``{"result": null, "id"}`` and replaying each subscribed stream wrapped as
    ``{"stream", "data"}``. Knobs: ``hold_after`` (stop every tape at that frame until
    ``release`` is set), ``per_connection`` (frames per stream and connection, then quiet),
    ``drop`` (tape positions not sent on the first connection: a tuple for the first
    recording, or ``{symbol: positions}``), ``refusals`` (``(status, retry_after)`` answers to
    the first depth requests), ``refuse`` (stream names whose SUBSCRIBE gets an error answer
    once).
    """

    def __init__(
        self,
        recs: Recording | list[Recording],
        *,
        hold_after: int | None = None,
        per_connection: int | None = None,
        drop: tuple[int, ...] | dict[str, tuple[int, ...]] = (),
        refusals: tuple[tuple[int, int], ...] = (),
        refuse: tuple[str, ...] = (),
        exchange_info: dict | None = None,
    ) -> None:
        recs = [recs] if isinstance(recs, Recording) else list(recs)
        drops = drop if isinstance(drop, dict) else {recs[0].symbol: drop}
        self.tapes = {rec.symbol: Tape(rec, drops.get(rec.symbol, ())) for rec in recs}
        self.rec = recs[0]
        self.hold_after, self.per_connection = hold_after, per_connection
        self.refusals, self.refuse = list(refusals), set(refuse)
        self.exchange_info = exchange_info
        self.release = asyncio.Event()
        self.connections = 0
        self.requests: list[tuple[int, dict]] = []  # (connection number, request), in order
        self.streams: list[str] = []  # every stream subscribed, in order
        self.depth_requests: list[tuple[float, dict]] = []  # (time.monotonic(), query)
        self.served_ids: list[int] = []  # every depth response's lastUpdateId, all symbols
        self.dropped: list[int] = []
        self.agg_trades: list[dict] = []  # GET aggTrades rows (of the first recording)
        self.trade_requests = 0  # GET aggTrades served
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._open: set[web.WebSocketResponse] = set()
        self.base_url = ""

    @property
    def pos(self) -> int:
        return self.tapes[self.rec.symbol].pos

    def _snapshot_body(self, tape: Tape) -> dict:
        if not tape.served_ids:
            return tape.rec.snapshot
        upto = tape.rec.events[tape.pos - 1]["u"]
        book = tape.rec.truth(upto)
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
        tape = self.tapes[request.query["symbol"]]
        body = self._snapshot_body(tape)
        tape.served_ids.append(body["lastUpdateId"])
        self.served_ids.append(body["lastUpdateId"])
        return web.json_response(body)

    async def agg_trades_route(self, request: web.Request) -> web.Response:
        self.trade_requests += 1
        return web.json_response(self.agg_trades[-int(request.query.get("limit", "500")) :])

    async def exchange_info_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.exchange_info)

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._open.add(ws)
        self._changed.set()
        replays: dict[str, asyncio.Task] = {}
        try:
            async for msg in ws:
                req = json.loads(msg.data)
                self.requests.append((number, req))
                self._changed.set()
                refused = self.refuse & set(req["params"])
                if req["method"] == "SUBSCRIBE" and refused:
                    self.refuse -= refused
                    error = {"code": 2, "msg": "Invalid request: refused here", "id": req["id"]}
                    await ws.send_str(json.dumps(error))
                    continue
                await ws.send_str(json.dumps({"result": None, "id": req["id"]}))
                for name in req["params"]:
                    if req["method"] == "SUBSCRIBE":
                        self.streams.append(name)
                        replays[name] = asyncio.create_task(self._replay(ws, name, number))
                    elif (task := replays.pop(name, None)) is not None:
                        task.cancel()
        finally:
            self._open.discard(ws)
            for task in replays.values():
                task.cancel()
        return ws

    async def _replay(self, ws: web.WebSocketResponse, name: str, number: int) -> None:
        symbol, _, kind = name.partition("@")
        tape = self.tapes.get(symbol.upper())
        if tape is None:
            return
        if kind == "aggTrade":
            for frame in tape.rec.trades:
                await ws.send_str(f'{{"stream":"{name}","data":{frame}}}')
            return
        sent = 0
        frames = tape.rec.depth
        while tape.pos < len(frames) and not ws.closed:
            if self.per_connection is not None and sent >= self.per_connection:
                break
            if tape.pos == self.hold_after:
                await self.release.wait()
            i, tape.pos = tape.pos, tape.pos + 1
            sent += 1
            if number == 1 and i in tape.drop:
                tape.dropped.append(i)
                self.dropped.append(i)
                continue
            try:
                await ws.send_str(f'{{"stream":"{name}","data":{frames[i]}}}')
            except ConnectionError:
                break
            await asyncio.sleep(0)  # interleave with the client, as a live stream does

    def sent(self, method: str) -> list[list[str]]:
        """The params of every ``method`` request received, in order."""
        return [req["params"] for _, req in self.requests if req["method"] == method]

    async def wait_until(self, predicate, within: float = 10.0) -> None:
        """Until ``predicate()`` holds, re-checked whenever a connection or request arrives."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> FakeBinance:
        app = web.Application()
        app.router.add_get("/api/v3/depth", self.depth)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info_route)
        app.router.add_get("/api/v3/aggTrades", self.agg_trades_route)
        app.router.add_get("/stream/stream", self.stream)
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

    async def start(recs: Recording | list[Recording], **knobs) -> FakeBinance:
        server = await FakeBinance(recs, **knobs).start()
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
