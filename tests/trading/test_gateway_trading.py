"""The gateway's private API end to end on the SIM venue: gateway + simulator over loopback,
credentials created on the simulator and sent per request in headers."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from astra.sim.admin import parse_deposits

SPOT = "SIM-SPOT-BTC-USDT"
PERP = "SIM-PERP-BTC-USDT"


@pytest.fixture
async def trader(sim, gateway):
    gw, token = gateway
    # The account comes from the simulator's admin endpoint, as `astra sim account create`
    # makes it (tests/sim/test_sim_accounts.py runs the command itself).
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.post(f"{sim.base_url}/admin/accounts",
                             json={"deposit": "USDT=100000,BTC=1"}) as resp:
            creds = await resp.json()
    headers = {
        "x-astra-api-key": f"Bearer {token}",
        "x-astra-exchange-private-key": creds["signerPrivateKey"],
    }
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        yield http, creds, sim.exchange.registry.by_api_key(creds["apiKey"]).id


async def call(http, method, path, **kw):
    async with asyncio.timeout(20), http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


def sim_orders(sim, account: int, symbol: str = "BTCUSDT", kind: str = "spot"):
    return sim.exchange.sides[kind].trading.by_account.get((account, symbol), [])


async def test_place_query_cancel_a_resting_limit_order(sim, trader):
    http, _, account = trader
    bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
    price = round(bid - 500, 2)
    status, order = await call(http, "POST", "/orders", json={
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": price,
        "timeInForce": "GTC", "clientOrderId": "desk1"})
    assert status == 200, order
    assert order["status"] == "NEW" and order["clientOrderId"] == "desk1"
    assert order["price"] == price and order["quantity"] == 0.01
    (placed,) = sim_orders(sim, account)
    assert str(placed.id) == order["orderId"] and placed.client_id == "desk1"
    status, opened = await call(http, "GET", "/orders", params={"market": SPOT})
    assert status == 200 and [o["orderId"] for o in opened] == [order["orderId"]]
    status, got = await call(http, "GET", f"/orders/{order['orderId']}", params={"market": SPOT})
    assert status == 200 and got["status"] == "NEW"
    status, canceled = await call(http, "DELETE", "/orders",
                                  params={"market": SPOT, "orderId": order["orderId"]})
    assert status == 200 and canceled["status"] == "CANCELED"
    assert placed.status == "CANCELED"


async def test_a_keys_calls_share_one_cached_venue_client(gateway, trader):
    gw, _ = gateway
    http, _, _ = trader
    for path, params in (("/balances", {"exchange": "SIM"}), ("/orders", {"market": SPOT}),
                         ("/fills", {"market": SPOT})):
        status, _ = await call(http, "GET", path, params=params)
        assert status == 200
    assert gw.trading.clients.built == 1 and len(gw.trading.clients) == 1


async def test_market_order_fills_and_balances_match_the_simulator(sim, trader):
    http, _, account = trader
    status, order = await call(http, "POST", "/orders", json={
        "market": SPOT, "side": "SELL", "type": "MARKET", "quantity": 0.02})
    assert status == 200 and order["status"] == "FILLED" and order["filledQuantity"] == 0.02
    status, fills = await call(http, "GET", "/fills", params={"market": SPOT})
    assert status == 200 and fills and {f["orderId"] for f in fills} == {order["orderId"]}
    assert sum(f["quantity"] for f in fills) == pytest.approx(0.02)
    assert all(f["feeAsset"] == "USDT" and f["side"] == "SELL" for f in fills)
    status, balances = await call(http, "GET", "/balances", params={"exchange": "SIM"})
    assert status == 200
    by_asset = {b["asset"]: b for b in balances}
    ledger = sim.exchange.ledger.balances("spot", account)
    assert by_asset["BTC"]["total"] == pytest.approx(sum(ledger["BTC"]) / 1e8)
    assert by_asset["USDT"]["free"] == pytest.approx(ledger["USDT"][0] / 1e8)
    # No account asked: the one the venue's default read holds (ccxt's defaultType, spot).
    assert {b["account"] for b in balances} == {"spot"}


async def test_perp_position_through_the_gateway(sim, trader):
    http, _, _ = trader
    status, order = await call(http, "POST", "/orders", json={
        "market": PERP, "side": "BUY", "type": "MARKET", "quantity": 0.01})
    assert status == 200 and order["status"] == "FILLED", order
    status, positions = await call(http, "GET", "/positions", params={"exchange": "SIM"})
    assert status == 200
    (pos,) = positions
    assert pos["market"] == PERP and pos["side"] == "LONG" and pos["quantity"] == 0.01
    assert pos["entryPrice"] == pytest.approx(order["averagePrice"])
    status, balances = await call(http, "GET", "/balances",
                                  params={"exchange": "SIM", "account": "swap"})
    assert status == 200 and balances
    assert {b["account"] for b in balances} == {"swap"}  # the account asked for


async def test_same_client_order_id_places_one_order_even_concurrently(sim, trader):
    http, _, account = trader
    body = {"market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
            "clientOrderId": "once42"}
    results = await asyncio.gather(*(call(http, "POST", "/orders", json=body) for _ in range(5)))
    assert {s for s, _ in results} == {200}
    assert len({o["orderId"] for _, o in results}) == 1
    status, again = await call(http, "POST", "/orders", json=body)
    assert status == 200 and again["orderId"] == results[0][1]["orderId"]
    assert [o.client_id for o in sim_orders(sim, account)] == ["once42"]
    changed = dict(body, quantity=0.002)
    status, err = await call(http, "POST", "/orders", json=changed)
    assert status == 409 and err["parameter"] == "clientOrderId"


@pytest.mark.parametrize(
    ("body", "status", "parameter"),
    [
        ({"price": 96000.001}, 422, "price"),
        ({"quantity": 0.0000001}, 422, "quantity"),
        ({"quantity": -1}, 422, "quantity"),
        ({"quantity": 1e300}, 422, "quantity"),  # huge, finite: no decimal overflow (500)
        ({"price": 1e308}, 422, "price"),
        ({"price": None}, 422, "price"),
        ({"type": "ICEBERG"}, 400, "type"),
        ({"quantityy": 1}, 400, "quantityy"),
        ({"market": "SIM-SPOT-DOGE-USDT"}, 404, None),
    ],
)
async def test_bad_orders_are_refused_before_the_venue(sim, trader, body, status, parameter):
    http, _, account = trader
    order = {"market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": 96000.0,
             "timeInForce": "GTC", **body}
    got, err = await call(http, "POST", "/orders", json=order)
    assert got == status, err
    if parameter:
        assert err["parameter"] == parameter
    assert sim_orders(sim, account) == []


async def test_credentials_required_and_never_echoed(sim, gateway, caplog):
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=10"))
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(gw.base_url) as http:
        headers = {"x-astra-api-key": f"Bearer {token}"}
        status, err = await call(http, "GET", "/balances", params={"exchange": "SIM"},
                                 headers=headers)
        assert status == 401 and err["code"] == "EXCHANGE_CREDENTIALS_REQUIRED"
        wrong = "0x" + "11" * 32  # a valid key that is no simulator account's signer
        status, err = await call(http, "GET", "/balances", params={"exchange": "SIM"},
                                 headers={**headers, "x-astra-exchange-private-key": wrong})
        assert status == 401, err
        assert wrong[2:] not in str(err) and creds.signerPrivateKey[2:] not in caplog.text
        assert wrong[2:] not in caplog.text
        status, err = await call(http, "POST", "/orders", headers={
            **headers, "x-astra-exchange-private-key": creds.signerPrivateKey},
            json={"market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 1.0})
        assert status == 422 and err["code"] == "INSUFFICIENT_BALANCE", err
        assert creds.signerPrivateKey[2:] not in str(err)
    assert creds.signerPrivateKey[2:] not in caplog.text


async def test_cancel_by_client_order_id(sim, trader):
    http, _, account = trader
    before = len(sim_orders(sim, account))
    bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
    status, order = await call(http, "POST", "/orders", json={
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01,
        "price": round(bid - 500, 2), "timeInForce": "GTC", "clientOrderId": "bycid"})
    assert status == 200 and order["status"] == "NEW"
    status, canceled = await call(http, "DELETE", "/orders",
                                  params={"market": SPOT, "clientOrderId": "bycid"})
    assert status == 200 and canceled["status"] == "CANCELED"
    assert canceled["orderId"] == order["orderId"]
    assert len(sim_orders(sim, account)) == before + 1
    status, err = await call(http, "DELETE", "/orders",
                             params={"market": SPOT, "clientOrderId": "never-placed"})
    assert status == 404 and err["code"] == "ORDER_NOT_FOUND"


async def test_a_hundred_concurrent_orders_on_one_account_are_all_placed(sim, trader):
    # ccxt's aster signer used milliseconds() * 1000 as the v3 nonce: requests signed in the
    # same millisecond collided and the venue refused all but one (-4225 Nonce Expired).
    http, _, account = trader
    bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
    price = round(bid - 1000, 2)
    bodies = [{"market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
               "price": price, "timeInForce": "GTC", "clientOrderId": f"burst{i}"}
              for i in range(100)]
    results = await asyncio.gather(*(call(http, "POST", "/orders", json=b) for b in bodies))
    refused = [(s, o) for s, o in results if s != 200]
    assert refused == []
    assert sorted(o["clientOrderId"] for _, o in results) == sorted(b["clientOrderId"]
                                                                    for b in bodies)
    placed = sim_orders(sim, account)
    assert len(placed) == 100 and {o.status for o in placed} == {"NEW"}


async def test_hmac_key_and_secret_trade_and_a_wrong_secret_is_refused(sim, gateway):
    # The v1 (HMAC) credentials `astra sim account create` prints first: ccxt's aster client
    # refused them before any request (422/502, the same for a right or a wrong secret).
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=100000,BTC=1"))
    account = sim.exchange.registry.by_api_key(creds.apiKey).id
    base = {"x-astra-api-key": f"Bearer {token}", "x-astra-exchange-key": creds.apiKey}
    async with aiohttp.ClientSession(gw.base_url) as http:
        right = {**base, "x-astra-exchange-secret": creds.apiSecret}
        bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
        status, order = await call(http, "POST", "/orders", headers=right, json={
            "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01,
            "price": round(bid - 500, 2), "timeInForce": "GTC", "clientOrderId": "hmac1"})
        assert status == 200 and order["status"] == "NEW", order
        (placed,) = sim_orders(sim, account)
        assert str(placed.id) == order["orderId"] and placed.client_id == "hmac1"
        status, balances = await call(http, "GET", "/balances", headers=right,
                                      params={"exchange": "SIM", "account": "swap"})
        assert status == 200, balances
        assert {b["asset"]: b["total"] for b in balances}["USDT"] == 100000
        status, canceled = await call(http, "DELETE", "/orders", headers=right,
                                      params={"market": SPOT, "clientOrderId": "hmac1"})
        assert status == 200 and canceled["status"] == "CANCELED"

        wrong = {**base, "x-astra-exchange-secret": creds.apiSecret[::-1]}
        status, err = await call(http, "POST", "/orders", headers=wrong, json={
            "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.01})
        assert status == 401, err
        assert (err["code"], err["venue"], err["venueCode"]) == (
            "INVALID_EXCHANGE_CREDENTIALS", "SIM", "-1022")  # Signature ... not valid
        unknown = {**right, "x-astra-exchange-key": "A" * 64}
        status, err = await call(http, "GET", "/balances", headers=unknown,
                                 params={"exchange": "SIM"})
        assert status == 401 and err["venueCode"] == "-2015", err  # no such API key
    assert len(sim_orders(sim, account)) == 1  # the refused order never reached the book
