"""The gateway's connection layer on raw loopback sockets: requests aiohttp's parser rejects
leak nothing (log or body), the access log redacts keys, half-sent requests are closed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os

import aiohttp
import pytest

from astra.server.gateway import Gateway, venues_from_config

TIMEOUT = 15
API_SECRET = "Zq8PLEAKEDAPIKEYSECRETxK3vT9sW2mN"
EXCHANGE_SECRET = "Ex7SECRETEXCHANGEVALUEqR4tY8uI0p"


@pytest.fixture
async def gw(sim, key_store):
    """A gateway on SIM with a short header timeout; yields (gateway, api token)."""
    token = key_store.create("tests").token
    venues = venues_from_config({}, sim.base_url)
    async with Gateway(
        venues, key_store, port=0, metrics_port=0, linger=1.0, header_timeout=0.5
    ) as gateway:
        yield gateway, token


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger, aiohttp's access log included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def _all_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for r in caplog.records:
        parts += [r.getMessage(), r.exc_text or "", repr(r.args), str(r.msg)]
    return "\n".join(parts)


async def _raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            return await reader.read()
    finally:
        writer.close()


def _split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_requests_the_parser_rejects_leak_no_secret(gw, logs):
    gateway, token = gw
    key_id = token.split(".")[0]
    bad = [
        # a control character inside the API key header
        f"GET /markets?exchange=SIM HTTP/1.1\r\nHost: x\r\n"
        f"x-astra-api-key: Bearer {key_id}.{API_SECRET}\x01\r\n\r\n".encode(),
        # a control character in an exchange secret header
        f"GET /balances?exchange=SIM HTTP/1.1\r\nHost: x\r\nx-astra-api-key: Bearer {token}\r\n"
        f"x-astra-exchange-secret: {EXCHANGE_SECRET}\x7f\x02\r\n\r\n".encode(),
        # a URL over 8 KB carrying the key
        f"GET /ws?apiKey={key_id}.{API_SECRET}&pad={'A' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"
        .encode(),
        # a header line over 8 KB carrying a secret
        f"GET /markets HTTP/1.1\r\nHost: x\r\nx-astra-exchange-secret: {EXCHANGE_SECRET}"
        f"{'B' * 9000}\r\n\r\n".encode(),
        # a garbled request line
        f"G\x00T /x?apiKey={API_SECRET} HTTP/1.1\r\n\r\n".encode(),
    ]
    for request in bad:
        status, headers, body = _split(await _raw(gateway.port, request))
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)
        assert error["code"] == "BAD_REQUEST" and error["message"]
        for secret in (API_SECRET, EXCHANGE_SECRET, token, key_id):
            assert secret not in body.decode("latin-1")
    logged = _all_logged(logs)
    assert "malformed request" in logged  # it was logged, without the bytes
    assert API_SECRET not in logged and EXCHANGE_SECRET not in logged
    assert "AAAAAAAA" not in logged and "BBBBBBBB" not in logged


async def test_access_log_redacts_the_query_key(gw, logs):
    gateway, token = gw
    url = f"{gateway.base_url.replace('http', 'ws')}/ws"
    params = {"market": "SIM-SPOT-BTC-USDT", "dataType": "TRADE", "apiKey": token}
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        async with s.ws_connect(url, params=params) as ws:
            await ws.receive(timeout=TIMEOUT)
        async with s.get(f"{gateway.base_url}/markets", params={"apiKey": token}) as r:
            assert r.status == 401
    await asyncio.sleep(0.2)  # the WebSocket's access line is written as its handler returns
    lines = [r.getMessage() for r in logs.records if r.name == "aiohttp.access"]
    assert any('"GET /ws?' in line and "apiKey=[REDACTED]" in line for line in lines), lines
    assert any('"GET /markets?apiKey=[REDACTED]" 401' in line for line in lines), lines
    assert token.split(".")[1] not in _all_logged(logs)


async def test_subprotocols_offered_are_not_logged(gw, logs):
    # Authenticated by header, while offering a malformed key as a subprotocol: aiohttp warns
    # that no offered protocol is served, quoting them; the values must not be logged.
    gateway, token = gw
    offered = f"{token.split('.')[0]}.{API_SECRET[:20]}"  # too short a secret: not a token
    url = f"{gateway.base_url.replace('http', 'ws')}/ws?market=SIM-SPOT-BTC-USDT&dataType=TRADE"
    headers = {"x-astra-api-key": f"Bearer {token}"}
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as s:
        async with s.ws_connect(url, headers=headers, protocols=("astra.v1", offered)) as ws:
            assert ws.protocol is None
    logged = _all_logged(logs)
    assert "subprotocol" in logged and API_SECRET[:20] not in logged


async def _half_sent(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_half_sent_requests_are_closed_after_the_header_timeout(gw):
    gateway, _ = gw
    partial = b"GET /markets?exchange=SIM HTTP/1.1\r\nHost: x\r\nx-astra-api"
    conns = [await _half_sent(gateway.port, partial) for _ in range(30)]
    conns.append(await _half_sent(gateway.port, b""))  # connected, never a byte
    key = base64.b64encode(os.urandom(16)).decode()
    ws_partial = f"GET /ws?market=SIM-SPOT-BTC-USDT&dataType=TRADE HTTP/1.1\r\nHost: x\r\n" \
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
    conns.append(await _half_sent(gateway.port, ws_partial.encode()))
    try:
        for reader, _ in conns:
            async with asyncio.timeout(TIMEOUT):  # bounded: without the timeout, read() hangs
                answer = await reader.read()
            status, _, body = _split(answer)
            assert status == 408 and json.loads(body)["code"] == "REQUEST_TIMEOUT"
            assert reader.at_eof()
        # A trickle of header lines does not keep a request alive past the timeout either.
        reader, writer = await _half_sent(gateway.port, b"GET /markets HTTP/1.1\r\n")
        conns.append((reader, writer))

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"X-Slow: 1\r\n")
                    await asyncio.sleep(0.05)

        dripping = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(TIMEOUT):
                answer = await reader.read()
        finally:
            dripping.cancel()
        assert _split(answer)[0] == 408
    finally:
        for _, writer in conns:
            writer.close()


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(gw):
    gateway, token = gw
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    request = (
        f"GET /exchanges HTTP/1.1\r\nHost: x\r\nx-astra-api-key: Bearer {token}\r\n\r\n"
    ).encode()
    try:
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            async with asyncio.timeout(TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b": ")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)[0]["exchange"] == "SIM"
            await asyncio.sleep(1.0)  # idle for twice the header timeout, between requests
    finally:
        writer.close()


async def test_the_aiohttp_internals_the_protocol_relies_on_exist():
    # GatewayProtocol and GatewayRunner read private aiohttp attributes (pyproject pins the
    # aiohttp versions checked): an aiohttp that renames them fails here, not in production.
    from collections import deque

    from aiohttp import web

    from astra.server.protocol import GatewayProtocol, GatewayRunner, _GatewayServer

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response()

    plain = web.Server(handler, loop=asyncio.get_running_loop(), keepalive_timeout=5.0)
    assert plain._loop is asyncio.get_running_loop() and plain._kwargs == {"keepalive_timeout": 5.0}
    assert asyncio.iscoroutinefunction(web.AppRunner._make_server)
    server = _GatewayServer(handler, loop=plain._loop, header_timeout=1.0, **plain._kwargs)
    proto = server()
    assert isinstance(proto, GatewayProtocol)
    assert proto._request_count == 0 and isinstance(proto._messages, deque)
    assert proto._upgraded is False and proto._request_in_progress is False
    assert proto._loop is asyncio.get_running_loop()
    runner = GatewayRunner(web.Application(), header_timeout=1.0)
    await runner.setup()
    try:
        assert isinstance(runner.server, _GatewayServer)
    finally:
        await runner.cleanup()


async def test_a_body_that_never_arrives_is_a_408_and_the_connection_closes(sim, key_store):
    token = key_store.create("tests").token
    venues = venues_from_config({}, sim.base_url)
    async with Gateway(venues, key_store, port=0, metrics_port=0, linger=1.0,
                       body_timeout=0.5) as gateway:
        head = (
            f"POST /orders HTTP/1.1\r\nHost: x\r\nx-astra-api-key: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        # 10 of the 1000 bytes announced, then silence: bounded, else read() hangs forever
        answer = await _raw(gateway.port, head + b'{"market":')
        status, headers, body = _split(answer)
        assert status == 408 and headers["connection"].lower() == "close"
        error = json.loads(body)
        assert (error["code"], error["parameter"]) == ("REQUEST_TIMEOUT", "body")
        assert gateway.metrics.requests[("/orders", 408)] == 1
