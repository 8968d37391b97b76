"""The gateway end to end over a fake Coinbase on 127.0.0.1: ``GET /orderbook`` is the book
the fake built, ``WS /ws`` gets a snapshot then updates, a skipped ``sequence_num`` makes
the client receive a fresh snapshot (resubscribed on the same connection), silence
reconnects, trades flow, and REST markets/trades go through ccxt against the fake."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from astra.server.gateway import Gateway
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue

BTC = "COINBASE-SPOT-BTC-USD"


def _venue(fake, **options) -> CoinbaseVenue:
    options.setdefault("markets_source", fake.products_source)
    return CoinbaseVenue(
        urls=CoinbaseUrls(rest=fake.base_url, ws=fake.ws_url), send_interval=0.0, **options
    )


def _headers(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _get(gw, token: str, path: str, **params: str):
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.base_url}{path}", params=params, headers=_headers(token)) as r,
    ):
        return r.status, await r.json(content_type=None)


class _Watch:
    """A WS /ws client collecting messages until a condition holds (bounded waits)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.messages = ws, []

    async def until(self, done) -> list[dict]:
        async with asyncio.timeout(10):
            while not done(self.messages):
                msg = await self.ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                self.messages.append(json.loads(msg.data))
        return self.messages

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.messages]


def _after_snapshots(n: int, updates: int):
    def done(messages: list[dict]) -> bool:
        kinds = [m["type"] for m in messages]
        if kinds.count("snapshot") < n:
            return False
        last = len(kinds) - 1 - kinds[::-1].index("snapshot")
        return kinds[last + 1 :].count("update") >= updates

    return done


def _tracks(messages: list[dict], history: dict[int, dict], client_book) -> int:
    """The client's book equals the fake's at every book message (a ``resync`` voids it until
    the next snapshot); returns how many were checked."""
    book = client_book()
    for msg in messages:
        levels = book.apply(msg)
        if msg["type"] == "resync":
            continue
        assert msg["updateId"] in history, msg
        assert levels == history[msg["updateId"]], (msg["type"], msg["updateId"])
    return len(messages)


async def test_orderbook_ws_and_a_skipped_sequence_number(fake_coinbase, key_store, client_book):
    fake = await fake_coinbase()
    token = key_store.create().token
    async with Gateway({"COINBASE": _venue(fake)}, key_store, port=0, metrics_port=0) as gw:
        # REST: the served book is the fake's book at the served update id
        status, book = await _get(gw, token, "/orderbook", market=BTC)
        assert status == 200 and book["market"] == BTC and book["timestamp"] > 0
        served = {
            side: {lv["price"]: lv["quantity"] for lv in book[side]} for side in ("bids", "asks")
        }
        assert served == fake.history["BTC-USD"][book["updateId"]]
        prices = [lv["price"] for lv in book["bids"]]
        assert prices == sorted(prices, reverse=True)
        # a second market shares the connection
        status, _ = await _get(gw, token, "/orderbook", market="COINBASE-SPOT-ETH-USD")
        assert status == 200

        url = f"{gw.base_url.replace('http', 'ws')}/ws?market={BTC}&dataType=ORDERBOOK"
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, headers=_headers(token)) as ws,
        ):
            watch = _Watch(ws)
            await watch.until(_after_snapshots(1, 5))
            fake.lose_next_update()
            await watch.until(_after_snapshots(2, 5))
        resyncs = gw.engine.stats["resyncs"]

    kinds = watch.kinds()
    assert kinds[0] == "snapshot" and kinds.count("snapshot") == 2
    assert _tracks(watch.messages, fake.history["BTC-USD"], client_book) == len(kinds)
    lost = fake.lost[0]
    second = watch.messages[kinds.index("snapshot", 1)]
    assert second["updateId"] > lost
    assert {"price": 1.0, "quantity": 42.0} in second["bids"]  # the lost change, repaired
    before = watch.messages[: kinds.index("snapshot", 1)]
    assert before[-1]["type"] == "resync" and before[-1]["state"] == "resyncing"  # told first
    assert all(m["updateId"] < lost for m in before[:-1])
    # repaired on the same connection: both products unsubscribed and subscribed again
    assert fake.connections == 1 and resyncs >= 2
    assert sorted(fake.subscribes("level2", "unsubscribe")[0]) == ["BTC-USD", "ETH-USD"]
    assert sorted(fake.subscribes("level2")[-1]) == ["BTC-USD", "ETH-USD"]
    assert fake.subscribes("heartbeats") == [[]]


async def test_silent_connection_is_replaced(fake_coinbase, key_store, client_book):
    fake = await fake_coinbase(stall_after=15)
    token = key_store.create().token
    venue = _venue(fake, silence=0.3)
    async with Gateway({"COINBASE": venue}, key_store, port=0, metrics_port=0) as gw:
        url = f"{gw.base_url.replace('http', 'ws')}/ws?market={BTC}&dataType=ORDERBOOK"
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, headers=_headers(token)) as ws,
        ):
            watch = _Watch(ws)
            await watch.until(_after_snapshots(2, 3))
    assert fake.connections == 2
    assert _tracks(watch.messages, fake.history["BTC-USD"], client_book) == len(watch.messages)
    second = watch.messages[watch.kinds().index("snapshot", 1)]
    assert second["updateId"] > 100_000  # from the second connection
    resync = watch.messages[watch.kinds().index("resync")]
    assert watch.kinds().index("resync") < watch.kinds().index("snapshot", 1)
    assert resync["state"] == "disconnected"  # the silent connection was dropped


async def test_trades_and_rest_through_ccxt(fake_coinbase, key_store):
    fake = await fake_coinbase()
    token = key_store.create().token
    venue = _venue(fake, markets_source=None)  # products over REST, through ccxt
    async with Gateway({"COINBASE": venue}, key_store, port=0, metrics_port=0) as gw:
        status, markets = await _get(gw, token, "/markets", exchange="COINBASE")
        assert status == 200
        assert {m["symbol"] for m in markets} >= {BTC, "COINBASE-PERP-BTC-USDC"}
        status, body = await _get(gw, token, "/trades", market=BTC, limit="3")
        assert status == 200
        ids = [t["tradeId"] for t in body["trades"]]
        # The newest three, oldest first: the REST seed (the trade feed starts with the read,
        # so the fake may have made more trades than its first five by then).
        first = int(ids[0])
        assert first >= 1003 and ids == [str(first), str(first + 1), str(first + 2)]
        assert body["trades"] == [
            {"price": float(t["price"]), "quantity": float(t["size"]), "side": t["side"],
             "time": body["trades"][i]["time"], "tradeId": t["trade_id"]}
            for i, t in enumerate(fake.trades["BTC-USD"][first - 1001 : first - 998])
        ]  # fmt: skip
        assert body["trades"][0]["side"] == "BUY" and body["trades"][1]["side"] == "SELL"

        url = f"{gw.base_url.replace('http', 'ws')}/ws?market={BTC}&dataType=TRADE"
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, headers=_headers(token)) as ws,
        ):
            received: list[dict] = []
            async with asyncio.timeout(10):
                while len(received) < 4:
                    received += json.loads((await ws.receive(timeout=5)).data)["trades"]
    streamed = [int(t["tradeId"]) for t in received]
    assert streamed == sorted(streamed) and streamed[0] > 1005  # live only, in order
    truth = {int(t["trade_id"]): t for t in fake.trades["BTC-USD"]}
    for t in received:
        assert t["price"] == float(truth[int(t["tradeId"])]["price"])
    assert fake.subscribes("market_trades") == [["BTC-USD"]]
