"""Spot trading on the simulator over loopback: orders, fills against the flow, balances, fees,
every filter and time in force, stops, and both signing schemes end to end."""

from __future__ import annotations

from decimal import Decimal

import pytest

from astra.sim.accounts import NewCredentials
from astra.sim.engine import BUY, SELL
from astra.sim.flow import TAKER

SYM = "BTCUSDT"


def D(x) -> Decimal:
    return Decimal(str(x))


def balances(body: dict) -> dict[str, tuple[Decimal, Decimal]]:
    return {b["asset"]: (D(b["free"]), D(b["locked"])) for b in body["balances"]}


def book(sim, symbol: str = SYM):
    return sim.exchange.state("spot", symbol)


def px(units: int) -> str:
    return f"{units / 100:.2f}"  # BTCUSDT spot: 2 price decimals


async def test_limit_order_locks_quote_and_cancel_releases(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    bid = book(sim).engine.best_bid()
    price = bid - 5000  # 50 USDT under the best bid: rests
    status, order = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                               timeInForce="GTC", quantity="0.01", price=px(price))
    assert status == 200 and order["status"] == "NEW" and order["price"] == px(price)
    _, acct = await t.v1("GET", "/api/v1/account")
    locked = D(px(price)) * D("0.01")
    assert balances(acct)["USDT"] == (D(100000) - locked, locked)
    assert order["orderId"] in book(sim).engine.orders
    _, opened = await t.v1("GET", "/api/v1/openOrders", symbol=SYM)
    assert [o["orderId"] for o in opened] == [order["orderId"]]
    status, canceled = await t.v1("DELETE", "/api/v1/order", symbol=SYM, orderId=order["orderId"])
    assert status == 200 and canceled["status"] == "CANCELED"
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["USDT"] == (D(100000), D(0))
    assert order["orderId"] not in book(sim).engine.orders
    status, again = await t.v1("DELETE", "/api/v1/order", symbol=SYM, orderId=order["orderId"])
    assert (status, again["code"]) == (400, -2011)


async def test_market_buy_settles_exactly_with_taker_fee_in_base(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    status, order = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                               quantity="0.05")
    assert status == 200 and order["status"] == "FILLED" and order["executedQty"] == "0.05000"
    _, trades = await t.v1("GET", "/api/v1/userTrades", symbol=SYM)
    assert trades and all(tr["orderId"] == order["orderId"] for tr in trades)
    cost = sum(D(tr["price"]) * D(tr["qty"]) for tr in trades)
    fee = sum(D(tr["commission"]) for tr in trades)
    assert all(tr["commissionAsset"] == "BTC" and not tr["maker"] and tr["buyer"] for tr in trades)
    assert fee == sum((D(tr["qty"]) * D("0.0004")).quantize(D("1e-8"), "ROUND_DOWN")
                      for tr in trades)
    assert D(order["cumQuote"]) == cost
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["USDT"] == (D(100000) - cost, D(0))
    assert balances(acct)["BTC"] == (D("0.05") - fee, D(0))
    sim.exchange.ledger.check()


async def test_quote_order_qty_spends_at_most_the_budget(still, make_trader):
    t = make_trader("USDT=1000")
    status, order = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                               quoteOrderQty="500")
    assert status == 200 and order["status"] == "FILLED"
    assert D(0) < D(order["cumQuote"]) <= D(500)
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["USDT"] == (D(1000) - D(order["cumQuote"]), D(0))


async def test_resting_order_filled_by_the_flow_pays_maker_fee(still, make_trader):
    sim = still
    t = make_trader("BTC=1")
    state = book(sim)
    bid, ask = state.engine.best_bid(), state.engine.best_ask()
    price = ask - 1 if ask - 1 > bid else ask  # best ask, or improving it: never crossing
    status, order = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL", type="LIMIT",
                               timeInForce="GTC", quantity="0.002", price=px(price))
    assert status == 200 and order["status"] == "NEW"
    # The synthetic taker lifts the whole level, ours (last in the queue) included.
    state.place(TAKER, BUY, state.engine.level_qty(SELL, price))
    _, got = await t.v1("GET", "/api/v1/order", symbol=SYM, orderId=order["orderId"])
    assert got["status"] == "FILLED" and got["executedQty"] == "0.00200"
    _, trades = await t.v1("GET", "/api/v1/userTrades", symbol=SYM)
    (trade,) = trades
    assert trade["maker"] is True and trade["buyer"] is False and trade["commissionAsset"] == "USDT"
    quote = D(px(price)) * D("0.002")
    assert D(trade["commission"]) == (quote * D("0.0001")).quantize(D("1e-8"), "ROUND_DOWN")
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["BTC"] == (D("0.998"), D(0))
    assert balances(acct)["USDT"] == (quote - D(trade["commission"]), D(0))
    sim.exchange.ledger.check()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"price": "96000.005"}, -1111),  # more decimals than the tick's precision
        ({"price": "0.001"}, -1111),
        ({"price": "0"}, -4001),
        ({"price": "20000000"}, -4002),  # above maxPrice
        ({"quantity": "0.000001"}, -1111),  # finer than the step
        ({"quantity": "6000"}, -4005),  # LOT_SIZE maxQty
        ({"quantity": "0.00001"}, -4164),  # MIN_NOTIONAL: about 1 USDT
        ({"price": "1000.00"}, -4024),  # PERCENT_PRICE floor (index * 0.2 is ~19400)
        ({"price": "NaN"}, -1100),
        ({"price": "1e400"}, -4002),
        ({"quantity": "-1"}, -4003),
        ({"side": "HOLD"}, -1117),
        ({"type": "ICEBERG"}, -1116),
        ({"timeInForce": "GTD"}, -1115),
        ({"newClientOrderId": "x" * 37}, -4015),
        ({"symbol": "DOGEUSDT"}, -1121),
    ],
)
async def test_filters_reject_with_documented_codes(still, make_trader, params, code):
    t = make_trader("USDT=10000000")
    order = {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.01", "price": "96000.00", **params}
    status, body = await t.v1("POST", "/api/v1/order", **order)
    assert (status, body["code"]) == (400, code), body
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["USDT"] == (D(10000000), D(0))  # nothing reserved by a rejection


async def test_percent_price_cap_and_market_lot_size(still, make_trader):
    t = make_trader("USDT=100000000,BTC=100")
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL", type="LIMIT",
                              timeInForce="GTC", quantity="0.01", price="900000.00")
    assert (status, body["code"]) == (400, -4016)  # above index * 5
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL", type="MARKET",
                              quantity="3")  # MARKET_LOT_SIZE maxQty is 2
    assert (status, body["code"]) == (400, -4005)


async def test_max_num_orders(still, make_trader):
    sim = still
    sim.exchange.sides["spot"].trading.max_open = 3
    t = make_trader("USDT=100000")
    price = px(book(sim).engine.best_bid() - 10000)
    for _ in range(3):
        status, _ = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                               timeInForce="GTC", quantity="0.001", price=price)
        assert status == 200
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                              timeInForce="GTC", quantity="0.001", price=price)
    assert (status, body["code"]) == (400, -2025)


async def test_insufficient_balance(still, make_trader):
    t = make_trader("USDT=10")
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                              timeInForce="GTC", quantity="0.01", price="96000.00")
    assert (status, body["code"]) == (400, -2018)
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL", type="MARKET",
                              quantity="0.01")
    assert (status, body["code"]) == (400, -2018)


async def test_time_in_force(still, make_trader):
    sim = still
    t = make_trader("USDT=1000000")
    state = book(sim)
    ask = state.engine.best_ask()
    at_ask = state.engine.level_qty(SELL, ask)
    # GTX (post-only) that would take: expires, nothing traded.
    status, gtx = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                             timeInForce="GTX", quantity="0.001", price=px(ask))
    assert status == 200 and gtx["status"] == "EXPIRED" and gtx["executedQty"] == "0.00000"
    # FOK larger than the ask level at the ask price: expires whole.
    qty = f"{(at_ask + 1) / 1e5:.5f}"
    status, fok = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                             timeInForce="FOK", quantity=qty, price=px(ask))
    assert status == 200 and fok["status"] == "EXPIRED" and fok["executedQty"] == "0.00000"
    assert state.engine.level_qty(SELL, ask) == at_ask
    # IOC for the same: takes the level, the rest expires.
    status, ioc = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                             timeInForce="IOC", quantity=qty, price=px(ask))
    assert status == 200 and ioc["status"] == "EXPIRED"
    assert ioc["executedQty"] == f"{at_ask / 1e5:.5f}"
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["USDT"][1] == 0  # nothing stays locked
    _, opened = await t.v1("GET", "/api/v1/openOrders", symbol=SYM)
    assert opened == []


async def test_client_order_id_unique_until_filled(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    price = px(book(sim).engine.best_bid() - 10000)
    args = dict(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001",
                price=price, newClientOrderId="desk-42")
    status, first = await t.v1("POST", "/api/v1/order", **args)
    assert status == 200 and first["clientOrderId"] == "desk-42"
    status, body = await t.v1("POST", "/api/v1/order", **args)
    assert status == 400 and body["code"] == -4116
    _, by_cid = await t.v1("GET", "/api/v1/order", symbol=SYM, origClientOrderId="desk-42")
    assert by_cid["orderId"] == first["orderId"]
    status, _ = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                           quantity="0.001", newClientOrderId="desk-43")
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="MARKET",
                              quantity="0.001", newClientOrderId="desk-43")
    assert status == 200 and body["status"] == "FILLED"  # the earlier one was FILLED


async def test_stop_market_triggers_on_last_trade(still, make_trader):
    sim = still
    t = make_trader("BTC=1")
    state = book(sim)
    state.place(TAKER, BUY, 100)  # a last trade price to trigger against
    last = state.last_trade().price
    status, body = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL",
                              type="STOP_MARKET", quantity="0.01", stopPrice=px(last + 100000))
    assert (status, body["code"]) == (400, -2021)  # a sell stop above the market triggers now
    stop = state.engine.best_bid() - 200
    status, order = await t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL",
                               type="STOP_MARKET", quantity="0.01", stopPrice=px(stop))
    assert status == 200 and order["status"] == "NEW"
    assert order["orderId"] not in state.engine.orders
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["BTC"] == (D("0.99"), D("0.01"))
    state.place(-1, BUY, 10**5, stop - 100)  # a synthetic bid under the stop
    while state.last_trade().price > stop:  # the synthetic taker sells the price down
        state.place(TAKER, SELL, 1000)
    sim.exchange.sides["spot"].trading.check_triggers()
    _, got = await t.v1("GET", "/api/v1/order", symbol=SYM, orderId=order["orderId"])
    assert got["status"] == "FILLED" and got["type"] == "STOP_MARKET"
    _, acct = await t.v1("GET", "/api/v1/account")
    assert balances(acct)["BTC"] == (D("0.99"), D(0))
    sim.exchange.ledger.check()


async def test_all_orders_and_cancel_all(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    price = px(book(sim).engine.best_bid() - 10000)
    ids = []
    for _ in range(3):
        _, o = await t.v1("POST", "/api/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                          timeInForce="GTC", quantity="0.001", price=price)
        ids.append(o["orderId"])
    status, body = await t.v1("DELETE", "/api/v1/allOpenOrders", symbol=SYM)
    assert status == 200 and body["code"] == 200
    _, rows = await t.v1("GET", "/api/v1/allOrders", symbol=SYM)
    assert [r["orderId"] for r in rows] == ids and {r["status"] for r in rows} == {"CANCELED"}
    _, rows = await t.v1("GET", "/api/v1/allOrders", symbol=SYM, orderId=ids[1], limit=1)
    assert [r["orderId"] for r in rows] == [ids[1]]
    _, rate = await t.v1("GET", "/api/v1/commissionRate", symbol=SYM)
    assert rate == {"symbol": SYM, "makerCommissionRate": "0.000100",
                    "takerCommissionRate": "0.000400"}


async def test_v3_eip712_order_and_rejections(still, make_trader):
    t = make_trader("USDT=100000")
    status, order = await t.v3("POST", "/api/v3/order", symbol=SYM, side="BUY", type="MARKET",
                               quantity="0.001")
    assert status == 200 and order["status"] == "FILLED"
    status, acct = await t.v3("GET", "/api/v3/account")
    assert status == 200 and balances(acct)["BTC"][0] > 0
    other = make_trader("USDT=1")
    saved = t.creds  # claim this account's signer, sign with another account's key
    t.creds = NewCredentials(saved.apiKey, saved.apiSecret, saved.user, saved.signer,
                             other.creds.signerPrivateKey)
    status, body = await t.v3("GET", "/api/v3/account")
    assert (status, body["code"]) == (400, -1022)
    t.creds = NewCredentials(saved.apiKey, saved.apiSecret, other.creds.user, saved.signer,
                             saved.signerPrivateKey)  # a valid signature for someone else's user
    status, body = await t.v3("GET", "/api/v3/account")
    assert (status, body["code"]) == (401, -2015)


async def test_v1_rejections_over_http(still, make_trader):
    t = make_trader("USDT=100")
    status, body = await t.v1("GET", "/api/v1/account", timestamp=1)
    assert (status, body["code"]) == (400, -1021)
    good = t.creds
    t.creds = NewCredentials(good.apiKey, "0" * 64, good.user, good.signer, good.signerPrivateKey)
    status, body = await t.v1("GET", "/api/v1/account")
    assert (status, body["code"]) == (400, -1022)
    t.creds = NewCredentials("f" * 64, good.apiSecret, good.user, good.signer,
                             good.signerPrivateKey)
    status, body = await t.v1("GET", "/api/v1/account")
    assert (status, body["code"]) == (401, -2015)
