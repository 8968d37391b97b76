"""Every path of the compiled inflater's fast decoder (``_htxbook.Inflater``) against the
pure-Python reference (``feed._PyInflater``, i.e. zlib): the same bytes or the same
``zlib.error``.

The frames are built here by a small DEFLATE encoder (tokens -> blocks), so each path is
reached on purpose, far enough from both ends of the frame for the fast loop to run it:
matches at every distance (1..8 byte-wise, 8..15 overlapping 8-byte steps, longer) and
length (3..258), literal runs, codes longer than the decode tables (literal/length codes
of 12..15 bits leave the fast loop; distance codes of 9..15 bits are decoded in it),
several blocks in a frame (dynamic with the same code lengths, a stored block between,
dynamic with other lengths, fixed), and the faults: a distance before the start, the fixed
code's symbols 286/287 and distances 30/31, a trailer whose CRC or length is wrong (the
decoder writes into the slack past the expected length before the length check refuses
it), a truncated stream. A valid frame must also be taken by the fast decoder
(``fast_frames``), not only by the zlib fallback.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI).
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib

import pytest
from tests.venues.htx.deflate_writer import Bits, canonical
from tests.venues.native_cores import require_native

from astra.venues.htx import feed

_htxbook = require_native("astra.venues.htx._htxbook")

# RFC 1951 3.2.5
_LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83]
_LEN_BASE += [99, 115, 131, 163, 195, 227, 258]
_LEN_EXTRA = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]
_DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769]
_DIST_BASE += [1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
_DIST_EXTRA = [0, 0, 0, 0] + [n for n in range(1, 14) for _ in (0, 1)]
_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]


def _symbol(value: int, bases: list[int], extra: list[int]) -> tuple[int, int, int]:
    """(symbol, extra value, extra bits) of a length or distance."""
    for s in range(len(bases) - 1, -1, -1):
        if value >= bases[s]:
            if s == 28 and bases is _LEN_BASE and value != 258:
                continue  # 258 has its own symbol; 227..257 are symbol 27 + 5 bits
            return s, value - bases[s], extra[s]
    raise AssertionError(value)


def _huffman(freqs: list[int], limit: int = 15) -> list[int]:
    """Code lengths of a complete Huffman code for the symbols with a frequency (at least
    two of them get codes: a lone symbol is paired with a dummy one)."""
    used = [s for s, f in enumerate(freqs) if f]
    if len(used) < 2:
        used = (used + [s for s in range(len(freqs)) if s not in used])[:2]
    heap = [(freqs[s] or 1, i, [s]) for i, s in enumerate(used)]
    heapq.heapify(heap)
    lengths = [0] * len(freqs)
    tie = len(heap)
    while len(heap) > 1:
        fa, _, a = heapq.heappop(heap)
        fb, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        tie += 1
        heapq.heappush(heap, (fa + fb, tie, a + b))
    if max(lengths) <= limit:
        return lengths
    # too deep for the limit: a balanced complete code over the same symbols instead
    k = len(used)
    bits = (k - 1).bit_length()
    short = (1 << bits) - k  # this many get bits - 1
    lengths = [0] * len(freqs)
    for i, s in enumerate(used):
        lengths[s] = bits - 1 if i < short else bits
    return lengths


def _run(tokens) -> bytes:
    """The bytes that tokens (ints: literals; (length, distance): matches) stand for."""
    out = bytearray()
    for t in tokens:
        if isinstance(t, int):
            out.append(t)
        else:
            length, dist = t
            for _ in range(length):
                out.append(out[-dist])  # a forward copy: overlapping matches repeat
    return bytes(out)


def _dynamic(w: Bits, tokens, final: bool, lit=None, dist=None) -> tuple[list, list]:
    """One dynamic-Huffman block of tokens; lit/dist code lengths given or from frequency."""
    lf, df = [0] * 286, [0] * 30
    for t in tokens:
        if isinstance(t, int):
            lf[t] += 1
        else:
            lf[257 + _symbol(t[0], _LEN_BASE, _LEN_EXTRA)[0]] += 1
            df[_symbol(t[1], _DIST_BASE, _DIST_EXTRA)[0]] += 1
    lf[256] = 1
    lit = lit or _huffman(lf)
    dist = dist or _huffman(df)
    pre = _huffman([(lit + dist).count(n) for n in range(19)], 7)
    w.put(int(final), 1)
    w.put(2, 2)
    w.put(len(lit) - 257, 5)
    w.put(len(dist) - 1, 5)
    w.put(19 - 4, 4)
    for s in _ORDER:
        w.put(pre[s], 3)
    pc = canonical(pre)
    for n in lit + dist:
        w.code(pc[n], pre[n])
    _symbols(w, tokens, lit, dist)
    return lit, dist


def _fixed_lengths() -> tuple[list[int], list[int]]:
    lit = [8] * 144 + [9] * 112 + [7] * 24 + [8] * 8
    return lit, [5] * 32


def _fixed(w: Bits, tokens, final: bool, raw_symbols=()) -> None:
    """A fixed-Huffman block; raw_symbols: (index, ("lit"|"dist", symbol)) to splice in."""
    w.put(int(final), 1)
    w.put(1, 2)
    lit, dist = _fixed_lengths()
    _symbols(w, tokens, lit, dist, dict(raw_symbols))


def _symbols(w: Bits, tokens, lit, dist, raw=None) -> None:
    lc, dc = canonical(lit), canonical(dist)
    for i, t in enumerate(tokens):
        if raw and i in raw:
            kind, s = raw[i]
            if kind == "lit":
                w.code(lc[s], lit[s])
            else:  # a length of 3, then distance symbol s
                w.code(lc[257], lit[257])
                w.code(dc[s], dist[s])
            continue
        if isinstance(t, int):
            w.code(lc[t], lit[t])
            continue
        s, v, n = _symbol(t[0], _LEN_BASE, _LEN_EXTRA)
        w.code(lc[257 + s], lit[257 + s])
        w.put(v, n)
        s, v, n = _symbol(t[1], _DIST_BASE, _DIST_EXTRA)
        w.code(dc[s], dist[s])
        w.put(v, n)
    w.code(lc[256], lit[256])


def _stored(w: Bits, data: bytes, final: bool) -> None:
    w.put(int(final), 1)
    w.put(0, 2)
    w.align()
    w.put(len(data), 16)
    w.put(len(data) ^ 0xFFFF, 16)
    for b in data:
        w.put(b, 8)


def _member(body: bytes, data: bytes, crc: int | None = None, size: int | None = None) -> bytes:
    header = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])
    crc = zlib.crc32(data) if crc is None else crc
    size = len(data) if size is None else size
    return header + body + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def _outcome(inflate, frame):
    try:
        return ("ok", inflate(frame))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def _same(frame: bytes, fast: bool | None = None):
    """C and Python alike; fast=True: the C fast decoder took it, False: it handed over."""
    py = _outcome(feed._PyInflater().inflate, frame)
    c_inflater = _htxbook.Inflater()
    assert _outcome(c_inflater.inflate, frame) == py
    if fast is not None:
        assert c_inflater.fast_frames == int(fast)
    return py


def _tokens(rng: random.Random, n: int, dists, lens) -> list:
    """Literals and matches mixed, every match in reach of what came before."""
    tokens: list = [rng.randrange(256) for _ in range(64)]
    produced = 64
    while len(tokens) < n:
        if rng.random() < 0.4:
            tokens.append(rng.choice(b'0123456789.,[]"'))
            produced += 1
        else:
            d = min(rng.choice(dists), produced)
            length = rng.choice(lens)
            tokens.append((length, d))
            produced += length
    return tokens


# -- valid frames: every match shape, taken by the fast decoder ------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_matches_of_every_distance_and_length_inflate_the_same(seed):
    rng = random.Random(seed)
    dists = [*range(1, 40), 64, 100, 255, 256, 1000, 4096, 20000, 32768]
    lens = [*range(3, 20), 31, 32, 33, 64, 100, 227, 250, 257, 258]
    tokens = _tokens(rng, 1500, dists, lens)
    data = _run(tokens)
    w = Bits()
    _dynamic(w, tokens, final=True)
    assert _same(_member(w.done(), data), fast=True) == ("ok", data)


def test_overlapping_copies_byte_by_byte_and_in_8_byte_steps():
    for d in range(1, 17):
        tokens = list(range(65, 65 + 16)) * 4 + [(258, d), (100, d), (9, d)] * 20 + [66] * 300
        data = _run(tokens)
        w = Bits()
        _dynamic(w, tokens, final=True)
        assert _same(_member(w.done(), data), fast=True) == ("ok", data)


def _skewed(n: int, used: list[int], deep: list[int]) -> list[int]:
    """Complete code lengths: a balanced code over used, whose last leaf is split down a
    chain through deep (each one bit longer, the last two alike), so deep gets long codes."""
    lengths = [0] * n
    bits = (len(used) - 1).bit_length()
    short = (1 << bits) - len(used)
    for i, sym in enumerate(used):
        lengths[sym] = bits - 1 if i < short else bits
    chain = [used[-1], *deep]
    top = lengths[used[-1]]
    for i, sym in enumerate(chain):
        lengths[sym] = top + 1 + min(i, len(chain) - 2)
    return lengths


def test_codes_longer_than_the_tables_inflate_the_same():
    # literal/length codes of up to 15 bits (the table holds 11: past it the fast loop
    # hands over) and distance codes of up to 14 (the table holds 8: decoded in the loop)
    lit = _skewed(286, [*range(56, 64), 256, *range(257, 270)], [*range(48, 56), 270, 271])
    dist = _skewed(30, [0, 1, 2, 3], list(range(4, 16)))
    assert max(lit) == 15 and max(dist) == 14
    rng = random.Random(7)
    tokens: list = [48 + i % 16 for i in range(40)] + [(30, 40)] * 20
    while len(tokens) < 4000:
        if rng.random() < 0.5:
            tokens.append(rng.randrange(48, 64))
        else:
            tokens.append((rng.randrange(3, 31), _DIST_BASE[rng.randrange(16)]))
    data = _run(tokens)
    w = Bits()
    _dynamic(w, tokens, final=True, lit=lit, dist=dist)
    assert _same(_member(w.done(), data), fast=True) == ("ok", data)


def test_blocks_with_same_and_other_code_lengths_and_a_stored_block_between():
    rng = random.Random(3)
    a = _tokens(rng, 800, [1, 2, 9, 17, 30, 300], [3, 4, 8, 20, 258])
    b = _tokens(rng, 800, [5, 8, 15, 64], [3, 5, 6, 7, 100])
    w = Bits()
    lit, dist = _dynamic(w, a, final=False)
    _dynamic(w, a, final=False, lit=lit, dist=dist)  # the same lengths again
    raw = bytes(rng.randrange(256) for _ in range(700))
    _stored(w, raw, final=False)
    _dynamic(w, a[:400], final=False, lit=lit, dist=dist)  # the same code, other data
    _dynamic(w, b, final=False)  # other lengths
    _fixed(w, a[:300], final=False)
    _stored(w, b"", final=False)
    _dynamic(w, a, final=True)
    # each block's matches reach back only into that block's own output: the frame's
    # payload is the blocks' payloads one after the other
    first, tail = _run(a), _run(b)
    data = first + first + raw + _run(a[:400]) + tail + _run(a[:300]) + first
    assert _same(_member(w.done(), data), fast=True) == ("ok", data)


def test_frames_of_every_size_around_the_fast_loops_margins():
    rng = random.Random(11)
    for n in [*range(40), 250, 265, 266, 267, 280, 300, 520, 1023, 1024, 1025, 2000]:
        tokens = _tokens(rng, 70 + n, [1, 3, 8, 12, 40], [3, 4, 9, 16, 258])[: 64 + n]
        data = _run(tokens)
        for kind in ("dynamic", "fixed"):
            w = Bits()
            if kind == "dynamic":
                _dynamic(w, tokens, final=True)
            else:
                _fixed(w, tokens, final=True)
            assert _same(_member(w.done(), data), fast=True) == ("ok", data)


# -- faults: refused, and zlib's error -------------------------------------------------------


def _long_tokens(seed: int = 5) -> list:
    return _tokens(random.Random(seed), 1200, [1, 7, 9, 16, 33, 700], [3, 6, 10, 40, 258])


@pytest.mark.parametrize("at", [1, 70, 400, 700])
def test_a_distance_before_the_start_is_zlibs_error(at):
    tokens = _long_tokens()
    data = _run(tokens[:at])
    assert len(data) < 32768  # one past the start is still a distance DEFLATE can code
    tokens = [*tokens[:at], (5, len(data) + 1), *tokens[at:]]
    w = Bits()
    _dynamic(w, tokens, final=True)
    outcome = _same(_member(w.done(), data), fast=False)
    assert outcome == (
        "raised",
        zlib.error,
        "Error -3 while decompressing data: invalid distance too far back",
    )


@pytest.mark.parametrize("at", [5, 200, 900])
@pytest.mark.parametrize("raw", [("lit", 286), ("lit", 287), ("dist", 30), ("dist", 31)])
def test_fixed_codes_unused_symbols_are_zlibs_error(at, raw):
    tokens = _long_tokens()
    data = _run(tokens)
    w = Bits()
    _fixed(w, tokens, final=True, raw_symbols=[(at, raw)])
    outcome = _same(_member(w.done(), data), fast=False)
    assert outcome[:2] == ("raised", zlib.error)
    assert "invalid" in outcome[2]


@pytest.mark.parametrize("delta", [-300, -258, -9, -1, 1, 7, 300])
def test_a_wrong_length_in_the_trailer_is_zlibs_error(delta):
    tokens = _long_tokens()
    data = _run(tokens)
    w = Bits()
    _dynamic(w, tokens, final=True)
    outcome = _same(_member(w.done(), data, size=len(data) + delta), fast=False)
    assert outcome == (
        "raised",
        zlib.error,
        "Error -3 while decompressing data: incorrect length check",
    )


def test_a_wrong_crc_in_the_trailer_is_zlibs_error():
    tokens = _long_tokens()
    data = _run(tokens)
    w = Bits()
    _dynamic(w, tokens, final=True)
    outcome = _same(_member(w.done(), data, crc=zlib.crc32(data) ^ 1), fast=False)
    assert outcome == (
        "raised",
        zlib.error,
        "Error -3 while decompressing data: incorrect data check",
    )


def test_every_cut_of_a_generated_frame_fails_alike():
    tokens = _long_tokens(9)[:500]
    data = _run(tokens)
    w = Bits()
    _dynamic(w, tokens, final=True)
    frame = _member(w.done(), data)
    for cut in range(len(frame)):
        assert _same(frame[:cut], fast=False)[0] == "raised"
    # bytes after the member: ignored (the size hint, read from the frame's end, is not
    # the trailer's then, so the fast decoder may hand over: either way the same bytes)
    assert _same(frame + b"trailing bytes") == ("ok", data)


def test_bit_flips_in_frames_of_every_path_fail_or_pass_alike():
    """Corrupt codes, lengths and distances land in the fast loop's checks (and past the
    decode tables): C and Python must still agree on every flipped frame."""
    rng = random.Random(13)
    lit = _skewed(286, [*range(56, 64), 256, *range(257, 270)], [*range(48, 56), 270, 271])
    dist = _skewed(30, [0, 1, 2, 3], list(range(4, 16)))
    long_codes = [48 + i % 16 for i in range(40)] + [(30, 40)] * 20
    while len(long_codes) < 1200:
        if rng.random() < 0.5:
            long_codes.append(rng.randrange(48, 64))
        else:
            long_codes.append((rng.randrange(3, 31), _DIST_BASE[rng.randrange(16)]))
    tokens = _long_tokens(21)
    frames = []
    for toks, kind in ((long_codes, "skewed"), (tokens, "dynamic"), (tokens, "fixed")):
        w = Bits()
        if kind == "skewed":
            _dynamic(w, toks, final=True, lit=lit, dist=dist)
        elif kind == "dynamic":
            _dynamic(w, toks, final=True)
        else:
            _fixed(w, toks, final=True)
        frames.append(_member(w.done(), _run(toks)))
    for frame in frames:
        for _ in range(150):
            flipped = bytearray(frame)
            for _ in range(rng.choice([1, 1, 2, 5])):
                i = rng.randrange(10, len(flipped))
                flipped[i] ^= 1 << rng.randrange(8)
            _same(bytes(flipped))
