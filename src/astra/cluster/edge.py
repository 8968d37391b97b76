"""The edge node's mirror: books and trades off NATS JetStream instead of venue connections.

``MirrorSource`` is a ``marketdata.channels.FeedSource``: an edge's ``MarketDataEngine`` runs
its channels on it, so REST, WebSocket, BBO and SMART books work on mirrored books exactly as
on a venue's own. Per market (and only for markets the edge's clients use — a channel runs
only while it has users) it asks a feed node for the market (``Want``, renewed every
``lease_seconds / 3``), reads the last snapshot from the stream and follows the subject from
the next stream sequence (an ephemeral push consumer, no acks: a lost message is a ``seq``
gap, which the integrity rule catches).

Integrity rule (``wire``'s, the edge's half): a delta is applied only when its
``(epoch, seq)`` is exactly the book's ``(epoch, seq + 1)``; one repeat (same epoch, an older
seq) is dropped; anything else — a gap, another epoch, a second repeat in a row (the book's
seq was pushed ahead of the feed's), a heartbeat ahead of or behind the book, an undecodable
message (``wire.Levels``: NaN, inf, a negative quantity) — resyncs the book
(``on_resync("gap: ...")``, clients get the resync message) and asks the feed for a
snapshot; deltas are dropped until a snapshot re-bases the book. A snapshot in sequence on
a live book (the feed's periodic checkpoint) is a check, not a re-base: the mirrored book
must equal it level for level, else the drift is counted, clients get a resync
(``checksum: ...``) and the book is re-based on it; any other snapshot (but the one the book
stands on) re-bases after a resync message. A ``BookResync`` from the feed is passed on as
is. Trades: the same per-market ``seq``; a gap is reported to the trade channel as a lost
connection, then a new one (its memory is re-seeded).

Invariants:
- Never silently old: no message of any kind on a followed market for ``silence_seconds``
  marks it (book: ``on_resync("reconnecting: feed silent ...")``, REST 503 at once; trades:
  ``on_connection(False)``); the subscription is then rebuilt from the stream (which copes
  with a NATS reconnect, a restarted server whose memory stream is new, a new feed), and only
  a snapshot re-bases the book. The snapshot read at the start is used only when the feed
  that answered the want published it (its epoch): a dead feed's last book is not served.
- Never far behind: a message that reaches the edge more than ``lag_seconds`` later than the
  session's quickest one did (its transit plus the two clocks' skew) means this edge cannot
  keep up (its CPU, its link): the backlog is dropped and the session starts again from the
  feed's latest snapshot, the book ``disconnected`` meanwhile (``lagged`` counts it).
- A want nobody answers, or a feed that says no (``WantReply.error``), marks the market down
  (``reconnecting: ...``, a 503 naming why) and is tried again every ``retry`` seconds.
- The hot path (a delta) is one decode, a few compares and ``sink.on_update``: no task, no
  await, no allocation of ours. One sweep task checks every followed market's silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from astra.venues.base import RECONNECTING, BookSink, TradeSink, Venue, VenueMarket
from astra.venues.book import L2Book

from .wire import (
    STREAM,
    WANT_SUBJECT,
    BookDelta,
    BookResync,
    BookSnapshot,
    ClusterConfig,
    Heartbeat,
    TradeBatch,
    Want,
    WantReply,
    book_subject,
    decode_book,
    decode_trade,
    encode,
    trade_subject,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ["MirrorSource"]

log = logging.getLogger(__name__)
_reply_decoder = msgspec.msgpack.Decoder(WantReply)


def _raise_if_cancelled() -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside nats-py's requests) returns a result that
    was ready when its task was cancelled, dropping the cancellation: the task still counts
    it (``cancelling()``), so a loop that checks here still ends when its channel stops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_MAX_FLOAT = 1.7976931348623157e308


def _valid(trades: list) -> bool:
    """Every trade's price and quantity a finite number > 0 (NaN fails every compare)."""
    for t in trades:
        if not (0 < t.price <= _MAX_FLOAT and 0 < t.quantity <= _MAX_FLOAT):
            return False
    return True


class _Mirror:
    """One followed market (its book or its trades): subscription, sequence, silence."""

    data_type = ""

    def __init__(self, source: MirrorSource, symbol: str) -> None:
        self.source, self.symbol = source, symbol
        self.stats = source.stats
        self.clock = source._clock
        self.epoch = ""
        self.seq = 0
        self.last = 0.0  # clock() of the last message
        self.watching = False  # subscribed and counting silence
        self.expired = False  # silent (or too far behind): the session is rebuilt
        self.behind = 0.0  # seconds this edge was behind the feed when it gave up on them
        self.min_delay = 1 << 62  # the session's least (receive - sent) ns: transit + skew
        self.repeats = 0  # messages in a row behind the mirror's seq (one is tolerated)
        self.wake = asyncio.Event()  # a gap (ask a snapshot) or silence
        self.sub = None

    def needs_snapshot(self) -> bool:
        return False

    def down(self, reason: str) -> None:
        raise NotImplementedError

    async def start(self, js: JetStreamContext, epoch: str) -> None:
        raise NotImplementedError

    def expire(self) -> None:
        self.expired = True
        self.wake.set()

    def fell_behind(self, seconds: float) -> None:
        """This edge cannot keep up (its CPU, its link): rather than serve an ever older book,
        drop the backlog and start again from the feed's latest snapshot."""
        self.stats["lagged"] += 1
        self.behind = seconds
        self.expire()

    async def subscribe(self, js: JetStreamContext, subject: str, config: ConsumerConfig) -> None:
        config.ack_policy = AckPolicy.NONE  # order is the stream's; loss is a seq gap
        # The server drops a consumer nobody listens to after this: past a silence the edge
        # builds a new one anyway (no delete request: it could wait on a dead connection).
        config.inactive_threshold = max(2 * self.source.config.silence_seconds, 5.0)
        config.mem_storage = True
        self.sub = await js.subscribe(subject, stream=STREAM, cb=self.on_msg, config=config)

    async def on_msg(self, msg: Msg) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        sub, self.sub = self.sub, None
        self.watching = False
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await sub.unsubscribe()


class _BookMirror(_Mirror):
    data_type = "ORDERBOOK"

    def __init__(self, source: MirrorSource, symbol: str, sink: BookSink) -> None:
        super().__init__(source, symbol)
        self.sink = sink
        self.live = False  # a snapshot based the sink's book: contiguous deltas apply
        self.said_down = False  # the sink was told the market is down, not yet re-based
        self.book: L2Book | None = None  # the book handed to the sink (it applies deltas)

    def needs_snapshot(self) -> bool:
        return not self.live

    def down(self, reason: str) -> None:
        self.live, self.said_down = False, True
        self.sink.on_resync(reason)

    async def start(self, js: JetStreamContext, epoch: str) -> None:
        """The last snapshot (when the answering feed published it), then everything after
        it; no snapshot at all: everything the stream holds for the market (a snapshot is
        asked for)."""
        self.live = False
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        try:
            raw = await js.get_last_msg(STREAM, book_subject(self.symbol, "snap"))
        except NotFoundError:
            raw = None  # no snapshot yet (no stream: the subscription below says so)
        if raw is not None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                    opt_start_seq=raw.seq + 1)
            try:
                snap = decode_book(raw.data or b"")
            except msgspec.DecodeError:
                snap = None
            if type(snap) is BookSnapshot and (not epoch or snap.epoch == epoch):
                self.rebase(snap)  # before the deltas after it can arrive
        await self.subscribe(js, book_subject(self.symbol, "*"), config)
        if not self.live and self.said_down:  # a feed answers again: not down, but waiting
            self.said_down = False
            self.sink.on_resync("waiting for the feed's snapshot")

    def rebase(self, snap: BookSnapshot) -> None:
        book = self.book = L2Book(self.symbol)
        book.reset(snap.bids, snap.asks, snap.update_id, snap.timestamp)
        self.epoch, self.seq, self.live, self.said_down = snap.epoch, snap.seq, True, False
        self.repeats = 0
        self.stats["snapshots"] += 1
        self.sink.on_snapshot(book)

    def matches(self, snap: BookSnapshot) -> bool:
        """The mirrored book is, level for level, the feed's at ``snap``."""
        book = self.book
        return (book is not None and book.update_id == snap.update_id
                and book.bids == {p: q for p, q in snap.bids if q > 0}
                and book.asks == {p: q for p, q in snap.asks if q > 0})

    def gap(self, why: str) -> None:
        self.stats["gaps"] += 1
        self.live = False
        self.sink.on_resync(f"gap: {why}")
        self.wake.set()  # the session asks the feed for a snapshot

    async def on_msg(self, msg: Msg) -> None:
        if self.expired:
            return  # a backlog the session is being rebuilt past
        self.last = self.clock()
        self.stats["messages"] += 1
        try:
            m = decode_book(msg.data)
        except msgspec.DecodeError:
            if self.live:
                self.gap("undecodable message")
            return
        if m.sent_ns:  # how far behind the feed: beyond the session's best, clock skew aside
            delay = time.time_ns() - m.sent_ns
            if delay < self.min_delay:
                self.min_delay = delay
            elif delay - self.min_delay > self.source.lag_ns:
                self.fell_behind((delay - self.min_delay) / 1e9)
                return
        if type(m) is BookDelta:  # the hot path
            if self.live:
                if m.seq == self.seq + 1 and m.epoch == self.epoch:
                    self.seq = m.seq
                    if self.repeats:
                        self.repeats = 0
                    self.sink.on_update(m.update_id, m.timestamp, m.bids, m.asks)
                elif m.seq > self.seq or m.epoch != self.epoch:
                    self.gap(f"expected seq {self.seq + 1}, got {m.seq}")
                elif self.repeats:  # behind again: the book's seq is not the feed's (it was
                    self.gap(f"seq {m.seq} behind the book's {self.seq} again")  # pushed ahead)
                else:
                    self.repeats = 1  # one repeat: dropped
            return
        if type(m) is BookSnapshot:
            if self.live and m.epoch == self.epoch:
                if m.seq == self.seq:
                    return  # the very snapshot the book stands on
                if m.seq == self.seq + 1:  # a checkpoint in sequence: the book must equal it
                    self.seq = m.seq
                    if not self.matches(m):
                        self.stats["drifts"] += 1
                        log.warning("%s: the mirrored book differs from the feed's snapshot "
                                    "at update %d: re-based", self.symbol, m.update_id)
                        self.sink.on_resync(f"checksum: the mirrored book differs from the "
                                            f"feed's at update {m.update_id}")
                        self.rebase(m)
                    return
            if self.live:  # not in sequence: clients hear of the break before the snapshot
                self.stats["gaps"] += 1
                self.sink.on_resync(f"gap: snapshot at seq {m.seq}, book at {self.seq}")
            self.rebase(m)
        elif type(m) is BookResync:
            self.epoch, self.seq, self.live = m.epoch, m.seq, False
            self.stats["resyncs"] += 1
            self.sink.on_resync(m.reason or "resyncing")  # the feed's next snapshot re-bases
        elif self.live and (m.epoch != self.epoch or m.seq != self.seq):  # a heartbeat: ahead,
            self.gap(f"heartbeat at seq {m.seq}, book at {self.seq}")  # the tail was lost;
            # behind, the book's seq is not the feed's (a forged or corrupt message moved it)


class _TradeMirror(_Mirror):
    data_type = "TRADE"

    def __init__(self, source: MirrorSource, symbol: str, sink: TradeSink) -> None:
        super().__init__(source, symbol)
        self.sink = sink
        self.based = False  # epoch/seq come from this session's messages
        self.up: bool | None = None  # what the sink was told last

    def tell(self, up: bool, reason: str = "") -> None:
        if up != self.up:
            self.up = up
            self.sink.on_connection(up, reason)

    def down(self, reason: str) -> None:
        self.tell(False, reason)

    async def start(self, js: JetStreamContext, epoch: str) -> None:
        """From the next message on: trades need no history (the channel seeds its memory
        from the venue's REST once the connection is reported up)."""
        self.based = False
        await self.subscribe(js, trade_subject(self.symbol),
                             ConsumerConfig(deliver_policy=DeliverPolicy.NEW))

    def gap(self, why: str) -> None:
        self.stats["gaps"] += 1
        self.tell(False, f"gap: {why}")
        self.tell(True)  # trades go on; the channel re-seeds its memory

    async def on_msg(self, msg: Msg) -> None:
        self.last = self.clock()
        self.stats["messages"] += 1
        try:
            m = decode_trade(msg.data)
        except msgspec.DecodeError:
            self.gap("undecodable message")
            return
        if type(m) is Heartbeat:
            if self.based and (m.epoch != self.epoch or m.seq != self.seq):
                self.gap(f"heartbeat at seq {m.seq}, trades at {self.seq}")
            self.epoch, self.seq, self.based = m.epoch, m.seq, True
            if m.synced:  # the feed's trade connection is up (or not reported)
                self.tell(True)
            else:
                self.tell(False, "the feed's venue connection is down")
            return
        if self.based and (m.seq != self.seq + 1 or m.epoch != self.epoch):
            if m.epoch == self.epoch and m.seq <= self.seq and not self.repeats:
                self.repeats = 1
                return  # one repeat: dropped; a second in a row is a gap (seq pushed ahead)
            self.gap(f"expected seq {self.seq + 1}, got {m.seq}")
        self.repeats = 0
        self.epoch, self.seq, self.based = m.epoch, m.seq, True
        if type(m) is TradeBatch:
            if not _valid(m.trades):  # never passed on: as if the batch were lost
                self.gap("a trade with a price or quantity that is not a positive number")
                return
            self.tell(True)
            self.sink.on_trades(m.trades)
        else:  # TradeConnection
            self.tell(m.up, m.reason)


class MirrorSource:
    """A ``FeedSource`` over NATS (see the module docstring). The NATS connection is the
    caller's (connect it with unlimited reconnects); ``close()`` after the engine's."""

    def __init__(self, nc: Nats, config: ClusterConfig, *, edge: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nc, self.config, self.edge = nc, config, edge
        self.js = nc.jetstream()
        self._clock = clock
        self.stats = dict.fromkeys(
            ("messages", "gaps", "resyncs", "stale", "lagged", "snapshots", "drifts",
             "wants_failed"), 0)
        self.lag_ns = int(config.lag_seconds * 1e9)
        self._mirrors: set[_Mirror] = set()
        self._sweeper: asyncio.Task | None = None
        self._renew = config.lease_seconds / 3
        self.retry = min(config.silence_seconds, self._renew)  # after a want nobody granted

    async def run_book_feed(self, venue: Venue, market: VenueMarket, sink: BookSink) -> None:
        await self._follow(_BookMirror(self, market.symbol, sink))

    async def run_trade_feed(self, venue: Venue, market: VenueMarket, sink: TradeSink) -> None:
        await self._follow(_TradeMirror(self, market.symbol, sink))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for mirror in list(self._mirrors):
            await mirror.stop()

    # --- one market --------------------------------------------------------------------------

    async def _follow(self, mirror: _Mirror) -> None:
        self._mirrors.add(mirror)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="edge silence sweep")
        try:
            while True:
                _raise_if_cancelled()
                await self._session(mirror)
        finally:
            self._mirrors.discard(mirror)
            await mirror.stop()

    async def _session(self, mirror: _Mirror) -> None:
        """Want, subscribe, then renew the want (and ask snapshots) until the market falls
        silent (or this edge falls behind); returns after ``retry`` seconds when no feed
        grants the want."""
        mirror.expired, mirror.behind, mirror.min_delay = False, 0.0, 1 << 62
        reply = await self._want(mirror, mirror.needs_snapshot())
        error = None if reply.ok else reply.error
        if reply.ok:
            try:
                await mirror.start(self.js, reply.epoch)
            except nats.errors.Error as exc:  # no stream yet, the server unreachable
                error = f"market data stream unavailable ({type(exc).__name__})"
            except ValueError as exc:  # a symbol that is no NATS subject token
                error = str(exc)
            _raise_if_cancelled()
        if error is not None:
            await mirror.stop()
            mirror.down(RECONNECTING + error)
            await asyncio.sleep(self.retry)
            return
        mirror.last, mirror.watching = self._clock(), True
        try:
            while True:
                if mirror.needs_snapshot():  # a gap, or no usable snapshot at the start
                    await self._want(mirror, True)
                mirror.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._renew):
                        await mirror.wake.wait()
                if mirror.expired and mirror.behind:
                    log.info("%s %s: %.1f s behind the feed, following it again from its "
                             "latest snapshot", mirror.symbol, mirror.data_type, mirror.behind)
                    mirror.down(f"{RECONNECTING}this edge fell {mirror.behind:.1f} s behind "
                                "the feed")
                    return
                if mirror.expired:
                    self.stats["stale"] += 1
                    log.info("%s %s: feed silent, following it again", mirror.symbol,
                             mirror.data_type)
                    mirror.down(f"{RECONNECTING}feed silent for "
                                f"{self.config.silence_seconds:g} s")
                    return
                if not mirror.wake.is_set() and not mirror.needs_snapshot():
                    await self._want(mirror, False)  # the lease's renewal
        finally:
            await mirror.stop()

    async def _want(self, mirror: _Mirror, snapshot: bool) -> WantReply:
        """Ask a feed for the market: its reply, or a refusal saying why there is none
        (``error``: what the 503 names)."""
        want = Want(market=mirror.symbol, data_type=mirror.data_type, edge=self.edge,
                    snapshot=snapshot)
        try:
            msg = await self.nc.request(WANT_SUBJECT, encode(want),
                                        timeout=self.config.want_timeout)
            _raise_if_cancelled()
            reply = _reply_decoder.decode(msg.data)
        except (nats.errors.Error, TimeoutError):  # no feed, no server, a reconnect
            _raise_if_cancelled()
            self.stats["wants_failed"] += 1
            return WantReply(ok=False, error="no feed node answered")
        except msgspec.DecodeError:
            self.stats["wants_failed"] += 1
            return WantReply(ok=False, error="a feed node answered garbage")
        if not reply.ok:
            self.stats["wants_failed"] += 1
            reply.error = f"the feed cannot serve {mirror.symbol}: {reply.error or 'refused'}"
        return reply

    async def _sweep(self) -> None:
        """Marks every followed market silent for ``silence_seconds``: one task for all."""
        limit = self.config.silence_seconds
        while True:
            await asyncio.sleep(limit / 4)
            now = self._clock()
            for mirror in self._mirrors:
                if mirror.watching and not mirror.expired and now - mirror.last >= limit:
                    mirror.expire()
