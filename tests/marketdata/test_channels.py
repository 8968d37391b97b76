"""Channel states and trade memory, driven by a scripted in-process venue: a book whose feed is
disconnected fails REST reads at once and tells WebSocket clients (also ones that join
late); recent trades merge the REST seed with the live feed without loss or duplicates."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from astra.core import AssetType, DataType, FeedUnavailable, MarketMetadata, Side, Trade
from astra.marketdata.engine import MarketDataEngine
from astra.venues.base import Capabilities, Venue, VenueMarket
from astra.venues.book import L2Book

MARKET = VenueMarket("SIM-SPOT-BTC-USDT", "BTCUSDT", "spot", MarketMetadata(
    symbol="SIM-SPOT-BTC-USDT", asset_type=AssetType.SPOT, base_asset="BTC",
    quote_asset="USDT"))


def trade(i: int) -> Trade:
    return Trade(price=100.0 + i, quantity=1.0, side=Side.BUY, time=i, trade_id=str(i))


class ScriptedVenue(Venue):
    """Feeds that do what the test says, when it says: ``book_steps``/``trade_steps`` are
    queues of callables applied to the sink."""

    code = "SIM"
    capabilities = Capabilities(asset_types=("SPOT",), orderbook="t", trades="t", rest="t")
    live_trades = True

    def __init__(self) -> None:
        self.book_steps: asyncio.Queue = asyncio.Queue()
        self.trade_steps: asyncio.Queue = asyncio.Queue()
        self.seed: list[Trade] = []
        self.rest_calls = 0
        self.release_rest = asyncio.Event()
        self.release_rest.set()

    async def load_markets(self) -> dict[str, VenueMarket]:
        return {MARKET.symbol: MARKET}

    async def run_book_feed(self, market: VenueMarket, sink) -> None:
        while True:
            (await self.book_steps.get())(sink)

    async def run_trade_feed(self, market: VenueMarket, sink) -> None:
        while True:
            (await self.trade_steps.get())(sink)

    async def recent_trades(self, market: VenueMarket, limit: int) -> list[Trade]:
        self.rest_calls += 1
        await self.release_rest.wait()
        return list(self.seed[-limit:])

    async def close(self) -> None:
        pass


class Frames:
    def __init__(self) -> None:
        self.frames: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(msgspec.json.decode(frame))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def snapshot(update_id: int):
    def step(sink) -> None:
        book = L2Book(MARKET.symbol)
        book.reset([(99.0, 1.0)], [(101.0, 1.0)], update_id, update_id)
        sink.on_snapshot(book)

    return step


async def test_disconnected_book_fails_fast_and_clients_hear_it_at_once():
    venue = ScriptedVenue()
    engine = MarketDataEngine({"SIM": venue}, linger=60.0, book_wait=60.0)
    early, late = Frames(), Frames()
    try:
        engine.subscribe(venue, MARKET, DataType.ORDERBOOK, early)
        venue.book_steps.put_nowait(snapshot(500))
        await settle()
        assert [f["type"] for f in early.frames] == ["snapshot"]

        venue.book_steps.put_nowait(lambda s: s.on_resync("pu=7 but previous u=5"))
        await settle()
        assert early.frames[-1] == {
            "type": "resync", "market": MARKET.symbol, "reason": "pu=7 but previous u=5",
            "state": "resyncing", "since": early.frames[-1]["since"]}
        # A REST read of a resyncing book waits for the snapshot (bounded by book_wait) ...
        read = asyncio.create_task(engine.order_book(MARKET.symbol))
        await settle()
        assert not read.done()
        # ... and fails at once when the connection is lost meanwhile.
        venue.book_steps.put_nowait(lambda s: s.on_resync(
            "reconnecting: ClientConnectorError(ConnectionKey(host='10.1.2.3', port=443))"))
        await settle()
        with pytest.raises(FeedUnavailable) as info:
            await read
        err = info.value
        assert err.status == 503 and err.code == "VENUE_UNAVAILABLE" and err.retry_after == 1.0
        assert err.feed.state == "disconnected"
        assert err.feed.reason == "reconnecting: ClientConnectorError"  # no host, no port
        assert early.frames[-1]["state"] == "disconnected"
        # Failed reconnects repeat the cause: clients are not told again.
        venue.book_steps.put_nowait(lambda s: s.on_resync("reconnecting: OSError(111)"))
        await settle()
        assert [f["type"] for f in early.frames] == ["snapshot", "resync", "resync"]
        with pytest.raises(FeedUnavailable):
            await engine.order_book(MARKET.symbol)

        # A client joining now hears the state at once instead of silence.
        engine.subscribe(venue, MARKET, DataType.ORDERBOOK, late)
        assert [(f["type"], f["state"]) for f in late.frames] == [("resync", "disconnected")]

        # The venue returns with a restarted sequence: a lower updateId, announced before.
        venue.book_steps.put_nowait(snapshot(3))
        await settle()
        assert early.frames[-1]["type"] == "snapshot" and early.frames[-1]["updateId"] == 3
        assert late.frames[-1]["type"] == "snapshot"
        body = msgspec.json.decode(await engine.order_book(MARKET.symbol))
        assert body["updateId"] == 3
    finally:
        await engine.close()


async def test_recent_trades_merge_the_seed_with_the_feed_once():
    venue = ScriptedVenue()
    venue.seed = [trade(i) for i in range(1, 6)]  # 1..5 on the venue's REST
    engine = MarketDataEngine({"SIM": venue}, linger=60.0)
    try:
        # Before the feed is up: concurrent reads share one REST fetch.
        venue.release_rest.clear()
        reads = [asyncio.create_task(engine.recent_trades(MARKET.symbol, 3)) for _ in range(4)]
        await settle()
        venue.release_rest.set()
        answers = await asyncio.gather(*reads)
        assert venue.rest_calls == 1
        assert all([t.trade_id for t in a] == ["3", "4", "5"] for a in answers)

        # The feed connects and delivers 4, 5 (also in the seed) and 6 before the seed lands.
        venue.trade_steps.put_nowait(lambda s: s.on_connection(True))
        venue.trade_steps.put_nowait(lambda s: s.on_trades([trade(4), trade(5), trade(6)]))
        await settle()
        venue.seed = [trade(i) for i in range(1, 6)]
        trades = await engine.recent_trades(MARKET.symbol, 10)
        assert [t.trade_id for t in trades] == ["1", "2", "3", "4", "5", "6"]
        assert venue.rest_calls == 2

        # From now on: the feed only.
        venue.trade_steps.put_nowait(lambda s: s.on_trades([trade(7)]))
        await settle()
        trades = await engine.recent_trades(MARKET.symbol, 2)
        assert [t.trade_id for t in trades] == ["6", "7"] and venue.rest_calls == 2

        # The connection drops: trades may be missed, so the next read seeds again.
        venue.seed = [trade(i) for i in range(1, 9)]
        venue.trade_steps.put_nowait(lambda s: s.on_connection(False, "closed"))
        await settle()
        trades = await engine.recent_trades(MARKET.symbol, 2)
        assert [t.trade_id for t in trades] == ["7", "8"] and venue.rest_calls == 3
    finally:
        await engine.close()


async def test_trade_clients_hear_of_each_drop_once_and_late_repeats_are_kept_once():
    venue = ScriptedVenue()
    venue.seed = [trade(i) for i in range(1, 4)]  # 1..3 on the venue's REST
    engine = MarketDataEngine({"SIM": venue}, linger=60.0)
    early, late = Frames(), Frames()
    try:
        engine.subscribe(venue, MARKET, DataType.TRADE, early)
        venue.trade_steps.put_nowait(lambda s: s.on_connection(True))
        venue.trade_steps.put_nowait(lambda s: s.on_connection(True))  # repeated: no change
        await settle()
        assert [t.trade_id for t in await engine.recent_trades(MARKET.symbol, 10)] == [
            "1", "2", "3"]
        # 3 was in flight when the seed was read: the feed delivers it after; kept once.
        channel = engine.channels[(MARKET.symbol, DataType.TRADE)]
        assert channel._seeded == {"1", "2", "3"}
        venue.trade_steps.put_nowait(lambda s: s.on_trades([trade(3), trade(4)]))
        await settle()
        assert [t.trade_id for t in await engine.recent_trades(MARKET.symbol, 10)] == [
            "1", "2", "3", "4"]
        # 4 is past the seed: no later push can repeat it, so pushes are no longer filtered.
        assert channel._seeded == set()
        assert venue.rest_calls == 1
        assert [f["trades"][-1]["tradeId"] for f in early.frames] == ["4"]  # clients get all

        # The connection drops: clients hear it at once, once, however often it is repeated.
        venue.trade_steps.put_nowait(lambda s: s.on_connection(
            False, "reconnecting: ClientConnectorError(ConnectionKey(host='10.1.2.3'))"))
        venue.trade_steps.put_nowait(lambda s: s.on_connection(False, "reconnecting: again"))
        await settle()
        resync = early.frames[-1]
        assert resync == {"type": "resync", "market": MARKET.symbol,
                          "reason": "reconnecting: ClientConnectorError",
                          "state": "disconnected", "since": resync["since"]}  # fmt: skip
        assert len(early.frames) == 2
        engine.subscribe(venue, MARKET, DataType.TRADE, late)  # joins while it is down
        assert late.frames == [resync]

        # Up again: trades flow with no snapshot; the next drop is told again.
        venue.trade_steps.put_nowait(lambda s: s.on_connection(True))
        venue.trade_steps.put_nowait(lambda s: s.on_trades([trade(5)]))
        venue.trade_steps.put_nowait(lambda s: s.on_connection(False, "closed"))
        await settle()
        assert [f.get("type") for f in early.frames] == [None, "resync", None, "resync"]
        assert early.frames[-1]["reason"] == "closed" and late.frames[1:] == early.frames[2:]
    finally:
        await engine.close()


async def test_rest_reads_keep_a_lingering_feed_alive_and_it_retires_after_the_last():
    """REST reads only note their time while a feed lingers; its timer re-arms itself, so the
    feed runs on (never restarted) while reads come, and retires ``linger`` after the last."""
    venue = ScriptedVenue()
    starts = 0
    run_book_feed = venue.run_book_feed

    async def counted(market, sink) -> None:
        nonlocal starts
        starts += 1
        await run_book_feed(market, sink)

    venue.run_book_feed = counted
    engine = MarketDataEngine({"SIM": venue}, linger=0.3, book_wait=5.0)
    key = (MARKET.symbol, DataType.ORDERBOOK)
    try:
        venue.book_steps.put_nowait(snapshot(7))
        await engine.order_book(MARKET.symbol)
        channel = engine.channels[key]
        loop = asyncio.get_running_loop()
        reads_until = loop.time() + 1.2  # four lingers' worth of reads
        while loop.time() < reads_until:
            body = msgspec.json.decode(await engine.order_book(MARKET.symbol))
            assert body["updateId"] == 7
            assert engine.channels.get(key) is channel  # never retired meanwhile
            await asyncio.sleep(0.05)
        assert starts == 1
        async with asyncio.timeout(5):  # retired once the reads stopped, its feed cancelled
            while key in engine.channels or not channel.task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # (the retirement's stop() runs as its own task)
        assert channel.task.cancelled()
    finally:
        await engine.close()


async def test_a_trade_feed_down_from_the_start_is_told_to_every_client():
    """The feed's first report is "down" (it never connected): a client already there and
    one joining later both hear ``resync`` at once."""
    venue = ScriptedVenue()
    engine = MarketDataEngine({"SIM": venue}, linger=60.0)
    early, late = Frames(), Frames()
    try:
        engine.subscribe(venue, MARKET, DataType.TRADE, early)
        venue.trade_steps.put_nowait(lambda s: s.on_connection(
            False, "reconnecting: ClientConnectorError(ConnectionKey(host='10.1.2.3'))"))
        await settle()
        (resync,) = early.frames
        assert resync == {"type": "resync", "market": MARKET.symbol,
                          "reason": "reconnecting: ClientConnectorError",
                          "state": "disconnected", "since": resync["since"]}  # fmt: skip
        engine.subscribe(venue, MARKET, DataType.TRADE, late)
        assert late.frames == early.frames
    finally:
        await engine.close()


async def test_a_trade_read_outlasting_linger_is_answered_not_cancelled():
    """A REST fetch slower than ``linger`` holds its channel: it is not retired (and the
    fetch not cancelled) under the request; it lingers once the read is answered."""
    venue = ScriptedVenue()
    venue.seed = [trade(i) for i in range(1, 4)]
    engine = MarketDataEngine({"SIM": venue}, linger=0.05)
    key = (MARKET.symbol, DataType.TRADE)
    try:
        venue.release_rest.clear()
        read = asyncio.create_task(engine.recent_trades(MARKET.symbol, 10))
        await settle()
        assert venue.rest_calls == 1
        channel = engine.channels[key]
        await asyncio.sleep(0.3)  # several lingers pass while the fetch is out
        kept = engine.channels.get(key) is channel
        venue.release_rest.set()
        (answer,) = await asyncio.gather(read, return_exceptions=True)
        assert not isinstance(answer, BaseException), repr(answer)  # was: CancelledError
        assert [t.trade_id for t in answer] == ["1", "2", "3"]
        assert kept  # never retired while the read was out
        async with asyncio.timeout(5):  # then it retires, linger after the read
            while key in engine.channels:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await engine.close()


async def test_a_book_read_waiting_longer_than_linger_keeps_its_feed():
    """A REST read waiting for a first snapshot holds the feed: a wait longer than ``linger``
    must not retire the channel (cancelling the feed it waits on) under the request."""
    venue = ScriptedVenue()
    engine = MarketDataEngine({"SIM": venue}, linger=0.05, book_wait=5.0)
    key = (MARKET.symbol, DataType.ORDERBOOK)
    try:
        read = asyncio.create_task(engine.order_book(MARKET.symbol))
        await asyncio.sleep(0.3)  # six lingers with no snapshot yet
        assert not read.done()
        channel = engine.channels[key]
        venue.book_steps.put_nowait(snapshot(11))
        body = msgspec.json.decode(await read)
        assert body["updateId"] == 11
        assert engine.channels.get(key) is channel and not channel.task.done()
    finally:
        await engine.close()
