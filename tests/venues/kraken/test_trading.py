"""Trading on Kraken through the gateway's ``TradingService``, ccxt and a fake Kraken on
127.0.0.1 answering spot ``/0/private/<Method>`` and futures ``/derivatives/api/v3/<path>``
with bodies written from Kraken's docs (``data/private_rest.json``), recording every request.

Checked: what is sent (method, path, fields at the pair's precision, the client order id as
``cl_ord_id``/``cliOrdId``, ``API-Key``/``API-Sign`` and ``APIKey``/``Authent`` signatures
recomputed here from Kraken's documented algorithms, the secret never on the wire), what the
answers become (Order, Fill, Balance, Position), a venue error and a 429."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
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
from astra.venues.kraken import KrakenUrls, KrakenVenue
from astra.venues.kraken.private import KrakenSpotPrivate
from astra.venues.limiter import VenueLimiter

DATA = Path(__file__).parent / "data"
SPOT = "KRAKEN-SPOT-XBT-USD"
PERP = "KRAKEN-PERP-XBT-USD"
KEY_ID = "desk"
CID = "astraTest0000001"  # the gateway's short form: Kraken's cl_ord_id takes 18 characters
TXID = "OUF4EM-FRGI2-MQMWZD"
FUTURES_ORDER = "179f9af8-e45e-469d-b3e9-2fd4675cb7d0"


def doc(product: str, name: str) -> dict:
    return documented(DATA / "private_rest.json", product, name, cid=CID)


def spot_answers() -> dict[tuple[str, str], dict]:
    names = ("AddOrder", "QueryOrders", "OpenOrders", "ClosedOrders", "CancelOrder",
             "TradesHistory", "BalanceEx")
    return {("POST", f"/0/private/{n}"): doc("spot", n) for n in names}


def futures_answers() -> dict[tuple[str, str], dict]:
    base = "/derivatives/api/v3"
    return {
        ("POST", f"{base}/sendorder"): doc("futures", "sendorder"),
        ("GET", f"{base}/orders/status"): doc("futures", "orders_status"),
        ("POST", f"{base}/cancelorder"): doc("futures", "cancelorder"),
        ("GET", f"{base}/openpositions"): doc("futures", "openpositions"),
        ("GET", f"{base}/accounts"): doc("futures", "accounts"),
    }


@pytest.fixture
async def kraken(tmp_path, doc_asset_pairs, futures_instruments):
    def venue(url: str) -> KrakenVenue:
        return KrakenVenue(
            urls=KrakenUrls(rest=url, futures_rest=url, ws="ws://127.0.0.1:9/v2",
                            futures_ws="ws://127.0.0.1:9/ws/v1"),
            markets_source=lambda: copy.deepcopy(doc_asset_pairs),
            futures_markets_source=lambda: copy.deepcopy(futures_instruments),
        )

    fake = FakeVenue({**spot_answers(), **futures_answers()},
                     unscripted=(404, {"error": ["EGeneral:Unknown method"]}))
    # Test credentials made here: Kraken secrets are base64 (64 random bytes).
    creds = ExchangeCredentials(
        exchange="KRAKEN",
        api_key="kk" + secrets.token_urlsafe(40),
        secret=base64.b64encode(secrets.token_bytes(64)).decode(),
    )
    limiter = VenueLimiter("KRAKEN", rate=math.inf)
    async with trading_env(fake, venue, creds, tmp_path, limiter) as env:
        yield env


def assert_spot_signed(seen: Seen, creds: ExchangeCredentials) -> None:
    """Kraken spot: API-Sign = base64(HMAC-SHA512(base64decode(secret), path +
    SHA256(nonce + POST body))), the nonce being the body's ``nonce``."""
    assert seen.method == "POST"
    assert seen.headers["API-Key"] == creds.api_key
    digest = hashlib.sha256((seen.form["nonce"] + seen.body).encode()).digest()
    mac = hmac.new(base64.b64decode(creds.secret), seen.path.encode() + digest, hashlib.sha512)
    assert seen.headers["API-Sign"] == base64.b64encode(mac.digest()).decode()
    assert int(seen.form["nonce"]) > 0


def assert_futures_signed(seen: Seen, creds: ExchangeCredentials) -> None:
    """Kraken futures: Authent = base64(HMAC-SHA512(base64decode(secret), SHA256(postData +
    endpoint path without /derivatives)))."""
    assert seen.headers["APIKey"] == creds.api_key
    endpoint = seen.path.removeprefix("/derivatives")
    digest = hashlib.sha256((seen.query_string + endpoint).encode()).digest()
    mac = hmac.new(base64.b64decode(creds.secret), digest, hashlib.sha512)
    assert seen.headers["Authent"] == base64.b64encode(mac.digest()).decode()


def assert_no_secret(env: TradingEnv) -> None:
    env.assert_never_sent(env.creds.secret, env.creds.secret[:24])


limit_buy = partial(PlaceOrder, market=SPOT, side=Side.BUY, type=OrderType.LIMIT,
                    quantity=0.01234567, price=64123.4, time_in_force=TimeInForce.GTC,
                    client_order_id=CID)


async def test_spot_limit_order_is_sent_signed_at_the_pairs_precision(kraken):
    order = await kraken.run(kraken.service.place(KEY_ID, kraken.creds, limit_buy()))
    (sent,) = kraken.fake.calls("/0/private/AddOrder")
    assert_spot_signed(sent, kraken.creds)
    form = sent.form
    assert {k: v for k, v in form.items() if k != "nonce"} == {
        "pair": "XXBTZUSD",
        "type": "buy",
        "ordertype": "limit",
        "volume": "0.01234567",  # lot_decimals 8
        "price": "64123.4",  # pair_decimals 1
        "cl_ord_id": CID,
        "timeinforce": "GTC",
    }
    assert sent.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    # The answer is an acknowledgement: {"descr": {...}, "txid": [...]}.
    assert order.order_id == TXID and order.client_order_id == CID
    assert order.status == OrderStatus.NEW and order.market == SPOT
    assert (order.side, order.type, order.quantity, order.price) == (
        Side.BUY, OrderType.LIMIT, 0.01234567, 64123.4)
    entry = kraken.journal.get(KEY_ID, "KRAKEN", CID)
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == TXID
    assert_no_secret(kraken)


async def test_spot_market_sell_post_only_and_stop_orders(kraken):
    await kraken.run(kraken.service.place(KEY_ID, kraken.creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.MARKET, quantity=0.5)))
    await kraken.run(kraken.service.place(KEY_ID, kraken.creds, limit_buy(
        client_order_id="astraTest0000002", post_only=True, time_in_force=None)))
    await kraken.run(kraken.service.place(KEY_ID, kraken.creds, PlaceOrder(
        market=SPOT, side=Side.SELL, type=OrderType.STOP_LIMIT, quantity=0.01,
        price=60000.0, stop_price=60500.0, client_order_id="astraTest0000003")))
    market, post, stop = (s.form for s in kraken.fake.calls("/0/private/AddOrder"))
    assert (market["type"], market["ordertype"], market["volume"]) == ("sell", "market", "0.5")
    assert "price" not in market and market["cl_ord_id"].startswith("astra")
    assert len(market["cl_ord_id"]) == 18  # generated: Kraken's free-text limit
    assert post["oflags"] == "post" and post["cl_ord_id"] == "astraTest0000002"
    assert (stop["ordertype"], stop["price"], stop["price2"]) == (
        "stop-loss-limit", "60500", "60000")


async def test_spot_order_open_orders_fills_and_balances_parse_the_documented_answers(kraken):
    got = await kraken.run(kraken.service.get_order(KEY_ID, kraken.creds, SPOT, TXID))
    (query,) = kraken.fake.calls("/0/private/QueryOrders")
    assert_spot_signed(query, kraken.creds)
    assert query.form["txid"] == TXID and query.form["trades"] == "True"
    assert got.order_id == TXID and got.client_order_id == CID
    assert got.status == OrderStatus.PARTIALLY_FILLED
    assert (got.quantity, got.filled_quantity, got.price) == (0.01234567, 0.005, 64123.4)
    assert got.average_price == pytest.approx(320.617 / 0.005)
    assert got.created_at == 1688665496780

    opened = await kraken.run(kraken.service.open_orders(KEY_ID, kraken.creds, SPOT))
    assert [(o.order_id, o.client_order_id, o.status, o.quantity) for o in opened] == [
        (TXID, CID, OrderStatus.NEW, 0.01234567)]

    fills = await kraken.run(kraken.service.fills(KEY_ID, kraken.creds, SPOT, 1688000000000))
    (history,) = kraken.fake.calls("/0/private/TradesHistory")
    assert history.form["start"] == "1688000000"  # seconds
    assert fills == [Fill(  # the ETH/USD trade of the same answer is another market's
        fill_id="THVRQM-33VKH-UCI7BS", order_id=TXID, market=SPOT, side=Side.BUY,
        price=64123.4, quantity=0.005, time=1688667796880, fee=0.51299, fee_asset="USD",
        liquidity=Liquidity.MAKER)]

    balances = await kraken.run(kraken.service.balances(KEY_ID, kraken.creds, "KRAKEN"))
    assert kraken.fake.calls("/0/private/BalanceEx")
    assert balances == [
        Balance(asset="BTC", free=pytest.approx(1.2435 - 0.8423), locked=0.8423, total=1.2435,
                account="spot"),
        Balance(asset="USD", free=pytest.approx(25435.21 - 8249.76), locked=8249.76,
                total=25435.21, account="spot"),
    ]
    for seen in kraken.fake.seen:
        assert_spot_signed(seen, kraken.creds)
    assert_no_secret(kraken)


async def test_spot_cancel_by_order_id_and_by_client_order_id(kraken):
    kraken.fake.answers[("POST", "/0/private/QueryOrders")]["result"][TXID]["status"] = (
        "canceled")
    canceled = await kraken.run(kraken.service.cancel(KEY_ID, kraken.creds, SPOT, TXID, None))
    by_cid = await kraken.run(kraken.service.cancel(KEY_ID, kraken.creds, SPOT, None, CID))
    first, second = kraken.fake.calls("/0/private/CancelOrder")
    assert first.form["txid"] == TXID and "cl_ord_id" not in first.form
    assert second.form["cl_ord_id"] == CID and "txid" not in second.form
    # Kraken answers {"count": 1}: the canceled order is then looked up to be described.
    assert canceled.order_id == TXID and canceled.status == OrderStatus.CANCELED
    assert canceled.side == Side.BUY and canceled.quantity == 0.01234567
    assert by_cid.order_id == TXID and by_cid.client_order_id == CID
    assert by_cid.status == OrderStatus.CANCELED
    lookup = kraken.fake.calls("/0/private/OpenOrders")[0].form
    assert lookup["cl_ord_id"] == CID


async def test_an_order_of_unknown_outcome_is_reconciled_by_cl_ord_id(kraken):
    journal = kraken.journal
    entry = kraken.journal_unknown(KEY_ID, {
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01234567,
        "price": 64123.4, "clientOrderId": CID})
    kraken.fake.answers[("POST", "/0/private/OpenOrders")] = {"error": [], "result": {"open": {}}}
    settled = await kraken.run(kraken.service.reconcile_pending(KEY_ID, "KRAKEN", kraken.creds))
    assert settled == 1
    assert [s.path for s in kraken.fake.seen] == ["/0/private/OpenOrders",
                                                   "/0/private/ClosedOrders"]
    assert all(s.form["cl_ord_id"] == CID for s in kraken.fake.seen)
    assert "userref" not in kraken.fake.seen[0].form
    done = journal.get_entry(entry.id)
    assert done.state == JournalState.ACKNOWLEDGED and done.venue_order_id == TXID
    assert done.last_order["status"] == "CANCELED"


async def test_cancel_all_cancels_only_that_pairs_orders(kraken):
    kraken.fake.answers[("POST", "/0/private/CancelOrderBatch")] = {
        "error": [], "result": {"count": 1}}
    count = await kraken.run(kraken.service.cancel_all(KEY_ID, kraken.creds, SPOT))
    assert count == 1
    assert not kraken.fake.calls("/0/private/CancelAll")  # every pair's orders: never sent
    (batch,) = kraken.fake.calls("/0/private/CancelOrderBatch")
    assert json.loads(batch.body)["orders"] == [TXID]


async def test_insufficient_funds_is_insufficient_balance_with_the_venue_code(kraken):
    kraken.fake.answer("POST", "/0/private/AddOrder", doc("spot", "InsufficientFunds"))
    with pytest.raises(InsufficientBalance) as err:
        await kraken.run(kraken.service.place(KEY_ID, kraken.creds, limit_buy()))
    assert err.value.code == "INSUFFICIENT_BALANCE"
    assert err.value.venue_code == "EOrder:Insufficient funds" and err.value.venue == "KRAKEN"
    assert kraken.journal.get(KEY_ID, "KRAKEN", CID).state == JournalState.REJECTED
    assert kraken.creds.secret not in str(err.value)


async def test_a_429_is_rate_limited_and_the_next_call_never_reaches_kraken(kraken):
    kraken.fake.answer("POST", "/0/private/BalanceEx", doc("spot", "RateLimit"), status=429,
                       headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as err:
        await kraken.run(kraken.service.balances(KEY_ID, kraken.creds, "KRAKEN"))
    assert err.value.code == "RATE_LIMITED" and 25 <= err.value.retry_after <= 30
    reached = len(kraken.fake.seen)
    with pytest.raises(RateLimited) as again:
        await kraken.run(kraken.service.place(KEY_ID, kraken.creds, limit_buy()))
    assert len(kraken.fake.seen) == reached  # failed fast, locally
    assert 0 < again.value.retry_after <= 30
    # The order was refused before being sent: a retry with the same id may go out later.
    assert kraken.journal.get(KEY_ID, "KRAKEN", CID).state == JournalState.REJECTED


async def test_futures_order_goes_to_sendorder_signed_with_cliordid(kraken):
    order = await kraken.run(kraken.service.place(KEY_ID, kraken.creds, PlaceOrder(
        market=PERP, side=Side.BUY, type=OrderType.LIMIT, quantity=0.0125, price=34500.0,
        client_order_id=CID)))
    (sent,) = kraken.fake.calls("/derivatives/api/v3/sendorder")
    assert sent.method == "POST" and sent.body == ""  # parameters in the query, as ccxt signs
    assert_futures_signed(sent, kraken.creds)
    assert sent.query == {"symbol": "PF_XBTUSD", "side": "buy", "size": "0.0125",
                          "cliOrdId": CID, "orderType": "lmt", "limitPrice": "34500"}
    assert order.order_id == FUTURES_ORDER and order.client_order_id == CID
    assert order.market == PERP and order.status == OrderStatus.NEW
    assert (order.side, order.type, order.quantity, order.price) == (
        Side.BUY, OrderType.LIMIT, 0.0125, 34500.0)
    assert not kraken.fake.calls("/0/private/AddOrder")
    assert_no_secret(kraken)


async def test_futures_lookup_and_cancel_by_client_order_id(kraken):
    kraken.fake.answers[("GET", "/derivatives/api/v3/orders/status")]["orders"][0][
        "status"] = "CANCELLED"
    got = await kraken.run(kraken.service.get_order(KEY_ID, kraken.creds, PERP, FUTURES_ORDER))
    canceled = await kraken.run(kraken.service.cancel(KEY_ID, kraken.creds, PERP, None, CID))
    status, = kraken.fake.calls("/derivatives/api/v3/orders/status")
    assert status.query == {"orderIds": FUTURES_ORDER}
    assert_futures_signed(status, kraken.creds)
    assert (got.order_id, got.client_order_id, got.quantity, got.filled_quantity) == (
        FUTURES_ORDER, CID, 0.0125, 0.0025)
    (cancel,) = kraken.fake.calls("/derivatives/api/v3/cancelorder")
    assert cancel.query == {"cliOrdId": CID}  # not order_id="" as ccxt would send
    assert_futures_signed(cancel, kraken.creds)
    assert canceled.order_id == FUTURES_ORDER and canceled.status == OrderStatus.CANCELED
    assert canceled.side == Side.BUY


async def test_futures_positions_and_wallet(kraken):
    positions = await kraken.run(kraken.service.positions(KEY_ID, kraken.creds, "KRAKEN"))
    (seen,) = kraken.fake.calls("/derivatives/api/v3/openpositions")
    assert seen.method == "GET"
    assert_futures_signed(seen, kraken.creds)
    assert positions == [
        Position(market=PERP, side=PositionSide.LONG, quantity=0.25, entry_price=34250.5,
                 leverage=5.0, margin_type="ISOLATED"),
        # 300 inverse contracts of 1 USD, in ETH at the entry price (no mark price given)
        Position(market="KRAKEN-PERP-ETH-USD-COINM", side=PositionSide.SHORT,
                 quantity=pytest.approx(300 / 1850.25, rel=1e-11), entry_price=1850.25,
                 margin_type="CROSS"),
    ]
    balances = await kraken.run(
        kraken.service.balances(KEY_ID, kraken.creds, "KRAKEN", account="future"))
    assert kraken.fake.calls("/derivatives/api/v3/accounts")
    assert balances == [
        Balance(asset="BTC", free=0.1, locked=0.0, total=0.1, account="future"),
        Balance(asset="USD", free=4500.0, locked=500.0, total=5000.0, account="future"),
    ]
    assert not kraken.fake.calls("/0/private/BalanceEx")
    assert_no_secret(kraken)


async def test_reduce_only_on_spot_is_refused_before_anything_is_sent(kraken):
    with pytest.raises(InvalidOrder) as err:
        await kraken.run(kraken.service.place(KEY_ID, kraken.creds, limit_buy(reduce_only=True)))
    assert err.value.code == "INVALID_ORDER" and "reduceOnly" in err.value.message
    assert kraken.fake.seen == []
    assert kraken.journal.get(KEY_ID, "KRAKEN", CID).state == JournalState.REJECTED


async def test_calls_of_one_key_in_one_millisecond_send_increasing_nonces(kraken, monkeypatch):
    # Each call has its own ccxt client; with the clock stopped, every one of them would sign
    # the same nonce, which Kraken refuses (it must exceed the key's last one).
    monkeypatch.setattr(KrakenSpotPrivate, "nonce", lambda self: 1_700_000_000_000)
    await kraken.run(asyncio.gather(*(
        kraken.service.balances(KEY_ID, kraken.creds, "KRAKEN") for _ in range(8))))
    nonces = sorted(int(s.form["nonce"]) for s in kraken.fake.seen)
    assert nonces == list(range(1_700_000_000_000, 1_700_000_000_008))
    for seen in kraken.fake.seen:
        assert_spot_signed(seen, kraken.creds)


async def test_configured_urls_reach_both_private_clients(doc_asset_pairs, futures_instruments):
    from astra.venues.kraken import from_config

    venue = from_config("KRAKEN", {"rest": "http://127.0.0.1:9/spot",
                                   "futures_rest": "http://127.0.0.1:9/fut"})
    venue._markets_source = lambda: copy.deepcopy(doc_asset_pairs)
    venue._futures_source = lambda: copy.deepcopy(futures_instruments)
    try:
        async with asyncio.timeout(10):
            await venue.load_markets()
        client = venue.private_client({"apiKey": "k", "secret": "c2VjcmV0"})
        spot, futures = client.client("spot"), client.client("futures")
        assert spot.urls["api"]["private"] == "http://127.0.0.1:9/spot"
        assert futures.urls["api"]["private"] == "http://127.0.0.1:9/fut/derivatives/api/"
        assert futures.urls["api"]["history"] == "http://127.0.0.1:9/fut/api/history/"
        assert spot.markets is venue._trading_sources()["spot"].markets  # shared, not copied
        assert "PF_XBTUSD" in client.markets_by_id and "XXBTZUSD" in client.markets_by_id
        await client.close()
    finally:
        await venue.close()
