"""Replay of the recorded KuCoin session (``KUCOIN.http.0.0`` snapshots, then
``KUCOIN.ws.1.0`` ``/market/level2`` frames) through the feed's sequencing: sequences continue
from the REST snapshot, no false gap on real data, the rebuilt book equals an independent
decimal rebuild after every message (full depth, and bounded by a top-100 snapshot), and a
dropped message is a gap."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from astra.venues.book import L2Book
from astra.venues.kucoin.feed import DepthRange, SequenceGap, SequenceSync, SnapshotTooOld
from astra.venues.kucoin.schemas import Envelope, Level2, Level2Changes

decode = msgspec.json.Decoder(Envelope[Level2]).decode


def _floats(levels, depth=None):
    pairs = [(float(p), float(q)) for p, q in levels]
    return pairs if depth is None else pairs[:depth]


def _replay(snapshot_at, snapshot, frames, check, depth=None):
    """Frames received before the snapshot are buffered, as the live feed does; returns
    (book, first message applied past the snapshot, messages applied)."""
    sync, book, rng, first, applied = SequenceSync(), None, None, None, 0
    seq = int(snapshot["sequence"])

    def apply(event, after):
        nonlocal first, applied
        bids, asks = event.to_changes(after)
        if rng is not None:
            bids, asks = rng.admit(bids, asks)
        book.apply(bids, asks, event.sequenceEnd, event.time)
        first, applied = first or event, applied + 1
        check(book)

    for received, text in frames:
        if book is None and received >= snapshot_at:
            bids, asks = _floats(snapshot["bids"], depth), _floats(snapshot["asks"], depth)
            book = L2Book("X")
            book.reset(bids, asks, seq, snapshot["time"])
            rng = DepthRange(bids, asks, depth, 20) if depth else None
            for event, after in sync.start(seq):
                apply(event, after)
        event = decode(text).data
        after = sync.push(event)
        if after is not None and book is not None:
            apply(event, after)
    return book, first, applied


class _Checker:
    """Walks the independent reference alongside the replay. After every message the levels
    it touched must match; every 16th message, the first, and ``final()`` compare the whole
    book (all of it after every message would take ~10 s on these books)."""

    def __init__(self, reference, snapshot, frames, bounds) -> None:
        states, self.as_decimals = reference[0], reference[2]
        # The reference reads the frames with the stdlib, not with the feed's Structs.
        datas = [json.loads(t)["data"] for _, t in frames]
        self.expected = states(snapshot, datas, bounds)
        self.touched = {
            d["sequenceEnd"]: {
                side: [c[0] for c in d["changes"][side]] for side in ("bids", "asks")
            }
            for d in datas
        }
        self.count, self.levels = 0, None

    def __call__(self, book: L2Book) -> None:
        self.count += 1
        seq = book.update_id
        state = next((s for s in self.expected if s[0] == seq), None)
        assert state is not None, f"sequence {seq} is not in the reference"
        self.levels = levels = state[1]
        if self.count % 16 == 1:
            return self.final(book)
        for side in ("bids", "asks"):
            mine = getattr(book, side)
            for price in self.touched[seq][side]:
                have = mine.get(float(price))
                have = None if have is None else Decimal(repr(have))
                assert have == levels[side].get(Decimal(price)), f"{side} {price} at {seq}"

    def final(self, book: L2Book) -> None:
        got = self.as_decimals({"bids": book.bids, "asks": book.asks})
        assert got == self.levels, f"book differs at sequence {book.update_id}"


@pytest.mark.parametrize("depth", [None, 100], ids=["full-snapshot", "top100-snapshot"])
def test_recorded_books_rebuild_exactly_with_no_false_gap(
    kucoin_recording, kucoin_reference, depth
):
    top_bounds = kucoin_reference[1]
    replayed = 0
    for symbol, (snapshot_at, snapshot) in kucoin_recording.snapshots.items():
        frames = kucoin_recording.level2[symbol]
        bounds = top_bounds(snapshot, depth) if depth else (None, None)
        check = _Checker(kucoin_reference, snapshot, frames, bounds)
        book, first, applied = _replay(snapshot_at, snapshot, frames, check, depth)
        check.final(book)
        seq = int(snapshot["sequence"])
        # The sequences continue from the REST snapshot: the first message kept bridges it.
        assert first.sequenceStart <= seq + 1 <= first.sequenceEnd, symbol
        assert book.update_id == decode(frames[-1][1]).data.sequenceEnd
        if depth:  # the bounded book still holds its top levels
            assert len(book.bids) >= 20 and len(book.asks) >= 20
        replayed += applied
    assert len(kucoin_recording.snapshots) == 9 and replayed > 3000


def test_a_dropped_message_is_a_gap(kucoin_recording):
    snapshot_at, snapshot = kucoin_recording.snapshots["BCHSV-USDT"]
    frames = kucoin_recording.level2["BCHSV-USDT"]
    after = [i for i, (t, _) in enumerate(frames) if t >= snapshot_at]
    victim = after[len(after) // 2]
    with pytest.raises(SequenceGap, match="starts at"):
        _replay(snapshot_at, snapshot, frames[:victim] + frames[victim + 1 :], lambda b: None)


def test_a_repeated_message_is_ignored(kucoin_recording):
    snapshot_at, snapshot = kucoin_recording.snapshots["SNX-BTC"]
    frames = kucoin_recording.level2["SNX-BTC"]
    clean, _, _ = _replay(snapshot_at, snapshot, frames, lambda b: None)
    doubled = [f for f in frames for _ in (0, 1)]
    book, _, _ = _replay(snapshot_at, snapshot, doubled, lambda b: None)
    assert (book.bids, book.asks, book.update_id) == (clean.bids, clean.asks, clean.update_id)


def _event(start, end, bids=(), asks=()):
    return Level2(start, end, "X", Level2Changes(asks=list(asks), bids=list(bids)))


def test_snapshot_older_than_the_stream_is_refused_then_bridged():
    sync = SequenceSync()
    for first in (100, 103):
        sync.push(_event(first, first + 2))
    with pytest.raises(SnapshotTooOld):
        sync.start(90)  # messages start at 100: 91..99 are missing
    ready = sync.start(101)
    assert [(e.sequenceStart, after) for e, after in ready] == [(100, 101), (103, 102)]
    assert sync.seq == 105


def test_a_message_straddling_the_snapshot_applies_only_its_newer_changes():
    event = _event(10, 12, bids=[("5", "1", "10"), ("6", "2", "12")], asks=[("7", "3", "11")])
    sync = SequenceSync()
    sync.push(event)
    [(same, after)] = sync.start(11)
    assert same is event and after == 11
    assert event.to_changes(after) == ([(6.0, 2.0)], [])


def test_a_bounded_range_drops_changes_outside_and_says_when_it_runs_thin():
    bids = [(100.0 - i, 1.0) for i in range(5)]  # 100..96, cut short at 5 levels
    asks = [(101.0, 1.0)]  # the whole side
    rng = DepthRange(bids, asks, depth=5, min_levels=3)
    assert rng.admit([(95.0, 1.0), (96.5, 2.0)], [(500.0, 1.0)]) == ([(96.5, 2.0)], [(500.0, 1.0)])
    assert not rng.exhausted
    rng.admit([(100.0, 0.0), (99.0, 0.0), (98.0, 0.0)], [])
    assert len(rng.bids) == 3 and not rng.exhausted
    rng.admit([(97.0, 0.0)], [])
    assert rng.exhausted
