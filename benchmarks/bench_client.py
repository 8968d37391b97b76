"""The SDK's local book against ccxt.pro's, side by side in one run, on the same frames.

The frames are the gateway's own ``WS /ws`` ORDERBOOK messages (encoded by the server's
``BookUpdate``): a snapshot of ``LEVELS`` levels a side, then ``UPDATES`` deltas of 1 to 4
levels each (a quarter of them deletes), every one chained by ``prevUpdateId``. Each side does
what a client does per message: decode, check continuity, apply, and read the best bid and ask.
- astra: ``astra.client.LocalBook.apply(frame)``, then ``best_bid``/``best_ask``;
- ccxt.pro: ``json.loads``, the nonce check its handlers make, ``OrderBookSide.store`` per
  level (ccxt.pro's own order book, sorted arrays), then ``bids[0]``/``asks[0]``;
- floor: ``json.loads`` and two dict writes per level (no continuity check, no sorted view).
Best of ``ROUNDS`` runs each, alternated; ratios are what to read on this noisy machine.

Usage: python benchmarks/bench_client.py [updates]
"""

from __future__ import annotations

import json
import random
import sys
import time

from ccxt.async_support.base.ws.order_book import OrderBook

from astra.client import LocalBook
from astra.core import BookUpdate, Level

LEVELS = 200
UPDATES = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
ROUNDS = 5
MARKET = "SIM-SPOT-BTC-USDT"


def frames() -> list[bytes]:
    import msgspec

    rng = random.Random(7)
    encode = msgspec.json.Encoder().encode
    bids = {round(97_000 - i * 0.5, 1): round(rng.uniform(0.01, 2), 5) for i in range(LEVELS)}
    asks = {round(97_000.5 + i * 0.5, 1): round(rng.uniform(0.01, 2), 5) for i in range(LEVELS)}
    out = [encode(BookUpdate(type="snapshot", market=MARKET, update_id=1,
                             bids=[Level(p, q) for p, q in bids.items()],
                             asks=[Level(p, q) for p, q in asks.items()], timestamp=1))]
    uid = 1
    for _ in range(UPDATES):
        sides: dict[str, list[Level]] = {"bids": [], "asks": []}
        for _ in range(rng.randint(1, 4)):
            side = rng.choice(("bids", "asks"))
            book = bids if side == "bids" else asks
            if book and rng.random() < 0.25:
                price = rng.choice(list(book))
                del book[price]
                sides[side].append(Level(price, 0.0))
            else:
                step = rng.randint(0, LEVELS)
                price = round(97_000 - step * 0.5, 1) if side == "bids" else \
                    round(97_000.5 + step * 0.5, 1)
                book[price] = qty = round(rng.uniform(0.01, 2), 5)
                sides[side].append(Level(price, qty))
        prev, uid = uid, uid + rng.randint(1, 3)
        out.append(encode(BookUpdate(type="update", market=MARKET, update_id=uid,
                                     bids=sides["bids"], asks=sides["asks"], timestamp=uid,
                                     prev_update_id=prev)))
    return out


def run_astra(msgs: list[bytes]) -> tuple[float, tuple]:
    book = LocalBook(MARKET)
    start = time.perf_counter()
    for raw in msgs:
        book.apply(raw)
        top = (book.best_bid, book.best_ask)
    return time.perf_counter() - start, top


def run_ccxt(msgs: list[bytes]) -> tuple[float, tuple]:
    start = time.perf_counter()
    book = None
    for raw in msgs:
        msg = json.loads(raw)
        if msg["type"] == "snapshot":
            book = OrderBook({"bids": [[lv["price"], lv["quantity"]] for lv in msg["bids"]],
                              "asks": [[lv["price"], lv["quantity"]] for lv in msg["asks"]],
                              "nonce": msg["updateId"]})
            continue
        if msg["prevUpdateId"] != book["nonce"]:  # what ccxt.pro's handlers check per venue
            raise AssertionError("gap")
        bids, asks = book["bids"], book["asks"]
        for lv in msg["bids"]:
            bids.store(lv["price"], lv["quantity"])
        for lv in msg["asks"]:
            asks.store(lv["price"], lv["quantity"])
        book["nonce"] = msg["updateId"]
        top = (tuple(bids[0]), tuple(asks[0]))
    return time.perf_counter() - start, top


def run_floor(msgs: list[bytes]) -> tuple[float, tuple]:
    start = time.perf_counter()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for raw in msgs:
        msg = json.loads(raw)
        for lv in msg["bids"]:
            bids[lv["price"]] = lv["quantity"]
        for lv in msg["asks"]:
            asks[lv["price"]] = lv["quantity"]
    return time.perf_counter() - start, ()


def main() -> None:
    msgs = frames()
    best = {"astra": float("inf"), "ccxt.pro": float("inf"), "floor": float("inf")}
    tops = {}
    for _ in range(ROUNDS):
        for name, fn in (("astra", run_astra), ("ccxt.pro", run_ccxt), ("floor", run_floor)):
            took, top = fn(msgs)
            best[name] = min(best[name], took)
            tops[name] = top
    assert tops["astra"] == tops["ccxt.pro"], tops  # both books agree at the end
    n = len(msgs)
    print(f"{n:,} gateway ORDERBOOK frames ({LEVELS} levels a side, 1-4 changes each), "
          f"best of {ROUNDS}")
    for name, took in best.items():
        print(f"  {name:9s} {n / took:>12,.0f} msgs/s  {took / n * 1e6:6.2f} us/msg")
    print(f"  astra / ccxt.pro: {best['ccxt.pro'] / best['astra']:.2f}x   "
          f"astra / floor (json + dicts, no checks, no sorted view): "
          f"{best['floor'] / best['astra']:.2f}x")


if __name__ == "__main__":
    main()
