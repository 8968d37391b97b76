"""The incremental structure behind Kraken's checksum (``kraken/book.py``): sorted key lists
kept by bisect, per-side cached top-10 bytes, per-level cached texts written by integer
scaling. Compared with from-scratch sorts of plain dicts and an exact-decimal checksum: on
random update sequences (hypothesis), at the edge of the top 10, beyond it, and after a
mismatch."""

from __future__ import annotations

import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra.venues.kraken.book import ChecksumMismatch, KrakenBook, checksum_of

PRICE_DP, QTY_DP = 2, 8


def _strip(text: str) -> str:
    return text.replace(".", "").lstrip("0")


class PlainBook:
    """Plain dicts, sorted from scratch on every read; the checksum from exact decimals."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q > 0:
                    side[p] = q
                else:
                    side.pop(p, None)
        for side, worst in ((self.asks, max), (self.bids, min)):
            while len(side) > self.depth:
                del side[worst(side)]

    def top(self, n: int = 10):
        return (
            [(p, self.bids[p]) for p in sorted(self.bids, reverse=True)[:n]],
            [(p, self.asks[p]) for p in sorted(self.asks)[:n]],
        )

    def checksum(self) -> int:
        bids, asks = self.top()
        text = "".join(
            _strip(f"{Decimal(repr(p)):.{PRICE_DP}f}") + _strip(f"{Decimal(repr(q)):.{QTY_DP}f}")
            for p, q in asks + bids
        )
        return zlib.crc32(text.encode())


def _price(i: int) -> float:
    return float(Decimal(10_000 + i) / 100)  # 100.00 .. with two places, like a tick grid


_qty = st.sampled_from([0.0, 0.0, 1.0, 0.5, 0.00012345, 12.3456789, 1500.0])
_level = st.tuples(st.integers(0, 60), _qty)
_side = st.lists(_level, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    depth=st.sampled_from([10, 15, 25]),
    snapshot=st.tuples(st.lists(_level, max_size=40), st.lists(_level, max_size=40)),
    messages=st.lists(st.tuples(_side, _side), max_size=30),
)
def test_random_updates_keep_the_top_and_checksum_equal_to_a_from_scratch_sort(
    depth, snapshot, messages
):
    book, plain = KrakenBook(depth, PRICE_DP, QTY_DP), PlainBook(depth)
    # Kraken sends a bid grid below the ask grid; the same indexes on both sides are fine
    # for the structure (it never assumes an uncrossed book).
    bids = [(_price(i), q) for i, q in snapshot[0]]
    asks = [(_price(i), q) for i, q in snapshot[1]]
    book.reset(list(bids), list(asks))
    plain.apply(bids, asks)
    assert book.checksum() == plain.checksum()
    for bid_levels, ask_levels in messages:
        bids = [(_price(i), q) for i, q in bid_levels]
        asks = [(_price(i), q) for i, q in ask_levels]
        book.apply(list(bids), list(asks))
        plain.apply(bids, asks)
        assert book.top() == plain.top()
        assert book.checksum() == plain.checksum()
        book.verify(plain.checksum())
        assert book.bids == plain.bids and book.asks == plain.asks
    assert book.verified == len(messages)


def _deep() -> tuple[KrakenBook, PlainBook]:
    """14 levels a side: more than the checksum's 10."""
    bids = [(_price(50 - i), float(i + 1)) for i in range(14)]
    asks = [(_price(51 + i), float(i + 1)) for i in range(14)]
    book, plain = KrakenBook(1000, PRICE_DP, QTY_DP), PlainBook(1000)
    book.reset(list(bids), list(asks))
    plain.apply(bids, asks)
    return book, plain


def test_a_level_deleted_inside_the_top_10_brings_the_11th_into_the_checksum():
    book, plain = _deep()
    before = book.checksum()
    assert book.top()[1][-1] == (_price(60), 10.0)
    book.apply([], [(_price(53), 0.0)])  # the third best ask goes
    plain.apply([], [(_price(53), 0.0)])
    assert book.top()[1][-1] == (_price(61), 11.0)  # the 11th is now in
    assert book.checksum() == plain.checksum() != before
    book.verify(plain.checksum())


def test_a_change_beyond_the_top_10_keeps_the_checksum_and_the_book_right():
    book, plain = _deep()
    before = book.checksum()
    changes = [(_price(38), 7.25), (_price(10), 3.0)]  # the 13th best bid, and a new deep one
    assert book.apply(list(changes), []) == (changes, [])
    plain.apply(changes, [])
    assert book.checksum() == before == plain.checksum()
    assert book.bids == plain.bids


def test_a_wrong_size_fails_the_checksum_and_a_later_right_one_passes():
    book, plain = _deep()
    plain.apply([(_price(49), 2.5)], [])
    book.apply([(_price(49), 2.25)], [])  # the second best bid, with a size the venue never had
    with pytest.raises(ChecksumMismatch):
        book.verify(plain.checksum())
    book.apply([(_price(49), 2.5)], [])
    book.verify(plain.checksum())


def test_the_cached_texts_match_the_formatted_checksum_of_the_docs_guide():
    # checksum_of writes every level afresh; the book caches texts per level and per side.
    asks = [(45285.2, 0.001), (45286.4, 1.54571953), (45286.6, 1.54571109)]
    bids = [(45283.5, 0.1), (45283.4, 1.54582015), (45282.1, 0.00000001)]
    book = KrakenBook(1000, 1, 8)
    book.reset(list(bids), list(asks))
    assert book.checksum() == checksum_of(asks, bids, 1, 8)
    book.apply([(45282.1, 0.0)], [(45286.4, 2.0)])
    asks[1], bids = (45286.4, 2.0), bids[:2]
    assert book.checksum() == checksum_of(asks, bids, 1, 8)


def test_the_parallel_lists_stay_aligned_through_inserts_deletes_and_truncation():
    # keys / quantities / texts move together: after a burst of inserts, deletes and a
    # truncation, each level's cached text is still its own (the checksum agrees with a
    # from-scratch one) and every truncated level was reported as a delete.
    book, plain = KrakenBook(12, PRICE_DP, QTY_DP), PlainBook(12)
    first = [(_price(40 - i), float(i + 1)) for i in range(12)]
    book.reset([], list(first))
    plain.apply([], first)
    book.checksum()  # every top text written
    changes = [(_price(20), 9.5), (_price(35), 0.0), (_price(29), 4.0), (_price(18), 1.25)]
    _, asks = book.apply([], list(changes))
    plain.apply([], changes)
    assert asks[: len(changes)] == changes
    dropped = {p for p, q in asks[len(changes) :]}
    # 12 levels, one deleted, two new: the worst ask (100.40) no longer fits
    assert all(q == 0.0 for _, q in asks[len(changes) :]) and dropped == {_price(40)}
    assert book.asks == plain.asks and len(book.asks) == 12
    assert book.top() == plain.top() and book.checksum() == plain.checksum()
    l2 = book.to_l2book("KRAKEN-SPOT-X-Y", 7, 1)
    assert l2.asks == plain.asks and l2.bids == {} and l2.update_id == 7
