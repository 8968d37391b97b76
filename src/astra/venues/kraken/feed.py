"""Kraken spot market data over WebSocket v2 (``wss://ws.kraken.com/v2``): the ``book`` channel
kept honest by its CRC32 checksum, and the ``trade`` channel, many pairs per connection.

Integrity rule (Kraken's documented procedure), per pair:
- Subscribe to ``book`` at a depth of 10/25/100/500/1000; the first message is a
  ``snapshot``, then ``update``s with absolute quantities (0 removes a level). Kraken sends
  no sequence numbers: the only integrity check is the checksum in *every* message.
- After each message, apply all its levels in order, then truncate each side to the
  subscribed depth (Kraken sends no deletes for levels pushed out of scope; the truncated
  levels are forwarded to the sink as deletes so its book matches), then compare the CRC32
  of the top 10 levels with the message's ``checksum`` (``book.py`` builds the string from
  the pair's precision: v2 sends numbers as JSON numbers, v1 sent the text itself).
- A mismatch (in a snapshot or an update), or a message the book refuses (a price not finite
  or not > 0, a quantity not finite, a malformed timestamp: ``ValueError``, raised before
  the book changes), means the book cannot be trusted: the sink gets
  ``on_resync``, *that pair* is unsubscribed and resubscribed on the same connection (the
  other pairs there carry on), every update is dropped until the new snapshot, and the sink
  gets ``on_snapshot`` once that snapshot's checksum holds. Repeated failures back off.
- No snapshot within ``silence`` of subscribing resubscribes that pair; a refused
  subscription (``success: false``) resyncs it and retries with backoff. A dropped connection,
  or silence longer than ``silence`` on it (Kraken sends a heartbeat about every second while
  subscribed), reconnects with exponential backoff and every pair on it resyncs.

Multiplexing: a ``SpotPool`` puts up to ``MAX_SUBSCRIPTIONS_PER_CONNECTION`` (channel, pair)
subscriptions on one connection and opens another when full (see ``stream.py``); requests are
batched, up to ``MAX_SYMBOLS_PER_REQUEST`` pairs each. Replies to a subscribe carry its
``req_id``, which is how a refusal is traced back to its pairs.

Kraken has no update ids; ``update_id`` given to the sink counts applied messages per feed
(monotonic across resyncs). Floats hold the wire values exactly for up to 15 significant
digits; beyond that a checksum can fail falsely, which resyncs (never drifts).

The book is ``book.KrakenBook``: compiled (``_krakenbook.c``) where it is built, else the
pure-Python reference; ``IMPLEMENTATION`` says which (``ASTRA_NATIVE=0`` forces Python).

Kraken Futures (PERP/FUT) speak another protocol with another integrity rule (per-product
``seq``): see ``futures_feed.py``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

import aiohttp
import msgspec

from astra.venues.base import BookSink, TradeSink

from .book import IMPLEMENTATION, ChecksumMismatch, KrakenBook, checksum_of
from .schemas import (
    BookData,
    BookMessage,
    ChannelMessage,
    MethodResponse,
    StatusMessage,
    TradeData,
    TradeMessage,
)
from .stream import Dialect, Key, KrakenStream, StreamPool
from .subscription import BookSubscription, TradeSubscription
from .symbols import KrakenMarket

__all__ = [
    "BOOK_DEPTHS",
    "IMPLEMENTATION",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "MAX_SYMBOLS_PER_REQUEST",
    "ChecksumMismatch",
    "KrakenBook",
    "SpotDialect",
    "SpotPool",
    "checksum_of",
    "run_book_feed",
]

log = logging.getLogger(__name__)

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
# Kraken documents no hard cap on subscriptions per v2 connection, only rate limits on
# connecting and on requests. 50 keeps one socket's burst (a depth-1000 snapshot per pair on
# every reconnect) moderate and bounds what a single dropped connection resyncs; past it the
# pool opens another connection.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 50
MAX_SYMBOLS_PER_REQUEST = 25  # pairs named in one subscribe/unsubscribe request

_decode_channel = msgspec.json.Decoder(ChannelMessage).decode
_decode_response = msgspec.json.Decoder(MethodResponse).decode
_encode = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SpotDialect(Dialect):
    """Kraken v2: ``{"method", "params": {"channel", "symbol": [...]}, "req_id"}`` requests,
    ``channel``-tagged data, ``method`` replies; ``{"method": "ping"}`` keeps it alive."""

    name = "kraken v2"

    def __init__(self, depth: int = 1000) -> None:
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {BOOK_DEPTHS}, not {depth}")
        self.depth = depth
        self._req_ids = itertools.count(1)

    def requests(self, stream: KrakenStream, op: str, keys: list[Key]) -> list[str]:
        by_channel: dict[str, list[str]] = {}
        for channel, symbol in keys:
            by_channel.setdefault(channel, []).append(symbol)
        frames = []
        for channel, symbols in by_channel.items():
            for i in range(0, len(symbols), MAX_SYMBOLS_PER_REQUEST):
                chunk = symbols[i : i + MAX_SYMBOLS_PER_REQUEST]
                params: dict = {"channel": channel, "symbol": chunk}
                if channel == "book":
                    params["depth"] = self.depth
                if op == "subscribe":
                    params["snapshot"] = True
                req_id = next(self._req_ids)
                if op == "subscribe":
                    stream.pending[req_id] = [(channel, s) for s in chunk]
                frames.append(_encode({"method": op, "params": params, "req_id": req_id}).decode())
        return frames

    def route(self, data: str, stream: KrakenStream) -> None:
        try:
            message = _decode_channel(data)
        except msgspec.ValidationError:
            self._on_response(_decode_response(data), stream)
            return
        kind = type(message)
        if kind is BookMessage:
            for item in message.data:
                stream.deliver(("book", item.symbol), message.type, item)
        elif kind is TradeMessage:
            trades = message.data
            if trades and all(t.symbol == trades[0].symbol for t in trades):
                stream.deliver(("trade", trades[0].symbol), message.type, trades)
            else:
                for symbol in dict.fromkeys(t.symbol for t in trades):
                    mine = [t for t in trades if t.symbol == symbol]
                    stream.deliver(("trade", symbol), message.type, mine)
        elif kind is StatusMessage:
            for item in message.data:
                log.info("kraken status: %s (api %s)", item.system, item.api_version)
        # Heartbeat: proof of life only (the receive timeout is what watches for silence)

    def _on_response(self, response: MethodResponse, stream: KrakenStream) -> None:
        if response.channel in ("book", "trade"):  # data, but not in the documented shape
            raise ValueError(f"undecodable {response.channel} message")
        if response.method != "subscribe":
            if response.success is False:
                log.warning("kraken v2 %s refused: %s", response.method, response.error)
            return
        keys = stream.pending.get(response.req_id, []) if response.req_id is not None else []
        if response.success:
            symbol = (response.result or {}).get("symbol")
            stream.confirm([k for k in keys if k[1] == symbol])
            left = [k for k in keys if k[1] != symbol]
            if left:
                stream.pending[response.req_id] = left
            else:
                stream.pending.pop(response.req_id, None)
            return
        # A refusal names its pair in the text at best (``Currency pair not supported XBT/XYZ``)
        error = response.error or "refused"
        named = [k for k in keys if k[1] == response.symbol or k[1] in error]
        refused = named or keys
        if response.req_id is not None:
            stream.pending[response.req_id] = [k for k in keys if k not in refused]
        stream.reject(refused, error)

    async def ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(_encode({"method": "ping", "req_id": next(self._req_ids)}).decode())


class SpotBook(BookSubscription):
    """One pair's checksummed v2 book."""

    def __init__(self, pool: StreamPool, market: KrakenMarket, depth: int, sink: BookSink) -> None:
        super().__init__(pool, ("book", market.ws_symbol), market.symbol, sink, pool.silence)
        self.market = market
        self.book = KrakenBook(depth, market.price_decimals, market.qty_decimals)
        self.update_id = 0

    def on_message(self, kind: str, data: BookData) -> None:
        book = self.book
        if kind != "snapshot":
            if not self.synced:
                return
            try:  # timestamp, levels applied and truncated, checksum verified: one call
                bids, asks, timestamp = book.update(data)
            except (ChecksumMismatch, ValueError) as exc:  # a level or timestamp refused
                self.resync(f"{self.market.symbol}: {exc}")
                return
            self.failures = 0
            self.update_id = update_id = self.update_id + 1
            # The clock only when the venue sent no time (update gives 0 then).
            self.sink.on_update(update_id, timestamp or _now_ms(), bids, asks)
            return
        try:
            timestamp = book.snapshot(data)
        except (ChecksumMismatch, ValueError) as exc:
            self.resync(f"{self.market.symbol}: {exc}")
            return
        self.update_id += 1
        self.accepted()
        self.sink.on_snapshot(
            book.to_l2book(self.market.symbol, self.update_id, timestamp or _now_ms())
        )


class SpotTrades(TradeSubscription):
    """One pair's v2 trades, without duplicates across reconnects (ids are sequential per
    pair). The snapshot (last 50 trades) fills a reconnect's gap; on the first subscription
    it is history, so it only sets the starting id."""

    def __init__(self, pool: StreamPool, market: KrakenMarket, sink: TradeSink) -> None:
        super().__init__(pool, ("trade", market.ws_symbol), market.symbol, sink)
        self.last_id: int | None = None

    def on_message(self, kind: str, data: list[TradeData]) -> None:
        self.failures = 0
        last = self.last_id
        fresh = [t for t in data if last is None or t.trade_id > last]
        if not fresh:
            return
        self.last_id = max(t.trade_id for t in fresh)
        if kind == "snapshot" and last is None:
            return
        self.sink.on_trades([t.to_trade() for t in fresh])


class SpotPool(StreamPool):
    """The v2 connections of one venue: every pair's book and trades, multiplexed."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        *,
        depth: int = 1000,
        silence: float = 30.0,
        capacity: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
    ) -> None:
        super().__init__(
            session,
            url,
            SpotDialect(depth),
            capacity=capacity,
            silence=silence,
            ping_interval=max(1.0, silence / 2),
        )
        self.depth, self.silence = depth, silence

    async def run_book(self, market: KrakenMarket, sink: BookSink) -> None:
        await SpotBook(self, market, self.depth, sink).run()

    async def run_trades(self, market: KrakenMarket, sink: TradeSink) -> None:
        await SpotTrades(self, market, sink).run()


async def run_book_feed(
    session: aiohttp.ClientSession,
    url: str,
    market: KrakenMarket,
    sink: BookSink,
    *,
    depth: int = 1000,
    silence: float = 30.0,
) -> None:
    """Keep ``sink`` supplied with ``market``'s checksummed book from Kraken v2 at ``url``, on
    a connection of its own (the venue shares one ``SpotPool`` between its markets)."""
    pool = SpotPool(lambda: session, url, depth=depth, silence=silence)
    try:
        await pool.run_book(market, sink)
    finally:
        await pool.close()
