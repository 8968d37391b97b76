"""``FullBookDiff`` diffs ``depth.step0`` pushes on their text: the changes it gives, applied to
the book of the push before, must give exactly the new push, and name exactly the levels
that differ (by value), each once. Checked on every recorded push and on generated pairs and
runs of books (levels added, removed, resized, shifted by an insert at the top, reordered,
empty sides, sizes of 0, sizes as numeric strings, whitespace), against a plain dict diff.
The per-push rule around it (``DepthBookHandler``): order by mrid/version, stale pushes
dropped, a regressed id resyncs, a restated book sends nothing."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.venues.book import L2Book
from astra.venues.htx.feed import DepthBookHandler, gunzip
from astra.venues.htx.fullbook import FullBookDiff
from astra.venues.htx.schemas import DepthMessage, DepthTick
from astra.venues.htx.sequencing import VersionRegressed

decode_depth = msgspec.json.Decoder(DepthMessage, strict=False).decode


def _as_dict(levels) -> dict[float, float]:
    return {p: q for p, q in levels if q > 0}


def _expected_changes(old: dict, new: dict) -> set[tuple[float, float]]:
    """The reference: every level whose size differs, and every level gone, at 0."""
    changed = {(p, q) for p, q in new.items() if old.get(p) != q}
    return changed | {(p, 0.0) for p in old if p not in new}


def _apply(book: dict, changes) -> dict:
    out = dict(book)
    for p, q in changes:
        if q > 0:
            out[p] = q
        else:
            out.pop(p, None)
    return out


def _check_step(old: tuple[dict, dict], tick: DepthTick, diff: FullBookDiff) -> None:
    """``diff`` holds ``old``; after ``tick`` its changes rebuild the push exactly."""
    new = (_as_dict(_levels_of(tick.bids)), _as_dict(_levels_of(tick.asks)))
    bids, asks = diff.changes(tick)
    for side, changes, before, after in zip(("bids", "asks"), (bids, asks), old, new, strict=True):
        prices = [p for p, _ in changes]
        assert len(prices) == len(set(prices)), (side, changes)  # each price once
        assert set(changes) == _expected_changes(before, after), side  # exactly what differs
        assert _apply(before, changes) == after, side
    assert tuple(_as_dict(s) for s in diff.levels()) == new


def _levels_of(raw) -> list:
    return msgspec.json.decode(bytes(raw), type=list[tuple[float, float]], strict=False)


# -- the recorded session: every step0 push, diffed against the previous one -----------------


def test_every_recorded_push_is_rebuilt_exactly_from_the_previous_one(recording):
    pushes = updates = 0
    for topic, frames in recording.depth_topics().items():
        diff, book, held = FullBookDiff(), L2Book(topic), None
        for raw, _ in frames:
            tick = decode_depth(gunzip(raw)).tick
            if held is None:
                book.reset(*diff.load(tick), tick.version, tick.ts)
            else:
                _check_step(held, tick, diff)
                bids, asks = diff.changes(tick)  # the same push again: nothing to send
                assert (bids, asks) == ([], [])
                updates += 1
            book.reset(*diff.levels(), tick.version, tick.ts)
            # Independently of floats: the venue's text, as decimals.
            expect = json.loads(gunzip(raw), parse_float=Decimal)["tick"]
            for side in ("bids", "asks"):
                got = {Decimal(repr(p)): Decimal(repr(q)) for p, q in getattr(book, side).items()}
                assert got == {Decimal(str(p)): Decimal(str(q)) for p, q in expect[side] if q > 0}
            held = (dict(book.bids), dict(book.asks))
            pushes += 1
    assert (pushes, updates) == (292, 282)


def test_recorded_changes_are_few_and_the_pushes_are_mostly_unchanged(recording):
    """What the text diff relies on (and why it is fast): most levels repeat verbatim."""
    sent = levels = 0
    for frames in recording.depth_topics().values():
        diff = FullBookDiff()
        diff.load(decode_depth(gunzip(frames[0][0])).tick)
        for raw, _ in frames[1:]:
            tick = decode_depth(gunzip(raw)).tick
            bids, asks = diff.changes(tick)
            sent += len(bids) + len(asks)
            levels += sum(map(len, diff.levels()))
    assert 0 < sent < levels // 10


# -- generated books -------------------------------------------------------------------------

_PRICES = st.sampled_from([round(100 + i * 0.5, 2) for i in range(40)])
_SIZES = st.sampled_from([0.0, 0.001, 1.0, 2.5, 3.0, 12345.678, 1e-8])
_BOOK_SIDE = st.dictionaries(_PRICES, _SIZES, max_size=25)


@st.composite
def _next_side(draw, side: dict) -> dict:
    """A side like the venue's next push of it: some levels resized, removed, added."""
    out = dict(side)
    for p in draw(st.lists(st.sampled_from(sorted(side)), max_size=4, unique=True)) if side else []:
        if draw(st.booleans()):
            del out[p]
        else:
            out[p] = draw(_SIZES)
    out.update(draw(st.dictionaries(_PRICES, _SIZES, max_size=4)))
    return out


@st.composite
def _text(draw, side: dict, descending: bool) -> bytes:
    """The side as JSON text: sorted as HTX sends it or shuffled, numbers or numeric strings,
    compact or spaced."""
    levels = sorted(side.items(), reverse=descending)
    if draw(st.booleans()):
        levels = draw(st.permutations(levels))
    as_strings = draw(st.booleans())
    spaced = draw(st.sampled_from(["compact", "spaced", "around"]))
    cells = [
        [json.dumps(repr(p)), json.dumps(repr(q))] if as_strings else [repr(p), repr(q)]
        for p, q in levels
    ]
    if spaced == "compact":
        return ("[" + ",".join(f"[{a},{b}]" for a, b in cells) + "]").encode()
    if spaced == "spaced":
        return ("[" + ", ".join(f"[{a}, {b}]" for a, b in cells) + "]").encode()
    return ("[ " + " , ".join(f"[ {a} ,{b}]" for a, b in cells) + " ]").encode()


def _tick(bids: bytes, asks: bytes, version: int) -> DepthTick:
    return DepthTick(bids=msgspec.Raw(bids), asks=msgspec.Raw(asks), version=version)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), bids=_BOOK_SIDE, asks=_BOOK_SIDE, steps=st.integers(1, 4))
def test_generated_pushes_rebuild_exactly(data, bids, asks, steps):
    diff = FullBookDiff()
    first = _tick(data.draw(_text(bids, True)), data.draw(_text(asks, False)), 1)
    loaded = diff.load(first)
    assert tuple(_as_dict(s) for s in loaded) == (_as_dict(bids.items()), _as_dict(asks.items()))
    held = (_as_dict(bids.items()), _as_dict(asks.items()))
    for version in range(2, 2 + steps):
        bids, asks = data.draw(_next_side(bids)), data.draw(_next_side(asks))
        tick = _tick(data.draw(_text(bids, True)), data.draw(_text(asks, False)), version)
        _check_step(held, tick, diff)
        held = (_as_dict(bids.items()), _as_dict(asks.items()))


@settings(max_examples=200, deadline=None)
@given(
    side=st.dictionaries(_PRICES, _SIZES.filter(bool), min_size=1, max_size=40),
    top=st.floats(200, 300).map(lambda p: round(p, 1)),
    depth=st.integers(1, 40),
    resized=st.lists(st.integers(0, 39), max_size=3),
)
def test_an_insert_at_the_top_that_shifts_every_level_is_two_changes(side, top, depth, resized):
    """HTX's commonest big change: a level arrives above the best, the deepest level falls
    off the capped book, and every level between moves one place (in the text too)."""
    levels = sorted(side.items(), reverse=True)[:depth]
    shifted = [(top, 7.0), *levels[:-1]]
    for i in resized:
        if 0 < i < len(shifted):
            shifted[i] = (shifted[i][0], shifted[i][1] + 1)
    old, new = dict(levels), dict(shifted)
    diff = FullBookDiff()
    diff.load(DepthTick.of(levels, [], version=1))
    bids, asks = diff.changes(DepthTick.of(shifted, [], version=2))
    assert set(bids) == _expected_changes(old, new) and asks == []
    assert _apply(old, bids) == new


@pytest.mark.parametrize(
    ("before", "after", "expect"),
    [
        ("[]", "[[1,2]]", [(1.0, 2.0)]),
        ("[[1,2]]", "[]", [(1.0, 0.0)]),
        ("[[1,2]]", "[[1,2.0]]", []),  # other text, same value: not a change
        ('[["1","2"]]', "[[1,2]]", []),
        ("[[1,2],[3,4]]", "[[3,4],[1,2]]", []),  # reordered
        ("[[1,2],[3,4]]", "[[1,0],[3,4]]", [(1.0, 0.0)]),  # a size of 0 is no level
        ("[[1,0]]", "[[1,0],[2,0]]", []),
        ("[[1,2],[3,4]]", "[ [1, 2] , [3, 5] ]", [(3.0, 5.0)]),
    ],
)
def test_edge_cases_of_the_text(before, after, expect):
    diff = FullBookDiff()
    diff.load(_tick(before.encode(), b"[]", 1))
    assert diff.changes(_tick(after.encode(), b"[]", 2)) == (expect, [])


def test_a_malformed_new_level_raises_and_the_held_book_stays():
    diff = FullBookDiff()
    diff.load(DepthTick.of([(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0)], version=1))
    with pytest.raises(msgspec.ValidationError):
        diff.changes(_tick(b'[[10,1],[9,"x"]]', b"[[11,1]]", 2))
    with pytest.raises(msgspec.ValidationError):
        diff.changes(_tick(b"[[10,1],[9,2,3]]", b"[[11,1]]", 2))
    assert diff.seq == 1 and diff.levels() == ([(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0)])
    assert diff.changes(DepthTick.of([(10.0, 1.0)], [(11.0, 1.0)], version=3)) == (
        [(9.0, 0.0)],
        [],
    )


# -- the per-push rule -----------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_snapshot(self, book: L2Book) -> None:
        self.events.append(("snapshot", book.update_id, dict(book.bids), dict(book.asks)))

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.events.append(("update", update_id, sorted(bids), sorted(asks)))

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))


def _push(mrid: int | None, version: int, bids: list, asks: list) -> DepthTick:
    return DepthTick.of(bids, asks, version=version, mrid=mrid, ts=version * 1000)


def test_handler_orders_pushes_and_sends_each_change_once():
    sink = _Sink()
    handler = DepthBookHandler(sink, "M")
    pushes = [
        _push(500, 7, [(10.0, 1.0)], [(11.0, 1.0)]),  # snapshot
        _push(510, 7, [(10.0, 2.0)], [(11.0, 1.0)]),  # update
        _push(510, 7, [(10.0, 2.0)], [(11.0, 1.0)]),  # restated: nothing
        _push(505, 7, [(10.0, 9.0)], [(11.0, 9.0)]),  # stale (older mrid, same second)
        _push(520, 8, [(10.0, 2.0)], [(11.0, 1.0)]),  # newer, same book: nothing
        _push(520, 8, [(10.0, 3.0)], [(11.0, 1.0)]),  # another book, held mrid: snapshot
        _push(7, 9, [(10.0, 4.0)], [(11.0, 1.0)]),  # mrid restarts later: resync + snapshot
    ]
    snapshots = [handler.on_push(tick, tick.ts) for tick in pushes]
    assert snapshots == [True, False, False, False, False, True, True]
    assert sink.events == [
        ("snapshot", 500, {10.0: 1.0}, {11.0: 1.0}),
        ("update", 510, [(10.0, 2.0)], []),
        ("snapshot", 520, {10.0: 3.0}, {11.0: 1.0}),
        ("resync", "mrid 7 after 520"),
        ("snapshot", 7, {10.0: 4.0}, {11.0: 1.0}),
    ]
    handler.reset()  # a new connection: the next push is a snapshot again
    assert handler.on_push(_push(8, 9, [(10.0, 4.0)], []), 0) is True


def test_spot_version_going_back_is_a_restart():
    diff = FullBookDiff()
    diff.load(_push(None, 100, [(10.0, 1.0)], []))
    assert diff.changes(_push(None, 100, [(10.0, 1.0)], [])) == ([], [])
    with pytest.raises(VersionRegressed, match="version 99 after 100"):
        diff.changes(_push(None, 99, [(10.0, 1.0)], []))


def test_gunzip_checks_the_gzip_trailer():
    frame = bytearray(zlib.compress(b'{"ping":1}', wbits=31))
    assert gunzip(bytes(frame)) == b'{"ping":1}'
    frame[-5] ^= 1  # the CRC
    with pytest.raises(Exception, match="incorrect data check"):
        gunzip(bytes(frame))
