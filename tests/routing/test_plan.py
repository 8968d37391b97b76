"""The router's plan against an independent water-fill, on many random books.

The oracle here is written differently from ``astra.routing``: exact ``Fraction`` arithmetic,
every level expanded into lot-sized units up front (the k-th lot of a venue ends at the
level where its depth first reaches k lots, its cost integrated over the levels it spans),
one global sort of all units by fee-adjusted average price, then units taken one by one (a
unit out of the bound, over the capacity or larger than what is left closes its venue),
then the minimums (the best-ranked venue short of them is left out, and the fill runs
again), then the best single venue.
Every plan is also checked against invariants recomputed from the inputs.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra.routing import Plan, VenueInput, plan_order

D = Decimal
F = Fraction


# ---------------------------------------------------------------- the oracle (Fractions)


def _units(v: VenueInput) -> list[tuple[F, F]]:
    """(end price, notional) of each whole lot of ``v``'s levels, in book order."""
    lot = F(v.lot)
    out = []
    have = F(0)  # depth not yet in a unit
    cost = F(0)  # its notional
    for p, q in v.levels:
        p, q = F(p), F(q)
        while have + q >= lot:
            part = lot - have
            out.append((p, cost + part * p))
            q -= part
            have, cost = F(0), F(0)
        have += q
        cost += q * p
    return out


def _cap_cost(v: VenueInput, qty: F, notional: F) -> F:
    fee = F(v.taker_fee)
    if v.capacity_kind == "base":
        return qty
    if v.capacity_kind == "margin":
        return notional / F(v.leverage) + notional * fee
    return notional * (1 + fee)


def _inside(side: str, price: F, bound: F | None) -> bool:
    return bound is None or (price <= bound if side == "BUY" else price >= bound)


def _run(side, quantity, venues, bound):
    """Unit by unit. -> [(venue index, qty, notional, worst price)] in rank order."""
    units = []
    for i, v in enumerate(venues):
        fee = F(v.taker_fee)
        lot = F(v.lot)
        for k, (p, n) in enumerate(_units(v)):
            avg = n / lot  # a lot spanning levels ranks at its average price
            key = avg * (1 + fee) if side == "BUY" else -avg * (1 - fee)
            units.append((key, i, k, p, n))
    units.sort(key=lambda u: u[:3])
    remaining = F(quantity)
    closed: set[int] = set()
    taken: dict[int, list] = {}
    for _, i, _, p, n in units:
        v = venues[i]
        lot = F(v.lot)
        if i in closed:
            continue
        qty, notional = (taken[i][1], taken[i][2]) if i in taken else (F(0), F(0))
        if not _inside(side, p, bound) or lot > remaining:
            closed.add(i)
            continue
        if v.capacity is not None and _cap_cost(v, qty + lot, notional + n) > F(v.capacity):
            closed.add(i)
            continue
        if i not in taken:
            taken[i] = [i, F(0), F(0), None]
        taken[i][1] += lot
        taken[i][2] += n
        taken[i][3] = p
        remaining -= lot
    return list(taken.values())  # dicts keep insertion order: rank order


def _short(v, t) -> bool:
    return t[1] < F(v.min_quantity) or t[2] < F(v.min_notional)


def _fill(side, quantity, venues, bound):
    """Minimums: leave out the best-ranked venue short of them, until none is."""
    active = list(range(len(venues)))
    while True:
        takes = _run(side, quantity, [venues[i] for i in active], bound)
        takes = [[active[t[0]], *t[1:]] for t in takes]
        short = next((t for t in takes if _short(venues[t[0]], t)), None)
        if short is None:
            return takes
        active.remove(short[0])


def _net_total(side, venues, takes) -> F:
    """Lower is better: what a BUY pays, minus what a SELL receives."""
    total = F(0)
    for i, _, n, _ in takes:
        fee = n * F(venues[i].taker_fee)
        total += n + fee if side == "BUY" else fee - n
    return total


def _better(side, venues, a, b) -> bool:
    qa, qb = sum(t[1] for t in a), sum(t[1] for t in b)
    return qa > qb or (qa == qb and _net_total(side, venues, a) < _net_total(side, venues, b))


def _reach(side, v, bound, capped) -> F:
    depth, notional = F(0), F(0)
    for p, q in v.levels:
        p, q = F(p), F(q)
        if not _inside(side, p, bound):
            break
        if capped and v.capacity is not None:
            if _cap_cost(v, depth + q, notional + q * p) > F(v.capacity):
                lo, hi = F(0), q  # the capacity is linear inside a level: solve for the part
                per_unit = _cap_cost(v, depth + 1, notional + p) - _cap_cost(v, depth, notional)
                part = (F(v.capacity) - _cap_cost(v, depth, notional)) / per_unit
                return depth + max(lo, min(hi, part))
        depth += q
        notional += q * p
    return depth


def oracle(side, quantity, venues, limit_price=None, arrival_mid=None, max_slippage_bps=None):
    bounds = []
    if limit_price is not None:
        bounds.append((F(limit_price), "price"))
    if max_slippage_bps is not None:
        move = F(max_slippage_bps) / 10000
        mid = F(arrival_mid)
        bounds.append((mid * (1 + move) if side == "BUY" else mid * (1 - move), "slippage"))
    bound, which = None, None
    for b, w in bounds:
        if bound is None or (b < bound if side == "BUY" else b > bound):
            bound, which = b, w
    takes = _fill(side, quantity, venues, bound)
    single = None
    for i, v in enumerate(venues):
        alone = [[i, *t[1:]] for t in _fill(side, quantity, [v], bound)]
        if alone and (single is None or _better(side, venues, alone, single)):
            single = alone
    if single is not None and _better(side, venues, single, takes):
        takes = single
    qty = sum((t[1] for t in takes), F(0))
    requested = F(quantity)
    limited = None
    if qty < requested:

        def total(bounded, capped):
            return sum(_reach(side, v, bound if bounded else None, capped) for v in venues)

        if total(True, True) >= requested:
            limited = "minimums"
        elif total(True, False) >= requested:
            limited = "balance"
        elif which is not None and total(False, True) >= requested:
            limited = which
        elif total(False, False) < requested:
            limited = "liquidity"
        else:
            limited = "balance"
    single_net = None
    if single is not None:
        net = _net_total(side, venues, single)
        single_net = (net if side == "BUY" else -net) / single[0][1]
    return {
        "legs": [(venues[i].venue, q, n, p) for i, q, n, p in takes],
        "bound": bound,
        "limited_by": limited,
        "single": venues[single[0][0]].venue if single else None,
        "single_net": single_net,
    }


# ---------------------------------------------------------------- invariants


def _close(a: Decimal, b: F) -> bool:
    return abs(F(a) - b) <= abs(b) * F(1, 10**20)


def check_invariants(plan: Plan, side, quantity, venues, kwargs):
    arrival_mid = kwargs.get("arrival_mid")
    by_venue = {v.venue: v for v in venues}
    assert len({leg.venue for leg in plan.legs}) == len(plan.legs)
    total_qty = total_notional = total_fee = F(0)
    for leg in plan.legs:
        v = by_venue[leg.venue]
        q, n = F(leg.quantity), F(leg.notional)
        assert leg.market == v.market
        assert q > 0 and (q / F(v.lot)).denominator == 1, "a leg is a multiple of its lot"
        assert q >= F(v.min_quantity) and n >= F(v.min_notional)
        assert (F(leg.limit_price) / F(v.tick)).denominator == 1, "limit on tick"
        if plan.price_bound is not None:
            bound = F(plan.price_bound)
            assert leg.limit_price <= bound if side == "BUY" else leg.limit_price >= bound
        # The levels the leg takes (a prefix of the book, through its limit) hold its notional.
        left, cost = q, F(0)
        for p, lq in v.levels:
            if (p > leg.limit_price) if side == "BUY" else (p < leg.limit_price):
                break
            part = min(left, F(lq))
            cost += part * F(p)
            left -= part
        assert left == 0 and cost == n, "the leg's notional is the prefix it takes"
        assert _close(leg.average_price, n / q)
        assert F(leg.fee) == n * F(v.taker_fee)
        if v.capacity is not None:
            assert _cap_cost(v, q, n) <= F(v.capacity), "no venue over its capacity"
        total_qty += q
        total_notional += n
        total_fee += F(leg.fee)
    assert F(plan.quantity) == total_qty <= F(quantity)
    assert F(plan.unfilled) == F(quantity) - total_qty
    assert F(plan.fees) == total_fee
    assert (plan.limited_by is None) == (plan.unfilled == 0)
    if total_qty:
        assert _close(plan.average_price, total_notional / total_qty)
        net = (total_notional + total_fee if side == "BUY" else total_notional - total_fee)
        assert _close(plan.net_average_price, net / total_qty)
        if arrival_mid is not None:
            mid = F(arrival_mid)
            avg = total_notional / total_qty
            slip = (avg - mid if side == "BUY" else mid - avg) / mid * 10000
            assert abs(F(plan.slippage_bps) - slip) < F(1, 10**18)
    else:
        assert plan.average_price is None and plan.net_average_price is None
    # Never worse than the best single venue when it fills no more than the plan.
    if plan.best_single_venue is not None:
        single = plan_order(side, quantity, [by_venue[plan.best_single_venue]], **kwargs)
        if single.quantity == plan.quantity:
            better_or_same = (
                plan.net_average_price <= single.net_average_price
                if side == "BUY"
                else plan.net_average_price >= single.net_average_price
            )
            assert better_or_same
        assert single.quantity <= plan.quantity


def assert_matches(plan: Plan, expected: dict):
    got = [(leg.venue, F(leg.quantity), F(leg.notional), F(leg.limit_price)) for leg in plan.legs]
    assert got == expected["legs"]
    assert (None if plan.price_bound is None else F(plan.price_bound)) == expected["bound"]
    assert plan.limited_by == expected["limited_by"]
    assert plan.best_single_venue == expected["single"]
    if expected["single_net"] is None:
        assert plan.best_single_net_price is None
    else:
        assert _close(plan.best_single_net_price, expected["single_net"])


# ---------------------------------------------------------------- random books


TICKS = ("0.01", "0.1", "0.5", "1")
LOTS = ("0.001", "0.01", "0.1", "0.25", "1")
FEES = ("0", "0.0001", "0.0002", "0.0004", "0.001", "0.003")


def random_case(rng: random.Random, dense: bool = False):
    """A random order and books. ``dense``: 3 to 7 venues with deep books and orders that
    walk them (many legs); else anything from no venue to six, thin books, odd minimums."""
    side = rng.choice(("BUY", "SELL"))
    fair = D(rng.choice((100, 2500, 60000)))
    venues = []
    n_venues = rng.randint(3, 7) if dense else rng.choice((0, 1, 2, 3, 3, 4, 4, 5, 6))
    for i in range(n_venues):
        tick, lot = D(rng.choice(TICKS)), D(rng.choice(LOTS[:3] if dense else LOTS))
        # Each venue sits a little off the fair price: now and then across the others' quotes.
        off = D(rng.randint(-40, 40)) * tick
        start = (fair + off + D(rng.randint(0, 3)) * tick * (1 if side == "BUY" else -1))
        levels, price = [], start
        for _ in range(rng.randint(20, 40) if dense else rng.choice((0, 1, 5, 8, 12, 15))):
            units = rng.randint(0, 30)
            qty = lot * units
            if rng.random() < 0.15:  # a level off the lot (contracts converted, odd sizes)
                qty += lot * D(rng.randint(1, 9)) / 10
            levels.append((price, qty))
            step = tick * rng.randint(1, 4)
            price = price + step if side == "BUY" else price - step
            if price <= 0:
                break
        kind = rng.choice(("quote", "base", "margin")) if rng.random() < 0.5 else "quote"
        cap = None
        if rng.random() < 0.5:
            if kind == "base":
                cap = lot * rng.randint(0, 60) + D(rng.randint(0, 9)) * lot / 10
            else:
                cap = D(rng.randint(0, 40)) * fair * lot * D(rng.choice(("0.3", "1", "1.7")))
        venues.append(
            VenueInput(
                venue=f"V{i}",
                market=f"V{i}-SPOT-BTC-USDT",
                levels=levels,
                taker_fee=D(rng.choice(FEES)),
                tick=tick,
                lot=lot,
                min_quantity=lot * rng.choice((0, 0, 1, 3, 10)),
                min_notional=D(rng.choice((0, 0, 5, 10, 100, 1000))),
                capacity=cap,
                capacity_kind=kind,
                leverage=D(rng.choice((1, 2, 3, 10, 20))),
            )
        )
    quantity = D(rng.choice(LOTS)) * rng.randint(1, 80)
    if dense:
        quantity = D("0.01") * rng.randint(1, 20 * len(venues) * 30)
    if rng.random() < 0.2:
        quantity += D("0.0005")  # not on any lot: dust no venue can take
    kwargs = {}
    if rng.random() < 0.3:
        kwargs["limit_price"] = fair + D(rng.randint(-10, 60)) * D("0.5") * (
            1 if side == "BUY" else -1
        )
    if rng.random() < 0.5:
        kwargs["arrival_mid"] = fair + D(rng.randint(-20, 20)) * D("0.05")
        if rng.random() < 0.7:
            kwargs["max_slippage_bps"] = D(rng.choice((0, 1, 5, 20, 100, 1000)))
    return side, quantity, venues, kwargs


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_plans_equal_an_independent_water_fill(seed, dense):
    rng = random.Random(1100 + seed + 100 * dense)
    limited = set()
    for _ in range(50 if dense else 100):  # several hundred cases in all
        side, quantity, venues, kwargs = random_case(rng, dense)
        plan = plan_order(side, quantity, venues, **kwargs)
        assert_matches(plan, oracle(side, quantity, venues, **kwargs))
        check_invariants(plan, side, quantity, venues, kwargs)
        limited.add(plan.limited_by)
    assert len(limited) >= 4  # the cases reach the different reasons


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_property_random_books(seed):
    side, quantity, venues, kwargs = random_case(random.Random(seed))
    plan = plan_order(side, quantity, venues, **kwargs)
    check_invariants(plan, side, quantity, venues, kwargs)
    assert_matches(plan, oracle(side, quantity, venues, **kwargs))


# ---------------------------------------------------------------- optimality, exhaustively


def _exhaustive_best(side, venues, lot, target_units):
    """The cheapest net total over every way of taking ``target_units`` lots as book prefixes
    (each venue within its capacity). Greedy by fee-adjusted price is optimal here: one lot
    size, no minimums."""
    options = []
    for v in venues:
        units = _units(v)
        opts = [(0, F(0))]
        n = F(0)
        for k, (_, un) in enumerate(units, start=1):
            n += un
            if v.capacity is not None and _cap_cost(v, k * lot, n) > F(v.capacity):
                break
            fee = n * F(v.taker_fee)
            opts.append((k, n + fee if side == "BUY" else fee - n))
        options.append(opts)
    best = {0: F(0)}
    for opts in options:
        nxt: dict[int, F] = {}
        for have, cost in best.items():
            for k, c in opts:
                if have + k <= target_units:
                    if have + k not in nxt or cost + c < nxt[have + k]:
                        nxt[have + k] = cost + c
        best = nxt
    return best.get(target_units)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_is_optimal_with_one_lot_and_no_minimums(seed):
    rng = random.Random(7700 + seed)
    for _ in range(60):
        side, quantity, venues, _ = random_case(rng)
        lot = D("0.1")
        venues = [
            VenueInput(v.venue, v.market, [(p, (q // lot) * lot) for p, q in v.levels],
                       v.taker_fee, v.tick, lot, capacity=v.capacity,
                       capacity_kind=v.capacity_kind, leverage=v.leverage)
            for v in venues
        ]
        quantity = lot * rng.randint(1, 40)
        plan = plan_order(side, quantity, venues)
        if not plan.legs:
            continue
        net = sum(
            (F(leg.notional) * (1 + F(by.taker_fee)) if side == "BUY"
             else F(leg.notional) * (F(by.taker_fee) - 1))
            for leg in plan.legs
            for by in venues
            if by.venue == leg.venue
        )
        units = int(F(plan.quantity) / F(lot))
        assert net == _exhaustive_best(side, venues, F(lot), units)
