"""Kraken WebSocket connections shared by many subscriptions (spot v2 and futures v1 alike).

Both Kraken APIs multiplex: one connection carries many ``(channel, symbol)`` subscriptions,
and symbols are subscribed and unsubscribed on a live connection. So feeds do not own
connections: a feed registers a consumer for its key with a ``StreamPool``, which puts it on a
connection with room (``capacity`` keys each; the venue's ``MAX_SUBSCRIPTIONS_PER_CONNECTION``)
or opens another, and sends the wire requests, batched. What differs between the two APIs
(request shapes, message routing, keepalive) is a ``Dialect``.

Invariants:
- Requests made in one event-loop turn go out together, in the order they were made, one
  frame per run of the same operation (and channel, up to the dialect's batch size), so an
  unsubscribe + subscribe of one key (a resubscribe: Kraken answers with a fresh snapshot) is
  never reordered.
- A key is subscribed on the wire once however many consumers share it (a newcomer to a live
  key resubscribes it, to get its own snapshot); the last consumer leaving unsubscribes it,
  and a connection whose last key goes is closed.
- On every (re)connect the dialect's opening frames and every key go out again; when a
  connection drops, each of its consumers hears ``on_reset`` before anything from the next.
- Each consumer hears ``on_subscribing`` whenever a subscribe for its key is sent (first
  time, resubscribe, reconnect): books arm their "no snapshot" watchdog there.
- Liveness: no frame for ``silence`` seconds means the connection is dead (both APIs stream
  heartbeats); the dialect's ping goes out every ``ping_interval``. A dead or failed connection
  reconnects with exponential backoff, reset once data flows again.
- One market's consumer failing is logged; it does not stop the connection or its other markets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import msgspec

from astra.venues.retry import backoff

__all__ = ["Consumer", "Dialect", "Key", "KrakenStream", "StreamPool"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (channel, the venue's symbol on that API)
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
# What a connection survives by reconnecting: network failures, silence, garbage on the wire.
_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError, msgspec.DecodeError, ValueError)
_PING = object()  # an outbox item: the dialect's keepalive


class Consumer(Protocol):
    def on_message(self, kind: str, data: Any) -> None:
        """A data message for this consumer's key, in wire order (``kind`` per dialect)."""

    def on_subscribing(self) -> None:
        """A subscribe for this key was just sent (first, resubscribe or reconnect)."""

    def on_rejected(self, reason: str) -> None:
        """The venue refused this key's subscription."""

    def on_reset(self, reason: str) -> None:
        """The connection was lost; the key is subscribed again on the next one."""


class Dialect(ABC):
    """What one Kraken API says on the wire."""

    name = "kraken"

    def opening(self) -> list[str]:
        """Frames to send first on every connection (e.g. a heartbeat subscription)."""
        return []

    @abstractmethod
    def requests(self, stream: KrakenStream, op: str, keys: list[Key]) -> list[str]:
        """The frames for ``op`` (``subscribe``/``unsubscribe``) of ``keys``, batched."""

    @abstractmethod
    def route(self, data: str, stream: KrakenStream) -> None:
        """Decode one text frame; data goes to ``stream.deliver``, refusals to
        ``stream.reject``; raise (``ValueError``, ``ConnectionError``) to reconnect."""

    @abstractmethod
    async def ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The keepalive Kraken asks for."""


class KrakenStream:
    """One WebSocket connection (reopened as needed) and the keys subscribed on it."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        dialect: Dialect,
        *,
        silence: float = 30.0,
        ping_interval: float = 20.0,
    ) -> None:
        self._session, self.url, self.dialect = session, url, dialect
        self.silence, self.ping_interval = silence, ping_interval
        # Tuples, replaced on change: dispatch iterates them with no copy and no mutation risk.
        self.consumers: dict[Key, tuple[Consumer, ...]] = {}
        self.connections = 0  # connections opened so far
        self.pending: dict[int, list[Key]] = {}  # req_id -> keys, for the dialect's replies
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ops: list[tuple[str, Key]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._outbox: list[Any] = []
        self._wake = asyncio.Event()
        self._attempt = 0
        self._task: asyncio.Task | None = None

    # -- consumers -----------------------------------------------------------------------

    def add(self, key: Key, consumer: Consumer) -> None:
        present = self.consumers.get(key, ())
        self.consumers[key] = (*present, consumer)
        if present:
            self.resubscribe(key)  # already streaming: the newcomer needs a snapshot too
        else:
            self._queue("subscribe", key)
        if self._task is None or self._task.done():  # (it ends when its last key goes)
            self._task = asyncio.create_task(self._run(), name=f"{self.dialect.name} {self.url}")

    def remove(self, key: Key, consumer: Consumer) -> None:
        left = tuple(c for c in self.consumers.get(key, ()) if c is not consumer)
        if left:
            self.consumers[key] = left
            return
        if self.consumers.pop(key, None) is not None and self.consumers:
            self._queue("unsubscribe", key)  # (the last key goes with its connection)

    def resubscribe(self, key: Key) -> None:
        """Ask for a fresh snapshot of ``key`` only: unsubscribe, then subscribe."""
        if key in self.consumers:
            self._queue("unsubscribe", key)
            self._queue("subscribe", key)

    def subscribe_again(self, key: Key) -> None:
        """Retry a subscription the venue refused."""
        if key in self.consumers:
            self._queue("subscribe", key)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- what the dialect calls ----------------------------------------------------------

    def deliver(self, key: Key, kind: str, data: Any) -> None:
        consumers = self.consumers.get(key)
        if not consumers:
            return  # unsubscribed, or not ours: in-flight data after an unsubscribe
        self._attempt = 0  # data flows: the next failure starts the backoff over
        for consumer in consumers:
            try:
                consumer.on_message(kind, data)
            except Exception:  # one market's failure is not the connection's
                log.exception("%s: consumer of %s failed", self.url, key)

    def reject(self, keys: list[Key], reason: str) -> None:
        for key in keys:
            for consumer in self.consumers.get(key, ()):
                consumer.on_rejected(reason)

    # -- requests ------------------------------------------------------------------------

    def _queue(self, op: str, key: Key) -> None:
        if not self.connected:
            return  # everything is subscribed on connect
        self._ops.append((op, key))
        if self._flush_handle is None:  # one flush per loop turn batches the burst
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Pending ops -> request frames for the sender, one batch per run of one op."""
        self._flush_handle = None
        ops, self._ops = self._ops, []
        start = 0
        while start < len(ops):
            op, end = ops[start][0], start
            while end < len(ops) and ops[end][0] == op:
                end += 1
            keys = list(dict.fromkeys(key for _, key in ops[start:end]))  # dedup, in order
            self._outbox += self.dialect.requests(self, op, keys)
            if op == "subscribe":
                for key in keys:
                    for consumer in self.consumers.get(key, ()):
                        consumer.on_subscribing()
            start = end
        if self._outbox:
            self._wake.set()

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection's only writer: frames leave in the order they were queued."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    item = self._outbox.pop(0)
                    if item is _PING:
                        await self.dialect.ping(ws)
                    else:
                        await ws.send_str(item)
        except _ERRORS as exc:
            log.warning("%s: send failed (%r)", self.url, exc)
            await ws.close()  # ends the receive loop, which reconnects

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            self._outbox.append(_PING)
            self._wake.set()

    # -- connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        while self.consumers:
            reason = "closed by the venue"
            helpers: list[asyncio.Task] = []
            current: aiohttp.ClientWebSocketResponse | None = None
            try:
                async with self._session().ws_connect(self.url, timeout=_WS_TIMEOUT) as ws:
                    self.connections += 1
                    current = self._ws = ws
                    self.pending = {}
                    self._outbox = self.dialect.opening()
                    if self._flush_handle is not None:  # a dead connection's leftovers
                        self._flush_handle.cancel()
                    self._ops = [("subscribe", key) for key in self.consumers]
                    self._flush()
                    self._wake.set()
                    helpers = [
                        asyncio.create_task(self._send(ws)),
                        asyncio.create_task(self._keepalive()),
                    ]
                    await self._receive(ws)
            except _ERRORS as exc:
                reason = "silent for too long" if isinstance(exc, TimeoutError) else repr(exc)
            except Exception as exc:  # a bug must not end the feeds of every market here
                log.exception("%s: unexpected failure", self.url)
                reason = repr(exc)
            finally:
                if self._ws is current:  # not a newer connection's
                    self._ws = None
                    self._ops = []
                for task in helpers:
                    task.cancel()
            log.warning("%s: connection lost (%s); reconnecting", self.url, reason)
            for consumers in list(self.consumers.values()):
                for consumer in consumers:
                    consumer.on_reset(f"reconnecting: {reason}")
            await asyncio.sleep(backoff(self._attempt))
            self._attempt += 1

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Route frames until the connection closes (returns) or fails (raises)."""
        route, silence = self.dialect.route, self.silence
        while True:
            msg = await ws.receive(timeout=silence)
            if msg.type is aiohttp.WSMsgType.TEXT:
                route(msg.data, self)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return
            else:
                raise ConnectionError(f"upstream sent {msg.type.name}")


class StreamPool:
    """The connections of one URL and dialect, filled up to ``capacity`` keys each."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        dialect: Dialect,
        *,
        capacity: int,
        **options: Any,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._session, self.url, self.dialect = session, url, dialect
        self.capacity, self._options = capacity, options
        self.streams: list[KrakenStream] = []
        self._closing: set[asyncio.Task] = set()

    def add(self, key: Key, consumer: Consumer) -> KrakenStream:
        stream = next((s for s in self.streams if key in s.consumers), None)
        if stream is None:
            stream = next((s for s in self.streams if len(s.consumers) < self.capacity), None)
        if stream is None:
            stream = KrakenStream(self._session, self.url, self.dialect, **self._options)
            self.streams.append(stream)
        stream.add(key, consumer)
        return stream

    def remove(self, stream: KrakenStream, key: Key, consumer: Consumer) -> None:
        stream.remove(key, consumer)
        if not stream.consumers and stream in self.streams:
            self.streams.remove(stream)  # its last key is gone: close the connection
            task = asyncio.get_running_loop().create_task(stream.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        streams, self.streams = self.streams, []
        await asyncio.gather(*(s.close() for s in streams), *self._closing)
