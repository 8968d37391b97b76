"""A book rebuilt from recorded messages, as a live WebSocket client rebuilds it.

Integrity rule: the book after messages m1..mn is exactly what a live client holds after
receiving m1..mn: a ``snapshot`` replaces it whole, an ``update`` sets each listed level (a
quantity of 0 deletes it), a ``resync`` empties it until the next snapshot. Levels keep the
message's own shape (single-venue ``{price, quantity}``, SMART ``{price, quantity, venues}``),
so a rebuilt snapshot encodes in the live schema of that market.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from astra.core import RecordUnreadable
from astra.tape import BOOK, iter_batches, partition_files

__all__ = [
    "FIRST_WINDOW_US",
    "RecordedBook",
    "RecordedLevel",
    "RecordedMessage",
    "decode_message",
    "last_row_time",
]


class RecordedLevel(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    price: float
    quantity: float
    venues: dict[str, float] | None = None  # SMART levels only


class RecordedMessage(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Any recorded ORDERBOOK message: snapshot/update (``BookUpdate`` or
    ``ConsolidatedUpdate``) or resync (``BookResync``)."""

    type: str
    market: str = ""
    update_id: int | None = None
    bids: list[RecordedLevel] = []
    asks: list[RecordedLevel] = []
    timestamp: int | None = None
    # SMART snapshots: the members' states, as sent (empty when absent: msgspec decodes no
    # ``Raw | None``)
    members: msgspec.Raw = msgspec.Raw()
    reason: str | None = None
    state: str | None = None
    since: int | None = None


class _Snapshot(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Field order of ``BookUpdate``/``ConsolidatedUpdate``: the same bytes a live client got."""

    type: str
    market: str
    update_id: int
    bids: list[RecordedLevel]
    asks: list[RecordedLevel]
    timestamp: int | None = None
    members: msgspec.Raw | None = None


_decode = msgspec.json.Decoder(RecordedMessage).decode
_encode = msgspec.json.Encoder().encode


def decode_message(frame: bytes) -> RecordedMessage:
    """A recorded book frame; ``RecordUnreadable`` for one that is not a book message (the
    recorder writes only frames it could decode: a damaged or hand-made file)."""
    try:
        return _decode(frame)
    except msgspec.DecodeError as exc:  # (ValidationError included)
        raise RecordUnreadable(f"a recorded order book frame is not a book message, the "
                               f"record is damaged: {str(exc)[:80]}") from None


class RecordedBook:
    """One market's book from its recorded messages; ``synced`` once a snapshot was applied
    and no resync came after it."""

    def __init__(self, market: str = "") -> None:
        self.market = market
        self.bids: dict[float, RecordedLevel] = {}
        self.asks: dict[float, RecordedLevel] = {}
        self.update_id: int | None = None
        self.timestamp: int | None = None
        self.members: msgspec.Raw | None = None
        self.synced = False
        self.resync: RecordedMessage | None = None  # the resync the book waits out

    def apply(self, msg: RecordedMessage) -> None:
        if msg.type == "snapshot":
            self.bids = {lv.price: lv for lv in msg.bids}
            self.asks = {lv.price: lv for lv in msg.asks}
            self.members = msg.members or None
            self.synced, self.resync = True, None
        elif msg.type == "update":
            if not self.synced:
                return  # a live client never gets one before its snapshot
            for side, levels in ((self.bids, msg.bids), (self.asks, msg.asks)):
                for lv in levels:
                    if lv.quantity == 0:
                        side.pop(lv.price, None)
                    else:
                        side[lv.price] = lv
        elif msg.type == "resync":
            self.bids, self.asks = {}, {}
            self.synced, self.resync = False, msg
            return
        else:
            return
        self.market = msg.market or self.market
        self.update_id, self.timestamp = msg.update_id, msg.timestamp

    def apply_frames(self, frames: Iterable[bytes]) -> RecordedBook:
        for frame in frames:
            self.apply(_decode(frame))
        return self

    def top(self, depth: int | None = None) -> tuple[list[RecordedLevel], list[RecordedLevel]]:
        """Bids best (highest) first, asks best (lowest) first, at most ``depth`` each."""
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [self.asks[p] for p in sorted(self.asks)[:depth]]
        return bids, asks

    def snapshot_frame(self, depth: int | None = None) -> bytes:
        """The book as a live ``snapshot`` message (SMART: with the last snapshot's members)."""
        bids, asks = self.top(depth)
        return _encode(_Snapshot(type="snapshot", market=self.market,
                                 update_id=self.update_id or 0, bids=bids, asks=asks,
                                 timestamp=self.timestamp, members=self.members))


FIRST_WINDOW_US = 120_000_000  # snapshots come every minute or so: look back 2 min first


def last_row_time(root: Path, market: str, types: tuple[str, ...], at_us: int) -> int | None:
    """The local time of the last book row of one of ``types`` at or before ``at_us`` (None:
    there is none): windows back from ``at_us``, each twice the last, down to the record's
    first row; only ``local_ts`` and ``type`` are read, batch by batch."""
    files = partition_files(root, market, BOOK, None, at_us)
    if not files:
        return None
    first, wanted = files[0].first, pa.array(types)
    hi, width = at_us, FIRST_WINDOW_US
    while hi >= first:
        lo = max(first, hi - width + 1)
        found = None
        for batch in iter_batches(root, market, BOOK, lo, hi, columns=["type"]):
            hits = pc.filter(batch.column("local_ts"),
                             pc.is_in(batch.column("type"), value_set=wanted))
            if len(hits):
                found = hits[-1].as_py()
        if found is not None:
            return found
        hi, width = lo - 1, width * 2
    return None
