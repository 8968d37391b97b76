"""Trading on KuCoin through the gateway's ``TradingService``, ccxt and a fake KuCoin on
127.0.0.1 answering spot (``/api/v1/hf/...``, ``/api/v1/accounts``) and futures
(``/api/v1/orders``, ``/api/v1/positions``, ``/api/v1/account-overview``) private REST with
bodies written from KuCoin's docs (``data/private_rest.json``), recording every request.

Checked: what is sent (method, path, JSON body at the market's precision, the client order
id as ``clientOid``, ``KC-API-KEY``/``KC-API-SIGN``/``KC-API-TIMESTAMP``/
``KC-API-PASSPHRASE`` recomputed here from KuCoin's documented v2 signing, the secret and the
passphrase never on the wire), what the answers become (Order, Fill, Balance, Position), the
venue error 200004 and a 429."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
from functools import partial
from pathlib import Path

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
from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin.symbols import parse_ccxt_markets
from astra.venues.limiter import VenueLimiter

DATA = Path(__file__).parent / "data"
SPOT = "KUCOIN-SPOT-BTC-USDT"
PERP = "KUCOIN-PERP-XBT-USDT"
KEY_ID = "desk"
CID = "astraKucoinTest00000000000000001"
OID = "670fd33bf9406e0007ab3945"
FOID = "234125150956625920"


def doc(*path: str) -> dict:
    return documented(DATA / "private_rest.json", *path, cid=CID)


def answers() -> dict[tuple[str, str], dict]:
    return {
        ("POST", "/api/v1/hf/orders"): doc("spot", "add_order"),
        ("GET", f"/api/v1/hf/orders/{OID}"): doc("spot", "order"),
        ("GET", f"/api/v1/hf/orders/client-order/{CID}"): doc("spot", "order"),
        ("GET", "/api/v1/hf/orders/active"): doc("spot", "open_orders"),
        ("DELETE", f"/api/v1/hf/orders/{OID}"): doc("spot", "cancel_by_id"),
        ("DELETE", f"/api/v1/hf/orders/client-order/{CID}"): doc("spot", "cancel_by_client_oid"),
        ("DELETE", "/api/v1/hf/orders"): {"code": "200000", "data": "success"},
        ("GET", "/api/v1/hf/fills"): doc("spot", "fills"),
        ("GET", "/api/v1/accounts"): doc("spot", "accounts"),
        ("POST", "/api/v1/orders"): doc("futures", "add_order"),
        ("GET", f"/api/v1/orders/{FOID}"): doc("futures", "order"),
        ("DELETE", f"/api/v1/orders/{FOID}"): doc("futures", "cancel"),
        ("GET", "/api/v1/positions"): doc("futures", "positions"),
        ("GET", "/api/v1/account-overview"): doc("futures", "account_overview"),
    }


def kucoin_env(tmp_path, contracts_active, limiter: VenueLimiter | None):
    """The fake, a venue over it and a ``TradingService`` pacing by ``limiter`` (None: the
    venue's own)."""
    symbols = doc("symbols")

    async def markets():
        return parse_ccxt_markets(symbols, contracts_active)

    def venue(url: str) -> KucoinVenue:
        return KucoinVenue(urls=KucoinUrls.for_server(url), markets_source=markets)

    fake = FakeVenue(answers(), unscripted=(404, {"code": "404000", "msg": "Not Found"}))
    creds = ExchangeCredentials(  # test credentials made here
        exchange="KUCOIN",
        api_key=secrets.token_hex(12),
        secret=secrets.token_hex(18),
        passphrase="pass-" + secrets.token_urlsafe(12),
    )
    return trading_env(fake, venue, creds, tmp_path, limiter)


@pytest.fixture
async def kucoin(tmp_path, contracts_active):
    async with kucoin_env(tmp_path, contracts_active, VenueLimiter("KUCOIN", rate=math.inf)) as env:
        yield env


def _b64_hmac(secret: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def assert_signed(seen: Seen, creds: ExchangeCredentials) -> None:
    """KuCoin API-key v2: KC-API-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD +
    path?query + body)); KC-API-PASSPHRASE = base64(HMAC-SHA256(secret, passphrase))."""
    h = seen.headers
    assert h["KC-API-KEY"] == creds.api_key and h["KC-API-KEY-VERSION"] == "2"
    path = seen.path + (f"?{seen.query_string}" if seen.query_string else "")
    assert h["KC-API-SIGN"] == _b64_hmac(creds.secret,
                                         h["KC-API-TIMESTAMP"] + seen.method + path + seen.body)
    assert h["KC-API-PASSPHRASE"] == _b64_hmac(creds.secret, creds.passphrase)
    assert int(h["KC-API-TIMESTAMP"]) > 1_600_000_000_000  # milliseconds


def assert_no_secret(env: TradingEnv) -> None:
    for seen in env.fake.seen:
        assert_signed(seen, env.creds)
    env.assert_never_sent(env.creds.secret, env.creds.passphrase)


limit_buy = partial(PlaceOrder, market=SPOT, side=Side.BUY, type=OrderType.LIMIT,
                    quantity=0.00125, price=67120.5, time_in_force=TimeInForce.GTC,
                    client_order_id=CID)


async def test_spot_limit_order_goes_to_the_hf_endpoint_signed(kucoin):
    order = await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, limit_buy()))
    (sent,) = kucoin.fake.calls("POST", "/api/v1/hf/orders")
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.json() == {"clientOid": CID, "side": "buy", "symbol": "BTC-USDT", "type": "limit",
                         "size": "0.00125", "price": "67120.5", "timeInForce": "GTC"}
    # {"orderId", "clientOid"} only: the order is the one sent, accepted.
    assert order.order_id == OID and order.client_order_id == CID
    assert order.status == OrderStatus.NEW and order.market == SPOT
    assert (order.side, order.type, order.quantity, order.price) == (
        Side.BUY, OrderType.LIMIT, 0.00125, 67120.5)
    entry = kucoin.journal.get(KEY_ID, "KUCOIN", CID)
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == OID
    assert_no_secret(kucoin)


async def test_spot_market_post_only_and_stop_orders(kucoin):
    kucoin.fake.answers[("POST", "/api/v1/stop-order")] = doc("spot", "add_order")
    await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.MARKET, quantity=0.5)))
    await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, limit_buy(
        client_order_id="astra-post-1", post_only=True)))
    stop_order = await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, PlaceOrder(
        market=SPOT, side=Side.BUY, type=OrderType.STOP_LIMIT, quantity=0.001, price=70000.0,
        stop_price=69500.0, client_order_id="astra-stop-1")))
    assert (stop_order.type, stop_order.price, stop_order.stop_price) == (
        OrderType.STOP_LIMIT, 70000.0, 69500.0)
    market, post = (s.json() for s in kucoin.fake.calls("POST", "/api/v1/hf/orders"))
    assert {k: market[k] for k in ("side", "type", "size")} == {
        "side": "sell", "type": "market", "size": "0.5"}
    assert "price" not in market and len(market["clientOid"]) == 32  # generated, astra…
    assert post["postOnly"] is True and post["clientOid"] == "astra-post-1"
    (stop,) = kucoin.fake.calls("POST", "/api/v1/stop-order")
    assert {k: stop.json()[k] for k in ("type", "side", "price", "stop", "stopPrice")} == {
        "type": "limit", "side": "buy", "price": "70000", "stop": "entry",
        "stopPrice": "69500"}
    assert_no_secret(kucoin)


async def test_spot_order_open_orders_fills_and_balances_parse_the_documented_answers(kucoin):
    got = await kucoin.run(kucoin.service.get_order(KEY_ID, kucoin.creds, SPOT, OID))
    (seen,) = kucoin.fake.calls("GET", f"/api/v1/hf/orders/{OID}")
    assert seen.query == {"symbol": "BTC-USDT"}
    assert (got.order_id, got.client_order_id, got.status) == (
        OID, CID, OrderStatus.PARTIALLY_FILLED)
    assert (got.quantity, got.filled_quantity, got.price, got.average_price) == (
        0.00125, 0.0005, 67120.5, 67120.5)
    assert (got.time_in_force, got.created_at) == (TimeInForce.GTC, 1729235902748)

    opened = await kucoin.run(kucoin.service.open_orders(KEY_ID, kucoin.creds, SPOT))
    (seen,) = kucoin.fake.calls("GET", "/api/v1/hf/orders/active")
    assert seen.query["symbol"] == "BTC-USDT"
    assert [(o.order_id, o.client_order_id, o.status, o.quantity) for o in opened] == [
        (OID, CID, OrderStatus.NEW, 0.00125)]

    fills = await kucoin.run(kucoin.service.fills(KEY_ID, kucoin.creds, SPOT, 1729000000000))
    (seen,) = kucoin.fake.calls("GET", "/api/v1/hf/fills")
    assert seen.query == {"symbol": "BTC-USDT", "startAt": "1729000000000"}
    assert fills == [Fill(
        fill_id="11029373945659392", order_id=OID, market=SPOT, side=Side.BUY,
        price=67120.5, quantity=0.0005, time=1729235909862, fee=0.03356025,
        fee_asset="USDT", liquidity=Liquidity.MAKER)]

    balances = await kucoin.run(kucoin.service.balances(KEY_ID, kucoin.creds, "KUCOIN"))
    (seen,) = kucoin.fake.calls("GET", "/api/v1/accounts")
    assert seen.query == {"type": "trade_hf"}
    assert balances == [
        Balance(asset="BTC", free=0.008, locked=0.002, total=0.01, account="spot"),
        Balance(asset="USDT", free=20.66759503, locked=6.0, total=26.66759503, account="spot"),
    ]
    assert_no_secret(kucoin)


async def test_spot_cancel_by_order_id_and_by_client_oid(kucoin):
    canceled = await kucoin.run(kucoin.service.cancel(KEY_ID, kucoin.creds, SPOT, OID, None))
    by_cid = await kucoin.run(kucoin.service.cancel(KEY_ID, kucoin.creds, SPOT, None, CID))
    (first,) = kucoin.fake.calls("DELETE", f"/api/v1/hf/orders/{OID}")
    (second,) = kucoin.fake.calls("DELETE", f"/api/v1/hf/orders/client-order/{CID}")
    assert first.query == second.query == {"symbol": "BTC-USDT"}
    # KuCoin answers ids only: the order is looked up to be described.
    for order in (canceled, by_cid):
        assert (order.order_id, order.client_order_id) == (OID, CID)
        assert order.status == OrderStatus.CANCELED and order.side == Side.BUY
        assert order.quantity == 0.00125
    assert_no_secret(kucoin)


async def test_an_order_of_unknown_outcome_is_reconciled_by_client_oid(kucoin):
    journal = kucoin.journal
    entry = kucoin.journal_unknown(KEY_ID, {
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.00125,
        "price": 67120.5, "clientOrderId": CID})
    settled = await kucoin.run(kucoin.service.reconcile_pending(KEY_ID, "KUCOIN", kucoin.creds))
    assert settled == 1
    assert [(s.method, s.path) for s in kucoin.fake.seen] == [
        ("GET", f"/api/v1/hf/orders/client-order/{CID}")]
    done = journal.get_entry(entry.id)
    assert done.state == JournalState.ACKNOWLEDGED and done.venue_order_id == OID


async def test_insufficient_balance_200004_maps_with_the_venue_code(kucoin):
    kucoin.fake.answer("POST", "/api/v1/hf/orders", doc("spot", "insufficient"))
    with pytest.raises(InsufficientBalance) as err:
        await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, limit_buy()))
    assert err.value.code == "INSUFFICIENT_BALANCE"
    assert err.value.venue_code == "200004" and err.value.venue == "KUCOIN"
    assert kucoin.journal.get(KEY_ID, "KUCOIN", CID).state == JournalState.REJECTED


async def test_a_429_is_rate_limited_for_gw_ratelimit_reset_and_the_next_call_fails_fast(kucoin):
    kucoin.fake.answer("GET", "/api/v1/accounts", doc("spot", "too_many"), status=429,
                       headers={"gw-ratelimit-limit": "4000", "gw-ratelimit-remaining": "0",
                                "gw-ratelimit-reset": "15000"})
    with pytest.raises(RateLimited) as err:
        await kucoin.run(kucoin.service.balances(KEY_ID, kucoin.creds, "KUCOIN"))
    assert err.value.code == "RATE_LIMITED" and 12 <= err.value.retry_after <= 15
    reached = len(kucoin.fake.seen)
    with pytest.raises(RateLimited):
        await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, limit_buy()))
    with pytest.raises(RateLimited):
        await kucoin.run(kucoin.service.positions(KEY_ID, kucoin.creds, "KUCOIN"))
    assert len(kucoin.fake.seen) == reached  # neither reached the venue


async def test_an_accounts_429_leaves_public_rest_alone(tmp_path, contracts_active):
    """KuCoin counts private calls per UID, public ones per IP: trading paces by the venue's
    own trading limiter, so an account's 429 closes neither public REST (the book snapshot
    still goes) nor its budget."""
    async with kucoin_env(tmp_path, contracts_active, None) as env:
        env.fake.answer("GET", "/api/v1/accounts", doc("spot", "too_many"), status=429,
                        headers={"gw-ratelimit-reset": "15000"})
        env.fake.answer("GET", "/api/v1/market/orderbook/level2_100", {
            "code": "200000", "data": {"sequence": "42", "time": 1700000000000,
                                       "bids": [["100", "1"]], "asks": [["101", "2"]]}})
        with pytest.raises(RateLimited) as err:
            await env.run(env.service.balances(KEY_ID, env.creds, "KUCOIN"))
        assert 12 <= err.value.retry_after <= 15
        assert 12 <= env.venue.limiter.retry_after() <= 15  # trading's gate
        assert env.venue.public_limiter.retry_after() is None
        market = (await env.run(env.venue.load_markets()))[SPOT]
        snapshot = await env.run(env.venue.snapshot(market))
        assert (snapshot.sequence, snapshot.bids) == (42, [(100.0, 1.0)])
        assert [s.path for s in env.fake.seen] == [
            "/api/v1/accounts", "/api/v1/market/orderbook/level2_100"]


async def test_futures_order_lookup_and_cancel(kucoin):
    order = await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, PlaceOrder(
        market=PERP, side=Side.SELL, type=OrderType.LIMIT, quantity=0.003, price=68000.1,
        reduce_only=True, client_order_id=CID)))
    (sent,) = kucoin.fake.calls("POST", "/api/v1/orders")
    assert sent.json() == {"clientOid": CID, "side": "sell", "symbol": "XBTUSDTM",
                         "type": "limit", "leverage": 1, "size": 3, "price": "68000.1",
                         "reduceOnly": True}
    assert (order.order_id, order.client_order_id, order.status) == (FOID, CID, OrderStatus.NEW)
    # 0.003 BTC went out as 3 lots of 0.001 BTC, and comes back in BTC
    assert (order.side, order.quantity, order.price) == (Side.SELL, 0.003, 68000.1)

    got = await kucoin.run(kucoin.service.get_order(KEY_ID, kucoin.creds, PERP, FOID))
    assert (got.order_id, got.client_order_id, got.status) == (
        FOID, CID, OrderStatus.PARTIALLY_FILLED)
    assert (got.quantity, got.filled_quantity, got.price, got.reduce_only) == (
        0.003, 0.001, 68000.1, True)
    canceled = await kucoin.run(kucoin.service.cancel(KEY_ID, kucoin.creds, PERP, FOID, None))
    assert kucoin.fake.calls("DELETE", f"/api/v1/orders/{FOID}")
    assert canceled.order_id == FOID and canceled.status == OrderStatus.CANCELED
    assert not kucoin.fake.calls("POST", "/api/v1/hf/orders")
    assert_no_secret(kucoin)


async def test_futures_positions_and_account(kucoin):
    positions = await kucoin.run(kucoin.service.positions(KEY_ID, kucoin.creds, "KUCOIN"))
    assert kucoin.fake.calls("GET", "/api/v1/positions")
    assert positions == [Position(
        market=PERP, side=PositionSide.SHORT, quantity=pytest.approx(0.025),
        entry_price=67430.9, mark_price=68900.7, unrealized_pnl=-36.745, leverage=2.88,
        liquidation_price=89304.2, margin_type="ISOLATED")]
    balances = await kucoin.run(
        kucoin.service.balances(KEY_ID, kucoin.creds, "KUCOIN", account="future"))
    (seen,) = kucoin.fake.calls("GET", "/api/v1/account-overview")
    assert seen.query == {"currency": "USDT"}
    # ccxt: total = accountEquity, free = availableBalance
    assert balances == [Balance(asset="USDT", free=290.326799096,
                                locked=pytest.approx(394.439280806 - 290.326799096),
                                total=394.439280806, account="future")]
    assert_no_secret(kucoin)


async def test_reduce_only_on_spot_is_refused_before_anything_is_sent(kucoin):
    with pytest.raises(InvalidOrder) as err:
        await kucoin.run(kucoin.service.place(KEY_ID, kucoin.creds, limit_buy(reduce_only=True)))
    assert err.value.code == "INVALID_ORDER" and "reduceOnly" in err.value.message
    assert kucoin.fake.seen == []


async def test_configured_urls_and_account_mode_reach_the_private_client(contracts_active):
    venue = KucoinVenue.from_config({"spot_rest": "http://127.0.0.1:9/s",
                                     "futures_rest": "http://127.0.0.1:9/f", "hf": False})
    symbols = doc("symbols")

    async def markets():
        return parse_ccxt_markets(symbols, contracts_active)

    venue._markets_source = markets
    try:
        async with asyncio.timeout(10):
            await venue.load_markets()
        client = venue.private_client({"apiKey": "k", "secret": "s", "password": "p"})
        assert client.urls["api"]["private"] == "http://127.0.0.1:9/s"
        assert client.urls["api"]["futuresPrivate"] == "http://127.0.0.1:9/f"
        assert (client.options["hf"], client.options["uta"]) == (False, False)
        assert {"BTC-USDT", "XBTUSDTM"} <= set(client.markets_by_id)
        await client.close()
    finally:
        await venue.close()
