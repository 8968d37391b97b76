"""Hostile review of the C readers of HTX sides (``positive_levels``, ``side_changes``): texts
of the strict form and mutations of them (a byte deleted, inserted or replaced: brackets,
commas, signs, exponents, quotes, NUL), numbers of every length (1-25 digits, 0-20 decimals,
exponents, out of range), read by the C path and the Python/msgspec reference: the same
levels, bit for bit, or the same error class.

Skipped when the extension is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI)."""

from __future__ import annotations

import random

import pytest
from tests.venues.native_cores import require_native

from astra.venues.htx import fullbook

require_native("astra.venues.htx._htxbook")
if fullbook._side_changes_c is None:  # built, but ASTRA_NATIVE=0: fullbook runs Python only
    pytest.skip("ASTRA_NATIVE=0: fullbook does not use the C readers", allow_module_level=True)

ALPHABET = b'0123456789.,-+eE[] "x\x00'


def _outcome(fn, *args):
    try:
        return "ok", [(type(v).__name__, repr(v)) for v in fn(*args)]
    except Exception as exc:  # the class is what both must share
        return "raised", type(exc).__name__


def _number(rng: random.Random) -> bytes:
    k = rng.randrange(6)
    if k == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 25))).encode()
    if k == 1:
        return f"{rng.uniform(0, 1e5):.{rng.randrange(0, 20)}f}".encode()
    if k == 2:
        return f"{rng.uniform(0, 1e5):.{rng.randrange(1, 17)}e}".encode()
    if k == 3:
        return rng.choice(
            [
                b"0",
                b"-0",
                b"0.0",
                b"1e-400",
                b"1e400",
                b"-1",
                b"00",
                b"1.",
                b".1",
                b"1e",
                b"9" * 19,
                b"9" * 18,
                b"12345678",
                b"123456789",
                b"0.12345678",
            ]
        )
    return f"{rng.randrange(100000)}.{rng.randrange(10 ** rng.randrange(1, 9))}".encode()


def _side(rng: random.Random, n: int) -> bytes:
    return (
        b"[" + b",".join(b"[" + _number(rng) + b"," + _number(rng) + b"]" for _ in range(n)) + b"]"
    )


def _mutate(rng: random.Random, text: bytes) -> bytes:
    out = bytearray(text)
    for _ in range(rng.randrange(0, 3)):
        at = rng.randrange(len(out) + 1)
        op = rng.randrange(3)
        if op == 1 or not out:
            out.insert(at, rng.choice(ALPHABET))
        elif op == 0:
            del out[min(at, len(out) - 1)]
        else:
            out[min(at, len(out) - 1)] = rng.choice(ALPHABET)
    return bytes(out)


@pytest.mark.parametrize("seed", range(4))
def test_snapshot_sides_read_as_msgspec_reads_them(seed) -> None:
    rng = random.Random(seed)
    for _ in range(2500):
        text = _mutate(rng, _side(rng, rng.randrange(0, 40)))
        assert _outcome(fullbook._positive_c, text) == _outcome(fullbook._positive_py, text), text


@pytest.mark.parametrize("seed", range(4))
def test_side_changes_read_as_the_python_diff_reads_them(seed) -> None:
    rng = random.Random(100 + seed)
    for _ in range(1500):
        held = _side(rng, rng.randrange(0, 60))
        roll = rng.random()
        text = held if roll < 0.1 else _mutate(rng, held) if roll < 0.6 else _side(rng, 50)
        c = _outcome(fullbook._side_changes_c, held, text)
        assert c == _outcome(fullbook._side_changes_py, held, text), (held, text)
