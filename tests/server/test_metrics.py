"""``/metrics`` of a real gateway (on a real simulator), parsed with prometheus_client's own
parser: each family's name, type and label names, and values that move with what the gateway
does (requests by route template, book state and resyncs per market, WebSocket gauges,
database timings); two gateways in one process keep separate registries."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.server.test_resync import Proxy, _venue

from astra.server.gateway import Gateway, venues_from_config
from astra.store import ApiKeyStore, open_database

TIMEOUT = 30
BTC = "SIM-SPOT-BTC-USDT"

# family (as the parser names it: counters without _total) -> (type, label names)
FAMILIES = {
    "astra_http_requests": ("counter", {"route", "status"}),
    "astra_ws_clients": ("gauge", {"dataType"}),
    "astra_ws_connections": ("gauge", set()),
    "astra_snapshots": ("counter", set()),
    "astra_book_updates": ("counter", set()),
    "astra_resyncs": ("counter", set()),
    "astra_trades": ("counter", set()),
    "astra_feeds": ("gauge", set()),
    "astra_book_state": ("gauge", {"venue", "market", "state"}),
    "astra_book_market_updates": ("counter", {"venue", "market"}),
    "astra_book_latency_seconds": ("gauge", {"venue", "market"}),
    "astra_otc_events": ("counter", {"event"}),
    "astra_otc_hedge_legs_failed": ("counter", set()),
    "astra_uptime_seconds": ("gauge", set()),
    "astra_db_query_seconds": ("histogram", {"store", "operation"}),
    "astra_http_request_duration_seconds": ("histogram", {"route", "method", "status"}),
}
# Families declared before anything is observed (no samples yet in a fresh gateway).
DECLARED = {
    "astra_book_resyncs": "counter",
    "astra_ws_dropped_clients": "counter",
    "astra_order_round_trip_seconds": "histogram",
    "astra_feed_to_client_seconds": "histogram",
    "astra_journal_write_seconds": "histogram",
}


class Scrape:
    """One parsed exposition: families by name, and sample values by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float | None:
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def labelled(self, name: str) -> list[dict[str, str]]:
        return [s.labels for f in self.families.values() for s in f.samples if s.name == name]


async def scrape(gw: Gateway) -> Scrape:
    async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT), http.get(
            f"http://127.0.0.1:{gw.metrics_port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape(await resp.text())


async def get(http: aiohttp.ClientSession, token: str, path: str, **params) -> int:
    async with http.get(path, params=params,
                        headers={"x-astra-api-key": f"Bearer {token}"}) as resp:
        await resp.read()
        return resp.status


async def until_scraped(gw: Gateway, check, seconds: float = 15.0) -> Scrape:
    """Scrape until ``check(scrape)`` holds (what a WebSocket close or a feed does lands a
    moment later); fails with the last scrape after ``seconds``."""
    last = None
    try:
        async with asyncio.timeout(seconds):
            while True:
                last = await scrape(gw)
                if check(last):
                    return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not seen in {seconds} s: {last.text if last else ''}") from None


async def test_families_have_their_names_types_and_labels(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(TIMEOUT):
        assert await get(http, token, "/orderbook", market=BTC, depth=5) == 200
    metrics = await until_scraped(  # SIM stamps its events: a latency once an update came
        gw, lambda m: m.value("astra_book_latency_seconds", venue="SIM", market=BTC) is not None)
    for name, (kind, labels) in FAMILIES.items():
        family = metrics.families.get(name)
        assert family is not None, name
        assert family.type == kind, (name, family.type)
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    for name, kind in DECLARED.items():
        assert metrics.families[name].type == kind, name
    # What a scrape of a fresh gateway holds: the first key's database read, timed.
    assert metrics.value("astra_db_query_seconds_count", store="api_keys", operation="read") >= 1
    assert metrics.value("astra_feeds") == 1
    assert abs(metrics.value("astra_book_latency_seconds", venue="SIM", market=BTC)) < 60


async def test_requests_are_counted_and_timed_by_route_template(gateway):
    gw, token = gateway
    n = 7
    before = await scrape(gw)
    count = ("astra_http_request_duration_seconds_count",
             {"route": "/orderbook", "method": "GET", "status": "200"})
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(TIMEOUT):
        for _ in range(n):
            assert await get(http, token, "/orderbook", market=BTC, depth=20) == 200
        raw = "/no/such/thing-7f3a9c"
        assert await get(http, token, raw) == 404
    after = await scrape(gw)
    assert (after.value(count[0], **count[1]) or 0) - (before.value(count[0], **count[1]) or 0) \
        == n
    requests = {"route": "/orderbook", "status": "200"}
    assert (after.value("astra_http_requests_total", **requests)
            - (before.value("astra_http_requests_total", **requests) or 0)) == n
    # An unknown path is counted under a template, never under the path it had.
    assert after.value("astra_http_requests_total", route="unmatched", status="404") == 1
    assert "thing-7f3a9c" not in after.text
    routes = {labels["route"] for labels in after.labelled("astra_http_requests_total")}
    assert routes == {"/orderbook", "unmatched"}


async def test_book_state_and_updates_per_venue_and_market(gateway):
    gw, token = gateway
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(TIMEOUT):
        assert await get(http, token, "/orderbook", market=BTC) == 200
    first = await scrape(gw)
    states = {labels["state"]: first.value("astra_book_state", **labels)
              for labels in first.labelled("astra_book_state")
              if labels["market"] == BTC and labels["venue"] == "SIM"}
    assert states == {"connecting": 0, "synced": 1, "resyncing": 0, "disconnected": 0}
    updates = first.value("astra_book_market_updates_total", venue="SIM", market=BTC)
    # The simulator's flow moves the book: the per-market counter follows /feeds.
    later = await until_scraped(gw, lambda m: m.value(
        "astra_book_market_updates_total", venue="SIM", market=BTC) > updates)
    feeds = await _feeds(gw, token)
    row = next(r for r in feeds if r["market"] == BTC and r["dataType"] == "ORDERBOOK")
    assert row["updates"] >= later.value("astra_book_market_updates_total", venue="SIM",
                                         market=BTC)
    assert row["state"] == "synced"


async def _feeds(gw: Gateway, token: str) -> list[dict]:
    async with aiohttp.ClientSession(gw.base_url) as http, asyncio.timeout(TIMEOUT), http.get(
            "/feeds", headers={"x-astra-api-key": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_websocket_gauges_follow_clients(gateway):
    gw, token = gateway
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={BTC}&dataType=ORDERBOOK"
    headers = {"x-astra-api-key": f"Bearer {token}"}
    idle = await scrape(gw)
    assert idle.value("astra_ws_clients", dataType="ORDERBOOK") == 0
    assert idle.value("astra_ws_connections") == 0
    async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT):
        async with http.ws_connect(url, headers=headers) as one, \
                http.ws_connect(url.replace("ORDERBOOK", "TRADE"), headers=headers) as two:
            assert json.loads((await one.receive()).data)["type"] == "snapshot"
            both = await until_scraped(gw, lambda m: m.value("astra_ws_connections") == 2)
            assert both.value("astra_ws_clients", dataType="ORDERBOOK") == 1
            assert both.value("astra_ws_clients", dataType="TRADE") == 1
            await two.close()
            one_left = await until_scraped(
                gw, lambda m: m.value("astra_ws_clients", dataType="TRADE") == 0)
            assert one_left.value("astra_ws_connections") == 1
            assert one_left.value("astra_ws_clients", dataType="ORDERBOOK") == 1
    await until_scraped(gw, lambda m: m.value("astra_ws_connections") == 0
                        and m.value("astra_ws_clients", dataType="ORDERBOOK") == 0)


async def test_a_resync_is_counted_under_its_reason(sim, key_store):
    # A loopback proxy drops the 8th frame of the venue's stream: a sequence gap (as
    # test_resync.py), which resyncs that market on the same connection.
    proxy = Proxy(f"ws://127.0.0.1:{sim.port}/sstream", drop_at=8)
    runner, port = await proxy.start()
    token = key_store.create().token
    market = "SIM-SPOT-ETH-USDT"
    try:
        async with Gateway({"SIM": _venue(sim, port)}, key_store, port=0, metrics_port=0) as gw:
            url = f"{gw.base_url.replace('http', 'ws')}/ws?market={market}&dataType=ORDERBOOK"
            async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT), \
                    http.ws_connect(url, headers={"x-astra-api-key": f"Bearer {token}"}) as ws:
                kinds: list[str] = []
                while kinds.count("snapshot") < 2:  # the first, then the repair's
                    kinds.append(json.loads((await ws.receive()).data)["type"])
                metrics = await scrape(gw)
                feeds = await _feeds(gw, token)
    finally:
        await runner.cleanup()
    assert proxy.dropped == 1 and "resync" in kinds
    reasons = {labels["reason"]: metrics.value("astra_book_resyncs_total", **labels)
               for labels in metrics.labelled("astra_book_resyncs_total")
               if labels["market"] == market and labels["venue"] == "SIM"}
    # The gap as the feed said it ("U=1234 but previous u=1230"), numbers out of the label.
    assert reasons == {"U=N but previous u=N": 1}, reasons
    row = next(r for r in feeds if r["market"] == market and r["dataType"] == "ORDERBOOK")
    assert row["resyncs"] == 1 and metrics.value("astra_resyncs_total") == 1
    assert metrics.value("astra_book_state", venue="SIM", market=market, state="synced") == 1


async def test_two_gateways_in_one_process_keep_separate_registries(sim, tmp_path):
    stores = [ApiKeyStore(open_database(data_dir=tmp_path / name)) for name in ("a", "b")]
    token = stores[0].create().token
    async with Gateway(venues_from_config({}, sim.base_url), stores[0], port=0, metrics_port=0,
                       linger=1.0) as one, \
            Gateway(venues_from_config({}, sim.base_url), stores[1], port=0, metrics_port=0,
                    linger=1.0) as two:
        assert one.telemetry.registry is not two.telemetry.registry
        for gw in (one, two):  # handed down to every part that observes
            parts = (gw.engine, gw.trading, gw.trading.journal, gw.keys, gw.desk.store)
            assert all(part.telemetry is gw.telemetry for part in parts)
        async with aiohttp.ClientSession(one.base_url) as http, asyncio.timeout(TIMEOUT):
            for _ in range(3):
                assert await get(http, token, "/exchanges") == 200
        first, second = await scrape(one), await scrape(two)
    assert first.value("astra_http_requests_total", route="/exchanges", status="200") == 3
    assert second.value("astra_http_requests_total", route="/exchanges", status="200") is None
    assert first.value("astra_db_query_seconds_count", store="api_keys", operation="read") >= 1
    assert second.labelled("astra_db_query_seconds_count") == []
    assert second.labelled("astra_http_request_duration_seconds_count") == []
    # Each exposes a whole registry of its own: every family, once.
    for metrics in (first, second):
        assert set(FAMILIES) | set(DECLARED) <= set(metrics.families)
