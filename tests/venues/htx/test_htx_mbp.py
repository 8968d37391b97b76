"""``market.$symbol.mbp.$levels`` sequencing on samples written from HTX's docs: the ``req``
refresh (``rep``/``data.seqNum``), increments (``tick.seqNum``/``prevSeqNum``), the one-sided
5-level increment, pings and error replies, all gzip-compressed as on the wire."""

from __future__ import annotations

import gzip
import json

import msgspec
import pytest

from astra.venues.book import L2Book
from astra.venues.htx.feed import MbpSync, SequenceGap, SnapshotMisaligned, gunzip
from astra.venues.htx.schemas import MbpMessage, MbpTick

decode = msgspec.json.Decoder(MbpMessage, strict=False).decode

# The docs' refresh (``req``) and increment samples, trimmed to a few levels.
REFRESH = {
    "id": "id21",
    "rep": "market.btcusdt.mbp.150",
    "status": "ok",
    "data": {
        "seqNum": 100020142010,
        "bids": [[618.37, 71.594], [423.33, 77.726], [223.18, 47.997]],
        "asks": [[650.59, 14.909733438479636], [650.63, 97.996], [650.77, 97.465]],
    },
}
INCREMENT = {
    "ch": "market.btcusdt.mbp.150",
    "ts": 1573199608679,
    "tick": {
        "seqNum": 100020146795,
        "prevSeqNum": 100020146794,
        "bids": [],
        "asks": [[645.14, 26.75597395914065]],
    },
}


def _wire(obj: dict) -> MbpMessage:
    return decode(gunzip(gzip.compress(json.dumps(obj).encode())))


def _tick(seq: int, prev: int, bids=(), asks=()) -> MbpTick:
    return MbpTick(seqNum=seq, prevSeqNum=prev, bids=list(bids), asks=list(asks))


def test_documented_frames_decode():
    refresh = _wire(REFRESH)
    assert refresh.rep == "market.btcusdt.mbp.150" and refresh.id == "id21"
    assert refresh.data.seqNum == 100020142010 and refresh.data.prevSeqNum is None
    assert refresh.data.bids[0] == (618.37, 71.594)
    inc = _wire(INCREMENT)
    assert inc.ch == "market.btcusdt.mbp.150" and inc.ts == 1573199608679
    assert (inc.tick.seqNum, inc.tick.prevSeqNum) == (100020146795, 100020146794)
    assert inc.tick.to_changes() == ([], [(645.14, 26.75597395914065)])
    # 5-level tick-by-tick increments carry only the side that changed.
    one_sided = _wire(
        {
            "ch": "market.btcusdt.mbp.5",
            "ts": 1,
            "tick": {"seqNum": 2, "prevSeqNum": 1, "bids": [[618.37, 0]]},
        }
    )
    assert one_sided.tick.to_changes() == ([(618.37, 0.0)], [])
    assert _wire({"ping": 1492420473027}).ping == 1492420473027
    error = _wire(
        {
            "status": "error",
            "ts": 1,
            "id": "2",
            "err-code": "bad-request",
            "err-msg": "invalid mbp.150.symbol linkusdt",
        }
    )
    assert (error.status, error.err_code) == ("error", "bad-request")


def test_refresh_joins_the_buffered_increments_by_prev_seq_num():
    sync = MbpSync()
    s = 100020142010
    # Buffered while the refresh was on its way; seqNum steps are irregular.
    stale = _tick(s - 4, s - 9, bids=[(618.37, 5.0)])
    first = _tick(s + 7, s, bids=[(618.37, 0.0)], asks=[(650.59, 1.0)])
    second = _tick(s + 8, s + 7, asks=[(650.40, 2.0)])
    for t in (stale, first, second):
        assert sync.push(t) is False  # not synced: buffered
    assert sync.start(s) == [first, second]  # the one already in the refresh is dropped
    book = L2Book("X")
    refresh = _wire(REFRESH).data
    book.reset(refresh.bids, refresh.asks, refresh.seqNum, 0)
    for t in (first, second):
        book.apply(*t.to_changes(), t.seqNum, 0)
    assert book.top(2) == ([(423.33, 77.726), (223.18, 47.997)], [(650.4, 2.0), (650.59, 1.0)])
    assert book.update_id == s + 8
    assert sync.push(_tick(s + 20, s + 8)) is True


def test_increments_sent_before_the_refresh_are_skipped_only_while_bridging():
    sync = MbpSync()
    assert sync.start(500) == []  # the refresh is newer than anything buffered
    assert sync.push(_tick(500, 497)) is False  # already in the refresh
    assert sync.push(_tick(503, 500)) is True
    with pytest.raises(SequenceGap):
        sync.push(_tick(503, 500))  # once chained, a repeat is not silently ignored


def test_a_lost_increment_is_a_gap():
    sync = MbpSync()
    sync.start(100)
    assert sync.push(_tick(103, 100))
    with pytest.raises(SequenceGap, match="prevSeqNum=106 but previous seqNum=103"):
        sync.push(_tick(109, 106))  # 103 -> 106 never arrived


def test_a_refresh_older_than_the_buffer_is_refused_then_a_newer_one_syncs():
    sync = MbpSync()
    for t in (_tick(210, 205), _tick(214, 210)):
        sync.push(t)
    with pytest.raises(SnapshotMisaligned):
        sync.start(200)  # 200 -> 205 was never seen: the refresh cannot be bridged
    assert not sync.synced
    sync.push(_tick(220, 214))
    assert [t.seqNum for t in sync.start(210)] == [214, 220]


def test_a_refresh_inside_an_increment_is_refused():
    sync = MbpSync()
    sync.push(_tick(310, 300))
    with pytest.raises(SnapshotMisaligned):
        sync.start(305)  # neither before nor after increment 300 -> 310


def test_a_hole_in_the_buffer_is_a_gap():
    sync = MbpSync()
    for t in (_tick(11, 10), _tick(15, 12)):
        sync.push(t)
    with pytest.raises(SequenceGap):
        sync.start(10)
