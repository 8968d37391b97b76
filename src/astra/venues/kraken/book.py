"""Kraken's spot book as the venue keeps it, and its CRC32 checksum (WebSocket v2 ``book``).

Invariants:
- At most ``depth`` levels a side: after each message the tail beyond the subscribed depth is
  dropped (Kraken sends no deletes for levels pushed out of scope) and reported as deletes.
- The checksum string is, for the 10 best asks (low to high) then the 10 best bids (high to
  low), price then quantity, each written with the pair's precision (price: ``pair_decimals``
  places, quantity: ``lot_decimals``), the ``.`` removed and leading zeros stripped, all
  concatenated; the value is ``zlib.crc32`` of it, unsigned 32-bit.
- The checksum is cached until a change lands in the top 10, and each top level's text until
  that level changes: most updates are deeper and cost no hashing.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterable

from astra.venues.book import L2Book

__all__ = ["ChecksumMismatch", "KrakenBook", "Levels", "checksum_of"]

_CHECKSUM_LEVELS = 10

Levels = list[tuple[float, float]]


class ChecksumMismatch(Exception):
    """The rebuilt book's top 10 levels do not hash to the venue's checksum."""


def _fragment(value: float, fmt: str) -> str:
    return format(value, fmt).replace(".", "").lstrip("0")


def checksum_of(
    asks: Iterable[tuple[float, float]],
    bids: Iterable[tuple[float, float]],
    price_decimals: int,
    qty_decimals: int,
) -> int:
    """Kraken's CRC32 over the given best asks (ascending) then best bids (descending)."""
    pf, qf = f".{price_decimals}f", f".{qty_decimals}f"
    text = "".join(_fragment(p, pf) + _fragment(q, qf) for p, q in asks)
    text += "".join(_fragment(p, pf) + _fragment(q, qf) for p, q in bids)
    return zlib.crc32(text.encode())


class KrakenBook:
    """The venue's view of one book: at most ``depth`` levels a side, float keys, kept with a
    sorted key list per side (bids negated) so truncation and the top 10 cost no sort.

    The checksum is cached until a change lands in the top 10 (most updates are deeper), and
    each top level's checksum text is cached until that level changes."""

    __slots__ = (
        "_ask_keys",
        "_ask_text",
        "_bid_keys",
        "_bid_text",
        "_checksum",
        "_pf",
        "_qf",
        "asks",
        "bids",
        "depth",
    )

    def __init__(self, depth: int, price_decimals: int, qty_decimals: int) -> None:
        self.depth = depth
        self._pf, self._qf = f".{price_decimals}f", f".{qty_decimals}f"
        self.reset([], [])

    def reset(self, bids: Levels, asks: Levels) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # -price, ascending: best bid first
        self._ask_keys: list[float] = []  # price, ascending: best ask first
        self._bid_text: dict[float, str] = {}  # price -> its checksum text
        self._ask_text: dict[float, str] = {}
        self._checksum: int | None = None
        self.apply(bids, asks)

    def apply(self, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        """Apply one message's levels in order, then truncate to ``depth``. Returns the
        changes to forward: the given lists, plus a delete per level truncated away."""
        if bids:
            self._apply_side(self.bids, self._bid_keys, self._bid_text, bids, -1.0)
        if asks:
            self._apply_side(self.asks, self._ask_keys, self._ask_text, asks, 1.0)
        return bids, asks

    def _apply_side(self, side: dict, keys: list, text: dict, changes: Levels, sign: float) -> None:
        top = len(keys) < _CHECKSUM_LEVELS  # a short side: any change is in its top 10
        for p, q in changes:
            k = p * sign
            if q > 0:
                i = bisect_left(keys, k)
                if p not in side:
                    keys.insert(i, k)
                side[p] = q
            elif p in side:
                del side[p]
                i = bisect_left(keys, k)
                del keys[i]
            else:
                continue  # deleting an absent level: nothing changed
            text.pop(p, None)
            if i < _CHECKSUM_LEVELS:
                top = True
        if top:
            self._checksum = None
        if len(keys) > self.depth:  # the tail only: the top 10 stays as it is
            for k in keys[self.depth :]:
                p = k * sign
                del side[p]
                text.pop(p, None)
                changes.append((p, 0.0))
            del keys[self.depth :]

    def top(self, n: int = _CHECKSUM_LEVELS) -> tuple[Levels, Levels]:
        bids, asks = self.bids, self.asks
        return (
            [(-k, bids[-k]) for k in self._bid_keys[:n]],
            [(k, asks[k]) for k in self._ask_keys[:n]],
        )

    def checksum(self) -> int:
        if self._checksum is not None:
            return self._checksum
        pf, qf, parts = self._pf, self._qf, []
        for keys, side, text, sign in (
            (self._ask_keys, self.asks, self._ask_text, 1.0),
            (self._bid_keys, self.bids, self._bid_text, -1.0),
        ):
            for k in keys[:_CHECKSUM_LEVELS]:
                p = k * sign
                t = text.get(p)
                if t is None:
                    t = text[p] = _fragment(p, pf) + _fragment(side[p], qf)
                parts.append(t)
        self._checksum = value = zlib.crc32("".join(parts).encode())
        return value

    def verify(self, expected: int) -> None:
        got = self.checksum()
        if got != expected:
            raise ChecksumMismatch(f"checksum {got} != venue's {expected}")

    def to_l2book(self, market: str, update_id: int, timestamp: int) -> L2Book:
        """A copy for the sink: the feed keeps mutating its own book."""
        book = L2Book(market)
        book.reset(self.bids.items(), self.asks.items(), update_id, timestamp)
        return book
