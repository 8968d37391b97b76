"""The KuCoin venue: spot (``api.kucoin.com``) and futures (``api-futures.kucoin.com``).

Markets are ccxt's (``kucoin`` for spot, ``kucoinfutures`` for contracts), parsed from the
venue's raw instrument lists; market data comes from native WebSocket feed handlers
(``feed.py``): every market's topics are multiplexed on shared connections, one per connect
token (``connection.py``: up to 300 topics per spot connection, 100 per futures one, batched
live (un)subscribes paced under KuCoin's 100 messages per 10 s).
REST (tokens, snapshots, recent trades) is plain aiohttp so 429s and ``Retry-After`` are
seen; it is paced by the venue's ``public_limiter`` (trading has its own ``limiter``: private
calls count per UID) at the documented weights of KuCoin's per-IP Public resource pool
(``astra.venues.public_rest``): a snapshot goes ahead of recent-trade fetches, which are low
priority and refused (429) rather than queued.
Every URL is configurable: REST bases, and optionally the WebSocket endpoint that
``bullet-public`` would hand out (for replayers). ``markets_source`` replaces the instrument
download (tests, cached instrument files).

Spot book snapshots: without credentials, the public top-100 snapshot
(``/api/v1/market/orderbook/level2_100``) bounds the book to the price range it covers
(see ``feed.py``); with an API key (General permission) the full-depth
``/api/v3/market/orderbook/level2`` is used. Futures snapshots are full depth and public.
Futures quantities (book and trades) are in lots here; the gateway serves them in base units
(``astra.core.ContractUnits``, from ``contractSize``).

Trading (``private_client``, used by ``astra.trading.service``): one ccxt ``kucoin`` client
per set of credentials (``private.py``) trades spot and futures markets on the configured
REST bases, sharing the markets already loaded. ``hf`` (default true: spot orders on the
high-frequency endpoints) and ``uta`` (default false: the unified-account API) say which
account mode the keys trade in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
import ccxt.pro as ccxt_pro
import msgspec

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.ccxt_user_stream import UserDataSink, ccxt_symbols, run_ccxt_user_stream
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from . import rest
from .connection import (
    FUTURES_TOPICS_PER_CONNECTION,
    SPOT_TOPICS_PER_CONNECTION,
    TopicPool,
)
from .feed import Level2Book, Snapshot, TradeConsumer
from .private import KucoinPrivate
from .rest import POOL_WINDOW, PUBLIC_POOL, WEIGHTS, KucoinCredentials, RestError
from .schemas import (
    Bullet,
    ContractExecution,
    ContractLevel2,
    ContractSnapshot,
    ContractTradeHistory,
    Level2,
    Match,
    SpotSnapshot,
    SpotTradeHistory,
)
from .symbols import markets_from_ccxt, parse_ccxt_markets
from .userdata import KucoinUserStream

__all__ = [
    "CAPABILITIES",
    "KucoinCredentials",
    "KucoinUrls",
    "KucoinVenue",
    "RestError",
    "from_config",
]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP", "FUT"),
    orderbook=(
        "/market/level2 and /contractMarket/level2 increments over a REST snapshot; "
        "sequenceStart/sequenceEnd continuity, per-change sequence; many markets per connection"
    ),
    trades="/market/match, /contractMarket/execution",
    rest="api.kucoin.com, api-futures.kucoin.com (instruments parsed by ccxt kucoin)",
)

SPOT_SNAPSHOT_DEPTH = 100  # the deepest public spot snapshot
# Payloads only: the shared connection decodes each frame's envelope and routes its data.
_decode_level2 = msgspec.json.Decoder(Level2).decode
_decode_contract_level2 = msgspec.json.Decoder(ContractLevel2).decode
_decode_match = msgspec.json.Decoder(Match).decode
_decode_execution = msgspec.json.Decoder(ContractExecution).decode
MarketsSource = Callable[[], Awaitable[Iterable[dict]]]


@dataclass(frozen=True, slots=True)
class KucoinUrls:
    spot_rest: str = "https://api.kucoin.com"
    futures_rest: str = "https://api-futures.kucoin.com"
    spot_ws: str | None = None  # replaces the endpoint spot bullet-public returns
    futures_ws: str | None = None  # replaces the endpoint futures bullet-public returns

    @classmethod
    def for_server(cls, base_url: str) -> KucoinUrls:
        """One server (a fake, a replayer) answering both spot and futures REST."""
        base = base_url.rstrip("/")
        return cls(spot_rest=base, futures_rest=base)


_URL_KEYS = frozenset(f.name for f in fields(KucoinUrls))
_CREDENTIAL_KEYS = frozenset({"api_key", "api_secret", "api_passphrase"})
_OPTION_KEYS = frozenset(
    {"silence", "max_connection_age", "min_levels", "topics_per_connection", "hf", "uta",
     "futures_user_stream"}
)


class KucoinVenue(Venue):
    """``topics_per_connection`` lowers the documented topic cap of every connection (tests,
    cautious setups); ``max_connection_age`` replaces a connection before its token expires.
    ``hf``/``uta``: the trading keys' account mode (see the module docstring)."""

    capabilities = CAPABILITIES
    live_trades = True  # trade consumers report their subscription (feed.TradeConsumer)

    def __init__(
        self,
        code: str = "KUCOIN",
        urls: KucoinUrls | None = None,
        *,
        credentials: KucoinCredentials | None = None,
        markets_source: MarketsSource | None = None,
        silence: float = 60.0,
        max_connection_age: float = 23 * 3600.0,
        min_levels: int = 20,
        topics_per_connection: int | None = None,
        hf: bool = True,
        uta: bool = False,
        futures_user_stream: bool = True,
    ) -> None:
        self.code = code
        self.futures_user_stream = bool(futures_user_stream)
        self.hf, self.uta = bool(hf), bool(uta)
        self.urls = urls or KucoinUrls()
        self.credentials = credentials
        self.silence = silence
        self.max_connection_age = max_connection_age
        self.min_levels = min_levels
        caps = {"spot": SPOT_TOPICS_PER_CONNECTION, "futures": FUTURES_TOPICS_PER_CONNECTION}
        if topics_per_connection is not None:
            caps = {side: max(1, min(cap, topics_per_connection)) for side, cap in caps.items()}
        self.topics_per_connection = caps
        self.pools: dict[str, TopicPool] = {}  # by side: one connect token per connection
        self._markets_source = markets_source or self._download_markets
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._ccxt_markets: list[dict] = []  # ccxt's parse of both: what trading clients get
        self._market_source: KucoinPrivate | None = None  # those markets, indexed once
        self._private_http = PrivateHttp()
        self._lock = asyncio.Lock()
        # One budget per IP for public REST; a snapshot's weight is kept from trade fetches.
        snapshot = max(WEIGHTS["spot"]["snapshot"], WEIGHTS["futures"]["snapshot"])
        self.public_limiter = public_rest.public_limiter(
            code, per=POOL_WINDOW, limit=PUBLIC_POOL, reserve=snapshot
        )
        # Trading's own: KuCoin counts private calls per UID (its Spot and Futures pools),
        # so one account's 429 closes neither public REST nor the snapshots.
        self.limiter = VenueLimiter(code)

    @classmethod
    def from_config(cls, options: dict[str, Any], code: str = "KUCOIN") -> KucoinVenue:
        """From a ``[venues.KUCOIN]`` table: URL fields of ``KucoinUrls``, optional
        ``api_key``/``api_secret``/``api_passphrase``, ``silence``, ``max_connection_age``,
        ``min_levels``, ``topics_per_connection``, ``hf``, ``uta``. Unknown keys are an
        error."""
        unknown = set(options) - _URL_KEYS - _CREDENTIAL_KEYS - _OPTION_KEYS
        if unknown:
            raise ValueError(f"venue {code}: unknown options {sorted(unknown)}")
        given = _CREDENTIAL_KEYS & set(options)
        if given and given != _CREDENTIAL_KEYS:
            raise ValueError(f"venue {code}: api_key, api_secret and api_passphrase go together")
        credentials = KucoinCredentials(**{k: options[k] for k in given}) if given else None
        return cls(
            code,
            KucoinUrls(**{k: options[k] for k in _URL_KEYS & set(options)}),
            credentials=credentials,
            **{k: options[k] for k in _OPTION_KEYS & set(options)},
        )

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _download_markets(self) -> list[dict]:
        http = self._http()
        symbols, contracts = await asyncio.gather(
            rest.get(http, self.urls.spot_rest, "/api/v2/symbols", Any),
            rest.get(http, self.urls.futures_rest, "/api/v1/contracts/active", Any),
        )
        # ccxt parses whole responses; the envelope was checked (and dropped) above.
        return parse_ccxt_markets({"code": "200000", "data": symbols}, {"data": contracts})

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                weight = WEIGHTS["spot"]["markets"] + WEIGHTS["futures"]["markets"]
                source = await public_rest.markets(
                    self.public_limiter, weight, self._markets_source
                )
                parsed = list(source)
                self._markets = markets_from_ccxt(self.code, parsed)
                self._ccxt_markets = parsed
        return self._markets

    # -- trading -----------------------------------------------------------------------------

    def private_client(self, config: Mapping[str, Any]) -> KucoinPrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``)
        trading spot and futures on this venue's REST bases, sharing the loaded markets (no
        round trip) and one cookie-less HTTP session. The caller closes it; closing leaves
        the shared session open."""
        options = {**(config.get("options") or {}), "hf": self.hf, "uta": self.uta}
        client = KucoinPrivate({
            **config,
            # ccxt's throttle is per instance: on a client living for one call it only delays
            # the call's second request. The gateway's per-venue limiter paces instead.
            "enableRateLimit": False,
            "session": self._trading_http(),
            "options": options,
        })
        client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
        self._route(client)
        source = self._trading_source()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    def _route(self, client: Any) -> None:
        api = client.urls["api"]
        for name in ("public", "private", "earn", "uta", "utaV2", "utaPrivate"):
            api[name] = self.urls.spot_rest.rstrip("/")
        api["futuresPublic"] = api["futuresPrivate"] = self.urls.futures_rest.rstrip("/")

    def user_stream_client(self, config: Mapping[str, Any]) -> ccxt_pro.kucoin:
        """A ccxt.pro client for one set of credentials on this venue's REST bases (the
        private connect token, ``POST /api/v1/bullet-private``, names the WebSocket endpoint),
        sharing the loaded markets. The caller closes it. ``KucoinUserStream``: ccxt.pro's
        kucoin with spot and futures order/trade caches apart (with one shared cache, a spot
        and a futures event arriving together were each delivered by both watches)."""
        options = {
            **(config.get("options") or {}), "hf": self.hf, "uta": self.uta,
            # No REST balance under the stream: the client re-reads REST on every resync.
            "watchBalance": {"fetchBalanceSnapshot": False},
        }
        client = KucoinUserStream({**config, "enableRateLimit": False, "options": options})
        self._route(client)
        source = self._trading_source()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    async def run_user_stream(self, config: Mapping[str, Any], sink: UserDataSink) -> None:
        """Orders, fills and balances of the account behind ``config`` (ccxt credentials)
        until cancelled: ccxt.pro's ``watch_orders``/``watch_my_trades`` (spot
        ``/spotMarket/tradeOrders``; futures ``/contractMarket/tradeOrders`` when futures
        markets are loaded) and ``watch_balance`` (``/account/balance``; futures
        ``/contractAccount/wallet``), on private channels. Every (re)connect calls
        ``sink.on_resync``; failures reconnect with a fresh client after a backoff."""
        markets = await self.load_markets()
        source = self._trading_source()
        symbols = ccxt_symbols(source, markets.values()) if source is not None else {}
        watches: list = [
            ("orders", lambda c: c.watch_orders(params={"type": "spot"})),
            ("trades", lambda c: c.watch_my_trades(params={"type": "spot"})),
            ("balance", lambda c: c.watch_balance({"type": "spot"}), "spot"),
        ]
        if self.futures_user_stream and any(m.kind != "spot" for m in markets.values()):
            watches += [
                ("orders", lambda c: c.watch_orders(params={"type": "swap"})),
                ("trades", lambda c: c.watch_my_trades(params={"type": "swap"})),
                # ccxt's "contract" here; ``GET /balances`` reads it with "future"
                ("balance", lambda c: c.watch_balance({"type": "contract"}), "future"),
            ]
        await run_ccxt_user_stream(
            lambda: self.user_stream_client(config), watches, symbols, self.code, sink
        )

    def _trading_source(self) -> KucoinPrivate | None:
        """A ccxt client (never opened) holding the loaded markets, indexed once: trading
        clients share its tables by reference (``set_markets_from_exchange``)."""
        if self._market_source is None and self._ccxt_markets:
            source = KucoinPrivate()
            source.set_markets(self._ccxt_markets)
            self._market_source = source
        return self._market_source

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    def _rest_base(self, market: VenueMarket) -> str:
        return self.urls.spot_rest if market.kind == "spot" else self.urls.futures_rest

    async def bullet(self, market: VenueMarket) -> Bullet:
        """A fresh public connect token for ``market``'s side (spot or futures)."""
        base, side = self._rest_base(market), "spot" if market.kind == "spot" else "futures"
        return await public_rest.snapshot(  # a normal request, as a snapshot is
            self.public_limiter,
            WEIGHTS[side]["bullet"],
            lambda: rest.post(self._http(), base, "/api/v1/bullet-public", Bullet),
        )

    async def snapshot(self, market: VenueMarket) -> Snapshot:
        http, symbol = self._http(), market.exchange_symbol
        if market.kind != "spot":
            path = f"/api/v1/level2/snapshot?symbol={symbol}"
            base = self.urls.futures_rest
            raw = await public_rest.snapshot(
                self.public_limiter,
                WEIGHTS["futures"]["snapshot"],
                lambda: rest.get(http, base, path, ContractSnapshot, strict=False),
            )
            return Snapshot(raw.sequence, raw.ts // 1_000_000, raw.bids, raw.asks)
        if self.credentials is not None:
            path, depth = f"/api/v3/market/orderbook/level2?symbol={symbol}", None
            weight = WEIGHTS["spot"]["full_snapshot"]
        else:
            path = f"/api/v1/market/orderbook/level2_{SPOT_SNAPSHOT_DEPTH}?symbol={symbol}"
            depth, weight = SPOT_SNAPSHOT_DEPTH, WEIGHTS["spot"]["snapshot"]
        raw = await public_rest.snapshot(
            self.public_limiter,
            weight,
            lambda: rest.get(
                http, self.urls.spot_rest, path, SpotSnapshot, self.credentials, strict=False
            ),
        )
        return Snapshot(raw.sequence, raw.time, raw.bids, raw.asks, depth)

    def _pool(self, market: VenueMarket) -> TopicPool:
        side = "spot" if market.kind == "spot" else "futures"
        pool = self.pools.get(side)
        if pool is None:
            pool = self.pools[side] = TopicPool(
                self._http,
                lambda: self.bullet(market),  # any market of the side names the side
                max_topics=self.topics_per_connection[side],
                endpoint=self.urls.spot_ws if side == "spot" else self.urls.futures_ws,
                silence=self.silence,
                max_age=self.max_connection_age,
            )
        return pool

    async def _consume(self, market: VenueMarket, topic: str, consumer) -> None:
        """Keep ``consumer`` on ``topic`` until cancelled; then the topic is unsubscribed (or
        its connection closed, if it was the last topic there)."""
        pool = self._pool(market)
        connection = pool.add(topic, consumer)
        try:
            await asyncio.get_running_loop().create_future()  # resolved by nobody: cancel ends it
        finally:
            pool.remove(connection, topic, consumer)
            consumer.close()

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        spot = market.kind == "spot"
        topic = "/market/level2:" if spot else "/contractMarket/level2:"
        book = Level2Book(
            _decode_level2 if spot else _decode_contract_level2,
            fetch_snapshot=lambda: self.snapshot(market),
            sink=sink,
            market=market.symbol,
            min_levels=self.min_levels,
        )
        await self._consume(market, topic + market.exchange_symbol, book)

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        spot = market.kind == "spot"
        topic = "/market/match:" if spot else "/contractMarket/execution:"
        consumer = TradeConsumer(_decode_match if spot else _decode_execution, sink, market.symbol)
        await self._consume(market, topic + market.exchange_symbol, consumer)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        symbol = market.exchange_symbol
        if market.kind == "spot":
            path, row = f"/api/v1/market/histories?symbol={symbol}", SpotTradeHistory
            weight = WEIGHTS["spot"]["trades"]
        else:
            path, row = f"/api/v1/trade/history?symbol={symbol}", ContractTradeHistory
            weight = WEIGHTS["futures"]["trades"]
        rows = await public_rest.trades(
            self.public_limiter,
            weight,
            lambda: rest.get(self._http(), self._rest_base(market), path, list[row]),
        )
        if len(rows) > 1 and rows[0].nanos() > rows[-1].nanos():
            rows.reverse()  # newest first on the wire; reversing keeps same-time rows in order
        rows.sort(key=lambda r: r.nanos())
        return [r.to_trade() for r in rows[-limit:]] if limit > 0 else []

    async def close(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._private_http.close()


def from_config(code: str, options: dict) -> KucoinVenue:
    """What the venue registry calls for a ``[venues.KUCOIN]`` section."""
    return KucoinVenue.from_config(options, code)
