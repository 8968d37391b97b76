"""The compiled book cores: built where CI requires them, chosen as ``ASTRA_NATIVE`` says, and
``astra.venues._levels`` equal to book.py's Python loops value for value."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astra.venues import book
from astra.venues.native import implementations, load_native

ROOT = Path(__file__).resolve().parents[2]
# Every extension setup.py declares (the name is what setup.py builds).
NATIVE_MODULES = [
    "astra.venues._levels",
    "astra.venues.okx._okxbook",
    "astra.venues.kraken._krakenbook",
    "astra.venues.htx._htxbook",
]
REQUIRED = os.environ.get("ASTRA_REQUIRE_NATIVE") == "1"


def test_setup_py_declares_exactly_these_modules() -> None:
    text = (ROOT / "setup.py").read_text()
    declared = [line.split('"')[1] for line in text.splitlines() if '_native("astra.' in line]
    assert declared == NATIVE_MODULES


@pytest.mark.parametrize("name", NATIVE_MODULES)
def test_each_compiled_module_is_built_where_ci_requires_it(name: str) -> None:
    module = load_native(name)
    if module is None and not REQUIRED:
        pytest.skip(f"{name} is not built here (set ASTRA_REQUIRE_NATIVE=1 to require it)")
    assert module is not None, implementations()[name]
    assert implementations()[name] == "c"


def test_astra_native_0_selects_python_everywhere() -> None:
    code = (
        "import astra.venues.book as b, astra.venues.native as n;"
        "print(b.IMPLEMENTATION, n.implementations()['astra.venues._levels'])"
    )
    env = {**os.environ, "ASTRA_NATIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["python", "python", "(ASTRA_NATIVE=0)"], out.stderr


def test_a_module_that_is_not_there_falls_back_and_says_why() -> None:
    assert load_native("astra.venues._no_such_core") is None
    assert implementations()["astra.venues._no_such_core"].startswith("python (not built:")


levels = load_native("astra.venues._levels")
needs_levels = pytest.mark.skipif(
    levels is None and not REQUIRED, reason="astra.venues._levels is not built here"
)
prices = st.sampled_from([100.0, 100.5, 101.0, 99.25, 0.0001, 1e15, -3.0, 7])
quantities = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1.5, 2, 0, math.nan, math.inf, 1e-300]),
    st.floats(allow_nan=True),
)
pairs = st.lists(
    st.one_of(st.tuples(prices, quantities), st.lists(prices, min_size=2, max_size=2)), max_size=40
)


def _same(a: dict, b: dict) -> bool:
    """Equal dicts, NaN quantities included, in the same insertion order."""
    return list(a) == list(b) and all(
        x is y or x == y or (math.isnan(x) and math.isnan(y))
        for x, y in zip(a.values(), b.values(), strict=True)
    )


@needs_levels
@given(start=st.dictionaries(prices, st.floats(min_value=0.1, max_value=9)), changes=pairs)
def test_apply_side_equals_the_python_loop(start: dict, changes: list) -> None:
    ours, reference = dict(start), dict(start)
    levels.apply_side(ours, changes)
    book._apply_side(reference, changes)
    assert _same(ours, reference)


@needs_levels
@given(changes=pairs)
def test_fill_side_equals_the_python_loop(changes: list) -> None:
    ours, reference = {}, {}
    levels.fill_side(ours, changes)
    book._fill_side(reference, changes)
    assert _same(ours, reference)


@needs_levels
@pytest.mark.parametrize(
    "bad", [[(1.0,)], [(1.0, 2.0, 3.0)], [1.0], [None], [(1.0, "x")], "ab", 5, [(1.0, None)]]
)
def test_bad_pairs_raise_what_python_raises_after_the_same_prefix(bad) -> None:
    changes = [(5.0, 1.0), *bad] if isinstance(bad, list) else bad
    outcomes = []
    for fn in (levels.apply_side, book._apply_side, levels.fill_side, book._fill_side):
        side = {9.0: 1.0}
        with pytest.raises((TypeError, ValueError)) as err:
            fn(side, changes)
        outcomes.append((err.type, side))
    assert outcomes[0] == outcomes[1]
    assert outcomes[2] == outcomes[3]


@needs_levels
def test_the_book_runs_the_compiled_loops_and_keeps_its_semantics() -> None:
    assert book.IMPLEMENTATION == "c"
    b = book.L2Book("X")
    b.reset([(100.0, 1.0), (99.0, 0.0), (100.0, 2.0)], [(101.0, 1.0)], 1, 10)
    assert b.bids == {100.0: 2.0} and b.asks == {101.0: 1.0}
    b.apply([(100.0, 0.0), (98.0, 3.0)], [(101.0, 0.5), (102.0, 0.0)], 2, 20)
    assert b.top() == ([(98.0, 3.0)], [(101.0, 0.5)])
    assert (b.update_id, b.timestamp) == (2, 20)
