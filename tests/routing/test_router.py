"""The smart order router on three simulated venues over loopback (``SIM``, ``SIM2``, ``SIM3``,
each its own server, clocks stopped once the gateway's books are in sync): dry-run plans
against an independent water-fill of each venue's own depth, executed orders against each
venue's fills and balances, balance caps, and the residual re-route."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from astra.core import InsufficientLiquidity
from astra.core._trading import SmartOrderRequest
from astra.sim.flow import STEP_MS

SMART = "SMART-SPOT-BTC-USDT"
D = Decimal


def _d(x: float) -> Decimal:
    return Decimal(str(x))


async def _rest_depth(base_url: str) -> tuple[list, list]:
    """A venue's own depth endpoint (not the gateway's)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.get(f"{base_url}/api/v3/depth",
                            params={"symbol": "BTCUSDT", "limit": 1000}) as resp:
            body = await resp.json()
    return ([(_d(float(p)), _d(float(q))) for p, q in body["bids"]],
            [(_d(float(p)), _d(float(q))) for p, q in body["asks"]])


def _water_fill(books: dict[str, list], fees: dict[str, Decimal], qty: Decimal,
                bound: Decimal, order: list[str]) -> dict[str, dict]:
    """An independent BUY water-fill: every level inside ``bound`` from every venue, cheapest
    fee-adjusted first (ties: venue order), taken whole until ``qty`` is met. Lots are 1e-5
    and every venue quantity has 5 decimals, so no lot rounding is needed here."""
    levels = sorted(((p * (1 + fees[v]), order.index(v), p, q, v)
                     for v, asks in books.items() for p, q in asks if p <= bound))
    out: dict[str, dict] = {}
    left = qty
    for _, _, price, q, venue in levels:
        if left <= 0:
            break
        take = min(q, left)
        leg = out.setdefault(venue, {"quantity": D(0), "notional": D(0), "limit": price})
        leg["quantity"] += take
        leg["notional"] += take * price
        leg["limit"] = max(leg["limit"], price)
        left -= take
    return out


async def _buy_at_the_venue(sim, account, *order) -> None:
    """``create_order("BTC/USDT", *order)`` as another account, through the venue's own API."""
    client = ccxt_async.aster({"privateKey": account.signerPrivateKey,
                               "enableRateLimit": False, "options": {"builderFee": False}})
    api = client.urls["api"]
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    try:
        await client.load_markets()
        await client.create_order("BTC/USDT", *order)
    finally:
        await client.close()


async def _fund_and_freeze(desk, deposits: dict[str, str] | None = None):
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, (deposits or {}).get(code, "USDT=500000,BTC=5"))
    gw = await desk.start()
    await desk.freeze()
    return gw


async def test_dry_run_equals_an_independent_water_fill(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    async with asyncio.timeout(30):
        depths = {c: await _rest_depth(s.base_url) for c, s in desk.sims.items()}
        books = await gw.engine.member_books(SMART)
        fees = {m.venue: _d(m.taker_fee) for m in books.members}
        assert all(f > 0 for f in fees.values()) and len(set(fees.values())) == 3
        plan = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=2.5, max_slippage_bps=50,
            dry_run=True))
    best_bid = max(d[0][0][0] for d in depths.values())
    best_ask = min(d[1][0][0] for d in depths.values())
    mid = (best_bid + best_ask) / 2
    bound = mid * (1 + D(50) / 10000)
    expected = _water_fill({c: d[1] for c, d in depths.items()}, fees, D("2.5"), bound,
                           ["SIM", "SIM2", "SIM3"])
    assert plan.arrival_mid == float(mid) and plan.price_bound == float(bound)
    assert {leg.venue for leg in plan.legs} == set(expected)
    for leg in plan.legs:
        want = expected[leg.venue]
        assert _d(leg.quantity) == want["quantity"]
        assert _d(leg.limit_price) == want["limit"]
        assert leg.notional == pytest.approx(float(want["notional"]), rel=1e-12)
        assert leg.fee == pytest.approx(float(want["notional"] * fees[leg.venue]), rel=1e-12)
    total = sum(w["quantity"] for w in expected.values())
    notional = sum(w["notional"] for w in expected.values())
    assert _d(plan.quantity) == total == D("2.5") and plan.unfilled == 0
    assert plan.average_price == pytest.approx(float(notional / total), rel=1e-12)
    assert plan.slippage_bps == pytest.approx(float((notional / total - mid) / mid * 10000),
                                              rel=1e-9)
    # The best single venue is the one that alone fills it cheapest, after fees.
    singles = {c: _water_fill({c: depths[c][1]}, fees, D("2.5"), bound, [c]) for c in depths}
    nets = {c: (s[c]["notional"] * (1 + fees[c])) / s[c]["quantity"]
            for c, s in singles.items() if s and s[c]["quantity"] == D("2.5")}
    best = min(nets, key=nets.get)
    assert plan.best_single_venue == best
    assert plan.best_single_net_price == pytest.approx(float(nets[best]), rel=1e-12)
    assert plan.vs_best_single_bps >= 0
    # Nothing was sent, nothing journaled.
    for code in desk.sims:
        assert desk.sims[code].exchange.sides["spot"].trading.by_account == {}
    assert gw.router.journal.live(desk.key_id) == []


async def _venue_view(gw, desk, code):
    creds = desk.creds_for(code)
    balances = {b.asset: b.free for b in await gw.trading.balances(desk.key_id, creds, code)}
    fills = await gw.trading.fills(desk.key_id, creds, f"{code}-SPOT-BTC-USDT", None)
    return balances, fills


async def test_executed_fills_sum_to_the_parent_and_move_each_venues_balances(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    async with asyncio.timeout(40):
        before = {c: (await _venue_view(gw, desk, c))[0] for c in desk.sims}
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=3.0, client_order_id="exec1"))
        after = {c: await _venue_view(gw, desk, c) for c in desk.sims}
    assert order.status == "FILLED" and order.order_id.startswith("sor-")
    assert len({c.venue for c in order.children}) >= 2  # really split
    child_sum = sum(_d(c.filled_quantity) for c in order.children)
    assert child_sum == _d(order.filled_quantity) == D("3.0")
    assert [f.quantity for f in order.report.fills] and sum(
        _d(f.quantity) for f in order.report.fills) == D("3.0")
    for code in desk.sims:
        balances, fills = after[code]
        mine = [c for c in order.children if c.venue == code]
        ids = {c.order_id for c in mine}
        fills = [f for f in fills if f.order_id in ids]
        assert sum(_d(f.quantity) for f in fills) == sum(_d(c.filled_quantity) for c in mine)
        base_fee = sum(f.fee or 0 for f in fills if f.fee_asset == "BTC")
        quote_fee = sum(f.fee or 0 for f in fills if f.fee_asset == "USDT")
        bought = sum(f.quantity for f in fills)
        paid = sum(f.quantity * f.price for f in fills)
        assert balances["BTC"] - before[code]["BTC"] == pytest.approx(bought - base_fee,
                                                                      abs=1e-8)
        assert before[code]["USDT"] - balances["USDT"] == pytest.approx(paid + quote_fee,
                                                                        abs=1e-6)
        for c in mine:  # each child's limit held: no fill above it
            assert all(f.price <= c.price for f in fills if f.order_id == c.order_id)
    # Each venue saw each child's client order id exactly once.
    for code, sim in desk.sims.items():
        orders = sim.exchange.sides["spot"].trading.by_account.get(
            (desk.account_id(code), "BTCUSDT"), [])
        assert sorted(o.client_id for o in orders) == sorted(
            c.client_order_id for c in order.children if c.venue == code)
    assert all(c.client_order_id.startswith("exec1-1") for c in order.children)


async def test_a_thinly_funded_venue_is_capped_by_its_balance(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk, {"SIM3": "USDT=3000"})  # SIM3 is the cheapest taker
    async with asyncio.timeout(40):
        plan = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=2.0, dry_run=True))
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=2.0))
        balances, _ = await _venue_view(gw, desk, "SIM3")
    assert {m.venue: m.capacity for m in plan.members}["SIM3"] == 3000.0
    sim3 = [c for c in order.children if c.venue == "SIM3"]
    assert sim3, "the cheapest venue still gets what its balance pays for"
    fee = {m.venue: m.taker_fee for m in plan.members}["SIM3"]
    for c in sim3:  # never more than the capacity it was capped by, fees included
        assert c.quantity * c.price * (1 + fee) <= 3000.0
    assert balances["USDT"] >= 0 and order.status == "FILLED"
    assert _d(order.filled_quantity) == D("2.0")


async def test_the_residual_is_rerouted_when_the_book_moves_before_send(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    rival = desk.sims["SIM3"].exchange.create_account({"USDT": 10**6 * 10**8})
    hit: dict = {}

    async def take_liquidity(round_: int, plan) -> None:
        """Between planning and sending round 1: another account sweeps most of what the
        plan meant to take on its first venue, through that venue's own API."""
        if round_ != 1:
            return
        leg = plan.legs[0]
        hit["venue"], hit["quantity"] = leg.venue, leg.quantity
        sim = desk.sims[leg.venue]
        creds = rival if leg.venue == "SIM3" else sim.exchange.create_account(
            {"USDT": 10**6 * 10**8})
        await _buy_at_the_venue(sim, creds, "market", "buy", float(leg.quantity) * 0.8)
        await desk.publish()  # the venue's diff reaches the gateway's book before round 2

    gw.router.before_send = take_liquidity
    async with asyncio.timeout(60):
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=1.0, max_slippage_bps=200))
    first = [c for c in order.children if c.round == 1 and c.venue == hit["venue"]]
    assert first and first[0].filled_quantity < first[0].quantity  # the book had moved
    later = [c for c in order.children if c.round > 1]
    assert later, "the residual went out in another round"
    assert sum(_d(c.filled_quantity) for c in order.children) == _d(order.filled_quantity)
    assert order.status == "FILLED" and _d(order.filled_quantity) == D("1.0")
    assert order.report.rounds == max(c.round for c in order.children) >= 2


class _FlushOnWait:
    """The router's market-data engine, except that when the router waits for a venue's next
    book update, that venue's held diffs are published then (and only then)."""

    def __init__(self, engine, desk) -> None:
        self.engine, self.desk, self.waited = engine, desk, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def member_updates(self, symbol, venues, wait):
        self.waited.append(list(venues))
        waiting = asyncio.create_task(self.engine.member_updates(symbol, venues, wait))
        await asyncio.sleep(0)  # the wait has noted each book's update id
        for code in venues:  # a whole second of steps: every diff cadence's period ends
            for side in self.desk.sims[code].exchange.sides.values():
                for _ in range(1000 // STEP_MS):
                    side.feeds.tick()
        return await waiting


async def test_a_leg_that_found_nothing_waits_for_its_venues_next_update_before_rerouting(
        sor_desk):
    """A venue's book in the gateway is behind the venue (a venue publishes every 100 ms):
    the leg's level is gone when the child arrives, and it fills nothing. The next round must
    not plan on that same stale book: it waits for the venue's next update, then fills."""
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    for task in desk.feeds:  # from now on a venue's diffs go out only when the test says
        task.cancel()
    gw.router.engine = flushing = _FlushOnWait(gw.engine, desk)
    swept: dict = {}

    async def sweep_the_leg(round_: int, plan) -> None:
        """Before round 1 goes out: another account takes every ask up to the leg's limit,
        unpublished, so the child finds nothing and the gateway's book still shows it."""
        if round_ != 1:
            return
        (leg,) = plan.legs
        sim = desk.sims[leg.venue]
        _, asks = desk.venue_depth(leg.venue, "spot", "BTCUSDT")
        quantity = sum(_d(q) for p, q in asks if _d(p) <= leg.limit_price)
        rival = sim.exchange.create_account({"USDT": 10**7 * 10**8})
        await _buy_at_the_venue(sim, rival, "limit", "buy", float(quantity),
                                float(leg.limit_price), {"timeInForce": "IOC"})
        swept["limit"] = leg.limit_price
        _, asks = desk.venue_depth(leg.venue, "spot", "BTCUSDT")
        assert asks[0][0] > leg.limit_price  # the venue has nothing left at the leg's price

    gw.router.before_send = sweep_the_leg
    async with asyncio.timeout(60):
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=0.05, max_slippage_bps=200,
            venues=["SIM2"]))
    first = [c for c in order.children if c.round == 1]
    assert [c.filled_quantity for c in first] == [0.0]
    assert flushing.waited[0] == ["SIM2"]  # after round 1, for the venue it sent to
    second = [c for c in order.children if c.round == 2]
    assert second and all(_d(c.price) > swept["limit"] for c in second)  # the fresh book
    assert order.status == "FILLED" and _d(order.filled_quantity) == D("0.05")


async def test_fok_that_the_books_cannot_cover_is_refused_and_nothing_is_sent(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    books = await gw.engine.member_books(SMART)
    best_ask = min(m.asks[0][0] for m in books.members)
    # More than every member offers at that price (not a fixed 2.0: the venues' best level
    # may hold that much).
    there = sum((_d(q) for m in books.members for p, q in m.asks if p <= best_ask), D(0))
    with pytest.raises(InsufficientLiquidity) as err:
        await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="LIMIT", quantity=float(there + D("0.5")),
            price=best_ask, time_in_force="FOK", client_order_id="fok1"))
    assert err.value.status == 422 and "FOK" in err.value.message
    assert err.value.parameter == "price"
    for sim in desk.sims.values():
        assert sim.exchange.sides["spot"].trading.by_account == {}
    assert gw.router.journal.by_client_id(desk.key_id, "fok1") is None


async def test_a_perpetual_order_is_capped_by_margin_and_opens_positions(sor_desk):
    desk = sor_desk
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000")
    gw = await desk.start()
    await desk.freeze("SMART-PERP-BTC-USDT", "perp")
    perp = "SMART-PERP-BTC-USDT"
    async with asyncio.timeout(40):
        plan = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=perp, side="SELL", type="MARKET", quantity=1.0, dry_run=True))
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=perp, side="SELL", type="MARKET", quantity=1.0))
        positions = {c: await gw.trading.positions(desk.key_id, desk.creds_for(c), c)
                     for c in desk.sims}
    assert all(m.capacity_asset == "USDT" and m.capacity == 500000.0 for m in plan.members)
    assert order.status == "FILLED" and _d(order.filled_quantity) == D("1.0")
    for code in desk.sims:
        sold = sum(_d(c.filled_quantity) for c in order.children if c.venue == code)
        held = [p for p in positions[code] if p.market == f"{code}-PERP-BTC-USDT"]
        if sold:
            assert len(held) == 1 and held[0].side == "SHORT" and _d(held[0].quantity) == sold
        else:
            assert held == []


async def test_an_ioc_limit_takes_what_is_inside_its_price_and_the_rest_expires(sor_desk):
    desk = sor_desk
    gw = await _fund_and_freeze(desk)
    books = await gw.engine.member_books(SMART)
    price = sorted(m.asks[1][0] for m in books.members)[0]  # a second-best ask somewhere
    inside = sum((_d(q) for m in books.members for p, q in m.asks if p <= price), D(0))
    async with asyncio.timeout(40):
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="LIMIT", price=price,
            quantity=float(inside + D(1)), client_order_id="ioc-part"))
    assert order.status == "EXPIRED" and _d(order.filled_quantity) == inside
    assert all(c.price <= price for c in order.children)
    parent = gw.router.journal.by_client_id(desk.key_id, "ioc-part")
    assert parent.state == "DONE" and parent.status == "EXPIRED"
    assert gw.router.journal.live(desk.key_id) == []
