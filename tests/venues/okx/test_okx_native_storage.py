"""The compiled OKX core's level storage (``_okxbook.c``: one flat array a side, best level
last) against the Python core's sorted lists, state compared after every step (prices bit for
bit, texts, top 25, checksum, the changes): a side emptied and refilled many times, 10k levels
inserted, resized, and deleted in random order, deletes of absent levels below, above and
between every pair of levels, and the best and worst levels churned (the ends of the array).

Skipped when the extension is not built here, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import random
import struct

from tests.venues.native_cores import require_native

from astra.venues.okx import book

_okxbook = require_native("astra.venues.okx._okxbook")


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _levels(levels) -> bytes:
    return ("[" + ",".join(f'["{p}","{s}","0","1"]' for p, s in levels) + "]").encode()


class _Pair:
    """A C book and a Python book fed the same messages, compared after each."""

    def __init__(self) -> None:
        self.c, self.py = _okxbook.Book(), book.PyBook()

    def step(self, method: str, bids, asks) -> None:
        b, a = _levels(bids), _levels(asks)
        c = getattr(self.c, method)(b, a)
        py = getattr(self.py, method)(b, a)
        for c_side, py_side in zip(c, py, strict=True):
            assert [(_bits(p), _bits(q)) for p, q in c_side] == [
                (_bits(p), _bits(q)) for p, q in py_side
            ]
        self.check()

    def check(self) -> None:
        for name in ("bids", "asks"):
            c, py = getattr(self.c, name), getattr(self.py, name)
            assert [_bits(p) for p in c.prices] == [_bits(p) for p in py.prices], name
            assert c.texts == py.texts and c.top() == py.top() and len(c) == len(py), name
        assert self.c.checksum() == self.py.checksum()


def test_a_side_emptied_and_refilled():
    pair = _Pair()
    rng = random.Random(7)
    for round_ in range(30):
        prices = rng.sample(range(1, 500), rng.randint(1, 120))
        pair.step(
            "apply", [(p, rng.randint(1, 9)) for p in prices], [(p + 1000, 1) for p in prices]
        )
        # Emptied (every level deleted, in a random order), then refilled by the next round.
        rng.shuffle(prices)
        pair.step("apply", [(p, 0) for p in prices], [(p + 1000, "0") for p in prices])
        assert len(pair.c.bids) == 0 and len(pair.c.asks) == 0, round_
    pair.step("load", [(5, 1), (4, 1)], [(6, 1), (7, 1)])  # a snapshot after it all


def test_ten_thousand_levels_inserted_resized_and_deleted_in_random_order():
    pair = _Pair()
    rng = random.Random(11)
    prices = list(range(1, 10_001))
    rng.shuffle(prices)
    for k in range(0, 10_000, 500):  # inserts, 500 a message
        chunk = prices[k : k + 500]
        pair.step("apply", [(p, 1) for p in chunk], [(p + 20_000, 2) for p in chunk])
    rng.shuffle(prices)
    pair.step("apply", [(p, "3.25") for p in prices[:2000]], [])  # resizes
    rng.shuffle(prices)
    for k in range(0, 10_000, 1000):  # deletes
        chunk = prices[k : k + 1000]
        pair.step("apply", [(p, 0) for p in chunk], [(p + 20_000, 0) for p in chunk])
    assert len(pair.py.bids) == 0 and len(pair.py.asks) == 0


def test_deletes_of_absent_levels_everywhere():
    pair = _Pair()
    present = list(range(10, 200, 2))  # even prices
    pair.step("load", [(p, 1) for p in reversed(present)], [(p, 1) for p in present])
    absent = [1, 5, 9, *range(11, 200, 2), 200, 201, 10_000, "9.5", "10.0001"]
    pair.step("apply", [(p, 0) for p in absent], [(p, 0) for p in absent])
    assert len(pair.py.bids) == len(present) and len(pair.py.asks) == len(present)


def test_the_best_and_worst_levels_churned():
    pair = _Pair()
    pair.step("load", [(p, 1) for p in range(300, 0, -1)], [(p, 1) for p in range(301, 601)])
    rng = random.Random(3)
    for _ in range(200):
        best_bid, best_ask = pair.py.bids.prices[-1], pair.py.asks.prices[0]
        worst_bid, worst_ask = pair.py.bids.prices[0], pair.py.asks.prices[-1]
        bids = [(int(best_bid), 0), (int(best_bid) + rng.randint(0, 2), 5), (int(worst_bid), 0)]
        asks = [(int(best_ask), 0), (int(best_ask) - rng.randint(0, 2), 5), (int(worst_ask), 0)]
        bids.append((int(worst_bid) - 1, 1))
        asks.append((int(worst_ask) + 1, 1))
        pair.step("apply", bids, asks)
