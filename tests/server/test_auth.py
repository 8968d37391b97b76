"""The auth middleware on a real loopback server: header, query, WebSocket subprotocol, 401s."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event

from astra.core import Unauthorized
from astra.server.auth import (
    API_KEY,
    WS_PROTOCOL,
    KeyVerifier,
    auth_middleware,
    authenticate,
    extract_token,
)
from astra.store import ApiKeyStore, open_database

TIMEOUT = 10


@pytest.fixture
def store(tmp_path: Path):
    engine = open_database(data_dir=tmp_path)
    yield ApiKeyStore(engine)
    engine.dispose()


async def echo(request: web.Request) -> web.Response:
    info = request.get(API_KEY)
    return web.json_response(
        {"key_id": info.key_id if info else None, "ws_protocol": request.get(WS_PROTOCOL)}
    )


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    proto = request[WS_PROTOCOL]
    ws = web.WebSocketResponse(protocols=(proto,) if proto else ())
    await ws.prepare(request)
    await ws.send_json({"key_id": request[API_KEY].key_id})
    await ws.close()
    return ws


@pytest.fixture
async def client(store: ApiKeyStore):
    app = web.Application(middlewares=[auth_middleware(store, frozenset({"/health"}))])
    app.router.add_get("/echo", echo)
    app.router.add_get("/health", echo)
    app.router.add_get("/ws", ws_echo)
    async with asyncio.timeout(TIMEOUT):
        server = TestServer(app, host="127.0.0.1", port=0)
        async with TestClient(server, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as c:
            yield c


async def _get(client: TestClient, path: str, **kw) -> tuple[int, dict, str]:
    async with asyncio.timeout(TIMEOUT):
        resp = await client.get(path, **kw)
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body, text


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER  ", ""])
async def test_header(client: TestClient, store: ApiKeyStore, scheme: str) -> None:
    key = store.create("h")
    status, body, _ = await _get(client, "/echo", headers={"x-astra-api-key": scheme + key.token})
    assert status == 200 and body == {"key_id": key.key_id, "ws_protocol": None}


async def test_query_parameter_is_refused_on_rest(client: TestClient, store: ApiKeyStore) -> None:
    # ?apiKey= is for browser WebSockets only: a valid key in a REST URL is still a 401 that
    # names the header to use (and never echoes the key).
    key = store.create("q")
    status, body, text = await _get(client, "/echo", params={"apiKey": key.token})
    assert status == 401 and body["code"] == "UNAUTHORIZED"
    assert body["parameter"] == "x-astra-api-key" and "x-astra-api-key" in body["message"]
    assert "WebSocket" in body["message"] and key.token not in text
    async with asyncio.timeout(TIMEOUT):
        resp = await client.post("/echo", params={"apiKey": key.token}, data=b"{}")
        assert resp.status == 401 and (await resp.json())["parameter"] == "x-astra-api-key"


async def test_header_wins_over_query(client: TestClient, store: ApiKeyStore) -> None:
    good, bad = store.create(), "abcdefghjk23." + "x" * 40
    headers = {"x-astra-api-key": f"Bearer {good.token}"}
    status, _, _ = await _get(client, "/echo", headers=headers, params={"apiKey": bad})
    assert status == 200
    headers = {"x-astra-api-key": f"Bearer {bad}"}
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await client.ws_connect("/ws", headers=headers, params={"apiKey": good.token})
    assert exc.value.status == 401


async def test_missing(client: TestClient) -> None:
    for headers in ({}, {"x-astra-api-key": ""}, {"x-astra-api-key": "Bearer "}):
        status, body, _ = await _get(client, "/echo", headers=headers)
        assert status == 401
        assert body["code"] == "UNAUTHORIZED" and "missing" in body["message"]


@pytest.mark.parametrize(
    "bad",
    [
        "abcdefghjk23.ThisIsNotTheRightSecretButLooksFine42",
        "not-a-key-at-all-SUPERSECRETVALUE",
        "x" * 5000,
    ],
)
async def test_invalid_never_echoed(client: TestClient, store: ApiKeyStore, bad: str) -> None:
    store.create()
    ws = {"Upgrade": "websocket", "Connection": "Upgrade"}  # ?apiKey= counts on handshakes
    for kw in ({"headers": {"x-astra-api-key": f"Bearer {bad}"}},
               {"params": {"apiKey": bad}, "headers": ws}):
        status, body, text = await _get(client, "/ws", **kw)
        assert status == 401 and body["code"] == "UNAUTHORIZED"
        assert "invalid" in body["message"]
        assert bad not in text and bad[13:30] not in text


async def test_revoked_key_is_invalid(client: TestClient, store: ApiKeyStore) -> None:
    key = store.create()
    headers = {"x-astra-api-key": f"Bearer {key.token}"}
    assert (await _get(client, "/echo", headers=headers))[0] == 200
    store.revoke(key.key_id)
    status, body, _ = await _get(client, "/echo", headers=headers)
    assert status == 401 and "invalid" in body["message"]


async def test_exempt_path(client: TestClient) -> None:
    status, body, _ = await _get(client, "/health")
    assert status == 200 and body["key_id"] is None


async def test_websocket_subprotocol_is_echoed(client: TestClient, store: ApiKeyStore) -> None:
    key = store.create("browser")
    async with asyncio.timeout(TIMEOUT):
        async with client.ws_connect("/ws", protocols=(key.token,)) as ws:
            assert ws.protocol == key.token
            assert (await ws.receive_json())["key_id"] == key.key_id
        # Among other offered protocols, the token is the one chosen.
        async with client.ws_connect("/ws", protocols=("astra.v1", key.token)) as ws:
            assert ws.protocol == key.token


async def test_websocket_other_sources(client: TestClient, store: ApiKeyStore) -> None:
    key = store.create()
    async with asyncio.timeout(TIMEOUT):
        async with client.ws_connect("/ws", params={"apiKey": key.token}) as ws:
            assert ws.protocol is None
            assert (await ws.receive_json())["key_id"] == key.key_id
        headers = {"x-astra-api-key": f"Bearer {key.token}"}
        async with client.ws_connect("/ws", headers=headers) as ws:
            assert (await ws.receive_json())["key_id"] == key.key_id


async def test_websocket_rejected(client: TestClient) -> None:
    bad = "abcdefghjk23.ThisIsNotTheRightSecretButLooksFine42"
    async with asyncio.timeout(TIMEOUT):
        for protocols in ((), (bad,)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await client.ws_connect("/ws", protocols=protocols)
            assert exc.value.status == 401


async def test_authenticate_raises(store: ApiKeyStore) -> None:
    from aiohttp.test_utils import make_mocked_request

    verifier = KeyVerifier(store)
    with pytest.raises(Unauthorized, match="missing"):
        await authenticate(verifier, make_mocked_request("GET", "/x"))
    req = make_mocked_request("GET", "/x", headers={"x-astra-api-key": "Bearer nope"})
    with pytest.raises(Unauthorized, match="invalid") as exc:
        await authenticate(verifier, req)
    assert "nope" not in str(exc.value)
    key = store.create()
    req = make_mocked_request("GET", "/x", headers={"x-astra-api-key": f"Bearer {key.token}"})
    assert (await authenticate(verifier, req)).key_id == key.key_id


def test_extract_token_order() -> None:
    from aiohttp.test_utils import make_mocked_request

    tok = "abcdefghjk23." + "s" * 10 + "0123456789ABCDEFGHIJKLMNOP"
    ws_headers = {"Upgrade": "websocket", "Connection": "Upgrade"}

    def req(path: str = "/ws", method: str = "GET", **headers: str) -> web.Request:
        return make_mocked_request(method, path, headers=headers)

    assert extract_token(req()) == (None, None)
    assert extract_token(req(**{"x-astra-api-key": f"bEaReR {tok}"})) == (tok, None)
    assert extract_token(req(**{"x-astra-api-key": f"  {tok} "})) == (tok, None)
    # ?apiKey= on a request that is not a handshake: refused, naming the header.
    with pytest.raises(Unauthorized) as exc:
        extract_token(req(f"/ws?apiKey={tok}"))
    assert exc.value.parameter == "x-astra-api-key" and tok not in str(exc.value)
    assert extract_token(req(f"/ws?apiKey={tok}", **ws_headers)) == (tok, None)
    proto = {"Sec-WebSocket-Protocol": f"astra.v1, {tok}"}
    assert extract_token(req(**ws_headers, **proto)) == (tok, tok)
    # Not a handshake: the subprotocol header is ignored.
    assert extract_token(req(**proto)) == (None, None)
    # An upgrade header alone is no handshake: not a GET, or not a WebSocket path.
    for method, path in (("POST", "/ws"), ("POST", "/orders"), ("DELETE", "/orders"),
                         ("GET", "/orders"), ("GET", "/markets")):
        with pytest.raises(Unauthorized):
            extract_token(req(f"{path}?apiKey={tok}", method, **ws_headers))
        assert extract_token(req(path, method, **ws_headers, **proto)) == (None, None)
    # A non-token subprotocol alone is no key; the query parameter is used then.
    only = {"Sec-WebSocket-Protocol": "astra.v1"}
    assert extract_token(req(f"/ws?apiKey={tok}", **ws_headers, **only)) == (tok, None)
    # The header wins over the others.
    hdr = {"x-astra-api-key": "Bearer other"}
    assert extract_token(req(f"/ws?apiKey={tok}", **ws_headers, **proto, **hdr)) == (
        "other",
        None,
    )


async def test_key_lookups_run_off_the_loop_once_per_key_id(tmp_path: Path) -> None:
    """Unknown key ids cost one database read each per cache window, in a worker thread:
    never a synchronous SQLite read on the event loop, however many requests carry them."""
    now = [0.0]
    engine = open_database(data_dir=tmp_path)
    store = ApiKeyStore(engine, cache_ttl=2.0, clock=lambda: now[0])  # time stands still
    good = store.create("real")
    reads: Counter[str] = Counter()
    threads: set[int] = set()

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
            reads[str(parameters[0] if parameters else "")] += 1
            threads.add(threading.get_ident())

    app = web.Application(middlewares=[auth_middleware(store)])
    app.router.add_get("/echo", echo)
    unknown = [f"unknownkey{i:02d}.{'Q' * 20}abcdefghijklmnop" for i in range(5)]
    loop_thread = threading.get_ident()
    try:
        async with asyncio.timeout(TIMEOUT), TestClient(TestServer(app, host="127.0.0.1")) as c:
            async def one(token: str) -> int:
                resp = await c.get("/echo", headers={"x-astra-api-key": f"Bearer {token}"})
                await resp.read()
                return resp.status

            statuses = await asyncio.gather(*(one(t) for t in unknown * 20 + [good.token] * 20))
            statuses += [await one(t) for t in unknown]  # cached now: no new read
            assert statuses.count(401) == 5 * 21 and statuses.count(200) == 20
            assert dict(reads) == {f"unknownkey{i:02d}": 1 for i in range(5)} | {good.key_id: 1}
            assert loop_thread not in threads  # every read ran in a worker thread
            now[0] += 2.5  # the window ends: the next request reads the row again
            assert await one(unknown[0]) == 401 and reads["unknownkey00"] == 2
    finally:
        engine.dispose()


async def test_key_lookups_are_bounded_and_off_the_default_executor(tmp_path: Path) -> None:
    """Past ``max_pending`` key ids being read, a request with a new key id is a 503 with
    Retry-After that never reaches the store; reads run on the verifier's own threads, so
    the default executor (the order journal's) stays free while they are stuck."""
    engine = open_database(data_dir=tmp_path)
    store = ApiKeyStore(engine)
    good = store.create("real")
    release = threading.Event()
    reads: Counter[str] = Counter()
    threads: set[str] = set()

    @event.listens_for(engine, "before_cursor_execute")
    def stall(conn, cursor, statement, parameters, context, executemany) -> None:
        key_id = str(parameters[0] if parameters else "")
        if statement.lstrip().upper().startswith("SELECT") and key_id.startswith("flood"):
            reads[key_id] += 1
            threads.add(threading.current_thread().name)
            release.wait(TIMEOUT)  # a database that does not answer

    verifier = KeyVerifier(store, max_pending=4, threads=2)
    app = web.Application(middlewares=[auth_middleware(store, verifier=verifier)])
    app.router.add_get("/echo", echo)
    flood = [f"flood{i:05d}.{'Q' * 20}abcdefghijklmnop" for i in range(6)]
    try:
        async with asyncio.timeout(TIMEOUT), TestClient(TestServer(app, host="127.0.0.1")) as c:
            async def one(token: str) -> tuple[int, dict, str | None]:
                resp = await c.get("/echo", headers={"x-astra-api-key": f"Bearer {token}"})
                return resp.status, await resp.json(), resp.headers.get("Retry-After")

            assert (await one(good.token))[0] == 200  # cached from now on
            stuck = [asyncio.create_task(verifier.verify(t)) for t in flood[:4]]
            await asyncio.sleep(0)  # each registers its key id's read, then waits for it
            assert verifier.pending == 4
            for token in flood[4:]:  # a fifth and sixth key id: refused, never read
                status, body, retry = await one(token)
                assert (status, body["code"], retry) == (503, "OVERLOADED", "1")
            assert (await one(good.token))[0] == 200  # cached keys are unaffected
            assert await asyncio.to_thread(lambda: 42) == 42  # the journal's threads are free
            assert verifier.pending == 4
            release.set()
            assert await asyncio.gather(*stuck) == [None] * 4  # unknown keys
            assert verifier.pending == 0
            assert dict(reads) == {t.split(".")[0]: 1 for t in flood[:4]}
            assert threads and all(name.startswith("astra-keys") for name in threads)
    finally:
        release.set()
        verifier.close()
        engine.dispose()
