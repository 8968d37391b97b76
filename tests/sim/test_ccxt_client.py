"""An unmodified ccxt ``aster`` client (ccxt.pro) pointed at the simulator works as it would
against the live venue: markets, REST market data and WebSocket order book and trades."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from decimal import Decimal

import aiohttp
import ccxt.pro as ccxtpro
import pytest

SPOT = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
SWAPS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
WAIT = 10  # seconds: the bound on every ccxt call


@pytest.fixture
async def exchange(sim):
    base, ws_base = sim.base_url, f"ws://{sim.host}:{sim.port}"
    ex = ccxtpro.aster({"options": {"builderFee": False}})
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = base + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = base + "/api"
    api["ws"]["public"] = {"spot": ws_base + "/sstream/stream", "swap": ws_base + "/fstream/stream"}
    api["ws"]["private"] = {"spot": ws_base + "/sstream/ws", "swap": ws_base + "/fstream/ws"}
    try:
        async with asyncio.timeout(WAIT):
            await ex.load_markets()
        yield ex
    finally:
        await ex.close()


async def rest(sim, path: str):
    async with aiohttp.ClientSession() as http, asyncio.timeout(5):
        async with http.get(sim.base_url + path) as resp:
            assert resp.status == 200
            return json.loads(await resp.text())


async def wait_for_trades(sim, count: int = 10) -> None:
    states = [st for side in sim.exchange.sides.values() for st in side.states.values()]
    for _ in range(100):  # at most 10 s
        if all(len(st.trades) >= count for st in states):
            return
        await asyncio.sleep(0.1)
    pytest.fail("the synthetic flow produced too few trades")


def dec(value) -> Decimal:
    return Decimal(str(value))


def check_sorted_book(book: dict, depth: int) -> None:
    bids, asks = [p for p, _ in book["bids"]], [p for p, _ in book["asks"]]
    assert 0 < len(bids) <= depth and 0 < len(asks) <= depth
    assert all(a > b for a, b in itertools.pairwise(bids))
    assert all(a < b for a, b in itertools.pairwise(asks))
    assert bids[0] < asks[0]
    assert all(q > 0 for _, q in book["bids"] + book["asks"])


# -- markets ---------------------------------------------------------------------------------


async def test_markets_carry_our_exchange_info_rules(sim, exchange):
    assert set(exchange.markets) == set(SPOT) | set(SWAPS)
    for root, kind in (("/api/v3", "spot"), ("/fapi/v3", "swap")):
        info = await rest(sim, root + "/exchangeInfo")
        for entry in info["symbols"]:
            filters = {f["filterType"]: f for f in entry["filters"]}
            price, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
            market_lot, notional = filters["MARKET_LOT_SIZE"], filters["MIN_NOTIONAL"]
            symbol = f"{entry['baseAsset']}/{entry['quoteAsset']}"
            market = exchange.markets[symbol if kind == "spot" else symbol + ":USDT"]
            assert (market["id"], market["type"]) == (entry["symbol"], kind)
            assert market["spot"] is (kind == "spot") and market["swap"] is (kind == "swap")
            assert dec(market["precision"]["price"]) == Decimal(price["tickSize"])
            assert dec(market["precision"]["amount"]) == Decimal(lot["stepSize"])
            limits = market["limits"]
            assert dec(limits["price"]["min"]) == Decimal(price["minPrice"])
            assert dec(limits["price"]["max"]) == Decimal(price["maxPrice"])
            assert dec(limits["amount"]["min"]) == Decimal(lot["minQty"])
            assert dec(limits["amount"]["max"]) == Decimal(lot["maxQty"])
            assert dec(limits["market"]["min"]) == Decimal(market_lot["minQty"])
            assert dec(limits["market"]["max"]) == Decimal(market_lot["maxQty"])
            min_cost = notional.get("minNotional", notional.get("notional"))
            assert dec(limits["cost"]["min"]) == Decimal(min_cost)
            if kind == "swap":
                assert (market["settle"], market["linear"]) == ("USDT", True)


# -- REST market data --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "path"),
    [
        ("BTC/USDT", "/api/v3/depth?symbol=BTCUSDT"),
        ("ETH/USDT:USDT", "/fapi/v3/depth?symbol=ETHUSDT"),
    ],
)
async def test_fetch_order_book_matches_rest_depth(sim, exchange, symbol, path):
    # Stop the clock: both reads then see the same book, and must agree level for level.
    sim.exchange._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sim.exchange._task
    async with asyncio.timeout(WAIT):
        book = await exchange.fetch_order_book(symbol, 20)
    snapshot = await rest(sim, path + "&limit=20")
    assert book["symbol"] == symbol
    check_sorted_book(book, 20)
    for side in ("bids", "asks"):
        assert [(dec(p), dec(q)) for p, q in book[side]] == [
            (Decimal(p), Decimal(q)) for p, q in snapshot[side]
        ]
    # ccxt's aster parser takes the timestamp from "T" (it leaves nonce unset)
    assert isinstance(book["timestamp"], int) and book["timestamp"] <= snapshot["T"]
    assert isinstance(snapshot["lastUpdateId"], int)
    best_bid, best_ask = Decimal(snapshot["bids"][0][0]), Decimal(snapshot["asks"][0][0])
    assert abs(dec(book["bids"][0][0]) - best_bid) <= best_bid / 200  # within 0.5 %
    assert abs(dec(book["asks"][0][0]) - best_ask) <= best_ask / 200
    ours = {dec(p) for p, _ in book["bids"] + book["asks"]}
    theirs = {Decimal(p) for p, _ in snapshot["bids"] + snapshot["asks"]}
    assert len(ours & theirs) >= len(ours) // 2


@pytest.mark.parametrize("symbol", ["SOL/USDT", "BTC/USDT:USDT"])
async def test_fetch_trades(sim, exchange, symbol):
    await wait_for_trades(sim)
    async with asyncio.timeout(WAIT):
        trades = await exchange.fetch_trades(symbol, limit=20)
    assert 0 < len(trades) <= 20
    # ccxt orders by (timestamp, id) with string ids, so "10" may precede "9" in one millisecond
    ids = sorted(int(t["id"]) for t in trades)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    stamps = [t["timestamp"] for t in trades]
    assert stamps == sorted(stamps)
    for t in trades:
        assert t["symbol"] == symbol and t["side"] in ("buy", "sell")
        assert t["price"] > 0 and t["amount"] > 0
        assert dec(t["price"]) == Decimal(t["info"]["price"])
        # ccxt reads "qty" as the amount on both sides; on spot the docs' qty is the quote qty
        assert dec(t["amount"]) == Decimal(t["info"]["qty"])
        if t["info"].get("quoteQty") is not None:
            assert Decimal(t["info"]["qty"]) * Decimal(t["info"]["price"]) == dec(t["cost"])


@pytest.mark.parametrize("symbol", ["ETH/USDT", "SOL/USDT:USDT"])
async def test_fetch_ticker(sim, exchange, symbol):
    await wait_for_trades(sim)
    async with asyncio.timeout(WAIT):
        ticker = await exchange.fetch_ticker(symbol)
    assert ticker["symbol"] == symbol
    assert 0 < ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["low"] <= ticker["open"] <= ticker["high"]
    assert ticker["baseVolume"] > 0 and ticker["quoteVolume"] > 0
    assert isinstance(ticker["timestamp"], int)
    if symbol in SPOT:  # the spot ticker also carries the top of book
        assert 0 < ticker["bid"] < ticker["ask"]


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT:USDT"])
async def test_fetch_ohlcv(sim, exchange, symbol):
    await wait_for_trades(sim)
    async with asyncio.timeout(WAIT):
        candles = await exchange.fetch_ohlcv(symbol, "1m")
    assert 1 <= len(candles) <= 2
    for ts, o, h, low, c, vol in candles:
        assert ts % 60_000 == 0
        assert 0 < low <= min(o, c) <= max(o, c) <= h and vol > 0


# -- WebSocket -------------------------------------------------------------------------------


async def test_watch_order_book_on_a_swap(exchange):
    async with asyncio.timeout(WAIT):
        book = await exchange.watch_order_book("BTC/USDT:USDT")  # subscribes btcusdt@depth20
        again = await exchange.watch_order_book("BTC/USDT:USDT")
    for b in (book, again):
        assert b["symbol"] == "BTC/USDT:USDT"
        check_sorted_book(b, 20)
        assert isinstance(b["timestamp"], int)


@pytest.mark.parametrize("symbol", ["ETH/USDT:USDT", "BTC/USDT"])
async def test_watch_trades(exchange, symbol):
    seen = []
    async with asyncio.timeout(WAIT):
        while len(seen) < 3:
            seen.extend(await exchange.watch_trades(symbol))
    for t in seen:
        assert t["symbol"] == symbol and t["side"] in ("buy", "sell")
        assert t["price"] > 0 and t["amount"] > 0
        assert dec(t["amount"]) == Decimal(t["info"]["q"])
