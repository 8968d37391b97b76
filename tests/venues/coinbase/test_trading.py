"""Trading on COINBASE (Advanced Trade) through ccxt, against a fake Coinbase on 127.0.0.1
(no network).

The fake answers the ``/api/v3/brokerage`` private endpoints ccxt calls with responses
shaped as Coinbase's Advanced Trade API reference shows them
(https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api: Orders, Accounts,
Futures; values chosen per scenario) and records every request. The markets are the
documented products samples (``samples/market-products-*.json``). The credentials are a CDP
key made in the test: an ``organizations/.../apiKeys/...`` name and a fresh P-256 key, so the
JWT in ``Authorization: Bearer`` is verified with its public key (claims bound to the
request's method and path). Each test drives ``TradingService`` (order journal on a
temporary SQLite file) and checks request building, response parsing and error mapping.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tests.venues.trading_fakes import (
    FakeVenue,
    Seen,
    place_through_gateway,
    reconciled_after_unknown_outcome,
    refused_fast,
    rejected_for_balance,
    run,
    venue_fixtures,
)

from astra.core import InvalidOrder, OrderNotFound, RateLimited
from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    PlaceOrder,
    Position,
    PositionSide,
    Side,
    TimeInForce,
)
from astra.core.credentials import ExchangeCredentials
from astra.store.journal import JournalState
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue

SAMPLES = Path(__file__).parent / "samples"
PRODUCTS = [
    p
    for name in ("market-products-spot.json", "market-products-future.json")
    for p in json.loads((SAMPLES / name).read_text())["products"]
]
SPOT = "COINBASE-SPOT-BTC-USD"
PERP = "COINBASE-PERP-BTC-USD"  # BIP-20DEC30-CDE, the US perpetual-style future
KEY = "tests"


# --- the fake venue ---------------------------------------------------------------------------

async def _products() -> list[dict]:
    return PRODUCTS


fake, venue, service = venue_fixtures(
    "COINBASE",
    lambda: FakeVenue(unscripted=(400, {"error": "INVALID_ARGUMENT", "message": "unscripted"})),
    lambda url: CoinbaseVenue("COINBASE", CoinbaseUrls(rest=url), markets_source=_products))


@pytest.fixture
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def creds(signing_key):
    """A CDP key made here: its name, and the EC private key as Coinbase hands it out."""
    pem = signing_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    name = f"organizations/{secrets.token_hex(8)}/apiKeys/{secrets.token_hex(8)}"
    return ExchangeCredentials("COINBASE", api_key=name, secret=pem)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def assert_signed(seen: Seen, creds: ExchangeCredentials, signing_key) -> dict:
    """A fresh ES256 JWT for this request, signed by the CDP key; nothing of the secret
    sent. Returns the claims."""
    scheme, _, token = seen.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    head, payload, signature = token.split(".")
    header, claims = json.loads(_b64(head)), json.loads(_b64(payload))
    assert header["alg"] == "ES256" and header["kid"] == creds.api_key
    assert header["nonce"]  # random per token
    raw = _b64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        signing_key.public_key().verify(der, f"{head}.{payload}".encode(),
                                        ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:  # pragma: no cover - the assertion names the failure
        pytest.fail("the JWT's signature does not verify with the CDP key")
    assert claims["sub"] == creds.api_key and claims["iss"] == "coinbase-cloud"
    assert claims["aud"] == ["retail_rest_api_proxy"]
    assert abs(claims["nbf"] - time.time()) < 60 and claims["exp"] == claims["nbf"] + 120
    # Bound to this request: "<METHOD> <host><path>" (ccxt strips only an https:// scheme).
    assert claims["uri"] == f"{seen.method} {seen.url.partition('?')[0]}"
    text = seen.text()
    assert creds.secret not in text
    assert all(line not in text for line in creds.secret.splitlines()[1:-1])
    return claims


# --- doc-shaped answers -----------------------------------------------------------------------

OID = "0000-000000-000001"


def created(client_order_id: str, side: str = "BUY", configuration: dict | None = None):
    """POST /api/v3/brokerage/orders, accepted."""
    return {
        "success": True,
        "success_response": {"order_id": OID, "product_id": "BTC-USD", "side": side,
                             "client_order_id": client_order_id},
        "order_configuration": configuration or {},
    }


def order(**changes) -> dict:
    """GET /api/v3/brokerage/orders/historical/{order_id}'s ``order`` (our values)."""
    base = {
        "order_id": OID, "product_id": "BTC-USD", "user_id": "2222-000000-000000",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.001",
                                                    "limit_price": "60000.01",
                                                    "post_only": False}},
        "side": "BUY", "client_order_id": "desk-1", "status": "OPEN",
        "time_in_force": "GOOD_UNTIL_CANCELLED", "created_time": "2024-03-01T10:00:00.5Z",
        "completion_percentage": "0", "filled_size": "0", "average_filled_price": "0",
        "number_of_fills": "0", "filled_value": "0", "pending_cancel": False,
        "size_in_quote": False, "total_fees": "0", "size_inclusive_of_fees": False,
        "total_value_after_fees": "0", "trigger_status": "INVALID_ORDER_TYPE",
        "order_type": "LIMIT", "reject_reason": "", "settled": False, "product_type": "SPOT",
        "reject_message": "", "cancel_message": "", "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": "60.01", "is_liquidation": False,
        "last_fill_time": None, "edit_history": [], "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE", "retail_portfolio_id": "3333-000000-000000",
    }
    return {**base, **changes}


FILLS = {"fills": [{
    "entry_id": "22222-2222222-22222222", "trade_id": "1111-11111-111111", "order_id": OID,
    "trade_time": "2024-03-01T10:00:05.25Z", "trade_type": "FILL", "price": "60000.01",
    "size": "0.0004", "commission": "0.12", "product_id": "BTC-USD",
    "sequence_timestamp": "2024-03-01T10:00:05.26Z", "liquidity_indicator": "MAKER",
    "size_in_quote": False, "user_id": "3333-333333-3333333", "side": "BUY",
    "retail_portfolio_id": "3333-000000-000000"}], "cursor": ""}
ACCOUNTS = {"accounts": [
    {"uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe", "name": "BTC Wallet", "currency": "BTC",
     "available_balance": {"value": "0.5", "currency": "BTC"}, "default": False,
     "active": True, "created_at": "2021-05-31T09:59:59Z",
     "updated_at": "2021-05-31T09:59:59Z", "deleted_at": None,
     "type": "ACCOUNT_TYPE_CRYPTO", "ready": True,
     "hold": {"value": "0.001", "currency": "BTC"},
     "retail_portfolio_id": "3333-000000-000000"},
    {"uuid": "0d5c8b1d-7c0a-4b4e-a7a3-2f1e5c2d7e10", "name": "Cash (USD)", "currency": "USD",
     "available_balance": {"value": "1000", "currency": "USD"}, "default": True,
     "active": True, "created_at": "2021-05-31T09:59:59Z",
     "updated_at": "2021-05-31T09:59:59Z", "deleted_at": None,
     "type": "ACCOUNT_TYPE_FIAT", "ready": True,
     "hold": {"value": "60.01", "currency": "USD"},
     "retail_portfolio_id": "3333-000000-000000"},
], "has_next": False, "cursor": "", "size": 2}
POSITIONS = {"positions": [{
    "product_id": "BIP-20DEC30-CDE", "expiration_time": "2030-12-20T16:00:00Z",
    "side": "SHORT", "number_of_contracts": "3", "current_price": "61000",
    "avg_entry_price": "60000", "unrealized_pnl": "-30", "daily_realized_pnl": "0"}]}
INSUFFICIENT = {
    "success": False,
    "error_response": {"error": "INSUFFICIENT_FUND",
                       "message": "Insufficient balance in source account",
                       "error_details": "",
                       "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON"},
    "order_configuration": {"limit_limit_gtc": {"base_size": "1", "limit_price": "60000",
                                                "post_only": False}},
}
TOO_MANY = {"error": "RATE_LIMIT_EXCEEDED", "error_details": "", "message":
            "Rate limit exceeded"}


# --- request building and response parsing ---------------------------------------------------

async def test_limit_order_lifecycle(fake, service, creds, signing_key):
    fake.answer("POST", "/api/v3/brokerage/orders", created("desk-1"))
    fake.answer("GET", f"/api/v3/brokerage/orders/historical/{OID}", {"order": order(
        status="OPEN", filled_size="0.0004", average_filled_price="60000.01",
        completion_percentage="40", number_of_fills="1")})
    fake.answer("GET", "/api/v3/brokerage/orders/historical/batch",
                {"orders": [order()], "sequence": "0", "has_next": False, "cursor": ""})
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.01, time_in_force=TimeInForce.GTC, client_order_id="desk-1")

    placed = await run(service.place(KEY, creds, body))

    (sent,) = fake.seen
    assert (sent.method, sent.path_qs) == ("POST", "/api/v3/brokerage/orders")
    assert sent.headers["Content-Type"] == "application/json"
    assert_signed(sent, creds, signing_key)
    assert sent.json() == {
        "client_order_id": "desk-1", "product_id": "BTC-USD", "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.001",
                                                    "limit_price": "60000.01",
                                                    "post_only": False}}}
    # The acknowledgement, completed with what was sent and accepted.
    assert placed == Order(
        order_id=OID, client_order_id="desk-1", market=SPOT, side=Side.BUY,
        type=OrderType.LIMIT, quantity=0.001, filled_quantity=0.0, status=OrderStatus.NEW,
        price=60000.01, time_in_force=TimeInForce.GTC, post_only=False, reduce_only=False)
    entry = service.journal.get(KEY, "COINBASE", "desk-1")
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == OID

    got = await run(service.get_order(KEY, creds, SPOT, OID))
    seen = fake.seen[-1]
    assert (seen.method, seen.path_qs) == ("GET", f"/api/v3/brokerage/orders/historical/{OID}")
    assert_signed(seen, creds, signing_key)
    assert got.status == OrderStatus.PARTIALLY_FILLED and got.client_order_id == "desk-1"
    assert (got.quantity, got.filled_quantity, got.average_price, got.price) == (
        0.001, 0.0004, 60000.01, 60000.01)
    assert got.created_at == 1709287200500

    opened = await run(service.open_orders(KEY, creds, SPOT))
    seen = fake.seen[-1]
    assert seen.path_qs == ("/api/v3/brokerage/orders/historical/batch?order_status=OPEN"
                            "&product_id=BTC-USD&limit=100")
    assert_signed(seen, creds, signing_key)
    assert [(o.order_id, o.status) for o in opened] == [(OID, OrderStatus.NEW)]


async def test_market_buy_is_sized_in_the_base_asset(fake, service, creds, signing_key):
    fake.answer("POST", "/api/v3/brokerage/orders", created("mkt-1"))
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.MARKET, quantity=0.0025,
                      client_order_id="mkt-1")
    placed = await run(service.place(KEY, creds, body))
    (sent,) = fake.seen
    assert_signed(sent, creds, signing_key)
    assert sent.json()["order_configuration"] == {"market_market_ioc": {"base_size": "0.0025"}}
    assert (placed.type, placed.quantity, placed.price, placed.time_in_force) == (
        OrderType.MARKET, 0.0025, None, None)


async def test_post_only_and_stop_limit_configurations(fake, service, creds, signing_key):
    fake.answer("POST", "/api/v3/brokerage/orders", created("maker-1", side="SELL"))
    await run(service.place(KEY, creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.LIMIT, quantity=0.001, price=70000.0,
        time_in_force=TimeInForce.GTC, post_only=True, client_order_id="maker-1")))
    await run(service.place(KEY, creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.STOP_LIMIT, quantity=0.001, price=57900.0,
        stop_price=58000.0, time_in_force=TimeInForce.GTC, client_order_id="stop-1")))
    maker, stop = (s.json() for s in fake.seen)
    assert maker["order_configuration"] == {"limit_limit_gtc": {
        "base_size": "0.001", "limit_price": "70000", "post_only": True}}
    # A stop-loss SELL triggers when the price falls to the stop.
    assert (stop["client_order_id"], stop["order_configuration"]) == ("stop-1", {
        "stop_limit_stop_limit_gtc": {"base_size": "0.001", "limit_price": "57900",
                                      "stop_price": "58000",
                                      "stop_direction": "STOP_DIRECTION_STOP_DOWN"}})


@pytest.mark.parametrize("changes", [
    {"type": OrderType.STOP_MARKET, "stop_price": 58000.0, "price": None},
    {"post_only": True, "time_in_force": TimeInForce.IOC},
    {"reduce_only": True},
])
async def test_orders_refused_before_any_request(fake, service, creds, changes):
    fields = {"market": SPOT, "side": Side.SELL, "type": OrderType.LIMIT, "quantity": 0.001,
              "price": 60000.0, **changes}
    with pytest.raises(InvalidOrder):
        await run(service.place(KEY, creds, PlaceOrder(**fields)))
    assert fake.seen == []


async def test_cancel_by_client_order_id(fake, service, creds, signing_key):
    fake.answer("GET", "/api/v3/brokerage/orders/historical/batch",
                {"orders": [order(order_id="other", client_order_id="x"), order()],
                 "sequence": "0", "has_next": False, "cursor": ""})
    fake.answer("POST", "/api/v3/brokerage/orders/batch_cancel", {"results": [
        {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": OID}]})
    fake.answer("GET", f"/api/v3/brokerage/orders/historical/{OID}",
                {"order": order(status="CANCELLED", filled_size="0.0004",
                                average_filled_price="60000.01")})
    canceled = await run(service.cancel(KEY, creds, SPOT, None, "desk-1"))
    search, cancel, lookup = fake.seen
    assert search.path_qs == ("/api/v3/brokerage/orders/historical/batch?product_id=BTC-USD"
                              "&limit=250")
    assert (cancel.method, cancel.path, cancel.json()) == (
        "POST", "/api/v3/brokerage/orders/batch_cancel", {"order_ids": [OID]})
    assert lookup.path == f"/api/v3/brokerage/orders/historical/{OID}"
    for seen in fake.seen:
        assert_signed(seen, creds, signing_key)
    assert (canceled.order_id, canceled.client_order_id, canceled.status) == (
        OID, "desk-1", OrderStatus.CANCELED)
    assert canceled.filled_quantity == 0.0004


async def test_cancel_refused_carries_the_reason(fake, service, creds):
    fake.answer("POST", "/api/v3/brokerage/orders/batch_cancel", {"results": [
        {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": "gone"}]})
    with pytest.raises(OrderNotFound) as caught:
        await run(service.cancel(KEY, creds, SPOT, "gone", None))
    assert caught.value.venue_code == "UNKNOWN_CANCEL_ORDER"
    assert len(fake.seen) == 1


async def test_fills_balances_positions(fake, service, creds, signing_key):
    fake.answer("GET", "/api/v3/brokerage/orders/historical/fills", FILLS)
    fake.answer("GET", "/api/v3/brokerage/accounts", ACCOUNTS)
    fake.answer("GET", "/api/v3/brokerage/cfm/positions", POSITIONS)

    fills = await run(service.fills(KEY, creds, SPOT, 1709287200000))
    seen = fake.seen[-1]
    assert seen.path_qs == ("/api/v3/brokerage/orders/historical/fills?product_id=BTC-USD"
                            "&start_sequence_timestamp=2024-03-01T10%3A00%3A00.000Z")
    assert_signed(seen, creds, signing_key)
    assert fills == [Fill(fill_id="1111-11111-111111", order_id=OID, market=SPOT, side=Side.BUY,
                          price=60000.01, quantity=0.0004, time=1709287205250, fee=0.12,
                          fee_asset="USD", liquidity=Liquidity.MAKER)]

    balances = await run(service.balances(KEY, creds, "COINBASE"))
    seen = fake.seen[-1]
    assert seen.path_qs == "/api/v3/brokerage/accounts?limit=250"
    assert_signed(seen, creds, signing_key)
    assert balances == [Balance(asset="BTC", free=0.5, locked=0.001, total=0.501, account="spot"),
                        Balance(asset="USD", free=1000.0, locked=60.01, total=1060.01,
                                account="spot")]

    positions = await run(service.positions(KEY, creds, "COINBASE"))
    seen = fake.seen[-1]
    assert seen.path_qs == "/api/v3/brokerage/cfm/positions"
    assert_signed(seen, creds, signing_key)
    # 3 contracts of 0.01 BTC (contracts x contract size, normalize.position_from_ccxt).
    assert positions == [Position(market=PERP, side=PositionSide.SHORT, quantity=0.03,
                                  entry_price=60000.0, mark_price=61000.0,
                                  unrealized_pnl=-30.0)]


async def test_private_client_is_on_the_configured_root(fake, creds):
    venue = CoinbaseVenue.from_config("COINBASE", {"rest": fake.base_url + "/"})
    client = venue.private_client(creds.ccxt_config())
    try:
        assert client.urls["api"]["rest"] == fake.base_url
        assert client.markets is None  # nothing loaded yet: nothing shared
    finally:
        await client.close()
        await venue.close()


# --- errors ----------------------------------------------------------------------------------

async def test_insufficient_fund_is_mapped_and_journaled(fake, service, creds):
    fake.answer("POST", "/api/v3/brokerage/orders", INSUFFICIENT)  # HTTP 200, success false
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=1.0,
                      price=60000.0, time_in_force=TimeInForce.GTC, client_order_id="big-1")
    err = await rejected_for_balance(service, KEY, creds, body, "INSUFFICIENT_FUND")
    assert "Insufficient balance in source account" in err.message
    assert creds.api_key not in err.message


async def test_unknown_order_is_order_not_found(fake, service, creds):
    fake.answer("GET", "/api/v3/brokerage/orders/historical/nope",
                {"error": "NOT_FOUND", "error_details": "order with this orderID was not found",
                 "message": "order with this orderID was not found"}, status=404)
    with pytest.raises(OrderNotFound) as caught:
        await run(service.get_order(KEY, creds, SPOT, "nope"))
    assert caught.value.venue_code == "NOT_FOUND"


async def test_server_error_is_an_unknown_outcome_then_reconciled(fake, service, creds):
    # Coinbase's error bodies carry no status in ccxt's message: a 5xx must stay a 5xx.
    fake.answer("POST", "/api/v3/brokerage/orders",
                {"error": "UNAVAILABLE", "message": "service unavailable"}, status=503)
    fake.answer("GET", "/api/v3/brokerage/orders/historical/batch",
                {"orders": [order()], "sequence": "0", "has_next": False, "cursor": ""})
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.01, time_in_force=TimeInForce.GTC, client_order_id="desk-1")
    await reconciled_after_unknown_outcome(service, KEY, creds, body, OID)
    assert fake.seen[-1].path_qs == ("/api/v3/brokerage/orders/historical/batch"
                                     "?product_id=BTC-USD&limit=250")


async def test_rate_limit_closes_the_gate(fake, service, creds):
    fake.answer("GET", "/api/v3/brokerage/accounts", TOO_MANY, status=429,
                headers={"Retry-After": "9"})
    with pytest.raises(RateLimited) as caught:
        await run(service.balances(KEY, creds, "COINBASE"))
    err = caught.value
    assert (err.code, err.status, err.venue_code) == ("RATE_LIMITED", 429,
                                                     "RATE_LIMIT_EXCEEDED")
    assert 7 < err.retry_after <= 9
    refused = await refused_fast(service.open_orders(KEY, creds, SPOT))
    assert 7 < refused.retry_after <= 9
    assert len(fake.seen) == 1  # the venue was not called again


# --- the gateway, end to end -----------------------------------------------------------------

async def test_gateway_places_an_order_with_an_ed25519_key_in_headers(fake, venue, key_store):
    """A CDP Ed25519 key (a one-line base64 secret, so it fits a header; an EC PEM does not)
    signs an EdDSA JWT."""
    signer = ed25519.Ed25519PrivateKey.generate()
    seed = signer.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = signer.public_key().public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw)
    key_id, secret = secrets.token_hex(16), base64.b64encode(seed + public).decode()
    fake.answer("POST", "/api/v3/brokerage/orders", created("desk-1"))
    placed = await place_through_gateway("COINBASE", venue, key_store, key_id, secret, {
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
        "price": 60000.01, "timeInForce": "GTC", "clientOrderId": "desk-1"})
    assert (placed["orderId"], placed["clientOrderId"], placed["status"]) == (
        OID, "desk-1", "NEW")
    (sent,) = fake.seen
    assert sent.json()["client_order_id"] == "desk-1"
    head, payload, signature = sent.headers["Authorization"].removeprefix("Bearer ").split(".")
    header, claims = json.loads(_b64(head)), json.loads(_b64(payload))
    assert header["alg"] == "EdDSA" and header["kid"] == key_id
    signer.public_key().verify(_b64(signature), f"{head}.{payload}".encode())
    assert (claims["sub"], claims["iss"], claims["aud"]) == (key_id, "cdp", ["cdp_service"])
    assert claims["uris"] == [f"POST {fake.base_url}/api/v3/brokerage/orders"]
    assert secret not in sent.text()
