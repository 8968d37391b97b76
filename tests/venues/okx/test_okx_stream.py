"""The OKX connection layer against a fake OKX on 127.0.0.1: batched subscriptions on one
connection, unsubscribe when a feed stops, "ping" when idle, reconnect when no "pong" comes
or OKX sends its 64008 notice, a snapshot asked for again when it does not come, trades."""

from __future__ import annotations

import json

BTC, UNI = "OKX-SPOT-BTC-USDT", "OKX-PERP-UNI-USD-COINM"


def _script(frames_by_inst: dict[str, list[str]], skip_first: bool = False):
    def script(arg: dict, n: int):
        if skip_first and n == 1:
            return None  # subscribe acknowledged, but no snapshot
        return frames_by_inst.get(arg["instId"], []) if arg["channel"] == "books" else []

    return script


async def test_subscriptions_are_batched_on_one_connection_and_released(
    fake_okx, okx_venue, okx_book_frames, recording_sink, background
):
    async with fake_okx(_script(okx_book_frames)) as server:
        venue = okx_venue(server)
        markets = await venue.load_markets()
        btc, uni = recording_sink(), recording_sink()
        try:
            async with background(
                venue.run_book_feed(markets[BTC], btc), venue.run_book_feed(markets[UNI], uni)
            ) as (btc_task, _):
                await btc.wait_for(lambda s: "update" in s.kinds())
                await uni.wait_for(lambda s: "update" in s.kinds())
                assert server.requests[0] == {
                    "op": "subscribe",
                    "args": [
                        {"channel": "books", "instId": "BTC-USDT"},
                        {"channel": "books", "instId": "UNI-USD-SWAP"},
                    ],
                }
                assert server.connections == 1
                btc_task.cancel()
                await server.wait_until(lambda srv: len(srv.requests) >= 2)
                assert server.requests[1] == {
                    "op": "unsubscribe",
                    "args": [{"channel": "books", "instId": "BTC-USDT"}],
                }
            # The last feed gone: the connection closes.
            await server.wait_until(lambda srv: srv.open_connections == 0)
            assert "resync" not in btc.kinds() + uni.kinds()
        finally:
            await venue.close()


async def test_idle_connection_pings_and_stays(
    fake_okx, okx_venue, okx_book_frames, recording_sink, background
):
    frames = {"BTC-USDT": okx_book_frames["BTC-USDT"][:1]}  # a snapshot, then silence
    async with fake_okx(_script(frames)) as server:
        venue = okx_venue(server, ping_interval=0.05, pong_timeout=1.0)
        sink = recording_sink()
        try:
            async with background(venue.run_book_feed((await venue.load_markets())[BTC], sink)):
                await server.wait_until(lambda srv: srv.pings >= 3)
            assert server.connections == 1 and sink.kinds() == ["snapshot"]
        finally:
            await venue.close()


async def test_no_pong_reconnects_and_the_book_resyncs(
    fake_okx, okx_venue, okx_book_frames, recording_sink, background
):
    frames = {"BTC-USDT": okx_book_frames["BTC-USDT"][:3]}
    async with fake_okx(_script(frames)) as server:
        server.answer_pings = False
        venue = okx_venue(server, ping_interval=0.05, pong_timeout=0.05)
        sink = recording_sink()
        try:
            async with background(venue.run_book_feed((await venue.load_markets())[BTC], sink)):
                await sink.wait_for(lambda s: s.kinds().count("snapshot") >= 2)
            kinds = sink.kinds()
            assert kinds[:4] == ["snapshot", "update", "update", "resync"]
            assert "silent" in sink.events[3][1] and server.connections >= 2
            assert sink.books[-1] is not sink.books[0]
        finally:
            await venue.close()


async def test_a_venue_notice_reconnects(
    fake_okx, okx_venue, okx_book_frames, recording_sink, background
):
    frames = {"UNI-USD-SWAP": okx_book_frames["UNI-USD-SWAP"][:2]}
    async with fake_okx(_script(frames)) as server:
        venue = okx_venue(server)
        sink = recording_sink()
        try:
            async with background(venue.run_book_feed((await venue.load_markets())[UNI], sink)):
                await sink.wait_for(lambda s: "update" in s.kinds())
                await server.notice()
                await sink.wait_for(lambda s: s.kinds().count("snapshot") == 2)
            assert sink.kinds() == ["snapshot", "update", "resync", "snapshot"]
            assert "64008" in sink.events[2][1] and server.connections == 2
        finally:
            await venue.close()


async def test_a_missing_snapshot_is_asked_for_again(
    fake_okx, okx_venue, okx_book_frames, recording_sink, background
):
    async with fake_okx(_script(okx_book_frames, skip_first=True)) as server:
        venue = okx_venue(server, snapshot_timeout=0.1)
        sink = recording_sink()
        try:
            async with background(venue.run_book_feed((await venue.load_markets())[BTC], sink)):
                await sink.wait_for(lambda s: "snapshot" in s.kinds())
            arg = [{"channel": "books", "instId": "BTC-USDT"}]
            assert server.requests[:3] == [
                {"op": "subscribe", "args": arg},
                {"op": "unsubscribe", "args": arg},
                {"op": "subscribe", "args": arg},
            ]
            assert server.connections == 1 and "resync" not in sink.kinds()
        finally:
            await venue.close()


async def test_trades_stream_and_recent_trades(fake_okx, okx_venue, recording_sink, background):
    rows = [
        {
            "instId": "BTC-USDT",
            "tradeId": str(i),
            "px": f"3000{i}.5",
            "sz": "0.01",
            "side": "buy" if i % 2 else "sell",
            "ts": str(1652459225000 + i),
        }
        for i in range(5, 0, -1)  # newest first, as OKX answers
    ]
    push = json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": rows[:2]})

    def script(arg, n):
        return [push] if arg["channel"] == "trades" else []

    async with fake_okx(script) as server:
        server.trades = rows
        venue = okx_venue(server)
        sink = recording_sink()
        try:
            market = (await venue.load_markets())[BTC]
            async with background(venue.run_trade_feed(market, sink)):
                await sink.wait_for(lambda s: len(s.trades) == 2)
            assert [t.trade_id for t in sink.trades] == ["5", "4"]
            assert sink.trades[0].price == 30005.5 and sink.trades[1].side == "SELL"
            recent = await venue.recent_trades(market, 3)
            assert [t.trade_id for t in recent] == ["3", "4", "5"]  # oldest first
        finally:
            await venue.close()
