"""Gateway + simulator over real loopback sockets: the seed's REST and WebSocket API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiohttp
import pytest


def _auth(token: str) -> dict:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _get(gw, token: str | None, path: str, **params: str) -> tuple[int, object]:
    headers = _auth(token) if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.base_url}{path}", params=params, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_markets_in_the_seed_shape(gateway):
    gw, token = gateway
    status, markets = await _get(gw, token, "/markets", exchange="SIM")
    assert status == 200
    by_symbol = {m["symbol"]: m for m in markets}
    assert set(by_symbol) == {
        f"SIM-{t}-{b}-USDT" for t in ("SPOT", "PERP") for b in ("BTC", "ETH", "SOL")
    }
    perp = by_symbol["SIM-PERP-BTC-USDT"]
    assert (perp["assetType"], perp["baseAsset"], perp["quoteAsset"], perp["marginAsset"]) == (
        "PERP",
        "BTC",
        "USDT",
        "USDT",
    )
    assert perp["tickSize"] == 0.1 and perp["lotSize"] == 0.001
    assert "marginAsset" not in by_symbol["SIM-SPOT-ETH-USDT"]
    assert by_symbol["SIM-SPOT-ETH-USDT"]["exchangeSymbol"] == "ETHUSDT"


async def test_orderbook_is_the_simulators_book(gateway, sim, sim_books):
    gw, token = gateway
    truth = sim_books(sim, "spot", "BTCUSDT")
    async with asyncio.timeout(15):
        while True:  # until the served book sits on a diff boundary we recorded
            status, book = await _get(gw, token, "/orderbook", market="SIM-SPOT-BTC-USDT")
            assert status == 200
            if book["updateId"] in truth.books:
                break
            await asyncio.sleep(0.05)
    prices = [lv["price"] for lv in book["bids"]]
    assert prices == sorted(prices, reverse=True)
    prices = [lv["price"] for lv in book["asks"]]
    assert prices == sorted(prices)
    assert book["bids"][0]["price"] < book["asks"][0]["price"]
    assert book["market"] == "SIM-SPOT-BTC-USDT" and book["timestamp"] > 0
    served = {
        "bids": {lv["price"]: lv["quantity"] for lv in book["bids"]},
        "asks": {lv["price"]: lv["quantity"] for lv in book["asks"]},
    }
    assert served == truth.books[book["updateId"]]
    status, top = await _get(gw, token, "/orderbook", market="SIM-SPOT-BTC-USDT", depth="3")
    assert status == 200 and len(top["bids"]) == len(top["asks"]) == 3


async def test_ws_orderbook_snapshot_then_updates_track_the_simulator(
    gateway, sim, sim_books, client_book
):
    gw, token = gateway
    truth = sim_books(sim, "perp", "ETHUSDT")
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market=SIM-PERP-ETH-USDT&dataType=ORDERBOOK"
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=_auth(token)) as ws,
        asyncio.timeout(20),
    ):
        first = json.loads((await ws.receive(timeout=10)).data)
        assert first["type"] == "snapshot" and first["market"] == "SIM-PERP-ETH-USDT"
        book = client_book()
        book.apply(first)
        last = first["updateId"]
        for _ in range(15):
            msg = json.loads((await ws.receive(timeout=5)).data)
            assert msg["type"] == "update" and msg["updateId"] > last
            last = msg["updateId"]
            assert book.apply(msg) == truth.books[last], f"client book diverged at {last}"


async def test_ws_trades_and_rest_trades(gateway):
    gw, token = gateway
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market=SIM-SPOT-SOL-USDT&dataType=TRADE"
    async with aiohttp.ClientSession() as s, s.ws_connect(url, headers=_auth(token)) as ws:
        msg = json.loads((await ws.receive(timeout=10)).data)
    assert msg["trades"]
    for t in msg["trades"]:
        assert t["price"] > 0 and t["quantity"] > 0 and t["side"] in ("BUY", "SELL")
        assert isinstance(t["time"], int)
    status, body = await _get(gw, token, "/trades", market="SIM-SPOT-SOL-USDT", limit="5")
    assert status == 200 and 0 < len(body["trades"]) <= 5
    times = [t["time"] for t in body["trades"]]
    assert times == sorted(times)


async def test_exchanges_openapi_health_and_metrics(gateway):
    gw, token = gateway
    status, venues = await _get(gw, token, "/exchanges")
    assert status == 200 and [v["exchange"] for v in venues] == ["SIM"]
    assert "U/u" in venues[0]["capabilities"]["orderbook"]
    status, spec = await _get(gw, token, "/openapi.json")
    assert status == 200 and {"/markets", "/orderbook", "/ws"} <= set(spec["paths"])
    assert "MarketMetadata" in spec["components"]["schemas"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{gw.metrics_port}/health") as r:
            assert r.status == 200 and (await r.json())["venues"] == ["SIM"]
        async with s.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as r:
            text = await r.text()
    assert 'astra_http_requests_total{route="/exchanges",status="200"} 1' in text


async def test_auth_on_rest_and_websocket(gateway):
    gw, token = gateway
    status, body = await _get(gw, None, "/markets", exchange="SIM")
    assert status == 401 and body["code"] == "UNAUTHORIZED" and "missing" in body["message"]
    bad = token[:-4] + "AAAA"
    status, body = await _get(gw, bad, "/markets", exchange="SIM")
    assert status == 401 and "invalid" in body["message"] and bad not in json.dumps(body)
    # ?apiKey= is for browser WebSockets only: on REST a 401 names the header to send.
    status, body = await _get(gw, None, "/markets", exchange="SIM", apiKey=token)
    assert status == 401 and body["parameter"] == "x-astra-api-key"
    ws_url = f"{gw.base_url.replace('http', 'ws')}/ws?market=SIM-SPOT-BTC-USDT&dataType=TRADE"
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(ws_url)
        assert err.value.status == 401
        async with s.ws_connect(ws_url, protocols=(token,)) as ws:  # the browser way
            assert ws.protocol == token



async def test_an_upgrade_header_does_not_make_rest_take_a_key_from_the_url(gateway):
    # ?apiKey= and a subprotocol key are for GET handshakes on /ws only; a REST request that
    # merely adds "Upgrade: websocket" is still REST: refused, naming the header to send.
    gw, token = gateway
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    order = {"market": "SIM-SPOT-BTC-USDT", "side": "BUY", "type": "LIMIT", "quantity": 0.001,
             "price": 1.0}
    async with aiohttp.ClientSession() as s:
        for method, path, params, headers, body in (
            ("POST", "/orders", {"apiKey": token}, upgrade, order),
            ("POST", "/orders", {}, {**upgrade, "Sec-WebSocket-Protocol": token}, order),
            ("GET", "/markets", {"exchange": "SIM", "apiKey": token}, upgrade, None),
        ):
            async with s.request(method, f"{gw.base_url}{path}", params=params, headers=headers,
                                 json=body) as r:
                answer = await r.json(content_type=None)
            assert (r.status, answer["code"]) == (401, "UNAUTHORIZED"), (method, path, answer)
            assert token not in json.dumps(answer)


async def test_a_gateway_that_cannot_bind_leaves_no_task_running(key_store, sim):
    from astra.server.gateway import Gateway, venues_from_config

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    before = asyncio.all_tasks()
    try:
        gw = Gateway(venues_from_config({}, sim.base_url), key_store,
                     port=taken.getsockname()[1], metrics_port=0)
        with pytest.raises(OSError):
            await gw.start()
        await asyncio.sleep(0)  # let cancelled tasks finish
        assert asyncio.all_tasks() - before == set()
        assert gw.sessions._revalidator is None
    finally:
        taken.close()

BAD = [
    ("/markets", {}, 400, "MISSING_PARAMETER", "exchange"),
    ("/markets", {"exchange": "FOO"}, 400, "UNKNOWN_EXCHANGE", "exchange"),
    ("/markets", {"exchange": "BINANCE"}, 404, "EXCHANGE_NOT_SERVED", "exchange"),
    ("/orderbook", {}, 400, "MISSING_PARAMETER", "market"),
    ("/orderbook", {"market": "SIM-SPOT-BTC"}, 400, "INVALID_MARKET", "market"),
    ("/orderbook", {"market": "sim-spot-btc-usdt"}, 400, "INVALID_MARKET", "market"),
    ("/orderbook", {"market": "SIM-SPOT-DOGE-USDT"}, 404, "MARKET_NOT_FOUND", "market"),
    ("/orderbook", {"market": "OKX-SPOT-BTC-USDT"}, 404, "MARKET_NOT_FOUND", "market"),
    ("/orderbook", {"market": "X" * 5000}, 400, "INVALID_MARKET", "market"),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "0"},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "-1"},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "NaN"},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "1e3"},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "9" * 30},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/orderbook",
        {"market": "SIM-SPOT-BTC-USDT", "depth": "²"},
        400,
        "INVALID_PARAMETER",
        "depth",
    ),
    (
        "/trades",
        {"market": "SIM-SPOT-BTC-USDT", "limit": "100000"},
        400,
        "INVALID_PARAMETER",
        "limit",
    ),
    ("/ws", {"market": "SIM-SPOT-BTC-USDT"}, 400, "MISSING_PARAMETER", "dataType"),
    (
        "/ws",
        {"market": "SIM-SPOT-BTC-USDT", "dataType": "CANDLES"},
        400,
        "INVALID_PARAMETER",
        "dataType",
    ),
    ("/ws", {"dataType": "TRADE"}, 400, "MISSING_PARAMETER", "market"),
    (
        "/ws",
        {"market": "SIM-SPOT-NOPE-USDT", "dataType": "TRADE"},
        404,
        "MARKET_NOT_FOUND",
        "market",
    ),
    ("/nowhere", {}, 404, "NOT_FOUND", None),
]


@pytest.mark.parametrize(("path", "params", "status", "code", "parameter"), BAD)
async def test_bad_input_is_a_clear_4xx(gateway, path, params, status, code, parameter):
    gw, token = gateway
    got, body = await _get(gw, token, path, **params)
    assert (got, body["code"]) == (status, code), body
    assert body.get("parameter") == parameter and body["message"]
    if parameter:
        assert parameter in body["message"] or code in ("MARKET_NOT_FOUND", "UNKNOWN_EXCHANGE")


async def test_a_quiet_book_syncs_on_a_snapshot_alone(gateway, sim):
    """A market with no change at all (the simulator's clock stopped, as after a replay's
    end): its stream sends nothing, yet the book syncs on the REST snapshot within
    QUIET_SNAPSHOT seconds of the stream opening, and equals the venue's own book."""
    task = sim.exchange._task  # the flow's clock: stopped, nothing changes any more
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gw, token = gateway
    status, book = await _get(gw, token, "/orderbook", market="SIM-SPOT-BTC-USDT")
    assert status == 200, book
    engine = sim.exchange.sides["spot"].states["BTCUSDT"].engine
    assert book["updateId"] == engine.update_id
    bids, _ = engine.depth()
    assert len(book["bids"]) == len(bids) > 0
