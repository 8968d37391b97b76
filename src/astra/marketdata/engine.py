"""The market-data engine: one upstream subscription per (market, channel), shared by every
client, with a local synced book per market and encode-once fan-out.

Invariants:
- At most one feed task runs per (market, channel); it starts with the first user (a
  WebSocket client, or a REST read) and stops ``linger`` seconds after the last one leaves
  (a REST read that awaits the channel is a user until it is answered).
- Clients of a book only ever see: one full snapshot, then updates that continue it; after
  any resync (gap, checksum, reconnect) a new full snapshot, then updates again. Updates
  that arrive while the book is unsynced are never forwarded (the feed does not emit them).
- Each update is encoded once; the same bytes go to every subscriber's bounded queue, so
  a slow client costs the feed nothing (see ``astra.net.BoundedSender``).
- REST reads are served from the same synced book; a read of an unsynced book waits for the
  next snapshot, bounded by ``book_wait`` (then 504), and fails at once (503, with the feed's
  state) while the venue's connection is known to be down (``channels.py``).
- Recent trades come from the running trade feed where the venue reports its connection
  (one REST seed per connection); elsewhere from REST. Either way a venue failure is a 503
  that names the venue, not its URL; a local rate limit is a 429 with ``Retry-After``.
- Books keep the venue's units (their integrity checks are the venue's); quantities leave
  in base-asset units (``ContractUnits``: contracts converted at encoding, once per update).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from astra.core import (
    AstraError,
    DataType,
    Exchange,
    ExchangeNotServed,
    MarketMetadata,
    MarketNotFound,
    Trade,
    UnknownExchange,
    VenueUnavailable,
    parse_market,
)
from astra.venues.base import Venue, VenueMarket

from .channels import BookChannel, Channel, Client, units_of
from .trades import TradeChannel

__all__ = ["Client", "MarketDataEngine"]


class MarketDataEngine:
    def __init__(
        self, venues: Mapping[str, Venue], *, linger: float = 30.0, book_wait: float = 10.0
    ) -> None:
        self.venues = dict(venues)
        self.linger = linger
        self.book_wait = book_wait
        self.channels: dict[tuple[str, DataType], Channel] = {}
        self.stats = {"snapshots": 0, "book_updates": 0, "resyncs": 0, "trades": 0}
        self._retiring: set[asyncio.Task] = set()

    def venue(self, exchange: str) -> Venue:
        venue = self.venues.get(exchange)
        if venue is None:
            if exchange in Exchange.__members__:  # valid, just not configured: 404
                raise ExchangeNotServed(exchange, list(self.venues))
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

    def _channel(self, venue: Venue, market: VenueMarket, data_type: DataType) -> Channel:
        key = (market.symbol, data_type)
        channel = self.channels.get(key)
        if channel is None:
            cls = BookChannel if data_type is DataType.ORDERBOOK else TradeChannel
            channel = self.channels[key] = cls(self, key, venue, market)
        return channel

    async def order_book(self, symbol: str, depth: int | None = None) -> bytes:
        """The encoded ``OrderBook`` from the live synced book (starting its feed if needed)."""
        venue, market = await self.resolve(symbol)
        channel = self._channel(venue, market, DataType.ORDERBOOK)
        if channel.synced.is_set():  # the hot path: no await, no reference held
            channel.touch()
            return channel.rest_frame(depth)
        channel.acquire()  # held while waiting: a wait longer than ``linger`` keeps the feed
        try:
            await channel.wait_synced(self.book_wait)
        finally:
            channel.release()
        return channel.rest_frame(depth)

    async def recent_trades(self, symbol: str, limit: int) -> list[Trade]:
        venue, market = await self.resolve(symbol)
        units = None
        try:
            if venue.live_trades:
                channel = self._channel(venue, market, DataType.TRADE)
                units = channel.units
                # A reference held across the read: a fetch that outlasts ``linger`` must not
                # retire the channel (and cancel the fetch) under the request.
                channel.acquire()
                try:
                    trades = await channel.recent_trades(limit)
                finally:
                    channel.release()
            else:
                trades = await venue.recent_trades(market, limit)
                units = units_of(market)
        except AstraError:
            raise  # e.g. RateLimited: the limiter's answer, with its Retry-After
        except Exception as exc:
            # Not the exception's text: it may quote the venue's (internal) URL.
            raise VenueUnavailable(
                venue.code, f"{venue.code} trades unavailable ({type(exc).__name__})"
            ) from exc
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

    def _retire(self, channel: Channel) -> None:
        if channel.refs == 0 and self.channels.get(channel.key) is channel:
            del self.channels[channel.key]
            task = asyncio.create_task(channel.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        await asyncio.gather(*(c.stop() for c in channels), *self._retiring)
        await asyncio.gather(*(v.close() for v in self.venues.values()), return_exceptions=True)
