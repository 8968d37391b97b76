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
- REST reads are served from the same synced book (``order_book_now``: with no await and the
  body cached per depth until the book's next update, while its channel runs and is synced);
  a read of an unsynced book waits for the next snapshot, bounded by ``book_wait`` (then
  504), and fails at once (503, with the feed's state) while the venue's connection is known
  to be down (``channels.py``).
- Recent trades come from the running trade feed where the venue reports its connection
  (one REST seed per connection); elsewhere from REST. Either way a venue failure is a 503
  that names the venue, not its URL; a local rate limit is a 429 with ``Retry-After``.
- Books keep the venue's units (their integrity checks are the venue's); quantities leave
  in base-asset units (``ContractUnits``: contracts converted at encoding, once per update).
- ``SMART-`` symbols are consolidated markets (``smart.py``): their channel
  (``consolidated.SmartChannel``) holds its members' book channels while it has users. Every
  other symbol's path is unchanged (one prefix check in ``subscription``).
- ``member_books`` (the router's read) waits, at most ``wait`` (default ``book_wait``), until
  each requested member is synced or known down (disconnected, stale), then returns copies;
  a member a wait gave up on is not waited for again until it syncs (``SmartChannel.wait``).
  A REST read of a SMART book waits so only on the channel's first read, and later only while
  no requested member contributes; with none then, 503 with every member's state.
- ``member_updates`` (the router, before a residual round) waits, at most ``wait``, for each
  named member's next book update, woken by that book's own events (no polling); the SMART
  channel's members pay one ``None`` check per event for it, other books nothing.
- SMART markets come from the member venues' markets (``smart.SmartCatalog``, waiting at
  most ``book_wait`` for a venue); a SMART symbol not found while a member's markets are
  unavailable is a 503 naming those venues, not a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import msgspec

from astra.core import (
    AstraError,
    DataType,
    Exchange,
    ExchangeNotServed,
    InvalidMarket,
    InvalidParameter,
    MarketMetadata,
    MarketNotFound,
    Trade,
    UnknownExchange,
    VenueUnavailable,
    parse_market,
)
from astra.telemetry import Telemetry
from astra.venues.base import Venue, VenueMarket

from .bbo import BboFeed, single_bbo
from .channels import BookChannel, Channel, Client, FeedSource, VenueFeeds, units_of
from .consolidated import SmartChannel
from .smart import SMART_PREFIX, SmartBooks, SmartCatalog, SmartConfig, SmartMarket
from .trades import TradeChannel

__all__ = ["Client", "FeedSource", "MarketDataEngine"]

_encode = msgspec.json.Encoder().encode
Subscription = tuple[Callable[[Client], None], Callable[[Client], None]]  # (add, remove)


_ORDERBOOK = DataType.ORDERBOOK  # (an enum attribute lookup per REST read otherwise)

class MarketDataEngine:
    def __init__(
        self, venues: Mapping[str, Venue], *, linger: float = 30.0, book_wait: float = 10.0,
        smart: SmartConfig | None = None, source: FeedSource | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.venues = dict(venues)
        self.telemetry = telemetry  # channels observe fan-out latency into it (None: not measured)
        # Where channels' feeds come from: the venues' own connections, or (an edge node) a
        # mirror of a feed node's books; the venues still give the markets' metadata.
        self.source: FeedSource = source or VenueFeeds()
        self.linger = linger
        self.book_wait = book_wait
        self.channels: dict[tuple[str, DataType], Channel] = {}
        self.stats = {"snapshots": 0, "book_updates": 0, "resyncs": 0, "trades": 0}
        self._retiring: set[asyncio.Task] = set()
        self.smart_config = smart or SmartConfig()
        self._catalog = SmartCatalog(self.venues, self.smart_config)
        self._bbo: dict[str, tuple[BookChannel, BboFeed]] = {}  # single-venue BBO streams
        self._smart_ids: dict[str, int] = {}  # SMART symbol -> last update id given out

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
        if exchange == "SMART":
            smart = await self.smart_markets()
            if not smart and self._catalog.missing:  # not "none": nothing is known yet
                raise self._catalog.unavailable("no SMART market is known")
            return [m.metadata for m in smart.values()]
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
        return (await self._synced_book(symbol)).rest_frame(depth)

    def order_book_now(self, symbol: str, depth: int | None = None) -> bytes | None:
        """``order_book`` without an await when ``symbol``'s book channel runs and is synced
        (the REST hot path: one dict lookup, the body encoded once per book version and
        depth); None otherwise: call ``order_book`` (resolve, start the feed, wait)."""
        channel = self.channels.get((symbol, _ORDERBOOK))
        # (Only a resolved market has a channel; a SMART symbol's is no BookChannel.)
        if type(channel) is not BookChannel or not channel.synced.is_set():
            return None
        channel.touch()
        return channel.rest_frame(depth)

    async def _synced_book(self, symbol: str) -> BookChannel:
        """``symbol``'s book channel once synced (starting its feed if needed)."""
        venue, market = await self.resolve(symbol)
        channel: BookChannel = self._channel(venue, market, DataType.ORDERBOOK)  # type: ignore[assignment]
        if channel.synced.is_set():  # the hot path: no await, no reference held
            channel.touch()
            return channel
        channel.acquire()  # held while waiting: a wait longer than ``linger`` keeps the feed
        try:
            await channel.wait_synced(self.book_wait)
        finally:
            channel.release()
        return channel

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
            if isinstance(channel, SmartChannel):  # its successor's ids go on from here
                self._smart_ids[channel.smart.symbol] = channel.update_id
            task = asyncio.create_task(channel.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        await self._catalog.close()
        await asyncio.gather(*(c.stop() for c in channels), *self._retiring)
        await asyncio.gather(*(v.close() for v in self.venues.values()), return_exceptions=True)

    # --- SMART markets -------------------------------------------------------------------------

    def smart_venues(self) -> list[str]:
        """The member venues, in configured order (``[smart] venues``, else every venue)."""
        return self._catalog.codes()

    async def smart_markets(self) -> dict[str, SmartMarket]:
        """Every SMART market by symbol (``SmartCatalog.markets``: a member venue whose
        markets cannot be read is left out of the answer and tried again)."""
        return await self._catalog.markets(self.book_wait)

    async def smart_market(self, symbol: str) -> SmartMarket:
        parsed = parse_market(symbol)  # InvalidMarket names the bad part
        if parsed.exchange != "SMART":
            raise InvalidMarket(f"market '{symbol}' is not a SMART market", market=symbol,
                                position=1)
        market = (await self.smart_markets()).get(symbol)
        if market is None:
            if self._catalog.missing:  # a venue that could not answer may list it: not a 404
                raise self._catalog.unavailable(f"market '{symbol}' is not known yet")
            raise MarketNotFound(symbol, f"market '{symbol}': no member venue lists it")
        return market

    def _smart_channel(self, smart: SmartMarket) -> SmartChannel:
        key = (smart.symbol, DataType.ORDERBOOK)
        channel: SmartChannel | None = self.channels.get(key)  # type: ignore[assignment]
        if channel is None:
            channel = self.channels[key] = SmartChannel(
                self, smart, self.venues, self.smart_config.stale_after,
                self._smart_ids.get(smart.symbol, 0))
        elif channel.smart is not smart:  # the market's members grew since the channel began
            channel.extend(smart, self._catalog.codes())
        return channel

    def _check_venues(self, smart: SmartMarket, venues: Sequence[str] | None) -> list[str] | None:
        if venues is None:
            return None
        if not venues:
            raise InvalidParameter("venues", "expected one or more member venues")
        codes = list(dict.fromkeys(v.upper() for v in venues))
        members = ", ".join(smart.members)
        for code in codes:
            if code not in Exchange.__members__ or code == "SMART":
                raise InvalidParameter("venues", f"unknown venue {code[:20]!r}")
            if code not in smart.members and code in self._catalog.missing:  # may be one
                raise self._catalog.unavailable(f"{code} in {smart.symbol}")
            if code not in smart.members:
                raise InvalidParameter(
                    "venues", f"{code} is not a member of {smart.symbol} (members: {members})")
        return [c for c in smart.members if c in codes]  # configured order

    async def _members(self, symbol: str, venues: Sequence[str] | None):
        """The SMART channel of ``symbol`` and its members named by ``venues`` (all: None)."""
        smart = await self.smart_market(symbol)
        channel = self._smart_channel(smart)
        return channel, channel.select(self._check_venues(smart, venues))

    async def member_books(
        self, symbol: str, venues: Sequence[str] | None = None, *, depth: int | None = None,
        wait: float | None = None,
    ) -> SmartBooks:
        """Each requested member's book (copies, base units, best first) and state, after
        waiting at most ``wait`` seconds for every one to be synced or known down."""
        channel, members = await self._members(symbol, venues)
        channel.acquire()  # held while waiting; released into linger: the feeds stay warm
        try:
            await channel.wait(members, self.book_wait if wait is None else wait)
        finally:
            channel.release()
        return SmartBooks(channel.smart, channel.member_books(members, depth))

    async def member_updates(self, symbol: str, venues: Sequence[str], wait: float) -> bool:
        """Until each of ``venues``' books has published an update after this call (or is not
        live), at most ``wait`` seconds, woken by the books' own events; True when all did."""
        channel, members = await self._members(symbol, venues)
        channel.acquire()
        try:
            return await channel.next_updates(members, wait)
        finally:
            channel.release()

    async def _smart_read(self, symbol: str, venues: Sequence[str] | None):
        channel, members = await self._members(symbol, venues)
        if channel.settled and channel.task is not None and any(m.live for m in members):
            channel.touch()
            return channel, members
        channel.acquire()
        try:
            await channel.wait(members, self.book_wait)
            channel.settled = True
        finally:
            channel.release()
        return channel, members

    async def smart_order_book(
        self, symbol: str, depth: int | None = None, venues: Sequence[str] | None = None,
        fee_adjusted: bool = False,
    ) -> bytes:
        """The encoded ``ConsolidatedBook`` (503 with the members' states when none is live)."""
        channel, members = await self._smart_read(symbol, venues)
        return channel.rest_body(members, depth, fee_adjusted)

    async def bbo(self, symbol: str, venues: Sequence[str] | None = None) -> bytes:
        """The encoded ``Bbo`` of a single-venue or SMART market."""
        if symbol.startswith(SMART_PREFIX):
            channel, members = await self._smart_read(symbol, venues)
            bbo = channel.current_bbo(members)
            if bbo is None:
                raise channel.unavailable(members)
            return _encode(bbo)
        if venues is not None:
            raise InvalidParameter("venues", "only SMART markets take venues")
        return _encode(single_bbo(await self._synced_book(symbol)))

    async def subscription(self, symbol: str, data_type: DataType) -> Subscription:
        """``(add, remove)`` of a WebSocket client on ``symbol``'s ``data_type`` stream;
        raises (4xx) before anything starts when the market or the type does not fit."""
        if symbol.startswith(SMART_PREFIX):
            if data_type is DataType.TRADE:
                raise InvalidParameter("dataType", "SMART markets stream ORDERBOOK and BBO")
            smart = await self.smart_market(symbol)
            held: list[SmartChannel] = []  # the channel ``add`` joined (looked up then: the
            # one seen before the handshake may have been retired during it)

            def add(client: Client) -> None:
                channel = self._smart_channel(smart)
                held.append(channel)
                channel.acquire()
                (channel if data_type is DataType.ORDERBOOK else channel.bbo).add_client(client)

            def remove(client: Client) -> None:
                for channel in held:
                    target = channel if data_type is DataType.ORDERBOOK else channel.bbo
                    if client in target.clients:
                        target.clients.discard(client)
                        channel.release()

            return add, remove
        venue, market = await self.resolve(symbol)
        if data_type is not DataType.BBO:
            return (lambda c: self.subscribe(venue, market, data_type, c),
                    lambda c: self.unsubscribe(market, data_type, c))
        return (lambda c: self._add_bbo(venue, market, c),
                lambda c: self._remove_bbo(market, c))

    def _add_bbo(self, venue: Venue, market: VenueMarket, client: Client) -> None:
        entry = self._bbo.get(market.symbol)
        if entry is None:
            channel: BookChannel = self._channel(venue, market, DataType.ORDERBOOK)  # type: ignore[assignment]

            feed = BboFeed(lambda: single_bbo(channel), channel.known_resync_frame)
            channel.listeners.add(feed)
            entry = self._bbo[market.symbol] = (channel, feed)
        channel, feed = entry
        channel.acquire()
        feed.add_client(client)

    def _remove_bbo(self, market: VenueMarket, client: Client) -> None:
        entry = self._bbo.get(market.symbol)
        if entry is None or client not in entry[1].clients:
            return
        channel, feed = entry
        feed.clients.discard(client)
        if not feed.clients:
            channel.listeners.discard(feed)
            del self._bbo[market.symbol]
        channel.release()
