"""Trading on HTX (exchange code HUOBI) through the gateway's ``TradingService``, ccxt and a
fake HTX on 127.0.0.1 answering spot (``/v1/order/...``, ``/v1/account/...``) and
USDT-margined swap (``/v5/...``) private REST with bodies written from HTX's docs
(``data/private_rest.json``), recording every request.

Checked: what is sent (method, path, the order at the market's precision, the client order id
as ``client-order-id``, or as the integer ``client_order_id`` contracts take, the
``AccessKeyId``/``SignatureMethod``/``SignatureVersion``/``Timestamp``/``Signature`` query
recomputed here from HTX's documented signing over the host name, the secret never on the
wire), what the answers become (Order, Fill, Balance, Position), the venue error
``account-frozen-balance-insufficient-error`` and a 429."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.venues.trading_fakes import FakeVenue, Seen, TradingEnv, documented, trading_env

from astra.core import InsufficientBalance, InvalidOrder, RateLimited
from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
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
from astra.venues.htx import HtxUrls, HtxVenue
from astra.venues.htx.private import numeric_client_order_id
from astra.venues.limiter import VenueLimiter

DATA = Path(__file__).parent / "data"
SPOT = "HUOBI-SPOT-BTC-USDT"
PERP = "HUOBI-PERP-BTC-USDT"
KEY_ID = "desk"
CID = "astraHtxTest000000000000000001"
NCID = str(numeric_client_order_id(CID))  # what the contract endpoints see
OID = "356501383558845"
LOID = "1512501029504577536"
_SIGNATURE_PARAMS = {"AccessKeyId", "SignatureMethod", "SignatureVersion", "Timestamp",
                     "Signature"}


def doc(*path: str) -> dict:
    return documented(DATA / "private_rest.json", *path, cid=CID, ncid=NCID)


def unsigned(seen: Seen) -> dict[str, str]:
    """The query without the signature's parameters."""
    return {k: v for k, v in seen.query.items() if k not in _SIGNATURE_PARAMS}


def answers() -> dict[tuple[str, str], dict]:
    return {
        ("GET", "/v1/account/accounts"): doc("spot", "accounts"),
        ("POST", "/v1/order/orders/place"): doc("spot", "place"),
        ("GET", f"/v1/order/orders/{OID}"): doc("spot", "order"),
        ("GET", "/v1/order/orders/getClientOrder"): doc("spot", "order"),
        ("GET", "/v1/order/openOrders"): doc("spot", "open_orders"),
        ("POST", f"/v1/order/orders/{OID}/submitcancel"): doc("spot", "submitcancel"),
        ("POST", "/v1/order/orders/submitCancelClientOrder"): doc(
            "spot", "submit_cancel_client_order"),
        ("GET", "/v1/order/matchresults"): doc("spot", "matchresults"),
        ("GET", "/v1/account/accounts/10000001/balance"): doc("spot", "balance"),
        ("POST", "/v5/trade/order"): doc("linear", "place"),
        ("GET", "/v5/trade/order"): doc("linear", "order"),
        ("GET", "/v5/trade/position/opens"): doc("linear", "positions"),
        ("GET", "/v5/account/balance"): doc("linear", "balance"),
    }


@pytest.fixture
async def htx(tmp_path):
    instruments = {"spot": doc("symbols"), "linear_swap": doc("linear_swaps")}

    async def markets():
        return instruments

    def venue(url: str) -> HtxVenue:
        return HtxVenue(urls=HtxUrls.for_server(url), markets_source=markets)

    fake = FakeVenue(answers(), unscripted=(404, {"status": "error", "err-code": "not-found"}))
    creds = ExchangeCredentials(  # test credentials made here
        exchange="HUOBI",
        api_key=f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}",
        secret=f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}",
    )
    # HTX sends no Retry-After: the limiter's backoff decides (long here: a slow machine
    # must not see the gate reopen between the two calls of the 429 test).
    limiter = VenueLimiter("HUOBI", rate=math.inf, backoff_base=30.0)
    async with trading_env(fake, venue, creds, tmp_path, limiter) as env:
        yield env


def assert_signed(seen: Seen, creds: ExchangeCredentials) -> None:
    """HTX signature v2: Signature = base64(HMAC-SHA256(secret, METHOD \\n host \\n path \\n
    query sorted by name, URL-encoded)); the query holds AccessKeyId, SignatureMethod
    HmacSHA256, SignatureVersion 2, Timestamp (UTC, seconds) and, for GET, the parameters."""
    q = seen.query
    assert q["AccessKeyId"] == creds.api_key
    assert (q["SignatureMethod"], q["SignatureVersion"]) == ("HmacSHA256", "2")
    assert len(q["Timestamp"]) == 19 and q["Timestamp"][10] == "T"  # 2017-05-11T16:22:06
    signed = sorted((k, v) for k, v in q.items() if k != "Signature")
    canonical = "&".join(f"{k}={quote(v, safe='')}" for k, v in signed)
    payload = "\n".join([seen.method, seen.host, seen.path, canonical])
    mac = hmac.new(creds.secret.encode(), payload.encode(), hashlib.sha256)
    assert q["Signature"] == base64.b64encode(mac.digest()).decode()
    if seen.method == "POST":
        assert seen.headers["Content-Type"] == "application/json"


def assert_no_secret(env: TradingEnv) -> None:
    for seen in env.fake.seen:
        assert_signed(seen, env.creds)
    env.assert_never_sent(env.creds.secret)


limit_buy = partial(PlaceOrder, market=SPOT, side=Side.BUY, type=OrderType.LIMIT,
                    quantity=0.00125, price=67120.5, time_in_force=TimeInForce.GTC,
                    client_order_id=CID)


async def test_spot_limit_order_sends_the_spot_account_and_client_order_id(htx):
    order = await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy()))
    accounts, sent = htx.fake.seen
    assert (accounts.method, accounts.path) == ("GET", "/v1/account/accounts")
    assert (sent.method, sent.path) == ("POST", "/v1/order/orders/place")
    assert sent.json() == {"account-id": "10000001", "symbol": "btcusdt", "type": "buy-limit",
                         "client-order-id": CID, "amount": "0.00125", "price": "67120.5"}
    assert order.order_id == OID and order.client_order_id == CID
    assert order.status == OrderStatus.NEW and order.market == SPOT
    assert (order.side, order.type, order.quantity, order.price) == (
        Side.BUY, OrderType.LIMIT, 0.00125, 67120.5)
    entry = htx.journal.get(KEY_ID, "HUOBI", CID)
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == OID
    # The key's accounts are remembered: the next order goes straight to the venue.
    await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy(client_order_id="second-1")))
    assert [s.path for s in htx.fake.seen[2:]] == ["/v1/order/orders/place"]
    assert_no_secret(htx)


async def test_spot_ioc_post_only_market_and_stop_orders(htx):
    await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy(
        client_order_id="ioc-1", time_in_force=TimeInForce.IOC)))
    await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy(
        client_order_id="post-1", post_only=True, time_in_force=None)))
    await htx.run(htx.service.place(KEY_ID, htx.creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.MARKET, quantity=0.5,
        client_order_id="market-1")))
    stop_order = await htx.run(htx.service.place(KEY_ID, htx.creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.STOP_LIMIT, quantity=0.001, price=60000.0,
        stop_price=60500.0, client_order_id="stop-1")))
    assert (stop_order.type, stop_order.price, stop_order.stop_price) == (
        OrderType.STOP_LIMIT, 60000.0, 60500.0)
    ioc, post, market, stop = (s.json() for s in htx.fake.calls("POST", "/v1/order/orders/place"))
    assert ioc["type"] == "buy-ioc" and post["type"] == "buy-limit-maker"
    assert (market["type"], market["amount"]) == ("sell-market", "0.5")
    assert "price" not in market
    assert {k: stop[k] for k in ("type", "price", "stop-price", "operator")} == {
        "type": "sell-stop-limit", "price": "60000", "stop-price": "60500", "operator": "lte"}
    assert_no_secret(htx)


async def test_spot_order_open_orders_fills_and_balances_parse_the_documented_answers(htx):
    got = await htx.run(htx.service.get_order(KEY_ID, htx.creds, SPOT, OID))
    assert htx.fake.calls("GET", f"/v1/order/orders/{OID}")
    assert (got.order_id, got.client_order_id, got.status) == (
        OID, CID, OrderStatus.PARTIALLY_FILLED)
    assert (got.quantity, got.filled_quantity, got.price, got.average_price) == (
        0.00125, 0.0005, 67120.5, 67120.5)
    assert got.created_at == 1640549994642

    opened = await htx.run(htx.service.open_orders(KEY_ID, htx.creds, SPOT))
    (seen,) = htx.fake.calls("GET", "/v1/order/openOrders")
    assert unsigned(seen) == {"account-id": "10000001", "symbol": "btcusdt"}
    assert [(o.order_id, o.client_order_id, o.status, o.quantity) for o in opened] == [
        (OID, CID, OrderStatus.NEW, 0.00125)]

    fills = await htx.run(htx.service.fills(KEY_ID, htx.creds, SPOT, 1640000000000))
    (seen,) = htx.fake.calls("GET", "/v1/order/matchresults")
    assert unsigned(seen) == {"symbol": "btcusdt", "start-time": "1640000000000"}
    assert fills == [Fill(
        fill_id="100045678", order_id=OID, market=SPOT, side=Side.BUY, price=67120.5,
        quantity=0.0005, time=1640550001234, fee=0.000001, fee_asset="BTC",
        liquidity=Liquidity.MAKER)]

    balances = await htx.run(htx.service.balances(KEY_ID, htx.creds, "HUOBI"))
    assert htx.fake.calls("GET", "/v1/account/accounts/10000001/balance")
    assert balances == [
        Balance(asset="BTC", free=0.008, locked=0.002, total=0.01, account="spot"),
        Balance(asset="USDT", free=91.85004379767651, locked=5.16,
                total=pytest.approx(97.01004379767651), account="spot"),
    ]
    assert len(htx.fake.calls("GET", "/v1/account/accounts")) == 1  # remembered
    assert_no_secret(htx)


async def test_spot_cancel_by_order_id_and_by_client_order_id(htx):
    canceled = await htx.run(htx.service.cancel(KEY_ID, htx.creds, SPOT, OID, None))
    by_cid = await htx.run(htx.service.cancel(KEY_ID, htx.creds, SPOT, None, CID))
    assert htx.fake.calls("POST", f"/v1/order/orders/{OID}/submitcancel")
    (second,) = htx.fake.calls("POST", "/v1/order/orders/submitCancelClientOrder")
    assert second.json() == {"client-order-id": CID}
    # HTX answers the id (or a status code) only: the order is looked up to be described.
    (lookup,) = htx.fake.calls("GET", "/v1/order/orders/getClientOrder")
    assert unsigned(lookup) == {"clientOrderId": CID}
    for order in (canceled, by_cid):
        assert (order.order_id, order.client_order_id) == (OID, CID)
        assert order.status == OrderStatus.CANCELED and order.side == Side.BUY
    assert_no_secret(htx)


async def test_insufficient_balance_error_maps_with_the_venue_code(htx):
    htx.fake.answer("POST", "/v1/order/orders/place", doc("spot", "insufficient"))
    with pytest.raises(InsufficientBalance) as err:
        await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy()))
    assert err.value.code == "INSUFFICIENT_BALANCE" and err.value.venue == "HUOBI"
    assert err.value.venue_code == "account-frozen-balance-insufficient-error"
    assert htx.journal.get(KEY_ID, "HUOBI", CID).state == JournalState.REJECTED


async def test_a_429_is_rate_limited_and_the_next_call_never_reaches_htx(htx):
    htx.fake.answer("GET", "/v1/order/openOrders", doc("spot", "too_many"), status=429)
    with pytest.raises(RateLimited) as err:
        await htx.run(htx.service.open_orders(KEY_ID, htx.creds, SPOT))
    assert err.value.code == "RATE_LIMITED" and err.value.retry_after > 0
    reached = len(htx.fake.seen)
    with pytest.raises(RateLimited):
        await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy()))
    assert len(htx.fake.seen) == reached


async def test_linear_swap_order_sends_an_integer_client_order_id(htx):
    order = await htx.run(htx.service.place(KEY_ID, htx.creds, PlaceOrder(
        market=PERP, side=Side.SELL, type=OrderType.LIMIT, quantity=0.025, price=68000.1,
        reduce_only=True, client_order_id=CID)))
    (sent,) = htx.fake.seen
    assert (sent.method, sent.path) == ("POST", "/v5/trade/order")
    body = sent.json()
    assert body.pop("channel_code")  # ccxt's broker tag
    # 0.025 BTC is 25 contracts of 0.001 BTC
    assert body == {"contract_code": "BTC-USDT", "volume": "25", "margin_mode": "cross",
                    "side": "sell", "time_in_force": "gtc", "client_order_id": int(NCID),
                    "price": "68000.1", "reduce_only": 1, "type": "limit"}
    assert order.order_id == LOID and order.client_order_id == CID  # the id given, back
    assert (order.side, order.quantity, order.price, order.status) == (
        Side.SELL, 0.025, 68000.1, OrderStatus.NEW)

    got = await htx.run(htx.service.get_order(KEY_ID, htx.creds, PERP, LOID))
    lookup = htx.fake.calls("GET", "/v5/trade/order")[0]
    assert unsigned(lookup) == {"contract_code": "BTC-USDT", "margin_mode": "cross",
                             "order_id": LOID}
    assert (got.order_id, got.status, got.quantity, got.filled_quantity) == (
        LOID, OrderStatus.PARTIALLY_FILLED, 0.025, 0.005)  # 25 and 5 contracts
    assert got.client_order_id == CID  # the client that placed it translates it back
    await htx.service.clients.close()  # as after a restart: a client that never saw it
    got = await htx.run(htx.service.get_order(KEY_ID, htx.creds, PERP, LOID))
    assert got.client_order_id == NCID  # shows the number
    assert_no_secret(htx)


async def test_linear_swap_reconciles_by_the_same_integer_client_order_id(htx):
    journal = htx.journal
    entry = htx.journal_unknown(KEY_ID, {
        "market": PERP, "side": "SELL", "type": "LIMIT", "quantity": 0.025, "price": 68000.1,
        "clientOrderId": CID})
    assert await htx.run(htx.service.reconcile_pending(KEY_ID, "HUOBI", htx.creds)) == 1
    (lookup,) = htx.fake.seen
    assert unsigned(lookup) == {"client_order_id": NCID, "contract_code": "BTC-USDT",
                             "margin_mode": "cross"}
    done = journal.get_entry(entry.id)
    assert done.state == JournalState.ACKNOWLEDGED and done.venue_order_id == LOID
    assert done.last_order["clientOrderId"] == CID


async def test_linear_swap_positions_and_account(htx):
    positions = await htx.run(htx.service.positions(KEY_ID, htx.creds, "HUOBI"))
    assert htx.fake.calls("GET", "/v5/trade/position/opens")
    assert positions == [Position(
        market=PERP, side=PositionSide.LONG, quantity=pytest.approx(0.025),
        entry_price=63204.5, mark_price=63165.5, unrealized_pnl=-0.975, leverage=20.0,
        liquidation_price=41163.8, margin_type="CROSS")]
    balances = await htx.run(htx.service.balances(KEY_ID, htx.creds, "HUOBI", account="swap"))
    assert htx.fake.calls("GET", "/v5/account/balance")
    assert balances == [Balance(asset="USDT", free=95.31669757777054,
                                locked=pytest.approx(78.9), total=174.21669757777054,
                                account="swap")]
    assert not htx.fake.calls("GET", "/v1/account/accounts")
    assert_no_secret(htx)


async def test_spot_market_buy_and_reduce_only_are_refused_before_the_order_is_sent(htx):
    with pytest.raises(InvalidOrder) as err:
        await htx.run(htx.service.place(KEY_ID, htx.creds, PlaceOrder(
            market=SPOT, side=Side.BUY, type=OrderType.MARKET, quantity=0.001)))
    assert err.value.code == "INVALID_ORDER" and "quote currency" in err.value.message
    with pytest.raises(InvalidOrder):
        await htx.run(htx.service.place(KEY_ID, htx.creds, limit_buy(reduce_only=True)))
    assert not htx.fake.calls("POST", "/v1/order/orders/place")


async def test_configured_urls_and_their_hosts_reach_the_private_client():
    from astra.venues.htx import from_config

    venue = from_config("HUOBI", {"spot_rest": "https://spot.example:8443",
                                  "contract_rest": "https://contract.example"})
    instruments = {"spot": doc("symbols"), "linear_swap": doc("linear_swaps")}

    async def markets():
        return instruments

    venue.markets_source = markets
    try:
        async with asyncio.timeout(10):
            await venue.load_markets()
        client = venue.private_client({"apiKey": "k", "secret": "s"})
        assert client.urls["api"]["spot"] == "https://spot.example:8443"
        assert client.urls["api"]["contract"] == "https://contract.example"
        # HTX signs the host name: the configured hosts, not ccxt's defaults.
        assert client.urls["hostnames"] == {"spot": "spot.example:8443",
                                            "contract": "contract.example"}
        assert {"btcusdt", "BTC-USDT"} <= set(client.markets_by_id)
        await client.close()
    finally:
        await venue.close()
