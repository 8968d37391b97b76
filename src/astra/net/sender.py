"""Per-client outgoing WebSocket queue: fan-out never waits on a client.

Invariants:
- ``deliver`` never blocks and never awaits: it writes pre-encoded bytes to the client's
  transport, or appends them to the client's own queue, so one slow client cannot stall the
  feed or the other clients.
- The queue is bounded: when a client falls ``max_queue`` frames behind, it is closed with
  code 1013 and a reason, its queue is dropped, and nothing more is queued for it (counted in
  ``telemetry.ws_dropped_clients`` under the connection's ``data_type``).
- Frames are written in the order delivered; the same bytes object may be delivered to many
  clients (encode once, write many). ``finish`` closes after the frames queued so far.
- Encode the frame once too: a text payload delivered to many clients in a row (a fan-out) is
  framed once (header + payload, an unmasked server frame: ``text_frame``) and those bytes are
  queued for every client. No task wakes per frame: a client with frames queued is flushed
  once per event-loop iteration (one shared callback per loop), its frames joined into one
  ``transport.write``, so a busy feed costs a write per client per iteration, not per update.
  A paused transport (the kernel buffer full) leaves the queue to the client's writer task,
  which writes it as the transport drains. Everything goes through the one queue, in order.
- Direct writes never split one of aiohttp's frames: aiohttp writes an uncompressed frame
  (data, ping, pong, close) in one synchronous ``transport.write``, and direct writes are
  only used when the handshake negotiated no compression (otherwise every frame goes through
  aiohttp's writer, as before). Nothing is written after aiohttp has started closing.
- A client that stops reading cannot hold the socket open: after a close is decided, the
  transport is aborted if the close handshake has not completed within ``abort_after`` s.
- The socket's kernel send buffer is capped at ``send_buffer`` bytes: left to autotune it
  grows to megabytes and hides a stalled reader for minutes; capped, the queue limit above
  detects it promptly.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import weakref
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

if TYPE_CHECKING:
    from astra.telemetry import Telemetry

__all__ = ["BoundedSender", "text_frame"]

_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x80 | WSMsgType.TEXT
_BATCH_BYTES = 256 * 1024  # one transport write of a backlog joins at most about this much


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one complete, unmasked, uncompressed WebSocket text frame (RFC 6455
    5.2: a server's frame), the bytes aiohttp's writer would produce for it."""
    size = len(payload)
    if size < 126:
        return _LEN1(_FIN_TEXT, size) + payload
    if size < 65536:
        return _LEN2(_FIN_TEXT, 126, size) + payload
    return _LEN3(_FIN_TEXT, 127, size) + payload


# The last payload framed and its frame: a fan-out delivers one payload object to every client
# in a row, so this is framed once per update. ``is`` on a held reference: exact.
_last_framed: tuple[bytes, bytes] = (b"", text_frame(b""))


def _framed(payload: bytes) -> bytes:
    global _last_framed
    last = _last_framed
    if last[0] is payload:
        return last[1]
    frame = text_frame(payload)
    _last_framed = (payload, frame)
    return frame


class _Flusher:
    """One per event loop: writes the queues of the senders delivered to in this iteration,
    once, at the next turn of the loop (one callback however many clients)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[BoundedSender] = []

    def add(self, sender: BoundedSender) -> None:
        if not self._dirty:
            self._loop.call_soon(self._flush)
        self._dirty.append(sender)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sender in dirty:
            sender._flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


class BoundedSender:
    """One WebSocket client's outgoing side. ``deliver(payload)`` sends a text message;
    ``writer()`` runs as the client's task until it is closed."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        max_queue: int,
        abort_after: float = 2.0,
        send_buffer: int | None = 256 * 1024,
        *,
        telemetry: Telemetry | None = None,
        data_type: str = "MULTI",
    ) -> None:
        self.ws = ws
        self._transport = transport
        self._queue: deque[bytes] = deque()  # framed bytes (direct) or payloads (aiohttp's)
        self._ready = asyncio.Event()
        self._max_queue = max_queue
        self._abort_after = abort_after
        self.close_reason: tuple[int, str] | None = None
        self._close_when_drained: tuple[int, str] | None = None
        self.telemetry = telemetry
        self.data_type = data_type  # the drop counter's label; a handler may change it
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        # Direct writes: only on the prepared response's own, uncompressed transport.
        writer = getattr(ws, "_writer", None)
        self._protocol = getattr(writer, "protocol", None)
        self._direct = (
            writer is not None
            and transport is not None
            and getattr(writer, "transport", None) is transport
            and not getattr(writer, "compress", 0)
            and hasattr(self._protocol, "_paused")
        )
        self._flusher = _flusher() if self._direct else None
        self._flush_due = False  # registered with the flusher for this iteration

    @property
    def direct(self) -> bool:
        """True when frames are framed here and written straight to the transport."""
        return self._direct

    def deliver(self, frame: bytes) -> None:
        """Send ``frame`` (a text message's payload) after everything delivered before it."""
        if self.close_reason is not None:
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.close(WSCloseCode.TRY_AGAIN_LATER, "slow consumer: send queue overflow")
            if self.telemetry is not None:
                self.telemetry.ws_dropped_clients.labels(self.data_type).inc()
            return
        if self._direct:
            queue.append(_framed(frame))
            if not self._flush_due:
                self._flush_due = True
                self._flusher.add(self)
        else:
            queue.append(frame)
            self._ready.set()

    def _flush(self) -> None:
        """The flusher's turn: the whole queue in one write, unless the transport is paused
        (then the writer task waits for it to drain)."""
        self._flush_due = False
        queue = self._queue
        if not queue or self.close_reason is not None:
            return
        if self._protocol._paused:
            self._ready.set()
            return
        if self.ws._closed or self._transport.is_closing():
            queue.clear()  # aiohttp is closing it: nothing more after its close frame
            return
        self._transport.write(queue[0] if len(queue) == 1 else b"".join(queue))
        queue.clear()

    def finish(self, frame: bytes, code: int, reason: str) -> None:
        """Queue ``frame``, then close once everything queued up to it has been written."""
        self.deliver(frame)
        if self.close_reason is None:
            self._close_when_drained = (code, reason)
            self._ready.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = (code, reason)
            self._queue.clear()
            self._ready.set()
            asyncio.get_running_loop().call_later(self._abort_after, self._abort)

    def _abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def writer(self) -> None:
        """Run as a task per client: writes queued frames, then closes when told to."""
        ws, queue = self.ws, self._queue
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._direct:
                await self._write_backlog()
            else:
                while queue and self.close_reason is None:
                    await ws.send_frame(queue.popleft(), WSMsgType.TEXT)
            if not queue and self._close_when_drained is not None:
                self.close(*self._close_when_drained)
            if self.close_reason is not None:
                code, reason = self.close_reason
                await ws.close(code=code, message=reason.encode())
                return

    async def _write_backlog(self) -> None:
        """Write the queued (framed) bytes in order, joined, waiting while the transport is
        paused."""
        queue, protocol, transport = self._queue, self._protocol, self._transport
        while queue and self.close_reason is None:
            if protocol._paused:
                try:
                    await protocol._drain_helper()
                except ConnectionError:
                    self.close(WSCloseCode.GOING_AWAY, "connection lost")
                    return
                continue
            if self.ws._closed or transport.is_closing():
                queue.clear()
                return
            batch, size = [], 0
            while queue and size < _BATCH_BYTES:
                frame = queue.popleft()
                batch.append(frame)
                size += len(frame)
            transport.write(batch[0] if len(batch) == 1 else b"".join(batch))
