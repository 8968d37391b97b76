"""HTX (Huobi) market-data feed handlers.

Wire: every frame HTX sends is gzip-compressed JSON (binary frames). The server sends
``{"ping": n}`` every few seconds and closes the connection unless the client answers
``{"pong": n}`` with the same ``n``: every connection here answers each ping at once, before
anything else is processed. A connection silent for ``silence`` seconds (pings included) is
dead: it is closed and reopened with exponential backoff, and the book resyncs from scratch.

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
(up to 150 levels a side) with a ``version`` that increases between pushes (not by 1, so
there is no gap to detect: nothing can be lost that the next push does not restate). The
first push is the snapshot; each later push becomes an update computed as the difference
from the previous push (changed levels, and removed levels with quantity 0), so clients see
small in-sequence updates and the gateway's book equals the latest push exactly. A repeated
``version`` is ignored; a ``version`` that goes backwards (a venue restart) resyncs from that
push as a new snapshot.

Trades: ``market.$symbol.trade.detail``; ``direction`` is the taker's side.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib

import aiohttp
import msgspec

from astra.marketdata.book import L2Book
from astra.venues.base import BookSink, TradeSink
from astra.venues.retry import backoff as _backoff

from .schemas import DepthMessage, DepthTick, Level, MbpMessage, MbpTick, TradeMessage

__all__ = [
    "FeedError",
    "FullBookDiff",
    "MbpSync",
    "SequenceGap",
    "SnapshotMisaligned",
    "VersionRegressed",
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


class SequenceGap(Exception):
    """An increment does not continue the chain: updates were lost."""


class SnapshotMisaligned(Exception):
    """The refresh cannot be joined to the buffered increments."""


class VersionRegressed(Exception):
    """A full-book push is older than the one before it."""


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


def gunzip(frame: bytes) -> bytes:
    """The JSON inside one HTX frame (wbits 31: a gzip member, header and trailer checked)."""
    return zlib.decompress(frame, 31)


def pong_frame(ping: int) -> str:
    """The answer to ``{"ping": n}``, as HTX's own clients send it."""
    return f'{{"pong":{int(ping)}}}'


class MbpSync:
    """Sequencing of one ``mbp`` increment stream against refreshes (pure: no I/O)."""

    def __init__(self, max_buffer: int = 10_000) -> None:
        self.max_buffer = max_buffer
        self.reset()

    def reset(self) -> None:
        self.pending: list[MbpTick] = []
        self.synced = False
        self.prev: int | None = None  # seqNum of the last increment in the book
        self.bridging = False  # until the first increment after the refresh is applied

    def buffer(self, tick: MbpTick) -> None:
        if len(self.pending) >= self.max_buffer:  # a refresh that never comes: keep newest
            del self.pending[0]
        self.pending.append(tick)

    def start(self, seq_num: int) -> list[MbpTick]:
        """Sync on a refresh with ``seqNum`` ``seq_num``: the buffered increments to apply on
        top of it, in order. Raises SnapshotMisaligned (keep buffering, ask again) or
        SequenceGap (the buffer itself has a hole)."""
        events = [t for t in self.pending if t.seqNum > seq_num]
        if events and events[0].prevSeqNum != seq_num:
            self.pending = events
            raise SnapshotMisaligned(
                f"refresh seqNum={seq_num} but next increment has "
                f"prevSeqNum={events[0].prevSeqNum} seqNum={events[0].seqNum}"
            )
        self.pending = []
        self.synced, self.prev, self.bridging = True, seq_num, True
        return [t for t in events if self.push(t)]

    def push(self, tick: MbpTick) -> bool:
        """True: apply it; False: already in the refresh (or buffered, when not synced).
        Raises SequenceGap when the chain breaks."""
        if not self.synced:
            self.buffer(tick)
            return False
        if self.bridging:
            if tick.seqNum <= self.prev:  # sent before the refresh was taken
                return False
            self.bridging = False
        if tick.prevSeqNum != self.prev:
            raise SequenceGap(f"prevSeqNum={tick.prevSeqNum} but previous seqNum={self.prev}")
        self.prev = tick.seqNum
        return True


class FullBookDiff:
    """The last full-book push of one market and the difference of each new one (pure)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.version: int | None = None

    @property
    def synced(self) -> bool:
        return self.version is not None

    def load(self, tick: DepthTick) -> None:
        """Take ``tick`` as the snapshot."""
        self.bids = {p: q for p, q in tick.bids if q > 0}
        self.asks = {p: q for p, q in tick.asks if q > 0}
        self.version = tick.version

    def changes(self, tick: DepthTick) -> tuple[list[Level], list[Level]] | None:
        """The level changes from the held book to ``tick`` (which becomes the held book);
        None for a repeated version. Raises VersionRegressed for an older one."""
        if tick.version == self.version:
            return None
        if tick.version < self.version:
            raise VersionRegressed(f"version {tick.version} after {self.version}")
        self.version = tick.version
        bids, self.bids = _side_changes(self.bids, tick.bids)
        asks, self.asks = _side_changes(self.asks, tick.asks)
        return bids, asks


def _side_changes(
    old: dict[float, float], levels: list[Level]
) -> tuple[list[Level], dict[float, float]]:
    new = {p: q for p, q in levels if q > 0}
    get = old.get
    out = [(p, q) for p, q in new.items() if get(p) != q]
    out += [(p, 0.0) for p in old if p not in new]
    return out, new


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

    async def run(self) -> None:
        decode = msgspec.json.Decoder(self.message_type, strict=False).decode
        while True:
            try:
                async with self.session.ws_connect(self.url, timeout=_WS_TIMEOUT) as ws:
                    await self.on_open(ws)
                    await ws.send_str(_encode({"sub": self.topic, "id": self.next_id()}).decode())
                    while True:
                        msg = await ws.receive(timeout=self.silence)
                        if msg.type is aiohttp.WSMsgType.BINARY:
                            m = decode(gunzip(msg.data))
                        elif msg.type is aiohttp.WSMsgType.TEXT:
                            m = decode(msg.data)
                        else:
                            raise ConnectionError(f"upstream sent {msg.type.name}")
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


class _DepthBookFeed(_Stream):
    message_type = DepthMessage

    def __init__(self, session, url, topic, sink: BookSink, market: str, silence: float):
        super().__init__(session, url, topic, silence)
        self.sink, self.market = sink, market
        self.diff = FullBookDiff()

    async def on_open(self, ws) -> None:
        self.diff.reset()

    def on_drop(self, reason: str) -> None:
        self.sink.on_resync(reason)

    async def on_message(self, ws, m: DepthMessage) -> None:
        tick = m.tick
        if tick is None:  # sub acknowledgement
            return
        ts = tick.ts or m.ts
        diff = self.diff
        if diff.synced:
            try:
                changes = diff.changes(tick)
            except VersionRegressed as exc:
                self.sink.on_resync(str(exc))
            else:
                if changes is not None and (changes[0] or changes[1]):
                    self.sink.on_update(tick.version, ts, *changes)
                return
        diff.load(tick)
        self.attempt = 0
        book = _book(self.market, diff.bids.items(), diff.asks.items(), tick.version, ts)
        self.sink.on_snapshot(book)


class _TradeFeed(_Stream):
    message_type = TradeMessage

    def __init__(self, session, url, topic, sink: TradeSink, silence: float):
        super().__init__(session, url, topic, silence)
        self.sink = sink

    async def on_message(self, ws, m: TradeMessage) -> None:
        if m.tick is not None and m.tick.data:
            self.attempt = 0
            self.sink.on_trades([d.to_trade() for d in m.tick.data])


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
