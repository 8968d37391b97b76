"""Many KuCoin markets on shared connections, against the fake KuCoin on 127.0.0.1 replaying
the recorded ``/market/level2`` sessions: one token and connection with comma-joined
subscribes, live subscribe/unsubscribe, a gap that resyncs one market only, the topic cap,
reconnects that resubscribe and resync everything, a refused batch split up. Every book must
equal the independent rebuild (conftest ``reference_states``) at its update id."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin.connection import (
    FUTURES_TOPICS_PER_CONNECTION,
    MAX_TOPICS_PER_REQUEST,
    MESSAGES_PER_10S,
    REQUEST_INTERVAL,
    SPOT_TOPICS_PER_CONNECTION,
)
from astra.venues.kucoin.symbols import parse_ccxt_markets

BCHSV, SNX, DAPPT = "BCHSV-USDT", "SNX-BTC", "DAPPT-BTC"


class BookLog:
    """A BookSink keeping its book and a log of calls; ``until`` waits on a condition."""

    def __init__(self) -> None:
        self.book = None
        self.log: list[tuple[str, object]] = []
        self._changed = asyncio.Event()

    def _step(self, kind: str, value: object) -> None:
        self.log.append((kind, value))
        self._changed.set()

    def on_snapshot(self, book) -> None:
        self.book = book
        self._step("snapshot", book.update_id)

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)
        self._step("update", update_id)

    def on_resync(self, reason: str) -> None:
        self._step("resync", reason)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]

    async def until(self, predicate, within: float = 10.0) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            calls = [entry for entry in self.log if entry[0] != "update"]
            raise AssertionError(f"still waiting; {calls}, last {self.log[-1:]}") from None


class Served:
    """One symbol's recording and the rebuild within the range of the last snapshot served."""

    def __init__(self, fake, recording, reference, symbol: str, **stream) -> None:
        self.fake, self.symbol, self.reference = fake, symbol, reference
        self.snapshot = recording.snapshots[symbol][1]
        frames = [text for _, text in recording.level2[symbol]]
        self.datas = [json.loads(t)["data"] for t in frames]
        self.stream = fake.level2(symbol, self.snapshot, frames, **stream)
        self._cache: dict = {}

    def _states(self) -> list:
        bounds = [b for s, _, b in self.fake.served if s == self.symbol][-1]
        if bounds not in self._cache:  # the rebuild reuses one book: copy each state
            states = self.reference[0]
            self._cache[bounds] = [
                (seq, {side: dict(levels) for side, levels in book.items()}, changed)
                for seq, book, changed in states(self.snapshot, self.datas, bounds)
            ]
        return self._cache[bounds]

    def last_update(self) -> int:
        """The last update id a client of this book sees (the last message changing it)."""
        return [seq for seq, _, changed in self._states() if changed][-1]

    def done(self, sink: BookLog, snapshots: int = 1) -> bool:
        """At least ``snapshots`` snapshots, and nothing left that would change the book (a
        later snapshot may start past the last change within its range)."""
        return (
            sink.kinds().count("snapshot") >= snapshots
            and sink.book.update_id >= self.last_update()
        )

    def check(self, sink: BookLog) -> None:
        """The book equals the rebuild at its update id."""
        as_decimals = self.reference[2]
        expected = {seq: book for seq, book, _ in self._states()}[sink.book.update_id]
        levels = {"bids": dict(sink.book.bids), "asks": dict(sink.book.asks)}
        assert as_decimals(levels) == expected, self.symbol


def _venue(fake, recording, **options) -> KucoinVenue:
    async def markets():
        return parse_ccxt_markets(recording.spot_symbols)

    return KucoinVenue(urls=KucoinUrls.for_server(fake.base_url), markets_source=markets, **options)


@contextlib.asynccontextmanager
async def feeds(venue: KucoinVenue):
    """``start(coro)`` runs a feed until the block ends; then the venue is closed."""
    tasks: list[asyncio.Task] = []

    def start(coro) -> asyncio.Task:
        tasks.append(asyncio.create_task(coro))
        return tasks[-1]

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await venue.close()


def _market(markets, symbol: str):
    return markets[f"KUCOIN-SPOT-{symbol}"]


def test_documented_limits():
    assert (MESSAGES_PER_10S, MAX_TOPICS_PER_REQUEST) == (100, 100)
    assert (SPOT_TOPICS_PER_CONNECTION, FUTURES_TOPICS_PER_CONNECTION) == (300, 100)
    # Requests paced to 90 per 10 s: pings (one per pingInterval, 18 s) fit in the rest.
    assert round(10 / REQUEST_INTERVAL) == 90


async def test_markets_and_trades_share_one_token_and_connection(
    fake_kucoin, kucoin_recording, kucoin_reference
):
    async with fake_kucoin() as fake:
        served = {s: Served(fake, kucoin_recording, kucoin_reference, s) for s in (BCHSV, SNX)}
        fake.stream(f"/market/match:{DAPPT}", kucoin_recording.matches[DAPPT])
        venue = _venue(fake, kucoin_recording)
        markets = await venue.load_markets()
        sinks = {s: BookLog() for s in served}
        trades: list = []
        all_trades = asyncio.Event()

        class TradeSink:
            def on_connection(self, up, reason=""):
                pass  # what trades arrive is the question here

            def on_trades(self, batch):
                trades.extend(batch)
                if len(trades) == len(kucoin_recording.matches[DAPPT]):
                    all_trades.set()

        async with feeds(venue) as start:
            for symbol in served:
                start(venue.run_book_feed(_market(markets, symbol), sinks[symbol]))
            start(venue.run_trade_feed(_market(markets, DAPPT), TradeSink()))
            for symbol, book in served.items():
                await sinks[symbol].until(lambda b=book, s=sinks[symbol]: b.done(s))
            async with asyncio.timeout(10):
                await all_trades.wait()
        assert fake.bullets == fake.connections == 1
        # One request per channel, the symbols joined, all before the first data.
        assert fake.sent("subscribe") == [f"/market/level2:{BCHSV},{SNX}", f"/market/match:{DAPPT}"]
        for symbol, book in served.items():
            assert "resync" not in sinks[symbol].kinds()
            book.check(sinks[symbol])


async def test_a_gap_resyncs_only_that_market(fake_kucoin, kucoin_recording, kucoin_reference):
    async with fake_kucoin() as fake:
        bchsv = Served(fake, kucoin_recording, kucoin_reference, BCHSV)
        # SNX waits at frame 200 until its book is synced; frame 300 is then lost.
        snx = Served(fake, kucoin_recording, kucoin_reference, SNX, hold=200, drop_at=300)
        venue = _venue(fake, kucoin_recording)
        markets = await venue.load_markets()
        sinks = {BCHSV: BookLog(), SNX: BookLog()}
        async with feeds(venue) as start:
            for symbol, sink in sinks.items():
                start(venue.run_book_feed(_market(markets, symbol), sink))
            await sinks[SNX].until(lambda: "snapshot" in sinks[SNX].kinds())
            snx.stream.release.set()
            await sinks[SNX].until(lambda: snx.done(sinks[SNX], snapshots=2))
            await sinks[BCHSV].until(lambda: bchsv.done(sinks[BCHSV]))
    assert snx.stream.dropped == 1 and fake.connections == 1
    resyncs = [reason for kind, reason in sinks[SNX].log if kind == "resync"]
    assert len(resyncs) == 1 and resyncs[0].startswith("message starts at ")
    assert [s for s, _, _ in fake.served].count(SNX) == 2  # a fresh snapshot for SNX only
    # The other market on the same connection never noticed.
    assert [s for s, _, _ in fake.served].count(BCHSV) == 1
    assert [k for k in sinks[BCHSV].kinds() if k != "update"] == ["snapshot"]
    bchsv.check(sinks[BCHSV])
    snx.check(sinks[SNX])


async def test_live_subscribe_and_unsubscribe_on_cancel(
    fake_kucoin, kucoin_recording, kucoin_reference
):
    async with fake_kucoin() as fake:
        bchsv = Served(fake, kucoin_recording, kucoin_reference, BCHSV, hold=600)
        snx = Served(fake, kucoin_recording, kucoin_reference, SNX)
        venue = _venue(fake, kucoin_recording)
        markets = await venue.load_markets()
        sinks = {BCHSV: BookLog(), SNX: BookLog()}
        async with feeds(venue) as start:
            start(venue.run_book_feed(_market(markets, BCHSV), sinks[BCHSV]))
            await sinks[BCHSV].until(lambda: "snapshot" in sinks[BCHSV].kinds())
            snx_feed = start(venue.run_book_feed(_market(markets, SNX), sinks[SNX]))
            await sinks[SNX].until(lambda: snx.done(sinks[SNX]))
            snx_feed.cancel()
            await fake.wait_until(lambda: fake.sent("unsubscribe"))
            bchsv.stream.release.set()
            await sinks[BCHSV].until(lambda: bchsv.done(sinks[BCHSV]))
    assert fake.bullets == fake.connections == 1
    assert fake.sent("subscribe") == [f"/market/level2:{BCHSV}", f"/market/level2:{SNX}"]
    assert fake.sent("unsubscribe") == [f"/market/level2:{SNX}"]
    assert "resync" not in sinks[BCHSV].kinds()
    bchsv.check(sinks[BCHSV])


async def test_a_full_connection_opens_another(fake_kucoin, kucoin_recording, kucoin_reference):
    async with fake_kucoin() as fake:
        served = {
            s: Served(fake, kucoin_recording, kucoin_reference, s) for s in (BCHSV, SNX, DAPPT)
        }
        venue = _venue(fake, kucoin_recording, topics_per_connection=2)
        markets = await venue.load_markets()
        sinks = {s: BookLog() for s in served}
        async with feeds(venue) as start:
            for symbol in served:
                start(venue.run_book_feed(_market(markets, symbol), sinks[symbol]))
            for symbol, book in served.items():
                await sinks[symbol].until(lambda b=book, s=sinks[symbol]: b.done(s))
            assert [len(c.consumers) for c in venue.pools["spot"].connections] == [2, 1]
    assert fake.bullets == fake.connections == 2  # a token per connection
    subscribed = sorted((n, m["topic"]) for n, m in fake.requests if m["type"] == "subscribe")
    assert subscribed == [(1, f"/market/level2:{BCHSV},{SNX}"), (2, f"/market/level2:{DAPPT}")]
    for symbol, book in served.items():
        book.check(sinks[symbol])


async def test_a_cut_connection_resubscribes_and_resyncs_every_market(
    fake_kucoin, kucoin_recording, kucoin_reference
):
    async with fake_kucoin() as fake:
        # Both books sync on the first connection; then BCHSV's frames go on and the
        # connection is cut after its 500th; SNX waits for the second connection.
        bchsv = Served(fake, kucoin_recording, kucoin_reference, BCHSV, hold=400, close_after=500)
        snx = Served(fake, kucoin_recording, kucoin_reference, SNX, hold=100)
        venue = _venue(fake, kucoin_recording)
        markets = await venue.load_markets()
        sinks = {BCHSV: BookLog(), SNX: BookLog()}
        async with feeds(venue) as start:
            for symbol, sink in sinks.items():
                start(venue.run_book_feed(_market(markets, symbol), sink))
            for sink in sinks.values():
                await sink.until(lambda s=sink: "snapshot" in s.kinds())
            bchsv.stream.release.set()
            await fake.wait_until(lambda: fake.connections == 2)
            snx.stream.release.set()
            await sinks[BCHSV].until(lambda: bchsv.done(sinks[BCHSV], snapshots=2))
            await sinks[SNX].until(lambda: snx.done(sinks[SNX], snapshots=2))
    assert fake.bullets == fake.connections == 2  # a fresh token for the new connection
    both = f"/market/level2:{BCHSV},{SNX}"
    subscribed = [(n, m["topic"]) for n, m in fake.requests if m["type"] == "subscribe"]
    assert subscribed == [(1, both), (2, both)]
    for sink in sinks.values():  # both books resynced: snapshot, resync, snapshot
        assert [k for k in sink.kinds() if k != "update"] == ["snapshot", "resync", "snapshot"]
        reason = next(r for k, r in sink.log if k == "resync")
        assert reason.startswith("reconnecting: ConnectionError")
    bchsv.check(sinks[BCHSV])
    snx.check(sinks[SNX])


async def test_a_refused_batch_is_split_and_the_good_symbols_go_on(
    fake_kucoin, kucoin_recording, kucoin_reference
):
    async with fake_kucoin() as fake:
        bchsv = Served(fake, kucoin_recording, kucoin_reference, BCHSV)
        venue = _venue(fake, kucoin_recording)
        markets = await venue.load_markets()
        real = _market(markets, BCHSV)
        unknown = dataclasses.replace(
            real, symbol="KUCOIN-SPOT-NOPE-USDT", exchange_symbol="NOPE-USDT"
        )
        sinks = {BCHSV: BookLog(), "NOPE-USDT": BookLog()}
        async with feeds(venue) as start:
            start(venue.run_book_feed(real, sinks[BCHSV]))
            start(venue.run_book_feed(unknown, sinks["NOPE-USDT"]))
            await sinks[BCHSV].until(lambda: bchsv.done(sinks[BCHSV]))
            await fake.wait_until(lambda: len(fake.sent("subscribe")) >= 4)  # NOPE once more
    assert fake.connections == 1
    assert fake.sent("subscribe")[:4] == [
        f"/market/level2:{BCHSV},NOPE-USDT",  # refused as a whole
        f"/market/level2:{BCHSV}",  # then each alone
        "/market/level2:NOPE-USDT",
        "/market/level2:NOPE-USDT",  # after a backoff
    ]
    refused = [r for k, r in sinks["NOPE-USDT"].log if k == "resync"]
    assert (
        refused[:2]
        == ["subscription refused (404: topic /market/level2:NOPE-USDT is not found)"] * 2
    )
    assert sinks[BCHSV].kinds()[:2] == ["resync", "snapshot"]  # the batch refusal, then synced
    assert "snapshot" not in sinks["NOPE-USDT"].kinds()
    bchsv.check(sinks[BCHSV])
