"""The HTX feed handlers against ``FakeHtx`` (gzip frames, pings that must be answered):
mbp books synced over a ``req`` refresh and repaired on the same connection after a lost
increment, a silent connection replaced, trades forwarded; and the fake itself really
drops a client whose pong is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json

import aiohttp
from tests.venues.loopback import until

from astra.venues.book import L2Book
from astra.venues.htx.feed import run_depth_feed, run_mbp_feed, run_trade_feed

TOPIC = "market.btcusdt.mbp.150"


class Sink:
    """A BookSink/TradeSink that keeps its own book and every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.book: L2Book | None = None
        self.served: list[tuple] = []  # (event, update id, levels) after each book event
        self.trades: list = []
        self.connections: list[bool] = []  # on_connection reports, in order
        self.changed = asyncio.Event()

    def on_snapshot(self, book: L2Book) -> None:
        self.book = book
        self.events.append(("snapshot", book.update_id))
        self.served.append(("snapshot", book.update_id, self.levels()))
        self.changed.set()

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)
        self.events.append(("update", update_id))
        self.served.append(("update", update_id, self.levels()))
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))
        self.changed.set()

    def on_trades(self, trades) -> None:
        self.trades.extend(trades)
        self.changed.set()

    def on_connection(self, up: bool, reason: str = "") -> None:
        self.connections.append(up)
        self.changed.set()

    def levels(self) -> dict:
        return {"bids": dict(self.book.bids), "asks": dict(self.book.asks)}

    async def until(self, condition) -> None:
        async with asyncio.timeout(10):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def _run(coro, sink: Sink, condition) -> None:
    task = asyncio.create_task(coro)
    try:
        await sink.until(condition)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_mbp_book_tracks_the_venue_and_repairs_a_lost_increment_on_the_same_connection(
    fake_htx, mbp_script
):
    script = mbp_script(TOPIC, 60, drop=(30,))
    sink = Sink()
    checked = []

    def tracks() -> bool:
        if sink.book is not None and sink.events[-1][0] != "resync":
            assert sink.levels() == script.books[sink.book.update_id], sink.events[-1]
            checked.append(sink.book.update_id)
        return sink.book is not None and sink.book.update_id == script.increments[-1]["seqNum"]

    async with fake_htx(ping_interval=0.05) as fake, aiohttp.ClientSession() as session:
        fake.add_mbp(script)
        url = f"ws://127.0.0.1:{fake.port}/feed"
        await _run(run_mbp_feed(session, url, TOPIC, sink, "HUOBI-SPOT-BTC-USDT"), sink, tracks)
    kinds = [e[0] for e in sink.events]
    assert kinds[0] == "snapshot" and kinds.count("snapshot") == 2
    resync = kinds.index("resync")
    assert "prevSeqNum" in sink.events[resync][1]  # the gap, named
    assert kinds[resync + 1 :].count("snapshot") == 1  # a fresh refresh after the gap
    assert fake.connections["/feed"] == 1  # repaired on the same connection
    assert [m.get("req") for m in fake.client_messages if "req" in m] == [TOPIC, TOPIC]
    assert fake.pongs_ok >= 1 and fake.pong_failures == []
    assert len(checked) > 20


async def test_silent_connection_is_replaced_and_the_book_resyncs(fake_htx, mbp_script):
    script = mbp_script(TOPIC, 80)
    sink = Sink()

    def resynced() -> bool:
        return [e[0] for e in sink.events].count("snapshot") >= 2

    async with fake_htx(stall_after=10) as fake, aiohttp.ClientSession() as session:
        fake.add_mbp(script)
        url = f"ws://127.0.0.1:{fake.port}/feed"
        feed = run_mbp_feed(session, url, TOPIC, sink, "M", silence=0.3)
        await _run(feed, sink, resynced)
    assert fake.connections["/feed"] == 2
    assert any(e[0] == "resync" and "silent" in e[1] for e in sink.events)
    assert sink.levels() == script.books[sink.book.update_id]


async def test_depth_step0_feed_rebuilds_each_recorded_push(fake_htx, recording):
    topic = "market.dogeeth.depth.step0"
    frames = recording.frames(topic)
    sink = Sink()
    seen = {}

    def done() -> bool:
        if sink.book is not None:
            seen[sink.book.update_id] = sink.levels()
        return len(seen) == len(frames)

    async with fake_htx() as fake, aiohttp.ClientSession() as session:
        fake.add_replay(topic, frames)
        url = f"ws://127.0.0.1:{fake.port}/ws"
        await _run(run_depth_feed(session, url, topic, sink, "M"), sink, done)
    for raw in frames:
        tick = json.loads(gzip.decompress(raw))["tick"]
        expect = {side: {p: q for p, q in tick[side] if q > 0} for side in ("bids", "asks")}
        assert seen[tick["version"]] == expect
    assert [e[0] for e in sink.events].count("snapshot") == 1


def _pushed_books(frames: list[bytes]) -> list[tuple]:
    """What a book feed must serve for these full-book pushes, rebuilt from the JSON alone:
    the first push as the snapshot, then every push whose levels differ from the one before
    as an update carrying its ``mrid``."""
    served, previous = [], None
    for raw in frames:
        tick = json.loads(gzip.decompress(raw))["tick"]
        levels = {side: {p: q for p, q in tick[side] if q > 0} for side in ("bids", "asks")}
        if previous is None or levels != previous:
            served.append(("snapshot" if previous is None else "update", tick["mrid"], levels))
        previous = levels
    return served


async def _serve_depth(
    fake_htx, topics: dict[str, list[bytes]], expected: dict[str, int]
) -> dict[str, Sink]:
    """Each topic's frames replayed by a FakeHtx to its own ``run_depth_feed``, at once,
    until each sink has had ``expected[topic]`` book events."""
    sinks = {topic: Sink() for topic in topics}

    def done() -> bool:
        return all(len(sinks[t].served) >= expected[t] for t in topics)

    async with fake_htx(interval=0.001) as fake, aiohttp.ClientSession() as session:
        url = f"ws://127.0.0.1:{fake.port}/swap-ws"
        feeds = []
        for topic, frames in topics.items():
            fake.add_replay(topic, frames)
            feed = run_depth_feed(session, url, topic, sinks[topic], topic)
            feeds.append(asyncio.create_task(feed))
        try:  # bounded: a feed that loses pushes never gets there, and the caller's
            # comparison then shows what it served instead
            with contextlib.suppress(TimeoutError):
                await until(done, *(s.changed for s in sinks.values()), seconds=20)
        finally:
            for feed in feeds:
                feed.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)
    return sinks


def _swap_frame(mrid: int, ms: int, bids: list, asks: list, second: int = 1603707576) -> bytes:
    """A push shaped like HTX's documented swap depth update: ``id`` and ``version`` are the
    epoch second, ``ts`` is in ms, ``mrid`` orders the pushes."""
    ch = "market.BTC-USDT.depth.step0"
    ts = second * 1000 + ms
    tick = {"mrid": mrid, "id": second, "bids": bids, "asks": asks, "ts": ts, "version": second}
    return gzip.compress(json.dumps({"ch": ch, "ts": ts + 1, "tick": {**tick, "ch": ch}}).encode())


async def test_depth_feed_serves_every_swap_push_of_one_second(fake_htx):
    frames = [
        _swap_frame(131596447, 467, [[13071.9, 38], [13068, 5]], [[13081.9, 197], [13099.7, 371]]),
        _swap_frame(131596452, 567, [[13071.9, 40], [13068, 5]], [[13081.9, 197], [13099.7, 371]]),
        _swap_frame(131596452, 667, [[13071.9, 40], [13068, 5]], [[13081.9, 197], [13099.7, 371]]),
        _swap_frame(131596460, 767, [[13068, 5]], [[13081.9, 150], [13099.7, 371]]),
        _swap_frame(131596449, 517, [[13071.9, 39]], [[13081.9, 197]]),  # stale: lower mrid
        _swap_frame(131596471, 867, [[13070.1, 2], [13068, 5]], [[13099.7, 371]]),
    ]
    topic = "market.BTC-USDT.depth.step0"
    sink = (await _serve_depth(fake_htx, {topic: frames}, {topic: 4}))[topic]
    # Every push but the stale one is served; the restated one (same mrid) sends nothing.
    assert sink.served == _pushed_books(frames[:4] + frames[5:])
    assert [e[1] for e in sink.served] == [131596447, 131596452, 131596460, 131596471]
    assert sink.levels() == {"bids": {13070.1: 2, 13068: 5}, "asks": {13099.7: 371}}


async def test_another_book_under_the_held_mrid_goes_out_as_a_snapshot(fake_htx):
    # Never seen in the recordings (a repeated mrid restated the same book 49 times of 49),
    # but an update must carry a new id: readers cache the book by it.
    frames = [
        _swap_frame(131596447, 467, [[13071.9, 38]], [[13081.9, 197]]),
        _swap_frame(131596447, 567, [[13071.9, 40]], [[13081.9, 197]]),
    ]
    topic = "market.BTC-USDT.depth.step0"
    sink = (await _serve_depth(fake_htx, {topic: frames}, {topic: 2}))[topic]
    assert sink.served == [
        ("snapshot", 131596447, {"bids": {13071.9: 38}, "asks": {13081.9: 197}}),
        ("snapshot", 131596447, {"bids": {13071.9: 40}, "asks": {13081.9: 197}}),
    ]


async def test_depth_feed_serves_every_recorded_swap_push(fake_htx, swap_recording):
    topics = {t: [raw for raw, _ in fs] for t, fs in swap_recording.depth_topics().items()}
    expected = {topic: len(_pushed_books(frames)) for topic, frames in topics.items()}
    sinks = await _serve_depth(fake_htx, topics, expected)
    for topic, frames in topics.items():
        # After every push the served book is that push's book (or, for a push that
        # restates the held book, unchanged): in order, with the push's mrid as update id.
        assert sinks[topic].served == _pushed_books(frames), topic
        assert len(sinks[topic].served) > len(frames) * 4 // 5
        assert [e[0] for e in sinks[topic].events].count("snapshot") == 1


async def test_trades_are_forwarded(fake_htx, recording):
    topic = "market.borusdt.trade.detail"
    frames = recording.frames(topic)
    expected = [row for raw in frames for row in json.loads(gzip.decompress(raw))["tick"]["data"]]
    assert expected
    sink = Sink()
    async with fake_htx() as fake, aiohttp.ClientSession() as session:
        fake.add_replay(topic, frames)
        url = f"ws://127.0.0.1:{fake.port}/ws"
        feed = run_trade_feed(session, url, topic, sink)
        await _run(feed, sink, lambda: len(sink.trades) == len(expected))
    assert [t.trade_id for t in sink.trades] == [str(r["tradeId"]) for r in expected]
    assert [t.price for t in sink.trades] == [r["price"] for r in expected]


async def test_the_fake_venue_drops_a_client_whose_pong_is_wrong(fake_htx):
    async with (
        fake_htx(ping_interval=0.05) as fake,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{fake.port}/ws") as ws,
        asyncio.timeout(5),
    ):
        ping = json.loads(gzip.decompress((await ws.receive()).data))["ping"]
        await ws.send_str(json.dumps({"pong": ping + 1}))
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.BINARY:
            pass
    assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4000
    assert fake.pong_failures == [f"bad pong {{'pong': {ping + 1}}} for ping {ping}"]


async def test_the_fake_venue_drops_a_client_that_never_answers(fake_htx):
    async with (
        fake_htx(ping_interval=0.05) as fake,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{fake.port}/ws") as ws,
        asyncio.timeout(5),
    ):
        while (await ws.receive()).type is aiohttp.WSMsgType.BINARY:
            pass
    assert ws.close_code == 4000 and fake.pong_failures[0].startswith("no pong")
