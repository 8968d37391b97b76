"""``timeInForce=HIDDEN`` on the simulator over loopback, spot and perpetual: the order rests
out of every published view of the book (REST depth and lastUpdateId, book ticker) and fills
when the book crosses it, after the displayed orders at its price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from astra.sim.engine import BUY

SYM = "BTCUSDT"
OWNER = -30  # a synthetic participant of the test's own


@pytest.mark.parametrize("kind,root", [("spot", "/api/v1"), ("perp", "/fapi/v1")])
async def test_hidden_order_is_unseen_and_fills_when_crossed(still, make_trader, kind, root):
    t = make_trader("USDT=100000,BTC=2")
    state = still.exchange.state(kind, SYM)
    m = state.market
    _, info = await t.v1("GET", f"{root}/exchangeInfo")
    assert "HIDDEN" in next(s for s in info["symbols"] if s["symbol"] == SYM)["timeInForce"]

    ask = state.engine.best_ask()
    shown = state.engine.levels[1][ask]
    _, depth_before = await t.v1("GET", f"{root}/depth", symbol=SYM, limit=5)
    _, top_before = await t.v1("GET", f"{root}/ticker/bookTicker", symbol=SYM)
    status, order = await t.v1("POST", f"{root}/order", symbol=SYM, side="SELL", type="LIMIT",
                               timeInForce="HIDDEN", quantity="0.01", price=m.format_price(ask))
    assert status == 200, order
    assert (order["status"], order["timeInForce"]) == ("NEW", "HIDDEN")
    _, depth_after = await t.v1("GET", f"{root}/depth", symbol=SYM, limit=5)
    _, top_after = await t.v1("GET", f"{root}/ticker/bookTicker", symbol=SYM)
    for key in ("lastUpdateId", "bids", "asks"):
        assert depth_after[key] == depth_before[key]
    assert (top_after["askPrice"], top_after["askQty"]) == (top_before["askPrice"],
                                                           top_before["askQty"])
    _, opened = await t.v1("GET", f"{root}/openOrders", symbol=SYM)
    assert [o["orderId"] for o in opened] == [order["orderId"]]

    # A buyer for the displayed quantity takes only what is displayed ...
    _, fills = state.place(OWNER, BUY, shown, ask, ioc=True)
    assert all(f.maker_id != order["orderId"] for f in fills)
    _, still_new = await t.v1("GET", f"{root}/order", symbol=SYM, orderId=order["orderId"])
    assert still_new["status"] == "NEW"
    # ... and the next one crossing the price fills the hidden order.
    _, fills = state.place(OWNER, BUY, 1000, ask, ioc=True)
    assert (fills[0].maker_id, fills[0].price) == (order["orderId"], ask)
    _, filled = await t.v1("GET", f"{root}/order", symbol=SYM, orderId=order["orderId"])
    assert (filled["status"], Decimal(filled["executedQty"])) == ("FILLED", Decimal("0.01"))
    _, trades = await t.v1("GET", f"{root}/userTrades", symbol=SYM)
    assert [(tr["orderId"], tr["price"], tr["maker"]) for tr in trades] == [
        (order["orderId"], m.format_price(ask), True)]
    state.engine.check_invariants()
    still.exchange.ledger.check()
