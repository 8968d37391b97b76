"""An unmodified ccxt ``aster`` client trades on the simulator: v3 EIP-712 signing with the
API-wallet key, spot and perpetual orders, balances, trades and positions."""

from __future__ import annotations

import asyncio

import ccxt.async_support as ccxt_async
import pytest

from astra.sim.admin import parse_deposits

WAIT = 15  # seconds: the bound on each ccxt call


@pytest.fixture
async def client(sim):
    creds = sim.exchange.create_account(parse_deposits("USDT=100000,BTC=1"))
    ex = ccxt_async.aster({"privateKey": creds.signerPrivateKey,
                           "options": {"builderFee": False}})
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    try:
        async with asyncio.timeout(WAIT):
            await ex.load_markets()
        yield ex, creds
    finally:
        await ex.close()


async def call(coro):
    async with asyncio.timeout(WAIT):
        return await coro


async def test_ccxt_spot_trading(sim, client):
    ex, _ = client
    balance = await call(ex.fetch_balance())
    assert balance["USDT"]["free"] == 100000 and balance["BTC"]["total"] == 1
    bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
    order = await call(ex.create_order("BTC/USDT", "limit", "buy", 0.01, round(bid - 500, 2)))
    assert order["status"] == "open" and order["amount"] == 0.01
    fetched = await call(ex.fetch_order(order["id"], "BTC/USDT"))
    assert fetched["id"] == order["id"] and fetched["price"] == round(bid - 500, 2)
    opened = await call(ex.fetch_open_orders("BTC/USDT"))
    assert [o["id"] for o in opened] == [order["id"]]
    balance = await call(ex.fetch_balance())
    assert balance["USDT"]["used"] == pytest.approx(0.01 * round(bid - 500, 2))
    canceled = await call(ex.cancel_order(order["id"], "BTC/USDT"))
    assert canceled["status"] == "canceled"
    market = await call(ex.create_order("BTC/USDT", "market", "sell", 0.02))
    assert market["status"] == "closed" and market["filled"] == 0.02
    trades = await call(ex.fetch_my_trades("BTC/USDT"))
    assert trades and {t["order"] for t in trades} == {market["id"]}
    assert sum(t["amount"] for t in trades) == pytest.approx(0.02)
    assert all(t["side"] == "sell" and t["fee"]["currency"] == "USDT" for t in trades)
    balance = await call(ex.fetch_balance())
    assert balance["BTC"]["total"] == pytest.approx(0.98)
    sim.exchange.ledger.check()
