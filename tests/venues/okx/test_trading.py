"""Trading on OKX through ccxt, against a fake OKX on 127.0.0.1 (no network).

The fake answers the v5 private endpoints ccxt calls with responses shaped as OKX's API docs
show them (https://www.okx.com/docs-v5/en/: Trade, Account; values chosen per scenario) and
records every request. The venue's markets are a recorded instruments excerpt
(``data/instruments.json``: BTC-USDT, BTC-USDT-SWAP, BTC-USD-SWAP), injected as raw JSON.
Each test drives ``TradingService`` (order journal on a temporary SQLite file) and checks
request building (path, JSON body with ``clOrdId``, ``ordType``, ``tdMode``, ``sz``/``px`` at
the instrument's precision; ``OK-ACCESS-KEY``/``-SIGN``/``-TIMESTAMP``/``-PASSPHRASE`` with a
signature that verifies; the secret never sent), response parsing into Astra's values, and
error mapping (51008 -> INSUFFICIENT_BALANCE, a 429 closing the venue's gate).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import datetime
from pathlib import Path

import pytest
from tests.venues.trading_fakes import (
    FakeVenue,
    Seen,
    reconciled_after_unknown_outcome,
    refused_fast,
    rejected_for_balance,
    run,
    venue_fixtures,
)

from astra.core import InvalidOrder, RateLimited
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
from astra.venues.okx import OkxUrls, OkxVenue, from_config

INSTRUMENTS = (Path(__file__).parent / "data" / "instruments.json").read_text()
SPOT = "OKX-SPOT-BTC-USDT"
SWAP = "OKX-PERP-BTC-USDT"
INVERSE = "OKX-PERP-BTC-USD-COINM"
KEY = "tests"


# --- the fake venue ---------------------------------------------------------------------------

fake, venue, service = venue_fixtures(
    "OKX",
    lambda: FakeVenue(unscripted=(400, {"code": "50000", "msg": "unscripted", "data": []})),
    lambda url: OkxVenue("OKX", OkxUrls(rest=url), markets=INSTRUMENTS))


@pytest.fixture
def creds():
    """Test credentials made here, shaped like OKX's (uuid-like key, hex secret)."""
    return ExchangeCredentials("OKX", api_key=secrets.token_hex(16),
                               secret=secrets.token_hex(16).upper(),
                               passphrase="Pp-" + secrets.token_urlsafe(9))


def assert_signed(seen: Seen, creds: ExchangeCredentials) -> None:
    """OKX's signature: base64 HMAC-SHA256 of timestamp + method + path(?query) + body; the
    key and passphrase in headers, the secret never sent."""
    h = seen.headers
    assert h["OK-ACCESS-KEY"] == creds.api_key
    assert h["OK-ACCESS-PASSPHRASE"] == creds.passphrase
    stamp = h["OK-ACCESS-TIMESTAMP"]
    sent_at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    assert abs(sent_at - time.time()) < 60 and stamp.endswith("Z")
    prehash = stamp + seen.method + seen.path_qs + seen.body
    digest = hmac.new(creds.secret.encode(), prehash.encode(), hashlib.sha256).digest()
    assert h["OK-ACCESS-SIGN"] == base64.b64encode(digest).decode()
    if seen.method == "POST":
        assert h["Content-Type"] == "application/json"
    assert "x-simulated-trading" not in h
    assert creds.secret not in seen.text()


def ok(*data: dict) -> dict:
    return {"code": "0", "msg": "", "data": list(data)}


# --- doc-shaped answers -----------------------------------------------------------------------
# POST /api/v5/trade/batch-orders and /trade/cancel-order answer with acknowledgements.
PLACED = ok({"clOrdId": "desk1", "ordId": "680800019749904384", "tag": "",
             "ts": "1708587373361", "sCode": "0", "sMsg": ""})
CANCEL_ACK = ok({"clOrdId": "desk1", "ordId": "680800019749904384", "ts": "1708587400000",
                 "sCode": "0", "sMsg": ""})


def order(**changes) -> dict:
    """GET /api/v5/trade/order's ``data[0]`` (the docs' example, our values)."""
    base = {
        "accFillSz": "0", "algoClOrdId": "", "algoId": "", "attachAlgoClOrdId": "",
        "attachAlgoOrds": [], "avgPx": "", "cTime": "1708587373361", "cancelSource": "",
        "cancelSourceReason": "", "category": "normal", "ccy": "", "clOrdId": "desk1",
        "fee": "0", "feeCcy": "BTC", "fillPx": "", "fillSz": "0", "fillTime": "",
        "instId": "BTC-USDT", "instType": "SPOT", "isTpLimit": "false", "lever": "",
        "linkedAlgoOrd": {"algoId": ""}, "ordId": "680800019749904384", "ordType": "limit",
        "pnl": "0", "posSide": "net", "px": "60000.1", "pxType": "", "pxUsd": "",
        "pxVol": "", "quickMgnType": "", "rebate": "0", "rebateCcy": "USDT",
        "reduceOnly": "false", "side": "buy", "slOrdPx": "", "slTriggerPx": "",
        "slTriggerPxType": "", "source": "", "state": "live", "stpId": "", "stpMode": "",
        "sz": "0.001", "tag": "", "tdMode": "cash", "tgtCcy": "", "tpOrdPx": "",
        "tpTriggerPx": "", "tpTriggerPxType": "", "tradeId": "", "uTime": "1708587373361",
    }
    return {**base, **changes}


FILLS = ok({
    "side": "buy", "fillSz": "0.0004", "fillPx": "60000.1", "fillPxVol": "", "fillFwdPx": "",
    "fee": "-0.0000004", "fillPnl": "0", "ordId": "680800019749904384", "feeRate": "-0.001",
    "instType": "SPOT", "fillPxUsd": "", "instId": "BTC-USDT", "clOrdId": "desk1",
    "posSide": "net", "billId": "680800019754098688", "subType": "1", "fillMarkVol": "",
    "tag": "", "fillTime": "1708587380000", "execType": "M", "fillIdxPx": "",
    "tradeId": "744876980", "fillMarkPx": "", "feeCcy": "BTC", "ts": "1708587380001",
})
BALANCE = ok({
    "adjEq": "55415.62", "borrowFroz": "0", "imr": "8.57", "isoEq": "0",
    "mgnRatio": "143682.59", "mmr": "0.34", "notionalUsd": "85.70", "ordFroz": "0",
    "totalEq": "55837.43", "uTime": "1705474164160", "upl": "-7.54",
    "details": [
        {"availBal": "4800", "availEq": "4800", "borrowFroz": "0", "cashBal": "5000",
         "ccy": "USDT", "crossLiab": "0", "disEq": "5000", "eq": "5000", "eqUsd": "5000",
         "fixedBal": "0", "frozenBal": "200", "interest": "0", "isoEq": "0", "isoLiab": "0",
         "isoUpl": "0", "liab": "0", "maxLoan": "0", "ordFrozen": "200", "stgyEq": "0",
         "twap": "0", "uTime": "1705449605015", "upl": "0", "uplLiab": "0"},
        {"availBal": "0.4", "availEq": "0.4", "borrowFroz": "0", "cashBal": "0.5",
         "ccy": "BTC", "crossLiab": "0", "disEq": "30000", "eq": "0.5", "eqUsd": "30000",
         "fixedBal": "0", "frozenBal": "0.1", "interest": "0", "isoEq": "0", "isoLiab": "0",
         "isoUpl": "0", "liab": "0", "maxLoan": "0", "ordFrozen": "0.1", "stgyEq": "0",
         "twap": "0", "uTime": "1705449605015", "upl": "0", "uplLiab": "0"},
    ],
})


def position(**changes) -> dict:
    """GET /api/v5/account/positions' ``data[i]`` (the docs' example, our values)."""
    base = {
        "adl": "1", "availPos": "", "avgPx": "60000", "cTime": "1619507758793", "ccy": "USDT",
        "deltaBS": "", "deltaPA": "", "gammaBS": "", "gammaPA": "", "imr": "30.5",
        "instId": "BTC-USDT-SWAP", "instType": "SWAP", "interest": "0", "idxPx": "61000.2",
        "last": "61000.1", "usdPx": "", "bePx": "60024", "lever": "10", "liab": "",
        "liabCcy": "", "liqPx": "54000.5", "markPx": "61000", "margin": "", "mgnMode": "cross",
        "mgnRatio": "11.73", "mmr": "2.44", "notionalUsd": "3050", "optVal": "",
        "pTime": "1619507761462", "pos": "5", "posCcy": "", "posId": "307173036051017730",
        "posSide": "net", "thetaBS": "", "thetaPA": "", "tradeId": "109844",
        "uTime": "1619507761462", "upl": "50", "uplLastPx": "50", "uplRatio": "0.16",
        "uplRatioLastPx": "0.16", "vegaBS": "", "vegaPA": "", "realizedPnl": "0",
        "pnl": "0", "fee": "0", "fundingFee": "0", "liqPenalty": "0", "closeOrderAlgo": [],
    }
    return {**base, **changes}


POSITIONS = ok(
    position(),
    position(instId="BTC-USD-SWAP", ccy="BTC", pos="-20", avgPx="59000.0", markPx="59500",
             upl="-0.0000284", lever="20", liqPx="62000.1", mgnMode="isolated",
             margin="0.0017", imr="", posId="307173036051017731"),
)
INSUFFICIENT = {"code": "1", "msg": "All operations failed", "data": [
    {"clOrdId": "big1", "ordId": "", "sCode": "51008", "tag": "", "ts": "1695190491421",
     "sMsg": "Order failed. Insufficient USDT balance in account."}],
    "inTime": "1695190491421339", "outTime": "1695190491423240"}
TOO_MANY = {"msg": "Too Many Requests", "code": "50011"}


# --- request building and response parsing ---------------------------------------------------

async def test_spot_limit_order_lifecycle(fake, service, creds):
    fake.answer("POST", "/api/v5/trade/batch-orders", PLACED)
    fake.answer("GET", "/api/v5/trade/order",
                ok(order(state="partially_filled", accFillSz="0.0004", avgPx="60000.1",
                         fillSz="0.0004", fillPx="60000.1", uTime="1708587380000")))
    fake.answer("GET", "/api/v5/trade/orders-pending", ok(order()))
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.1, time_in_force=TimeInForce.GTC, client_order_id="desk1")

    placed = await run(service.place(KEY, creds, body))

    (sent,) = fake.seen
    assert (sent.method, sent.path, sent.query_string) == (
        "POST", "/api/v5/trade/batch-orders", "")
    assert_signed(sent, creds)
    assert sent.json() == [{"instId": "BTC-USDT", "side": "buy", "ordType": "limit",
                            "sz": "0.001", "px": "60000.1", "tdMode": "cash",
                            "tgtCcy": "base_ccy", "clOrdId": "desk1"}]
    # The acknowledgement, completed with what was sent and accepted.
    assert placed == Order(
        order_id="680800019749904384", client_order_id="desk1", market=SPOT, side=Side.BUY,
        type=OrderType.LIMIT, quantity=0.001, filled_quantity=0.0, status=OrderStatus.NEW,
        price=60000.1, time_in_force=TimeInForce.GTC, post_only=False, reduce_only=False,
        created_at=1708587373361, updated_at=1708587373361)
    entry = service.journal.get(KEY, "OKX", "desk1")
    assert entry.state == JournalState.ACKNOWLEDGED
    assert entry.venue_order_id == "680800019749904384"

    got = await run(service.get_order(KEY, creds, SPOT, "680800019749904384"))
    seen = fake.seen[-1]
    assert (seen.method, seen.path_qs) == (
        "GET", "/api/v5/trade/order?instId=BTC-USDT&ordId=680800019749904384")
    assert_signed(seen, creds)
    assert (got.status, got.filled_quantity, got.average_price, got.updated_at) == (
        OrderStatus.PARTIALLY_FILLED, 0.0004, 60000.1, 1708587380000)

    opened = await run(service.open_orders(KEY, creds, SPOT))
    seen = fake.seen[-1]
    assert seen.path_qs == "/api/v5/trade/orders-pending?instId=BTC-USDT"
    assert_signed(seen, creds)
    assert [(o.order_id, o.status, o.price) for o in opened] == [
        ("680800019749904384", OrderStatus.NEW, 60000.1)]


async def test_cancel_by_client_order_id_reports_the_canceled_order(fake, service, creds):
    fake.answer("POST", "/api/v5/trade/cancel-order", CANCEL_ACK)
    fake.answer("GET", "/api/v5/trade/order",
                ok(order(state="canceled", accFillSz="0.0004", avgPx="60000.1",
                         uTime="1708587400000", cancelSource="1")))
    canceled = await run(service.cancel(KEY, creds, SPOT, None, "desk1"))
    cancel, lookup = fake.seen
    assert (cancel.method, cancel.path) == ("POST", "/api/v5/trade/cancel-order")
    assert cancel.json() == {"instId": "BTC-USDT", "clOrdId": "desk1"}
    assert_signed(cancel, creds)
    assert lookup.path_qs == "/api/v5/trade/order?instId=BTC-USDT&ordId=680800019749904384"
    assert_signed(lookup, creds)
    assert (canceled.order_id, canceled.client_order_id, canceled.status) == (
        "680800019749904384", "desk1", OrderStatus.CANCELED)
    assert (canceled.side, canceled.quantity, canceled.filled_quantity) == (
        Side.BUY, 0.001, 0.0004)


async def test_swap_quantity_goes_out_in_contracts(fake, service, creds):
    fake.answer("POST", "/api/v5/trade/batch-orders",
                ok({"clOrdId": "maker7", "ordId": "1001", "tag": "", "ts": "1708587373361",
                    "sCode": "0", "sMsg": ""}))
    body = PlaceOrder(market=SWAP, side=Side.SELL, type=OrderType.LIMIT, quantity=0.02,
                      price=60000.1, time_in_force=TimeInForce.GTC, post_only=True,
                      reduce_only=True, client_order_id="maker7")
    placed = await run(service.place(KEY, creds, body))
    (sent,) = fake.seen
    assert_signed(sent, creds)
    # 0.02 BTC is 2 contracts of 0.01 BTC (ctVal); the order comes back in BTC.
    assert sent.json() == [{"instId": "BTC-USDT-SWAP", "side": "sell", "ordType": "post_only",
                            "sz": "2", "px": "60000.1", "tdMode": "cross",
                            "clOrdId": "maker7", "reduceOnly": True}]
    assert (placed.order_id, placed.quantity, placed.price) == ("1001", 0.02, 60000.1)
    assert (placed.post_only, placed.reduce_only, placed.status) == (
        True, True, OrderStatus.NEW)


# https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-ticker
INVERSE_TICKER = ok({
    "instType": "SWAP", "instId": "BTC-USD-SWAP", "last": "60000", "lastSz": "1",
    "askPx": "60000.1", "askSz": "10", "bidPx": "59999.9", "bidSz": "12", "open24h": "59000",
    "high24h": "61000", "low24h": "58000", "volCcy24h": "100", "vol24h": "60000",
    "ts": "1708587373361", "sodUtc0": "59500", "sodUtc8": "59600"})


async def test_inverse_market_order_converts_at_the_last_price(fake, service, creds):
    fake.answer("GET", "/api/v5/market/ticker", INVERSE_TICKER)
    fake.answer("POST", "/api/v5/trade/batch-orders",
                ok({"clOrdId": "coin3", "ordId": "1002", "tag": "", "ts": "1708587373361",
                    "sCode": "0", "sMsg": ""}))
    # 0.005 BTC at the last price 60,000 is 300 USD: 3 contracts of 100 USD.
    body = PlaceOrder(market=INVERSE, side=Side.BUY, type=OrderType.MARKET, quantity=0.005,
                      client_order_id="coin3")
    placed = await run(service.place(KEY, creds, body))
    ticker, sent = fake.seen
    assert ticker.path_qs == "/api/v5/market/ticker?instId=BTC-USD-SWAP"
    assert_signed(sent, creds)
    assert sent.json() == [{"instId": "BTC-USD-SWAP", "side": "buy", "ordType": "market",
                            "sz": "3", "tdMode": "cross", "clOrdId": "coin3"}]
    assert (placed.type, placed.quantity, placed.price, placed.time_in_force) == (
        OrderType.MARKET, 0.005, None, None)


@pytest.mark.parametrize("changes", [
    {"type": OrderType.STOP_MARKET, "stop_price": 58000.0},  # an OKX algo order
    {"post_only": True, "time_in_force": TimeInForce.IOC},
    {"reduce_only": True},  # on spot
])
async def test_orders_refused_before_any_request(fake, service, creds, changes):
    fields = {"market": SPOT, "side": Side.SELL, "type": OrderType.LIMIT, "quantity": 0.001,
              "price": 60000.1, **changes}
    if fields["type"] == OrderType.STOP_MARKET:
        del fields["price"]
    with pytest.raises(InvalidOrder):
        await run(service.place(KEY, creds, PlaceOrder(**fields)))
    assert fake.seen == []


async def test_cancel_all_cancels_the_open_orders_in_one_batch(fake, service, creds):
    fake.answer("GET", "/api/v5/trade/orders-pending", ok(
        order(instId="BTC-USDT-SWAP", instType="SWAP", ordId="11", clOrdId="a1", sz="1"),
        order(instId="BTC-USDT-SWAP", instType="SWAP", ordId="12", clOrdId="a2", sz="1")))
    fake.answer("POST", "/api/v5/trade/cancel-batch-orders", ok(
        {"clOrdId": "a1", "ordId": "11", "ts": "1708587400000", "sCode": "0", "sMsg": ""},
        {"clOrdId": "a2", "ordId": "12", "ts": "1708587400000", "sCode": "0", "sMsg": ""}))
    assert await run(service.cancel_all(KEY, creds, SWAP)) == 2
    batch = fake.seen[-1]
    assert (batch.method, batch.path) == ("POST", "/api/v5/trade/cancel-batch-orders")
    assert_signed(batch, creds)
    assert batch.json() == [{"ordId": "11", "instId": "BTC-USDT-SWAP"},
                            {"ordId": "12", "instId": "BTC-USDT-SWAP"}]


async def test_fills_balances_positions(fake, service, creds):
    fake.answer("GET", "/api/v5/trade/fills-history", FILLS)
    fake.answer("GET", "/api/v5/account/balance", BALANCE)
    fake.answer("GET", "/api/v5/account/positions", POSITIONS)

    fills = await run(service.fills(KEY, creds, SPOT, 1708587000000))
    seen = fake.seen[-1]
    assert seen.path_qs == ("/api/v5/trade/fills-history?instId=BTC-USDT&begin=1708587000000"
                            "&instType=SPOT")
    assert_signed(seen, creds)
    assert fills == [Fill(fill_id="744876980", order_id="680800019749904384", market=SPOT,
                          side=Side.BUY, price=60000.1, quantity=0.0004, time=1708587380000,
                          fee=0.0000004, fee_asset="BTC", liquidity=Liquidity.MAKER)]

    balances = await run(service.balances(KEY, creds, "OKX"))
    seen = fake.seen[-1]
    assert seen.path_qs == "/api/v5/account/balance"
    assert_signed(seen, creds)
    assert balances == [Balance(asset="BTC", free=0.4, locked=0.1, total=0.5, account="spot"),
                        Balance(asset="USDT", free=4800.0, locked=200.0, total=5000.0,
                                account="spot")]

    positions = await run(service.positions(KEY, creds, "OKX"))
    seen = fake.seen[-1]
    assert seen.path_qs == "/api/v5/account/positions"
    assert_signed(seen, creds)
    # Quantities are base units: 5 x 0.01 BTC on BTC-USDT-SWAP; on BTC-USD-SWAP 20 x 100 USD
    # in BTC at the mark price.
    assert positions == [
        Position(market=SWAP, side=PositionSide.LONG, quantity=0.05, entry_price=60000.0,
                 mark_price=61000.0, unrealized_pnl=50.0, leverage=10.0,
                 liquidation_price=54000.5, margin_type="CROSS"),
        Position(market=INVERSE, side=PositionSide.SHORT,
                 quantity=pytest.approx(2000 / 59500, rel=1e-11),
                 entry_price=59000.0, mark_price=59500.0, unrealized_pnl=-0.0000284,
                 leverage=20.0, liquidation_price=62000.1, margin_type="ISOLATED"),
    ]


# --- errors ----------------------------------------------------------------------------------

async def test_insufficient_balance_is_mapped_and_journaled(fake, service, creds):
    fake.answer("POST", "/api/v5/trade/batch-orders", INSUFFICIENT)
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=1.0,
                      price=60000.1, time_in_force=TimeInForce.GTC, client_order_id="big1")
    err = await rejected_for_balance(service, KEY, creds, body, "51008")
    assert "Insufficient USDT balance" in err.message
    assert creds.secret not in err.message and creds.passphrase not in err.message


async def test_server_error_is_an_unknown_outcome_then_reconciled(fake, service, creds):
    # A 5xx with a code ccxt does not know: no refusal, the order may exist.
    fake.answer("POST", "/api/v5/trade/batch-orders",
                {"code": "50999", "msg": "Service temporarily unavailable", "data": []},
                status=503)
    fake.answer("GET", "/api/v5/trade/order", ok(order()))
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.1, time_in_force=TimeInForce.GTC, client_order_id="desk1")
    await reconciled_after_unknown_outcome(service, KEY, creds, body, "680800019749904384")
    seen = fake.seen[-1]  # the lookup that settled it
    assert seen.path_qs == "/api/v5/trade/order?instId=BTC-USDT&clOrdId=desk1"
    assert_signed(seen, creds)


async def test_rate_limit_closes_the_gate(fake, service, creds):
    fake.answer("GET", "/api/v5/account/balance", TOO_MANY, status=429,
                headers={"Retry-After": "12"})
    with pytest.raises(RateLimited) as caught:
        await run(service.balances(KEY, creds, "OKX"))
    err = caught.value
    assert (err.code, err.status, err.venue_code) == ("RATE_LIMITED", 429, "50011")
    assert 10 < err.retry_after <= 12
    refused = await refused_fast(service.open_orders(KEY, creds, SWAP))
    assert 10 < refused.retry_after <= 12
    assert len(fake.seen) == 1  # the venue was not called again


async def test_simulated_trading_header(fake, creds):
    configured = from_config("OKX", {"rest": fake.base_url, "simulated_trading": True})
    assert configured.simulated_trading and configured.urls.rest == fake.base_url
    await configured.close()
    venue = OkxVenue("OKX", OkxUrls(rest=fake.base_url), markets=INSTRUMENTS,
                     simulated_trading=True)
    try:
        await venue.load_markets()
        client = venue.private_client(creds.ccxt_config())
        try:
            assert client.urls["api"]["rest"] == fake.base_url
            assert client.markets_by_id["BTC-USDT-SWAP"][0]["contractSize"] == 0.01
            fake.answer("GET", "/api/v5/account/balance", BALANCE)
            await run(client.fetch_balance())
        finally:
            await client.close()
    finally:
        await venue.close()
    assert fake.seen[-1].headers["x-simulated-trading"] == "1"
