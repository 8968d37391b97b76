"""The market-data engine: one upstream subscription per (market, channel), shared by every
client, with a local synced book per market and encode-once fan-out.

Invariants:
- At most one feed task runs per (market, channel); it starts with the first user (a
  WebSocket client, or a REST read) and stops ``linger`` seconds after the last one leaves.
- Clients of a book only ever see: one full snapshot, then updates that continue it; after
  any resync (gap, checksum, reconnect) a new full snapshot, then updates again. Updates
  that arrive while the book is unsynced are never forwarded (the feed does not emit them).
- Each update is encoded once; the same bytes go to every subscriber's bounded queue, so
  a slow client costs the feed nothing (see ``astra.net.BoundedSender``).
- REST reads are served from the same synced book; a read of an unsynced book waits for the
  next snapshot, bounded by a timeout (then 503).
- Books keep the venue's units (their integrity checks are the venue's); quantities leave
  in base-asset units (``ContractUnits``: contracts converted at encoding, once per update).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

import msgspec

from astra.core import (
    BookUpdate,
    ContractUnits,
    DataType,
    Level,
    MarketMetadata,
    MarketNotFound,
    OrderBook,
    Trade,
    TradesMessage,
    UnknownExchange,
    VenueTimeout,
    VenueUnavailable,
    parse_market,
)
from astra.venues.base import Venue, VenueMarket

from .book import L2Book

__all__ = ["Client", "MarketDataEngine"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class Client(Protocol):
    def deliver(self, frame: bytes) -> None: ...


def _units(market: VenueMarket) -> ContractUnits | None:
    """How this market's venue quantities become base units (None: they already are)."""
    meta = market.metadata
    return ContractUnits.of(meta) if meta is not None else None


def _levels(pairs: list[tuple[float, float]], units: ContractUnits | None) -> list[Level]:
    if units is None:
        return [Level(p, q) for p, q in pairs]
    return [Level(p, units.to_base(q, p)) for p, q in pairs]


class _Channel:
    """A running upstream feed for one (market, channel) and its clients."""

    def __init__(
        self, engine: MarketDataEngine, key: tuple[str, DataType], venue: Venue, market: VenueMarket
    ) -> None:
        self.engine, self.key, self.venue, self.market = engine, key, venue, market
        self.units = _units(market)  # the book keeps the venue's units; clients get base units
        self.clients: set[Client] = set()
        self.refs = 0
        self.task: asyncio.Task | None = None
        self._linger: asyncio.TimerHandle | None = None

    def acquire(self) -> None:
        self.refs += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"feed {self.key}")

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(
                self.engine.linger, self.engine._retire, self
            )

    def touch(self) -> None:
        """A REST read: keep the feed warm for another ``linger`` seconds."""
        self.acquire()
        self.release()

    async def _run(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class _BookChannel(_Channel):
    """BookSink: keeps the synced book and fans its changes out."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.book: L2Book | None = None
        self.synced = asyncio.Event()
        self._snapshot_frame: tuple[int, bytes] | None = None
        self._rest_frames: dict[int | None, tuple[int, bytes]] = {}  # depth -> (id, body)

    def rest_frame(self, depth: int | None) -> bytes:
        """The ``GET /orderbook`` body at this depth, encoded once per book version."""
        book = self.book
        cached = self._rest_frames.get(depth)
        if cached is not None and cached[0] == book.update_id:
            return cached[1]
        bids, asks = book.top(depth)
        body = _encode(
            OrderBook(
                market=self.market.symbol,
                bids=_levels(bids, self.units),
                asks=_levels(asks, self.units),
                update_id=book.update_id,
                timestamp=book.timestamp,
            )
        )
        if len(self._rest_frames) > 16:  # a few depths are used in practice
            self._rest_frames.clear()
        self._rest_frames[depth] = (book.update_id, body)
        return body

    async def _run(self) -> None:
        await self.venue.run_book_feed(self.market, self)

    def snapshot_frame(self) -> bytes:
        book = self.book
        cached = self._snapshot_frame
        if cached is None or cached[0] != book.update_id:
            bids, asks = book.top()
            frame = _encode(
                BookUpdate(
                    type="snapshot",
                    market=self.market.symbol,
                    update_id=book.update_id,
                    bids=_levels(bids, self.units),
                    asks=_levels(asks, self.units),
                    timestamp=book.timestamp,
                )
            )
            cached = self._snapshot_frame = (book.update_id, frame)
        return cached[1]

    def add_client(self, client: Client) -> None:
        self.clients.add(client)
        if self.synced.is_set():
            client.deliver(self.snapshot_frame())

    def on_snapshot(self, book: L2Book) -> None:
        self.book = book
        self._snapshot_frame = None
        self._rest_frames.clear()  # a resync may reuse an update id
        self.synced.set()
        self.engine.stats["snapshots"] += 1
        if self.clients:
            frame = self.snapshot_frame()
            for client in tuple(self.clients):
                client.deliver(frame)

    def on_update(
        self,
        update_id: int,
        timestamp: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None:
        self.book.apply(bids, asks, update_id, timestamp)
        self.engine.stats["book_updates"] += 1
        if self.clients:
            frame = _encode(
                BookUpdate(
                    type="update",
                    market=self.market.symbol,
                    update_id=update_id,
                    bids=_levels(bids, self.units),
                    asks=_levels(asks, self.units),
                    timestamp=timestamp,
                )
            )
            for client in tuple(self.clients):
                client.deliver(frame)

    def on_resync(self, reason: str) -> None:
        self.synced.clear()
        self.engine.stats["resyncs"] += 1
        log.info("%s: resync (%s)", self.market.symbol, reason)


class _TradeChannel(_Channel):
    """TradeSink: trades arriving in one loop iteration go out as one batch."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._pending: list[Trade] = []

    async def _run(self) -> None:
        await self.venue.run_trade_feed(self.market, self)

    def add_client(self, client: Client) -> None:
        self.clients.add(client)

    def on_trades(self, trades: list[Trade]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.extend(trades)

    def _flush(self) -> None:
        trades, self._pending = self._pending, []
        self.engine.stats["trades"] += len(trades)
        if self.clients:
            if self.units is not None:  # converted only when someone receives them
                trades = self.units.trades(trades)
            frame = _encode(TradesMessage(trades=trades))
            for client in tuple(self.clients):
                client.deliver(frame)


class MarketDataEngine:
    def __init__(
        self, venues: Mapping[str, Venue], *, linger: float = 30.0, book_wait: float = 10.0
    ) -> None:
        self.venues = dict(venues)
        self.linger = linger
        self.book_wait = book_wait
        self.channels: dict[tuple[str, DataType], _Channel] = {}
        self.stats = {"snapshots": 0, "book_updates": 0, "resyncs": 0, "trades": 0}
        self._retiring: set[asyncio.Task] = set()

    def venue(self, exchange: str) -> Venue:
        venue = self.venues.get(exchange)
        if venue is None:
            served = ", ".join(sorted(self.venues)) or "no venue"
            raise UnknownExchange(
                exchange, f"unknown exchange '{exchange}': this gateway serves {served}"
            )
        return venue

    async def markets(self, exchange: str) -> list[MarketMetadata]:
        venue = self.venue(exchange)
        try:
            markets = await venue.load_markets()
        except Exception as exc:  # a venue that is down or answers garbage
            raise VenueUnavailable(exchange, f"{exchange} markets unavailable: {exc}") from exc
        return [m.metadata for m in markets.values()]

    async def resolve(self, symbol: str) -> tuple[Venue, VenueMarket]:
        parsed = parse_market(symbol)  # InvalidMarket names the bad part
        venue = self.venues.get(parsed.exchange)
        if venue is None:
            raise MarketNotFound(
                symbol, f"market '{symbol}': exchange {parsed.exchange} is not served here"
            )
        try:
            markets = await venue.load_markets()
        except Exception as exc:
            raise VenueUnavailable(venue.code, f"{venue.code} markets unavailable: {exc}") from exc
        market = markets.get(symbol)
        if market is None:
            raise MarketNotFound(symbol)
        return venue, market

    def _channel(self, venue: Venue, market: VenueMarket, data_type: DataType) -> _Channel:
        key = (market.symbol, data_type)
        channel = self.channels.get(key)
        if channel is None:
            cls = _BookChannel if data_type is DataType.ORDERBOOK else _TradeChannel
            channel = self.channels[key] = cls(self, key, venue, market)
        return channel

    async def order_book(self, symbol: str, depth: int | None = None) -> bytes:
        """The encoded ``OrderBook`` from the live synced book (starting its feed if needed)."""
        venue, market = await self.resolve(symbol)
        channel = self._channel(venue, market, DataType.ORDERBOOK)
        channel.touch()
        if not channel.synced.is_set():
            try:
                await asyncio.wait_for(channel.synced.wait(), self.book_wait)
            except TimeoutError:
                raise VenueTimeout(
                    venue.code, f"no synced book for '{symbol}' within {self.book_wait:g} s"
                ) from None
        return channel.rest_frame(depth)

    async def recent_trades(self, symbol: str, limit: int) -> list[Trade]:
        venue, market = await self.resolve(symbol)
        try:
            trades = await venue.recent_trades(market, limit)
        except Exception as exc:
            raise VenueUnavailable(venue.code, f"{venue.code} trades unavailable: {exc}") from exc
        units = _units(market)
        return trades if units is None else units.trades(trades)

    def subscribe(
        self, venue: Venue, market: VenueMarket, data_type: DataType, client: Client
    ) -> None:
        channel = self._channel(venue, market, data_type)
        channel.acquire()
        channel.add_client(client)

    def unsubscribe(self, market: VenueMarket, data_type: DataType, client: Client) -> None:
        channel = self.channels.get((market.symbol, data_type))
        if channel is not None and client in channel.clients:
            channel.clients.discard(client)
            channel.release()

    def _retire(self, channel: _Channel) -> None:
        if channel.refs == 0 and self.channels.get(channel.key) is channel:
            del self.channels[channel.key]
            task = asyncio.create_task(channel.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        await asyncio.gather(*(c.stop() for c in channels), *self._retiring)
        await asyncio.gather(*(v.close() for v in self.venues.values()), return_exceptions=True)
