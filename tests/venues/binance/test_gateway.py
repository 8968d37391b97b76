"""End to end: the gateway serving BINANCE from a fake Binance on 127.0.0.1 that replays the
recorded NKNUSDT spot session. ``GET /orderbook`` and ``WS /ws`` must equal an independent
rebuild of the recording at the ``updateId`` they carry; markets come from the recorded
exchangeInfo, injected into the venue (no network)."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from astra.server.gateway import Gateway
from astra.venues.binance import BinanceUrls, BinanceVenue

SYMBOL = "BINANCE-SPOT-NKN-USDT"


def _levels(body: dict) -> dict[str, dict[float, float]]:
    return {side: {lv["price"]: lv["quantity"] for lv in body[side]} for side in ("bids", "asks")}


def _sorted(body: dict) -> bool:
    bids = [lv["price"] for lv in body["bids"]]
    asks = [lv["price"] for lv in body["asks"]]
    return bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]


async def test_rest_and_ws_books_equal_the_recording(
    recording, fake_binance, exchange_info, key_store, client_book
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec, hold_after=5)  # the rest of the tape waits for `release`
    venue = BinanceVenue(
        urls=BinanceUrls.at(server.base_url), exchange_info={"spot": exchange_info["spot"]}
    )
    headers = {"x-astra-api-key": f"Bearer {key_store.create('binance').token}"}
    async with (
        Gateway({"BINANCE": venue}, key_store, port=0, metrics_port=0, linger=1.0) as gw,
        aiohttp.ClientSession(headers=headers) as http,
        asyncio.timeout(20),
    ):
        async with http.get(f"{gw.base_url}/markets", params={"exchange": "BINANCE"}) as r:
            listed = {m["symbol"]: m for m in await r.json()}
        assert listed[SYMBOL]["exchangeSymbol"] == "NKNUSDT"
        assert len(listed) == len(exchange_info["spot"]["symbols"])

        # The first read starts the feed and waits for its first synced book.
        async with http.get(f"{gw.base_url}/orderbook", params={"market": SYMBOL}) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["market"] == SYMBOL and _sorted(body)
        assert rec.snapshot["lastUpdateId"] <= body["updateId"] <= rec.events[4]["u"]
        assert _levels(body) == rec.truth_floats(body["updateId"])

        ws_url = f"{gw.base_url.replace('http', 'ws')}/ws?market={SYMBOL}&dataType=ORDERBOOK"
        async with http.ws_connect(ws_url) as ws:
            first = json.loads((await ws.receive(timeout=10)).data)
            assert first["type"] == "snapshot" and first["updateId"] >= body["updateId"]
            book = client_book()
            assert book.apply(first) == rec.truth_floats(first["updateId"])
            server.release.set()  # let the rest of the recording flow
            last, updates = first["updateId"], 0
            while last != rec.final_u:
                msg = json.loads((await ws.receive(timeout=10)).data)
                assert msg["type"] == "update" and msg["updateId"] > last
                assert book.apply(msg) == rec.truth_floats(msg["updateId"]), msg["updateId"]
                last, updates = msg["updateId"], updates + 1
        assert updates > 100

        async with http.get(f"{gw.base_url}/orderbook", params={"market": SYMBOL}) as r:
            body = await r.json()
        assert body["updateId"] == rec.final_u
        assert _levels(body) == rec.truth_floats(rec.final_u)
        async with http.get(
            f"{gw.base_url}/orderbook", params={"market": SYMBOL, "depth": "5"}
        ) as r:
            top = await r.json()
        assert top["bids"] == body["bids"][:5] and top["asks"] == body["asks"][:5]
    assert server.connections == 1 and server.served_ids == [rec.snapshot["lastUpdateId"]]


async def test_two_markets_through_the_gateway_share_one_connection(
    recording, fake_binance, exchange_info, key_store
):
    recs = {
        "BINANCE-SPOT-NKN-USDT": recording("NKNUSDT"),
        "BINANCE-SPOT-LRC-BTC": recording("LRCBTC"),
    }
    server = await fake_binance(list(recs.values()))
    venue = BinanceVenue(
        urls=BinanceUrls.at(server.base_url), exchange_info={"spot": exchange_info["spot"]}
    )
    headers = {"x-astra-api-key": f"Bearer {key_store.create('binance').token}"}
    async with (
        Gateway({"BINANCE": venue}, key_store, port=0, metrics_port=0, linger=1.0) as gw,
        aiohttp.ClientSession(headers=headers) as http,
        asyncio.timeout(20),
    ):
        for symbol, rec in recs.items():  # the second market joins the open connection live
            while True:
                async with http.get(f"{gw.base_url}/orderbook", params={"market": symbol}) as r:
                    assert r.status == 200, await r.text()
                    body = await r.json()
                assert _levels(body) == rec.truth_floats(body["updateId"])
                if body["updateId"] == rec.final_u:
                    break
                await asyncio.sleep(0.02)
    assert server.connections == 1
    assert server.sent("SUBSCRIBE") == [["nknusdt@depth@100ms"], ["lrcbtc@depth@100ms"]]
