"""HTX ``depth.step0`` full-book pushes turned into updates: ``FullBookDiff`` holds the last
push of one market and gives each new push as the level changes from it (pure: no I/O).

Why it works on text: a push restates up to 150 levels a side, and from one push (~100 ms)
to the next most of them are unchanged. Parsing every level into floats and comparing two
dicts costs more than everything else the feed does (inflating and decoding the frame
included), and so does splitting the text into 150 tokens. Instead each side's JSON text is
compared with the held push's text by byte ranges, in C (``startswith``/``endswith`` over a
galloping bisection, ``find``): the common head and tail, cut back to whole levels, and in
a long remainder, the runs on either side of an anchor level found in both (one level
inserted near the top shifts every level after it, so the bottom levels differ in place
but not in text). Only the levels left over on either side are parsed, and compared by
value: the same price and size on both sides (a level that moved) is no change.

Invariants:
- after ``load`` or ``changes`` the held book is the latest push applied (``levels()``), and
  the returned changes, applied to the book of the push before, give exactly that book;
- each change names a price once: a new or changed level with its size, a level that left
  the book with size 0; nothing is sent for a level whose text changed but not its value
  (``5`` then ``5.0``), and a push that restates the book gives no changes;
- a push names each price at most once (HTX's books do): a repeated price is not merged;
- every held level was parsed once, on the push that brought its text (the whole side on
  ``load``): a malformed level raises msgspec's error on that push, and the held book stays;
- levels with a size of 0 or less are not in the book; JSON whitespace is ignored;
- pushes are ordered by ``mrid`` where they carry one (contracts, whose ``version`` is only
  the push's epoch second), else by ``version`` (spot).

Implementations: ``_side_changes_py`` below defines the side diff. Where the extension
``_htxbook`` was built and ``ASTRA_NATIVE`` is not ``0`` (``IMPLEMENTATION == "c"``), the
same algorithm runs in C (``_htxbook.c``: the same cuts, anchors and dict diff, so the same
list in the same order; numbers read bit for bit as msgspec reads them); any text outside
the strict form it reads (whitespace, strings, malformed or out-of-range numbers) goes to
``_side_changes_py``, which gives the result or raises the error. A snapshot's sides are read
the same way (``_positive_c``: C for the strict form, else msgspec, ``_positive_py``).
"""

from __future__ import annotations

import functools

import msgspec

from astra.venues.native import load_native

from .schemas import DepthTick, Level
from .sequencing import VersionRegressed

__all__ = ["IMPLEMENTATION", "FullBookDiff"]

_SEP = b"],["  # between two levels of a side: [[p,q],[p,q]]
_decode_levels = msgspec.json.Decoder(list[Level], strict=False).decode
# The common head and tail are found to within _GRAIN bytes (a level is ~10-30): the
# bisection stops there, and the few equal levels left in the remainder compare by value.
_GRAIN = 48
# A remainder longer than _ANCHOR_ABOVE bytes (both sides) is split at an anchor level, at
# most _MAX_ANCHORS times per side: past that the rest compares by value.
_ANCHOR_ABOVE = 320
_MAX_ANCHORS = 8


class FullBookDiff:
    """The last full-book push of one market and the difference of each new one (pure)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seq: int | None = None  # the held push's order id: mrid, else version
        self.version: int | None = None
        self._bids = self._asks = b"[]"  # each side's JSON text as pushed

    @property
    def synced(self) -> bool:
        return self.seq is not None

    def load(self, tick: DepthTick) -> tuple[list[Level], list[Level]]:
        """Take ``tick`` as the snapshot; its (bids, asks) levels, sizes above 0."""
        return self.load_text(bytes(tick.bids), bytes(tick.asks), tick.version, tick.mrid)

    def load_text(
        self, bids_text: bytes, asks_text: bytes, version: int, mrid: int | None
    ) -> tuple[list[Level], list[Level]]:
        """``load`` of a push given as its sides' JSON texts and its ids."""
        bids, asks = _positive(bids_text), _positive(asks_text)  # every level validated
        self._bids, self._asks = bids_text, asks_text
        self.seq, self.version = version if mrid is None else mrid, version
        return bids, asks

    def levels(self) -> tuple[list[Level], list[Level]]:
        """The held book's (bids, asks) levels, in push order, sizes above 0."""
        return _positive(self._bids), _positive(self._asks)

    def changes(self, tick: DepthTick) -> tuple[list[Level], list[Level]] | None:
        """The level changes from the held book to ``tick`` (which becomes the held book),
        empty for a push that restates it; None for a stale push (dropped). Raises
        VersionRegressed when the id goes back otherwise (the venue restarted)."""
        return self.changes_text(bytes(tick.bids), bytes(tick.asks), tick.version, tick.mrid)

    def changes_text(
        self, bids_text: bytes, asks_text: bytes, version: int, mrid: int | None
    ) -> tuple[list[Level], list[Level]] | None:
        """``changes`` of a push given as its sides' JSON texts and its ids."""
        seq = version if mrid is None else mrid
        if seq < self.seq:
            if mrid is not None and version <= self.version:
                return None  # taken before the held push: an older book
            name = "version" if mrid is None else "mrid"
            raise VersionRegressed(f"{name} {seq} after {self.seq}")
        bids = _side_changes(self._bids, bids_text)
        asks = _side_changes(self._asks, asks_text)
        # Only now (both sides parsed): a malformed push leaves the held book as it was.
        self._bids, self._asks = bids_text, asks_text
        self.seq, self.version = seq, version
        return bids, asks


def _positive_py(text: bytes) -> list[Level]:
    """A side's levels with a size above 0, in push order (every level validated)."""
    return [lv for lv in _decode_levels(text) if lv[1] > 0]


def _side_changes_py(held: bytes, text: bytes) -> list[Level]:
    """The changes from the side ``held`` to the side ``text`` (both JSON texts)."""
    if text == held:
        return []
    if held[:2] == b"[[" == text[:2] and held[-2:] == b"]]" == text[-2:]:
        olds: list[bytes] = []
        news: list[bytes] = []
        _unmatched(held[2:-2], text[2:-2], olds, news)
        new = _parse(news)
        if not olds:
            return [lv for lv in new if lv[1] > 0]
        old = _parse(olds)
    else:  # an empty side, or whitespace around the levels: compare every level
        old, new = _decode_levels(held), _decode_levels(text)
    was = {p: q for p, q in old if q > 0}
    now = {p: q for p, q in new if q > 0}
    get = was.get
    out = [(p, q) for p, q in now.items() if get(p) != q]
    out += [(p, 0.0) for p in was if p not in now]
    return out


_native = load_native("astra.venues.htx._htxbook")
IMPLEMENTATION = "python" if _native is None else "c"
# The compiled side diff, handing what it does not read to the reference (None: not built).
_side_changes_c = (
    None if _native is None else functools.partial(_native.side_changes, _side_changes_py)
)
_side_changes = _side_changes_py if _side_changes_c is None else _side_changes_c


def _positive_c(text: bytes) -> list[Level]:
    """``_positive_py`` read in C when the side is of the strict form it reads (the same
    levels, bit for bit), else by ``_positive_py`` (which gives the result or raises)."""
    levels = _positive_levels(text)
    return _positive_py(text) if levels is None else levels


_positive_levels = None if _native is None else _native.positive_levels
_positive = _positive_py if _native is None else _positive_c


def _parse(runs: list[bytes]) -> list[Level]:
    return _decode_levels(b"[[" + _SEP.join(runs) + b"]]") if runs else []


def _unmatched(a: bytes, b: bytes, olds: list[bytes], news: list[bytes]) -> None:
    """Append to ``olds`` and ``news`` the runs of levels (``p,q],[p,q``) of ``a`` and of
    ``b`` that are not lined up with equal text in the other; the rest is the same levels
    in the same order."""
    pending = [(a, b)]
    anchors = 0
    while pending:
        a, b = pending.pop()
        la, lb = len(a), len(b)
        n = la if la < lb else lb
        # The common head, cut back to the last whole level in it...
        cut = a.rfind(_SEP, 0, _head(a, b, n)) + 3
        if cut < 3:
            cut = 0
        # ...and the common tail (not reaching into the head on either side), likewise.
        tail = _tail(a, b, n - cut)
        end = a.find(_SEP, la - tail) if tail > 3 else -1
        if end >= 0:
            a, b = a[cut:end], b[cut : end + lb - la]
        else:
            a, b = a[cut:], b[cut:]
        if a and b and len(a) + len(b) > _ANCHOR_ABOVE and anchors < _MAX_ANCHORS:
            anchors += 1
            k = a.find(_SEP, len(a) >> 1)  # the level after the middle of a, with both of
            e = a.find(_SEP, k + 3) if k >= 0 else -1  # its separators: found in b, it is
            x = b.find(a[k : e + 3]) if e >= 0 else -1  # a whole level there too
            if x >= 0:  # both parts start lined up at the anchor: the left one goes first
                pending.append((a[k + 3 :], b[x + 3 :]))
                pending.append((a[:k], b[:x]))
                continue
        if a:
            olds.append(a)
        if b:
            news.append(b)


def _head(a: bytes, b: bytes, n: int) -> int:
    """An r <= n with a[:r] == b[:r], less than _GRAIN short of the longest."""
    lo, hi = 0, 64
    while hi < n and a.startswith(b[:hi]):
        lo, hi = hi, hi << 2
    if hi >= n:
        if a.startswith(b[:n]):
            return n
        hi = n
    while hi - lo > _GRAIN:
        mid = (lo + hi) >> 1
        if a.startswith(b[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


def _tail(a: bytes, b: bytes, n: int) -> int:
    """An r <= n with a[-r:] == b[-r:] (r > 0), less than _GRAIN short of the longest."""
    lo, hi = 0, 64
    while hi < n and a.endswith(b[-hi:]):
        lo, hi = hi, hi << 2
    if hi >= n:
        if n > 0 and a.endswith(b[-n:]):
            return n
        hi = n
    while hi - lo > _GRAIN:
        mid = (lo + hi) >> 1
        if a.endswith(b[-mid:]):
            lo = mid
        else:
            hi = mid
    return lo
