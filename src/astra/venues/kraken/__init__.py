"""The Kraken venue: spot and futures under one exchange code, ``KRAKEN``.

- Spot: markets from ``GET /0/public/AssetPairs`` parsed by ccxt ``kraken``
  (``KRAKEN-SPOT-XBT-USD``; ``symbols.py``), books and trades from WebSocket v2 (``feed.py``;
  integrity: CRC32 checksum of the top 10 levels in every book message).
- Futures (futures.kraken.com): markets from ``GET /derivatives/api/v3/instruments`` parsed by
  ccxt ``krakenfutures`` (``KRAKEN-PERP-XBT-USD``, ``KRAKEN-PERP-XBT-USD-COINM``,
  ``KRAKEN-FUT-XBT-USD-220930-COINM``; ``futures_symbols.py``), books and trades from
  WebSocket v1 (``futures_feed.py``; integrity: per-product ``seq`` + 1 on every delta).

``load_markets()`` serves both; each market's feed goes to its API by its ``kind``. Every
upstream connection is shared: one ``SpotPool`` and one ``FuturesPool`` per venue multiplex
many markets per connection (``stream.py``), subscribing and unsubscribing symbols live.
Every URL is configurable; both markets sources can be injected (tests, offline use) so
nothing touches the network until a feed starts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

import aiohttp
import ccxt.async_support as ccxt_async
import msgspec

from astra.core import Side, Trade
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket

from .feed import BOOK_DEPTHS, MAX_SUBSCRIPTIONS_PER_CONNECTION, SpotPool
from .futures_feed import FuturesPool
from .futures_schemas import HistoryTrade
from .futures_symbols import KrakenFuturesMarket, markets_from_instruments
from .symbols import KrakenMarket, markets_from_asset_pairs

__all__ = [
    "CAPABILITIES",
    "KrakenFuturesMarket",
    "KrakenMarket",
    "KrakenUrls",
    "KrakenVenue",
    "MarketsSource",
    "from_config",
]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP", "FUT"),
    orderbook=(
        "spot: v2 book (depth 1000): snapshot then updates, CRC32 checksum of the top 10 levels;"
        " futures: v1 book: book_snapshot then per-level deltas, seq + 1 per product;"
        " many markets per connection, a failed check resyncs that market only"
    ),
    trades="spot: v2 trade; futures: v1 trade",
    rest="ccxt kraken, krakenfutures",
)

# Returns a markets response body: GET /0/public/AssetPairs ({"error": [], "result": {...}})
# for spot, GET /derivatives/api/v3/instruments ({"result", "instruments": [...]}) for futures.
MarketsSource = Callable[[], Awaitable[dict] | dict]
_OPTIONS = ("depth", "silence", "futures")


@dataclass(frozen=True, slots=True)
class KrakenUrls:
    rest: str = "https://api.kraken.com"  # ccxt appends /0/public/<method>
    ws: str = "wss://ws.kraken.com/v2"
    futures_rest: str = "https://futures.kraken.com"  # ccxt appends /derivatives/api/v3/<path>
    futures_ws: str = "wss://futures.kraken.com/ws/v1"


async def _call(source: MarketsSource) -> dict:
    response = source()
    if inspect.isawaitable(response):
        response = await response
    return response


class KrakenVenue(Venue):
    capabilities = CAPABILITIES

    def __init__(
        self,
        code: str = "KRAKEN",
        urls: KrakenUrls | None = None,
        *,
        silence: float = 30.0,
        depth: int = 1000,
        futures: bool = True,
        markets_source: MarketsSource | None = None,
        futures_markets_source: MarketsSource | None = None,
        connection_capacity: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
    ) -> None:
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {BOOK_DEPTHS}, not {depth}")
        self.code = code
        self.urls = urls or KrakenUrls()
        self.silence, self.depth, self.futures = silence, depth, futures
        self._ccxt = ccxt_async.kraken({"enableRateLimit": True})
        self._ccxt.urls["api"]["public"] = self.urls.rest
        self._ccxt_futures = ccxt_async.krakenfutures({"enableRateLimit": True})
        self._ccxt_futures.urls["api"]["public"] = f"{self.urls.futures_rest}/derivatives/api/"
        self._markets_source = markets_source or self._ccxt.publicGetAssetPairs
        self._futures_source = futures_markets_source or self._ccxt_futures.publicGetInstruments
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._lock = asyncio.Lock()
        self.spot_pool = SpotPool(
            self._http, self.urls.ws, depth=depth, silence=silence, capacity=connection_capacity
        )
        self.futures_pool = FuturesPool(
            self._http, self.urls.futures_ws, silence=silence, capacity=connection_capacity
        )

    @classmethod
    def from_config(cls, code: str, options: dict | None) -> KrakenVenue:
        """From a ``[venues.KRAKEN]`` table: ``rest``/``ws``/``futures_rest``/``futures_ws``
        URL overrides, ``depth``, ``silence``, ``futures`` (false: spot only). Unknown keys
        are refused by name rather than ignored."""
        options = dict(options or {})
        url_keys = {f.name for f in fields(KrakenUrls)}
        unknown = set(options) - url_keys - set(_OPTIONS)
        if unknown:
            raise ValueError(f"venue {code}: unknown options {sorted(unknown)}")
        urls = KrakenUrls(**{k: v for k, v in options.items() if k in url_keys})
        extra = {k: options[k] for k in _OPTIONS if k in options}
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
                sources = [_call(self._markets_source)]
                if self.futures:
                    sources.append(_call(self._futures_source))
                responses = await asyncio.gather(*sources)
                # ccxt's parse of ~700 pairs takes a while: keep the event loop free.
                self._markets = await asyncio.to_thread(self._parse_markets, *responses)
        return self._markets

    def _parse_markets(self, pairs: dict, instruments: dict | None = None) -> dict:
        markets: dict[str, VenueMarket] = dict(markets_from_asset_pairs(self.code, pairs))
        if instruments is not None:
            for symbol, market in markets_from_instruments(self.code, instruments).items():
                markets.setdefault(symbol, market)  # (types differ: never taken)
        return markets

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        if isinstance(market, KrakenFuturesMarket):
            await self.futures_pool.run_book(market, sink)
        else:
            await self.spot_pool.run_book(market, sink)

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        if isinstance(market, KrakenFuturesMarket):
            await self.futures_pool.run_trades(market, sink)
        else:
            await self.spot_pool.run_trades(market, sink)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        if isinstance(market, KrakenFuturesMarket):
            return await self._recent_futures_trades(market, limit)
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

    async def _recent_futures_trades(self, market: KrakenFuturesMarket, limit: int) -> list[Trade]:
        # GET /derivatives/api/v3/history?symbol=: {"result", "history": [rows, newest first]}
        raw = await self._ccxt_futures.publicGetHistory({"symbol": market.exchange_symbol})
        rows = msgspec.convert(raw.get("history") or [], list[HistoryTrade])
        trades = sorted((row.to_trade() for row in rows), key=lambda t: t.time)
        return trades[-limit:]

    async def close(self) -> None:
        await asyncio.gather(self.spot_pool.close(), self.futures_pool.close())
        await self._ccxt.close()
        await self._ccxt_futures.close()
        if self._session is not None:
            await self._session.close()


def from_config(code: str, options: dict) -> KrakenVenue:
    """The venue registry's entry point (``astra.venues.build_venue``)."""
    return KrakenVenue.from_config(code, options)
