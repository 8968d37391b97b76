"""Recent OKX trades served from the live ``trades`` subscription (fake OKX on 127.0.0.1):
once OKX confirms the subscription, one REST read seeds them and later reads make no REST
call; a lost connection tells WS TRADE clients at once (``resync``, ``disconnected``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests.venues.loopback import check_down_from_the_start, check_live_trades, refused_port

from astra.marketdata.engine import MarketDataEngine

MARKET = "OKX-SPOT-BTC-USDT"


def _row(n: int) -> dict:
    return {"instId": "BTC-USDT", "tradeId": str(n), "px": f"{60000 + n}", "sz": "0.5",
            "side": "buy" if n % 2 else "sell", "ts": str(1_700_000_000_000 + n)}  # fmt: skip


async def test_recent_trades_come_from_the_live_subscription(fake_okx, okx_venue):
    async with fake_okx() as server:
        server.trades = [_row(n) for n in (3, 2, 1)]  # the venue's REST: newest first
        engine = MarketDataEngine({"OKX": okx_venue(server)}, linger=60.0)

        async def pushed() -> list[str]:
            # 3 again (also in the seed: kept once), then 4 and 5 over the feed only.
            push = {"arg": {"channel": "trades", "instId": "BTC-USDT"},
                    "data": [_row(n) for n in (3, 4, 5)]}  # fmt: skip
            for ws in server.sockets:
                if not ws.closed:
                    await ws.send_str(json.dumps(push))
            return ["3", "4", "5"]

        async def drop() -> None:
            for ws in server.sockets:
                await ws.close()

        try:
            await check_live_trades(
                engine, MARKET, rest_calls=lambda: server.trade_requests, pushed=pushed,
                drop=drop)  # fmt: skip
        finally:
            await engine.close()
    assert server.subscribes[("trades", "BTC-USDT")] == 2  # the first, and after the drop


async def test_a_venue_down_from_the_start_is_reported_at_once(okx_venue):
    """The WebSocket refuses every connection from the start: books that never synced hear
    ``reconnecting: ...`` too."""
    with refused_port() as port:
        base = f"127.0.0.1:{port}"
        server = SimpleNamespace(rest_url=f"http://{base}", ws_url=f"ws://{base}/ws/v5/public")
        engine = MarketDataEngine({"OKX": okx_venue(server)}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, MARKET)
        finally:
            await engine.close()
