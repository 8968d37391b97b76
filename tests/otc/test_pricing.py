"""The desk's pricing on hand-computed books, then against an independent oracle.

The hand cases write their expected numbers out from first principles (the arithmetic is in
the comments). The property tests compare ``price_quote`` with an oracle written differently:
exact ``Fraction`` arithmetic, every level turned into a conversion segment (source capacity,
target capacity) up front, the route's USD hop read from the ``UsdRule`` rather than the hop;
then check the markup, round-trip, monotonicity and hedge-leg properties on random books.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from astra.core import InsufficientLiquidity, InvalidParameter, UnsupportedPair
from astra.otc.pricing import (
    Hop,
    MemberLevels,
    PairBook,
    Priced,
    UsdRule,
    find_route,
    inventory_skew_bps,
    price_quote,
)

D = Decimal
F = Fraction

BTC = "SMART-SPOT-BTC-USDT"
ETH = "SMART-SPOT-ETH-USDT"
MARKETS = {("BTC", "USDT"): BTC, ("ETH", "USDT"): ETH}


def lv(*pairs) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((D(str(p)), D(str(q))) for p, q in pairs)


# Two members on BTC-USDT. Fee-adjusted asks: A 100*1.001 = 100.1, B 99.95*1.003 = 100.24985,
# B 101*1.003 = 101.303, A 103*1.001 = 103.103: B's cheaper raw 99.95 comes second.
# Fee-adjusted bids: A 99*0.999 = 98.901, B 99.1*0.997 = 98.8027, A 98*0.999 = 97.902,
# B 97*0.997 = 96.709: B's higher raw 99.1 comes second.
A = MemberLevels("A", bids=lv((99, 1), (98, 5)), asks=lv((100, 1), (103, 5)),
                 taker_fee=D("0.001"))
B = MemberLevels("B", bids=lv((99.1, 2), (97, 5)), asks=lv((99.95, 2), (101, 5)),
                 taker_fee=D("0.003"))
E = MemberLevels("E", bids=lv((49, 2), (48, 10)), asks=lv((50, 2), (51, 10)),
                 taker_fee=D("0.001"))
BOOKS = {BTC: PairBook(BTC, "BTC", "USDT", (A, B)), ETH: PairBook(ETH, "ETH", "USDT", (E,))}


USD_AT_PAR = UsdRule()


def quote(from_asset, to_asset, *, markets=MARKETS, books=BOOKS, usd=USD_AT_PAR,
          bridges=("USDT", "USDC"), **kw) -> Priced:
    route = find_route(from_asset, to_asset, markets, bridges=bridges, usd=usd)
    kw.setdefault("markup_bps", D(0))
    kw.setdefault("precision", {})
    return price_quote(from_asset, to_asset, route, books, **kw)


# ------------------------------------------------------------------------- routes


def test_route_direct_both_orientations():
    # Client buys BTC with USDT: the desk receives USDT and buys BTC (walks the asks).
    assert find_route("BTC", "USDT", MARKETS) == (Hop("USDT", "BTC", BTC, "BUY"),)
    # Client buys USDT with BTC: the desk receives BTC and sells it (walks the bids).
    assert find_route("USDT", "BTC", MARKETS) == (Hop("BTC", "USDT", BTC, "SELL"),)


def test_route_bridge_both_ways():
    assert find_route("ETH", "BTC", MARKETS) == (
        Hop("BTC", "USDT", BTC, "SELL"), Hop("USDT", "ETH", ETH, "BUY"))
    assert find_route("BTC", "ETH", MARKETS) == (
        Hop("ETH", "USDT", ETH, "SELL"), Hop("USDT", "BTC", BTC, "BUY"))


def test_route_direct_market_beats_bridge_and_bridge_order():
    markets = {**MARKETS, ("ETH", "BTC"): "SMART-SPOT-ETH-BTC", ("BTC", "USDC"): "B-C",
               ("ETH", "USDC"): "E-C"}
    assert find_route("ETH", "BTC", markets) == (Hop("BTC", "ETH", "SMART-SPOT-ETH-BTC", "BUY"),)
    del markets[("ETH", "BTC")]
    assert find_route("ETH", "BTC", markets, bridges=("USDC", "USDT"))[0].symbol == "B-C"
    assert find_route("ETH", "BTC", markets, bridges=("USDT", "USDC"))[0].symbol == BTC


def test_route_usd_fixed_hops():
    assert find_route("USD", "USDT", MARKETS) == (Hop("USDT", "USD", None, None, rate=D(1)),)
    rule = UsdRule(rate=D("0.998"))
    (hop,) = find_route("USDT", "USD", MARKETS, usd=rule)
    assert (hop.source, hop.target, hop.symbol, hop.side) == ("USD", "USDT", None, None)
    assert hop.rate_inverse == D("0.998")  # the configured number, exact
    assert abs(hop.rate * D("0.998") - 1) < D("1e-27")  # USDT per USD
    assert find_route("BTC", "USD", MARKETS, usd=rule) == (
        Hop("USD", "USDT", None, None, rate=hop.rate, rate_inverse=D("0.998")),
        Hop("USDT", "BTC", BTC, "BUY"))
    assert find_route("USD", "ETH", MARKETS, usd=rule) == (
        Hop("ETH", "USDT", ETH, "SELL"), Hop("USDT", "USD", None, None, rate=D("0.998")))


def test_route_usd_through_a_market():
    markets = {**MARKETS, ("USDT", "USD"): "SMART-SPOT-USDT-USD"}
    rule = UsdRule(rate=None)
    # bridges without USDT: the USD rule itself leads through its `via`.
    assert find_route("USD", "BTC", markets, bridges=("USDC",), usd=rule) == (
        Hop("BTC", "USDT", BTC, "SELL"), Hop("USDT", "USD", "SMART-SPOT-USDT-USD", "SELL"))
    assert find_route("BTC", "USD", markets, bridges=(), usd=rule) == (
        Hop("USD", "USDT", "SMART-SPOT-USDT-USD", "BUY"), Hop("USDT", "BTC", BTC, "BUY"))
    with pytest.raises(UnsupportedPair):  # market mode, no USDT/USD market
        find_route("USD", "BTC", MARKETS, bridges=(), usd=rule)


def test_route_usd_listed_by_a_market_is_routed_like_any_asset():
    markets = {**MARKETS, ("BTC", "USD"): "SMART-SPOT-BTC-USD"}
    assert find_route("BTC", "USD", markets) == (Hop("USD", "BTC", "SMART-SPOT-BTC-USD", "BUY"),)


@pytest.mark.parametrize(("f", "t"), [("BTC", "BTC"), ("DOGE", "BTC"), ("BTC", "DOGE"),
                                      ("USD", "DOGE"), ("USD", "USD")])
def test_route_unsupported_names_both_assets(f, t):
    with pytest.raises(UnsupportedPair) as e:
        find_route(f, t, MARKETS)
    assert f in e.value.message and t in e.value.message
    assert e.value.status == 400


# --------------------------------------------------------------- hand-computed quotes


def test_buy_exact_output_two_members_partial_level():
    # 2.5 BTC: A's 1 @ 100 (100 * 1.001 = 100.1), then 1.5 of B's 2 @ 99.95
    # (149.925 + 0.3% = 150.374775): cost 250.474775 USDT; * 1.002 = 250.97572455 -> UP.
    p = quote("BTC", "USDT", from_amount=D("2.5"), markup_bps=D(20))
    assert p.from_quantity == D("2.5")
    assert p.cost == D("250.474775")
    assert p.to_quantity == D("250.975725")
    assert p.markup_bps == D(20)
    (leg,) = p.hedges
    assert (leg.symbol, leg.side, leg.quantity) == (BTC, "BUY", D("2.5"))
    assert leg.average_price == D("99.97")  # (100 + 149.925) / 2.5
    assert leg.fees == D("0.549775")  # 0.1 + 0.449775
    assert p.home_notional == D("250.975725")  # USDT is what the client pays


def test_fee_adjusted_order_cheaper_raw_price_with_higher_fee_loses():
    p = quote("BTC", "USDT", from_amount=D(1))
    assert p.hedges[0].average_price == D(100)  # A's 100, not B's 99.95
    assert p.cost == D("100.1")
    zero = {BTC: PairBook(BTC, "BTC", "USDT", (
        MemberLevels("A", (), A.asks, D(0)), MemberLevels("B", (), B.asks, D(0))))}
    assert quote("BTC", "USDT", books=zero, from_amount=D(1)).cost == D("99.95")
    # SELL: A's bid 99 (net 98.901) before B's higher 99.1 (net 98.8027).
    s = quote("USDT", "BTC", from_amount=D("98.901"))
    assert s.cost == D(1) and s.hedges[0].average_price == D(99)


@pytest.mark.parametrize("first", ["X", "Y"])
def test_ties_go_to_the_member_listed_first(first):
    # X: 100.1 with no fee; Y: 100 * 1.001 = 100.1. Same cost, different legs.
    x = MemberLevels("X", (), lv((100.1, 1)), D(0))
    y = MemberLevels("Y", (), lv((100, 1)), D("0.001"))
    members = (x, y) if first == "X" else (y, x)
    p = quote("BTC", "USDT", books={BTC: PairBook(BTC, "BTC", "USDT", members)},
              from_amount=D(1))
    assert p.cost == D("100.1")
    leg = p.hedges[0]
    expected = (D("100.1"), D(0)) if first == "X" else (D(100), D("0.1"))
    assert (leg.average_price, leg.fees) == expected


def test_buy_exact_input():
    # 150 USDT: A's level costs 100.1 whole; 49.9 left buys 49.9 / 100.24985
    # = 0.497756355745... of B's at 99.95 * 1.003: 1.497756355745... -> DOWN to 8 places.
    p = quote("BTC", "USDT", to_amount=D(150))
    assert p.to_quantity == D(150)
    assert p.from_quantity == D("1.49775635")
    part = D("0.49775635")
    assert p.cost == D("100.1") + part * D("99.95") * D("1.003")
    assert p.cost <= 150
    (leg,) = p.hedges
    assert leg.quantity == D("1.49775635")
    assert leg.fees == D("0.1") + part * D("99.95") * D("0.003")
    assert p.home_notional == D(150)


def test_buy_exact_input_keeps_the_markup_out_of_the_input():
    # 25 bps: 150 / 1.0025 = 149.6259351620947630922693266833... is converted:
    # (149.62593516... - 100.1) / 100.24985 = 0.49402503008... -> 1.49402503.
    p = quote("BTC", "USDT", to_amount=D(150), markup_bps=D(25))
    assert p.from_quantity == D("1.49402503")
    assert p.cost * D("1.0025") <= D(150)


def test_sell_exact_output():
    # The client buys 200 USDT paying BTC: the desk sells BTC. A's 1 @ 99 yields 98.901;
    # 101.099 more from B at 99.1 * 0.997 = 98.8027 per BTC: cost 1 + 101.099 / 98.8027
    # = 2.02324126769814994934348960099... BTC; * 1.001 = 2.025264508965848... -> UP.
    p = quote("USDT", "BTC", from_amount=D(200), markup_bps=D(10))
    assert p.from_quantity == D(200)
    assert p.to_quantity == D("2.02526451")
    assert abs(p.cost - D("2.02324126769814994934348960099")) < D("1e-26")
    (leg,) = p.hedges
    assert (leg.side, leg.symbol) == ("SELL", BTC)
    assert leg.quantity == p.cost  # a SELL's source is its base
    part = p.cost - 1
    assert abs(leg.fees - (D("0.099") + part * D("99.1") * D("0.003"))) < D("1e-25")
    assert abs(leg.average_price * leg.quantity - (99 + part * D("99.1"))) < D("1e-25")
    assert p.home_notional == D(200)


def test_sell_exact_input():
    # 1.5 BTC sold: A's 1 -> 98.901, B's 0.5 -> 49.40135: 148.30235 USDT exactly.
    p = quote("USDT", "BTC", to_amount=D("1.5"))
    assert (p.from_quantity, p.to_quantity, p.cost) == (D("148.30235"), D("1.5"), D("1.5"))
    assert p.hedges[0].quantity == D("1.5")
    # 1.2345678 BTC: 98.901 + 0.2345678 * 98.8027 = 122.07693197306 -> DOWN to 6 places.
    q = quote("USDT", "BTC", to_amount=D("1.2345678"))
    assert q.from_quantity == D("122.076931")
    assert q.cost < D("1.2345678")
    assert q.home_notional == D("122.076931")


def test_bridge_exact_output():
    # The client buys 3 ETH selling BTC. ETH: 2 @ 50 + 1 @ 51, +0.1%: 151.151 USDT.
    # BTC sold for 151.151: 98.901 from A, 52.25 from B at 98.8027: 1 + 52.25 / 98.8027
    # = 1.52883170196765877855564675864... BTC; * 1.001 = 1.53036053366... -> UP.
    p = quote("ETH", "BTC", from_amount=D(3), markup_bps=D(10))
    assert p.to_quantity == D("1.53036054")
    assert abs(p.cost - D("1.52883170196765877855564675864")) < D("1e-26")
    sell, buy = p.hedges
    assert (sell.symbol, sell.side, sell.quantity) == (BTC, "SELL", p.cost)
    assert (buy.symbol, buy.side, buy.quantity) == (ETH, "BUY", D(3))
    assert buy.average_price * 3 == D(151) and buy.fees == D("0.151")
    assert p.home_notional == D("151.151")  # what passed through USDT


def test_bridge_reverse_exact_output():
    # The client buys 0.5 BTC selling ETH: BTC 0.5 @ 100 (+0.1%) = 50.05 USDT; ETH sold
    # at 49 * 0.999 = 48.951: 50.05 / 48.951 = 1.02245102245102... ETH; * 1.001 -> UP.
    p = quote("BTC", "ETH", from_amount=D("0.5"), markup_bps=D(10))
    assert p.to_quantity == D("1.02347348")  # 1.023473473473...
    assert abs(p.cost - D("1.022451022451022451022451022")) < D("1e-26")
    sell, buy = p.hedges
    assert (sell.symbol, sell.side) == (ETH, "SELL") and (buy.symbol, buy.side) == (BTC, "BUY")
    assert buy.quantity == D("0.5")
    assert p.home_notional == D("50.05")


def test_bridge_exact_input():
    # 1 BTC sold -> 98.901 USDT -> 98.901 / 50.05 = 1.97604395604... ETH -> DOWN.
    p = quote("ETH", "BTC", to_amount=D(1))
    assert p.from_quantity == D("1.97604395")
    # Then backwards for 1.97604395 ETH: 98.9009996975 USDT, / 98.901 BTC.
    assert p.home_notional == D("98.9009996975")
    assert abs(p.cost - D("98.9009996975") / D("98.901")) < D("1e-26")
    assert p.cost < 1


@pytest.mark.parametrize(
    ("rate", "cost", "to_quantity"),
    [
        (D(1), D(100), D("100.1")),
        # 100 USD at 0.998 USD per USDT: 100.2004008016... USDT; * 1.001 = 100.3006012... UP.
        (D("0.998"), D("100.2004008016032064128256513"), D("100.300602")),
    ],
)
def test_usd_fixed_rate(rate, cost, to_quantity):
    p = quote("USD", "USDT", usd=UsdRule(rate=rate), from_amount=D(100), markup_bps=D(10))
    assert (p.cost, p.to_quantity, p.hedges) == (cost, to_quantity, ())
    assert p.home_notional == to_quantity  # USDT paid


def test_usd_fixed_rate_the_other_way_is_exact():
    # The client buys 99.8 USDT paying USD at 0.998 USD per USDT: exactly 99.6004 USD (a
    # rounded reciprocal would have made it 99.6005 after rounding up).
    rule = UsdRule(rate=D("0.998"))
    p = quote("USDT", "USD", usd=rule, from_amount=D("99.8"))
    assert (p.cost, p.to_quantity) == (D("99.6004"), D("99.6004"))
    q = quote("USDT", "USD", usd=rule, to_amount=D("99.6004"))
    assert q.from_quantity == D("99.8")
    r = quote("USD", "USDT", usd=rule, to_amount=D(100))
    assert r.from_quantity == D("99.8")  # USD has 4 places


def test_usd_fixed_rate_then_a_market():
    # The client buys 1 BTC paying USD: 100.1 USDT, at 0.998 USD each: 99.8998 USD.
    p = quote("BTC", "USD", usd=UsdRule(rate=D("0.998")), from_amount=D(1))
    assert (p.cost, p.to_quantity) == (D("99.8998"), D("99.8998"))
    assert [h.symbol for h in p.hedges] == [BTC]  # the fixed hop has no leg
    assert p.home_notional == D("100.1")  # the USDT in between


def test_usd_through_a_market():
    usd_book = PairBook("SMART-SPOT-USDT-USD", "USDT", "USD", (
        MemberLevels("C", bids=lv((0.998, 1000)), asks=lv((0.999, 1000)), taker_fee=D(0)),))
    markets = {**MARKETS, ("USDT", "USD"): "SMART-SPOT-USDT-USD"}
    books = {**BOOKS, "SMART-SPOT-USDT-USD": usd_book}
    # 100 USD: sell 100 / 0.998 = 100.2004008016... USDT; BTC sold for it: 1 (98.901) +
    # 1.2994008016... / 98.8027 = 1.0131514705732050481699958736 BTC.
    p = quote("USD", "BTC", markets=markets, books=books, bridges=("USDC",),
              usd=UsdRule(rate=None), from_amount=D(100))
    assert abs(p.cost - D("1.013151470573205048169995873620915")) < D("1e-26")
    assert p.to_quantity == D("1.01315148")
    assert [(h.symbol, h.side) for h in p.hedges] == [
        (BTC, "SELL"), ("SMART-SPOT-USDT-USD", "SELL")]
    assert abs(p.hedges[1].quantity - D("100.2004008016032064128256513")) < D("1e-25")
    assert abs(p.home_notional - D("100.2004008016032064128256513")) < D("1e-25")


def test_rounding_at_each_assets_precision():
    # BTC at 3 places: 1.497756... -> 1.497 (DOWN); USDT at 2: 250.97572455 -> 250.98 (UP).
    assert quote("BTC", "USDT", to_amount=D(150), precision={"BTC": 3}).from_quantity == D(
        "1.497")
    p = quote("BTC", "USDT", from_amount=D("2.5"), markup_bps=D(20),
              precision=lambda a: {"BTC": 8, "USDT": 2}[a])
    assert p.to_quantity == D("250.98")
    # Default precision: ASSET_PRECISION (USDT 6) or 8 for an asset it does not list.
    assert quote("BTC", "USDT", to_amount=D(150), precision={}).from_quantity == D("1.49775635")


def test_to_amount_too_small():
    with pytest.raises(InvalidParameter) as e:  # 0.000001 USDT buys 1e-8 of a BTC? No.
        quote("BTC", "USDT", to_amount=D("0.000001"))
    assert e.value.parameter == "toAmount" and "too small" in e.value.message


@pytest.mark.parametrize("amounts", [{}, {"from_amount": D(1), "to_amount": D(1)}])
def test_exactly_one_amount(amounts):
    with pytest.raises(InvalidParameter) as e:
        quote("BTC", "USDT", **amounts)
    assert e.value.parameter == "fromAmount"


# --------------------------------------------------------------- too little depth


def test_insufficient_depth_direct():
    # The asks hold 1 + 5 + 2 + 5 = 13 BTC.
    assert quote("BTC", "USDT", from_amount=D(13)).hedges[0].quantity == D(13)
    with pytest.raises(InsufficientLiquidity) as e:
        quote("BTC", "USDT", from_amount=D("13.00000001"))
    assert e.value.parameter == "fromAmount"
    assert BTC in e.value.message and "13 BTC" in e.value.message
    # All 13 cost 100.1 + 5 * 103.103 + 2 * 100.24985 + 5 * 101.303 = 1322.6297 USDT.
    assert quote("BTC", "USDT", to_amount=D("1322.6297")).from_quantity == D(13)
    with pytest.raises(InsufficientLiquidity) as e:
        quote("BTC", "USDT", to_amount=D("1322.629701"))
    assert e.value.parameter == "toAmount" and "1322.6297 USDT" in e.value.message
    # SELL: the bids take 13 BTC.
    with pytest.raises(InsufficientLiquidity) as e:
        quote("USDT", "BTC", to_amount=D("13.1"))
    assert e.value.parameter == "toAmount" and BTC in e.value.message


THIN = {**BOOKS, BTC: PairBook(BTC, "BTC", "USDT", (
    MemberLevels("A", bids=lv((99, 1)), asks=lv((100, 1)), taker_fee=D("0.001")),))}


@pytest.mark.parametrize(
    ("kw", "books", "short", "parameter"),
    [
        # first hop (BTC sold): 3 ETH need 151.151 USDT, 1 BTC yields 98.901
        ({"from_amount": D(3)}, THIN, BTC, "fromAmount"),
        ({"to_amount": D(14)}, BOOKS, BTC, "toAmount"),  # the bids take 13 BTC
        # second hop (ETH bought): the asks hold 12 ETH, for 610.61 USDT
        ({"from_amount": D("12.00000001")}, BOOKS, ETH, "fromAmount"),
        ({"to_amount": D(10)}, BOOKS, ETH, "toAmount"),  # 10 BTC sold yield > 900 USDT
    ],
)
def test_insufficient_depth_on_either_hop(kw, books, short, parameter):
    with pytest.raises(InsufficientLiquidity) as e:
        quote("ETH", "BTC", books=books, **kw)
    assert e.value.parameter == parameter
    assert e.value.message.startswith(short)
    assert e.value.status == 422


@pytest.mark.parametrize("books", [{ETH: BOOKS[ETH]}, {**BOOKS, BTC: PairBook(BTC, "BTC", "USDT",
                                                                             ())}])
def test_no_member_book_is_insufficient_liquidity(books):
    with pytest.raises(InsufficientLiquidity) as e:
        quote("BTC", "USDT", books=books, from_amount=D(1))
    assert e.value.parameter == "fromAmount" and BTC in e.value.message


def test_empty_side_is_insufficient_liquidity():
    books = {BTC: PairBook(BTC, "BTC", "USDT", (MemberLevels("A", lv((99, 1)), (), D(0)),))}
    with pytest.raises(InsufficientLiquidity):
        quote("BTC", "USDT", books=books, from_amount=D(1))
    assert quote("USDT", "BTC", books=books, to_amount=D(1)).from_quantity == D(99)


# ------------------------------------------------------------------ home notional


def test_home_notional_without_home_on_the_route():
    markets = {("ETH", "BTC"): "SMART-SPOT-ETH-BTC"}
    books = {"SMART-SPOT-ETH-BTC": PairBook("SMART-SPOT-ETH-BTC", "ETH", "BTC", (
        MemberLevels("A", bids=lv((0.05, 10)), asks=lv((0.05, 10)), taker_fee=D(0)),))}
    kw = {"markets": markets, "books": books, "from_amount": D(2)}
    # 2 ETH cost 0.1 BTC. fromAsset's price first, then toAsset's.
    assert quote("ETH", "BTC", home_prices={"ETH": D(2500), "BTC": D(1)}, **kw
                 ).home_notional == D(5000)
    assert quote("ETH", "BTC", home_prices={"BTC": D(50000)}, **kw).home_notional == D(5000)
    with pytest.raises(UnsupportedPair) as e:
        quote("ETH", "BTC", **kw)
    assert "USDT" in e.value.message


def test_home_can_be_another_asset():
    p = quote("ETH", "BTC", from_amount=D(3), home="ETH")
    assert p.home_notional == D(3)
    p = quote("ETH", "BTC", from_amount=D(3), markup_bps=D(10), home="BTC")
    assert p.home_notional == D("1.53036054")  # what the client pays


# ------------------------------------------------------------------ bad calls


def test_route_and_books_must_agree():
    with pytest.raises(ValueError, match="does not lead"):
        price_quote("BTC", "USDT", find_route("ETH", "USDT", MARKETS), BOOKS,
                    from_amount=D(1), markup_bps=D(0), precision={})
    wrong = (Hop("USDT", "BTC", BTC, "SELL"),)
    with pytest.raises(ValueError, match="does not match"):
        price_quote("BTC", "USDT", wrong, BOOKS, from_amount=D(1), markup_bps=D(0),
                    precision={})
    with pytest.raises(ValueError, match="markup"):
        quote("BTC", "USDT", from_amount=D(1), markup_bps=D(-1))


# ------------------------------------------------------------------ inventory skew


LIMITS = {"BTC": D(10), "ETH": D(100), "USDT": D(1000000)}


@pytest.mark.parametrize(
    ("from_asset", "to_asset", "inventory", "skew"),
    [
        ("BTC", "USDT", {"BTC": D(5)}, D(-10)),  # long what it sells: welcome, cheaper
        ("USDT", "BTC", {"BTC": D(5)}, D(10)),  # long what it buys: unwelcome, dearer
        ("BTC", "USDT", {"BTC": D(-5)}, D(10)),  # short what it sells
        ("USDT", "BTC", {"BTC": D(-5)}, D(-10)),  # short what it buys back
        ("BTC", "USDT", {"BTC": D(30)}, D(-20)),  # clamped at the limit
        ("BTC", "USDT", {"BTC": D(-30)}, D(20)),
        ("BTC", "ETH", {"BTC": D(5), "ETH": D(-200)}, D(-30)),  # -10 + (-20, clamped)
        ("BTC", "ETH", {"BTC": D(5), "ETH": D(50)}, D(0)),  # -10 + 10
        ("DOGE", "USDT", {"DOGE": D(10**9)}, D(0)),  # no limit
        ("USDT", "BTC", {"USDT": D(-900000), "BTC": D(0)}, D(0)),  # HOME adds nothing
        ("BTC", "USDT", {}, D(0)),
    ],
)
def test_inventory_skew(from_asset, to_asset, inventory, skew):
    assert inventory_skew_bps(from_asset, to_asset, inventory, LIMITS, D(20)) == skew


def test_inventory_skew_home_and_zero_limit():
    assert inventory_skew_bps("BTC", "USDT", {"USDT": D(500000)}, LIMITS, D(20),
                              home="BTC") == D(10)
    assert inventory_skew_bps("BTC", "USDT", {"BTC": D(1)}, {"BTC": D(0)}, D(20)) == 0


# ------------------------------------------------------ the oracle (exact Fractions)


def _segments(hop: Hop, books, usd_rate: Fraction):
    """The hop as conversion segments, best first: (source capacity, target capacity,
    price, fee, is BUY); a fixed hop is one segment of unlimited capacity (None)."""
    if hop.symbol is None:
        rate = usd_rate if hop.target == "USD" else 1 / usd_rate  # target per source
        return [(None, rate, None, None, None)]
    book = books[hop.symbol]
    buy = hop.side == "BUY"
    rows = []
    for m, member in enumerate(book.members):
        fee = F(member.taker_fee)
        for i, (p, q) in enumerate(member.asks if buy else member.bids):
            p, q = F(p), F(q)
            if q:
                if buy:  # gives quote with fees, gets base
                    rows.append(((p * (1 + fee), m, i), (q * p * (1 + fee), q, p, fee, True)))
                else:  # gives base, gets quote after fees
                    rows.append(((-p * (1 - fee), m, i), (q, q * p * (1 - fee), p, fee, False)))
    rows.sort(key=lambda r: r[0])
    return [r[1] for r in rows]


def _o_back(segs, need: Fraction):
    """(source needed, (base, notional, fees)) for exactly ``need`` target, or None."""
    if segs and segs[0][0] is None:
        return need / segs[0][1], None
    src = base = notional = fees = F(0)
    rem = need
    for s_cap, t_cap, p, fee, buy in segs:
        if rem <= 0:
            break
        take_t = min(t_cap, rem)
        take_s = take_t * s_cap / t_cap
        rem -= take_t
        src += take_s
        b = take_t if buy else take_s
        base += b
        notional += p * b
        fees += p * b * fee
    return (src, (base, notional, fees)) if rem == 0 else None


def _o_forth(segs, have: Fraction):
    if segs and segs[0][0] is None:
        return have * segs[0][1]
    got = F(0)
    rem = have
    for s_cap, t_cap, *_ in segs:
        if rem <= 0:
            break
        take_s = min(s_cap, rem)
        rem -= take_s
        got += take_s * t_cap / s_cap
    return got if rem == 0 else None


def _floor(x: Fraction, dp: int) -> Decimal:
    return D(math.floor(x * 10**dp)).scaleb(-dp)


def _ceil(x: Fraction, dp: int) -> Decimal:
    return D(math.ceil(x * 10**dp)).scaleb(-dp)


def oracle(route, books, usd_rate, from_amount, to_amount, markup, dp_from, dp_to):
    """(from_quantity, to_quantity, cost, legs) exactly, or None when a hop is too thin."""
    segs = [_segments(h, books, usd_rate) for h in route]
    factor = 1 + F(markup) / 10000
    if to_amount is not None:
        amount = F(to_amount) / factor
        for s in segs:
            amount = _o_forth(s, amount)
            if amount is None:
                return None
        fq = _floor(amount, dp_from)
        if not fq:
            return "small"
    else:
        fq = from_amount
    amount = F(fq)
    legs = []
    for s in reversed(segs):
        out = _o_back(s, amount)
        if out is None:
            return None
        amount, leg = out
        if leg is not None:
            legs.append(leg)
    legs.reverse()
    tq = to_amount if to_amount is not None else _ceil(amount * factor, dp_to)
    return fq, tq, amount, legs


# ------------------------------------------------------------------ random worlds


FEES = st.sampled_from([D(0), D("0.0001"), D("0.0004"), D("0.001"), D("0.0025")])


@st.composite
def member(draw, name, mid, tick):
    def side(sign):
        n = draw(st.integers(0, 4))
        steps = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n, unique=True)))
        return tuple(
            (mid + sign * (s + 1) * tick,
             draw(st.decimals(D("0.001"), D(3), places=draw(st.sampled_from([0, 1, 3])))))
            for s in steps
        )

    return MemberLevels(name, bids=side(-1), asks=side(1), taker_fee=draw(FEES))


@st.composite
def world(draw):
    btc_mid = draw(st.sampled_from([D(100), D("250.5")]))
    eth_mid = draw(st.sampled_from([D(20), D("37.25")]))
    usd_rate = draw(st.sampled_from([D(1), D("0.998"), D("1.0125")]))
    books = {}
    for sym, base, mid in ((BTC, "BTC", btc_mid), (ETH, "ETH", eth_mid)):
        n = draw(st.integers(1, 3))
        members = tuple(draw(member(f"V{i}", mid, mid / 1000)) for i in range(n))
        if draw(st.integers(0, 4)):  # mostly enough depth somewhere for most sizes
            members += (MemberLevels("DEEP", bids=lv((mid * D("0.95"), 50)),
                                     asks=lv((mid * D("1.05"), 50)), taker_fee=D("0.002")),)
        books[sym] = PairBook(sym, base, "USDT", members)
    pair = draw(st.sampled_from([
        ("BTC", "USDT"), ("USDT", "BTC"), ("ETH", "BTC"), ("BTC", "ETH"),
        ("USD", "BTC"), ("BTC", "USD"), ("USD", "USDT"), ("USDT", "USD"), ("ETH", "USD"),
    ]))
    return books, usd_rate, pair, {"BTC": btc_mid, "ETH": eth_mid, "USDT": D(1), "USD": D(1)}


DP = {"BTC": 8, "ETH": 8, "USDT": 6, "USD": 4}


def _amount(draw, asset, mids):
    """A size worth up to ~60 USDT (now and then a tiny one), at the asset's precision (at
    least one unit)."""
    value = draw(st.one_of(st.decimals(D("0.001"), D(60), places=4),
                           st.decimals(D("0.0000001"), D("0.001"), places=7)))
    x = (value / mids[asset]).quantize(D(1).scaleb(-DP[asset]))
    return max(x, D(1).scaleb(-DP[asset]))


TOLERANCE = D("1e-24")


def _close(a: Decimal, b, rel=TOLERANCE) -> bool:
    b = D(b.numerator) / D(b.denominator) if isinstance(b, Fraction) else b
    return abs(a - b) <= rel * max(abs(b), D(1))


def _run(books, usd_rate, pair, **kw) -> Priced:
    route = find_route(*pair, MARKETS, usd=UsdRule(rate=usd_rate))
    return price_quote(*pair, route, books, precision=DP, **kw)


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(st.data())
def test_matches_the_oracle(data):
    """Exact rounded quantities, the cost and every hedge leg equal the oracle's; too little
    depth raises exactly when the oracle runs dry."""
    books, usd_rate, pair, mids = data.draw(world())
    markup = data.draw(st.sampled_from([D(0), D("0.5"), D(10), D("37.125")]))
    exact_output = data.draw(st.booleans())
    asset = pair[0] if exact_output else pair[1]
    amount = _amount(data.draw, asset, mids)
    kw = {"from_amount": amount} if exact_output else {"to_amount": amount}
    route = find_route(*pair, MARKETS, usd=UsdRule(rate=usd_rate))
    want = oracle(route, books, F(usd_rate), kw.get("from_amount"), kw.get("to_amount"),
                  markup, DP[pair[0]], DP[pair[1]])
    event("too thin" if want is None else "too small" if want == "small" else "priced")
    if want is None:
        with pytest.raises(InsufficientLiquidity):
            _run(books, usd_rate, pair, markup_bps=markup, **kw)
        return
    if want == "small":
        with pytest.raises(InvalidParameter):
            _run(books, usd_rate, pair, markup_bps=markup, **kw)
        return
    p = _run(books, usd_rate, pair, markup_bps=markup, **kw)
    fq, tq, cost, legs = want
    assert (p.from_quantity, p.to_quantity) == (fq, tq)
    assert _close(p.cost, cost)
    market_hops = [h for h in route if h.symbol is not None]
    assert [(h.symbol, h.side) for h in p.hedges] == [(h.symbol, h.side) for h in market_hops]
    for leg, (base, notional, fees) in zip(p.hedges, legs, strict=True):
        assert _close(leg.quantity, base)  # (d): the quantity the walk took
        assert _close(leg.average_price, notional / base)
        assert _close(leg.fees, fees)
    # (d): the first hop's leg accounts for the whole cost.
    first = route[0]
    if first.symbol is not None:
        leg = p.hedges[0]
        spent = leg.quantity * leg.average_price + leg.fees if first.side == "BUY" \
            else leg.quantity
        assert _close(spent, p.cost, D("1e-22"))
    # The client's side is rounded against the client, by less than one unit.
    factor = 1 + markup / 10000
    unit_to = D(1).scaleb(-DP[pair[1]])
    if exact_output:
        assert p.cost * factor <= p.to_quantity < p.cost * factor + unit_to
    else:
        assert p.cost * factor <= p.to_quantity * (1 + D("1e-26"))


@SETTINGS
@given(st.data())
def test_markup_never_improves_the_clients_side(data):
    """(a) against the zero-markup quote of the same request."""
    books, usd_rate, pair, mids = data.draw(world())
    markup = data.draw(st.decimals(D(0), D(500), places=3))
    exact_output = data.draw(st.booleans())
    amount = _amount(data.draw, pair[0] if exact_output else pair[1], mids)
    kw = {"from_amount": amount} if exact_output else {"to_amount": amount}
    try:
        bare = _run(books, usd_rate, pair, markup_bps=D(0), **kw)
    except (InsufficientLiquidity, InvalidParameter):
        assume(False)
    try:
        marked = _run(books, usd_rate, pair, markup_bps=markup, **kw)
    except InvalidParameter:  # the markup left less than one unit to deliver
        assert not exact_output
        return
    if exact_output:
        assert marked.from_quantity == bare.from_quantity
        assert marked.to_quantity >= bare.to_quantity
        assert marked.cost == bare.cost  # the hedge does not depend on the markup
    else:
        assert marked.to_quantity == bare.to_quantity
        assert marked.from_quantity <= bare.from_quantity


@SETTINGS
@given(st.data())
def test_round_trip(data):
    """(b) Exact output f costs t; exact input t then delivers at least f (the roundings and
    the markup all go the desk's way), and what it delivers beyond f costs less than one unit
    of toAsset: c(f') * (1 + m) <= t < c(f) * (1 + m) + unit, so c(f') - c(f) < unit."""
    books, usd_rate, pair, mids = data.draw(world())
    markup = data.draw(st.sampled_from([D(0), D(3), D("12.5"), D(100)]))
    f = _amount(data.draw, pair[0], mids)
    try:
        out = _run(books, usd_rate, pair, from_amount=f, markup_bps=markup)
        back = _run(books, usd_rate, pair, to_amount=out.to_quantity, markup_bps=markup)
    except InsufficientLiquidity:
        assume(False)
    unit_from = D(1).scaleb(-DP[pair[0]])
    unit_to = D(1).scaleb(-DP[pair[1]])
    assert back.to_quantity == out.to_quantity
    assert back.from_quantity >= f
    assert back.cost >= out.cost * (1 - D("1e-26"))
    assert back.cost - out.cost < unit_to
    # ... and it is the most the input covers: one more unit would cost more than t.
    try:
        more = _run(books, usd_rate, pair, from_amount=back.from_quantity + unit_from,
                    markup_bps=markup)
    except InsufficientLiquidity:
        return
    assert more.cost * (1 + markup / 10000) > out.to_quantity * (1 - D("1e-26"))


@SETTINGS
@given(st.data())
def test_larger_sizes_never_cost_less_per_unit(data):
    """(c) The walk only gets worse with size: cost per unit of what the client receives does
    not fall, the total paid does not fall, and a larger input never buys less."""
    books, usd_rate, pair, mids = data.draw(world())
    markup = data.draw(st.sampled_from([D(0), D(10)]))
    a = _amount(data.draw, pair[0], mids)
    b = _amount(data.draw, pair[0], mids)
    small, large = sorted((a, b))
    try:
        p1 = _run(books, usd_rate, pair, from_amount=small, markup_bps=markup)
        p2 = _run(books, usd_rate, pair, from_amount=large, markup_bps=markup)
    except InsufficientLiquidity:
        assume(False)
    assert p2.cost * small >= p1.cost * large * (1 - D("1e-25"))
    assert p2.to_quantity >= p1.to_quantity
    ta = _amount(data.draw, pair[1], mids)
    tb = _amount(data.draw, pair[1], mids)
    t_small, t_large = sorted((ta, tb))
    try:
        q1 = _run(books, usd_rate, pair, to_amount=t_small, markup_bps=markup)
        q2 = _run(books, usd_rate, pair, to_amount=t_large, markup_bps=markup)
    except (InsufficientLiquidity, InvalidParameter):
        return
    assert q2.from_quantity >= q1.from_quantity
    assert q2.cost * q1.from_quantity >= q1.cost * q2.from_quantity * (1 - D("1e-25"))
