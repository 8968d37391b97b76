"""HTX swap ``depth.step0`` books (coin- and USDT-margined share the format): ``version`` and
``id`` are the push's epoch second, shared by every push within it, and ``mrid`` orders the
pushes. Every push must reach the book: on the recorded swap sessions the book after each
push equals that push's own levels (parsed independently, as decimals), and on samples
shaped like HTX's documented update several pushes of one second are each applied, a stale
lower ``mrid`` is dropped and an ``mrid`` that restarts in a later second is a resync."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import msgspec
import pytest

from astra.venues.book import L2Book
from astra.venues.htx.feed import FullBookDiff, VersionRegressed, gunzip
from astra.venues.htx.schemas import DepthMessage, DepthTick

decode_depth = msgspec.json.Decoder(DepthMessage, strict=False).decode


def _decimal_levels(tick: dict) -> dict:
    return {
        side: {Decimal(str(p)): Decimal(str(q)) for p, q in tick[side] if q > 0}
        for side in ("bids", "asks")
    }


def _book_as_decimals(book: L2Book) -> dict:
    # repr() of a parsed float round-trips the venue's decimal text.
    return {
        "bids": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.bids.items()},
        "asks": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.asks.items()},
    }


def test_recorded_swap_pushes_share_their_version_and_mrid_orders_them(swap_recording):
    topics = swap_recording.depth_topics()
    assert len(topics) == 5
    pushes = shared = restated = 0
    for frames in topics.values():
        ticks = [json.loads(gunzip(raw), parse_float=Decimal)["tick"] for raw, _ in frames]
        for tick in ticks:  # version and id: the second the book was taken in
            assert tick["version"] == tick["id"] == tick["ts"] // 1000
        for prev, tick in itertools.pairwise(ticks):
            assert tick["mrid"] >= prev["mrid"]
            shared += tick["version"] == prev["version"]
            if tick["mrid"] == prev["mrid"]:  # the same match state: the same book again
                assert (tick["bids"], tick["asks"]) == (prev["bids"], prev["asks"])
                restated += 1
        pushes += len(ticks)
    assert shared > pushes * 3 // 4  # most pushes repeat the previous push's version
    assert restated < pushes // 10


def test_every_recorded_swap_push_is_applied_and_the_book_equals_it(swap_recording):
    pushes = updates = changed = 0
    for topic, frames in swap_recording.depth_topics().items():
        diff, book, previous = FullBookDiff(), None, None
        for raw, _ in frames:
            tick = decode_depth(gunzip(raw)).tick
            if book is None:  # the first push is the snapshot handed to the sink
                book = L2Book(topic)
                book.reset(*diff.load(tick), diff.seq, tick.ts)
            else:
                bids, asks = diff.changes(tick)  # never None: no push is stale here
                if bids or asks:
                    book.apply(bids, asks, diff.seq, tick.ts)  # what the sink does
                    updates += 1
                    assert book.update_id == tick.mrid  # not the version, shared by many
            # The book after this push is this push, parsed independently (text -> Decimal).
            expect = _decimal_levels(json.loads(gunzip(raw), parse_float=Decimal)["tick"])
            assert _book_as_decimals(book) == expect, (topic, tick.mrid)
            changed += previous is not None and expect != previous
            previous = expect
            pushes += 1
    assert updates == changed > pushes * 4 // 5  # one update per changed book, none lost


# Shaped like HTX's documented update (``market.BTC-USDT.depth.step6`` example): ``id`` and
# ``version`` the epoch second, ``ts`` in ms, ``mrid`` increasing.
SECOND = 1603707576


def _push(mrid: int, second: int, ms: int, bids: list, asks: list) -> DepthTick:
    return DepthTick.of(bids, asks, version=second, mrid=mrid, ts=second * 1000 + ms)


def test_pushes_sharing_a_version_are_each_applied_in_mrid_order():
    diff = FullBookDiff()
    diff.load(_push(131596447, SECOND, 467, [(13071.9, 38.0), (13068.0, 5.0)], [(13081.9, 197.0)]))
    steps = [
        (
            _push(131596452, SECOND, 567, [(13071.9, 40.0), (13068.0, 5.0)], [(13081.9, 197.0)]),
            ([(13071.9, 40.0)], []),
        ),
        (
            _push(131596460, SECOND, 667, [(13068.0, 5.0)], [(13081.9, 150.0), (13099.7, 371.0)]),
            ([(13071.9, 0.0)], [(13081.9, 150.0), (13099.7, 371.0)]),
        ),
        (
            _push(131596471, SECOND + 1, 67, [(13068.0, 5.0)], [(13099.7, 371.0)]),
            ([], [(13081.9, 0.0)]),
        ),
    ]
    for tick, (bids, asks) in steps:
        assert diff.changes(tick) == (bids, asks)
        assert diff.seq == tick.mrid
    assert diff.levels() == ([(13068.0, 5.0)], [(13099.7, 371.0)])


def test_a_restated_push_changes_nothing_and_a_stale_one_is_dropped():
    diff = FullBookDiff()
    diff.load(_push(500, SECOND, 100, [(10.0, 1.0)], [(11.0, 1.0)]))
    assert diff.changes(_push(510, SECOND, 200, [(10.0, 2.0)], [(11.0, 1.0)])) == (
        [(10.0, 2.0)],
        [],
    )
    assert diff.changes(_push(510, SECOND, 300, [(10.0, 2.0)], [(11.0, 1.0)])) == ([], [])
    # Taken before the held push (lower mrid, same second): an older book, not applied.
    assert diff.changes(_push(505, SECOND, 150, [(10.0, 9.0)], [(11.0, 9.0)])) is None
    assert (diff.seq, diff.levels()) == (510, ([(10.0, 2.0)], [(11.0, 1.0)]))


def test_an_mrid_that_restarts_in_a_later_second_is_a_resync():
    diff = FullBookDiff()
    diff.load(_push(500, SECOND, 100, [(10.0, 1.0)], [(11.0, 1.0)]))
    with pytest.raises(VersionRegressed, match="mrid 7 after 500"):
        diff.changes(_push(7, SECOND + 1, 0, [(10.0, 1.0)], [(11.0, 1.0)]))
