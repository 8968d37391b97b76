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
  time, resubscribe, reconnect): books arm their "no snapshot" watchdog there; and
  ``on_live`` when the venue confirms it (the dialect calls ``confirm``).
- Liveness: no frame for ``silence`` seconds means the connection is dead (both APIs stream
  heartbeats); the dialect's ping goes out every ``ping_interval``. A dead or failed connection
  reconnects with exponential backoff, reset once data flows again.
- One market's consumer failing is logged; it does not stop the connection or its other markets.
Batching, the writer, pools and reconnects are ``astra.venues.wsmux.BatchedConnection``'s;
this module binds them to a Kraken ``Dialect``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from astra.venues.silence import SilenceWatchdog
from astra.venues.wsmux import BatchedConnection, MuxPool, OutboxItem

__all__ = ["Consumer", "Dialect", "Key", "KrakenStream", "StreamPool"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (channel, the venue's symbol on that API)


class Consumer(Protocol):
    def on_message(self, kind: str, data: Any) -> None:
        """A data message for this consumer's key, in wire order (``kind`` per dialect)."""

    def on_subscribing(self) -> None:
        """A subscribe for this key was just sent (first, resubscribe or reconnect)."""

    def on_rejected(self, reason: str) -> None:
        """The venue refused this key's subscription."""

    def on_live(self) -> None:
        """The venue confirmed this key's subscription: every message from now on comes."""

    def on_reset(self, reason: str) -> None:
        """The connection was lost; the key is subscribed again on the next one."""


class Dialect(ABC):
    """What one Kraken API says on the wire."""

    name = "kraken"

    def opening(self) -> list[OutboxItem]:
        """Frames to send first on every connection (e.g. a heartbeat subscription)."""
        return []

    @abstractmethod
    def requests(self, stream: KrakenStream, op: str, keys: list[Key]) -> list[str]:
        """The frames for ``op`` (``subscribe``/``unsubscribe``) of ``keys``, batched."""

    @abstractmethod
    def route(self, data: str, stream: KrakenStream) -> None:
        """Decode one text frame; data goes to ``stream.deliver``, refusals to
        ``stream.reject``, confirmations to ``stream.confirm``; raise (``ValueError``,
        ``ConnectionError``) to reconnect."""

    @abstractmethod
    async def ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The keepalive Kraken asks for."""


class KrakenStream(BatchedConnection):
    """One WebSocket connection (reopened as needed) and the keys subscribed on it."""

    snapshot_per_consumer = True  # a newcomer to a live key needs its own snapshot

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        dialect: Dialect,
        *,
        silence: float = 30.0,
        ping_interval: float = 20.0,
    ) -> None:
        super().__init__(session, url)
        self.dialect, self.name = dialect, dialect.name  # type: ignore[misc]
        self.silence, self.ping_interval = silence, ping_interval
        self.pending: dict[int, list[Key]] = {}  # req_id -> keys, for the dialect's replies

    # -- what the dialect calls ----------------------------------------------------------

    def deliver(self, key: Key, kind: str, data: Any) -> None:
        consumers = self.consumers.get(key)
        if not consumers:
            return  # unsubscribed, or not ours: in-flight data after an unsubscribe
        self.mark_alive()
        for consumer in consumers:
            try:
                consumer.on_message(kind, data)
            except Exception:  # one market's failure is not the connection's
                log.exception("%s: consumer of %s failed", self.url, key)

    def confirm(self, keys: list[Key]) -> None:
        for key in keys:
            self._confirmed(key)

    def reject(self, keys: list[Key], reason: str) -> None:
        for key in keys:
            for consumer in self.consumers.get(key, ()):
                consumer.on_rejected(reason)

    # -- the wire ------------------------------------------------------------------------

    def _frames(self, op: str, keys: list) -> list[str]:
        return self.dialect.requests(self, op, keys)

    def _opening(self) -> list[OutboxItem]:
        self.pending = {}
        return self.dialect.opening()

    def _subscribing(self, keys: list) -> None:
        for key in keys:
            for consumer in self.consumers.get(key, ()):
                consumer.on_subscribing()

    def _helpers(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        return [asyncio.create_task(self._keepalive())]

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            self.send(self.dialect.ping)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Route frames until the connection fails or closes (raises either way)."""
        route, receive, text = self.dialect.route, ws.receive, aiohttp.WSMsgType.TEXT
        # One watchdog per connection, not a timeout per message (raises TimeoutError).
        with SilenceWatchdog(self.silence) as watch:
            while True:
                msg = await receive()
                if msg.type is text:
                    watch.heard += 1
                    route(msg.data, self)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    raise ConnectionError("closed by the venue")
                else:
                    raise ConnectionError(f"upstream sent {msg.type.name}")


class StreamPool(MuxPool[KrakenStream]):
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
        super().__init__(lambda: KrakenStream(session, url, dialect, **options), capacity)
        self.url, self.dialect = url, dialect
