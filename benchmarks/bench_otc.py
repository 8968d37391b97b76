"""The OTC desk, measured on the three simulated venues in one run.

Three simulated venues (``SimCluster`` on loopback, clocks running, each venue's REST latency
as its profile says unless ``--no-latency``) and a gateway over them in this process, with the
desk's hedge accounts on each venue and one funded OTC account; one kept-alive connection.

1. Quote latency: ``POST /request-quote`` (pricing from the SMART books, signing, the quote
   stored) alternating with ``GET /orderbook?market=SMART-SPOT-BTC-USDT&depth=20`` (the
   consolidated book read, the nearest existing read path) over the same connection: median,
   p99 and their ratio; and ``price_quote`` alone (the pure pricing) in microseconds.
2. Accept to hedged: ``POST /accept-quote`` of a fresh quote, then the time until the trade's
   hedge is final (``HEDGED``: every leg filled through the router on the venues), polled in
   the store every millisecond: median and p99, next to the accept's own HTTP time.
3. The desk's realized result: a few hundred random requests (buying and selling BTC and ETH
   against USDT, a few BTC<->ETH through the bridge, sizes of 0.01-0.5 BTC / 0.1-5 ETH), each
   accepted at once and hedged at the default spread (10 bps): the result per trade in bps of
   its notional (median, p10, p90) and the total in USDT and bps of the total notional.

Usage: python benchmarks/bench_otc.py [--requests 300] [--quotes 300] [--seed 5] [--no-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered), ordered[int(len(ordered) * 0.1)],
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def _bench_pricing(n: int, seed: int) -> tuple[float, float]:
    """``price_quote`` alone on three members x 50 levels, a direct and a bridged pair."""
    from astra.otc.pricing import MemberLevels, PairBook, find_route, price_quote

    rng = random.Random(seed)

    def book(symbol: str, base: str, mid: float) -> PairBook:
        members = []
        for v in range(3):
            bids = tuple((Decimal(str(round(mid - 0.5 - i * 0.7 - v * 0.1, 2))),
                          Decimal(str(round(rng.uniform(0.01, 2), 4)))) for i in range(50))
            asks = tuple((Decimal(str(round(mid + 0.5 + i * 0.7 + v * 0.1, 2))),
                          Decimal(str(round(rng.uniform(0.01, 2), 4)))) for i in range(50))
            members.append(MemberLevels(venue=f"V{v}", bids=bids, asks=asks,
                                        taker_fee=Decimal("0.0004")))
        return PairBook(symbol=symbol, base=base, quote="USDT", members=tuple(members))

    books = {"SMART-SPOT-BTC-USDT": book("SMART-SPOT-BTC-USDT", "BTC", 97000),
             "SMART-SPOT-ETH-USDT": book("SMART-SPOT-ETH-USDT", "ETH", 3500)}
    markets = {("BTC", "USDT"): "SMART-SPOT-BTC-USDT", ("ETH", "USDT"): "SMART-SPOT-ETH-USDT"}
    dp = {"BTC": 8, "ETH": 8, "USDT": 6, "USDC": 6, "USD": 4}
    out = []
    for pair in (("BTC", "USDT"), ("ETH", "BTC")):
        route = find_route(*pair, markets)
        samples = []
        for _ in range(n):
            amount = Decimal(str(round(rng.uniform(0.01, 5), 4)))
            start = time.perf_counter()
            price_quote(*pair, route, books, from_amount=amount, markup_bps=Decimal(10),
                        precision=dp)
            samples.append((time.perf_counter() - start) * 1e6)
        out.append(statistics.median(samples))
    return out[0], out[1]


async def _run(args: argparse.Namespace, data_dir: str) -> dict:
    import aiohttp

    from astra.core.credentials import ExchangeCredentials
    from astra.server.gateway import Gateway
    from astra.sim import SimCluster
    from astra.sim.admin import parse_deposits
    from astra.store import ApiKeyStore, open_database
    from astra.trading.paper import LayeredCredentials
    from astra.venues import build_venue

    rng = random.Random(args.seed)
    keys = ApiKeyStore(open_database(data_dir=Path(data_dir)))
    token = keys.create("bench").token
    key_id = token.split(".")[0]
    out: dict = {"quote": [], "book": [], "accept": [], "hedged": [], "results": [],
                 "notional": [], "failed": 0, "refused": {}}
    async with SimCluster(3, args.seed, latency=not args.no_latency) as cluster:
        stored = LayeredCredentials()
        for code, exchange in cluster.exchanges.items():
            creds = exchange.create_account(parse_deposits(
                "USDT=100000000,BTC=2000,ETH=20000"))
            stored.add_default("otc-desk", ExchangeCredentials(
                exchange=code, private_key=creds.signerPrivateKey))
        venues = {code: build_venue(code, {"url": url}) for code, url in cluster.urls().items()}
        async with Gateway(venues, keys, port=0, metrics_port=0, credentials=stored) as gw:
            store = gw.desk.store
            account = store.create_account(key_id).account_id
            for asset, amount in (("USDT", "1000000000"), ("BTC", "10000"), ("ETH", "100000")):
                store.deposit(account, asset, Decimal(amount))
            async with asyncio.timeout(30):
                for market in ("SMART-SPOT-BTC-USDT", "SMART-SPOT-ETH-USDT"):
                    while True:
                        books = await gw.engine.member_books(market)
                        if all(m.state == "synced" for m in books.members):
                            break
                        await asyncio.sleep(0.05)
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(
                gw.base_url, connector=connector,
                headers={"x-astra-api-key": f"Bearer {token}"},
            ) as http:

                async def timed(method: str, path: str, **kw) -> tuple[float, dict | None]:
                    """(ms, body); body None for a refusal (counted: a size the books could
                    not take at that moment, INSUFFICIENT_LIQUIDITY)."""
                    start = time.perf_counter()
                    async with http.request(method, path, **kw) as resp:
                        body = await resp.json()
                    ms = (time.perf_counter() - start) * 1000
                    if resp.status != 200:
                        assert resp.status == 422, (path, body)
                        out["refused"][body["code"]] = out["refused"].get(body["code"], 0) + 1
                        return ms, None
                    return ms, body

                def request(i: int) -> dict:
                    pick = rng.random()
                    if pick < 0.1:  # through the bridge
                        pair = ("ETH", "BTC") if i % 2 else ("BTC", "ETH")
                        amount = round(rng.uniform(0.01, 0.3), 4) if pair[0] == "BTC" \
                            else round(rng.uniform(0.1, 3), 3)
                    else:
                        asset = "BTC" if pick < 0.6 else "ETH"
                        pair = (asset, "USDT") if i % 2 else ("USDT", asset)
                        size = rng.uniform(0.01, 0.5) if asset == "BTC" else rng.uniform(0.1, 5)
                        if pair[0] == asset:
                            amount = round(size, 4)
                        else:  # the client sells the asset: toAmount in it
                            return {"accountId": account, "fromAsset": pair[0],
                                    "toAsset": pair[1], "toAmount": round(size, 4)}
                    return {"accountId": account, "fromAsset": pair[0], "toAsset": pair[1],
                            "fromAmount": amount}

                # 1. quote latency next to the consolidated book read
                for i in range(args.warmup + args.quotes):
                    q_ms, quoted = await timed("POST", "/request-quote", json=request(i))
                    b_ms, _ = await timed("GET", "/orderbook",
                                          params={"market": "SMART-SPOT-BTC-USDT", "depth": "20"})
                    if i >= args.warmup and quoted is not None:
                        out["quote"].append(q_ms)
                        out["book"].append(b_ms)
                # 2 + 3. accept, then wait until hedged; the desk's result per trade
                for i in range(args.requests):
                    _, quoted = await timed("POST", "/request-quote", json=request(i))
                    if quoted is None:
                        continue
                    a_ms, accepted = await timed("POST", "/accept-quote",
                                                 json={"quote": quoted["quote"]})
                    trade_id = accepted["trade"]["tradeId"]
                    start = time.perf_counter()
                    async with asyncio.timeout(60):
                        while True:
                            trade = await asyncio.to_thread(store.trade, trade_id)
                            if trade.hedge_state != "PENDING":
                                break
                            await asyncio.sleep(0.001)
                    hedged_ms = (time.perf_counter() - start) * 1000 + a_ms
                    out["accept"].append(a_ms)
                    if trade.hedge_state != "HEDGED" or trade.result_bps is None:
                        out["failed"] += 1
                        continue
                    out["hedged"].append(hedged_ms)
                    out["results"].append((trade.result_bps, trade.result_home))
                    out["notional"].append(trade.home_notional)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="accepted and hedged")
    parser.add_argument("--quotes", type=int, default=300, help="quote latency samples")
    parser.add_argument("--pricing", type=int, default=2000, help="price_quote samples")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-latency", action="store_true",
                        help="the venues answer REST without their simulated latency")
    args = parser.parse_args()
    direct, bridged = _bench_pricing(args.pricing, args.seed)
    print(f"price_quote alone (3 members x 50 levels): direct pair median {direct:.0f} us, "
          f"through a bridge {bridged:.0f} us")
    with tempfile.TemporaryDirectory(prefix="bench-otc-", ignore_cleanup_errors=True) as tmp:
        r = asyncio.run(_run(args, tmp))
    q50, _, q99 = _summary(r["quote"])
    b50, _, b99 = _summary(r["book"])
    print(f"quote latency over {len(r['quote'])} requests, one connection "
          f"({'no simulated venue latency' if args.no_latency else 'venues with latency'}):")
    print(f"  POST /request-quote          p50 {q50:6.2f} ms   p99 {q99:6.2f} ms")
    print(f"  GET /orderbook SMART (ref.)  p50 {b50:6.2f} ms   p99 {b99:6.2f} ms")
    print(f"  ratio                        p50 {q50 / b50:.1f}x   p99 {q99 / b99:.1f}x")
    a50, _, a99 = _summary(r["accept"])
    h50, _, h99 = _summary(r["hedged"])
    if r["refused"]:
        print("  refused (the books too thin for the size at that moment): "
              + ", ".join(f"{n} {code}" for code, n in r["refused"].items()))
    print(f"accept and hedge over {len(r['accept'])} trades:")
    print(f"  POST /accept-quote           p50 {a50:6.2f} ms   p99 {a99:6.2f} ms")
    print(f"  accept -> hedged             p50 {h50:6.2f} ms   p99 {h99:6.2f} ms")
    bps = [float(b) for b, _ in r["results"]]
    m, p10, _ = _summary(bps)
    p90 = sorted(bps)[int(len(bps) * 0.9)]
    total = sum((h for _, h in r["results"]), Decimal(0))
    notional = sum(r["notional"], Decimal(0))
    print(f"desk result at the default 10 bps spread over {len(bps)} hedged trades "
          f"({r['failed']} not fully hedged):")
    print(f"  per trade: median {m:+.2f} bps, p10 {p10:+.2f}, p90 {p90:+.2f}")
    print(f"  total: {float(total):+,.2f} USDT on {float(notional):,.0f} USDT traded = "
          f"{float(total / notional * 10000):+.2f} bps")


if __name__ == "__main__":
    main()
