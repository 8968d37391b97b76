"""Many Binance markets on shared combined-stream connections, against the fake Binance on
127.0.0.1 replaying the recorded NKNUSDT, LRCBTC and BLZETH spot sessions: one connection and
batched SUBSCRIBEs, live SUBSCRIBE/UNSUBSCRIBE, a gap that resyncs one market only, the
per-connection stream cap, reconnects that resubscribe and resync everything, refused and
unanswered requests. Every book must equal an independent rebuild of its recording."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from astra.venues.binance import BinanceUrls, BinanceVenue
from astra.venues.binance.streams import SPOT_LIMITS, Pacer, StreamConnection

SYMBOLS = {
    "NKNUSDT": "BINANCE-SPOT-NKN-USDT",
    "LRCBTC": "BINANCE-SPOT-LRC-BTC",
    "BLZETH": "BINANCE-SPOT-BLZ-ETH",
}


def _depth(symbol: str) -> str:
    return f"{symbol.lower()}@depth@100ms"


@contextlib.asynccontextmanager
async def feeds(venue: BinanceVenue):
    """``start(coro)`` runs a feed until the block ends (or ``stop(task)``), then closes."""
    tasks: list[asyncio.Task] = []

    def start(coro) -> asyncio.Task:
        tasks.append(asyncio.create_task(coro))
        return tasks[-1]

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await venue.close()


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _venue(server, exchange_info, **options):
    venue = BinanceVenue(
        urls=BinanceUrls.at(server.base_url),
        exchange_info={"spot": exchange_info["spot"]},
        **options,
    )
    return venue, await venue.load_markets()


def _tracking(sink, rec) -> None:
    """Check the sink's book against the rebuild after every snapshot and update."""

    def check(s):
        kind, update_id = s.log[-1]
        if kind != "resync":
            assert s.book.update_id == update_id
            assert s.levels() == rec.truth_floats(update_id), (rec.symbol, kind, update_id)

    sink.checks.append(check)


def _at_end(sink, rec, snapshots: int = 1):
    return lambda: (
        sink.kinds().count("snapshot") >= snapshots
        and sink.book is not None
        and sink.book.update_id == rec.final_u
    )


def test_requests_are_paced_one_slot_at_a_time():
    pacer = Pacer(1 / (SPOT_LIMITS.messages_per_second - 1))  # 4 a second, one left for pings
    assert [pacer.reserve(10.0) for _ in range(3)] == [0.0, 0.25, 0.5]
    assert pacer.reserve(10.6) == pytest.approx(0.15)  # the next free slot is 10.75
    assert pacer.reserve(20.0) == 0.0  # idle time is not saved up into a burst


async def test_markets_and_trades_share_one_connection(
    recording, fake_binance, exchange_info, book_sink
):
    recs = [recording(symbol) for symbol in SYMBOLS]
    server = await fake_binance(recs)
    venue, markets = await _venue(server, exchange_info)
    sinks = {rec.symbol: book_sink() for rec in recs}
    trades = []
    all_trades = asyncio.Event()

    class TradeSink:
        def on_connection(self, up, reason=""):
            pass  # what trades arrive is the question here

        def on_trades(self, batch):
            trades.extend(batch)
            if len(trades) == len(recs[0].trades):
                all_trades.set()

    async with feeds(venue) as start:
        for rec in recs:
            _tracking(sinks[rec.symbol], rec)
            start(venue.run_book_feed(markets[SYMBOLS[rec.symbol]], sinks[rec.symbol]))
        start(venue.run_trade_feed(markets[SYMBOLS["NKNUSDT"]], TradeSink()))
        for rec in recs:
            await sinks[rec.symbol].until(_at_end(sinks[rec.symbol], rec))
        async with asyncio.timeout(10):
            await all_trades.wait()
    assert server.connections == 1
    # Everything asked before the connection was up goes out as one request.
    assert server.sent("SUBSCRIBE") == [[_depth(s) for s in SYMBOLS] + ["nknusdt@aggTrade"]]
    for rec in recs:
        assert sinks[rec.symbol].kinds().count("snapshot") == 1
        assert "resync" not in sinks[rec.symbol].kinds()
    queried = sorted(query["symbol"] for _, query in server.depth_requests)
    assert queried == sorted(SYMBOLS)  # one snapshot per market


async def test_a_gap_resyncs_only_that_market(recording, fake_binance, exchange_info, book_sink):
    nkn, lrc = recording("NKNUSDT"), recording("LRCBTC")
    server = await fake_binance([nkn, lrc], drop={"NKNUSDT": (60,)})
    venue, markets = await _venue(server, exchange_info)
    sinks = {"NKNUSDT": book_sink(), "LRCBTC": book_sink()}
    async with feeds(venue) as start:
        for rec in (nkn, lrc):
            _tracking(sinks[rec.symbol], rec)
            start(venue.run_book_feed(markets[SYMBOLS[rec.symbol]], sinks[rec.symbol]))
        await sinks["NKNUSDT"].until(_at_end(sinks["NKNUSDT"], nkn, snapshots=2))
        await sinks["LRCBTC"].until(_at_end(sinks["LRCBTC"], lrc))
    resyncs = [reason for kind, reason in sinks["NKNUSDT"].log if kind == "resync"]
    assert resyncs == [f"U={nkn.events[61]['U']} but previous u={nkn.events[60]['U'] - 1}"]
    assert server.dropped == [60] and server.connections == 1
    assert len(server.tapes["NKNUSDT"].served_ids) == 2  # a fresh snapshot for NKN only
    # The other market on the same connection never noticed.
    assert server.tapes["LRCBTC"].served_ids == [lrc.snapshot["lastUpdateId"]]
    assert [k for k in sinks["LRCBTC"].kinds() if k != "update"] == ["snapshot"]
    assert sinks["LRCBTC"].levels() == lrc.truth_floats(lrc.final_u)


async def test_live_subscribe_and_unsubscribe_on_cancel(
    recording, fake_binance, exchange_info, book_sink
):
    nkn, lrc = recording("NKNUSDT"), recording("LRCBTC")
    server = await fake_binance([nkn, lrc], hold_after=20)  # each tape waits at frame 20
    venue, markets = await _venue(server, exchange_info)
    sinks = {"NKNUSDT": book_sink(), "LRCBTC": book_sink()}
    for rec in (nkn, lrc):
        _tracking(sinks[rec.symbol], rec)
    async with feeds(venue) as start:
        start(venue.run_book_feed(markets[SYMBOLS["NKNUSDT"]], sinks["NKNUSDT"]))
        await sinks["NKNUSDT"].until(lambda: "snapshot" in sinks["NKNUSDT"].kinds())
        lrc_feed = start(venue.run_book_feed(markets[SYMBOLS["LRCBTC"]], sinks["LRCBTC"]))
        await sinks["LRCBTC"].until(_at_end(sinks["LRCBTC"], lrc))
        await stop(lrc_feed)
        await server.wait_until(lambda: server.sent("UNSUBSCRIBE"))
        server.release.set()
        await sinks["NKNUSDT"].until(_at_end(sinks["NKNUSDT"], nkn))
    assert server.connections == 1
    assert server.sent("SUBSCRIBE") == [[_depth("NKNUSDT")], [_depth("LRCBTC")]]
    assert server.sent("UNSUBSCRIBE") == [[_depth("LRCBTC")]]
    assert "resync" not in sinks["NKNUSDT"].kinds()


async def test_a_full_connection_opens_another(recording, fake_binance, exchange_info, book_sink):
    recs = [recording(symbol) for symbol in SYMBOLS]
    server = await fake_binance(recs)
    venue, markets = await _venue(server, exchange_info, streams_per_connection=2)
    sinks = {rec.symbol: book_sink() for rec in recs}
    async with feeds(venue) as start:
        for rec in recs:
            _tracking(sinks[rec.symbol], rec)
            start(venue.run_book_feed(markets[SYMBOLS[rec.symbol]], sinks[rec.symbol]))
        for rec in recs:
            await sinks[rec.symbol].until(_at_end(sinks[rec.symbol], rec))
        (pool,) = venue.pools.values()
        assert [len(c.consumers) for c in pool.connections] == [2, 1]
    assert server.connections == 2
    subscribed = [(n, req["params"]) for n, req in server.requests if req["method"] == "SUBSCRIBE"]
    assert [params for _, params in sorted(subscribed)] == [
        [_depth("NKNUSDT"), _depth("LRCBTC")],
        [_depth("BLZETH")],
    ]


async def test_a_reconnect_resubscribes_and_resyncs_every_market(
    recording, fake_binance, exchange_info, book_sink
):
    nkn, lrc = recording("NKNUSDT"), recording("LRCBTC")
    server = await fake_binance([nkn, lrc], per_connection=6)  # then the connection is quiet
    venue, markets = await _venue(server, exchange_info, max_connection_age=1.0)
    sinks = {"NKNUSDT": book_sink(), "LRCBTC": book_sink()}
    async with feeds(venue) as start:
        for rec in (nkn, lrc):
            _tracking(sinks[rec.symbol], rec)
            start(venue.run_book_feed(markets[SYMBOLS[rec.symbol]], sinks[rec.symbol]))
        for sink in sinks.values():
            await sink.until(lambda s=sink: s.kinds().count("snapshot") == 2)
    assert server.connections >= 2
    both = [_depth("NKNUSDT"), _depth("LRCBTC")]
    subscribed = [req["params"] for n, req in server.requests if req["method"] == "SUBSCRIBE"]
    assert subscribed[:2] == [both, both]  # on the first connection, then on the next
    for sink in sinks.values():
        first, second = (i for i, kind in enumerate(sink.kinds()) if kind == "snapshot")
        between = [entry for entry in sink.log[first + 1 : second] if entry[0] != "update"]
        assert len(between) == 1 and "scheduled reconnect" in between[0][1]


async def test_a_refused_subscription_is_asked_again(
    recording, fake_binance, exchange_info, book_sink
):
    nkn, lrc = recording("NKNUSDT"), recording("LRCBTC")
    server = await fake_binance([nkn, lrc], refuse=(_depth("LRCBTC"),))
    venue, markets = await _venue(server, exchange_info)
    sinks = {"NKNUSDT": book_sink(), "LRCBTC": book_sink()}
    async with feeds(venue) as start:
        for rec in (nkn, lrc):
            _tracking(sinks[rec.symbol], rec)
            start(venue.run_book_feed(markets[SYMBOLS[rec.symbol]], sinks[rec.symbol]))
        for rec in (nkn, lrc):
            await sinks[rec.symbol].until(_at_end(sinks[rec.symbol], rec))
    both = [_depth("NKNUSDT"), _depth("LRCBTC")]
    assert server.sent("SUBSCRIBE") == [both, both]  # the refused request, then again
    assert server.connections == 1
    for sink in sinks.values():  # the whole request was refused: both heard it
        kind, reason = sink.log[0]
        assert kind == "resync" and reason.startswith("subscription refused (2: ")
        assert sink.kinds()[1] == "snapshot"


async def test_an_unanswered_request_means_a_dead_connection():
    """A server that takes SUBSCRIBEs and never answers: the connection is replaced."""
    connections = 0

    async def mute(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/stream", mute)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/stream"
    resets: list[str] = []
    reset = asyncio.Event()

    class Consumer:
        def on_data(self, data):
            raise AssertionError("no data expected")

        def on_reset(self, reason):
            resets.append(reason)
            reset.set()

    async with aiohttp.ClientSession() as session:
        conn = StreamConnection(lambda: session, url, SPOT_LIMITS, response_timeout=0.2)
        conn.add(_depth("NKNUSDT"), Consumer())
        try:
            async with asyncio.timeout(5):
                await reset.wait()
        finally:
            await conn.close()
            await runner.cleanup()
    assert resets[0] == "reconnecting: subscribe 1 unanswered for 0.2 s"
    assert connections >= 1
