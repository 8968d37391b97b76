"""Aster (Binance-style) market-data feed handlers: ``<symbol>@depth@100ms`` diffs synced
over a REST snapshot, and ``<symbol>@aggTrade``. Binance's streams share the rule.

Integrity rule (the venue's documented procedure), per market:
- Buffer diff events from the moment the stream opens; fetch a REST snapshot
  (``lastUpdateId``); let ``b = lastUpdateId + 1`` on spot and ``b = lastUpdateId`` on
  futures. Drop buffered events with ``u < b``; the first kept event must have
  ``U <= b <= u`` (if it starts after ``b`` the snapshot is older than the stream: fetch
  another).
- Then every event must continue the chain: spot ``U == previous u + 1``, futures
  ``pu == previous u``. Anything else is a gap: the market resyncs (new snapshot, same
  connection) and its clients receive a fresh snapshot.
- A connection that drops, or stays silent longer than ``silence``, is reopened with
  exponential backoff and the book resyncs from scratch. Nothing is applied out of sequence.
- A market that stays quiet ``QUIET_SNAPSHOT`` seconds after its stream opened (nothing
  changes: a frozen or illiquid book) syncs on the snapshot alone, with nothing to bridge;
  its next event must still satisfy the bridge rule. Without this its book would stay
  unsynced until its next change.

``DiffBook`` is that rule for one market, apart from any socket: here each market has its own
connection; Binance (``astra.venues.binance``) feeds many of them from one shared connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book
from astra.venues.retry import SnapshotRequest, backoff
from astra.venues.silence import SilenceWatchdog
from astra.venues.wsmux import RECONNECT_ERRORS, WS_TIMEOUT

from .schemas import AggTrade, DepthUpdate

__all__ = [
    "QUIET_SNAPSHOT",
    "DiffBook",
    "DiffSync",
    "SequenceGap",
    "Snapshot",
    "SnapshotTooOld",
    "run_book_feed",
    "run_trade_feed",
]

log = logging.getLogger(__name__)
QUIET_SNAPSHOT = 2.0  # seconds without an event after the stream opened: sync on a snapshot


class SequenceGap(Exception):
    """An event does not continue the chain: updates were lost."""


class SnapshotTooOld(Exception):
    """The snapshot predates the first buffered event: it cannot be bridged."""


@dataclass(slots=True)
class Snapshot:
    last_update_id: int
    timestamp: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class DiffSync:
    """Sequencing of one market's diff stream against snapshots (pure: no I/O)."""

    def __init__(self, use_pu: bool, max_buffer: int = 10_000) -> None:
        self.use_pu = use_pu
        self.max_buffer = max_buffer
        self.reset()

    def reset(self) -> None:
        self.pending: list[DepthUpdate] = []
        self.synced = False
        self.prev_u: int | None = None
        self.bridge = 0

    def buffer(self, event: DepthUpdate) -> None:
        if len(self.pending) >= self.max_buffer:  # a snapshot that never comes: keep newest
            del self.pending[0]
        self.pending.append(event)

    def start(self, last_update_id: int) -> list[DepthUpdate]:
        """Sync on a snapshot: returns the buffered events to apply on top of it, in order."""
        bridge = last_update_id if self.use_pu else last_update_id + 1
        events = [e for e in self.pending if e.u >= bridge]
        if events and events[0].U > bridge:
            self.pending = events  # keep buffering; a newer snapshot will bridge
            raise SnapshotTooOld(f"snapshot {last_update_id} precedes first event U={events[0].U}")
        self.pending = []
        self.synced, self.prev_u, self.bridge = True, None, bridge
        return [e for e in events if self.push(e)]

    def push(self, event: DepthUpdate) -> bool:
        """True: apply it; False: already in the snapshot (or buffered, when not synced).
        Raises SequenceGap when the chain breaks."""
        if not self.synced:
            self.buffer(event)
            return False
        prev = self.prev_u
        if prev is None:
            if event.u < self.bridge:
                return False
            if event.U > self.bridge:
                raise SequenceGap(f"first event U={event.U} after snapshot bridge {self.bridge}")
        elif self.use_pu:
            if event.pu != prev:
                raise SequenceGap(f"pu={event.pu} but previous u={prev}")
        elif event.U != prev + 1:
            raise SequenceGap(f"U={event.U} but previous u={prev}")
        self.prev_u = event.u
        return True


class DiffBook:
    """One market's book over a diff stream, whatever carries the stream: buffering until a
    snapshot bridges, the chain check, gap resyncs with background snapshots (no socket).
    The owner of the connection feeds it ``on_event`` and calls ``restart`` when the stream
    starts over (a new connection or subscription); Binance multiplexes many on one socket."""

    def __init__(
        self,
        use_pu: bool,
        fetch_snapshot: Callable[[], Awaitable[Snapshot]],
        sink: BookSink,
        market: str,
    ) -> None:
        self.sink, self.market = sink, market
        self.sync = DiffSync(use_pu)
        self.snapshot = SnapshotRequest(market, fetch_snapshot, self._on_snapshot)
        self._quiet = False  # the pending snapshot is the quiet stream's (delayed) one

    def restart(self, reason: str | None = None) -> None:
        """Forget the stream so far (a snapshot in flight is dropped); with a ``reason`` the
        sink hears that its book is no longer trustworthy."""
        self.snapshot.cancel()
        self._quiet = False
        self.sync.reset()
        if reason is not None:
            self.sink.on_resync(reason)

    def stream_live(self, quiet_after: float = QUIET_SNAPSHOT) -> None:
        """The stream is live: if no event comes within ``quiet_after`` seconds, sync on a
        snapshot alone (the first event, if it comes sooner, asks for one at once)."""
        if not self.sync.synced and not self.snapshot.pending:
            self.snapshot.request(quiet_after)
            self._quiet = True

    def _on_snapshot(self, snap: Snapshot) -> None:
        self._quiet = False
        try:
            events = self.sync.start(snap.last_update_id)
        except SnapshotTooOld:
            return self.snapshot.retry_later()
        except SequenceGap as gap:  # the buffer itself has a hole
            self.sync.reset()
            self.sink.on_resync(str(gap))
            return self.snapshot.request()
        self.snapshot.attempt = 0
        book = L2Book(self.market)
        book.reset(snap.bids, snap.asks, snap.last_update_id, snap.timestamp)
        for e in events:
            bids, asks = e.to_changes()
            book.apply(bids, asks, e.u, e.E)
        self.sink.on_snapshot(book)

    def on_event(self, event: DepthUpdate) -> None:
        sync = self.sync
        if not sync.synced:
            sync.buffer(event)
            if not self.snapshot.pending or self._quiet:  # the stream's first event: now
                self.snapshot.cancel()
                self._quiet = False
                self.snapshot.request()
            return
        try:
            applied = sync.push(event)
        except SequenceGap as gap:
            sync.reset()
            sync.buffer(event)
            self.sink.on_resync(str(gap))
            self.snapshot.request()
            return
        if applied:
            bids, asks = event.to_changes()
            self.sink.on_update(event.u, event.E, bids, asks)


class _BookFeed:
    """One connection per market: the raw ``/ws/<symbol>@depth@100ms`` stream into a DiffBook."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        use_pu: bool,
        fetch_snapshot: Callable[[], Awaitable[Snapshot]],
        sink: BookSink,
        market: str,
        silence: float,
    ) -> None:
        self.session, self.url, self.silence = session, url, silence
        self.book = DiffBook(use_pu, fetch_snapshot, sink, market)

    async def run(self) -> None:
        decode = msgspec.json.Decoder(DepthUpdate).decode
        book = self.book
        attempt = 0
        while True:
            try:
                async with self.session.ws_connect(self.url, timeout=WS_TIMEOUT) as ws:
                    book.restart()
                    book.stream_live()
                    receive, text = ws.receive, aiohttp.WSMsgType.TEXT
                    # One watchdog per connection, not a timeout per message (silence.py).
                    with SilenceWatchdog(self.silence) as watch:
                        while True:
                            msg = await receive()
                            if msg.type is not text:
                                raise ConnectionError(f"upstream sent {msg.type.name}")
                            watch.heard += 1
                            attempt = 0
                            book.on_event(decode(msg.data))
            except RECONNECT_ERRORS as exc:
                reason = "silent for too long" if isinstance(exc, TimeoutError) else repr(exc)
                book.restart(f"reconnecting: {reason}")
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            finally:
                book.snapshot.cancel()


async def run_book_feed(
    session: aiohttp.ClientSession,
    url: str,
    *,
    use_pu: bool,
    fetch_snapshot: Callable[[], Awaitable[Snapshot]],
    sink: BookSink,
    market: str,
    silence: float = 60.0,
) -> None:
    """Keep ``sink`` supplied with ``market``'s synced book from the diff stream at ``url``."""
    await _BookFeed(session, url, use_pu, fetch_snapshot, sink, market, silence).run()


async def run_trade_feed(session: aiohttp.ClientSession, url: str, sink: TradeSink) -> None:
    """Forward ``@aggTrade`` events at ``url`` to ``sink``, reconnecting with backoff; the
    sink hears when the connection opens (every trade from then on is delivered) and when it
    closes or cannot be opened (``TradeSink.on_connection``: a venue down from the start is
    reported too, on every failed attempt)."""
    decode = msgspec.json.Decoder(AggTrade).decode
    attempt = 0
    while True:
        up, reason = False, ""
        try:
            async with session.ws_connect(url, heartbeat=30.0, timeout=WS_TIMEOUT) as ws:
                up = True
                sink.on_connection(True)
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    attempt = 0
                    sink.on_trades([decode(msg.data).to_trade()])
            reason = "closed by the venue"
        except RECONNECT_ERRORS as exc:
            reason = repr(exc)
            log.warning("trade feed %s: %r; reconnecting", url, exc)
        finally:
            if up or reason:  # (neither: cancelled before connecting)
                sink.on_connection(False, f"reconnecting: {reason}" if reason else "stopped")
        await asyncio.sleep(backoff(attempt))
        attempt += 1
