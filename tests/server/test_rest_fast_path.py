"""The REST hot path on a real gateway (simulator on loopback, SQLite key store): the cached
``GET /orderbook`` body follows the book, the key check stays exact on the fast path, every
answer is timed under its route template, never its raw path; the front door gives the same
answers as the server's handler (``GatewayRunner``) and as a middleware (any runner); the
histograms expose what prometheus_client's own would."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from tests.venues.loopback import until

from astra.core import DataType
from astra.marketdata.engine import MarketDataEngine
from astra.server.app import Metrics, build_app
from astra.server.auth import KeyVerifier, auth_middleware
from astra.server.errors import FRONT_DOOR, FrontDoor
from astra.server.protocol import GatewayRunner
from astra.telemetry import FAST_BUCKETS, BucketHistogram

SPOT = "SIM-SPOT-BTC-USDT"
HISTOGRAM = "astra_http_request_duration_seconds"


async def _get(gw, token: str | None, path: str, method: str = "GET", **params: str):
    headers = {"x-astra-api-key": f"Bearer {token}"} if token else {}
    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession() as s,
        s.request(method, f"{gw.base_url}{path}", params=params, headers=headers) as r,
    ):
        return r.status, await r.read()


def _count(gw, route: str, method: str, status: int) -> float:
    value = gw.telemetry.registry.get_sample_value(
        f"{HISTOGRAM}_count", {"route": route, "method": method, "status": str(status)})
    return value or 0.0


async def test_the_cached_book_body_is_served_as_is_and_replaced_after_the_next_update(gateway):
    gw, token = gateway
    status, first = await _get(gw, token, "/orderbook", market=SPOT, depth="5")
    assert status == 200
    channel = gw.engine.channels[(SPOT, DataType.ORDERBOOK)]
    first_id = msgspec.json.decode(first)["updateId"]
    # One encoding per book version and depth: the same bytes object every time, no copy.
    now = gw.engine.order_book_now(SPOT, 5)
    assert now is gw.engine.order_book_now(SPOT, 5)
    assert now is not gw.engine.order_book_now(SPOT, 6)  # another depth, another body
    # The simulator's next update moves the book on: the next GET has the new version.
    await until(lambda: channel.book.update_id > first_id, asyncio.Event(), seconds=15)
    status, second = await _get(gw, token, "/orderbook", market=SPOT, depth="5")
    assert status == 200
    book = msgspec.json.decode(second)
    assert book["updateId"] > first_id
    assert second != first
    assert len(book["bids"]) == len(book["asks"]) == 5
    # What was answered is the book's own frame at that version.
    bids, asks = channel.book.top(5)
    if channel.book.update_id == book["updateId"]:  # no further update in between
        assert [lvl["price"] for lvl in book["bids"]] == [p for p, _ in bids]
        assert [lvl["price"] for lvl in book["asks"]] == [p for p, _ in asks]


async def test_a_revoked_key_is_refused_on_the_very_next_request(gateway, key_store):
    gw, _ = gateway
    key = key_store.create("fast path")
    for _ in range(3):  # the key is cached, verified on the loop
        status, _body = await _get(gw, key.token, "/orderbook", market=SPOT, depth="1")
        assert status == 200
    assert key_store.is_cached(key.key_id)
    assert key_store.revoke(key.key_id)
    status, body = await _get(gw, key.token, "/orderbook", market=SPOT, depth="1")
    assert status == 401
    assert msgspec.json.decode(body)["code"] == "UNAUTHORIZED"
    assert key.token not in body.decode()


async def test_a_wrong_secret_for_a_cached_key_id_is_refused(gateway):
    gw, token = gateway
    assert (await _get(gw, token, "/orderbook", market=SPOT, depth="1"))[0] == 200
    key_id, secret = token.split(".", 1)
    forged = f"{key_id}.{secret[:-4]}{'AAAA' if not secret.endswith('AAAA') else 'BBBB'}"
    status, body = await _get(gw, forged, "/orderbook", market=SPOT, depth="1")
    assert status == 401 and forged not in body.decode()


async def test_requests_are_timed_under_the_route_template_for_errors_too(gateway):
    gw, token = gateway
    assert (await _get(gw, token, "/orderbook", market=SPOT, depth="3"))[0] == 200
    assert (await _get(gw, None, "/orderbook", market=SPOT))[0] == 401
    assert (await _get(gw, token, "/orderbook", market="SIM-SPOT-NOPE-USDT"))[0] == 404
    assert (await _get(gw, token, "/no/such/path/secret-looking"))[0] == 404
    assert (await _get(gw, token, "/markets", method="POST"))[0] == 405
    assert (await _get(gw, token, "/markets", method="PURGE"))[0] == 405
    assert _count(gw, "/orderbook", "GET", 200) >= 1
    assert _count(gw, "/orderbook", "GET", 401) == 1
    assert _count(gw, "/orderbook", "GET", 404) == 1
    assert _count(gw, "unmatched", "GET", 404) == 1
    assert _count(gw, "unmatched", "POST", 405) == 1
    assert _count(gw, "unmatched", "OTHER", 405) == 1  # a client's own method: no new label
    routes = {
        sample.labels["route"]
        for metric in gw.telemetry.registry.collect() if metric.name == HISTOGRAM
        for sample in metric.samples
    }
    assert routes == {"/orderbook", "unmatched"}
    # The request counter agrees with the histogram.
    assert gw.metrics.requests[("unmatched", 404)] == 1
    assert gw.metrics.requests[("/orderbook", 401)] == 1


async def test_a_bad_query_is_refused_after_the_same_market_was_served(gateway):
    gw, token = gateway
    for _ in range(2):  # the second time from the parsed-query memo
        assert (await _get(gw, token, "/orderbook", market=SPOT, depth="2"))[0] == 200
    for params, parameter in (({"market": SPOT, "depth": "0"}, "depth"),
                              ({"market": SPOT, "depth": "x"}, "depth"),
                              ({"market": SPOT, "venues": "SIM"}, "venues"),
                              ({"depth": "2"}, "market")):
        for _ in range(2):  # a refused query is never remembered
            status, body = await _get(gw, token, "/orderbook", **params)
            assert status == 400 and msgspec.json.decode(body)["parameter"] == parameter
    status, body = await _get(gw, token, "/orderbook", market=SPOT, depth="2")
    assert status == 200 and len(msgspec.json.decode(body)["bids"]) == 2
    assert (await _get(gw, token, "/orderbook", method="HEAD", market=SPOT))[0] == 200


async def test_an_expect_100_continue_is_answered_only_once_the_key_is_admitted(gateway):
    gw, token = gateway
    for key, first_line in ((None, b"HTTP/1.1 401"), (token, b"HTTP/1.1 100 Continue")):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            header = f"x-astra-api-key: Bearer {key}\r\n" if key else ""
            writer.write(
                f"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}"
                "Content-Type: application/json\r\nContent-Length: 2\r\n"
                "Expect: 100-continue\r\n\r\n".encode())
            async with asyncio.timeout(10):
                assert (await reader.readline()).startswith(first_line)
                if key is not None:  # invited: the body, then the order's own answer (400)
                    assert await reader.readline() == b"\r\n"  # the 100's end
                    writer.write(b"{}")
                    assert (await reader.readline()).startswith(b"HTTP/1.1 400")
        finally:
            writer.close()


async def _unlisted(request: web.Request) -> web.Response:
    return web.Response(text="should never be answered")


@contextlib.asynccontextmanager
async def _served(key_store, runner_class):
    """build_app's app (no venue) plus a route missing from the scope table, served by
    ``runner_class``; yields (base URL, app)."""
    verifier = KeyVerifier(key_store)
    engine = MarketDataEngine({})
    app = build_app(engine, Metrics(engine),
                    auth=auth_middleware(key_store, verifier=verifier, scoped=True))
    app.router.add_get("/unlisted", _unlisted)
    runner = runner_class(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", app, runner
    finally:
        await runner.cleanup()
        verifier.close()
        await engine.close()


@pytest.mark.parametrize("runner_class", [GatewayRunner, web.AppRunner])
async def test_the_front_door_answers_alike_as_server_handler_and_as_middleware(
        key_store, runner_class):
    token = key_store.create("door").token
    reader = key_store.create("reader", scopes=["read"]).token
    async with _served(key_store, runner_class) as (base, app, runner), \
            aiohttp.ClientSession() as http, asyncio.timeout(20):
        door = app[FRONT_DOOR]
        # Under GatewayRunner the door is the server's handler; elsewhere the app's middleware.
        serving = runner.server.request_handler
        assert (getattr(serving, "__self__", None) is door) == (runner_class is GatewayRunner)
        assert list(app.middlewares) == [door]

        async def call(method: str, path: str, key: str | None) -> tuple[int, dict, dict]:
            headers = {"x-astra-api-key": f"Bearer {key}"} if key else {}
            async with http.request(method, base + path, headers=headers) as r:
                return r.status, dict(r.headers), msgspec.json.decode(await r.read())

        for _ in range(2):  # the second time from the door's per-route memos
            assert (await call("GET", "/exchanges", token))[:3:2] == (200, [])
            status, headers, body = await call("GET", "/exchanges", None)
            assert (status, body["code"]) == (401, "UNAUTHORIZED")
            assert headers["WWW-Authenticate"] == 'Bearer realm="astra"'
            status, _, body = await call("GET", "/unlisted", token)  # fail closed: 403
            assert (status, body["code"]) == (403, "FORBIDDEN")
            status, _, body = await call("GET", "/openapi.json", reader)  # any scope
            assert status == 200 and "paths" in body
            status, _, body = await call("GET", "/no/such/path", token)
            assert (status, body["code"]) == (404, "NOT_FOUND")
            status, headers, body = await call("DELETE", "/exchanges", token)
            assert (status, body["code"]) == (405, "METHOD_NOT_ALLOWED")
            assert "GET" in headers["Allow"]
        requests = app[FRONT_DOOR].requests
        assert requests == Counter({("/exchanges", 200): 2, ("/exchanges", 401): 2,
                                    ("/unlisted", 403): 2, ("/openapi.json", 200): 2,
                                    ("unmatched", 404): 2, ("unmatched", 405): 2})


def test_the_front_door_stands_in_for_the_app_only_when_it_is_its_only_middleware():
    door = FrontDoor(Counter())
    alone = web.Application(middlewares=[door])
    alone.freeze()
    assert door.serving(alone) is not None
    assert alone._subapps == []  # (an aiohttp attribute serving() reads)
    other = FrontDoor(Counter())
    crowded = web.Application(middlewares=[other, web.normalize_path_middleware()])
    crowded.freeze()
    assert other.serving(crowded) is None
    unfrozen = FrontDoor(Counter())
    assert unfrozen.serving(web.Application(middlewares=[unfrozen])) is None


def test_bucket_histograms_expose_what_prometheus_histograms_would():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = BucketHistogram("t_seconds", "Test.", ["route", "status"], FAST_BUCKETS, ours)
    slow = Histogram("t_seconds", "Test.", ["route", "status"], buckets=FAST_BUCKETS,
                     registry=theirs)
    values = [0.0, 0.00005, 0.00004, 0.0001, 0.00011, 0.3, 2.5, 2.6, 100.0, 0.00025]
    for labels in (("/orderbook", "200"), ("unmatched", "404")):
        for v in values:
            fast.labels(*labels).observe(v)
            slow.labels(*labels).observe(v)

    def text(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if "_created" not in line]  # (creation times differ by microseconds)

    assert text(ours) == text(theirs)
    assert ours.get_sample_value("t_seconds_count", {"route": "/orderbook", "status": "200"}) \
        == len(values)
    assert ours.get_sample_value(
        "t_seconds_bucket", {"route": "unmatched", "status": "404", "le": "0.0001"}) == 4
    created = [s for m in ours.collect() for s in m.samples if s.name == "t_seconds_created"]
    assert len(created) == 2
    with pytest.raises(ValueError):
        fast.labels("/orderbook")  # a label missing


def test_a_threaded_bucket_histogram_loses_no_observation():
    registry = CollectorRegistry()
    family = BucketHistogram("db_seconds", "Test.", ["op"], FAST_BUCKETS, registry,
                             threaded=True)
    observe = family.series("read").observe
    threads, n = 4, 20_000

    def work() -> None:
        for _ in range(n):
            observe(0.001)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert registry.get_sample_value("db_seconds_count", {"op": "read"}) == threads * n
    assert registry.get_sample_value("db_seconds_sum", {"op": "read"}) == pytest.approx(
        threads * n * 0.001)
