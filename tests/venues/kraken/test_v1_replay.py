"""The feed's book and CRC32 code on real Kraken sessions (WebSocket v1 ``book-1000``,
recorded 2021): every checksum the venue sent matches the rebuilt book, the book equals an
independent rebuild in exact decimals after every message, and a corrupted or dropped
message is caught by the next checksum.

v1 sends price/qty as text with a fixed number of places per pair; the feed's checksum
writes floats at the pair's precision. Fed the places the v1 text uses, it must reproduce
the venue's checksum exactly; that is the same code path v2 uses with ccxt's precision.
The checksum covers the top 10 levels of each side in v1 as in v2.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from astra.venues.kraken.feed import ChecksumMismatch, KrakenBook


def _places(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _precisions(messages) -> dict[str, tuple[int, int]]:
    """Per pair, the (price, qty) places its v1 text uses; one per pair, always."""
    seen = defaultdict(set)
    for m in messages:
        for p, q in m.asks + m.bids:
            seen[m.pair].add((_places(p), _places(q)))
    assert all(len(s) == 1 for s in seen.values()), seen
    return {pair: s.pop() for pair, s in seen.items()}


def _floats(levels):
    return [(float(p), float(q)) for p, q in levels]


def _decimals(side: dict, prices) -> dict:
    # repr() of a parsed float round-trips the venue's decimal text
    return {Decimal(repr(p)): Decimal(repr(side[p])) for p in prices if p in side}


def _assert_same(book: KrakenBook, ref, prices=None) -> None:
    """The book equals the reference at ``prices`` (all levels when None), and in size."""
    for name in ("bids", "asks"):
        side, want = getattr(book, name), getattr(ref, name)
        assert len(side) == len(want), name
        keys = side if prices is None else [Decimal(p) for p in prices]
        got = _decimals(side, [float(k) for k in keys])
        assert got == {Decimal(k): Decimal(want[k][1]) for k in got}, name
        assert all(Decimal(k) in got for k in keys if Decimal(k) in want), name


def _replay(messages, ref_book=None) -> dict[str, int]:
    """Feed every message through KrakenBook, verifying each checksum; returns the count
    verified per pair. With ``ref_book``, also rebuild independently and compare: the
    touched levels and side sizes after every message, everything after each snapshot and
    at the end (so the books are equal after every message, by induction)."""
    precisions = _precisions(messages)
    books: dict[str, KrakenBook] = {}
    refs = {}
    verified: dict[str, int] = defaultdict(int)
    for m in messages:
        if m.snapshot:
            books[m.pair] = KrakenBook(1000, *precisions[m.pair])
            books[m.pair].reset(_floats(m.bids), _floats(m.asks))
        elif m.pair not in books:
            continue
        else:
            books[m.pair].apply(_floats(m.bids), _floats(m.asks))
        if ref_book is not None:
            if m.snapshot:
                refs[m.pair] = ref_book()
            refs[m.pair].apply(m.asks, m.bids)
            touched = None if m.snapshot else [p for p, _ in m.asks + m.bids]
            _assert_same(books[m.pair], refs[m.pair], touched)
            if m.checksum is not None:
                assert refs[m.pair].checksum_v1() == m.checksum  # the reference agrees
        if m.checksum is not None:
            books[m.pair].verify(m.checksum)
            verified[m.pair] += 1
    for pair, ref in refs.items():
        _assert_same(books[pair], ref)
    return verified


def test_every_recorded_checksum_matches_the_rebuilt_book(v1_session, ref_book):
    messages, _ = v1_session("KRAKEN.ws.50.0")
    verified = _replay(messages, ref_book)
    assert len(verified) == 10 and min(verified.values()) >= 20
    assert sum(verified.values()) == sum(not m.snapshot for m in messages) == 4269


def test_the_trade_session_has_no_book_to_check(v1_session):
    # KRAKEN.ws.48.0 is the same run's trade connection (used by the gateway trade test)
    messages, trades = v1_session("KRAKEN.ws.48.0")
    assert messages == [] and len(trades) == 10


def _touches_top(messages, index, ref_book) -> bool:
    """Whether message ``index`` changes a level that is in the top 10 after it."""
    pair = messages[index].pair
    ref = ref_book()
    for m in messages[: index + 1]:
        if m.pair == pair:
            ref.apply(m.asks, m.bids)
    asks, bids = ref.top()
    top = {Decimal(p) for p, _ in asks + bids}
    m = messages[index]
    return any(Decimal(p) in top and Decimal(q) > 0 for p, q in m.asks + m.bids)


def _victim(messages, ref_book) -> int:
    """An update in the middle of the session that sets a top-10 level, whose pair's next
    message does not touch that price again (so the next checksum must see it)."""
    for i in range(len(messages) // 2, len(messages)):
        m = messages[i]
        if m.snapshot or not _touches_top(messages, i, ref_book):
            continue
        nxt = next((n for n in messages[i + 1 :] if n.pair == m.pair), None)
        prices = {p for p, _ in m.asks + m.bids}
        if nxt is not None and not prices & {p for p, _ in nxt.asks + nxt.bids}:
            return i
    raise AssertionError("no suitable message")


def test_a_corrupted_level_is_detected_at_that_message(v1_session, ref_book):
    messages, _ = v1_session("KRAKEN.ws.50.0")
    i = _victim(messages, ref_book)
    m = messages[i]
    levels = m.asks or m.bids
    p, q = levels[0]
    levels[0] = (p, f"{Decimal(q) + Decimal('0.00000001'):f}")  # one satoshi off
    with pytest.raises(ChecksumMismatch):
        _replay(messages[: i + 1])
    _replay(messages[:i])  # everything before still verifies


def test_a_dropped_message_is_detected_by_the_next_checksum(v1_session, ref_book):
    messages, _ = v1_session("KRAKEN.ws.50.0")
    i = _victim(messages, ref_book)
    del messages[i]
    with pytest.raises(ChecksumMismatch):
        _replay(messages)
