"""Trading on BINANCE through ccxt, against a fake Binance on 127.0.0.1 (no network).

The fake answers the private endpoints ccxt calls with responses shaped as Binance's REST
docs show them (spot ``/api/v3``, USD-M ``/fapi``, COIN-M ``/dapi``; values chosen for each
scenario) and records every request it receives. The venue is built with ``from_config``
pointing every product root at the fake, and loads its markets from it (a recorded
exchangeInfo excerpt: BTCUSDT spot, BTCUSDT perpetual, BTCUSD_PERP). Each test drives
``TradingService`` (with an order journal on a temporary SQLite file) and checks:

- request building: method, path, signed parameters (clientOrderId as ``newClientOrderId`` /
  ``origClientOrderId``, side/type/timeInForce/reduceOnly, price and quantity at the
  market's precision), the ``X-MBX-APIKEY`` header and an HMAC-SHA256 ``signature`` that
  verifies; the secret never appears in a request;
- response parsing into Astra's Order/Fill/Balance/Position;
- venue errors mapped to Astra errors (with ``venueCode``), and a 429 + Retry-After
  closing the venue's gate so the next call fails fast without reaching the venue.

Options (``/eapi``) are not exercised here: the private client points them at the
configured root too, but there is no options scenario.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
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

from astra.core import InvalidOrder, OrderNotFound, RateLimited, Unprocessable
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
from astra.venues.binance import BinanceVenue

EXCHANGE_INFO = json.loads((Path(__file__).parent / "data" / "trading" / "exchangeInfo.json")
                           .read_text())
SPOT = "BINANCE-SPOT-BTC-USDT"
PERP = "BINANCE-PERP-BTC-USDT"
COINM = "BINANCE-PERP-BTC-USD-COINM"
KEY = "tests"  # the Astra key id owning the journaled orders


# --- the fake venue ---------------------------------------------------------------------------

class FakeBinance(FakeVenue):
    """Scripted answers (``answer``); the exchangeInfo of every product from the recorded
    excerpt."""

    def __init__(self) -> None:
        roots = {"/api/v3": "spot", "/fapi/v1": "usdm", "/dapi/v1": "coinm"}
        super().__init__({("GET", f"{root}/exchangeInfo"): EXCHANGE_INFO[section]
                          for root, section in roots.items()},
                         unscripted=(400, {"code": -1000, "msg": "unscripted"}))

    def private(self) -> list[Seen]:
        """The requests but those loading the markets."""
        return [s for s in self.seen if not s.path.endswith("/exchangeInfo")]


def binance_venue(base: str) -> BinanceVenue:
    return BinanceVenue.from_config({
        "spot_rest": f"{base}/api",
        "usdm_rest": f"{base}/fapi",
        "coinm_rest": f"{base}/dapi",
        "option_rest": f"{base}/eapi",
        "sections": ["spot", "usdm", "coinm"],
    })


fake, venue, service = venue_fixtures("BINANCE", FakeBinance, binance_venue)


@pytest.fixture
def creds():
    """Test credentials made here: 64 characters each, like Binance's HMAC keys."""
    return ExchangeCredentials("BINANCE", api_key=secrets.token_urlsafe(48)[:64],
                               secret=secrets.token_urlsafe(48)[:64])


def assert_signed(seen: Seen, creds: ExchangeCredentials) -> dict[str, str]:
    """A signed Binance request: key header, timestamp, recvWindow, an HMAC-SHA256 signature
    of everything before it that verifies; the secret itself nowhere. Returns the signed
    parameters: the query string (GET/DELETE) or the form body (POST)."""
    assert seen.headers["X-MBX-APIKEY"] == creds.api_key
    signed_text = seen.body if seen.method == "POST" else seen.path_qs.partition("?")[2]
    payload, _, signature = signed_text.rpartition("&signature=")
    expected = hmac.new(creds.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert signature == expected
    params = dict(parse_qsl(signed_text, keep_blank_values=True))
    assert abs(int(params["timestamp"]) - time.time() * 1000) < 60_000
    assert int(params["recvWindow"]) > 0
    assert creds.secret not in seen.text()
    if seen.method == "POST":
        assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    return params


def the_order_sent(fake: FakeBinance, creds: ExchangeCredentials, path: str) -> dict[str, str]:
    """The one request made: an order signed and POSTed to ``path``. Returns its params."""
    (sent,) = fake.private()
    assert (sent.method, sent.path) == ("POST", path)
    return assert_signed(sent, creds)


# --- doc-shaped answers -----------------------------------------------------------------------
# https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints
# (POST /api/v3/order, newOrderRespType FULL; GET /api/v3/order; DELETE /api/v3/order;
# GET /api/v3/openOrders; GET /api/v3/myTrades) and .../account-endpoints (GET /api/v3/account)

SPOT_NEW = {
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "desk-1",
    "transactTime": 1507725176595, "price": "60000.01000000", "origQty": "0.00100000",
    "executedQty": "0.00000000", "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "workingTime": 1507725176595,
    "selfTradePreventionMode": "NONE", "fills": [],
}
SPOT_QUERY = {
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "desk-1",
    "price": "60000.01000000", "origQty": "0.00100000", "executedQty": "0.00040000",
    "cummulativeQuoteQty": "24.00000400", "status": "PARTIALLY_FILLED", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "stopPrice": "0.00000000", "icebergQty": "0.00000000",
    "time": 1507725176595, "updateTime": 1507725180000, "isWorking": True,
    "workingTime": 1507725176595, "origQuoteOrderQty": "0.000000",
    "selfTradePreventionMode": "NONE",
}
SPOT_CANCELED = {
    "symbol": "BTCUSDT", "origClientOrderId": "desk-1", "orderId": 28, "orderListId": -1,
    "clientOrderId": "cancelMyOrder1", "transactTime": 1684804350068,
    "price": "60000.01000000", "origQty": "0.00100000", "executedQty": "0.00040000",
    "cummulativeQuoteQty": "24.00000400", "status": "CANCELED", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "selfTradePreventionMode": "NONE",
}
MY_TRADES = [
    {"symbol": "BTCUSDT", "id": 28457, "orderId": 28, "orderListId": -1,
     "price": "60000.01000000", "qty": "0.00040000", "quoteQty": "24.00000400",
     "commission": "0.00000040", "commissionAsset": "BTC", "time": 1507725180000,
     "isBuyer": True, "isMaker": True, "isBestMatch": True},
]
ACCOUNT = {
    "makerCommission": 15, "takerCommission": 15, "buyerCommission": 0, "sellerCommission": 0,
    "commissionRates": {"maker": "0.00150000", "taker": "0.00150000", "buyer": "0.00000000",
                        "seller": "0.00000000"},
    "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
    "requireSelfTradePrevention": False, "preventSor": False, "updateTime": 123456789,
    "accountType": "SPOT",
    "balances": [
        {"asset": "BTC", "free": "0.50000000", "locked": "0.00100000"},
        {"asset": "USDT", "free": "1000.00000000", "locked": "35.99600600"},
    ],
    "permissions": ["SPOT"], "uid": 354937868,
}

# https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api
# (New-Order, Current-All-Open-Orders, Position-Information-V3) and .../account/rest-api
# (Notional-and-Leverage-Brackets)
USDM_NEW = {
    "clientOrderId": "maker-7", "cumQty": "0", "cumQuote": "0", "executedQty": "0",
    "orderId": 22542179, "avgPrice": "0.00", "origQty": "0.002", "price": "60000.10",
    "reduceOnly": True, "side": "SELL", "positionSide": "BOTH", "status": "NEW",
    "stopPrice": "0", "closePosition": False, "symbol": "BTCUSDT", "timeInForce": "GTX",
    "type": "LIMIT", "origType": "LIMIT", "updateTime": 1566818724722,
    "workingType": "CONTRACT_PRICE", "priceProtect": False, "priceMatch": "NONE",
    "selfTradePreventionMode": "NONE", "goodTillDate": 0,
}
USDM_BRACKETS = [
    {"symbol": "BTCUSDT", "notionalCoef": 1.50, "brackets": [
        {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
         "maintMarginRatio": 0.004, "cum": 0}]},
]
USDM_POSITIONS = [
    {"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.010",
     "entryPrice": "60000.0", "breakEvenPrice": "60024.0", "markPrice": "61000.00000000",
     "unRealizedProfit": "10.00000000", "liquidationPrice": "30000.5",
     "isolatedMargin": "0", "notional": "610.00000000", "marginAsset": "USDT",
     "isolatedWallet": "0", "initialMargin": "30.50000000", "maintMargin": "2.44000000",
     "positionInitialMargin": "30.50000000", "openOrderInitialMargin": "0", "adl": 2,
     "bidNotional": "0", "askNotional": "0", "updateTime": 1720736417660},
]

# https://developers.binance.com/docs/derivatives/coin-margined-futures/trade/rest-api
# (New-Order, Position-Information)
COINM_NEW = {
    "clientOrderId": "coin-3", "cumQty": "3", "cumBase": "0.00500000", "executedQty": "3",
    "orderId": 5574309, "avgPrice": "60000.0", "origQty": "3", "price": "0",
    "reduceOnly": False, "side": "BUY", "positionSide": "BOTH", "status": "FILLED",
    "stopPrice": "0", "closePosition": False, "symbol": "BTCUSD_PERP", "pair": "BTCUSD",
    "timeInForce": "GTC", "type": "MARKET", "origType": "MARKET", "updateTime": 1566818724722,
    "workingType": "CONTRACT_PRICE", "priceProtect": False, "priceMatch": "NONE",
    "selfTradePreventionMode": "NONE",
}
COINM_POSITIONS = [
    {"symbol": "BTCUSD_PERP", "positionAmt": "-5", "entryPrice": "60000.0",
     "breakEvenPrice": "59990.0", "markPrice": "59000.00000000",
     "unRealizedProfit": "0.00014124", "liquidationPrice": "75000.1", "leverage": "20",
     "maxQty": "50", "marginType": "isolated", "isolatedMargin": "0.00041666",
     "isAutoAddMargin": "false", "positionSide": "BOTH", "notionalValue": "-0.00847457",
     "isolatedWallet": "0.00041666", "updateTime": 1720736417660},
    {"symbol": "BTCUSD_PERP", "positionAmt": "0", "entryPrice": "0.0",
     "breakEvenPrice": "0.0", "markPrice": "59000.00000000", "unRealizedProfit": "0",
     "liquidationPrice": "0", "leverage": "20", "maxQty": "50", "marginType": "cross",
     "isolatedMargin": "0", "isAutoAddMargin": "false", "positionSide": "LONG",
     "notionalValue": "0", "isolatedWallet": "0", "updateTime": 0},
]

# https://developers.binance.com/docs/binance-spot-api-docs/errors
INSUFFICIENT = {"code": -2010, "msg": "Account has insufficient balance for requested action."}
UNKNOWN_ORDER = {"code": -2013, "msg": "Order does not exist."}
TOO_MANY = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 "
            "requests per minute. Please use the websocket for live updates to avoid polling "
            "the API."}


# --- request building and response parsing ---------------------------------------------------

async def test_spot_limit_order_lifecycle(fake, service, creds, tmp_path):
    fake.answer("POST", "/api/v3/order", SPOT_NEW)
    fake.answer("GET", "/api/v3/order", SPOT_QUERY)
    fake.answer("GET", "/api/v3/openOrders", [SPOT_QUERY])
    fake.answer("DELETE", "/api/v3/order", SPOT_CANCELED)
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.01, time_in_force=TimeInForce.GTC, client_order_id="desk-1")

    order = await run(service.place(KEY, creds, body))

    params = the_order_sent(fake, creds, "/api/v3/order")
    assert {k: params[k] for k in ("symbol", "side", "type", "timeInForce", "quantity", "price",
                                   "newClientOrderId", "newOrderRespType")} == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.001", "price": "60000.01", "newClientOrderId": "desk-1",
        "newOrderRespType": "FULL"}
    assert "reduceOnly" not in params and "stopPrice" not in params
    assert order == Order(
        order_id="28", client_order_id="desk-1", market=SPOT, side=Side.BUY,
        type=OrderType.LIMIT, quantity=0.001, filled_quantity=0.0, status=OrderStatus.NEW,
        price=60000.01, time_in_force=TimeInForce.GTC, post_only=False,
        created_at=1507725176595, updated_at=1507725176595)
    entry = service.journal.get(KEY, "BINANCE", "desk-1")
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == "28"

    got = await run(service.get_order(KEY, creds, SPOT, "28"))
    seen = fake.private()[-1]
    assert (seen.method, seen.path) == ("GET", "/api/v3/order")
    assert {k: v for k, v in assert_signed(seen, creds).items()
            if k in ("symbol", "orderId")} == {"symbol": "BTCUSDT", "orderId": "28"}
    assert got.status == OrderStatus.PARTIALLY_FILLED
    assert (got.filled_quantity, got.average_price) == (0.0004, 60000.01)
    assert got.updated_at == 1507725180000

    opened = await run(service.open_orders(KEY, creds, SPOT))
    seen = fake.private()[-1]
    assert (seen.method, seen.path, assert_signed(seen, creds)["symbol"]) == (
        "GET", "/api/v3/openOrders", "BTCUSDT")
    assert [o.order_id for o in opened] == ["28"]

    canceled = await run(service.cancel(KEY, creds, SPOT, None, "desk-1"))
    seen = fake.private()[-1]
    assert (seen.method, seen.path) == ("DELETE", "/api/v3/order")
    params = assert_signed(seen, creds)
    # By client id: the journal knows the venue's id for an order placed through Astra.
    assert params["orderId"] == "28" and "origClientOrderId" not in params
    # Binance names the cancel request in clientOrderId; the order keeps its own id.
    assert canceled.client_order_id == "desk-1" and canceled.order_id == "28"
    assert canceled.status == OrderStatus.CANCELED and canceled.filled_quantity == 0.0004
    entry = service.journal.get(KEY, "BINANCE", "desk-1")
    assert entry.last_order["status"] == "CANCELED"


async def test_usdm_post_only_reduce_only(fake, service, creds):
    fake.answer("POST", "/fapi/v1/order", USDM_NEW)
    body = PlaceOrder(market=PERP, side=Side.SELL, type=OrderType.LIMIT, quantity=0.002,
                      price=60000.1, time_in_force=TimeInForce.GTC, post_only=True,
                      reduce_only=True, client_order_id="maker-7")
    order = await run(service.place(KEY, creds, body))
    params = the_order_sent(fake, creds, "/fapi/v1/order")
    assert {k: params[k] for k in ("symbol", "side", "type", "timeInForce", "quantity", "price",
                                   "reduceOnly", "newClientOrderId")} == {
        "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTX",
        "quantity": "0.002", "price": "60000.1", "reduceOnly": "true",
        "newClientOrderId": "maker-7"}
    assert order.order_id == "22542179" and order.client_order_id == "maker-7"
    assert (order.status, order.quantity, order.price) == (OrderStatus.NEW, 0.002, 60000.1)
    assert order.post_only is True and order.reduce_only is True
    assert order.time_in_force == TimeInForce.GTC  # GTX: good till canceled, maker only


# https://developers.binance.com/docs/derivatives/coin-margined-futures/market-data/rest-api
# (24hr-Ticker-Price-Change-Statistics): an array even for one symbol.
COINM_TICKER = [{
    "symbol": "BTCUSD_PERP", "pair": "BTCUSD", "priceChange": "-100.0",
    "priceChangePercent": "-0.166", "weightedAvgPrice": "60050.1", "lastPrice": "60000.0",
    "lastQty": "2", "openPrice": "60100.0", "highPrice": "60500.0", "lowPrice": "59800.0",
    "volume": "1000", "baseVolume": "1.66", "openTime": 1566818724000,
    "closeTime": 1566818724722, "firstId": 1, "lastId": 2, "count": 2}]


async def test_coinm_market_order_converts_base_units_at_the_last_price(fake, service, creds):
    fake.answer("GET", "/dapi/v1/ticker/24hr", COINM_TICKER)
    fake.answer("POST", "/dapi/v1/order", COINM_NEW)
    # 0.005 BTC at the last price 60,000 is 300 USD: three contracts of 100 USD.
    body = PlaceOrder(market=COINM, side=Side.BUY, type=OrderType.MARKET, quantity=0.005,
                      client_order_id="coin-3")
    order = await run(service.place(KEY, creds, body))
    ticker, sent = fake.private()  # the public ticker, then the order
    assert (ticker.method, ticker.path, ticker.query["symbol"]) == (
        "GET", "/dapi/v1/ticker/24hr", "BTCUSD_PERP")
    assert (sent.method, sent.path) == ("POST", "/dapi/v1/order")
    params = assert_signed(sent, creds)
    assert {k: params[k] for k in ("symbol", "side", "type", "quantity", "newClientOrderId")} == {
        "symbol": "BTCUSD_PERP", "side": "BUY", "type": "MARKET", "quantity": "3",
        "newClientOrderId": "coin-3"}
    assert "price" not in params and "timeInForce" not in params
    assert order.status == OrderStatus.FILLED and order.type == OrderType.MARKET
    # Back in base units at the average price: 3 x 100 USD / 60,000.
    assert (order.quantity, order.filled_quantity, order.average_price) == (
        0.005, 0.005, 60000.0)
    assert order.price is None


async def test_coinm_quantity_under_one_contract_is_refused_before_sending(fake, service, creds):
    body = PlaceOrder(market=COINM, side=Side.BUY, type=OrderType.LIMIT, quantity=0.0001,
                      price=60000.0, time_in_force=TimeInForce.GTC)  # 6 USD: no contract
    with pytest.raises(Unprocessable) as err:
        await run(service.place(KEY, creds, body))
    assert err.value.parameter == "quantity" and "less than one contract" in err.value.message
    assert not fake.calls("POST", "/dapi/v1/order")


async def test_spot_stop_limit_is_sent_as_stop_loss_limit(fake, service, creds):
    answer = dict(SPOT_NEW, type="STOP_LOSS_LIMIT", side="SELL", stopPrice="58000.00000000",
                  price="57900.00000000", clientOrderId="stop-1")
    fake.answer("POST", "/api/v3/order", answer)
    body = PlaceOrder(market=SPOT, side=Side.SELL, type=OrderType.STOP_LIMIT, quantity=0.001,
                      price=57900.0, stop_price=58000.0, time_in_force=TimeInForce.GTC,
                      client_order_id="stop-1")
    order = await run(service.place(KEY, creds, body))
    params = assert_signed(fake.private()[-1], creds)
    assert {k: params[k] for k in ("type", "price", "stopPrice", "timeInForce")} == {
        "type": "STOP_LOSS_LIMIT", "price": "57900", "stopPrice": "58000",
        "timeInForce": "GTC"}
    assert order.type == OrderType.STOP_LIMIT and order.stop_price == 58000.0


@pytest.mark.parametrize("body", [
    pytest.param(PlaceOrder(market=PERP, side=Side.SELL, type=OrderType.LIMIT, quantity=0.002,
                            price=60000.1, time_in_force=TimeInForce.IOC, post_only=True),
                 id="post_only_with_ioc"),
    pytest.param(PlaceOrder(market=SPOT, side=Side.SELL, type=OrderType.MARKET, quantity=0.001,
                            reduce_only=True),
                 id="reduce_only_on_spot"),
    # an algo order: get/cancel would not reach it
    pytest.param(PlaceOrder(market=PERP, side=Side.SELL, type=OrderType.STOP_MARKET,
                            quantity=0.002, stop_price=55000.0, reduce_only=True),
                 id="futures_conditional_order"),
])
async def test_orders_refused_without_a_request(fake, service, creds, body):
    with pytest.raises(InvalidOrder):
        await run(service.place(KEY, creds, body))
    assert fake.private() == []


async def test_fills_and_balances(fake, service, creds):
    fake.answer("GET", "/api/v3/myTrades", MY_TRADES)
    fake.answer("GET", "/api/v3/account", ACCOUNT)
    fills = await run(service.fills(KEY, creds, SPOT, 1507725000000))
    seen = fake.private()[-1]
    assert (seen.method, seen.path) == ("GET", "/api/v3/myTrades")
    params = assert_signed(seen, creds)
    assert (params["symbol"], params["startTime"]) == ("BTCUSDT", "1507725000000")
    assert fills == [Fill(fill_id="28457", order_id="28", market=SPOT, side=Side.BUY,
                          price=60000.01, quantity=0.0004, time=1507725180000, fee=0.0000004,
                          fee_asset="BTC", liquidity=Liquidity.MAKER)]

    balances = await run(service.balances(KEY, creds, "BINANCE"))
    seen = fake.private()[-1]
    assert (seen.method, seen.path) == ("GET", "/api/v3/account")
    assert_signed(seen, creds)
    assert balances == [
        Balance(asset="BTC", free=0.5, locked=0.001, total=0.501, account="spot"),
        Balance(asset="USDT", free=1000.0, locked=35.996006, total=1035.996006, account="spot"),
    ]


async def test_positions_of_usdm_and_coinm(fake, service, creds):
    fake.answer("GET", "/fapi/v1/leverageBracket", USDM_BRACKETS)
    fake.answer("GET", "/fapi/v3/positionRisk", USDM_POSITIONS)
    fake.answer("GET", "/dapi/v1/positionRisk", COINM_POSITIONS)
    positions = await run(service.positions(KEY, creds, "BINANCE"))
    # ccxt loads the leverage brackets (maintenance margin tiers) once per client.
    assert [(s.method, s.path) for s in fake.private()] == [
        ("GET", "/fapi/v1/leverageBracket"), ("GET", "/fapi/v3/positionRisk"),
        ("GET", "/dapi/v1/positionRisk")]
    for seen in fake.private():
        params = assert_signed(seen, creds)
        assert set(params) == {"timestamp", "recvWindow", "signature"}  # nothing else sent
    usdm, coinm = positions
    assert usdm.market == PERP and usdm.side == PositionSide.LONG
    assert (usdm.quantity, usdm.entry_price, usdm.mark_price, usdm.unrealized_pnl,
            usdm.liquidation_price) == (0.01, 60000.0, 61000.0, 10.0, 30000.5)
    assert usdm.margin_type == "CROSS"  # isolatedMargin 0 in the v3 answer
    # COIN-M: 5 contracts of 100 USD are 500 USD, in BTC at the mark price 59,000; the
    # zero-size hedge leg is no position.
    assert coinm == Position(
        market=COINM, side=PositionSide.SHORT, quantity=pytest.approx(500 / 59000, rel=1e-12),
        entry_price=60000.0,
        mark_price=59000.0, unrealized_pnl=0.00014124, leverage=20.0,
        liquidation_price=75000.1, margin_type="ISOLATED")


# --- errors ----------------------------------------------------------------------------------

async def test_insufficient_balance_is_mapped_and_journaled(fake, service, creds):
    fake.answer("POST", "/api/v3/order", INSUFFICIENT, status=400)
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=1.0,
                      price=60000.0, time_in_force=TimeInForce.GTC, client_order_id="big-1")
    err = await rejected_for_balance(service, KEY, creds, body, "-2010")
    assert creds.secret not in err.message and creds.api_key not in err.message


async def test_unknown_order_is_order_not_found(fake, service, creds):
    fake.answer("GET", "/fapi/v1/order", UNKNOWN_ORDER, status=400)
    with pytest.raises(OrderNotFound) as caught:
        await run(service.get_order(KEY, creds, PERP, "123"))
    assert (caught.value.code, caught.value.venue_code) == ("ORDER_NOT_FOUND", "-2013")
    seen = fake.private()[-1]
    assert (seen.path, assert_signed(seen, creds)["orderId"]) == ("/fapi/v1/order", "123")


async def test_unknown_outcome_is_reconciled_by_client_order_id(fake, service, creds):
    # https://developers.binance.com/docs/binance-spot-api-docs/errors: -1006 UNEXPECTED_RESP
    fake.answer("POST", "/api/v3/order", {"code": -1006, "msg": "An unexpected response was "
                "received from the message bus. Execution status unknown."}, status=500)
    fake.answer("GET", "/api/v3/order", SPOT_QUERY)
    body = PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                      price=60000.01, time_in_force=TimeInForce.GTC, client_order_id="desk-1")
    order = await reconciled_after_unknown_outcome(service, KEY, creds, body, "28")
    assert order.order_id is None
    seen = fake.private()[-1]  # the lookup that settled it
    assert (seen.method, seen.path) == ("GET", "/api/v3/order")
    params = assert_signed(seen, creds)
    assert params["origClientOrderId"] == "desk-1" and "orderId" not in params
    again = await run(service.place(KEY, creds, body))  # a retry: the journaled order
    assert again.order_id == "28" and len(fake.private()) == 2


async def test_rate_limit_closes_the_gate(fake, service, creds):
    fake.answer("GET", "/api/v3/openOrders", TOO_MANY, status=429,
                headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as caught:
        await run(service.open_orders(KEY, creds, SPOT))
    err = caught.value
    assert (err.code, err.status, err.venue_code) == ("RATE_LIMITED", 429, "-1003")
    assert 28 < err.retry_after <= 30
    assert len(fake.private()) == 1

    # any call to the venue, any product
    refused = await refused_fast(service.balances(KEY, creds, "BINANCE"))
    assert 28 < refused.retry_after <= 30
    assert len(fake.private()) == 1  # the venue was not called again


async def test_each_product_keeps_its_own_budget(fake, venue, service, creds):
    """Binance counts request weight per product (api, fapi, dapi): a USD-M order is paced by
    USD-M's limiter and a 429 from /fapi closes USD-M's gate only; spot orders still go."""
    fake.answer("POST", "/fapi/v1/order", TOO_MANY, status=429, headers={"Retry-After": "30"})
    fake.answer("POST", "/api/v3/order", SPOT_NEW)
    await run(venue.load_markets())
    spot, usdm, coinm = (venue.limiters[p] for p in ("spot", "usdm", "coinm"))

    def order(market: str, cid: str) -> PlaceOrder:
        return PlaceOrder(market=market, side=Side.BUY, type=OrderType.LIMIT, quantity=0.002,
                          price=60000.1, time_in_force=TimeInForce.GTC, client_order_id=cid)

    with pytest.raises(RateLimited) as caught:
        await run(service.place(KEY, creds, order(PERP, "perp-1")))
    assert 28 < caught.value.retry_after <= 30
    assert 28 < usdm.retry_after() <= 30 and usdm.signals == 1  # the hook fed USD-M's gate
    assert (spot.retry_after(), spot.signals, coinm.retry_after()) == (None, 0, None)

    placed = await run(service.place(KEY, creds, order(SPOT, "spot-1")))  # spot goes on
    assert placed.order_id == "28"
    refused = await refused_fast(service.place(KEY, creds, order(PERP, "perp-2")))
    assert 28 < refused.retry_after <= 30
    assert (usdm.blocked, spot.blocked) == (1, 0)  # refused at USD-M's own gate
    assert [s.path for s in fake.private()] == ["/fapi/v1/order", "/api/v3/order"]


TOO_MANY_ORDERS = {"code": -1015, "msg": "Too many new orders; current limit is 100 orders "
                   "per 10 SECOND."}


async def test_an_account_limit_closes_only_that_accounts_gate(fake, venue, service, creds):
    """-1015 is counted per account: after one, that account is refused at the gate, while
    public REST (a book snapshot) and another account's orders still reach the venue."""
    fake.answer("POST", "/api/v3/order", TOO_MANY_ORDERS, status=429,
                headers={"Retry-After": "30"})
    fake.answer("POST", "/api/v3/order", SPOT_NEW)
    fake.answer("GET", "/api/v3/depth", {"lastUpdateId": 7, "bids": [["60000.0", "1.5"]],
                                         "asks": [["60001.0", "2.0"]]})
    other = ExchangeCredentials("BINANCE", api_key=secrets.token_urlsafe(48)[:64],
                                secret=secrets.token_urlsafe(48)[:64])

    def order(cid: str) -> PlaceOrder:
        return PlaceOrder(market=SPOT, side=Side.BUY, type=OrderType.LIMIT, quantity=0.001,
                          price=60000.01, time_in_force=TimeInForce.GTC, client_order_id=cid)

    with pytest.raises(RateLimited) as caught:
        await run(service.place(KEY, creds, order("desk-1")))
    assert (caught.value.venue_code, caught.value.status) == ("-1015", 429)
    assert 28 < caught.value.retry_after <= 30

    snapshot = await run(venue.snapshot((await venue.load_markets())[SPOT]))
    assert (snapshot.last_update_id, snapshot.bids, snapshot.asks) == (
        7, [(60000.0, 1.5)], [(60001.0, 2.0)])
    placed = await run(service.place("other-key", other, order("desk-2")))
    assert placed.order_id == "28"
    assert fake.calls("POST", "/api/v3/order")[-1].headers["X-MBX-APIKEY"] == other.api_key

    refused = await refused_fast(service.place(KEY, creds, order("desk-3")))
    assert 28 < refused.retry_after <= 30
    assert [s.headers["X-MBX-APIKEY"] for s in fake.calls("POST", "/api/v3/order")] == [
        creds.api_key, other.api_key]  # the limited account's third order never left


# --- the gateway, end to end -----------------------------------------------------------------

async def test_gateway_places_an_order_with_header_credentials(fake, venue, creds, key_store):
    fake.answer("POST", "/api/v3/order", SPOT_NEW)
    order = await place_through_gateway("BINANCE", venue, key_store, creds.api_key, creds.secret, {
        "market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
        "price": 60000.01, "timeInForce": "GTC", "clientOrderId": "desk-1"})
    assert (order["orderId"], order["clientOrderId"], order["status"]) == ("28", "desk-1", "NEW")
    assert the_order_sent(fake, creds, "/api/v3/order")["newClientOrderId"] == "desk-1"
