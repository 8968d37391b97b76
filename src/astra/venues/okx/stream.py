"""OKX WebSocket connections shared by many subscriptions.

OKX multiplexes: one connection carries many ``{"channel", "instId"}`` subscriptions, and a
connection costs a handshake that OKX rate-limits per IP. So feeds do not own connections;
they register a consumer for a key ``(channel, instId)`` with a ``StreamPool``, which puts it
on a connection with room (``capacity`` keys each) and batches the wire requests.

Invariants:
- Subscribe/unsubscribe requests made in one event-loop turn go out as one request per op
  (up to ``max_args`` args each), in the order they were made, so an ``unsubscribe`` +
  ``subscribe`` of the same key (a resubscribe: OKX answers with a fresh snapshot) is never
  reordered.
- On every (re)connect every key is subscribed again, in batches; when a connection drops,
  each consumer hears ``on_reset`` before anything from the next connection arrives.
- Liveness, per OKX's docs: a connection idle for ``ping_interval`` (< 30 s, after which
  OKX drops it) sends the text ``"ping"``; no frame within ``pong_timeout`` after it means
  the connection is dead: it is closed and reopened with exponential backoff.
- An OKX ``notice`` (code 64008: the server is about to restart) reconnects at once.
- A connection whose last key is removed is closed; nothing is subscribed on the wire
  that no consumer wants (beyond in-flight requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import msgspec

from .schemas import Arg, Push, SubscribeRequest

__all__ = ["Consumer", "Key", "OkxStream", "StreamPool"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (channel, instId)
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
# What a connection survives by reconnecting: network failures, silence, garbage on the wire.
_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError, msgspec.DecodeError, ValueError)
_encode = msgspec.json.Encoder().encode


class Consumer(Protocol):
    def on_push(self, push: Push[Any]) -> None:
        """A data push for this consumer's key, in wire order."""

    def on_reset(self, reason: str) -> None:
        """The connection was lost; the key is subscribed again on the next one."""


def backoff(attempt: int, cap: float = 30.0) -> float:
    return 0.0 if attempt <= 0 else min(cap, 0.25 * 2 ** (attempt - 1))


class OkxStream:
    """One WebSocket connection (reopened as needed) and the keys subscribed on it."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        decode: Callable[[str | bytes], Push[Any]],
        *,
        ping_interval: float = 20.0,
        pong_timeout: float = 10.0,
        max_args: int = 50,
    ) -> None:
        self._session, self.url, self._decode = session, url, decode
        self.ping_interval, self.pong_timeout, self.max_args = ping_interval, pong_timeout, max_args
        # Tuples, replaced on change: dispatch iterates them with no copy and no mutation risk.
        self.consumers: dict[Key, tuple[Consumer, ...]] = {}
        self.connections = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ops: list[tuple[str, Key]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._outbox: list[str] = []
        self._wake = asyncio.Event()
        self._attempt = 0
        self._task: asyncio.Task | None = None

    # -- consumers -----------------------------------------------------------------------

    def add(self, key: Key, consumer: Consumer) -> None:
        present = self.consumers.get(key, ())
        self.consumers[key] = (*present, consumer)
        if not present:
            self._queue("subscribe", key)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"okx ws {self.url}")

    def remove(self, key: Key, consumer: Consumer) -> None:
        left = tuple(c for c in self.consumers.get(key, ()) if c is not consumer)
        if left:
            self.consumers[key] = left
            return
        if self.consumers.pop(key, None) is not None and self.consumers:
            self._queue("unsubscribe", key)  # (the last key goes with its connection)

    def resubscribe(self, key: Key) -> None:
        """Ask OKX for a fresh snapshot of ``key`` (unsubscribe, then subscribe)."""
        if key in self.consumers:
            self._queue("unsubscribe", key)
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

    # -- requests --------------------------------------------------------------------------

    def _queue(self, op: str, key: Key) -> None:
        if not self.connected:
            return  # everything is subscribed on connect
        self._ops.append((op, key))
        if self._flush_handle is None:  # one flush per loop turn batches the burst
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Pending ops -> request frames for the sender, consecutive runs of one op each."""
        self._flush_handle = None
        ops, self._ops = self._ops, []
        start = 0
        while start < len(ops):
            op, end = ops[start][0], start
            while end < len(ops) and ops[end][0] == op and end - start < self.max_args:
                end += 1
            args = [Arg(channel, inst) for _, (channel, inst) in ops[start:end]]
            self._outbox.append(_encode(SubscribeRequest(op, args)).decode())  # type: ignore[arg-type]
            start = end
        if self._outbox:
            self._wake.set()

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection's only request writer: frames leave in the order they were queued."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    await ws.send_str(self._outbox.pop(0))
        except _ERRORS as exc:
            log.warning("%s: send failed (%r)", self.url, exc)
            await ws.close()  # ends the receive loop, which reconnects

    # -- connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        while self.consumers:
            reason = "closed by the venue"
            sender: asyncio.Task | None = None
            current: aiohttp.ClientWebSocketResponse | None = None
            try:
                async with self._session().ws_connect(self.url, timeout=_WS_TIMEOUT) as ws:
                    self.connections += 1
                    current = self._ws = ws
                    self._outbox = []
                    self._wake.clear()
                    sender = asyncio.create_task(self._send(ws))
                    self._ops = [("subscribe", key) for key in self.consumers]
                    self._flush()
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
                if sender is not None:
                    sender.cancel()
            log.warning("%s: connection lost (%s); reconnecting", self.url, reason)
            for consumers in list(self.consumers.values()):
                for consumer in consumers:
                    consumer.on_reset(f"reconnecting: {reason}")
            await asyncio.sleep(backoff(self._attempt))
            self._attempt += 1

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Dispatch frames until the connection closes (returns) or fails (raises)."""
        decode, consumers = self._decode, self.consumers
        while True:
            try:
                msg = await ws.receive(timeout=self.ping_interval)
            except TimeoutError:
                await ws.send_str("ping")  # OKX's application-level keepalive
                msg = await ws.receive(timeout=self.pong_timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return
                raise ConnectionError(f"upstream sent {msg.type.name}")
            if msg.data == "pong":
                continue
            push = decode(msg.data)
            if push.event:
                self._on_event(push)
                continue
            arg = push.arg
            if arg is not None:
                self._attempt = 0  # data flows: the next failure starts the backoff over
                for consumer in consumers.get((arg.channel, arg.instId), ()):
                    try:
                        consumer.on_push(push)
                    except Exception:  # one market's failure is not the connection's
                        log.exception("%s: consumer of %s failed", self.url, arg)

    def _on_event(self, push: Push[Any]) -> None:
        if push.event == "error":
            # OKX's error event names no subscription (e.g. 60018 unknown instId, 60011
            # login required for books-l2-tbt); the feed's snapshot timeout retries it.
            log.error("%s: OKX error %s: %s", self.url, push.code, push.msg)
        elif push.event == "notice":
            raise ConnectionError(f"venue notice {push.code}: {push.msg}")


class StreamPool:
    """The connections of one URL and message type, filled up to ``capacity`` keys each."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        decode: Callable[[str | bytes], Push[Any]],
        *,
        capacity: int = 64,
        **options: Any,
    ) -> None:
        self._session, self.url, self._decode = session, url, decode
        self.capacity, self._options = capacity, options
        self.streams: list[OkxStream] = []
        self._closing: set[asyncio.Task] = set()

    def add(self, key: Key, consumer: Consumer) -> OkxStream:
        stream = next((s for s in self.streams if key in s.consumers), None)
        if stream is None:
            stream = next((s for s in self.streams if len(s.consumers) < self.capacity), None)
        if stream is None:
            stream = OkxStream(self._session, self.url, self._decode, **self._options)
            self.streams.append(stream)
        stream.add(key, consumer)
        return stream

    def remove(self, stream: OkxStream, key: Key, consumer: Consumer) -> None:
        stream.remove(key, consumer)
        if not stream.consumers and stream in self.streams:
            self.streams.remove(stream)  # its last key is gone: close the connection
            task = asyncio.get_running_loop().create_task(stream.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        streams, self.streams = self.streams, []
        await asyncio.gather(*(s.close() for s in streams), *self._closing)
