"""``GET /history/markets|trades|orderbook|candles`` over HTTP on a loopback socket: the
routes of ``astra.server.history`` in an app with the gateway's error and API-key
middlewares, over tapes written from a live session of the real simulator and gateway and
over synthetic ones; every bad input's status, code and parameter."""

from __future__ import annotations

import base64
import contextlib
import json
from collections import Counter

import aiohttp
import pytest
from aiohttp import web
from tests.history.test_query import (
    SPOT,
    T0,
    LiveBook,
    S,
    book_rows,
    capture,
    frame,
    resync,
    trade_rows,
    write,
)

from astra.history.query import HistoryReader
from astra.server.auth import API_KEY_HEADER, KeyVerifier, auth_middleware
from astra.server.errors import error_middleware
from astra.server.history import history_routes
from astra.tape import BOOK, TRADE


@contextlib.asynccontextmanager
async def served(reader: HistoryReader, key_store):
    """The history routes behind the gateway's middlewares on 127.0.0.1; yields a client
    session (its key in the header) and the base URL."""
    verifier = KeyVerifier(key_store)
    app = web.Application(middlewares=[error_middleware(Counter()),
                                       auth_middleware(key_store, verifier=verifier)])
    app.add_routes(history_routes(reader))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    token = key_store.create("history").token
    try:
        async with aiohttp.ClientSession(headers={API_KEY_HEADER: f"Bearer {token}"}) as s:
            yield s, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        verifier.close()


async def get(session, url: str, **params) -> tuple[int, dict | list]:
    async with session.get(url, params=params) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_the_routes_answer_what_a_live_client_saw(gateway, tmp_path, key_store):
    gw, token = gateway
    got = await capture(gw, token, {"book": (SPOT, "ORDERBOOK"), "trades": (SPOT, "TRADE")}, 4.0)
    write(tmp_path, SPOT, BOOK, book_rows(got["book"], periodic_every=10))
    write(tmp_path, SPOT, TRADE, trade_rows(got["trades"]))
    reader = HistoryReader(tmp_path, retention_days=7)
    async with served(reader, key_store) as (s, base):
        live = LiveBook()
        for n, (local, raw) in enumerate(got["book"]):
            live.apply(json.loads(raw))
            if n % 3:
                continue
            # Unix ms in the query: the book at the end of that millisecond.
            at_ms = local // 1000
            if any(at_ms * 1000 <= t <= at_ms * 1000 + 999 for t, _ in got["book"][n + 1:]):
                continue  # another message in the same millisecond: not this state
            status, book = await get(s, f"{base}/history/orderbook", market=SPOT,
                                     time=str(at_ms), depth="5")
            assert status == 200, book
            view = live.view(5)
            assert (book["bids"], book["asks"]) == (view["bids"], view["asks"])
            assert book["time"] == at_ms and book["updateId"] == json.loads(raw)["updateId"]

        expected = sorted(((r[3], r[0], r[7]) for r in trade_rows(got["trades"])),
                          key=lambda t: t[:2])  # (stable: record order within)
        start, end = str(expected[0][0]), str(expected[-1][0])
        status, page = await get(s, f"{base}/history/trades", market=SPOT, start=start, end=end,
                                 limit="3")
        seen = [(t["time"], t["localTimestamp"], t["tradeId"]) for t in page["trades"]]
        for _ in range(len(expected)):  # (a cursor that fails to advance: no hang)
            if "nextCursor" not in page:
                break
            status, page = await get(s, f"{base}/history/trades", market=SPOT, start=start,
                                     end=end, limit="3", cursor=page["nextCursor"])
            assert status == 200
            seen += [(t["time"], t["localTimestamp"], t["tradeId"]) for t in page["trades"]]
        assert seen == expected

        status, candles = await get(s, f"{base}/history/candles", market=SPOT, interval="1s",
                                    start=start, end=end)
        assert status == 200
        direct = reader.candles(SPOT, "1s", int(start) * 1000, int(end) * 1000)
        assert candles == [{"time": c.time, "open": c.open, "high": c.high, "low": c.low,
                            "close": c.close, "volume": c.volume, "trades": c.trades}
                           for c in direct]
        assert sum(c["trades"] for c in candles) == len(expected)

        status, markets = await get(s, f"{base}/history/markets")
        assert status == 200 and [m["market"] for m in markets] == [SPOT]
        assert markets[0]["dataTypes"] == ["ORDERBOOK", "TRADE"]

        async with aiohttp.ClientSession() as anonymous:  # the routes need an API key
            status, body = await get(anonymous, f"{base}/history/markets")
            assert (status, body["code"]) == (401, "UNAUTHORIZED")


@pytest.fixture
def synthetic(tmp_path):
    """A tape: book rows with a resync in the middle, trades each second for 2 minutes."""
    write(tmp_path, SPOT, BOOK, book_rows([
        (T0, frame("snapshot", 1, [(100, 1)], [(101, 1)])),
        (T0 + S, frame("update", 2, [(100, 2)])),
        (T0 + 2 * S, resync("checksum mismatch")),
        (T0 + 4 * S, frame("snapshot", 7, [(98, 1)], [(102, 1)])),
    ]))
    write(tmp_path, SPOT, TRADE, [(T0 + i * S, "trade", None, T0 // 1000 + i * 1000, 100.0 + i,
                                   1.0, "BUY", str(i)) for i in range(120)])
    return tmp_path


BAD = [
    ("/history/trades", {}, 400, "MISSING_PARAMETER", "market"),
    ("/history/trades", {"market": "../../etc"}, 400, "INVALID_MARKET", "market"),
    ("/history/trades", {"market": "SIM-SPOT-SOL-USDT"}, 404, "MARKET_NOT_FOUND", "market"),
    ("/history/trades", {"market": SPOT, "start": "yesterday"}, 400, "INVALID_PARAMETER",
     "start"),
    ("/history/trades", {"market": SPOT, "end": "99999999999999999999"}, 400,
     "INVALID_PARAMETER", "end"),
    ("/history/trades", {"market": SPOT, "start": "2026-12-06T18:01:00Z",
                         "end": "2026-12-06T18:00:00Z"}, 400, "INVALID_PARAMETER", "end"),
    ("/history/trades", {"market": SPOT, "start": "2026-11-01", "end": "2026-12-06"}, 400,
     "INVALID_PARAMETER", "end"),  # 35 days
    ("/history/trades", {"market": SPOT, "start": "2026-11-20", "end": "2026-12-06"}, 400,
     "INVALID_PARAMETER", "start"),  # past the retention (7 days)
    ("/history/trades", {"market": SPOT, "limit": "100000"}, 400, "INVALID_PARAMETER", "limit"),
    ("/history/trades", {"market": SPOT, "limit": "0"}, 400, "INVALID_PARAMETER", "limit"),
    ("/history/trades", {"market": SPOT, "cursor": "%%%"}, 400, "INVALID_PARAMETER", "cursor"),
    ("/history/trades", {"market": SPOT, "cursor": base64.urlsafe_b64encode(
        b"1796580000000.99999999999999999999.1").decode()}, 400, "INVALID_PARAMETER", "cursor"),
    ("/history/trades", {"market": SPOT, "since": "1"}, 400, "INVALID_PARAMETER", "since"),
    ("/history/orderbook", {"market": SPOT}, 400, "MISSING_PARAMETER", "time"),
    ("/history/orderbook", {"market": SPOT, "time": str(T0 // 1000), "depth": "0"}, 400,
     "INVALID_PARAMETER", "depth"),
    ("/history/orderbook", {"market": SPOT, "time": str(T0 // 1000), "depth": "5001"}, 400,
     "INVALID_PARAMETER", "depth"),
    ("/history/orderbook", {"market": SPOT, "time": "2026-12-06T17:59:59Z"}, 404, "NO_HISTORY",
     "time"),
    ("/history/orderbook", {"market": SPOT, "time": "2026-12-06T18:00:03Z"}, 409,
     "BOOK_NOT_IN_SYNC", "time"),
    ("/history/orderbook", {"market": "SIM-SPOT-ETH-USDT", "time": "2026-12-06T18:00:03Z"}, 404,
     "MARKET_NOT_FOUND", "market"),
    ("/history/candles", {"market": SPOT}, 400, "MISSING_PARAMETER", "interval"),
    ("/history/candles", {"market": SPOT, "interval": "7m"}, 400, "INVALID_PARAMETER",
     "interval"),
    ("/history/candles", {"market": SPOT, "interval": "1s", "start": "2026-12-06T18:00:00Z",
                          "end": "2026-12-06T19:00:00Z"}, 400, "INVALID_PARAMETER", "end"),
    ("/history/markets", {"market": SPOT}, 400, "INVALID_PARAMETER", "market"),
]


async def test_bad_input_is_a_4xx_naming_the_parameter(synthetic, key_store):
    now = T0 / S + 600  # ten minutes after the record starts
    reader = HistoryReader(synthetic, retention_days=7, clock=lambda: now)
    async with served(reader, key_store) as (s, base):
        for path, params, status, code, parameter in BAD:
            got, body = await get(s, base + path, **params)
            assert (got, body["code"], body.get("parameter")) == (status, code, parameter), (
                path, params, body)
        twice = f"{base}/history/trades?market={SPOT}&market={SPOT}"
        async with s.get(twice) as resp:
            body = await resp.json()
            assert (resp.status, body["parameter"]) == (400, "market")
        _, body = await get(s, f"{base}/history/orderbook", market=SPOT,
                            time="2026-12-06T18:00:03Z")
        assert "resync at 2026-12-06T18:00:02.000Z (checksum mismatch)" in body["message"]
        assert "next snapshot came at 2026-12-06T18:00:04.000Z" in body["message"]


async def test_defaults_are_the_last_hour_and_a_hundred_trades(synthetic, key_store):
    now = T0 / S + 3600 + 30  # an hour and 30 s after the first trade
    reader = HistoryReader(synthetic, clock=lambda: now)
    async with served(reader, key_store) as (s, base):
        status, page = await get(s, f"{base}/history/trades", market=SPOT)
        assert status == 200
        # The last hour: from 18:00:30 on, trades 30..119 (90: one page).
        assert [t["tradeId"] for t in page["trades"]] == [str(i) for i in range(30, 120)]
        assert "nextCursor" not in page
        status, page = await get(s, f"{base}/history/trades", market=SPOT,
                                 start="2026-12-06T18:00:00Z")
        assert len(page["trades"]) == 100 and "nextCursor" in page
        status, candles = await get(s, f"{base}/history/candles", market=SPOT, interval="1m")
        # The candle holding start (18:00:30) is whole: 18:00 and 18:01.
        assert [(c["time"], c["trades"]) for c in candles] == [
            (T0 // 1000, 60), (T0 // 1000 + 60_000, 60)]
        assert candles[0]["open"] == 100.0 and candles[1]["close"] == 219.0
        status, book = await get(s, f"{base}/history/orderbook", market=SPOT,
                                 time="2026-12-06T18:00:01.5Z")
        assert status == 200
        assert book == {"market": SPOT, "time": T0 // 1000 + 1500,
                        "bids": [{"price": 100.0, "quantity": 2.0}],
                        "asks": [{"price": 101.0, "quantity": 1.0}],
                        "updateId": 2, "timestamp": 1_796_580_000_002,
                        "localTimestamp": T0 + S, "snapshotLocalTimestamp": T0,
                        "snapshotReason": "start"}
