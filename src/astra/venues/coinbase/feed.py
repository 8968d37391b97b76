"""Coinbase Advanced Trade market data: ``level2`` books and ``market_trades`` over
``wss://advanced-trade-ws.coinbase.com``, routed from shared connections to our sinks.

This module is the pure part (bytes in, sink calls out, no I/O); ``connection.py`` owns the
sockets. Each connection carries one data channel plus ``heartbeats`` for several products.

Integrity rule (per connection):
- Every message on a connection, whatever its channel (``l2_data``, ``heartbeats``,
  ``subscriptions``, ...), carries ``sequence_num``, a connection-wide counter that grows by
  exactly one per message. ``sequence_num > previous + 1`` means messages were lost, and
  nothing tells which product they belonged to: every book on that connection stops (its
  sinks get ``on_resync``), and the connection resubscribes them (``unsubscribe`` then
  ``subscribe`` level2) to get fresh ``snapshot`` events. Updates arriving before a
  product's new snapshot are dropped, never applied.
- ``sequence_num <= previous`` (the docs: "can be ignored or arrived out of order") cannot
  happen on one TCP stream unless the counter restarted; ignoring it could stall a book
  forever, so it raises ``SequenceRegression`` and the connection is reopened.
- A book is synced only by a ``snapshot`` event; ``update`` events carry absolute
  ``new_quantity`` per ``price_level`` (0 deletes) and ``side`` "bid"/"offer". A product
  whose snapshot does not come within ``snapshot_timeout`` of (re)subscribing raises
  ``SnapshotTimeout`` (connection reopened).
- The update id we publish is the message's ``sequence_num`` (it restarts on a new
  connection, which always begins with a new snapshot); the timestamp is the message's.
- A lost or refused connection tells every book sink on it, synced yet or not,
  ``on_resync("reconnecting: ...")`` (``disconnected``), on every failed attempt.

Trades: every trade of an ``update`` is forwarded (a trade id already forwarded is not
sent twice). A gap on a ``market_trades`` connection resubscribes its products too; the
``snapshot`` event that follows (recent trades) fills the hole: its trades that were not
forwarded and are no older than the oldest trade remembered are sent. Coinbase documents
``trade_id`` as a string, not as increasing, and many trades share a millisecond, so neither
is compared for order: the last ``_REMEMBERED`` trade ids are kept per product instead. The
first snapshot after subscribing is history: remembered, not forwarded. A trade sink hears
that its product is live (``on_connection``) once the venue confirms the subscription (the
``subscriptions`` answer listing it, or its snapshot), and that it is not on every gap and
every lost connection (trades may be missed: the gateway re-reads them over REST).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from astra.core import Trade
from astra.venues.base import BookSink, TradeSink
from astra.venues.book import L2Book

from .schemas import L2Data, MarketTrades, Subscriptions, decode_message, iso_ms

__all__ = [
    "BookRouter",
    "Router",
    "SequenceCheck",
    "SequenceRegression",
    "SnapshotTimeout",
    "TradeRouter",
]

log = logging.getLogger(__name__)


class SequenceRegression(Exception):
    """``sequence_num`` went backwards on one connection: the counter restarted."""


class SnapshotTimeout(Exception):
    """A subscribed product never received its snapshot."""


class SequenceCheck:
    """The connection-wide ``sequence_num`` chain."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: int | None = None

    def reset(self) -> None:
        self.last = None

    def check(self, seq: int) -> bool:
        """True when ``seq`` continues the chain, False on a gap (the chain then continues
        from ``seq``). Raises SequenceRegression when it goes backwards."""
        last = self.last
        if last is None or seq == last + 1:
            self.last = seq
            return True
        if seq > last:
            self.last = seq
            return False
        raise SequenceRegression(f"sequence_num {seq} after {last}")


class _BookSub:
    __slots__ = ("market", "sink", "synced")

    def __init__(self, market: str, sink: BookSink) -> None:
        self.market, self.sink, self.synced = market, sink, False


class Router:
    """What both routers share: subscribers per product, the sequence chain, snapshot wait."""

    channel = ""

    def __init__(self, snapshot_timeout: float = 30.0) -> None:
        self.products: dict[str, list] = {}
        self.sequence = SequenceCheck()
        self.snapshot_timeout = snapshot_timeout
        self.waiting: dict[str, float] = {}  # product -> (loop) time it started waiting
        self.stats = {"gaps": 0}

    def _new_sub(self, sink: object, market: str):
        raise NotImplementedError

    def add(self, product: str, sink: object, now: float, market: str = "") -> bool:
        """Add a subscriber; True when the product is new to this connection."""
        subs = self.products.get(product)
        new = subs is None
        if subs is None:
            subs = self.products[product] = []
        subs.append(self._new_sub(sink, market))
        self.waiting.setdefault(product, now)
        return new

    def remove(self, product: str, sink: object) -> bool:
        """Remove a subscriber; True when the product has none left (unsubscribe it)."""
        subs = self.products.get(product)
        if subs is None:
            return False
        subs[:] = [s for s in subs if s.sink is not sink]
        if subs:
            return False
        del self.products[product]
        self.waiting.pop(product, None)
        return True

    def connected(self, now: float) -> None:
        """A new connection: a new chain, and every product awaits a snapshot."""
        self.sequence.reset()
        self.waiting = dict.fromkeys(self.products, now)

    def disconnected(self, reason: str) -> None:
        pass

    def check_timeouts(self, now: float) -> None:
        if self.waiting:
            product, since = min(self.waiting.items(), key=lambda kv: kv[1])
            if now - since > self.snapshot_timeout:
                raise SnapshotTimeout(
                    f"no {self.channel} snapshot for {product} in {self.snapshot_timeout:g} s"
                )

    def on_message(self, data: bytes | str, now: float) -> list[str]:
        """Route one message; returns the products to resubscribe (after a gap)."""
        msg = decode_message(data)
        seq = msg.sequence_num
        chain = self.sequence
        last = chain.last
        if last is not None and seq != last + 1 and seq is not None:
            if not chain.check(seq):  # raises SequenceRegression when it went backwards
                self.stats["gaps"] += 1
                self._on_gap(f"sequence gap: sequence_num {seq} after {last}")
                self.waiting = dict.fromkeys(self.products, now)
                return list(self.products)
        elif seq is not None:
            chain.last = seq  # the common case, inlined
        self._on_data(msg)
        return []

    def _on_gap(self, reason: str) -> None:
        raise NotImplementedError

    def _on_data(self, msg: object) -> None:
        raise NotImplementedError


class BookRouter(Router):
    """``level2`` messages of one connection -> BookSink calls, per the integrity rule."""

    channel = "level2"

    def _new_sub(self, sink: BookSink, market: str) -> _BookSub:
        return _BookSub(market, sink)

    def _unsync(self, reason: str, *, everyone: bool = False) -> None:
        for subs in self.products.values():
            for sub in subs:
                if sub.synced or everyone:
                    sub.synced = False
                    sub.sink.on_resync(reason)

    def disconnected(self, reason: str) -> None:
        # Every subscriber, synced or not: a book that never synced (the venue down from the
        # start) must learn it too, or its readers wait for a snapshot that cannot come.
        self._unsync(reason, everyone=True)

    def _on_gap(self, reason: str) -> None:
        log.warning("coinbase level2: %s; resyncing %d products", reason, len(self.products))
        self._unsync(reason)

    def _on_data(self, msg: object) -> None:
        if type(msg) is not L2Data:
            return  # heartbeats, subscriptions: they only count in the sequence
        events = msg.events
        if len(events) == 1 and events[0].type == "update":  # the hot path
            event = events[0]
            subs = self.products.get(event.product_id)
            if subs is not None:  # None: still in flight after an unsubscribe
                bids, asks = event.to_changes()
                seq, ts = msg.sequence_num, iso_ms(msg.timestamp)
                for sub in subs:
                    if sub.synced:  # unsynced ones wait for their snapshot
                        sub.sink.on_update(seq, ts, bids, asks)
            return
        self._on_events(msg)

    def _on_events(self, msg: L2Data) -> None:
        """Snapshots, and messages carrying several events (applied in their order)."""
        products = self.products
        snaps: dict | None = None
        ups: dict[str, tuple[list, list]] = {}
        for ev in msg.events:
            pid = ev.product_id
            if pid not in products:
                continue
            kind = ev.type
            if kind == "update":
                bids, asks = ev.to_changes()
                acc = ups.get(pid)
                if acc is None:
                    ups[pid] = (bids, asks)
                else:  # several events for one product in one message: keep their order
                    acc[0].extend(bids)
                    acc[1].extend(asks)
            elif kind == "snapshot":
                if snaps is None:
                    snaps = {}
                snaps[pid] = ev.to_changes()
                ups.pop(pid, None)  # updates before a snapshot are inside it
            else:
                raise ValueError(f"unknown level2 event type {kind!r}")
        if not snaps and not ups:
            return
        seq, ts = msg.sequence_num, iso_ms(msg.timestamp)
        if snaps:
            for pid, (bids, asks) in snaps.items():
                # Updates after the snapshot in the same message share its update id: fold them
                # in, so clients never see an update that does not follow its snapshot's id.
                extra = ups.pop(pid, None)
                for sub in products[pid]:
                    book = L2Book(sub.market)
                    book.reset(bids, asks, seq, ts)
                    if extra:
                        book.apply(extra[0], extra[1], seq, ts)
                    sub.synced = True
                    sub.sink.on_snapshot(book)
                self.waiting.pop(pid, None)
        for pid, (bids, asks) in ups.items():
            for sub in products[pid]:
                if sub.synced:
                    sub.sink.on_update(seq, ts, bids, asks)


_REMEMBERED = 1000  # trade ids kept per product: far more than a snapshot holds


class _TradeSub:
    """One trade subscriber and the trades it has had (forwarded, or history), in arrival
    order, as ``trade_id -> time``."""

    __slots__ = ("seen", "sink", "started")

    def __init__(self, sink: TradeSink) -> None:
        self.sink = sink
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.started = False  # the first snapshot (or update) has come

    def take(self, trades: list[Trade], snapshot: bool) -> list[Trade]:
        """The trades of one event to forward, oldest first, remembering them all."""
        seen = self.seen
        if snapshot and not self.started:  # the first snapshot after subscribing: history
            out = []
        elif snapshot:  # after a gap: what was missed since the oldest trade remembered
            oldest = min(seen.values(), default=0)
            out = [t for t in trades if t.trade_id not in seen and t.time >= oldest]
        else:
            out = [t for t in trades if t.trade_id not in seen]
        self.started = True
        for t in trades:
            seen[t.trade_id] = t.time
        while len(seen) > _REMEMBERED:
            # Not ``del seen[next(iter(seen))]`` on a dict: its iteration steps over every
            # slot already deleted, O(n) per trade once full; this is O(1).
            seen.popitem(last=False)
        return out


class TradeRouter(Router):
    """``market_trades`` messages of one connection -> TradeSink calls (oldest first)."""

    channel = "market_trades"

    def _new_sub(self, sink: TradeSink, market: str) -> _TradeSub:
        return _TradeSub(sink)

    def _on_gap(self, reason: str) -> None:
        log.warning("coinbase market_trades: %s; backfilling from new snapshots", reason)
        self.disconnected(reason)

    def disconnected(self, reason: str) -> None:
        for subs in self.products.values():
            for sub in subs:
                sub.sink.on_connection(False, reason)

    def _live(self, products) -> None:
        for pid in products:
            for sub in self.products.get(pid, ()):
                sub.sink.on_connection(True)

    def check_timeouts(self, now: float) -> None:
        pass  # a quiet product's trade snapshot may be empty: nothing to wait for

    def _on_data(self, msg: object) -> None:
        if type(msg) is Subscriptions:
            for ev in msg.events:
                self._live(ev.subscriptions.get(self.channel, ()))
            return
        if type(msg) is not MarketTrades:
            return
        products = self.products
        for ev in msg.events:
            by_product: dict[str, list[Trade]] = {}
            for raw in reversed(ev.trades):  # the venue sends newest first
                if raw.product_id in products:
                    by_product.setdefault(raw.product_id, []).append(raw.to_trade())
            snapshot = ev.type == "snapshot"
            if snapshot:  # the subscription's answer: every later trade comes
                self._live(by_product)
            for pid, trades in by_product.items():
                for sub in products[pid]:
                    out = sub.take(trades, snapshot)
                    if out:
                        sub.sink.on_trades(out)
