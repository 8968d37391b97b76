"""The incremental structure behind OKX's checksum (``okx/book.py``): a sorted price list kept
by bisect, the venue's own text per level in a parallel list. Compared with from-scratch sorts
of plain dicts: on random update sequences (hypothesis), at the edge of the top 25, and after
the recorded session; a corrupted size in a recorded frame still resyncs the feed with a
checksum reason."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from astra.venues.okx.book import CHECKSUM_LEVELS, BookSide, book_checksum, parse_levels
from astra.venues.okx.feed import BookFeed, BookSync
from astra.venues.okx.schemas import BookData, Push

decode = msgspec.json.Decoder(Push[BookData]).decode


def _text(i: int) -> str:
    """A price's text as OKX writes it ("100.25", "100.5", "101"): one text per price."""
    return str(Decimal(i) / 4 + 100)


def _levels(pairs) -> bytes:
    """A message's levels as OKX sends them (the JSON text a BookSide parses)."""
    return msgspec.json.encode([[px, sz, "0", "1"] for px, sz in pairs])


def _reference_top(ref: dict[Decimal, str], descending: bool, n: int | None = None) -> list[str]:
    """From scratch: sort the plain dict, take the best ``n``."""
    return [ref[p] for p in sorted(ref, reverse=descending)[:n]]


def _apply_reference(ref: dict[Decimal, str], pairs) -> None:
    for px, sz in pairs:
        if Decimal(sz) > 0:
            ref[Decimal(px)] = f"{px}:{sz}"
        else:
            ref.pop(Decimal(px), None)


_level = st.tuples(st.integers(0, 80), st.sampled_from(["0", "0", "1", "2.5", "10", "0.001"]))
_message = st.lists(_level, max_size=12)


@settings(max_examples=200, deadline=None)
@given(snapshot=st.lists(_level, max_size=60), messages=st.lists(_message, max_size=25))
def test_random_updates_keep_the_sorted_top_equal_to_a_from_scratch_sort(snapshot, messages):
    bids, asks = BookSide(descending=True), BookSide(descending=False)
    ref_bids: dict[Decimal, str] = {}
    ref_asks: dict[Decimal, str] = {}
    first = [(_text(i), sz) for i, sz in snapshot]
    bids.load(_levels(first))
    asks.load(_levels(first))
    _apply_reference(ref_bids, first)
    _apply_reference(ref_asks, first)
    for message in messages:
        pairs = [(_text(i), sz) for i, sz in message]  # repeats of a price included
        changes = bids.apply(_levels(pairs))
        asks.apply(_levels(pairs))
        _apply_reference(ref_bids, pairs)
        _apply_reference(ref_asks, pairs)
        assert changes == [(float(px), float(sz)) for px, sz in pairs]
        assert bids.top() == _reference_top(ref_bids, True, CHECKSUM_LEVELS)
        assert asks.top() == _reference_top(ref_asks, False, CHECKSUM_LEVELS)
        assert [e for _, e in bids.levels()] == _reference_top(ref_bids, True)
        assert [e for _, e in asks.levels()] == _reference_top(ref_asks, False)
        for side in (bids, asks):  # the parallel lists: ascending, unique, aligned
            assert side.prices == sorted(set(side.prices)) and len(side.texts) == len(side.prices)
            pairs = zip(side.prices, side.texts, strict=True)
            assert all(float(t.split(":")[0]) == p for p, t in pairs)


def _deep_book() -> tuple[BookSync, list[list[str]], list[list[str]]]:
    """A synced book with 30 levels a side (more than the checksum's 25)."""
    bids = [[str(100 - i), str(i + 1), "0", "1"] for i in range(30)]
    asks = [[str(101 + i), str(i + 1), "0", "1"] for i in range(30)]
    sync = BookSync("OKX-X")
    text = json.dumps(
        {
            "arg": {"channel": "books", "instId": "X"},
            "action": "snapshot",
            "data": [{"asks": asks, "bids": bids, "ts": "1", "checksum": 0}],
        }
    )
    sync.snapshot(decode(text).data[0])
    return sync, bids, asks


def _update(sync: BookSync, bids, asks, checksum: int):
    text = json.dumps(
        {
            "arg": {"channel": "books", "instId": "X"},
            "action": "update",
            "data": [{"asks": asks, "bids": bids, "ts": "2", "checksum": checksum}],
        }
    )
    return sync.update(decode(text).data[0])


def _expected(bids: list[list[str]], asks: list[list[str]]) -> int:
    return book_checksum(
        [f"{p}:{q}" for p, q, *_ in bids[:CHECKSUM_LEVELS]],
        [f"{p}:{q}" for p, q, *_ in asks[:CHECKSUM_LEVELS]],
    )


def test_a_level_deleted_inside_the_top_25_brings_the_26th_into_the_checksum():
    sync, bids, asks = _deep_book()
    assert sync.checksum() == _expected(bids, asks)
    assert sync.book.bids.top()[-1] == "76:25"  # the 25th best bid; 75 (the 26th) is outside
    remaining = bids[:2] + bids[3:]  # the third best bid goes
    _update(sync, [["98", "0", "0", "0"]], [], _expected(remaining, asks))
    assert sync.book.bids.top()[-1] == "75:26"
    assert sync.verified == 1


def test_a_change_beyond_the_top_25_keeps_the_checksum_and_the_book_right():
    sync, _, _ = _deep_book()
    before = sync.checksum()
    changed = _update(sync, [["72", "7.5", "0", "2"], ["60", "1", "0", "1"]], [], before)
    assert changed is not None and changed[1] == [(72.0, 7.5), (60.0, 1.0)]
    assert sync.checksum() == before and sync.verified == 1
    bids = sync.book.bids.levels()
    assert bids[28] == (72.0, "72:7.5") and bids[-1] == (60.0, "60:1")


def test_after_the_recorded_session_each_side_equals_plain_dicts_sorted_at_the_end(
    okx_book_frames,
):
    for inst, frames in okx_book_frames.items():
        sync = BookSync(inst)
        plain: dict[str, dict[Decimal, str]] = {"bids": {}, "asks": {}}
        for text in frames:
            msg = json.loads(text)
            push = decode(text)
            if push.action == "snapshot":
                sync.snapshot(push.data[0])
                plain = {"bids": {}, "asks": {}}
            else:
                sync.update(push.data[0])
            for side in ("bids", "asks"):
                _apply_reference(plain[side], [lv[:2] for lv in msg["data"][0][side]])
        assert sync.verified == len(frames)
        for side, descending in (("bids", True), ("asks", False)):
            want = [(float(p), plain[side][p]) for p in sorted(plain[side], reverse=descending)]
            assert getattr(sync.book, side).levels() == want, (inst, side)


def _top_victim(frames: list[str]) -> tuple[int, str, int]:
    """An update (past the first few) with a level that is in the top 25 after it: its
    index, side and the level's position in the message."""
    sync = BookSync("X")
    for k, text in enumerate(frames):
        push = decode(text)
        if push.action == "snapshot":
            sync.snapshot(push.data[0])
            continue
        sync.update(push.data[0])
        if k < 3:
            continue
        for side in ("bids", "asks"):
            top = getattr(sync.book, side).top()
            for j, level in enumerate(parse_levels(getattr(push.data[0], side))):
                if f"{level.px}:{level.sz}" in top:
                    return k, side, j
    raise AssertionError("no update touches the top 25")


def test_one_flipped_size_in_a_recorded_frame_resyncs_with_a_checksum_reason(
    okx_book_frames, recording_sink
):
    frames = okx_book_frames["BTC-USDT"]
    k, side, j = _top_victim(frames)
    msg = json.loads(frames[k])
    level = msg["data"][0][side][j]
    level[1] = str(Decimal(level[1]) * 2)  # one size wrong, the venue's checksum unchanged
    sink = recording_sink()
    feed = BookFeed(None, "books", "BTC-USDT", "OKX-SPOT-BTC-USDT", sink)
    for text in [*frames[:k], json.dumps(msg), *frames[k + 1 : k + 3]]:
        feed.on_push(decode(text))
    assert sink.kinds() == ["snapshot"] + ["update"] * (k - 1) + ["resync"]
    assert "checksum" in sink.events[-1][1] and not feed.sync.synced
    feed.on_push(decode(frames[k]))  # updates before the next snapshot are dropped
    assert sink.kinds()[-1] == "resync"


def test_a_best_first_snapshot_and_any_other_load_the_same_side():
    # OKX's own order (best first, sizes positive) takes the comprehension path; a shuffled
    # snapshot with a repeated price and a zero size takes the level-by-level one.
    asks = [(_text(i), str(i % 7 + 1)) for i in range(40)]  # 100, 100.25, ... ascending
    bids = asks[::-1]  # best (highest) first
    fast_asks, fast_bids = BookSide(descending=False), BookSide(descending=True)
    assert fast_asks.load(_levels(asks)) == [(float(p), float(s)) for p, s in asks]
    fast_bids.load(_levels(bids))
    odd = [*asks[20:], *asks[:20], (_text(3), "9"), (_text(5), "0")]  # unsorted; 3 resized
    slow_asks, slow_bids = BookSide(descending=False), BookSide(descending=True)
    assert slow_asks.load(_levels(odd)) == [(float(p), float(s)) for p, s in odd]
    slow_bids.load(_levels(odd))
    want = {Decimal(p): f"{p}:{s}" for p, s in asks}
    assert [t for _, t in fast_asks.levels()] == _reference_top(want, False)
    assert [t for _, t in fast_bids.levels()] == _reference_top(want, True)
    want[Decimal(_text(3))] = f"{_text(3)}:9"
    del want[Decimal(_text(5))]
    assert [t for _, t in slow_asks.levels()] == _reference_top(want, False)
    assert [t for _, t in slow_bids.levels()] == _reference_top(want, True)
    assert slow_asks.top() == _reference_top(want, False, CHECKSUM_LEVELS)
