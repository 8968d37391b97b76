"""A trade channel: one running upstream trade feed, its clients and its recent trades.

Invariants:
- A trade channel keeps the last ``TRADE_MEMORY`` trades. On a venue with ``live_trades``,
  once the feed has reported its subscription live, one REST fetch (shared by every request
  that comes meanwhile) seeds that memory; from then until the feed reports it lost, recent
  trades are served from it without any REST call; a trade both the seed and the feed carry
  (before or after the seed lands) is kept once, by trade id. Otherwise concurrent requests
  share one REST fetch. A feed's reports are idempotent: "up" while up, or "down" while
  down, changes nothing.
- A trade channel's ``listeners`` (the cluster feed's publisher) are told, in the feed's own
  call, every ``on_trades`` batch (venue units, as received) and every change of connection;
  with no listener the feed pays one emptiness check per event. A listener that raises is
  logged and does not disturb the feed or the other listeners.
- WebSocket clients get trades in batches (one per loop iteration, each naming its market).
  When the feed is lost (trades may be missed), they get the book's
  ``{"type":"resync","state":"disconnected"}`` message at once, after the trades that came
  before it, once per drop (the feed's first report of "down" counts as a drop, even if it was
  never up); a client that joins while it is down gets it at once too. Trades resume without
  a snapshot.
- For ``GET /feeds`` (``status()``): the feed is ``connecting`` until its first report (or,
  on a venue that reports no connection, its first trades), then ``synced`` while up and
  ``disconnected`` while down; every drop counts as a resync, with its reason. A batch
  costs one counter, one clock read and two attribute writes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Protocol

import msgspec

from astra.core import FeedState, FeedStatus, Trade, TradesMessage

from .channels import Channel, Client, public_reason, resync_frame

_time_ns = time.time_ns

__all__ = ["TRADE_MEMORY", "TradeChannel", "TradeListener"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
TRADE_MEMORY = 1000  # trades a channel remembers: the largest ``GET /trades`` limit


class TradeListener(Protocol):
    """Told by a ``TradeChannel`` about its feed (trades in the venue's units)."""

    def trade_batch(self, channel: TradeChannel, trades: list[Trade]) -> None: ...

    def trade_connection(self, channel: TradeChannel, up: bool, reason: str) -> None: ...


class TradeChannel(Channel):
    """TradeSink: trades arriving in one loop iteration go out as one batch; the last
    ``TRADE_MEMORY`` are remembered for ``GET /trades``."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._pending: list[Trade] = []
        self.recent: deque[Trade] = deque(maxlen=TRADE_MEMORY)  # venue units, oldest first
        # The feed said its connection is up (True) or down (False); None until its first
        # report, so that a feed down from the very start is reported like any drop.
        self.live: bool | None = None
        self.complete = False  # ``recent`` holds every trade since the seed
        self._connection = itertools.count()
        self.connection = next(self._connection)  # changes whenever the connection does
        self.down: FeedState | None = None  # since the connection dropped, until it is up
        # The seed's trade ids: pushes in flight when it was read may repeat them; emptied at
        # the first push of a trade the seed lacks (the feed has moved past the seed).
        self._seeded: set[str] = set()
        self._fetch: asyncio.Task[list[Trade]] | None = None
        self.listeners: set[TradeListener] = set()  # internal consumers (the cluster feed)
        self.since = time.time_ns() // 1_000_000  # when ``live`` last changed (ms)

    async def _run(self) -> None:
        await self.engine.source.run_trade_feed(self.venue, self.market, self)

    async def stop(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
        await super().stop()

    def add_client(self, client: Client) -> None:
        self.clients.add(client)
        if self.down is not None:  # not silence: it knows trades may be missing
            client.deliver(resync_frame(self.market.symbol, self.down))

    def on_connection(self, up: bool, reason: str = "") -> None:
        if up == self.live:
            return  # repeated (e.g. every subscription of one connection confirmed)
        self.live, self.complete = up, False
        self.since = time.time_ns() // 1_000_000
        self.connection = next(self._connection)
        self.recent.clear()  # a gap may start here: seed again once it is up
        self._seeded = set()
        if self.listeners:
            self._tell("trade_connection", up, reason)
        if up:
            self.down = None
            return
        log.info("%s trades: connection down (%s)", self.market.symbol, reason)
        if self._pending:
            self._flush()  # what came before the drop goes out before the resync
        reason = public_reason(reason) if reason else "disconnected"
        self._note_resync(reason)
        self.down = FeedState(state="disconnected", since=self.since, reason=reason)
        if self.clients:
            self._fan_out(resync_frame(self.market.symbol, self.down))

    def status(self) -> FeedStatus:
        """This trade feed's row of ``GET /feeds``."""
        live = self.live
        if live is None:  # no report yet: a venue that sends none is up once trades flow
            state = "synced" if self.updates else "connecting"
        else:
            state = "synced" if live else "disconnected"
        reason = self.down.reason if self.down is not None else None
        return self._status(state, self.since, reason)

    def on_trades(self, trades: list[Trade]) -> None:
        if trades:
            self.updates += len(trades)
            self.received_ns = _time_ns()
            self.event_ms = trades[-1].time
        seeded = self._seeded  # a push still in flight when the seed was read: kept once
        if seeded:
            fresh = [t for t in trades if t.trade_id not in seeded]
            if fresh:  # pushes come oldest first: none after this one can be in the seed
                self._seeded = set()
            self.recent.extend(fresh)
        else:
            self.recent.extend(trades)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.extend(trades)
        if self.listeners:
            self._tell("trade_batch", trades)

    def _flush(self) -> None:
        trades, self._pending = self._pending, []
        if not trades:
            return  # flushed early (a drop)
        self.engine.stats["trades"] += len(trades)
        if self.clients:
            if self.units is not None:  # converted only when someone receives them
                trades = self.units.trades(trades)
            frame = _encode(TradesMessage(trades=trades, market=self.market.symbol))
            self._fan_out(frame)

    async def recent_trades(self, limit: int) -> list[Trade]:
        """The last ``limit`` trades (venue units, oldest first): from memory when it is
        complete, else from the one REST fetch in flight (started if none is)."""
        if not self.complete:
            fetch = self._fetch
            if fetch is None:
                fetch = self._fetch = asyncio.create_task(self._seed())
                fetch.add_done_callback(self._fetched)
            fetched = await asyncio.shield(fetch)
            if not self.complete:
                return fetched[-limit:]
        start = max(0, len(self.recent) - limit)
        return list(itertools.islice(self.recent, start, None))

    def _fetched(self, task: asyncio.Task) -> None:
        if self._fetch is task:
            self._fetch = None
        if not task.cancelled():
            task.exception()  # retrieved: each waiter got it already

    async def _seed(self) -> list[Trade]:
        connection, live = self.connection, self.live
        trades = await self.venue.recent_trades(self.market, TRADE_MEMORY)
        if live and self.venue.live_trades and connection == self.connection:
            # The feed was up before the fetch was sent: it delivered every trade the fetch
            # may have missed; the ones both saw are dropped by id.
            seen = {t.trade_id for t in trades if t.trade_id is not None}
            later = [t for t in self.recent if t.trade_id is None or t.trade_id not in seen]
            self.recent = deque(itertools.chain(trades, later), maxlen=TRADE_MEMORY)
            self.complete, self._seeded = True, seen
        return trades
