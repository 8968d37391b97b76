"""The Kraken venue: spot and futures under one exchange code, ``KRAKEN``.

- Spot: markets from ``GET /0/public/AssetPairs`` parsed by ccxt ``kraken``
  (``KRAKEN-SPOT-XBT-USD``; ``symbols.py``), books and trades from WebSocket v2 (``feed.py``;
  integrity: CRC32 checksum of the top 10 levels in every book message).
- Futures (futures.kraken.com): markets from ``GET /derivatives/api/v3/instruments`` parsed by
  ccxt ``krakenfutures`` (``KRAKEN-PERP-XBT-USD``, ``KRAKEN-PERP-XBT-USD-COINM``,
  ``KRAKEN-FUT-XBT-USD-220930-COINM``; ``futures_symbols.py``), books and trades from
  WebSocket v1 (``futures_feed.py``; integrity: per-product ``seq`` + 1 on every delta).

``load_markets()`` serves both; each market's feed goes to its API by its ``kind``.
Trading (``private_client``, used by ``astra.trading.service``): a ``KrakenPrivate`` per set
of credentials routes each call to a ccxt ``kraken`` (spot) or ``krakenfutures`` client on
the configured REST URLs, sharing the markets already loaded (``private.py``). User data
(``run_user_stream``, the gateway's ``WS /ws``): spot executions and balances from the v2
private endpoint (``userdata.py``) and, with futures enabled, futures orders, fills and
multi-collateral balances from ccxt.pro ``krakenfutures`` on ``futures_ws``
(``futures_userdata.py``), two streams reconnecting independently. Every market-data
upstream connection is shared: one ``SpotPool`` and one ``FuturesPool`` per venue multiplex
many markets per connection (``stream.py``), subscribing and unsubscribing symbols live.
Every URL is configurable; both markets sources can be injected (tests, offline use) so
nothing touches the network until a feed starts.

Public REST (markets, recent trades; books need none) is paced by a limiter per API, at the
documented rates (``astra.venues.public_rest``; ccxt's throttle off): spot public calls 1 a
second per IP (``public_limiter``), futures public calls ``FUTURES_PUBLIC_RATE`` a second
(``futures_limiter``: ccxt krakenfutures' ``rateLimit`` of 600 ms, cost 1 for instruments
and history). Recent trades are low priority and refused (429) rather than queued; a 429
closes that API's gate. Trading has its own ``limiter`` (ccxt's pace): Kraken counts private
calls per API key, so one key's limit leaves public REST alone.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import msgspec

from astra.core import Side, Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.ccxt_user_stream import ccxt_symbols, run_ccxt_user_stream
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .feed import BOOK_DEPTHS, MAX_SUBSCRIPTIONS_PER_CONNECTION, SpotPool
from .futures_feed import FuturesPool
from .futures_schemas import HistoryTrade
from .futures_symbols import KrakenFuturesMarket, futures_markets_from_ccxt, parse_instruments
from .futures_userdata import FUTURES_WATCHES, KrakenFuturesStream
from .private import KrakenFuturesPrivate, KrakenPrivate, KrakenSpotPrivate, NonceClock
from .symbols import KrakenMarket, markets_from_ccxt, parse_asset_pairs
from .userdata import UserDataSink, run_spot_user_stream

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
SPOT_PUBLIC_RATE = 1.0  # requests a second per IP (Kraken: public endpoints, 1 a second)
FUTURES_PUBLIC_RATE = 1000 / 600  # requests a second (ccxt krakenfutures' rateLimit, cost 1)


@dataclass(frozen=True, slots=True)
class KrakenUrls:
    rest: str = "https://api.kraken.com"  # ccxt appends /0/public/<method>
    ws: str = "wss://ws.kraken.com/v2"
    futures_rest: str = "https://futures.kraken.com"  # ccxt appends /derivatives/api/v3/<path>
    futures_ws: str = "wss://futures.kraken.com/ws/v1"  # public feeds and private (user data)
    auth_ws: str = "wss://ws-auth.kraken.com/v2"  # spot private channels (user data)


async def _call(source: MarketsSource) -> dict:
    response = source()
    if inspect.isawaitable(response):
        response = await response
    return response


class KrakenVenue(Venue):
    capabilities = CAPABILITIES
    live_trades = True  # the trade subscriptions report themselves

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
        # ccxt's throttle off (it queues every call without bound): the limiters pace.
        self.public_limiter = public_rest.public_limiter(
            code, per=1.0, limit=SPOT_PUBLIC_RATE, scope="spot"
        )
        self.futures_limiter = public_rest.public_limiter(
            code, per=1.0, limit=FUTURES_PUBLIC_RATE, scope="futures"
        )
        self.limiter = VenueLimiter(code)  # trading's: Kraken counts private calls per key
        self._ccxt = self.public_limiter.attach(ccxt_async.kraken({"enableRateLimit": False}))
        self._ccxt.urls["api"]["public"] = self.urls.rest
        self._ccxt_futures = self.futures_limiter.attach(
            ccxt_async.krakenfutures({"enableRateLimit": False})
        )
        self._ccxt_futures.urls["api"]["public"] = f"{self.urls.futures_rest}/derivatives/api/"
        self._markets_source = markets_source or self._ccxt.publicGetAssetPairs
        self._futures_source = futures_markets_source or self._ccxt_futures.publicGetInstruments
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        # ccxt's parse of both products (what trading clients are given) and, built on the
        # first trade, the clients indexing them once for every trading client to share.
        self._ccxt_markets: dict[str, list[dict]] = {"spot": [], "futures": []}
        self._market_sources: dict[str, Any] | None = None
        self._private_http = PrivateHttp()
        self._nonce_clock = NonceClock()  # spot nonces, strictly increasing across clients
        self._lock = asyncio.Lock()
        self.spot_pool = SpotPool(
            self._http, self.urls.ws, depth=depth, silence=silence, capacity=connection_capacity
        )
        self.futures_pool = FuturesPool(
            self._http, self.urls.futures_ws, silence=silence, capacity=connection_capacity
        )

    @classmethod
    def from_config(cls, code: str, options: dict | None) -> KrakenVenue:
        """From a ``[venues.KRAKEN]`` table: ``rest``/``ws``/``futures_rest``/``futures_ws``/
        ``auth_ws`` URL overrides, ``depth``, ``silence``, ``futures`` (false: spot only).
        Unknown keys are refused by name rather than ignored."""
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
                spot, futures = self._markets_source, self._futures_source
                sources = [public_rest.markets(self.public_limiter, 1, lambda: _call(spot))]
                if self.futures:
                    sources.append(
                        public_rest.markets(self.futures_limiter, 1, lambda: _call(futures))
                    )
                responses = await asyncio.gather(*sources)
                # ccxt's parse of ~700 pairs takes a while: keep the event loop free.
                self._markets = await asyncio.to_thread(self._parse_markets, *responses)
        return self._markets

    def _parse_markets(self, pairs: dict, instruments: dict | None = None) -> dict:
        spot = parse_asset_pairs(pairs)
        futures = parse_instruments(instruments) if instruments is not None else []
        markets: dict[str, VenueMarket] = dict(markets_from_ccxt(self.code, spot))
        for symbol, market in futures_markets_from_ccxt(self.code, futures).items():
            markets.setdefault(symbol, market)  # (types differ: never taken)
        self._ccxt_markets = {"spot": spot, "futures": futures}
        return markets

    # -- trading -----------------------------------------------------------------------------

    def private_client(self, config: Mapping[str, Any]) -> KrakenPrivate:
        """A client for one set of credentials (``ExchangeCredentials.ccxt_config()``): spot
        and futures calls each go to a ccxt client on this venue's REST URLs, built on first
        use, sharing the loaded markets (no round trip) and one cookie-less HTTP session.
        The caller closes it; closing leaves the shared session open."""
        sources = self._trading_sources()
        spot_source, futures_source = sources.get("spot"), sources.get("futures")
        futures_api = f"{self.urls.futures_rest.rstrip('/')}/derivatives/api/"
        futures_root = f"{self.urls.futures_rest.rstrip('/')}/api/"

        def spot() -> KrakenSpotPrivate:
            client = KrakenSpotPrivate(self._ccxt_config(config))
            client.nonce_clock = self._nonce_clock
            client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
            client.urls["api"]["public"] = client.urls["api"]["private"] = self.urls.rest
            if spot_source is not None:
                client.set_markets_from_exchange(spot_source)
            return client

        def futures() -> KrakenFuturesPrivate:
            client = KrakenFuturesPrivate(self._ccxt_config(config))
            client.timeout_on_exit = 0
            api = client.urls["api"]
            api["public"] = api["private"] = futures_api
            for name in ("charts", "history", "feeschedules"):
                api[name] = f"{futures_root}{name}/"
            if futures_source is not None:
                client.set_markets_from_exchange(futures_source)
            return client

        by_id: dict[str, list[dict]] = {}
        for source in sources.values():
            for market_id, found in source.markets_by_id.items():
                by_id.setdefault(market_id, []).extend(found)
        futures_symbols = frozenset(futures_source.markets) if futures_source else frozenset()
        return KrakenPrivate(spot, futures if self.futures else None, by_id, futures_symbols)

    async def run_user_stream(self, config: Mapping[str, Any], sink: UserDataSink) -> None:
        """Orders, fills and balances of the accounts behind ``config`` (ccxt credentials)
        until cancelled, two streams running concurrently, each reconnecting on its own
        (``on_resync`` on every (re)connection, backoff between attempts); cancelling stops
        both.

        - Spot: the WebSocket v2 private channels (``urls.auth_ws``) with a token from
          ``GetWebSocketsToken`` per connection (``userdata.py``).
        - Futures, when enabled and loaded: ccxt.pro ``krakenfutures`` on ``urls.futures_ws``
          (challenge auth; ``open_orders``, ``fills``, ``balances`` of the multi-collateral
          wallet; ``futures_userdata.py``). Quantities are contracts, as on REST."""
        markets = await self.load_markets()
        by_ws = {m.ws_symbol: m.symbol for m in markets.values()
                 if isinstance(m, KrakenMarket) and m.ws_symbol}
        futures_source = self._trading_sources().get("futures") if self.futures else None
        futures = [m for m in markets.values() if isinstance(m, KrakenFuturesMarket)]
        client = self.private_client(config)
        try:
            spot = client.client("spot")
            async with asyncio.TaskGroup() as group:
                group.create_task(run_spot_user_stream(
                    self._trading_http(), self.urls.auth_ws, spot.privatePostGetWebSocketsToken,
                    by_ws, self.code, sink, silence=self.silence))
                if futures_source is not None and futures:
                    group.create_task(run_ccxt_user_stream(
                        lambda: self.futures_user_stream_client(config), FUTURES_WATCHES,
                        ccxt_symbols(futures_source, futures), self.code, sink))
        finally:
            await client.close()

    def futures_user_stream_client(self, config: Mapping[str, Any]) -> KrakenFuturesStream:
        """A ccxt.pro ``krakenfutures`` client for one set of credentials on
        ``urls.futures_ws`` (Kraken serves public and private feeds on one endpoint),
        sharing the loaded futures markets. The caller closes it."""
        client = KrakenFuturesStream({**config, "enableRateLimit": False,
                                      "options": {**(config.get("options") or {})}})
        client.urls["api"]["ws"] = self.urls.futures_ws
        source = self._trading_sources().get("futures")
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    def _ccxt_config(self, config: Mapping[str, Any]) -> dict:
        # ccxt's own throttle is per instance: on a client living for one call it never paces
        # calls, it only delays a call's second request (3 s on Kraken). The gateway's
        # per-venue limiter paces instead.
        return {
            **config,
            "enableRateLimit": False,
            "session": self._trading_http(),
            "options": {**(config.get("options") or {})},
        }

    def _trading_sources(self) -> dict[str, Any]:
        """ccxt clients (never opened) holding the loaded markets, indexed once: trading
        clients share their tables by reference (``set_markets_from_exchange``)."""
        if self._market_sources is None and self._markets is not None:
            sources: dict[str, Any] = {}
            for product, cls in (("spot", KrakenSpotPrivate), ("futures", KrakenFuturesPrivate)):
                parsed = self._ccxt_markets.get(product) or []
                if parsed:
                    source = cls()
                    source.set_markets(parsed)
                    if product == "spot":  # what kraken's fetch_markets leaves for its parsers
                        source.options["marketsByAltname"] = source.index_by(parsed, "altname")
                    sources[product] = source
            self._market_sources = sources
        return self._market_sources or {}

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

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
        # ``count`` is documented as 1 to 1000.
        request = {"pair": market.exchange_symbol, "count": max(1, min(limit, 1000))}
        raw = await public_rest.trades(
            self.public_limiter, 1, lambda: self._ccxt.publicGetTrades(request)
        )
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
        request = {"symbol": market.exchange_symbol}
        raw = await public_rest.trades(
            self.futures_limiter, 1, lambda: self._ccxt_futures.publicGetHistory(request)
        )
        rows = msgspec.convert(raw.get("history") or [], list[HistoryTrade])
        trades = sorted((row.to_trade() for row in rows), key=lambda t: t.time)
        return trades[-limit:]

    async def close(self) -> None:
        await asyncio.gather(self.spot_pool.close(), self.futures_pool.close())
        await self._ccxt.close()
        await self._ccxt_futures.close()
        if self._session is not None:
            await self._session.close()
        await self._private_http.close()


def from_config(code: str, options: dict) -> KrakenVenue:
    """The venue registry's entry point (``astra.venues.build_venue``)."""
    return KrakenVenue.from_config(code, options)
