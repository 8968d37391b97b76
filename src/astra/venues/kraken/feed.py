"""Kraken WebSocket v2 market data: the ``book`` channel kept honest by its CRC32 checksum,
and the ``trade`` channel.

Integrity rule (Kraken's documented procedure), per market:
- Subscribe to ``book`` at a depth of 10/25/100/500/1000; the first message is a
  ``snapshot``, then ``update``s with absolute quantities (0 removes a level). Kraken sends
  no sequence numbers: the only integrity check is the checksum in *every* message.
- After each message, apply all its levels in order, then truncate each side to the
  subscribed depth (Kraken sends no deletes for levels pushed out of scope; the truncated
  levels are forwarded to the sink as deletes so its book matches), then compare the CRC32
  of the top 10 levels with the message's ``checksum``.
- The checksum string is, for the 10 best asks (low to high) then the 10 best bids (high to
  low), price then quantity, each written with the pair's precision (price: ``pair_decimals``
  places, quantity: ``lot_decimals``), the ``.`` removed and leading zeros stripped, all
  concatenated; the value is ``zlib.crc32`` of it, unsigned 32-bit. v2 sends numbers as JSON
  numbers, so the text is rebuilt from the market precision; v1 sent the text itself.
- A mismatch (in a snapshot or an update) means the book cannot be trusted: the sink gets
  ``on_resync``, the feed unsubscribes and resubscribes on the same connection, drops every
  update until the new snapshot, and the sink gets ``on_snapshot`` once that snapshot's
  checksum holds. Repeated failures back off before resubscribing.
- A dropped connection, a rejected subscription, silence longer than ``silence`` (Kraken
  sends a heartbeat about every second), or no snapshot within ``silence`` of subscribing
  reconnects with exponential backoff, and the book resyncs from scratch.

Kraken has no update ids; ``update_id`` given to the sink counts applied messages per feed
(monotonic across resyncs). Floats hold the wire values exactly for up to 15 significant
digits; beyond that a checksum can fail falsely, which resyncs (never drifts).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from bisect import bisect_left
from collections.abc import Iterable

import aiohttp
import msgspec

from astra.marketdata.book import L2Book
from astra.venues.base import BookSink, TradeSink
from astra.venues.retry import backoff as _backoff

from .schemas import (
    BookData,
    BookMessage,
    ChannelMessage,
    Heartbeat,
    MethodResponse,
    StatusMessage,
    TradeMessage,
)
from .symbols import KrakenMarket

__all__ = [
    "BOOK_DEPTHS",
    "ChecksumMismatch",
    "KrakenBook",
    "NoSnapshot",
    "SubscriptionRejected",
    "checksum_of",
    "run_book_feed",
    "run_trade_feed",
]

log = logging.getLogger(__name__)

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
_CHECKSUM_LEVELS = 10
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
# What a feed survives by reconnecting: network failures, silence, and garbage on the wire.
_FEED_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError, msgspec.DecodeError, ValueError)
_decode_channel = msgspec.json.Decoder(ChannelMessage).decode
_decode_response = msgspec.json.Decoder(MethodResponse).decode
_encode = msgspec.json.Encoder().encode

Levels = list[tuple[float, float]]


class ChecksumMismatch(Exception):
    """The rebuilt book's top 10 levels do not hash to the venue's checksum."""


class NoSnapshot(ConnectionError):
    """Subscribed (the connection is alive) but no snapshot came: reconnect."""


class SubscriptionRejected(ConnectionError):
    """Kraken refused a subscription (unknown pair, bad depth): reconnect with backoff."""


def _fragment(value: float, fmt: str) -> str:
    return format(value, fmt).replace(".", "").lstrip("0")


def checksum_of(
    asks: Iterable[tuple[float, float]],
    bids: Iterable[tuple[float, float]],
    price_decimals: int,
    qty_decimals: int,
) -> int:
    """Kraken's CRC32 over the given best asks (ascending) then best bids (descending)."""
    pf, qf = f".{price_decimals}f", f".{qty_decimals}f"
    text = "".join(_fragment(p, pf) + _fragment(q, qf) for p, q in asks)
    text += "".join(_fragment(p, pf) + _fragment(q, qf) for p, q in bids)
    return zlib.crc32(text.encode())


class KrakenBook:
    """The venue's view of one book: at most ``depth`` levels a side, float keys, kept with a
    sorted key list per side (bids negated) so truncation and the top 10 cost no sort.

    The checksum is cached until a change lands in the top 10 (most updates are deeper), and
    each top level's checksum text is cached until that level changes."""

    __slots__ = (
        "_ask_keys",
        "_ask_text",
        "_bid_keys",
        "_bid_text",
        "_checksum",
        "_pf",
        "_qf",
        "asks",
        "bids",
        "depth",
    )

    def __init__(self, depth: int, price_decimals: int, qty_decimals: int) -> None:
        self.depth = depth
        self._pf, self._qf = f".{price_decimals}f", f".{qty_decimals}f"
        self.reset([], [])

    def reset(self, bids: Levels, asks: Levels) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # -price, ascending: best bid first
        self._ask_keys: list[float] = []  # price, ascending: best ask first
        self._bid_text: dict[float, str] = {}  # price -> its checksum text
        self._ask_text: dict[float, str] = {}
        self._checksum: int | None = None
        self.apply(bids, asks)

    def apply(self, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        """Apply one message's levels in order, then truncate to ``depth``. Returns the
        changes to forward: the given lists, plus a delete per level truncated away."""
        if bids:
            self._apply_side(self.bids, self._bid_keys, self._bid_text, bids, -1.0)
        if asks:
            self._apply_side(self.asks, self._ask_keys, self._ask_text, asks, 1.0)
        return bids, asks

    def _apply_side(self, side: dict, keys: list, text: dict, changes: Levels, sign: float) -> None:
        top = len(keys) < _CHECKSUM_LEVELS  # a short side: any change is in its top 10
        for p, q in changes:
            k = p * sign
            if q > 0:
                i = bisect_left(keys, k)
                if p not in side:
                    keys.insert(i, k)
                side[p] = q
            elif p in side:
                del side[p]
                i = bisect_left(keys, k)
                del keys[i]
            else:
                continue  # deleting an absent level: nothing changed
            text.pop(p, None)
            if i < _CHECKSUM_LEVELS:
                top = True
        if top:
            self._checksum = None
        if len(keys) > self.depth:  # the tail only: the top 10 stays as it is
            for k in keys[self.depth :]:
                p = k * sign
                del side[p]
                text.pop(p, None)
                changes.append((p, 0.0))
            del keys[self.depth :]

    def top(self, n: int = _CHECKSUM_LEVELS) -> tuple[Levels, Levels]:
        bids, asks = self.bids, self.asks
        return (
            [(-k, bids[-k]) for k in self._bid_keys[:n]],
            [(k, asks[k]) for k in self._ask_keys[:n]],
        )

    def checksum(self) -> int:
        if self._checksum is not None:
            return self._checksum
        pf, qf, parts = self._pf, self._qf, []
        for keys, side, text, sign in (
            (self._ask_keys, self.asks, self._ask_text, 1.0),
            (self._bid_keys, self.bids, self._bid_text, -1.0),
        ):
            for k in keys[:_CHECKSUM_LEVELS]:
                p = k * sign
                t = text.get(p)
                if t is None:
                    t = text[p] = _fragment(p, pf) + _fragment(side[p], qf)
                parts.append(t)
        self._checksum = value = zlib.crc32("".join(parts).encode())
        return value

    def verify(self, expected: int) -> None:
        got = self.checksum()
        if got != expected:
            raise ChecksumMismatch(f"checksum {got} != venue's {expected}")

    def to_l2book(self, market: str, update_id: int, timestamp: int) -> L2Book:
        """A copy for the sink: the feed keeps mutating its own book."""
        book = L2Book(market)
        book.reset(self.bids.items(), self.asks.items(), update_id, timestamp)
        return book


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Stream:
    """One WebSocket connection subscribed to one channel of one pair, reconnecting."""

    channel = ""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, market: KrakenMarket, silence: float
    ) -> None:
        self.session, self.url, self.market, self.silence = session, url, market, silence
        self.ping_interval = max(1.0, silence / 2)
        self._req_ids = itertools.count(1)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._last_ping = 0.0
        self.attempt = 0

    def params(self) -> dict:
        return {"channel": self.channel, "symbol": [self.market.ws_symbol]}

    async def _send(self, method: str, params: dict | None = None) -> None:
        request: dict = {"method": method, "req_id": next(self._req_ids)}
        if params is not None:
            request["params"] = params
        await self.ws.send_str(_encode(request).decode())

    async def subscribe(self) -> None:
        await self._send("subscribe", self.params())

    def on_disconnect(self, reason: str) -> None:
        """The connection is gone (or about to be replaced)."""

    async def on_channel(self, message: ChannelMessage) -> None:
        raise NotImplementedError

    def check(self, now: float) -> None:
        """Per-message watchdog hook (raise to reconnect)."""

    def on_subscribed(self) -> None:
        """Kraken acknowledged the subscription."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self.session.ws_connect(self.url, timeout=_WS_TIMEOUT) as ws:
                    self.ws = ws
                    self._last_ping = loop.time()
                    await self.subscribe()
                    while True:
                        msg = await ws.receive(timeout=self.silence)
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            raise ConnectionError(f"upstream sent {msg.type.name}")
                        await self._on_text(msg.data)
                        now = loop.time()
                        self.check(now)
                        if now - self._last_ping >= self.ping_interval:
                            self._last_ping = now  # Kraken answers with a pong; proof of life
                            await self._send("ping")
            except _FEED_ERRORS as exc:
                reason = "silent for too long" if type(exc) is TimeoutError else repr(exc)
                self.on_disconnect(f"reconnecting: {reason}")
                log.info("kraken %s %s: %s", self.channel, self.market.ws_symbol, reason)
                await asyncio.sleep(_backoff(self.attempt))
                self.attempt += 1
            finally:
                self.ws = None

    async def _on_text(self, data: str) -> None:
        try:
            message = _decode_channel(data)
        except msgspec.ValidationError:
            self._on_response(_decode_response(data))
            return
        if type(message) is Heartbeat:
            return
        if type(message) is StatusMessage:
            for item in message.data:
                log.info("kraken status: %s (api %s)", item.system, item.api_version)
            return
        await self.on_channel(message)

    def _on_response(self, response: MethodResponse) -> None:
        if response.channel == self.channel:  # our channel, but not in the documented shape
            raise ValueError(f"undecodable {self.channel} message")
        if response.method == "subscribe" and response.success is False:
            raise SubscriptionRejected(f"subscribe {self.market.ws_symbol}: {response.error}")
        if response.method == "subscribe" and response.success:
            self.on_subscribed()
        elif response.success is False:
            log.warning("kraken %s %s: %s", response.method, self.market.ws_symbol, response.error)


class _BookFeed(_Stream):
    channel = "book"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        market: KrakenMarket,
        depth: int,
        sink: BookSink,
        silence: float,
    ) -> None:
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {BOOK_DEPTHS}, not {depth}")
        super().__init__(session, url, market, silence)
        self.depth, self.sink = depth, sink
        self.book = KrakenBook(depth, market.price_decimals, market.qty_decimals)
        self.synced = False
        self.update_id = 0
        self.failures = 0  # consecutive checksum failures: resubscriptions back off
        self._subscribed_at: float | None = None

    def params(self) -> dict:
        return {**super().params(), "depth": self.depth, "snapshot": True}

    async def subscribe(self) -> None:
        self.synced = False
        self._subscribed_at = asyncio.get_running_loop().time()
        await super().subscribe()

    def on_disconnect(self, reason: str) -> None:
        self.synced = False
        self.sink.on_resync(reason)

    def check(self, now: float) -> None:
        if not self.synced and self._subscribed_at is not None:
            if now - self._subscribed_at > self.silence:
                raise NoSnapshot(f"no book snapshot {self.silence:g} s after subscribing")

    async def on_channel(self, message: ChannelMessage) -> None:
        if type(message) is not BookMessage:
            return
        for data in message.data:
            if data.symbol != self.market.ws_symbol:
                continue
            try:
                if message.type == "snapshot":
                    self._on_snapshot(data)
                elif self.synced:
                    self._on_update(data)
            except ChecksumMismatch as exc:
                await self._resubscribe(f"{self.market.symbol}: {exc}")

    def _on_snapshot(self, data: BookData) -> None:
        book = self.book
        book.reset(*data.to_changes())
        book.verify(data.checksum)
        self.update_id += 1
        self.synced, self.attempt = True, 0
        self.sink.on_snapshot(
            book.to_l2book(self.market.symbol, self.update_id, data.timestamp_ms(_now_ms()))
        )

    def _on_update(self, data: BookData) -> None:
        bids, asks = self.book.apply(*data.to_changes())
        self.book.verify(data.checksum)
        self.failures = 0
        self.update_id += 1
        self.sink.on_update(self.update_id, data.timestamp_ms(_now_ms()), bids, asks)

    async def _resubscribe(self, reason: str) -> None:
        self.synced = False
        self.sink.on_resync(reason)
        log.warning("kraken book resync: %s", reason)
        self.failures += 1
        if self.failures > 1:  # the fresh snapshot failed too: don't hammer the venue
            await asyncio.sleep(_backoff(self.failures - 2))
        await self._send("unsubscribe", {**super().params(), "depth": self.depth})
        await self.subscribe()


class _TradeFeed(_Stream):
    channel = "trade"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        market: KrakenMarket,
        sink: TradeSink,
        silence: float,
    ) -> None:
        super().__init__(session, url, market, silence)
        self.sink = sink
        self.last_id: int | None = None  # trade ids are sequential per pair

    def params(self) -> dict:
        # The snapshot (last 50 trades) fills a reconnect's gap; on the first connection it is
        # history, so it only sets the starting id.
        return {**super().params(), "snapshot": True}

    def on_subscribed(self) -> None:
        self.attempt = 0  # a book resets it on a verified snapshot instead

    async def on_channel(self, message: ChannelMessage) -> None:
        if type(message) is not TradeMessage:
            return
        last, symbol = self.last_id, self.market.ws_symbol
        fresh = [
            t for t in message.data if t.symbol == symbol and (last is None or t.trade_id > last)
        ]
        if not fresh:
            return
        self.last_id = max(t.trade_id for t in fresh)
        if message.type == "snapshot" and last is None:
            return
        self.sink.on_trades([t.to_trade() for t in fresh])


async def run_book_feed(
    session: aiohttp.ClientSession,
    url: str,
    market: KrakenMarket,
    sink: BookSink,
    *,
    depth: int = 1000,
    silence: float = 30.0,
) -> None:
    """Keep ``sink`` supplied with ``market``'s checksummed book from Kraken v2 at ``url``."""
    await _BookFeed(session, url, market, depth, sink, silence).run()


async def run_trade_feed(
    session: aiohttp.ClientSession,
    url: str,
    market: KrakenMarket,
    sink: TradeSink,
    *,
    silence: float = 30.0,
) -> None:
    """Forward ``market``'s v2 ``trade`` updates to ``sink``, without duplicates across
    reconnects (trade ids are sequential per pair)."""
    await _TradeFeed(session, url, market, sink, silence).run()
