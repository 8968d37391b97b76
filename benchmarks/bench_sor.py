"""Smart order routing, measured side by side in one run.

1. Plan time: ``plan_order`` for 3 and 7 venues x 50 levels on random books (each venue a
   little off the others, its own fee, lot and balance), for orders that take a level or two,
   a few levels, or most of the consolidated book: median and p99 in microseconds.
2. What routing buys: a few hundred random marketable orders (spot and perpetual, both sides,
   sizes from one to forty times a typical maker order) against the three simulated venues'
   books (``SimCluster`` in this process, stepped without the clock, so the same seed gives
   the same books): the median improvement, in bps, of the routed net average price (fees
   included) over the best single venue's for the same size, and how often routing fills an
   order no single venue can.
3. Routed order latency against a single-venue ``POST /orders``: see
   ``bench_routed_latency`` (a hook; "not measured" until the router executes orders).

Usage: python benchmarks/bench_sor.py [--orders 300] [--plans 2000] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from decimal import Decimal

from astra.routing import VenueInput, consolidated_mid, plan_order

D = Decimal


# ---------------------------------------------------------------- 1. plan time


def random_books(rng: random.Random, venues: int, side: str, levels: int = 50):
    fair = 97000 + rng.uniform(-50, 50)
    out = []
    for v in range(venues):
        tick = D(rng.choice(("0.1", "0.01", "1")))
        lot = D(rng.choice(("0.001", "0.0001", "0.01")))
        price = D(str(round(fair + rng.uniform(-8, 8)))) + (tick if side == "BUY" else -tick)
        book = []
        for _ in range(levels):
            book.append((price, lot * rng.randint(1, 400)))
            step = tick * rng.randint(1, 20)
            price = price + step if side == "BUY" else price - step
        out.append(
            VenueInput(
                venue=f"V{v}",
                market=f"V{v}-SPOT-BTC-USDT",
                levels=book,
                taker_fee=D(rng.choice(("0.0002", "0.0004", "0.0005", "0.001"))),
                tick=tick,
                lot=lot,
                min_notional=D(5),
                capacity=D(rng.randint(200_000, 5_000_000)) if side == "BUY" else D(10),
                capacity_kind="quote" if side == "BUY" else "base",
            )
        )
    return out


def bench_plan(venues: int, quantity: str, plans: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed * 1000 + venues)
    cases = [
        (side, random_books(rng, venues, side))
        for side in (rng.choice(("BUY", "SELL")) for _ in range(50))
    ]
    times = []
    qty = D(quantity)
    for k in range(plans):
        side, books = cases[k % len(cases)]
        start = time.perf_counter_ns()
        plan_order(side, qty, books)
        times.append((time.perf_counter_ns() - start) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


# ---------------------------------------------------------------- 2. routed vs best single


def _units(value: int, dp: int) -> Decimal:
    return D(value).scaleb(-dp)


def sim_books(cluster, kind: str, symbol: str, side: str):
    """Each venue's book as the plan sees it (the side a ``side`` order takes), and the
    best bid and ask of each."""
    venues, bids, asks = [], [], []
    for code, exchange in cluster.exchanges.items():
        state = exchange.sides[kind].states[symbol]
        m = state.market
        b, a = state.engine.depth(50)
        bids.append(_units(b[0][0], m.price_dp) if b else None)
        asks.append(_units(a[0][0], m.price_dp) if a else None)
        levels = [(_units(p, m.price_dp), _units(q, m.qty_dp)) for p, q in (a if side == "BUY"
                                                                             else b)]
        venues.append(
            VenueInput(
                venue=code,
                market=f"{code}-{'PERP' if kind == 'perp' else 'SPOT'}-{m.base}-{m.quote}",
                levels=levels,
                taker_fee=D(exchange.sides[kind].trading.taker_ppm) / D(1_000_000),
                tick=_units(m.tick, m.price_dp),
                lot=_units(m.step, m.qty_dp),
                min_notional=D(m.min_notional),
            )
        )
    return venues, consolidated_mid(bids, asks)


def bench_improvement(orders: int, seed: int) -> dict:
    from astra.sim import SimCluster  # the benchmark, not the router, needs the simulator

    cluster = SimCluster(venues=3, seed=seed, clock=False, latency=False)
    rng = random.Random(seed)
    for _ in range(200):  # let the books and the venues' bases develop
        cluster.step()
    improvements, split, routed_more, slips = [], 0, 0, []
    markets = [(k, s) for k in ("spot", "perp") for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    for _ in range(orders):
        for _ in range(rng.randint(1, 40)):
            cluster.step()
        kind, symbol = rng.choice(markets)
        side = rng.choice(("BUY", "SELL"))
        venues, mid = sim_books(cluster, kind, symbol, side)
        m = cluster.exchanges["SIM"].sides[kind].states[symbol].market
        lot = max(v.lot for v in venues)
        size = _units(m.typical_size, m.qty_dp) * D(rng.uniform(1, 40))
        quantity = max(lot, (size // lot) * lot)
        plan = plan_order(side, quantity, venues, arrival_mid=mid)
        if not plan.legs:
            continue
        split += len(plan.legs) > 1
        alone = plan_order(side, quantity, [v for v in venues if v.venue ==
                                            plan.best_single_venue], arrival_mid=mid)
        if plan.quantity > alone.quantity:
            routed_more += 1
            continue
        single, routed = alone.net_average_price, plan.net_average_price
        better = (single - routed) if side == "BUY" else (routed - single)
        improvements.append(float(better / single * 10000))
        slips.append((float(plan.slippage_bps), float(alone.slippage_bps)))
    improvements.sort()
    return {
        "orders": orders,
        "compared": len(improvements),
        "median": statistics.median(improvements),
        "mean": statistics.fmean(improvements),
        "p90": improvements[int(len(improvements) * 0.9)],
        "split": split,
        "routed_more": routed_more,
        "slip_routed": statistics.median(s[0] for s in slips),
        "slip_single": statistics.median(s[1] for s in slips),
    }


# ---------------------------------------------------------------- 3. routed latency (hook)


def bench_routed_latency(args: argparse.Namespace) -> tuple[float, float] | None:
    """HOOK, to be filled once ``SmartRouter`` executes orders (helper D / the integrator):
    start ``astra serve`` with its three simulated venues in a child process (as
    ``bench_sim.run_live`` starts the simulator), then time, side by side, N marketable
    ``POST /orders`` on ``SMART-SPOT-BTC-USDT`` (routed: plan, children in parallel,
    reconcile) and N on ``SIM-SPOT-BTC-USDT`` (one venue), and return (routed median ms,
    single median ms). Until then it returns ``None`` and the table says "not measured":
    no figure is faked."""
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--plans", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    print("plan time, plan_order on random books x 50 levels (Decimal, pure):")
    print(f"  {'venues':>6}  {'order':>22}  {'median µs':>10}  {'p99 µs':>8}")
    sizes = (("0.05", "a level or two"), ("2", "a few levels"), ("40", "most of the book"))
    for venues in (3, 7):
        for qty, what in sizes:
            med, p99 = bench_plan(venues, qty, args.plans, args.seed)
            print(f"  {venues:>6}  {qty + ' BTC (' + what + ')':>22}  {med:>10.1f}  {p99:>8.1f}")

    r = bench_improvement(args.orders, args.seed)
    print(
        f"routed vs best single venue, {r['orders']} random marketable orders on SIM, SIM2, "
        f"SIM3 (in-process, seed {args.seed}):"
    )
    print(
        f"  net price improvement (fees in), same size: median {r['median']:.2f} bp, "
        f"mean {r['mean']:.2f} bp, p90 {r['p90']:.2f} bp over {r['compared']} orders"
    )
    print(
        f"  split across venues: {r['split']}; filled by routing but by no single venue: "
        f"{r['routed_more']}"
    )
    print(
        f"  slippage vs arrival consolidated mid (median): routed {r['slip_routed']:.2f} bp, "
        f"best single venue {r['slip_single']:.2f} bp"
    )
    latency = bench_routed_latency(args)
    if latency is None:
        print("routed order latency vs single-venue POST /orders: not measured "
              "(the router does not execute orders yet; see bench_routed_latency)")
    else:
        routed, single = latency
        print(f"routed order latency: median {routed:.2f} ms vs single-venue POST /orders "
              f"{single:.2f} ms ({routed / single:.1f}x)")


if __name__ == "__main__":
    main()
