"""The perpetual public endpoints that read the trading side, over loopback: funding rate
history and configuration, index and mark price klines (consistent with premiumIndex), their
documented weights, and an unmodified ccxt ``aster`` client reading them."""

from __future__ import annotations

import asyncio
import itertools
from decimal import ROUND_HALF_EVEN, Decimal

import aiohttp
import pytest
from tests.sim.test_perp import book, set_mid, trading
from tests.sim.test_perp_ccxt import BTC, call

from astra.sim import SimExchange
from astra.sim.views import mark_index_e8

SYM = "BTCUSDT"


async def get(sim, path: str, **params) -> tuple[int, object, dict]:
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.get(f"{sim.base_url}{path}", params=params) as resp:
            return resp.status, await resp.json(), dict(resp.headers)


async def settle_fundings(sim, count: int, interval_ms: int = 100) -> None:
    """Run ``count`` funding settlements on a short interval (the clock is stopped: the test
    runs the per-step check itself)."""
    t = trading(sim)
    t.set_funding_interval(interval_ms)
    for _ in range(count):
        due = t.next_funding
        while t.next_funding == due:
            await asyncio.sleep(interval_ms / 1000)
            t.check_triggers()


async def test_funding_rate_history_and_funding_info(still):
    status, rows, _ = await get(still, "/fapi/v1/fundingRate", symbol=SYM)
    assert (status, rows) == (200, [])
    _, premium, _ = await get(still, "/fapi/v1/premiumIndex", symbol=SYM)
    await settle_fundings(still, 2)
    _, rows, _ = await get(still, "/fapi/v1/fundingRate", symbol=SYM)
    assert [sorted(r) for r in rows] == [["fundingRate", "fundingTime", "symbol"]] * 2
    assert [r["symbol"] for r in rows] == [SYM, SYM]
    # The rate applied is the one premiumIndex published (the book has not moved).
    assert {r["fundingRate"] for r in rows} == {premium["lastFundingRate"]}
    first, second = (r["fundingTime"] for r in rows)
    assert first < second and first % 100 == 0 and second % 100 == 0
    _, all_rows, _ = await get(still, "/fapi/v3/fundingRate")
    assert {r["symbol"] for r in all_rows} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert len(all_rows) == 6
    # From startTime: the first `limit`; without it: the latest `limit`; ascending always.
    _, from_start, _ = await get(still, "/fapi/v1/fundingRate", symbol=SYM, startTime=first,
                                 limit=1)
    _, latest, _ = await get(still, "/fapi/v1/fundingRate", symbol=SYM, limit=1)
    assert (from_start[0]["fundingTime"], latest[0]["fundingTime"]) == (first, second)
    _, window, _ = await get(still, "/fapi/v1/fundingRate", symbol=SYM, startTime=first + 1,
                             endTime=second)
    assert [r["fundingTime"] for r in window] == [second]
    status, body, _ = await get(still, "/fapi/v1/fundingRate", symbol="NOPE")
    assert (status, body["code"]) == (400, -1121)
    status, body, _ = await get(still, "/fapi/v1/fundingRate", limit=1001)
    assert (status, body["code"]) == (400, -1130)

    trading(still).set_funding_interval(4 * 3_600_000)
    status, info, _ = await get(still, "/fapi/v1/fundingInfo")
    assert status == 200 and [i["symbol"] for i in info] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    row = info[0]
    assert sorted(row) == ["fundingFeeCap", "fundingFeeFloor", "fundingIntervalHours",
                           "interestRate", "symbol", "time"]
    assert (row["fundingIntervalHours"], row["interestRate"]) == (4, "0.00010000")
    assert row["fundingFeeCap"] == 0.0031 and row["fundingFeeFloor"] == -0.0029
    _, one, _ = await get(still, "/fapi/v3/fundingInfo", symbol="ETHUSDT")
    assert [i["symbol"] for i in one] == ["ETHUSDT"]


async def test_mark_and_index_klines_follow_premium_index(still):
    state = book(still)
    mid = state.engine.best_bid() + 1
    set_mid(state, mid)
    status, marks, _ = await get(still, "/fapi/v1/markPriceKlines", symbol=SYM, interval="1m")
    _, premium, _ = await get(still, "/fapi/v1/premiumIndex", symbol=SYM)
    assert status == 200
    row = marks[-1]
    assert [type(v) for v in row] == [int, str, str, str, str, str, int, str, int, str, str, str]
    assert row[6] == row[0] + 59_999 and row[0] % 60_000 == 0
    assert row[4] == premium["markPrice"] == f"{Decimal(mid) / 10:.8f}"
    _, index, _ = await get(still, "/fapi/v3/indexPriceKlines", pair=SYM, interval="1m")
    assert index[-1][4] == premium["indexPrice"]
    # The mark moves with the book; the newest candle closes at the new mark.
    set_mid(state, mid + 20)
    _, marks2, _ = await get(still, "/fapi/v1/markPriceKlines", symbol=SYM, interval="1m")
    _, premium2, _ = await get(still, "/fapi/v1/premiumIndex", symbol=SYM)
    assert marks2[-1][4] == premium2["markPrice"] == f"{Decimal(mid + 20) / 10:.8f}"
    if marks2[-1][0] == row[0]:  # the same minute: one candle holds both samples
        assert marks2[-1][8] > row[8] and Decimal(marks2[-1][2]) >= Decimal(mid + 20) / 10
        assert Decimal(marks2[-1][3]) <= Decimal(mid) / 10
    _, hourly, _ = await get(still, "/fapi/v1/markPriceKlines", symbol=SYM, interval="1h")
    assert hourly[-1][4] == premium2["markPrice"] and hourly[-1][0] % 3_600_000 == 0

    status, body, _ = await get(still, "/fapi/v1/indexPriceKlines", symbol=SYM, interval="1m")
    assert (status, body["code"]) == (400, -1102) and "'pair'" in body["msg"]
    status, body, _ = await get(still, "/fapi/v1/markPriceKlines", symbol=SYM, interval="7m")
    assert (status, body["code"]) == (400, -1120)
    status, body, _ = await get(still, "/fapi/v1/markPriceKlines", symbol="X", interval="1m")
    assert (status, body["code"]) == (400, -1121)


@pytest.mark.parametrize("path,params", [
    ("/fapi/v1/markPriceKlines", {"symbol": SYM}),
    ("/fapi/v3/indexPriceKlines", {"pair": SYM}),
    ("/fapi/v1/klines", {"symbol": SYM}),  # the futures docs: the same table
])
async def test_kline_weights_follow_limit(frozen_rates, path, params):
    """Each request's X-MBX-USED-WEIGHT-1M against the previous one's (the limiter's clock is
    frozen, so no minute boundary falls between them): the docs' table by ``limit``."""
    used = []
    for limit in (50, 50, 100, 499, 500, 1000, 1500, None):
        query = {**params, "interval": "1m"} | ({} if limit is None else {"limit": limit})
        status, _, headers = await get(frozen_rates, path, **query)
        assert status == 200
        used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
    assert used[0] == 1  # a fresh window: the first request's own weight
    assert [b - a for a, b in itertools.pairwise(used)] == [1, 2, 2, 5, 5, 10, 5]


async def test_spot_klines_weigh_one_and_funding_endpoints_one(frozen_rates):
    _, _, h0 = await get(frozen_rates, "/api/v1/klines", symbol=SYM, interval="1m", limit=1000)
    _, _, h1 = await get(frozen_rates, "/fapi/v1/fundingRate")
    _, _, h2 = await get(frozen_rates, "/fapi/v1/fundingInfo")
    assert h0["X-MBX-USED-WEIGHT-1M"] == "1"  # spot counts on its own limiter
    assert (h1["X-MBX-USED-WEIGHT-1M"], h2["X-MBX-USED-WEIGHT-1M"]) == ("1", "2")


async def test_ccxt_reads_funding_and_price_candles(still, ccxt_aster):
    ex = ccxt_aster
    await settle_fundings(still, 1)
    history = await call(ex.fetch_funding_rate_history(BTC))
    assert len(history) == 1 and history[0]["symbol"] == BTC
    assert history[0]["fundingRate"] == float(trading(still).funding_history[0]["fundingRate"])
    trading(still).set_funding_interval(8 * 3_600_000)
    intervals = await call(ex.fetch_funding_intervals([BTC]))
    assert intervals[BTC]["interval"] == "8h"
    _, premium, _ = await get(still, "/fapi/v1/premiumIndex", symbol=SYM)
    mark = await call(ex.fetch_ohlcv(BTC, "1m", params={"price": "mark"}))
    index = await call(ex.fetch_ohlcv(BTC, "1m", params={"price": "index"}))
    assert mark[-1][4] == float(premium["markPrice"])
    assert index[-1][4] == float(premium["indexPrice"])


def test_numeric_samples_equal_premium_index_figures():
    """The price history samples numbers (``mark_index_e8``), not texts: over a stretch of
    flow they are exactly premiumIndex's markPrice and indexPrice, every step and market; so
    are the trading side's ``mark_e8`` and ``mark_units`` (fills, liquidations, triggers)."""
    ex = SimExchange(seed=3)
    perp = ex.sides["perp"].trading
    for _ in range(400):
        ex.step()
        for state in perp.states.values():
            mp = perp.mark(state)
            expected = (int(Decimal(mp.p).scaleb(8)), int(Decimal(mp.i).scaleb(8)))
            assert mark_index_e8(state, perp.index_price(state)) == expected
            assert perp.mark_e8(state) == expected[0]
            grid = Decimal(mp.p).scaleb(state.market.price_dp)
            assert perp.mark_units(state) == int(grid.to_integral_value(ROUND_HALF_EVEN))

