"""The compiled HTX core (``_htxbook``) against the pure-Python reference, value for value.

- ``side_changes`` (C) vs ``fullbook._side_changes_py``: the same list (values, order, bits of
  every float) or the same exception (class and message), on every recorded pair of pushes
  and on generated sides in every number form (integers, decimals, exponents, long
  mantissas, -0, numeric strings, whitespace, malformed and out-of-range tokens, 10k levels).
- ``Inflater`` (C) vs ``feed._PyInflater``: the same bytes or the same ``zlib.error`` on
  recorded and generated frames, every truncation and bit flip of a frame, trailing bytes,
  non-gzip input and gzip bombs (over the limit).

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import struct
import zlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.venues.native_cores import require_native

from astra.venues.htx import feed, fullbook

_htxbook = require_native("astra.venues.htx._htxbook")

_c_changes = _htxbook.side_changes
_decode_levels = msgspec.json.Decoder(list[tuple[float, float]], strict=False).decode


def _bits(x):
    return struct.pack("<d", x) if isinstance(x, float) else x


def _outcome(fn, *args):
    """The result with every float as its bits, or the exception's class and message."""
    try:
        out = fn(*args)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    if isinstance(out, list):
        return [tuple(_bits(v) for v in lv) for lv in out]
    return out


def _same_changes(held: bytes, text: bytes):
    py = _outcome(fullbook._side_changes_py, held, text)
    c = _outcome(_c_changes, fullbook._side_changes_py, held, text)
    assert c == py, (held[:200], text[:200])
    return py


def test_the_compiled_code_runs_here():
    if os.environ.get("ASTRA_NATIVE", "1") == "0":  # turned off: the reference runs
        assert fullbook.IMPLEMENTATION == feed.IMPLEMENTATION == "python"
        assert feed.Inflater is feed._PyInflater and feed.depth_fields is None
        return
    assert fullbook.IMPLEMENTATION == "c"
    assert feed.IMPLEMENTATION == "c"
    assert feed.Inflater is _htxbook.Inflater


# -- side_changes: the recorded session --------------------------------------------------


def test_every_recorded_pair_of_pushes_diffs_the_same(recording):
    decode = msgspec.json.Decoder(feed.DepthMessage, strict=False).decode
    pairs = 0
    for frames in recording.depth_topics().values():
        held = None
        for raw, _ in frames:
            tick = decode(feed.gunzip(raw)).tick
            sides = (bytes(tick.bids), bytes(tick.asks))
            if held is not None:
                for a, b in zip(held, sides, strict=True):
                    _same_changes(a, b)
                    _same_changes(b, a)  # backwards too: other cuts, other anchors
                    pairs += 1
            held = sides
    assert pairs == 2 * 282


# -- side_changes: generated sides ---------------------------------------------------------


def _num_forms(x: float) -> list[str]:
    """Ways a venue may write the number x (all valid JSON)."""
    forms = [repr(x), f"{x:.8f}", f"{x:.17g}", f"{x:e}", f"{x:E}", f"{x:.3e}"]
    if x == int(x) and abs(x) < 1e18:
        forms.append(str(int(x)))
    return forms


_VALUES = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.5, 100.25, 700.01, 1e-8, 5.2475e-06, 4058.2058100628933]),
    st.floats(min_value=1e-12, max_value=1e15, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**19).map(float),
)


@st.composite
def _number_text(draw) -> str:
    x = draw(_VALUES)
    text = draw(st.sampled_from(_num_forms(x)))
    if draw(st.integers(0, 30)) == 0:  # the odd one out: forms C hands to the reference
        text = draw(
            st.sampled_from(
                [
                    f'"{text}"',
                    f" {text}",
                    "-0",
                    "-0.0",
                    "-0e3",
                    "1e400",
                    "-1e400",
                    "1e-400",
                    "12345678901234567890123",
                    "0.1234567890123456789012",
                    '"nan"',
                    '"inf"',
                    "NaN",
                    "01",
                    "1.",
                    ".5",
                    "+1",
                    "1e",
                    "true",
                    "null",
                    "[]",
                    "",
                    "1,2",
                ]
            )
        )
    return text


@st.composite
def _side_text(draw, max_levels: int = 30) -> bytes:
    n = draw(st.integers(0, max_levels))
    levels = [f"[{draw(_number_text())},{draw(_number_text())}]" for _ in range(n)]
    sep = "," if draw(st.integers(0, 20)) else ", "
    return f"[{sep.join(levels)}]".encode()


@st.composite
def _next_text(draw, held: bytes) -> bytes:
    """A side like the next push of ``held``: levels edited, inserted, removed, moved."""
    if not held.startswith(b"[[") or not held.endswith(b"]]"):
        return draw(_side_text())
    levels = held[2:-2].split(b"],[")
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(levels)))
        new = draw(_side_text(1))[2:-2] or b"1,2"
        if op == 0 or not levels:
            levels.insert(i, new)
        elif op == 1:
            del levels[min(i, len(levels) - 1)]
        elif op == 2:
            levels[min(i, len(levels) - 1)] = new
        else:
            levels.append(levels.pop(min(i, len(levels) - 1)))
    return b"[[" + b"],[".join(levels) + b"]]" if levels else b"[]"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_sides_diff_the_same(data):
    held = data.draw(_side_text())
    text = data.draw(_next_text(held))
    _same_changes(held, text)
    _same_changes(text, held)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_long_books_diff_the_same(data):
    """150-level books with an insert near the top: the anchors split the remainder."""
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    prices = sorted({round(rng.uniform(1, 1000), 2) for _ in range(200)})[:150]
    held = [(p, round(rng.uniform(0, 10), 6)) for p in prices]
    new = list(held)
    for _ in range(data.draw(st.integers(0, 12))):
        i = rng.randrange(len(new))
        new[i] = (new[i][0], rng.choice([0.0, round(rng.uniform(0, 10), 6), 1e-5]))
    if data.draw(st.booleans()):
        new.insert(rng.randrange(5), (round(rng.uniform(1, 1000), 3), 1.0))
        new.pop()
    a, b = json.dumps(held).replace(" ", "").encode(), json.dumps(new).replace(" ", "").encode()
    _same_changes(a, b)
    _same_changes(b, a)


def test_repeated_prices_give_the_same_list():
    held = b"[[1,1],[2,2],[1,3],[4,4]]"
    for text in (
        b"[[1,5],[2,2],[1,3],[4,4]]",
        b"[[1,1],[2,0],[2,6],[2,7],[4,4]]",
        b"[[0,1],[-0,2]]",
    ):
        _same_changes(held, text)
        _same_changes(text, held)


@pytest.mark.parametrize(
    "text",
    [
        b"[[1,2],[3,4]",  # truncated
        b"[[1,2],[3,4",
        b"[[1,2],[3]]",
        b"[[1,2],[3,4,5]]",
        b"[[1,2],[1e400,1]]",  # out of range
        b"[[1,2],[NaN,1]]",
        b'[[1,2],["nan",1]]',
        b'[[1,2],["1.5","2\\u0030"]]',  # escapes in numeric strings
        b"[[1,2],[1\x00,1]]",
        b"[[1,2],[99999999999999999999999999999999999999999,1]]",
        b"[[" + b"9" * 5000 + b",1]]",
        b"[[]]",
        b"[[],[]]",
        b"[]",
        b"",
        b"]]",
        b"[[1,2]],[[3,4]]",
    ],
)
def test_adversarial_sides_fail_or_pass_alike(text):
    held = b"[[1,2],[3,4],[5,6]]"
    _same_changes(held, text)
    _same_changes(b"[[1,2]]", text)


def test_ten_thousand_levels():
    rng = random.Random(7)
    held = [[round(i * 0.01, 2), rng.randint(0, 9)] for i in range(1, 10_001)]
    new = [[p, q if rng.random() < 0.7 else rng.randint(0, 9)] for p, q in held]
    rng.shuffle(new)
    a, b = (json.dumps(x).replace(" ", "").encode() for x in (held, new))
    out = _same_changes(a, b)
    assert isinstance(out, list) and len(out) > 1000


def test_numbers_read_bit_for_bit_as_msgspec():
    rng = random.Random(11)
    tokens = [
        "0",
        "-0",
        "-0.0",
        "0.0",
        "-0e0",
        "1e22",
        "1e23",
        "9007199254740993",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "123456789012345678",
    ]
    for _ in range(20_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        digits = digits.lstrip("0") or "0"
        k = rng.randint(0, len(digits))
        tok = digits if rng.random() < 0.2 else f"{digits[:k] or '0'}.{digits[k:] or '0'}"
        if rng.random() < 0.3:
            tok += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 40))
        tokens.append(("-" if rng.random() < 0.3 else "") + tok)
    for tok in tokens:
        run = f"{tok},{tok}".encode()
        try:
            want = _decode_levels(b"[[" + run + b"]]")
        except msgspec.ValidationError:
            assert _htxbook.parse_levels(run) is None, tok  # out of range: not judged in C
            continue
        got = _htxbook.parse_levels(run)
        if got is not None:
            assert [_bits(v) for v in got[0]] == [_bits(v) for v in want[0]], tok


# -- Inflater ------------------------------------------------------------------------------


def _same_inflate(frame: bytes, limit: int = feed.MAX_FRAME) -> object:
    py = _outcome(feed._PyInflater(limit).inflate, frame)
    c_inflater = _htxbook.Inflater(limit)
    c = _outcome(c_inflater.inflate, frame)
    assert c == py, frame[:40]
    assert _outcome(c_inflater.inflate, frame) == py  # nothing left over from the last one
    return py


def test_recorded_frames_inflate_the_same_and_take_the_fast_path(recording):
    inflater = _htxbook.Inflater()
    frames = [raw for frames in recording.depth_topics().values() for raw, _ in frames]
    for raw in frames:
        assert inflater.inflate(raw) == gzip.decompress(raw)
    assert inflater.fast_frames == len(frames)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.binary(max_size=3000), st.text('0123456789.,[]{}":abc', max_size=20000)),
    st.sampled_from([0, 1, 6, 9]),
    st.sampled_from(["zlib", "gzip", "ng"]),
)
def test_generated_frames_inflate_the_same(payload, level, how):
    data = payload.encode() if isinstance(payload, str) else payload
    if how == "gzip":
        frame = gzip.compress(data, level)
    elif how == "ng":
        from zlib_ng import zlib_ng

        frame = zlib_ng.compress(data, level, 31)
    else:
        frame = zlib.compress(data, level, 31)
    assert _same_inflate(frame) == data


def test_every_truncation_and_bit_flip_fails_alike():
    frame = gzip.compress(json.dumps({"tick": {"bids": [[1.5, 2]] * 50}}).encode())
    for n in range(len(frame)):
        assert _same_inflate(frame[:n])[0] == "raised"
    rng = random.Random(3)
    for i in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[i // 8] ^= 1 << (i % 8)
        _same_inflate(bytes(bad))
    for _ in range(2000):  # random bytes after a gzip header: every kind of broken block
        _same_inflate(frame[:10] + rng.randbytes(rng.randint(0, 200)))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x1f\x8b",
        b"not gzip at all",
        zlib.compress(b"zlib, not gzip"),
        # mtime=0: the same bytes (and test ids) in every xdist worker
        gzip.compress(b'{"a":1}', mtime=0) + b"trailing bytes are ignored",
        gzip.compress(b'{"a":1}', mtime=0) + gzip.compress(b'{"b":2}', mtime=0),
        gzip.compress(b"", mtime=0),
    ],
)
def test_odd_frames_inflate_or_fail_alike(frame):
    _same_inflate(frame)


def test_header_fields_go_to_zlib_and_inflate_the_same():
    body = zlib.compress(b'{"ping":1}', 9, -15)
    data = b'{"ping":1}'
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    for flags, extra in [(0x08, b"name\x00"), (0x10, b"comment\x00"), (0x04, b"\x02\x00ab")]:
        frame = b"\x1f\x8b\x08" + bytes([flags]) + b"\x00" * 6 + extra + body + trailer
        assert _same_inflate(frame) == data
    _same_inflate(b"\x1f\x8b\x08\xe0" + b"\x00" * 6 + body + trailer)  # reserved flags


def test_gzip_bombs_fail_cleanly_at_the_limit():
    bomb = gzip.compress(b"0" * 5_000_000, 9)  # ~5 KB frame, 5 MB inside
    for limit in (1, 1000, 4_999_999):
        outcome = _same_inflate(bomb, limit)
        assert outcome[0] == "raised" and outcome[1] is zlib.error, outcome
        assert f"exceeds {limit} bytes" in outcome[2]
    assert len(_same_inflate(bomb, 5_000_000)) == 5_000_000  # exactly the limit: accepted
    with pytest.raises(ValueError):
        _htxbook.Inflater(0)
    with pytest.raises(ValueError):
        feed._PyInflater(0)


# -- depth_push: the push read without msgspec ----------------------------------------------

_decode_depth = msgspec.json.Decoder(feed.DepthMessage, strict=False).decode


def _msgspec_fields(data: bytes):
    m = _decode_depth(data)
    t = m.tick
    return (m.ch, m.ts, bytes(t.bids), bytes(t.asks), t.version, t.mrid, t.ts)


def _same_fields(data: bytes):
    """Where depth_push reads a frame, msgspec reads the same values from it."""
    fields = _htxbook.depth_push(data)
    if fields is not None:
        assert fields == _msgspec_fields(data), data[:200]
    return fields


def test_every_recorded_push_reads_as_msgspec_reads_it(recording):
    read = 0
    for frames in recording.depth_topics().values():
        for raw, _ in frames:
            read += _same_fields(feed.gunzip(raw)) is not None
    assert read == 292  # every recorded push takes the fast path


@pytest.mark.parametrize(
    "data",
    [
        b'{"ch":"market.btc-usdt.depth.step0","ts":5,"tick":{"mrid":9,"id":3,"bids":[[1,2]],'
        b'"asks":[],"version":3,"ts":4}}',
        b'{"tick":{"version":1},"ch":"x"}',  # defaults: no sides, no ts
        b'{"ch":"x","tick":{"version":-1,"bids":[]}}',
        b'{"ch":"x","ts":0,"tick":{"version":123456789012345678}}',
    ],
)
def test_push_shapes_read_the_same(data):
    assert _same_fields(data) is not None


@pytest.mark.parametrize(
    "data",
    [
        b'{"ping":1}',
        b'{"id":"1","status":"ok","subbed":"market.x.depth.step0","ts":1}',
        b'{"ch":"x","ts":1,"tick":{"version":1.5}}',  # a float version: msgspec raises
        b'{"ch":"x","ts":1,"tick":{"version":1234567890123456789}}',  # long: msgspec decides
        b'{"ch":"x","ts":1,"tick":{"version":01}}',
        b'{"ch":"x","ts":1,"tick":{"bids":[[1,2]]}}',  # no version
        b'{"ch":"x","ts":1}',
        b'{"ch":"x","ts":1,"tick":{"version":1}} ',  # whitespace
        b'{"ch": "x","tick":{"version":1}}',
        b'{"ch":"\\u0078","tick":{"version":1}}',  # an escape
        b'{"ch":"x","ch":"y","tick":{"version":1}}',  # a repeated key
        b'{"ch":"x","tick":{"version":1,"version":2}}',
        b'{"ch":"x","tick":{"version":1,"bids":[[1,2]}}',  # unbalanced
        b'{"ch":"x","tick":{"version":1,"bids":[[1,2]]]}}',
        b'{"ch":"x","tick":{"version":1,"other":2}}',
        b'{"ch":"x","tick":{"version":1}}{"ch":"y"}',
        b'{"ch":"x","tick":{"version":1}',
        b'{"ch":"x","tick":{"version":1,"bids":[1,2]}}',
        b"",
        b"{",
        b"[]",
    ],
)
def test_other_frames_are_left_to_msgspec(data):
    assert _htxbook.depth_push(data) is None


def test_truncated_pushes_are_left_to_msgspec(recording):
    data = feed.gunzip(next(iter(recording.depth_topics().values()))[0][0])
    for n in range(len(data)):
        assert _htxbook.depth_push(data[:n]) is None


@pytest.mark.parametrize("bad", [b"[[1,2],[x,3]]", b'[[1,2],["a",3]]', b"[[1,2],[3]]", b"[[1,,2]]"])
def test_a_malformed_side_raises_as_msgspec_does_and_keeps_the_book(bad):
    """depth_push does not validate a side; the diff reads what differs from the held text
    and hands it to msgspec: the error class of the msgspec path (decoding the frame, or
    its diff for JSON that is valid but not levels), and the held book kept."""
    good = b'{"ch":"x","ts":1,"tick":{"bids":[[1,2],[5,6]],"asks":[[7,8]],"version":1}}'
    frame = good.replace(b"[[1,2],[5,6]]", bad).replace(b'"version":1', b'"version":2')
    events = []

    class Sink:
        def on_snapshot(self, book):
            events.append(("snapshot", dict(book.bids)))

        def on_update(self, *args):
            events.append(("update", args))

    def run(via_c: bool):
        handler = feed.DepthBookHandler(Sink(), "x")
        handler.on_fields(_htxbook.depth_push(good))
        with pytest.raises(msgspec.DecodeError) as err:
            if via_c:
                fields = _htxbook.depth_push(frame)
                assert fields is not None
                handler.on_fields(fields)
            else:
                m = _decode_depth(frame)
                handler.on_push(m.tick, m.tick.ts or m.ts)
        assert handler.diff.seq == 1
        assert handler.diff.levels() == ([(1.0, 2.0), (5.0, 6.0)], [(7.0, 8.0)])
        return type(err.value)

    assert run(True) is run(False)
    assert events == [("snapshot", {1.0: 2.0, 5.0: 6.0})] * 2
