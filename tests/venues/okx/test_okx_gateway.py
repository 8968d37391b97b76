"""The gateway end to end over a fake OKX on 127.0.0.1 replaying the recorded BTC-USDT
``books`` session (with today's seqId/prevSeqId added): ``GET /orderbook`` and ``WS /ws``
serve exactly the replayed book; a corrupted or dropped push resyncs the market on the same
connection and clients get a fresh snapshot that again equals the replay."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest

from astra.server.gateway import Gateway

MARKET = "OKX-SPOT-BTC-USDT"


def _auth(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


def _served(levels: dict) -> dict:
    return {side: {lv["price"]: lv["quantity"] for lv in levels[side]} for side in ("bids", "asks")}


async def _watch(gw, token: str, until) -> list[dict]:
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={MARKET}&dataType=ORDERBOOK"
    messages: list[dict] = []
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=_auth(token)) as ws,
        asyncio.timeout(15),
    ):
        while not until(messages):
            messages.append(json.loads((await ws.receive(timeout=10)).data))
    return messages


async def _orderbook(gw, token: str, **params: str) -> dict:
    url, query = f"{gw.base_url}/orderbook", {"market": MARKET, **params}
    async with aiohttp.ClientSession() as s, s.get(url, params=query, headers=_auth(token)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _final(frames: list[str], reference_book) -> tuple[int, dict]:
    reference = reference_book()
    for text in frames:
        reference.apply(json.loads(text))
    return json.loads(frames[-1])["data"][0]["seqId"], reference.floats()


async def test_orderbook_and_ws_serve_the_replayed_book(
    fake_okx, okx_venue, okx_book_frames, okx_seq_frames, reference_book, key_store, client_book
):
    frames = okx_seq_frames(okx_book_frames["BTC-USDT"])
    last_seq, final = _final(frames, reference_book)

    async with fake_okx(lambda arg, n: frames if arg["instId"] == "BTC-USDT" else []) as server:
        token = key_store.create("okx").token
        async with Gateway({"OKX": okx_venue(server)}, key_store, port=0, metrics_port=0) as gw:
            messages = await _watch(gw, token, lambda m: m and m[-1]["updateId"] == last_seq)
            book = await _orderbook(gw, token)
            top = await _orderbook(gw, token, depth="5")
    assert messages[0]["type"] == "snapshot" and len(messages) > 2
    assert {m["type"] for m in messages[1:]} == {"update"}
    ids = [m["updateId"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    levels = client_book()
    for msg in messages:
        levels.apply(msg)
    assert levels.levels == final
    assert book["updateId"] == last_seq and book["market"] == MARKET
    assert _served(book) == final
    assert [lv["price"] for lv in book["bids"]] == sorted(final["bids"], reverse=True)
    assert len(top["bids"]) == len(top["asks"]) == 5
    assert top["asks"][0]["price"] == min(final["asks"])
    assert server.connections == 1


def _corrupt(frames: list[str], reference_book) -> tuple[int, list[str]]:
    """The first push from the 20th on whose first level lies in the checksummed top 25,
    with that level's size made wrong (checksum left as sent)."""
    reference = reference_book()
    for at, text in enumerate(frames):
        msg = json.loads(text)
        reference.apply(msg)
        data = msg["data"][0]
        side = "asks" if data["asks"] else "bids"
        if at < 20 or not data[side]:
            continue
        top = sorted(reference.sides[side], reverse=side == "bids")[:25]
        price = Decimal(data[side][0][0])
        inside = len(top) < 25 or (price <= top[-1] if side == "asks" else price >= top[-1])
        if inside:
            data[side][0][1] = str(Decimal(data[side][0][1]) + 1)
            return at, [*frames[:at], json.dumps(msg), *frames[at + 1 :]]
    raise AssertionError("no push touches the top 25")


@pytest.mark.parametrize("fault", ["corrupted", "dropped"])
async def test_a_bad_push_resyncs_and_clients_get_a_fresh_snapshot(
    fake_okx,
    okx_venue,
    okx_book_frames,
    okx_seq_frames,
    reference_book,
    key_store,
    client_book,
    fault,
):
    frames = okx_seq_frames(okx_book_frames["BTC-USDT"])[:40]
    last_seq, final = _final(frames, reference_book)
    if fault == "corrupted":
        at, bad = _corrupt(frames, reference_book)
    else:
        at = 20
        bad = frames[:at] + frames[at + 1 :]

    def script(arg: dict, n: int) -> list[str]:
        return (bad if n == 1 else frames) if arg["channel"] == "books" else []

    def done(messages: list[dict]) -> bool:
        snapshots = sum(m["type"] == "snapshot" for m in messages)
        return snapshots == 2 and messages[-1]["updateId"] == last_seq

    async with fake_okx(script) as server:
        token = key_store.create("okx").token
        async with Gateway({"OKX": okx_venue(server)}, key_store, port=0, metrics_port=0) as gw:
            messages = await _watch(gw, token, done)
            assert gw.engine.stats["resyncs"] == 1
            book = await _orderbook(gw, token)
    kinds = [m["type"] for m in messages]
    second = kinds.index("snapshot", 1)
    # Updates up to the fault only, then at once a resync, then the fresh snapshot: nothing
    # after the fault leaks.
    assert kinds[:second] == ["snapshot"] + ["update"] * (second - 2) + ["resync"]
    assert messages[second - 1]["state"] == "resyncing"
    assert messages[second - 2]["updateId"] < json.loads(frames[at])["data"][0]["seqId"]
    levels = client_book()
    for msg in messages:
        levels.apply(msg)
    assert levels.levels == final and _served(book) == final
    arg = [{"channel": "books", "instId": "BTC-USDT"}]
    assert server.requests == [
        {"op": "subscribe", "args": arg},
        {"op": "unsubscribe", "args": arg},
        {"op": "subscribe", "args": arg},
    ]
    assert server.connections == 1  # repaired on the same connection
