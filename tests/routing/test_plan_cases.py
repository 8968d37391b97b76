"""The router's plan on small books worked out by hand: dust and minimums, capacities
(quote, base, margin), bounds, crossed books, tie-breaking, the single-venue guard, and
bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest

from astra.routing import VenueInput, consolidated_mid, plan_order

D = Decimal


def venue(name, levels, fee="0", tick="0.01", lot="0.01", **kw):
    return VenueInput(
        venue=name,
        market=f"{name}-SPOT-BTC-USDT",
        levels=[(D(p), D(q)) for p, q in levels],
        taker_fee=D(fee),
        tick=D(tick),
        lot=D(lot),
        **{k: (D(v) if isinstance(v, str | int) and k != "capacity_kind" else v)
           for k, v in kw.items()},
    )


def legs(plan):
    return [(leg.venue, leg.quantity, leg.limit_price) for leg in plan.legs]


def test_fee_adjusted_order_not_raw_price():
    # A is cheaper on the screen, dearer after its 10 bp fee: 100 * 1.001 = 100.1 > 100.05.
    a = venue("A", [("100", "1")], fee="0.001")
    b = venue("B", [("100.05", "1")], fee="0")
    plan = plan_order("BUY", D("1.5"), [a, b])
    assert legs(plan) == [("B", D("1"), D("100.05")), ("A", D("0.5"), D("100"))]
    assert plan.fees == D("0.05")  # 0.5 * 100 * 0.001
    assert plan.average_price == D("150.05") / D("1.5")
    assert plan.net_average_price == D("150.10") / D("1.5")
    assert plan.unfilled == 0 and plan.limited_by is None


def test_ties_go_to_the_venue_listed_first():
    a, b = venue("A", [("100", "1")]), venue("B", [("100", "1")])
    assert legs(plan_order("BUY", D("1"), [a, b])) == [("A", D("1"), D("100"))]
    assert legs(plan_order("BUY", D("1"), [b, a])) == [("B", D("1"), D("100"))]
    assert legs(plan_order("BUY", D("1.5"), [b, a])) == [
        ("B", D("1"), D("100")),
        ("A", D("0.5"), D("100")),
    ]


def test_sell_walks_bids_down():
    a = venue("A", [("101", "0.3"), ("100", "1")])
    b = venue("B", [("100.5", "0.5"), ("99", "5")])
    plan = plan_order("SELL", D("1.5"), [a, b])
    # 101 (A 0.3), 100.5 (B 0.5), 100 (A 0.7 of 1)
    assert legs(plan) == [("A", D("1.0"), D("100")), ("B", D("0.5"), D("100.5"))]
    assert plan.legs[0].notional == D("0.3") * 101 + D("0.7") * 100
    assert plan.average_price == (D("30.3") + D("70") + D("50.25")) / D("1.5")


def test_min_notional_forces_a_slice_elsewhere():
    # A is best but takes only what is left after B... no: A is best, B second. The order
    # leaves 0.04 for B, whose minimum notional (10 USDT) 0.04 * 100.1 does not meet; B is
    # left out and the 0.04 goes to C, the next best with no minimum.
    a = venue("A", [("100", "1")])
    b = venue("B", [("100.1", "5")], min_notional="10")
    c = venue("C", [("100.3", "5")])
    plan = plan_order("BUY", D("1.04"), [a, b, c])
    assert legs(plan) == [("A", D("1"), D("100")), ("C", D("0.04"), D("100.3"))]
    # With a bigger order B's slice meets its minimum and C is not needed.
    plan = plan_order("BUY", D("1.2"), [a, b, c])
    assert legs(plan) == [("A", D("1"), D("100")), ("B", D("0.2"), D("100.1"))]


def test_min_quantity_drops_the_best_ranked_short_venue_first():
    # A (best) has only 0.05 but a minimum of 0.1: it is left out first; B then takes the
    # whole order, which meets B's minimum of 1 (0.96 would not have).
    a = venue("A", [("99", "0.05")], min_quantity="0.1")
    b = venue("B", [("100", "5")], min_quantity="1")
    c = venue("C", [("105", "5")])
    plan = plan_order("BUY", D("1"), [a, b, c])
    assert legs(plan) == [("B", D("1"), D("100"))]


def test_coarse_lot_dust_goes_to_a_finer_lot():
    a = venue("A", [("100", "5")], lot="1")
    b = venue("B", [("100.2", "5")], lot="0.001")
    plan = plan_order("BUY", D("2.345"), [a, b])
    assert legs(plan) == [("A", D("2"), D("100")), ("B", D("0.345"), D("100.2"))]
    # No venue can take a dust below every lot: it stays unfilled, for "minimums".
    plan = plan_order("BUY", D("2.0005"), [a, b])
    assert legs(plan) == [("A", D("2"), D("100"))]
    assert plan.unfilled == D("0.0005") and plan.limited_by == "minimums"


def test_a_lot_spanning_two_levels_ranks_at_its_average_price():
    # 0.015 at 100 then 0.01 at 100.5 with a 0.01 lot: A's second lot is 0.005 at 100 and
    # 0.005 at 100.5, 100.25 on average (its limit 100.5): better than B's 100.4...
    a = venue("A", [("100", "0.015"), ("100.5", "0.01")], lot="0.01")
    b = venue("B", [("100.4", "1")], lot="0.005")
    plan = plan_order("BUY", D("0.02"), [a, b])
    assert legs(plan) == [("A", D("0.02"), D("100.5"))]
    assert plan.legs[0].notional == D("2.0025")
    # ... and worse than B's 100.2: B fills what is left after A's first lot.
    b = venue("B", [("100.2", "1")], lot="0.005")
    plan = plan_order("BUY", D("0.02"), [a, b])
    assert legs(plan) == [("A", D("0.01"), D("100")), ("B", D("0.01"), D("100.2"))]


def test_quote_capacity_cuts_a_level_in_part():
    # 250.25 USDT at 100 with a 10 bp fee buys 2.5 * 100 * 1.001 = 250.25: exactly 2.5.
    a = venue("A", [("100", "10")], fee="0.001", capacity="250.25")
    b = venue("B", [("101", "10")])
    plan = plan_order("BUY", D("3"), [a, b])
    assert legs(plan) == [("A", D("2.5"), D("100")), ("B", D("0.5"), D("101"))]
    # One cent less: A's slice is 2.49 (on the lot), not more.
    a = venue("A", [("100", "10")], fee="0.001", capacity="250.24")
    plan = plan_order("BUY", D("3"), [a, b])
    assert legs(plan) == [("A", D("2.49"), D("100")), ("B", D("0.51"), D("101"))]


def test_base_capacity_for_a_spot_sell():
    a = venue("A", [("100", "10")], capacity="0.333", capacity_kind="base")
    b = venue("B", [("99", "10")])
    plan = plan_order("SELL", D("1"), [a, b])
    assert legs(plan) == [("A", D("0.33"), D("100")), ("B", D("0.67"), D("99"))]
    # Nothing anywhere else: unfilled for want of balance.
    plan = plan_order("SELL", D("1"), [a])
    assert plan.quantity == D("0.33") and plan.limited_by == "balance"


def test_margin_capacity_for_a_perpetual():
    # 10x: 1 BTC at 100 costs 100 / 10 + 100 * 0.0005 = 10.05 of margin.
    kw = dict(fee="0.0005", capacity_kind="margin", leverage=10)
    a = venue("A", [("100", "5")], capacity="20.1", **kw)
    b = venue("B", [("100.5", "5")], capacity="1000", **kw)
    plan = plan_order("BUY", D("3"), [a, b])
    assert legs(plan) == [("A", D("2"), D("100")), ("B", D("1"), D("100.5"))]
    # The same margin on a short: bids, the cap is symmetric.
    a = venue("A", [("100", "5")], capacity="20.1", **kw)
    b = venue("B", [("99.5", "5")], capacity="1000", **kw)
    plan = plan_order("SELL", D("3"), [a, b])
    assert legs(plan) == [("A", D("2"), D("100")), ("B", D("1"), D("99.5"))]


def test_never_through_the_limit_nor_the_slippage_bound():
    a = venue("A", [("100", "1"), ("100.2", "1"), ("100.6", "1")])
    b = venue("B", [("100.1", "1"), ("100.5", "1")])
    plan = plan_order("BUY", D("5"), [a, b], limit_price=D("100.5"))
    assert legs(plan) == [("A", D("2"), D("100.2")), ("B", D("2"), D("100.5"))]
    assert plan.price_bound == D("100.5") and plan.limited_by == "price"
    # 20 bp over a mid of 100.15 is 100.3503: tighter than the limit.
    plan = plan_order("BUY", D("5"), [a, b], limit_price=D("100.5"),
                      arrival_mid=D("100.15"), max_slippage_bps=D("20"))
    assert plan.price_bound == D("100.15") * D("1.002")
    assert legs(plan) == [("A", D("2"), D("100.2")), ("B", D("1"), D("100.1"))]
    assert plan.limited_by == "slippage"
    # Within the bound but not enough anywhere: liquidity.
    plan = plan_order("BUY", D("9"), [a, b], limit_price=D("1000"))
    assert plan.quantity == 5 and plan.limited_by == "liquidity"


def test_crossed_books_across_venues():
    # B's bid (100.4) is above A's ask (100.1): the consolidated mid is (100.4 + 100.1) / 2.
    mid = consolidated_mid([D("99.9"), D("100.4")], [D("100.1"), D("100.6")])
    assert mid == D("100.25")
    asks_a = venue("A", [("100.1", "1"), ("100.3", "1")])
    asks_b = venue("B", [("100.6", "1")])
    plan = plan_order("BUY", D("3"), [asks_a, asks_b], arrival_mid=mid, max_slippage_bps=D(0))
    # Zero slippage allowed: only asks at or below the mid, and the fill is below it.
    assert legs(plan) == [("A", D("1"), D("100.1"))]
    assert plan.slippage_bps == (D("100.1") - mid) / mid * 10000 < 0
    bids_b = venue("B", [("100.4", "2"), ("99.8", "1")])
    plan = plan_order("SELL", D("1"), [bids_b], arrival_mid=mid)
    assert plan.slippage_bps == (mid - D("100.4")) / mid * 10000 < 0
    assert consolidated_mid([], [D("1")]) is None
    assert consolidated_mid([None, D("1")], [D("3"), None]) == 2


def test_routing_never_does_worse_than_one_venue_alone():
    # Routed by the rules, A takes its 0.95 and B's 0.05 is short of B's minimum of 0.1, so
    # B is left out: 0.95 filled. B alone fills all of it: the plan is B alone.
    a = venue("A", [("100", "0.95")])
    b = venue("B", [("100.2", "5")], min_quantity="0.1")
    plan = plan_order("BUY", D("1"), [a, b])
    assert legs(plan) == [("B", D("1"), D("100.2"))]
    assert plan.best_single_venue == "B" and plan.best_single_net_price == D("100.2")
    assert plan.unfilled == 0


def test_best_single_venue_fills_most_then_cheapest():
    a = venue("A", [("100", "1")], fee="0.001")
    b = venue("B", [("100", "2")], fee="0.002")
    c = venue("C", [("100", "2")], fee="0.001")
    plan = plan_order("BUY", D("2"), [a, b, c])
    assert plan.best_single_venue == "C"
    assert plan.best_single_net_price == D("100.1")
    plan = plan_order("BUY", D("2"), [a])
    assert plan.best_single_venue == "A" and plan.best_single_net_price == D("100.1")


def test_off_tick_level_rounds_the_limit_toward_the_passive_side():
    a = venue("A", [("100.05", "1")], tick="0.1")
    assert plan_order("BUY", D("1"), [a]).legs[0].limit_price == D("100.0")
    assert plan_order("SELL", D("1"), [a]).legs[0].limit_price == D("100.1")


def test_empty_and_nothing_to_take():
    plan = plan_order("BUY", D("1"), [])
    assert plan.legs == () and plan.limited_by == "liquidity" and plan.unfilled == 1
    assert plan.average_price is None and plan.best_single_venue is None
    plan = plan_order("BUY", D("1"), [venue("A", [])])
    assert plan.limited_by == "liquidity"
    plan = plan_order("BUY", D("1"), [venue("A", [("100", "1")], capacity="0")])
    assert plan.legs == () and plan.limited_by == "balance"


@pytest.mark.parametrize(
    ("args", "kwargs", "names"),
    [
        (("HOLD", D(1), []), {}, "side"),
        (("BUY", D(0), []), {}, "quantity"),
        (("BUY", D(-1), []), {}, "quantity"),
        (("BUY", D("NaN"), []), {}, "quantity"),
        (("BUY", D("Infinity"), []), {}, "quantity"),
        (("BUY", 1.5, []), {}, "quantity"),
        (("BUY", D(1), []), {"limit_price": D(0)}, "limit_price"),
        (("BUY", D(1), []), {"max_slippage_bps": D(5)}, "max_slippage_bps"),
        (("BUY", D(1), []), {"arrival_mid": D(100), "max_slippage_bps": D(-1)},
         "max_slippage_bps"),
        (("BUY", D(1), [venue("A", [("100", "1")], fee="-0.001")]), {}, "taker_fee"),
        (("BUY", D(1), [venue("A", [("100", "1")], lot="0")]), {}, "lot"),
        (("BUY", D(1), [venue("A", [("100", "1")], tick="-1")]), {}, "tick"),
        (("BUY", D(1), [venue("A", [("101", "1"), ("100", "1")])]), {}, "levels"),
        (("SELL", D(1), [venue("A", [("100", "1"), ("101", "1")])]), {}, "levels"),
        (("BUY", D(1), [venue("A", [("100", "1"), ("100", "1")])]), {}, "levels"),
        (("BUY", D(1), [venue("A", [("NaN", "1")])]), {}, "levels"),
        (("BUY", D(1), [venue("A", [("100", "-1")])]), {}, "levels"),
        (("BUY", D(1), [venue("A", [("0", "1")])]), {}, "levels"),
        (("BUY", D(1), [VenueInput("A", "m", [(100.0, 1.0)], D(0), D(1), D(1))]), {}, "levels"),
        (("BUY", D(1), [venue("A", [("100", "1")], capacity="-1")]), {}, "capacity"),
        (("BUY", D(1), [venue("A", [("100", "1")], capacity_kind="usd")]), {}, "capacity_kind"),
        (("BUY", D(1), [venue("A", [("100", "1")], capacity="1", capacity_kind="margin",
                              leverage=0)]), {}, "leverage"),
        (("BUY", D(1), [venue("A", [("100", "1")]), venue("A", [("100", "1")])]), {}, "venues"),
    ],
)
def test_bad_input_names_the_parameter(args, kwargs, names):
    with pytest.raises(ValueError, match=names):
        plan_order(*args, **kwargs)
