"""The compiled OKX book core (``_okxbook.c``) against the pure-Python one (``book.py``), which
defines the behaviour: the same operations on both, compared value for value after every step
(changes and prices bit for bit, texts, top 25, checksum, the exception type, the state after
an error). Random messages (hypothesis: repeated prices, texts of one price written two ways,
deletes of absent levels, NaN/inf/exponents/whitespace/underscores/non-ASCII digits, odd level
shapes, truncated or corrupted JSON), the recorded session, and adversarial input that must
raise a clear exception, never crash or hang.

The C module's tests skip when it is not built here, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.venues.okx import book
from astra.venues.okx.feed import BookFeed
from astra.venues.okx.schemas import BookData, Push

decode = msgspec.json.Decoder(Push[BookData]).decode


def _compiled():
    """The C module when it is built here (whatever ASTRA_NATIVE says: these tests compare the
    two cores, the application's choice is book.IMPLEMENTATION), else None."""
    try:
        return importlib.import_module("astra.venues.okx._okxbook")
    except ImportError:
        return None


@pytest.fixture(scope="module")
def native():
    module = _compiled()
    if module is None:
        if os.environ.get("ASTRA_REQUIRE_NATIVE") == "1":
            pytest.fail("astra.venues.okx._okxbook is not built (ASTRA_REQUIRE_NATIVE=1)")
        pytest.skip("astra.venues.okx._okxbook is not built here (set ASTRA_REQUIRE_NATIVE=1)")
    return module


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)  # NaN == NaN and 0.0 != -0.0 here, as they must be


def _changes(changes) -> list[tuple[bytes, bytes]]:
    assert all(type(p) is float and type(q) is float for p, q in changes)
    return [(_bits(p), _bits(q)) for p, q in changes]


def _state(side) -> tuple:
    prices = side.prices
    return (
        [_bits(p) for p in prices],
        side.texts,
        side.top(),
        [(_bits(p), t) for p, t in side.levels()],
        len(side),
        len(prices),
    )


def _run(call):
    """('ok', result) or ('error', exception type)."""
    try:
        result = call()
    except (ValueError, TypeError, RecursionError) as exc:
        return "error", type(exc)
    return "ok", result


def _same_step(py_book, c_book, method: str, bids, asks) -> tuple:
    py = _run(lambda: getattr(py_book, method)(bids, asks))
    c = _run(lambda: getattr(c_book, method)(bids, asks))
    assert py[0] == c[0], (method, bids, asks, py, c)
    if py[0] == "ok":
        assert [_changes(x) for x in py[1]] == [_changes(x) for x in c[1]]
    else:
        assert py[1] is c[1], (bids, asks, py, c)
    for side in ("bids", "asks"):
        assert _state(getattr(py_book, side)) == _state(getattr(c_book, side)), side
    assert py_book.checksum() == c_book.checksum()
    assert book.py_checksum(py_book.bids, py_book.asks) == py_book.checksum()
    return py


# ---- random messages -----------------------------------------------------------------------

_PRICES = st.one_of(
    st.integers(0, 40).map(lambda i: f"{100 + i / 4:g}"),  # "100", "100.25", ...
    st.integers(0, 40).map(lambda i: f"{100 + i / 4:.3f}"),  # the same prices, other texts
    st.sampled_from(
        ["-5", "-0", "0", "0.0", "1e2", "100.", ".5", " 101", "1_0_1", "nan", "-nan", "inf",
         "-inf", "Infinity", "", "abc", "١٠١", "101\u00a0", "9" * 30, "0." + "0" * 30 + "1",
         "12345678901234567890", "9007199254740993", "1.7976931348623157e309", "1e-400",
         "0x10", "1e", "--1", "é"]
    ),
)  # fmt: skip
_SIZES = st.sampled_from(
    ["0", "0", "1", "2.5", "10", "0.001", "-1", "-0", "0.0", "nan", "inf", "1e2", "00", " 3",
     "", "x", "3.00000000000000000001", "1_0"]
)  # fmt: skip
_EXTRA = st.sampled_from(["0", "4", 0, -1.5e3, None, True, [], {"a": [1, {}]}, "é"])


@st.composite
def _level(draw):
    shape = draw(st.integers(0, 30))
    if shape == 0:
        return draw(st.sampled_from([[], {"px": "1"}, None, "1", 5]))
    if shape == 1:
        return [draw(_PRICES)]
    if shape == 2:
        return [draw(_PRICES), draw(st.sampled_from([5, None, ["1"]]))]
    return [draw(_PRICES), draw(_SIZES), *draw(st.lists(_EXTRA, max_size=3))]


@st.composite
def _raw(draw) -> bytes:
    levels = draw(st.lists(_level(), max_size=14))
    how = draw(st.integers(0, 12))
    if how == 0:  # whitespace everywhere JSON allows it
        return json.dumps(levels, indent=1, ensure_ascii=False).encode()
    data = msgspec.json.encode(levels)
    if how == 1 and data:  # truncated
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == 2:  # one byte replaced
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        byte = draw(st.sampled_from(b'"\\[],:{}x\x00\x1f\x7f\xc3\xff 0-.eE'))
        return data[:at] + bytes([byte]) + data[at + 1 :]
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=st.tuples(_raw(), _raw()), messages=st.lists(st.tuples(_raw(), _raw()), max_size=8))
def test_random_messages_give_the_same_results_errors_and_state(native, snapshot, messages):
    py_book, c_book = book.PyBook(), native.Book()
    _same_step(py_book, c_book, "load", *snapshot)
    for bids, asks in messages:
        _same_step(py_book, c_book, "apply", bids, asks)


_TICK = st.integers(0, 400).map(lambda i: f"{30000 + i / 10:.1f}")


@settings(max_examples=100, deadline=None)
@given(
    snapshot=st.lists(st.tuples(_TICK, st.sampled_from(["1", "0.5", "2"])), max_size=400),
    messages=st.lists(
        st.lists(st.tuples(_TICK, st.sampled_from(["0", "0", "1", "0.25", "3"])), max_size=40),
        max_size=30,
    ),
)
def test_deep_books_of_plain_levels_stay_equal(native, snapshot, messages):
    """OKX-shaped traffic (the fast paths): a deep book, updates anywhere in it."""

    def raw(pairs):
        return msgspec.json.encode([[p, q, "0", "1"] for p, q in pairs])

    py_book, c_book = book.PyBook(), native.Book()
    best_first = sorted(set(snapshot), key=lambda pq: -float(pq[0]))
    _same_step(py_book, c_book, "load", raw(best_first), raw(best_first[::-1]))
    for message in messages:
        _same_step(py_book, c_book, "apply", raw(message), raw(message[::-1]))


def test_the_sides_alone_and_the_checksum_function_match(native):
    message = b'[["3","1","0","1"],["1","2"],["2","0"],["2.0","5"],["nan","1"],["4","1"]]'
    for descending in (True, False):
        py_side, c_side = book.PyBookSide(descending), native.BookSide(descending)
        assert _changes(py_side.load(message)) == _changes(c_side.load(message))
        assert _changes(py_side.apply(message)) == _changes(c_side.apply(message))
        assert _state(py_side) == _state(c_side)
        assert bool(c_side.descending) is descending
    py_b, py_a = book.PyBookSide(True), book.PyBookSide(False)
    c_b, c_a = native.BookSide(True), native.BookSide(False)
    for side in (py_b, py_a, c_b, c_a):
        side.load(b'[["8476.97","256"],["8475.55","101"]]')
    assert native.checksum(c_b, c_a) == book.py_checksum(py_b, py_a)
    with pytest.raises(TypeError):
        native.checksum(c_b, py_a)
    with pytest.raises(TypeError):
        native.Book().apply(b"[]")


# ---- the recorded session ------------------------------------------------------------------


def test_the_recorded_session_gives_equal_books_changes_and_checksums(native, okx_book_frames):
    compared = 0
    for frames in okx_book_frames.values():
        py_book = c_book = None
        for text in frames:
            push = decode(text)
            data = push.data[0]
            if push.action == "snapshot":
                py_book, c_book = book.PyBook(), native.Book()
                method = "load"
            else:
                method = "apply"
            _same_step(py_book, c_book, method, data.bids, data.asks)
            assert c_book.checksum() == data.checksum  # the venue's own, every message
            compared += 1
    assert compared == sum(len(f) for f in okx_book_frames.values())


def test_the_feed_resyncs_the_same_way_on_either_core(okx_book_frames, recording_sink, monkeypatch):
    """A level the parser refuses (here an escape) is a resync of that market with either core,
    and the sink hears exactly the same events."""
    frames = okx_book_frames["UNI-USD-SWAP"][:6]
    bad = json.loads(frames[3])
    bad["data"][0]["bids"][0][0] = "5.1\\u0030"  # an escape where OKX writes plain digits
    text = json.dumps(bad).replace("\\\\u0030", "\\u0030")
    events = []
    compiled = _compiled()
    for core in [book.PyBook] + ([compiled.Book] if compiled is not None else []):
        monkeypatch.setattr("astra.venues.okx.feed.Book", core)
        sink = recording_sink()
        feed = BookFeed(None, "books", "UNI-USD-SWAP", "OKX-PERP-UNI-USD", sink)  # type: ignore[arg-type]
        for frame in [*frames[:3], text, frames[4]]:
            feed.on_push(decode(frame))
        assert sink.kinds() == ["snapshot", "update", "update", "resync"]
        assert "escape" in sink.events[-1][1] and not feed.sync.synced
        events.append([e[:2] for e in sink.events])
    assert all(e == events[0] for e in events)


# ---- adversarial bytes ---------------------------------------------------------------------

_BAD = [
    b"",
    b"   ",
    b"[",
    b"[[",
    b'[["1"',
    b'[["1","2"',
    b'[["1","2"]',
    b'[["1","2"],]',
    b'[["1","2",]]',
    b'[["1","2"]]x',
    b"[,]",
    b"{}",
    b"null",
    b"[null]",
    b'[{"px":"1","sz":"2"}]',
    b'[[1,"2"]]',
    b'[["1",2]]',
    b'[["1",null]]',
    b'[["1","2",01]]',
    b'[["1","2",1.]]',
    b'[["1","2",-]]',
    b'[["1","2",1e]]',
    b'[["1","2",NaN]]',
    b'[["1","2",Infinity]]',
    b'[["1","2",tru]]',
    b'[["1","2",{"a"}]]',
    b'[["1","2",{"a":}]]',
    b'[["1","2",{1:2}]]',
    b'[["1","2",[1,]]]',
    b'[["\\u0031","2"]]',  # an escape: refused by both
    b'[["1","2","\\n"]]',
    b'[["1\x01","2"]]',
    b'[["\xff","2"]]',
    b'[["\xed\xa0\x80","2"]]',
    b'[["\xc3","2"]]',
    b'[["1","2"]\x0c]',
    b'\xef\xbb\xbf[["1","2"]]',
    b'[["nan","1"],["x","1"]]',  # a float error after a NaN level was applied
    b'[["1","2"],["1","abc"]]',
    b'[["' + b"9" * 5000 + b'","1"]]',  # huge numbers: float() decides (inf, or a value)
    b'[["1e99999","1e-99999"]]',
    b'[["1","2","' + b"x" * 100_000 + b'"]]',
]


@pytest.mark.parametrize("raw", _BAD, ids=range(len(_BAD)))
def test_adversarial_input_raises_the_same_error_or_gives_the_same_book(native, raw):
    for method in ("load", "apply"):
        py_book, c_book = book.PyBook(), native.Book()
        start = b'[["2","1"],["1.5","3"]]'
        _same_step(py_book, c_book, "load", start, start)
        _same_step(py_book, c_book, method, raw, raw)


def test_non_bytes_input_is_a_type_error_in_both(native):
    for bad in ("[]", 5, None, [["1", "2"]]):
        py = _run(lambda bad=bad: book.PyBook().apply(bad, b"[]"))
        c = _run(lambda bad=bad: native.Book().apply(bad, b"[]"))
        assert py == c == ("error", TypeError)
    raw = msgspec.json.decode(b'{"a":[["1","2"]]}', type=dict[str, msgspec.Raw])["a"]
    for source in (raw, bytearray(b'[["1","2"]]'), memoryview(b'[["1","2"]]')):
        assert native.Book().apply(source, b"[]") == book.PyBook().apply(source, b"[]")


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deep_nesting_is_skipped_or_refused_alike_without_crashing(native, depth):
    raw = b'[["1","2",' + b"[" * depth + b"]" * depth + b"]]"
    obj = b'[["1","2",' + b'{"a":' * depth + b"1" + b"}" * depth + b"]]"
    for data in (raw, obj):
        py = _run(lambda data=data: book.PyBook().apply(data, b"[]"))
        c = _run(lambda data=data: native.Book().apply(data, b"[]"))
        assert py[0] == c[0]
        assert (py[1] is RecursionError) == (c[1] is RecursionError) == (depth > 1000)


def test_ten_thousand_levels_and_a_long_checksum_text(native):
    levels = [[f"{100000 - i}.{i % 10}", f"{i % 7}.5", "0", "1"] for i in range(10_000)]
    raw = msgspec.json.encode(levels)
    py_book, c_book = book.PyBook(), native.Book()
    _same_step(py_book, c_book, "load", raw, msgspec.json.encode(levels[::-1]))
    _same_step(py_book, c_book, "apply", msgspec.json.encode(levels[::3]), raw)
    assert len(c_book.bids) == 10_000
    # Texts longer than the checksum's stack buffer: the heap path, the same CRC.
    long = [[f"{i}." + "0" * 200 + "1", "1." + "0" * 200] for i in range(1, 30)]
    _same_step(py_book, c_book, "load", msgspec.json.encode(long[::-1]), msgspec.json.encode(long))


def test_astra_native_0_selects_the_python_core():
    code = "import astra.venues.okx.book as b; print(b.IMPLEMENTATION, b.Book.__name__)"
    env = {**os.environ, "ASTRA_NATIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["python", "PyBook"], out.stderr
