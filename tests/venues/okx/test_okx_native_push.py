"""The C parse of ``books`` push frames (``_okxbook.parse_push`` / ``book.decode_push``) and the
fused ``Book.update`` against msgspec's ``Push[BookData]`` and ``PyBook.update``, which define
the behaviour.

The parse rule: a frame the C parser takes gives exactly what msgspec gives (arg, action,
event fields, every data field, the levels' text); anything it does not fully understand is
msgspec's to decode (``parse_push`` returns None, ``decode_push`` calls msgspec), so a wrong
parse is impossible by construction and these tests check that it never happens: random
envelopes (reordered, unknown, missing and duplicated keys, escapes, odd types, huge numbers,
truncations and corrupted bytes), the recorded session, and adversarial frames.

The C module's tests skip when it is not built here, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import importlib
import json
import os
from functools import partial

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.venues.okx import book
from astra.venues.okx.feed import BookFeed
from astra.venues.okx.schemas import Arg

slow = book.py_decode_push


@pytest.fixture(scope="module")
def native():
    """The C module, configured as book.py does (which it skips under ASTRA_NATIVE=0)."""
    try:
        module = importlib.import_module("astra.venues.okx._okxbook")
        module.configure(Arg, msgspec.UNSET, book.ChecksumMismatch)
        return module
    except ImportError:
        if os.environ.get("ASTRA_REQUIRE_NATIVE") == "1":
            pytest.fail("astra.venues.okx._okxbook is not built (ASTRA_REQUIRE_NATIVE=1)")
        pytest.skip("astra.venues.okx._okxbook is not built here (set ASTRA_REQUIRE_NATIVE=1)")


def _fields(push) -> tuple:
    """A push's every field, levels as bytes (a Raw and the C parse's bytes compare equal)."""
    data = [
        (bytes(d.bids), bytes(d.asks), d.ts, d.checksum, d.seqId, d.prevSeqId) for d in push.data
    ]
    return push.arg, push.action, push.event, push.code, push.msg, push.connId, data


def _slow(frame):
    try:
        return "ok", _fields(slow(frame))
    except (ValueError, RecursionError) as exc:  # msgspec.DecodeError is a ValueError
        return "error", type(exc)


def _same_parse(native, frame) -> bool:
    """The C parse is msgspec's or none; decode_push is msgspec's either way. Whether C took it."""
    fast = native.parse_push(frame)
    expected = _slow(frame)
    if fast is not None:
        assert expected == ("ok", _fields(fast)), frame
    try:
        got = "ok", _fields(book.decode_push(frame))
    except (ValueError, RecursionError) as exc:  # msgspec.DecodeError is a ValueError
        got = "error", type(exc)
    assert got == expected, frame
    return fast is not None


# ---- random envelopes ----------------------------------------------------------------------

_LEVELS = st.lists(
    st.tuples(
        st.sampled_from(["100", "100.5", "99.25", "101", "1e2", "nan", "-1", "abc", ""]),
        st.sampled_from(["0", "1", "2.5", "0.001", "inf", "x"]),
    ).map(lambda pq: [pq[0], pq[1], "0", "1"]),
    max_size=6,
)
_INT = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([-1, 0, 2**31 - 1, -(2**31), 10**17, 10**18, 2**63 - 1, 2**63, 10**30]),
)
_ODD = st.sampled_from([None, True, 1.5, "7", [], {}, [1, [2, {"a": None}]], "é", "\\u00e9"])


@st.composite
def _element(draw, plain: bool = False):
    fields = {
        "asks": draw(st.one_of(_LEVELS, _ODD)) if draw(st.integers(0, 9)) == 0 else draw(_LEVELS),
        "bids": draw(_LEVELS),
        "ts": draw(st.sampled_from(["1597026383085", "", "é", 5, None])),
        "checksum": draw(st.one_of(_INT, _ODD)),
        "prevSeqId": draw(_INT),
        "seqId": draw(_INT),
        "extra": draw(_ODD),
    }
    keys = draw(st.lists(st.sampled_from(list(fields)), unique=True, min_size=3))
    if plain:  # what OKX sends, in any order, maybe with an unknown key
        fields["ts"] = draw(st.sampled_from(["1597026383085", "", "é"]))
        keys = ["asks", "bids", "ts", *(k for k in keys if k not in ("asks", "bids", "ts"))]
        fields["asks"] = draw(_LEVELS)
        fields["checksum"] = draw(_INT)
    return [(k, fields[k]) for k in draw(st.permutations(keys))]


@st.composite
def _frame(draw) -> str:
    arg = [("channel", draw(st.sampled_from(["books", "books-l2-tbt", "é"])))]
    arg.append(("instId", draw(st.sampled_from(["BTC-USDT", "", "ETH-USDT-SWAP"]))))
    if draw(st.booleans()):
        arg.append(("uid", "77"))
    arg = draw(st.permutations(arg))
    plain = draw(st.booleans())  # a frame the C parser should take (mostly)
    top = {
        "arg": arg if plain or draw(st.integers(0, 9)) else draw(_ODD),
        "action": draw(st.sampled_from(["snapshot", "update", ""] + ([] if plain else [5]))),
        "data": draw(st.lists(_element(plain), max_size=2)),
        "other": draw(_ODD),
        "event": "subscribe",
        "code": "0",
        "msg": "",
        "connId": "a4d3ae55",
    }
    keys = draw(st.lists(st.sampled_from(list(top)), unique=True, min_size=1))
    if plain:
        keys = ["arg", "action", "data"] + (["other"] if "other" in keys else [])
    members = [(k, top[k]) for k in draw(st.permutations(keys))]
    if not plain and draw(st.integers(0, 9)) == 0 and members:  # a duplicated key
        members.append(members[0])

    def enc(value) -> str:
        if isinstance(value, list) and value and all(isinstance(m, tuple) for m in value):
            inner = ",".join(f"{json.dumps(k)}{sp}:{sp}{enc(v)}" for k, v in value)
            return "{" + sp + inner + sp + "}"
        return json.dumps(value, ensure_ascii=draw(st.booleans()), separators=(",", ":"))

    sp = draw(st.sampled_from(["", " ", "\n\t"]))
    text = enc(members)
    how = draw(st.integers(0, 8)) if not plain or draw(st.integers(0, 3)) == 0 else 8
    if how == 0:  # truncated
        return text[: draw(st.integers(0, len(text)))]
    if how == 1:  # one character replaced
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.sampled_from('"\\[]{},:x0-.eE \x00é')) + text[at + 1 :]
    return text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frame(), as_bytes=st.booleans())
def test_random_envelopes_parse_as_msgspec_does_or_go_to_msgspec(native, frame, as_bytes):
    _same_parse(native, frame.encode("utf-8", "surrogatepass") if as_bytes else frame)


def test_the_c_parser_takes_okx_frames_in_any_key_order_and_with_unknown_keys(native):
    levels = '[["8476.98","415","0","13"],["8476.97","256","0","6"]]'
    base = {
        "arg": {"channel": "books", "instId": "BTC-USDT"},
        "action": "update",
        "data": [{"asks": "ASKS", "bids": "BIDS", "ts": "1597026383085", "checksum": -855196043}],
    }
    text = json.dumps(base, separators=(",", ":"))
    text = text.replace('"ASKS"', levels).replace('"BIDS"', "[]")
    assert _same_parse(native, text)
    reordered = (
        '{ "data" : [ { "seqId":5,"extra":{"a":[1,2.5e3,null,true]},"checksum":0,"ts":"1",'
        f'"bids":{levels},"prevSeqId":-1,"asks":[] }} ] , "x":[], "action":"snapshot",'
        '"arg":{"instId":"ETH-USDT","channel":"books","uid":"1"} }'
    )
    assert _same_parse(native, reordered)
    push = native.parse_push(reordered)
    assert push.data[0].seqId == 5 and push.data[0].prevSeqId == -1
    assert native.parse_push(text).data[0].seqId is msgspec.UNSET
    # What it leaves to msgspec: events, escapes, ints it does not read, missing fields.
    for left in (
        '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}',
        text.replace('"BTC-USDT"', '"BTC\\u002dUSDT"'),
        text.replace("-855196043", "-855196043.0"),
        text.replace("-855196043", "1" * 25),
        text.replace(',"checksum"', ',"checksum":1,"checksum"'),
        text.replace('"ts":"1597026383085",', ""),
        text.replace('"action":"update",', ""),
        text + " x",
        text[:-1],
        "",
        "[]",
        "pong",
    ):
        assert left != text
        assert not _same_parse(native, left), left


def test_adversarial_frames_never_crash_or_hang(native):
    head = '{"arg":{"channel":"books","instId":"X"},"action":"update","data":[{"ts":"1",'
    many = json.dumps([[f"{100000 - i}.5", "1", "0", "1"] for i in range(10_000)])
    for frame in (
        head + '"bids":[],"asks":[],"x":' + "[" * 100_000 + "]" * 100_000 + "}]}",
        head + '"bids":[],"asks":[],"x":' + "[" * 100_000,
        head + '"bids":[["nan","NaN"]],"asks":[["1e999","-0"]]}]}',
        head + '"bids":[["' + "9" * 5000 + '","1"]],"asks":[]}]}',
        head + f'"bids":{many},"asks":{many}}}]}}',
        head + '"bids":[[1,2]],"asks":[]}]}',
        head + '"bids":[["1","2"]],"asks":null}]}',
        head + '"bids":[["\ud800","1"]],"asks":[]}]}',
        head.encode() + b'"bids":[["\xff","1"]],"asks":[]}]}',
        b"\x00" * 100,
    ):
        _same_parse(native, frame)


# ---- the fused update ----------------------------------------------------------------------


def _outcome(call):
    try:
        bids, asks = call()
    except (ValueError, book.BookOutOfSync) as exc:
        return "error", type(exc), str(exc) if isinstance(exc, book.ChecksumMismatch) else ""
    return "ok", [(p.hex(), q.hex()) for p, q in bids], [(p.hex(), q.hex()) for p, q in asks]


def _books_equal(a, b) -> None:
    for side in ("bids", "asks"):
        x, y = getattr(a, side), getattr(b, side)
        assert [p.hex() for p in x.prices] == [p.hex() for p in y.prices]
        assert x.texts == y.texts
    assert a.checksum() == b.checksum() and a.verified == b.verified


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(
        st.tuples(_LEVELS, _LEVELS, st.sampled_from([0, 1, -1, None]), st.booleans()), max_size=8
    )
)
def test_update_gives_the_same_changes_errors_checksums_and_state(native, messages):
    py, c_raw, c_parsed = book.PyBook(), native.Book(), native.Book()
    for bids, asks, checksum, verify in messages:
        text = json.dumps(
            {
                "arg": {"channel": "books", "instId": "X"},
                "action": "update",
                "data": [{"asks": asks, "bids": bids, "ts": "1", "checksum": 0}],
            }
        )
        if checksum is None:  # the right one, as OKX sends it
            probe = book.PyBook()
            probe.bids.prices, probe.bids.texts = list(py.bids.prices), list(py.bids.texts)
            probe.asks.prices, probe.asks.texts = list(py.asks.prices), list(py.asks.texts)
            try:
                probe.update(slow(text).data[0], False)
                checksum = probe.checksum()
            except ValueError:
                checksum = 1
        text = text.replace('"checksum": 0', f'"checksum": {checksum}')
        reference = slow(text).data[0]
        fast = native.parse_push(text)
        parsed = fast.data[0] if fast is not None else reference
        results = [
            _outcome(partial(py.update, reference, verify)),
            _outcome(partial(c_raw.update, reference, verify)),
            _outcome(partial(c_parsed.update, parsed, verify)),
        ]
        assert results[0] == results[1] == results[2], (text, results)
        _books_equal(py, c_raw)
        _books_equal(py, c_parsed)


def test_update_checks_its_arguments(native):
    with pytest.raises(TypeError):
        native.Book().update(object())
    with pytest.raises(AttributeError):
        native.Book().update(object(), True)


# ---- the recorded session ------------------------------------------------------------------


def test_every_recorded_frame_is_parsed_in_c_as_msgspec_parses_it(native, okx_book_frames):
    frames = [f for fs in okx_book_frames.values() for f in fs]
    assert all(_same_parse(native, f) for f in frames)
    assert all(_same_parse(native, f.encode()) for f in frames[:20])


def test_the_feed_gives_the_same_events_on_either_path(
    okx_book_frames, recording_sink, monkeypatch
):
    """decode_push + the C core, and msgspec + the Python core: the same sink events and
    checksum counts; one frame corrupted (a checksum off by one) resyncs both the same way."""
    compiled = book._native  # the C core when it is built and ASTRA_NATIVE is not 0
    paths = [(slow, book.PyBook)] + ([(book.decode_push, compiled.Book)] if compiled else [])
    results = []
    for decode, core in paths:
        monkeypatch.setattr("astra.venues.okx.feed.Book", core)
        events = []
        for inst, frames in okx_book_frames.items():
            sink = recording_sink()
            feed = BookFeed(None, "books", inst, inst, sink)  # type: ignore[arg-type]
            bad = json.loads(frames[5])
            bad["data"][0]["checksum"] += 1
            for frame in [*frames[:5], json.dumps(bad), *frames]:
                feed.on_push(decode(frame))
            events.append((inst, sink.events, feed.sync.verified))
        results.append(events)
    assert all(r == results[0] for r in results)
    assert any("checksum" in str(e) for _, evs, _ in results[0] for e in evs)


def test_changes_a_consumer_kept_never_change_afterwards(native):
    """The core hands a level's change tuple out again only when nobody else holds it: a kept
    list, or a kept tuple, keeps its values through later messages on the same levels."""
    c_book, py_book = native.Book(), book.PyBook()
    levels = b'[["101","1"],["100","2"],["99","3"]]'
    kept_lists, kept_tuples, expected = [], [], []
    for b in (c_book, py_book):
        b.load(levels, b"[]")
    for size in ("4", "0", "5", "6", "0", "7"):
        message = f'[["101","{size}"],["100","{size}"]]'.encode()
        bids, _ = c_book.apply(message, b"[]")
        py_bids, _ = py_book.apply(message, b"[]")
        assert bids == py_bids
        kept_lists.append(bids)
        kept_tuples.append(bids[0])
        expected.append(list(py_bids))
        c_book.apply(b'[["101","9"]]', b"[]")  # the same level again, while they are kept
        py_book.apply(b'[["101","9"]]', b"[]")
    assert kept_lists == expected
    assert kept_tuples == [e[0] for e in expected]
    assert c_book.bids.texts == py_book.bids.texts
