"""The feed node's publisher against a real nats-server and the real simulator: a raw NATS
subscriber rebuilds the feed engine's own book from the snapshot and seq-contiguous deltas
(across a venue reconnect too), wants are always answered (with the AstraError code when
refused), heartbeats carry the last seq, leases release the channel, snapshots come on
demand without storms, trades are published, and the JetStream stream has its retention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import nats
import pytest

from astra.cluster import wire
from astra.cluster.feed import FeedPublisher, ensure_stream
from astra.cluster.wire import (
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
from astra.core import DataType
from astra.marketdata.engine import MarketDataEngine
from astra.venues import build_venue

BTC = "SIM-SPOT-BTC-USDT"
SOL = "SIM-SPOT-SOL-USDT"


class Clock:
    """A clock the test moves by hand (``FeedPublisher``'s timer reads it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Book:
    """The engine channel's own book at each update id (a second listener on the channel)."""

    def __init__(self) -> None:
        self.at: dict[int, tuple[dict, dict]] = {}

    def book_snapshot(self, channel) -> None:
        self.book_update(channel, [], [])

    def book_update(self, channel, bids, asks) -> None:
        book = channel.book
        self.at[book.update_id] = (dict(book.bids), dict(book.asks))

    def book_state(self, channel) -> None:
        pass


class Collector:
    """A raw subscriber: every message of a subject, decoded, in arrival order."""

    def __init__(self, decode: Callable[[bytes], object]) -> None:
        self.decode = decode
        self.messages: list[tuple[str, object]] = []

    async def on(self, msg) -> None:
        self.messages.append((msg.subject, self.decode(msg.data)))

    def of(self, kind: type) -> list:
        return [m for _, m in self.messages if isinstance(m, kind)]


async def until(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the feed (another task) makes it true
            await asyncio.sleep(0.01)


async def want(nc, market: str, data_type: str = "ORDERBOOK", snapshot: bool = False
               ) -> WantReply:
    request = Want(market=market, data_type=data_type, edge="test", snapshot=snapshot)
    async with asyncio.timeout(15):
        while True:
            try:
                msg = await nc.request(wire.WANT_SUBJECT, wire.encode(request), timeout=5)
                break
            except nats.errors.NoRespondersError:
                # A client reconnecting under CI load (its subscriptions re-sent) answers
                # the next want; an edge asks again the same way.
                await asyncio.sleep(0.05)
    return msgspec.msgpack.decode(msg.data, type=WantReply)


@pytest.fixture
async def node(sim, nats_server):
    """``(engine, feed connection, subscriber connection)`` over the simulator and NATS."""
    engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})}, linger=0.2)
    nc = await nats.connect(nats_server.url, reconnect_time_wait=0.1)
    sub = await nats.connect(nats_server.url, reconnect_time_wait=0.1)
    try:
        yield engine, nc, sub
    finally:
        await sub.close()
        await nc.close()
        await engine.close()


async def publisher(engine, nc, clock: Callable[[], float] | None = None, **settings
                    ) -> FeedPublisher:
    config = ClusterConfig(**settings)
    kwargs = {"clock": clock} if clock is not None else {}
    return await FeedPublisher(engine, nc, config, **kwargs).start()


def mirror(messages: list, truth: Book) -> int:
    """Apply ``messages`` (snapshot first, then seq order) as an edge would; assert the mirror
    equals the engine's book at every update id; returns how many updates were compared."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    compared, live = 0, False
    for msg in messages:
        if isinstance(msg, BookSnapshot):
            bids, asks, live = dict(msg.bids), dict(msg.asks), True
        elif isinstance(msg, BookResync):
            live = False
            continue
        elif isinstance(msg, BookDelta):
            assert live, "a delta after a resync, before its snapshot"
            for side, levels in ((bids, msg.bids), (asks, msg.asks)):
                for price, quantity in levels:
                    if quantity:
                        side[price] = quantity
                    else:
                        side.pop(price, None)
        else:
            continue
        assert (bids, asks) == truth.at[msg.update_id], f"diverged at {msg.update_id}"
        compared += 1
    return compared


def seqs(messages: list) -> list[int]:
    return [m.seq for m in messages if not isinstance(m, Heartbeat)]


async def test_mirror_of_snapshot_and_deltas_is_the_engines_book(node, nats_server):
    engine, nc, sub = node
    feed = await publisher(engine, nc, retention_seconds=45.0)
    try:
        venue, market = await engine.resolve(BTC)
        truth = Book()
        engine._channel(venue, market, DataType.ORDERBOOK).listeners.add(truth)
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "*"), cb=got.on)
        await sub.flush()
        reply = await want(sub, BTC)
        assert reply.ok and reply.epoch == feed.epoch and reply.error == ""
        assert feed.markets == [f"{BTC}/ORDERBOOK"]
        await until(lambda: len(got.of(BookDelta)) >= 15)
        messages = [m for _, m in got.messages]
        first_subject, first = got.messages[0]
        assert isinstance(first, BookSnapshot) and first_subject == wire.book_subject(BTC, "snap")
        assert first.bids and first.asks and first.bids[0][0] < first.asks[0][0]
        assert all(s == wire.book_subject(BTC, "upd") for s, m in got.messages
                   if isinstance(m, BookDelta))
        assert {m.epoch for m in messages} == {feed.epoch}
        assert seqs(messages) == list(range(1, len(seqs(messages)) + 1))
        assert mirror(messages, truth) >= 16
        assert feed.stats["published"] >= 16 and feed.stats["bytes"] > 0
        assert feed.stats["snapshots"] >= 1 and feed.stats["errors"] == 0

        # The stream: both subject trees in memory for the configured retention, the last
        # snapshot readable by subject (what an edge starts from).
        js = nc.jetstream()
        info = await js.stream_info(wire.STREAM)
        assert info.config.max_age == 45.0
        assert info.config.storage == "memory"
        assert set(info.config.subjects) == {wire.BOOK_SUBJECTS, wire.TRADE_SUBJECTS}
        last = await js.get_last_msg(wire.STREAM, wire.book_subject(BTC, "snap"), direct=True)
        stored = wire.decode_book(last.data)
        assert isinstance(stored, BookSnapshot) and (stored.epoch, stored.seq) == (feed.epoch, 1)
        await ensure_stream(js, ClusterConfig(retention_seconds=60.0))  # another feed's
        assert (await js.stream_info(wire.STREAM)).config.max_age == 60.0
        await ensure_stream(js, ClusterConfig(retention_seconds=60.0))  # idempotent
    finally:
        await feed.close()
    assert feed.markets == [] and engine.channels[(BTC, DataType.ORDERBOOK)].refs == 0


async def test_a_venue_reconnect_is_a_resync_then_a_snapshot_in_one_seq(node, sim):
    engine, nc, sub = node
    feed = await publisher(engine, nc)
    try:
        venue, market = await engine.resolve(BTC)
        truth = Book()
        engine._channel(venue, market, DataType.ORDERBOOK).listeners.add(truth)
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "*"), cb=got.on)
        await sub.flush()
        assert (await want(sub, BTC)).ok
        await until(lambda: len(got.of(BookDelta)) >= 3)
        assert sim.exchange.drop_connections() >= 1
        await until(lambda: len(got.of(BookSnapshot)) >= 2)
        await until(lambda: isinstance(got.messages[-1][1], BookDelta))
        messages = [m for _, m in got.messages]
        resync = got.of(BookResync)[0]
        assert resync.reason.startswith("reconnecting") and resync.epoch == feed.epoch
        assert messages.index(resync) < messages.index(got.of(BookSnapshot)[1])
        assert seqs(messages) == list(range(1, len(seqs(messages)) + 1))
        assert mirror(messages, truth) >= 5
    finally:
        await feed.close()


async def test_wants_that_cannot_be_served_are_answered_with_the_reason(node):
    engine, nc, sub = node
    feed = await publisher(engine, nc)
    try:
        for market, data_type, code, words in (
            ("SIM-SPOT-NOPE-USDT", "ORDERBOOK", "MARKET_NOT_FOUND", "not found"),
            ("BINANCE-SPOT-BTC-USDT", "ORDERBOOK", "MARKET_NOT_FOUND", "not served"),
            ("SIM-SPOTX-BTC", "ORDERBOOK", "INVALID_MARKET", "SIM-SPOTX-BTC"),
            ("sim.spot.>", "TRADE", "INVALID_MARKET", ""),
            ("SMART-SPOT-BTC-USDT", "ORDERBOOK", "INVALID_MARKET", "consolidated on each edge"),
            (BTC, "CANDLES", "INVALID_PARAMETER", "ORDERBOOK or TRADE"),
        ):
            reply = await want(sub, market, data_type)
            assert (reply.ok, reply.code) == (False, code), (market, reply)
            assert words in reply.error and reply.epoch == ""
        msg = await sub.request(wire.WANT_SUBJECT, b"\xc1 not msgpack", timeout=5)
        reply = msgspec.msgpack.decode(msg.data, type=WantReply)
        assert (reply.ok, reply.code) == (False, "INVALID_PARAMETER")
        assert reply.error.startswith("malformed want")
        assert feed.markets == [] and not engine.channels
        assert (await want(sub, BTC)).ok  # still serving
        assert feed.stats["wants"] == 8
    finally:
        await feed.close()


async def test_heartbeats_snapshots_and_leases_follow_the_clock(node):
    engine, nc, sub = node
    clock = Clock()
    feed = await publisher(engine, nc, clock, heartbeat_seconds=1.0, snapshot_seconds=30.0,
                           lease_seconds=40.0)
    try:
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "*"), cb=got.on)
        await sub.flush()
        assert (await want(sub, BTC)).ok
        await until(lambda: len(got.messages) >= 2)

        # Quiet for a heartbeat: one heartbeat, on .upd, carrying the last seq (not a new one).
        clock.now += 1.0
        last = feed._held[f"{BTC}/ORDERBOOK"].seq
        feed.tick()
        await until(lambda: got.of(Heartbeat))
        beat = got.of(Heartbeat)[0]
        assert (beat.epoch, beat.seq, beat.synced) == (feed.epoch, last, True)
        subject = next(s for s, m in got.messages if m is beat)
        assert subject == wire.book_subject(BTC, "upd") and feed.stats["heartbeats"] == 1
        feed.tick()  # just said: nothing more
        assert feed.stats["heartbeats"] == 1

        # snapshot_seconds later (the lease renewed meanwhile): the book again, next seq.
        assert (await want(sub, BTC)).ok
        before = feed.stats["snapshots"]
        clock.now += 30.0
        last = feed._held[f"{BTC}/ORDERBOOK"].seq
        feed.tick()
        assert feed.stats["snapshots"] == before + 1
        await until(lambda: len(got.of(BookSnapshot)) == 2)
        assert got.of(BookSnapshot)[1].seq == last + 1

        # A want renews the lease; lease_seconds without one release the channel.
        channel = engine.channels[(BTC, DataType.ORDERBOOK)]
        assert (await want(sub, BTC)).ok
        clock.now += 39.0
        feed.tick()
        assert feed.markets == [f"{BTC}/ORDERBOOK"] and channel.refs == 1
        clock.now += 1.0
        last = feed._held[f"{BTC}/ORDERBOOK"].seq
        feed.tick()
        assert feed.markets == [] and channel.refs == 0 and not channel.listeners
        await until(lambda: (BTC, DataType.ORDERBOOK) not in engine.channels)  # its linger

        # A re-want starts again from a snapshot, the seq going on in the same epoch.
        count = len(got.messages)
        reply = await want(sub, BTC)
        assert reply.ok and reply.epoch == feed.epoch and reply.state == "connecting"
        await until(lambda: len(got.messages) > count)
        again = got.messages[count][1]
        assert isinstance(again, BookSnapshot) and (again.epoch, again.seq) == (feed.epoch,
                                                                                 last + 1)
    finally:
        await feed.close()


async def test_the_timer_sends_heartbeats_by_itself(node):
    engine, nc, sub = node
    feed = await publisher(engine, nc, heartbeat_seconds=0.05)
    try:
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "*"), cb=got.on)
        await sub.flush()
        assert (await want(sub, BTC)).ok
        await until(lambda: len([m for m in got.of(Heartbeat) if m.seq]) >= 3)
        last, synced = 0, False  # before the first snapshot: seq 0, not synced
        for _, msg in got.messages:
            if isinstance(msg, Heartbeat):
                assert (msg.epoch, msg.seq, msg.synced) == (feed.epoch, last, synced)
            else:
                last, synced = msg.seq, True
    finally:
        await feed.close()


async def test_snapshot_wants_are_answered_without_a_storm(node):
    engine, nc, sub = node
    clock = Clock()
    feed = await publisher(engine, nc, clock)
    try:
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "snap"), cb=got.on)
        await sub.flush()
        assert (await want(sub, BTC)).ok
        await until(lambda: len(got.messages) == 1)
        held = feed._held[f"{BTC}/ORDERBOOK"]
        # Ten edges resyncing at once, within 100 ms of the last snapshot: one more, deferred.
        replies = await asyncio.gather(*(want(sub, BTC, snapshot=True) for _ in range(10)))
        assert all(r.ok and r.state == "synced" for r in replies)
        assert held.snapshot_later is not None and feed.stats["snapshots"] == 1
        await until(lambda: len(got.messages) == 2)
        assert held.snapshot_later is None and feed.stats["snapshots"] == 2
        # Later than that: at once.
        clock.now += 1.0
        assert (await want(sub, BTC, snapshot=True)).ok
        assert feed.stats["snapshots"] == 3
        await until(lambda: len(got.messages) == 3)
        first, second, third = (m for _, m in got.messages)
        assert first.seq < second.seq < third.seq
        assert third.update_id >= second.update_id >= first.update_id
    finally:
        await feed.close()


async def test_trades_are_published_with_their_own_seq(node):
    engine, nc, sub = node
    feed = await publisher(engine, nc)
    try:
        got = Collector(wire.decode_trade)
        await sub.subscribe(wire.trade_subject(SOL), cb=got.on)
        await sub.flush()
        reply = await want(sub, SOL, "TRADE")
        assert reply.ok and reply.epoch == feed.epoch
        assert feed.markets == [f"{SOL}/TRADE"]
        await until(lambda: len(got.of(TradeBatch)) >= 2)
        messages = [m for _, m in got.messages]
        assert seqs(messages) == list(range(1, len(seqs(messages)) + 1))
        up = got.of(TradeConnection)
        sequenced = [m for m in messages if not isinstance(m, Heartbeat)]  # (beats: any time)
        assert up and up[0].up and sequenced.index(up[0]) == 0
        published = [t for batch in got.of(TradeBatch) for t in batch.trades]
        channel = engine.channels[(SOL, DataType.TRADE)]
        assert published == list(channel.recent)[:len(published)]
        assert all(t.price > 0 and t.quantity > 0 for t in published)
        assert (await want(sub, SOL, "TRADE")).state == "synced"
    finally:
        await feed.close()
    assert not channel.listeners and channel.refs == 0


async def test_publishing_goes_on_across_a_nats_restart(node, nats_server):
    engine, nc, sub = node
    feed = await publisher(engine, nc)
    try:
        got = Collector(wire.decode_book)
        await sub.subscribe(wire.book_subject(BTC, "*"), cb=got.on)
        await sub.flush()
        assert (await want(sub, BTC)).ok
        await until(lambda: len(got.messages) >= 3)
        nats_server.restart()
        seen = got.messages[-1][1].seq
        # Both connections come back by themselves; the feed's seq goes on in one epoch
        # (what was lost while it was down is a gap the edge resyncs from).
        await until(lambda: got.messages[-1][1].seq > seen + 3)
        assert {m.epoch for _, m in got.messages} == {feed.epoch}
        assert feed.markets == [f"{BTC}/ORDERBOOK"]
        assert (await want(sub, BTC)).ok  # wants are answered again
    finally:
        await feed.close()
