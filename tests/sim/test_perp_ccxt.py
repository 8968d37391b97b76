"""An unmodified ccxt ``aster`` client (V3 EIP-712 signing with the API-wallet key) drives the
simulator's perpetual account endpoints: balance, leverage, margin and position modes, orders
with reduceOnly and closePosition, positions (positionRisk and v4/account), trades, income."""

from __future__ import annotations

import asyncio

import pytest

WAIT = 15  # seconds: the bound on each ccxt call
BTC = "BTC/USDT:USDT"


async def call(coro):
    async with asyncio.timeout(WAIT):
        answer = await coro
    # Unmodified ccxt signs with milliseconds() * 1000 as the nonce: two calls within one
    # millisecond share it, and the venue refuses the repeat (-4225 Nonce Expired), as Aster
    # does (astra's own client draws strictly increasing nonces). Step past the millisecond.
    await asyncio.sleep(0.002)
    return answer


async def test_ccxt_perpetual_account(still, ccxt_aster):
    ex = ccxt_aster
    balance = await call(ex.fetch_balance({"type": "swap"}))
    assert balance["USDT"]["total"] == 100000 and balance["USDT"]["free"] == 100000
    fee = await call(ex.fetch_trading_fee(BTC))
    assert (fee["maker"], fee["taker"]) == (0.0002, 0.0004)
    lev = await call(ex.set_leverage(10, BTC))
    assert lev["leverage"] == 10
    assert (await call(ex.set_margin_mode("isolated", "ETH/USDT:USDT")))["code"] == 200
    modes = await call(ex.fetch_margin_modes())
    assert modes["ETH/USDT:USDT"]["marginMode"] == "isolated"
    assert modes[BTC]["marginMode"] == "cross"
    leverages = await call(ex.fetch_leverages())
    assert leverages[BTC]["longLeverage"] == 10
    assert (await call(ex.fetch_position_mode()))["hedged"] is False
    await call(ex.set_position_mode(True))
    assert (await call(ex.fetch_position_mode()))["hedged"] is True
    await call(ex.set_position_mode(False))

    bought = await call(ex.create_order(BTC, "market", "buy", 0.05))
    assert bought["status"] == "closed" and bought["filled"] == 0.05
    positions = await call(ex.fetch_positions([BTC]))
    assert len(positions) == 1
    pos = positions[0]
    assert (pos["side"], pos["contracts"], pos["leverage"]) == ("long", 0.05, 10)
    assert pos["marginMode"] == "cross" and pos["hedged"] is False
    assert pos["entryPrice"] == pytest.approx(bought["average"])
    assert pos["maintenanceMarginPercentage"] == 0.025
    by_account = await call(ex.fetch_positions([BTC], {"method": "account"}))  # v4/account
    assert [(p["side"], p["contracts"]) for p in by_account] == [("long", 0.05)]

    stop = await call(ex.create_order(BTC, "market", "sell", 0, None, {
        "stopLossPrice": round(pos["markPrice"] * 0.9, 1), "closePosition": True}))
    assert stop["status"] == "open" and stop["info"]["closePosition"] is True
    assert stop["info"]["type"] == "STOP_MARKET"
    await call(ex.cancel_order(stop["id"], BTC))
    closed = await call(ex.create_order(BTC, "market", "sell", 0.05, None, {"reduceOnly": True}))
    assert closed["reduceOnly"] is True and closed["filled"] == 0.05
    assert await call(ex.fetch_positions([BTC])) == []

    trades = await call(ex.fetch_my_trades(BTC))
    assert {t["order"] for t in trades} == {bought["id"], closed["id"]}
    assert all(t["fee"]["currency"] == "USDT" and t["takerOrMaker"] == "taker" for t in trades)
    ledger = await call(ex.fetch_ledger())
    assert {e["type"] for e in ledger} == {"commission", "trade"}
    assert await call(ex.fetch_funding_history(BTC)) == []
    total = (await call(ex.fetch_balance({"type": "swap"})))["USDT"]["total"]
    assert total == pytest.approx(100000 + sum(e["amount"] if e["direction"] == "in"
                                               else -e["amount"] for e in ledger))
    still.exchange.ledger.check()
