"""Hostile review of the C ``Inflater``'s fast decoder: every strategy zlib has (stored, fixed,
Huffman-only, RLE, filtered, default) at payload sizes around the output slack rule (1 KiB
+- a few bytes) and the fast loop's margins, with the trailer's ISIZE lying (0, 1, off by one,
huge), cut at every one of the last bytes, with trailing bytes, and with random bit flips:
the C inflater and the Python reference (``feed._PyInflater``) give the same bytes or the
same error, frame after frame on one inflater.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from tests.venues.native_cores import require_native

from astra.venues.htx import feed

_htxbook = require_native("astra.venues.htx._htxbook")

STRATEGIES = [
    (0, zlib.Z_DEFAULT_STRATEGY),
    (1, zlib.Z_DEFAULT_STRATEGY),
    (6, zlib.Z_DEFAULT_STRATEGY),
    (9, zlib.Z_FILTERED),
    (6, zlib.Z_HUFFMAN_ONLY),
    (6, zlib.Z_RLE),
    (6, zlib.Z_FIXED),
]


def _payload(rng: random.Random, n: int) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:  # what HTX sends: numbers
        text = b"".join(
            b"[%d.%d,%d.%04d],"
            % (rng.randrange(99999), rng.randrange(99), rng.randrange(9), rng.randrange(9999))
            for _ in range(n // 8 + 1)
        )
        return text[:n]
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(n))
    return bytes([rng.randrange(4)]) * n


def _gzip(data: bytes, level: int, strategy: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31, 8, strategy)
    return c.compress(data) + c.flush()


def _outcome(inflate, frame):
    try:
        return ("ok", inflate(frame))
    except Exception as exc:  # the same class and text on both
        return ("raised", type(exc), str(exc))


def _variants(frame: bytes, size: int, rng: random.Random):
    yield frame
    head = frame[:-4]
    for isize in (0, 1, size - 1, size + 1, size * 2, size * 1032, 2**31, 2**32 - 1):
        yield head + struct.pack("<I", isize & 0xFFFFFFFF)
    for cut in range(1, 20):
        yield frame[:-cut]
    yield frame + b"\x00" * 8
    yield frame + frame
    yield frame + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    for _ in range(4):
        flipped = bytearray(frame)
        at = rng.randrange(10, len(frame))
        flipped[at] ^= 1 << rng.randrange(8)
        yield bytes(flipped)


SIZES = [0, 1, 7, 8, 63, 64, 65, 255, 256, 257, 266, 267, 288, 1000]
SIZES += [*range(1016, 1033), 1024 + 266, 1024 + 288, 1024 + 289, 2048, 4096, 70_000]


@pytest.mark.parametrize("level,strategy", STRATEGIES)
def test_every_strategy_size_and_lie_inflates_as_the_reference(level, strategy) -> None:
    rng = random.Random(level * 31 + strategy)
    ref = feed._PyInflater()
    c = _htxbook.Inflater()
    small = _htxbook.Inflater(limit=1030)
    small_ref = feed._PyInflater(limit=1030)
    for size in SIZES:
        data = _payload(rng, size)
        frame = _gzip(data, level, strategy)
        assert c.inflate(frame) == data
        for variant in _variants(frame, size, rng):
            assert _outcome(c.inflate, variant) == _outcome(ref.inflate, variant)
            assert _outcome(small.inflate, variant) == _outcome(small_ref.inflate, variant)


def test_frames_the_fast_path_takes_are_common() -> None:
    rng = random.Random(3)
    c = _htxbook.Inflater()
    for size in range(1000, 1100):
        data = _payload(rng, size)
        assert c.inflate(_gzip(data, 6, zlib.Z_DEFAULT_STRATEGY)) == data
    assert c.fast_frames >= 90
