"""Perpetual trading on the simulator over loopback: positions against the synthetic flow,
margin, reduce-only and hedge-mode rules, leverage and margin type, stop / take-profit /
trailing triggers, the futures user-stream events, and the V3 (EIP-712) paths end to end.

Most tests stop the clock (``still``): the book moves only when a test moves it, through the
matching engine (synthetic orders of negative owners), and triggers run when a test calls
``check_triggers`` - as every flow step does.
"""

from __future__ import annotations

from decimal import Decimal

from astra.sim.engine import BUY, SELL
from astra.sim.flow import TAKER
from astra.sim.perp_positions import max_notional

SYM = "BTCUSDT"  # perp: 1 price decimal, 3 quantity decimals, tick 0.1
OWNER = -30  # a synthetic participant of the tests' own
BIG = 10**9


def D(x) -> Decimal:
    return Decimal(str(x))


def trading(sim):
    return sim.exchange.sides["perp"].trading


def book(sim, symbol: str = SYM):
    return sim.exchange.state("perp", symbol)


def px(units: int) -> str:
    return f"{D(units) / 10:.1f}"


def set_mid(state, mid: int, qty: int = 10_000) -> None:
    """Move the book's mid (the mark price) to ``mid`` without a trade: synthetic quotes in
    the way are withdrawn, then a synthetic bid and ask rest one tick either side."""
    tick = state.market.tick
    for order in list(state.engine.orders.values()):
        if order.owner < 0 and ((order.side == SELL and order.price <= mid + tick)
                                or (order.side == BUY and order.price >= mid - tick)):
            state.cancel(order.id)
    state.place(OWNER, BUY, qty, mid - tick, post_only=True)
    state.place(OWNER, SELL, qty, mid + tick, post_only=True)


def trade(state, side: int, qty: int = 1) -> int:
    """A synthetic market order; returns the last trade price."""
    state.place(TAKER, side, qty)
    return state.last_trade().price


async def ok(call) -> object:
    status, body = await call
    assert status == 200, body
    return body


async def error(call) -> int:
    status, body = await call
    assert status == 400, body
    return body["code"]


async def position(t, ps: str = "BOTH", symbol: str = SYM) -> dict:
    rows = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=symbol))
    return next(r for r in rows if r["positionSide"] == ps)


async def order(t, side: str, type_: str = "MARKET", **params) -> dict:
    return await ok(t.v1("POST", "/fapi/v1/order", symbol=params.pop("symbol", SYM), side=side,
                         type=type_, **params))


def wallet(body: list[dict]) -> Decimal:
    return next(D(b["balance"]) for b in body if b["asset"] == "USDT")


# -- positions against the flow --------------------------------------------------------------


async def test_market_long_then_limit_flip_to_short(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    bought = await order(t, "BUY", quantity="0.100")
    assert bought["status"] == "FILLED" and bought["executedQty"] == "0.100"
    assert bought["positionSide"] == "BOTH" and bought["reduceOnly"] is False
    pos = await position(t)
    entry, amt, mark = D(pos["entryPrice"]), D(pos["positionAmt"]), D(pos["markPrice"])
    assert amt == D("0.1") and entry * amt == D(bought["cumQuote"])
    assert D(pos["notional"]) == amt * mark
    assert D(pos["unRealizedProfit"]) == ((mark - entry) * amt).quantize(D("1e-8"), "ROUND_FLOOR")
    assert pos["leverage"] == "20" and pos["marginType"] == "cross"
    assert pos["maxNotionalValue"] == str(max_notional(20))
    # A marketable LIMIT sell of 0.3 closes the long and opens a 0.2 short.
    bid = book(sim).engine.best_bid()
    sold = await order(t, "SELL", "LIMIT", timeInForce="GTC", quantity="0.300",
                       price=px(bid - 20))
    assert sold["status"] == "FILLED"
    pos = await position(t)
    assert D(pos["positionAmt"]) == D("-0.2") and D(pos["notional"]) < 0
    trades = await ok(t.v1("GET", "/fapi/v1/userTrades", symbol=SYM))
    keys = {"buyer", "commission", "commissionAsset", "id", "maker", "orderId", "price", "qty",
            "quoteQty", "realizedPnl", "side", "positionSide", "symbol", "time"}
    assert all(keys <= set(tr) for tr in trades)
    closing = [tr for tr in trades if tr["orderId"] == sold["orderId"]]
    # The first 0.1 of the sell realized (price - entry) per unit; the rest opened the short.
    closed, realized = D(0), D(0)
    for tr in closing:
        part = min(D(tr["qty"]), D("0.1") - closed)
        realized += (D(tr["price"]) - entry) * part
        closed += part
    assert abs(sum(D(tr["realizedPnl"]) for tr in closing) - realized) <= D("1e-7")
    fees = sum(D(tr["commission"]) for tr in trades)
    assert all(D(tr["commission"]) == (D(tr["quoteQty"]) * D("0.0004")).quantize(
        D("1e-8"), "ROUND_DOWN") for tr in trades)  # taker rate
    balance = await ok(t.v1("GET", "/fapi/v2/balance"))
    assert wallet(balance) == D(100000) + sum(D(tr["realizedPnl"]) for tr in trades) - fees
    income = await ok(t.v1("GET", "/fapi/v1/income", symbol=SYM))
    assert {r["incomeType"] for r in income} == {"COMMISSION", "REALIZED_PNL"}
    assert sum(D(r["income"]) for r in income) == wallet(balance) - D(100000)
    sim.exchange.ledger.check()


async def test_resting_limit_holds_order_margin_and_fills_as_maker(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    price = book(sim).engine.best_bid() - 1000  # 100 USDT under the best bid: rests
    placed = await order(t, "BUY", "LIMIT", timeInForce="GTX", quantity="0.050",
                         price=px(price))
    assert placed["status"] == "NEW" and placed["orderId"] in book(sim).engine.orders
    account = await ok(t.v1("GET", "/fapi/v4/account"))
    im = D(px(price)) * D("0.05") / 20
    assert D(account["totalOpenOrderInitialMargin"]) == im
    assert D(account["availableBalance"]) == D(100000) - im
    # The flow's taker sells through the order: the user is the maker.
    trade(book(sim), SELL, BIG // 1000)
    filled = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=placed["orderId"]))
    assert filled["status"] == "FILLED" and filled["avgPrice"].startswith(px(price))
    trades = await ok(t.v1("GET", "/fapi/v1/userTrades", symbol=SYM))
    assert [tr["maker"] for tr in trades] == [True]
    assert D(trades[0]["commission"]) == D(px(price)) * D("0.05") * D("0.0002")  # maker rate
    assert D((await position(t))["positionAmt"]) == D("0.05")
    sim.exchange.ledger.check()


async def test_margin_is_checked_against_leverage(still, make_trader):
    t = make_trader("USDT=1000")
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="MARKET",
                            quantity="1.000")) == -2019  # 97k at 20x needs 4850
    price = px(book(still).engine.best_bid() - 1000)
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="SELL", type="LIMIT",
                            timeInForce="GTC", quantity="1.000", price=px(
                                book(still).engine.best_ask() + 1000))) == -2019
    await ok(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=125))
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="LIMIT",
                            timeInForce="GTC", quantity="0.600", price=price)) == -2027
    placed = await order(t, "BUY", "LIMIT", timeInForce="GTC", quantity="0.200", price=price)
    assert placed["status"] == "NEW"
    still.exchange.ledger.check()


async def test_reduce_only(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    reduce = dict(symbol=SYM, type="MARKET", reduceOnly="true")
    assert await error(t.v1("POST", "/fapi/v1/order", side="SELL", quantity="0.1",
                            **reduce)) == -2022  # no position
    await order(t, "BUY", quantity="0.100")
    assert await error(t.v1("POST", "/fapi/v1/order", side="BUY", quantity="0.01",
                            **reduce)) == -2022  # would increase the long
    assert await error(t.v1("POST", "/fapi/v1/order", side="SELL", quantity="0.2",
                            **reduce)) == -2022  # larger than the long
    ask = book(sim).engine.best_ask()
    resting = await order(t, "SELL", "LIMIT", timeInForce="GTC", quantity="0.080",
                          price=px(ask + 500), reduceOnly="true")
    assert resting["reduceOnly"] is True and resting["status"] == "NEW"
    assert await error(t.v1("POST", "/fapi/v1/order", side="SELL", quantity="0.03",
                            **reduce)) == -2022  # with the resting one: 0.11 > 0.1
    partial = await order(t, "SELL", quantity="0.020", reduceOnly="true")
    assert partial["status"] == "FILLED"
    # A plain sell closes the rest: the resting reduce-only order can no longer reduce.
    await order(t, "SELL", quantity="0.080")
    assert D((await position(t))["positionAmt"]) == 0
    expired = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=resting["orderId"]))
    assert expired["status"] == "EXPIRED" and resting["orderId"] not in book(sim).engine.orders
    sim.exchange.ledger.check()


async def test_hedge_mode_long_and_short_at_once(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    assert await ok(t.v1("GET", "/fapi/v1/positionSide/dual")) == {"dualSidePosition": False}
    assert await ok(t.v1("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")) == {
        "code": 200, "msg": "success"}
    assert await ok(t.v1("GET", "/fapi/v1/positionSide/dual")) == {"dualSidePosition": True}
    assert await error(t.v1("POST", "/fapi/v1/positionSide/dual",
                            dualSidePosition="true")) == -4059
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="MARKET",
                            quantity="0.1")) == -4061  # BOTH in hedge mode
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="MARKET",
                            quantity="0.1", positionSide="LONG", reduceOnly="true")) == -1106
    await order(t, "BUY", quantity="0.100", positionSide="LONG")
    await order(t, "SELL", quantity="0.050", positionSide="SHORT")
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY",
                            type="STOP_MARKET", stopPrice=px(book(sim).engine.best_ask() + 500),
                            closePosition="true", positionSide="LONG")) == -2022
    rows = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
    amounts = {r["positionSide"]: D(r["positionAmt"]) for r in rows}
    assert amounts == {"LONG": D("0.1"), "SHORT": D("-0.05")}
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="SELL", type="MARKET",
                            quantity="0.2", positionSide="LONG")) == -2022  # closes too much
    assert await error(t.v1("POST", "/fapi/v1/positionSide/dual",
                            dualSidePosition="false")) == -4068
    # Closing orders: SELL LONG, BUY SHORT.
    await order(t, "SELL", quantity="0.100", positionSide="LONG")
    await order(t, "BUY", quantity="0.050", positionSide="SHORT")
    rows = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
    assert all(D(r["positionAmt"]) == 0 for r in rows)
    resting = await order(t, "BUY", "LIMIT", timeInForce="GTC", quantity="0.010",
                          positionSide="LONG", price=px(book(sim).engine.best_bid() - 500))
    assert await error(t.v1("POST", "/fapi/v1/positionSide/dual",
                            dualSidePosition="false")) == -4067
    await ok(t.v1("DELETE", "/fapi/v1/order", symbol=SYM, orderId=resting["orderId"]))
    await ok(t.v1("POST", "/fapi/v1/positionSide/dual", dualSidePosition="false"))
    assert [r["positionSide"] for r in await ok(t.v1("GET", "/fapi/v2/positionRisk",
                                                     symbol=SYM))] == ["BOTH"]
    sim.exchange.ledger.check()


async def test_leverage_and_margin_type(still, make_trader):
    t = make_trader("USDT=1000")
    assert await ok(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=50)) == {
        "leverage": 50, "maxNotionalValue": "1000000", "symbol": SYM}
    for bad in ("0", "126"):
        assert await error(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=bad)) == -4028
    await order(t, "BUY", quantity="0.150")  # ~14.5k notional: 291 USDT at 50x
    pos = await position(t)
    assert pos["leverage"] == "50"
    account = await ok(t.v1("GET", "/fapi/v4/account"))
    notional = D(pos["notional"])
    assert D(account["totalPositionInitialMargin"]) == (notional / 50).quantize(
        D("1e-8"), "ROUND_CEILING")
    # 14.5k at 1x needs more than the wallet: refused, the leverage stays.
    assert await error(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=1)) == -2028
    assert (await position(t))["leverage"] == "50"
    await ok(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=20))
    account = await ok(t.v1("GET", "/fapi/v4/account"))
    assert D(account["totalPositionInitialMargin"]) == (notional / 20).quantize(
        D("1e-8"), "ROUND_CEILING")
    assert await error(t.v1("POST", "/fapi/v1/marginType", symbol=SYM,
                            marginType="CROSSED")) == -4046
    assert await error(t.v1("POST", "/fapi/v1/marginType", symbol=SYM,
                            marginType="ISOLATED")) == -4048  # a position is open
    assert await ok(t.v1("POST", "/fapi/v1/marginType", symbol="ETHUSDT",
                         marginType="ISOLATED")) == {"code": 200, "msg": "success"}
    eth = await position(t, symbol="ETHUSDT")
    assert eth["marginType"] == "isolated" and eth["leverage"] == "20"
    still.exchange.ledger.check()


# -- conditional orders ----------------------------------------------------------------------


async def test_close_position_stop_closes_the_whole_position(still, make_trader):
    sim = still
    state = book(sim)
    t = make_trader("USDT=100000")
    await order(t, "BUY", quantity="0.200")
    last = state.last_trade().price
    stop = last - 200  # 20 USDT under the last trade
    stop_params = dict(symbol=SYM, side="SELL", type="STOP_MARKET", stopPrice=px(stop))
    assert await error(t.v1("POST", "/fapi/v1/order", closePosition="true", quantity="0.1",
                            **stop_params)) == -4137
    assert await error(t.v1("POST", "/fapi/v1/order", closePosition="true", reduceOnly="true",
                            **stop_params)) == -4138
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="SELL", type="LIMIT",
                            timeInForce="GTC", price=px(last), closePosition="true")) == -1106
    stop_order = await ok(t.v1("POST", "/fapi/v1/order", closePosition="true", **stop_params))
    assert stop_order["status"] == "NEW" and stop_order["closePosition"] is True
    assert stop_order["origQty"] == "0.000"
    await order(t, "BUY", quantity="0.050")  # the position grows: the stop closes all of it
    trading(sim).check_triggers()
    assert (await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM,
                          orderId=stop_order["orderId"])))["status"] == "NEW"
    set_mid(state, stop - 100)
    trade(state, SELL)  # the last price falls through the stop
    trading(sim).check_triggers()
    done = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=stop_order["orderId"]))
    assert done["status"] == "FILLED" and done["executedQty"] == "0.250"
    assert D((await position(t))["positionAmt"]) == 0
    sim.exchange.ledger.check()


async def test_take_profit_on_mark_price_working_type(still, make_trader):
    sim = still
    state = book(sim)
    t = make_trader("USDT=100000")
    await order(t, "BUY", quantity="0.100")
    mark = trading(sim).mark_units(state)
    target = mark + 1000  # 100 USDT above the mark
    params = dict(symbol=SYM, side="SELL", type="TAKE_PROFIT_MARKET", stopPrice=px(target),
                  quantity="0.050", reduceOnly="true")
    # (checked in placement order: the mark-price fill, a trade, comes after the other's check)
    by_last = await ok(t.v1("POST", "/fapi/v1/order", **params))
    by_mark = await ok(t.v1("POST", "/fapi/v1/order", workingType="MARK_PRICE", **params))
    assert (by_mark["workingType"], by_last["workingType"]) == ("MARK_PRICE", "CONTRACT_PRICE")
    assert await error(t.v1("POST", "/fapi/v1/order", workingType="INDEX",
                            **params)) == -4031
    set_mid(state, target + 50)  # the mark moves above the target; no trade happens
    trading(sim).check_triggers()
    status = {o["orderId"]: o["status"] for o in await ok(t.v1("GET", "/fapi/v1/allOrders",
                                                               symbol=SYM))}
    assert status[by_mark["orderId"]] == "FILLED" and status[by_last["orderId"]] == "NEW"
    trade(state, BUY)  # now the last price crosses too
    trading(sim).check_triggers()
    done = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=by_last["orderId"]))
    assert done["status"] == "FILLED"
    assert D((await position(t))["positionAmt"]) == 0
    sim.exchange.ledger.check()


async def test_trailing_stop_follows_the_high_and_triggers_on_the_callback(still, make_trader):
    sim = still
    state = book(sim)
    t = make_trader("USDT=100000")
    await order(t, "BUY", quantity="0.100")
    last = state.last_trade().price
    trail = dict(symbol=SYM, side="SELL", type="TRAILING_STOP_MARKET", quantity="0.100",
                 reduceOnly="true")
    for bad in ("0", "5.5", "0.05", "x"):
        assert await error(t.v1("POST", "/fapi/v1/order", callbackRate=bad, **trail)) == -1130
    assert await error(t.v1("POST", "/fapi/v1/order", callbackRate="1",
                            activationPrice=px(last - 100), **trail)) == -2021
    placed = await ok(t.v1("POST", "/fapi/v1/order", callbackRate="1",
                           activationPrice=px(last + 5000), **trail))
    assert placed["priceRate"] == "1" and placed["activatePrice"] == px(last + 5000)
    high = last + 8000  # +800 USDT: activates, the high is tracked
    set_mid(state, high)
    peak = trade(state, BUY)
    trading(sim).check_triggers()
    assert trading(sim).orders[(SYM, placed["orderId"])].extreme == peak
    set_mid(state, peak - peak // 200)  # a 0.5 % pullback: below the 1 % callback
    trade(state, SELL)
    trading(sim).check_triggers()
    assert trading(sim).orders[(SYM, placed["orderId"])].status == "NEW"
    set_mid(state, peak - peak // 90)  # more than 1 % under the high
    trade(state, SELL)
    trading(sim).check_triggers()
    done = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=placed["orderId"]))
    assert done["status"] == "FILLED" and done["type"] == "TRAILING_STOP_MARKET"
    assert D((await position(t))["positionAmt"]) == 0
    sim.exchange.ledger.check()


async def test_stop_limit_enters_the_book_with_its_margin(still, make_trader):
    """A triggered STOP rests as a LIMIT order; the margin check at the trigger counts it once."""
    sim = still
    state = book(sim)
    t = make_trader("USDT=1000")
    last = state.last_trade().price
    stop, limit = last + 100, last - 400
    assert await error(t.v1("POST", "/fapi/v1/order", symbol=SYM, side="BUY", type="STOP",
                            quantity="0.200", price=px(limit), stopPrice=px(last - 10))) == -2021
    placed = await order(t, "BUY", "STOP", quantity="0.200", price=px(limit), stopPrice=px(stop))
    assert placed["status"] == "NEW" and placed["timeInForce"] == "GTC"
    account = await ok(t.v1("GET", "/fapi/v4/account"))
    assert D(account["totalOpenOrderInitialMargin"]) == 0  # a waiting stop holds no margin
    set_mid(state, stop + 200)
    trade(state, BUY)
    trading(sim).check_triggers()
    rested = await ok(t.v1("GET", "/fapi/v1/openOrder", symbol=SYM, orderId=placed["orderId"]))
    assert rested["status"] == "NEW" and placed["orderId"] in state.engine.orders
    account = await ok(t.v1("GET", "/fapi/v4/account"))
    assert D(account["totalOpenOrderInitialMargin"]) == D(px(limit)) * D("0.2") / 20
    sim.exchange.ledger.check()


async def test_time_in_force(still, make_trader):
    sim = still
    state = book(sim)
    t = make_trader("USDT=100000")
    bid, ask = state.engine.best_bid(), state.engine.best_ask()
    crossing = dict(symbol=SYM, side="BUY", type="LIMIT", price=px(ask))
    gtx = await ok(t.v1("POST", "/fapi/v1/order", timeInForce="GTX", quantity="0.010",
                        **crossing))
    assert gtx["status"] == "EXPIRED" and gtx["executedQty"] == "0.000"
    at_ask = state.engine.levels[SELL][ask]
    fok = await ok(t.v1("POST", "/fapi/v1/order", timeInForce="FOK",
                        quantity=f"{D(at_ask + 1) / 1000:.3f}", **crossing))
    assert fok["status"] == "EXPIRED" and fok["executedQty"] == "0.000"
    ioc = await ok(t.v1("POST", "/fapi/v1/order", timeInForce="IOC",
                        quantity=f"{D(at_ask + 1) / 1000:.3f}", **crossing))
    assert ioc["status"] == "EXPIRED" and D(ioc["executedQty"]) == D(at_ask) / 1000
    assert D((await position(t))["positionAmt"]) == D(at_ask) / 1000
    assert state.engine.best_bid() == bid  # nothing of the IOC rests
    sim.exchange.ledger.check()


# -- user stream -----------------------------------------------------------------------------


ORDER_KEYS = {"s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "T",
              "t", "b", "a", "m", "R", "wt", "ot", "ps", "cp", "rp"}


async def test_order_trade_update_and_account_update_events(still, make_trader):
    sim = still
    perp = trading(sim)
    events: list[tuple[int, dict]] = []
    forward = perp.emit
    perp.emit = lambda account, event: (events.append((account, event)), forward(account, event))
    t = make_trader("USDT=100000")
    account_id = sim.exchange.registry.by_api_key(t.creds.apiKey).id
    price = book(sim).engine.best_bid() - 1000
    resting = await order(t, "BUY", "LIMIT", timeInForce="GTC", quantity="0.010",
                          price=px(price))
    filled = await order(t, "SELL", quantity="0.020")
    assert {a for a, _ in events} == {account_id}
    kinds = [(e["e"], e.get("o", {}).get("x")) for _, e in events]
    assert kinds[0] == ("ORDER_TRADE_UPDATE", "NEW") and kinds[1] == ("ORDER_TRADE_UPDATE", "NEW")
    assert ("ACCOUNT_UPDATE", None) in kinds and ("ORDER_TRADE_UPDATE", "TRADE") in kinds
    new = events[0][1]
    assert set(new) == {"e", "E", "T", "o"} and set(new["o"]) == ORDER_KEYS
    assert new["o"]["i"] == resting["orderId"]
    assert D(new["o"]["b"]) == D(px(price)) * D("0.01") and D(new["o"]["a"]) == 0
    trades = [e for _, e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert trades and all(set(e["o"]) == ORDER_KEYS | {"N", "n"} for e in trades)
    assert trades[-1]["o"]["X"] == "FILLED" and trades[-1]["o"]["z"] == "0.020"
    assert all(e["o"]["i"] == filled["orderId"] and e["o"]["N"] == "USDT" for e in trades)
    update = next(e for _, e in events if e["e"] == "ACCOUNT_UPDATE")
    assert set(update) == {"e", "E", "T", "a"} and update["a"]["m"] == "ORDER"
    assert [set(b) for b in update["a"]["B"]] == [{"a", "wb", "cw", "bc"}]
    assert [set(p) for p in update["a"]["P"]] == [{"s", "pa", "ep", "cr", "up", "mt", "iw",
                                                   "ps"}]
    last = [e for _, e in events if e["e"] == "ACCOUNT_UPDATE"][-1]["a"]
    assert last["P"][0]["pa"] == "-0.020" and last["P"][0]["ps"] == "BOTH"
    balance = await ok(t.v1("GET", "/fapi/v2/balance"))
    assert D(last["B"][0]["wb"]) == wallet(balance)


# -- the V3 paths, EIP-712 signed ------------------------------------------------------------


async def test_v3_eip712_end_to_end(still, make_trader):
    sim = still
    t = make_trader("USDT=100000")
    status, placed = await t.v3("POST", "/fapi/v3/order", symbol=SYM, side="BUY",
                                type="MARKET", quantity="0.030")
    assert status == 200 and placed["status"] == "FILLED", placed
    status, rows = await t.v3("GET", "/fapi/v3/positionRisk", symbol=SYM)
    assert status == 200 and D(rows[0]["positionAmt"]) == D("0.03")
    keys = {"entryPrice", "marginType", "isAutoAddMargin", "isolatedMargin", "leverage",
            "liquidationPrice", "markPrice", "maxNotionalValue", "positionAmt", "notional",
            "isolatedWallet", "symbol", "unRealizedProfit", "positionSide", "updateTime"}
    assert set(rows[0]) == keys
    status, balance = await t.v3("GET", "/fapi/v3/balance")
    assert status == 200 and set(balance[0]) == {
        "accountAlias", "asset", "balance", "crossWalletBalance", "crossUnPnl",
        "availableBalance", "maxWithdrawAmount", "marginAvailable", "updateTime"}
    status, account = await t.v3("GET", "/fapi/v3/accountWithJoinMargin")
    assert status == 200 and account["totalWalletBalance"] == balance[0]["balance"]
    pos = next(p for p in account["positions"] if p["symbol"] == SYM)
    assert pos["positionAmt"] == "0.030" and pos["isolated"] is False
    status, trades = await t.v3("GET", "/fapi/v3/userTrades", symbol=SYM)
    assert status == 200 and {tr["orderId"] for tr in trades} == {placed["orderId"]}
    status, income = await t.v3("GET", "/fapi/v3/income", incomeType="COMMISSION")
    assert status == 200 and len(income) == len(trades)
    status, rate = await t.v3("GET", "/fapi/v3/commissionRate", symbol=SYM)
    assert rate == {"symbol": SYM, "makerCommissionRate": "0.0002",
                    "takerCommissionRate": "0.0004"}
    status, lev = await t.v3("POST", "/fapi/v3/leverage", symbol=SYM, leverage="30")
    assert status == 200 and lev["leverage"] == 30
    status, brackets = await t.v3("GET", "/fapi/v3/leverageBracket", symbol=SYM)
    assert status == 200 and brackets["brackets"][0]["maintMarginRatio"] == 0.025
    sim.exchange.ledger.check()
