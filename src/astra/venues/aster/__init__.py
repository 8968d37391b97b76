"""The Aster venue (and ``SIM``, the built-in simulator, which speaks Aster's API).

REST (markets, depth snapshots, recent trades) goes through ccxt's ``aster`` client; market
data comes from native WebSocket feed handlers (``feed.py``). Public REST is paced by the
venue's ``limiter`` (shared with its private clients) at the documented request weights, not
by ccxt's throttle: a depth snapshot waits at most ``max_wait`` and goes ahead of recent-trade
fetches, which are low priority and refused (429) rather than queued. Every URL is
configurable, so the same adapter serves the live venue, a testnet, the simulator or a
replayer.
Private REST (``private_client``) is ``trading.AsterPrivate``: v3 with strictly increasing
nonces, or v1 (HMAC) for a key + secret.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import ccxt.async_support as ccxt_async

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .feed import Snapshot, run_book_feed, run_trade_feed
from .schemas import AggTrade
from .symbols import market_from_ccxt
from .trading import AsterPrivate
from .userdata import UserDataSink, run_user_stream

__all__ = ["CAPABILITIES", "AsterUrls", "AsterVenue"]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP"),
    orderbook="<symbol>@depth@100ms diffs over a REST snapshot; U/u (spot), pu (perpetual)",
    trades="<symbol>@aggTrade",
    rest="ccxt aster",
)


# Documented request weights (Aster's REST docs, the same on spot and perpetuals).
DEPTH_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}  # limit -> weight
AGG_TRADES_WEIGHT = 20
SNAPSHOT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AsterUrls:
    spot_rest: str = "https://sapi.asterdex.com/api"
    perp_rest: str = "https://fapi.asterdex.com/fapi"
    spot_ws: str = "wss://sstream.asterdex.com"
    perp_ws: str = "wss://fstream.asterdex.com"

    @classmethod
    def for_simulator(cls, base_url: str) -> AsterUrls:
        """URLs of an ``astra sim`` at ``base_url`` (``http://host:port``)."""
        base = base_url.rstrip("/")
        ws = "ws" + base[len("http") :]
        return cls(f"{base}/api", f"{base}/fapi", f"{ws}/sstream", f"{ws}/fstream")


class AsterVenue(Venue):
    capabilities = CAPABILITIES
    live_trades = True  # run_trade_feed reports its connection
    # ccxt aster reads the spot wallet with "spot" and the perpetual one with "swap"; order
    # ids are LONGs ("^[0-9]{1,20}$", the venue's -1100 otherwise).
    balance_accounts = ("spot", "swap")
    order_id_pattern = "[0-9]{1,20}"

    def __init__(
        self, code: str = "ASTER", urls: AsterUrls | None = None, silence: float = 60.0
    ) -> None:
        self.code = code
        self.urls = urls or AsterUrls()
        self.silence = silence
        # One budget per venue (it limits per IP); a snapshot's weight is kept from trades.
        self.limiter = VenueLimiter(code, reserve=DEPTH_WEIGHTS[SNAPSHOT_LIMIT])
        # ccxt's own throttle off: it queues every call without bound (aggTrades at cost 20 x
        # 333 ms), and the limiter paces by the documented weights instead.
        self._ccxt = ccxt_async.aster({"enableRateLimit": False, "options": {"builderFee": False}})
        self.limiter.attach(self._ccxt)  # sees 429/418 + Retry-After, as trading's clients do
        api = self._ccxt.urls["api"]
        api["sapiPublic"] = api["sapiPrivate"] = self.urls.spot_rest
        api["fapiPublic"] = api["fapiPrivate"] = self.urls.perp_rest
        self._session: aiohttp.ClientSession | None = None
        self._private_http = PrivateHttp()
        self._markets: dict[str, VenueMarket] | None = None
        self._lock = asyncio.Lock()

    def private_client(self, config: dict) -> AsterPrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``), on
        this venue's URLs, sharing the markets already loaded (no extra round trip)."""
        options = {"builderFee": False, **(config.get("options") or {})}
        client = AsterPrivate(
            {**config, "options": options, "session": self._trading_http(), "timeout_on_exit": 0},
            keepalive=self._private_http.keepalive())
        api = client.urls["api"]
        api["sapiPublic"] = api["sapiPrivate"] = self.urls.spot_rest
        api["fapiPublic"] = api["fapiPrivate"] = self.urls.perp_rest
        if self._ccxt.markets:
            client.set_markets(self._ccxt.markets, self._ccxt.currencies)
        return client

    async def run_user_stream(self, config: dict, sink: UserDataSink) -> None:
        """Orders, fills and balances of the account behind ``config`` (ccxt credentials),
        from the spot and perpetual user data streams, until cancelled."""
        markets = await self.load_markets()
        client = self.private_client(config)
        by_kind: dict[str, dict[str, str]] = {"spot": {}, "perp": {}}
        for m in markets.values():
            by_kind.setdefault(m.kind, {})[m.exchange_symbol] = m.symbol
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(run_user_stream(
                    self._http(), self.urls.spot_ws, client.sapiPrivatePostV3ListenKey,
                    client.sapiPrivatePutV3ListenKey, by_kind["spot"], self.code, sink,
                    account="spot"))
                group.create_task(run_user_stream(
                    self._http(), self.urls.perp_ws, client.fapiPrivatePostV3ListenKey,
                    client.fapiPrivatePutV3ListenKey, by_kind["perp"], self.code, sink,
                    account="swap"))  # ccxt aster reads the perpetual wallet with "swap"
        finally:
            await client.close()

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                raw = await self._ccxt.load_markets()
                found = (market_from_ccxt(self.code, m) for m in raw.values())
                self._markets = {m.symbol: m for m in found if m is not None}
        return self._markets

    def _ws_url(self, market: VenueMarket, stream: str) -> str:
        base = self.urls.perp_ws if market.kind == "perp" else self.urls.spot_ws
        return f"{base}/ws/{market.exchange_symbol.lower()}@{stream}"

    async def snapshot(self, market: VenueMarket, limit: int = SNAPSHOT_LIMIT) -> Snapshot:
        # Depth takes 1 to 1000 rows (Aster's docs, as Binance's); the weight is the bracket
        # of the rows actually asked for.
        request = {"symbol": market.exchange_symbol, "limit": max(1, min(limit, 1000))}
        ccxt = self._ccxt
        depth = ccxt.fapiPublicGetV3Depth if market.kind == "perp" else ccxt.sapiPublicGetV3Depth
        weight = public_rest.weight_for(DEPTH_WEIGHTS, request["limit"])
        raw = await public_rest.snapshot(self.limiter, weight, lambda: depth(request))
        return Snapshot(
            last_update_id=int(raw["lastUpdateId"]),
            timestamp=int(raw.get("E") or raw.get("T") or 0),
            bids=[(float(p), float(q)) for p, q in raw["bids"]],
            asks=[(float(p), float(q)) for p, q in raw["asks"]],
        )

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        await run_book_feed(
            self._http(),
            self._ws_url(market, "depth@100ms"),
            use_pu=market.kind == "perp",
            fetch_snapshot=lambda: self.snapshot(market),
            sink=sink,
            market=market.symbol,
            silence=self.silence,
        )

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        await run_trade_feed(self._http(), self._ws_url(market, "aggTrade"), sink)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        # aggTrades, decoded per the docs: ccxt's parse of spot /trades reads the quote
        # quantity as the amount (see README), so the raw response is parsed here.
        # aggTrades take at most 1000 rows (Aster's docs, as Binance's).
        request = {"symbol": market.exchange_symbol, "limit": max(1, min(limit, 1000))}
        ccxt = self._ccxt
        trades = ccxt.fapiPublicGetV3AggTrades if market.kind == "perp" else (
            ccxt.sapiPublicGetV3AggTrades
        )
        raw = await public_rest.trades(self.limiter, AGG_TRADES_WEIGHT, lambda: trades(request))
        return [
            AggTrade(e="aggTrade", E=row["T"], s=market.exchange_symbol, **row).to_trade()
            for row in raw
        ]

    async def close(self) -> None:
        await self._ccxt.close()
        if self._session is not None:
            await self._session.close()
        await self._private_http.close()
