"""Recent Binance trades served from the live ``@aggTrade`` stream (fake Binance on
127.0.0.1 replaying the recorded NKNUSDT session): once Binance acknowledges the SUBSCRIBE,
one REST read seeds them and later reads make no REST call; a lost connection tells WS TRADE
clients at once (``resync``, ``disconnected``), and the stream is live again after it."""

from __future__ import annotations

import json

from tests.venues.loopback import (
    TradeClient,
    check_down_from_the_start,
    check_live_trades,
    refused_port,
    until,
)

from astra.core import DataType
from astra.marketdata.engine import MarketDataEngine
from astra.venues.binance import BinanceUrls, BinanceVenue

SYMBOL = "BINANCE-SPOT-NKN-USDT"


def _trade(template: dict, n: int) -> dict:
    """The recorded aggTrade, as the ``n``-th after it."""
    return {**template, "a": template["a"] + n, "T": template["T"] + n, "E": template["E"] + n,
            "p": f"{float(template['p']) + n * 1e-4:.5f}", "f": template["f"] + n,
            "l": template["l"] + n}  # fmt: skip


async def test_recent_trades_come_from_the_live_stream(recording, fake_binance, exchange_info):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec)
    (first,) = [json.loads(frame) for frame in rec.trades]  # replayed on every subscribe
    # The venue's REST history: two trades before the recorded one, and that one.
    server.agg_trades = [{k: _trade(first, n)[k] for k in "apqflTm"} for n in (-2, -1, 0)]
    venue = BinanceVenue(
        urls=BinanceUrls.at(server.base_url), exchange_info={"spot": exchange_info["spot"]}
    )
    engine = MarketDataEngine({"BINANCE": venue}, linger=60.0)

    async def pushed() -> list[str]:
        rows = [_trade(first, n) for n in (0, 1, 2)]  # the recorded one again, then two new
        for ws in list(server._open):
            for row in rows:
                await ws.send_str(json.dumps({"stream": "nknusdt@aggTrade", "data": row}))
        return [str(row["a"]) for row in rows]

    async def drop() -> None:
        for ws in list(server._open):
            await ws.close()

    try:
        await check_live_trades(
            engine, SYMBOL, rest_calls=lambda: server.trade_requests, pushed=pushed, drop=drop
        )
    finally:
        await engine.close()
    assert server.connections == 2 and server.sent("SUBSCRIBE") == [["nknusdt@aggTrade"]] * 2


async def test_an_undecodable_trade_is_a_gap_the_stream_goes_on(
    recording, fake_binance, exchange_info
):
    rec = recording("NKNUSDT")
    server = await fake_binance(rec)
    (first,) = [json.loads(frame) for frame in rec.trades]
    server.agg_trades = [{k: first[k] for k in "apqflTm"}]
    venue = BinanceVenue(
        urls=BinanceUrls.at(server.base_url), exchange_info={"spot": exchange_info["spot"]}
    )
    engine = MarketDataEngine({"BINANCE": venue}, linger=60.0)
    client = TradeClient()
    try:
        venue_, market = await engine.resolve(SYMBOL)
        engine.subscribe(venue_, market, DataType.TRADE, client)
        channel = engine.channels[(SYMBOL, DataType.TRADE)]
        await until(lambda: channel.live, client.changed)
        (ws,) = server._open
        bad = {**_trade(first, 1), "p": "not a price"}  # this trade is lost
        for row in (bad, _trade(first, 2)):
            await ws.send_str(json.dumps({"stream": "nknusdt@aggTrade", "data": row}))
        await until(lambda: str(first["a"] + 2) in client.trade_ids(), client.changed)
        (resync,) = client.resyncs()  # told at once: a trade is missing
        assert resync["state"] == "disconnected" and resync["reason"].startswith("bad message")
        assert channel.live  # the subscription itself goes on: live again at once
        ids = [t.trade_id for t in await engine.recent_trades(SYMBOL, 10)]
        assert ids == [str(first["a"]), str(first["a"] + 2)] and server.trade_requests == 1
    finally:
        await engine.close()
    assert server.connections == 1


async def test_a_venue_down_from_the_start_is_reported_at_once(exchange_info):
    """The WebSocket refuses every connection from the start: the book that never synced and
    the trade stream that was never live are reported at once."""
    with refused_port() as port:
        venue = BinanceVenue(
            urls=BinanceUrls.at(f"http://127.0.0.1:{port}"),
            exchange_info={"spot": exchange_info["spot"]},
        )
        engine = MarketDataEngine({"BINANCE": venue}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, SYMBOL)
        finally:
            await engine.close()
