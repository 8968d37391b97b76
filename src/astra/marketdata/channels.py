"""One running upstream feed per (market, channel) and its clients: the engine's channels.

Invariants:
- A book channel is in one state: ``connecting`` (started, never synced), ``synced``,
  ``resyncing`` (a gap, bad checksum or restarted stream: waiting for a snapshot on a live
  connection) or ``disconnected`` (the venue's connection is lost or refused: the feed's
  resync reason starts with ``RECONNECTING``). ``since`` is when it entered that state.
- WebSocket clients see, per book: a ``snapshot``, ``update``s that continue it, and on every
  way out of ``synced`` (and on every change between ``resyncing`` and ``disconnected``) at
  once a ``{"type":"resync"}`` message, before the next ``snapshot``. A client that joins an
  unsynced book that was synced before (or is known down) gets that message at once too.
- A REST read of a ``disconnected`` book fails at once (``FeedUnavailable``, 503, with the
  state); of a ``connecting``/``resyncing`` one it waits for the snapshot, but no longer than
  the engine's ``book_wait`` and no longer than the feed stays up.
- Trade channels (their memory, their drops) are ``trades.TradeChannel``'s.
- A book channel's ``listeners`` (the SMART consolidated book, BBO feeds) are told, in the
  feed's own call, about every snapshot, every update (with the venue-unit levels) and every
  change of state; with no listener the feed pays one emptiness check per event. A listener
  that raises is logged and does not disturb the feed or the other listeners.
- Reasons shown to clients lose anything in parentheses and any URL (they name error
  classes, not hosts).
- Where a channel's events come from is the engine's ``source`` (a ``FeedSource``): by default
  the venue's own connection (``VenueFeeds``); on an edge node, books mirrored off NATS. A
  source calls the same sink methods with the same guarantees, so nothing downstream differs.
- Counters for ``GET /feeds`` (``status()``): every ``on_resync`` counts, the last
  ``MAX_RECENT_RESYNCS`` kept with their time and public reason; an update costs one counter,
  one ``time.time_ns()`` and two attribute writes (latency is worked out when read).
- With the engine's ``telemetry``, a book update that has WebSocket clients observes
  ``feed_latency_seconds`` (per venue): from its arrival in ``on_update`` (the feed calls it
  as the venue frame is parsed) to its frame written or queued for every client.
- Fan-out encodes each message once and hands the same bytes object to every client
  (``BoundedSender`` frames it once too, and writes it without a task switch per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, deque
from typing import Protocol

import msgspec

from astra.core import (
    MAX_RECENT_RESYNCS,
    BookResync,
    BookUpdate,
    ContractUnits,
    DataType,
    FeedState,
    FeedStatus,
    FeedUnavailable,
    Level,
    OrderBook,
    ResyncEvent,
    VenueTimeout,
)
from astra.core._redact import squeeze, without_locations
from astra.venues.base import RECONNECTING, BookSink, TradeSink, Venue, VenueMarket
from astra.venues.book import L2Book

__all__ = [
    "BookChannel",
    "BookListener",
    "Channel",
    "Client",
    "FeedSource",
    "VenueFeeds",
    "latency_ms",
    "public_reason",
    "resync_frame",
    "units_of",
]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_PARENS = re.compile(r"\([^()]*\)")
_time_ns = time.time_ns  # the update path's one clock read (a global, not an attribute)


class Client(Protocol):
    def deliver(self, frame: bytes) -> None: ...


class BookListener(Protocol):
    """Told by a ``BookChannel`` about its book (levels in the venue's units, as applied)."""

    def book_snapshot(self, channel: BookChannel) -> None: ...

    def book_update(
        self, channel: BookChannel, bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None: ...

    def book_state(self, channel: BookChannel) -> None: ...


class FeedSource(Protocol):
    """Where a channel's feed comes from: keeps ``sink`` supplied until cancelled, exactly as
    ``Venue.run_book_feed`` / ``run_trade_feed`` do (a synced book or a resync reason; trades
    and the connection's state)."""

    async def run_book_feed(
        self, venue: Venue, market: VenueMarket, sink: BookSink
    ) -> None: ...

    async def run_trade_feed(
        self, venue: Venue, market: VenueMarket, sink: TradeSink
    ) -> None: ...


class VenueFeeds:
    """The default ``FeedSource``: the venue's own connection (a single process, a feed node)."""

    async def run_book_feed(self, venue: Venue, market: VenueMarket, sink: BookSink) -> None:
        await venue.run_book_feed(market, sink)

    async def run_trade_feed(self, venue: Venue, market: VenueMarket, sink: TradeSink) -> None:
        await venue.run_trade_feed(market, sink)


class Owner(Protocol):
    """What a channel needs of its engine (``MarketDataEngine``)."""

    linger: float  # seconds a feed outlives its last user
    stats: dict[str, int]
    source: FeedSource

    def _retire(self, channel: Channel) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def public_reason(reason: str) -> str:
    """``reason`` fit for a client: no parenthesized details, no URLs, hosts or addresses."""
    text = reason
    for _ in range(3):  # nested parentheses, innermost first
        text = _PARENS.sub("", text)
    return squeeze(without_locations(text), 160)


def latency_ms(received_ns: int, event_ms: int) -> float | None:
    """Venue event time to local receipt (ms), or None when the venue gave no event time."""
    if not received_ns or event_ms <= 0:
        return None
    return round(received_ns / 1e6 - event_ms, 3)


def units_of(market: VenueMarket) -> ContractUnits | None:
    """How this market's venue quantities become base units (None: they already are)."""
    meta = market.metadata
    return ContractUnits.of(meta) if meta is not None else None


def _levels(pairs: list[tuple[float, float]], units: ContractUnits | None) -> list[Level]:
    if units is None:
        return [Level(p, q) for p, q in pairs]
    return [Level(p, units.to_base(q, p)) for p, q in pairs]


def resync_frame(market: str, feed: FeedState) -> bytes:
    """The WebSocket ``{"type":"resync"}`` message of a channel in state ``feed``."""
    resync = BookResync(market=market, reason=feed.reason or feed.state, state=feed.state,
                        since=feed.since)  # fmt: skip
    return _encode(resync)


class Channel:
    """A running upstream feed for one (market, channel) and its clients."""

    def __init__(
        self, engine: Owner, key: tuple[str, DataType], venue: Venue, market: VenueMarket
    ) -> None:
        self.engine, self.key, self.venue, self.market = engine, key, venue, market
        self.units = units_of(market)  # the book keeps the venue's units; clients get base units
        self.clients: set[Client] = set()
        self.refs = 0
        self.task: asyncio.Task | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._touched_at = 0.0  # loop time of the last REST read while lingering
        # For ``GET /feeds``: resyncs (or trade-feed drops) since the channel started, the
        # last few as (epoch ms, public reason), and the last applied update's local receipt
        # (ns) and venue event time (ms).
        self.resyncs = 0
        self.recent_resyncs: deque[tuple[int, str]] = deque(maxlen=MAX_RECENT_RESYNCS)
        self.resync_reasons: Counter[str] = Counter()  # /metrics: by kind (_note_resync)
        self.updates = 0
        self.received_ns = 0
        self.event_ms = 0
        # The engine's telemetry (None: not measured): update receipt to fanned out, per venue.
        telemetry = getattr(engine, "telemetry", None)
        self._observe_fan_out = (
            telemetry.observer(telemetry.feed_latency_seconds, getattr(venue, "code", "SMART"))
            if telemetry is not None else None
        )

    def acquire(self) -> None:
        self.refs += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"feed {self.key}")

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(
                self.engine.linger, self._linger_expired
            )

    def touch(self) -> None:
        """A REST read: keep the feed warm for another ``linger`` seconds. While the feed
        lingers, only the time is noted (no timer is cancelled and re-made per request, which
        was a sixth of a cached ``GET /orderbook``): the timer re-arms itself when it fires."""
        if self._linger is not None:
            self._touched_at = asyncio.get_running_loop().time()
            return
        self.acquire()
        self.release()

    def _linger_expired(self) -> None:
        self._linger = None
        if self.refs:
            return
        loop = asyncio.get_running_loop()
        remaining = self._touched_at + self.engine.linger - loop.time()
        if remaining > 0:
            self._linger = loop.call_later(remaining, self._linger_expired)
        else:
            self.engine._retire(self)

    async def _run(self) -> None:
        raise NotImplementedError

    def _note_resync(self, reason: str) -> None:
        self.resyncs += 1
        why = public_reason(reason) if reason else "resync"
        self.recent_resyncs.append((_now_ms(), why))
        # A metrics label: numbers out (sequence ids), and a bounded set per channel.
        kind = re.sub(r"\d+", "N", why)[:80]
        if kind not in self.resync_reasons and len(self.resync_reasons) >= 32:
            kind = "other"
        self.resync_reasons[kind] += 1

    def _status(self, state: str, since: int, reason: str | None) -> FeedStatus:
        listeners = getattr(self, "listeners", ())
        return FeedStatus(
            market=self.market.symbol, venue=self.venue.code, data_type=self.key[1].value,
            state=state, since=since, reason=reason, resyncs=self.resyncs,  # type: ignore[arg-type]
            recent_resyncs=[ResyncEvent(at=at, reason=why)
                            for at, why in reversed(self.recent_resyncs)],
            updates=self.updates,
            last_update=self.received_ns // 1_000_000 if self.received_ns else None,
            latency_ms=latency_ms(self.received_ns, self.event_ms),
            # A BBO stream of this book (a listener with clients) is this feed's clients too.
            clients=len(self.clients) + sum(len(getattr(li, "clients", ())) for li in listeners),
        )

    def _fan_out(self, frame: bytes) -> None:
        for client in tuple(self.clients):
            client.deliver(frame)

    def _tell(self, event: str, *args: object) -> None:
        """``listener.<event>(self, *args)`` for every listener (book or trade listeners)."""
        for listener in tuple(self.listeners):  # type: ignore[attr-defined]
            try:
                getattr(listener, event)(self, *args)
            except Exception:  # a consumer's bug must not resync or stop the venue's feed
                log.exception("%s: listener %r failed on %s", self.market.symbol, listener,
                              event)

    async def stop(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class BookChannel(Channel):
    """BookSink: keeps the synced book, its state, and fans its changes out."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.book: L2Book | None = None
        self.synced = asyncio.Event()
        self.state = "connecting"
        self.since = _now_ms()
        self.reason: str | None = None
        self._was_synced = False
        self._changed = asyncio.Event()  # set (and replaced) on every state change
        self._snapshot_frame: tuple[int, bytes] | None = None
        self._rest_frames: dict[int | None, tuple[int, bytes]] = {}  # depth -> (id, body)
        self.listeners: set[BookListener] = set()  # internal consumers (SMART books, BBO)

    async def _run(self) -> None:
        await self.engine.source.run_book_feed(self.venue, self.market, self)

    # --- state -------------------------------------------------------------------------------

    def _set_state(self, state: str, reason: str | None) -> bool:
        """Enter ``state``; True when it is a change (waiters are woken)."""
        self.reason = reason
        if state == self.state:
            return False
        self.state, self.since = state, _now_ms()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def status(self) -> FeedStatus:
        """This book's row of ``GET /feeds``."""
        reason = public_reason(self.reason) if self.reason and self.state != "synced" else None
        return self._status(self.state, self.since, reason)

    def feed_state(self) -> FeedState:
        state = self.state if self.state != "synced" else "resyncing"
        reason = public_reason(self.reason) if self.reason else None
        return FeedState(state=state, since=self.since, reason=reason)  # type: ignore[arg-type]

    def _resync_frame(self) -> bytes:
        return resync_frame(self.market.symbol, self.feed_state())

    def unavailable(self) -> FeedUnavailable:
        feed = self.feed_state()
        why = f": {feed.reason}" if feed.reason else ""
        return FeedUnavailable(
            self.venue.code,
            f"no live book for '{self.market.symbol}': the feed is {feed.state}{why}",
            feed=feed,
            retry_after=1.0,
        )

    async def wait_synced(self, deadline: float) -> None:
        """Until the book is synced; ``FeedUnavailable`` at once while the feed is
        disconnected, ``VenueTimeout`` after ``deadline`` seconds."""
        try:
            async with asyncio.timeout(deadline):
                while not self.synced.is_set():
                    if self.state == "disconnected":
                        raise self.unavailable()
                    await self._changed.wait()
        except TimeoutError:
            raise VenueTimeout(
                self.venue.code,
                f"no synced book for '{self.market.symbol}' within {deadline:g} s",
            ) from None

    # --- frames ------------------------------------------------------------------------------

    def rest_frame(self, depth: int | None) -> bytes:
        """The ``GET /orderbook`` body at this depth, encoded once per book version."""
        book = self.book
        cached = self._rest_frames.get(depth)
        if cached is not None and cached[0] == book.update_id:
            return cached[1]
        bids, asks = book.top(depth)
        body = _encode(
            OrderBook(
                market=self.market.symbol,
                bids=_levels(bids, self.units),
                asks=_levels(asks, self.units),
                update_id=book.update_id,
                timestamp=book.timestamp,
            )
        )
        if len(self._rest_frames) > 16:  # a few depths are used in practice
            self._rest_frames.clear()
        self._rest_frames[depth] = (book.update_id, body)
        return body

    def snapshot_frame(self) -> bytes:
        book = self.book
        cached = self._snapshot_frame
        if cached is None or cached[0] != book.update_id:
            bids, asks = book.top()
            frame = _encode(
                BookUpdate(
                    type="snapshot",
                    market=self.market.symbol,
                    update_id=book.update_id,
                    bids=_levels(bids, self.units),
                    asks=_levels(asks, self.units),
                    timestamp=book.timestamp,
                )
            )
            cached = self._snapshot_frame = (book.update_id, frame)
        return cached[1]

    # --- BookSink ----------------------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        self.clients.add(client)
        if self.synced.is_set():
            client.deliver(self.snapshot_frame())
        elif (frame := self.known_resync_frame()) is not None:
            client.deliver(frame)  # not silence: it knows what it waits for

    def known_resync_frame(self) -> bytes | None:
        """The resync message for a client joining this unsynced book, when there is
        something to say: it was synced before, or the venue is known down."""
        if self._was_synced or self.state == "disconnected":
            return self._resync_frame()
        return None

    def on_snapshot(self, book: L2Book) -> None:
        self.book = book
        self._snapshot_frame = None
        self._rest_frames.clear()  # a resync may reuse an update id
        self._was_synced = True
        self._set_state("synced", None)
        self.synced.set()
        self.engine.stats["snapshots"] += 1
        if self.clients:
            self._fan_out(self.snapshot_frame())
        if self.listeners:
            self._tell("book_snapshot")

    def on_update(
        self,
        update_id: int,
        timestamp: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None:
        prev_update_id = self.book.update_id  # the chain a client checks (prevUpdateId)
        self.book.apply(bids, asks, update_id, timestamp)
        self.engine.stats["book_updates"] += 1
        self.updates += 1
        self.received_ns = received_ns = _time_ns()
        self.event_ms = timestamp
        if self.clients:
            frame = _encode(
                BookUpdate(
                    type="update",
                    market=self.market.symbol,
                    update_id=update_id,
                    bids=_levels(bids, self.units),
                    asks=_levels(asks, self.units),
                    timestamp=timestamp,
                    prev_update_id=prev_update_id,
                )
            )
            self._fan_out(frame)
            if (observe := self._observe_fan_out) is not None:
                observe((_time_ns() - received_ns) * 1e-9)
        if self.listeners:
            self._tell("book_update", bids, asks)

    def on_resync(self, reason: str) -> None:
        self.synced.clear()
        self.engine.stats["resyncs"] += 1
        self._note_resync(reason)
        state = "disconnected" if reason.startswith(RECONNECTING) else "resyncing"
        if self._set_state(state, reason):
            log.info("%s: %s (%s)", self.market.symbol, state, reason)
            if self.clients and (self._was_synced or state == "disconnected"):
                self._fan_out(self._resync_frame())
            if self.listeners:
                self._tell("book_state")
