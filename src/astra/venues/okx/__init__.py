"""The OKX venue: SPOT, SWAP (PERP), FUTURES (FUT) and OPTION (OPT) markets.

Markets come from ccxt's ``okx`` (``parse_market``), either loaded live through ccxt or from
an injected source (a raw ``/api/v5/public/instruments`` response, or a ccxt object whose
markets are loaded), so tests and air-gapped setups touch no network. Market data comes from
native WebSocket feeds (``feed.py``: ``books`` with seqId + checksum, ``trades``) multiplexed
over shared connections (``stream.py``). Recent trades come from ``GET /api/v5/market/trades``
through ccxt. OKX limits public REST per endpoint (per IP), so each endpoint used has its own
limiter in ``limiters`` at its documented rate (``astra.venues.public_rest``; ccxt's throttle
off): ``market/trades`` 100 requests per 2 s (low priority, 429 rather than queued),
``public/instruments`` 20 per 2 s (markets loading: one request per instrument type and
option underlying). Books need no REST: their snapshots come over the WebSocket. Trading's
``limiter`` is the venue's own (OKX counts trading per account and endpoint).
Every URL is configurable (``OkxUrls``; ``from_config`` for ``[venues.OKX]``).

Trading (``private_client``, used by ``astra.trading.service``): one ccxt ``okx`` client per
set of credentials (``private.py``) on the configured REST root, sharing the markets already
loaded; ``simulated_trading`` adds OKX's ``x-simulated-trading: 1`` header (demo trading).

User data (``run_user_stream``, the gateway's ``WS /ws``): orders, fills and balances from
OKX's private WebSocket (``private_ws``) through ccxt.pro's ``okx`` (``userdata.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import msgspec

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.ccxt_user_stream import ccxt_symbols
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .book import decode_push
from .feed import run_book_feed, run_trade_feed
from .private import OkxPrivate
from .schemas import Push, TradeData
from .stream import StreamPool
from .symbols import instruments_from_raw, markets_from_ccxt
from .userdata import OkxUserStream, run_user_stream

__all__ = ["BOOK_CHANNELS", "CAPABILITIES", "ENDPOINT_LIMITS", "OkxUrls", "OkxVenue", "from_config"]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP", "FUT", "OPT"),
    orderbook="books (400 levels) snapshot + updates; prevSeqId == previous seqId, CRC32 top 25",
    trades="trades",
    rest="ccxt okx",
)
# Incremental book channels that share the snapshot/update + seqId/checksum rule.
# books-l2-tbt and books50-l2-tbt need a login (VIP tiers) on most accounts.
BOOK_CHANNELS = ("books", "books-l2-tbt", "books50-l2-tbt")
_PRIVATE_WS = "wss://ws.okx.com:8443/ws/v5/private"
# OKX's demo-trading private endpoint (with ``simulated_trading``).
_DEMO_PRIVATE_WS = "wss://wspap.okx.com:8443/ws/v5/private"
# OKX's documented per-endpoint limits (requests per 2 s, per IP) of the public REST used.
ENDPOINT_LIMITS = {"market/trades": 100, "public/instruments": 20}
ENDPOINT_WINDOW = 2.0
# Channels served on OKX's "business" endpoint rather than "public".
_BUSINESS_CHANNELS = ("trades-all",)


@dataclass(frozen=True, slots=True)
class OkxUrls:
    rest: str = "https://www.okx.com"
    public_ws: str = "wss://ws.okx.com:8443/ws/v5/public"
    business_ws: str = "wss://ws.okx.com:8443/ws/v5/business"
    private_ws: str = _PRIVATE_WS


class OkxVenue(Venue):
    capabilities = CAPABILITIES
    live_trades = True  # feed.TradeFeed reports its subscription

    def __init__(
        self,
        code: str = "OKX",
        urls: OkxUrls | None = None,
        *,
        markets: Any = None,
        book_channel: str = "books",
        trade_channel: str = "trades",
        verify_checksum: bool = True,
        ping_interval: float = 20.0,
        pong_timeout: float = 10.0,
        snapshot_timeout: float = 15.0,
        max_subscriptions: int = 64,
        simulated_trading: bool = False,
    ) -> None:
        """``markets``: None (load through ccxt), raw instruments JSON (dict, list, str or
        bytes), or a ccxt ``okx`` object with markets loaded. ``ping_interval`` must stay
        below 30 s (OKX drops idle connections after 30 s). ``simulated_trading``: private
        requests go to OKX's demo trading (with demo-trading API keys)."""
        if book_channel not in BOOK_CHANNELS:
            raise ValueError(f"OKX book_channel {book_channel!r}: expected one of {BOOK_CHANNELS}")
        self.code = code
        self.urls = urls or OkxUrls()
        self.book_channel, self.trade_channel = book_channel, trade_channel
        self.book_options = {
            "verify_checksum": verify_checksum,
            "snapshot_timeout": snapshot_timeout,
        }
        # ccxt's throttle off: the endpoint limiters pace public calls (ccxt's queues them
        # without bound).
        self._ccxt = ccxt_async.okx({"enableRateLimit": False})
        self.limiters = {
            endpoint: public_rest.public_limiter(
                code, per=ENDPOINT_WINDOW, limit=limit, scope=endpoint
            )
            for endpoint, limit in ENDPOINT_LIMITS.items()
        }
        self.limiter = VenueLimiter(code)  # trading's: OKX counts it per account apart
        self._ccxt.urls["api"]["rest"] = self.urls.rest.rstrip("/")
        self._source = markets
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._ccxt_markets: list[dict] = []  # the ccxt markets behind self._markets
        self._market_source: Any = None  # a ccxt okx object indexing them
        self._private_http = PrivateHttp()
        self.simulated_trading = simulated_trading
        self._lock = asyncio.Lock()
        stream_options = {
            "capacity": max_subscriptions,
            "ping_interval": ping_interval,
            "pong_timeout": pong_timeout,
        }
        trade_url = self.urls.business_ws if trade_channel in _BUSINESS_CHANNELS else None
        self.book_pool = StreamPool(
            self._http,
            self.urls.public_ws,
            decode_push,  # books pushes parsed by the C core where built, else msgspec
            **stream_options,
        )
        self.trade_pool = StreamPool(
            self._http,
            trade_url or self.urls.public_ws,
            msgspec.json.Decoder(Push[TradeData]).decode,
            **stream_options,
        )

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                found = await self._load_ccxt_markets()
                self._markets = markets_from_ccxt(self.code, found)
                self._ccxt_markets = found
        return self._markets

    # --- trading -------------------------------------------------------------------------

    def private_client(self, config: dict) -> OkxPrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``:
        key, secret, passphrase) on this venue's REST root, sharing the markets already
        loaded (no extra round trip) and one keep-alive HTTP session (no cookies). The caller
        closes it; closing leaves the shared session open."""
        client = OkxPrivate({
            **config,
            "session": self._trading_http(),
            "options": {**(config.get("options") or {})},
        })
        client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
        client.urls["api"]["rest"] = self.urls.rest.rstrip("/")
        if self.simulated_trading:
            client.headers = {**(client.headers or {}), "x-simulated-trading": "1"}
        source = self._markets_for_trading()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    async def run_user_stream(self, config: dict, sink: Any) -> None:
        """Orders, fills and balances of the account behind ``config`` (ccxt credentials:
        key, secret, passphrase) from OKX's private WebSocket (``orders`` for every
        instrument type, ``account``), until cancelled. Every login calls
        ``sink.on_resync``; any failure logs in again with a fresh client after a backoff.
        With ``simulated_trading`` and the default ``private_ws``, OKX's demo endpoint."""
        markets = await self.load_markets()
        source = self._markets_for_trading()
        symbols = ccxt_symbols(source, markets.values())
        url = self.urls.private_ws
        if self.simulated_trading and url == _PRIVATE_WS:
            url = _DEMO_PRIVATE_WS

        def make_client() -> OkxUserStream:
            client = OkxUserStream({
                **{k: v for k, v in config.items() if k != "session"},
                "options": {**(config.get("options") or {})},
            })
            client.astra_private_ws, client.astra_code = url, self.code
            client.astra_symbols = symbols
            client.urls["api"]["rest"] = self.urls.rest.rstrip("/")
            if source is not None:
                client.set_markets_from_exchange(source)
            return client

        await run_user_stream(make_client, self.code, sink)

    def _markets_for_trading(self) -> Any:
        """A ccxt okx object holding the loaded markets, indexed once (``set_markets``
        costs ~0.1 s per thousand markets; clients then share its tables by reference)."""
        if self._market_source is None:
            for candidate in (self._source, self._ccxt):
                if hasattr(candidate, "parse_market") and candidate.markets:
                    self._market_source = candidate
                    break
            else:
                if self._ccxt_markets:
                    source = ccxt_async.okx()
                    source.set_markets(self._ccxt_markets)
                    self._market_source = source
        return self._market_source

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    async def _load_ccxt_markets(self) -> list[dict]:
        source = self._source
        if source is None:
            # One instruments request per type, and per default underlying for options.
            types = self._ccxt.options["fetchMarkets"]["types"]
            underlyings = self._ccxt.options.get("defaultUnderlying") or ["BTC-USD", "ETH-USD"]
            weight = len(types) - ("option" in types) + ("option" in types) * len(underlyings)
            loaded = await public_rest.markets(
                self.limiters["public/instruments"], weight, self._ccxt.load_markets
            )
            return list(loaded.values())
        if hasattr(source, "parse_market"):  # a ccxt okx object, sync or async
            if not source.markets:
                raise ValueError("the injected ccxt object has no markets loaded")
            return list(source.markets.values())
        parsed = (self._ccxt.parse_market(inst) for inst in instruments_from_raw(source))
        return [m for m in parsed if m is not None]

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        await run_book_feed(
            self.book_pool,
            self.book_channel,
            market.exchange_symbol,
            market.symbol,
            sink,
            **self.book_options,
        )

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        await run_trade_feed(self.trade_pool, self.trade_channel, market.exchange_symbol, sink)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        request = {"instId": market.exchange_symbol, "limit": max(1, min(limit, 500))}
        raw = await public_rest.trades(
            self.limiters["market/trades"], 1, lambda: self._ccxt.publicGetMarketTrades(request)
        )
        if str(raw.get("code", "0")) != "0":
            raise RuntimeError(f"OKX error {raw.get('code')}: {raw.get('msg')}")
        rows = msgspec.convert(raw.get("data") or [], list[TradeData])
        return [row.to_trade() for row in reversed(rows)]  # OKX answers newest first

    async def close(self) -> None:
        await asyncio.gather(self.book_pool.close(), self.trade_pool.close())
        await self._ccxt.close()
        await self._private_http.close()
        if self._session is not None:
            await self._session.close()


_VENUE_OPTIONS = frozenset(
    {
        "simulated_trading",
        "book_channel",
        "trade_channel",
        "verify_checksum",
        "ping_interval",
        "pong_timeout",
        "snapshot_timeout",
        "max_subscriptions",
    }
)


def from_config(code: str, options: dict) -> OkxVenue:
    """``[venues.OKX]``: any ``OkxUrls`` field (``rest``, ``public_ws``, ``business_ws``,
    ``private_ws``) and
    the venue options above; unknown keys are refused by name."""
    url_fields = {f.name for f in dataclasses.fields(OkxUrls)}
    unknown = sorted(set(options) - url_fields - _VENUE_OPTIONS)
    if unknown:
        raise ValueError(f"venue {code}: unknown options {unknown}")
    urls = OkxUrls(**{k: v for k, v in options.items() if k in url_fields})
    return OkxVenue(code, urls, **{k: v for k, v in options.items() if k in _VENUE_OPTIONS})
