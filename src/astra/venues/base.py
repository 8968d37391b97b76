"""The venue interface the market-data engine and the server use.

A venue states what it supports as data (``Capabilities``), lists its markets as Astra
symbols (``VenueMarket``), and runs feed handlers that own one upstream subscription each:
a book feed calls ``BookSink`` with a fully synced book and then with in-sequence changes
only; a trade feed calls ``TradeSink`` with normalized trades. Integrity rules (sequence
numbers, checksums) live in each venue's ``feed.py``; the engine above never sees a gap.

A feed that loses (or cannot open) its connection says so with a resync reason starting with
``RECONNECTING`` ("reconnecting: ..."): the engine then reports the market ``disconnected``
and answers at once instead of waiting for a snapshot. A trade feed that reports its
connection (``TradeSink.on_connection``; the venue sets ``live_trades``) lets the engine
answer recent trades from the feed instead of a REST call per request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import msgspec

from astra.core import MarketMetadata, Trade
from astra.core._trading import Balance, Fill, Order
from astra.venues.book import L2Book

from .limiter import VenueLimiter

__all__ = [
    "BALANCE_ACCOUNTS",
    "RECONNECTING",
    "BookSink",
    "Capabilities",
    "TradeSink",
    "UserDataSink",
    "Venue",
    "VenueMarket",
]

RECONNECTING = "reconnecting: "  # prefix of a resync reason: the connection is down
# Every ``GET /balances?account=`` value (ccxt's ``fetch_balance`` type); a venue reads all
# of them unless its ``balance_accounts`` says fewer.
BALANCE_ACCOUNTS: tuple[str, ...] = ("spot", "swap", "future")


class Capabilities(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """What a venue offers, as served by ``GET /exchanges``."""

    asset_types: tuple[str, ...]
    orderbook: str  # the upstream book channel and its integrity rule
    trades: str  # the upstream trade channel
    rest: str  # how REST (markets, snapshots) is reached


@dataclass(frozen=True, slots=True)
class VenueMarket:
    """An Astra market and the venue's own identity for it."""

    symbol: str  # Astra symbol, e.g. SIM-PERP-BTC-USDT
    exchange_symbol: str  # venue id, e.g. BTCUSDT
    kind: str  # venue-specific section, e.g. "spot" / "perp"
    metadata: MarketMetadata


class BookSink(Protocol):
    def on_snapshot(self, book: L2Book) -> None:
        """A fully synced book (replaces any previous one, e.g. after a resync)."""

    def on_update(
        self,
        update_id: int,
        timestamp: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None:
        """In-sequence changes: absolute quantities, 0 deletes."""

    def on_resync(self, reason: str) -> None:
        """The book is no longer trustworthy (gap, checksum, reconnect); a snapshot follows."""


class TradeSink(Protocol):
    def on_trades(self, trades: list[Trade]) -> None: ...

    def on_connection(self, up: bool, reason: str = "") -> None:
        """The feed's subscription is live (``up``: every trade from now on will be
        delivered; where the venue acknowledges subscriptions, once it has) or its connection
        or subscription is lost (trades may be missed until it is live again). A report of the
        state already reported changes nothing. Called only by venues with ``live_trades``."""


class UserDataSink(Protocol):
    """Where a venue's private user stream delivers: normalized orders and fills, balances,
    and a resync whenever events may have been missed (the client re-reads over REST)."""

    def on_orders(self, orders: list[Order], fills: list[Fill]) -> None: ...
    def on_balances(self, balances: list[Balance]) -> None: ...
    def on_resync(self, reason: str) -> None: ...


class Venue(ABC):
    code: str
    capabilities: Capabilities
    # The limiter trading paces private calls by (``limiter_for`` per market): the public
    # one where the venue counts both per IP, its own where it counts private calls per
    # account or user (Coinbase, Kraken, KuCoin, HTX, OKX); None: the gateway makes one.
    limiter: VenueLimiter | None = None
    # Its trade feed calls ``TradeSink.on_connection``: recent trades can come from the feed.
    live_trades: ClassVar[bool] = False
    # What the private API checks before any round trip to the venue: the
    # ``GET /balances?account=`` values (ccxt's ``fetch_balance`` type) that read one of this
    # venue's accounts, and the form of its order ids (a regular expression; Binance-style
    # APIs take numbers only).
    balance_accounts: tuple[str, ...] = BALANCE_ACCOUNTS
    order_id_pattern: str = r"[A-Za-z0-9._:-]{1,64}"

    def limiter_for(
        self, market: VenueMarket | None = None, *, url: str | None = None
    ) -> VenueLimiter | None:
        """The limiter of the API a private call on ``market`` (None: a call naming none,
        e.g. balances), or a request to ``url`` (what an attached ccxt hook sees), is counted
        against. Default: the venue's one ``limiter``; a venue that counts products apart
        (Binance) answers per product."""
        return self.limiter

    @abstractmethod
    async def load_markets(self) -> dict[str, VenueMarket]:
        """All supported markets by Astra symbol (cached by the caller)."""

    @abstractmethod
    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        """Keep ``sink`` supplied with a synced book until cancelled."""

    @abstractmethod
    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        """Keep ``sink`` supplied with trades until cancelled."""

    @abstractmethod
    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        """The most recent public trades, oldest first."""

    @abstractmethod
    async def close(self) -> None: ...
