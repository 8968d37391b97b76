"""Many subscriptions on one ``WS /ws`` connection: ``{"op":"subscribe"|"unsubscribe"}``
messages, their acks and errors, against a real gateway on a real simulator (loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os

import aiohttp
import pytest

from astra.server.params import MAX_WS_MESSAGE_BYTES, MAX_WS_SUBSCRIPTIONS
from astra.sim import DEFAULT_MARKETS, SimExchange, SimServer

SPOT_BTC, PERP_ETH, SPOT_SOL = "SIM-SPOT-BTC-USDT", "SIM-PERP-ETH-USDT", "SIM-SPOT-SOL-USDT"
SMART_BTC = "SMART-SPOT-BTC-USDT"
CONTROL = ("subscribed", "unsubscribed", "error")  # the connection's own messages


def _url(gw, token: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {**query, "apiKey": token}.items())
    return f"{gw.base_url.replace('http', 'ws')}/ws?{params}"


def _sub(market: str, data_type: str, msg_id: object = None, op: str = "subscribe") -> str:
    message = {"op": op, "market": market, "dataType": data_type}
    if msg_id is not None:
        message["id"] = msg_id
    return json.dumps(message)


async def _next(ws) -> dict:
    return await ws.receive_json(timeout=10)


async def _control(ws) -> dict:
    """The next ack or error, past any stream frames."""
    while True:
        msg = await _next(ws)
        if msg.get("type") in CONTROL:
            return msg


def _stream(msg: dict) -> tuple[str, str]:
    """(market, dataType) of a stream frame: every live frame names its market."""
    kind = msg.get("type")
    data_type = ("TRADE" if "trades" in msg else "BBO" if kind == "bbo" else "ORDERBOOK")
    return msg["market"], data_type


async def test_one_socket_carries_two_markets_and_three_data_types(
    gateway, sim, sim_books, client_book
):
    gw, token = gateway
    truths = {SPOT_BTC: sim_books(sim, "spot", "BTCUSDT"),
              PERP_ETH: sim_books(sim, "perp", "ETHUSDT")}
    wanted = [(SPOT_BTC, "ORDERBOOK", 1), (PERP_ETH, "ORDERBOOK", "two"),
              (SPOT_BTC, "TRADE", 3.5), (PERP_ETH, "BBO", None)]
    headers = {"x-astra-api-key": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(30):
        for market in truths:  # books already synced: a subscribe's snapshot comes at once,
            # at the gateway's update id, which must be one the truth saw (it records from its
            # subscription above on): wait until the gateway holds such an id.
            while True:
                async with http.get(f"{gw.base_url}/orderbook", params={"market": market}) as r:
                    assert r.status == 200
                    if (await r.json())["updateId"] in truths[market].books:
                        break
                await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as s, s.ws_connect(_url(gw, token)) as ws, \
            asyncio.timeout(60):
        for market, data_type, msg_id in wanted:
            await ws.send_str(_sub(market, data_type, msg_id))
        acked: list[tuple[str, str]] = []
        books = {m: client_book() for m in truths}
        last: dict[str, int] = {}
        frames: dict[tuple[str, str], int] = {}
        while len(acked) < 4 or min(frames.get((m, t), 0) for m, t, _ in wanted) < 3 \
                or min(frames[(m, "ORDERBOOK")] for m in truths) < 10:
            msg = await _next(ws)
            if msg.get("type") in CONTROL:
                market, data_type, msg_id = wanted[len(acked)]  # acks in the order asked
                expected = {"type": "subscribed", "market": market, "dataType": data_type}
                assert msg == (expected if msg_id is None else {**expected, "id": msg_id})
                acked.append((market, data_type))
                continue
            key = _stream(msg)
            assert key in acked, f"a frame of {key} before its ack"  # ack first, then frames
            frames[key] = frames.get(key, 0) + 1
            market = key[0]
            if key[1] == "ORDERBOOK":
                if market not in last:
                    assert msg["type"] == "snapshot"  # each book starts with its snapshot
                else:
                    assert msg["type"] == "update" and msg["updateId"] > last[market]
                last[market] = msg["updateId"]
                assert books[market].apply(msg) == truths[market].books[last[market]], market
            elif key[1] == "TRADE":
                assert msg["trades"] and all(t["price"] > 0 for t in msg["trades"])
            else:
                assert msg["bid"]["price"] < msg["ask"]["price"]
        # The books rebuilt from their frames are the gateway's own REST book, once each
        # client has seen the update id REST answers with.
        async with aiohttp.ClientSession(headers=headers) as http:
            for market, book in books.items():
                async with http.get(f"{gw.base_url}/orderbook", params={"market": market}) as r:
                    rest = await r.json()
                while last[market] < rest["updateId"]:
                    msg = await _next(ws)  # every book's frames go on being applied
                    if msg.get("market") in books and msg.get("type") in ("snapshot", "update"):
                        last[msg["market"]] = msg["updateId"]
                        books[msg["market"]].apply(msg)
                assert last[market] == rest["updateId"]
                assert book.levels == {side: {lv["price"]: lv["quantity"] for lv in rest[side]}
                                       for side in ("bids", "asks")}
        assert gw.metrics.ws_clients["ORDERBOOK"] == 2
        assert gw.metrics.ws_clients["TRADE"] == gw.metrics.ws_clients["BBO"] == 1


async def test_unsubscribe_stops_one_stream_and_not_the_other(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession() as s, s.ws_connect(_url(gw, token)) as ws, \
            asyncio.timeout(60):
        await ws.send_str(_sub(SPOT_BTC, "ORDERBOOK"))
        await ws.send_str(_sub(PERP_ETH, "ORDERBOOK"))
        seen: set[str] = set()
        while seen != {SPOT_BTC, PERP_ETH}:  # both flowing
            msg = await _next(ws)
            if msg.get("type") == "update":
                seen.add(msg["market"])
        await ws.send_str(_sub(SPOT_BTC, "ORDERBOOK", "bye", op="unsubscribe"))
        while (msg := await _next(ws)).get("type") not in CONTROL:
            pass  # frames sent before the unsubscribe was read
        assert msg == {"type": "unsubscribed", "market": SPOT_BTC, "dataType": "ORDERBOOK",
                       "id": "bye"}
        spot = gw.engine.channels.get((SPOT_BTC, "ORDERBOOK"))
        assert spot is None or not spot.clients  # released at once
        assert gw.metrics.ws_clients["ORDERBOOK"] == 1
        perp_updates = 0
        while perp_updates < 10:  # the other goes on; nothing more of the first
            msg = await _next(ws)
            assert msg["market"] == PERP_ETH, msg
            perp_updates += msg["type"] == "update"
        # ... and it may be subscribed again: a fresh snapshot after the ack
        await ws.send_str(_sub(SPOT_BTC, "ORDERBOOK", 2))
        assert await _control(ws) == {"type": "subscribed", "market": SPOT_BTC,
                                      "dataType": "ORDERBOOK", "id": 2}
        while (msg := await _next(ws))["market"] != SPOT_BTC:
            pass
        assert msg["type"] == "snapshot"


LONG = "X" * 3000


async def test_bad_messages_get_errors_and_the_socket_stays_usable(gateway):
    gw, token = gateway
    bad_markets = ["SIM-SPOT-BTC", "sim-spot-btc-usdt", "FOO-SPOT-BTC-USDT", "SIM-SWAP-BTC-USDT",
                   "SIM-SPOT-DOGE-USDT", "OKX-SPOT-BTC-USDT", LONG, "NaN"]
    headers = {"x-astra-api-key": f"Bearer {token}"}
    http_errors = {}  # what the query-string form answers over HTTP for the same faults
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(60):
        for market, data_type in [*((m, "TRADE") for m in bad_markets), (SMART_BTC, "TRADE")]:
            async with http.get(f"{gw.base_url}/ws",
                                params={"market": market, "dataType": data_type}) as r:
                assert 400 <= r.status < 500
                http_errors[market, data_type] = await r.json()
    assert http_errors["SIM-SPOT-DOGE-USDT", "TRADE"]["code"] == "MARKET_NOT_FOUND"
    assert http_errors["FOO-SPOT-BTC-USDT", "TRADE"]["code"] == "INVALID_MARKET"
    good = {"op": "subscribe", "market": SPOT_SOL, "dataType": "TRADE"}
    cases: list[tuple[str | bytes, dict]] = [
        ("not json", {"code": "INVALID_PARAMETER", "parameter": "body"}),
        (b"\x00\xff binary", {"code": "INVALID_PARAMETER", "parameter": "body"}),
        ("[1, 2]", {"code": "INVALID_PARAMETER", "parameter": "body"}),
        ("null", {"code": "INVALID_PARAMETER", "parameter": "body"}),
        ('"subscribe"', {"code": "INVALID_PARAMETER", "parameter": "body"}),
        (json.dumps({**good, "op": "watch", "id": 1}),
         {"code": "INVALID_PARAMETER", "parameter": "op", "id": 1}),
        (json.dumps({"market": SPOT_SOL, "dataType": "TRADE", "id": "a"}),
         {"code": "MISSING_PARAMETER", "parameter": "op", "id": "a"}),
        (json.dumps({"op": "subscribe", "dataType": "TRADE"}),
         {"code": "MISSING_PARAMETER", "parameter": "market"}),
        (json.dumps({**good, "market": 5}), {"code": "INVALID_PARAMETER", "parameter": "market"}),
        (json.dumps({"op": "subscribe", "market": SPOT_SOL}),
         {"code": "MISSING_PARAMETER", "parameter": "dataType"}),
        (json.dumps({**good, "dataType": "CANDLES"}),
         {"code": "INVALID_PARAMETER", "parameter": "dataType"}),
        (json.dumps({**good, "dataType": "trade"}),
         {"code": "INVALID_PARAMETER", "parameter": "dataType"}),
        (json.dumps({**good, "dataType": "ORDERS", "id": 9}),
         {"code": "INVALID_PARAMETER", "parameter": "dataType", "id": 9}),
        (json.dumps({**good, "depth": 5}), {"code": "INVALID_PARAMETER", "parameter": "depth"}),
        (json.dumps({**good, "id": [1]}), {"code": "INVALID_PARAMETER", "parameter": "id"}),
        (json.dumps({**good, "id": True}), {"code": "INVALID_PARAMETER", "parameter": "id"}),
        (json.dumps({**good, "op": "unsubscribe", "id": 4}),
         {"code": "NOT_FOUND", "parameter": "market", "id": 4}),
    ]
    for market, data_type in http_errors:
        body = http_errors[market, data_type]
        expected = {k: body[k] for k in ("code", "message", "parameter")}
        cases.append((_sub(market, data_type, "m"), {**expected, "id": "m"}))
    async with aiohttp.ClientSession() as s, s.ws_connect(_url(gw, token)) as ws, \
            asyncio.timeout(60):
        for raw, expected in cases:
            await (ws.send_bytes(raw) if isinstance(raw, bytes) else ws.send_str(raw))
            answer = await _next(ws)
            assert answer["type"] == "error", (raw, answer)
            assert {k: answer.get(k) for k in expected} == expected, (raw, answer)
            assert set(answer) <= {"type", "code", "message", "parameter", "id"}, answer
        assert "query-string" in (await _error_for(ws, _sub(SPOT_SOL, "FILLS")))["message"]
        # the same socket subscribes successfully after all of them ...
        await ws.send_str(json.dumps({**good, "id": 10}))
        assert await _next(ws) == {"type": "subscribed", "market": SPOT_SOL,
                                   "dataType": "TRADE", "id": 10}
        # ... and refuses the same subscription twice (the stream goes on meanwhile)
        await ws.send_str(json.dumps({**good, "id": 11}))
        answer = await _control(ws)
        assert (answer["type"], answer["code"], answer["id"]) == ("error", "CONFLICT", 11)
        while "trades" not in (msg := await _next(ws)):
            pass
        assert msg["market"] == SPOT_SOL
    assert gw.metrics.ws_clients["TRADE"] == 0  # only the good one counted, and released


async def _error_for(ws, raw: str) -> dict:
    await ws.send_str(raw)
    answer = await _control(ws)
    assert answer["type"] == "error", answer
    return answer


async def test_a_flood_is_answered_in_order(gateway):
    gw, token = gateway
    markets = [f"SIM-{t}-{b}-USDT" for t in ("SPOT", "PERP") for b in ("BTC", "ETH", "SOL")]
    messages = []
    for i, market in enumerate(markets):  # subscribes whose feeds start, between bad ones
        messages += [_sub(market, "BBO", i), "{", _sub(market, "BBO", f"dup{i}")]
    async with aiohttp.ClientSession() as s, s.ws_connect(_url(gw, token)) as ws, \
            asyncio.timeout(60):
        for raw in messages:
            await ws.send_str(raw)
        answers = [await _control(ws) for _ in messages]
    kinds = [(a["type"], a.get("code"), a.get("id")) for a in answers]
    expected = []
    for i, _ in enumerate(markets):
        expected += [("subscribed", None, i), ("error", "INVALID_PARAMETER", None),
                     ("error", "CONFLICT", f"dup{i}")]
    assert kinds == expected


async def test_the_query_string_form_is_unchanged_and_takes_messages_too(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(_url(gw, token, market=SPOT_BTC, dataType="ORDERBOOK")) as ws, \
            asyncio.timeout(60):
        first = await _next(ws)  # no ack: the stream's own snapshot comes first
        assert first["type"] == "snapshot" and first["market"] == SPOT_BTC
        await ws.send_str(_sub(SPOT_BTC, "TRADE", 1))
        assert await _control(ws) == {"type": "subscribed", "market": SPOT_BTC,
                                      "dataType": "TRADE", "id": 1}
        await ws.send_str(_sub(SPOT_BTC, "ORDERBOOK", 2))  # the query's own subscription
        assert (await _control(ws))["code"] == "CONFLICT"
        await ws.send_str(_sub(SPOT_BTC, "ORDERBOOK", 3, op="unsubscribe"))
        assert await _control(ws) == {"type": "unsubscribed", "market": SPOT_BTC,
                                      "dataType": "ORDERBOOK", "id": 3}
        for _ in range(3):  # trades keep coming, books no more
            while (msg := await _next(ws)).get("type") in ("update", "snapshot"):
                pytest.fail(f"a book frame after its unsubscribe: {msg}")
            assert msg["market"] == SPOT_BTC and "trades" in msg
    # its parameters are still checked before the upgrade: with any of them, all are needed
    headers = {"x-astra-api-key": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(30):
        for query, parameter in (({"exchange": "SIM"}, "dataType"),
                                 ({"market": SPOT_BTC}, "dataType"),
                                 ({"dataType": "BBO"}, "market")):
            async with http.get(f"{gw.base_url}/ws", params=query) as r:
                body = await r.json()
            assert (r.status, body["code"], body["parameter"]) == (
                400, "MISSING_PARAMETER", parameter)
    # a trade stream in the query-string form names its market now, too
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(_url(gw, token, market=SPOT_SOL, dataType="TRADE")) as ws, \
            asyncio.timeout(30):
        msg = await _next(ws)
        assert msg["market"] == SPOT_SOL and msg["trades"]


async def test_scopes_read_only_key_subscribes_a_key_without_read_cannot(gateway, key_store):
    gw, _ = gateway
    read_only = key_store.create("reader", scopes="read").token
    trade_only = key_store.create("trader", scopes="trade").token
    async with aiohttp.ClientSession() as s, asyncio.timeout(60):
        async with s.ws_connect(_url(gw, read_only)) as ws:
            await ws.send_str(_sub(SMART_BTC, "ORDERBOOK", "r"))
            assert await _next(ws) == {"type": "subscribed", "market": SMART_BTC,
                                       "dataType": "ORDERBOOK", "id": "r"}
            msg = await _next(ws)
            assert msg["market"] == SMART_BTC and msg["type"] in ("snapshot", "resync")
        for query in ({}, {"market": SPOT_BTC, "dataType": "ORDERBOOK"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(_url(gw, trade_only, **query))
            assert refused.value.status == 403
            async with s.get(f"{gw.base_url}/ws", params=query,
                             headers={"x-astra-api-key": f"Bearer {trade_only}"}) as r:
                body = await r.json()
            assert (r.status, body["code"]) == (403, "FORBIDDEN") and "'read'" in body["message"]


async def test_a_message_over_the_size_limit_closes_with_1009(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession() as s, s.ws_connect(_url(gw, token)) as ws, \
            asyncio.timeout(30):
        await ws.send_str(json.dumps({"op": "subscribe", "market": SPOT_BTC,
                                      "dataType": "TRADE", "id": "x" * MAX_WS_MESSAGE_BYTES}))
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009
    await _released(gw)


def _holders(gw) -> list:
    """What still holds a feed: channels with clients, BBO streams, counted subscriptions."""
    return [*(k for k, c in gw.engine.channels.items() if c.clients), *gw.engine._bbo,
            *(t for t, n in gw.metrics.ws_clients.items() if n)]


async def _released(gw) -> None:
    """Until nothing holds a feed (the server notices a close a moment after the client)."""
    for _ in range(200):
        if not _holders(gw):
            return
        await asyncio.sleep(0.05)
    assert _holders(gw) == []


async def test_disconnect_releases_every_feed(gateway):
    gw, token = gateway
    subscriptions = [(SPOT_BTC, "ORDERBOOK"), (SPOT_BTC, "TRADE"), (SPOT_BTC, "BBO"),
                     (PERP_ETH, "BBO"), (SMART_BTC, "ORDERBOOK"), (SMART_BTC, "BBO")]
    async with aiohttp.ClientSession() as s, asyncio.timeout(60):
        async with s.ws_connect(_url(gw, token)) as ws:
            for market, data_type in subscriptions:
                await ws.send_str(_sub(market, data_type))
            acks = [await _control(ws) for _ in subscriptions]
            assert [(a["market"], a["dataType"]) for a in acks] == subscriptions
            await _next(ws)
            assert sum(gw.metrics.ws_clients.values()) == len(subscriptions)
            assert any(c.clients for c in gw.engine.channels.values())
        await _released(gw)
        for _ in range(100):  # and the feeds stop after the linger (1 s here)
            if not gw.engine.channels:
                break
            await asyncio.sleep(0.1)
        assert gw.engine.channels == {}


# -- the subscription limit: more (market, dataType) pairs than the default simulator lists ----

def _markets(extra: int) -> tuple:
    template = DEFAULT_MARKETS[0]  # BTCUSDT spot's rules
    return (*DEFAULT_MARKETS, *(dataclasses.replace(template, symbol=f"X{i}USDT", base=f"X{i}",
                                                    name=f"X{i}") for i in range(extra)))


@pytest.fixture
async def wide_gateway(key_store):
    from astra.server.gateway import Gateway, venues_from_config

    token = key_store.create("wide").token
    async with SimServer(SimExchange(seed=1, markets=_markets(31))) as sim, Gateway(
            venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
            linger=1.0) as gw:
        yield gw, token


async def test_at_most_100_subscriptions_per_connection(wide_gateway):
    gw, token = wide_gateway
    async with aiohttp.ClientSession() as s, asyncio.timeout(120):
        async with aiohttp.ClientSession(
                headers={"x-astra-api-key": f"Bearer {token}"}) as http, \
                http.get(f"{gw.base_url}/markets", params={"exchange": "SIM"}) as r:
            markets = sorted(m["symbol"] for m in await r.json() if "SPOT" in m["symbol"])
        pairs = [(m, t) for m in markets for t in ("ORDERBOOK", "TRADE", "BBO")]
        assert len(pairs) > MAX_WS_SUBSCRIPTIONS == 100
        async with s.ws_connect(_url(gw, token)) as ws:
            for i, (market, data_type) in enumerate(pairs[:MAX_WS_SUBSCRIPTIONS]):
                await ws.send_str(_sub(market, data_type, i))
            for i in range(MAX_WS_SUBSCRIPTIONS):
                answer = await _control(ws)
                assert (answer["type"], answer["id"]) == ("subscribed", i), answer
            market, data_type = pairs[MAX_WS_SUBSCRIPTIONS]
            await ws.send_str(_sub(market, data_type, "one more"))
            answer = await _control(ws)
            assert (answer["type"], answer["code"], answer["id"]) == (
                "error", "LIMIT_EXCEEDED", "one more")
            assert "100" in answer["message"]
            await ws.send_str(_sub(*pairs[0], "free one", op="unsubscribe"))
            assert (await _control(ws))["type"] == "unsubscribed"
            await ws.send_str(_sub(market, data_type, "now"))
            assert (await _control(ws))["type"] == "subscribed"
            assert sum(gw.metrics.ws_clients.values()) == MAX_WS_SUBSCRIPTIONS
        await _released(gw)


def _client_text_frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455 5.3), for a raw socket that never reads."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_a_slow_client_with_many_subscriptions_is_dropped_whole(
    sim, key_store, stalled_ws
):
    from astra.server.gateway import Gateway, venues_from_config

    token = key_store.create().token
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
                       max_queue=20, send_buffer=4096) as gw, asyncio.timeout(60):
        stalled = await stalled_ws(gw.port, f"/ws?apiKey={token}")
        for data_type in ("ORDERBOOK", "TRADE"):
            stalled.write(_client_text_frame(_sub(SPOT_BTC, data_type)))
        await stalled.drain()
        url = _url(gw, token)
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as fast:
            await fast.send_str(_sub(SPOT_BTC, "ORDERBOOK"))
            assert (await _next(fast))["type"] == "subscribed"
            book = gw.engine.channels[(SPOT_BTC, "ORDERBOOK")]
            last, updates = 0, 0
            while len(book.clients) > 1 or updates < 10:  # the stalled one goes, whole
                msg = await _next(fast)
                assert msg["market"] == SPOT_BTC and msg["updateId"] > last
                last, updates = msg["updateId"], updates + 1
            trades = gw.engine.channels[(SPOT_BTC, "TRADE")]
            for _ in range(100):  # its other subscription is released with it
                if not trades.clients:
                    break
                await asyncio.sleep(0.05)
            assert not trades.clients
            assert gw.telemetry.registry.get_sample_value(
                "astra_ws_dropped_clients_total", {"dataType": "MULTI"}) == 1
        stalled.close()
