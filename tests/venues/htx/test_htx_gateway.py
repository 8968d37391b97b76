"""The gateway serving HUOBI end to end through ``FakeHtx`` on 127.0.0.1 (gzip frames, pings
that must be answered, markets injected from the recorded lists): ``GET /orderbook`` is the
venue's book, and a ``WS /ws`` client's book equals it at every update, across a lost
increment (resync, fresh snapshot) and across recorded ``depth.step0`` pushes."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest

from astra.server.gateway import Gateway
from astra.venues.htx import HtxUrls, HtxVenue

TOPIC = "market.btcusdt.mbp.150"


def _venue(fake, markets_source, **options) -> HtxVenue:
    return HtxVenue(
        "HUOBI", HtxUrls.for_server(fake.base_url), markets_source=markets_source, **options
    )


def _headers(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _watch(gw, token: str, market: str, until, data_type: str = "ORDERBOOK") -> list[dict]:
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={market}&dataType={data_type}"
    messages: list[dict] = []
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=_headers(token)) as ws,
        asyncio.timeout(15),
    ):
        while not until(messages):
            messages.append(json.loads((await ws.receive(timeout=10)).data))
    return messages


def _levels(sides: dict) -> dict:
    return {side: {lv["price"]: lv["quantity"] for lv in sides[side]} for side in ("bids", "asks")}


async def test_orderbook_and_ws_track_the_venue_across_a_lost_increment(
    fake_htx, mbp_script, markets_source, key_store, client_book
):
    script = mbp_script(TOPIC, 150, drop=(100,))
    last = script.increments[-1]["seqNum"]
    token = key_store.create("htx").token
    async with fake_htx(ping_interval=0.1, interval=0.01) as fake:
        fake.add_mbp(script)
        venue = _venue(fake, markets_source)
        async with Gateway({"HUOBI": venue}, key_store, port=0, metrics_port=0) as gw:
            async with aiohttp.ClientSession() as s, asyncio.timeout(15):
                resp = await s.get(
                    f"{gw.base_url}/orderbook",
                    params={"market": "HUOBI-SPOT-BTC-USDT"},
                    headers=_headers(token),
                )
                assert resp.status == 200, await resp.text()
                book = await resp.json()
            assert book["market"] == "HUOBI-SPOT-BTC-USDT"
            assert _levels(book) == script.books[book["updateId"]]
            assert [lv["price"] for lv in book["bids"]] == sorted(
                (lv["price"] for lv in book["bids"]), reverse=True
            )
            messages = await _watch(
                gw, token, "HUOBI-SPOT-BTC-USDT",
                lambda ms: bool(ms) and ms[-1].get("updateId") == last,
            )
            resyncs = gw.engine.stats["resyncs"]
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "snapshot" and kinds.count("snapshot") == 2  # the gap's fresh snapshot
    assert "update" in kinds[1 : kinds.index("snapshot", 1)]
    assert resyncs >= 1
    client = client_book()
    for msg in messages:  # the client's book is the venue's at every update id
        if msg["type"] == "resync":  # the gap, told before the fresh snapshot
            continue
        assert client.apply(msg) == script.books[msg["updateId"]], (msg["type"], msg["updateId"])
    assert fake.connections["/feed"] == 1 and fake.pong_failures == [] and fake.pongs_ok >= 1


async def test_recorded_depth_step0_pushes_reach_ws_clients_exactly(
    fake_htx, recording, markets_source, key_store, client_book
):
    topic = "market.omgbtc.depth.step0"
    frames = recording.frames(topic)
    books = {}
    for raw in frames:
        tick = json.loads(gzip.decompress(raw))["tick"]
        books[tick["version"]] = {s: {p: q for p, q in tick[s] if q > 0} for s in ("bids", "asks")}
    token = key_store.create("htx").token
    async with fake_htx(interval=0.01) as fake:
        fake.add_replay(topic, frames)
        venue = _venue(fake, markets_source, spot_book="depth")
        async with Gateway({"HUOBI": venue}, key_store, port=0, metrics_port=0) as gw:
            last = max(books)
            messages = await _watch(
                gw, token, "HUOBI-SPOT-OMG-BTC", lambda ms: bool(ms) and ms[-1]["updateId"] == last
            )
    assert [m["type"] for m in messages].count("snapshot") == 1
    client = client_book()
    for msg in messages:
        assert client.apply(msg) == books[msg["updateId"]]
    assert len(messages) > 20


def _swap_push(mrid: int, ms: int, bids: list, asks: list) -> bytes:
    """A USDT-margined swap push shaped like HTX's documented one: ``id`` and ``version``
    the epoch second (the same for every push here), ``mrid`` increasing."""
    second, ch = 1603707576, "market.BTC-USDT.depth.step0"
    tick = {"mrid": mrid, "id": second, "version": second, "ts": second * 1000 + ms}
    tick |= {"bids": bids, "asks": asks, "ch": ch}
    return gzip.compress(json.dumps({"ch": ch, "ts": second * 1000 + ms, "tick": tick}).encode())


async def test_swap_pushes_sharing_a_version_reach_rest_and_ws_clients(
    fake_htx, markets_source, key_store, client_book
):
    pushes = [
        (131596447, [[13071.9, 38], [13068.0, 5]], [[13081.9, 197], [13099.7, 371]]),
        (131596452, [[13071.9, 40], [13068.0, 5]], [[13081.9, 197], [13099.7, 371]]),
        (131596460, [[13068.0, 5]], [[13081.9, 150], [13099.7, 371]]),
        (131596471, [[13070.1, 2], [13068.0, 5]], [[13099.7, 371]]),
    ]
    frames = [_swap_push(mrid, 100 * i, bids, asks) for i, (mrid, bids, asks) in enumerate(pushes)]
    # BTC-USDT swaps count contracts of 0.001 BTC: the gateway serves base units.
    books = {
        mrid: {
            "bids": pytest.approx({p: q * 0.001 for p, q in bids}),
            "asks": pytest.approx({p: q * 0.001 for p, q in asks}),
        }
        for mrid, bids, asks in pushes
    }
    last = pushes[-1][0]
    token = key_store.create("htx").token
    async with fake_htx(interval=0.05) as fake:
        fake.add_replay("market.BTC-USDT.depth.step0", frames)
        venue = _venue(fake, markets_source)
        async with Gateway({"HUOBI": venue}, key_store, port=0, metrics_port=0) as gw:
            market = "HUOBI-PERP-BTC-USDT"
            messages = await _watch(
                gw, token, market, lambda ms: any(m.get("updateId") == last for m in ms)
            )
            async with aiohttp.ClientSession() as s, asyncio.timeout(15):
                url, params = f"{gw.base_url}/orderbook", {"market": market}
                resp = await s.get(url, params=params, headers=_headers(token))
                assert resp.status == 200, await resp.text()
                book = await resp.json()
    # Every push of the second is served (the update id is its mrid, not the shared version).
    book_messages = [m for m in messages if m["type"] in ("snapshot", "update")]
    assert [m["updateId"] for m in book_messages] == [mrid for mrid, _, _ in pushes]
    client = client_book()
    for msg in book_messages:
        assert client.apply(msg) == books[msg["updateId"]]
    assert book["updateId"] == last and _levels(book) == books[last]


async def test_ws_trades_from_the_recorded_trade_stream(
    fake_htx, recording, markets_source, key_store
):
    topic = "market.omgbtc.trade.detail"
    frames = recording.frames(topic)
    rows = [r for raw in frames for r in json.loads(gzip.decompress(raw))["tick"]["data"]]
    token = key_store.create("htx").token
    async with fake_htx(interval=0.01) as fake:
        fake.add_replay(topic, frames)
        venue = _venue(fake, markets_source)
        async with Gateway({"HUOBI": venue}, key_store, port=0, metrics_port=0) as gw:
            messages = await _watch(
                gw,
                token,
                "HUOBI-SPOT-OMG-BTC",
                lambda ms: sum(len(m["trades"]) for m in ms) >= len(rows),
                data_type="TRADE",
            )
    trades = [t for m in messages for t in m["trades"]]
    assert [(t["price"], t["quantity"], t["side"], t["tradeId"]) for t in trades] == [
        (r["price"], r["amount"], r["direction"].upper(), str(r["tradeId"])) for r in rows
    ]
