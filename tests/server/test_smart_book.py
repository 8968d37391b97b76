"""The SMART consolidated book over three real simulated venues on loopback sockets.

Exactness: the venues' clocks are stopped and their pending diffs flushed, then the gateway is
read once each member book is at the venue's own ``lastUpdateId``; the consolidated book must
then equal an independent merge (decimal sums) of each venue's own ``/api/v3/depth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from decimal import Decimal

import aiohttp
import pytest

from astra.server.gateway import Gateway
from astra.sim import SimExchange, SimServer
from astra.sim.venues import profile_for
from astra.venues import build_venue

SPOT = "SMART-SPOT-BTC-USDT"
CODES = ("SIM", "SIM2", "SIM3")


def _sig(value: Decimal) -> float:
    """15 significant digits, as the gateway rounds sums of venue quantities."""
    return float(f"{value:.15g}") if value else 0.0


async def _stop_clock(server: SimServer) -> None:
    task = server.exchange._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Desk:
    def __init__(self, sims: dict[str, SimServer], gw: Gateway, http: aiohttp.ClientSession):
        self.sims, self.gw, self.http = sims, gw, http
        self.started: list[SimServer] = []  # servers a test started: closed after it

    async def get(self, path: str, **params) -> tuple[int, dict]:
        async with asyncio.timeout(20), self.http.get(path, params=params) as r:
            return r.status, await r.json()

    async def venue_depth(self, code: str, symbol: str = "BTCUSDT") -> dict:
        url = f"{self.sims[code].base_url}/api/v3/depth"
        async with asyncio.timeout(10), aiohttp.ClientSession() as s, s.get(
                url, params={"symbol": symbol, "limit": 1000}) as r:
            assert r.status == 200
            return await r.json()

    async def freeze(self, market: str = SPOT, symbol: str = "BTCUSDT") -> dict[str, dict]:
        """Stop every venue, flush its diffs, wait until the gateway's member books are at
        each venue's own lastUpdateId; returns each venue's depth response. (Books sync on
        a venue's first diff after the snapshot: every member is synced before the stop.)"""
        async with asyncio.timeout(20):
            while True:
                books = await self.gw.engine.member_books(market)
                if all(m.state == "synced" for m in books.members):
                    break
                await asyncio.sleep(0.02)
        for server in self.sims.values():
            await _stop_clock(server)
            for side in server.exchange.sides.values():
                for _ in range(40):
                    side.feeds.tick()
        depths = {code: await self.venue_depth(code, symbol) for code in self.sims}
        async with asyncio.timeout(20):
            while True:
                books = await self.gw.engine.member_books(market)
                if all(m.update_id == depths[m.venue]["lastUpdateId"] for m in books.members):
                    return depths
                await asyncio.sleep(0.02)


@pytest.fixture
async def desk(key_store):
    token = key_store.create("smart").token
    async with contextlib.AsyncExitStack() as stack:
        sims = {}
        for i, code in enumerate(CODES):
            exchange = SimExchange(seed=i + 1, profile=profile_for(code), latency_ms=0)
            sims[code] = await stack.enter_async_context(SimServer(exchange))
        venues = {code: build_venue(code, {"url": s.base_url}) for code, s in sims.items()}
        gw = await stack.enter_async_context(
            Gateway(venues, key_store, port=0, metrics_port=0, linger=1.0))
        http = await stack.enter_async_context(aiohttp.ClientSession(
            gw.base_url, headers={"x-astra-api-key": f"Bearer {token}"}))
        desk = Desk(sims, gw, http)
        try:
            yield desk
        finally:
            for server in desk.started:
                await server.close()


def _merge(depths: dict[str, dict], side: str, venues=CODES, fees: dict | None = None,
           depth: int | None = None) -> list[dict]:
    """An independent merge of the venues' depth responses (decimal arithmetic)."""
    levels: dict[Decimal, dict[str, Decimal]] = {}
    for code in venues:
        for p, q in depths[code][side]:
            price = Decimal(p)
            if fees:
                factor = 1 - fees[code] if side == "bids" else 1 + fees[code]
                price = Decimal(f"{price * factor:.12g}")
            levels.setdefault(price, {})[code] = Decimal(q)
    prices = sorted(levels, reverse=side == "bids")[:depth]
    return [{"price": float(p), "quantity": _sig(sum(levels[p].values())),
             "venues": {c: float(q) for c, q in levels[p].items()}} for p in prices]


async def test_rest_book_equals_an_independent_merge_of_the_venues_depth(desk):
    status, markets = await desk.get("/markets", exchange="SMART")
    assert status == 200
    by_symbol = {m["symbol"]: m for m in markets}
    assert by_symbol[SPOT]["members"] == [f"{c}-SPOT-BTC-USDT" for c in CODES]
    assert by_symbol["SMART-PERP-BTC-USDT"]["marginAsset"] == "USDT"
    assert set(by_symbol) >= {"SMART-SPOT-ETH-USDT", "SMART-PERP-ETH-USDT"}
    # Each venue's fees in its metadata: the simulator's exchangeInfo extension.
    fees = {}
    for code in CODES:
        status, venue_markets = await desk.get("/markets", exchange=code)
        (meta,) = [m for m in venue_markets if m["exchangeSymbol"] == "BTCUSDT"
                   and m["assetType"] == "SPOT"]
        maker, taker = profile_for(code).fees_ppm("spot")
        assert (meta["makerFee"], meta["takerFee"]) == (maker / 1e6, taker / 1e6)
        fees[code] = Decimal(str(meta["takerFee"]))

    depths = await desk.freeze()
    status, book = await desk.get("/orderbook", market=SPOT)
    assert status == 200, book
    assert [(m["venue"], m["state"]) for m in book["members"]] == [(c, "synced") for c in CODES]
    assert book["bids"] == _merge(depths, "bids") and book["asks"] == _merge(depths, "asks")
    assert "feeAdjusted" not in book
    # Every venue contributes, and prices shared by several venues are summed.
    assert {v for lv in book["bids"] + book["asks"] for v in lv["venues"]} == set(CODES)
    assert any(len(lv["venues"]) > 1 for lv in book["bids"])

    status, top = await desk.get("/orderbook", market=SPOT, depth="5")
    assert top["bids"] == book["bids"][:5] and top["asks"] == book["asks"][:5]
    assert top["updateId"] == book["updateId"]

    status, two = await desk.get("/orderbook", market=SPOT, venues="SIM3,sim", depth="7")
    assert [m["venue"] for m in two["members"]] == ["SIM", "SIM3"]  # configured order
    assert two["bids"] == _merge(depths, "bids", ("SIM", "SIM3"), depth=7)
    assert two["asks"] == _merge(depths, "asks", ("SIM", "SIM3"), depth=7)

    status, net = await desk.get("/orderbook", market=SPOT, feeAdjusted="true")
    assert status == 200 and net["feeAdjusted"] is True
    assert net["bids"] == _merge(depths, "bids", fees=fees)
    assert net["asks"] == _merge(depths, "asks", fees=fees)

    # BBO: single venue and SMART, from the same frozen books.
    for code in CODES:
        status, bbo = await desk.get("/bbo", market=f"{code}-SPOT-BTC-USDT")
        bid, ask = depths[code]["bids"][0], depths[code]["asks"][0]
        assert bbo["bid"] == {"price": float(bid[0]), "quantity": float(bid[1]), "venue": code}
        assert bbo["ask"] == {"price": float(ask[0]), "quantity": float(ask[1]), "venue": code}
        assert bbo["updateId"] == depths[code]["lastUpdateId"]
    status, bbo = await desk.get("/bbo", market=SPOT)
    for side, name in (("bids", "bid"), ("asks", "ask")):
        best = book[side][0]
        top_venue = max(best["venues"], key=lambda v: (best["venues"][v], -CODES.index(v)))
        assert bbo[name] == {"price": best["price"], "quantity": best["quantity"],
                             "venue": top_venue, "venues": best["venues"]}
    assert bbo["updateId"] == book["updateId"]


async def test_bad_parameters_name_the_parameter(desk):
    cases = [
        ({"market": SPOT, "venues": "SIM,NOPE"}, "venues", 400),
        ({"market": SPOT, "venues": "KRAKEN"}, "venues", 400),  # real, but not a member
        ({"market": SPOT, "venues": ""}, "venues", 400),
        ({"market": SPOT, "venues": "SIM,,SIM2"}, "venues", 400),
        ({"market": SPOT, "feeAdjusted": "yes"}, "feeAdjusted", 400),
        ({"market": SPOT, "depth": "0"}, "depth", 400),
        ({"market": "SMART-SPOT-DOGE-USDT"}, "market", 404),
        ({"market": "SMART-SPOTT-BTC-USDT"}, "market", 400),
        ({"market": SPOT, "venues": "SIM,SMART"}, "venues", 400),
        ({"market": SPOT, "venues": "smart"}, "venues", 400),
        ({"market": SPOT, "depth": "NaN"}, "depth", 400),
        ({"market": SPOT, "depth": "99999999999999999999999"}, "depth", 400),
        ({"market": SPOT, "venues": ",".join(["SIM"] * 40)}, "venues", 400),
        ({"market": SPOT + "-XYZ"}, "market", 404),
        ({"market": "SMART-OPT-BTC-USDT-261225-100000-C"}, "market", 404),
        ({"market": "SMART"}, "market", 400),
        # Consolidation parameters on a single venue's book: not silently ignored.
        ({"market": "SIM-SPOT-BTC-USDT", "venues": "SIM2"}, "venues", 400),
        ({"market": "SIM-SPOT-BTC-USDT", "feeAdjusted": "true"}, "feeAdjusted", 400),
    ]
    for params, parameter, code in cases:
        status, body = await desk.get("/orderbook", **params)
        assert (status, body.get("parameter")) == (code, parameter), (params, body)
    status, body = await desk.get("/bbo", market=SPOT, venues="SIM4")
    assert (status, body["parameter"]) == (400, "venues")
    status, body = await desk.get("/ws", market=SPOT, dataType="TRADE")
    assert (status, body["parameter"]) == (400, "dataType")


def _apply(book: dict, msg: dict) -> None:
    if msg["type"] == "snapshot":
        book.clear()
        book.update({"bids": {}, "asks": {}})
    for side in ("bids", "asks"):
        for lv in msg[side]:
            if lv["quantity"] == 0:
                assert lv["venues"] == {}
                book[side].pop(lv["price"], None)
            else:
                book[side][lv["price"]] = lv


async def test_ws_updates_rebuild_the_rest_book_and_a_stopped_venue_drops_out_and_returns(desk):
    url = f"/ws?market={SPOT}&dataType=ORDERBOOK"
    async with desk.http.ws_connect(url) as ws, desk.http.ws_connect(
            f"/ws?market={SPOT}&dataType=BBO") as bbo_ws, desk.http.ws_connect(
            "/ws?market=SIM3-SPOT-BTC-USDT&dataType=BBO") as single_ws:

        async def next_msg() -> dict:
            return json.loads((await ws.receive(timeout=20)).data)

        book: dict = {}
        first = await next_msg()
        # A first snapshot may come before every member is synced; wait for all three.
        msg, last_id = first, first["updateId"]
        _apply(book, msg)
        async with asyncio.timeout(30):
            while {m["state"] for m in (msg.get("members") or [])} != {"synced"} or len(
                    msg["members"]) != 3 or msg["type"] != "snapshot":
                msg = await next_msg()
                assert msg["updateId"] > last_id  # the gateway's own sequence: monotonic
                last_id = msg["updateId"]
                _apply(book, msg)
            for _ in range(20):  # live updates, applied
                msg = await next_msg()
                assert msg["type"] == "update" and msg["updateId"] == last_id + 1
                last_id = msg["updateId"]
                _apply(book, msg)
        await desk.freeze()
        status, rest = await desk.get("/orderbook", market=SPOT)
        async with asyncio.timeout(20):
            while last_id < rest["updateId"]:
                msg = await next_msg()
                assert msg["updateId"] == last_id + 1
                last_id = msg["updateId"]
                _apply(book, msg)
        assert last_id == rest["updateId"]
        assert sorted(book["bids"].values(), key=lambda lv: -lv["price"]) == rest["bids"]
        assert sorted(book["asks"].values(), key=lambda lv: lv["price"]) == rest["asks"]

        # BBO messages (SMART and one venue): each one a change, the last one the REST BBO.
        for bbo_client, market in ((bbo_ws, SPOT), (single_ws, "SIM3-SPOT-BTC-USDT")):
            bbos = []
            with contextlib.suppress(TimeoutError):
                while True:
                    bbos.append(json.loads((await bbo_client.receive(timeout=0.5)).data))
            keys = [(b["bid"], b["ask"]) for b in bbos if b["type"] == "bbo"]
            assert len(keys) > 1 and all(a != b for a, b in itertools.pairwise(keys))
            status, rest_bbo = await desk.get("/bbo", market=market)
            assert keys[-1] == (rest_bbo["bid"], rest_bbo["ask"])
            assert bbos[-1]["updateId"] <= rest_bbo["updateId"]  # later updates: deeper levels

        # SIM2 goes down: a fresh snapshot without it, SIM2 shown disconnected.
        port = desk.sims["SIM2"].port
        await desk.sims["SIM2"].close()
        async with asyncio.timeout(20):
            msg = await next_msg()
            while msg["type"] != "snapshot":
                msg = await next_msg()
        assert msg["updateId"] > last_id
        states = {m["venue"]: m["state"] for m in msg["members"]}
        assert states == {"SIM": "synced", "SIM2": "disconnected", "SIM3": "synced"}
        assert all("SIM2" not in lv["venues"] for lv in msg["bids"] + msg["asks"])
        status, rest = await desk.get("/orderbook", market=SPOT)
        assert status == 200 and rest["members"][1]["state"] == "disconnected"
        assert rest["bids"] == msg["bids"] and rest["asks"] == msg["asks"]
        last_id = msg["updateId"]

        # Back on the same port: a fresh snapshot with it.
        exchange = SimExchange(seed=7, profile=profile_for("SIM2"), latency_ms=0)
        desk.sims["SIM2"] = back = await SimServer(exchange, port=port).start()
        desk.started.append(back)
        async with asyncio.timeout(30):
            while True:
                msg = await next_msg()
                assert msg["updateId"] > last_id
                last_id = msg["updateId"]
                if msg["type"] == "snapshot" and all(
                        m["state"] == "synced" for m in msg["members"]):
                    break
        assert any("SIM2" in lv["venues"] for lv in msg["bids"] + msg["asks"])


async def test_every_member_down_is_a_503_with_their_states(desk):
    status, _ = await desk.get("/orderbook", market=SPOT)
    assert status == 200
    desk.gw.engine.book_wait = 30.0  # far beyond the client's patience: no wait expected
    for server in desk.sims.values():
        await server.close()
    async with asyncio.timeout(10):
        while True:
            status, body = await desk.get("/orderbook", market=SPOT)
            if status != 200:
                break
            await asyncio.sleep(0.05)
    assert status == 503 and body["code"] == "VENUE_UNAVAILABLE" and body["venue"] == "SMART"
    assert [(m["venue"], m["state"]) for m in body["members"]] == [
        (c, "disconnected") for c in CODES]
    assert body["feed"]["state"] == "disconnected"
    status, body = await desk.get("/bbo", market=SPOT)
    assert status == 503 and len(body["members"]) == 3


async def test_the_smart_section_chooses_members_and_their_order(desk, key_store):
    from astra.marketdata.smart import SmartConfig

    venues = {code: build_venue(code, {"url": s.base_url}) for code, s in desk.sims.items()}
    config = SmartConfig.from_config({"venues": ["SIM3", "SIM"]})
    async with Gateway(venues, key_store, port=0, metrics_port=0, smart=config) as gw:
        markets = await gw.engine.markets("SMART")
        assert {m.symbol: m.members for m in markets}[SPOT] == (
            "SIM3-SPOT-BTC-USDT", "SIM-SPOT-BTC-USDT")
        books = await gw.engine.member_books(SPOT, depth=3)
        assert [m.venue for m in books.members] == ["SIM3", "SIM"]
        assert all(m.state == "synced" and len(m.bids) == 3 for m in books.members)


async def test_ws_clients_of_smart_release_every_reference_they_took(desk):
    from astra.core import DataType

    engine = desk.gw.engine
    for _ in range(4):
        async with desk.http.ws_connect(f"/ws?market={SPOT}&dataType=ORDERBOOK") as book_ws, \
                desk.http.ws_connect(f"/ws?market={SPOT}&dataType=BBO") as bbo_ws:
            for ws in (book_ws, bbo_ws):
                assert (await ws.receive(timeout=20)).type is aiohttp.WSMsgType.TEXT
    smart = engine.channels[(SPOT, DataType.ORDERBOOK)]
    async with asyncio.timeout(10):  # the server's handlers finish after the client's close
        while True:
            if not (smart.refs or smart.clients or smart.bbo.clients):
                break
            await asyncio.sleep(0.02)
    members = [engine.channels[(f"{c}-SPOT-BTC-USDT", DataType.ORDERBOOK)] for c in CODES]
    assert [(m.refs, len(m.clients), len(m.listeners)) for m in members] == [(1, 0, 1)] * 3
    async with asyncio.timeout(10):  # linger (1 s): the SMART channel goes, then its members
        while True:
            if not any(key[0] in {SPOT, *(m.key[0] for m in members)} for key in engine.channels):
                break
            await asyncio.sleep(0.05)
    assert all(not m.listeners for m in members)
