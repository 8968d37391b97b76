"""The Coinbase venue: Coinbase Advanced Trade, exchange code ``COINBASE``.

Markets and REST go through ccxt's ``coinbase`` client against the *public* Advanced Trade
endpoints (``/api/v3/brokerage/market/products``, ``.../market/products/{id}/ticker``), so
no key is needed; market data comes from native WebSocket handlers on
``wss://advanced-trade-ws.coinbase.com`` (``feed.py``, ``connection.py``). Every URL is
configurable, and the product list can be injected (``markets_source``) for tests and
offline use. Public REST is paced by the venue's ``public_limiter`` at Coinbase's documented
public limit, ``PUBLIC_RATE`` requests a second per IP, not by ccxt's throttle
(``astra.venues.public_rest``); recent trades are low priority and refused (429) rather than
queued, and a 429 closes the gate for its ``Retry-After``. Trading has its own ``limiter``:
Coinbase counts private calls per user (30 a second), apart from the public budget.

Authentication, per Coinbase's current docs: ``level2``, ``market_trades`` and
``heartbeats`` are public ("Requires Authentication: No"; only ``user`` and
``futures_balance_summary`` need it), so by default nothing is signed. Coinbase still
recommends authenticating "for the most reliable connection", and unauthenticated client
messages are limited to 8/s per IP. With ``api_key``/``api_secret`` (a CDP key: name
``organizations/.../apiKeys/...`` plus its EC PEM, or an Ed25519 secret) each subscribe
message carries a fresh JWT from ccxt's ``create_auth_token``: a WebSocket JWT has no
``uri`` claim and expires after 2 minutes, hence one per message.

Trading (``private_client``, used by ``astra.trading.service``): one ccxt ``coinbase`` client
per set of credentials (``private.py``: Advanced Trade ``/api/v3/brokerage`` endpoints, JWT
per request) on the configured REST root, sharing the markets already loaded.

User data (``run_user_stream``, the gateway's ``WS /ws``): orders and fills from the ``user``
channel on ``private_ws`` through ccxt.pro's ``coinbase``, balances over REST
(``userdata.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

import aiohttp
import ccxt.async_support as ccxt_async
import msgspec

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.ccxt_user_stream import ccxt_symbols
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .connection import Pool, Settings, Throttle
from .feed import BookRouter, TradeRouter
from .private import CoinbasePrivate
from .schemas import MarketTrade
from .symbols import markets_from_ccxt
from .userdata import CoinbaseUserStream, run_user_stream

__all__ = ["CAPABILITIES", "CoinbaseUrls", "CoinbaseVenue", "from_config", "parse_products"]

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP", "FUT"),
    orderbook="level2 snapshot + updates; connection-wide sequence_num, a gap resubscribes "
    "the connection's products for fresh snapshots; heartbeats for liveness",
    trades="market_trades",
    rest="ccxt coinbase (public Advanced Trade market endpoints)",
)

ProductsSource = Callable[[], Awaitable[list[dict]]]
PUBLIC_RATE = 10.0  # Advanced Trade public endpoints: 10 requests a second per IP


@dataclass(frozen=True, slots=True)
class CoinbaseUrls:
    rest: str = "https://api.coinbase.com"  # ccxt appends /api/v3/brokerage/...
    ws: str = "wss://advanced-trade-ws.coinbase.com"
    # Coinbase's user order data endpoint (the ``user`` channel).
    private_ws: str = "wss://advanced-trade-ws-user.coinbase.com"


def parse_products(exchange: ccxt_async.coinbase, products: list[dict]) -> list[dict]:
    """ccxt unified markets of Advanced Trade products (``SPOT`` and ``FUTURE``), parsed by
    ccxt's own ``parse_spot_market``/``parse_contract_market``; others are skipped."""
    markets = []
    for product in products:
        kind = str(product.get("product_type") or "").upper()
        try:
            if kind == "SPOT":
                m = exchange.parse_spot_market(product, {})
            elif kind == "FUTURE":
                m = exchange.parse_contract_market(product, {})
            else:
                continue
        except Exception as exc:  # one odd product must not hide the others
            log.warning("coinbase: product %s not parsed: %r", product.get("product_id"), exc)
            continue
        if m is not None:
            markets.append(m)
    return markets


class CoinbaseVenue(Venue):
    capabilities = CAPABILITIES
    live_trades = True  # feed.TradeRouter reports each product

    def __init__(
        self,
        code: str = "COINBASE",
        urls: CoinbaseUrls | None = None,
        *,
        markets_source: ProductsSource | None = None,
        silence: float = 10.0,
        snapshot_timeout: float = 30.0,
        per_connection: int = 10,
        send_interval: float = 0.15,
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> None:
        self.code = code
        self.urls = urls or CoinbaseUrls()
        self._markets_source = markets_source
        # ccxt's throttle off (it queues every call without bound): the limiter paces.
        config: dict = {"enableRateLimit": False}
        if api_key and api_secret:
            config.update(apiKey=api_key, secret=api_secret)
        self.public_limiter = public_rest.public_limiter(code, per=1.0, limit=PUBLIC_RATE)
        self.limiter = VenueLimiter(code)  # trading's: private calls are counted per user
        self._ccxt = self.public_limiter.attach(ccxt_async.coinbase(config))
        self._ccxt.urls["api"]["rest"] = self.urls.rest
        settings = Settings(
            url=self.urls.ws,
            throttle=Throttle(send_interval),  # shared: the venue's limit is per IP
            silence=silence,
            snapshot_timeout=snapshot_timeout,
            per_connection=per_connection,
            jwt=self._jwt if api_key and api_secret else None,
        )
        self._books = Pool(self._http, settings, lambda: BookRouter(snapshot_timeout))
        self._trades = Pool(self._http, settings, TradeRouter)
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._feed_ids: dict[str, str] = {}
        self._ccxt_markets: list[dict] = []  # the ccxt markets behind self._markets
        self._market_source: ccxt_async.coinbase | None = None  # those markets, indexed
        self._private_http = PrivateHttp()
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, code: str, options: dict) -> CoinbaseVenue:
        """From a config table: ``rest``/``ws`` URL overrides plus the keyword options."""
        options = dict(options)
        url_keys = {f.name for f in fields(CoinbaseUrls)}
        urls = CoinbaseUrls(**{k: options.pop(k) for k in list(options) if k in url_keys})
        allowed = {
            "silence",
            "snapshot_timeout",
            "per_connection",
            "send_interval",
            "api_key",
            "api_secret",
        }
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"venue {code}: unknown options {sorted(unknown)}")
        return cls(code, urls, **options)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _jwt(self) -> str:
        secret = self._ccxt.secret or ""
        return self._ccxt.create_auth_token(
            self._ccxt.seconds(), None, None, not secret.startswith("-----BEGIN")
        )

    async def _fetch_products(self) -> list[dict]:
        list_products = self._ccxt.v3PublicGetBrokerageMarketProducts
        spot = await public_rest.markets(self.public_limiter, 1, lambda: list_products({}))
        products = list(spot.get("products") or [])
        try:
            futures = await public_rest.markets(
                self.public_limiter, 1, lambda: list_products({"product_type": "FUTURE"})
            )
        except ccxt_async.NetworkError:
            raise  # transient: the next load retries, rather than caching a partial list
        except ccxt_async.ExchangeError as exc:  # not offered here (region, permissions)
            log.warning("%s: futures products unavailable: %r", self.code, exc)
        else:
            products += futures.get("products") or []
        return products

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                products = await (self._markets_source or self._fetch_products)()
                parsed = parse_products(self._ccxt, products)
                found = markets_from_ccxt(self.code, parsed)
                self._feed_ids = {s: feed_id for s, (_, feed_id) in found.items()}
                self._markets = {s: vm for s, (vm, _) in found.items()}
                self._ccxt_markets = parsed
        return self._markets

    # --- trading -------------------------------------------------------------------------

    def private_client(self, config: dict) -> CoinbasePrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``: a
        CDP key name and its secret) on this venue's REST root, sharing the markets already
        loaded (no extra round trip) and one keep-alive HTTP session (no cookies). The caller
        closes it; closing leaves the shared session open."""
        options = {
            "fetchBalance": "v3PrivateGetBrokerageAccounts",  # Advanced Trade accounts
            **(config.get("options") or {}),
        }
        client = CoinbasePrivate({**config, "session": self._trading_http(), "options": options})
        client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
        client.urls["api"]["rest"] = self.urls.rest.rstrip("/")
        source = self._markets_for_trading()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    async def run_user_stream(self, config: dict, sink) -> None:
        """Orders, fills and balances of the account behind ``config`` (a CDP key) until
        cancelled: the ``user`` channel on ``private_ws`` (orders; fills derived from
        cumulative quantities), balances over REST at each (re)connection and after fills.
        Every (re)connection calls ``sink.on_resync``; failures reconnect after a backoff."""
        markets = await self.load_markets()
        source = self._markets_for_trading()
        symbols = ccxt_symbols(source, markets.values())
        rest = self.private_client(config)

        def make_client() -> CoinbaseUserStream:
            client = CoinbaseUserStream({
                **{k: v for k, v in config.items() if k != "session"},
                "options": {**(config.get("options") or {})},
            })
            client.urls["api"]["ws"] = self.urls.private_ws
            client.urls["api"]["rest"] = self.urls.rest.rstrip("/")
            client.astra_code, client.astra_symbols = self.code, symbols
            if source is not None:
                client.set_markets_from_exchange(source)
            return client

        try:
            await run_user_stream(make_client, rest.fetch_balance, self.code, sink)
        finally:
            await rest.close()

    def _markets_for_trading(self) -> ccxt_async.coinbase | None:
        """A ccxt client holding the loaded markets, indexed once (clients then share its
        tables by reference)."""
        if self._market_source is None and self._ccxt_markets:
            source = ccxt_async.coinbase()
            source.set_markets(self._ccxt_markets)
            self._market_source = source
        return self._market_source

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    async def _feed_id(self, market: VenueMarket) -> str:
        await self.load_markets()
        return self._feed_ids.get(market.symbol, market.exchange_symbol)

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        product = await self._feed_id(market)
        conn = self._books.attach(product, sink, market.symbol)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._books.detach(conn, product, sink)

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        product = await self._feed_id(market)
        conn = self._trades.attach(product, sink)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._trades.detach(conn, product, sink)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        request = {"product_id": market.exchange_symbol, "limit": max(1, min(limit, 1000))}
        raw = await public_rest.trades(
            self.public_limiter,
            1,
            lambda: self._ccxt.v3PublicGetBrokerageMarketProductsProductIdTicker(request),
        )
        trades = [
            msgspec.convert(row, MarketTrade, strict=False).to_trade()
            for row in raw.get("trades") or []
        ]
        trades.reverse()  # the venue lists newest first
        trades.sort(key=lambda t: t.time)
        return trades[-limit:] if limit > 0 else []

    async def close(self) -> None:
        await asyncio.gather(self._books.close(), self._trades.close())
        await self._ccxt.close()
        await self._private_http.close()
        if self._session is not None:
            await self._session.close()


from_config = CoinbaseVenue.from_config  # what the venue registry calls
