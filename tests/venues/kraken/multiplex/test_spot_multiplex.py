"""Many Kraken spot pairs on one v2 connection, through the venue and a fake Kraken v2 on
127.0.0.1 serving synthetic books (checksums computed independently, from exact decimals).

Markets come from the docs sample (``data/asset_pairs.json``): no ``../shared`` needed. Every
wait is bounded; assertions are on what the server saw and what the sinks rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from astra.venues.kraken import KrakenUrls, KrakenVenue

PAIRS = {  # Astra symbol -> (v2 symbol, mid, tick, price places)
    "KRAKEN-SPOT-XBT-USD": ("BTC/USD", "60000.0", "0.1", 1),
    "KRAKEN-SPOT-ETH-USD": ("ETH/USD", "3000.00", "0.01", 2),
    "KRAKEN-SPOT-SOL-USD": ("SOL/USD", "150.00", "0.01", 2),
}


def _server(fake_kraken_multi, book_script, changes=80, corrupt_eth=False):
    scripts = {
        ws: (book_script(seed, mid, tick, 8, changes=changes), places, 8)
        for seed, (ws, mid, tick, places) in enumerate(PAIRS.values())
    }
    corrupt = {}
    if corrupt_eth:  # a change at most 5 ticks from the middle: always in the top 10
        _, mid, tick, _ = PAIRS["KRAKEN-SPOT-ETH-USD"]
        script = scripts["ETH/USD"][0]
        corrupt["ETH/USD"] = next(
            i
            for i, (_, price, _) in enumerate(script.changes)
            if i >= 10 and abs(Decimal(price) - Decimal(mid)) <= 5 * Decimal(tick)
        )
    return fake_kraken_multi(scripts, corrupt=corrupt)


def _venue(server, doc_asset_pairs, **options) -> KrakenVenue:
    base = f"127.0.0.1:{server.port}"
    urls = KrakenUrls(rest=f"http://{base}", ws=f"ws://{base}/v2")
    return KrakenVenue(urls=urls, markets_source=lambda: doc_asset_pairs, futures=False, **options)


@contextlib.asynccontextmanager
async def _feeds(venue, symbols, recording_sink):
    """Book feeds of ``symbols`` on ``venue``; yields {symbol: (sink, task)}; cancels them."""
    markets = await venue.load_markets()
    feeds = {}
    for symbol in symbols:
        sink = recording_sink()
        feeds[symbol] = (sink, asyncio.create_task(venue.run_book_feed(markets[symbol], sink)))
    try:
        yield feeds
    finally:
        for _, task in feeds.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in feeds.values()), return_exceptions=True)
        await venue.close()


def _events(server, feeds) -> list[asyncio.Event]:
    return [server.changed, *(sink.changed for sink, _ in feeds.values())]


def _synced(server, feeds) -> bool:
    return all(
        server.done[PAIRS[s][0]].is_set() and sink.book == _floats(server, PAIRS[s][0])
        for s, (sink, _) in feeds.items()
    )


def _floats(server, ws: str) -> dict:
    levels = server.books[ws].levels()
    return {side: {float(p): float(q) for p, q in lv.items()} for side, lv in levels.items()}


async def test_pairs_share_one_connection_and_a_bad_checksum_resyncs_only_that_pair(
    fake_kraken_multi, book_script, doc_asset_pairs, recording_sink, until
):
    server = _server(fake_kraken_multi, book_script, corrupt_eth=True)
    bad = server.corrupt["ETH/USD"]
    async with server.running():
        venue = _venue(server, doc_asset_pairs)
        async with _feeds(venue, list(PAIRS), recording_sink) as feeds:
            await until(lambda: _synced(server, feeds), *_events(server, feeds))
            assert server.connections == 1
            assert server.subscribes() == [(1, ["BTC/USD", "ETH/USD", "SOL/USD"]), (1, ["ETH/USD"])]
            assert server.subscribes("unsubscribe") == [(1, ["ETH/USD"])]
            subscribe = next(r for _, r in server.requests if r["method"] == "subscribe")
            assert subscribe["params"] == {
                "channel": "book",
                "symbol": ["BTC/USD", "ETH/USD", "SOL/USD"],
                "depth": 1000,
                "snapshot": True,
            }
            for symbol in ("KRAKEN-SPOT-XBT-USD", "KRAKEN-SPOT-SOL-USD"):
                sink = feeds[symbol][0]
                assert sink.kinds() == ["snapshot"] + ["update"] * 80, symbol
            eth = feeds["KRAKEN-SPOT-ETH-USD"][0]
            kinds = eth.kinds()
            assert kinds[: bad + 2] == ["snapshot"] + ["update"] * bad + ["resync"]
            assert kinds[bad + 2] == "snapshot" and kinds.count("snapshot") == 2
            assert "checksum" in eth.resyncs()[0] and len(eth.resyncs()) == 1
            assert server.subscriptions == {"BTC/USD": 1, "ETH/USD": 2, "SOL/USD": 1}

            # cancelling one pair's feed unsubscribes it; the connection stays for the others
            _, sol_task = feeds.pop("KRAKEN-SPOT-SOL-USD")
            sol_task.cancel()
            await asyncio.gather(sol_task, return_exceptions=True)
            await until(
                lambda: (1, ["SOL/USD"]) in server.subscribes("unsubscribe"), server.changed
            )
            assert server.connections == 1
            assert server.subscribes("unsubscribe") == [(1, ["ETH/USD"]), (1, ["SOL/USD"])]
            assert feeds["KRAKEN-SPOT-XBT-USD"][1].done() is False


async def test_a_full_connection_opens_another(
    fake_kraken_multi, book_script, doc_asset_pairs, recording_sink, until
):
    server = _server(fake_kraken_multi, book_script, changes=20)
    async with server.running():
        venue = _venue(server, doc_asset_pairs, connection_capacity=2)
        async with _feeds(venue, list(PAIRS), recording_sink) as feeds:
            await until(lambda: _synced(server, feeds), *_events(server, feeds))
            assert server.connections == 2
            assert server.subscribes() == [(1, ["BTC/USD", "ETH/USD"]), (2, ["SOL/USD"])]
            assert [len(s.consumers) for s in venue.spot_pool.connections] == [2, 1]
            assert all(sink.resyncs() == [] for sink, _ in feeds.values())


async def test_a_reconnect_resubscribes_everything_and_every_pair_resyncs(
    fake_kraken_multi, book_script, doc_asset_pairs, recording_sink, until
):
    server = _server(fake_kraken_multi, book_script, changes=20)
    async with server.running():
        venue = _venue(server, doc_asset_pairs)
        async with _feeds(venue, list(PAIRS), recording_sink) as feeds:
            await until(lambda: _synced(server, feeds), *_events(server, feeds))
            await server.drop()

            def resynced() -> bool:
                return all(sink.kinds().count("snapshot") == 2 for sink, _ in feeds.values())

            await until(resynced, *_events(server, feeds))
            assert server.connections == 2
            assert server.subscribes() == [
                (1, ["BTC/USD", "ETH/USD", "SOL/USD"]),
                (2, ["BTC/USD", "ETH/USD", "SOL/USD"]),
            ]
            for sink, _ in feeds.values():
                kinds = sink.kinds()
                assert kinds[-2:] == ["resync", "snapshot"]
                assert "reconnecting" in sink.resyncs()[0]
            assert _synced(server, feeds)


async def test_a_second_consumer_of_a_live_pair_gets_its_own_snapshot(
    fake_kraken_multi, book_script, doc_asset_pairs, recording_sink, until
):
    server = _server(fake_kraken_multi, book_script, changes=20)
    async with server.running():
        venue = _venue(server, doc_asset_pairs)
        symbol = "KRAKEN-SPOT-XBT-USD"
        async with _feeds(venue, [symbol], recording_sink) as feeds:
            await until(lambda: _synced(server, feeds), *_events(server, feeds))
            late = recording_sink()
            market = (await venue.load_markets())[symbol]
            task = asyncio.create_task(venue.run_book_feed(market, late))
            try:
                await until(lambda: late.book == _floats(server, "BTC/USD"), late.changed)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert late.kinds() == ["snapshot"]
            assert server.subscribes() == [(1, ["BTC/USD"]), (1, ["BTC/USD"])]
            assert server.subscribes("unsubscribe") == [(1, ["BTC/USD"])]
            assert feeds[symbol][0].kinds().count("snapshot") == 2  # a fresh one: harmless
            # the first consumer still holds the pair: nothing more was unsubscribed
            assert server.subscribes("unsubscribe") == [(1, ["BTC/USD"])]
