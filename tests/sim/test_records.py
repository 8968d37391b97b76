"""History records stay bounded (in memory and in the saved state), and every endpoint that
serves a record reads ``limit`` and its window the same way: absent is the default, 0 or
over the maximum is -1130, from a start the first rows, otherwise the latest."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.sim.test_perp import SYM, error, ok, order

from astra.sim import SimExchange
from astra.sim.orders import OrderError
from astra.sim.records import FUNDING_ROWS, HISTORY_ROWS, check_limit, window


def test_window_and_limit():
    rows = list(range(10))
    assert window(rows, 3, from_start=True) == [0, 1, 2]
    assert window(rows, 3, from_start=False) == [7, 8, 9]
    assert check_limit(None, 500, 1000) == 500
    assert check_limit(1000, 500, 1000) == 1000
    for bad in (0, 1001):
        with pytest.raises(OrderError) as info:
            check_limit(bad, 500, 1000)
        assert info.value.code == -1130


def test_history_records_keep_their_newest_rows_in_memory_and_on_disk():
    ex = SimExchange(seed=1)
    spot, perp = ex.sides["spot"].trading, ex.sides["perp"].trading
    for i in range(HISTORY_ROWS + 5):
        spot.record(7, "USDT", i, "TRADE_TARGET")
        perp.add_income(7, SYM, "COMMISSION", -i)
    rows = spot.transactions[7]
    assert len(rows) == HISTORY_ROWS and rows[0]["balanceDelta"] == "0.00000005"
    assert len(perp.income[7]) == HISTORY_ROWS
    saved_spot, saved_perp = spot.to_dict(), perp.to_dict()
    assert [len(r) for _, r in saved_spot["transactions"]] == [HISTORY_ROWS]
    assert [len(r) for _, r in saved_perp["perp"]["income"]] == [HISTORY_ROWS]
    # Loaded back, they stay bounded.
    again = SimExchange(seed=1)
    again.sides["spot"].trading.load(saved_spot)
    again.sides["spot"].trading.record(7, "USDT", 1, "TRADE_TARGET")
    assert len(again.sides["spot"].trading.transactions[7]) == HISTORY_ROWS
    # Funding rates: the newest FUNDING_ROWS of each symbol (three perpetual markets).
    for i in range(3 * FUNDING_ROWS + 1):
        perp.funding_history.append({"symbol": SYM, "fundingRate": "0", "fundingTime": i})
    assert len(perp.funding_history) == 3 * FUNDING_ROWS
    assert perp.funding_history[0]["fundingTime"] == 1


def test_the_shared_tran_id_counter_is_saved_once_and_old_files_still_load():
    ex = SimExchange(seed=1)
    spot, perp = ex.sides["spot"].trading, ex.sides["perp"].trading
    assert perp.tran_ids is spot.tran_ids  # one counter for both sides (app.py)
    spot.record(7, "USDT", 1, "TRADE_TARGET")
    perp.add_income(7, SYM, "COMMISSION", -1)
    saved_spot, saved_perp = spot.to_dict(), perp.to_dict()
    assert saved_spot["tran_id"] == 2 and "tran_id" not in saved_perp["perp"]
    again = SimExchange(seed=1)
    again.sides["perp"].trading.load(saved_perp)
    again.sides["spot"].trading.load(saved_spot)
    assert again.sides["perp"].trading.add_income(7, SYM, "COMMISSION", -1)["tranId"] == "3"
    # A file written when both sides saved the counter: the larger one is the last id used.
    old = SimExchange(seed=1)
    old.sides["perp"].trading.load({**saved_perp, "perp": {**saved_perp["perp"], "tran_id": 9}})
    old.sides["spot"].trading.load({**saved_spot, "tran_id": 4})
    assert old.sides["spot"].trading.tran_ids.next() == 10


async def test_position_margin_history_is_bounded(still, make_trader):
    t = make_trader("USDT=10000")
    await ok(t.v1("POST", "/fapi/v1/marginType", symbol=SYM, marginType="ISOLATED"))
    await order(t, "BUY", quantity="0.05")
    await ok(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="1", type=1))
    [rows] = still.exchange.sides["perp"].trading.margin_history.values()
    assert rows.maxlen == HISTORY_ROWS


@pytest.mark.parametrize("method,path,params", [
    ("GET", "/fapi/v1/allOrders", {"symbol": SYM}),
    ("GET", "/api/v1/allOrders", {"symbol": SYM}),
    ("GET", "/fapi/v1/userTrades", {"symbol": SYM}),
    ("GET", "/fapi/v1/income", {}),
    ("GET", "/fapi/v1/forceOrders", {}),
    ("GET", "/fapi/v1/positionMargin/history", {"symbol": SYM}),
    ("GET", "/api/v1/transactionHistory", {}),
])
async def test_limit_zero_is_invalid_on_signed_records(still, make_trader, method, path, params):
    t = make_trader("USDT=1000")
    assert await error(t.v1(method, path, **params, limit=0)) == -1130
    await ok(t.v1(method, path, **params, limit=1))


@pytest.mark.parametrize("path,params", [
    ("/fapi/v1/income", {}),
    ("/fapi/v1/forceOrders", {}),
    ("/fapi/v1/positionMargin/history", {"symbol": SYM}),
    ("/api/v1/transactionHistory", {}),
])
async def test_start_after_end_is_invalid_on_signed_history(still, make_trader, path, params):
    """``records.query_window``: every history query answers -1023 for a start after its
    end (only transactionHistory did), and a one-instant window is fine."""
    t = make_trader("USDT=1000")
    assert await error(t.v1("GET", path, **params, startTime=2000, endTime=1000)) == -1023
    assert await ok(t.v1("GET", path, **params, startTime=1000, endTime=1000)) == []


@pytest.mark.parametrize("path,params", [
    ("/fapi/v1/fundingRate", {}),
    ("/fapi/v1/klines", {"symbol": SYM, "interval": "1m"}),
    ("/fapi/v1/markPriceKlines", {"symbol": SYM, "interval": "1m"}),
])
async def test_limit_zero_is_invalid_on_public_records(still, path, params):
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.get(f"{still.base_url}{path}", params={**params, "limit": 0}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, -1130)
