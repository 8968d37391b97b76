"""The Kraken venue (spot): markets from ``GET /0/public/AssetPairs`` parsed by ccxt, books and
trades from Kraken's WebSocket v2 (``feed.py``; integrity: CRC32 checksum of the top 10
levels in every book message).

Symbols keep Kraken's own asset names (``KRAKEN-SPOT-XBT-USD``; see ``symbols.py``). Every
URL is configurable; the markets source can be injected (tests, offline use) so that nothing
touches the network until a feed starts. Kraken futures (``krakenfutures``: PERP/FUT) are not
served by this package.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

import aiohttp
import ccxt.async_support as ccxt_async

from astra.core import Side, Trade
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket

from .feed import BOOK_DEPTHS, run_book_feed, run_trade_feed
from .symbols import KrakenMarket, markets_from_asset_pairs

__all__ = [
    "CAPABILITIES",
    "KrakenMarket",
    "KrakenUrls",
    "KrakenVenue",
    "MarketsSource",
    "from_config",
]

CAPABILITIES = Capabilities(
    asset_types=("SPOT",),
    orderbook="v2 book (depth 1000): snapshot then updates, CRC32 checksum of the top 10 levels",
    trades="v2 trade",
    rest="ccxt kraken",
)

# Returns the body of GET /0/public/AssetPairs ({"error": [], "result": {...}}).
MarketsSource = Callable[[], Awaitable[dict] | dict]


@dataclass(frozen=True, slots=True)
class KrakenUrls:
    rest: str = "https://api.kraken.com"  # ccxt appends /0/public/<method>
    ws: str = "wss://ws.kraken.com/v2"


class KrakenVenue(Venue):
    capabilities = CAPABILITIES

    def __init__(
        self,
        code: str = "KRAKEN",
        urls: KrakenUrls | None = None,
        *,
        silence: float = 30.0,
        depth: int = 1000,
        markets_source: MarketsSource | None = None,
    ) -> None:
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {BOOK_DEPTHS}, not {depth}")
        self.code = code
        self.urls = urls or KrakenUrls()
        self.silence, self.depth = silence, depth
        self._ccxt = ccxt_async.kraken({"enableRateLimit": True})
        self._ccxt.urls["api"]["public"] = self.urls.rest
        self._markets_source = markets_source or self._ccxt.publicGetAssetPairs
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, code: str, options: dict | None) -> KrakenVenue:
        """From a ``[venues.KRAKEN]`` table: ``rest``/``ws`` URL overrides, ``depth``,
        ``silence``. Unknown keys are refused by name rather than ignored."""
        options = dict(options or {})
        url_keys = {f.name for f in fields(KrakenUrls)}
        unknown = set(options) - url_keys - {"depth", "silence"}
        if unknown:
            raise ValueError(f"venue {code}: unknown options {sorted(unknown)}")
        urls = KrakenUrls(**{k: v for k, v in options.items() if k in url_keys})
        extra = {k: options[k] for k in ("depth", "silence") if k in options}
        return cls(code, urls, **extra)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                response = self._markets_source()
                if inspect.isawaitable(response):
                    response = await response
                # ccxt's parse of ~700 pairs takes a while: keep the event loop free.
                self._markets = await asyncio.to_thread(
                    markets_from_asset_pairs, self.code, response
                )
        return self._markets

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        await run_book_feed(
            self._http(), self.urls.ws, market, sink, depth=self.depth, silence=self.silence
        )

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        await run_trade_feed(self._http(), self.urls.ws, market, sink, silence=self.silence)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        # GET /0/public/Trades rows: [price, volume, time (s), "b"|"s", ordertype, misc, id].
        raw = await self._ccxt.publicGetTrades({"pair": market.exchange_symbol, "count": limit})
        rows = next((v for k, v in raw["result"].items() if k != "last"), [])
        return [
            Trade(
                price=float(row[0]),
                quantity=float(row[1]),
                side=Side.BUY if row[3] == "b" else Side.SELL,
                time=int(float(row[2]) * 1000),
                trade_id=str(row[6]) if len(row) > 6 else None,
            )
            for row in rows[-limit:]
        ]

    async def close(self) -> None:
        await self._ccxt.close()
        if self._session is not None:
            await self._session.close()


def from_config(code: str, options: dict) -> KrakenVenue:
    """The venue registry's entry point (``astra.venues.build_venue``)."""
    return KrakenVenue.from_config(code, options)
