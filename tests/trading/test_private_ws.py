"""``WS /ws?dataType=ORDERS|FILLS|BALANCES&exchange=SIM``: normalized order updates, fills and
balances from the simulator's user data streams, through the gateway over loopback."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from astra.core import ContractUnits, Side
from astra.core._trading import Fill, Order, OrderStatus, OrderType
from astra.server.private import _StreamSink
from astra.sim.admin import parse_deposits

SPOT = "SIM-SPOT-BTC-USDT"
PERP = "SIM-PERP-BTC-USDT"


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
        # each balance names its account: the GET /balances?account= value reading it
        assert {b["account"] for b in first["balances"]} == {"spot"}
        while by_asset["BTC"]["total"] == 1.0:  # then each fill
            by_asset = {b["asset"]: b for b in (await next_of(balances, "balances"))["balances"]}
        async with http.get("/balances", params={"exchange": "SIM", "account": "spot"}) as r:
            rest = {b["asset"]: b for b in await r.json()}
        while by_asset["BTC"]["total"] != pytest.approx(rest["BTC"]["total"]):  # later fills
            by_asset = {b["asset"]: b for b in (await next_of(balances, "balances"))["balances"]}
        assert by_asset["USDT"]["total"] == pytest.approx(rest["USDT"]["total"])
        assert {b["account"] for b in rest.values()} == {"spot"}

        # A perpetual fill moves the futures wallet's USDT: told apart by its account.
        async with http.post("/orders", json={"market": PERP, "side": "BUY", "type": "MARKET",
                                              "quantity": 0.01}) as r:
            assert (await r.json())["status"] == "FILLED"
        perp: list[dict] = []
        while not perp:
            message = await next_of(balances, "balances")
            perp = [b for b in message["balances"] if b["account"] == "swap"]
        assert [b["asset"] for b in perp] == ["USDT"]
        async with http.get("/balances", params={"exchange": "SIM", "account": "swap"}) as r:
            rest = {b["asset"]: b for b in await r.json()}
        assert rest["USDT"]["account"] == "swap"
    finally:
        for ws in (orders, fills, balances):
            await ws.close()


async def test_orders_stream_with_hmac_key_and_secret(sim, gateway):
    # v1 credentials open the user streams too (listenKey with the key header only).
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=100000,BTC=1"))
    headers = {"x-astra-api-key": f"Bearer {token}", "x-astra-exchange-key": creds.apiKey,
               "x-astra-exchange-secret": creds.apiSecret}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        orders = await subscribe(http, "ORDERS")
        try:
            async with http.post("/orders", json={"market": SPOT, "side": "BUY",
                                                  "type": "MARKET", "quantity": 0.01}) as r:
                placed = await r.json()
            assert placed["status"] == "FILLED", placed
            seen = []
            while not seen or seen[-1]["status"] != "FILLED":
                seen += (await next_of(orders, "orders"))["orders"]
            assert {o["orderId"] for o in seen} == {placed["orderId"]}
        finally:
            await orders.close()


async def test_private_stream_needs_credentials(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(10):
        async with http.get("/ws", params={"dataType": "ORDERS", "exchange": "SIM"},
                            headers={"x-astra-api-key": f"Bearer {token}"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "EXCHANGE_CREDENTIALS_REQUIRED"


class Frames:
    """What the sink needs of a client connection: ``deliver`` of encoded frames."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(msgspec.json.decode(frame))


@pytest.mark.parametrize("data_type", ["ORDERS", "FILLS"])
def test_user_stream_contracts_reach_clients_in_base_units(data_type):
    units = {"OKX-PERP-BTC-USDT": ContractUnits(0.01, inverse=False),
             "OKX-PERP-BTC-USD-COINM": ContractUnits(100.0, inverse=True)}
    client = Frames()
    sink = _StreamSink(client, data_type, "OKX", units)  # type: ignore[arg-type]
    orders = [Order(order_id="1", client_order_id="a", market="OKX-PERP-BTC-USDT",
                    side=Side.BUY, type=OrderType.LIMIT, quantity=5, filled_quantity=2,
                    status=OrderStatus.PARTIALLY_FILLED, price=60000.0),
              Order(order_id="2", client_order_id="b", market="OKX-PERP-BTC-USD-COINM",
                    side=Side.SELL, type=OrderType.LIMIT, quantity=6, filled_quantity=0,
                    status=OrderStatus.NEW, price=50000.0)]
    fills = [Fill(fill_id="f", order_id="2", market="OKX-PERP-BTC-USD-COINM", side=Side.SELL,
                  price=40000.0, quantity=2, time=1)]
    sink.on_orders(orders, fills)
    (frame,) = client.frames
    if data_type == "ORDERS":
        assert [(o["quantity"], o["filledQuantity"]) for o in frame["orders"]] == [
            (0.05, 0.02), (0.012, 0.0)]  # 5 x 0.01 BTC; 6 x 100 USD at 50,000
    else:
        assert [f["quantity"] for f in frame["fills"]] == [0.005]  # 2 x 100 USD at 40,000
    assert orders[0].quantity == 5  # the venue's objects are not modified
