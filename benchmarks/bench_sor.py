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
3. Routed order latency against a single-venue ``POST /orders``: three simulated venues
   (``SimCluster`` on loopback, clock running, each venue answering REST after its profile's
   latency: SIM 0 ms, SIM2 1 ms, SIM3 3 ms) and a gateway with a paper account on each, all in
   this process on one event loop; N routed MARKET IOC orders on ``SMART-SPOT-BTC-USDT``
   (sizes of 1 to 25 typical maker orders, so one to three venues) alternate with N
   single-venue MARKET orders of the same size on ``SIM-SPOT-BTC-USDT``, over one kept-alive
   connection: median and p90 of each, their ratio, and each child leg's latency as the
   parent's report gives it (``latencyMs``: the order journal's send to the venue's answer).
   ``--no-latency`` measures once more with every venue's simulated latency off.

Usage: python benchmarks/bench_sor.py [--orders 300] [--plans 2000] [--seed 11]
       [--latency-orders 200] [--latency-warmup 10] [--no-latency] [--latency-only]
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


# ---------------------------------------------------------------- 3. routed latency


def _ms_summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


async def _routed_latency(args: argparse.Namespace, latency: bool, data_dir: str) -> dict:
    """Three simulated venues (clock running, each answering REST after its profile's
    latency unless ``latency`` is False) and a gateway with paper accounts on each, in this
    process; then ``args.latency_orders`` routed MARKET orders on SMART-SPOT-BTC-USDT
    alternating with as many single-venue MARKET orders on SIM-SPOT-BTC-USDT of the same
    size, one HTTP session (one kept-alive connection), sides alternating so balances hold."""
    import asyncio
    from pathlib import Path

    import aiohttp

    from astra.core.credentials import ExchangeCredentials
    from astra.server.gateway import Gateway
    from astra.sim import SimCluster
    from astra.sim.admin import parse_deposits
    from astra.store import ApiKeyStore, open_database
    from astra.trading.paper import LayeredCredentials
    from astra.venues import build_venue

    rng = random.Random(args.seed)
    keys = ApiKeyStore(open_database(data_dir=Path(data_dir)))  # keys and journals
    token = keys.create("bench").token
    key_id = token.split(".")[0]
    routed, single, legs, n_legs, rounds, filled = [], [], [], [], [], 0
    async with SimCluster(3, args.seed, latency=latency) as cluster:
        stored = LayeredCredentials()
        for code, exchange in cluster.exchanges.items():
            creds = exchange.create_account(parse_deposits("USDT=10000000,BTC=100"))
            stored.add_default(key_id, ExchangeCredentials(
                exchange=code, private_key=creds.signerPrivateKey))
        venues = {code: build_venue(code, {"url": url}) for code, url in cluster.urls().items()}
        async with Gateway(venues, keys, port=0, metrics_port=0, credentials=stored) as gw:
            async with asyncio.timeout(30):  # every member book in sync
                while True:
                    books = await gw.engine.member_books("SMART-SPOT-BTC-USDT")
                    if all(m.state == "synced" for m in books.members):
                        break
                    await asyncio.sleep(0.05)
            connector = aiohttp.TCPConnector(limit=1)  # one connection, reused throughout
            async with aiohttp.ClientSession(
                gw.base_url, connector=connector,
                headers={"x-astra-api-key": f"Bearer {token}"},
            ) as http:

                async def post(body: dict) -> tuple[float, dict]:
                    start = time.perf_counter()
                    async with http.post("/orders", json=body) as resp:
                        data = await resp.json()
                    elapsed = (time.perf_counter() - start) * 1000
                    assert resp.status == 200, data
                    return elapsed, data

                typical = 0.02  # BTC: SIM's typical maker order
                for i in range(args.latency_warmup + args.latency_orders):
                    side = "BUY" if i % 2 == 0 else "SELL"
                    qty = round(typical * rng.uniform(1, 25), 3)
                    order = {"side": side, "type": "MARKET", "quantity": qty}
                    r_ms, parent = await post({**order, "market": "SMART-SPOT-BTC-USDT",
                                               "timeInForce": "IOC"})
                    s_ms, _ = await post({**order, "market": "SIM-SPOT-BTC-USDT"})
                    if i < args.latency_warmup:  # connections, ccxt markets, caches
                        continue
                    routed.append(r_ms)
                    single.append(s_ms)
                    kids = [c for c in parent["children"] if c.get("latencyMs") is not None]
                    n_legs.append(len({c["venue"] for c in kids}))
                    legs.extend((c["venue"], c["latencyMs"]) for c in kids)
                    rounds.append(max((c["round"] for c in kids), default=0))
                    filled += parent["status"] == "FILLED"
        profiles = {code: ex.latency * 1000 for code, ex in cluster.exchanges.items()}
    return {"routed": routed, "single": single, "legs": legs, "n_legs": n_legs,
            "rounds": rounds, "filled": filled, "profiles": profiles}


def bench_routed_latency(args: argparse.Namespace, latency: bool = True) -> dict:
    import asyncio
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-sor-", ignore_cleanup_errors=True) as tmp:
        return asyncio.run(_routed_latency(args, latency, tmp))


def print_latency(r: dict, latency: bool, orders: int) -> None:
    lat = ", ".join(f"{c} {ms:g} ms" for c, ms in r["profiles"].items())
    what = (f"each venue's simulated REST latency on ({lat})" if latency
            else "no simulated REST latency (--no-latency)")
    print(f"routed order latency, {orders} MARKET orders on SMART-SPOT-BTC-USDT alternating "
          f"with {orders} on SIM-SPOT-BTC-USDT (same size, one connection; venues in this "
          f"process, clocks running; {what}):")
    r_med, r_p90 = _ms_summary(r["routed"])
    s_med, s_p90 = _ms_summary(r["single"])
    print(f"  routed (SMART)   median {r_med:7.2f} ms   p90 {r_p90:7.2f} ms")
    print(f"  single (SIM)     median {s_med:7.2f} ms   p90 {s_p90:7.2f} ms")
    print(f"  ratio            median {r_med / s_med:.1f}x   p90 {r_p90 / s_p90:.1f}x")
    counts = {k: r["n_legs"].count(k) for k in sorted(set(r["n_legs"]))}
    print("  venues per routed order: "
          + ", ".join(f"{k}: {v}" for k, v in counts.items())
          + f"; filled in full: {r['filled']} of {len(r['routed'])}")
    # A round short of the quantity (an IOC child meeting a book that moved since the
    # gateway's last diff) waits for the traded venues' next book update, then re-plans.
    for n in sorted(set(r["rounds"])):
        ms = [t for t, k in zip(r["routed"], r["rounds"], strict=True) if k == n]
        med, p90 = _ms_summary(ms)
        print(f"  routed in {n} round{'s' if n > 1 else ' '}  median {med:7.2f} ms   p90 "
              f"{p90:7.2f} ms   ({len(ms)} orders)")
    for code in r["profiles"]:
        ms = [v for c, v in r["legs"] if c == code]
        if ms:
            med, p90 = _ms_summary(ms)
            print(f"  leg on {code:<5} (child POST through the order journal) median "
                  f"{med:6.2f} ms   p90 {p90:6.2f} ms   over {len(ms)} legs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--plans", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--latency-orders", type=int, default=200,
                        help="routed and as many single-venue orders, alternating")
    parser.add_argument("--latency-warmup", type=int, default=10)
    parser.add_argument("--no-latency", action="store_true",
                        help="also measure with the venues' simulated REST latency off")
    parser.add_argument("--latency-only", action="store_true",
                        help="only part 3 (routed order latency)")
    args = parser.parse_args()
    if args.latency_only:
        for latency in (True, False) if args.no_latency else (True,):
            print_latency(bench_routed_latency(args, latency), latency, args.latency_orders)
        return

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
    for latency in (True, False) if args.no_latency else (True,):
        r = bench_routed_latency(args, latency)
        print_latency(r, latency, args.latency_orders)


if __name__ == "__main__":
    main()
