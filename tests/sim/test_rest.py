"""The simulator's public REST API against the Aster docs (spot seed, futures v3) and the live
venue's recorded ``exchangeInfo``: shapes, internal consistency of the market data, and the
documented errors (always a 4xx JSON ``{"code": int, "msg": str}``, never a 500).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from decimal import Decimal

import aiohttp
import pytest

from astra.sim import BUY, DEFAULT_MARKETS, SELL

ROOTS = {"spot": "/api", "perp": "/fapi"}
KINDS = tuple(ROOTS)
VERSIONS = ("v1", "v3")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
LIVE_INFO = {"spot": "spot-exchangeInfo.json", "perp": "futures-exchangeInfo.json"}
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
FEE_KEYS = {"makerCommissionRate", "takerCommissionRate"}
DEFAULT_DEPTH = {"spot": 100, "perp": 500}
TRADE_KEYS = {
    "spot": {"id", "price", "qty", "baseQty", "time", "isBuyerMaker"},
    "perp": {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"},
}
TICKER_KEYS = {
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice",
    "lastPrice", "lastQty", "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume",
    "openTime", "closeTime", "firstId", "lastId", "count",
}  # fmt: skip
SPOT_TICKER_EXTRA = {"bidPrice", "bidQty", "askPrice", "askQty", "baseAsset", "quoteAsset"}
PREMIUM_KEYS = {
    "symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
    "nextFundingTime", "interestRate", "time",
}  # fmt: skip
EIGHT_HOURS = 8 * 3600 * 1000


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def request(http, url: str, method: str = "GET") -> tuple[int, str, object]:
    """(status, content type, decoded JSON body) of one bounded request."""
    async with asyncio.timeout(5), http.request(method, url) as resp:
        text = await resp.text()
        body = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, resp.content_type, body


def url_of(sim, kind: str, path: str, version: str = "v1") -> str:
    return f"{sim.base_url}{ROOTS[kind]}/{version}/{path}"


async def get_ok(http, sim, kind: str, path: str, version: str = "v1"):
    status, ctype, body = await request(http, url_of(sim, kind, path, version))
    assert (status, ctype) == (200, "application/json"), body
    return body


async def wait_for_flow(sim, trades: int = 20) -> None:
    """Until every market on both sides has traded ``trades`` times (bounded)."""
    states = [st for side in sim.exchange.sides.values() for st in side.states.values()]
    for _ in range(150):  # at most 15 s
        if all(len(st.trades) >= trades and len(st.aggs) >= 2 for st in states):
            return
        await asyncio.sleep(0.1)
    pytest.fail("the synthetic flow produced too few trades")


def deepen(sim, kind: str, symbol: str, levels: int = 1100) -> None:
    """Rest ``levels`` extra one-step orders per side far from the touch, so every depth
    limit can be filled exactly."""
    state = sim.exchange.state(kind, symbol)
    market, engine = state.market, state.engine
    low = engine.best_bid() // 2 // market.tick
    high = -(-engine.best_ask() * 2 // market.tick)
    for i in range(levels):
        state.place(1, BUY, market.step, (low - i) * market.tick)
        state.place(1, SELL, market.step, (high + i) * market.tick)


def rules(info: dict) -> dict[str, dict[str, Decimal]]:
    """symbol -> {"tick", "step"} from an exchangeInfo response."""
    out = {}
    for sym in info["symbols"]:
        filters = {f["filterType"]: f for f in sym["filters"]}
        out[sym["symbol"]] = {
            "tick": Decimal(filters["PRICE_FILTER"]["tickSize"]),
            "step": Decimal(filters["LOT_SIZE"]["stepSize"]),
        }
    return out


def on_grid(text: str, unit: Decimal) -> bool:
    return Decimal(text) % unit == 0


def live_info(shared_fixture, kind: str) -> dict:
    return json.loads(shared_fixture("aster", LIVE_INFO[kind]).read_text())


def live_entry(info: dict, symbol: str = "BTCUSDT") -> dict:
    return next(s for s in info["symbols"] if s["symbol"] == symbol)


# -- connectivity --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_ping_and_time(sim, http, kind, version):
    assert await get_ok(http, sim, kind, "ping", version) == {}
    body = await get_ok(http, sim, kind, "time", version)
    assert set(body) == {"serverTime"}
    assert isinstance(body["serverTime"], int)
    assert abs(body["serverTime"] - time.time() * 1000) < 60_000


# -- exchangeInfo ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_exchange_info_has_the_live_shape(sim, http, shared_fixture, kind):
    live = live_info(shared_fixture, kind)
    ours = await get_ok(http, sim, kind, "exchangeInfo")
    assert set(ours) == set(live)
    assert [s["symbol"] for s in ours["symbols"]] == list(SYMBOLS)
    live_keys = set(live_entry(live))
    fees = {"spot": ("0.0001", "0.0004"), "perp": ("0.0002", "0.0004")}[kind]  # SIM's
    for entry in ours["symbols"]:
        # The live keys plus the simulator's documented extension: the venue's fee rates.
        assert set(entry) == live_keys | FEE_KEYS, entry["symbol"]
        assert (entry["makerCommissionRate"], entry["takerCommissionRate"]) == fees
        assert entry["status"] == "TRADING"
        assert entry["quoteAsset"] == "USDT"
        assert entry["symbol"] == entry["baseAsset"] + entry["quoteAsset"]
    assert {a["asset"] for a in ours["assets"]} == {"USDT", "BTC", "ETH", "SOL"}
    v3 = await get_ok(http, sim, kind, "exchangeInfo", "v3")
    assert {**v3, "serverTime": 0} == {**ours, "serverTime": 0}


OUR_FILTERS = [
    (m.kind, flt["filterType"])
    for m in DEFAULT_MARKETS
    if m.symbol == "BTCUSDT"
    for flt in m.exchange_info_symbol()["filters"]
]


@pytest.mark.parametrize(("kind", "filter_type"), OUR_FILTERS)
async def test_each_filter_has_the_key_set_of_live_btcusdt(
    sim, http, shared_fixture, kind, filter_type
):
    live = {f["filterType"]: f for f in live_entry(live_info(shared_fixture, kind))["filters"]}
    ours = await get_ok(http, sim, kind, "exchangeInfo")
    assert filter_type in live
    for entry in ours["symbols"]:
        flt = next(f for f in entry["filters"] if f["filterType"] == filter_type)
        assert set(flt) == set(live[filter_type]), entry["symbol"]


@pytest.mark.parametrize("kind", KINDS)
async def test_each_filter_shape_occurs_on_the_live_venue(sim, http, shared_fixture, kind):
    """Weaker than the BTCUSDT comparison: every filter's key set is one the venue serves
    for some listed symbol."""
    live_shapes = {
        (f["filterType"], frozenset(f))
        for s in live_info(shared_fixture, kind)["symbols"]
        for f in s["filters"]
    }
    ours = await get_ok(http, sim, kind, "exchangeInfo")
    for entry in ours["symbols"]:
        for flt in entry["filters"]:
            assert (flt["filterType"], frozenset(flt)) in live_shapes, (entry["symbol"], flt)


@pytest.mark.parametrize("kind", KINDS)
async def test_trading_rules_equal_the_live_listing(sim, http, shared_fixture, kind):
    """Markets also listed live carry the live venue's numbers (compared as decimals)."""
    live = {s["symbol"]: s for s in live_info(shared_fixture, kind)["symbols"]}
    ours = await get_ok(http, sim, kind, "exchangeInfo")
    compared = 0
    for entry in ours["symbols"]:
        if entry["symbol"] not in live:
            continue
        compared += 1
        theirs = live[entry["symbol"]]
        for key in ("pricePrecision", "quantityPrecision", "baseAsset", "quoteAsset"):
            assert entry[key] == theirs[key], (entry["symbol"], key)
        live_filters = {f["filterType"]: f for f in theirs["filters"]}
        for flt in entry["filters"]:
            other = live_filters[flt["filterType"]]
            for key in ("tickSize", "minPrice", "maxPrice", "stepSize", "minQty", "maxQty"):
                if key in flt:
                    assert Decimal(flt[key]) == Decimal(other[key]), (entry["symbol"], flt)
    assert compared >= 2


# -- depth -----------------------------------------------------------------------------------


def check_book(book: dict, tick: Decimal, step: Decimal) -> None:
    assert set(book) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert isinstance(book["lastUpdateId"], int) and book["lastUpdateId"] > 0
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert all(a > b for a, b in itertools.pairwise(bids)), "bids not descending"
    assert all(a < b for a, b in itertools.pairwise(asks)), "asks not ascending"
    assert bids[0] < asks[0]
    for price, qty in book["bids"] + book["asks"]:
        assert on_grid(price, tick), price
        assert on_grid(qty, step) and Decimal(qty) > 0, qty


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_depth_limits_and_default(sim, http, kind, symbol):
    deepen(sim, kind, symbol)
    rule = rules(await get_ok(http, sim, kind, "exchangeInfo"))[symbol]
    for limit in DEPTH_LIMITS:
        book = await get_ok(http, sim, kind, f"depth?symbol={symbol}&limit={limit}")
        check_book(book, rule["tick"], rule["step"])
        assert len(book["bids"]) == len(book["asks"]) == limit
    book = await get_ok(http, sim, kind, f"depth?symbol={symbol}", "v3")
    check_book(book, rule["tick"], rule["step"])
    assert len(book["bids"]) == len(book["asks"]) == DEFAULT_DEPTH[kind]


@pytest.mark.parametrize("kind", KINDS)
async def test_depth_at_most_limit_on_a_thin_book(sim, http, kind):
    rule = rules(await get_ok(http, sim, kind, "exchangeInfo"))["ETHUSDT"]
    for limit in DEPTH_LIMITS:
        book = await get_ok(http, sim, kind, f"depth?symbol=ETHUSDT&limit={limit}")
        check_book(book, rule["tick"], rule["step"])
        assert 0 < len(book["bids"]) <= limit and 0 < len(book["asks"]) <= limit


# -- trades ----------------------------------------------------------------------------------


def check_trades(kind: str, rows: list[dict], rule: dict[str, Decimal]) -> None:
    assert rows
    ids = [r["id"] for r in rows]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "trade ids not consecutive"
    for r in rows:
        assert set(r) == TRADE_KEYS[kind]
        assert isinstance(r["time"], int) and isinstance(r["isBuyerMaker"], bool)
        price = Decimal(r["price"])
        assert price > 0 and on_grid(r["price"], rule["tick"])
        if kind == "spot":  # spot docs: qty is the quote quantity, baseQty the base quantity
            base, quote = Decimal(r["baseQty"]), Decimal(r["qty"])
        else:
            base, quote = Decimal(r["qty"]), Decimal(r["quoteQty"])
        assert base > 0 and on_grid(str(base), rule["step"])
        assert base * price == quote, r
    times = [r["time"] for r in rows]
    assert times == sorted(times)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_recent_and_historical_trades(sim, http, kind, version):
    await wait_for_flow(sim)
    rule = rules(await get_ok(http, sim, kind, "exchangeInfo"))["BTCUSDT"]
    recent = await get_ok(http, sim, kind, "trades?symbol=BTCUSDT", version)
    check_trades(kind, recent, rule)
    five = await get_ok(http, sim, kind, "trades?symbol=BTCUSDT&limit=5", version)
    check_trades(kind, five, rule)
    assert len(five) == 5 and five[0]["id"] >= recent[-1]["id"] - 4

    first = recent[0]["id"]
    hist = await get_ok(
        http, sim, kind, f"historicalTrades?symbol=BTCUSDT&fromId={first}&limit=7", version
    )
    check_trades(kind, hist, rule)
    assert [r["id"] for r in hist] == list(range(first, first + 7))
    assert hist == recent[:7]
    latest = await get_ok(http, sim, kind, "historicalTrades?symbol=BTCUSDT&limit=3", version)
    assert len(latest) == 3 and latest[-1]["id"] >= recent[-1]["id"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_agg_trades_cover_the_trades(sim, http, kind, version):
    await wait_for_flow(sim)
    aggs = await get_ok(http, sim, kind, "aggTrades?symbol=BTCUSDT&limit=30", version)
    assert 2 <= len(aggs) <= 30
    for agg in aggs:
        assert set(agg) == {"a", "p", "q", "f", "l", "T", "m"}
        assert agg["f"] <= agg["l"]
    for prev, agg in itertools.pairwise(aggs):
        assert agg["a"] == prev["a"] + 1
        assert agg["f"] == prev["l"] + 1
        assert agg["T"] >= prev["T"]
    first = aggs[0]["f"]
    trades = await get_ok(
        http, sim, kind, f"historicalTrades?symbol=BTCUSDT&fromId={first}&limit=1000", version
    )
    by_id = {t["id"]: t for t in trades}
    base_key = "baseQty" if kind == "spot" else "qty"
    for agg in aggs:
        members = [by_id[i] for i in range(agg["f"], agg["l"] + 1)]
        assert {m["price"] for m in members} == {agg["p"]}
        assert {m["isBuyerMaker"] for m in members} == {agg["m"]}
        assert sum(Decimal(m[base_key]) for m in members) == Decimal(agg["q"])

    from_id = await get_ok(
        http, sim, kind, f"aggTrades?symbol=BTCUSDT&fromId={aggs[1]['a']}&limit=3", version
    )
    assert [a["a"] for a in from_id] == [aggs[1]["a"] + i for i in range(3)]
    start, end = aggs[0]["T"], aggs[-1]["T"]
    window = await get_ok(
        http, sim, kind, f"aggTrades?symbol=BTCUSDT&startTime={start}&endTime={end}", version
    )
    assert window and all(start <= a["T"] <= end for a in window)
    assert {a["a"] for a in aggs} <= {a["a"] for a in window}


# -- klines ----------------------------------------------------------------------------------


def check_kline(kind: str, row: list, span: int | None) -> None:
    assert len(row) == (12 if kind == "perp" else 11)
    open_time, o, h, low, c, vol, close_time, quote, count, taker, taker_quote = row[:11]
    assert isinstance(open_time, int) and isinstance(close_time, int) and isinstance(count, int)
    if span is not None:
        assert open_time % span == 0 and close_time == open_time + span - 1
    o, h, low, c = (Decimal(x) for x in (o, h, low, c))
    assert low <= o <= h and low <= c <= h
    vol, quote, taker, taker_quote = (Decimal(x) for x in (vol, quote, taker, taker_quote))
    assert count > 0 and vol > 0
    assert low * vol <= quote <= h * vol
    assert 0 <= taker <= vol and 0 <= taker_quote <= quote
    if kind == "perp":
        assert row[11] == "0"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_klines(sim, http, kind, version):
    await wait_for_flow(sim)
    spans = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000, "1w": None}
    for interval, span in spans.items():
        rows = await get_ok(http, sim, kind, f"klines?symbol=BTCUSDT&interval={interval}", version)
        assert 1 <= len(rows) <= 2, interval  # the test has run for a minute at most
        opens = [r[0] for r in rows]
        assert opens == sorted(set(opens))
        for row in rows:
            check_kline(kind, row, span)
    minute = await get_ok(http, sim, kind, "klines?symbol=BTCUSDT&interval=1m&limit=1", version)
    assert len(minute) == 1
    since = await get_ok(
        http, sim, kind, f"klines?symbol=BTCUSDT&interval=1m&startTime={minute[0][0]}", version
    )
    assert since[0][0] == minute[0][0]
    before = await get_ok(
        http, sim, kind, f"klines?symbol=BTCUSDT&interval=1m&endTime={minute[0][0] - 1}", version
    )
    assert all(r[0] < minute[0][0] for r in before)


# -- tickers -----------------------------------------------------------------------------------


def check_ticker(kind: str, t: dict) -> None:
    assert set(t) == TICKER_KEYS | (SPOT_TICKER_EXTRA if kind == "spot" else set())
    o, h, low, last = (Decimal(t[k]) for k in ("openPrice", "highPrice", "lowPrice", "lastPrice"))
    assert low <= o <= h and low <= last <= h
    assert Decimal(t["priceChange"]) == last - o
    assert Decimal(t["prevClosePrice"]) == o
    assert abs(Decimal(t["priceChangePercent"]) - 100 * (last - o) / o) <= Decimal("0.0006")
    assert low <= Decimal(t["weightedAvgPrice"]) <= h
    vol, quote = Decimal(t["volume"]), Decimal(t["quoteVolume"])
    assert vol > 0 and low * vol <= quote <= h * vol
    assert t["count"] == t["lastId"] - t["firstId"] + 1 > 0
    assert t["openTime"] < t["closeTime"]
    if kind == "spot":
        assert Decimal(t["bidPrice"]) < Decimal(t["askPrice"])
        assert t["quoteAsset"] == "USDT" and t["symbol"] == t["baseAsset"] + "USDT"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_ticker_24hr(sim, http, kind, version):
    await wait_for_flow(sim)
    one = await get_ok(http, sim, kind, "ticker/24hr?symbol=ETHUSDT", version)
    assert one["symbol"] == "ETHUSDT"
    check_ticker(kind, one)
    every = await get_ok(http, sim, kind, "ticker/24hr", version)
    assert [t["symbol"] for t in every] == list(SYMBOLS)
    for t in every:
        check_ticker(kind, t)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
async def test_ticker_price_and_book_ticker(sim, http, kind, version):
    await wait_for_flow(sim)
    ticks = rules(await get_ok(http, sim, kind, "exchangeInfo"))
    price = await get_ok(http, sim, kind, "ticker/price?symbol=SOLUSDT", version)
    assert set(price) == {"symbol", "price", "time"} and price["symbol"] == "SOLUSDT"
    assert Decimal(price["price"]) > 0 and on_grid(price["price"], ticks["SOLUSDT"]["tick"])
    prices = await get_ok(http, sim, kind, "ticker/price", version)
    assert [p["symbol"] for p in prices] == list(SYMBOLS)

    tops = await get_ok(http, sim, kind, "ticker/bookTicker", version)
    assert [t["symbol"] for t in tops] == list(SYMBOLS)
    top = await get_ok(http, sim, kind, "ticker/bookTicker?symbol=SOLUSDT", version)
    for t in [*tops, top]:
        assert set(t) == {"symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time"}
        assert Decimal(t["bidPrice"]) < Decimal(t["askPrice"])
        assert Decimal(t["bidQty"]) > 0 and Decimal(t["askQty"]) > 0
        assert on_grid(t["bidPrice"], ticks[t["symbol"]]["tick"])
        assert on_grid(t["askPrice"], ticks[t["symbol"]]["tick"])


@pytest.mark.parametrize("version", VERSIONS)
async def test_premium_index_perp_only(sim, http, version):
    await wait_for_flow(sim)
    one = await get_ok(http, sim, "perp", "premiumIndex?symbol=BTCUSDT", version)
    every = await get_ok(http, sim, "perp", "premiumIndex", version)
    assert [p["symbol"] for p in every] == list(SYMBOLS)
    for p in [one, *every]:
        assert set(p) == PREMIUM_KEYS
        assert Decimal(p["markPrice"]) > 0 and Decimal(p["indexPrice"]) > 0
        assert p["nextFundingTime"] % EIGHT_HOURS == 0
        assert 0 < p["nextFundingTime"] - p["time"] <= EIGHT_HOURS
        assert abs(Decimal(p["lastFundingRate"])) <= Decimal("0.0031")
        assert p["interestRate"] == "0.00010000"
    status, _, body = await request(http, url_of(sim, "spot", "premiumIndex?symbol=BTCUSDT"))
    assert status == 404 and isinstance(body["code"], int)


# -- errors ----------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("depth?symbol=NOPEUSDT", -1121),
    ("depth?symbol=btcusdt", -1121),
    ("depth", -1102),
    ("depth?symbol=", -1102),
    ("depth?symbol=BTCUSDT&limit=7", -4021),
    ("depth?symbol=BTCUSDT&limit=0", -4021),
    ("depth?symbol=BTCUSDT&limit=abc", -1100),
    ("depth?symbol=BTCUSDT&limit=-5", -1100),
    ("depth?symbol=BTCUSDT&limit=1e3", -1100),
    ("depth?symbol=BTCUSDT&limit=NaN", -1100),
    ("depth?symbol=BTCUSDT&limit=10.0", -1100),
    ("depth?symbol=BTCUSDT&limit=99999999999999999999999", -1100),
    ("trades?symbol=NOPEUSDT", -1121),
    ("trades", -1102),
    ("trades?symbol=BTCUSDT&limit=0", -1130),
    ("trades?symbol=BTCUSDT&limit=1001", -1130),
    ("trades?symbol=BTCUSDT&limit=abc", -1100),
    ("historicalTrades?symbol=BTCUSDT&fromId=-1", -1100),
    ("aggTrades?symbol=BTCUSDT&startTime=2000&endTime=1000", -1023),
    ("aggTrades?symbol=BTCUSDT&startTime=1000&endTime=3601001", -1127),
    ("aggTrades?symbol=BTCUSDT&fromId=x", -1100),
    ("klines?symbol=BTCUSDT&interval=7m", -1120),
    ("klines?symbol=BTCUSDT&interval=1M&limit=1501", -1130),
    ("klines?symbol=BTCUSDT", -1102),
    ("klines?symbol=BTCUSDT&interval=1m&startTime=2000&endTime=1000", -1023),
    ("klines?symbol=BTCUSDT&interval=1m&endTime=NaN", -1100),
    ("klines?symbol=NOPEUSDT&interval=1m", -1121),
    # a 20-digit time is no date: a 4xx (or an empty list), never a 500 from date arithmetic
    ("klines?symbol=BTCUSDT&interval=1M&startTime=99999999999999999999", None),
    ("klines?symbol=BTCUSDT&interval=1w&startTime=99999999999999999999", None),
    ("aggTrades?symbol=BTCUSDT&startTime=99999999999999999999", None),
    ("ticker/24hr?symbol=NOPEUSDT", -1121),
    ("ticker/price?symbol=NOPEUSDT", -1121),
    ("ticker/bookTicker?symbol=NOPEUSDT", -1121),
]
NON_ASCII_DIGITS = [  # str.isdigit() accepts these; int() rejects or converts them
    ("depth?symbol=BTCUSDT&limit=%C2%B2", -1100),  # superscript two
    ("depth?symbol=BTCUSDT&limit=%EF%BC%95", -1100),  # fullwidth five
]


async def check_error(
    http, url: str, code: int | None, method: str = "GET", *, empty_ok: bool = False
) -> None:
    """A 4xx JSON error (with ``code`` unless None); ``empty_ok`` also accepts ``200 []``."""
    status, ctype, body = await request(http, url, method)
    assert ctype == "application/json", (status, body)
    if empty_ok and status == 200:
        assert body == []
        return
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"code", "msg"}
    assert isinstance(body["code"], int) and isinstance(body["msg"], str) and body["msg"]
    if code is not None:
        assert body["code"] == code, body


@pytest.mark.parametrize(("query", "code"), BAD_REQUESTS + NON_ASCII_DIGITS)
@pytest.mark.parametrize("kind", KINDS)
async def test_bad_input_is_a_documented_4xx(sim, http, kind, query, code):
    for version in VERSIONS:
        await check_error(http, url_of(sim, kind, query, version), code, empty_ok=code is None)


async def test_bad_symbol_on_premium_index(sim, http):
    await check_error(http, url_of(sim, "perp", "premiumIndex?symbol=NOPEUSDT"), -1121)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/nope", "/fapi/v3/nope", "/api/v2/depth?symbol=BTCUSDT", "/fapi/v1", "/nope", "/"],
)
async def test_unknown_path_is_a_404_json(sim, http, path):
    status, ctype, body = await request(http, sim.base_url + path)
    assert (status, ctype) == (404, "application/json")
    assert isinstance(body["code"], int) and isinstance(body["msg"], str)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/api/v1/depth?symbol=BTCUSDT", "/fapi/v3/ticker/price"])
async def test_wrong_method_is_a_4xx_json(sim, http, method, path):
    await check_error(http, sim.base_url + path, None, method)
