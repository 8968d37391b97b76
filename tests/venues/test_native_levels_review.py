"""Hostile review of ``astra.venues._levels.Side``: quantities that are above 0 but whose float is
not (they used to be stored as an empty slot in the middle of a probe run: lost levels, a
crash on the next read), lookups with numbers no float equals (they used to find the float
they round to), and long random runs of sets and deletes in every order against a dict.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues import book

levels = require_native("astra.venues._levels")

Side = levels.Side


class _AboveZeroFloatNan:
    """``> 0`` says yes, ``float()`` says NaN."""

    def __gt__(self, other: object) -> bool:
        return True

    def __float__(self) -> float:
        return math.nan


TINY = [Decimal("1e-400"), Fraction(1, 10**400), _AboveZeroFloatNan()]


def _check(side, ref: dict[float, float], bids: bool) -> None:
    assert len(side) == len(ref)
    assert side == ref
    assert sorted(side.items()) == sorted(ref.items())
    assert side.top() == sorted(ref.items(), reverse=bids)
    for p, q in ref.items():
        assert side[p] == q


def _filled(n: int = 200) -> tuple[Side, dict[float, float]]:
    side, ref = Side(True), {}
    for k in range(n):
        p = 100.0 + k / 8
        side[p] = ref[p] = 1.0 + k
    return side, ref


@pytest.mark.parametrize("qty", TINY, ids=["decimal", "fraction", "float-nan"])
def test_a_quantity_whose_float_is_not_above_zero_deletes_a_level(qty) -> None:
    side, ref = _filled()
    for k in range(0, 200, 3):  # levels all over the table, each maybe mid-run
        p = 100.0 + k / 8
        levels.apply_side(side, [(p, qty)])
        del ref[p]
        _check(side, ref, True)
    levels.apply_side(side, [(999.0, qty)])  # absent: no error, nothing stored
    _check(side, ref, True)


@pytest.mark.parametrize("qty", TINY, ids=["decimal", "fraction", "float-nan"])
def test_a_snapshot_skips_a_quantity_whose_float_is_not_above_zero(qty) -> None:
    side = Side(False)
    levels.fill_side(side, [(1.0, 2.0), (3.0, qty), (4.0, 5.0)])
    _check(side, {1.0: 2.0, 4.0: 5.0}, False)
    book_ = book.L2Book("X")
    book_.apply([(1.0, 1.0), (2.0, 2.0)], [], 1, 1)
    book_.apply([(2.0, qty)], [], 2, 2)
    # The Python core's dict keeps the object itself (ASTRA_NATIVE=0); a Side its float, 0.
    kept = [] if book.IMPLEMENTATION == "c" else [(2.0, qty)]
    assert book_.top() == ([*kept, (1.0, 1.0)], [])


@pytest.mark.parametrize("qty", TINY, ids=["decimal", "fraction", "float-nan"])
def test_setting_a_quantity_whose_float_is_not_above_zero_is_refused(qty) -> None:
    side, ref = _filled(20)
    with pytest.raises(ValueError, match="must be > 0"):
        side[101.0] = qty
    with pytest.raises(ValueError, match="must be > 0"):
        side.update({101.0: qty})
    _check(side, ref, True)


def test_lookups_find_only_what_a_dict_of_floats_finds() -> None:
    ref = {2.0**53: 1.0, 0.1: 2.0, 1.0: 3.0, -0.0: 4.0, math.inf: 5.0, 5e-324: 6.0}
    side = Side(True)
    side.update(ref)
    keys = [
        2**53,
        2**53 + 1,
        2**64 + 1,
        10**400,
        -(10**400),
        Decimal("0.1"),
        Decimal(0.1),  # noqa: RUF032 - the exact value of the float 0.1
        Decimal(1),
        Decimal("1.0000000000000000000001"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Fraction(1, 10),
        Fraction(0.1),
        Fraction(1),
        True,
        False,
        0,
        1,
        5e-324,
        2.5e-324,
        "0.1",
        None,
        (1.0,),
    ]
    for key in keys:
        assert (key in side) == (key in ref), key
        assert side.get(key, "absent") == ref.get(key, "absent"), key
        assert side.pop(key, "absent") == ref.pop(key, "absent"), key
        _check(side, ref, True)


def test_every_level_deleted_in_every_order_and_the_table_shrinking() -> None:
    rng = random.Random(7)
    for n in (1, 2, 31, 32, 33, 64, 65, 200, 2000, 10_000):
        prices = [rng.choice([1.0, -1.0]) * rng.uniform(0, 1e6) for _ in range(n)]
        prices += [0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, 2.2250738585072014e-308]
        for order in range(3):
            side, ref = Side(order % 2 == 0), {}
            levels.fill_side(side, [(p, 1.0 + i) for i, p in enumerate(prices)])
            for i, p in enumerate(prices):
                if 1.0 + i > 0:
                    ref[p] = 1.0 + i
            _check(side, ref, order % 2 == 0)
            doomed = list(ref)
            rng.shuffle(doomed)
            if order == 2:
                doomed.sort()
            # deleted in one apply (the table halves several times inside it)
            half = len(doomed) // 2
            levels.apply_side(side, [(p, 0.0) for p in doomed[:half]])
            for p in doomed[:half]:
                del ref[p]
            _check(side, ref, order % 2 == 0)
            for p in doomed[half:]:
                del side[p]
                del ref[p]
                if len(ref) < 70:
                    _check(side, ref, order % 2 == 0)
            assert len(side) == 0 and side.top() == [] and side.best() is None


prices = st.one_of(
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, math.inf, -math.inf, 1.0, 1.5, 2.0]),
    st.floats(allow_nan=False),
    st.integers(-1000, 1000).map(lambda k: k / 4),
)
quantities = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, math.nan, math.inf, 5e-324]),
    st.floats(allow_nan=True),
    st.sampled_from([Decimal("1e-400"), Fraction(1, 10**400), Decimal(2), 3]),
)


@settings(max_examples=400, deadline=None)
@given(
    bids=st.booleans(),
    snapshot=st.lists(st.tuples(prices, quantities), max_size=80),
    updates=st.lists(st.lists(st.tuples(prices, quantities), max_size=40), max_size=8),
)
def test_a_side_matches_the_reference_loops_on_floats(bids, snapshot, updates) -> None:
    """The Python loops on a dict, their values as floats (what a Side documents it keeps):
    a quantity is kept when its float is above 0."""
    side, ref = Side(bids), {}
    levels.fill_side(side, snapshot)
    book._fill_side(ref, [(float(p), float(q)) for p, q in snapshot])
    _check(side, ref, bids)
    for pairs in updates:
        levels.apply_side(side, pairs)
        book._apply_side(ref, [(float(p), float(q)) for p, q in pairs])
        _check(side, ref, bids)


def _l2books(monkeypatch) -> tuple:
    """An L2Book on the C sides and one on dicts with the Python loops (the reference)."""
    c = book.L2Book("X")
    with monkeypatch.context() as m:
        m.setattr(book, "new_side", lambda bids: {})
        m.setattr(book, "fill_side", book._fill_side)
        py = book.L2Book("X")
        py.reset([], [], 0, 0)
    return c, py


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("depth", [-(10**30), -3, -1, 0, 1, 2, True, 10**30, 2**63])
def test_l2book_top_takes_any_depth_a_slice_takes(monkeypatch, depth, cached) -> None:
    """``top(depth)`` is the sorted view's ``[:depth]`` on either core, whether or not a view
    is cached (a C side's own ``top`` refused a negative depth, and overflowed on a huge one,
    only when no view was cached)."""
    c, py = _l2books(monkeypatch)
    bids = [(100.0 - k, 1.0 + k) for k in range(5)]
    asks = [(101.0 + k, 2.0 + k) for k in range(5)]
    c.reset(bids, asks, 1, 1)
    py.bids, py.asks = dict(bids), dict(asks)
    if cached:
        c.top(), py.top()
    assert c.top(depth) == py.top(depth) == (bids[:depth], asks[:depth])


def test_l2book_top_refuses_a_depth_a_slice_refuses(monkeypatch) -> None:
    c, py = _l2books(monkeypatch)
    c.reset([(1.0, 1.0)], [(2.0, 1.0)], 1, 1)
    py.bids, py.asks = {1.0: 1.0}, {2.0: 1.0}
    for depth in (1.5, "2"):
        with pytest.raises(TypeError):
            py.top(depth)
        with pytest.raises(TypeError):
            c.top(depth)
