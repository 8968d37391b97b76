"""Many Kraken Futures products on one v1 connection, through the venue and a fake Kraken
Futures on 127.0.0.1 serving synthetic books: one ``subscribe`` names them all, a ``seq``
gap on one product resubscribes only it, cancelling a feed unsubscribes its product, a full
connection opens another, and a reconnect resubscribes everything (each book resyncs)."""

from __future__ import annotations

import asyncio
import contextlib

from astra.venues.kraken import KrakenUrls, KrakenVenue

BOOKS = {  # Astra symbol -> (product id, mid, tick, quantity places)
    "KRAKEN-PERP-XBT-USD": ("PF_XBTUSD", "60000", "1", 4),
    "KRAKEN-PERP-ETH-USD": ("PF_ETHUSD", "3000.0", "0.1", 3),
    "KRAKEN-PERP-XBT-USD-COINM": ("PI_XBTUSD", "60000.0", "0.5", 0),
}


def _server(fake_futures, book_script, changes=60, **options):
    books = {
        product: book_script(20 + i, mid, tick, places, changes=changes)
        for i, (product, mid, tick, places) in enumerate(BOOKS.values())
    }
    return fake_futures(books, **options)


def _venue(server, doc_asset_pairs, futures_instruments, **options) -> KrakenVenue:
    base = f"127.0.0.1:{server.port}"
    urls = KrakenUrls(futures_rest=f"http://{base}", futures_ws=f"ws://{base}/ws/v1")
    return KrakenVenue(
        urls=urls,
        markets_source=lambda: doc_asset_pairs,
        futures_markets_source=lambda: futures_instruments,
        **options,
    )


@contextlib.asynccontextmanager
async def _feeds(venue, symbols, recording_sink, trades=()):
    """Book feeds of ``symbols`` (and trade feeds of ``trades``) on ``venue``; yields
    {symbol: (sink, task)} for the books and {symbol: (sink, task)} for the trades."""
    markets = await venue.load_markets()
    books, trade_feeds = {}, {}
    for symbol in symbols:
        sink = recording_sink()
        books[symbol] = (sink, asyncio.create_task(venue.run_book_feed(markets[symbol], sink)))
    for symbol in trades:
        sink = recording_sink()
        task = asyncio.create_task(venue.run_trade_feed(markets[symbol], sink))
        trade_feeds[symbol] = (sink, task)
    try:
        yield books, trade_feeds
    finally:
        tasks = [t for _, t in [*books.values(), *trade_feeds.values()]]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await venue.close()


def _synced(server, books) -> bool:
    return all(
        server.done[BOOKS[s][0]].is_set() and sink.book == server.refs[BOOKS[s][0]].floats()
        for s, (sink, _) in books.items()
    )


def _events(server, feeds) -> list[asyncio.Event]:
    return [server.changed, *(sink.changed for sink, _ in feeds.values())]


def _trade(seq: int) -> dict:
    return {
        "feed": "trade",
        "product_id": "PF_XBTUSD",
        "uid": f"t{seq}",
        "side": "buy",
        "type": "fill",
        "seq": seq,
        "time": 1612269657000 + seq,
        "qty": 0.5,
        "price": 60000.0 + seq,
    }


async def test_products_share_one_connection_and_a_gap_resyncs_only_that_product(
    fake_futures, book_script, doc_asset_pairs, futures_instruments, recording_sink, until
):
    server = _server(
        fake_futures,
        book_script,
        drop_at={"PF_ETHUSD": 30},
        trades={"PF_XBTUSD": ([_trade(5)], [_trade(6), _trade(7)])},
    )
    async with server.running():
        venue = _venue(server, doc_asset_pairs, futures_instruments)
        perp = "KRAKEN-PERP-XBT-USD"
        async with _feeds(venue, list(BOOKS), recording_sink, trades=[perp]) as (books, trades):
            trade_sink = trades[perp][0]
            await until(
                lambda: _synced(server, books) and len(trade_sink.trades) == 2,
                *_events(server, {**books, **trades}),
            )
            assert server.connections == 1
            assert [r for _, r in server.requests][:3] == [
                {"event": "subscribe", "feed": "heartbeat"},
                {
                    "event": "subscribe",
                    "feed": "book",
                    "product_ids": ["PF_XBTUSD", "PF_ETHUSD", "PI_XBTUSD"],
                },
                {"event": "subscribe", "feed": "trade", "product_ids": ["PF_XBTUSD"]},
            ]
            assert server.sent("unsubscribe") == [(1, ["PF_ETHUSD"])]
            assert server.sent("subscribe")[1:] == [(1, ["PF_ETHUSD"])]
            for symbol in ("KRAKEN-PERP-XBT-USD", "KRAKEN-PERP-XBT-USD-COINM"):
                assert books[symbol][0].kinds() == ["snapshot"] + ["update"] * 60, symbol
            eth = books["KRAKEN-PERP-ETH-USD"][0]
            kinds = eth.kinds()
            assert kinds[:32] == ["snapshot"] + ["update"] * 30 + ["resync"]
            assert kinds[32] == "snapshot" and kinds.count("resync") == 1
            assert "book seq 1032 after 1030" in eth.resyncs()[0]
            assert [t.trade_id for t in trade_sink.trades] == ["t6", "t7"]

            # cancelling one product's book feed unsubscribes it, and only it
            _, task = books.pop("KRAKEN-PERP-XBT-USD-COINM")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            unsubscribed = (1, ["PI_XBTUSD"])
            await until(lambda: unsubscribed in server.sent("unsubscribe"), server.changed)
            assert server.sent("unsubscribe") == [(1, ["PF_ETHUSD"]), unsubscribed]
            assert server.sent("unsubscribe", "trade") == []
            assert server.connections == 1


async def test_a_full_connection_opens_another(
    fake_futures, book_script, doc_asset_pairs, futures_instruments, recording_sink, until
):
    server = _server(fake_futures, book_script, changes=10)
    async with server.running():
        venue = _venue(server, doc_asset_pairs, futures_instruments, connection_capacity=2)
        async with _feeds(venue, list(BOOKS), recording_sink) as (books, _):
            await until(lambda: _synced(server, books), *_events(server, books))
            assert server.connections == 2
            assert server.sent("subscribe", "heartbeat") == [(1, None), (2, None)]
            assert server.sent("subscribe") == [(1, ["PF_XBTUSD", "PF_ETHUSD"]), (2, ["PI_XBTUSD"])]
            assert all(sink.resyncs() == [] for sink, _ in books.values())


async def test_a_reconnect_resubscribes_everything_and_every_product_resyncs(
    fake_futures, book_script, doc_asset_pairs, futures_instruments, recording_sink, until
):
    server = _server(fake_futures, book_script, changes=10)
    async with server.running():
        venue = _venue(server, doc_asset_pairs, futures_instruments)
        async with _feeds(venue, list(BOOKS), recording_sink) as (books, _):
            await until(lambda: _synced(server, books), *_events(server, books))
            await server.drop()

            def resynced() -> bool:
                return all(sink.kinds().count("snapshot") == 2 for sink, _ in books.values())

            await until(resynced, *_events(server, books))
            assert server.connections == 2
            assert server.sent("subscribe", "heartbeat") == [(1, None), (2, None)]
            everything = ["PF_XBTUSD", "PF_ETHUSD", "PI_XBTUSD"]
            assert server.sent("subscribe") == [(1, everything), (2, everything)]
            for sink, _ in books.values():
                assert sink.kinds()[-2:] == ["resync", "snapshot"]
                assert "reconnecting" in sink.resyncs()[0]
            assert _synced(server, books)
