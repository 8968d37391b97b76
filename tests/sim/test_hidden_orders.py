"""``timeInForce=HIDDEN`` on the simulator over loopback, spot and perpetual: the order rests
out of every published view of the book (REST depth and lastUpdateId, book ticker) and fills
when the book crosses it, after the displayed orders at its price; resting, filling and
canceling one never breaks (nor shows in) the diff depth stream's ``U``/``u``/``pu`` chain."""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal

import aiohttp
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


@pytest.mark.parametrize("kind,root,base", [("spot", "/api/v1", "/sstream"),
                                            ("perp", "/fapi/v1", "/fstream")])
async def test_hidden_orders_keep_the_diff_depth_chain(still, make_trader, kind, root, base):
    """A real ``@depth@100ms`` subscriber while HIDDEN orders rest, fill and are canceled
    (the clock is stopped: each window is flushed by stepping the feeds). Windows with only
    hidden activity publish nothing; every published event continues the chain exactly
    (``U == previous u + 1``, ``pu == previous u``) and holds at least one level."""
    t = make_trader("USDT=100000,BTC=2")
    side = still.exchange.sides[kind]
    state = side.states[SYM]
    m = state.market
    name = "btcusdt@depth@100ms"
    low = state.engine.best_bid() - 50 * m.tick  # displayed changes, away from the top

    def flush() -> None:  # one 100 ms window (two 50 ms steps) of the stopped clock
        side.feeds.tick()
        side.feeds.tick()

    async def hidden_sell() -> int:
        status, order = await t.v1("POST", f"{root}/order", symbol=SYM, side="SELL",
                                   type="LIMIT", timeInForce="HIDDEN", quantity="0.01",
                                   price=m.format_price(state.engine.best_ask()))
        assert (status, order["status"]) == (200, "NEW"), order
        return order["orderId"]

    async def cancel(oid: int) -> None:
        status, body = await t.v1("DELETE", f"{root}/order", symbol=SYM, orderId=oid)
        assert (status, body["status"]) == (200, "CANCELED"), body

    published = []  # the engine's update id after each window that changed the book
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        async with http.ws_connect(f"ws://{still.host}:{still.port}{base}/ws/{name}") as ws:
            # The server subscribes it after the handshake (its own state: polled).
            while not side.hub.active(name):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            flush()  # start from a clean window (what was pending is published here)
            start = state.engine.update_id
            # 1. a displayed change alone
            state.place(OWNER, BUY, 1, low, post_only=True)
            flush()
            published.append(state.engine.update_id)
            # 2. a hidden order rests and is canceled: nothing to publish
            await cancel(await hidden_sell())
            flush()
            # 3. the same, with a displayed change in the same window
            oid = await hidden_sell()
            state.place(OWNER, BUY, 1, low - m.tick, post_only=True)
            await cancel(oid)
            flush()
            published.append(state.engine.update_id)
            # 4. a hidden order partly filled (after the displayed ask), then canceled
            oid = await hidden_sell()
            ask = state.engine.best_ask()
            state.place(OWNER, BUY, state.engine.levels[1][ask] + 1, ask, ioc=True)
            await cancel(oid)
            flush()
            published.append(state.engine.update_id)
            # 5. a hidden order filled alone (nothing displayed changes), then a last change
            oid = await hidden_sell()
            state.place(OWNER, BUY, 1000, state.engine.best_ask() - m.tick, ioc=True)
            flush()
            state.place(OWNER, BUY, 1, low - 2 * m.tick, post_only=True)
            flush()
            published.append(state.engine.update_id)
            events = []
            while not events or events[-1]["u"] < published[-1]:
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                events.append(json.loads(msg.data))
    events = [e for e in events if e["u"] > start]
    assert [e["u"] for e in events] == published
    assert (events[0]["U"], events[0]["pu"]) == (start + 1, start)
    for event in events:
        assert event["b"] or event["a"], event  # never an empty event
        assert event["U"] <= event["u"]
    for prev, event in itertools.pairwise(events):
        assert (event["U"], event["pu"]) == (prev["u"] + 1, prev["u"]), (prev, event)
    state.engine.check_invariants()
    still.exchange.ledger.check()
