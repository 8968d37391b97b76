"""The HTX (Huobi) venue, exchange code ``HUOBI``: spot, coin-margined (``-COINM``) and
USDT-margined perpetual swaps.

Markets come from the venue's REST instrument lists parsed by ccxt's ``htx`` code (no ccxt
network call: see ``symbols.py``); where the raw lists come from is injectable
(``markets_source``), so tests and replayers need no network. Market data comes from native
WebSocket handlers (``feed.py``): spot books from ``mbp`` increments synced over a ``req``
refresh (or, with ``spot_book="depth"``, from full ``depth.step0`` pushes), swap books from
``depth.step0``, trades from ``trade.detail``. Every URL is configurable (``HtxUrls``).

Public REST (instruments, recent trades; books need none) is paced per host at HTX's
documented per-IP limit for market data, ``MARKET_DATA_LIMIT`` requests per
``MARKET_DATA_WINDOW`` seconds (``astra.venues.public_rest``): ``public_limiter`` (spot,
``api.huobi.pro``) and ``contract_limiter`` (``api.hbdm.com``); the instrument lists, a few
calls at load, by ``instruments_limiter`` at the other public endpoints' ``INSTRUMENTS_LIMIT``
per ``INSTRUMENTS_WINDOW`` seconds. Recent trades are low priority and refused (429) rather
than queued; a 429 closes that host's gate. Trading has its own ``limiter``: HTX counts
private calls per UID, so one account's 429 leaves public REST alone.

Quantities here are the venue's: base asset on spot, contracts on swaps; the gateway serves
them in base units (``astra.core.ContractUnits``, from ``contractSize`` in the metadata).

Trading (``private_client``, used by ``astra.trading.service``): one ccxt ``htx`` client per
set of credentials (``private.py``) trades spot and USDT-margined swaps on the configured
REST bases (``spot_rest``, ``contract_rest``), sharing the markets already loaded.

User data (``run_user_stream``, the gateway's ``WS /ws``): ccxt.pro ``htx`` watches per
account, each account on its own client, connection and reconnect loop
(``astra.venues.ccxt_user_stream``): spot on the v2 WebSocket (``spot_private_ws``), the
USDT-margined swap account on the v5 notification WebSocket (``linear_swap_private_ws``),
the one ccxt uses for linear contracts (its REST trades them on ``/v5``). The two accounts
never share a client, so one account's balances can never overwrite the other's in ccxt's
balance cache.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt.pro as ccxt_pro
import msgspec

from astra.core import Trade
from astra.venues import public_rest
from astra.venues.base import BookSink, Capabilities, TradeSink, Venue, VenueMarket
from astra.venues.ccxt_user_stream import UserDataSink, ccxt_symbols, run_ccxt_user_stream
from astra.venues.limiter import VenueLimiter
from astra.venues.private_http import PrivateHttp

from .feed import run_depth_feed, run_mbp_feed, run_trade_feed
from .private import HtxPrivate
from .schemas import TradeHistory
from .symbols import ccxt_markets, market_from_ccxt

__all__ = ["CAPABILITIES", "HtxUrls", "HtxVenue", "MarketsSource", "from_config"]

CAPABILITIES = Capabilities(
    asset_types=("SPOT", "PERP"),
    orderbook=(
        "spot market.<symbol>.mbp.150 increments over a req refresh, prevSeqNum == previous "
        "seqNum; swaps market.<contract>.depth.step0 full books, every push "
        "diffed against the previous one, ordered by mrid"
    ),
    trades="market.<symbol>.trade.detail",
    rest="HTX REST (markets parsed by ccxt htx)",
)

# Raw instrument-list responses by section ("spot", "inverse_swap", "linear_swap"; see
# ``symbols.SECTIONS``): what ``load_markets`` parses.
MarketsSource = Callable[[], Awaitable[dict[str, dict]]]


@dataclass(frozen=True, slots=True)
class HtxUrls:
    spot_rest: str = "https://api.huobi.pro"
    spot_ws: str = "wss://api.huobi.pro/ws"  # depth.step0, trade.detail
    spot_mbp_ws: str = "wss://api.huobi.pro/feed"  # mbp increments and their req refresh
    contract_rest: str = "https://api.hbdm.com"
    inverse_swap_ws: str = "wss://api.hbdm.com/swap-ws"
    linear_swap_ws: str = "wss://api.hbdm.com/linear-swap-ws"
    spot_private_ws: str = "wss://api.huobi.pro/ws/v2"  # authenticated: orders, accounts
    # Authenticated, USDT-margined contracts: topics orders, trade, account (ccxt's "privateV5").
    linear_swap_private_ws: str = "wss://api.hbdm.com/ws/v5/notification"

    @classmethod
    def for_server(cls, base_url: str) -> HtxUrls:
        """Every URL on one server at ``base_url`` (``http://host:port``), under HTX's paths."""
        base = base_url.rstrip("/")
        ws = "ws" + base[len("http") :]
        return cls(base, f"{ws}/ws", f"{ws}/feed", base, f"{ws}/swap-ws", f"{ws}/linear-swap-ws",
                   f"{ws}/ws/v2", f"{ws}/ws/v5/notification")


# HTX documents 800 requests a second per IP for market-data REST (recent trades: one budget
# per host at a tenth of that) and 120 per 3 s, 40 a second, for the other public endpoints
# (the instrument lists: their own budget, so they stay under it).
MARKET_DATA_LIMIT = 800
MARKET_DATA_WINDOW = 10.0
INSTRUMENTS_LIMIT = 120
INSTRUMENTS_WINDOW = 3.0
_decode_history = msgspec.json.Decoder(TradeHistory, strict=False).decode
_HISTORY_PATHS = {
    "spot": ("spot_rest", "/market/history/trade", "symbol"),
    "inverse_swap": ("contract_rest", "/swap-ex/market/history/trade", "contract_code"),
    "linear_swap": ("contract_rest", "/linear-swap-ex/market/history/trade", "contract_code"),
}


class HtxStream(ccxt_pro.htx):
    """ccxt.pro's htx, answering wildcard subscriptions: HTX pushes the events of
    ``orders#*`` / ``trade.clearing#*#<mode>`` under each event's own symbol
    (``orders#btcusdt``), which ccxt resolves only for that symbol's watchers. Contract
    topics (``orders``/``trade``/``account`` on v5) resolve ccxt's wildcard hashes as is."""

    def handle_subject(self, client: Any, message: dict) -> None:
        super().handle_subject(client, message)
        parts = str(message.get("ch") or "").split("#")
        if len(parts) < 2 or parts[1] == "*":
            return
        if parts[0] == "orders" and self.orders is not None:
            client.resolve(self.orders, "orders#*")
        elif parts[0] == "trade.clearing" and self.myTrades is not None:
            client.resolve(self.myTrades, "#".join(["trade.clearing", "*", *parts[2:]]))

    def parse_ws_order(self, order: dict, market: Any = None) -> dict:
        """Contract orders carry ``trade_avg_price`` "0" until something fills: no average."""
        parsed = super().parse_ws_order(order, market)
        if not parsed.get("filled"):
            parsed["average"] = None
        return parsed

    def handle_balance(self, client: Any, message: dict) -> None:
        """Spot ``accounts.update#<mode>`` carries one currency as an object (ccxt reads a
        list there and drops it): ``available`` is free, ``balance`` the total."""
        data, ch = message.get("data"), message.get("ch")
        if not (ch and isinstance(data, dict)):
            return super().handle_balance(client, message)
        code = self.safe_currency_code(self.safe_string(data, "currency"))
        if code is not None:
            previous = self.balance.get(code) or {}
            account = self.account()
            account["free"] = self.safe_string(data, "available", previous.get("free"))
            account["total"] = self.safe_string(data, "balance", previous.get("total"))
            self.balance[code] = account
            self.balance = self.safe_balance(self.balance)
        client.resolve(self.balance, ch)
        return None


class HtxVenue(Venue):
    capabilities = CAPABILITIES
    live_trades = True  # the trade feed reports its subscription

    def __init__(
        self,
        code: str = "HUOBI",
        urls: HtxUrls | None = None,
        *,
        markets_source: MarketsSource | None = None,
        spot_book: str = "mbp",
        mbp_levels: int = 150,
        silence: float = 30.0,
        snapshot_timeout: float = 10.0,
    ) -> None:
        if spot_book not in ("mbp", "depth"):
            raise ValueError(f"spot_book must be 'mbp' or 'depth', not {spot_book!r}")
        self.code = code
        self.urls = urls or HtxUrls()
        self.markets_source = markets_source or self._fetch_instruments
        self.spot_book, self.mbp_levels = spot_book, mbp_levels
        self.silence, self.snapshot_timeout = silence, snapshot_timeout
        self._session: aiohttp.ClientSession | None = None
        self._markets: dict[str, VenueMarket] | None = None
        self._ccxt_markets: list[dict] = []  # ccxt's parse: what trading clients are given
        self._market_source: HtxPrivate | None = None  # those markets, indexed once
        self._private_http = PrivateHttp()
        self._accounts: OrderedDict[str, list] = OrderedDict()  # by API-key hash: account ids
        self._lock = asyncio.Lock()
        self.public_limiter = public_rest.public_limiter(  # api.huobi.pro
            code, per=MARKET_DATA_WINDOW, limit=MARKET_DATA_LIMIT, scope="spot"
        )
        self.contract_limiter = public_rest.public_limiter(  # api.hbdm.com
            code, per=MARKET_DATA_WINDOW, limit=MARKET_DATA_LIMIT, scope="contract"
        )
        self.instruments_limiter = public_rest.public_limiter(
            code, per=INSTRUMENTS_WINDOW, limit=INSTRUMENTS_LIMIT, scope="instruments"
        )
        self.limiter = VenueLimiter(code)  # trading's: HTX counts private calls per UID

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _get_json(self, url: str, params: dict) -> dict:
        timeout = aiohttp.ClientTimeout(total=30)
        async with self._http().get(url, params=params, timeout=timeout) as resp:
            resp.raise_for_status()
            body = await resp.json(content_type=None)
        if body.get("status") != "ok":
            raise RuntimeError(f"{url}: {body.get('err-code')} {body.get('err-msg')}")
        return body

    def _instruments(self, url: str, params: dict):
        limiter = self.instruments_limiter
        return public_rest.markets(limiter, 1, lambda: self._get_json(url, params))

    async def _fetch_instruments(self) -> dict[str, dict]:
        u = self.urls
        spot, inverse, linear = await asyncio.gather(
            self._instruments(f"{u.spot_rest}/v1/common/symbols", {}),
            self._instruments(f"{u.contract_rest}/swap-api/v1/swap_contract_info", {}),
            self._instruments(
                f"{u.contract_rest}/linear-swap-api/v1/swap_contract_info",
                {"business_type": "swap"},
            ),
        )
        return {"spot": spot, "inverse_swap": inverse, "linear_swap": linear}

    async def load_markets(self) -> dict[str, VenueMarket]:
        if self._markets is not None:  # the hot path: every request resolves its market
            return self._markets
        async with self._lock:
            if self._markets is None:
                raw = await self.markets_source()
                # ccxt's parser is synchronous and walks ~1000 instruments: off the loop.
                parsed = await asyncio.to_thread(ccxt_markets, raw)
                found = (market_from_ccxt(self.code, m) for m in parsed)
                self._markets = {m.symbol: m for m in found if m is not None}
                self._ccxt_markets = parsed
        return self._markets

    # -- trading -----------------------------------------------------------------------------

    def private_client(self, config: Mapping[str, Any]) -> HtxPrivate:
        """A ccxt client for one set of credentials (``ExchangeCredentials.ccxt_config()``)
        trading spot and USDT-margined swaps on this venue's REST bases, sharing the loaded
        markets (no round trip), the accounts already looked up and one cookie-less HTTP
        session. The caller closes it; closing leaves the shared session open."""
        client = HtxPrivate({
            **config,
            # ccxt's throttle is per instance: on a client living for one call it only delays
            # the call's second request. The gateway's per-venue limiter paces instead.
            "enableRateLimit": False,
            "session": self._trading_http(),
            "options": {**(config.get("options") or {})},
        }, accounts_cache=self._accounts)
        client.timeout_on_exit = 0  # ccxt lingers on close for a session it owns only
        spot, contract = self.urls.spot_rest.rstrip("/"), self.urls.contract_rest.rstrip("/")
        # HTX signs the host name: ccxt takes it from ``hostname``/``urls.hostnames``.
        client.hostname = urlsplit(spot).netloc
        client.urls["hostnames"] = {"spot": client.hostname, "contract": urlsplit(contract).netloc}
        api = client.urls["api"]
        for name in ("status", "spot", "public", "private", "v2Public", "v2Private"):
            api[name] = spot
        api["contract"] = contract
        source = self._trading_source()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    def user_stream_client(self, config: Mapping[str, Any]) -> HtxStream:
        """A ccxt.pro client for one set of credentials: REST on this venue's bases, the
        authenticated spot WebSocket (v2) at ``urls.spot_private_ws`` and the USDT-margined
        contracts' one (v5 notification) at ``urls.linear_swap_private_ws``, sharing the
        loaded markets. ccxt signs each WebSocket's host (``urls.hostnames``), so those are
        the WebSocket hosts. The caller closes it."""
        client = HtxStream({**config, "enableRateLimit": False,
                               "options": {**(config.get("options") or {})}})
        spot, contract = self.urls.spot_rest.rstrip("/"), self.urls.contract_rest.rstrip("/")
        private_ws = urlsplit(self.urls.spot_private_ws)
        client.hostname = private_ws.netloc
        client.urls["hostnames"] = {"spot": private_ws.netloc,
                                    "contract": urlsplit(self.urls.linear_swap_private_ws).netloc}
        api = client.urls["api"]
        for name in ("status", "spot", "public", "private", "v2Public", "v2Private"):
            api[name] = spot
        api["contract"] = contract
        for section in api["ws"].values():
            section["spot"]["private"] = self.urls.spot_private_ws
            for product in ("swap", "future"):  # ccxt reads linear swaps and futures alike
                section[product]["linear"]["privateV5"] = self.urls.linear_swap_private_ws
        source = self._trading_source()
        if source is not None:
            client.set_markets_from_exchange(source)
        return client

    async def run_user_stream(self, config: Mapping[str, Any], sink: UserDataSink) -> None:
        """Orders, fills and balances of the accounts behind ``config`` (ccxt credentials)
        until cancelled, one stream per account, concurrently, each reconnecting on its own
        with a fresh client after a backoff; every (re)connect calls ``sink.on_resync``.

        - Spot, always: ccxt.pro's ``watch_orders`` (``orders#*``), ``watch_my_trades``
          (``trade.clearing#*#0``) and ``watch_balance`` (``accounts.update#2``) on the v2
          WebSocket (``urls.spot_private_ws``), authenticated with ``auth`` (HmacSHA256,
          signature version 2.1).
        - USDT-margined swaps, when such markets are loaded: the same watches with
          ``type="swap", subType="linear"``, which ccxt sends as ``op: sub`` of ``orders`` and
          ``trade`` (``contract_code: "*"``) and ``account`` on the v5 notification
          WebSocket (``urls.linear_swap_private_ws``), authenticated with ``op: auth``
          (HmacSHA256, signature version 2). Quantities are contracts, as elsewhere on swaps;
          balances are the contract account's per currency (``withdraw_available`` free,
          ``equity`` total)."""
        markets = await self.load_markets()
        source = self._trading_source()
        streams = {"spot": [m for m in markets.values() if m.kind == "spot"],
                   "linear_swap": [m for m in markets.values() if m.kind == "linear_swap"]}

        def run(kind: str, params: dict) -> Awaitable[None]:
            symbols = ccxt_symbols(source, streams[kind]) if source is not None else {}
            watches: list = [  # a dict per call: ccxt keeps params in its subscriptions
                ("orders", lambda c: c.watch_orders(params=dict(params))),
                ("trades", lambda c: c.watch_my_trades(params=dict(params))),
                # ``params["type"]`` is also what ``GET /balances?account=`` reads it with
                ("balance", lambda c: c.watch_balance(dict(params)), params["type"]),
            ]
            return run_ccxt_user_stream(
                lambda: self.user_stream_client(config), watches, symbols, self.code, sink)

        async with asyncio.TaskGroup() as group:
            group.create_task(run("spot", {"type": "spot"}))
            if streams["linear_swap"]:
                group.create_task(run("linear_swap", {"type": "swap", "subType": "linear"}))

    def _trading_source(self) -> HtxPrivate | None:
        """A ccxt client (never opened) holding the loaded markets, indexed once: trading
        clients share its tables by reference (``set_markets_from_exchange``)."""
        if self._market_source is None and self._ccxt_markets:
            source = HtxPrivate()
            source.set_markets(self._ccxt_markets)
            self._market_source = source
        return self._market_source

    def _trading_http(self) -> aiohttp.ClientSession:
        return self._private_http.session()

    def _contract_ws(self, market: VenueMarket) -> str:
        if market.kind == "inverse_swap":
            return self.urls.inverse_swap_ws
        return self.urls.linear_swap_ws

    async def run_book_feed(self, market: VenueMarket, sink: BookSink) -> None:
        sym = market.exchange_symbol
        if market.kind == "spot" and self.spot_book == "mbp":
            await run_mbp_feed(
                self._http(),
                self.urls.spot_mbp_ws,
                f"market.{sym}.mbp.{self.mbp_levels}",
                sink,
                market.symbol,
                silence=self.silence,
                snapshot_timeout=self.snapshot_timeout,
            )
            return
        url = self.urls.spot_ws if market.kind == "spot" else self._contract_ws(market)
        topic = f"market.{sym}.depth.step0"
        await run_depth_feed(self._http(), url, topic, sink, market.symbol, silence=self.silence)

    async def run_trade_feed(self, market: VenueMarket, sink: TradeSink) -> None:
        url = self.urls.spot_ws if market.kind == "spot" else self._contract_ws(market)
        topic = f"market.{market.exchange_symbol}.trade.detail"
        await run_trade_feed(self._http(), url, topic, sink, silence=self.silence)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        base, path, key = _HISTORY_PATHS[market.kind]
        url = getattr(self.urls, base) + path
        params = {key: market.exchange_symbol, "size": max(1, min(limit, 2000))}

        async def fetch() -> bytes:
            timeout = aiohttp.ClientTimeout(total=30)
            async with self._http().get(url, params=params, timeout=timeout) as resp:
                resp.raise_for_status()
                return await resp.read()

        limiter = self.public_limiter if market.kind == "spot" else self.contract_limiter
        body = _decode_history(await public_rest.trades(limiter, 1, fetch))
        if body.status != "ok":
            raise RuntimeError(f"{url}: {body.err_code} {body.err_msg}")
        trades = [d.to_trade() for batch in body.data for d in batch.data]
        trades.sort(key=lambda t: t.time)  # batches come newest first; sort is stable
        return trades[-limit:]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._private_http.close()


_OPTIONS = {"spot_book": str, "mbp_levels": int, "silence": float, "snapshot_timeout": float}


def from_config(code: str, options: dict) -> HtxVenue:
    """The venue from a ``[venues.HUOBI]`` section: any ``HtxUrls`` field (URL overrides),
    plus ``spot_book`` ("mbp" | "depth"), ``mbp_levels``, ``silence``, ``snapshot_timeout``.
    Unknown keys are refused by name."""
    options = dict(options)
    url_fields = {f.name for f in fields(HtxUrls)}
    urls = HtxUrls(**{k: options.pop(k) for k in list(options) if k in url_fields})
    extra = {k: _OPTIONS[k](options.pop(k)) for k in list(options) if k in _OPTIONS}
    if options:
        raise ValueError(f"venue {code}: unknown options {sorted(options)}")
    return HtxVenue(code.upper(), urls, **extra)
