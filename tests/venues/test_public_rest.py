"""Public REST of every venue through its limiter at the documented weights: a table of the
documented numbers, and on a loopback fake per venue family, a burst of concurrent
recent-trade fetches beside a book snapshot: the snapshot is served, trades beyond the budget
are refused with ``RateLimited`` (429, ``Retry-After``) within their bounded wait instead of
queueing, and only the served ones reached the venue. A venue's 429 closes the gate: the
next call is refused without reaching it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import ccxt
import pytest
from aiohttp import web
from tests.venues.loopback import serve, until

from astra.core import AssetType, MarketMetadata, RateLimited
from astra.venues import public_rest
from astra.venues.aster import AsterUrls, AsterVenue
from astra.venues.base import VenueMarket
from astra.venues.binance import BinanceUrls, BinanceVenue
from astra.venues.binance import weights as binance
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue
from astra.venues.htx import HtxUrls, HtxVenue
from astra.venues.kraken import KrakenUrls, KrakenVenue
from astra.venues.kraken.futures_symbols import KrakenFuturesMarket
from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin import rest as kucoin_rest
from astra.venues.limiter import VenueLimiter
from astra.venues.okx import OkxUrls, OkxVenue


def _market(symbol: str, venue_id: str, kind: str, cls=VenueMarket) -> VenueMarket:
    kind_of = {"SPOT": AssetType.SPOT, "PERP": AssetType.PERP}
    meta = MarketMetadata(symbol=symbol, asset_type=kind_of[symbol.split("-")[1]],
                          base_asset="BTC", quote_asset="USDT")  # fmt: skip
    return cls(symbol, venue_id, kind, meta)


class FakeRest:
    """A venue's public REST on 127.0.0.1: ``routes`` maps a path to its JSON answer (any
    method); every request is logged as (path, query) in arrival order. ``limit_next``
    answers the next request 429 with ``Retry-After``."""

    def __init__(self, routes: dict[str, object]) -> None:
        self.routes = routes
        self.log: list[tuple[str, dict]] = []
        self.limit_next: float | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.log.append((request.path, dict(request.query)))
        if self.limit_next is not None:
            wait, self.limit_next = self.limit_next, None
            return web.json_response({"code": "429", "message": "Too Many Requests"},
                                     status=429, headers={"Retry-After": str(int(wait))})
        if request.path not in self.routes:
            return web.json_response({"error": f"no route {request.path}"}, status=404)
        return web.json_response(self.routes[request.path])

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.log if p == path)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        async with serve(app) as base:
            yield base


async def _burst(n: int, call) -> tuple[list, list[RateLimited]]:
    """``n`` concurrent ``call()``s: (answers, refusals). Anything else fails the test."""
    results = await asyncio.gather(*(call() for _ in range(n)), return_exceptions=True)
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(served) + len(refused) == n, [r for r in results if isinstance(r, BaseException)]
    assert all(r.retry_after is not None and r.retry_after > 0 for r in refused)
    return served, refused


class VirtualTime:
    """A limiter's clock that never moves by itself: refill is frozen until ``advance``. A
    limiter ``sleep`` parks its caller until the clock reaches the wake time, so a request
    that had to wait is still parked while time stands (``parked``), and one that completes
    meanwhile never waited."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.parked: list[tuple[float, asyncio.Future]] = []
        self.sleepers: list[asyncio.Task | None] = []  # every task that ever had to wait
        self.slept = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, delay: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        self.parked.append((self.now + delay, wake))
        self.sleepers.append(asyncio.current_task())
        self.slept.set()
        await wake

    def advance(self, seconds: float) -> None:
        """Move the clock; wake, in the order they parked, the sleepers now due."""
        self.now += seconds
        due = [(t, f) for t, f in self.parked if t <= self.now]
        self.parked = [(t, f) for t, f in self.parked if t > self.now]
        for _, wake in due:
            wake.set_result(None)


def _virtual(limiter: VenueLimiter, t: VirtualTime) -> VenueLimiter:
    """The same budget (rate, burst, reserve, bounds) on the virtual clock ``t``."""
    return VenueLimiter(limiter.venue, rate=limiter.rate, capacity=limiter.capacity,
                        max_wait=limiter.max_wait, reserve=limiter.reserve,
                        clock=t, wall_clock=t.wall, sleep=t.sleep)  # fmt: skip


async def _snapshot_between(burst: int, trades, snapshot, t: VirtualTime):
    """``burst`` concurrent trade fetches ask first (those beyond the budget park); then,
    with the clock still frozen, ``snapshot()`` must complete (so it waited for nothing);
    then the clock moves by the trades' bounded wait. Returns (snapshot, served, refused)."""
    fetches = asyncio.ensure_future(_burst(burst, trades))
    await asyncio.sleep(0)  # _burst starts the fetches
    await asyncio.sleep(0)  # each fetch asks the limiter: served at once, or parked
    assert t.parked  # trades beyond the budget are waiting, ahead of the snapshot
    parked = len(t.parked)
    t.slept.clear()
    taking = asyncio.ensure_future(snapshot())
    slept = asyncio.ensure_future(t.slept.wait())
    await asyncio.wait([taking, slept], return_when=asyncio.FIRST_COMPLETED)
    slept.cancel()
    assert taking not in t.sleepers, "the snapshot waited behind trades"
    snap = await taking
    assert len(t.parked) == parked  # nor did it make anybody else wait
    t.advance(public_rest.TRADES_MAX_WAIT)
    served, refused = await fetches
    return snap, served, refused


# --- the documented numbers ----------------------------------------------------------------


def test_each_venue_prices_its_calls_at_the_documented_weights():
    # Binance spot (rest-api.md, enums.md): depth 5/25/50/250 by limit, aggTrades 4,
    # exchangeInfo 20, 6000 a minute. USD-M, COIN-M: depth 2/5/10/20, aggTrades 20,
    # exchangeInfo 1, 2400 a minute. Options: trades 5, 2400 a minute.
    assert binance.DEPTH_WEIGHTS["spot"] == {100: 5, 500: 25, 1000: 50, 5000: 250}
    for product in ("usdm", "coinm", "option"):
        assert binance.DEPTH_WEIGHTS[product] == {50: 2, 100: 5, 500: 10, 1000: 20}
    assert binance.TRADES_WEIGHTS == {"spot": 4, "usdm": 20, "coinm": 20, "option": 5}
    assert binance.EXCHANGE_INFO_WEIGHTS == {"spot": 20, "usdm": 1, "coinm": 1, "option": 1}
    assert binance.BUDGETS == {"spot": 6000, "usdm": 2400, "coinm": 2400, "option": 2400}
    weights = [public_rest.weight_for(binance.DEPTH_WEIGHTS["spot"], n)
               for n in (5, 100, 101, 500, 1000, 5000)]  # fmt: skip
    assert weights == [5, 5, 25, 25, 50, 250]
    assert public_rest.weight_for(binance.DEPTH_WEIGHTS["usdm"], 1000) == 20
    venue = BinanceVenue(exchange_info={})
    assert {s: (lim.rate, lim.reserve) for s, lim in venue.limiters.items()} == {
        "spot": (100.0, 50), "usdm": (40.0, 20), "coinm": (40.0, 20), "option": (40.0, 20)
    }
    assert venue.limiter is venue.limiters["spot"]  # calls naming no product
    # Trading takes each product's budget: Binance counts them apart, private calls too.
    for product in ("spot", "usdm", "coinm", "option"):
        market = _market("BINANCE-SPOT-BTC-USDT", "BTCUSDT", product)
        assert venue.limiter_for(market) is venue.limiters[product]
    assert binance.TRADES_MAX_LIMITS == {"spot": 1000, "usdm": 1000, "coinm": 1000,
                                         "option": 500}  # fmt: skip

    # OKX, per endpoint and IP: market/trades 100 per 2 s, public/instruments 20 per 2 s.
    okx = OkxVenue(markets={"data": []})
    assert {e: lim.rate for e, lim in okx.limiters.items()} == {
        "market/trades": 50.0, "public/instruments": 10.0
    }
    # Kraken: spot public 1 a second per IP; futures public at ccxt's 600 ms.
    kraken = KrakenVenue(markets_source=dict, futures_markets_source=dict)
    assert kraken.public_limiter.rate == 1.0
    assert kraken.futures_limiter.rate == pytest.approx(1000 / 600)
    # KuCoin: the Public pool, 2000 a 30 s per IP; snapshot 4 (spot part book), 3 (futures).
    assert kucoin_rest.WEIGHTS == {
        "spot": {"markets": 4, "snapshot": 4, "full_snapshot": 3, "trades": 3, "bullet": 10},
        "futures": {"markets": 3, "snapshot": 3, "trades": 5, "bullet": 10},
    }
    kucoin = KucoinVenue(markets_source=list)
    assert kucoin.public_limiter.rate == pytest.approx(2000 / 30)
    assert kucoin.public_limiter.reserve == 4
    # HTX: 800 per 10 s per host (a tenth of the documented market-data limit); the
    # instrument lists at the other public endpoints' 120 per 3 s (40 a second).
    # Coinbase: public 10 a second per IP.
    htx = HtxVenue(markets_source=dict)
    assert htx.public_limiter.rate == htx.contract_limiter.rate == 80.0
    assert htx.public_limiter is not htx.contract_limiter
    assert htx.instruments_limiter.rate == 40.0
    coinbase = CoinbaseVenue(markets_source=list)
    assert coinbase.public_limiter.rate == 10.0
    # Coinbase (per user), Kraken (per API key), KuCoin and HTX (per UID) count private
    # calls per account: trading keeps its own budget, at ccxt's pace, apart from public
    # REST, so one account's 429 closes no public call (KuCoin's snapshots included).
    for venue_ in (coinbase, kraken, kucoin, htx):
        publics = [getattr(venue_, name) for name in ("public_limiter", "futures_limiter",
                   "contract_limiter", "instruments_limiter") if hasattr(venue_, name)]
        assert venue_.limiter not in publics, venue_.code
        assert venue_.limiter_for(None) is venue_.limiter
    assert coinbase.limiter.rate == pytest.approx(30, rel=0.05)
    assert kraken.limiter.rate == 1.0  # ccxt kraken's 1 s
    assert kucoin.limiter.rate == pytest.approx(1000 / 7.5)
    assert htx.limiter.rate == 10.0


# --- Binance -------------------------------------------------------------------------------

BINANCE_DEPTH = {"lastUpdateId": 7, "E": 1700000000001, "T": 1700000000000,
                 "bids": [["100.0", "1.5"]], "asks": [["101.0", "2.5"]]}  # fmt: skip
BINANCE_AGG = [{"a": 1, "p": "100.5", "q": "0.1", "f": 1, "l": 1, "T": 1700000000000,
                "m": False}]  # fmt: skip


async def test_binance_snapshot_goes_ahead_and_trades_beyond_the_budget_are_refused():
    fake = FakeRest({"/fapi/v1/depth": BINANCE_DEPTH, "/fapi/v1/aggTrades": BINANCE_AGG})
    market = _market("BINANCE-PERP-BTC-USDT", "BTCUSDT", "usdm")
    t = VirtualTime()
    async with fake.running() as base:
        venue = BinanceVenue(urls=BinanceUrls.at(base), exchange_info={})
        venue.limiters["usdm"] = _virtual(venue.limiters["usdm"], t)
        try:
            async with asyncio.timeout(10):
                snap, served, refused = await _snapshot_between(
                    6, lambda: venue.recent_trades(market, 10), lambda: venue.snapshot(market), t)
        finally:
            await venue.close()
    assert (snap.last_update_id, snap.bids, snap.asks) == (7, [(100.0, 1.5)], [(101.0, 2.5)])
    assert [q for p, q in fake.log if p == "/fapi/v1/depth"] == [
        {"symbol": "BTCUSDT", "limit": "1000"}  # weight 20 of USD-M's 40 a second
    ]
    # aggTrades weigh 20 of 2400 a minute (40 a second), a snapshot's 20 kept from them: one
    # goes at once, the snapshot takes the 20 kept; after the 1 s a fetch may wait, 40 more
    # refilled, one more goes (20 kept again) and the four others are refused, not queued.
    assert (len(served), len(refused)) == (2, 4)
    assert fake.count("/fapi/v1/aggTrades") == 2  # the refused never left
    assert served[0][0].price == 100.5


BINANCE_OPTION_TRADES = [{"id": "1", "symbol": "BTC-240628-60000-C", "price": "1000",
                          "qty": "0.1", "quoteQty": "100", "side": 1, "time": 1700000000000}]


@pytest.mark.parametrize(
    ("name", "path", "asked", "sent"),
    [
        # Binance options /eapi/v1/trades: "Default:100 Max:500" (the trade channel's seed
        # asks for 1000); aggTrades on spot and USD-M: "Default 500; max 1000".
        ("binance-option", "/eapi/v1/trades", 1000, {"limit": "500"}),
        ("binance-spot", "/api/v3/aggTrades", 5000, {"limit": "1000"}),
        ("binance-usdm", "/fapi/v1/aggTrades", 1000, {"limit": "1000"}),
        ("binance-spot", "/api/v3/aggTrades", 0, {"limit": "1"}),
        ("kraken", "/0/public/Trades", 5000, {"count": "1000"}),  # count: 1 to 1000
        ("aster", "/api/v3/aggTrades", 5000, {"limit": "1000"}),
    ],
)
async def test_recent_trades_ask_for_at_most_the_documented_maximum(name, path, asked, sent):
    fake = FakeRest({"/eapi/v1/trades": BINANCE_OPTION_TRADES, "/api/v3/aggTrades": BINANCE_AGG,
                     "/fapi/v1/aggTrades": BINANCE_AGG, "/0/public/Trades": KRAKEN_TRADES})
    async with fake.running() as base:
        if name.startswith("binance"):
            kind = name.removeprefix("binance-")
            venue = BinanceVenue(urls=BinanceUrls.at(base), exchange_info={})
            symbol = "BTC-240628-60000-C" if kind == "option" else "BTCUSDT"
            market = _market("BINANCE-SPOT-BTC-USDT", symbol, kind)
        else:
            venue, market = _trades_venue(name, base)
        try:
            async with asyncio.timeout(10):
                trades = await venue.recent_trades(market, asked)
        finally:
            await venue.close()
    ((seen, query),) = fake.log
    assert seen == path
    assert {k: v for k, v in query.items() if k in sent} == sent
    assert [t.price for t in trades] == [1000.0 if name == "binance-option" else 100.5]


# --- only a request's own 429 makes it RATE_LIMITED ----------------------------------------


async def test_a_concurrent_429_does_not_relabel_another_requests_failure():
    """Two concurrent fetches on one limiter: one is answered 429, the other, answered only
    once that 429 has closed the gate, 500 (or 400 "Invalid symbol"). The second is the venue
    error it is, not RATE_LIMITED with the first one's Retry-After."""
    venue_: dict[str, BinanceVenue] = {}
    asked = asyncio.Event()

    async def agg_trades(request: web.Request) -> web.Response:
        symbol = request.query["symbol"]
        if symbol == "BTCUSDT":
            await asked.wait()  # the other request is in flight
            return web.json_response({"code": -1003, "msg": "Too many requests."},
                                     status=429, headers={"Retry-After": "30"})
        asked.set()
        # answered once the 429 was seen (polled: nothing to wake on)
        await until(lambda: venue_["v"].limiters["spot"].closed, asyncio.Event())
        if symbol == "ETHUSDT":
            return web.json_response({"code": -1000, "msg": "internal error"}, status=500)
        return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    app = web.Application()
    app.router.add_get("/api/v3/aggTrades", agg_trades)
    for other in ("ETHUSDT", "NOSUCH"):
        asked.clear()
        async with serve(app) as base:
            venue = venue_["v"] = BinanceVenue(urls=BinanceUrls.at(base), exchange_info={})
            limited, failing = (_market("BINANCE-SPOT-BTC-USDT", s, "spot")
                                for s in ("BTCUSDT", other))  # fmt: skip
            try:
                async with asyncio.timeout(10):
                    first, second = await asyncio.gather(
                        venue.recent_trades(limited, 5), venue.recent_trades(failing, 5),
                        return_exceptions=True)  # fmt: skip
            finally:
                await venue.close()
        assert isinstance(first, RateLimited) and 25 < first.retry_after <= 30
        assert not isinstance(second, RateLimited), other
        # ccxt's reading of Binance's codes: -1000 an operation failure, -1121 a bad symbol.
        expected = ccxt.OperationFailed if other == "ETHUSDT" else ccxt.BadSymbol
        assert isinstance(second, expected), repr(second)
        assert venue.limiters["spot"].signals == 1  # the 429 alone, counted once


# --- KuCoin --------------------------------------------------------------------------------

KUCOIN_SNAPSHOT = {"code": "200000", "data": {"sequence": "42", "time": 1700000000000,
                                              "bids": [["100", "1"]], "asks": [["101", "2"]]}}
KUCOIN_TRADES = {"code": "200000", "data": [
    {"sequence": "1", "price": "100.5", "size": "0.1", "side": "buy",
     "time": 1700000000000000000},
]}  # fmt: skip


async def test_kucoin_snapshot_goes_ahead_and_trades_beyond_the_pool_are_refused():
    fake = FakeRest({"/api/v1/market/orderbook/level2_100": KUCOIN_SNAPSHOT,
                     "/api/v1/market/histories": KUCOIN_TRADES})  # fmt: skip
    market = _market("KUCOIN-SPOT-BTC-USDT", "BTC-USDT", "spot")
    t = VirtualTime()
    async with fake.running() as base:
        venue = KucoinVenue(urls=KucoinUrls.for_server(base), markets_source=list)
        venue.public_limiter = _virtual(venue.public_limiter, t)
        try:
            async with asyncio.timeout(15):
                snap, served, refused = await _snapshot_between(
                    60, lambda: venue.recent_trades(market, 5), lambda: venue.snapshot(market), t)
        finally:
            await venue.close()
    assert (snap.sequence, snap.bids, snap.asks) == (42, [(100.0, 1.0)], [(101.0, 2.0)])
    assert fake.count("/api/v1/market/orderbook/level2_100") == 1
    # Trade histories weigh 3 of the Public pool's 2000 a 30 s (66.7 a second, the burst),
    # 4 kept for a snapshot: 20 at once ((66.7 - 4) // 3), the snapshot takes 4 of the 6.7
    # left; after the 1 s a fetch may wait the pool is full again: 20 more, 20 refused.
    assert (len(served), len(refused)) == (40, 20)
    assert fake.count("/api/v1/market/histories") == 40


# --- OKX, Kraken, HTX, Coinbase: recent trades (their books need no REST) ------------------

OKX_TRADES = {"code": "0", "msg": "", "data": [
    {"instId": "BTC-USDT", "tradeId": "9", "px": "100.5", "sz": "0.1", "side": "buy",
     "ts": "1700000000000"},
]}  # fmt: skip
KRAKEN_TRADES = {"error": [], "result": {
    "XXBTZUSD": [["100.5", "0.1", 1700000000.0, "b", "l", "", 9]], "last": "1"}}
KRAKEN_HISTORY = {"result": "success", "history": [
    {"time": "2023-11-14T22:13:20.000Z", "price": 100.5, "size": 1, "side": "buy",
     "trade_id": 9},
]}  # fmt: skip
HTX_TRADES = {"status": "ok", "data": [{"id": 1, "ts": 1700000000000, "data": [
    {"id": 1, "ts": 1700000000000, "price": 100.5, "amount": 0.1, "direction": "buy",
     "trade-id": 9},
]}]}  # fmt: skip
COINBASE_TRADES = {"trades": [
    {"trade_id": "9", "product_id": "BTC-USD", "price": "100.5", "size": "0.1",
     "time": "2023-11-14T22:13:20Z", "side": "BUY"},
]}  # fmt: skip
COINBASE_TICKER = "/api/v3/brokerage/market/products/BTC-USD/ticker"


@pytest.mark.parametrize(
    ("name", "path", "limiter", "burst", "served"),
    [
        # (venue, trades path, its limiter, burst, served: the burst at once, then what
        # refills in the 1 s a fetch may wait; the rest refused)
        ("okx", "/api/v5/market/trades", "market/trades", 150, 100),  # 100 per 2 s: 50 + 50
        ("kraken", "/0/public/Trades", "public_limiter", 6, 2),  # 1 a second: 1 + 1
        ("kraken-futures", "/derivatives/api/v3/history", "futures_limiter", 6, 2),  # 1.67/s
        ("htx", "/market/history/trade", "public_limiter", 200, 160),  # 800 per 10 s: 80 + 80
        ("coinbase", COINBASE_TICKER, "public_limiter", 30, 20),  # 10 a second: 10 + 10
    ],
)
async def test_trades_beyond_the_budget_are_refused_not_queued(name, path, limiter, burst,
                                                               served):  # fmt: skip
    fake = FakeRest({"/api/v5/market/trades": OKX_TRADES, "/0/public/Trades": KRAKEN_TRADES,
                     "/derivatives/api/v3/history": KRAKEN_HISTORY,
                     "/market/history/trade": HTX_TRADES, COINBASE_TICKER: COINBASE_TRADES})
    t = VirtualTime()
    async with fake.running() as base:
        venue, market = _trades_venue(name, base)
        if name == "okx":
            venue.limiters[limiter] = _virtual(venue.limiters[limiter], t)
        else:
            setattr(venue, limiter, _virtual(getattr(venue, limiter), t))
        try:
            async with asyncio.timeout(15):
                fetches = asyncio.ensure_future(
                    _burst(burst, lambda: venue.recent_trades(market, 5)))
                await asyncio.sleep(0)
                await asyncio.sleep(0)  # every fetch asked: served at once, or parked
                assert len(t.parked) == burst - served // 2
                t.advance(public_rest.TRADES_MAX_WAIT)
                got, refused = await fetches
        finally:
            await venue.close()
    assert (len(got), len(refused)) == (served, burst - served)
    assert fake.count(path) == served  # the refused never reached the venue
    assert [t.price for t in got[0]] == [100.5]


def _trades_venue(name: str, base: str):
    if name == "okx":
        return OkxVenue(urls=OkxUrls(rest=base), markets={"data": []}), _market(
            "OKX-SPOT-BTC-USDT", "BTC-USDT", "spot")
    if name.startswith("kraken"):
        venue = KrakenVenue(urls=KrakenUrls(rest=base, futures_rest=base),
                            markets_source=dict, futures_markets_source=dict)
        if name == "kraken":
            return venue, _market("KRAKEN-SPOT-XBT-USD", "XXBTZUSD", "spot")
        return venue, _market("KRAKEN-PERP-XBT-USD", "PF_XBTUSD", "perp", KrakenFuturesMarket)
    if name == "aster":
        venue = AsterVenue(urls=AsterUrls.for_simulator(base))
        return venue, _market("ASTER-SPOT-BTC-USDT", "BTCUSDT", "spot")
    if name == "htx":
        return HtxVenue(urls=HtxUrls.for_server(base), markets_source=dict), _market(
            "HUOBI-SPOT-BTC-USDT", "btcusdt", "spot")
    venue = CoinbaseVenue(urls=CoinbaseUrls(rest=base), markets_source=list)
    return venue, _market("COINBASE-SPOT-BTC-USD", "BTC-USD", "spot")


async def test_aster_prices_a_snapshot_by_the_bracket_of_the_rows_it_asks_for():
    """Aster's depth weight is its documented bracket of the (clamped) limit asked: 7 and 0
    rows cost the 5-row bracket's 2, 100 rows 5; so 9 tokens take all three at once (priced
    at the 1000-row 20 each, the second would be refused)."""
    fake = FakeRest({"/api/v3/depth": BINANCE_DEPTH})
    t = VirtualTime()
    async with fake.running() as base:
        venue, market = _trades_venue("aster", base)
        venue.limiter = VenueLimiter("ASTER", rate=1.0, capacity=9.0, clock=t,
                                     wall_clock=t.wall, sleep=t.sleep)  # fmt: skip
        try:
            async with asyncio.timeout(10):
                snaps = [await venue.snapshot(market, n) for n in (7, 0, 100)]
        finally:
            await venue.close()
    assert not t.parked and [s.last_update_id for s in snaps] == [7, 7, 7]
    assert [q["limit"] for _, q in fake.log] == ["7", "1", "100"]  # clamped to 1..1000


# --- a venue's 429 closes the gate ---------------------------------------------------------


@pytest.mark.parametrize("name", ["coinbase", "aster", "htx"])
async def test_a_429_closes_the_gate_for_its_retry_after(name):
    """Coinbase and Aster through ccxt (the attached limiter reads the response headers), HTX
    over plain aiohttp (the slot feeds the error with its headers): all honour Retry-After,
    and the caller gets RATE_LIMITED (429), not a venue error."""
    fake = FakeRest({"/market/history/trade": HTX_TRADES, COINBASE_TICKER: COINBASE_TRADES,
                     "/api/v3/aggTrades": BINANCE_AGG})
    async with fake.running() as base:
        venue, market = _trades_venue(name, base)
        try:
            fake.limit_next = 30
            with pytest.raises(RateLimited) as first:
                await venue.recent_trades(market, 5)
            with pytest.raises(RateLimited) as second:
                await venue.recent_trades(market, 5)  # refused here: the venue is not asked
        finally:
            await venue.close()
    assert 25 < first.value.retry_after <= 30 and 25 < second.value.retry_after <= 30
    assert first.value.status == 429
    assert len(fake.log) == 1


# --- markets loading is bounded ------------------------------------------------------------


async def test_markets_loading_waits_a_bounded_time_for_its_weight_and_its_answer():
    limiter = VenueLimiter("OKX", rate=2.0, capacity=2.0)
    await limiter.acquire(2.0)  # the budget is spent: 10 more would take 5 s
    calls: list[str] = []

    async def fetch() -> str:
        calls.append("sent")
        return "markets"

    with pytest.raises(RateLimited) as refused:  # more than MARKETS_MAX_WAIT: at once
        await public_rest.markets(limiter, 2.0 * public_rest.MARKETS_MAX_WAIT + 2, fetch)
    assert refused.value.retry_after > public_rest.MARKETS_MAX_WAIT and calls == []

    never = asyncio.Event()
    with pytest.raises(TimeoutError):  # a venue that never answers does not hold the load
        await public_rest.markets(VenueLimiter("OKX", rate=10.0), 1, never.wait, within=0.2)
    assert await public_rest.markets(VenueLimiter("OKX", rate=10.0), 5, fetch) == "markets"
