"""A fake Kraken v2 on 127.0.0.1 serving many synthetic pairs (``BookScript``s from the parent
conftest) on whatever connections subscribe to them, with checksums computed independently
by the parent's ``RefBook`` (exact decimals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from aiohttp import web


@contextlib.asynccontextmanager
async def serve(routes: list[tuple[str, object]]):
    """An aiohttp app with GET ``routes`` on 127.0.0.1, an ephemeral port; yields the port."""
    app = web.Application()
    for path, handler in routes:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


@dataclass
class FakeKrakenV2Multi:
    """Kraken v2 on 127.0.0.1 serving many pairs, each from a ``BookScript``, on whatever
    connections subscribe to them. A ``book`` subscription of a pair gets a snapshot of its
    current book (correct checksum at ``(price_dp, qty_dp)``), then the pair's remaining
    changes in order, one ``update`` each. ``corrupt[symbol] = i`` alters the quantity sent
    in change ``i`` on that pair's first subscription (its checksum is the true book's).
    ``drop()`` closes every connection. Requests are recorded as ``(connection no, request)``.
    """

    scripts: dict  # v2 symbol -> (BookScript, price_dp, qty_dp)
    ref_book: type  # the parent conftest's RefBook
    frame: object  # the parent conftest's v2_book_frame
    corrupt: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    requests: list[tuple[int, dict]] = field(default_factory=list)
    subscriptions: Counter = field(default_factory=Counter)  # book subscriptions per symbol
    books: dict = field(default_factory=dict)  # symbol -> RefBook
    positions: Counter = field(default_factory=Counter)
    done: dict[str, asyncio.Event] = field(default_factory=dict)
    sockets: list = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # a request in, a frame out
    port: int = 0

    def __post_init__(self) -> None:
        for symbol, (script, _, _) in self.scripts.items():
            self.books[symbol] = self.ref_book()
            self.books[symbol].apply(script.asks, script.bids)
            self.done[symbol] = asyncio.Event()

    def checksum(self, symbol: str) -> int:
        _, price_dp, qty_dp = self.scripts[symbol]
        return self.books[symbol].checksum_v2(price_dp, qty_dp)

    async def _send_book(self, ws, symbol: str, first: bool) -> None:
        script, _, _ = self.scripts[symbol]
        book = self.books[symbol]
        asks, bids = book.top(1000)
        await ws.send_str(self.frame("snapshot", symbol, asks, bids, self.checksum(symbol), 1))
        while self.positions[symbol] < len(script.changes):
            i = self.positions[symbol]
            self.positions[symbol] += 1
            side, price, qty = script.changes[i]
            level = [(price, qty)]
            book.apply([] if side == "buy" else level, level if side == "buy" else [])
            sent = level
            if first and self.corrupt.get(symbol) == i:
                sent = [(price, str(Decimal(qty) + 1))]
            asks, bids = ([], sent) if side == "buy" else (sent, [])
            frame = self.frame("update", symbol, asks, bids, self.checksum(symbol), 2 + i)
            if self.positions[symbol] == len(script.changes):
                self.done[symbol].set()  # before the last frame: a client sees both at once
            await ws.send_str(frame)
            self.changed.set()
            await asyncio.sleep(0.002)
        self.done[symbol].set()
        self.changed.set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        tasks: dict[str, asyncio.Task] = {}
        beat: asyncio.Task | None = None
        try:
            async for msg in ws:
                req = json.loads(msg.data)
                self.requests.append((number, req))
                self.changed.set()
                method, params = req["method"], req.get("params", {})
                reply = {"method": method, "req_id": req.get("req_id")}
                if method == "ping":
                    await ws.send_json({**reply, "method": "pong"})
                    continue
                for symbol in params.get("symbol", []):
                    if symbol not in self.scripts:
                        error = f"Currency pair not supported {symbol}"
                        await ws.send_json({**reply, "success": False, "error": error})
                        continue
                    result = {**params, "symbol": symbol}
                    await ws.send_json({**reply, "success": True, "result": result})
                    if symbol in tasks:
                        tasks.pop(symbol).cancel()
                    if method == "subscribe":
                        self.subscriptions[symbol] += 1
                        first = self.subscriptions[symbol] == 1
                        tasks[symbol] = asyncio.create_task(self._send_book(ws, symbol, first))
                if beat is None:
                    beat = asyncio.create_task(self._heartbeats(ws))
        finally:
            for task in [*tasks.values(), beat]:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
        return ws

    async def _heartbeats(self, ws) -> None:
        while True:
            await asyncio.sleep(0.1)
            await ws.send_str('{"channel":"heartbeat"}')

    async def drop(self) -> None:
        sockets, self.sockets = self.sockets, []
        for ws in sockets:
            await ws.close()

    def subscribes(self, method: str = "subscribe") -> list[tuple[int, list[str]]]:
        return [(n, r["params"]["symbol"]) for n, r in self.requests if r["method"] == method]

    @contextlib.asynccontextmanager
    async def running(self):
        async with serve([("/v2", self.handle)]) as port:
            self.port = port
            yield self


@pytest.fixture
def fake_kraken_multi(ref_book, v2_frame):
    """``fake_kraken_multi(scripts, corrupt={...})`` -> FakeKrakenV2Multi."""
    return lambda scripts, **options: FakeKrakenV2Multi(scripts, ref_book, v2_frame, **options)
