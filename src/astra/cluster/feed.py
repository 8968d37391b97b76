"""The feed node's publisher: every market some edge wants, published to NATS per ``wire``.

A ``FeedPublisher`` sits beside an ordinary ``MarketDataEngine``. It answers ``Want``s (on
``astra.want``; every feed hears every want, and only the market's owner answers: see
``owners.py``) by holding that market's book or trade channel (a channel
reference and a listener, exactly like a WebSocket client) and publishing what the channel
is told: a ``BookSnapshot`` on ``.snap`` for each synced book, a ``BookDelta`` per update
and a ``BookResync`` each time the book leaves ``synced`` on ``.upd``; a ``TradeBatch`` per
venue batch and a ``TradeConnection`` per change of the trade feed's connection on
``astra.trade.<MARKET>``. Levels and trades are the venue's units, as the channel applied them.

Invariants:
- Integrity rule (the feed's half of ``wire``'s): every book message of a market — snapshot,
  delta, resync — takes that market's next ``seq`` (from 1, +1 per message, in publish order;
  trade messages have their own ``seq``), all under this publisher's ``epoch``. A released
  market keeps its ``seq``: a re-want goes on from it, so no seq ever goes back in one epoch.
  A heartbeat carries the last ``seq`` and takes none.
- The first book message of a newly held market is a snapshot (at once when its book is
  already synced, else the channel's next one). Every held synced book is snapshotted again
  every ``snapshot_seconds``, and on ``Want(snapshot=True)``, at most once per market per
  ``SNAPSHOT_MIN_INTERVAL`` (a resync storm of edges is one snapshot, deferred, not many).
- No held market is silent for longer than about ``heartbeat_seconds``: one timer task for
  all markets sends a ``Heartbeat`` on a market quiet for ``QUIET`` of that, so an edge's
  ``silence_seconds`` (longer) is broken only by a feed that is really gone.
- A market no want has renewed for ``lease_seconds`` is released (listener removed, channel
  reference dropped; the engine retires the feed after its ``linger``).
- The hot path (a listener call) is one msgpack encode and one append to a bounded local
  queue; one drainer task hands the queue to ``nc.publish`` (core NATS: it buffers, and
  awaits only when nats-py's pending buffer is full). A full queue, or a publish nats-py
  refuses (reconnect buffer overflow, closed connection), drops the message and counts
  ``errors``: edges see the gap by ``seq`` and resync. Nothing is retried, nothing blocks.
- A want is answered, never left hanging and never crashing the publisher: a market the
  engine cannot resolve within ``want_timeout``, a malformed want, a ``SMART-`` market (each
  edge consolidates those itself) get ``WantReply(ok=False, error, code)`` with the
  ``AstraError`` code an edge turns back into its 4xx/503. At most ``MAX_RESOLVING`` wants
  are resolved at once (one task each); past it a want is refused at once (``OVERLOADED``).
- After a reconnect (a restarted server loses its memory stream and KV bucket) the stream and
  bucket are ensured again; after it, and after a stall of the timer longer than
  ``silence_seconds`` (this feed's liveness went stale), every held market is claimed again:
  one another feed took over meanwhile is given up at once (not at the next periodic
  snapshot); after a reconnect every other held synced book is snapshotted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from astra.core import (
    AstraError,
    DataType,
    InvalidMarket,
    InvalidParameter,
    Overloaded,
    VenueTimeout,
)
from astra.marketdata.channels import BookChannel

from . import wire
from .held import HeldBook, HeldMarket, HeldTrades, ensure_stream, trade_state
from .owners import Ownership
from .wire import (
    BookSnapshot,
    ClusterConfig,
    Heartbeat,
    Want,
    WantReply,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg

    from astra.marketdata.engine import MarketDataEngine

__all__ = ["MAX_QUEUE", "MAX_RESOLVING", "SNAPSHOT_MIN_INTERVAL", "FeedPublisher",
           "ensure_stream"]

log = logging.getLogger(__name__)

SNAPSHOT_MIN_INTERVAL = 0.1  # seconds between two snapshots of one market asked by wants
MAX_QUEUE = 20_000  # messages waiting for nc.publish; past it they are dropped (a seq gap)
MAX_RESOLVING = 1_000  # new wants being resolved at once; past it: Overloaded, at once
QUIET = 0.75  # a market quiet for this share of heartbeat_seconds gets a heartbeat
_encode = wire.encode
_want_decoder = msgspec.msgpack.Decoder(Want)


class FeedPublisher:
    """Publishes the engine's wanted markets to NATS (see the module docstring).
    ``await FeedPublisher(engine, nc, config).start()`` ... ``await publisher.close()``;
    the NATS connection and the engine stay the caller's."""

    def __init__(self, engine: MarketDataEngine, nc: Nats, config: ClusterConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.nc, self.config = engine, nc, config
        self._clock = clock
        self.epoch = wire.new_epoch()
        self.stats = dict.fromkeys(
            ("published", "bytes", "snapshots", "wants", "heartbeats", "errors", "yielded"), 0)
        self.owners: Ownership | None = None  # which feed publishes which market
        self._held: dict[str, HeldMarket] = {}  # "MARKET/ORDERBOOK" -> held market
        self._seqs: dict[str, int] = {}  # a released market's last seq (this epoch goes on)
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._interval = min(max(config.heartbeat_seconds * (1 - QUIET), 0.01), 1.0)
        self._tasks: set[asyncio.Task] = set()  # wants of markets not held yet
        self._resolving = 0  # of those tasks, the wants being resolved (MAX_RESOLVING)
        self._sub = None
        self._drainer: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None
        self._closed = False
        self._failing = False  # publishes are failing (logged once per run of failures)
        self._alive_at = 0.0  # clock() of the last liveness write (owners.py)
        self._reconnects = 0  # nats-py's reconnect count the stream was last ensured at
        self._restoring: asyncio.Task | None = None

    @property
    def markets(self) -> list[str]:
        """The held markets, ``"MARKET/ORDERBOOK"`` / ``"MARKET/TRADE"``."""
        return list(self._held)

    async def start(self) -> FeedPublisher:
        js = self.nc.jetstream()
        self._reconnects = self.nc.stats["reconnects"]
        await ensure_stream(js, self.config)
        self.owners = await Ownership(js, self.epoch, self.config.silence_seconds).start()
        self._alive_at = self._clock()
        self._drainer = asyncio.create_task(self._drain(), name="feed publisher")
        self._timer = asyncio.create_task(self._tick_loop(), name="feed timer")
        # Every feed hears every want (no queue group): the market's owner answers, the
        # others stay silent (owners.py); a want for a free market is claimed by one of them.
        self._sub = await self.nc.subscribe(wire.WANT_SUBJECT, cb=self._on_want)
        await self.nc.flush()  # the server has the subscription: a want now finds this feed
        return self

    async def __aenter__(self) -> FeedPublisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop answering and publishing; release every held channel. What is queued is
        handed to nats-py first (at most a second)."""
        if self._closed:
            return
        self._closed = True
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await self._sub.unsubscribe()
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for held in list(self._held.values()):
            self._release(held, give_up=False)
        if self.owners is not None:  # a standby takes these markets at the next want
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.owners.close(), 1.0)
        if self._drainer is not None:
            self._wake.set()  # it returns once the queue is empty
            try:
                await asyncio.wait_for(self._drainer, 1.0)
            except TimeoutError:
                pass  # wait_for cancelled it
        self._queue.clear()

    # --- wants -------------------------------------------------------------------------------

    async def _on_want(self, msg: Msg) -> None:
        self.stats["wants"] += 1
        try:
            want = _want_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            await self._reply(msg, WantReply(ok=False, code=InvalidParameter.code,
                                             error=f"malformed want: {exc}"[:300]))
            return
        held = self._held.get(f"{want.market}/{want.data_type}")
        if held is not None:  # a renewal: answered at once, no engine call
            await self._reply(msg, self._renew(held, want))
            return
        if self._resolving >= MAX_RESOLVING:  # a flood (a venue that does not answer): no
            await self._reply(msg, WantReply(  # task per want, the edge retries later
                ok=False, code=Overloaded.code,
                error=f"{MAX_RESOLVING} markets are being resolved: retry shortly"))
            return
        self._resolving += 1
        task = asyncio.create_task(self._new_want(msg, want))  # resolving may wait on a venue
        self._tasks.add(task)
        task.add_done_callback(self._resolved)

    def _resolved(self, task: asyncio.Task) -> None:
        self._resolving -= 1
        self._tasks.discard(task)

    async def _new_want(self, msg: Msg, want: Want) -> None:
        try:
            async with asyncio.timeout(self.config.want_timeout):
                reply = await self._hold(want)
            if reply is None:  # another live feed publishes it: it answers
                self.stats["yielded"] += 1
                return
        except TimeoutError:
            error = VenueTimeout(want.market.split("-", 1)[0][:20],
                                 f"market '{want.market[:100]}' could not be resolved within "
                                 f"{self.config.want_timeout:g} s")
            reply = WantReply(ok=False, code=error.code, error=error.message)
        except AstraError as exc:
            reply = WantReply(ok=False, code=exc.code, error=exc.message)
        except Exception:  # never crash the subscription, never leave the edge waiting
            log.exception("want %r failed", want)
            reply = WantReply(ok=False, code=AstraError.code, error="internal error")
        await self._reply(msg, reply)

    async def _hold(self, want: Want) -> WantReply | None:
        symbol, data_type = want.market, want.data_type
        if data_type not in (DataType.ORDERBOOK, DataType.TRADE):
            raise InvalidParameter("data_type", f"expected ORDERBOOK or TRADE, got "
                                                f"{data_type[:20]!r}")
        if symbol.startswith("SMART-"):
            raise InvalidMarket("SMART books are consolidated on each edge", market=symbol)
        venue, market = await self.engine.resolve(symbol)
        try:
            subject = (wire.book_subject(symbol, "upd") if data_type == DataType.ORDERBOOK
                       else wire.trade_subject(symbol))
        except ValueError as exc:
            raise InvalidMarket(str(exc), market=symbol) from None
        key = f"{symbol}/{data_type}"
        if self._closed:
            raise AstraError("the feed is closing")
        held = self._held.get(key)
        if held is not None:  # held by a want that resolved meanwhile
            return self._renew(held, want)
        if self.owners is not None and not await self.owners.claim(key):
            return None
        held = self._held.get(key)
        if held is not None:  # held by a want that claimed it meanwhile
            return self._renew(held, want)
        if self._closed:
            raise AstraError("the feed is closing")
        channel = self.engine._channel(venue, market, DataType(data_type))
        seq = self._seqs.pop(key, 0)
        if isinstance(channel, BookChannel):
            held = HeldBook(self, key, symbol, channel, subject,
                             wire.book_subject(symbol, "snap"), seq)
        else:
            held = HeldTrades(self, key, symbol, channel, subject, "", seq)
        self._held[key] = held
        channel.acquire()
        channel.listeners.add(held)  # type: ignore[arg-type]
        if isinstance(held, HeldBook):
            if held.synced():
                self._snapshot(held)  # the first message is a snapshot
            return WantReply(ok=True, epoch=self.epoch, state=channel.state)
        if channel.live is not None:  # the edge's trade channel learns the connection's state
            held.trade_connection(channel, channel.live, "")
        return WantReply(ok=True, epoch=self.epoch, state=trade_state(channel))

    def _renew(self, held: HeldMarket, want: Want) -> WantReply:
        held.wanted_at = self._clock()
        if isinstance(held, HeldBook):
            if want.snapshot:
                self._want_snapshot(held)
            return WantReply(ok=True, epoch=self.epoch, state=held.channel.state)
        return WantReply(ok=True, epoch=self.epoch, state=trade_state(held.channel))

    async def _reply(self, msg: Msg, reply: WantReply) -> None:
        if not msg.reply:
            return  # a plain publish: nobody waits
        try:
            await msg.respond(_encode(reply))
        except Exception:  # disconnected: the edge's request times out and it asks again
            self.stats["errors"] += 1

    def _release(self, held: HeldMarket, give_up: bool = True) -> None:
        """Stop publishing ``held``; ``give_up``: and free its ownership (close does it for
        every market at once)."""
        if self._held.get(held.key) is not held:
            return
        if give_up and self.owners is not None:
            self._spawn(self.owners.release(held.key))
        del self._held[held.key]
        self._seqs[held.key] = held.seq
        if held.snapshot_later is not None:
            held.snapshot_later.cancel()
            held.snapshot_later = None
        held.channel.listeners.discard(held)  # type: ignore[arg-type]
        held.channel.release()

    # --- snapshots, heartbeats, leases -------------------------------------------------------

    def _snapshot(self, held: HeldBook) -> None:
        book = held.channel.book
        bids, asks = book.top()
        held.seq += 1
        held.snapshot_at = self._clock()
        self.stats["snapshots"] += 1
        self._send(held, held.snap, BookSnapshot(
            self.epoch, held.seq, book.update_id, book.timestamp, bids, asks, time.time_ns()))

    def _want_snapshot(self, held: HeldBook) -> None:
        if not held.synced():
            return  # the channel's next snapshot is published anyway
        wait = SNAPSHOT_MIN_INTERVAL - (self._clock() - held.snapshot_at)
        if wait <= 0:
            self._snapshot(held)
        elif held.snapshot_later is None:  # one deferred snapshot answers every want meanwhile
            held.snapshot_later = asyncio.get_running_loop().call_later(
                min(wait, SNAPSHOT_MIN_INTERVAL), self._deferred_snapshot, held)

    def _deferred_snapshot(self, held: HeldBook) -> None:
        held.snapshot_later = None
        if self._held.get(held.key) is held and held.synced():
            self._snapshot(held)

    def tick(self) -> None:
        """One pass of the timer at ``clock()``: expired leases, due snapshots, heartbeats."""
        config, now = self.config, self._clock()
        quiet = config.heartbeat_seconds * QUIET
        if self.nc.stats["reconnects"] != self._reconnects and (
                self._restoring is None or self._restoring.done()):
            self._restoring = asyncio.get_running_loop().create_task(self._restore())
            self._tasks.add(self._restoring)
            self._restoring.add_done_callback(self._tasks.discard)
        if self.owners is not None and now - self._alive_at >= config.heartbeat_seconds:
            stalled = now - self._alive_at >= config.silence_seconds  # taken over, maybe
            self._alive_at = now
            self._spawn(self.owners.alive())
            if stalled and self._held:
                self._spawn(self._reclaim(snapshot=False))
        for held in list(self._held.values()):
            if now - held.wanted_at >= config.lease_seconds:
                self._release(held)
                continue
            synced = held.synced()
            if held.snap and synced and now - held.snapshot_at >= config.snapshot_seconds:
                self._snapshot(held)  # type: ignore[arg-type]
                self._spawn(self._check_owner(held))
            elif now - held.sent_at >= quiet:
                self.stats["heartbeats"] += 1
                self._send(held, held.subject,
                           Heartbeat(self.epoch, held.seq, synced, time.time_ns()))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore(self) -> None:
        """After a reconnect: the server may be a restarted one, its memory stream and KV
        bucket gone (publishes then reach no stream and edges find nothing to follow). Ensure
        both again, then snapshot every held book at once (edges re-base on it rather than
        waiting ``snapshot_seconds``), or give up those another feed took over meanwhile.
        Retried at the next tick until it succeeds."""
        seen = self.nc.stats["reconnects"]
        try:
            async with asyncio.timeout(max(self.config.want_timeout, 1.0)):
                await ensure_stream(self.nc.jetstream(), self.config)
                if self.owners is not None:
                    await self.owners.start()
        except Exception as exc:  # JetStream not up yet: the next tick tries again
            self.stats["errors"] += 1
            log.debug("feed: stream not restored yet (%r)", exc)
            return
        self._reconnects = seen
        await self._reclaim(snapshot=True)

    async def _reclaim(self, snapshot: bool) -> None:
        """Claim every held market again (after a reconnect or a stall): give up those
        another feed took over meanwhile; ``snapshot``: snapshot the others (after a
        reconnect: a restarted server's stream holds none)."""
        for held in list(self._held.values()):
            # Cut off long enough, another feed took the market over: stop now, not at the
            # next periodic snapshot (two epochs on one subject make every edge resync).
            # Claimed again, not just read: a restarted server's bucket is empty.
            if self.owners is not None and not await self.owners.claim(held.key):
                log.warning("%s: another feed publishes it now; this feed stops", held.key)
                self._release(held, give_up=False)
            elif (snapshot and held.snap and held.synced()
                  and self._held.get(held.key) is held):
                self._snapshot(held)  # type: ignore[arg-type]

    async def _check_owner(self, held: HeldMarket) -> None:
        """Stop publishing a market another feed took over (this one was cut off)."""
        if not await self.owners.owns(held.key):
            log.warning("%s: another feed publishes it now; this feed stops", held.key)
            self._release(held, give_up=False)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.tick()
            except Exception:  # a bug here must not end heartbeats for every market
                log.exception("feed timer failed")

    # --- publishing --------------------------------------------------------------------------

    def _send(self, held: HeldMarket, subject: str, message: msgspec.Struct) -> None:
        """The hot path: encode once, queue for the drainer (never awaits)."""
        held.sent_at = self._clock()
        queue = self._queue
        if len(queue) >= MAX_QUEUE:
            self.stats["errors"] += 1  # the edges see the gap by seq and resync
            return
        if not queue:
            self._wake.set()
        queue.append((subject, _encode(message)))

    async def _drain(self) -> None:
        queue, publish, stats = self._queue, self.nc.publish, self.stats
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                subject, payload = queue.popleft()
                try:
                    await publish(subject, payload)  # buffers; awaits only when it is full
                except Exception as exc:  # reconnect buffer full, connection closed
                    stats["errors"] += 1
                    if not self._failing:
                        self._failing = True
                        log.warning("feed: publishing failed (%s); counting errors",
                                    type(exc).__name__)
                else:
                    stats["published"] += 1
                    stats["bytes"] += len(payload)
                    self._failing = False
            if self._closed:
                return
