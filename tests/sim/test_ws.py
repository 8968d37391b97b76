"""The simulator's market-data WebSocket endpoints against the Aster docs (spot seed and
futures v3): documented payloads per stream, combined-stream wrapping, live subscription
control, the documented error replies, handshake rejection, the per-second message limit and
server-side drops.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import WSMsgType

BASES = {"spot": "/sstream", "perp": "/fstream"}
KINDS = tuple(BASES)
RATE_LIMIT = {"spot": 5, "perp": 10}
DEPTH_KEYS = {"e", "E", "T", "s", "U", "u", "pu", "b", "a"}
TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m"}
AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}
BOOK_TICKER_KEYS = {"u", "s", "b", "B", "a", "A"}
KLINE_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}
MINI_TICKER_KEYS = {"e", "E", "s", "c", "o", "h", "l", "v", "q"}
TICKER_KEYS = MINI_TICKER_KEYS | {"p", "P", "w", "Q", "O", "C", "F", "L", "n"}
MARK_PRICE_KEYS = {"e", "E", "s", "p", "i", "P", "r", "T"}
WAIT = 5  # seconds: the bound on every network wait


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def ws_url(sim, kind: str, tail: str) -> str:
    return f"ws://{sim.host}:{sim.port}{BASES[kind]}{tail}"


async def connect(http, sim, kind: str, tail: str = "/ws") -> aiohttp.ClientWebSocketResponse:
    async with asyncio.timeout(WAIT):
        return await http.ws_connect(ws_url(sim, kind, tail))


async def next_json(ws):
    msg = await ws.receive(timeout=WAIT)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return json.loads(msg.data)


async def collect(ws, count: int) -> list:
    return [await next_json(ws) for _ in range(count)]


async def reply_to(ws, request_id: int) -> dict:
    """The reply carrying ``request_id``, skipping data frames received before it."""
    async with asyncio.timeout(WAIT):
        while True:
            msg = await next_json(ws)
            if isinstance(msg, dict) and "id" in msg and ("result" in msg or "code" in msg):
                assert msg["id"] == request_id, msg
                return msg


async def send(ws, method: str, params: list | None = None, request_id: int = 1) -> None:
    body = {"method": method, "id": request_id}
    if params is not None:
        body["params"] = params
    await ws.send_str(json.dumps(body))


async def close_code(ws) -> int:
    """Read until the server's close frame arrives; its code."""
    async with asyncio.timeout(WAIT):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return ws.close_code
            assert msg.type == WSMsgType.TEXT, msg


def check_levels(bids: list, asks: list) -> None:
    bid_prices = [Decimal(p) for p, _ in bids]
    ask_prices = [Decimal(p) for p, _ in asks]
    assert all(a > b for a, b in itertools.pairwise(bid_prices)), bids
    assert all(a < b for a, b in itertools.pairwise(ask_prices)), asks
    if bid_prices and ask_prices:
        assert bid_prices[0] < ask_prices[0]


# -- payloads --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "stream"), [("spot", "depth@100ms"), ("perp", "depth@100ms"),
                                              ("spot", "depth"), ("perp", "depth")])  # fmt: skip
async def test_diff_depth_events_chain(sim, http, kind, stream):
    count = 3 if stream == "depth" else 8
    async with await connect(http, sim, kind, f"/ws/btcusdt@{stream}") as ws:
        events = await collect(ws, count)
    for event in events:
        assert set(event) == DEPTH_KEYS
        assert (event["e"], event["s"]) == ("depthUpdate", "BTCUSDT")
        assert event["U"] <= event["u"]
        assert event["b"] or event["a"]
        # a diff holds changed levels; "0" removes one, so only the order is checked
        check_levels(*([x for x in event[k] if Decimal(x[1])] for k in "ba"))
    for prev, event in itertools.pairwise(events):
        assert event["U"] == prev["u"] + 1
        assert event["pu"] == prev["u"]


@pytest.mark.parametrize("levels", [5, 10, 20])
@pytest.mark.parametrize("kind", KINDS)
async def test_partial_depth(sim, http, kind, levels):
    bids, asks = ("bids", "asks") if kind == "spot" else ("b", "a")  # as each side's docs say
    for stream in (f"depth{levels}", f"depth{levels}@100ms"):
        async with await connect(http, sim, kind, f"/ws/ethusdt@{stream}") as ws:
            events = await collect(ws, 2)
        for event in events:
            assert set(event) == DEPTH_KEYS - {"b", "a"} | {bids, asks}
            assert (event["e"], event["s"]) == ("depthUpdate", "ETHUSDT")
            assert 0 < len(event[bids]) <= levels and 0 < len(event[asks]) <= levels
            check_levels(event[bids], event[asks])
            assert all(Decimal(q) > 0 for _, q in event[bids] + event[asks])
        assert events[1]["pu"] == events[0]["u"]


@pytest.mark.parametrize("kind", KINDS)
async def test_trade_stream(sim, http, kind):
    async with await connect(http, sim, kind, "/ws/btcusdt@trade") as ws:
        trades = await collect(ws, 6)
    for trade in trades:
        assert set(trade) == TRADE_KEYS
        assert (trade["e"], trade["s"]) == ("trade", "BTCUSDT")
        assert Decimal(trade["p"]) > 0 and Decimal(trade["q"]) > 0
        assert isinstance(trade["m"], bool)
    ids = [t["t"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


@pytest.mark.parametrize("kind", KINDS)
async def test_tradepro_stream_as_documented(sim, http, kind):
    """``<symbol>@tradepro`` (spot v3 and futures docs): every trade, with the documented
    transaction hash and participants; the same trades as ``@trade``. Refused before."""
    tail = "/stream?streams=btcusdt@trade/btcusdt@tradepro"
    trades, pros = {}, {}
    async with await connect(http, sim, kind, tail) as ws, asyncio.timeout(WAIT):
        while len(pros) < 6 or not set(pros) <= set(trades):
            msg = await next_json(ws)
            (pros if msg["stream"].endswith("@tradepro") else trades)[msg["data"]["t"]] = msg
    for t, msg in pros.items():
        assert msg["stream"] == "btcusdt@tradepro"
        pro, trade = msg["data"], trades[t]["data"]
        assert list(pro) == ["e", "E", "T", "s", "t", "p", "q", "h", "m"]  # the docs' order
        assert (pro["e"], pro["s"]) == ("tradepro", "BTCUSDT")
        assert pro["h"] == "0X" + "0" * 64 and pro["m"] == ["hidden", "hidden"]
        assert (pro["T"], pro["p"], pro["q"]) == (trade["T"], trade["p"], trade["q"])
    async with await connect(http, sim, kind, "/ws") as ws:  # live SUBSCRIBE works too
        await send(ws, "SUBSCRIBE", ["ethusdt@tradepro"], 4)
        assert await reply_to(ws, 4) == {"result": None, "id": 4}
        assert (await next_json(ws))["e"] == "tradepro"


@pytest.mark.parametrize("kind", KINDS)
async def test_agg_trade_stream(sim, http, kind):
    async with await connect(http, sim, kind, "/ws/btcusdt@aggTrade") as ws:
        aggs = await collect(ws, 5)
    for agg in aggs:
        assert set(agg) == AGG_KEYS | ({"M"} if kind == "spot" else set())
        assert (agg["e"], agg["s"]) == ("aggTrade", "BTCUSDT")
        assert agg["f"] <= agg["l"] and Decimal(agg["q"]) > 0
    for prev, agg in itertools.pairwise(aggs):
        assert agg["a"] == prev["a"] + 1
        assert agg["f"] == prev["l"] + 1


@pytest.mark.parametrize("kind", KINDS)
async def test_book_ticker_stream(sim, http, kind):
    keys = BOOK_TICKER_KEYS | ({"e", "E", "T"} if kind == "perp" else set())
    async with await connect(http, sim, kind, "/ws/solusdt@bookTicker") as ws:
        tops = await collect(ws, 5)
    for top in tops:
        assert set(top) == keys
        assert top["s"] == "SOLUSDT" and Decimal(top["b"]) < Decimal(top["a"])
        assert Decimal(top["B"]) > 0 and Decimal(top["A"]) > 0
        if kind == "perp":
            assert top["e"] == "bookTicker"
    updates = [t["u"] for t in tops]
    assert updates == sorted(updates)


@pytest.mark.parametrize("kind", KINDS)
async def test_kline_stream(sim, http, kind):
    async with await connect(http, sim, kind, "/ws/btcusdt@kline_1m") as ws:
        event = await next_json(ws)  # spot pushes every 2 s, perpetual 250 ms
    assert set(event) == {"e", "E", "s", "k"} and (event["e"], event["s"]) == ("kline", "BTCUSDT")
    k = event["k"]
    assert set(k) == KLINE_KEYS
    assert (k["s"], k["i"], k["x"]) == ("BTCUSDT", "1m", False)
    assert k["t"] % 60_000 == 0 and k["T"] == k["t"] + 59_999
    o, c, h, low = (Decimal(k[x]) for x in "ochl")
    assert low <= o <= h and low <= c <= h
    assert Decimal(k["V"]) <= Decimal(k["v"])
    if k["n"]:
        assert k["L"] - k["f"] + 1 == k["n"]


@pytest.mark.parametrize("kind", KINDS)
async def test_mini_ticker_and_ticker_streams(sim, http, kind):
    tail = "/stream?streams=ethusdt@miniTicker/ethusdt@ticker"
    seen = {}
    async with await connect(http, sim, kind, tail) as ws, asyncio.timeout(WAIT):
        while len(seen) < 2:
            msg = await next_json(ws)
            seen[msg["stream"]] = msg["data"]
    mini, full = seen["ethusdt@miniTicker"], seen["ethusdt@ticker"]
    assert set(mini) == MINI_TICKER_KEYS and mini["e"] == "24hrMiniTicker"
    assert set(full) == TICKER_KEYS and full["e"] == "24hrTicker"
    for t in (mini, full):
        assert t["s"] == "ETHUSDT"
        o, h, low, c = (Decimal(t[x]) for x in "ohlc")
        assert low <= o <= h and low <= c <= h
    assert full["O"] < full["C"]


async def test_mark_price_stream(sim, http):
    for stream in ("btcusdt@markPrice@1s", "btcusdt@markPrice"):
        async with await connect(http, sim, "perp", f"/ws/{stream}") as ws:
            mark = await next_json(ws)
        assert set(mark) == MARK_PRICE_KEYS
        assert (mark["e"], mark["s"]) == ("markPriceUpdate", "BTCUSDT")
        assert Decimal(mark["p"]) > 0 and Decimal(mark["i"]) > 0
        assert mark["T"] % (8 * 3600 * 1000) == 0 and mark["T"] > mark["E"]


@pytest.mark.parametrize("kind", KINDS)
async def test_combined_stream_wraps_payloads(sim, http, kind):
    names = ("btcusdt@aggTrade", "ethusdt@bookTicker")
    seen: set[str] = set()
    async with await connect(http, sim, kind, "/stream?streams=" + "/".join(names)) as ws:
        async with asyncio.timeout(WAIT):
            while seen != set(names):
                msg = await next_json(ws)
                assert set(msg) == {"stream", "data"}
                assert msg["stream"] in names
                assert msg["data"]["s"] == msg["stream"].split("@")[0].upper()
                seen.add(msg["stream"])


# -- live control ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_subscribe_list_unsubscribe(sim, http, kind):
    async with await connect(http, sim, kind) as ws:
        await send(ws, "SUBSCRIBE", ["btcusdt@bookTicker"], 1)
        assert await next_json(ws) == {"result": None, "id": 1}
        top = await next_json(ws)
        assert set(top) >= BOOK_TICKER_KEYS and top["s"] == "BTCUSDT"
        await send(ws, "LIST_SUBSCRIPTIONS", None, 2)
        assert await reply_to(ws, 2) == {"result": ["btcusdt@bookTicker"], "id": 2}
        await send(ws, "UNSUBSCRIBE", ["btcusdt@bookTicker"], 3)
        assert await reply_to(ws, 3) == {"result": None, "id": 3}
        await asyncio.sleep(0.5)  # book tickers would keep coming meanwhile if still subscribed
        await send(ws, "LIST_SUBSCRIPTIONS", None, 4)
        assert await next_json(ws) == {"result": [], "id": 4}


@pytest.mark.parametrize("kind", KINDS)
async def test_set_property_combined_wraps_payloads(sim, http, kind):
    async with await connect(http, sim, kind, "/ws/btcusdt@bookTicker") as ws:
        await send(ws, "GET_PROPERTY", ["combined"], 1)
        assert await reply_to(ws, 1) == {"result": False, "id": 1}
        await send(ws, "SET_PROPERTY", ["combined", True], 2)
        assert await reply_to(ws, 2) == {"result": None, "id": 2}
        for msg in await collect(ws, 3):
            assert set(msg) == {"stream", "data"}
            assert msg["stream"] == "btcusdt@bookTicker" and msg["data"]["s"] == "BTCUSDT"
        await send(ws, "GET_PROPERTY", ["combined"], 3)
        assert await reply_to(ws, 3) == {"result": True, "id": 3}


@pytest.mark.parametrize("kind", KINDS)
async def test_url_streams_are_listed_and_combined_is_true(sim, http, kind):
    names = ["solusdt@aggTrade", "btcusdt@depth5"]
    async with await connect(http, sim, kind, "/stream?streams=" + "/".join(names)) as ws:
        await send(ws, "GET_PROPERTY", ["combined"], 7)
        assert await reply_to(ws, 7) == {"result": True, "id": 7}
        await send(ws, "LIST_SUBSCRIPTIONS", None, 8)
        assert await reply_to(ws, 8) == {"result": names, "id": 8}


ERRORS = [
    # (message sent, code, message text or its documented beginning)
    ("{not json", 3, "Invalid JSON"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1', 3, "Invalid JSON"),
    ('{"method": "SUBSCRIBBE", "params": [], "id": 1}', 2, "Invalid request: unknown variant"),
    ('{"params": ["btcusdt@trade"], "id": 1}', 2, "Invalid request: missing field"),
    ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}', 1,
     "Invalid value type: expected Boolean"),
    ('{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 1}', 1,
     "Invalid value type: expected Boolean"),
    ('{"method": "GET_PROPERTY", "params": ["compressed"], "id": 1}', 0, "Unknown property"),
    ('{"method": "SET_PROPERTY", "params": ["compressed", true], "id": 1}', 0,
     "Unknown property"),
    ('{"method": "GET_PROPERTY", "params": [5], "id": 1}', 2,
     "Invalid request: property name must be a string"),
    ('{"method": "GET_PROPERTY", "params": [], "id": 1}', 2,
     "Invalid request: property name must be a string"),
    ('{"method": "GET_PROPERTY", "params": ["combined", true], "id": 1}', 2,
     "Invalid request: too many parameters"),
    ('{"method": "LIST_SUBSCRIPTIONS", "id": "1"}', 2,
     "Invalid request: request ID must be an unsigned integer"),
    ('{"method": "LIST_SUBSCRIPTIONS", "id": -1}', 2,
     "Invalid request: request ID must be an unsigned integer"),
    ('{"method": "LIST_SUBSCRIPTIONS", "id": 1.5}', 2,
     "Invalid request: request ID must be an unsigned integer"),
    ('{"method": "SUBSCRIBE", "params": ["nopeusdt@trade"], "id": 1}', 2, "Invalid request"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@trades"], "id": 1}', 2, "Invalid request"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@kline_2m"], "id": 1}', 2, "Invalid request"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": 1}', 2, "Invalid request"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "code", "msg"), ERRORS)
async def test_documented_error_replies(sim, http, text, code, msg):
    async with await connect(http, sim, "spot") as ws:
        await ws.send_str(text)
        reply = await next_json(ws)
        assert reply["code"] == code
        assert reply["msg"].startswith(msg), reply
        assert set(reply) <= {"code", "msg", "id"}
        await send(ws, "LIST_SUBSCRIPTIONS", None, 9)  # the connection survives the error
        assert await next_json(ws) == {"result": [], "id": 9}


@pytest.mark.parametrize(
    ("kind", "tail", "served"),
    [
        ("spot", "/stream?streams=btcusdt@trade/bogus", ["btcusdt@trade"]),
        ("perp", "/stream?streams=!nothing@arr/btcusdt@trade/ethusdt@kline_2m",
         ["btcusdt@trade"]),
        ("spot", "/stream?streams=nopeusdt@trade/btcusdt@depth@500ms/btcusdt@trade",
         ["btcusdt@trade"]),  # an unknown symbol; a futures-only cadence
        ("spot", "/ws/btcusdt@markPrice/btcusdt@trade", ["btcusdt@trade"]),
        ("perp", "/ws/btcusdt@bookTicker/BTCUSDT@trade", ["btcusdt@bookTicker"]),
        ("spot", "/ws/nopeusdt@trade", []),
        ("perp", "/stream?streams=btcusdt@kline_2m", []),
    ],
)
async def test_unknown_streams_in_the_url_are_ignored(sim, http, kind, tail, served):
    """Binance-style: the connection opens, the known streams are served and an unknown one
    delivers nothing. Before, one unknown name refused the whole connection (400)."""
    async with await connect(http, sim, kind, tail) as ws:
        await send(ws, "LIST_SUBSCRIPTIONS", None, 7)
        assert await reply_to(ws, 7) == {"result": served, "id": 7}
        if served:
            msg = await next_json(ws)
            data = msg["data"] if tail.startswith("/stream") else msg
            assert data["s"] == "BTCUSDT"
            if tail.startswith("/stream"):
                assert msg["stream"] == served[0]


@pytest.mark.parametrize(("kind", "tail"), [("spot", "/ws/notAStreamNorAKey"),
                                            ("perp", "/ws/" + "k" * 64)])  # fmt: skip
async def test_a_dead_listen_key_is_refused_at_handshake(sim, http, kind, tail):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with asyncio.timeout(WAIT):
            await http.ws_connect(ws_url(sim, kind, tail))
    assert info.value.status == 400


# -- limits and drops ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_messages_up_to_the_limit_are_answered(sim, http, kind):
    limit = RATE_LIMIT[kind]
    async with await connect(http, sim, kind) as ws:
        for i in range(limit):
            await send(ws, "LIST_SUBSCRIPTIONS", None, i)
        replies = await collect(ws, limit)
    assert replies == [{"result": [], "id": i} for i in range(limit)]


@pytest.mark.parametrize("kind", KINDS)
async def test_over_the_message_limit_closes_with_1008(sim, http, kind):
    async with await connect(http, sim, kind, "/ws/btcusdt@bookTicker") as ws:
        for i in range(RATE_LIMIT[kind] + 3):
            await send(ws, "LIST_SUBSCRIPTIONS", None, i)
        assert await close_code(ws) == 1008


async def test_drop_connections_closes_every_client(sim, http):
    spot = await connect(http, sim, "spot", "/ws/btcusdt@depth@100ms")
    perp = await connect(http, sim, "perp", "/stream?streams=ethusdt@bookTicker")
    async with spot, perp:
        await next_json(spot)
        await next_json(perp)
        assert sim.exchange.drop_connections() == 2
        assert await close_code(spot) == 1001
        assert await close_code(perp) == 1001
