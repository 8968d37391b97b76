"""Kraken's spot book as the venue keeps it, and its CRC32 checksum (WebSocket v2 ``book``).

Invariants:
- At most ``depth`` levels a side: after each message the tail beyond the subscribed depth is
  dropped (Kraken sends no deletes for levels pushed out of scope) and reported as deletes.
- The checksum string is, for the 10 best asks (low to high) then the 10 best bids (high to
  low), price then quantity, each written with the pair's precision (price: ``pair_decimals``
  places, quantity: ``lot_decimals``), the ``.`` removed and leading zeros stripped, all
  concatenated; the value is ``zlib.crc32`` of it, unsigned 32-bit.
- Each side is three parallel lists and no dict (a float's hash costs about as much as the
  bisect): ``keys`` sorted (bids negated, so both run best first), ``qtys[i]`` the quantity
  at ``keys[i]``, ``texts[i]`` its checksum text or None until it is needed. A level is found
  by ``bisect_left`` and an equality test at the index; an insert or delete at that index in
  the three lists when a level appears or goes. A message with more than ``_MERGE_AT``
  changes a side is merged instead (one dict, one sort: O(n log n), where an insert each
  would be O(n * m) for a huge message); the result is the same, the last change to a price
  decides.
- The checksum input of a side is its first 10 ``texts`` (a slice; a None is written once,
  when the level is in the top 10); the ask side's CRC and the bid side's joined bytes are
  cached until a change lands in that side's top 10, and the CRC of the whole continues from
  the cached ask CRC (``zlib.crc32(bids, crc_of_asks)``): a message (usually one level)
  re-joins at most the side it touched.
- Input is checked before the book changes: ``bids``/``asks`` are lists of (price, quantity)
  pairs of floats (what the decoder gives), the price finite and > 0, the quantity finite
  (<= 0 deletes the level); anything else raises TypeError or ValueError and leaves the book
  as it was. A level whose checksum text would be infinite (price times 10**decimals past
  the float range) raises ValueError when the checksum is computed.
- ``update``/``snapshot`` take a decoded ``BookData`` and read, in this order, its timestamp,
  its levels and its checksum: one call per message on the feed's path.

Implementations: the pure-Python ``PythonKrakenBook`` below is the reference; the compiled
``_krakenbook.KrakenBook`` (``NativeKrakenBook``, None where it is not built) has the same
API, results and exceptions. ``KrakenBook`` is the compiled one where it was built and
``ASTRA_NATIVE`` is not ``0`` (``astra.venues.native.load_native``); ``IMPLEMENTATION`` says
which (``"c"`` or ``"python"``).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterable
from operator import index, neg
from typing import TYPE_CHECKING

from astra.venues.book import L2Book
from astra.venues.native import load_native

if TYPE_CHECKING:
    from .schemas import BookData

__all__ = [
    "IMPLEMENTATION",
    "ChecksumMismatch",
    "KrakenBook",
    "Levels",
    "NativeKrakenBook",
    "PythonKrakenBook",
    "checksum_of",
]

_CHECKSUM_LEVELS = 10
_MAX_DECIMALS = 18  # 10**18 < 2**63: the scale stays an exact integer in a float
_MERGE_AT = 64  # more changes a side in one message: one sort and merge (see _merge)
_INF = float("inf")
_BEYOND = "kraken book: a level is beyond the checksum's range"

Levels = list[tuple[float, float]]


class ChecksumMismatch(Exception):
    """The rebuilt book's top 10 levels do not hash to the venue's checksum."""


def _checked(levels: Levels) -> None:
    """Raise unless ``levels`` is a list of (price, quantity) floats, the price finite and
    > 0, the quantity finite: a book is changed only by levels that all pass."""
    if type(levels) is not list:
        raise TypeError(f"kraken book: levels must be a list, not {type(levels).__name__}")
    for p, q in levels:
        if type(p) is not float or type(q) is not float:
            raise TypeError(
                "kraken book: price and quantity must be floats, "
                f"not {type(p).__name__} and {type(q).__name__}"
            )
        if not (0.0 < p < _INF and -_INF < q < _INF):
            raise ValueError(
                f"kraken book: level ({p!r}, {q!r}): the price must be finite and > 0, "
                "the quantity finite"
            )


def _merge(keys: list, qtys: list, texts: list, changes: Levels, sign: float) -> None:
    """Many changes at once: one dict and one sort instead of an insert (a list shift) each,
    so a huge message costs O((n + m) log(n + m)), not O(m * n). The same result as applying
    them in order (for each price the last change decides); unchanged levels keep their text."""
    levels = dict(zip(keys, zip(qtys, texts, strict=True), strict=True))
    for p, q in changes:
        if q > 0:
            levels[p * sign] = (q, None)
        else:
            levels.pop(p * sign, None)
    keys[:] = sorted(levels)
    qtys[:] = [levels[k][0] for k in keys]
    texts[:] = [levels[k][1] for k in keys]


def _in_range(value: object, name: str, lo: int, hi: int) -> int:
    n = index(value)
    if not lo <= n <= hi:
        raise ValueError(f"kraken book: {name} must be in {lo}..{hi}, not {value!r}")
    return n


def _fragment(value: float, scale: float) -> str:
    """``value`` written with ``log10(scale)`` places, the point removed, leading zeros
    stripped: the integer ``value * scale`` in decimal (exact for up to 15 significant
    digits, as the float itself; one multiply and round instead of format + strip)."""
    return str(round(value * scale))


def checksum_of(
    asks: Iterable[tuple[float, float]],
    bids: Iterable[tuple[float, float]],
    price_decimals: int,
    qty_decimals: int,
) -> int:
    """Kraken's CRC32 over the given best asks (ascending) then best bids (descending)."""
    ps, qs = 10.0**price_decimals, 10.0**qty_decimals
    text = "".join(_fragment(p, ps) + _fragment(q, qs) for p, q in asks)
    text += "".join(_fragment(p, ps) + _fragment(q, qs) for p, q in bids)
    return zlib.crc32(text.encode())


class PythonKrakenBook:
    """The venue's view of one book: at most ``depth`` levels a side, in three parallel lists
    per side (see the module docstring); ``bids``/``asks`` are dicts made on demand (tests,
    diagnostics), never on the message path."""

    __slots__ = (
        "_ask_crc",
        "_ask_keys",
        "_ask_qtys",
        "_ask_texts",
        "_bid_keys",
        "_bid_qtys",
        "_bid_texts",
        "_bid_top",
        "_checksum",
        "_depth",
        "_ps",
        "_qs",
        "verified",
    )

    def __init__(self, depth: int, price_decimals: int, qty_decimals: int) -> None:
        self._depth = _in_range(depth, "depth", 1, (1 << 62) - 1)
        price_decimals = _in_range(price_decimals, "price_decimals", 0, _MAX_DECIMALS)
        qty_decimals = _in_range(qty_decimals, "qty_decimals", 0, _MAX_DECIMALS)
        self._ps, self._qs = 10.0**price_decimals, 10.0**qty_decimals
        self.verified = 0  # checksums compared (and equal) over this book's life
        self.reset([], [])

    @property
    def depth(self) -> int:
        """Levels kept a side (the subscribed depth)."""
        return self._depth

    def reset(self, bids: Levels, asks: Levels) -> None:
        """Replace the book with a snapshot (levels applied in order, then truncated)."""
        _checked(bids)
        _checked(asks)
        self._bid_keys: list[float] = []  # -price, ascending: best bid first
        self._bid_qtys: list[float] = []  # _bid_qtys[i]: the quantity at -_bid_keys[i]
        self._bid_texts: list[str | None] = []  # its checksum text, None until needed
        self._ask_keys: list[float] = []  # price, ascending: best ask first
        self._ask_qtys: list[float] = []
        self._ask_texts: list[str | None] = []
        for keys, qtys, texts, levels, sign in (
            (self._bid_keys, self._bid_qtys, self._bid_texts, bids, -1.0),
            (self._ask_keys, self._ask_qtys, self._ask_texts, asks, 1.0),
        ):
            side: dict[float, float] = {}
            for p, q in levels:
                if q > 0:
                    side[p * sign] = q
                else:
                    side.pop(p * sign, None)
            keys.extend(sorted(side)[: self._depth])
            qtys.extend(map(side.__getitem__, keys))
            texts.extend([None] * len(keys))
        self._bid_top: bytes | None = None  # the top 10 bid texts joined, encoded
        self._ask_crc: int | None = None  # CRC32 of the top 10 ask texts
        self._checksum: int | None = None  # of both tops; None when either is stale

    def apply(self, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        """Apply one message's levels in order, then truncate to ``depth``. Returns the
        changes to forward: the given lists, plus a delete per level truncated away."""
        _checked(bids)
        _checked(asks)
        if bids and self._apply_side(self._bid_keys, self._bid_qtys, self._bid_texts, bids, -1.0):
            self._bid_top = self._checksum = None
        if asks and self._apply_side(self._ask_keys, self._ask_qtys, self._ask_texts, asks, 1.0):
            self._ask_crc = self._checksum = None
        return bids, asks

    def _apply_side(
        self, keys: list, qtys: list, texts: list, changes: Levels, sign: float
    ) -> bool:
        """Apply one side's changes; True when one landed in its top 10."""
        if len(changes) > _MERGE_AT:
            _merge(keys, qtys, texts, changes, sign)
            n, top = len(keys), True
        else:
            n, top = self._insert_side(keys, qtys, texts, changes, sign)
        depth = self._depth
        if n > depth:  # the tail only: the top 10 stays as it is
            changes.extend([(k * sign, 0.0) for k in keys[depth:]])
            del keys[depth:], qtys[depth:], texts[depth:]
        return top

    @staticmethod
    def _insert_side(
        keys: list, qtys: list, texts: list, changes: Levels, sign: float
    ) -> tuple[int, bool]:
        """Each change in turn, at its bisected index; the side's length after them and
        whether one landed in its top 10."""
        n = len(keys)
        top = n < _CHECKSUM_LEVELS  # a short side: any change is in its top 10
        for p, q in changes:
            k = p * sign
            i = bisect_left(keys, k)
            if q > 0:
                if i != n and keys[i] == k:
                    qtys[i] = q
                    texts[i] = None
                else:
                    keys.insert(i, k)
                    qtys.insert(i, q)
                    texts.insert(i, None)
                    n += 1
            elif i != n and keys[i] == k:
                del keys[i], qtys[i], texts[i]
                n -= 1
            else:
                continue  # deleting an absent level: nothing changed
            if i < _CHECKSUM_LEVELS:
                top = True
        return n, top

    @property
    def bids(self) -> dict[float, float]:
        return dict(zip(map(neg, self._bid_keys), self._bid_qtys, strict=True))

    @property
    def asks(self) -> dict[float, float]:
        return dict(zip(self._ask_keys, self._ask_qtys, strict=True))

    def top(self, n: int = _CHECKSUM_LEVELS) -> tuple[Levels, Levels]:
        return (
            list(zip(map(neg, self._bid_keys[:n]), self._bid_qtys[:n], strict=True)),
            list(zip(self._ask_keys[:n], self._ask_qtys[:n], strict=True)),
        )

    def _top_bytes(self, keys: list, qtys: list, texts: list, sign: float) -> bytes:
        top = texts[:_CHECKSUM_LEVELS]
        if None in top:  # levels new to the top 10 (or changed): written once
            ps, qs, i = self._ps, self._qs, 0
            for _ in range(top.count(None)):
                i = top.index(None, i)
                # int(x + 0.5) == round(x) here: x > 0, within 1e-6 of an integer
                try:
                    text = "%d%d" % (keys[i] * sign * ps + 0.5, qtys[i] * qs + 0.5)  # noqa: UP031 (2x an f-string of round()s)
                except OverflowError:  # an infinite product: no text can match the venue's
                    raise ValueError(_BEYOND) from None
                top[i] = texts[i] = text
        return "".join(top).encode()

    def checksum(self) -> int:
        if self._checksum is not None:
            return self._checksum
        ask_crc = self._ask_crc
        if ask_crc is None:
            ask_crc = self._ask_crc = zlib.crc32(
                self._top_bytes(self._ask_keys, self._ask_qtys, self._ask_texts, 1.0)
            )
        bids = self._bid_top
        if bids is None:
            bids = self._bid_top = self._top_bytes(
                self._bid_keys, self._bid_qtys, self._bid_texts, -1.0
            )
        self._checksum = value = zlib.crc32(bids, ask_crc)  # the CRC continues from the asks
        return value

    def verify(self, expected: int) -> None:
        got = self._checksum
        if got is None:
            got = self.checksum()
        if got != expected:
            raise ChecksumMismatch(f"checksum {got} != venue's {expected}")
        self.verified += 1

    def update(self, data: BookData) -> tuple[Levels, Levels, int]:
        """One decoded v2 update: its timestamp (ms, 0 when absent), its levels applied (as
        ``apply``), its checksum verified. Returns the changes for the sink and the time."""
        timestamp = data.timestamp_ms(0)
        bids, asks = self.apply(*data.to_changes())
        self.verify(data.checksum)
        return bids, asks, timestamp

    def snapshot(self, data: BookData) -> int:
        """Reset to a decoded v2 snapshot and verify it; its timestamp (ms, 0 when absent)."""
        timestamp = data.timestamp_ms(0)
        self.reset(*data.to_changes())
        self.verify(data.checksum)
        return timestamp

    def to_l2book(self, market: str, update_id: int, timestamp: int) -> L2Book:
        """A copy for the sink: the feed keeps mutating its own book."""
        book = L2Book(market)
        bids = zip(map(neg, self._bid_keys), self._bid_qtys, strict=True)
        book.reset(bids, zip(self._ask_keys, self._ask_qtys, strict=True), update_id, timestamp)
        return book


_native = load_native("astra.venues.kraken._krakenbook")
if _native is not None:
    _native._bind(ChecksumMismatch, L2Book)
NativeKrakenBook = None if _native is None else _native.KrakenBook
KrakenBook = PythonKrakenBook if NativeKrakenBook is None else NativeKrakenBook
IMPLEMENTATION = "python" if _native is None else "c"
