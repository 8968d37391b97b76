"""The local L2 book of one market: what every venue feed keeps in sync and the gateway serves.

It lives in ``venues/``, the lowest layer that uses it: venue feeds build it from snapshots and
``marketdata/`` keeps one per market (a lower layer never imports a higher one).

Invariants:
- Each side is a mapping ``price -> quantity`` (floats, as the public schema): where the C
  core is built, a ``Side`` (``_levels.c``: a hash table of doubles that touches no Python
  object per change, with the dict methods readers use: ``[]``, ``get``, ``in``, ``len``,
  iteration, ``items``, ``==`` a dict), else a plain dict. Readers use only that common part
  and never rely on its iteration order (``sorted_bids``/``top`` are the sorted reads).
- A level exists only with a positive quantity: applying quantity 0 deletes it, and deleting
  a level that is not there is not an error (venues do send such deletes).
- A NaN price is refused (ValueError) before anything of its pair is stored: it has no place
  in a sorted read (the Python loops check it too, so both cores refuse the same input).
- ``update_id`` is the venue sequence id of the last change applied; ``timestamp`` the
  venue's event time (ms) of that change.
- The sorted view (bids descending, asks ascending) is built on the first read after a
  change and cached until the next change: readers between two updates share it (a C side
  selects or sorts it in C; a dict is sorted). ``top(depth)`` is that view's ``[:depth]``
  (any int a slice takes, a negative one too); with no view cached and ``depth >= 0`` a C
  side is asked for its best ``depth`` levels alone.
- The per-level loops are ``apply_side``/``fill_side``, and ``apply`` (one update) comes from
  ``BookState``: compiled (``_levels.c``) where the extension was built and ``ASTRA_NATIVE``
  is not ``0``, else the Python code below, which defines the behaviour
  (``IMPLEMENTATION`` says which runs).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from astra.venues.native import load_native

__all__ = ["IMPLEMENTATION", "BookState", "L2Book", "apply_side", "fill_side", "new_side"]

LevelPairs = list[tuple[float, float]]


def _apply_side(side: dict, pairs: Iterable[tuple[float, float]]) -> None:
    """Absolute quantities in order: ``q > 0`` sets, anything else deletes (absent: no error)."""
    for p, q in pairs:
        if p != p:
            raise ValueError("a book level's price is NaN")
        if q > 0:
            side[p] = q
        else:
            side.pop(p, None)


def _fill_side(side: dict, pairs: Iterable[tuple[float, float]]) -> None:
    """A snapshot's levels: those with ``q > 0`` set (a later one wins), the others skipped."""
    for p, q in pairs:
        if p != p:
            raise ValueError("a book level's price is NaN")
        if q > 0:
            side[p] = q


_native = load_native("astra.venues._levels")
IMPLEMENTATION = "python" if _native is None else "c"
apply_side = _apply_side if _native is None else _native.apply_side
fill_side = _fill_side if _native is None else _native.fill_side

if _native is not None:
    MutableMapping.register(_native.Side)


def new_side(bids: bool) -> MutableMapping[float, float]:
    """An empty book side: a C ``Side`` where built (``bids`` sets its order), else a dict."""
    return {} if _native is None else _native.Side(bids)


class _BookState:
    """L2Book's fields and ``apply``: the reference of ``_levels.BookState`` (the same in C)."""

    __slots__ = ("_asks_view", "_bids_view", "asks", "bids", "timestamp", "update_id")

    def apply(self, bids: LevelPairs, asks: LevelPairs, update_id: int, timestamp: int) -> None:
        """Apply absolute level quantities (0 deletes). A side's cached view is dropped before
        the side changes (a failure part way leaves no stale view)."""
        if bids:
            self._bids_view = None
            apply_side(self.bids, bids)
        if asks:
            self._asks_view = None
            apply_side(self.asks, asks)
        self.update_id = update_id
        self.timestamp = timestamp


BookState = _BookState if _native is None else _native.BookState


class L2Book(BookState):
    __slots__ = ("market",)

    def __init__(self, market: str) -> None:
        self.market = market
        self.bids: MutableMapping[float, float] = new_side(True)
        self.asks: MutableMapping[float, float] = new_side(False)
        self.update_id = 0
        self.timestamp = 0
        self._bids_view: LevelPairs | None = None
        self._asks_view: LevelPairs | None = None

    def reset(
        self,
        bids: Iterable[tuple[float, float]],
        asks: Iterable[tuple[float, float]],
        update_id: int,
        timestamp: int,
    ) -> None:
        """Replace the whole book with a snapshot."""
        self.bids, self.asks = new_side(True), new_side(False)
        fill_side(self.bids, bids)
        fill_side(self.asks, asks)
        self.update_id = update_id
        self.timestamp = timestamp
        self._bids_view = self._asks_view = None

    def sorted_bids(self) -> LevelPairs:
        view = self._bids_view
        if view is None:
            bids = self.bids
            view = self._bids_view = (
                [(p, bids[p]) for p in sorted(bids, reverse=True)]
                if type(bids) is dict
                else bids.top()
            )
        return view

    def sorted_asks(self) -> LevelPairs:
        view = self._asks_view
        if view is None:
            asks = self.asks
            view = self._asks_view = (
                [(p, asks[p]) for p in sorted(asks)] if type(asks) is dict else asks.top()
            )
        return view

    def top(self, depth: int | None = None) -> tuple[LevelPairs, LevelPairs]:
        if depth is None:
            return self.sorted_bids(), self.sorted_asks()
        bids, asks = self._bids_view, self._asks_view
        # A C side selects a short top in one pass, cheaper than sorting the whole side. A
        # negative depth is the slice's (all but the last levels): the sorted view's, as
        # when a view is cached (a C side's own top() refuses it).
        native = depth >= 0
        if bids is None and native and type(self.bids) is not dict:
            bids = self.bids.top(depth)
        else:
            bids = self.sorted_bids()[:depth]
        if asks is None and native and type(self.asks) is not dict:
            asks = self.asks.top(depth)
        else:
            asks = self.sorted_asks()[:depth]
        return bids, asks
