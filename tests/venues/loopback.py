"""What the venues' tests share: a sink that records what a user stream delivers, a bounded
wait on it, a loopback server for a fake venue's endpoints, the live-trades check (a
market's recent trades served from its trade feed, and its WebSocket clients told of a drop),
and the down-from-the-start check (a venue whose WebSocket refuses every connection: book
reads fail at once, book and trade clients hear it at once).

Import as ``from tests.venues.loopback import ...`` (see ``trading_fakes.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from aiohttp import web

from astra.core import DataType, FeedUnavailable
from astra.core._trading import Balance, Fill, Order

__all__ = [
    "TradeClient",
    "UserSink",
    "check_down_from_the_start",
    "check_live_trades",
    "refused_port",
    "serve",
    "until",
]


class UserSink:
    """A ``UserDataSink`` that keeps everything: orders and fills in arrival order, each
    balances message, each resync reason; ``changed`` is set on every delivery."""

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self.balances: list[list[Balance]] = []
        self.resyncs: list[str] = []
        self.changed = asyncio.Event()

    def on_orders(self, orders: list[Order], fills: list[Fill]) -> None:
        self.orders += orders
        self.fills += fills
        self.changed.set()

    def on_balances(self, balances: list[Balance]) -> None:
        self.balances.append(balances)
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self.changed.set()


async def until(check, *events: asyncio.Event, seconds: float = 8.0) -> None:
    """Until ``check()`` holds, woken by any of ``events`` (and every 0.2 s), bounded."""
    async with asyncio.timeout(seconds):
        while not check():
            for event in events:
                event.clear()
            if check():
                return
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waiters, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1 at a free port: yields ``http://127.0.0.1:<port>``; cleaned up
    afterwards (open connections get a second to finish)."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class TradeClient:
    """A ``WS /ws`` TRADE client of the engine: every frame it is sent, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.changed = asyncio.Event()
        self.recent: list[str] = []  # trade ids of the last live read (check_live_trades)

    def deliver(self, frame: bytes) -> None:
        self.frames.append(msgspec.json.decode(frame))
        self.changed.set()

    def trade_ids(self) -> list[str]:
        return [t["tradeId"] for f in self.frames for t in f.get("trades", ())]

    def resyncs(self) -> list[dict]:
        return [f for f in self.frames if f.get("type") == "resync"]


async def check_live_trades(engine, symbol: str, *, rest_calls, pushed, drop) -> TradeClient:
    """The live-trades contract on one venue's loopback fake, through the engine:

    - once the trade feed is live (its subscription confirmed), a read seeds from REST once;
      ``pushed`` (a coroutine function) then has the fake push trades and returns their ids
      (some may repeat seeded ones);
    - reads from then on make no REST call (``rest_calls()`` counts the fake's trade
      requests), keep the seed and end with the pushed trades, each once;
    - ``drop`` (a coroutine function) cuts the fake's connection: the WS TRADE client gets one
      ``resync`` (state ``disconnected``), and the feed is live again after reconnecting.
    Returns the client (its frames, and the ids its live reads served) for venue-specific
    checks."""
    venue, market = await engine.resolve(symbol)
    client = TradeClient()
    engine.subscribe(venue, market, DataType.TRADE, client)
    channel = engine.channels[(symbol, DataType.TRADE)]
    await until(lambda: channel.live, client.changed)
    seeded_ids = [t.trade_id for t in await engine.recent_trades(symbol, 1000)]
    assert rest_calls() == 1 and channel.complete
    ids = await pushed()
    await until(lambda: set(ids) <= set(client.trade_ids()), client.changed)
    fresh = [i for i in ids if i not in seeded_ids]
    for _ in range(3):
        trades = await engine.recent_trades(symbol, 1000)
        got = [t.trade_id for t in trades]
        assert got[len(got) - len(fresh) :] == fresh and set(ids) <= set(got), (got, ids)
        assert len(got) == len(set(got))  # the seed and the feed merged without repeats
        assert [i for i in got if i in seeded_ids] == seeded_ids  # the seed is kept, in order
    client.recent = got
    assert rest_calls() == 1  # served from the feed
    assert client.resyncs() == []

    await drop()
    await until(lambda: client.resyncs(), client.changed)
    (resync,) = client.resyncs()
    assert resync["market"] == symbol and resync["state"] == "disconnected"
    assert isinstance(resync["since"], int) and resync["reason"]
    assert "127.0.0.1" not in resync["reason"]
    await until(lambda: channel.live, client.changed)  # reconnected and subscribed again
    assert len(client.resyncs()) == 1  # once per drop
    return client


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses every connection: bound but never listening, so nothing
    else takes it meanwhile (released afterwards)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def check_down_from_the_start(engine, symbol: str) -> None:
    """``symbol``'s venue refuses every WebSocket connection from the start (its feeds never
    connected, no book ever synced): with ``book_wait`` far longer than this check's 5 s, a
    book read fails at once with ``FeedUnavailable`` (``disconnected``), and WS book and trade
    clients get a ``resync`` (``disconnected``, ``reconnecting: ...``) at once."""
    assert engine.book_wait >= 30.0  # an answer within 5 s proves no wait for a snapshot
    async with asyncio.timeout(5):
        venue, market = await engine.resolve(symbol)
        book_client, trade_client = TradeClient(), TradeClient()
        engine.subscribe(venue, market, DataType.ORDERBOOK, book_client)
        engine.subscribe(venue, market, DataType.TRADE, trade_client)
        with pytest.raises(FeedUnavailable) as info:
            await engine.order_book(symbol)
        await until(
            lambda: book_client.resyncs() and trade_client.resyncs(),
            book_client.changed, trade_client.changed, seconds=5,
        )  # fmt: skip
    feed = info.value.feed
    assert feed.state == "disconnected" and feed.reason.startswith("reconnecting: "), feed
    for client in (book_client, trade_client):
        resync = client.resyncs()[0]
        assert client.frames[0] == resync  # nothing before it
        assert resync["market"] == symbol and resync["state"] == "disconnected", resync
        assert resync["reason"].startswith("reconnecting: ")
        assert "127.0.0.1" not in resync["reason"]
