"""The compiled OKX core's number reading (``_okxbook.c``: OKX's level shape by the straight
path, okx_level / plain_number, anything else by the general parser and float()) against the
Python core's ``float(text)``, bit for bit: every text length 1..20 with the dot at every
place, leading zeros, 19 and 20 digits and 2**53 + 1 (the fast path's bounds), texts the
straight path must leave to the general parser (".5", "5.", "", "-1", "1e5", two dots), a level
at the very end of the input, trailing fields of every length, and random digit texts
(hypothesis); changes, texts and errors compared. (A 16-byte SIMD reading of these numbers was
measured and was no faster on the recorded session; these cases stay as the edges of any
faster reading.)

Skipped when the extension is not built here, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues.okx import book

_okxbook = require_native("astra.venues.okx._okxbook")


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _outcome(side_type, raw: bytes, descending: bool):
    side = side_type(descending)
    try:
        changes = side.apply(raw)
    except ValueError:
        return "ValueError", side.texts
    return [(_bits(p), _bits(q)) for p, q in changes], side.texts, [_bits(p) for p in side.prices]


def _same(raw: bytes) -> None:
    for descending in (True, False):
        c = _outcome(_okxbook.BookSide, raw, descending)
        py = _outcome(book.PyBookSide, raw, descending)
        assert c == py, raw


def _texts() -> list[str]:
    out = []
    for length in range(1, 21):
        digits = "".join(str((7 * k + 3) % 10) for k in range(length))
        out.append(digits)
        out.append("0" * (length - 1) + "1")
        out.extend(digits[:dot] + "." + digits[dot:] for dot in range(1, length))
    return out


@pytest.mark.parametrize("where", ["price", "size"])
def test_every_length_and_dot_position_reads_as_float(where):
    texts = _texts()
    for text in texts:
        level = f'["{text}","2.5","0","1"]' if where == "price" else f'["100.5","{text}","0","1"]'
        # OKX's shape, followed by more input and at the very end of it.
        _same(f"[{level},{level}]".encode())
        _same(f"[{level}]".encode())
        _same(f'[{level},["1","1","0","123456789012345678"]]'.encode())


_ODD = [
    *".5 5. -1 -0.5 1e5 1.2.3 1..2 +1 0x10 ١٢ inf nan 1_000 9007199254740993".split(),
    *["", " 1", "1 ", "9" * 15, "9" * 16, "9" * 19, "9" * 20, "0." + "0" * 14 + "1"],
]


@pytest.mark.parametrize("text", _ODD)
def test_texts_the_fast_path_leaves_to_the_general_parser(text):
    for level in (f'["{text}","1","0","1"]', f'["1","{text}","0","1"]'):
        _same(f"[{level},{level}]".encode())
        _same(f"[{level}]".encode())


@pytest.mark.parametrize("extra", ["", "0", "12345678901234", "123456789012345678901", "x", "1.5"])
def test_trailing_fields_of_every_length(extra):
    _same(f'[["100","1","{extra}","{extra}"],["101","2","0","{extra}"]]'.encode())


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[0-9]{1,17}(\.[0-9]{1,17})?", fullmatch=True),
            st.from_regex(r"[0-9]{1,17}(\.[0-9]{1,17})?", fullmatch=True),
            st.from_regex(r"[0-9]{0,20}", fullmatch=True),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_plain_levels(levels):
    _same(("[" + ",".join(f'["{p}","{q}","0","{n}"]' for p, q, n in levels) + "]").encode())
