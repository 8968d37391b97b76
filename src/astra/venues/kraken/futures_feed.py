"""Kraken Futures market data over WebSocket v1 (``wss://futures.kraken.com/ws/v1``): the
``book`` feed kept honest by its per-product sequence numbers, and the ``trade`` feed, many
products per connection.

Integrity rule, per product (Kraken's ``book`` feed docs):
- ``{"event": "subscribe", "feed": "book", "product_ids": [...]}`` answers, per product, a
  ``book_snapshot`` (the whole book and the product's sequence number ``seq``), then one
  ``book`` message per changed level: ``side`` (``buy`` = bid, ``sell`` = ask), ``price`` and
  the level's absolute ``qty`` (0 deletes it), with ``seq`` increasing by exactly 1 per
  product: the first delta after a snapshot carries the snapshot's ``seq + 1``.
- A delta whose ``seq`` is not the previous one + 1 (a gap, or a repeat) means a message was
  lost: the sink gets ``on_resync``, *that product* is unsubscribed and resubscribed on the
  same connection for a fresh ``book_snapshot`` (the other products there carry on), and
  every delta is dropped until it arrives. Repeated gaps back off before resubscribing.
- No snapshot within ``silence`` of subscribing resubscribes that product. A
  ``subscribed_failed`` resyncs it and retries with backoff; ``error``/``alert`` events name
  no product (``Invalid product id``), so they are logged and the watchdog covers them.
- Liveness: every connection subscribes the ``heartbeat`` feed (a message at a regular
  interval) and sends a WebSocket ping every ``ping_interval`` (Kraken closes connections
  not pinged for 60 s). No frame for ``silence`` seconds, a dropped connection or a frame
  that does not decode reconnects with exponential backoff; every product on it resyncs.
- ``update_id`` given to the sink is Kraken's ``seq``; timestamps are Kraken's (ms).

Trades: a ``trade_snapshot`` (recent trades, newest first) then one ``trade`` per match.
Trade ``seq`` numbers are per product and increasing: trades are forwarded once, in ``seq``
order, across reconnects; the snapshot of the first subscription is history and is not
forwarded, a later one fills the gap a reconnect left.

Multiplexing: a ``FuturesPool`` puts up to ``MAX_SUBSCRIPTIONS_PER_CONNECTION`` (feed,
product) subscriptions on one connection and opens another when full (see ``stream.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
import msgspec

from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book

from .futures_schemas import (
    BookDelta,
    BookSnapshot,
    Event,
    FeedMessage,
    Trade,
    TradeSnapshot,
)
from .futures_symbols import KrakenFuturesMarket
from .stream import Dialect, Key, KrakenStream, StreamPool
from .subscription import BookSubscription, TradeSubscription

__all__ = [
    "MAX_PRODUCTS_PER_REQUEST",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "FuturesDialect",
    "FuturesPool",
]

log = logging.getLogger(__name__)

# Kraken documents no per-connection cap for the futures feeds either; every ``book``
# delta is its own frame, so a connection's message rate grows with each product. 50 keeps
# one socket (and what one reconnect resyncs) moderate; past it the pool opens another.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 50
MAX_PRODUCTS_PER_REQUEST = 25  # product_ids named in one subscribe/unsubscribe request
_DATA_FEEDS = frozenset({"book", "book_snapshot", "trade", "trade_snapshot"})

_decode_feed = msgspec.json.Decoder(FeedMessage).decode
_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FuturesDialect(Dialect):
    """Kraken Futures v1: ``{"event", "feed", "product_ids"}`` requests, ``feed``-tagged data,
    ``event`` replies; the ``heartbeat`` feed and WebSocket pings keep it alive."""

    name = "kraken futures"

    def opening(self) -> list[str]:
        return [_encode({"event": "subscribe", "feed": "heartbeat"}).decode()]

    def requests(self, stream: KrakenStream, op: str, keys: list[Key]) -> list[str]:
        by_feed: dict[str, list[str]] = {}
        for feed, product in keys:
            by_feed.setdefault(feed, []).append(product)
        frames = []
        for feed, products in by_feed.items():
            for i in range(0, len(products), MAX_PRODUCTS_PER_REQUEST):
                chunk = products[i : i + MAX_PRODUCTS_PER_REQUEST]
                request = {"event": op, "feed": feed, "product_ids": chunk}
                frames.append(_encode(request).decode())
        return frames

    def route(self, data: str, stream: KrakenStream) -> None:
        try:
            message = _decode_feed(data)
        except msgspec.ValidationError:
            self._on_event(_decode_event(data), stream)
            return
        kind = type(message)
        if kind is BookDelta:
            stream.deliver(("book", message.product_id), "update", message)
        elif kind is BookSnapshot:
            stream.deliver(("book", message.product_id), "snapshot", message)
        elif kind is Trade:
            stream.deliver(("trade", message.product_id), "update", message)
        elif kind is TradeSnapshot:
            stream.deliver(("trade", message.product_id), "snapshot", message.trades)
        # Heartbeat: proof of life only (the receive timeout is what watches for silence)

    def _on_event(self, event: Event, stream: KrakenStream) -> None:
        if not event.event:
            if event.feed in _DATA_FEEDS:  # our data, but not in the documented shape
                raise ValueError(f"undecodable {event.feed} message")
            return  # a feed we never asked for
        if event.event == "subscribed_failed":
            products = event.product_ids or []
            reason = event.message or "subscribed_failed"
            stream.reject([(event.feed or "", p) for p in products], reason)
            if not products:
                log.warning("kraken futures: subscription to %s refused", event.feed)
        elif event.event == "subscribed":
            stream.confirm([(event.feed or "", p) for p in event.product_ids or []])
        elif event.event in ("error", "alert", "unsubscribed_failed"):
            log.warning("kraken futures %s: %s (%s)", event.event, event.message, event.feed)
        elif event.event == "info":
            log.info("kraken futures: connected (api version %s)", event.version)

    async def ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.ping()


class FuturesBook(BookSubscription):
    """One product's sequenced book."""

    def __init__(self, pool: StreamPool, market: KrakenFuturesMarket, sink: BookSink) -> None:
        super().__init__(pool, ("book", market.product_id), market.symbol, sink, pool.silence)
        self.market = market
        self.seq = 0

    def on_message(self, kind: str, data: BookSnapshot | BookDelta) -> None:
        if kind == "snapshot":
            bids, asks = data.to_changes()
            book = L2Book(self.market.symbol)
            book.reset(bids, asks, data.seq, data.timestamp or _now_ms())
            self.seq = data.seq
            self.accepted()
            self.sink.on_snapshot(book)
        elif self.synced:
            seq = data.seq
            if seq != self.seq + 1:
                self.resync(f"{self.market.symbol}: book seq {seq} after {self.seq}")
                return
            self.seq = seq
            self.failures = 0
            bids, asks = data.to_changes()
            self.sink.on_update(seq, data.timestamp or _now_ms(), bids, asks)


class FuturesTrades(TradeSubscription):
    """One product's trades, each forwarded once (by ``seq``) across reconnects."""

    def __init__(self, pool: StreamPool, market: KrakenFuturesMarket, sink: TradeSink) -> None:
        super().__init__(pool, ("trade", market.product_id), market.symbol, sink)
        self.last_seq: int | None = None

    def on_message(self, kind: str, data: list[Trade] | Trade) -> None:
        self.failures = 0
        last = self.last_seq
        if kind == "snapshot":
            if not data:
                return
            fresh = sorted((t for t in data if last is None or t.seq > last), key=_seq)
            top = max(t.seq for t in data)
            self.last_seq = top if last is None else max(last, top)
            if last is not None and fresh:
                self.sink.on_trades([t.to_trade() for t in fresh])
            return
        if last is not None and data.seq <= last:
            return
        self.last_seq = data.seq
        self.sink.on_trades([data.to_trade()])


def _seq(trade: Trade) -> int:
    return trade.seq


class FuturesPool(StreamPool):
    """The futures v1 connections of one venue: every product's book and trades."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        *,
        silence: float = 30.0,
        capacity: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
    ) -> None:
        super().__init__(
            session,
            url,
            FuturesDialect(),
            capacity=capacity,
            silence=silence,
            ping_interval=max(1.0, min(30.0, silence / 2)),
        )
        self.silence = silence

    async def run_book(self, market: KrakenFuturesMarket, sink: BookSink) -> None:
        await FuturesBook(self, market, sink).run()

    async def run_trades(self, market: KrakenFuturesMarket, sink: TradeSink) -> None:
        await FuturesTrades(self, market, sink).run()
