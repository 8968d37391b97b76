"""The edge's mirror (``cluster.edge.MirrorSource``) on a real nats-server: a real engine over
a real SIM venue object (market metadata) whose books and trades come from a feed node the
test plays by hand — the stream, a want responder, and wire messages published with the
integrity rule's ``(epoch, seq)`` (or deliberately without: gaps, repeats, other epochs).

What is checked: REST and WebSocket clients see the feed's book exactly (applied
independently here); a gap, a heartbeat ahead, the feed's own resync each give the
WebSocket resync message and then a snapshot that re-bases; silence makes REST a 503 at once
and recovers only on a fresh snapshot (a dead feed's last one is not served); a restarted
nats-server (its memory stream gone) goes stale, then converges; trades pass through with
their gaps reported; SMART books consolidate two mirrored members.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import msgspec
import nats
import pytest

from astra.cluster.edge import MirrorSource
from astra.cluster.feed import FeedPublisher, ensure_stream
from astra.cluster.wire import (
    WANT_SUBJECT,
    BookDelta,
    BookResync,
    BookSnapshot,
    ClusterConfig,
    Heartbeat,
    TradeBatch,
    TradeConnection,
    Want,
    WantReply,
    book_subject,
    encode,
    new_epoch,
    trade_subject,
)
from astra.core import DataType, FeedUnavailable, Side, Trade
from astra.marketdata.engine import MarketDataEngine
from astra.venues import build_venue

from .proxy import CutProxy

BTC = "SIM-SPOT-BTC-USDT"
BTC2 = "SIM2-SPOT-BTC-USDT"
CONFIG = ClusterConfig(heartbeat_seconds=0.1, silence_seconds=0.6, lease_seconds=3.0,
                       want_timeout=0.5)


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: a restarted server is expected here."""


async def _connect(url: str):
    return await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                              error_cb=_quiet)


async def until(predicate) -> None:
    async with asyncio.timeout(20):
        while not predicate():  # noqa: ASYNC110 - NATS messages (other tasks) make it true
            await asyncio.sleep(0.01)


class Book:
    """The feed's book of one market and its place in the feed's sequence."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.seq = 0
        self.update_id = 0

    def levels(self) -> tuple[list, list]:
        return (sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))

    def expected(self) -> dict:
        """As an edge's REST answer shows it."""
        bids, asks = self.levels()
        return {"bids": [{"price": p, "quantity": q} for p, q in bids],
                "asks": [{"price": p, "quantity": q} for p, q in asks]}


class ScriptedFeed:
    """A feed node played by the test (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.epoch = new_epoch()
        self.books: dict[str, Book] = {}
        self.trade_seq: dict[str, int] = {}
        self.wants: list[Want] = []
        self.refuse: dict[str, str] = {}  # market -> the error a want gets
        self.auto_snapshot = True  # answer Want(snapshot=True) with a snapshot
        self.answering = True
        self._beating: asyncio.Task | None = None

    async def start(self) -> ScriptedFeed:
        self.nc = await _connect(self.url)
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, CONFIG)
        self.sub = await self.nc.subscribe(WANT_SUBJECT, cb=self._on_want)
        return self

    async def close(self) -> None:
        self.heartbeats(False)
        await self.nc.close()

    def restart_process(self) -> None:
        """A new feed process: another epoch, every sequence from 1 again."""
        self.epoch = new_epoch()
        for book in self.books.values():
            book.seq = 0
        self.trade_seq = dict.fromkeys(self.trade_seq, 0)

    async def _on_want(self, msg) -> None:
        want = msgspec.msgpack.decode(msg.data, type=Want)
        self.wants.append(want)
        if not self.answering:
            return
        if want.market in self.refuse:
            await msg.respond(encode(WantReply(ok=False, error=self.refuse[want.market])))
            return
        if want.snapshot and self.auto_snapshot and want.market in self.books:
            await self.snapshot(want.market)  # stored before the edge reads the reply
        await msg.respond(encode(WantReply(ok=True, epoch=self.epoch, state="synced")))

    async def _publish(self, subject: str, message: msgspec.Struct) -> None:
        await self.js.publish(subject, encode(message))  # acknowledged: in the stream

    def book(self, market: str) -> Book:
        return self.books.setdefault(market, Book())

    async def snapshot(self, market: str) -> None:
        book = self.book(market)
        book.seq += 1
        bids, asks = book.levels()
        await self._publish(book_subject(market, "snap"), BookSnapshot(
            self.epoch, book.seq, book.update_id, 1000 + book.update_id, bids, asks))

    async def delta(self, market: str, bids=(), asks=(), *, lost: bool = False,
                    sent_ns: int = 0) -> None:
        """A change of the feed's book; ``lost``: it takes its seq but never reaches NATS;
        ``sent_ns``: when the feed says it sent it (0: unsaid)."""
        book = self.book(market)
        for side, levels in ((book.bids, bids), (book.asks, asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        book.seq += 1
        book.update_id += 1
        if not lost:
            await self._publish(book_subject(market, "upd"), BookDelta(
                self.epoch, book.seq, book.update_id, 1000 + book.update_id, list(bids),
                list(asks), sent_ns))

    async def resync(self, market: str, reason: str) -> None:
        book = self.book(market)
        book.seq += 1
        await self._publish(book_subject(market, "upd"), BookResync(self.epoch, book.seq, reason))

    async def heartbeat(self, market: str) -> None:
        await self._publish(book_subject(market, "upd"),
                            Heartbeat(self.epoch, self.book(market).seq))

    async def trades(self, market: str, prices: list[float], *, lost: bool = False) -> None:
        seq = self.trade_seq[market] = self.trade_seq.get(market, 0) + 1
        batch = [Trade(price=p, quantity=1.0, side=Side.BUY, time=1, trade_id=f"t{p}")
                 for p in prices]
        if not lost:
            await self._publish(trade_subject(market), TradeBatch(self.epoch, seq, batch))

    async def trade_connection(self, market: str, up: bool, reason: str = "") -> None:
        seq = self.trade_seq[market] = self.trade_seq.get(market, 0) + 1
        await self._publish(trade_subject(market), TradeConnection(self.epoch, seq, up, reason))

    def heartbeats(self, on: bool) -> None:
        """Every book's (and trade subject's) heartbeat every ``heartbeat_seconds``."""
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None
        if on:
            self._beating = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            for market, book in list(self.books.items()):
                with contextlib.suppress(Exception):  # a restarting server refuses
                    await self._publish(book_subject(market, "upd"),
                                        Heartbeat(self.epoch, book.seq))
            for market, seq in list(self.trade_seq.items()):
                with contextlib.suppress(Exception):
                    await self._publish(trade_subject(market), Heartbeat(self.epoch, seq))
            await asyncio.sleep(CONFIG.heartbeat_seconds)


class WsClient:
    """What the engine asks of a WebSocket session: ``deliver(frame)``."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(json.loads(frame))

    def types(self) -> list[str]:
        return [f.get("type", "trades" if "trades" in f else "?") for f in self.frames]

    def book(self) -> dict:
        """The client's book from its last snapshot and the updates after it."""
        levels: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}
        for frame in self.frames:
            if frame.get("type") in ("snapshot", "resync"):
                levels = {"bids": {}, "asks": {}}
            if frame.get("type") in ("snapshot", "update"):
                for side in ("bids", "asks"):
                    for level in frame[side]:
                        if level["quantity"]:
                            levels[side][level["price"]] = level["quantity"]
                        else:
                            levels[side].pop(level["price"], None)
        return levels


def as_client_book(book: Book) -> dict:
    return {"bids": dict(book.bids), "asks": dict(book.asks)}


class Edge:
    """An edge: its own NATS connection, a ``MirrorSource`` and an engine over SIM venues."""

    def __init__(self, url: str, sim_url: str, codes: tuple[str, ...] = ("SIM",)) -> None:
        self.url, self.sim_url, self.codes = url, sim_url, codes

    async def __aenter__(self) -> Edge:
        self.nc = await _connect(self.url)
        self.source = MirrorSource(self.nc, CONFIG, edge="edge-1")
        venues = {code: build_venue(code, {"url": self.sim_url}) for code in self.codes}
        self.engine = MarketDataEngine(venues, linger=5.0, book_wait=3.0, source=self.source)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.close()
        await self.source.close()
        await self.nc.close()

    async def rest(self, market: str = BTC) -> dict:
        body = json.loads(await self.engine.order_book(market))
        return {"bids": body["bids"], "asks": body["asks"]}

    async def rest_settles(self, expected: dict, market: str = BTC) -> None:
        """Until REST shows ``expected`` (the read itself may say 503 meanwhile)."""
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(FeedUnavailable):
                    if await self.rest(market) == expected:
                        return
                await asyncio.sleep(0.02)

    def state(self, market: str = BTC) -> str | None:
        channel = self.engine.channels.get((market, DataType.ORDERBOOK))
        return None if channel is None else channel.state

    async def subscribe(self, market: str = BTC, data_type=DataType.ORDERBOOK) -> WsClient:
        client = WsClient()
        add, _remove = await self.engine.subscription(market, data_type)
        add(client)
        return client


@pytest.fixture
async def feed(nats_server):
    feed = await ScriptedFeed(nats_server.url).start()
    try:
        yield feed
    finally:
        await feed.close()


async def seed(feed: ScriptedFeed, market: str = BTC, base: float = 100.0) -> None:
    """A book with three levels a side, its snapshot, and one delta after it."""
    book = feed.book(market)
    book.bids.update({base - 1: 1.0, base - 2: 2.0, base - 3: 3.0})
    book.asks.update({base + 1: 1.5, base + 2: 2.5, base + 3: 3.5})
    book.update_id = 10
    await feed.snapshot(market)
    await feed.delta(market, bids=[(base - 1, 1.25)], asks=[(base + 3, 0.0)])


async def test_rest_and_ws_follow_the_feed_through_gaps_and_resyncs(nats_server, feed, sim):
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            book = feed.books[BTC]
            # First use: the last snapshot, then the delta after it, from the stream.
            assert await edge.rest() == book.expected()
            assert feed.wants[0].market == BTC and feed.wants[0].data_type == "ORDERBOOK"
            assert feed.wants[0].edge == "edge-1"
            client = await edge.subscribe()
            assert client.types() == ["snapshot"]
            assert client.book() == as_client_book(book)

            await feed.delta(BTC, bids=[(99.5, 4.0)])
            await until(lambda: len(client.frames) == 2)
            assert client.frames[1]["type"] == "update"
            assert client.frames[1]["bids"] == [{"price": 99.5, "quantity": 4.0}]
            assert await edge.rest() == book.expected()

            # A repeat of an older seq (same epoch) is dropped without a resync.
            await feed._publish(book_subject(BTC, "upd"), BookDelta(
                feed.epoch, book.seq - 1, 1, 1, [(1.0, 1.0)], []))
            # A lost delta: the next one is a gap -> resync, Want(snapshot) -> a snapshot
            # that carries the lost change too.
            await feed.delta(BTC, asks=[(101.0, 9.0)], lost=True)
            await feed.delta(BTC, bids=[(98.0, 0.0)])
            await until(lambda: client.types()[-1] == "snapshot" and len(client.frames) > 3)
            assert client.types() == ["snapshot", "update", "resync", "snapshot"]
            assert client.frames[2]["state"] == "resyncing"
            assert client.book() == as_client_book(book)
            assert book.asks[101.0] == 9.0 and await edge.rest() == book.expected()
            assert any(w.snapshot for w in feed.wants)
            assert edge.source.stats["gaps"] == 1

            # The feed's own resync (its venue down): disconnected at once, REST 503.
            await feed.resync(BTC, "reconnecting: ConnectionClosed")
            await until(lambda: client.types()[-1] == "resync")
            assert client.frames[-1]["state"] == "disconnected"
            with pytest.raises(FeedUnavailable, match="disconnected"):
                await edge.rest()
            await feed.delta(BTC, bids=[(97.0, 7.0)])  # the feed's book moves on meanwhile
            await feed.snapshot(BTC)
            await until(lambda: client.types()[-1] == "snapshot")
            assert client.book() == as_client_book(book)
            assert await edge.rest() == book.expected()

            # A heartbeat ahead of the book: its tail was lost.
            seen = len(client.frames)
            await feed.delta(BTC, asks=[(102.0, 0.5)], lost=True)
            await feed.heartbeat(BTC)
            await until(lambda: len(client.frames) == seen + 2)
            assert client.types()[-2:] == ["resync", "snapshot"]
            assert edge.source.stats["gaps"] == 2
            assert client.book() == as_client_book(book)
            assert await edge.rest() == book.expected()


async def test_silence_is_a_503_at_once_and_only_a_fresh_snapshot_recovers(
        nats_server, feed, sim):
    async with asyncio.timeout(60):
        await seed(feed)
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            old = feed.books[BTC].expected()
            assert await edge.rest() == old

            # The feed process dies: nothing more on the market, no want answered.
            feed.heartbeats(False)
            feed.answering = False
            await until(lambda: edge.state() == "disconnected")
            assert client.types() == ["snapshot", "resync"]
            assert client.frames[1]["state"] == "disconnected"
            with pytest.raises(FeedUnavailable) as raised:
                await edge.rest()
            assert raised.value.status == 503
            assert edge.source.stats["stale"] == 1
            wants = len(feed.wants)
            await until(lambda: len(feed.wants) > wants + 1)  # it keeps asking
            with pytest.raises(FeedUnavailable, match="no feed node answered"):
                await edge.rest()

            # A new feed process answers, but has not published a book yet: the dead
            # process's last snapshot in the stream is not served; the book waits for one.
            feed.restart_process()
            feed.auto_snapshot = False
            feed.answering = True
            feed.heartbeats(True)
            wants = len(feed.wants)
            await until(lambda: any(w.snapshot for w in feed.wants[wants:]))
            await until(lambda: edge.state() == "resyncing")
            await asyncio.sleep(2 * CONFIG.heartbeat_seconds)  # heartbeats flow meanwhile
            assert edge.state() == "resyncing"
            assert client.types() == ["snapshot", "resync", "resync"]
            assert client.frames[2]["state"] == "resyncing"
            read = asyncio.create_task(edge.rest())  # waits for the snapshot (book_wait)
            await asyncio.sleep(0.05)
            assert not read.done()
            await feed.delta(BTC, bids=[(99.0, 5.0)])  # in the new epoch, before a snapshot
            await feed.snapshot(BTC)
            assert await read == feed.books[BTC].expected() != old
            await until(lambda: client.types()[-1] == "snapshot")
            assert client.book() == as_client_book(feed.books[BTC])


async def test_a_restarted_nats_server_goes_stale_then_converges(nats_server, feed, sim):
    async with asyncio.timeout(90):
        await seed(feed)
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            feed.heartbeats(False)

            nats_server.restart()  # the memory stream and every consumer are gone
            await until(lambda: edge.state() == "disconnected")
            assert client.types()[-1] == "resync"
            await until(lambda: feed.nc.is_connected)
            while True:  # a feed re-creates it (feed.py's job), once JetStream is up again
                try:
                    await ensure_stream(feed.js, CONFIG)
                    break
                except nats.errors.Error:
                    await asyncio.sleep(0.05)
            await feed.delta(BTC, bids=[(99.0, 0.0)], asks=[(104.0, 1.0)])
            feed.heartbeats(True)
            await edge.rest_settles(feed.books[BTC].expected())
            await until(lambda: client.types()[-1] == "snapshot")
            assert client.book() == as_client_book(feed.books[BTC])
            assert edge.source.stats["stale"] >= 1

            await feed.delta(BTC, asks=[(101.0, 0.25)])  # and it follows again
            await until(lambda: client.types()[-1] == "update")
            assert client.book() == as_client_book(feed.books[BTC])


async def test_a_refused_want_is_a_503_naming_why(nats_server, feed, sim):
    async with asyncio.timeout(30):
        feed.refuse[BTC] = "SIM is not served by this feed"
        async with Edge(nats_server.url, sim.base_url) as edge:
            with pytest.raises(FeedUnavailable, match="SIM is not served by this feed"):
                await edge.rest()
            assert edge.source.stats["wants_failed"] >= 1
            del feed.refuse[BTC]
            await seed(feed)
            await edge.rest_settles(feed.books[BTC].expected())


async def test_trades_pass_through_and_a_gap_is_a_dropped_connection(nats_server, feed, sim):
    async with asyncio.timeout(30):
        feed.trade_seq[BTC] = 0
        feed.heartbeats(True)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe(BTC, DataType.TRADE)
            channel = edge.engine.channels[(BTC, DataType.TRADE)]
            await until(lambda: channel.live is True)  # a heartbeat: the feed's trades are up
            await feed.trades(BTC, [1.0, 2.0])
            await feed.trades(BTC, [3.0])
            await until(lambda: sum(len(f.get("trades", ())) for f in client.frames) == 3)
            # A slow heartbeat under load may put a resync frame among them: trades in order.
            prices = [t["price"] for f in client.frames for t in f.get("trades", ())]
            assert prices == [1.0, 2.0, 3.0]

            await feed.trades(BTC, [4.0], lost=True)
            await feed.trades(BTC, [5.0])
            await until(lambda: client.frames[-1].get("trades", [{}])[0].get("price") == 5.0)
            assert client.types()[-2:] == ["resync", "trades"]
            assert client.frames[-2]["state"] == "disconnected"
            assert "gap" in client.frames[-2]["reason"]
            assert channel.live is True and edge.source.stats["gaps"] == 1

            await feed.trade_connection(BTC, False, "reconnecting: venue closed")
            await until(lambda: channel.live is False)
            assert client.types()[-1] == "resync"
            await feed.trade_connection(BTC, True)
            await feed.trades(BTC, [6.0])
            await until(lambda: client.frames[-1].get("trades", [{}])[0].get("price") == 6.0)

            feed.heartbeats(False)  # silence: reported down until messages flow again
            await until(lambda: channel.live is False)
            assert client.frames[-1]["type"] == "resync"
            assert "silent" in client.frames[-1]["reason"]
            feed.heartbeats(True)
            await until(lambda: channel.live is True)


async def test_smart_book_over_two_mirrored_members(nats_server, feed, sim):
    async with asyncio.timeout(30):
        await seed(feed, BTC, 100.0)
        await seed(feed, BTC2, 100.5)
        async with Edge(nats_server.url, sim.base_url, ("SIM", "SIM2")) as edge:
            body = json.loads(await edge.engine.smart_order_book("SMART-SPOT-BTC-USDT"))
            bids = {(lv["price"], tuple(sorted(lv["venues"].items()))) for lv in body["bids"]}
            expected = {(p, (("SIM", q),)) for p, q in feed.books[BTC].bids.items()}
            expected |= {(p, (("SIM2", q),)) for p, q in feed.books[BTC2].bids.items()}
            assert bids == expected
            assert body["bids"][0]["price"] == max(feed.books[BTC2].bids)
            assert body["asks"][0]["price"] == min(feed.books[BTC].asks)


async def test_a_cut_edge_connection_resyncs_and_converges(nats_server, feed, sim):
    async with asyncio.timeout(60):
        proxy = await CutProxy(nats_server.port).start()
        try:
            await seed(feed)
            feed.heartbeats(True)
            async with Edge(proxy.url, sim.base_url) as edge:
                client = await edge.subscribe()
                await until(lambda: client.types() == ["snapshot"])
                proxy.refusing = True
                proxy.cut()  # the edge's link only: the feed goes on publishing
                await feed.delta(BTC, bids=[(99.0, 0.0)], asks=[(105.0, 2.0)])
                await until(lambda: edge.state() == "disconnected")  # silence
                with pytest.raises(FeedUnavailable):
                    await edge.rest()
                proxy.refusing = False
                await edge.rest_settles(feed.books[BTC].expected())
                await until(lambda: client.types()[-1] == "snapshot")
                assert client.types()[:2] == ["snapshot", "resync"]
                assert client.book() == as_client_book(feed.books[BTC])
                await feed.delta(BTC, asks=[(101.0, 0.75)])
                await until(lambda: client.types()[-1] == "update")
                assert client.book() == as_client_book(feed.books[BTC])
                assert await edge.rest() == feed.books[BTC].expected()
        finally:
            await proxy.close()


@contextlib.asynccontextmanager
async def real_feed_and_edge(url: str, sim):
    """The real ``FeedPublisher`` over the simulator and an ``Edge`` whose client follows
    BTC: ``(edge, client, mirrored, source)`` (the edge's and the feed's book channels) once
    the client has its snapshot."""
    feed_nc = await _connect(url)
    feed_engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})})
    publisher = await FeedPublisher(feed_engine, feed_nc, CONFIG).start()
    try:
        async with Edge(url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: "snapshot" in client.types())
            yield (edge, client, edge.engine.channels[(BTC, DataType.ORDERBOOK)],
                   feed_engine.channels[(BTC, DataType.ORDERBOOK)])
    finally:
        await publisher.close()
        await feed_engine.close()
        await feed_nc.close()


async def books_level(edge: Edge, mirrored, source, times: int) -> None:
    """At ``times`` distinct update ids where the edge's synced book and the feed's stand at
    the same id, they are equal level for level."""
    seen: set[int] = set()

    def level() -> bool:
        return (edge.state() == "synced" and mirrored.book is not None
                and source.book is not None and mirrored.book.update_id == source.book.update_id
                and mirrored.book.update_id not in seen)

    while len(seen) < times:
        await until(level)
        assert mirrored.book.bids == source.book.bids
        assert mirrored.book.asks == source.book.asks
        seen.add(mirrored.book.update_id)


async def test_an_edge_mirrors_a_real_feed_publisher_exactly(nats_server, sim):
    """With ``cluster.feed.FeedPublisher`` over the simulator's live book: at equal update
    ids, the edge's book is the feed's, level for level."""
    async with asyncio.timeout(60), real_feed_and_edge(nats_server.url, sim) as (
            edge, client, mirrored, source):
        await books_level(edge, mirrored, source, 20)  # twenty moments the books are level
        assert client.book() == as_client_book(mirrored.book)
        assert edge.source.stats["gaps"] == 0


async def test_an_edge_that_falls_behind_its_feed_starts_again_from_the_latest_snapshot(
        nats_server, feed, sim):
    """Deltas that reach the edge far later than the session's best transit (an edge whose CPU
    or link cannot keep up): not served ever older, but a resync, then the latest book."""
    async with asyncio.timeout(60):
        await seed(feed)
        async with Edge(nats_server.url, sim.base_url) as edge:
            client = await edge.subscribe()
            await until(lambda: client.types() == ["snapshot"])
            now = time.time_ns()
            await feed.delta(BTC, bids=[(98.5, 1.0)], sent_ns=now)  # on time
            await until(lambda: len(client.types()) == 2)
            assert client.types() == ["snapshot", "update"]
            late = now - int(5 * CONFIG.lag_seconds * 1e9)  # as if queued for 5 lag bounds
            await feed.delta(BTC, bids=[(98.0, 1.0)], sent_ns=late)
            await until(lambda: "resync" in client.types())
            resync = client.frames[client.types().index("resync")]
            assert resync["state"] == "disconnected" and "behind the feed" in resync["reason"]
            assert edge.source.stats["lagged"] == 1
            # The new session re-bases on a fresh snapshot: the feed's whole book, the late
            # delta included.
            await until(lambda: client.types()[-1] == "snapshot")
            assert client.book() == as_client_book(feed.books[BTC])
            assert await edge.rest() == feed.books[BTC].expected()
