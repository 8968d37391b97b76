"""``POST/GET/DELETE /orders`` on ``SMART-`` markets through the gateway's HTTP API, on three
simulated venues over loopback: dry run then live, the parent with its children and report,
idempotency under concurrency, GTC resting and canceling, and every refusal a 4xx with
nothing sent."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest

SMART = "SMART-SPOT-BTC-USDT"


async def call(http, method, path, **kw):
    async with asyncio.timeout(30), http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


def _session(desk) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(desk.gw.base_url,
                                 headers={"x-astra-api-key": f"Bearer {desk.token}"})


async def _ready(desk, deposits: dict[str, str] | None = None) -> None:
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, (deposits or {}).get(code, "USDT=500000,BTC=5"))
    await desk.start()
    await desk.freeze()


def _resting_buy_price(books, below: int) -> float:
    """A BUY price ``below`` under every member's bids and asks: the venues are independent
    books, and one venue's best ask may lie under another's best bid (a routed buy at such a
    price would take it)."""
    lowest = min(min(m.bids[0][0], m.asks[0][0]) for m in books.members)
    return float(int(lowest) - below)


def _venue_orders(desk) -> dict[str, list]:
    return {code: list(sim.exchange.sides["spot"].trading.by_account.get(
        (desk.account_id(code), "BTCUSDT"), [])) for code, sim in desk.sims.items()}


async def test_dry_run_then_live_then_read_back(sor_desk):
    desk = sor_desk
    await _ready(desk)
    async with _session(desk) as http:
        body = {"market": SMART, "side": "SELL", "type": "MARKET", "quantity": 2.0,
                "maxSlippageBps": 30}
        status, plan = await call(http, "POST", "/orders", json={**body, "dryRun": True})
        assert status == 200 and plan["dryRun"] is True
        assert sum(Decimal(str(leg["quantity"])) for leg in plan["legs"]) == Decimal("2.0")
        assert {m["venue"] for m in plan["members"]} == {"SIM", "SIM2", "SIM3"}
        assert plan["bestSingleVenue"] in ("SIM", "SIM2", "SIM3")
        assert all(v == [] for v in _venue_orders(desk).values())  # the dry run sent nothing
        status, order = await call(http, "POST", "/orders",
                                   json={**body, "clientOrderId": "live-1"})
        assert status == 200 and order["status"] == "FILLED", order
        assert order["orderId"].startswith("sor-") and order["clientOrderId"] == "live-1"
        children = order["children"]
        assert sum(Decimal(str(c["filledQuantity"])) for c in children) == Decimal("2.0")
        assert all(c["clientOrderId"].startswith("live-1-1") for c in children)
        assert all(c["latencyMs"] > 0 and c["timeInForce"] == "IOC" for c in children)
        report = order["report"]
        assert report["filledQuantity"] == 2.0 and report["arrivalMid"] == plan["arrivalMid"]
        assert {f["venue"] for f in report["fills"]} == {c["venue"] for c in children}
        assert report["fees"] == pytest.approx(sum(c["fee"] for c in children), rel=1e-12)
        status, again = await call(http, "GET", f"/orders/{order['orderId']}",
                                   params={"market": SMART})
        assert status == 200 and again["children"] == children
        assert again["report"] == report
        status, opened = await call(http, "GET", "/orders", params={"market": SMART})
        assert status == 200 and opened == []  # an IOC parent is done
        status, err = await call(http, "GET", "/orders/sor-nope", params={"market": SMART})
        assert status == 404 and err["parameter"] == "orderId"
    venue = _venue_orders(desk)
    assert sorted(o.client_id for v in venue.values() for o in v) == sorted(
        c["clientOrderId"] for c in children)


async def test_the_same_client_order_id_twice_concurrently_gives_one_parent(sor_desk):
    desk = sor_desk
    await _ready(desk)
    body = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 1.2,
            "clientOrderId": "twice"}
    async with _session(desk) as http:
        (s1, a), (s2, b) = await asyncio.gather(call(http, "POST", "/orders", json=body),
                                                call(http, "POST", "/orders", json=body))
        s3, c = await call(http, "POST", "/orders", json=body)  # and a later retry
        s4, other = await call(http, "POST", "/orders", json={**body, "quantity": 1.3})
    assert s1 == s2 == s3 == 200 and a["orderId"] == b["orderId"] == c["orderId"]
    assert a["children"] == b["children"] == c["children"]
    assert s4 == 409 and other["parameter"] == "clientOrderId"
    sent = [o.client_id for v in _venue_orders(desk).values() for o in v]
    assert sorted(sent) == sorted(ch["clientOrderId"] for ch in a["children"])
    assert len(sent) == len(set(sent))


async def test_gtc_rests_on_the_cheapest_maker_venue_and_delete_cancels_it(sor_desk):
    desk = sor_desk
    await _ready(desk)
    books = await desk.gw.engine.member_books(SMART)
    price = _resting_buy_price(books, 50)  # nothing to take, all of it rests
    makers = {m.venue: m.maker_fee for m in books.members}
    cheapest = min(makers, key=lambda v: (makers[v], list(makers).index(v)))
    async with _session(desk) as http:
        status, order = await call(http, "POST", "/orders", json={
            "market": SMART, "side": "BUY", "type": "LIMIT", "quantity": 0.5, "price": price,
            "timeInForce": "GTC", "clientOrderId": "rest-1"})
        assert status == 200 and order["status"] == "NEW", order
        resting = [c for c in order["children"] if c["timeInForce"] == "GTC"]
        assert len(resting) == 1 and resting[0]["venue"] == cheapest
        assert resting[0]["status"] == "NEW" and resting[0]["quantity"] == 0.5
        live = _venue_orders(desk)[cheapest]
        assert [o.client_id for o in live] == [resting[0]["clientOrderId"]]
        status, opened = await call(http, "GET", "/orders", params={"market": SMART})
        assert status == 200 and [o["orderId"] for o in opened] == [order["orderId"]]
        status, canceled = await call(http, "DELETE", "/orders", params={
            "market": SMART, "orderId": order["orderId"]})
        assert status == 200 and canceled["status"] == "CANCELED", canceled
        assert canceled["children"][-1]["status"] == "CANCELED", canceled
        status, opened = await call(http, "GET", "/orders", params={"market": SMART})
        assert status == 200 and opened == []
    sim_order = _venue_orders(desk)[cheapest][0]
    assert str(sim_order.status).upper().endswith("CANCELED")


async def test_delete_by_client_order_id_and_every_open_parent(sor_desk):
    desk = sor_desk
    await _ready(desk)
    books = await desk.gw.engine.member_books(SMART)
    price = _resting_buy_price(books, 80)
    async with _session(desk) as http:
        ids = []
        for cid in ("rest-a", "rest-b", "rest-c"):
            status, order = await call(http, "POST", "/orders", json={
                "market": SMART, "side": "BUY", "type": "LIMIT", "quantity": 0.1,
                "price": price, "timeInForce": "GTC", "clientOrderId": cid})
            assert status == 200 and order["status"] == "NEW"
            ids.append(order["orderId"])
        status, one = await call(http, "DELETE", "/orders", params={
            "market": SMART, "clientOrderId": "rest-a"})
        assert status == 200 and one["orderId"] == ids[0] and one["status"] == "CANCELED"
        status, rest = await call(http, "DELETE", "/orders", params={"market": SMART})
        assert status == 200 and rest == {"market": SMART, "canceled": 2}
        status, opened = await call(http, "GET", "/orders", params={"market": SMART})
        assert status == 200 and opened == []
        status, err = await call(http, "DELETE", "/orders", params={
            "market": SMART, "orderId": "sor-unknown"})
        assert status == 404 and err["parameter"] == "orderId"
    live = [o for v in _venue_orders(desk).values() for o in v]
    assert len(live) == 3 and all(str(o.status).upper().endswith("CANCELED") for o in live)


@pytest.mark.parametrize(("body", "status", "code", "parameter"), [
    ({"market": "SMART-SPOT-NOPE-USDT"}, 404, "MARKET_NOT_FOUND", "market"),
    ({"venues": ["SIM", "BINANCE"]}, 400, "INVALID_PARAMETER", "venues"),
    ({"venues": []}, 400, "INVALID_PARAMETER", "venues"),
    ({"dryRun": "yes"}, 400, "INVALID_PARAMETER", "dryRun"),
    ({"maxSlippageBps": 0}, 422, "UNPROCESSABLE", "maxSlippageBps"),
    ({"maxSlippageBps": 20000}, 422, "UNPROCESSABLE", "maxSlippageBps"),
    ({"quantity": -1}, 422, "UNPROCESSABLE", "quantity"),
    ({"quantity": 1e300}, 422, "UNPROCESSABLE", "quantity"),
    ({"quantity": 0.00001}, 422, "UNPROCESSABLE", "quantity"),  # below every min notional
    ({"quantity": 2.0}, 422, "INSUFFICIENT_BALANCE", "quantity"),
    ({"type": "LIMIT", "price": 1000.0}, 422, "INSUFFICIENT_LIQUIDITY", "price"),
    ({"type": "LIMIT"}, 422, "UNPROCESSABLE", "price"),
    ({"type": "STOP_MARKET", "stopPrice": 1.0}, 422, "UNPROCESSABLE", "type"),
    ({"timeInForce": "GTC"}, 422, "UNPROCESSABLE", "timeInForce"),
    # Nothing to take, and no venue's tick holds the price: it could only expire.
    ({"type": "LIMIT", "price": 1e-300, "timeInForce": "GTC"}, 422, "UNPROCESSABLE", "price"),
    ({"clientOrderId": "x" * 29}, 400, "INVALID_PARAMETER", "clientOrderId"),
    ({"clientOrderId": "has.dot"}, 400, "INVALID_PARAMETER", "clientOrderId"),
    ({"bogus": 1}, 400, "INVALID_PARAMETER", "bogus"),
])
async def test_bad_and_impossible_orders_are_refused_and_nothing_is_sent(
        sor_desk, body, status, code, parameter):
    desk = sor_desk
    await _ready(desk, {c: "USDT=20000" for c in ("SIM", "SIM2", "SIM3")})
    order = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.1, **body}
    async with _session(desk) as http:
        got, err = await call(http, "POST", "/orders", json=order)
    assert (got, err.get("code"), err.get("parameter")) == (status, code, parameter), err
    if code == "INSUFFICIENT_BALANCE":  # names each venue's capacity
        assert all(f"{v} 20000 USDT free" in err["message"] for v in ("SIM", "SIM2", "SIM3"))
    assert all(v == [] for v in _venue_orders(desk).values())
    assert desk.gw.router.journal.live(desk.key_id) == []


async def test_no_member_with_credentials_and_strict_bodies_elsewhere(sor_desk):
    desk = sor_desk
    await _ready(desk)
    stranger = desk.key_store.create("no-creds").token
    async with aiohttp.ClientSession(desk.gw.base_url, headers={
            "x-astra-api-key": f"Bearer {stranger}"}) as http:
        status, err = await call(http, "POST", "/orders", json={
            "market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.1})
        assert status == 401 and err["code"] == "EXCHANGE_CREDENTIALS_REQUIRED"
        assert "SIM, SIM2, SIM3" in err["message"]
    async with _session(desk) as http:
        # A single-venue body keeps today's strict decoding: the router's fields are unknown.
        status, err = await call(http, "POST", "/orders", json={
            "market": "SIM-SPOT-BTC-USDT", "side": "BUY", "type": "MARKET", "quantity": 0.1,
            "dryRun": True})
        assert status == 400 and err["parameter"] == "dryRun"
    assert all(v == [] for v in _venue_orders(desk).values())


async def test_delete_all_while_rounds_run_stops_them_and_nothing_rests_after(sor_desk):
    """DELETE /orders (every open parent) arriving while a GTC parent's first round is in
    flight: no further round and no rest go out after it; the parent ends CANCELED with the
    first round's fills, and the answer counts it."""
    desk = sor_desk
    await _ready(desk)
    books = await desk.gw.engine.member_books(SMART)
    price = min(m.asks[0][0] for m in books.members)  # takes the best level, rests the rest
    router = desk.gw.router
    async with _session(desk) as http:
        deleting: list[asyncio.Task] = []

        async def cancel_midway(round_: int, plan) -> None:
            if round_ != 1:
                return
            deleting.append(asyncio.create_task(call(http, "DELETE", "/orders",
                                                     params={"market": SMART})))

            async def stopping() -> None:
                while True:
                    if getattr(router, "_stopping", ()):
                        return
                    await asyncio.sleep(0.01)

            seen = asyncio.create_task(stopping())
            await asyncio.wait([deleting[0], seen], return_when=asyncio.FIRST_COMPLETED)
            seen.cancel()

        router.before_send = cancel_midway
        status, order = await call(http, "POST", "/orders", json={
            "market": SMART, "side": "BUY", "type": "LIMIT", "quantity": 3.0, "price": price,
            "timeInForce": "GTC", "clientOrderId": "panic-1"})
        async with asyncio.timeout(30):
            del_status, answer = await deleting[0]
    assert (del_status, answer) == (200, {"market": SMART, "canceled": 1}), answer
    assert status == 200 and order["status"] == "CANCELED", order
    assert all(c["timeInForce"] == "IOC" and c["round"] == 1 for c in order["children"])
    venue = [o for v in _venue_orders(desk).values() for o in v]
    assert sorted(o.client_id for o in venue) == sorted(
        c["clientOrderId"] for c in order["children"])
    assert not [o for o in venue if o.status in ("NEW", "PARTIALLY_FILLED")]  # none rests
    filled = sum(Decimal(o.executed) / 10 ** o.state.market.qty_dp for o in venue)
    assert 0 < filled == Decimal(str(order["filledQuantity"])) < Decimal("3.0")
    parent = router.journal.by_client_id(desk.key_id, "panic-1")
    assert (parent.state, parent.status, parent.canceled) == ("DONE", "CANCELED", True)
