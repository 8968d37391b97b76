"""Recent Kraken Futures trades served from the live v1 ``trade`` feed (fake Kraken Futures
on 127.0.0.1): once Kraken answers ``subscribed``, one REST read seeds them and later reads
make no REST call; a lost connection tells WS TRADE clients at once (``resync``,
``disconnected``), and the product is live again after it."""

from __future__ import annotations

from tests.venues.loopback import check_live_trades

from astra.marketdata.engine import MarketDataEngine
from astra.venues.kraken import KrakenUrls, KrakenVenue

PERP, PRODUCT = "KRAKEN-PERP-XBT-USD", "PF_XBTUSD"


def _trade(seq: int) -> dict:
    return {"feed": "trade", "product_id": PRODUCT, "uid": f"uid-{seq}", "type": "fill",
            "side": "buy" if seq % 2 else "sell", "seq": seq, "time": 1612269657000 + seq,
            "qty": 0.5, "price": 34890.0 + seq}  # fmt: skip


def _history(seq: int) -> dict:  # GET /derivatives/api/v3/history: the same trade
    t = _trade(seq)
    return {"time": f"2021-02-02T12:40:{57 + seq // 1000:02d}.{seq % 1000:03d}Z",
            "trade_id": seq, "price": t["price"], "size": t["qty"], "side": t["side"],
            "type": "fill", "uid": t["uid"]}  # fmt: skip


async def test_recent_trades_come_from_the_live_feed(
    fake_futures, book_script, futures_instruments, doc_asset_pairs
):
    server = fake_futures(
        {PRODUCT: book_script(11, "34900", "0.5", 4, changes=20)},
        instruments=futures_instruments,
        # history (newest first, not sent), then 9 and 10 again (sent once) and 11..14
        trades={PRODUCT: ([_trade(10), _trade(9)], [_trade(n) for n in range(9, 15)])},
        history={PRODUCT: {"result": "success", "history": [_history(n) for n in (10, 9, 8)]}},
    )
    async with server.running():
        base = f"127.0.0.1:{server.port}"
        urls = KrakenUrls(
            rest=f"http://{base}",
            ws=f"ws://{base}/v2",
            futures_rest=f"http://{base}",
            futures_ws=f"ws://{base}/ws/v1",
        )
        engine = MarketDataEngine(
            {"KRAKEN": KrakenVenue("KRAKEN", urls, markets_source=lambda: doc_asset_pairs)},
            linger=60.0,
        )

        async def pushed() -> list[str]:  # sent on subscribe, after the snapshot
            return [f"uid-{n}" for n in range(11, 15)]

        try:
            client = await check_live_trades(
                engine, PERP, rest_calls=lambda: server.history_requests, pushed=pushed,
                drop=server.drop)  # fmt: skip
        finally:
            await engine.close()
    assert client.recent == [f"uid-{n}" for n in range(8, 15)]
