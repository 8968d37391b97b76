"""``route.capacities`` and ``snapshot`` with capacities read ahead (the router reads round N+1's
balances while the books catch up with round N's fills), on three simulated venues over
loopback: the read-ahead equals each venue's balance less its fills and fees, and a snapshot
plans on what it is given, reading only the members it is not given."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from astra.core import VenueUnavailable
from astra.core._trading import SmartOrderRequest
from astra.routing.route import capacities, check_route, snapshot

SMART = "SMART-SPOT-BTC-USDT"
D = Decimal


async def test_read_ahead_capacities_show_the_fills_and_snapshot_plans_on_them(sor_desk):
    desk = sor_desk
    for code in ("SIM", "SIM2", "SIM3"):
        desk.fund(code, "USDT=500000,BTC=5")
    gw = await desk.start()
    await desk.freeze()
    codes = ["SIM", "SIM2", "SIM3"]
    async with asyncio.timeout(40):
        body = SmartOrderRequest(market=SMART, side="BUY", type="MARKET", quantity=2.0)
        route = await check_route(gw.engine, desk.key_id, desk.creds_for, body)
        order = await gw.router.place(desk.key_id, desk.creds_for, SmartOrderRequest(
            market=SMART, side="BUY", type="MARKET", quantity=2.0, client_order_id="cap1"))
        caps = await capacities(gw.trading, route, codes)
        fills = {c: await gw.trading.fills(desk.key_id, desk.creds_for(c),
                                           f"{c}-SPOT-BTC-USDT", None) for c in codes}
        await desk.publish()  # the gateway's books show the order's fills
        given = {"SIM": ("quote", "USDT", D("1000")),
                 "SIM2": VenueUnavailable("SIM2", "read failed")}
        snap = await snapshot(gw.engine, gw.trading, route, D("2"), read=given)
    assert order.status == "FILLED" and len({c.venue for c in order.children}) >= 2
    for code in codes:  # independently: the deposit less what was paid, fees in
        paid = sum(f.quantity * f.price + (f.fee or 0) * (f.fee_asset == "USDT")
                   for f in fills[code])
        kind, asset, free = caps[code]
        assert (kind, asset) == ("quote", "USDT")
        assert float(free) == pytest.approx(500000 - paid, abs=1e-6)
    assert any(fills[c] for c in codes)
    members = {m.venue: m for m in snap.members}
    assert (members["SIM"].capacity, route.capacities["SIM"]) == (1000.0, ("quote", D("1000")))
    assert members["SIM2"].capacity is None
    assert members["SIM2"].reason == "balance unavailable: read failed"
    assert "SIM2" not in route.capacities and "SIM2" not in {leg.venue for leg in snap.plan.legs}
    assert members["SIM3"].capacity == float(caps["SIM3"][2])  # not given: read here
    fee = D(str(members["SIM"].taker_fee))
    for leg in snap.plan.legs:
        if leg.venue == "SIM":  # capped by the capacity it was given
            assert leg.quantity * leg.limit_price * (1 + fee) <= D("1000")
