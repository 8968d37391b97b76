"""A local L2 book kept from ``WS /ws?dataType=ORDERBOOK`` messages, and its integrity rule.

Invariants:
- A book is usable (``synced``) only from a ``snapshot`` on; a ``snapshot`` replaces it
  whole (its ``updateId`` may be lower than the last one's: the venue restarted).
- ``updateId`` continuity: on a ``SMART-`` market the gateway numbers messages +1 each
  (never reused), so an update must be exactly the previous id + 1; on a single venue the id
  is the venue's own sequence (it may advance by more than one), so an update must name the
  book's last id as its ``prevUpdateId`` (from a gateway that sends none: increase). An
  update that breaks the rule raises ``BookGap`` and leaves the book as it was: the caller
  resyncs (the SDK reconnects, which brings a fresh snapshot).
- ``{"type":"resync"}`` empties the book and marks it ``resyncing``/``disconnected``;
  updates are ignored until the next snapshot.
- Quantity 0 deletes a level. ``bids`` are descending, ``asks`` ascending, cut to ``depth``
  when one is set. Each side's prices are kept in order as levels come and go (bisect), so
  ``best_bid``/``best_ask``/``spread`` cost O(1) and the full views are built only when read.
"""

from __future__ import annotations

from bisect import bisect_left, insort

import msgspec

from astra.core import MemberState

__all__ = ["SMART_PREFIX", "BookGap", "LocalBook"]

SMART_PREFIX = "SMART-"


class BookGap(Exception):
    """An update whose ``updateId`` does not continue the book: the book must be rebuilt."""

    def __init__(self, market: str, last: int | None, got: int) -> None:
        rule = "previous + 1" if market.startswith(SMART_PREFIX) else "above the previous"
        super().__init__(f"{market}: updateId {got} after {last} (expected {rule})")
        self.market, self.last, self.got = market, last, got


class _Level(msgspec.Struct, frozen=True):
    price: float
    quantity: float
    venues: dict[str, float] | None = None  # SMART books only


class _BookMessage(msgspec.Struct, kw_only=True, rename="camel"):
    """Any ORDERBOOK message (venue or SMART book, snapshot, update or resync)."""

    type: str
    market: str | None = None
    update_id: int | None = None
    prev_update_id: int | None = None
    bids: list[_Level] = []
    asks: list[_Level] = []
    timestamp: int | None = None
    members: list[MemberState] | None = None
    reason: str | None = None
    state: str | None = None
    since: int | None = None


_decode = msgspec.json.Decoder(_BookMessage).decode


class LocalBook:
    """The client's copy of one market's book. ``bids``/``asks``: ``[(price, quantity)]``,
    best first; on a SMART book ``venues(side, price)`` (or ``bid_venues``/``ask_venues``)
    gives each level's split by venue, and ``members`` the member books' states."""

    def __init__(self, market: str, depth: int | None = None) -> None:
        self.market = market
        self.depth = depth
        self.smart = market.startswith(SMART_PREFIX)
        self.update_id: int | None = None
        self.timestamp: int | None = None
        self.state = "connecting"  # synced | resyncing | disconnected | connecting
        self.reason: str | None = None
        self.members: list[MemberState] | None = None
        self.snapshots = 0  # snapshots applied (the first one, then one per resync)
        self.gaps = 0  # client-side continuity breaks seen
        self.bid_venues: dict[float, dict[str, float]] = {}
        self.ask_venues: dict[float, dict[str, float]] = {}
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        # Each side's prices kept ascending (bisect: a level's insert or delete does not sort
        # the book again); the best bid is the last, the best ask the first.
        self._bid_keys: list[float] = []
        self._ask_keys: list[float] = []
        self._sorted: tuple[list, list] | None = None

    # --- reading ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.state == "synced"

    def _views(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        if self._sorted is None:  # built from the kept order, once per write that is read
            keys, book = self._bid_keys, self._bids
            n = len(keys) if self.depth is None else min(self.depth, len(keys))
            bids = [(p, book[p]) for p in reversed(keys[len(keys) - n:])] if n else []
            keys, book = self._ask_keys, self._asks
            asks = [(p, book[p]) for p in (keys if self.depth is None else keys[: self.depth])]
            self._sorted = (bids, asks)
        return self._sorted

    @property
    def bids(self) -> list[tuple[float, float]]:
        return self._views()[0]

    @property
    def asks(self) -> list[tuple[float, float]]:
        return self._views()[1]

    @property
    def best_bid(self) -> tuple[float, float] | None:
        keys = self._bid_keys
        return (keys[-1], self._bids[keys[-1]]) if keys else None

    @property
    def best_ask(self) -> tuple[float, float] | None:
        keys = self._ask_keys
        return (keys[0], self._asks[keys[0]]) if keys else None

    @property
    def spread(self) -> float | None:
        if not (self._bid_keys and self._ask_keys):
            return None
        return self._ask_keys[0] - self._bid_keys[-1]

    def venues(self, side: str, price: float) -> dict[str, float]:
        """A SMART level's quantity by venue (``side``: ``bids`` or ``asks``); {} elsewhere."""
        table = self.bid_venues if side in ("bids", "bid", "BUY") else self.ask_venues
        return table.get(price, {})

    def __repr__(self) -> str:
        return (f"LocalBook({self.market!r}, state={self.state!r}, updateId={self.update_id}, "
                f"bid={self.best_bid}, ask={self.best_ask})")

    # --- writing ---------------------------------------------------------------------------

    def apply(self, raw: bytes | str) -> bool:
        """Apply one WebSocket message; True when it changed a synced book (a snapshot or an
        update), False for a resync message or an update ignored while not synced. Raises
        ``BookGap`` (book untouched) when an update does not continue the last id."""
        msg = _decode(raw)
        if msg.type == "resync":
            self.reset(msg.state or "resyncing", msg.reason)
            return False
        if msg.type == "snapshot":
            self._clear()
            self.members = msg.members
            self.snapshots += 1
            self._write(msg)
            self.state, self.reason = "synced", None
            return True
        if msg.type != "update" or not self.synced:
            return False  # nothing to apply to: a snapshot comes first
        if not self._continues(msg.update_id, msg.prev_update_id):
            self.gaps += 1
            raise BookGap(self.market, self.update_id, msg.update_id)
        self._write(msg)
        return True

    def reset(self, state: str, reason: str | None = None) -> None:
        """Forget the levels: the book waits for a fresh snapshot (``state`` says why)."""
        self._clear()
        self.state, self.reason = state, reason

    def _continues(self, update_id: int | None, prev_update_id: int | None) -> bool:
        if update_id is None or self.update_id is None:
            return False
        if self.smart:
            return update_id == self.update_id + 1
        if prev_update_id is not None:  # the gateway's chain: exact, whatever the venue's ids
            return prev_update_id == self.update_id
        return update_id > self.update_id

    def _clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()
        self.bid_venues.clear()
        self.ask_venues.clear()
        self._sorted = None

    def _write(self, msg: _BookMessage) -> None:
        for levels, book, keys, venues in (
                (msg.bids, self._bids, self._bid_keys, self.bid_venues),
                (msg.asks, self._asks, self._ask_keys, self.ask_venues)):
            for lv in levels:
                price = lv.price
                if lv.quantity == 0:
                    if book.pop(price, None) is not None:
                        del keys[bisect_left(keys, price)]
                    venues.pop(price, None)
                else:
                    if price not in book:
                        insort(keys, price)
                    book[price] = lv.quantity
                    if lv.venues is not None:
                        venues[price] = lv.venues
        self._sorted = None
        self.update_id = msg.update_id
        if msg.timestamp is not None:
            self.timestamp = msg.timestamp
