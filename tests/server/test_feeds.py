"""``GET /feeds`` through a real gateway over the simulator (loopback): each live feed's state,
its resyncs and their reasons (a real gap, made by a proxy that drops one depth frame), its
updates and latency, its clients; parameters refused naming them; the ``read`` scope; and the
same rows on an edge node whose books come off a real NATS server from a real feed node."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import jsonschema
import pytest
from tests.server.test_resync import Proxy, _venue

from astra.cluster.wire import ClusterConfig
from astra.server.gateway import Gateway, venues_from_config
from astra.server.openapi import openapi_document
from astra.server.roles import EdgeLink, FeedNode
from astra.store import ApiKeyStore

TIMEOUT = 30
BTC = "SIM-SPOT-BTC-USDT"
ETH = "SIM-SPOT-ETH-USDT"
SMART_BTC = "SMART-SPOT-BTC-USDT"


def _auth(token: str) -> dict[str, str]:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _feeds(s: aiohttp.ClientSession, base: str, token: str,
                 **params: str) -> tuple[int, object]:
    async with s.get(f"{base}/feeds", params=params, headers=_auth(token)) as r:
        return r.status, await r.json()


async def _until(s: aiohttp.ClientSession, base: str, token: str, check, **params: str):
    """``GET /feeds`` until ``check(rows)`` gives a truthy value (bounded by the caller)."""
    while True:
        status, rows = await _feeds(s, base, token, **params)
        assert status == 200, rows
        found = check(rows)
        if found:
            return found
        await asyncio.sleep(0.05)


def _row(rows: list[dict], market: str, data_type: str = "ORDERBOOK") -> dict | None:
    return next((r for r in rows if r["market"] == market and r["dataType"] == data_type), None)


def _synced_with_updates(market: str, data_type: str = "ORDERBOOK"):
    def check(rows: list[dict]) -> dict | None:
        row = _row(rows, market, data_type)
        ok = row is not None and row["state"] == "synced" and row["updates"] > 0
        return row if ok else None
    return check


def _validate(doc: dict, rows: object) -> None:
    schema = {"type": "array", "items": {"$ref": "#/components/schemas/FeedStatus"},
              "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(rows)


async def test_live_feeds_are_listed_with_state_updates_latency_and_clients(gateway):
    gw, token = gateway
    ws_base = gw.base_url.replace("http", "ws")
    async with (
        asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s,
        s.ws_connect(f"{ws_base}/ws?market={BTC}&dataType=ORDERBOOK", headers=_auth(token)),
        s.ws_connect(f"{ws_base}/ws?market={BTC}&dataType=TRADE", headers=_auth(token)),
        s.ws_connect(f"{ws_base}/ws?market={SMART_BTC}&dataType=ORDERBOOK",
                     headers=_auth(token)),
    ):
        status, none = await _feeds(s, gw.base_url, token, market=ETH)
        assert (status, none) == (200, [])  # valid, nothing running for it: an empty list
        book = await _until(s, gw.base_url, token, _synced_with_updates(BTC))
        trades = await _until(s, gw.base_url, token, _synced_with_updates(BTC, "TRADE"))
        _, rows = await _feeds(s, gw.base_url, token)
        _, doc = await _call_doc(s, gw.base_url, token)
    _validate(doc, rows)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        _validate(doc, [{**rows[0], "state": "stale"}])
    keys = [(r["venue"], r["market"], r["dataType"]) for r in rows]
    assert keys == sorted(keys)
    assert (("SIM", BTC, "ORDERBOOK") in keys and ("SIM", BTC, "TRADE") in keys
            and ("SMART", SMART_BTC, "ORDERBOOK") in keys)
    assert book["venue"] == "SIM" and book["reason"] is None
    assert book["resyncs"] == 0 and book["recentResyncs"] == []
    # the book's own client, and the SMART book's hold on it is no client
    assert book["clients"] == 1 and trades["clients"] == 1
    for row in (book, trades):
        assert row["since"] <= row["lastUpdate"] <= int(time.time() * 1000)
        # The simulator stamps event times: a number, in ms (µs or s would be far off).
        assert isinstance(row["latencyMs"], float) and abs(row["latencyMs"]) < 60_000
    smart = _row(rows, SMART_BTC)
    assert smart["state"] == "synced" and smart["clients"] == 1 and smart["reason"] is None
    assert smart["updates"] >= book["updates"] and isinstance(smart["latencyMs"], float)
    # Filters: by venue, by market.
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        _, sim_rows = await _feeds(s, gw.base_url, token, venue="SIM")
        _, smart_rows = await _feeds(s, gw.base_url, token, venue="SMART")
        _, btc_rows = await _feeds(s, gw.base_url, token, market=BTC)
    assert sim_rows and {r["venue"] for r in sim_rows} == {"SIM"}
    assert [r["market"] for r in smart_rows] == [SMART_BTC]
    assert {(r["market"], r["dataType"]) for r in btc_rows} == {(BTC, "ORDERBOOK"),
                                                                (BTC, "TRADE")}


async def _call_doc(s: aiohttp.ClientSession, base: str, token: str) -> tuple[int, dict]:
    async with s.get(f"{base}/openapi.json", headers=_auth(token)) as r:
        return r.status, await r.json()


async def test_a_forced_resync_is_counted_with_its_reason(sim, key_store: ApiKeyStore):
    """A depth frame lost between the simulator and the gateway: a real sequence gap."""
    proxy = Proxy(f"ws://127.0.0.1:{sim.port}/sstream", drop_at=8)
    runner, port = await proxy.start()
    token = key_store.create().token
    try:
        async with (
            Gateway({"SIM": _venue(sim, port)}, key_store, port=0, metrics_port=0) as gw,
            asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s,
            s.ws_connect(f"{gw.base_url.replace('http', 'ws')}/ws?market={ETH}"
                         "&dataType=ORDERBOOK", headers=_auth(token)),
        ):
            def resynced(rows: list[dict]) -> dict | None:
                row = _row(rows, ETH)
                ok = row is not None and row["resyncs"] >= 1 and row["state"] == "synced"
                # and an update applied on the fresh snapshot
                return row if ok and (row["lastUpdate"] or 0) >= row["since"] else None

            row = await _until(s, gw.base_url, token, resynced)
    finally:
        await runner.cleanup()
    assert proxy.dropped == 1
    assert row["resyncs"] == len(row["recentResyncs"]) == 1
    event = row["recentResyncs"][0]
    assert event["reason"].startswith("U=")  # the gap, as the feed saw it
    assert "127.0.0.1" not in event["reason"] and "ws://" not in event["reason"]
    # Back in sync after it: since is the fresh snapshot's time, not the first one's.
    assert event["at"] <= row["since"] <= row["lastUpdate"]
    assert row["reason"] is None


async def test_bad_parameters_are_400_naming_them(gateway):
    gw, token = gateway
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        for params, parameter in [
            ({"venue": "NOPE"}, "venue"),
            ({"venue": "BINANCE"}, "venue"),  # a real exchange, not served here
            ({"venue": "sim"}, "venue"),  # codes are exact, as the document's enum
            ({"market": "SIM-SPOT-BTC"}, "market"),
            ({"exchange": "SIM"}, "exchange"),
        ]:
            status, body = await _feeds(s, gw.base_url, token, **params)
            assert status == 400, (params, body)
            assert body["parameter"] == parameter, body
        async with s.get(f"{gw.base_url}/feeds?venue=SIM&venue=SIM",
                         headers=_auth(token)) as r:
            assert r.status == 400 and (await r.json())["parameter"] == "venue"
    assert "SIM, SMART" in (await _message(gw, token, venue="X"))


async def _message(gw, token: str, **params: str) -> str:
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        return (await _feeds(s, gw.base_url, token, **params))[1]["message"]


async def test_a_trade_only_key_is_refused_naming_read(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    trade = key_store.create("trader", scopes=["trade"]).token
    read = key_store.create("reader", scopes=["read"]).token
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, body = await _feeds(s, gw.base_url, trade)
        assert status == 403 and body["code"] == "FORBIDDEN"
        assert "'read' scope" in body["message"]
        status, rows = await _feeds(s, gw.base_url, read)
        assert status == 200 and isinstance(rows, list)


def test_the_document_describes_feeds():
    doc = openapi_document()
    op = doc["paths"]["/feeds"]["get"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert "SMART" in params["venue"]["enum"] and "SIM" in params["venue"]["enum"]
    props = doc["components"]["schemas"]["FeedStatus"]["properties"]
    assert set(props) == {"market", "venue", "dataType", "state", "since", "reason", "resyncs",
                          "recentResyncs", "updates", "lastUpdate", "latencyMs", "clients"}


async def test_an_edge_lists_its_mirrored_feeds(nats_server, sim, key_store: ApiKeyStore):
    """``--role edge``: a feed node over the simulator publishes to a real NATS server; the
    edge's channels run on the mirror, and its ``/feeds`` shows them like a single node's."""
    config = ClusterConfig(nats_url=nats_server.url)
    venues = venues_from_config({}, sim.base_url)
    token = key_store.create().token
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(asyncio.timeout(60))
        await stack.enter_async_context(FeedNode(venues, config, metrics_port=0))
        link = await EdgeLink(config).start()
        stack.push_async_callback(link.close)
        edge = await stack.enter_async_context(Gateway(
            venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
            linger=1.0, source=link.source))
        s = await stack.enter_async_context(aiohttp.ClientSession())
        await stack.enter_async_context(s.ws_connect(
            f"{edge.base_url.replace('http', 'ws')}/ws?market={BTC}&dataType=ORDERBOOK",
            headers=_auth(token)))
        row = await _until(s, edge.base_url, token, _synced_with_updates(BTC))
    assert row["venue"] == "SIM" and row["clients"] == 1 and row["reason"] is None
    assert isinstance(row["latencyMs"], float)  # the venue's event time, carried over NATS
