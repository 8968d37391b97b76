"""The cluster's market-data path against a hostile or broken third party on NATS, on a real
nats-server, the real simulator and a real edge engine (``MirrorSource``): whatever is
published on a market's subjects, the edge's book served to clients is the feed's or is
marked not synced (never frozen while "synced", never holding NaN, inf or a negative
quantity), and the edge converges again once the feed's own messages flow.

The feed is played by hand (``test_edge.ScriptedFeed``) so that every forged message lands
exactly where it hurts: in the feed's own epoch, with the next seq or far ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import msgspec
import nats
import pytest

from astra.cluster.feed import FeedPublisher
from astra.cluster.wire import (
    WANT_SUBJECT,
    BookDelta,
    BookSnapshot,
    ClusterConfig,
    Heartbeat,
    TradeBatch,
    Want,
    WantReply,
    book_subject,
    encode,
    trade_subject,
)
from astra.core import DataType, Side, Trade
from astra.marketdata.engine import MarketDataEngine
from astra.venues import build_venue

from .proxy import CutProxy
from .test_edge import (
    BTC,
    CONFIG,
    Edge,
    ScriptedFeed,
    _connect,
    as_client_book,
    books_level,
    real_feed_and_edge,
    seed,
    until,
)

HUGE_SEQ = 2**63


@pytest.fixture
async def feed(nats_server):
    feed = await ScriptedFeed(nats_server.url).start()
    try:
        yield feed
    finally:
        await feed.close()


def finite_frames(frames: list[dict]) -> bool:
    """No level a client received has a price or quantity that is not a finite number
    (NaN and inf leave msgspec's JSON as ``null``), nor a negative quantity."""
    for frame in frames:
        for side in ("bids", "asks"):
            for level in frame.get(side, ()):
                price, quantity = level["price"], level["quantity"]
                if not isinstance(price, float | int) or not isinstance(quantity, float | int):
                    return False
                if not (math.isfinite(price) and math.isfinite(quantity)) or quantity < 0:
                    return False
    return True


async def test_a_snapshot_far_ahead_in_the_feeds_epoch_does_not_freeze_the_book(
        nats_server, feed, sim):
    """A checkpoint with seq 2**63 in the feed's own epoch (a forger, or a corrupted feed):
    every genuine delta after it is "older". They must not be dropped for ever as repeats
    while the book is served as synced: the edge resyncs and follows the feed again."""
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            book = feed.books[BTC]
            bids, asks = book.levels()
            await feed._publish(book_subject(BTC, "snap"), BookSnapshot(
                feed.epoch, HUGE_SEQ, book.update_id, 1, bids, asks))
            await until(lambda: edge.source.stats["gaps"] == 1)
            feed.heartbeats(True)  # the feed is alive: the edge never falls silent
            for i in range(6):
                await feed.delta(BTC, bids=[(90.0 - i, 1.0 + i)])
            await edge.rest_settles(book.expected())
            await until(lambda: client.book() == as_client_book(book))
            await feed.delta(BTC, asks=[(101.0, 0.0)])  # and it follows again
            await edge.rest_settles(book.expected())
            assert edge.source.stats["gaps"] >= 2


async def test_a_heartbeat_behind_the_book_is_a_gap(nats_server, feed, sim):
    """A quiet market whose book was pushed ahead (seq 2**63): the feed's heartbeat says its
    last seq is far lower; the book is not the feed's, so it resyncs from a snapshot."""
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            book = feed.books[BTC]
            feed.auto_snapshot = False  # the forged base stays until the test's own snapshot
            await feed._publish(book_subject(BTC, "upd"), BookDelta(
                feed.epoch, HUGE_SEQ, book.update_id + 1, 1, [(42.0, 4.2)], []))
            await until(lambda: edge.state() == "resyncing")
            await feed._publish(book_subject(BTC, "snap"), BookSnapshot(
                feed.epoch, HUGE_SEQ, book.update_id, 1, [(42.0, 4.2)], []))
            await until(lambda: edge.state() == "synced")
            gaps = edge.source.stats["gaps"]
            await feed.heartbeat(BTC)  # the feed's last seq, far below the forged base
            await until(lambda: edge.source.stats["gaps"] > gaps)
            assert edge.state() != "synced"
            await feed.snapshot(BTC)
            await edge.rest_settles(book.expected())
            assert client.book() == as_client_book(book)


async def test_a_trade_seq_pushed_ahead_does_not_swallow_trades(nats_server, feed, sim):
    """A forged trade heartbeat at seq 2**63 in the feed's epoch: the genuine batches after it
    must reach clients (after a resync naming the gap), not vanish as "repeats"."""
    async with asyncio.timeout(60):
        feed.trade_seq[BTC] = 0
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe(BTC, DataType.TRADE)
            channel = edge.engine.channels[(BTC, DataType.TRADE)]
            await until(lambda: channel.live is True)
            await feed._publish(trade_subject(BTC), Heartbeat(feed.epoch, HUGE_SEQ))
            await until(lambda: edge.source.stats["gaps"] == 1)
            feed.heartbeats(True)  # the feed is alive: the edge never falls silent
            for price in (1.0, 2.0, 3.0, 4.0):
                await feed.trades(BTC, [price])
            prices = lambda: [t["price"] for f in client.frames for t in f.get("trades", ())]  # noqa: E731
            await until(lambda: 4.0 in prices())
            # Whatever was dropped before the edge saw through it was reported: a resync after
            # the forged heartbeat's and before the trades that follow.
            kinds = client.types()
            assert kinds.count("resync") >= 2 if prices() != [1.0, 2.0, 3.0, 4.0] else True


@pytest.mark.parametrize("bad", [
    [(float("nan"), 1.0)],
    [(99.5, float("nan"))],
    [(float("inf"), 1.0)],
    [(99.5, float("inf"))],
    [(99.5, -3.0)],
    [(-99.5, 1.0)],
])
async def test_a_delta_with_non_finite_or_negative_levels_is_never_applied(
        nats_server, feed, sim, bad):
    """A delta in sequence carrying NaN, inf, a negative quantity or price: never applied to
    the served book nor sent to clients; the book resyncs and converges on the feed's."""
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            book = feed.books[BTC]
            await feed._publish(book_subject(BTC, "upd"), BookDelta(
                feed.epoch, book.seq + 1, book.update_id + 1, 1, bad, []))
            await feed.delta(BTC, asks=[(101.0, 0.5)])  # the genuine one, same seq
            await feed.delta(BTC, bids=[(97.0, 0.0)])
            await edge.rest_settles(book.expected())
            await until(lambda: client.book() == as_client_book(book))
            assert finite_frames(client.frames), client.frames
            assert edge.source.stats["gaps"] >= 1


async def test_a_snapshot_with_non_finite_levels_is_not_served(nats_server, feed, sim):
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            book = feed.books[BTC]
            bids, asks = book.levels()
            await feed._publish(book_subject(BTC, "snap"), BookSnapshot(
                feed.epoch, book.seq + 5, book.update_id, 1,
                [*bids, (float("nan"), 1.0)], [*asks, (150.0, float("inf"))]))
            await feed.delta(BTC, bids=[(98.5, 2.0)])
            await edge.rest_settles(book.expected())
            await until(lambda: client.book() == as_client_book(book))
            assert finite_frames(client.frames), client.frames
            body = json.loads(await edge.engine.order_book(BTC))
            assert all(lv["price"] is not None for lv in body["bids"] + body["asks"])


async def test_garbage_on_the_subjects_resyncs_and_stays_bounded(nats_server, feed, sim):
    """Undecodable bytes, a trade message on a book subject, a 1 MB epoch, a delta at seq
    2**63, garbage on the trade subject: each one resyncs (or is ignored), none is applied,
    and the edge's book is the feed's again after each."""
    async with asyncio.timeout(90):
        await seed(feed)
        feed.trade_seq[BTC] = 0
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            trades = await edge.subscribe(BTC, DataType.TRADE)
            await until(lambda: client.types() == ["snapshot"])
            book = feed.books[BTC]
            upd = book_subject(BTC, "upd")
            garbage = [
                (upd, b"\xc1\xc1 not msgpack"),
                (upd, encode(TradeBatch(feed.epoch, book.seq + 1, []))),
                (upd, encode(BookDelta("e" * 1_000_000, book.seq + 1, 1, 1, [], []))),
                (upd, encode(BookDelta(feed.epoch, HUGE_SEQ, 1, 1, [(1.0, 1.0)], []))),
                (book_subject(BTC, "snap"), b"\x00" * 900_000),
                (trade_subject(BTC), b"\x93\xff\xff"),
            ]
            for subject, payload in garbage:
                await feed.js.publish(subject, payload)
                await feed.delta(BTC, bids=[(99.0 - len(payload) % 7, 1.0)])
                await edge.rest_settles(book.expected())
                assert client.book() == as_client_book(book) or client.types()[-1] == "resync"
            await until(lambda: client.book() == as_client_book(book))
            assert finite_frames(client.frames)
            mirror = next(m for m in edge.source._mirrors if m.data_type == "ORDERBOOK")
            assert len(mirror.epoch) < 100  # no forged megabyte kept as the book's epoch
            assert trades.types().count("resync") >= 1


async def test_a_real_feed_and_edge_converge_after_a_nats_server_restart(nats_server, sim):
    """The real ``FeedPublisher`` and an edge while deltas flow: the nats-server restarts (its
    memory stream and KV bucket are gone). The edge goes stale, then its book is the feed's
    again, level for level at equal update ids."""
    async with asyncio.timeout(90), real_feed_and_edge(nats_server.url, sim) as (
            edge, _client, mirrored, source):
        nats_server.restart()  # the stream and the consumers are gone: silence
        await until(lambda: edge.source.stats["stale"] >= 1)
        await until(lambda: edge.nc.is_connected)
        async with asyncio.timeout(30):
            await books_level(edge, mirrored, source, 5)


async def test_a_want_flood_for_unknown_markets_is_answered_and_holds_nothing(nats_server, sim):
    """Two thousand wants for distinct, valid-looking markets nobody lists: each is refused
    with MARKET_NOT_FOUND, and the feed holds no channel, no task and no seq for them."""
    async with asyncio.timeout(90):
        feed_nc = await nats.connect(nats_server.url)
        client = await nats.connect(nats_server.url)
        feed_engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})})
        publisher = await FeedPublisher(feed_engine, feed_nc, CONFIG).start()
        try:
            # The venue's markets loaded first: the flood tests the refusal, not the first
            # load (on a busy machine, that load alone can outlast want_timeout: VENUE_TIMEOUT).
            assert await feed_engine.markets("SIM")
            decode = msgspec.msgpack.Decoder(WantReply).decode

            async def ask(i: int) -> WantReply:
                want = Want(market=f"SIM-SPOT-X{i}-USDT", data_type="ORDERBOOK", edge="flood")
                msg = await client.request(WANT_SUBJECT, encode(want), timeout=20)
                return decode(msg.data)

            replies = []
            for start in range(0, 2000, 250):
                replies += await asyncio.gather(*(ask(i) for i in range(start, start + 250)))
            assert {(r.ok, r.code) for r in replies} == {(False, "MARKET_NOT_FOUND")}
            assert publisher.markets == [] and not feed_engine.channels
            assert publisher._seqs == {}
            await until(lambda: not publisher._tasks)
        finally:
            await publisher.close()
            await feed_engine.close()
            await client.close()
            await feed_nc.close()


async def test_a_feed_cut_off_and_taken_over_stops_publishing_when_it_comes_back(
        nats_server, sim):
    """Feed A owns a market; its link is cut past the silence bound and feed B takes the
    market over. When A's link comes back, A must stop publishing it at once (not at its next
    periodic snapshot, ``snapshot_seconds`` later): two epochs on one subject make every
    edge resync at each message."""
    config = ClusterConfig(heartbeat_seconds=0.2, silence_seconds=1.0, lease_seconds=60.0,
                           want_timeout=0.5, snapshot_seconds=60.0)
    key = f"{BTC}/ORDERBOOK"
    async with asyncio.timeout(60), contextlib.AsyncExitStack() as stack:
        proxy = await CutProxy(nats_server.port).start()
        stack.push_async_callback(proxy.close)
        client = await _connect(nats_server.url)
        stack.push_async_callback(client.close)
        nodes = []
        for url in (proxy.url, nats_server.url):  # A behind the cuttable link, B direct
            nc = await _connect(url)
            stack.push_async_callback(nc.close)
            engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})},
                                      linger=0.5)
            stack.push_async_callback(engine.close)
            publisher = await FeedPublisher(engine, nc, config).start()
            stack.push_async_callback(publisher.close)
            nodes.append((publisher, nc))
            if not nodes[1:]:
                assert (await ask(client)).epoch == publisher.epoch  # A owns the market
        (a, a_nc), (b, _) = nodes

        proxy.refusing = True
        proxy.cut()
        while True:  # B takes over once A's liveness is older than the silence bound
            # (no answer, or a moment with no subscriber known to the server, on a busy box)
            with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
                if (await ask(client)).epoch == b.epoch:
                    break
            await asyncio.sleep(0.1)
        assert key in b.markets and key in a.markets
        proxy.refusing = False
        await until(lambda: a_nc.is_connected)
        async with asyncio.timeout(8):  # far less than snapshot_seconds
            while key in a.markets:
                with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    await ask(client)  # the edges' renewals go on meanwhile
                await asyncio.sleep(0.1)
        assert key in b.markets


async def ask(nc, market: str = BTC) -> WantReply:
    """A want, as an edge sends it: asked again (for up to 5 s) while the server knows no
    subscriber, as when a connection is re-sending its subscriptions on a loaded machine."""
    async with asyncio.timeout(5):
        while True:
            try:
                msg = await nc.request(WANT_SUBJECT, encode(
                    Want(market=market, data_type="ORDERBOOK", edge="test")), timeout=2)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
    return msgspec.msgpack.decode(msg.data, type=WantReply)


@pytest.mark.parametrize("skew", [300.0, -300.0])
async def test_a_feed_clock_minutes_off_does_not_make_the_edge_flap(nats_server, feed, sim,
                                                                      skew):
    """The feed's wall clock five minutes ahead of (or behind) the edge's: its ``sent_ns`` is
    off by that much on every message, which the session's least delay absorbs; the lag check
    fires only on a real backlog (a message far later than the rest)."""
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            for i in range(30):
                await feed.delta(BTC, bids=[(95.0 - i % 5, 1.0 + i)],
                                 sent_ns=time.time_ns() + int(skew * 1e9))
                await asyncio.sleep(0.01)
            await until(lambda: client.book() == as_client_book(feed.books[BTC]))
            assert client.types() == ["snapshot"] + ["update"] * 30
            assert edge.source.stats["lagged"] == 0 and edge.source.stats["gaps"] == 0
            # A real backlog on that skewed clock is still caught.
            late = time.time_ns() + int((skew - 5 * CONFIG.lag_seconds) * 1e9)
            await feed.delta(BTC, bids=[(90.0, 1.0)], sent_ns=late)
            await until(lambda: edge.source.stats["lagged"] == 1)
            await edge.rest_settles(feed.books[BTC].expected())


async def test_a_trade_batch_with_non_finite_or_negative_values_is_not_passed_on(
        nats_server, feed, sim):
    async with asyncio.timeout(60):
        feed.trade_seq[BTC] = 0
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe(BTC, DataType.TRADE)
            channel = edge.engine.channels[(BTC, DataType.TRADE)]
            await until(lambda: channel.live is True)
            await feed.trades(BTC, [1.0])
            for price, quantity in ((math.nan, 1.0), (math.inf, 1.0), (2.0, -1.0), (-2.0, 1.0),
                                    (2.0, math.nan)):
                seq = feed.trade_seq[BTC] = feed.trade_seq[BTC] + 1
                await feed._publish(trade_subject(BTC), TradeBatch(feed.epoch, seq, [Trade(
                    price=price, quantity=quantity, side=Side.SELL, time=1, trade_id="bad")]))
            await feed.trades(BTC, [3.0])
            prices = lambda: [t["price"] for f in client.frames for t in f.get("trades", ())]  # noqa: E731
            await until(lambda: 3.0 in prices())
            assert prices() == [1.0, 3.0]
            assert edge.source.stats["gaps"] == 5 and channel.live is True
            assert "resync" in client.types()


async def test_a_want_flood_while_the_venue_is_mute_holds_a_bounded_number_of_tasks(
        nats_server):
    """Three thousand wants for distinct markets while the venue's market list never comes (a
    real loopback listener that accepts and says nothing): every want is answered (a timeout
    or OVERLOADED), and the feed never holds more than ``MAX_RESOLVING`` want tasks."""
    from astra.cluster.feed import MAX_RESOLVING

    async def mute(reader, writer) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # until the client gives up
        writer.close()

    async with asyncio.timeout(90), contextlib.AsyncExitStack() as stack:
        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        port = server.sockets[0].getsockname()[1]
        feed_nc = await nats.connect(nats_server.url)
        stack.push_async_callback(feed_nc.close)
        client = await nats.connect(nats_server.url, pending_size=64 * 1024 * 1024)
        stack.push_async_callback(client.close)
        engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": f"http://127.0.0.1:{port}"})})
        stack.push_async_callback(engine.close)
        config = ClusterConfig(want_timeout=3.0)
        publisher = await FeedPublisher(engine, feed_nc, config).start()
        stack.push_async_callback(publisher.close)
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(publisher._tasks))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        stack.callback(watcher.cancel)

        async def ask_for(i: int) -> WantReply:
            want = Want(market=f"SIM-SPOT-Y{i}-USDT", data_type="ORDERBOOK", edge="flood")
            msg = await client.request(WANT_SUBJECT, encode(want), timeout=30)
            return msgspec.msgpack.decode(msg.data, type=WantReply)

        replies = await asyncio.gather(*(ask_for(i) for i in range(3000)))
        codes = {r.code for r in replies}
        assert not any(r.ok for r in replies) and codes <= {"VENUE_TIMEOUT", "OVERLOADED",
                                                             "VENUE_UNAVAILABLE"}, codes
        assert most <= MAX_RESOLVING + 5, most  # + the timer's own few
        await until(lambda: not publisher._tasks)


async def test_a_stalled_loop_resyncs_once_then_follows_without_flapping(nats_server, sim):
    """The process's event loop blocked for more than the silence and lag bounds (a GC pause,
    a CPU hog), with the real ``FeedPublisher`` over the simulator: the edge may go stale or
    fall behind once, then its book is the feed's at equal update ids, and stays so without
    further resyncs."""
    async with asyncio.timeout(90), real_feed_and_edge(nats_server.url, sim) as (
            edge, client, mirrored, source):
        time.sleep(2 * CONFIG.silence_seconds + CONFIG.lag_seconds)  # noqa: ASYNC251
        await books_level(edge, mirrored, source, 1)
        await asyncio.sleep(4 * CONFIG.silence_seconds)  # settled
        stats = dict(edge.source.stats)
        await books_level(edge, mirrored, source, 15)
        after = edge.source.stats
        assert (after["stale"], after["lagged"], after["gaps"]) == (
            stats["stale"], stats["lagged"], stats["gaps"])
        assert client.book() == as_client_book(mirrored.book)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_feed_whose_timer_stalled_gives_up_a_market_taken_over(nats_server, sim):
    """Feed A's timer stalls past the silence bound (its liveness goes stale; A's clock is
    the test's, frozen), feed B takes the market over at the next want. When A's timer runs
    again it must give the market up at once, not at its next periodic snapshot."""
    config = ClusterConfig(heartbeat_seconds=0.2, silence_seconds=1.0, lease_seconds=60.0,
                           want_timeout=0.5, snapshot_seconds=60.0)
    key = f"{BTC}/ORDERBOOK"
    clock = Clock()
    async with asyncio.timeout(60), contextlib.AsyncExitStack() as stack:
        client = await _connect(nats_server.url)
        stack.push_async_callback(client.close)
        nodes = []
        for node_clock in (clock, None):
            nc = await _connect(nats_server.url)
            stack.push_async_callback(nc.close)
            engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})},
                                      linger=0.5)
            stack.push_async_callback(engine.close)
            kwargs = {"clock": node_clock} if node_clock else {}
            publisher = await FeedPublisher(engine, nc, config, **kwargs).start()
            stack.push_async_callback(publisher.close)
            nodes.append(publisher)
            if len(nodes) == 1:
                assert (await ask(client)).epoch == publisher.epoch  # A owns the market
        a, b = nodes
        while key not in b.markets:  # A's liveness is stale after the silence bound
            with contextlib.suppress(nats.errors.TimeoutError):
                await ask(client)
            await asyncio.sleep(0.1)
        assert key in a.markets
        clock.now += 2 * config.silence_seconds  # the stall ends: the timer runs late
        async with asyncio.timeout(8):  # far less than snapshot_seconds
            while key in a.markets:  # noqa: ASYNC110 - the feed (another task) ends it
                await asyncio.sleep(0.05)
        assert key in b.markets
