"""KuCoin market-data feed handlers: spot ``/market/level2:<symbol>`` and futures
``/contractMarket/level2:<symbol>`` increments over a REST snapshot, and trades
(``/market/match``, ``/contractMarket/execution``), each market a consumer of connections
shared by many topics (``connection.py``).

Integrity rule (KuCoin's documented calibration procedure), per market:
- Buffer level2 messages from the moment the subscription is live; fetch a REST snapshot
  (its ``sequence`` S). Drop buffered messages with ``sequenceEnd <= S``; the first kept one
  must have ``sequenceStart <= S + 1`` (if it starts later the snapshot is older than the
  stream: fetch another).
- Then each message must continue the book: ``sequenceStart <= seq + 1`` where ``seq`` is the
  book's sequence (the stream is contiguous, ``sequenceStart == previous sequenceEnd + 1``;
  a later start is a gap). A message with ``sequenceEnd <= seq`` is a duplicate: dropped.
- Within a message a change ``[price, size, sequence]`` applies only if its own sequence is
  greater than ``seq`` (so a message straddling the snapshot applies only its newer part);
  price ``0`` only advances the sequence; size ``0`` deletes the level. Then
  ``seq = sequenceEnd``, which is the ``update_id`` clients see. Futures carry one change per
  ``sequence``: the same rule with ``sequenceStart == sequenceEnd == sequence``.
- A gap resyncs that market only: its messages are buffered again and a new snapshot is
  fetched for it while the connection and every other market on it go on; its clients then
  receive a fresh snapshot. A dropped, silent, erroring or expiring connection is reopened
  with a new token (backoff after failures), every topic on it is subscribed again and every
  book on it resyncs from scratch; so does a book whose subscription is refused.
- Multiplexing: one connection per bullet token carries up to 300 topics (spot; 100 on
  futures), subscribed and unsubscribed live, up to 100 symbols comma-joined per request,
  paced under KuCoin's 100 client messages per 10 s, each request checked against its ack.
  A market whose feed is cancelled is unsubscribed.
- Partial snapshots: the public spot snapshot holds the top ``depth`` levels only. On a side
  it cut short, the book is exact only from the best price down to its last level, so
  changes beyond that level are not applied (they would build a book with holes), and when
  fewer than ``min_levels`` levels remain inside it the market resyncs to re-anchor. Full
  snapshots (futures; spot with an API key) have no such bound.
Nothing is applied out of sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book
from astra.venues.retry import SnapshotRequest

__all__ = [
    "DepthRange",
    "Level2Book",
    "SequenceGap",
    "SequenceSync",
    "Snapshot",
    "SnapshotTooOld",
    "TradeConsumer",
]

log = logging.getLogger(__name__)
Changes = list[tuple[float, float]]
_INF = float("inf")


class Level2Event(Protocol):
    """``schemas.Level2`` (spot) or ``schemas.ContractLevel2`` (futures)."""

    timestamp: int

    def bounds(self) -> tuple[int, int]: ...

    def to_changes(self, after: int) -> tuple[Changes, Changes]: ...


class SequenceGap(Exception):
    """A message does not continue the book: updates were lost."""


class SnapshotTooOld(Exception):
    """The snapshot predates the first buffered message: it cannot be bridged."""


@dataclass(slots=True)
class Snapshot:
    sequence: int
    timestamp: int
    bids: Changes
    asks: Changes
    depth: int | None = None  # levels per side requested from a partial endpoint; None: full


class SequenceSync:
    """Sequencing of one market's level2 stream against snapshots (pure: no I/O)."""

    def __init__(self, max_buffer: int = 10_000) -> None:
        self.max_buffer = max_buffer
        self.reset()

    def reset(self) -> None:
        self.pending: list[Level2Event] = []
        self.synced = False
        self.seq = 0

    def buffer(self, event: Level2Event) -> None:
        if len(self.pending) >= self.max_buffer:  # a snapshot that never comes: keep newest
            del self.pending[0]
        self.pending.append(event)

    def start(self, sequence: int) -> list[tuple[Level2Event, int]]:
        """Sync on a snapshot at ``sequence``: the buffered messages to apply on top of it,
        each with the sequence its changes must exceed."""
        events = [e for e in self.pending if e.bounds()[1] > sequence]
        if events and events[0].bounds()[0] > sequence + 1:
            self.pending = events  # keep buffering; a newer snapshot will bridge
            raise SnapshotTooOld(
                f"snapshot {sequence} precedes first message start {events[0].bounds()[0]}"
            )
        self.pending, self.synced, self.seq = [], True, sequence
        ready = []
        for e in events:
            after = self.push(e)
            if after is not None:
                ready.append((e, after))
        return ready

    def push(self, event: Level2Event) -> int | None:
        """The book sequence before ``event`` (apply its changes newer than that), or None:
        already in the book (or buffered, when not synced). Raises SequenceGap."""
        if not self.synced:
            self.buffer(event)
            return None
        start, end = event.bounds()
        seq = self.seq
        if end <= seq:
            return None
        if start > seq + 1:
            raise SequenceGap(f"message starts at {start} but the book is at {seq}")
        self.seq = end
        return seq


class DepthRange:
    """The prices a partial (top-``depth``) snapshot vouches for, and how many levels of the
    book are still inside them. A side the snapshot did not cut short is unbounded."""

    __slots__ = ("ask_cap", "asks", "bid_floor", "bids", "min_levels")

    def __init__(self, bids: Changes, asks: Changes, depth: int, min_levels: int) -> None:
        self.min_levels = min_levels
        self.bid_floor = min(p for p, _ in bids) if len(bids) >= depth else None
        self.ask_cap = max(p for p, _ in asks) if len(asks) >= depth else None
        self.bids = {p for p, q in bids if q > 0} if self.bid_floor is not None else None
        self.asks = {p for p, q in asks if q > 0} if self.ask_cap is not None else None

    @property
    def bounded(self) -> bool:
        return self.bids is not None or self.asks is not None

    def admit(self, bids: Changes, asks: Changes) -> tuple[Changes, Changes]:
        """The changes inside the range (tracking which levels exist there)."""
        if bids and self.bids is not None:
            bids = _inside(bids, self.bids, self.bid_floor, _INF)
        if asks and self.asks is not None:
            asks = _inside(asks, self.asks, -_INF, self.ask_cap)
        return bids, asks

    @property
    def exhausted(self) -> bool:
        low = self.min_levels
        return (self.bids is not None and len(self.bids) < low) or (
            self.asks is not None and len(self.asks) < low
        )


def _inside(changes: Changes, levels: set[float], low: float, high: float) -> Changes:
    kept = []
    for change in changes:
        price, qty = change
        if low <= price <= high:
            kept.append(change)
            if qty > 0:
                levels.add(price)
            else:
                levels.discard(price)
    return kept


class Level2Book:
    """One market's ``level2`` topic on a shared connection, into its sink: buffering until a
    snapshot bridges, the sequence rule, partial-snapshot range, gap resyncs (no socket)."""

    def __init__(
        self,
        decode: Callable[[Any], Level2Event],
        fetch_snapshot: Callable[[], Awaitable[Snapshot]],
        sink: BookSink,
        market: str,
        min_levels: int = 20,
    ) -> None:
        self.decode, self.sink, self.market, self.min_levels = decode, sink, market, min_levels
        self.sync = SequenceSync()
        self.range: DepthRange | None = None
        self.snapshot = SnapshotRequest(market, fetch_snapshot, self._on_snapshot)

    # -- the connection's Consumer interface ------------------------------------------------

    def on_data(self, data: Any) -> None:
        self.on_event(self.decode(data))

    def on_reset(self, reason: str) -> None:
        """The topic starts over (reconnect, refused subscription): resync from scratch."""
        self.snapshot.cancel()
        self.sync.reset()
        self.range = None
        self.sink.on_resync(reason)

    def on_live(self) -> None:
        pass  # the book syncs on its first message's snapshot

    def close(self) -> None:
        self.snapshot.cancel()

    # -- sequencing ---------------------------------------------------------------------------

    def _on_snapshot(self, snap: Snapshot) -> None:
        try:
            ready = self.sync.start(snap.sequence)
        except SnapshotTooOld:
            return self.snapshot.retry_later()
        except SequenceGap as gap:  # the buffer itself has a hole
            return self._resync(str(gap))
        self.snapshot.attempt = 0
        depth = snap.depth
        rng = DepthRange(snap.bids, snap.asks, depth, self.min_levels) if depth else None
        self.range = rng if rng is not None and rng.bounded else None
        book = L2Book(self.market)
        book.reset(snap.bids, snap.asks, snap.sequence, snap.timestamp)
        for event, after in ready:
            bids, asks = event.to_changes(after)
            if self.range is not None:
                bids, asks = self.range.admit(bids, asks)
            if bids or asks:
                book.apply(bids, asks, event.bounds()[1], event.timestamp)
        self.sink.on_snapshot(book)

    def _resync(self, reason: str, keep: Level2Event | None = None) -> None:
        """This market only: buffer from ``keep`` on and fetch a new snapshot."""
        self.sync.reset()
        self.range = None
        if keep is not None:
            self.sync.buffer(keep)
        self.sink.on_resync(reason)
        self.snapshot.request()

    def on_event(self, event: Level2Event) -> None:
        sync = self.sync
        if not sync.synced:
            sync.buffer(event)
            if not self.snapshot.pending:  # the first message since the topic (re)started
                self.snapshot.request()
            return
        try:
            after = sync.push(event)
        except SequenceGap as gap:
            return self._resync(str(gap), keep=event)
        if after is None:
            return
        bids, asks = event.to_changes(after)
        rng = self.range
        if rng is not None:
            bids, asks = rng.admit(bids, asks)
        if bids or asks:
            self.sink.on_update(event.bounds()[1], event.timestamp, bids, asks)
        if rng is not None and rng.exhausted:
            self._resync(f"fewer than {rng.min_levels} levels left inside the snapshot's range")


class TradeConsumer:
    """One market's trade topic into ``sink``; trades carry no state: the sink hears that the
    topic is live once KuCoin acks the subscribe, and that it was interrupted on a reset."""

    __slots__ = ("decode", "name", "sink")

    def __init__(self, decode: Callable[[Any], Any], sink: TradeSink, name: str) -> None:
        self.decode, self.sink, self.name = decode, sink, name

    def on_data(self, data: Any) -> None:
        self.sink.on_trades([self.decode(data).to_trade()])

    def on_reset(self, reason: str) -> None:
        log.info("%s trades interrupted (%s)", self.name, reason)
        self.sink.on_connection(False, reason)

    def on_live(self) -> None:
        self.sink.on_connection(True)

    def close(self) -> None:
        pass
