"""Replay of the recorded OKX v5 ``books`` session (OKX.ws.1.0, 2022: snapshot + updates with
CRC32 checksums, no seqId yet) through the feed's integrity code: every checksum matches the
rebuilt book, the rebuilt book equals an independent rebuild after every message, and a
corrupted level or a dropped update is detected. The same frames with seqId/prevSeqId added
(today's protocol) also pass, and a dropped one is a sequence gap at once."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from astra.venues.okx.feed import BookFeed, BookSync, ChecksumMismatch, SequenceGap
from astra.venues.okx.schemas import BookData, Push

decode = msgspec.json.Decoder(Push[BookData]).decode


def _replay(frames: list[str], check=None) -> tuple[BookSync, int]:
    """Every frame through BookSync; returns it and how many checksums were verified."""
    sync, book, checked = BookSync("OKX-X"), None, 0
    for text in frames:
        push = decode(text)
        for data in push.data:
            if push.action == "snapshot":
                book = sync.snapshot(data)
            else:
                changes = sync.update(data)
                if changes is not None:
                    book.apply(changes[1], changes[2], changes[0], int(data.ts))
            checked += data.checksum != 0
        if check is not None:
            check(book, text)
    return sync, checked


def _as_decimals(book) -> dict:
    # Floats parsed from OKX's text; repr() round-trips that decimal text.
    return {
        "bids": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.bids.items()},
        "asks": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.asks.items()},
    }


def test_every_recorded_checksum_matches_and_books_equal_an_independent_rebuild(
    okx_book_frames, reference_book
):
    assert set(okx_book_frames) == {"BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"}
    total = 0
    for frames in okx_book_frames.values():
        reference = reference_book()

        def check(book, text, reference=reference):
            msg = json.loads(text)
            reference.apply(msg)
            assert reference.checksum() == msg["data"][0]["checksum"]  # the reference is right
            assert _as_decimals(book) == reference.decimals()

        _, checked = _replay(frames, check)
        total += checked
    assert total == 290  # every books message of the session carries a checksum


def test_with_current_seq_ids_the_chain_and_checksums_pass(okx_book_frames, okx_seq_frames):
    frames = okx_seq_frames(okx_book_frames["BTC-USDT"])
    sync, checked = _replay(frames)
    assert checked == len(frames) and sync.seq == json.loads(frames[-1])["data"][0]["seqId"]


def _top_changes(frames: list[str], reference_book) -> list[int]:
    """Indexes of updates that change a level among the top 25 of their side."""
    reference, found = reference_book(), []
    for i, text in enumerate(frames):
        msg = json.loads(text)
        data = msg["data"][0]
        if i:
            bids = sorted(reference.sides["bids"], reverse=True)[:25]
            asks = sorted(reference.sides["asks"])[:25]
            if any(Decimal(lv[0]) >= bids[-1] for lv in data["bids"]) or any(
                Decimal(lv[0]) <= asks[-1] for lv in data["asks"]
            ):
                found.append(i)
        reference.apply(msg)
    return found


def test_a_corrupted_level_fails_the_checksum(okx_book_frames, reference_book):
    frames = okx_book_frames["UNI-USD-SWAP"]
    victim = _top_changes(frames, reference_book)[len(frames) // 4]
    msg = json.loads(frames[victim])
    data = msg["data"][0]
    side = "bids" if data["bids"] else "asks"
    level = data[side][0]
    level[1] = str(Decimal(level[1]) + 1)  # one size off by one contract
    corrupted = [*frames[:victim], json.dumps(msg), *frames[victim + 1 :]]
    with pytest.raises(ChecksumMismatch):
        _replay(corrupted[: victim + 1])
    _replay(frames[: victim + 1])  # the untouched frames pass


@pytest.mark.parametrize("inst_id", ["BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"])
def test_a_dropped_update_is_detected(okx_book_frames, okx_seq_frames, reference_book, inst_id):
    frames = okx_book_frames[inst_id]
    candidates = _top_changes(frames, reference_book)
    victim = candidates[len(candidates) // 2]
    dropped = frames[:victim] + frames[victim + 1 :]
    # Without seqId (the recording): the checksum of the very next message catches it.
    with pytest.raises(ChecksumMismatch):
        _replay(dropped[: victim + 1])
    # With seqId (today): a gap, whatever the dropped update touched.
    seq_frames = okx_seq_frames(frames)
    with pytest.raises(SequenceGap, match="prevSeqId"):
        _replay(seq_frames[:victim] + seq_frames[victim + 1 :])


def test_the_feed_resyncs_on_a_mismatch_and_ignores_updates_until_the_snapshot(
    okx_book_frames, recording_sink
):
    frames = okx_book_frames["BTC-USD-220527"]
    msg = json.loads(frames[3])
    msg["data"][0]["checksum"] += 1
    sink = recording_sink()
    feed = BookFeed(None, "books", "BTC-USD-220527", "OKX-FUT-BTC-USD-220527-COINM", sink)
    for text in [*frames[:3], json.dumps(msg), *frames[4:6]]:
        feed.on_push(decode(text))
    assert sink.kinds() == ["snapshot", "update", "update", "resync"]
    assert "checksum" in sink.events[-1][1] and feed._lost
    feed.on_push(decode(frames[0]))  # the fresh snapshot after resubscribing
    assert sink.kinds()[-1] == "snapshot" and feed.sync.synced
