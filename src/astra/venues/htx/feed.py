"""HTX (Huobi) market-data feed handlers.

Wire: every frame HTX sends is gzip-compressed JSON (binary frames). The server sends
``{"ping": n}`` every few seconds and closes the connection unless the client answers
``{"pong": n}`` with the same ``n``: every connection here answers each ping at once, before
anything else is processed. A connection silent for ``silence`` seconds (pings included) is
dead: it is closed and reopened with exponential backoff, and the book resyncs from scratch.
Each connection inflates with one ``Inflater``: a frame must be one gzip member (header,
CRC-32 and length checked; bytes after it ignored) inflating to at most ``MAX_FRAME`` bytes
(a gzip bomb fails without using more), else ``zlib.error`` and a reconnect.

Compiled core (``_htxbook.c``, ``IMPLEMENTATION == "c"`` where it was built and
``ASTRA_NATIVE`` is not ``0``): the ``Inflater``, the full-book diff (``fullbook.py``) and
``depth_fields``, which reads a ``depth.step0`` push without msgspec (any other frame or
shape is decoded as before). The Python code here is the reference: the same values, the
same exception classes, the same state after an error (tests/venues/htx/test_htx_native.py).

Book, incremental (``market.$symbol.mbp.$levels``, spot; the default). Integrity rule, per
market, on one connection:
- ``sub`` the topic and buffer every increment; once the subscription is acknowledged, ``req``
  the same topic on the same connection (HTX aligns the refresh only with the subscription
  of the connection that asked). The refresh carries ``seqNum`` S and no ``prevSeqNum``.
- Drop buffered increments with ``seqNum <= S``; the first one kept must have
  ``prevSeqNum == S`` (otherwise the refresh is older than the buffer or falls inside one
  increment: ask again, with backoff).
- Then each increment's ``prevSeqNum`` must equal the previous increment's ``seqNum``
  (``seqNum`` itself is not consecutive). Anything else is a gap: ``sink.on_resync``, then a
  new ``req`` on the same connection, then ``sink.on_snapshot``. A refresh that does not
  arrive within ``snapshot_timeout`` is asked for again. Nothing is applied out of sequence.

Book, full (``market.$symbol.depth.step0``, spot and swaps): every push is the whole book
(up to 150 levels a side), so there is no gap to detect: nothing can be lost that the next
push does not restate. The first push is the snapshot; every later push is applied, as the
difference from the previous push (changed levels, and removed levels with quantity 0), so
clients see small in-sequence updates and the gateway's book equals the latest push exactly.
The difference is taken on the pushes' text (``fullbook.py``: only changed levels are parsed);
``DepthBookHandler`` is this per-push rule without the connection.
Pushes are ordered by ``mrid`` where they carry one (contracts: there ``version`` is only the
push's epoch second, shared by every push within it), else by ``version`` (spot), and that
id is the update's ``updateId``. A push with the held id restates the held book (nothing to
send; should its book differ, it goes out as a new snapshot, since readers cache the book by
its update id). A lower ``mrid`` taken in the same or an earlier second is stale and dropped;
a lower id otherwise (a venue restart) resyncs from that push as a new snapshot.

Trades: ``market.$symbol.trade.detail``; ``direction`` is the taker's side. The sink hears
that the feed is live once HTX acknowledges the ``sub`` (``subbed``, status ok: every trade
from then on is delivered), and that it is down whenever the connection is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib

import aiohttp
import msgspec

from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book
from astra.venues.native import load_native
from astra.venues.retry import backoff as _backoff
from astra.venues.silence import SilenceWatchdog

from .fullbook import IMPLEMENTATION as _FULLBOOK_IMPLEMENTATION
from .fullbook import FullBookDiff
from .schemas import DepthMessage, DepthTick, MbpMessage, MbpTick, TradeMessage
from .sequencing import MbpSync, SequenceGap, SnapshotMisaligned, VersionRegressed

try:  # zlib-ng (ccxt depends on it) inflates HTX's frames about 1.6x faster than zlib
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - same results, slower
    _inflate = zlib

_native = load_native("astra.venues.htx._htxbook")
# Which code runs the hot path (frames and the full-book diff): "c" or "python".
IMPLEMENTATION = "c" if _native is not None and _FULLBOOK_IMPLEMENTATION == "c" else "python"

__all__ = [
    "IMPLEMENTATION",
    "MAX_FRAME",
    "DepthBookHandler",
    "FeedError",
    "FullBookDiff",
    "Inflater",
    "MbpSync",
    "SequenceGap",
    "SnapshotMisaligned",
    "VersionRegressed",
    "depth_fields",
    "gunzip",
    "pong_frame",
    "run_depth_feed",
    "run_mbp_feed",
    "run_trade_feed",
]

log = logging.getLogger(__name__)
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
_encode = msgspec.json.Encoder().encode


class FeedError(Exception):
    """The venue answered with an error, or sent a frame that is not HTX's."""


# What a feed survives by reconnecting: network failures, silence, garbage, venue errors.
_FEED_ERRORS = (
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
    msgspec.DecodeError,
    zlib.error,
    ValueError,
    FeedError,
)


# The largest frame payload accepted: a frame inflating to more (a gzip bomb) is an error.
MAX_FRAME = 64 << 20
# Deflate expands at most 1032:1 (a 258-byte match coded in two bits): a frame shorter than
# limit // _MAX_RATIO cannot inflate past the limit, so it may be inflated in one call.
_MAX_RATIO = 1032


class _PyInflater:
    """The frame rule (the reference for ``_htxbook.Inflater``): a frame is one gzip member
    (wbits 31: header checked, trailer CRC-32 and length checked); bytes after it are ignored;
    anything else, or a payload over ``limit`` bytes, raises ``zlib.error`` (the message of
    ``zlib.decompress``). Holds no state between frames."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        if not 1 <= limit <= 1 << 30:
            raise ValueError("limit must be between 1 and 2**30")
        self.limit = limit

    def inflate(self, frame) -> bytes:
        limit = self.limit
        try:
            if len(frame) <= limit // _MAX_RATIO:
                return _inflate.decompress(frame, 31)
            d = _inflate.decompressobj(31)
            out = d.decompress(frame, limit + 1)  # one byte past the limit tells a bomb
        except _inflate.error as exc:  # zlib-ng's class: raise zlib's, as the C one does
            if _inflate is zlib:
                raise
            raise zlib.error(*exc.args) from None
        if len(out) > limit:
            raise zlib.error(f"Error: inflated frame exceeds {limit} bytes")
        if not d.eof:
            raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
        return out


# One per connection: the C one keeps its zlib stream (and window) from frame to frame.
Inflater = _PyInflater if _native is None else _native.Inflater
# A depth.step0 push's JSON read without msgspec (C): (ch, ts, bids text, asks text, version,
# mrid, tick ts), the values msgspec's DepthMessage would hold, or None for any other frame
# or shape (then: decode it). None itself where the extension is not built.
depth_fields = None if _native is None else _native.depth_push


def gunzip(frame: bytes) -> bytes:
    """The JSON inside one HTX frame (``Inflater``'s rule; a connection keeps one Inflater)."""
    return _PyInflater().inflate(frame)


def pong_frame(ping: int) -> str:
    """The answer to ``{"ping": n}``, as HTX's own clients send it."""
    return f'{{"pong":{int(ping)}}}'


def _book(market: str, bids, asks, update_id: int, timestamp: int) -> L2Book:
    book = L2Book(market)
    book.reset(bids, asks, update_id, timestamp)
    return book


class _Stream:
    """One HTX WebSocket topic with reconnects, gunzip and ping answers; subclasses handle
    the decoded frames. ``attempt`` goes back to 0 once a connection proves useful."""

    message_type: type = MbpMessage

    def __init__(self, session: aiohttp.ClientSession, url: str, topic: str, silence: float):
        self.session, self.url, self.topic, self.silence = session, url, topic, silence
        self.attempt = 0
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"astra{next(self._ids)}"

    def fast_path(self):
        """A callable taking a frame's JSON, True when it handled the frame whole (no
        decode needed); None: every frame is decoded."""
        return None

    async def run(self) -> None:
        decode = msgspec.json.Decoder(self.message_type, strict=False).decode
        inflate = Inflater().inflate  # reset per frame, kept across reconnects
        fast = self.fast_path()
        while True:
            try:
                async with self.session.ws_connect(self.url, timeout=_WS_TIMEOUT) as ws:
                    await self.on_open(ws)
                    await ws.send_str(_encode({"sub": self.topic, "id": self.next_id()}).decode())
                    # One watchdog per connection, not a timeout per message (silence.py).
                    with SilenceWatchdog(self.silence) as watch:
                        while True:
                            msg = await ws.receive()
                            if msg.type is aiohttp.WSMsgType.BINARY:
                                data = inflate(msg.data)
                                if fast is not None and fast(data):
                                    watch.heard += 1
                                    continue
                                m = decode(data)
                            elif msg.type is aiohttp.WSMsgType.TEXT:
                                m = decode(msg.data)
                            else:
                                raise ConnectionError(f"upstream sent {msg.type.name}")
                            watch.heard += 1
                            if m.ping is not None:
                                await ws.send_str(pong_frame(m.ping))
                            elif m.status == "error":
                                raise FeedError(f"{self.topic}: {m.err_code} {m.err_msg}")
                            else:
                                await self.on_message(ws, m)
            except _FEED_ERRORS as exc:
                reason = "silent for too long" if isinstance(exc, TimeoutError) else repr(exc)
                log.warning("%s %s: %s; reconnecting", self.url, self.topic, reason)
                self.on_drop(f"reconnecting: {reason}")
                await asyncio.sleep(_backoff(self.attempt))
                self.attempt += 1
            finally:
                self.on_close()

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A new connection, before the subscription is sent."""

    async def on_message(self, ws: aiohttp.ClientWebSocketResponse, m) -> None:
        raise NotImplementedError

    def on_drop(self, reason: str) -> None:
        """The connection failed; a new one follows after a backoff."""

    def on_close(self) -> None:
        """The connection is gone (failure or cancellation)."""


class _MbpBookFeed(_Stream):
    message_type = MbpMessage

    def __init__(
        self, session, url, topic, sink: BookSink, market: str, silence: float, timeout: float
    ) -> None:
        super().__init__(session, url, topic, silence)
        self.sink, self.market, self.snapshot_timeout = sink, market, timeout
        self.sync = MbpSync()
        self._refresher: asyncio.Task | None = None
        self._req_id: str | None = None
        self._misaligned = 0

    async def on_open(self, ws) -> None:
        self.sync.reset()
        self._req_id, self._misaligned = None, 0

    def on_drop(self, reason: str) -> None:
        self.sink.on_resync(reason)

    def on_close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    def _request_refresh(self, ws, delay: float = 0.0) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        self._refresher = asyncio.create_task(self._refresh(ws, delay))

    async def _refresh(self, ws, delay: float) -> None:
        """``req`` the refresh until one syncs the book (each unanswered within
        ``snapshot_timeout`` is asked again). Runs beside the receive loop."""
        try:
            if delay:
                await asyncio.sleep(delay)
            while not self.sync.synced and not ws.closed:
                self._req_id = self.next_id()
                await ws.send_str(_encode({"req": self.topic, "id": self._req_id}).decode())
                await asyncio.sleep(self.snapshot_timeout)
        except (aiohttp.ClientError, ConnectionError) as exc:  # the receive loop sees it too
            log.debug("%s: req not sent: %r", self.market, exc)

    async def on_message(self, ws, m: MbpMessage) -> None:
        tick = m.tick
        if tick is not None:
            self._on_increment(ws, tick, m.ts)
        elif m.rep is not None:
            if m.id == self._req_id and m.data is not None and not self.sync.synced:
                self._on_refresh(ws, m.data, m.ts)
        elif m.subbed is not None:
            self._request_refresh(ws)

    def _on_refresh(self, ws, data: MbpTick, ts: int) -> None:
        sync = self.sync
        try:
            events = sync.start(data.seqNum)
        except SnapshotMisaligned as exc:
            self._misaligned += 1
            log.info("%s: %s; asking again", self.market, exc)
            return self._request_refresh(ws, _backoff(self._misaligned, cap=5.0))
        except SequenceGap as gap:  # the buffer itself has a hole
            sync.reset()
            self.sink.on_resync(str(gap))
            return self._request_refresh(ws)
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        self._misaligned = self.attempt = 0
        book = _book(self.market, data.bids, data.asks, data.seqNum, ts)
        for t in events:
            book.apply(t.bids, t.asks, t.seqNum, ts)
        self.sink.on_snapshot(book)

    def _on_increment(self, ws, tick: MbpTick, ts: int) -> None:
        sync = self.sync
        if not sync.synced:
            sync.buffer(tick)
            if self._refresher is None:  # no sub acknowledgement seen: ask anyway
                self._request_refresh(ws)
            return
        try:
            applied = sync.push(tick)
        except SequenceGap as gap:
            sync.reset()
            sync.buffer(tick)
            self.sink.on_resync(str(gap))
            self._request_refresh(ws)
            return
        if applied:
            self.sink.on_update(tick.seqNum, ts, tick.bids, tick.asks)


class DepthBookHandler:
    """The ``depth.step0`` rule of one market, push by push, without the connection: each
    push goes to ``sink`` as the snapshot, an update, or nothing (see the module docstring)."""

    def __init__(self, sink: BookSink, market: str) -> None:
        self.sink, self.market = sink, market
        self.diff = FullBookDiff()

    def reset(self) -> None:
        """A new connection: the next push is a snapshot."""
        self.diff.reset()

    def on_push(self, tick: DepthTick, ts: int) -> bool:
        """Hand ``tick`` (book time ``ts``) to the sink; True when it went out as a snapshot."""
        return self.on_text(bytes(tick.bids), bytes(tick.asks), tick.version, tick.mrid, ts)

    def on_fields(self, fields: tuple) -> bool:
        """``on_push`` of a push read by ``depth_fields``."""
        _, ts, bids, asks, version, mrid, tick_ts = fields
        return self.on_text(bids, asks, version, mrid, tick_ts or ts)

    def on_text(self, bids: bytes, asks: bytes, version: int, mrid: int | None, ts: int) -> bool:
        """``on_push`` of a push given as its sides' JSON texts and its ids."""
        diff = self.diff
        if diff.synced:
            held = diff.seq
            try:
                changes = diff.changes_text(bids, asks, version, mrid)
            except VersionRegressed as exc:
                self.sink.on_resync(str(exc))
            else:
                if changes is None or not (changes[0] or changes[1]):
                    return False  # stale, or the held book restated
                if diff.seq != held:
                    self.sink.on_update(diff.seq, ts, *changes)
                    return False
                # Another book under the held id: sent whole (readers cache by update id).
        bids, asks = diff.load_text(bids, asks, version, mrid)
        self.sink.on_snapshot(_book(self.market, bids, asks, diff.seq, ts))
        return True


class _DepthBookFeed(_Stream):
    message_type = DepthMessage

    def __init__(self, session, url, topic, sink: BookSink, market: str, silence: float):
        super().__init__(session, url, topic, silence)
        self.sink = sink
        self.handler = DepthBookHandler(sink, market)

    async def on_open(self, ws) -> None:
        self.handler.reset()

    def fast_path(self):
        if depth_fields is None:
            return None
        handler = self.handler

        def on_json(data: bytes) -> bool:
            fields = depth_fields(data)
            if fields is None:
                return False  # not a plain push: decoded, then on_message
            if handler.on_fields(fields):
                self.attempt = 0  # a snapshot went out
            return True

        return on_json

    def on_drop(self, reason: str) -> None:
        self.sink.on_resync(reason)

    async def on_message(self, ws, m: DepthMessage) -> None:
        tick = m.tick
        if tick is not None and self.handler.on_push(tick, tick.ts or m.ts):
            self.attempt = 0  # a snapshot went out (a None tick: the sub acknowledgement)


class _TradeFeed(_Stream):
    message_type = TradeMessage

    def __init__(self, session, url, topic, sink: TradeSink, silence: float):
        super().__init__(session, url, topic, silence)
        self.sink = sink

    def on_drop(self, reason: str) -> None:
        self.sink.on_connection(False, reason)

    async def on_message(self, ws, m: TradeMessage) -> None:
        if m.tick is not None and m.tick.data:
            self.attempt = 0
            self.sink.on_trades([d.to_trade() for d in m.tick.data])
        elif m.subbed == self.topic:  # (a refused sub is an error: the connection drops)
            self.sink.on_connection(True)


async def run_mbp_feed(
    session: aiohttp.ClientSession,
    url: str,
    topic: str,
    sink: BookSink,
    market: str,
    *,
    silence: float = 30.0,
    snapshot_timeout: float = 10.0,
) -> None:
    """Keep ``sink`` supplied with ``market``'s book from the ``mbp`` ``topic`` at ``url``."""
    await _MbpBookFeed(session, url, topic, sink, market, silence, snapshot_timeout).run()


async def run_depth_feed(
    session: aiohttp.ClientSession,
    url: str,
    topic: str,
    sink: BookSink,
    market: str,
    *,
    silence: float = 30.0,
) -> None:
    """Keep ``sink`` supplied with ``market``'s book from the full-book ``topic`` at ``url``."""
    await _DepthBookFeed(session, url, topic, sink, market, silence).run()


async def run_trade_feed(
    session: aiohttp.ClientSession, url: str, topic: str, sink: TradeSink, *, silence: float = 30.0
) -> None:
    """Forward the trades of ``topic`` at ``url`` to ``sink``, reconnecting with backoff."""
    await _TradeFeed(session, url, topic, sink, silence).run()
