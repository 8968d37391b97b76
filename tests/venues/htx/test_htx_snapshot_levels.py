"""A snapshot's sides read in C (``_htxbook.positive_levels``, behind ``fullbook._positive``)
against the reference (``fullbook._positive_py``: msgspec), value for value: the same levels
(every float's bits) or the same exception (class and message), on every recorded side, on
generated sides in every number form, and on adversarial text. C reads only the strict form
and hands everything else to msgspec (None), so it never accepts what msgspec rejects.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI).
"""

from __future__ import annotations

import json
import random
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues.htx import feed, fullbook

_htxbook = require_native("astra.venues.htx._htxbook")


def _outcome(fn, text):
    try:
        out = fn(text)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return [tuple(struct.pack("<d", v) for v in lv) for lv in out]


def _c_positive(text: bytes):
    """fullbook._positive_c with the extension's function (whatever ASTRA_NATIVE says)."""
    levels = _htxbook.positive_levels(text)
    return fullbook._positive_py(text) if levels is None else levels


def _same(text: bytes):
    py = _outcome(fullbook._positive_py, text)
    assert _outcome(_c_positive, text) == py, text[:200]
    return py


def test_snapshots_are_read_in_c_here():
    if fullbook.IMPLEMENTATION == "c":
        assert fullbook._positive is fullbook._positive_c
    else:  # ASTRA_NATIVE=0: the reference runs
        assert fullbook._positive is fullbook._positive_py


def test_every_recorded_side_reads_the_same_and_in_c(recording):
    decode = msgspec.json.Decoder(feed.DepthMessage, strict=False).decode
    sides = 0
    for frames in recording.depth_topics().values():
        for raw, _ in frames:
            tick = decode(feed.gunzip(raw)).tick
            for side in (bytes(tick.bids), bytes(tick.asks)):
                assert _same(side)[0] != "raised"
                if side != b"[]":
                    assert _htxbook.positive_levels(side) is not None  # the strict form
                sides += 1
    assert sides == 2 * 292


_NUMBERS = [
    "0",
    "-0",
    "-0.0",
    "1",
    "0.5",
    "100.25",
    "9.121E-7",
    "5.2475e-06",
    "4058.2058100628933",
    "123456789012345678",
    "1234567890123456789",  # 19 digits: msgspec's
    "0.1234567890123456789012",
    "1e22",
    "1e23",
    "1e-400",
    "1e400",
    "-1e400",
    "NaN",
    '"1.5"',
    "01",
    "1.",
    ".5",
    "+1",
    "1e",
    "true",
    "null",
    "",
]


@st.composite
def _number(draw) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(_NUMBERS))
    x = draw(st.floats(min_value=0, max_value=1e16, allow_nan=False, allow_infinity=False))
    return draw(st.sampled_from([repr(x), f"{x:.8f}", f"{x:.17g}", f"{x:e}", f"{x:.3E}"]))


@st.composite
def _side(draw) -> bytes:
    n = draw(st.integers(0, 40))
    levels = [f"[{draw(_number())},{draw(_number())}]" for _ in range(n)]
    sep = draw(st.sampled_from([",", ",", ",", ", "]))
    return f"[{sep.join(levels)}]".encode()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_side())
def test_generated_sides_read_the_same(text):
    _same(text)


@pytest.mark.parametrize(
    "text",
    [
        b"[[1,2],[3,4]",  # truncated
        b"[[1,2],[3,4",
        b"[[1,2],[3]]",
        b"[[1,2],[3,4,5]]",
        b"[[1,2],[1e400,1]]",
        b"[[1,2],[NaN,1]]",
        b'[[1,2],["1.5","2\\u0030"]]',
        b"[[1,2],[1\x00,1]]",
        b"[[" + b"9" * 5000 + b",1]]",
        b"[[1,2]] ",
        b" [[1,2]]",
        b"[[]]",
        b"[[],[]]",
        b"[]",
        b"",
        b"]]",
        b"[[]",
        b"[[1,2]],[[3,4]]",
        b"[[1,2],[3,4]]]]",
        b"[[0,1],[-0,2],[1,-1],[2,0]]",
    ],
)
def test_adversarial_sides_read_or_fail_alike(text):
    _same(text)


def test_ten_thousand_levels():
    rng = random.Random(5)
    levels = [[round(i * 0.01, 2), rng.choice([0, 1, 2.5, 1e-8])] for i in range(1, 10_001)]
    text = json.dumps(levels).replace(" ", "").encode()
    out = _same(text)
    assert 5000 < len(out) < 10_000


def test_text_that_is_not_bytes_goes_to_msgspec():
    for text in ("[[1,2],[3,0]]", memoryview(b"[[1,2],[3,0]]"), bytearray(b"[[1,2]]")):
        assert _htxbook.positive_levels(text) is None
        _same(text)
