"""The Binance venue's own plumbing (stream URL, REST snapshot through ccxt, rate-limit
pause, scheduled reconnect) replaying the recorded NKNUSDT spot session from a fake Binance
on 127.0.0.1. After every snapshot and update the venue's book must equal an independent
rebuild of the recording at that update id."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from astra.core import RateLimited, Side
from astra.venues.binance import BinanceUrls, BinanceVenue

SYMBOL = "BINANCE-SPOT-NKN-USDT"


@contextlib.asynccontextmanager
async def running(venue: BinanceVenue, coro):
    """Run a feed coroutine for the duration of the block, then cancel it and close."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await venue.close()


async def _venue(server, exchange_info, **options) -> tuple[BinanceVenue, object]:
    spot_only = {"spot": exchange_info["spot"]}
    venue = BinanceVenue(urls=BinanceUrls.at(server.base_url), exchange_info=spot_only, **options)
    return venue, (await venue.load_markets())[SYMBOL]


def _tracking(sink, rec) -> None:
    """Check the sink's book against the rebuild after every snapshot and update."""

    def check(s):
        kind, update_id = s.log[-1]
        if kind != "resync":
            assert s.book.update_id == update_id
            assert s.levels() == rec.truth_floats(update_id), (kind, update_id)

    sink.checks.append(check)


async def test_recorded_session_rebuilds_exactly(recording, fake_binance, exchange_info, book_sink):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec)
    venue, market = await _venue(server, exchange_info)
    sink = book_sink()
    _tracking(sink, rec)
    async with running(venue, venue.run_book_feed(market, sink)):
        await sink.until(lambda: sink.book is not None and sink.book.update_id == rec.final_u)
    assert server.streams == ["nknusdt@depth@100ms"]
    assert [query for _, query in server.depth_requests] == [{"symbol": "NKNUSDT", "limit": "1000"}]
    assert server.served_ids == [rec.snapshot["lastUpdateId"]]
    kinds = sink.kinds()
    assert kinds[0] == "snapshot" and "resync" not in kinds
    assert kinds.count("update") > 100  # the recording really exercised the chain


async def test_a_dropped_frame_resyncs_on_the_same_connection(
    recording, fake_binance, exchange_info, book_sink
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec, drop=(60,))
    venue, market = await _venue(server, exchange_info)
    sink = book_sink()
    _tracking(sink, rec)
    async with running(venue, venue.run_book_feed(market, sink)):
        await sink.until(
            lambda: sink.kinds().count("snapshot") == 2 and sink.book.update_id == rec.final_u
        )
    gap = rec.events[60]
    resyncs = [reason for kind, reason in sink.log if kind == "resync"]
    assert resyncs == [f"U={rec.events[61]['U']} but previous u={gap['U'] - 1}"]
    assert server.dropped == [60] and server.connections == 1
    assert len(server.served_ids) == 2 and server.served_ids[1] >= gap["u"]


async def test_scheduled_reconnect_before_the_24h_cut(
    recording, fake_binance, exchange_info, book_sink
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec, per_connection=75)  # then each connection goes quiet
    venue, market = await _venue(server, exchange_info, max_connection_age=1.0)
    sink = book_sink()
    _tracking(sink, rec)
    async with running(venue, venue.run_book_feed(market, sink)):
        await sink.until(lambda: sink.kinds().count("snapshot") == 2)
    assert server.connections == 2
    first, second = (i for i, kind in enumerate(sink.kinds()) if kind == "snapshot")
    between = sink.log[first + 1 : second]
    assert [kind for kind, _ in between if kind != "update"] == ["resync"]
    assert "scheduled reconnect" in next(reason for kind, reason in between if kind == "resync")


async def test_429_pauses_snapshots_for_retry_after(
    recording, fake_binance, exchange_info, book_sink
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec, refusals=((429, 1),))
    venue, market = await _venue(server, exchange_info)
    sink = book_sink()
    _tracking(sink, rec)
    async with running(venue, venue.run_book_feed(market, sink)):
        await sink.until(lambda: "snapshot" in sink.kinds())
    (refused, _), (served, _) = server.depth_requests
    assert served - refused >= 1.0  # Retry-After: 1, not the feed's own 0.5 s backoff
    assert sink.book.update_id >= rec.snapshot["lastUpdateId"]


async def test_418_shuts_the_products_rest_without_calling_it_again(
    recording, fake_binance, exchange_info
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec, refusals=((418, 120),))
    venue, market = await _venue(server, exchange_info)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(RateLimited) as refused:  # the venue's 418, as the gateway's
                await venue.snapshot(market)
            with pytest.raises(RateLimited, match="paused") as paused:
                await venue.recent_trades(market, 10)  # a user's request fails at once
        assert 100 < refused.value.retry_after <= 120  # its Retry-After
        assert 100 < paused.value.retry_after <= 120
        assert 100 < venue.limiters["spot"].retry_after() <= 120
        assert venue.limiters["usdm"].retry_after() is None  # Binance limits products apart
        assert len(server.depth_requests) == 1
    finally:
        await venue.close()


async def test_trade_feed_forwards_recorded_agg_trades(recording, fake_binance, exchange_info):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec)
    venue, market = await _venue(server, exchange_info)
    received = []
    got = asyncio.Event()

    class Sink:
        def on_connection(self, up, reason=""):
            pass  # what trades arrive is the question here

        def on_trades(self, trades):
            received.extend(trades)
            got.set()

    async with running(venue, venue.run_trade_feed(market, Sink())):
        async with asyncio.timeout(5):
            await got.wait()
    raw = json.loads(rec.trades[0])
    (trade,) = received
    assert (trade.price, trade.quantity, trade.time) == (float(raw["p"]), float(raw["q"]), raw["T"])
    assert trade.side == (Side.SELL if raw["m"] else Side.BUY)
    assert trade.trade_id == str(raw["a"])
    assert server.streams == ["nknusdt@aggTrade"]


async def test_markets_over_rest_through_ccxt(recording, fake_binance, exchange_info):
    server = await fake_binance(recording("NKNUSDT"), exchange_info=exchange_info["spot"])
    venue = BinanceVenue(urls=BinanceUrls.at(server.base_url), sections=("spot",))
    try:
        async with asyncio.timeout(10):
            markets = await venue.load_markets()
    finally:
        await venue.close()
    assert markets[SYMBOL].exchange_symbol == "NKNUSDT"
    assert len(markets) == len(exchange_info["spot"]["symbols"])


async def test_unanswered_pings_reconnect_before_silence(exchange_info, book_sink):
    """A peer that stops answering (half-open link) is dropped after ~1.5 heartbeats, long
    before ``silence`` would notice, and the feed says so to its sink."""

    async def mute(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # receives our pings, never answers
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/stream/stream", mute)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    venue = BinanceVenue(
        urls=BinanceUrls.at(base),
        exchange_info={"spot": exchange_info["spot"]},
        heartbeat=0.2,
        silence=60.0,
    )
    market = (await venue.load_markets())[SYMBOL]
    sink = book_sink()
    try:
        async with running(venue, venue.run_book_feed(market, sink)):
            await sink.until(lambda: "resync" in sink.kinds(), within=5)
    finally:
        await runner.cleanup()
    kind, reason = sink.log[0]
    assert kind == "resync" and reason.startswith("reconnecting")
    assert "silent" not in reason  # the heartbeat, not the silence timer, fired
