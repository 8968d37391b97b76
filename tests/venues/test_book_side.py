"""``astra.venues._levels.Side``, the C side of the engine's ``L2Book``: equal, read for read, to
the plain dict the Python reference keeps (book.py's loops on a dict), through any sequence of
snapshots, changes and deletes, and across its table's growth and shrinkage.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import math
import random
from collections.abc import MutableMapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues import book

levels = require_native("astra.venues._levels")

Side = levels.Side

prices = st.one_of(
    st.sampled_from([100.0, 100.5, 101.0, 99.25, 0.0, -0.0, 1e-300, 1e300, math.inf, -math.inf]),
    st.floats(allow_nan=False, width=64),
    st.integers(min_value=-(2**53), max_value=2**53),
)
quantities = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1.5, 2, 0, math.nan, math.inf, 1e-300]),
    st.floats(allow_nan=True),
)
changes = st.lists(st.tuples(prices, quantities), max_size=60)


def _reference_top(ref: dict, bids: bool, depth: int | None = None) -> list[tuple]:
    ordered = sorted(ref, reverse=bids)[:depth]
    return [(float(p), float(ref[p])) for p in ordered]


def _agree(side, ref: dict, bids: bool) -> None:
    """Every read of the C side equals the same read of the reference dict."""
    assert len(side) == len(ref)
    assert side == ref and ref == side and not (side != ref)
    assert side.copy() == ref and type(side.copy()) is dict
    assert sorted(side) == sorted(ref) and sorted(side.keys()) == sorted(ref)
    assert sorted(side.items()) == sorted((float(p), float(q)) for p, q in ref.items())
    assert sorted(side.values()) == sorted(float(q) for q in ref.values())
    assert side.top() == _reference_top(ref, bids)
    for depth in (0, 1, 3, 25, 64, 65, 1000):
        assert side.top(depth) == _reference_top(ref, bids, depth)
    assert side.best() == (_reference_top(ref, bids, 1) or [None])[0]
    for p in list(ref)[:20]:
        assert p in side and side[p] == ref[p] and side.get(p) == ref[p]
    assert 123456.789 not in side or 123456.789 in ref
    assert side.get("not a price", "d") == "d" and "x" not in side and None not in side


@pytest.mark.parametrize("bids", [True, False])
@given(snapshot=changes, updates=st.lists(changes, max_size=6))
def test_a_side_reads_as_the_reference_dict_after_any_changes(bids, snapshot, updates) -> None:
    side, ref = Side(bids), {}
    levels.fill_side(side, snapshot)
    book._fill_side(ref, snapshot)
    _agree(side, ref, bids)
    for update in updates:
        levels.apply_side(side, update)
        book._apply_side(ref, update)
        _agree(side, ref, bids)


@pytest.mark.parametrize("bids", [True, False])
def test_growth_and_shrinkage_keep_every_level(bids) -> None:
    rng = random.Random(7)
    side, ref = Side(bids), {}
    pool = [round(50_000 + rng.uniform(-5_000, 5_000), 1) for _ in range(20_000)]
    for step in range(40):
        n = 2_000 if step < 20 else 600  # grow past 10k levels, then delete most of them
        batch = [
            (rng.choice(pool), rng.choice([0.0, 0.0, 1.0, 2.5]) if step >= 20 else 1.0)
            for _ in range(n)
        ]
        levels.apply_side(side, batch)
        book._apply_side(ref, batch)
        assert len(side) == len(ref)
    _agree(side, ref, bids)
    for p in list(ref):  # empty it level by level: the table shrinks as it goes
        del side[p]
    assert len(side) == 0 and side == {} and side.top() == [] and side.best() is None
    levels.apply_side(side, [(1.0, 1.0)])  # and it still works afterwards
    assert side == {1.0: 1.0}


def test_colliding_runs_survive_deletes_from_their_middle() -> None:
    # Many levels in one table, deleted in an order that breaks probe runs everywhere.
    side, ref = Side(False), {}
    rng = random.Random(3)
    ps = [i * 0.5 for i in range(3_000)]
    levels.apply_side(side, [(p, 1.0) for p in ps])
    book._apply_side(ref, [(p, 1.0) for p in ps])
    rng.shuffle(ps)
    for i, p in enumerate(ps[:2_500]):
        levels.apply_side(side, [(p, 0.0)])
        ref.pop(p)
        if i % 250 == 0:
            assert all(side[q] == 1.0 for q in ref) and len(side) == len(ref)
    _agree(side, ref, False)


@pytest.mark.parametrize("loop", ["apply", "fill"])
@pytest.mark.parametrize("container", ["side", "dict-c", "dict-python"])
def test_a_nan_price_is_refused_after_the_pairs_before_it(loop, container) -> None:
    fn = {
        "side": getattr(levels, f"{loop}_side"),
        "dict-c": getattr(levels, f"{loop}_side"),
        "dict-python": getattr(book, f"_{loop}_side"),
    }[container]
    side = Side(True) if container == "side" else {}
    with pytest.raises(ValueError, match="NaN"):
        fn(side, [(1.0, 1.0), (math.nan, 2.0), (3.0, 3.0)])
    assert side == {1.0: 1.0}


def test_keys_are_a_dicts_float_keys() -> None:
    side = Side(True)
    levels.apply_side(side, [(0.0, 1.0), (-0.0, 2.0), (7, 3.0), (7.0, 4.0)])
    assert side == {0.0: 2.0, 7.0: 4.0} and len(side) == 2
    assert side[-0.0] == 2.0 and side[7] == 4.0 and 7 in side
    assert side.top() == [(7.0, 4.0), (0.0, 2.0)]
    with pytest.raises(KeyError):
        side[8.0]
    assert side.get(10**400) is None and 10**400 not in side  # too big for a float: absent


def test_the_mapping_methods_behave_as_a_dicts() -> None:
    side = Side(False)
    # (book.py registers Side as a MutableMapping when L2Book runs it)
    assert isinstance(side, MutableMapping) or book.IMPLEMENTATION == "python"
    assert not side
    side[2.0] = 1.0
    side.update({3.0: 2.0})
    side.update([(4.0, 3.0)])
    assert side.top() == [(2.0, 1.0), (3.0, 2.0), (4.0, 3.0)] and bool(side)
    assert side.pop(3.0) == 2.0 and side.pop(3.0, "gone") == "gone"
    with pytest.raises(KeyError):
        side.pop(3.0)
    with pytest.raises(KeyError):
        del side[3.0]
    with pytest.raises(ValueError, match="> 0"):
        side[5.0] = 0.0  # a level's quantity is positive: apply_side deletes with 0
    with pytest.raises(ValueError, match="NaN"):
        side[math.nan] = 1.0
    with pytest.raises(TypeError):
        side["5"] = 1.0
    assert repr(side) == "Side(bids=False, {2.0: 1.0, 4.0: 3.0})"
    with pytest.raises(TypeError):
        hash(side)
    other = Side(True)
    other.update(side)  # the other orientation: equal as mappings
    assert other == side and side == other and other.top() == [(4.0, 3.0), (2.0, 1.0)]
    other[9.0] = 1.0
    assert other != side
    side.clear()
    assert len(side) == 0 and side == {} and side.top(5) == []
    with pytest.raises(ValueError):
        side.top(-1)


@pytest.mark.parametrize(
    "native",
    [
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                book.IMPLEMENTATION == "python", reason="ASTRA_NATIVE=0: L2Book runs Python"
            ),
        ),
        False,
    ],
)
def test_l2book_reads_the_same_on_either_core(native, monkeypatch) -> None:
    if not native:
        monkeypatch.setattr(book, "new_side", lambda bids: {})
        monkeypatch.setattr(book, "apply_side", book._apply_side)
        monkeypatch.setattr(book, "fill_side", book._fill_side)
    b = book.L2Book("X")
    b.reset([(100.0, 1.0), (99.0, 0.0), (100.0, 2.0), (98.0, 1.0)], [(101.0, 1.0)], 1, 10)
    assert type(b.bids) is (Side if native else dict)
    assert b.bids == {100.0: 2.0, 98.0: 1.0} and b.asks == {101.0: 1.0}
    assert b.top(1) == ([(100.0, 2.0)], [(101.0, 1.0)])
    b.apply([(100.0, 0.0), (97.0, 3.0)], [(101.0, 0.5), (102.0, 4.0)], 2, 20)
    assert b.top() == ([(98.0, 1.0), (97.0, 3.0)], [(101.0, 0.5), (102.0, 4.0)])
    assert b.top(1) == ([(98.0, 1.0)], [(101.0, 0.5)])  # from the cached view
    b.apply([], [(101.0, 0.0)], 3, 30)
    assert b.top(1) == ([(98.0, 1.0)], [(102.0, 4.0)])  # the asks' view was dropped
    assert (b.update_id, b.timestamp) == (3, 30)


def _books() -> list:
    """A C-state book on C sides and a Python-state book (book.py's reference ``_BookState``)
    on dicts, built directly (so under ``ASTRA_NATIVE=0`` too)."""

    class CBook(levels.BookState):
        __slots__ = ()

    class PyBook(book._BookState):
        __slots__ = ()

    c, py = CBook(), PyBook()
    c.bids, c.asks, py.bids, py.asks = Side(True), Side(False), {}, {}
    for b in (c, py):
        b.update_id = b.timestamp = 0
        b._bids_view = b._asks_view = None
    return [c, py]


@given(updates=st.lists(st.tuples(changes, changes), max_size=8))
def test_book_state_apply_equals_the_python_reference(updates) -> None:
    books = _books()
    for i, (bids, asks) in enumerate(updates):
        for b in books:
            b._bids_view = b._asks_view = ["a view cached before the update"]
            b.apply(bids, asks, i, 10 * i)
        c, py = books
        assert c.bids == py.bids and c.asks == py.asks
        assert (c.update_id, c.timestamp) == (py.update_id, py.timestamp) == (i, 10 * i)
        for b in books:  # a changed side's view was dropped, the other kept
            assert (b._bids_view is None) == bool(bids)
            assert (b._asks_view is None) == bool(asks)


def test_book_state_failing_part_way_drops_the_view_and_keeps_the_prefix() -> None:
    for b in _books():
        b.bids.update({1.0: 1.0})
        b._bids_view = [(1.0, 1.0)]
        with pytest.raises(ValueError, match="NaN"):
            b.apply([(2.0, 2.0), (math.nan, 1.0)], [(5.0, 1.0)], 7, 70)
        assert b._bids_view is None and b.bids == {1.0: 1.0, 2.0: 2.0}
        assert b.asks == {} and (b.update_id, b.timestamp) == (0, 0)
    with pytest.raises(TypeError, match="4 arguments"):
        _books()[0].apply([], [])


def test_a_book_in_a_reference_cycle_is_collected() -> None:
    import gc
    import weakref

    class Holder:
        pass

    b = book.L2Book("X")
    h = Holder()
    b._bids_view = [h]  # book -> list -> holder -> book
    h.book = b
    ref = weakref.ref(h)
    del b, h
    gc.collect()
    assert ref() is None
