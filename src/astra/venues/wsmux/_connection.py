"""Multiplexed WebSocket connections: many subscriptions on one connection, as many
connections per endpoint as the venue's per-connection limit needs.

Binance, KuCoin, Kraken and OKX all multiplex: feeds do not own connections, they register a
consumer for a key (a stream name, a topic, a ``(channel, symbol)``) with a ``MuxPool``, which
puts it on a connection with room. This module is the lifecycle they share; each venue's
subclass speaks its wire protocol: how keys are (un)subscribed (``_added``/``_removed``/
``_opened``), how frames are read and routed (``_receive``). ``PacedConnection`` and
``BatchedConnection`` are the two request disciplines the venues use.

Invariants:
- A key's consumers are a tuple, replaced on change: dispatch iterates them with no copy and
  no mutation risk. A key is on the wire once, however many consumers share it.
- A pool puts a key on the connection that already has it, else on the first with
  ``load < capacity``, else on a new connection; a connection whose last key leaves is closed.
- On every (re)connect ``_opened`` subscribes every key again. When a connection ends (a
  failure, the venue closing it, or a planned retirement), every consumer on it hears
  ``on_reset`` before anything from the next connection arrives.
- A key is ``live`` once the venue has confirmed its subscription on the current connection
  (``_confirmed``: an acknowledgement, or the subscription's first snapshot): its consumers
  hear ``on_live`` then (every message of the key from now on reaches them), and a consumer
  joining a live key hears it at once. A key stops being live when its connection ends or
  its unsubscribe is sent; its consumers hear ``on_reset`` whenever it was interrupted.
- Reconnects back off: ``retry.backoff`` of the failures since data last flowed
  (``mark_alive``); a planned retirement (``_receive`` returning) reconnects at once, so a
  venue closing the connection is a failure (raise), never a return.
- A bug in a connection's loop is logged and reconnects: it never ends the feeds of the
  other markets on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import aiohttp
import msgspec

from astra.venues.retry import backoff

__all__ = ["RECONNECT_ERRORS", "WS_TIMEOUT", "MuxConnection", "MuxPool", "Resettable"]

log = logging.getLogger(__name__)

# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
# What a connection survives by reconnecting: network failures, silence, garbage on the wire.
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
    msgspec.DecodeError,
    ValueError,
)


class Resettable(Protocol):
    def on_reset(self, reason: str) -> None:
        """The key's stream was interrupted; it is subscribed again and data resumes later."""

    def on_live(self) -> None:
        """The venue confirmed the key's subscription: every message from now on is
        delivered (until the next ``on_reset``). May be heard again while live."""


K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=Resettable)


class MuxConnection(Generic[K, C]):
    """One WebSocket connection (reopened as needed) and the keys subscribed on it."""

    name: ClassVar[str] = "ws"  # in logs and task names
    errors: ClassVar[tuple[type[BaseException], ...]] = RECONNECT_ERRORS

    def __init__(self, session: Callable[[], aiohttp.ClientSession], url: str) -> None:
        self._session, self.url = session, url
        self.consumers: dict[K, tuple[C, ...]] = {}
        self.live: set[K] = set()  # keys whose subscription the venue confirmed
        self.connections = 0  # connections opened so far
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._attempt = 0  # failures since data last flowed
        self._task: asyncio.Task | None = None

    @property
    def load(self) -> int:
        """Keys that count against the venue's per-connection limit."""
        return len(self.consumers)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def add(self, key: K, consumer: C) -> None:
        present = self.consumers.get(key, ())
        self.consumers[key] = (*present, consumer)
        self._added(key, first=not present)
        if key in self.live:  # already streaming to the others: so it does to this one
            consumer.on_live()
        if self._task is None or self._task.done():  # (it ends when its last key goes)
            self._task = asyncio.create_task(self._run(), name=f"{self.name} {self.url}")

    def remove(self, key: K, consumer: C) -> None:
        left = tuple(c for c in self.consumers.get(key, ()) if c is not consumer)
        if left:
            self.consumers[key] = left
        elif self.consumers.pop(key, None) is not None:
            self._removed(key)

    def _confirmed(self, key: K) -> None:
        """The venue confirmed ``key``'s subscription on this connection."""
        if self.connected and key in self.consumers:
            self.live.add(key)
            for consumer in self.consumers[key]:
                consumer.on_live()

    def mark_alive(self) -> None:
        """Data flows: the next failure reconnects at once and starts the backoff over."""
        self._attempt = 0

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- what a protocol defines -------------------------------------------------------------

    def _added(self, key: K, *, first: bool) -> None:
        """A consumer joined ``key`` (``first``: the key is new on this connection)."""
        raise NotImplementedError

    def _removed(self, key: K) -> None:
        """The last consumer of ``key`` left (the last key goes with its connection)."""
        raise NotImplementedError

    def _opened(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        """A new connection: queue every key's subscribe; the helper tasks it runs."""
        raise NotImplementedError

    def _closed(self) -> None:
        """The connection ended: forget its requests (the next one subscribes anew)."""

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Route frames until a planned end (returns why) or a failure (raises)."""
        raise NotImplementedError

    async def _connect_url(self) -> str:
        return self.url

    def _connect_options(self) -> dict[str, Any]:
        return {}

    def _delay(self, exc: BaseException | None) -> float:
        """How long to wait before reconnecting after ``exc`` (None: a planned end)."""
        if exc is None:
            return 0.0
        delay, self._attempt = backoff(self._attempt), self._attempt + 1
        return delay

    # -- the connection ----------------------------------------------------------------------

    def _reset_all(self, reason: str) -> None:
        for consumers in list(self.consumers.values()):
            for consumer in consumers:
                consumer.on_reset(reason)

    async def _run(self) -> None:
        while self.consumers:
            helpers: list[asyncio.Task] = []
            current: aiohttp.ClientWebSocketResponse | None = None
            failure: BaseException | None = None
            try:
                url = await self._connect_url()
                async with self._session().ws_connect(
                    url, timeout=WS_TIMEOUT, **self._connect_options()
                ) as ws:
                    self.connections += 1
                    current = self._ws = ws
                    helpers = self._opened(ws)
                    reason = await self._receive(ws)
            except self.errors as exc:
                failure = exc
                silent = isinstance(exc, TimeoutError)
                reason = (str(exc) or "silent for too long") if silent else repr(exc)
            except Exception as exc:  # a bug must not end the feeds of every market here
                log.exception("%s: unexpected failure", self.url)
                failure, reason = exc, repr(exc)
            finally:
                for task in helpers:
                    task.cancel()
                if self._ws is current:  # not a newer connection's
                    self._ws = None
                    self.live.clear()
                    self._closed()
            log.warning("%s: connection ended (%s); reconnecting", self.url, reason)
            self._reset_all(f"reconnecting: {reason}")
            await asyncio.sleep(self._delay(failure))


Conn = TypeVar("Conn", bound=MuxConnection)


class MuxPool(Generic[Conn]):
    """The connections of one endpoint, each filled up to ``capacity`` keys."""

    def __init__(self, factory: Callable[[], Conn], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._factory, self.capacity = factory, capacity
        self.connections: list[Conn] = []
        self._closing: set[asyncio.Task] = set()

    def add(self, key: Hashable, consumer: Any) -> Conn:
        conns = self.connections
        conn = next((c for c in conns if key in c.consumers), None)
        if conn is None:
            conn = next((c for c in conns if c.load < self.capacity), None)
        if conn is None:
            conn = self._factory()
            conns.append(conn)
        conn.add(key, consumer)
        return conn

    def remove(self, conn: Conn, key: Hashable, consumer: Any) -> None:
        conn.remove(key, consumer)
        if not conn.consumers and conn in self.connections:
            self.connections.remove(conn)  # its last key is gone: close the connection
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conns, self.connections = self.connections, []
        await asyncio.gather(*(c.close() for c in conns), *self._closing)
