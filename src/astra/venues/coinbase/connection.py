"""Shared Advanced Trade WebSocket connections: one data channel (``level2`` or
``market_trades``) plus ``heartbeats`` per connection, up to ``per_connection`` products each.

Lifecycle of a connection: open -> ``subscribe`` heartbeats, then the channel for all its
products (one message each: the venue wants one channel per message, and a first subscribe
within 5 s) -> read until cancelled. Its router (``feed.py``) turns messages into sink calls
and names the products to resubscribe after a sequence gap. Any failure — network error, no
message for ``silence`` seconds (heartbeats come every second, so silence is a dead link), a
sequence regression, a snapshot that never comes, an ``error`` message, garbage — closes the
socket, every book on it resyncs, and it reopens with exponential backoff (reset after a
connection that lived 30 s).

Outgoing messages share one venue-wide ``Throttle``: Coinbase limits unauthenticated client
messages to 8 per second per IP. Each may carry a fresh JWT (they expire after 2 minutes).

Invariant: a product is on at most one connection of a pool (markets sharing a product, e.g.
a ``-USDC`` alias and its ``-USD`` product, share its stream); a connection left with no
product is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from astra.venues.retry import backoff as _backoff
from astra.venues.silence import SilenceWatchdog

from .feed import Router, SequenceRegression, SnapshotTimeout
from .schemas import SubscribeRequest

__all__ = ["Connection", "Pool", "Settings", "Throttle"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
_HEALTHY = 30.0  # a connection that lived this long resets the backoff


class Throttle:
    """Spaces calls to ``wait()`` at least ``interval`` seconds apart, in call order."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0

    async def wait(self) -> None:
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(slots=True)
class Settings:
    url: str
    throttle: Throttle
    silence: float = 10.0
    snapshot_timeout: float = 30.0
    per_connection: int = 10
    connect_timeout: float = 10.0
    max_msg_size: int = 64 * 1024 * 1024  # a deep book's snapshot is one message of megabytes
    jwt: Callable[[], str] | None = None  # public channels work without; see __init__.py


class Connection:
    """One socket, reconnecting forever until ``close()``."""

    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], settings: Settings, router: Router
    ) -> None:
        self.session, self.settings, self.router = session, settings, router
        self.connects = 0
        self._queue: asyncio.Queue | None = None  # set while connected
        self.task = asyncio.create_task(self._run(), name=f"coinbase {router.channel}")

    def add(self, product: str, sink: object, market: str = "") -> None:
        new = self.router.add(product, sink, asyncio.get_running_loop().time(), market)
        if self._queue is not None:
            if not new:  # the newcomer needs a snapshot; the others get a consistent one too
                self._send("unsubscribe", [product])
            self._send("subscribe", [product])

    def remove(self, product: str, sink: object) -> None:
        if self.router.remove(product, sink) and self._queue is not None:
            self._send("unsubscribe", [product])

    def close(self) -> None:
        self.task.cancel()

    def _send(self, kind: str, products: list[str] | None, channel: str | None = None) -> None:
        self._queue.put_nowait((kind, channel or self.router.channel, products))

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue) -> None:
        settings = self.settings
        try:
            while True:
                kind, channel, products = await queue.get()
                await settings.throttle.wait()
                request = SubscribeRequest(
                    type=kind,
                    channel=channel,
                    product_ids=products,
                    jwt=settings.jwt() if settings.jwt is not None else None,
                )
                await ws.send_str(_encode(request).decode())
        except Exception as exc:  # a lost subscribe would leave books waiting: start over
            log.warning("coinbase %s: send failed (%r); reconnecting", self.router.channel, exc)
            await ws.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            opened = loop.time()
            try:
                async with asyncio.timeout(self.settings.connect_timeout):  # TCP, TLS, upgrade
                    ws = await self.session().ws_connect(
                        self.settings.url,
                        timeout=_WS_TIMEOUT,
                        max_msg_size=self.settings.max_msg_size,
                        autoping=True,
                    )
                async with ws:
                    self.connects += 1
                    reason = await self._read(ws, loop)
            except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
                # ValueError covers garbage (msgspec errors) and the venue's error messages
                reason = "silent for too long" if isinstance(exc, TimeoutError) else repr(exc)
            except (SequenceRegression, SnapshotTimeout) as exc:
                reason = repr(exc)
            except Exception as exc:  # a bug: log it loudly, but keep the books coming
                log.exception("coinbase %s: unexpected failure", self.router.channel)
                reason = repr(exc)
            log.warning("coinbase %s: reconnecting (%s)", self.router.channel, reason)
            self.router.disconnected(f"reconnecting: {reason}")
            if loop.time() - opened > _HEALTHY:
                attempt = 0
            await asyncio.sleep(_backoff(attempt))
            attempt += 1

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, loop) -> str:
        router = self.router
        queue: asyncio.Queue = asyncio.Queue()
        writer = asyncio.create_task(self._write(ws, queue))
        self._queue = queue
        try:
            router.connected(loop.time())
            self._send("subscribe", None, "heartbeats")
            if router.products:
                self._send("subscribe", list(router.products))
            # One watchdog per connection, not a timeout per message (raises TimeoutError).
            with SilenceWatchdog(self.settings.silence) as watch:
                while True:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
                        watch.heard += 1
                        now = loop.time()
                        resync = router.on_message(msg.data, now)
                        if resync:  # fresh snapshots for every product on this connection
                            self._send("unsubscribe", resync)
                            self._send("subscribe", resync)
                        router.check_timeouts(now)
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        raise ConnectionError(f"websocket error: {ws.exception()!r}")
                    else:
                        return f"closed by the venue ({msg.type.name}, code {ws.close_code})"
        finally:
            self._queue = None
            writer.cancel()
            # wait() neither raises the writer's CancelledError nor swallows our own
            await asyncio.wait([writer])


class Pool:
    """The connections of one channel: products are packed ``per_connection`` to a socket."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        settings: Settings,
        router: Callable[[], Router],
    ) -> None:
        self.session, self.settings, self.router = session, settings, router
        self.connections: list[Connection] = []
        self._closing: set[asyncio.Task] = set()

    def attach(self, product: str, sink: object, market: str = "") -> Connection:
        conns = self.connections
        conn = next((c for c in conns if product in c.router.products), None)
        if conn is None:
            cap = self.settings.per_connection
            conn = next((c for c in conns if len(c.router.products) < cap), None)
        if conn is None:
            conn = Connection(self.session, self.settings, self.router())
            conns.append(conn)
        conn.add(product, sink, market)
        return conn

    def detach(self, conn: Connection, product: str, sink: object) -> None:
        conn.remove(product, sink)
        if not conn.router.products and conn in self.connections:
            self.connections.remove(conn)
            conn.close()
            self._closing.add(conn.task)
            conn.task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conns, self.connections = self.connections, []
        for conn in conns:
            conn.close()
        tasks = [c.task for c in conns] + list(self._closing)
        await asyncio.gather(*tasks, return_exceptions=True)
