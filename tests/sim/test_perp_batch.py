"""Perpetual batch and housekeeping order endpoints over loopback: batchOrders (POST and
DELETE, per-element results and errors, limits), countdownCancelAll (a real timer), order/test
(every check, nothing placed), noop (V3: takes its nonce), and ccxt's create_orders and
cancel_orders against them."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest
from aiohttp.test_utils import make_mocked_request
from tests.sim.conftest import SignedClient
from tests.sim.test_perp import SYM, book, error, ok, px, trading
from tests.sim.test_perp_ccxt import BTC, call

from astra.sim import SimExchange, SimServer
from astra.sim.admin import parse_deposits
from astra.sim.rest import request_weight


def limit_buy(price: int, qty: str = "0.01", **extra) -> dict:
    return {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": qty, "price": px(price), **extra}


async def open_ids(t, symbol: str = SYM) -> list[int]:
    return [o["orderId"] for o in await ok(t.v1("GET", "/fapi/v1/openOrders", symbol=symbol))]


async def test_batch_orders_place_each_and_answer_in_order(still, make_trader):
    t = make_trader("USDT=100000")
    low = book(still).engine.best_bid() - 100
    orders = [
        limit_buy(low),
        {"symbol": SYM, "side": "SELL", "type": "MARKET", "quantity": "0.01",
         "reduceOnly": True},  # nothing to reduce: that element alone fails
        limit_buy(low - 10, "0.02", newClientOrderId="batch-2"),
        limit_buy(low) | {"price": px(low) + "5"},  # finer than the 0.1 tick
    ]
    rows = await ok(t.v1("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(orders)))
    assert len(rows) == 4
    assert rows[1] == {"code": -2022, "msg": "ReduceOnly Order is rejected."}
    assert rows[3]["code"] == -1111  # precision over the tick, as POST /order
    assert [(r["status"], r["price"], r["origQty"]) for r in (rows[0], rows[2])] == [
        ("NEW", px(low), "0.010"), ("NEW", px(low - 10), "0.020")]
    assert rows[2]["clientOrderId"] == "batch-2" and rows[0]["positionSide"] == "BOTH"
    assert await open_ids(t) == [rows[0]["orderId"], rows[2]["orderId"]]
    # The futures docs' own V3 demo sends single-quoted literals: read as the same list.
    demo = str([limit_buy(low - 20)])
    assert "'" in demo
    rows = await ok(t.v3("POST", "/fapi/v3/batchOrders", batchOrders=demo))
    assert rows[0]["status"] == "NEW" and rows[0]["price"] == px(low - 20)
    # More than 5, none, or not a list: the whole request is refused.
    assert await error(t.v1("POST", "/fapi/v1/batchOrders",
                            batchOrders=json.dumps([limit_buy(low)] * 6))) == -4082
    assert await error(t.v1("POST", "/fapi/v1/batchOrders", batchOrders="[]")) == -4082
    assert await error(t.v1("POST", "/fapi/v1/batchOrders", batchOrders="{oops")) == -1130
    assert await error(t.v1("POST", "/fapi/v1/batchOrders")) == -1102
    # Malformed beyond parsing: an unhashable key, nesting past the parser, a non-text key.
    for bad in ("[{[]:1}]", "[" * 16_000, "[{1: 'BUY'}]"):
        assert await error(t.v1("POST", "/fapi/v1/batchOrders", batchOrders=bad)) == -1130
    assert len(await open_ids(t)) == 3


async def test_batch_cancel_by_ids_and_client_ids(still, make_trader):
    t = make_trader("USDT=100000")
    low = book(still).engine.best_bid() - 100
    rows = await ok(t.v1("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(
        [limit_buy(low - i, newClientOrderId=f"c{i}") for i in range(3)])))
    a, b, c = (r["orderId"] for r in rows)
    canceled = await ok(t.v1("DELETE", "/fapi/v1/batchOrders", symbol=SYM,
                             orderIdList=json.dumps([a, 999_999_999])))
    assert (canceled[0]["orderId"], canceled[0]["status"]) == (a, "CANCELED")
    assert canceled[1] == {"code": -2011, "msg": "Unknown order sent."}
    canceled = await ok(t.v3("DELETE", "/fapi/v3/batchOrders", symbol=SYM,
                             origClientOrderIdList=json.dumps(["c1", "c0"])))
    assert (canceled[0]["orderId"], canceled[0]["status"]) == (b, "CANCELED")
    assert canceled[1]["code"] == -2011  # c0 is already canceled
    assert await open_ids(t) == [c]
    assert await error(t.v1("DELETE", "/fapi/v1/batchOrders", symbol=SYM)) == -1102
    assert await error(t.v1("DELETE", "/fapi/v1/batchOrders", symbol=SYM,
                            orderIdList=json.dumps(list(range(1, 12))))) == -4032
    assert await error(t.v1("DELETE", "/fapi/v1/batchOrders", symbol=SYM,
                            orderIdList='["x1"]')) == -1130
    for name in ("orderIdList", "origClientOrderIdList"):
        for bad in ("[{[]:1}]", "[" * 16_000):
            assert await error(t.v1("DELETE", "/fapi/v1/batchOrders", symbol=SYM,
                                    **{name: bad})) == -1130
    assert await open_ids(t) == [c]


async def test_countdown_cancels_all_open_orders_of_the_symbol(still, make_trader):
    """The deadline is stored per (account, symbol) and checked by the per-step triggers:
    the clock is stopped, so the test runs that check at chosen moments."""
    t = make_trader("USDT=100000")
    perp = trading(still)
    low = book(still).engine.best_bid() - 100
    eth_low = book(still, "ETHUSDT").engine.best_bid() - 100
    await ok(t.v1("POST", "/fapi/v1/batchOrders",
                  batchOrders=json.dumps([limit_buy(low), limit_buy(low - 1)])))
    eth = await ok(t.v1("POST", "/fapi/v1/order", symbol="ETHUSDT", side="BUY", type="LIMIT",
                        timeInForce="GTC", quantity="0.1", price=f"{Decimal(eth_low) / 100}"))
    before = int(time.time() * 1000)
    body = await ok(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM, countdownTime=300))
    after = int(time.time() * 1000)
    assert body == {"symbol": SYM, "countdownTime": "300"}
    [(key, deadline)] = perp.countdowns.items()
    assert key[1] == SYM and before + 300 <= deadline <= after + 300
    perp.expire_countdowns(deadline - 1)  # a step just before the deadline: nothing yet
    assert len(await open_ids(t)) == 2
    perp.expire_countdowns(deadline)  # the first step at the deadline
    assert await open_ids(t) == [] and perp.countdowns == {}
    assert await open_ids(t, "ETHUSDT") == [eth["orderId"]]  # another symbol: untouched
    orders = await ok(t.v1("GET", "/fapi/v1/allOrders", symbol=SYM))
    assert {o["status"] for o in orders} == {"CANCELED"}

    # A later call replaces the deadline; countdownTime=0 removes it.
    kept = await ok(t.v1("POST", "/fapi/v1/order", **limit_buy(low)))
    await ok(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM, countdownTime=200))
    await ok(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM, countdownTime=60_000))
    [(_, later)] = perp.countdowns.items()
    assert later >= deadline + 60_000 - 300
    body = await ok(t.v3("POST", "/fapi/v3/countdownCancelAll", symbol=SYM, countdownTime=0))
    assert body == {"symbol": SYM, "countdownTime": "0"} and perp.countdowns == {}
    perp.expire_countdowns(later + 1)  # past every deadline ever set: nothing was canceled
    assert await open_ids(t) == [kept["orderId"]]
    assert await error(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM)) == -1102
    assert await error(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol="NOPE",
                            countdownTime=1)) == -1121


async def test_countdown_fires_on_the_running_clock(sim, make_trader):
    """With the clock running, the flow steps fire it (polled, bounded at 5 s)."""
    t = make_trader("USDT=100000")
    low = book(sim).engine.best_bid() - 1000
    await ok(t.v1("POST", "/fapi/v1/order", **limit_buy(low)))
    await ok(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM, countdownTime=100))
    async with asyncio.timeout(5):
        while await open_ids(t):  # noqa: ASYNC110 (the state is the server's, over HTTP)
            await asyncio.sleep(0.05)
    assert trading(sim).countdowns == {}


async def test_countdown_deadline_survives_a_restart(tmp_path):
    path = str(tmp_path / "sim-state.json")
    first = SimExchange(seed=1, data_path=path)
    creds = first.create_account(parse_deposits("USDT=100000"))
    async with SimServer(first) as server:
        t = SignedClient(server.base_url, creds)
        low = first.state("perp", SYM).engine.best_bid() - 3000
        resting = await ok(t.v1("POST", "/fapi/v1/order", **limit_buy(low)))
        await ok(t.v1("POST", "/fapi/v1/countdownCancelAll", symbol=SYM,
                      countdownTime=3_600_000))
        [(key, deadline)] = first.sides["perp"].trading.countdowns.items()
    second = SimExchange(seed=1, data_path=path)  # loads what closing the server saved
    perp = second.sides["perp"].trading
    assert perp.countdowns == {key: deadline}
    assert resting["orderId"] in perp.open[key]
    perp.expire_countdowns(deadline)
    assert perp.open[key] == {} and perp.countdowns == {}
    assert perp.orders[(SYM, resting["orderId"])].status == "CANCELED"
    second.ledger.check()


async def test_order_test_checks_everything_and_places_nothing(still, make_trader):
    t = make_trader("USDT=1000")
    low = book(still).engine.best_bid() - 100
    ids_before = book(still)._next_order_id
    body = await ok(t.v1("POST", "/fapi/v1/order/test", **limit_buy(low)))
    assert (body["orderId"], body["status"], body["price"]) == (0, "NEW", px(low))
    body = await ok(t.v3("POST", "/fapi/v3/order/test", symbol=SYM, side="BUY", type="MARKET",
                         quantity="0.001"))
    assert body["orderId"] == 0 and body["type"] == "MARKET"
    assert await open_ids(t) == [] and await ok(t.v1("GET", "/fapi/v1/allOrders",
                                                     symbol=SYM)) == []
    assert book(still)._next_order_id == ids_before and not trading(still).positions
    # The same rejections as POST /order.
    assert await error(t.v1("POST", "/fapi/v1/order/test", **limit_buy(low, "5"))) == -2019
    assert await error(t.v1("POST", "/fapi/v1/order/test",
                            **limit_buy(low) | {"price": px(low) + "5"})) == -1111
    assert await error(t.v1("POST", "/fapi/v1/order/test", symbol=SYM, side="SELL",
                            type="MARKET", quantity="0.01", reduceOnly="true")) == -2022
    assert await error(t.v1("POST", "/fapi/v1/order/test", **limit_buy(low) | {
        "symbol": "NOPE"})) == -1121
    still.exchange.ledger.check()


async def test_noop_takes_its_nonce(still, make_trader):
    for root in ("/fapi/v3", "/api/v3"):
        t = make_trader("USDT=1000")
        nonce = int(time.time() * 1_000_000) + 1_000_000  # within the 10 s tolerance
        t._nonce = nonce - 1
        assert await ok(t.v3("POST", f"{root}/noop")) == {"code": 200, "msg": "success"}
        t._nonce = nonce - 1  # the order signed with the noop's nonce is refused
        status, body = await t.v3("POST", f"{root}/order", symbol=SYM, side="BUY",
                                  type="LIMIT", timeInForce="GTC", quantity="0.01", price="1000")
        assert (status, body["code"], body["msg"]) == (400, -4225, "Nonce Expired")
    status, body = await t.v1("POST", "/fapi/v1/noop")  # V3 only, as documented
    assert (status, body["code"]) == (404, -1020)


async def test_ccxt_create_orders_and_cancel_orders(still, ccxt_aster):
    ex = ccxt_aster
    low = book(still).engine.best_bid() - 100
    price = float(px(low))
    created = await call(ex.create_orders([
        {"symbol": BTC, "type": "limit", "side": "buy", "amount": 0.01, "price": price},
        {"symbol": BTC, "type": "limit", "side": "buy", "amount": 0.02, "price": price - 1},
    ]))
    assert [(o["status"], o["amount"], o["price"]) for o in created] == [
        ("open", 0.01, price), ("open", 0.02, price - 1)]
    canceled = await call(ex.cancel_orders([o["id"] for o in created], BTC))
    assert [(o["id"], o["status"]) for o in canceled] == [(o["id"], "canceled") for o in created]
    assert await call(ex.fetch_open_orders(BTC)) == []


@pytest.mark.parametrize("kind,method,path,weight", [
    ("perp", "POST", "/fapi/v1/batchOrders", 5),
    ("perp", "DELETE", "/fapi/v3/batchOrders", 1),
    ("perp", "POST", "/fapi/v1/countdownCancelAll", 10),
    ("perp", "POST", "/fapi/v1/order/test", 1),
    ("perp", "POST", "/fapi/v3/noop", 1),
    ("perp", "POST", "/fapi/v1/positionMargin", 1),
    ("perp", "GET", "/fapi/v1/positionMargin/history", 1),
    ("perp", "POST", "/fapi/v1/multiAssetsMargin", 1),
    ("perp", "GET", "/fapi/v3/multiAssetsMargin", 30),
    ("perp", "GET", "/fapi/v1/adlQuantile", 5),
    ("perp", "GET", "/fapi/v1/fundingRate", 1),
    ("perp", "GET", "/fapi/v1/fundingInfo", 1),
    ("perp", "GET", "/fapi/v1/markPriceKlines?limit=99", 1),
    ("perp", "GET", "/fapi/v1/indexPriceKlines?limit=100", 2),
    ("perp", "GET", "/fapi/v1/indexPriceKlines", 5),  # default limit 500
    ("perp", "GET", "/fapi/v1/markPriceKlines?limit=1001", 10),
    ("perp", "GET", "/fapi/v1/klines?limit=100", 2),
    ("perp", "GET", "/fapi/v3/klines", 5),
    ("spot", "GET", "/api/v1/klines?limit=1000", 1),
    ("spot", "POST", "/api/v1/asset/wallet/transfer", 5),
    ("spot", "GET", "/api/v3/transactionHistory", 30),
    ("spot", "POST", "/api/v3/noop", 1),
])
def test_documented_weights(kind, method, path, weight):
    assert request_weight(kind)(make_mocked_request(method, path)) == weight


async def test_batch_answer_carries_the_final_order_counts(frozen_rates):
    """Each order of a batch counts against ORDERS; the answer's X-MBX-ORDER-COUNT-* headers
    are the counts after the last one (the rate clock is frozen: no window rolls over)."""
    sim = frozen_rates
    t = SignedClient(sim.base_url, sim.exchange.create_account(parse_deposits("USDT=100000")))
    low = book(sim).engine.best_bid() - 100
    await ok(t.v1("POST", "/fapi/v1/order", **limit_buy(low)))
    assert t.last_headers["X-MBX-ORDER-COUNT-1M"] == "1"
    orders = [limit_buy(low - i) for i in range(1, 5)]
    rows = await ok(t.v1("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(orders)))
    assert [r["status"] for r in rows] == ["NEW"] * 4
    counts = (t.last_headers["X-MBX-ORDER-COUNT-1M"], t.last_headers["X-MBX-ORDER-COUNT-10S"])
    assert counts == ("5", "5")
    await ok(t.v1("POST", "/fapi/v1/order", **limit_buy(low - 9)))
    assert t.last_headers["X-MBX-ORDER-COUNT-1M"] == "6"
