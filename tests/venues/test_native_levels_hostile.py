"""Review findings on ``astra.venues._levels``: the compiled loops read ``pairs`` as the Python
loop does (book.py's ``_apply_side``/``_fill_side``, the reference), so an iterator that fails
part way leaves the same side behind, and one that looks at the side sees the same levels.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import pytest
from tests.venues.native_cores import require_native

from astra.venues import book

_levels = require_native("astra.venues._levels")

PAIRS = {
    "apply": (book._apply_side, _levels.apply_side),
    "fill": (book._fill_side, _levels.fill_side),
}


def _failing(pairs):
    yield from pairs
    raise RuntimeError("the feed's iterator failed")


@pytest.mark.parametrize("which", sorted(PAIRS))
def test_an_iterator_failing_part_way_leaves_the_pairs_before_it_in_both(which):
    sides = []
    for loop in PAIRS[which]:
        side = {9.0: 1.0}
        with pytest.raises(RuntimeError, match="iterator failed"):
            loop(side, _failing([(1.0, 2.0), (9.0, 0.0), (3.0, 4.0)]))
        sides.append(side)
    assert sides[0] == sides[1]
    assert sides[1] == (
        {1.0: 2.0, 3.0: 4.0} if which == "apply" else {9.0: 1.0, 1.0: 2.0, 3.0: 4.0}
    )


@pytest.mark.parametrize("which", sorted(PAIRS))
def test_an_iterator_sees_the_levels_applied_before_its_next_item_in_both(which):
    seen = []
    for loop in PAIRS[which]:
        side: dict = {}

        def pairs(side=side):
            for k in range(1, 4):
                yield (float(k), float(len(side) + 1))

        loop(side, pairs())
        seen.append(side)
    assert seen[0] == seen[1] == {1.0: 1.0, 2.0: 2.0, 3.0: 3.0}


@pytest.mark.parametrize("which", sorted(PAIRS))
def test_lists_tuples_and_other_iterables_give_the_same_sides(which):
    levels = [(1.0, 2.0), [2.0, 0.0], (1.0, 0.0), (3.0, float("nan")), (4.0, 5.0)]
    for make in (list, tuple, iter, lambda x: (p for p in x)):
        sides = []
        for loop in PAIRS[which]:
            side = {2.0: 7.0, 3.0: 1.0}
            loop(side, make(levels))
            sides.append(side)
        assert sides[0] == sides[1]
    for loop in PAIRS[which]:
        with pytest.raises(TypeError):
            loop({}, 5)
