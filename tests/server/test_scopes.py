"""Scoped API keys through the real gateway over the simulator (loopback, real SQLite, and
real PostgreSQL too when ``ASTRA_TEST_POSTGRES_URL`` names a database: every test here runs on
each, the keys in a throwaway schema): scope refusals name the scope, /api-keys creates
(secret once), lists (never a secret) and revokes (open WebSockets closed, next request 401),
expiry, IP allow-list, keys from before scopes keep full access, last-used time, and every
route of the built app has a scope."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from tests.store.test_journal import PG_URL, PG_URL_ENV, Db
from tests.store.test_journal import db as db  # the fixture, on every backend

from astra.server.auth import auth_middleware
from astra.server.scopes import ROUTE_SCOPES
from astra.server.sessions import REVOKED_CLOSE_CODE
from astra.store import ApiKeyStore

TIMEOUT = 20
MARKET = "SIM-SPOT-BTC-USDT"


@pytest.fixture
def key_store(db: Db) -> ApiKeyStore:
    """conftest's key store, on each backend (SQLite in the test's directory; PostgreSQL in a
    schema of its own, dropped after): the ``gateway`` fixture takes this one here."""
    return ApiKeyStore(db.engine)


def test_postgresql_variants_are_configured() -> None:
    if not PG_URL:
        pytest.skip(f"PostgreSQL variants of the scope tests not run: set {PG_URL_ENV} to a "
                    "database URL (e.g. postgresql+psycopg://user@127.0.0.1/astra_test)")


def _auth(token: str) -> dict[str, str]:
    return {"x-astra-api-key": f"Bearer {token}"}


def _ws(gw, data_type: str = "TRADE") -> str:
    return f"{gw.base_url.replace('http', 'ws')}/ws?market={MARKET}&dataType={data_type}"


async def _call(s: aiohttp.ClientSession, method: str, url: str, token: str,
                **kw) -> tuple[int, dict]:
    async with s.request(method, url, headers=_auth(token), **kw) as r:
        return r.status, await r.json()


async def test_read_key_is_refused_outside_its_scope(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    read = key_store.create("reader", scopes=["read"]).token
    base = gw.base_url
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, book = await _call(s, "GET", f"{base}/orderbook?market={MARKET}", read)
        assert status == 200 and book["market"] == MARKET
        for method, path, scope in [
            ("POST", "/orders", "trade"),
            ("GET", "/balances", "trade"),
            ("POST", "/request-quote", "otc"),
            ("GET", "/otc/accounts", "otc"),
            ("GET", "/api-keys", "admin"),
            ("POST", "/api-keys", "admin"),
        ]:
            status, body = await _call(s, method, base + path, read, json={})
            assert status == 403, (path, body)
            assert body["code"] == "FORBIDDEN"
            assert f"'{scope}' scope" in body["message"], (path, body)
        # Any valid key reads the API description.
        status, doc = await _call(s, "GET", f"{base}/openapi.json", read)
        assert status == 200 and "/api-keys" in doc["paths"]
        # Market streams work; a private stream is refused at the handshake.
        async with s.ws_connect(_ws(gw), headers=_auth(read)) as ws:
            assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(_ws(gw, "ORDERS"), headers=_auth(read))
        assert exc.value.status == 403


async def test_trade_key_cannot_read_market_data(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    trade = key_store.create("trader", scopes="trade").token
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, body = await _call(s, "GET", f"{gw.base_url}/orderbook?market={MARKET}", trade)
        assert status == 403 and "'read' scope" in body["message"]
        # Its own scope passes the gate (the handler then answers: no venue credentials).
        status, body = await _call(s, "GET", f"{gw.base_url}/balances?exchange=SIM", trade)
        assert status != 403, body


async def test_admin_creates_lists_and_revokes(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    admin = key_store.create("admin", scopes=["admin"]).token
    url = f"{gw.base_url}/api-keys"
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, made = await _call(s, "POST", url, admin, json={
            "label": "bot", "scopes": ["read", "trade"], "expiresAt": "2999-01-01",
            "allowIps": ["127.0.0.0/8", "::1"]})
        assert status == 201, made
        token, key_id = made["token"], made["keyId"]
        assert token.startswith(key_id + ".")
        assert made["scopes"] == ["read", "trade"]
        assert made["allowIps"] == ["127.0.0.0/8", "::1/128"]
        assert made["expiresAt"] == 32472144000000
        # The listing never carries a secret.
        async with s.get(url, headers=_auth(admin)) as r:
            assert r.status == 200
            raw = await r.text()
        secret = token.split(".", 1)[1]
        assert secret not in raw and "token" not in raw and "secret" not in raw.lower()
        listed = {k["keyId"]: k for k in (await _call(s, "GET", url, admin))[1]["keys"]}
        assert listed[key_id]["label"] == "bot" and listed[key_id]["revokedAt"] is None
        # The new key works, and streams.
        status, _ = await _call(s, "GET", f"{gw.base_url}/orderbook?market={MARKET}", token)
        assert status == 200
        async with s.ws_connect(_ws(gw), headers=_auth(token)) as ws:
            assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT
            status, gone = await _call(s, "DELETE", f"{url}/{key_id}", admin)
            assert status == 200 and gone["revokedAt"] is not None
            while True:  # the open socket is closed by the revocation (bounded above)
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == REVOKED_CLOSE_CODE
        status, body = await _call(s, "GET", f"{gw.base_url}/orderbook?market={MARKET}", token)
        assert status == 401 and body["code"] == "UNAUTHORIZED"
        # Revoking again, or an unknown key: 404.
        status, body = await _call(s, "DELETE", f"{url}/{key_id}", admin)
        assert status == 404 and body["parameter"] == "keyId"


@pytest.mark.parametrize(("body", "parameter"), [
    ({"scopes": ["read", "root"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"label": "x"}, "scopes"),
    ({"scopes": ["read"], "allowIps": ["10.0.0.1/8"]}, "allowIps"),
    ({"scopes": ["read"], "allowIps": ["not-an-ip"]}, "allowIps"),
    ({"scopes": ["read"], "expiresAt": 1000}, "expiresAt"),
    ({"scopes": ["read"], "expiresAt": "yesterday"}, "expiresAt"),
    ({"scopes": ["read"], "secret": "x" * 40}, "secret"),
    ({"scopes": ["read"], "label": 5}, "label"),
])
async def test_create_refuses_bad_input(gateway, key_store: ApiKeyStore, body, parameter):
    gw, token = gateway  # a key from before scopes: full access, admin included
    before = len(key_store.list())
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, err = await _call(s, "POST", f"{gw.base_url}/api-keys", token, json=body)
    assert status == 400 and err["parameter"] == parameter, err
    assert len(key_store.list()) == before


async def test_expired_key_is_401(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    soon = int(time.time() * 1000) + 300
    key = key_store.create("brief", scopes=["read"], expires_at=soon)
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        while int(time.time() * 1000) <= soon:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        status, body = await _call(s, "GET", f"{gw.base_url}/exchanges", key.token)
    assert status == 401 and "expired" in body["message"]


async def test_expired_key_loses_its_websocket(sim, key_store: ApiKeyStore):
    from astra.server.gateway import Gateway, venues_from_config

    soon = int(time.time() * 1000) + 1000
    key = key_store.create("brief", scopes=["read"], expires_at=soon)
    async with (
        Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
                linger=1.0, session_revalidate_seconds=0.2) as gw,
        aiohttp.ClientSession() as s,
        s.ws_connect(_ws(gw), headers=_auth(key.token)) as ws,
    ):
        async with asyncio.timeout(TIMEOUT):
            while True:  # streams until the expiry, then the revalidation closes it
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == REVOKED_CLOSE_CODE
        assert int(time.time() * 1000) >= soon


async def test_ip_allow_list(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    outside = key_store.create("lan", scopes=["read"], allow_ips=["10.0.0.0/8"]).token
    inside = key_store.create("local", scopes=["read"], allow_ips=["127.0.0.1/32"]).token
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, body = await _call(s, "GET", f"{gw.base_url}/exchanges", outside)
        assert status == 403 and "127.0.0.1" in body["message"]
        status, _ = await _call(s, "GET", f"{gw.base_url}/exchanges", inside)
        assert status == 200


async def test_key_without_scopes_row_keeps_full_access(gateway, key_store: ApiKeyStore):
    gw, token = gateway  # created with no scopes: no api_key_scopes row, as before scopes
    assert key_store.verify(token).scopes == {"read", "trade", "otc", "admin"}
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        for path in ("/exchanges", "/api-keys", "/otc/accounts"):
            status, body = await _call(s, "GET", gw.base_url + path, token)
            assert status == 200, (path, body)


async def test_last_used_is_recorded(gateway, key_store: ApiKeyStore):
    gw, _ = gateway
    key = key_store.create("used", scopes=["read"])
    assert key_store.get(key.key_id).last_used_at is None
    before = int(time.time() * 1000)
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        status, _ = await _call(s, "GET", f"{gw.base_url}/exchanges", key.token)
        assert status == 200
        while key_store.get(key.key_id).last_used_at is None:  # noqa: ASYNC110 (off-loop write)
            await asyncio.sleep(0.02)
    used = key_store.get(key.key_id).last_used_at
    assert before <= used <= int(time.time() * 1000)


async def test_every_route_has_a_scope(sim, key_store: ApiKeyStore, tmp_path):
    from astra.history.config import HistoryConfig
    from astra.server.gateway import Gateway, venues_from_config

    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0,
                       metrics_port=0, linger=1.0,
                       history=HistoryConfig(dir=tmp_path / "history")) as gw:
        app = gw._runners[0].app  # the API app (the metrics app is the second runner)
        seen = set()
        for route in app.router.routes():
            if route.method == "HEAD":
                continue
            key = (route.method, route.resource.canonical)
            assert key in ROUTE_SCOPES, f"route {key} has no scope: it would be refused"
            seen.add(key)
    # Every route served, history included, and the table names nothing that is not served.
    assert seen == set(ROUTE_SCOPES)
    assert ("GET", "/history/candles") in seen and ("DELETE", "/api-keys/{keyId}") in seen


async def test_unmapped_route_fails_closed(key_store: ApiKeyStore):
    """A route added without a scope is refused even to a full-access key."""
    app = web.Application(middlewares=[auth_middleware(key_store, scoped=True)])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="reached")

    app.router.add_get("/new-thing", ok)
    app.router.add_get("/exchanges", ok)
    token = key_store.create("full").token  # no scopes row: every scope
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
            status, body = await _call(s, "GET", f"http://127.0.0.1:{port}/new-thing", token)
            assert status == 403 and "not open to any API key scope" in body["message"]
            async with s.get(f"http://127.0.0.1:{port}/exchanges", headers=_auth(token)) as r:
                assert (r.status, await r.text()) == (200, "reached")
    finally:
        await runner.cleanup()


def _check_schema(doc: dict, name: str, value: object) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)


async def test_answers_match_the_openapi_document(gateway, key_store: ApiKeyStore):
    gw, token = gateway
    url = f"{gw.base_url}/api-keys"
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        _, doc = await _call(s, "GET", f"{gw.base_url}/openapi.json", token)
        status, made = await _call(s, "POST", url, token, json={"scopes": ["otc"],
                                                               "expiresAt": 32472144000000})
        assert status == 201
        _check_schema(doc, "ApiKeyCreated", made)
        _check_schema(doc, "ApiKeyList", (await _call(s, "GET", url, token))[1])
        status, gone = await _call(s, "DELETE", f"{url}/{made['keyId']}", token)
        assert status == 200
        _check_schema(doc, "ApiKey", gone)
        with pytest.raises(jsonschema.ValidationError):  # the check can fail
            _check_schema(doc, "ApiKey", {**gone, "scopes": ["root"]})


async def test_create_body_that_never_arrives_is_408(sim, key_store: ApiKeyStore):
    from astra.server.gateway import Gateway, venues_from_config

    token = key_store.create("admin", scopes=["admin"]).token
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
                       linger=1.0, body_timeout=0.3) as gw:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(
                    b"POST /api-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"x-astra-api-key: Bearer " + token.encode() + b"\r\n"
                    b"Content-Length: 100\r\n\r\n{\"scopes\":")
                await writer.drain()
                answer = await reader.read()  # until the server closes the connection
            finally:
                writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"REQUEST_TIMEOUT" in answer
    assert [k.label for k in key_store.list()] == ["admin"]
