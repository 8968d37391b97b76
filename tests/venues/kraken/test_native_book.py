"""The compiled ``KrakenBook`` (``_krakenbook.c``) against the pure-Python reference
(``book.PythonKrakenBook``), value for value: every return value, every exception (type, and
the message where the book writes it), and the whole observable state after every call
(levels, top, checksum, verified count), on generated input (hypothesis: valid, odd and bad
levels, timestamps, checksums right and wrong) and on the recorded session converted to v2
frames. Then adversarial frames through the real feed: each is refused with a clear
exception or a resync, the book unchanged, never a crash or a hang.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI) makes that a
failure. The compiled module is imported directly, so it is tested under ``ASTRA_NATIVE=0``
too (where the feed itself runs the Python book).
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import subprocess
import sys
import time
import zlib
from datetime import datetime

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from astra.venues.book import L2Book
from astra.venues.kraken import book as kraken_book
from astra.venues.kraken.book import ChecksumMismatch, PythonKrakenBook, checksum_of
from astra.venues.kraken.feed import SpotBook, SpotPool
from astra.venues.kraken.schemas import BookData, BookLevel, ChannelMessage
from astra.venues.kraken.stream import KrakenStream
from astra.venues.kraken.symbols import KrakenMarket

REQUIRED = os.environ.get("ASTRA_REQUIRE_NATIVE") == "1"
try:
    _native = importlib.import_module("astra.venues.kraken._krakenbook")
except ImportError as exc:  # not built here
    _native, _missing = None, str(exc)
else:
    _native._bind(ChecksumMismatch, L2Book)  # (book.py does it, unless ASTRA_NATIVE=0)
    _missing = ""

pytestmark = pytest.mark.skipif(
    _native is None and not REQUIRED,
    reason=f"_krakenbook is not built here ({_missing}); ASTRA_REQUIRE_NATIVE=1 requires it",
)


@pytest.fixture(autouse=True)
def _built() -> None:
    if _native is None:
        pytest.fail(f"ASTRA_REQUIRE_NATIVE=1 but _krakenbook is not built: {_missing}")


def Native(*args, **kwargs):
    return _native.KrakenBook(*args, **kwargs)


decode = msgspec.json.Decoder(ChannelMessage).decode
INF, NAN = math.inf, math.nan


# -- comparing the two ----------------------------------------------------------------------


def outcome(fn):
    """("ok", value) or ("raised", type, message): the message only where the book writes it
    (the interpreter's own wording, e.g. for unpacking, differs between Python versions)."""
    try:
        return ("ok", fn())
    except Exception as exc:
        text = str(exc)
        mine = text.startswith(("kraken book:", "checksum "))
        return ("raised", type(exc), text if mine else None)


def same(a, b) -> bool:
    """Equal and of the same types all the way down; floats bit for bit (by repr)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return same(list(a.items()), list(b.items()))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def levels_state(book) -> tuple:
    """What can be read without computing the checksum (which would fill its caches)."""
    return (
        outcome(lambda: book.bids),
        outcome(lambda: book.asks),
        outcome(lambda: book.top()),
        outcome(lambda: book.top(None)),
        outcome(lambda: book.top(3)),
        book.verified,
        book.depth,
    )


def copies(args):
    """Each book gets its own lists: apply extends them with truncation deletes."""
    return [list(a) if type(a) is list else a for a in args]


class Twin:
    """A Python and a C book driven alike; every call's outcome and the state after it are
    compared."""

    def __init__(self, depth, price_decimals, qty_decimals) -> None:
        self.py = PythonKrakenBook(depth, price_decimals, qty_decimals)
        self.c = Native(depth, price_decimals, qty_decimals)

    def call(self, name: str, *args, state: bool = True):
        """``state=False``: the outcome only (the books' whole state is compared later)."""
        py_args, c_args = copies(args), copies(args)
        got_py = outcome(lambda: getattr(self.py, name)(*py_args))
        got_c = outcome(lambda: getattr(self.c, name)(*c_args))
        assert same(got_py, got_c), (name, args, got_py, got_c)
        assert same(py_args, c_args), (name, "arguments changed differently")
        if name == "apply" and got_c[0] == "ok":  # the given lists come back, extended
            assert got_c[1][0] is c_args[0] and got_c[1][1] is c_args[1]
        if state:
            self.check()
        return got_py

    def check(self, checksum: bool = False) -> None:
        assert same(levels_state(self.py), levels_state(self.c))
        if checksum:
            assert same(outcome(self.py.checksum), outcome(self.c.checksum))

    def expected_after(self, data: BookData, kind: str) -> int | None:
        """The checksum the reference would have after ``data`` (None when it cannot)."""
        clone = copy.deepcopy(self.py)
        try:
            if kind == "snapshot":
                clone.reset(*data.to_changes())
            else:
                clone.apply(*data.to_changes())
            return clone.checksum()
        except Exception:
            return None


# -- generated input ------------------------------------------------------------------------


def mostly(common, rare, in_20: int = 2):
    """``common``, and ``rare`` about ``in_20`` times in 20."""
    return st.integers(0, 19).flatmap(lambda i: rare if i < in_20 else common)


grid = st.integers(1, 40).map(lambda i: round(100 + i * 0.25, 2))  # equal prices meet
odd_price = st.sampled_from(
    [1e-9, 5e-324, 0.1, 0.3, 1e15, 9.3e18, 1.7e308, 1e300, -1.0, 0.0, -0.0, NAN, INF, -INF]
)
price = mostly(grid, st.one_of(odd_price, st.floats(min_value=1e-6, max_value=1e6)), 3)
fine_qty = st.sampled_from([0.0, 0.0, -0.0, -1.0, 0.5, 1.0, 12.3456789, 1e-8, 1e12])
qty = mostly(fine_qty, st.one_of(st.sampled_from([1e20, 1e300]), st.floats(allow_infinity=True)), 2)
bad_level = st.sampled_from(
    [(1.0,), (1.0, 2.0, 3.0), (100, 1.0), (100.25, 1), ("1", 1.0), None, 5, (True, 1.0)]
)
level = mostly(
    st.tuples(price, qty), st.one_of(st.lists(price, min_size=2, max_size=2), bad_level), 1
)
side = mostly(st.lists(level, max_size=12), st.sampled_from([(), None]), 1)
good_side = st.lists(st.tuples(grid, qty.filter(math.isfinite)), max_size=40)


def _ts(dt: datetime) -> str:
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond:06d}Z"
    )


def _mutate(args) -> str:
    text, at, char = args
    at %= len(text)
    return text[:at] + char + text[at + 1 :]


canonical = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(_ts)
timestamp = st.one_of(
    canonical,
    canonical,
    st.tuples(canonical, st.integers(0, 26), st.sampled_from(list("0369x:.Z -+é\x00"))).map(
        _mutate
    ),
    st.sampled_from(
        [
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00.000000Z",
            "2023-12-31T23:59:60.500000Z",
            "2023-12-31T23:59:61.500000Z",
            "0000-01-01T00:00:00.000000Z",
            "2023-10-06T17:35:55Z",
            "2023-10-06T17:35:55.4Z",
            "2023-10-06T19:35:55.440295+02:00",
            "2023-10-06T17:35:55.440abcZ",
            "2023-10-06T17:35:55.4é0295Z",
            "2023-10-06T17:35:55.440295",
            "",
            "garbage",
        ]
    ),
    st.just(UNSET),
    st.just(None),
)


def _book_level(item):
    """A BookLevel for a generated level; odd items stay as they are (msgspec Structs do
    not check types on construction, so bad values reach the book as they would)."""
    if type(item) is tuple and len(item) == 2:
        return BookLevel(*item)
    return item


def book_data(bids, asks, checksum, ts) -> BookData:
    return BookData(
        symbol="X/Y",
        checksum=checksum,
        bids=[_book_level(x) for x in bids] if isinstance(bids, list) else bids,
        asks=[_book_level(x) for x in asks] if isinstance(asks, list) else asks,
        timestamp=ts,
    )


op = st.one_of(
    st.tuples(st.just("apply"), side, side),
    st.tuples(st.just("apply"), side, side),
    st.tuples(st.just("reset"), side, side),
    st.tuples(st.just("update"), side, side, st.booleans(), timestamp),
    st.tuples(st.just("update"), side, side, st.booleans(), timestamp),
    st.tuples(st.just("snapshot"), side, side, st.booleans(), timestamp),
    st.tuples(st.just("checksum")),
    st.tuples(st.just("verify"), st.one_of(st.integers(-1, 2**33), st.just("7"), st.just(1.0))),
    st.tuples(st.just("top"), st.one_of(st.integers(-15, 15), st.just(None), st.just(2.0))),
)


def _run(twin: Twin, ops) -> None:
    for o in ops:
        name = o[0]
        if name in ("update", "snapshot"):
            _, bids, asks, right, ts = o
            data = book_data(bids, asks, 0, ts)
            expected = twin.expected_after(data, name) if right else None
            data.checksum = expected if expected is not None else 12345
            twin.call(name, data)
        else:
            twin.call(name, *o[1:])
    twin.check(checksum=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.sampled_from([1, 3, 10, 11, 25, 1000]),
    decimals=st.tuples(st.integers(0, 18), st.integers(0, 18)),
    snapshot=st.tuples(good_side, good_side),
    ops=st.lists(op, max_size=25),
)
def test_every_call_gives_what_the_python_book_gives(depth, decimals, snapshot, ops):
    twin = Twin(depth, *decimals)
    twin.call("reset", *snapshot)
    _run(twin, ops)


@settings(max_examples=150, deadline=None)
@given(
    depth=st.sampled_from([10, 12, 25]),
    snapshot=st.tuples(good_side, good_side),
    messages=st.lists(st.tuples(good_side, good_side, st.booleans()), max_size=25),
)
def test_a_deep_book_through_update_stays_equal_and_verified(depth, snapshot, messages):
    """Mostly valid messages with right checksums: the verified counts climb together, the
    truncation deletes are the same, at the edge of the top 10 and past it."""
    twin = Twin(depth, 2, 8)
    data = book_data(*snapshot, 0, "2023-10-06T17:35:55.440295Z")
    data.checksum = twin.expected_after(data, "snapshot")
    twin.call("snapshot", data)
    for bids, asks, right in messages:
        data = book_data(bids, asks, 0, "2023-10-06T17:35:55.440295Z")
        expected = twin.expected_after(data, "update")
        data.checksum = expected if right else (expected or 0) ^ 1
        twin.call("update", data)
    twin.check(checksum=True)
    assert twin.c.verified == twin.py.verified


wide = st.integers(1, 400).map(lambda i: round(100 + i * 0.25, 2))
big_side = mostly(
    st.lists(st.tuples(wide, fine_qty), min_size=65, max_size=220),
    st.lists(st.tuples(wide, fine_qty), max_size=64),
    6,
)


@settings(max_examples=120, deadline=None)
@given(
    depth=st.sampled_from([5, 10, 64, 150, 1000]),
    snapshot=st.tuples(big_side, big_side),
    messages=st.lists(st.tuples(big_side, big_side), max_size=6),
)
def test_big_messages_merged_equal_small_ones_applied_in_turn(depth, snapshot, messages):
    """Past 64 changes a side both books sort and merge instead of inserting each: the same
    results as the reference, and as an uncut book fed the message level by level, cut to
    ``depth`` afterwards (the last change to a price decides, then the tail goes)."""
    twin = Twin(depth, 2, 8)
    twin.call("reset", *snapshot)
    for bids, asks in messages:
        stepwise = PythonKrakenBook(10**9, 2, 8)
        stepwise.reset(*twin.py.top(None))
        twin.call("apply", bids, asks, state=False)  # (the state: against stepwise, below)
        for level in bids:
            stepwise.apply([level], [])
        for level in asks:
            stepwise.apply([], [level])
        assert same(stepwise.top(depth), twin.c.top(None))
        assert same(twin.py.top(None), twin.c.top(None))
    twin.check(checksum=True)


@settings(max_examples=300, deadline=None)
@given(ts=timestamp)
def test_timestamps_read_as_the_python_book_reads_them(ts):
    twin = Twin(10, 2, 8)
    data = book_data([], [], 0, ts)
    twin.call("update", data)  # the checksum of an empty book is 0: it verifies
    twin.call("snapshot", data)


@pytest.mark.parametrize(
    "ts",
    ["1970-01-01T00:00:00.000000Z", "2000-02-29T12:00:00.999999Z", "2100-03-01T00:00:00.001Z"],
)
def test_the_compiled_timestamp_parse_matches_the_calendar(ts):
    data = book_data([], [], 0, ts)
    want = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    assert Native(10, 2, 8).update(data)[2] == data.timestamp_ms(0) == want


def test_fields_are_read_as_attributes_whatever_the_type_and_after_it_changes():
    """The compiled book reads a BookData's fields by their slots while the type is the one
    it resolved and unchanged: a subclass, a stand-in object, and a class changed after use
    (a field turned into a property) must all read as attribute access reads them."""

    class Sub(BookData):
        pass

    class Level:
        def __init__(self, price, qty):
            self.price, self.qty = price, qty

    class StandIn:  # duck-typed: what BookData.update needs, no Struct at all
        timestamp, checksum = "2023-10-06T17:35:55.440295Z", 0
        bids, asks = [Level(100.0, 1.0)], []
        to_changes, timestamp_ms = BookData.to_changes, BookData.timestamp_ms

    first = "2020-01-01T00:00:00.000000Z"
    data = Sub(symbol="X/Y", checksum=0, bids=[BookLevel(100.0, 1.0)], timestamp=first)
    for obj in (data, StandIn(), data):
        twin = Twin(10, 2, 8)
        obj.checksum = twin.expected_after(obj, "update")
        assert twin.call("update", obj)[0] == "ok"
    Sub.timestamp = property(lambda self: "2021-06-01T00:00:00.000000Z")
    Sub.bids = property(lambda self: [BookLevel(101.0, 2.0)])
    twin = Twin(10, 2, 8)
    data.checksum = twin.expected_after(data, "update")
    got = twin.call("update", data)
    assert got[0] == "ok" and got[1][0] == [(101.0, 2.0)] and got[1][2] == 1622505600000
    assert twin.call("snapshot", data)[0] == "ok"


# -- the checksum text at its edges ---------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "qty", "decimals"),
    [
        (9223372036854774784.0, 1.0, (0, 0)),  # the last float below 2**63: int64 path
        (9223372036854775808.0, 1.0, (0, 0)),  # 2**63: Python's int writes it
        (1.0, 1e20, (2, 8)),  # 1e28 > 2**63
        (1.7e308, 1.0, (0, 0)),  # the largest floats, still finite
        (0.5, 0.4999999999999999, (0, 0)),  # truncation, not rounding, of x + 0.5
        (45285.2, 0.001, (1, 8)),
        (1e-9, 5e-324, (18, 18)),
    ],
)
def test_checksum_text_is_pythons_beyond_int64_too(price, qty, decimals):
    twin = Twin(10, *decimals)
    ask = price * 2 if price < 1e308 else price
    twin.call("reset", [(price, qty)], [(ask, qty)])
    twin.check(checksum=True)
    ps, qs = 10.0 ** decimals[0], 10.0 ** decimals[1]
    text = "".join("%d%d" % (p * ps + 0.5, qty * qs + 0.5) for p in (ask, price))  # noqa: UP031
    assert twin.c.checksum() == zlib.crc32(text.encode())


def test_an_infinite_checksum_text_is_a_value_error_in_both():
    twin = Twin(10, 9, 8)
    twin.call("reset", [(1e300, 1.0)], [])  # 1e300 * 1e9 overflows to inf
    for book in (twin.py, twin.c):
        with pytest.raises(ValueError, match="beyond the checksum's range"):
            book.checksum()
        with pytest.raises(ValueError, match="beyond the checksum's range"):
            book.verify(0)
    twin.call("apply", [(1e300, 0.0)], [])  # gone: the checksum is computable again
    twin.check(checksum=True)


def test_own_crc_equals_zlib_over_many_lengths():
    """The C CRC (eight bytes a step, sides combined by linearity) is zlib's: a book whose
    text lengths cover every remainder mod 8 on either side."""
    for n_asks in range(11):
        for n_bids in range(11):
            book = Native(1000, 3, 5)
            asks = [(1.0 + i * 0.001, 0.00001 * (10 ** (i % 7))) for i in range(n_asks)]
            bids = [(0.9 - i * 0.01, 1.5 + i) for i in range(n_bids)]
            book.reset(bids, asks)
            assert book.checksum() == checksum_of(asks, bids, 3, 5)


# -- construction and bad arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        (10, 2, 8),
        (0, 2, 8),
        (-1, 2, 8),
        (10, -1, 8),
        (10, 2, 19),
        (10, 2.0, 8),
        ("10", 2, 8),
        (10**30, 2, 8),
        (True, 2, 8),
    ],
)
def test_constructor_checks_are_the_same(args):
    py, c = outcome(lambda: PythonKrakenBook(*args)), outcome(lambda: Native(*args))
    if py[0] == "ok":
        assert c[0] == "ok" and same(levels_state(py[1]), levels_state(c[1]))
    else:
        assert py == c


def test_keyword_construction_and_the_implementation_flag():
    book = Native(depth=10, price_decimals=4, qty_decimals=8)
    assert book.depth == 10 and book.verified == 0
    assert kraken_book.IMPLEMENTATION in ("c", "python")
    if kraken_book.IMPLEMENTATION == "c":
        assert kraken_book.KrakenBook is kraken_book.NativeKrakenBook is _native.KrakenBook


def test_astra_native_0_runs_the_python_book():
    code = "import astra.venues.kraken.feed as f; print(f.IMPLEMENTATION, f.KrakenBook.__name__)"
    env = {**os.environ, "ASTRA_NATIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["python", "PythonKrakenBook"], out.stderr


# -- the recorded session -------------------------------------------------------------------


def _places(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_the_recorded_session_as_v2_frames_gives_the_same_everything(
    v1_session, ref_book, v2_frame
):
    """KRAKEN.ws.50.0 (ten pairs, book-1000) converted to v2 frames with exact-decimal
    checksums, decoded as the feed decodes them, through both books' snapshot/update: every
    return value and state equal, every checksum verified; one corrupted update fails alike."""
    messages, _ = v1_session("KRAKEN.ws.50.0")
    places = {}
    for m in messages:
        for p, q in m.asks + m.bids:
            places.setdefault(m.pair, (_places(p), _places(q)))
    twins: dict[str, Twin] = {}
    refs = {}
    corrupt_at, verified = len(messages) // 2, 0
    for i, m in enumerate(messages):
        if m.snapshot:
            refs[m.pair] = ref_book()
            twins[m.pair] = Twin(1000, *places[m.pair])
        refs[m.pair].apply(m.asks, m.bids)
        checksum = refs[m.pair].checksum_v2(*places[m.pair])
        kind = "snapshot" if m.snapshot else "update"
        frame = v2_frame(kind, m.pair, m.asks, m.bids, checksum ^ (i == corrupt_at), m.t)
        (data,) = decode(frame).data
        # Every outcome (each checksum verified alike) is compared; the whole state of two
        # 1000-level books every 25 messages and around the corruption (the session's cost).
        full = i % 25 == 0 or abs(i - corrupt_at) <= 1 or m.snapshot
        got = twins[m.pair].call(kind, data, state=full)
        if i == corrupt_at:
            assert got[:2] == ("raised", ChecksumMismatch)
            twins[m.pair] = Twin(1000, *places[m.pair])  # the feed resubscribes: a new book
            twins[m.pair].call("reset", *copy.deepcopy(_levels_of(refs[m.pair])))
        else:
            assert got[0] == "ok", got
            verified += 1
    for twin in twins.values():
        twin.check(checksum=True)
    assert verified == len(messages) - 1 == 4278


def _levels_of(ref) -> tuple[list, list]:
    return (
        [(float(k), float(q)) for k, (_, q) in ref.bids.items()],
        [(float(k), float(q)) for k, (_, q) in ref.asks.items()],
    )


# -- adversarial frames through the real feed -----------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.events: list = []

    def on_snapshot(self, book) -> None:
        self.events.append(("snapshot", dict(book.bids), dict(book.asks)))

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.events.append(("update", update_id, timestamp, bids, asks))

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))


def _feed(depth: int = 10):
    pool = SpotPool(lambda: None, "wss://example.invalid/v2", depth=depth)
    stream = KrakenStream(lambda: None, pool.url, pool.dialect)
    market = KrakenMarket(
        symbol="KRAKEN-SPOT-X-Y",
        exchange_symbol="XY",
        kind="spot",
        metadata=None,
        ws_symbol="X/Y",
        price_decimals=2,
        qty_decimals=8,
    )
    feed = SpotBook(pool, market, depth, _Sink())
    stream.consumers[feed.key] = (feed,)
    return pool.dialect, stream, feed


def _levels_json(levels) -> str:
    return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels)


def _frame(kind: str, bids, asks, checksum, ts="2023-10-06T17:35:55.440295Z") -> str:
    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"X/Y",'
        f'"bids":[{_levels_json(bids)}],"asks":[{_levels_json(asks)}],'
        f'"checksum":{checksum},"timestamp":"{ts}"}}]}}'
    )


SNAP_BIDS = [(100.0 - i, 1.0 + i) for i in range(10)]
SNAP_ASKS = [(101.0 + i, 2.0 + i) for i in range(10)]


def _synced(depth: int = 10):
    dialect, stream, feed = _feed(depth)
    checksum = checksum_of(SNAP_ASKS, SNAP_BIDS, 2, 8)
    dialect.route(_frame("snapshot", SNAP_BIDS, SNAP_ASKS, checksum), stream)
    assert feed.synced and feed.book.verified == 1
    return dialect, stream, feed


ADVERSARIAL = {
    "truncated": _frame("update", [(99.5, 1.0)], [], 1)[:60],
    "truncated inside a number": _frame("update", [(99.5, 1.0)], [], 1)[:95],
    "NaN": _frame("update", [("NaN", 1.0)], [], 1),
    "Infinity": _frame("update", [(99.5, "Infinity")], [], 1),
    "huge exponent": _frame("update", [("1e400", 1.0)], [], 1),
    "price as a string": _frame("update", [('"99.5"', 1.0)], [], 1),
    "unclosed string": '{"channel":"book","type":"update","data":[{"symbol":"X/Y',
    "bad escape": '{"channel":"book","type":"update","data":[{"symbol":"X\\q"}]}',
    "levels not a list": (
        '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":{},"checksum":1}]}'
    ),
    "checksum a string": _frame("update", [], [], '"1"'),
    "unknown type": _frame("delta", [], [], 1),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
async def test_malformed_frames_raise_a_clear_error_and_leave_the_book(name):
    dialect, stream, feed = _synced()
    before = (feed.book.bids, feed.book.asks, feed.book.verified, len(feed.sink.events))
    with pytest.raises((ValueError, msgspec.DecodeError)):
        dialect.route(ADVERSARIAL[name], stream)  # the connection reconnects on these
    assert (feed.book.bids, feed.book.asks, feed.book.verified, len(feed.sink.events)) == before


BAD_LEVELS = {
    "negative price": [(-99.5, 1.0)],
    "zero price": [(0, 1.0)],
    "price past the checksum's range": [(1e307, 1.0)],
    "a malformed timestamp": None,
}


@pytest.mark.parametrize("name", list(BAD_LEVELS))
async def test_levels_the_book_refuses_resync_that_pair_with_the_book_unchanged(name):
    dialect, stream, feed = _synced()
    levels = BAD_LEVELS[name]
    book = feed.book
    before = (book.bids, book.asks, book.verified)
    if levels is None:
        frame = _frame("update", [(99.5, 1.0)], [], 1, ts="2023-13-45T99:00:00.000000Z")
    else:
        frame = _frame("update", [(99.5, 2.0), *levels], [], 1)
    dialect.route(frame, stream)
    kind, reason = feed.sink.events[-1]
    assert kind == "resync" and reason.startswith("KRAKEN-SPOT-X-Y: ")
    assert not feed.synced
    if name != "price past the checksum's range":  # (that one is found by the checksum)
        assert (book.bids, book.asks, book.verified) == before


def test_empty_level_arrays_are_a_message_that_changes_nothing():
    dialect, stream, feed = _synced()
    checksum = checksum_of(SNAP_ASKS, SNAP_BIDS, 2, 8)
    dialect.route(_frame("update", [], [], checksum), stream)
    assert feed.sink.events[-1][0] == "update" and feed.sink.events[-1][3:] == ([], [])
    assert feed.book.verified == 2


def test_ten_thousand_levels_a_side_are_fast_truncated_and_equal():
    """A 10k-level snapshot (worst first) and a 10k-level update on a depth-1000 book: the
    same results in both, the update's cut reported as deletes, in well under a second."""
    bids = [(round(10_000 - i * 0.01, 2), 1.0) for i in range(10_000)]
    asks = [(round(20_000 - i * 0.01, 2), 1.0) for i in range(10_000)]
    snapshot = book_data(bids, asks, 0, "2023-10-06T17:35:55.440295Z")
    update = book_data([(round(10_000.5 - i * 0.01, 2), 2.0) for i in range(10_000)], [], 0, UNSET)
    twin = Twin(1000, 2, 8)
    snapshot.checksum = twin.expected_after(snapshot, "snapshot")
    reference = copy.deepcopy(twin.py)
    reference.reset(*snapshot.to_changes())
    reference.apply(*update.to_changes())
    update.checksum = reference.checksum()
    start = time.process_time()
    assert twin.call("snapshot", snapshot)[0] == "ok"
    got = twin.call("update", update)
    assert time.process_time() - start < 5.0  # (both books and every comparison)
    assert got[0] == "ok" and got[1][2] == 0  # no timestamp: 0
    changes = got[1][0]
    assert len(changes) > 10_000 and all(q == 0.0 for _, q in changes[10_000:])
    assert len(twin.c.bids) == len(twin.c.asks) == 1000
    assert twin.c.top(1) == ([(10_000.5, 2.0)], [(19_900.01, 1.0)])
    start = time.process_time()
    for _ in range(20):
        _native.KrakenBook(1000, 2, 8).snapshot(snapshot)
    assert time.process_time() - start < 1.0  # 20 sorts of 2 x 10k levels


def test_nan_and_infinity_from_python_are_refused_before_any_change():
    twin = Twin(10, 2, 8)
    twin.call("reset", [(100.0, 1.0)], [(101.0, 1.0)])
    for bad in ([(NAN, 1.0)], [(100.0, NAN)], [(INF, 1.0)], [(100.0, -INF)]):
        got = twin.call("apply", [(99.0, 5.0)], bad)  # the valid bid is not applied either
        assert got[:2] == ("raised", ValueError)
    assert twin.c.bids == {100.0: 1.0}


def test_the_checksum_mismatch_is_the_feeds_exception():
    book = Native(10, 2, 8)
    with pytest.raises(ChecksumMismatch, match="checksum 0 != venue's 1"):
        book.verify(1)
    assert zlib.crc32(b"") == book.checksum() == 0
