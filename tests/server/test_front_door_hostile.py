"""Hostile requests against the gateway's front door (``errors.FrontDoor``, ``auth.ApiKeyAuth``)
on a real gateway (simulator on loopback, SQLite key store), over raw HTTP/1.1 connections:
no request reaches a keyed handler without a key, whatever its path, method or headers; a
connection's remembered key is only ever a key its header carried; bodies and WebSocket
messages nested deeper than the JSON decoder goes are a 4xx (an error frame), never a 500 or
a dropped socket; the route cache stays bounded."""

from __future__ import annotations

import asyncio
import json
import re
import secrets

import aiohttp

from astra.server.errors import FRONT_DOOR

TIMEOUT = 20
SPOT = "SIM-SPOT-BTC-USDT"
# Nesting past the interpreter's default recursion limit (1000: a RecursionError, a 500), and
# past what the C stack holds once a dependency raised that limit (py_ecc, imported with
# eth_account, sets 100000: a segfault of the whole process), both under the 1 MiB body limit.
DEPTHS = (3000, 300_000)


async def _exchange(port: int, raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Send ``raw`` (one or more requests) on one connection; read an answer per request."""
    methods = [line.split(b" ", 1)[0] for line in raw.split(b"\r\n")
               if line.endswith(b" HTTP/1.1")]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        writer.write(raw)
        async with asyncio.timeout(TIMEOUT):
            for method in methods:
                head = await reader.readuntil(b"\r\n\r\n")
                while head.startswith(b"HTTP/1.1 100 "):  # an interim answer: the next one
                    head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v for k, v in
                           (line.split(": ", 1) for line in lines[1:] if line)}
                length = 0 if method == b"HEAD" else int(headers.get("content-length", 0))
                body = await reader.readexactly(length)
                status = int(lines[0].split()[1])
                answers.append((status, headers, body))
                if headers.get("connection", "").lower() == "close":
                    break
    finally:
        writer.close()
    return answers


def _request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}{length}\r\n"
            .encode() + body)


async def test_a_connection_never_remembers_a_key_its_header_did_not_carry(gateway):
    # A WebSocket handshake may carry its key in ?apiKey=; with an x-astra-api-key header
    # that holds no key ("Bearer"), the key came from the URL, and the connection must not
    # remember it under that header: on a keep-alive connection (a proxy's pooled upstream
    # connection, shared by many clients) the next request with the same empty header would
    # be admitted with the earlier request's key.
    gw, token = gateway
    handshake = _request(  # Upgrade without Connection: upgrade: answered, not upgraded
        "GET", f"/ws?apiKey={token}&market=SIM-SPOT-NOPE-USDT&dataType=TRADE",
        "Upgrade: websocket", "x-astra-api-key: Bearer")
    follow = _request("GET", "/orders", "x-astra-api-key: Bearer")
    answers = await _exchange(gw.port, handshake + follow)
    assert len(answers) == 2, answers
    (first, _, first_body), (second, _, second_body) = answers
    assert first == 404 and json.loads(first_body)["code"] == "MARKET_NOT_FOUND"
    assert second == 401, second_body  # not the handler's 400 naming ?market=
    assert json.loads(second_body)["code"] == "UNAUTHORIZED"
    assert token.encode() not in first_body + second_body
    # The key given properly in the header is remembered as before, and serves.
    with_key = _request("GET", "/orders", f"x-astra-api-key: Bearer {token}")
    answers = await _exchange(gw.port, with_key + with_key + follow)
    assert [(s, json.loads(b).get("parameter")) for s, _, b in answers] == [
        (400, "market"), (400, "market"), (401, None)]


# Paths and methods that must not reach a keyed handler without a key. Each either is
# refused (401) or names no route; none is 2xx, none a 500, every answer JSON.
_TRICKS = [
    ("GET", "/orders"), ("GET", "//orders"), ("GET", "/orders/"), ("GET", "/ORDERS"),
    ("GET", "/%6Frders"), ("GET", "/orders%2F"), ("GET", "/x/../orders"),
    ("GET", "/./orders"), ("GET", "/orders;x=1"), ("GET", "/orders%00"),
    ("GET", "/%2Forders"), ("GET", "/terminal/../orders"), ("GET", "/terminal/%2E%2E/orders"),
    ("GET", "/terminal/..%2F..%2Forders"), ("GET", "/ws/../orders"),
    ("GET", "/ws/../orders?apiKey=nothing"), ("GET", "/balances?x=/terminal/a"),
    ("GET", "http://127.0.0.1/orders"), ("GET", "/\u00f6rders".encode("utf-8").decode("latin-1")),
    ("HEAD", "/orders"), ("OPTIONS", "/orders"), ("DELETE", "/orders"), ("PUT", "/orders"),
    ("PATCH", "/orders"), ("POST", "/orders"), ("POST", "/api-keys"), ("GET", "/api-keys"),
    ("DELETE", "/api-keys/abcdefghjk23"), ("GET", "/orders/1"), ("GET", "/orders/%2E%2E"),
    ("GET", "/openapi.json"), ("GET", "/ws"), ("GET", "/nowhere"), ("PROPFIND", "/orders"),
]


async def test_no_path_or_method_trick_reaches_a_keyed_handler_without_a_key(gateway):
    gw, _ = gateway
    for method, target in _TRICKS:
        for headers in ((), ("Expect: 100-continue",), ("Upgrade: websocket",),
                        ("x-astra-api-key: Bearer",), ("x-astra-api-key: Bearer x.y",)):
            raw = _request(method, target, *headers)
            answers = await _exchange(gw.port, raw)
            assert len(answers) == 1, (method, target, headers)
            status, resp_headers, body = answers[0]
            assert status in (400, 401, 404, 405), (method, target, headers, status, body)
            if method != "HEAD":
                assert resp_headers["content-type"].startswith("application/json"), body
                assert set(json.loads(body)) >= {"code", "message"}
    # The same paths with a valid key get an answer too, never a 500.
    _, token = gateway
    for method, target in _TRICKS:
        answers = await _exchange(gw.port, _request(method, target,
                                                    f"x-astra-api-key: Bearer {token}"))
        assert answers and answers[0][0] != 500, (method, target, answers)


async def test_pipelined_requests_with_different_keys_are_each_judged(gateway, key_store):
    gw, token = gateway
    reader = key_store.create("reader", scopes=["read"]).token
    revoked = key_store.create("revoked")
    assert key_store.revoke(revoked.key_id)
    book = f"/orderbook?market={SPOT}&depth=1"
    raw = b"".join([
        _request("GET", "/orders", f"x-astra-api-key: Bearer {token}"),
        _request("GET", "/orders", f"x-astra-api-key: Bearer {reader}"),
        _request("GET", "/orders", f"x-astra-api-key: Bearer {revoked.token}"),
        _request("GET", "/orders", f"x-astra-api-key: {token}"),  # bare token: the same key
        _request("GET", "/orders"),
        _request("GET", book, f"x-astra-api-key: Bearer {reader}"),
        _request("GET", "/orders", f"x-astra-api-key: Bearer {token}"),
    ])
    answers = await _exchange(gw.port, raw)
    assert [s for s, _, _ in answers] == [400, 403, 401, 400, 401, 200, 400]


async def test_the_route_cache_stays_bounded_under_random_paths(gateway):
    gw, token = gateway
    door = gw._runners[0].app[FRONT_DOOR]
    routes = sum(1 for _ in gw._runners[0].app.router.routes())
    raw = b"".join(_request("GET", f"/{secrets.token_hex(8)}", f"x-astra-api-key: Bearer {token}")
                   for _ in range(300))
    answers = await _exchange(gw.port, raw)
    assert [s for s, _, _ in answers] == [404] * 300
    raw = b"".join(_request(m, f"/orderbook?market={SPOT}&x={i}",
                            f"x-astra-api-key: Bearer {token}")
                   for i in range(50) for m in ("GET", "HEAD"))
    assert {s for s, _, _ in await _exchange(gw.port, raw)} == {200}
    assert 0 < len(door._static) <= routes
    assert len(door._routes) <= routes
    # Every 404 shares one label, so the histogram's series do not grow with paths either.
    assert door._unmatched.observers.keys() <= {("GET", 404)}


async def test_deeply_nested_json_bodies_are_a_400_on_every_post_route(gateway):
    gw, token = gateway
    posts = sorted({re.sub(r"\{\w+\}", "acct-1", r.resource.canonical)
                    for r in gw._runners[0].app.router.routes()
                    if r.method == "POST" and r.resource is not None})
    assert {"/orders", "/api-keys", "/request-quote", "/otc/accept-quote/acct-1"} <= set(posts)
    headers = {"x-astra-api-key": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(60):
        for path in posts:
            for body in (*(b'{"market": ' + b"[" * n + b"]" * n + b"}" for n in DEPTHS),
                         *(b"[" * n for n in DEPTHS)):
                async with http.post(f"{gw.base_url}{path}", data=body) as r:
                    answer = await r.json()
                assert 400 <= r.status < 500, (path, r.status, answer)
                assert answer["code"] in ("INVALID_PARAMETER", "BAD_REQUEST"), (path, answer)


async def test_many_brackets_that_do_not_nest_deep_are_not_refused(gateway):
    """The bound is on nesting, not on brackets: 300 in a string, 300 sibling objects and
    exactly 256 levels pass the check (the route then judges the body as usual)."""
    gw, token = gateway
    headers = {"x-astra-api-key": f"Bearer {token}", "Content-Type": "application/json"}
    label = "[{" * 300
    flat = '{"label": "flat", "scopes": ["read"], "x": [' + ",".join(["{}"] * 300) + "]}"
    deep = '{"label": "deep", "scopes": ["read"], "x": ' + "[" * 255 + "]" * 255 + "}"
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(60):
        async with http.post(f"{gw.base_url}/api-keys",
                             json={"label": label[:64], "scopes": ["read"]}) as r:
            assert r.status == 201, await r.text()
        for body in (flat, deep):  # refused for the unknown field, not for brackets
            async with http.post(f"{gw.base_url}/api-keys", data=body) as r:
                answer = await r.json()
            assert r.status == 400 and answer["parameter"] == "x", answer
        async with http.post(f"{gw.base_url}/api-keys", data="[" * 257 + "]" * 257) as r:
            answer = await r.json()
        assert r.status == 400 and "nested deeper than 256" in answer["message"], answer


async def test_a_deeply_nested_ws_message_gets_an_error_and_the_socket_stays(gateway):
    gw, token = gateway
    url = f"{gw.base_url.replace('http', 'ws')}/ws?apiKey={token}"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws, asyncio.timeout(60):
        for raw in ("[" * 4000, '{"op": ' + "[" * 1000 + "]" * 1000 + ', "id": 7}'):
            await ws.send_str(raw)
            answer = await ws.receive_json(timeout=10)
            assert (answer["type"], answer["code"], answer["parameter"]) == (
                "error", "INVALID_PARAMETER", "body"), answer
        await ws.send_str(json.dumps({"op": "subscribe", "market": SPOT, "dataType": "TRADE",
                                      "id": 1}))
        assert await ws.receive_json(timeout=10) == {
            "type": "subscribed", "market": SPOT, "dataType": "TRADE", "id": 1}
