"""Spot wallet transfer and transaction history over loopback: the spot path of the transfer
between the spot and perp wallets (both signing schemes), transactionHistory rows that add up
to the balance changes, and ccxt's ``transfer`` (which uses the spot path)."""

from __future__ import annotations

from decimal import Decimal

from tests.sim.test_perp import error, ok
from tests.sim.test_perp_ccxt import call
from tests.sim.test_spot_trading import D, balances

SYM = "BTCUSDT"


async def perp_usdt(t) -> Decimal:
    rows = await ok(t.v1("GET", "/fapi/v2/balance"))
    return next(D(r["balance"]) for r in rows if r["asset"] == "USDT")


async def test_spot_transfer_and_transaction_history(still, make_trader):
    t = make_trader("USDT=1000")
    body = await ok(t.v1("POST", "/api/v1/asset/wallet/transfer", asset="USDT", amount="100",
                         kindType="SPOT_FUTURE", clientTranId="t-1"))
    assert sorted(body) == ["status", "tranId"] and body["status"] == "SUCCESS"
    assert isinstance(body["tranId"], int)
    assert balances(await ok(t.v1("GET", "/api/v1/account")))["USDT"] == (D(900), D(0))
    assert await perp_usdt(t) == D(1100)
    await ok(t.v3("POST", "/api/v3/asset/wallet/transfer", asset="USDT", amount="30.5",
                  kindType="FUTURE_SPOT", clientTranId="t-2"))
    # One clientTranId namespace with the perpetual path; the balance is checked.
    assert await error(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT",
                            amount="1", kindType="SPOT_FUTURE", clientTranId="t-1")) == -4115
    assert await error(t.v1("POST", "/api/v1/asset/wallet/transfer", asset="USDT",
                            amount="5000", kindType="SPOT_FUTURE", clientTranId="t-3")) == -2018
    assert await error(t.v1("POST", "/api/v1/asset/wallet/transfer", asset="USDT",
                            amount="1", kindType="SIDEWAYS", clientTranId="t-4")) == -1130
    await ok(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT", amount="10",
                  kindType="SPOT_FUTURE", clientTranId="t-5"))

    bought = await ok(t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                           quantity="0.001"))
    assert bought["status"] == "FILLED"
    rows = await ok(t.v1("GET", "/api/v1/transactionHistory"))
    assert [r["type"] for r in rows[:3]] == [
        "TRANSFER_SPOT_TO_FUTURE", "TRANSFER_FUTURE_TO_SPOT", "TRANSFER_SPOT_TO_FUTURE"]
    assert [r["balanceDelta"] for r in rows[:3]] == ["-100.00000000", "30.50000000",
                                                     "-10.00000000"]
    assert sorted(rows[0]) == ["asset", "balanceDelta", "balanceInfo", "symbol", "time",
                               "tradeId", "tranId", "type"]
    assert rows[0]["tradeId"] is None and rows[0]["symbol"] == ""
    trades = await ok(t.v1("GET", "/api/v1/userTrades", symbol=SYM))
    fills = rows[3:]
    assert {r["type"] for r in fills} == {"TRADE_SOURCE", "TRADE_TARGET"}
    assert {r["tradeId"] for r in fills} == {tr["id"] for tr in trades}
    assert all(r["symbol"] == SYM for r in fills)
    # The rows of each asset add up to its balance change since the deposit.
    now = balances(await ok(t.v1("GET", "/api/v1/account")))
    for asset, deposit in (("USDT", D(1000)), ("BTC", D(0))):
        total = sum(D(r["balanceDelta"]) for r in rows if r["asset"] == asset)
        assert deposit + total == sum(now[asset]), asset
    only = await ok(t.v3("GET", "/api/v3/transactionHistory", asset="BTC", type="TRADE_TARGET"))
    assert [r["balanceDelta"] for r in only] == [r["balanceDelta"] for r in fills
                                                 if r["type"] == "TRADE_TARGET"]
    limited = await ok(t.v1("GET", "/api/v1/transactionHistory", limit=2))
    assert limited == rows[-2:]
    first = await ok(t.v1("GET", "/api/v1/transactionHistory", startTime=0, limit=1))
    assert first == rows[:1]
    assert await error(t.v1("GET", "/api/v1/transactionHistory", type="NOPE")) == -1130
    assert await error(t.v1("GET", "/api/v1/transactionHistory", limit=1001)) == -1130
    still.exchange.ledger.check()


async def test_ccxt_transfer_uses_the_spot_path(still, ccxt_aster):
    ex = ccxt_aster  # funded with USDT=100000 in both wallets
    moved = await call(ex.transfer("USDT", 250, "swap", "spot"))
    assert moved["status"] == "ok" and int(moved["id"]) == moved["info"]["tranId"]
    spot = await call(ex.fetch_balance({"type": "spot"}))
    swap = await call(ex.fetch_balance({"type": "swap"}))
    assert (spot["USDT"]["total"], swap["USDT"]["total"]) == (100250, 99750)
    still.exchange.ledger.check()


async def test_a_transfer_has_one_tran_id_everywhere(still, make_trader):
    """The transfer's answer, its spot transactionHistory row and its perpetual income row
    carry the same tranId, whichever path made it, even after spot fills (which number
    their own rows) and perpetual income; no tranId repeats in the history."""
    t = make_trader("USDT=1000")
    for _ in range(2):  # spot rows first: four TRADE_SOURCE / TRADE_TARGET rows
        await ok(t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                      quantity="0.001"))
    await ok(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="MARKET",
                  quantity="0.001"))  # perpetual income (commission) rows
    answers = [
        await ok(t.v1("POST", "/api/v1/asset/wallet/transfer", asset="USDT", amount="7",
                      kindType="SPOT_FUTURE", clientTranId="a")),
        await ok(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT", amount="3",
                      kindType="FUTURE_SPOT", clientTranId="b")),
    ]
    rows = await ok(t.v1("GET", "/api/v1/transactionHistory"))
    moves = [r for r in rows if r["type"].startswith("TRANSFER_")]
    income = await ok(t.v1("GET", "/fapi/v1/income", incomeType="TRANSFER"))
    assert [a["tranId"] for a in answers] == [r["tranId"] for r in moves] == [
        int(r["tranId"]) for r in income]
    assert [r["balanceDelta"] for r in moves] == ["-7.00000000", "3.00000000"]
    assert len({r["tranId"] for r in rows}) == len(rows) == 6
    still.exchange.ledger.check()
