"""Stored-credential mode end to end, and an order partially filled by the synthetic flow as
the gateway and the simulator both report it."""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiohttp
import pytest

from astra.core.credentials import ExchangeCredentials
from astra.server.gateway import Gateway, venues_from_config
from astra.sim.admin import parse_deposits
from astra.sim.engine import BUY
from astra.sim.flow import TAKER
from astra.store import CredentialStore

SPOT = "SIM-SPOT-BTC-USDT"


async def call(http, method, path, **kw):
    async with asyncio.timeout(20), http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


async def test_stored_credentials_trade_without_exchange_headers(sim, key_store):
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    issued = key_store.create("desk")
    store = CredentialStore(key_store._engine, os.urandom(32))
    store.set(issued.key_id, ExchangeCredentials(exchange="SIM",
                                                 private_key=creds.signerPrivateKey))
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
                       credentials=store) as gw, aiohttp.ClientSession(gw.base_url, headers={
                           "x-astra-api-key": f"Bearer {issued.token}"}) as http:
        status, order = await call(http, "POST", "/orders", json={
            "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001})
        assert status == 200 and order["status"] == "FILLED"
        other = key_store.create("no credentials")
        status, err = await call(http, "GET", "/balances", params={"exchange": "SIM"},
                                 headers={"x-astra-api-key": f"Bearer {other.token}"})
        assert status == 401 and err["code"] == "EXCHANGE_CREDENTIALS_REQUIRED"


async def test_partial_fill_by_a_synthetic_taker(sim, gateway):
    gw, token = gateway
    # Stop the simulator's clock: the only taker is the one this test sends.
    sim.exchange._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sim.exchange._task
    creds = sim.exchange.create_account(parse_deposits("BTC=1"))
    state = sim.exchange.state("spot", "BTCUSDT")
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        ask = state.engine.best_ask() + 20000  # 200 USDT above the best ask: rests
        status, order = await call(http, "POST", "/orders", json={
            "market": SPOT, "side": "SELL", "type": "LIMIT", "quantity": 0.05,
            "price": ask / 100, "timeInForce": "GTC"})
        assert status == 200 and order["status"] == "NEW"
        # A synthetic taker sweeps up to our price and takes 0.02 of our 0.05.
        ahead = sum(q for p, q in state.engine.depth()[1] if p < ask)
        state.place(TAKER, BUY, ahead + 2000, ask)
        status, got = await call(http, "GET", f"/orders/{order['orderId']}",
                                 params={"market": SPOT})
        assert status == 200 and got["status"] == "PARTIALLY_FILLED"
        assert got["filledQuantity"] == pytest.approx(0.02)
        status, fills = await call(http, "GET", "/fills", params={"market": SPOT})
        assert [f["quantity"] for f in fills] == [pytest.approx(0.02)]
        assert fills[0]["liquidity"] == "MAKER" and fills[0]["price"] == ask / 100
        status, balances = await call(http, "GET", "/balances",
                                      params={"exchange": "SIM", "account": "spot"})
        btc = {b["asset"]: b for b in balances}["BTC"]
        assert btc["locked"] == pytest.approx(0.03) and btc["total"] == pytest.approx(0.98)
