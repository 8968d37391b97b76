"""OKX market-data feeds: the ``books`` channel (400 levels, snapshot + incremental updates
every 100 ms; ``books-l2-tbt``/``books50-l2-tbt`` share the rule but need a login on most
accounts) and ``trades``.

Integrity rule, per market (OKX v5 docs, "Order book channel"):
- A subscribe is answered with a full ``snapshot`` (``prevSeqId`` -1), then ``update``s with
  absolute sizes ("0" deletes). Each update's ``prevSeqId`` must equal the previous message's
  ``seqId``; anything else is a gap. ``seqId == prevSeqId`` is OKX's "no change" message (no
  levels: nothing is emitted). A ``seqId`` below its ``prevSeqId`` is OKX's sequence reset
  (maintenance): continuity holds, but the book is resynced so that ``update_id`` never runs
  backwards within one snapshot's life.
- After applying a message, the CRC32 of the top 25 bids and asks, interleaved
  ``bid1:ask1:bid2:ask2:...`` as ``price:size`` strings exactly as sent (a side with fewer
  levels simply ends), read as a signed 32-bit int, must equal ``checksum``. 0 means "not
  sent" (OKX's deprecated-field value) and is not checked; messages without ``seqId`` (old
  recordings) are checked by checksum only.
- A gap or a mismatch resyncs that market only: ``sink.on_resync`` at once, then an
  unsubscribe + subscribe on the same connection (OKX sends a fresh snapshot) and a new
  ``sink.on_snapshot``. Updates that arrive in between are dropped, never applied. A snapshot
  that does not come within ``snapshot_timeout`` is asked for again; repeated failures back off.
- A lost (or refused) connection resyncs every book on it, synced yet or not (``stream.py``
  reconnects and resubscribes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import count

from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book
from astra.venues.retry import backoff

from .book import Book, BookOutOfSync, ChecksumMismatch, book_checksum
from .schemas import BookData, Push, TradeData
from .stream import StreamPool

__all__ = [
    "BookFeed",
    "BookOutOfSync",
    "BookSync",
    "ChecksumMismatch",
    "SequenceGap",
    "book_checksum",
    "run_book_feed",
    "run_trade_feed",
]

log = logging.getLogger(__name__)
Changes = list[tuple[float, float]]


def _has_levels(levels: bytes) -> bool:
    """Whether a levels array (JSON text) is not ``[]`` (read only on OKX's rare no-change
    message; a malformed one counts as levels: a resync either way)."""
    return b"".join(bytes(levels).split()) != b"[]"


def _backoff(failures: int) -> float:
    """A book's wait before resubscribing: none after a first failure, then doubling."""
    return 0.0 if failures <= 0 else backoff(failures - 1)


class SequenceGap(BookOutOfSync):  # BookOutOfSync and ChecksumMismatch: book.py's
    """``prevSeqId`` does not name the previous message: messages were lost."""


class BookSync:
    """One market's book kept exactly as OKX sent it, for the integrity rule (pure: no I/O)."""

    def __init__(self, market: str, verify_checksum: bool = True) -> None:
        self.market, self.verify_checksum = market, verify_checksum
        self._ids = count(1)  # update ids when OKX sends no seqId (old recordings)
        self._verified = 0  # checksums compared by the books before the current one
        self.book = Book()  # book.py: the C core where it is built, else the Python one
        self.reset()

    @property
    def verified(self) -> int:
        """Checksums compared (and equal) over this object's life."""
        return self._verified + self.book.verified

    def reset(self) -> None:
        self.synced = False
        self.seq: int | None = None
        self._verified += self.book.verified
        self.book = Book()

    def checksum(self) -> int:
        return self.book.checksum()

    def _verify(self, data: BookData) -> None:
        if self.verify_checksum and data.checksum != 0:
            local = self.book.checksum()
            if local != data.checksum:
                raise ChecksumMismatch(f"checksum {data.checksum} but rebuilt book gives {local}")
            self._verified += 1

    def _update_id(self, data: BookData) -> int:
        seq = data.seqId
        return seq if isinstance(seq, int) else next(self._ids)

    def snapshot(self, data: BookData) -> L2Book:
        """Start over from a snapshot; returns the synced book for the sink."""
        self.reset()
        bids, asks = self.book.load(data.bids, data.asks)
        self._verify(data)
        seq = data.seqId
        self.seq = seq if isinstance(seq, int) else None
        self.synced = True
        book = L2Book(self.market)
        book.reset(bids, asks, self._update_id(data), int(data.ts))
        return book

    def update(self, data: BookData) -> tuple[int, Changes, Changes] | None:
        """Apply an update: ``(update_id, bid changes, ask changes)``, or None when it changes
        nothing. Raises BookOutOfSync (the caller resyncs; this state is then void)."""
        seq = data.seqId
        last = self.seq
        if last is not None:
            prev = data.prevSeqId
            if prev != last or not isinstance(seq, int):
                raise SequenceGap(f"prevSeqId={prev} but previous seqId={last}")
            if seq < prev:
                raise SequenceGap(f"sequence reset by the venue: seqId={seq} < prevSeqId={prev}")
            if seq == prev and (_has_levels(data.bids) or _has_levels(data.asks)):
                raise SequenceGap(f"seqId {seq} did not advance over a change")
            self.seq = seq
        # Both sides and the checksum (_verify's rule, counted by the book) in one call.
        bids, asks = self.book.update(data, self.verify_checksum)
        if not bids and not asks:
            return None
        return seq if isinstance(seq, int) else next(self._ids), bids, asks


class BookFeed:
    """One market's book feed: a stream consumer that keeps ``sink`` supplied."""

    def __init__(
        self,
        pool: StreamPool,
        channel: str,
        inst_id: str,
        market: str,
        sink: BookSink,
        *,
        verify_checksum: bool = True,
        snapshot_timeout: float = 15.0,
    ) -> None:
        self.pool, self.key, self.sink = pool, (channel, inst_id), sink
        self.sync = BookSync(market, verify_checksum)
        self.snapshot_timeout = snapshot_timeout
        self._wake = asyncio.Event()  # the book was lost, or the connection was
        self._lost = False
        self._synced_at = 0.0

    def on_push(self, push: Push[BookData]) -> None:
        sync = self.sync
        try:
            if push.action == "snapshot":
                for data in push.data:
                    self.sink.on_snapshot(sync.snapshot(data))
                    self._synced_at = time.monotonic()
            else:
                for data in push.data:
                    if sync.synced:  # else: of a subscription being replaced; a snapshot follows
                        changes = sync.update(data)
                        if changes is not None:
                            update_id, bids, asks = changes
                            self.sink.on_update(update_id, int(data.ts), bids, asks)
        except (BookOutOfSync, ValueError, IndexError) as exc:  # also: garbage in a level
            sync.reset()
            self.sink.on_resync(f"{self.key[1]}: {exc}")
            self._lost = True
            self._wake.set()

    def on_reset(self, reason: str) -> None:
        # Synced or not: a book whose venue is down from the start must hear it too, or its
        # readers wait for a snapshot that cannot come.
        self.sink.on_resync(reason)
        self.sync.reset()
        self._lost = False  # the new connection subscribes afresh
        self._wake.set()  # restart the snapshot watchdog

    def on_live(self) -> None:
        pass  # the subscription's snapshot push is what syncs the book

    async def run(self) -> None:
        stream = self.pool.add(self.key, self)
        failures = 0
        try:
            while True:
                # Unsynced: a snapshot is due within snapshot_timeout, else ask again.
                deadline = None if self.sync.synced else self.snapshot_timeout
                try:
                    async with asyncio.timeout(deadline):
                        await self._wake.wait()
                except TimeoutError:
                    if not self.sync.synced:
                        log.warning("%s: no snapshot within %gs", self.key, self.snapshot_timeout)
                        stream.resubscribe(self.key)
                    continue
                self._wake.clear()
                if not self._lost:
                    continue
                # A book that breaks right after its snapshot breaks again: back off (OKX
                # also limits subscribe requests per connection).
                quick = time.monotonic() - self._synced_at < 10.0
                failures = failures + 1 if quick else 0
                await asyncio.sleep(_backoff(failures))
                self._lost = False
                stream.resubscribe(self.key)
        finally:
            self.pool.remove(stream, self.key, self)


class TradeFeed:
    """One market's trades: every push element becomes a Trade (taker side). The sink hears
    that the subscription is live once OKX confirms it, and that it was lost on a reset."""

    def __init__(self, sink: TradeSink) -> None:
        self.sink = sink

    def on_push(self, push: Push[TradeData]) -> None:
        if push.data:
            self.sink.on_trades([t.to_trade() for t in push.data])

    def on_reset(self, reason: str) -> None:
        self.sink.on_connection(False, reason)

    def on_live(self) -> None:
        self.sink.on_connection(True)


async def run_book_feed(
    pool: StreamPool, channel: str, inst_id: str, market: str, sink: BookSink, **options: object
) -> None:
    """Keep ``sink`` supplied with ``inst_id``'s synced book until cancelled."""
    await BookFeed(pool, channel, inst_id, market, sink, **options).run()  # type: ignore[arg-type]


async def run_trade_feed(pool: StreamPool, channel: str, inst_id: str, sink: TradeSink) -> None:
    """Forward ``inst_id``'s trades to ``sink`` until cancelled."""
    feed = TradeFeed(sink)
    key = (channel, inst_id)
    stream = pool.add(key, feed)
    try:
        await asyncio.Event().wait()  # the stream calls the feed; this task only holds it
    finally:
        pool.remove(stream, key, feed)
