"""The gateway end to end through a fake Kraken Futures on 127.0.0.1 (WebSocket v1 + REST).

Futures markets come over REST from the fake's ``/derivatives/api/v3/instruments`` (the docs
sample), spot markets from the injected docs sample; books are synthetic (seeded), served as
``book_snapshot`` + ``seq``-numbered deltas, and compared with the fake's own book in exact
decimals. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from astra.server.gateway import Gateway
from astra.venues.kraken import KrakenUrls, KrakenVenue

PERP, PRODUCT = "KRAKEN-PERP-XBT-USD", "PF_XBTUSD"


def _auth(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


def _venue(server, asset_pairs) -> KrakenVenue:
    base = f"127.0.0.1:{server.port}"
    urls = KrakenUrls(
        rest=f"http://{base}",
        ws=f"ws://{base}/v2",
        futures_rest=f"http://{base}",
        futures_ws=f"ws://{base}/ws/v1",
    )
    return KrakenVenue("KRAKEN", urls, markets_source=lambda: asset_pairs)


def _server(fake_futures, book_script, futures_instruments, **options):
    books = {
        PRODUCT: book_script(11, "34900", "0.5", 4, changes=200),
        "PI_XBTUSD": book_script(12, "34900", "0.5", 0, changes=20),
    }
    return fake_futures(books, instruments=futures_instruments, **options)


async def _get(gw, token: str, path: str, **params) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.base_url}{path}", params=params, headers=_auth(token)) as r,
    ):
        return r.status, await r.json()


async def _watch_book(gw, token, server, client_book) -> list[dict]:
    """ORDERBOOK messages until the fake has sent everything and the client book equals it."""
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={PERP}&dataType=ORDERBOOK"
    book, messages, levels = client_book(), [], None
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=_auth(token)) as ws,
        asyncio.timeout(15),
    ):
        while True:
            try:
                msg = json.loads((await ws.receive(timeout=0.5)).data)
            except TimeoutError:  # quiet: done once the fake has sent all and we match it
                if server.done[PRODUCT].is_set() and levels == server.refs[PRODUCT].floats():
                    return messages
                continue
            messages.append(msg)
            levels = book.apply(msg)


async def test_perp_book_over_ws_and_rest_equals_the_served_book(
    fake_futures, book_script, futures_instruments, doc_asset_pairs, key_store, client_book
):
    server = _server(fake_futures, book_script, futures_instruments)
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway(
            {"KRAKEN": _venue(server, doc_asset_pairs)}, key_store, port=0, metrics_port=0
        ) as gw,
    ):
        status, markets = await _get(gw, token, "/markets", exchange="KRAKEN")
        assert status == 200
        by_symbol = {m["symbol"]: m for m in markets}
        perp = by_symbol[PERP]
        assert (perp["assetType"], perp["baseAsset"], perp["marginAsset"]) == ("PERP", "BTC", "USD")
        assert perp["exchangeSymbol"] == PRODUCT
        assert by_symbol["KRAKEN-PERP-XBT-USD-COINM"]["marginAsset"] == "BTC"
        assert "KRAKEN-SPOT-XBT-USD" in by_symbol

        messages = await _watch_book(gw, token, server, client_book)
        kinds = [m["type"] for m in messages]
        assert kinds == ["snapshot"] + ["update"] * 200  # every delta, in order
        assert [m["updateId"] for m in messages] == list(range(1000, 1201))  # Kraken's seq
        assert messages[-1]["timestamp"] == 1612269825818 + 199

        status, book = await _get(gw, token, "/orderbook", market=PERP)
        assert status == 200 and book["updateId"] == 1200
        served = {
            "bids": {lv["price"]: lv["quantity"] for lv in book["bids"]},
            "asks": {lv["price"]: lv["quantity"] for lv in book["asks"]},
        }
        assert served == server.refs[PRODUCT].floats()
        assert [lv["price"] for lv in book["bids"]] == sorted(served["bids"], reverse=True)
    assert server.connections == 1
    assert [r for _, r in server.requests][:2] == [
        {"event": "subscribe", "feed": "heartbeat"},
        {"event": "subscribe", "feed": "book", "product_ids": [PRODUCT]},
    ]


async def test_a_seq_gap_resubscribes_and_clients_get_a_fresh_snapshot(
    fake_futures, book_script, futures_instruments, doc_asset_pairs, key_store, client_book
):
    server = _server(fake_futures, book_script, futures_instruments, drop_at={PRODUCT: 50})
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway(
            {"KRAKEN": _venue(server, doc_asset_pairs)}, key_store, port=0, metrics_port=0
        ) as gw,
    ):
        messages = await _watch_book(gw, token, server, client_book)
        assert gw.engine.stats["resyncs"] == 1
    kinds = [m["type"] for m in messages]
    second = kinds.index("snapshot", 1)
    assert kinds[0] == "snapshot" and kinds.count("snapshot") == 2
    # nothing forwarded past the gap; the client was told at once
    assert kinds[1:second] == ["update"] * 50 + ["resync"]
    ids = [m.get("updateId") for m in messages]
    assert ids[second + 1 :] == list(range(ids[second] + 1, 1201))  # continues the new snapshot
    fresh = messages[second]
    assert server.snapshots_sent[PRODUCT][1] == {
        side: {lv["price"]: lv["quantity"] for lv in fresh[side]} for side in ("bids", "asks")
    }
    # that product alone, on the same connection
    assert server.connections == 1 and server.subscriptions[PRODUCT] == 2
    assert server.sent("unsubscribe") == [(1, [PRODUCT])]
    assert server.sent("subscribe") == [(1, [PRODUCT]), (1, [PRODUCT])]


def _trade(seq: int, side: str, price: float, qty: float) -> dict:
    return {
        "feed": "trade",
        "product_id": PRODUCT,
        "uid": f"uid-{seq}",
        "side": side,
        "type": "fill",
        "seq": seq,
        "time": 1612269657000 + seq,
        "qty": qty,
        "price": price,
    }


async def test_perp_trades_over_ws_and_rest(
    fake_futures, book_script, futures_instruments, doc_asset_pairs, key_store
):
    snapshot = [_trade(10, "sell", 34893.0, 0.5), _trade(9, "buy", 34891.0, 1.25)]  # newest first
    updates = [_trade(10, "sell", 34893.0, 0.5)] + [
        _trade(11 + i, ("buy", "sell")[i % 2], 34890.0 + i, 0.1 * (i + 1)) for i in range(4)
    ]
    history = {
        "result": "success",
        "history": [
            {"time": "2021-02-02T12:40:57.781Z", "trade_id": 2, "price": 34893, "size": 0.5,
             "side": "sell", "type": "fill", "uid": "u2"},
            {"time": "2021-02-02T12:40:56.839Z", "trade_id": 1, "price": 34891, "size": 1.25,
             "side": "buy", "type": "fill", "uid": "u1"},
        ],
    }  # fmt: skip
    server = _server(
        fake_futures,
        book_script,
        futures_instruments,
        trades={PRODUCT: (snapshot, updates)},
        history={PRODUCT: history},
    )
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway(
            {"KRAKEN": _venue(server, doc_asset_pairs)}, key_store, port=0, metrics_port=0
        ) as gw,
    ):
        url = f"{gw.base_url.replace('http', 'ws')}/ws?market={PERP}&dataType=TRADE"
        got: list[dict] = []
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, headers=_auth(token)) as ws,
            asyncio.timeout(10),
        ):
            while len(got) < 4:
                got += json.loads((await ws.receive(timeout=5)).data)["trades"]
        # The feed is live: one REST read seeds it, then what the feed delivered follows.
        status, rest = await _get(gw, token, "/trades", market=PERP, limit=99)
    assert rest["trades"][2:] == got
    rest["trades"] = rest["trades"][:2]
    assert [(t["tradeId"], t["price"], t["quantity"], t["side"], t["time"]) for t in got] == [
        (u["uid"], u["price"], u["qty"], u["side"].upper(), u["time"]) for u in updates[1:]
    ]  # the snapshot is history, and seq 10 came twice: sent once
    assert status == 200
    assert rest["trades"] == [
        {"price": 34891.0, "quantity": 1.25, "side": "BUY", "time": 1612269656839, "tradeId": "u1"},
        {"price": 34893.0, "quantity": 0.5, "side": "SELL", "time": 1612269657781, "tradeId": "u2"},
    ]
