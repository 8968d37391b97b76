"""The gateway end to end through a fake Kraken v2 server on 127.0.0.1.

The fake serves the recorded XBT/CHF ``book-1000`` session (KRAKEN.ws.50.0) converted to v2
JSON (numbers, trailing zeros dropped) with checksums computed independently from exact
decimals at the pair's precision, and the recorded XMR/USD trades (KRAKEN.ws.48.0) as v2
``trade`` messages. Markets come from the recorded AssetPairs, injected: no network.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiohttp
import pytest

from astra.server.gateway import Gateway
from astra.venues.kraken import KrakenUrls, KrakenVenue
from astra.venues.kraken.feed import run_book_feed

MARKET = "KRAKEN-SPOT-XBT-CHF"


def _ms(seconds: str) -> int:
    return int(seconds.replace(".", "")[:13])


def _auth(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


def _venue(server, asset_pairs, **options) -> KrakenVenue:
    base = f"127.0.0.1:{server.port}"
    urls = KrakenUrls(rest=f"http://{base}", ws=f"ws://{base}/v2")
    return KrakenVenue("KRAKEN", urls, markets_source=lambda: asset_pairs, futures=False, **options)


def _book_server(v1_session, fake_kraken, **options):
    messages, _ = v1_session("KRAKEN.ws.50.0")
    pair = [m for m in messages if m.pair == "XBT/CHF"]
    assert pair[0].snapshot and len(pair) == 290
    return fake_kraken("BTC/CHF", 1, 8, pair[0], pair[1:], **options)


def _floats(levels: dict) -> dict:
    return {side: {float(p): float(q) for p, q in lv.items()} for side, lv in levels.items()}


async def _get(gw, token: str, path: str, **params) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.base_url}{path}", params=params, headers=_auth(token)) as r,
    ):
        return r.status, await r.json()


async def _watch_book(gw, token, server, client_book) -> list[dict]:
    """ORDERBOOK messages until the fake has sent everything and the client book equals it."""
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={MARKET}&dataType=ORDERBOOK"
    book, messages = client_book(), []
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=_auth(token)) as ws,
        asyncio.timeout(15),
    ):
        levels = None
        while True:
            try:
                msg = json.loads((await ws.receive(timeout=0.5)).data)
            except TimeoutError:  # quiet: done once the fake has sent all and we match it
                if server.done.is_set() and levels == _floats(server.book.levels()):
                    return messages
                continue
            messages.append(msg)
            levels = book.apply(msg)


async def test_ws_snapshot_then_updates_and_rest_book_equal_the_served_book(
    v1_session, fake_kraken, asset_pairs, key_store, client_book
):
    server = _book_server(v1_session, fake_kraken)
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway({"KRAKEN": _venue(server, asset_pairs)}, key_store, port=0, metrics_port=0) as gw,
    ):
        status, markets = await _get(gw, token, "/markets", exchange="KRAKEN")
        assert status == 200
        xbt = next(m for m in markets if m["symbol"] == MARKET)
        assert (xbt["baseAsset"], xbt["quoteAsset"], xbt["exchangeSymbol"]) == (
            "BTC",
            "CHF",
            "XBTCHF",
        )

        messages = await _watch_book(gw, token, server, client_book)
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "snapshot" and kinds.count("snapshot") == 1
        assert kinds.count("update") == len(server.updates) == 289  # every update, in order
        ids = [m["updateId"] for m in messages]
        assert ids == sorted(set(ids))
        assert messages[-1]["timestamp"] == int(server.updates[-1].t * 1000)

        status, book = await _get(gw, token, "/orderbook", market=MARKET)
        assert status == 200 and book["updateId"] == ids[-1]
        served = {
            "bids": {lv["price"]: lv["quantity"] for lv in book["bids"]},
            "asks": {lv["price"]: lv["quantity"] for lv in book["asks"]},
        }
        assert served == _floats(server.book.levels())
        assert [lv["price"] for lv in book["bids"]] == sorted(served["bids"], reverse=True)
        assert [lv["price"] for lv in book["asks"]] == sorted(served["asks"])
    assert server.book_subscriptions == 1
    subscribe = next(r for r in server.requests if r["method"] == "subscribe")
    assert subscribe["params"] == {
        "channel": "book",
        "symbol": ["BTC/CHF"],
        "depth": 1000,
        "snapshot": True,
    }


async def test_bad_checksum_resubscribes_and_clients_get_a_fresh_snapshot(
    v1_session, fake_kraken, asset_pairs, key_store, client_book
):
    server = _book_server(v1_session, fake_kraken, corrupt_at=100)
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway({"KRAKEN": _venue(server, asset_pairs)}, key_store, port=0, metrics_port=0) as gw,
    ):
        messages = await _watch_book(gw, token, server, client_book)
        assert gw.engine.stats["resyncs"] >= 1
    kinds = [m["type"] for m in messages]
    second = kinds.index("snapshot", 1)
    assert kinds[0] == "snapshot" and kinds.count("snapshot") == 2
    # the corrupted update was never forwarded; the client was told at once
    assert kinds[1:second] == ["update"] * 100 + ["resync"]
    assert server.book_subscriptions == 2
    book_requests = [r["method"] for r in server.requests if r["method"] != "ping"]
    assert book_requests == ["subscribe", "unsubscribe", "subscribe"]  # same connection
    fresh = messages[second]
    assert _floats(server.snapshots_sent[1]) == {
        side: {lv["price"]: lv["quantity"] for lv in fresh[side]} for side in ("bids", "asks")
    }


class _Sink:
    """A BookSink recording what the feed told it; ``until(predicate)`` waits for a state."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self._changed = asyncio.Event()

    def _add(self, event: tuple) -> None:
        self.events.append(event)
        self._changed.set()

    def on_snapshot(self, book) -> None:
        self._add(("snapshot", book.update_id))

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self._add(("update", update_id))

    def on_resync(self, reason: str) -> None:
        self._add(("resync", reason))

    async def until(self, predicate) -> None:
        while not predicate(self.events):
            self._changed.clear()
            await self._changed.wait()


async def _feed_until(server, asset_pairs, symbol: str, predicate, silence: float) -> _Sink:
    """Run ``symbol``'s book feed against the fake until the sink satisfies ``predicate``."""
    sink = _Sink()
    venue = _venue(server, asset_pairs)
    try:
        market = (await venue.load_markets())[symbol]
        task = asyncio.create_task(
            run_book_feed(venue._http(), venue.urls.ws, market, sink, silence=silence)
        )
        try:
            async with asyncio.timeout(5):
                await sink.until(predicate)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await venue.close()
    return sink


def _resyncs(events) -> list[str]:
    return [reason for kind, reason in events if kind == "resync"]


async def test_a_rejected_subscription_resyncs_and_retries_on_the_same_connection(
    v1_session, fake_kraken, asset_pairs
):
    server = _book_server(v1_session, fake_kraken)
    async with server.running():
        sink = await _feed_until(  # XBT/EUR is not served here
            server, asset_pairs, "KRAKEN-SPOT-XBT-EUR", lambda e: len(_resyncs(e)) >= 2, 5
        )
    assert [r["params"]["symbol"] for r in server.requests] == [["BTC/EUR"]] * 2
    assert all("subscription rejected: Unknown pair" in r for r in _resyncs(sink.events))
    assert "snapshot" not in {kind for kind, _ in sink.events}
    assert server.connections == 1  # one pair's refusal is not the connection's


async def test_no_snapshot_within_silence_resubscribes_that_pair(
    v1_session, fake_kraken, asset_pairs
):
    server = _book_server(v1_session, fake_kraken, withhold_first_snapshot=True)
    async with server.running():
        sink = await _feed_until(
            server, asset_pairs, MARKET, lambda e: ("update", 3) in e, silence=0.3
        )
    assert server.connections == 1 and server.book_subscriptions == 2
    assert [r["method"] for r in server.requests if r["method"] != "ping"] == [
        "subscribe",
        "unsubscribe",
        "subscribe",
    ]
    assert "no book snapshot 0.3 s after subscribing" in _resyncs(sink.events)[0]
    assert [kind for kind, _ in sink.events][:3] == ["resync", "snapshot", "update"]


async def test_trades_over_ws_and_rest(v1_session, fake_kraken, asset_pairs, key_store):
    books, _ = v1_session("KRAKEN.ws.50.0")
    _, trades = v1_session("KRAKEN.ws.48.0")
    recorded = [t for t in trades if t.pair == "XMR/USD"]

    def v2(i, t):
        return {
            "symbol": "XMR/USD",
            "side": "buy" if t.side == "b" else "sell",
            "price": float(t.price),
            "qty": float(t.volume),
            "ord_type": "limit",
            "trade_id": 500 + i,
            "timestamp": datetime.fromtimestamp(float(t.time), UTC).isoformat()[:-6] + "Z",
        }

    snapshot = next(m for m in books if m.pair == "XMR/USD")
    server = fake_kraken(
        "XMR/USD",
        2,
        8,
        snapshot,
        [],
        trade_snapshot=[v2(i, t) for i, t in enumerate(recorded[:2])],  # history: not sent
        trade_updates=[v2(i, t) for i, t in enumerate(recorded)],  # 500, 501 again: deduped
        rest_trades={
            "error": [],
            "result": {
                "XXMRZUSD": [
                    ["354.11000000", "0.89594024", 1618678142.557535, "s", "l", "", 41],
                    ["354.55000000", "1.25690315", 1618678145.715785, "b", "m", "", 42],
                ],
                "last": "1618678145715785000",
            },
        },
    )
    token = key_store.create("kraken").token
    async with (
        server.running(),
        Gateway({"KRAKEN": _venue(server, asset_pairs)}, key_store, port=0, metrics_port=0) as gw,
    ):
        url = f"{gw.base_url.replace('http', 'ws')}/ws?market=KRAKEN-SPOT-XMR-USD&dataType=TRADE"
        got: list[dict] = []
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, headers=_auth(token)) as ws,
            asyncio.timeout(10),
        ):
            while len(got) < len(recorded) - 2:
                got += json.loads((await ws.receive(timeout=5)).data)["trades"]
        # The feed is live: one REST read seeds it, then what the feed delivered follows.
        status, rest = await _get(gw, token, "/trades", market="KRAKEN-SPOT-XMR-USD", limit=99)
    assert rest["trades"][2:] == got
    rest["trades"] = rest["trades"][:2]
    assert [t["tradeId"] for t in got] == [str(500 + i) for i in range(2, len(recorded))]
    assert [(t["price"], t["quantity"], t["side"], t["time"]) for t in got] == [
        (
            float(t.price),
            float(t.volume),
            "BUY" if t.side == "b" else "SELL",
            int(t.time.replace(".", "")[:13]),
        )
        for t in recorded[2:]
    ]
    assert status == 200
    assert rest["trades"] == [
        {"price": 354.11, "quantity": 0.89594024, "side": "SELL", "time": 1618678142557,
         "tradeId": "41"},
        {"price": 354.55, "quantity": 1.25690315, "side": "BUY", "time": 1618678145715,
         "tradeId": "42"},
    ]  # fmt: skip
