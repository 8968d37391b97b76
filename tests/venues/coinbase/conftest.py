"""Helpers for the Coinbase tests: the documented samples, and ``FakeCoinbase``, a loopback
Advanced Trade server (public REST products/trades and the market-data WebSocket).

The fake speaks the documented protocol: ``subscribe``/``unsubscribe`` one channel per
message; ``level2`` answers with a ``snapshot`` event then streams ``update`` events;
``market_trades`` answers with a snapshot of recent trades then updates; ``heartbeats``
every ``heartbeat_interval``; a ``subscriptions`` message after every request. Every message
on a connection takes the next ``sequence_num``. Each connection starts its counter at
``100_000 * index`` (the real venue restarts at 0; distinct ranges let the tests key the
true book by update id alone). It records the true book of each product after every message
it sent (``history[product][sequence_num]``), and can lose one update (the book changes,
the sequence number is consumed, nothing is sent) or fall silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def samples():
    """``samples("ws-messages.json")`` -> the parsed JSON of a file in ``samples/``."""
    return sample


@pytest.fixture
def products() -> list[dict]:
    """Every product of both documented products responses (spot, then futures)."""
    return (
        sample("market-products-spot.json")["products"]
        + sample("market-products-future.json")["products"]
    )


def _ts(n: int) -> str:
    return f"2024-10-08T09:{(n // 60) % 60:02d}:{n % 60:02d}.{n % 1000:03d}123456Z"


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, index: int) -> None:
        self.ws, self.index = ws, index
        self.seq = 100_000 * index
        self.level2: set[str] = set()
        self.trades: set[str] = set()
        self.sent = 0
        self.lock = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []


class FakeCoinbase:
    def __init__(
        self,
        *,
        update_interval: float = 0.005,
        heartbeat_interval: float = 0.05,
        stall_after: int | None = None,  # first connection goes silent after this many messages
        unsubscribe_delay: float = 0.03,  # updates keep flowing this long after an unsubscribe
        reject_first: bool = False,  # answer the first connection's level2 subscribe with an error
        seed: int = 7,
    ) -> None:
        self.reject_first = reject_first
        self.update_interval, self.heartbeat_interval = update_interval, heartbeat_interval
        self.unsubscribe_delay = unsubscribe_delay
        self.stall_after = stall_after
        self.rng = random.Random(seed)
        self.books: dict[str, dict[str, dict[float, float]]] = {}
        self.history: dict[str, dict[int, dict]] = defaultdict(dict)
        self.trades: dict[str, list[dict]] = defaultdict(list)
        self.trades_paused = False  # no new trades are made while set
        self.ticker_requests = 0  # REST trades (ticker) served
        self.requests: list[tuple[int, dict]] = []
        self.connections = 0
        self.lost: list[int] = []
        self._lose_next = False
        self._conns: list[_Conn] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- control -------------------------------------------------------------------------
    def lose_next_update(self) -> None:
        """The next level2 update changes the book but is never sent (its number is used)."""
        self._lose_next = True

    def subscribes(self, channel: str, kind: str = "subscribe") -> list[list[str]]:
        return [
            r.get("product_ids") or []
            for _, r in self.requests
            if r.get("type") == kind and r.get("channel") == channel
        ]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def products_source(self) -> list[dict]:
        return (
            sample("market-products-spot.json")["products"]
            + sample("market-products-future.json")["products"]
        )

    # -- the true market -----------------------------------------------------------------
    def _book(self, product: str) -> dict[str, dict[float, float]]:
        book = self.books.get(product)
        if book is None:
            book = self.books[product] = {
                "bids": {round(99 - i * 0.5, 2): float(i + 1) for i in range(10)},
                "asks": {round(101 + i * 0.5, 2): float(i + 1) for i in range(10)},
            }
        return book

    def _record(self, product: str, seq: int) -> None:
        book = self._book(product)
        self.history[product][seq] = {"bids": dict(book["bids"]), "asks": dict(book["asks"])}

    def _random_change(self, product: str) -> tuple[str, float, float]:
        rng, book = self.rng, self._book(product)
        side = rng.choice(("bid", "offer"))
        price = round(rng.randrange(0, 40) * 0.25 + (90.0 if side == "bid" else 100.5), 2)
        qty = rng.choice((0.0, 0.0, 0.5, 1.25, 2.0, 3.75))
        levels = book["bids" if side == "bid" else "asks"]
        if qty:
            levels[price] = qty
        else:
            levels.pop(price, None)
        return side, price, qty

    # -- wire ----------------------------------------------------------------------------
    async def _send(self, conn: _Conn, channel: str, events: list, product: str | None = None):
        if self.stall_after is not None and conn.index == 0 and conn.sent >= self.stall_after:
            return  # silent, socket open
        conn.seq += 1
        conn.sent += 1
        if product is not None:
            self._record(product, conn.seq)
        msg = {
            "channel": channel,
            "client_id": "",
            "timestamp": _ts(conn.seq),
            "sequence_num": conn.seq,
            "events": events,
        }
        if not conn.ws.closed:
            with contextlib.suppress(ConnectionResetError):  # the client left meanwhile
                await conn.ws.send_str(json.dumps(msg))

    @staticmethod
    def _levels(changes: list[tuple[str, float, float]], when: str) -> list[dict]:
        return [
            {"side": s, "event_time": when, "price_level": f"{p:.2f}", "new_quantity": str(q)}
            for s, p, q in changes
        ]

    async def _snapshot(self, conn: _Conn, product: str) -> None:
        book = self._book(product)
        changes = [("bid", p, q) for p, q in book["bids"].items()]
        changes += [("offer", p, q) for p, q in book["asks"].items()]
        event = {
            "type": "snapshot",
            "product_id": product,
            "updates": self._levels(changes, "1970-01-01T00:00:00Z"),
        }
        await self._send(conn, "l2_data", [event], product)

    def _trade(self, product: str) -> dict:
        n = len(self.trades[product]) + 1
        trade = {
            "trade_id": str(1000 + n),
            "product_id": product,
            "price": f"{100 + (n % 7) * 0.25:.2f}",
            "size": f"{0.1 * (n % 5 + 1):.1f}",
            "side": "BUY" if n % 2 else "SELL",
            "time": _ts(n),
        }
        self.trades[product].append(trade)
        return trade

    async def _stream(self, conn: _Conn) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.update_interval)
            tick += 1
            async with conn.lock:
                for product in sorted(conn.level2):
                    change = self._random_change(product)
                    if self._lose_next:
                        self._lose_next = False
                        # a level far from the others, never touched again: a lost message
                        # leaves a difference the client can only repair with a snapshot
                        self._book(product)["bids"][1.0] = 42.0
                        conn.seq += 1
                        self.lost.append(conn.seq)
                        continue
                    event = {
                        "type": "update",
                        "product_id": product,
                        "updates": self._levels([change], _ts(conn.seq + 1)),
                    }
                    await self._send(conn, "l2_data", [event], product)
                if tick % 4 == 0 and not self.trades_paused:
                    for product in sorted(conn.trades):
                        trades = [self._trade(product), self._trade(product)]
                        event = {"type": "update", "trades": trades[::-1]}  # newest first
                        await self._send(conn, "market_trades", [event])

    async def _heartbeats(self, conn: _Conn) -> None:
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            counter += 1
            event = {"current_time": "2024-10-08 09:10:52 +0000 UTC", "heartbeat_counter": counter}
            async with conn.lock:
                await self._send(conn, "heartbeats", [event])

    async def _on_request(self, conn: _Conn, req: dict) -> None:
        kind, channel = req.get("type"), req.get("channel")
        ids = req.get("product_ids") or []
        if kind == "unsubscribe":  # the venue takes a moment: updates already in flight arrive
            await asyncio.sleep(self.unsubscribe_delay)
        async with conn.lock:
            if kind == "subscribe" and channel == "heartbeats":
                conn.tasks.append(asyncio.create_task(self._heartbeats(conn)))
            elif kind == "subscribe" and channel == "level2" and self.reject_first:
                self.reject_first = False
                error = {"type": "error", "message": "failure to subscribe"}
                await conn.ws.send_str(json.dumps(error))
                return
            elif kind == "subscribe" and channel == "level2":
                for product in ids:
                    conn.level2.add(product)
                    await self._snapshot(conn, product)
            elif kind == "unsubscribe" and channel == "level2":
                conn.level2.difference_update(ids)
            elif kind == "subscribe" and channel == "market_trades":
                for product in ids:
                    conn.trades.add(product)
                    recent = self.trades[product][-3:][::-1]
                    await self._send(
                        conn, "market_trades", [{"type": "snapshot", "trades": recent}]
                    )
            elif kind == "unsubscribe" and channel == "market_trades":
                conn.trades.difference_update(ids)
            subs = {"level2": sorted(conn.level2), "market_trades": sorted(conn.trades)}
            await self._send(conn, "subscriptions", [{"subscriptions": subs}])

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Conn(ws, self.connections)
        self.connections += 1
        self._conns.append(conn)
        conn.tasks.append(asyncio.create_task(self._stream(conn)))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    req = json.loads(msg.data)
                    self.requests.append((conn.index, req))
                    await self._on_request(conn, req)
        finally:
            for task in conn.tasks:
                task.cancel()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        return ws

    async def _products(self, request: web.Request) -> web.Response:
        name = "future" if request.query.get("product_type") == "FUTURE" else "spot"
        return web.json_response(sample(f"market-products-{name}.json"))

    async def cut(self) -> None:
        """Close every connection, as the venue dropping them does."""
        for conn in self._conns:
            await conn.ws.close()

    async def _ticker(self, request: web.Request) -> web.Response:
        self.ticker_requests += 1
        product = request.match_info["product_id"]
        limit = int(request.query.get("limit", "100"))
        for _ in range(5 - len(self.trades[product])):
            self._trade(product)
        trades = self.trades[product][::-1][:limit]  # newest first, as the venue
        return web.json_response({"trades": trades, "best_bid": "99", "best_ask": "101"})

    async def start(self) -> FakeCoinbase:
        app = web.Application()
        app.router.add_get("/", self._ws)
        app.router.add_get("/api/v3/brokerage/market/products", self._products)
        app.router.add_get("/api/v3/brokerage/market/products/{product_id}/ticker", self._ticker)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def fake_coinbase():
    """``await fake_coinbase(**options)``: a started FakeCoinbase, closed after the test."""
    started: list[FakeCoinbase] = []

    async def make(**options) -> FakeCoinbase:
        fake = await FakeCoinbase(**options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.close()


class RecordingSink:
    """A BookSink + TradeSink that records every call, and keeps the book it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.book = None
        self.trades: list = []
        self.connections: list[bool] = []  # on_connection reports, in order

    def on_snapshot(self, book) -> None:
        self.book = book
        self.calls.append(("snapshot", book.update_id))

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)  # as the engine does
        self.calls.append(("update", update_id, list(bids), list(asks)))

    def on_resync(self, reason: str) -> None:
        self.calls.append(("resync", reason))

    def on_trades(self, trades) -> None:
        self.trades.extend(trades)
        self.calls.append(("trades", [t.trade_id for t in trades]))

    def on_connection(self, up: bool, reason: str = "") -> None:
        self.connections.append(up)  # (not in ``calls``: book tests compare those)

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def recording_sink():
    """``recording_sink()``: a fresh RecordingSink."""
    return RecordingSink
