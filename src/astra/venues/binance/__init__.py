"""The Binance venue: spot, USD-M futures (perpetual and quarterly), COIN-M futures
(``-COINM``) and options.

REST (exchangeInfo, depth snapshots, recent trades) goes through ccxt's ``binance`` client
(its implicit API methods, with each product's URL from ``BinanceUrls``); market data comes
from native WebSocket handlers: Aster's sequencing (``astra.venues.aster.feed``) per market,
every market of a product multiplexed on shared combined-stream connections
(``streams.py``: live SUBSCRIBE/UNSUBSCRIBE within Binance's per-connection limits, lifetime,
keep-alive). Every URL is configurable, and the markets can be injected (``exchange_info=``)
so nothing touches the network until a feed starts.

Trading (``private_client``, used by ``astra.trading.service``): one ccxt ``binance`` client
per set of credentials (``private.py``) trades spot, USD-M and COIN-M markets on the
configured REST roots, sharing the markets already loaded.

Public REST is paced by one ``VenueLimiter`` per product (``limiters``: Binance counts request
weight per IP separately for api, fapi, dapi and eapi), at the documented weights below, not
by ccxt's throttle (``astra.venues.public_rest``): a depth snapshot goes ahead of recent-trade
fetches, which are low priority and refused (429) rather than queued; a 429/418 closes that
product's gate for its ``Retry-After``. Trading shares them per product (``limiter_for``): an
order on a USD-M market takes USD-M's budget, and a trading client's answer from ``/fapi``
feeds USD-M's gate, not spot's. Recent trades ask for at most each product's documented
maximum (``TRADES_MAX_LIMITS``).

User data (``run_user_stream``, the gateway's ``WS /ws``): one stream per product the venue
has markets of. Spot subscribes on the WebSocket API (``spot_ws_api``,
``userDataStream.subscribe.signature``: ``userdata.py``; Binance retired the spot listenKey
on 2026-02-20); USD-M (``/fapi/v1/listenKey``) and COIN-M (``/dapi/v1/listenKey``) keep their
listenKey streams, read by Aster's user-stream loop (``astra.venues.aster.userdata``: Aster
copies Binance's payloads field for field, and both paths share its event decoding).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import msgspec

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.aster.feed import DiffBook, Snapshot
from astra.venues.aster.userdata import UserDataSink, run_user_stream
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .feed import BookConsumer, TradeConsumer
from .private import BinancePrivate, private_api_urls
from .schemas import AggTrade, OptionRecentTrade
from .streams import FUTURES_LIMITS, OPTIONS_LIMITS, SPOT_LIMITS, Limits, StreamPool
from .symbols import SECTIONS, markets_from_exchange_info
from .userdata import run_spot_user_stream, sign_params
from .weights import (
    BUDGETS,
    DEPTH_WEIGHTS,
    EXCHANGE_INFO_WEIGHTS,
    TRADES_MAX_LIMITS,
    TRADES_WEIGHTS,
)

__all__ = ["CAPABILITIES", "BinanceUrls", "BinanceVenue", "from_config"]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP", "FUT", "OPT"),
    orderbook=(
        "<symbol>@depth@100ms diffs over a REST depth?limit=1000 snapshot; "
        "U/u (spot), pu (USD-M, COIN-M, options); combined streams, many markets per connection"
    ),
    trades="<symbol>@aggTrade (options: <symbol>@optionTrade)",
    rest="ccxt binance (api, fapi, dapi, eapi)",
)

# ccxt implicit API methods per product (VenueMarket.kind).
_EXCHANGE_INFO = {
    "spot": "publicGetExchangeInfo",
    "usdm": "fapiPublicGetExchangeInfo",
    "coinm": "dapiPublicGetExchangeInfo",
    "option": "eapiPublicGetExchangeInfo",
}
_DEPTH = {
    "spot": "publicGetDepth",
    "usdm": "fapiPublicGetDepth",
    "coinm": "dapiPublicGetDepth",
    "option": "eapiPublicGetDepth",
}
_TRADES = {
    "spot": "publicGetAggTrades",
    "usdm": "fapiPublicGetAggTrades",
    "coinm": "dapiPublicGetAggTrades",
    "option": "eapiPublicGetTrades",
}
# Binance's documented per-connection limits per product (see streams.py for the sources).
_LIMITS = {
    "spot": SPOT_LIMITS,
    "usdm": FUTURES_LIMITS,
    "coinm": FUTURES_LIMITS,
    "option": OPTIONS_LIMITS,
}


@dataclass(frozen=True, slots=True)
class BinanceUrls:
    """REST roots (ccxt appends ``/v3``, ``/v1``) and WebSocket roots (``/stream``, the
    combined-stream endpoint, is appended). USD-M routes streams by category: depth on
    ``/public``, aggTrade on ``/market`` (the unrouted ``fstream.binance.com/ws`` stops
    carrying ``/market`` streams); options streams live on the same ``/public`` route.
    ``spot_ws_api`` is the spot WebSocket API (user data), used as it is."""

    spot_rest: str = "https://api.binance.com/api"
    usdm_rest: str = "https://fapi.binance.com/fapi"
    coinm_rest: str = "https://dapi.binance.com/dapi"
    option_rest: str = "https://eapi.binance.com/eapi"
    spot_ws: str = "wss://stream.binance.com:9443"
    usdm_ws: str = "wss://fstream.binance.com/public"
    usdm_market_ws: str = "wss://fstream.binance.com/market"
    coinm_ws: str = "wss://dstream.binance.com"
    option_ws: str = "wss://fstream.binance.com/public"
    spot_ws_api: str = "wss://ws-api.binance.com:443/ws-api/v3"

    @classmethod
    def at(cls, base_url: str) -> BinanceUrls:
        """Every product served by one local server at ``base_url`` (``http://host:port``),
        e.g. a replayer: REST under ``/api``, ``/fapi``, ``/dapi``, ``/eapi``; streams under
        ``/stream``, ``/fstream/public``, ``/fstream/market``, ``/dstream``, ``/eoptions``;
        the spot WebSocket API on ``/ws-api/v3``."""
        base = base_url.rstrip("/")
        ws = "ws" + base[len("http") :]
        return cls(
            f"{base}/api",
            f"{base}/fapi",
            f"{base}/dapi",
            f"{base}/eapi",
            f"{ws}/stream",
            f"{ws}/fstream/public",
            f"{ws}/fstream/market",
            f"{ws}/dstream",
            f"{ws}/eoptions",
            f"{ws}/ws-api/v3",
        )


_REST_KEYS = ("public", "fapiPublic", "dapiPublic", "eapiPublic")
_URL_KEYS = frozenset(f.name for f in dataclasses.fields(BinanceUrls))
_OPTION_KEYS = frozenset(
    {
        "silence",
        "heartbeat",
        "max_connection_age",
        "snapshot_limit",
        "sections",
        "streams_per_connection",
    }
)
# Per futures user stream: the ``GET /balances?account=`` value reading its wallet
# (``Balance.account``). ccxt reads USD-M with "future"; COIN-M needs a subType the gateway
# does not pass, so no ``account=`` value reads it: None.
_BALANCE_ACCOUNTS: dict[str, str | None] = {"usdm": "future", "coinm": None}


class BinanceVenue(Venue):
    """``exchange_info`` (raw exchangeInfo responses by section: ``spot``, ``usdm``,
    ``coinm``, ``option``) replaces the REST fetch of the markets; ``sections`` picks the
    products fetched otherwise. ``max_connection_age`` (seconds) is when a stream connection
    is replaced on its own, ahead of Binance's 24 h cut-off. ``streams_per_connection``
    lowers every product's documented stream cap per connection (tests, cautious setups)."""

    capabilities = CAPABILITIES
    live_trades = True  # trade consumers report their subscription (feed.TradeConsumer)
    order_id_pattern = "[0-9]{1,20}"  # orderId is a LONG on spot, USD-M, COIN-M and options
    # User data streams: futures listenKey keep-alive period (Binance: valid 60 min, PUT every
    # 30) and how long a quiet socket is trusted (an idle account sends nothing; the WebSocket
    # heartbeat already detects a dead connection, so this is only a backstop). The spot
    # WebSocket API connection is also replaced at ``max_connection_age``.
    user_stream_keepalive: float = 1800.0
    user_stream_silence: float = 3600.0

    def __init__(
        self,
        code: str = "BINANCE",
        urls: BinanceUrls | None = None,
        *,
        exchange_info: Mapping[str, dict] | None = None,
        sections: tuple[str, ...] = SECTIONS,
        silence: float = 120.0,
        heartbeat: float | None = 20.0,
        max_connection_age: float | None = 23.5 * 3600,
        snapshot_limit: int = 1000,
        streams_per_connection: int | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown Binance sections {sorted(unknown)}; expected {SECTIONS}")
        self.code = code
        self.urls = urls or BinanceUrls()
        self.sections = tuple(sections)
        self.silence, self.heartbeat = silence, heartbeat
        self.max_connection_age, self.snapshot_limit = max_connection_age, snapshot_limit
        self.limits: dict[str, Limits] = {
            kind: limits
            if streams_per_connection is None
            else dataclasses.replace(
                limits, max_streams=max(1, min(limits.max_streams, streams_per_connection))
            )
            for kind, limits in _LIMITS.items()
        }
        # One pool of shared connections per (product, endpoint): the product sets the limits.
        self.pools: dict[tuple[str, str], StreamPool] = {}
        # One ccxt client and one limiter (weights, 429/418 pause) per product: Binance
        # counts request weight per IP separately for api, fapi, dapi and eapi. Each keeps a
        # snapshot's weight from trade fetches; it may burst a snapshot and a trade fetch.
        self._clients: dict[str, ccxt_async.binance] = {}
        self.limiters = {
            section: public_rest.public_limiter(
                code,
                per=60.0,
                limit=BUDGETS[section],
                reserve=(snap := public_rest.weight_for(DEPTH_WEIGHTS[section], snapshot_limit)),
                burst=snap + TRADES_WEIGHTS[section],
                scope=section,
            )
            for section in SECTIONS
        }
        self.limiter: VenueLimiter = self.limiters["spot"]  # calls naming no product
        self._exchange_info = exchange_info
        self._own_session = session is None
        self._session = session
        self._markets: dict[str, VenueMarket] | None = None
        self._ccxt_markets: dict[str, dict] = {}  # Astra symbol -> ccxt unified market
        self._market_source: ccxt_async.binance | None = None  # those markets, indexed
        self._position_kinds: tuple[str, ...] = ("linear",)  # products holding positions
        self._private_http = PrivateHttp()
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, options: Mapping[str, object], code: str = "BINANCE") -> BinanceVenue:
        """From a ``[venues.BINANCE]`` table: any ``BinanceUrls`` field, plus ``silence``,
        ``heartbeat``, ``max_connection_age``, ``snapshot_limit``, ``sections`` and
        ``streams_per_connection``."""
        options = dict(options)
        unknown = set(options) - _URL_KEYS - _OPTION_KEYS
        if unknown:
            raise ValueError(f"venue {code}: unknown options {sorted(unknown)}")
        urls = BinanceUrls(**{k: str(options.pop(k)) for k in list(options) if k in _URL_KEYS})
        if "sections" in options:
            options["sections"] = tuple(options["sections"])
        return cls(code, urls, **options)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _client(self, section: str) -> ccxt_async.binance:
        client = self._clients.get(section)
        if client is None:
            # ccxt's throttle off: the product's limiter paces by the documented weights.
            client = self._clients[section] = ccxt_async.binance({"enableRateLimit": False})
            self.limiters[section].attach(client)  # sees 429/418 + Retry-After first
            api, urls = client.urls["api"], self.urls
            api["public"] = f"{urls.spot_rest}/v3"
            api["fapiPublic"] = f"{urls.usdm_rest}/v1"
            api["dapiPublic"] = f"{urls.coinm_rest}/v1"
            api["eapiPublic"] = f"{urls.option_rest}/v1"
            if not any(api[k].startswith("https") for k in _REST_KEYS):
                client.timeout_on_exit = 0  # ccxt's 0.25 s linger on close is for TLS only
        return client

    def _call(self, section: str, method: str, params: dict):
        """One ccxt implicit-API call of a product (paced by the caller)."""
        return lambda: getattr(self._client(section), method)(params)

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                responses = self._exchange_info
                if responses is None:
                    # All or nothing: a partial list would be cached as if complete.
                    bodies = await asyncio.gather(*(
                        public_rest.markets(self.limiters[s], EXCHANGE_INFO_WEIGHTS[s],
                                            self._call(s, _EXCHANGE_INFO[s], {}))
                        for s in self.sections
                    ))  # fmt: skip
                    responses = dict(zip(self.sections, bodies, strict=True))
                parsed: dict[str, dict] = {}
                self._markets = markets_from_exchange_info(
                    self._client("spot"), self.code, responses, parsed
                )
                self._ccxt_markets = parsed
        return self._markets

    # --- trading -------------------------------------------------------------------------

    def limiter_for(
        self, market: VenueMarket | None = None, *, url: str | None = None
    ) -> VenueLimiter:
        """The product's limiter: ``market``'s kind, or the product whose REST root ``url``
        is under (``/fapi`` USD-M, ``/dapi`` COIN-M, ``/eapi`` options by default); anything
        else (spot, ``/sapi``, no market) is spot's. Binance counts each product's weight
        apart, and one trading client calls several: each answer goes to its own budget."""
        if market is not None:
            return self.limiters.get(market.kind, self.limiter)
        if url is not None:
            urls = self.urls
            for root, kind in ((urls.usdm_rest, "usdm"), (urls.coinm_rest, "coinm"),
                               (urls.option_rest, "option")):  # fmt: skip
                if url.startswith(f"{root.rstrip('/')}/"):
                    return self.limiters[kind]
        return self.limiter

    def private_client(self, config: Mapping[str, object]) -> BinancePrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``)
        trading spot, USD-M and COIN-M markets on this venue's REST roots, sharing the markets
        already loaded (no extra round trip) and one keep-alive HTTP session (no cookies).
        The caller closes it; closing leaves the shared session open."""
        urls = self.urls
        options = dict(config.get("options") or {})  # type: ignore[call-overload]
        client = BinancePrivate({**config, "session": self._trading_http(), "options": options})
        client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
        api = private_api_urls(urls.spot_rest, urls.usdm_rest, urls.coinm_rest, urls.option_rest)
        client.urls["api"].update(api)
        client.astra_families = (
            (f"{urls.usdm_rest.rstrip('/')}/", "linear"),
            (f"{urls.coinm_rest.rstrip('/')}/", "inverse"),
            (f"{urls.option_rest.rstrip('/')}/", "option"),
            (f"{urls.spot_rest.rstrip('/')}/", "spot"),
            (api["sapi"].removesuffix("v1"), "spot"),
        )
        source = self._markets_for_trading()
        if source is not None:
            client.set_markets_from_exchange(source)
            client.astra_position_kinds = self._position_kinds
        return client

    async def run_user_stream(self, config: Mapping[str, object], sink: UserDataSink) -> None:
        """Orders, fills and balances of the account behind ``config`` (ccxt credentials),
        from the user data stream of each product with markets loaded (spot on the WebSocket
        API, USD-M and COIN-M each on its own listenKey; one connection each, concurrently),
        until cancelled. A product whose subscription or listenKey is refused (e.g. a key
        without futures permission) keeps retrying with backoff and resyncs; the others are
        unaffected."""
        markets = await self.load_markets()
        # One mapping per product: a spot id and a futures id can be the same (BTCUSDT).
        by_kind: dict[str, dict[str, str]] = {}
        for m in markets.values():
            by_kind.setdefault(m.kind, {})[m.exchange_symbol] = m.symbol
        client = self.private_client(config)
        try:
            async with asyncio.TaskGroup() as group:
                if by_kind.get("spot"):
                    group.create_task(run_spot_user_stream(
                        self._trading_http(), self.urls.spot_ws_api, lambda: sign_params(client),
                        by_kind["spot"], self.code, sink, silence=self.user_stream_silence,
                        max_age=self.max_connection_age))  # fmt: skip
                for kind, (ws_base, create, keepalive) in self._user_streams(client).items():
                    if by_kind.get(kind):
                        group.create_task(run_user_stream(
                            self._trading_http(), ws_base, create, keepalive, by_kind[kind],
                            self.code, sink, keepalive=self.user_stream_keepalive,
                            silence=self.user_stream_silence,
                            account=_BALANCE_ACCOUNTS[kind]))  # fmt: skip
        finally:
            await client.close()

    def _user_streams(self, client: BinancePrivate) -> dict[str, tuple[str, Any, Any]]:
        """Per futures product: the WebSocket root (``<root>/ws/<listenKey>``) and the
        listenKey create / keep-alive calls (spot has no listenKey any more)."""
        urls = self.urls
        return {
            "usdm": (
                _private_route(urls.usdm_ws),
                client.fapiPrivatePostListenKey,
                client.fapiPrivatePutListenKey,
            ),
            "coinm": (
                urls.coinm_ws,
                client.dapiPrivatePostListenKey,
                client.dapiPrivatePutListenKey,
            ),
        }

    def _markets_for_trading(self) -> ccxt_async.binance | None:
        """A ccxt client holding the loaded markets, indexed once (``set_markets`` costs
        ~0.1 s per thousand markets; clients then share its tables by reference)."""
        if self._market_source is None and self._ccxt_markets:
            source = ccxt_async.binance()
            source.set_markets(list(self._ccxt_markets.values()))
            kinds = {m.kind for m in (self._markets or {}).values()}
            self._position_kinds = tuple(
                k for k, section in (("linear", "usdm"), ("inverse", "coinm")) if section in kinds
            ) or ("linear",)
            self._market_source = source
        return self._market_source

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    def stream_address(self, market: VenueMarket, channel: str) -> tuple[str, str]:
        """The combined-stream URL and the stream name of ``channel`` (``depth`` or
        ``trades``) for ``market``."""
        urls, sym = self.urls, market.exchange_symbol.lower()
        if channel == "depth":
            base = {"spot": urls.spot_ws, "usdm": urls.usdm_ws, "coinm": urls.coinm_ws}.get(
                market.kind, urls.option_ws
            )
            return f"{base}/stream", f"{sym}@depth@100ms"
        if market.kind == "option":
            return f"{urls.option_ws}/stream", f"{sym}@optionTrade"
        base = {"spot": urls.spot_ws, "usdm": urls.usdm_market_ws}.get(market.kind, urls.coinm_ws)
        return f"{base}/stream", f"{sym}@aggTrade"

    def _pool(self, kind: str, url: str) -> StreamPool:
        pool = self.pools.get((kind, url))
        if pool is None:
            pool = self.pools[kind, url] = StreamPool(
                self._http,
                url,
                self.limits[kind],
                heartbeat=self.heartbeat,
                silence=self.silence,
                max_age=self.max_connection_age,
            )
        return pool

    async def _consume(self, market: VenueMarket, channel: str, consumer) -> None:
        """Keep ``consumer`` on ``market``'s ``channel`` stream until cancelled; then the
        stream is unsubscribed (or its connection closed, if it was the last one there)."""
        url, stream = self.stream_address(market, channel)
        pool = self._pool(market.kind, url)
        connection = pool.add(stream, consumer)
        try:
            await asyncio.get_running_loop().create_future()  # resolved by nobody: cancel ends it
        finally:
            pool.remove(connection, stream, consumer)
            consumer.close()

    async def snapshot(self, market: VenueMarket) -> Snapshot:
        request = {"symbol": market.exchange_symbol, "limit": self.snapshot_limit}
        weight = public_rest.weight_for(DEPTH_WEIGHTS[market.kind], self.snapshot_limit)
        call = self._call(market.kind, _DEPTH[market.kind], request)
        raw = await public_rest.snapshot(self.limiters[market.kind], weight, call)
        return Snapshot(
            last_update_id=int(raw["lastUpdateId"] if "lastUpdateId" in raw else raw["u"]),
            # Spot snapshots carry no time: stamp them on arrival.
            timestamp=int(raw.get("E") or raw.get("T") or time.time() * 1000),
            bids=[(float(p), float(q)) for p, q in raw["bids"]],
            asks=[(float(p), float(q)) for p, q in raw["asks"]],
        )

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        book = DiffBook(
            use_pu=market.kind != "spot",
            fetch_snapshot=lambda: self.snapshot(market),
            sink=sink,
            market=market.symbol,
        )
        await self._consume(market, "depth", BookConsumer(book))

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        consumer = TradeConsumer(sink, market.symbol, option=market.kind == "option")
        await self._consume(market, "trades", consumer)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        # Within the product's documented maximum: options refuse more than 500.
        limit = max(1, min(limit, TRADES_MAX_LIMITS[market.kind]))
        request = {"symbol": market.exchange_symbol, "limit": limit}
        rows = await public_rest.trades(
            self.limiters[market.kind],
            TRADES_WEIGHTS[market.kind],
            self._call(market.kind, _TRADES[market.kind], request),
        )
        if market.kind == "option":
            # convert() ignores fields the Struct does not declare (venues add fields).
            parsed = msgspec.convert(rows, list[OptionRecentTrade])
            return sorted((row.to_trade() for row in parsed), key=lambda t: t.time)
        return [
            AggTrade(
                "aggTrade", row["T"], market.exchange_symbol, row["a"], row["p"], row["q"],
                row["f"], row["l"], row["T"], row["m"],
            ).to_trade()
            for row in rows
        ]  # fmt: skip

    async def close(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
        # ccxt's close() lingers 0.25 s even when it never opened a session: skip those.
        opened = [c for c in self._clients.values() if c.session is not None]
        self._clients.clear()
        await asyncio.gather(*(client.close() for client in opened))
        await self._private_http.close()
        if self._own_session and self._session is not None:
            await self._session.close()


def _private_route(ws_root: str) -> str:
    """USD-M user data lives on the ``/private`` route of the host whose ``/public`` and
    ``/market`` routes carry market data; an unrouted root is used as it is."""
    root = ws_root.rstrip("/")
    for route in ("/public", "/market"):
        if root.endswith(route):
            return root[: -len(route)] + "/private"
    return root


def from_config(code: str, options: dict) -> BinanceVenue:
    """What the venue registry calls for a ``[venues.BINANCE]`` section."""
    return BinanceVenue.from_config(options, code)
