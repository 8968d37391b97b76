"""Per-client outgoing WebSocket queue: fan-out never waits on a client.

Invariants:
- ``deliver`` never blocks and never awaits: it appends pre-encoded bytes to the client's
  own queue, so one slow client cannot stall the feed or the other clients.
- The queue is bounded: when a client falls ``max_queue`` frames behind, it is closed with
  code 1013 and a reason, its queue is dropped, and nothing more is queued for it.
- Frames are written in the order delivered; the same bytes object may be delivered to many
  clients (encode once, write many). ``finish`` closes after the frames queued so far.
- A client that stops reading cannot hold the socket open: after a close is decided, the
  transport is aborted if the close handshake has not completed within ``abort_after`` s.
- The socket's kernel send buffer is capped at ``send_buffer`` bytes: left to autotune it
  grows to megabytes and hides a stalled reader for minutes; capped, the queue limit above
  detects it promptly.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

from aiohttp import WSCloseCode, WSMsgType, web

__all__ = ["BoundedSender"]


class BoundedSender:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        max_queue: int,
        abort_after: float = 2.0,
        send_buffer: int | None = 256 * 1024,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._max_queue = max_queue
        self._abort_after = abort_after
        self.close_reason: tuple[int, str] | None = None
        self._close_when_drained: tuple[int, str] | None = None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)

    def deliver(self, frame: bytes) -> None:
        if self.close_reason is not None:
            return
        if len(self._queue) >= self._max_queue:
            self.close(WSCloseCode.TRY_AGAIN_LATER, "slow consumer: send queue overflow")
            return
        self._queue.append(frame)
        self._ready.set()

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
            while queue and self.close_reason is None:
                await ws.send_frame(queue.popleft(), WSMsgType.TEXT)
            if not queue and self._close_when_drained is not None:
                self.close(*self._close_when_drained)
            if self.close_reason is not None:
                code, reason = self.close_reason
                await ws.close(code=code, message=reason.encode())
                return
