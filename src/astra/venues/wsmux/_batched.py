"""Turn-batched requests (Kraken, OKX): venues that take (un)subscribe requests of many
keys at once and answer with a fresh snapshot on every subscribe.

Invariants:
- Requests made in one event-loop turn go out together, in the order they were made, one
  batch per run of the same operation (``_frames`` splits a run into the venue's request
  sizes), so an unsubscribe + subscribe of one key (``resubscribe``: a fresh snapshot of that
  key only) is never reordered.
- A newcomer to a live key resubscribes it when ``snapshot_per_consumer`` (it needs its own
  snapshot); the last consumer leaving unsubscribes the key.
- Frames leave through one writer, in the order they were queued; an outbox item may be the
  venue's keepalive (a coroutine function taking the socket) instead of a text.
- On every (re)connect ``_opening`` frames and every key's subscribe go out again;
  ``_subscribing(keys)`` hears of every subscribe sent (books arm their snapshot watchdog).
- The venue's protocol confirms a subscription with ``_confirmed(key)`` (its answer, or the
  snapshot the subscribe brings); an unsubscribe (also of a resubscribe) ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar

import aiohttp

from ._connection import MuxConnection

__all__ = ["BatchedConnection", "OutboxItem"]

log = logging.getLogger(__name__)

OutboxItem = str | Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]


class BatchedConnection(MuxConnection[Hashable, Any]):
    """A connection whose requests are batched per event-loop turn."""

    snapshot_per_consumer: ClassVar[bool] = False

    def __init__(self, session, url: str) -> None:
        super().__init__(session, url)
        self._ops: list[tuple[str, Hashable]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._outbox: list[OutboxItem] = []
        self._wake = asyncio.Event()

    # -- what a venue defines ----------------------------------------------------------------

    def _frames(self, op: str, keys: list) -> list[str]:
        """The request frames for ``op`` (``subscribe``/``unsubscribe``) of ``keys``."""
        raise NotImplementedError

    def _opening(self) -> list[OutboxItem]:
        """Frames to send first on every connection."""
        return []

    def _subscribing(self, keys: list) -> None:
        """Subscribes for ``keys`` were just queued on the wire."""

    def _helpers(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        """Tasks to run beside the writer while the connection lives (e.g. a keepalive)."""
        return []

    # -- keys --------------------------------------------------------------------------------

    def _added(self, key: Hashable, *, first: bool) -> None:
        if first:
            self._queue("subscribe", key)
        elif self.snapshot_per_consumer:
            self.resubscribe(key)  # already streaming: the newcomer needs a snapshot too

    def _removed(self, key: Hashable) -> None:
        self.live.discard(key)
        if self.consumers:
            self._queue("unsubscribe", key)  # (the last key goes with its connection)

    def resubscribe(self, key: Hashable) -> None:
        """Ask for a fresh snapshot of ``key`` only: unsubscribe, then subscribe."""
        if key in self.consumers:
            self.live.discard(key)  # live again once the new subscription is confirmed
            self._queue("unsubscribe", key)
            self._queue("subscribe", key)

    def subscribe_again(self, key: Hashable) -> None:
        """Retry a subscription the venue refused."""
        if key in self.consumers:
            self._queue("subscribe", key)

    # -- requests ----------------------------------------------------------------------------

    def send(self, item: OutboxItem) -> None:
        """Queue a frame (or the keepalive) behind the requests already queued."""
        self._outbox.append(item)
        self._wake.set()

    def _queue(self, op: str, key: Hashable) -> None:
        if not self.connected:
            return  # everything is subscribed on connect
        self._ops.append((op, key))
        if self._flush_handle is None:  # one flush per loop turn batches the burst
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Pending ops -> request frames for the writer, one batch per run of one op."""
        self._flush_handle = None
        ops, self._ops = self._ops, []
        start = 0
        while start < len(ops):
            op, end = ops[start][0], start
            while end < len(ops) and ops[end][0] == op:
                end += 1
            keys = list(dict.fromkeys(key for _, key in ops[start:end]))  # dedup, in order
            self._outbox += self._frames(op, keys)
            if op == "subscribe":
                self._subscribing(keys)
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
                    if isinstance(item, str):
                        await ws.send_str(item)
                    else:
                        await item(ws)
        except self.errors as exc:
            log.warning("%s: send failed (%r)", self.url, exc)
            await ws.close()  # ends the receive loop, which reconnects

    # -- connection --------------------------------------------------------------------------

    def _opened(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        self._outbox = self._opening()
        if self._flush_handle is not None:  # a dead connection's leftovers
            self._flush_handle.cancel()
            self._flush_handle = None
        self._ops = [("subscribe", key) for key in self.consumers]
        self._flush()
        self._wake.set()
        return [asyncio.create_task(self._send(ws)), *self._helpers(ws)]

    def _closed(self) -> None:
        self._ops = []
