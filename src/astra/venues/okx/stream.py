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
- A ``subscribe`` event (OKX's answer naming the ``arg`` subscribed) makes that key live:
  its consumers hear ``on_live`` (``MuxConnection._confirmed``).
- A connection whose last key is removed is closed; nothing is subscribed on the wire
  that no consumer wants (beyond in-flight requests).
Batching, the writer, pools and reconnects are ``astra.venues.wsmux.BatchedConnection``'s;
this module is OKX's wire format and keepalive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import msgspec

from astra.venues.wsmux import BatchedConnection, MuxPool

from .schemas import Arg, Push, SubscribeRequest

__all__ = ["Consumer", "Key", "OkxStream", "StreamPool"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (channel, instId)
_encode = msgspec.json.Encoder().encode


class Consumer(Protocol):
    def on_push(self, push: Push[Any]) -> None:
        """A data push for this consumer's key, in wire order."""

    def on_reset(self, reason: str) -> None:
        """The connection was lost; the key is subscribed again on the next one."""

    def on_live(self) -> None:
        """OKX confirmed the key's subscription: every push from now on is delivered."""


class OkxStream(BatchedConnection):
    """One WebSocket connection (reopened as needed) and the keys subscribed on it."""

    name = "okx ws"

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
        super().__init__(session, url)
        self._decode = decode
        self.ping_interval, self.pong_timeout, self.max_args = ping_interval, pong_timeout, max_args

    def _frames(self, op: str, keys: list) -> list[str]:
        step = self.max_args
        return [
            _encode(SubscribeRequest(op, [Arg(c, i) for c, i in keys[n : n + step]])).decode()  # type: ignore[arg-type]
            for n in range(0, len(keys), step)
        ]

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Dispatch frames until the connection fails or closes (raises either way)."""
        decode, consumers = self._decode, self.consumers
        while True:
            try:
                msg = await ws.receive(timeout=self.ping_interval)
            except TimeoutError:
                await ws.send_str("ping")  # OKX's application-level keepalive
                try:
                    msg = await ws.receive(timeout=self.pong_timeout)
                except TimeoutError:
                    raise TimeoutError(
                        f"silent for {self.pong_timeout:g} s after a ping"
                    ) from None
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    raise ConnectionError("closed by the venue")
                raise ConnectionError(f"upstream sent {msg.type.name}")
            if msg.data == "pong":
                continue
            push = decode(msg.data)
            if push.event:
                self._on_event(push)
                continue
            arg = push.arg
            if arg is not None:
                self.mark_alive()
                for consumer in consumers.get((arg.channel, arg.instId), ()):
                    try:
                        consumer.on_push(push)
                    except Exception:  # one market's failure is not the connection's
                        log.exception("%s: consumer of %s failed", self.url, arg)

    def _on_event(self, push: Push[Any]) -> None:
        if push.event == "subscribe" and push.arg is not None:
            self._confirmed((push.arg.channel, push.arg.instId))
        elif push.event == "error":
            # OKX's error event names no subscription (e.g. 60018 unknown instId, 60011
            # login required for books-l2-tbt); the feed's snapshot timeout retries it.
            log.error("%s: OKX error %s: %s", self.url, push.code, push.msg)
        elif push.event == "notice":
            raise ConnectionError(f"venue notice {push.code}: {push.msg}")


class StreamPool(MuxPool[OkxStream]):
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
        super().__init__(lambda: OkxStream(session, url, decode, **options), capacity)
        self.url = url
