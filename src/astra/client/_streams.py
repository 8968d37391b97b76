"""WebSocket streams: one reconnecting connection (``WsFeed``) and the watch loops over it
(books, trades, the private ORDERS/FILLS/BALANCES streams, the OTC quote stream).

Invariants:
- The key goes in the ``x-astra-api-key`` header of every handshake.
- A handshake the server refuses with a 4xx other than 408/429 raises the server's error
  (its JSON, read back with a plain GET of the same URL, which the server refuses the same
  way); a 408/429/5xx, a refused or dropped connection reconnect with exponential backoff
  (``backoff`` doubling up to ``max_backoff``, reset once a connection delivers a frame).
- The server closing with 1008 (the key revoked or expired) raises ``Unauthorized``; any
  other close of a live stream is a drop (reconnected); only a stream made with
  ``live=False`` (a replay) ends on a normal close (1000).
- A drop is never silent: ``WsFeed.next`` returns a ``Dropped`` marker before it reconnects,
  and each watch loop turns it into what its stream says on a resync (the book is reset; a
  private stream yields a ``ResyncMessage``: re-read over REST; trades a ``BookResync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from astra.core import AstraError, BookResync, TradesMessage, Unauthorized
from astra.core._otc import QuoteResponse
from astra.core._trading import BalancesMessage, FillsMessage, OrdersMessage, ResyncMessage

from ._book import BookGap, LocalBook
from ._http import Transport, _decode_error, api_error, query_params

__all__ = ["Dropped", "WsFeed", "watch_book", "watch_private", "watch_quotes",
           "watch_trades"]

_WS_MAX_MESSAGE = 64 * 1024 * 1024  # a whole deep book in one snapshot frame
_RETRY_HANDSHAKE = frozenset({408, 429})
# A close we start (a gap, the caller stopping) waits this long for the server's answer.
_CLOSE_WAIT = 2.0
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_WAIT)
_decode_private = msgspec.json.Decoder(
    OrdersMessage | FillsMessage | BalancesMessage | ResyncMessage).decode
_decode_trades = msgspec.json.Decoder(TradesMessage).decode
_decode_resync = msgspec.json.Decoder(BookResync).decode
_decode_quote = msgspec.json.Decoder(QuoteResponse).decode




class Dropped:
    """The connection was lost (``reason``); the feed reconnects on the next ``next()``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class WsFeed:
    """One WebSocket subscription that reconnects. ``await next()`` -> the next text frame
    (bytes) or a ``Dropped``; None once the server ended the stream normally."""

    def __init__(self, transport: Transport, path: str, params: Mapping[str, Any], *,
                 backoff: float = 0.1, max_backoff: float = 5.0,
                 heartbeat: float = 20.0, live: bool = True) -> None:
        self.transport, self.path, self.params = transport, path, query_params(params)
        self.live = live  # a live subscription: any close but 1008 is a drop to repair
        self.backoff, self.max_backoff, self.heartbeat = backoff, max_backoff, heartbeat
        self.connects = 0  # successful handshakes
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._wait = 0.0  # before the next connection attempt

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await _close(ws)

    async def reconnect(self, reason: str) -> Dropped:
        """Close the connection on purpose (e.g. a book gap); the next ``next()`` opens a
        fresh one at once."""
        await self.close()
        self._wait = 0.0
        return Dropped(reason)

    async def next(self) -> bytes | Dropped | None:
        if self._ws is None:
            if (dropped := await self._connect()) is not None:
                return dropped
        msg = await self._ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            self._wait = 0.0  # a working connection: the next drop starts the backoff anew
            data = msg.data
            return data.encode() if isinstance(data, str) else data
        ws, self._ws = self._ws, None
        code = ws.close_code
        await _close(ws)
        if code == aiohttp.WSCloseCode.POLICY_VIOLATION:  # revoked or expired key
            extra = msg.extra if isinstance(msg.extra, str) else ""
            raise Unauthorized(f"the server closed the stream: {extra or 'API key refused'}")
        if not self.live and code == aiohttp.WSCloseCode.OK:
            return None  # ended by the server (a replay's end); a live stream never ends
        return self._dropped(f"connection lost (close code {code})")

    def _dropped(self, reason: str) -> Dropped:
        self._wait = min(max(self._wait * 2, self.backoff), self.max_backoff)
        return Dropped(reason)

    async def _connect(self) -> Dropped | None:
        if self._wait:
            await asyncio.sleep(self._wait)
        url = self.transport.ws_url + self.path
        try:
            async with asyncio.timeout(self.transport.timeout):
                self._ws = await self.transport.session.ws_connect(
                    url, params=self.params, headers=self.transport.headers,
                    heartbeat=self.heartbeat, max_msg_size=_WS_MAX_MESSAGE, timeout=_WS_TIMEOUT)
        except aiohttp.WSServerHandshakeError as exc:
            if 400 <= exc.status < 500 and exc.status not in _RETRY_HANDSHAKE:
                raise await self._handshake_error(exc) from None
            return self._dropped(f"handshake refused: HTTP {exc.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._dropped(f"cannot connect: {type(exc).__name__}")
        self.connects += 1
        return None

    async def _handshake_error(self, exc: aiohttp.WSServerHandshakeError) -> AstraError:
        """The server's own error for a refused handshake: the same URL as a plain GET is
        refused for the same reason, with the JSON body a handshake error lacks."""
        try:
            await self.transport.request("GET", self.path, params=self.params,
                                         idempotent=False)
        except AstraError as err:
            if err.status == exc.status:
                return err
        return api_error(exc.status, f"WebSocket handshake refused: {exc.message}".encode())


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close politely, but bounded: aiohttp waits for the server's close frame as long as
    other frames keep coming; past ``_CLOSE_WAIT`` the connection is dropped instead."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLOSE_WAIT):
            await ws.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def watch_book(transport: Transport, market: str, depth: int | None,
                     yield_resyncs: bool, feed_options: Mapping[str, Any]
                     ) -> AsyncIterator[LocalBook]:
    """``LocalBook`` after each snapshot and update applied (the same object, updated);
    with ``yield_resyncs`` also while it waits for a snapshot (``book.synced`` False)."""
    book = LocalBook(market, depth)
    feed = WsFeed(transport, "/ws", {"market": market, "dataType": "ORDERBOOK"},
                  **feed_options)
    try:
        while True:
            frame = await feed.next()
            if frame is None:
                return
            if isinstance(frame, Dropped):
                book.reset("disconnected", frame.reason)
            else:
                try:
                    if book.apply(frame):
                        yield book
                        continue
                except BookGap as gap:  # resync by reconnecting: a fresh snapshot follows
                    book.reset("resyncing", str(gap))
                    await feed.reconnect(str(gap))
            if yield_resyncs:
                yield book
    finally:
        await feed.close()


async def watch_trades(transport: Transport, market: str, feed_options: Mapping[str, Any]
                       ) -> AsyncIterator[TradesMessage | BookResync]:
    """Each batch of trades; a ``BookResync`` when trades may have been missed (the
    gateway's feed dropped, or this connection did)."""
    feed = WsFeed(transport, "/ws", {"market": market, "dataType": "TRADE"}, **feed_options)
    try:
        while (frame := await feed.next()) is not None:
            if isinstance(frame, Dropped):
                yield BookResync(market=market, reason=frame.reason, state="disconnected",
                                 since=_now_ms())
            elif b'"type":"resync"' in frame:
                yield _decode_resync(frame)
            else:
                yield _decode_trades(frame)
    finally:
        await feed.close()


async def watch_private(transport: Transport, exchange: str, data_type: str,
                        feed_options: Mapping[str, Any]) -> AsyncIterator[Any]:
    """``OrdersMessage``/``FillsMessage``/``BalancesMessage`` as they come; a
    ``ResyncMessage`` when events may have been missed (re-read over REST)."""
    feed = WsFeed(transport, "/ws", {"exchange": exchange, "dataType": data_type},
                  **feed_options)
    try:
        while (frame := await feed.next()) is not None:
            if isinstance(frame, Dropped):
                yield ResyncMessage(exchange=exchange, reason=frame.reason)
            else:
                yield _decode_private(frame)
    finally:
        await feed.close()


async def watch_quotes(transport: Transport, account_id: str, params: Mapping[str, Any],
                       feed_options: Mapping[str, Any]
                       ) -> AsyncIterator[QuoteResponse | AstraError]:
    """A fresh signed quote per round; a round the desk refused is yielded as the
    ``AstraError`` it would raise (the stream goes on)."""
    feed = WsFeed(transport, f"/ws/stream-otc-quotes/{account_id}", params, **feed_options)
    try:
        while (frame := await feed.next()) is not None:
            if isinstance(frame, Dropped):
                continue  # no state to lose: the next quote is as good
            if b'"type":"error"' in frame:
                yield AstraError.from_model(_decode_error(frame))  # {"type":"error",...}
            else:
                yield _decode_quote(frame)
    finally:
        await feed.close()
