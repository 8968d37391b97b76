"""Review findings on the compiled HTX inflater (``_htxbook.Inflater``), each a frame the
compiled and the pure-Python inflater once judged differently. The rule is zlib's: a frame
zlib refuses must be refused with zlib's error whatever its size. libdeflate (the `deflate`
package, once used for frames of 512 bytes or more) accepted members zlib refuses: more than
286 literal/length or 30 distance codes declared, and an FHCRC header CRC it never checks.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from tests.venues.htx.deflate_writer import Bits, canonical
from tests.venues.native_cores import require_native

from astra.venues.htx import feed

_htxbook = require_native("astra.venues.htx._htxbook")


def _outcome(inflate, frame):
    try:
        return ("ok", inflate(frame))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def _same(frame: bytes):
    py = _outcome(feed._PyInflater().inflate, frame)
    assert _outcome(_htxbook.Inflater().inflate, frame) == py
    return py


_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]


def _dynamic_block(data: bytes, n_lit: int, n_dist: int) -> bytes:
    """One final dynamic-Huffman block of literals, declaring n_lit literal/length and n_dist
    distance codes (RFC 1951 allows 257..286 and 1..30 to be used; the header can say up to
    288 and 32). A complete code: 0..253 at 8 bits, 254..257 at 9, the rest unused; two
    1-bit distance codes."""
    lit = [8] * 254 + [9] * 4 + [0] * (n_lit - 258)
    dist = [1, 1] + [0] * (n_dist - 2)
    pre = [0] * 19
    for symbol in (0, 1, 8, 9):
        pre[symbol] = 2
    pre_codes, lit_codes = canonical(pre), canonical(lit)
    w = Bits()
    w.put(1, 1)  # final
    w.put(2, 2)  # dynamic
    w.put(n_lit - 257, 5)
    w.put(n_dist - 1, 5)
    w.put(19 - 4, 4)
    for symbol in _ORDER:
        w.put(pre[symbol], 3)
    for n in lit + dist:
        w.code(pre_codes[n], 2)
    for byte in data:
        w.code(lit_codes[byte], lit[byte])
    w.code(lit_codes[256], 9)
    return w.done()


def _member(body: bytes, data: bytes, flags: int = 0, extra: bytes = b"") -> bytes:
    header = bytes([0x1F, 0x8B, 8, flags, 0, 0, 0, 0, 0, 255])
    return header + extra + body + struct.pack("<II", zlib.crc32(data), len(data))


_DATA = bytes(range(200)) * 4  # a frame of ~900 bytes: once libdeflate's


@pytest.mark.parametrize("n_lit, n_dist", [(286, 30), (287, 2), (288, 2), (286, 31), (286, 32)])
def test_code_counts_past_rfc_1951s_are_zlibs_error_at_any_frame_size(n_lit, n_dist):
    frame = _member(_dynamic_block(_DATA, n_lit, n_dist), _DATA)
    assert len(frame) >= 512
    outcome = _same(frame)
    if n_lit <= 286 and n_dist <= 30:
        assert outcome == ("ok", _DATA)  # the encoder is right: only the counts are wrong
    else:
        assert outcome == (
            "raised",
            zlib.error,
            "Error -3 while decompressing data: too many length or distance symbols",
        )
    small = _member(_dynamic_block(_DATA[:20], n_lit, n_dist), _DATA[:20])
    assert len(small) < 512
    assert _same(small)[0] == outcome[0]


def test_a_wrong_header_crc_is_zlibs_error_at_any_frame_size():
    data = os.urandom(2000)  # incompressible: a frame over 512 bytes
    body = zlib.compress(data, 9, -15)
    header = bytes([0x1F, 0x8B, 8, 2, 0, 0, 0, 0, 0, 255])
    good = struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    bad = struct.pack("<H", (zlib.crc32(header) + 1) & 0xFFFF)
    assert _same(_member(body, data, flags=2, extra=good)) == ("ok", data)
    assert _same(_member(body, data, flags=2, extra=bad)) == (
        "raised",
        zlib.error,
        "Error -3 while decompressing data: header crc mismatch",
    )


# -- depth_push: a side's end is where JSON ends it ------------------------------------------

_PUSH = (
    b'{"ch":"market.btcusdt.depth.step0","ts":1700000000123,"tick":{"bids":%s,'
    b'"asks":[[101,3],[102.5,0.1]],"version":12345,"ts":1700000000100}}'
)


@pytest.mark.parametrize(
    "bids",
    [
        b"[[100.5,1],[100.25,2.5] ]",  # whitespace: the first "]]" is in the asks
        b"[[100.5,1] ,[100.25,2.5]]",
        b"[[100.5,1],[100.25,2.5]\n]",
        b'[[100.5,"1"],[100.25,2.5] ]',
        b"[[100.5,[1]],[100.25,2.5]]",  # nesting: msgspec's error, not a cut at "1]]"
        b"[[100.5,1],25,2]",  # a stray value: the array ends before the first "]]"
        b'[[100.5,1],"]",2]',
    ],
)
def test_depth_push_leaves_sides_it_cannot_delimit_to_msgspec(bids):
    frame = _PUSH % bids
    assert _htxbook.depth_push(frame) is None


def test_depth_push_still_reads_plain_sides():
    frame = _PUSH % b"[[100.5,1],[100.25,2.5e-3]]"
    fields = _htxbook.depth_push(frame)
    assert fields == (
        "market.btcusdt.depth.step0",
        1700000000123,
        b"[[100.5,1],[100.25,2.5e-3]]",
        b"[[101,3],[102.5,0.1]]",
        12345,
        None,
        1700000000100,
    )
