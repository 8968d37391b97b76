"""The per-connection silence watchdog (astra.venues.silence), on real loopback WebSockets:
a socket that goes silent ends its receive loop with TimeoutError and the Aster feed (what the
SIM venues use) reconnects and resyncs its book; a busy one never trips, however many
messages it carries; an outside cancellation is not turned into a timeout."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from astra.venues.aster.feed import Snapshot, run_book_feed
from astra.venues.silence import SilenceWatchdog
from astra.venues.wsmux import WS_TIMEOUT


class FakeVenue:
    """Serves ``/ws`` (Binance-style ``depthUpdate`` frames, a continuous chain): each
    connection gets ``burst`` frames, then every ``pace`` s one more for ``busy_for`` s, then
    stays open and silent until the test ends."""

    def __init__(self, burst: int, pace: float = 0.0, busy_for: float = 0.0) -> None:
        self.burst, self.pace, self.busy_for = burst, pace, busy_for
        self.connections = 0
        self.sent = 0
        self.seq = 100
        self.done = asyncio.Event()  # the last connection's frames are all sent

    def frame(self) -> str:
        self.seq += 1
        return json.dumps({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": self.seq,
                           "u": self.seq, "b": [["100.0", "1.0"]], "a": [["101.0", "2.0"]]})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        self.connections += 1
        self.done.clear()
        loop = asyncio.get_running_loop()
        for _ in range(self.burst):
            await sock.send_str(self.frame())
            self.sent += 1
        end = loop.time() + self.busy_for
        while loop.time() < end:
            await asyncio.sleep(self.pace)
            await sock.send_str(self.frame())
            self.sent += 1
        self.done.set()
        async for _ in sock:  # silent from here on, the connection left open
            pass
        return sock

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/ws"


async def _receive_until_silent(url: str, silence: float) -> SilenceWatchdog:
    async with aiohttp.ClientSession() as session, session.ws_connect(
        url, timeout=WS_TIMEOUT
    ) as ws:
        with SilenceWatchdog(silence) as watch:
            while True:
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT
                watch.heard += 1
    return watch  # not reached: the loop ends by TimeoutError


async def test_a_silent_socket_ends_the_receive_loop_with_timeout():
    venue = FakeVenue(burst=5)
    runner, url = await venue.start()
    try:
        async with asyncio.timeout(20):
            with pytest.raises(TimeoutError, match=r"silent for 0\.3 s"):
                await _receive_until_silent(url, 0.3)
    finally:
        await runner.cleanup()
    assert venue.sent == 5 and venue.connections == 1


async def test_a_busy_socket_never_trips_the_watchdog():
    # 0.3 s silence; a frame every 10 ms for 1.5 s (five silences' worth), then quiet.
    venue = FakeVenue(burst=200, pace=0.01, busy_for=1.5)
    runner, url = await venue.start()
    heard: list[int] = []
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as session, \
                session.ws_connect(url, timeout=WS_TIMEOUT) as ws:
            with SilenceWatchdog(0.3) as watch:
                while not (venue.done.is_set() and watch.heard == venue.sent):
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT
                    watch.heard += 1
                heard.append(watch.heard)
            assert not watch.tripped
    finally:
        await runner.cleanup()
    assert heard == [venue.sent] and venue.sent > 200


async def test_an_outside_cancellation_is_not_a_timeout():
    started = asyncio.Event()

    async def waits() -> None:
        with SilenceWatchdog(60.0):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits())
    async with asyncio.timeout(10):
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_silence_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        SilenceWatchdog(0)


class _Sink:
    def __init__(self) -> None:
        self.snapshots = 0
        self.updates: list[int] = []
        self.resyncs: list[str] = []
        self.second_snapshot = asyncio.Event()

    def on_snapshot(self, book) -> None:
        self.snapshots += 1
        if self.snapshots == 2:
            self.second_snapshot.set()

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.updates.append(update_id)

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)


async def test_the_aster_feed_reconnects_a_silent_socket_and_resyncs():
    venue = FakeVenue(burst=5)
    runner, url = await venue.start()
    sink = _Sink()

    async def fetch_snapshot() -> Snapshot:
        # Bridges the next frame sent (spot rule: lastUpdateId + 1 == U).
        return Snapshot(venue.seq, 1, [(100.0, 1.0)], [(101.0, 2.0)])

    async with aiohttp.ClientSession() as session:
        feed = asyncio.create_task(run_book_feed(
            session, url, use_pu=False, fetch_snapshot=fetch_snapshot, sink=sink,
            market="ASTER-SPOT-BTC-USDT", silence=0.3))
        try:
            async with asyncio.timeout(30):
                await sink.second_snapshot.wait()
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
            await runner.cleanup()
    assert venue.connections >= 2  # the silent connection was replaced
    assert "reconnecting: silent for too long" in sink.resyncs
    assert sink.snapshots >= 2
