"""An OKX book (each side as the venue sent it) and the CRC32 over the top 25 of both sides.

The checksum input is read from a cached sorted order, never sorted from scratch, and no level
is hashed: two parallel lists per side,

- ``prices``: the live prices ascending (floats); a level is found by ``bisect_left`` and an
  equality test at the index (no dict: a float's hash costs as much as the bisect);
- ``texts``: ``texts[i]`` is ``prices[i]``'s ``"price:size"`` exactly as sent; an insert or
  delete at ``i`` in both lists when a level appears or goes, one assignment when only its
  size changes;
- the top ``CHECKSUM_LEVELS`` texts are one slice of ``texts`` (the end of it, reversed, for
  bids), and the checksum string one ``join`` over both sides interleaved by slice assignment.

Invariants: ``len(prices) == len(texts)``, ``prices`` ascending without duplicates, every
level's size positive. Levels of one message apply in order (a later one for the same price
wins); a size that is not positive deletes, deleting an absent level is not an error.

Input: a side's levels as the JSON text OKX sent (``BookData.bids``, a ``msgspec.Raw``):
strict JSON, price and size strings, no escapes (a backslash is refused: the checksum is over
the bytes as sent). A malformed array raises ValueError before any level applies; a level
whose price or size is not a float (``float(text)``) raises ValueError with the levels before
it applied (the caller resyncs: the side is then void).

Two implementations, the same behaviour: ``PyBook``/``PyBookSide``/``py_checksum`` below
define it, and ``_okxbook.c`` (the same structure in C: one pass over the JSON, no Python
object per level but the (price, size) changes, each level's price float kept and handed out
again) is tested against them value for value, errors and the state after one included.
``Book`` (both sides, what the feed uses: one call per message), ``BookSide`` and
``checksum`` are the C ones where the extension was built and ``ASTRA_NATIVE`` is not ``0``,
else the Python ones; ``IMPLEMENTATION`` says which (``astra.venues.native`` logs it).

Per message the feed makes one call, ``Book.update(data, verify)``: both sides, then OKX's
integrity rule (``ChecksumMismatch`` unless the rebuilt checksum equals ``data.checksum``,
0 meaning not sent; ``verified`` counts). ``decode_push`` is the books stream's decoder: with
the C core a ``books`` push is parsed in C (its levels read once, then applied from that
parse), anything the C parser does not fully understand by msgspec, so what it returns is
msgspec's ``Push[BookData]`` or an object with the same fields and values (``bids``/``asks``
as bytes instead of ``msgspec.Raw``).

Measured on the recorded session (why it is this simple): per-level work as a plain loop beats
chains of ``map``/``zip``/``set`` at OKX's 10-30 levels a message; about 60% of the changes
land in the top 25, so keeping order only for the top (dict below) saves no bisects and adds
float hashing; and re-making the checksum text from float-decoded levels (``repr``, ~170 ns a
number) costs more than the two ``float()`` calls a level (~45 ns each) it saves.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from functools import partial
from itertools import chain, zip_longest
from operator import lt

import msgspec

from astra.venues.native import load_native

from .schemas import Arg, BookData, BookLevel, Push

__all__ = [
    "CHECKSUM_LEVELS",
    "IMPLEMENTATION",
    "Book",
    "BookOutOfSync",
    "BookSide",
    "ChecksumMismatch",
    "PyBook",
    "PyBookSide",
    "book_checksum",
    "checksum",
    "decode_push",
    "parse_levels",
    "py_checksum",
]

CHECKSUM_LEVELS = 25
Changes = list[tuple[float, float]]
_decode_levels = msgspec.json.Decoder(list[BookLevel]).decode


class BookOutOfSync(Exception):
    """The local book can no longer be trusted; a fresh snapshot is needed."""


class ChecksumMismatch(BookOutOfSync):
    """The rebuilt top 25 levels disagree with OKX's checksum."""


def parse_levels(levels: bytes | msgspec.Raw) -> list[BookLevel]:
    """A side's levels from their JSON text; ValueError when it is not an array of
    ``[price, size, ...]`` string pairs or holds an escape."""
    data = levels if type(levels) is bytes else bytes(memoryview(levels))
    if b"\\" in data:
        raise ValueError("book levels: an escape in a string")
    try:
        return _decode_levels(data)
    except msgspec.DecodeError as exc:  # a ValueError already: one type for both cores
        raise ValueError(f"book levels: {exc}") from None


def book_checksum(bids: list[str], asks: list[str]) -> int:
    """OKX's checksum of ``price:size`` entries, best first per side, interleaved
    ``bid1:ask1:bid2:ask2:...`` (a shorter side simply ends), as a signed int32."""
    if len(bids) == len(asks):  # the usual case: interleave by two slice assignments
        parts: list = [None] * (2 * len(bids))
        parts[::2] = bids
        parts[1::2] = asks
    else:
        parts = list(filter(None, chain.from_iterable(zip_longest(bids, asks))))
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


def py_checksum(bids: PyBookSide, asks: PyBookSide) -> int:
    """The checksum of the two sides' top ``CHECKSUM_LEVELS``."""
    return book_checksum(bids.top(), asks.top())


class PyBookSide:
    """One side (``descending``: bids) of one OKX book; see the module docstring."""

    __slots__ = ("descending", "prices", "texts")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.prices: list[float] = []  # ascending
        self.texts: list[str] = []  # texts[i]: prices[i]'s "price:size" as sent

    def apply(self, levels: bytes | msgspec.Raw) -> Changes:
        """Apply one message's levels; returns them as (price, size) floats, in order, for the
        sink. Raises ValueError on a level that is not numbers (the book is then void)."""
        return self._apply(parse_levels(levels))

    def _apply(self, levels: list[BookLevel]) -> Changes:
        prices, texts = self.prices, self.texts
        n = len(prices)
        changes: Changes = []
        append = changes.append
        for level in levels:
            text, size_text = level.px, level.sz
            price, size = float(text), float(size_text)
            i = bisect_left(prices, price)
            if size > 0:
                if i != n and prices[i] == price:
                    texts[i] = f"{text}:{size_text}"
                else:
                    prices.insert(i, price)
                    texts.insert(i, f"{text}:{size_text}")
                    n += 1
            elif i != n and prices[i] == price:
                del prices[i]
                del texts[i]
                n -= 1
            append((price, size))
        return changes

    def load(self, raw: bytes | msgspec.Raw) -> Changes:
        """``apply`` to an empty side (a snapshot); on an error the side is left as it was.
        OKX sends a snapshot best first with positive sizes: then the lists are the message
        reversed (bids) or as is, made by comprehensions; any other snapshot is applied level
        by level."""
        levels = parse_levels(raw)
        changes = [(float(level.px), float(level.sz)) for level in levels]
        prices = [price for price, _ in changes]
        if self.descending:
            prices.reverse()
        if all(map(lt, prices, prices[1:])) and all(size > 0 for _, size in changes):
            texts = [f"{level.px}:{level.sz}" for level in levels]
            if self.descending:
                texts.reverse()
            self.prices, self.texts = prices, texts
        else:
            self.prices, self.texts = [], []
            self._apply(levels)
        return changes

    def top(self) -> list[str]:
        """The best ``CHECKSUM_LEVELS`` levels' ``"price:size"``, best first, as sent."""
        if self.descending:
            best = self.texts[-CHECKSUM_LEVELS:]
            best.reverse()
            return best
        return self.texts[:CHECKSUM_LEVELS]

    def levels(self) -> list[tuple[float, str]]:
        """Every level, best first (for tests and diagnostics)."""
        pairs = list(zip(self.prices, self.texts, strict=True))
        if self.descending:
            pairs.reverse()
        return pairs

    def __len__(self) -> int:
        return len(self.prices)


class PyBook:
    """Both sides of one OKX book: a message's two level arrays in one call (bids first: an
    error in the asks leaves the bids applied), and the checksum of their top."""

    __slots__ = ("asks", "bids", "verified")

    def __init__(self) -> None:
        self.bids, self.asks = PyBookSide(descending=True), PyBookSide(descending=False)
        self.verified = 0  # checksums update() compared (and found equal)

    def load(self, bids: bytes | msgspec.Raw, asks: bytes | msgspec.Raw) -> tuple[Changes, Changes]:
        return self.bids.load(bids), self.asks.load(asks)

    def apply(
        self, bids: bytes | msgspec.Raw, asks: bytes | msgspec.Raw
    ) -> tuple[Changes, Changes]:
        return self.bids.apply(bids), self.asks.apply(asks)

    def checksum(self) -> int:
        return py_checksum(self.bids, self.asks)

    def update(self, data: BookData, verify: bool) -> tuple[Changes, Changes]:
        """``apply`` of a message's levels, then OKX's integrity rule when ``verify`` and
        ``data.checksum`` is not 0 (not sent): ChecksumMismatch (the levels stay applied: the
        caller resyncs) unless the rebuilt checksum equals it; ``verified`` counts the equal."""
        bids, asks = self.bids.apply(data.bids), self.asks.apply(data.asks)
        if verify and data.checksum != 0:
            local = self.checksum()
            if local != data.checksum:
                raise ChecksumMismatch(f"checksum {data.checksum} but rebuilt book gives {local}")
            self.verified += 1
        return bids, asks


py_decode_push = msgspec.json.Decoder(Push[BookData]).decode

_native = load_native("astra.venues.okx._okxbook")
if _native is not None:
    _native.configure(Arg, msgspec.UNSET, ChecksumMismatch)
IMPLEMENTATION = "python" if _native is None else "c"
Book: type = PyBook if _native is None else _native.Book
BookSide: type = PyBookSide if _native is None else _native.BookSide
checksum = py_checksum if _native is None else _native.checksum
decode_push = py_decode_push if _native is None else partial(_native.decode_push, py_decode_push)
"""A books channel frame (str or bytes) as a ``Push[BookData]``: with the C core, a books
push is parsed there (levels read once, applied by ``Book.update`` from the parse) and every
other frame, or one it does not fully understand, by msgspec; a ``Push`` either way to the
stream and the feed (``BookData``'s fields; ``bids``/``asks`` as bytes instead of Raw)."""
