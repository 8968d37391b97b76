"""``WS /ws?dataType=ORDERS|FILLS|BALANCES&exchange=SIM``: normalized order updates, fills and
balances from the simulator's user data streams, through the gateway over loopback."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from astra.sim.admin import parse_deposits

SPOT = "SIM-SPOT-BTC-USDT"


async def next_of(ws, kind: str) -> dict:
    async with asyncio.timeout(15):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == kind:
                return msg


@pytest.fixture
async def session(sim, gateway):
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=100000,BTC=1"))
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        yield http, creds


async def subscribe(http, data_type: str):
    ws = await http.ws_connect("/ws", params={"dataType": data_type, "exchange": "SIM"})
    for _ in range(2):  # the spot and the perpetual user streams are connected
        first = await next_of(ws, "resync")
        assert first["exchange"] == "SIM"
    return ws


async def test_orders_fills_and_balances_stream(sim, session):
    http, _ = session
    orders, fills, balances = [await subscribe(http, t) for t in ("ORDERS", "FILLS", "BALANCES")]
    try:
        async with http.post("/orders", json={"market": SPOT, "side": "BUY", "type": "MARKET",
                                              "quantity": 0.01, "clientOrderId": "ws1"}) as r:
            placed = await r.json()
        assert placed["status"] == "FILLED"
        seen = []
        while not seen or seen[-1]["status"] != "FILLED":
            seen += (await next_of(orders, "orders"))["orders"]
        assert seen[0]["status"] == "NEW" and seen[0]["clientOrderId"] == "ws1"
        assert all(o["orderId"] == placed["orderId"] and o["market"] == SPOT for o in seen)
        assert seen[-1]["filledQuantity"] == 0.01
        got = []
        while sum(f["quantity"] for f in got) < 0.01 - 1e-12:
            got += (await next_of(fills, "fills"))["fills"]
        async with http.get("/fills", params={"market": SPOT}) as r:
            rest = await r.json()
        assert sorted(f["fillId"] for f in got) == sorted(f["fillId"] for f in rest)
        assert {f["price"] for f in got} == {f["price"] for f in rest}
        first = await next_of(balances, "balances")  # the reservation at NEW
        by_asset = {b["asset"]: b for b in first["balances"]}
        assert by_asset["BTC"]["total"] == 1.0 and by_asset["USDT"]["locked"] > 0
        while by_asset["BTC"]["total"] == 1.0:  # then each fill
            by_asset = {b["asset"]: b for b in (await next_of(balances, "balances"))["balances"]}
        async with http.get("/balances", params={"exchange": "SIM", "account": "spot"}) as r:
            rest = {b["asset"]: b for b in await r.json()}
        while by_asset["BTC"]["total"] != pytest.approx(rest["BTC"]["total"]):  # later fills
            by_asset = {b["asset"]: b for b in (await next_of(balances, "balances"))["balances"]}
        assert by_asset["USDT"]["total"] == pytest.approx(rest["USDT"]["total"])
    finally:
        for ws in (orders, fills, balances):
            await ws.close()


async def test_private_stream_needs_credentials(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(10):
        async with http.get("/ws", params={"dataType": "ORDERS", "exchange": "SIM"},
                            headers={"x-astra-api-key": f"Bearer {token}"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "EXCHANGE_CREDENTIALS_REQUIRED"
