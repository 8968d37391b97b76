"""The compiled OKX core's checksum (``_okxbook.c``: CRC-32 by carry-less multiplication where
the CPU has it, zlib-ng or zlib otherwise) against the Python core's ``zlib.crc32`` of the same
text, value for value: every checksum text length around the folding's edges (64 bytes, each
of the 16 paddings, texts of 31..33 bytes around the fixed-size copy, texts far longer than
it), one side or both empty, 10k levels, and random books (hypothesis).

Skipped when the extension is not built here, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import platform
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues.okx import book

_okxbook = require_native("astra.venues.okx._okxbook")


def _levels(levels: list[tuple[str, str]]) -> bytes:
    return ("[" + ",".join(f'["{px}","{sz}","0","1"]' for px, sz in levels) + "]").encode()


def _side(count: int, size: str, descending: bool, start: int = 1000) -> bytes:
    """``count`` levels best first, each sized ``size`` (a positive number's text)."""
    prices = range(start + count, start, -1) if descending else range(start + 1, start + count + 1)
    return _levels([(str(p), size) for p in prices])


def _both(bids: bytes, asks: bytes) -> tuple[int, int]:
    """The C core's checksum and the Python core's of the same snapshot (and the module-level
    function on the C sides)."""
    c_book, py_book = _okxbook.Book(), book.PyBook()
    c_book.load(bids, asks)
    py_book.load(bids, asks)
    c = c_book.checksum()
    assert _okxbook.checksum(c_book.bids, c_book.asks) == c
    assert c_book.bids.top() == py_book.bids.top() and c_book.asks.top() == py_book.asks.top()
    return c, py_book.checksum()


def _text(bids: bytes, asks: bytes) -> str:
    py_book = book.PyBook()
    py_book.load(bids, asks)
    b, a = py_book.bids.top(), py_book.asks.top()
    parts = [t for k in range(max(len(b), len(a))) for t in (b[k : k + 1] + a[k : k + 1])]
    return ":".join(parts)


def test_the_crc_in_use_is_named_and_is_the_fast_one_where_the_cpu_has_it():
    assert _okxbook.CRC in ("pclmul", "zlib-ng", "zlib")
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            flags = open("/proc/cpuinfo").read().split()
        except OSError:  # pragma: no cover - not Linux
            return
        if "pclmulqdq" in flags:  # the start-up check against zlib passed
            assert _okxbook.CRC == "pclmul"


def test_every_text_length_around_the_folding_edges():
    # One bid of a chosen width and up to 39 asks (the top 25 count): every length from 3 to
    # ~160 bytes, so every padding (0..15) and both sides of 64 bytes (the shortest text that
    # is folded) are met.
    seen = set()
    for asks in range(0, 40):
        for width in range(1, 41):
            bids = _levels([("1", "1" * width)])  # "1:" + width digits
            ask_side = _side(asks, "2", descending=False, start=10)
            c, py = _both(bids, ask_side)
            assert c == py, (asks, width)
            seen.add(len(_text(bids, ask_side)))
    assert set(range(3, 160)) <= seen


@pytest.mark.parametrize("width", [29, 30, 31, 32, 33, 34, 63, 64, 65, 200, 5000])
def test_texts_around_and_far_beyond_the_fixed_copy(width):
    # "px:sz" of width-2 .. width+2 bytes: the 32-byte copy, the memcpy for longer texts.
    for extra in range(-2, 3):
        size = "1" * max(1, width + extra - 5)  # "1001:" is 5 bytes
        c, py = _both(_side(25, size, True), _side(25, size, False, start=5000))
        assert c == py


def test_one_side_or_both_empty():
    for bids, asks in [
        (b"[]", b"[]"),
        (_side(30, "3", True), b"[]"),
        (b"[]", _side(30, "3", False)),
        (_side(1, "3", True), b"[]"),
    ]:
        c, py = _both(bids, asks)
        assert c == py


def test_ten_thousand_levels_a_side():
    c, py = _both(_side(10_000, "12.5", True), _side(10_000, "0.001", False, start=20_000))
    assert c == py


def test_a_checksum_text_beyond_the_stack_buffer():
    # 50 texts of ~1 KB: the buffer comes from the heap, the fold runs over ~50 KB.
    size = "9" * 1000
    bids, asks = _side(25, size, True), _side(25, size, False, start=9000)
    c, py = _both(bids, asks)
    assert c == py
    crc = zlib.crc32(_text(bids, asks).encode())
    assert c == (crc - (1 << 32) if crc & 0x8000_0000 else crc)


_number = st.from_regex(r"[1-9][0-9]{0,12}(\.[0-9]{1,10})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    bids=st.lists(st.tuples(_number, _number), max_size=40),
    asks=st.lists(st.tuples(_number, _number), max_size=40),
    updates=st.lists(st.tuples(_number, st.sampled_from(["0", "1", "22.5"])), max_size=20),
)
def test_random_books_and_updates_give_the_same_checksum(bids, asks, updates):
    c_book, py_book = _okxbook.Book(), book.PyBook()
    b, a = _levels(bids), _levels(asks)
    c_book.apply(b, a)
    py_book.apply(b, a)
    assert c_book.checksum() == py_book.checksum()
    u = _levels(updates)
    c_book.apply(u, u)
    py_book.apply(u, u)
    assert c_book.checksum() == py_book.checksum()


def _frame(checksum) -> bytes:
    bids = _side(30, "1.5", True).decode()
    asks = _side(30, "2.5", False, start=2000).decode()
    return (
        '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":'
        f'[{{"asks":{asks},"bids":{bids},"ts":"1","checksum":{checksum}}}]}}'
    ).encode()


def _update(book_obj, data):
    try:
        changes = book_obj.update(data, True)
    except book.ChecksumMismatch as exc:
        return "ChecksumMismatch", str(exc), book_obj.verified
    return "ok", [len(side) for side in changes], book_obj.verified


def test_update_compares_every_sent_checksum_as_python_does():
    # The right one, near misses, 0 (not sent), and ints beyond 32 and 64 bits (msgspec's).
    probe = book.PyBook()
    first = book.py_decode_push(_frame(0)).data[0]
    probe.update(first, True)
    right = probe.checksum()
    for sent in [right, 0, right + 1, -right or 1, right + (1 << 32), 1 << 63, 1 << 70, -(1 << 70)]:
        frame = _frame(sent)
        c_book, py_book = _okxbook.Book(), book.PyBook()
        c_data = _okxbook.decode_push(book.py_decode_push, frame).data[0]
        py_data = book.py_decode_push(frame).data[0]
        assert c_data.checksum == py_data.checksum == sent
        assert _update(c_book, c_data) == _update(py_book, py_data), sent
        # The same through BookData (msgspec's object, read by attribute) on the C core.
        assert _update(_okxbook.Book(), py_data) == _update(book.PyBook(), py_data), sent
