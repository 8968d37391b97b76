"""Kraken Futures test helpers, independent of the code under test: a reference book in exact
decimals and a fake Kraken Futures (WebSocket v1 + REST) on 127.0.0.1 serving synthetic
books (``BookScript``s from the parent conftest) with per-product ``seq`` numbers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from aiohttp import web


class SeqBook:
    """Reference book: Decimal prices -> Decimal quantities, as text levels are applied."""

    def __init__(self, bids, asks) -> None:
        self.sides = {"buy": {}, "sell": {}}
        for side, levels in (("buy", bids), ("sell", asks)):
            for p, q in levels:
                self.apply(side, p, q)

    def apply(self, side: str, price: str, qty: str) -> None:
        if Decimal(qty) == 0:
            self.sides[side].pop(Decimal(price), None)
        else:
            self.sides[side][Decimal(price)] = Decimal(qty)

    def levels(self, side: str) -> list[dict]:
        return [{"price": float(p), "qty": float(q)} for p, q in self.sides[side].items()]

    def floats(self) -> dict:
        """``{"bids": {price: qty}, "asks": ...}`` as the floats a client sees."""
        return {
            name: {float(p): float(q) for p, q in self.sides[side].items()}
            for name, side in (("bids", "buy"), ("asks", "sell"))
        }


@dataclass
class FakeKrakenFutures:
    """Kraken Futures on 127.0.0.1: ``/ws/v1`` answers ``subscribe``/``unsubscribe`` for the
    ``heartbeat``, ``book`` and ``trade`` feeds; ``/derivatives/api/v3/instruments`` and
    ``/derivatives/api/v3/history`` serve ``instruments`` and ``history[symbol]``.

    A ``book`` subscription of a product gets a ``book_snapshot`` of its current book with the
    current ``seq``, then the product's remaining changes, one ``book`` delta each, ``seq`` + 1
    each. ``drop_at[product] = i`` withholds change ``i`` on that product's first subscription
    (its ``seq`` is used up: the next delta shows a gap). A ``trade`` subscription gets
    ``trade_snapshot`` then the ``trade`` messages of ``trades[product]``. Requests are
    recorded as ``(connection no, request)``; ``drop()`` closes every connection.
    """

    books: dict  # product_id -> BookScript
    trades: dict = field(default_factory=dict)  # product_id -> (snapshot rows, update rows)
    drop_at: dict = field(default_factory=dict)
    instruments: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    first_seq: int = 1000
    connections: int = 0
    requests: list = field(default_factory=list)
    subscriptions: Counter = field(default_factory=Counter)
    refs: dict = field(default_factory=dict)
    seq: dict = field(default_factory=dict)
    positions: Counter = field(default_factory=Counter)
    done: dict = field(default_factory=dict)
    snapshots_sent: dict = field(default_factory=dict)  # product -> [levels of each snapshot]
    sockets: list = field(default_factory=list)
    history_requests: int = 0  # /derivatives/api/v3/history served
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # a request in, a frame out
    port: int = 0

    def __post_init__(self) -> None:
        for product, script in self.books.items():
            self.refs[product] = SeqBook(script.bids, script.asks)
            self.seq[product] = self.first_seq
            self.done[product] = asyncio.Event()
            self.snapshots_sent[product] = []

    async def _send_book(self, ws, product: str, first: bool) -> None:
        script, book = self.books[product], self.refs[product]
        self.snapshots_sent[product].append(book.floats())
        await ws.send_json(
            {
                "feed": "book_snapshot",
                "product_id": product,
                "timestamp": 1612269825817,
                "seq": self.seq[product],
                "tickSize": None,
                "bids": book.levels("buy"),
                "asks": book.levels("sell"),
            }
        )
        while self.positions[product] < len(script.changes):
            i = self.positions[product]
            self.positions[product] += 1
            side, price, qty = script.changes[i]
            book.apply(side, price, qty)
            self.seq[product] += 1
            if self.positions[product] == len(script.changes):
                self.done[product].set()  # before the last frame: a client sees both at once
            if first and self.drop_at.get(product) == i:
                continue  # lost on the way
            delta = {
                "feed": "book",
                "product_id": product,
                "side": side,
                "seq": self.seq[product],
                "price": float(price),
                "qty": float(qty),
                "timestamp": 1612269825818 + i,
            }
            await ws.send_json(delta)
            self.changed.set()
            await asyncio.sleep(0.002)
        self.done[product].set()
        self.changed.set()

    async def _send_trades(self, ws, product: str) -> None:
        snapshot, updates = self.trades[product]
        await ws.send_json({"feed": "trade_snapshot", "product_id": product, "trades": snapshot})
        for row in updates:
            await ws.send_json(row)
        self.changed.set()

    async def _heartbeats(self, ws) -> None:
        while True:
            await ws.send_json({"feed": "heartbeat", "time": 1534262350627})
            await asyncio.sleep(0.1)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"event": "info", "version": 1})
        tasks: dict = {}
        try:
            async for msg in ws:
                req = json.loads(msg.data)
                self.requests.append((number, req))
                self.changed.set()
                event, feed = req["event"], req["feed"]
                if feed == "heartbeat":
                    await ws.send_json({"event": "subscribed", "feed": "heartbeat"})
                    if "heartbeat" not in tasks:
                        tasks["heartbeat"] = asyncio.create_task(self._heartbeats(ws))
                    continue
                served = self.books if feed == "book" else self.trades
                known = [p for p in req["product_ids"] if p in served]
                if len(known) < len(req["product_ids"]):
                    await ws.send_json({"event": "error", "message": "Invalid product id"})
                reply = "subscribed" if event == "subscribe" else "unsubscribed"
                await ws.send_json({"event": reply, "feed": feed, "product_ids": known})
                for product in known:
                    task = tasks.pop((feed, product), None)
                    if task is not None:
                        task.cancel()
                    if event != "subscribe":
                        continue
                    if feed == "book":
                        self.subscriptions[product] += 1
                        first = self.subscriptions[product] == 1
                        task = asyncio.create_task(self._send_book(ws, product, first))
                    else:
                        task = asyncio.create_task(self._send_trades(ws, product))
                    tasks[(feed, product)] = task
        finally:
            for task in tasks.values():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
        return ws

    async def drop(self) -> None:
        sockets, self.sockets = self.sockets, []
        for ws in sockets:
            await ws.close()

    def sent(self, event: str = "subscribe", feed: str = "book") -> list[tuple[int, list]]:
        """``(connection no, product_ids)`` of each ``event`` request for ``feed``."""
        return [
            (n, r.get("product_ids"))
            for n, r in self.requests
            if r["event"] == event and r["feed"] == feed
        ]

    async def rest_instruments(self, request: web.Request) -> web.Response:
        return web.json_response(self.instruments)

    async def rest_history(self, request: web.Request) -> web.Response:
        self.history_requests += 1
        return web.json_response(self.history[request.query["symbol"]])

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws/v1", self.handle)
        app.router.add_get("/derivatives/api/v3/instruments", self.rest_instruments)
        app.router.add_get("/derivatives/api/v3/history", self.rest_history)
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
def fake_futures():
    return FakeKrakenFutures


@pytest.fixture
def seq_book():
    return SeqBook
