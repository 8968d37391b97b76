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
  ``AstraError`` code an edge turns back into its 4xx/503.
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
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from astra.core import AstraError, DataType, InvalidMarket, InvalidParameter, Trade, VenueTimeout
from astra.marketdata.channels import BookChannel
from astra.marketdata.trades import TradeChannel

from . import wire
from .owners import Ownership
from .wire import (
    BookDelta,
    BookResync,
    BookSnapshot,
    ClusterConfig,
    Heartbeat,
    TradeBatch,
    TradeConnection,
    Want,
    WantReply,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from astra.marketdata.engine import MarketDataEngine

__all__ = ["MAX_QUEUE", "SNAPSHOT_MIN_INTERVAL", "FeedPublisher", "ensure_stream"]

log = logging.getLogger(__name__)

SNAPSHOT_MIN_INTERVAL = 0.1  # seconds between two snapshots of one market asked by wants
MAX_QUEUE = 20_000  # messages waiting for nc.publish; past it they are dropped (a seq gap)
QUIET = 0.75  # a market quiet for this share of heartbeat_seconds gets a heartbeat
_STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"
_encode = wire.encode
_want_decoder = msgspec.msgpack.Decoder(Want)


async def ensure_stream(js: JetStreamContext, config: ClusterConfig) -> None:
    """Create ``wire.STREAM`` (or bring an existing one to this config): both subject trees,
    memory storage, ``max_age`` = ``retention_seconds``, discard old, direct gets allowed (an
    edge reads a subject's last message). Idempotent: any number of feeds may call it."""
    stream = StreamConfig(
        name=wire.STREAM, subjects=[wire.BOOK_SUBJECTS, wire.TRADE_SUBJECTS],
        storage=StorageType.MEMORY, max_age=config.retention_seconds,
        discard=DiscardPolicy.OLD, allow_direct=True)
    try:
        await js.add_stream(stream)  # the same config again is accepted as is
    except BadRequestError as exc:
        if exc.err_code != _STREAM_IN_USE:
            raise
        await js.update_stream(stream)


class _Held:
    """One held market (a listener of its channel): subjects, seq and the clock's times."""

    __slots__ = ("channel", "key", "pub", "sent_at", "seq", "snap", "snapshot_at",
                 "snapshot_later", "subject", "symbol", "wanted_at")

    def __init__(self, pub: FeedPublisher, key: str, symbol: str,
                 channel: BookChannel | TradeChannel, subject: str, snap: str, seq: int) -> None:
        self.pub, self.key, self.symbol, self.channel = pub, key, symbol, channel
        self.subject, self.snap = subject, snap  # upd (or trade) subject; snap: "" for trades
        self.seq = seq
        self.sent_at = self.wanted_at = self.snapshot_at = pub._clock()
        self.snapshot_later: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<feed {self.key} seq={self.seq}>"

    def synced(self) -> bool:
        raise NotImplementedError


class _HeldBook(_Held):
    __slots__ = ()
    channel: BookChannel

    def book_snapshot(self, channel: BookChannel) -> None:
        self.pub._snapshot(self)

    def book_update(self, channel: BookChannel, bids: list[tuple[float, float]],
                    asks: list[tuple[float, float]]) -> None:
        book = channel.book
        self.seq += 1
        self.pub._send(self, self.subject, BookDelta(
            self.pub.epoch, self.seq, book.update_id, book.timestamp, bids, asks,
            time.time_ns()))

    def book_state(self, channel: BookChannel) -> None:
        if channel.state == "synced":
            return  # the snapshot that synced it says so
        self.seq += 1
        self.pub._send(self, self.subject, BookResync(
            self.pub.epoch, self.seq, (channel.reason or channel.state)[:500], time.time_ns()))

    def synced(self) -> bool:
        return self.channel.synced.is_set()


class _HeldTrades(_Held):
    __slots__ = ()
    channel: TradeChannel

    def trade_batch(self, channel: TradeChannel, trades: list[Trade]) -> None:
        self.seq += 1
        self.pub._send(self, self.subject, TradeBatch(
            self.pub.epoch, self.seq, trades, time.time_ns()))

    def trade_connection(self, channel: TradeChannel, up: bool, reason: str) -> None:
        self.seq += 1
        self.pub._send(self, self.subject, TradeConnection(
            self.pub.epoch, self.seq, up, reason[:500], time.time_ns()))

    def synced(self) -> bool:
        return self.channel.live is not False  # None: not reported (yet, or ever)


def _trade_state(channel: TradeChannel) -> str:
    return {True: "synced", False: "disconnected", None: "connecting"}[channel.live]


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
        self._held: dict[str, _Held] = {}  # "MARKET/ORDERBOOK" -> held market
        self._seqs: dict[str, int] = {}  # a released market's last seq (this epoch goes on)
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._interval = min(max(config.heartbeat_seconds * (1 - QUIET), 0.01), 1.0)
        self._tasks: set[asyncio.Task] = set()  # wants of markets not held yet
        self._sub = None
        self._drainer: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None
        self._closed = False
        self._failing = False  # publishes are failing (logged once per run of failures)
        self._alive_at = 0.0  # clock() of the last liveness write (owners.py)

    @property
    def markets(self) -> list[str]:
        """The held markets, ``"MARKET/ORDERBOOK"`` / ``"MARKET/TRADE"``."""
        return list(self._held)

    async def start(self) -> FeedPublisher:
        js = self.nc.jetstream()
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
        task = asyncio.create_task(self._new_want(msg, want))  # resolving may wait on a venue
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            held = _HeldBook(self, key, symbol, channel, subject,
                             wire.book_subject(symbol, "snap"), seq)
        else:
            held = _HeldTrades(self, key, symbol, channel, subject, "", seq)
        self._held[key] = held
        channel.acquire()
        channel.listeners.add(held)  # type: ignore[arg-type]
        if isinstance(held, _HeldBook):
            if held.synced():
                self._snapshot(held)  # the first message is a snapshot
            return WantReply(ok=True, epoch=self.epoch, state=channel.state)
        if channel.live is not None:  # the edge's trade channel learns the connection's state
            held.trade_connection(channel, channel.live, "")
        return WantReply(ok=True, epoch=self.epoch, state=_trade_state(channel))

    def _renew(self, held: _Held, want: Want) -> WantReply:
        held.wanted_at = self._clock()
        if isinstance(held, _HeldBook):
            if want.snapshot:
                self._want_snapshot(held)
            return WantReply(ok=True, epoch=self.epoch, state=held.channel.state)
        return WantReply(ok=True, epoch=self.epoch, state=_trade_state(held.channel))

    async def _reply(self, msg: Msg, reply: WantReply) -> None:
        if not msg.reply:
            return  # a plain publish: nobody waits
        try:
            await msg.respond(_encode(reply))
        except Exception:  # disconnected: the edge's request times out and it asks again
            self.stats["errors"] += 1

    def _release(self, held: _Held, give_up: bool = True) -> None:
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

    def _snapshot(self, held: _HeldBook) -> None:
        book = held.channel.book
        bids, asks = book.top()
        held.seq += 1
        held.snapshot_at = self._clock()
        self.stats["snapshots"] += 1
        self._send(held, held.snap, BookSnapshot(
            self.epoch, held.seq, book.update_id, book.timestamp, bids, asks, time.time_ns()))

    def _want_snapshot(self, held: _HeldBook) -> None:
        if not held.synced():
            return  # the channel's next snapshot is published anyway
        wait = SNAPSHOT_MIN_INTERVAL - (self._clock() - held.snapshot_at)
        if wait <= 0:
            self._snapshot(held)
        elif held.snapshot_later is None:  # one deferred snapshot answers every want meanwhile
            held.snapshot_later = asyncio.get_running_loop().call_later(
                min(wait, SNAPSHOT_MIN_INTERVAL), self._deferred_snapshot, held)

    def _deferred_snapshot(self, held: _HeldBook) -> None:
        held.snapshot_later = None
        if self._held.get(held.key) is held and held.synced():
            self._snapshot(held)

    def tick(self) -> None:
        """One pass of the timer at ``clock()``: expired leases, due snapshots, heartbeats."""
        config, now = self.config, self._clock()
        quiet = config.heartbeat_seconds * QUIET
        if self.owners is not None and now - self._alive_at >= config.heartbeat_seconds:
            self._alive_at = now
            self._spawn(self.owners.alive())
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

    async def _check_owner(self, held: _Held) -> None:
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

    def _send(self, held: _Held, subject: str, message: msgspec.Struct) -> None:
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
