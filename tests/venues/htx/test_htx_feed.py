"""The HTX feed handlers against ``FakeHtx`` (gzip frames, pings that must be answered):
mbp books synced over a ``req`` refresh and repaired on the same connection after a lost
increment, a silent connection replaced, trades forwarded; and the fake itself really
drops a client whose pong is wrong."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp

from astra.marketdata.book import L2Book
from astra.venues.htx.feed import run_depth_feed, run_mbp_feed, run_trade_feed

TOPIC = "market.btcusdt.mbp.150"


class Sink:
    """A BookSink/TradeSink that keeps its own book and every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.book: L2Book | None = None
        self.trades: list = []
        self.changed = asyncio.Event()

    def on_snapshot(self, book: L2Book) -> None:
        self.book = book
        self.events.append(("snapshot", book.update_id))
        self.changed.set()

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)
        self.events.append(("update", update_id))
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.events.append(("resync", reason))
        self.changed.set()

    def on_trades(self, trades) -> None:
        self.trades.extend(trades)
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
