"""Every route's every parameter, missing, malformed, of the wrong type, NaN, negative or
huge, against the real gateway on the simulator: a 4xx whose ``parameter`` names the offender,
and nothing sent to the venue."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

SPOT = "SIM-SPOT-BTC-USDT"
HUGE = "9" * 30
LONG = "X" * 5000

# A market in every malformed or unservable shape a private or public route may get.
BAD_MARKETS = [
    ("", 400), ("SIM-SPOT-BTC", 400), ("sim-spot-btc-usdt", 400), ("FOO-SPOT-BTC-USDT", 400),
    ("SIM-SWAP-BTC-USDT", 400), ("SIM-SPOT-BTC-USDT-210625", 400), (LONG, 400),
    ("SIM-SPOT-BTC-USDT\x00", 400), ("NaN", 400), ("-1", 400), ("SIM-SPOT-DOGE-USDT", 404),
    ("OKX-SPOT-BTC-USDT", 404),
]
BAD_INTEGERS = ["0", "-1", "NaN", "1.5", "1e3", "abc", " 5", "+5", "²", "", HUGE]
BAD_ORDER_IDS = ["abc", "-1", "1.5", "NaN", "1e3", HUGE, "1 2", "", "0x10"]
BAD_CLIENT_IDS = ["a b", "x" * 100, "", "é", "a\x00b"]


def _query_cases() -> list[tuple[str, str, dict, int | None, str]]:
    """(method, path, query, status or None for any 4xx, parameter)."""
    cases: list[tuple[str, str, dict, int | None, str]] = []
    # each route's required parameter missing
    for method, path, name in (
        ("GET", "/markets", "exchange"), ("GET", "/orderbook", "market"),
        ("GET", "/trades", "market"), ("GET", "/orders", "market"),
        ("DELETE", "/orders", "market"), ("GET", "/orders/1", "market"),
        ("GET", "/fills", "market"), ("GET", "/balances", "exchange"),
        ("GET", "/positions", "exchange"),
    ):
        cases.append((method, path, {}, 400, name))
    # (/ws with neither market nor dataType is a connection with no subscription yet)
    cases.append(("GET", "/ws", {"market": SPOT}, 400, "dataType"))
    cases.append(("GET", "/ws", {"dataType": "TRADE"}, 400, "market"))
    cases.append(("GET", "/ws", {"dataType": "ORDERS"}, 400, "exchange"))
    for market, status in BAD_MARKETS:
        for method, path in (("GET", "/orderbook"), ("GET", "/trades"), ("GET", "/orders"),
                             ("DELETE", "/orders"), ("GET", "/orders/1"), ("GET", "/fills")):
            cases.append((method, path, {"market": market}, status, "market"))
        cases.append(("GET", "/ws", {"market": market, "dataType": "TRADE"}, status, "market"))
    exchanges = [(e, 400) for e in ("", "FOO", "sim", "NaN", "-1", LONG, "SIM-SPOT-BTC-USDT")]
    for exchange, status in [*exchanges, ("BINANCE", 404), ("ASTER", 404)]:  # (not served)
        for path in ("/markets", "/balances", "/positions"):
            cases.append(("GET", path, {"exchange": exchange}, status, "exchange"))
        cases.append(("GET", "/ws", {"exchange": exchange, "dataType": "FILLS"}, status,
                      "exchange"))
    for data_type in ("", "CANDLES", "trade", "NaN", LONG):
        cases.append(("GET", "/ws", {"market": SPOT, "dataType": data_type}, 400, "dataType"))
    for value in BAD_INTEGERS:
        cases.append(("GET", "/orderbook", {"market": SPOT, "depth": value}, 400, "depth"))
        cases.append(("GET", "/trades", {"market": SPOT, "limit": value}, 400, "limit"))
    cases.append(("GET", "/orderbook", {"market": SPOT, "depth": "5001"}, 400, "depth"))
    cases.append(("GET", "/trades", {"market": SPOT, "limit": "1001"}, 400, "limit"))
    for value in ("-1", "NaN", "1.5", "abc", HUGE, "", "1e3"):
        cases.append(("GET", "/fills", {"market": SPOT, "since": value}, 400, "since"))
    for account in ("future", "margin", "SPOT", "", "NaN", LONG):
        cases.append(("GET", "/balances", {"exchange": "SIM", "account": account}, 400,
                      "account"))
    for oid in BAD_ORDER_IDS:
        cases.append(("DELETE", "/orders", {"market": SPOT, "orderId": oid}, 400, "orderId"))
        if oid:  # (an empty path segment is another route)
            cases.append(("GET", f"/orders/{oid}", {"market": SPOT}, 400, "orderId"))
    for cid in BAD_CLIENT_IDS:
        cases.append(("DELETE", "/orders", {"market": SPOT, "clientOrderId": cid}, 400,
                      "clientOrderId"))
    return cases


ORDER = {"market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": 50000.0,
         "timeInForce": "GTC"}


def _body_cases() -> list[tuple[bytes, int | None, str]]:
    """(raw body of POST /orders, status or None for any 4xx, parameter)."""
    raw = [(b"", 400, "body"), (b"not json", 400, "body"), (b"[]", 400, "body"),
           (b'{"market": NaN}', 400, "body"), (b"null", 400, "body")]
    cases = [(body, status, name) for body, status, name in raw]
    for field in ("market", "side", "type", "quantity"):
        without = {k: v for k, v in ORDER.items() if k != field}
        cases.append((json.dumps(without).encode(), 400, field))
    changes: list[tuple[dict, int | None, str]] = [
        *(({"market": m}, s, "market") for m, s in BAD_MARKETS),
        ({"market": 5}, 400, "market"),
        ({"side": "buy"}, 400, "side"), ({"side": None}, 400, "side"),
        ({"type": "ICEBERG"}, 400, "type"), ({"type": 1}, 400, "type"),
        ({"quantity": "1"}, 400, "quantity"), ({"quantity": True}, 400, "quantity"),
        ({"quantity": -1}, None, "quantity"), ({"quantity": 0}, None, "quantity"),
        ({"quantity": 1e300}, None, "quantity"), ({"quantity": 1e999}, None, "quantity"),
        ({"quantity": -1e999}, None, "quantity"), ({"quantity": None}, 400, "quantity"),
        ({"price": -1}, None, "price"), ({"price": "50000"}, 400, "price"),
        ({"price": 1e999}, None, "price"), ({"price": 0}, None, "price"),
        ({"type": "STOP_LIMIT", "stopPrice": -5}, None, "stopPrice"),
        ({"type": "STOP_LIMIT", "stopPrice": "x"}, 400, "stopPrice"),
        ({"type": "STOP_LIMIT"}, None, "stopPrice"),
        ({"timeInForce": "DAY"}, 400, "timeInForce"), ({"postOnly": "yes"}, 400, "postOnly"),
        ({"reduceOnly": 1}, 400, "reduceOnly"), ({"clientOrderId": 5}, 400, "clientOrderId"),
        *(({"clientOrderId": c}, 400, "clientOrderId") for c in BAD_CLIENT_IDS),
        ({"price2": 1}, 400, "price2"),
    ]
    for change, status, name in changes:
        # a number too large for a double is valid JSON (json.dumps would write Infinity)
        text = json.dumps({**ORDER, **change}).replace("Infinity", "1e999")
        cases.append((text.encode(), status, name))
    return cases


@pytest.fixture
async def private_http(sim, gateway):
    gw, token = gateway
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.post(f"{sim.base_url}/admin/accounts",
                             json={"deposit": "USDT=100000,BTC=1"}) as resp:
            creds = await resp.json()
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds["signerPrivateKey"]}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        yield http, sim.exchange.registry.by_api_key(creds["apiKey"]).id


def _check(what: str, status: int, body: dict, expected: int | None, name: str) -> str | None:
    ok = 400 <= status < 500 if expected is None else status == expected
    if ok and body.get("parameter") == name and body.get("message"):
        return None
    return f"{what}: {status} {body}"


async def test_every_bad_parameter_is_a_4xx_naming_it(sim, private_http):
    http, account = private_http
    failures = []
    for method, path, query, expected, name in _query_cases():
        async with asyncio.timeout(20), http.request(method, path, params=query) as resp:
            body = await resp.json()
        failures.append(_check(f"{method} {path} {query}"[:160], resp.status, body, expected,
                               name))
    for raw, expected, name in _body_cases():
        async with asyncio.timeout(20), http.post(
            "/orders", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            body = await resp.json()
        failures.append(_check(f"POST /orders {raw[:120]!r}", resp.status, body, expected, name))
    failures = [f for f in failures if f]
    assert not failures, "\n".join(failures)
    for kind in ("spot", "perp"):  # nothing reached the venue as an order
        trading = sim.exchange.sides[kind].trading
        assert not any(orders for (acct, _), orders in trading.by_account.items()
                       if acct == account)
