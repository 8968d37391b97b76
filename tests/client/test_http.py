"""The SDK's transport against a loopback HTTP server of the test's own that answers as
scripted (503 then 200, a dropped connection, a body that is not JSON): retries only where
safe, errors mapped, transport failures named."""

from __future__ import annotations

import asyncio
import json
import socket

import msgspec
import pytest

from astra.client import AsyncAstra, TransportError
from astra.core import AstraError, MarketNotFound, VenueUnavailable

from .helpers import BOUND

BOOK = {"market": "SIM-SPOT-BTC-USDT", "bids": [{"price": 100.0, "quantity": 1.5}],
        "asks": [{"price": 101.0, "quantity": 2.0}], "updateId": 7, "timestamp": 1}
ORDER = {"orderId": "42", "clientOrderId": "c-1", "market": "SIM-SPOT-BTC-USDT",
         "side": "BUY", "type": "LIMIT", "quantity": 0.001, "filledQuantity": 0.0,
         "status": "NEW", "price": 50000.0}
UNAVAILABLE = {"code": "VENUE_UNAVAILABLE", "message": "venue SIM is unavailable",
               "venue": "SIM"}
DROP = "drop"


class ScriptedServer:
    """HTTP/1.1 on 127.0.0.1: answers each request with the next step of ``script``
    (``(status, headers, body)`` or ``DROP``: close the connection without answering), the
    last step repeating; records every request's (method, target, body)."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, bytes]] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = next((int(h.split(":", 1)[1]) for h in lines[1:]
                               if h.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append((method, target, body))
                step = self.script[min(len(self.requests), len(self.script)) - 1]
                if step == DROP:
                    writer.transport.abort()
                    return
                status, headers, payload = step
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n{extra}\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def test_a_get_answered_503_is_retried_after_retry_after_then_succeeds():
    async with ScriptedServer((503, {"Retry-After": "0.05"}, UNAVAILABLE),
                              (200, {}, BOOK)) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            book = await client.orderbook("SIM-SPOT-BTC-USDT")
    assert book.update_id == 7 and book.bids[0].price == 100.0 and book.asks[0].quantity == 2.0
    assert [r[0] for r in server.requests] == ["GET", "GET"]
    assert server.requests[0][1] == server.requests[1][1] == \
        "/orderbook?market=SIM-SPOT-BTC-USDT"


async def test_retries_are_bounded_and_the_last_error_is_raised():
    async with ScriptedServer((503, {"Retry-After": "0"}, UNAVAILABLE)) as server, \
            asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s", retries=2) as client:
            with pytest.raises(VenueUnavailable) as caught:
                await client.markets("SIM")
    assert len(server.requests) == 3  # the first try and two retries
    err = caught.value
    assert (err.status, err.code, err.venue, err.retry_after) == (503, "VENUE_UNAVAILABLE",
                                                                   "SIM", 0.0)


async def test_a_retry_after_longer_than_the_bound_is_not_waited_for():
    async with ScriptedServer((429, {"Retry-After": "3600"}, {
            "code": "RATE_LIMITED", "message": "rate limit exceeded"})) as server, \
            asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(AstraError) as caught:
                await client.trades("SIM-SPOT-BTC-USDT")
    assert len(server.requests) == 1
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429, "RATE_LIMITED", 3600.0)


async def test_an_order_without_client_order_id_is_never_sent_twice():
    async with ScriptedServer(DROP, (200, {}, ORDER)) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(TransportError) as caught:
                await client.place_order("SIM-SPOT-BTC-USDT", "BUY", "LIMIT", 0.001, 50000.0)
    assert len(server.requests) == 1 and server.requests[0][:2] == ("POST", "/orders")
    assert caught.value.sent is True  # it reached the server: the order may exist
    assert caught.value.code == "TRANSPORT_ERROR"


async def test_an_order_without_client_order_id_answered_503_is_not_retried():
    async with ScriptedServer((503, {"Retry-After": "0"}, UNAVAILABLE),
                              (200, {}, ORDER)) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(VenueUnavailable):
                await client.place_order("SIM-SPOT-BTC-USDT", "BUY", "LIMIT", 0.001, 50000.0)
    assert len(server.requests) == 1


async def test_an_order_with_client_order_id_is_retried_with_the_same_body():
    async with ScriptedServer(DROP, (200, {}, ORDER)) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            order = await client.place_order("SIM-SPOT-BTC-USDT", "BUY", "LIMIT", 0.001,
                                             50000.0, client_order_id="c-1")
    assert (order.order_id, order.client_order_id, order.status) == ("42", "c-1", "NEW")
    assert len(server.requests) == 2
    assert server.requests[0][2] == server.requests[1][2]
    assert msgspec.json.decode(server.requests[0][2]) == {
        "market": "SIM-SPOT-BTC-USDT", "side": "BUY", "type": "LIMIT", "quantity": 0.001,
        "price": 50000.0, "clientOrderId": "c-1"}


async def test_deletes_and_other_posts_are_sent_once():
    async with ScriptedServer(DROP) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(TransportError):
                await client.cancel_order("SIM-SPOT-BTC-USDT", "42")
            with pytest.raises(TransportError):
                await client.request_quote("acc", "BTC", "USDT", from_amount="0.01")
            with pytest.raises(TransportError):
                await client.create_api_key(["read"])
    assert [r[0] for r in server.requests] == ["DELETE", "POST", "POST"]


async def test_an_api_error_body_becomes_its_exception_class_with_the_parameter():
    body = {"code": "MARKET_NOT_FOUND", "message": "market 'SIM-SPOT-X-Y' not found",
            "parameter": "market"}
    async with ScriptedServer((404, {}, body)) as server, asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(MarketNotFound) as caught:
                await client.orderbook("SIM-SPOT-X-Y")
    err = caught.value
    assert (err.status, err.code, err.message, err.parameter) == (
        404, "MARKET_NOT_FOUND", "market 'SIM-SPOT-X-Y' not found", "market")


async def test_a_body_that_is_not_the_error_json_still_raises_with_the_status():
    async with ScriptedServer((502, {}, b"<html>bad gateway</html>")) as server, \
            asyncio.timeout(BOUND):
        async with AsyncAstra(server.url, "k.s") as client:
            with pytest.raises(AstraError) as caught:
                await client.exchanges()
    assert (caught.value.status, caught.value.code) == (502, "HTTP_502")
    assert "bad gateway" in caught.value.message


async def test_a_refused_connection_is_a_transport_error_not_sent():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncAstra(f"http://127.0.0.1:{port}", "k.s", retries=1) as client, \
            asyncio.timeout(BOUND):
        with pytest.raises(TransportError) as caught:
            await client.place_order("SIM-SPOT-BTC-USDT", "BUY", "LIMIT", 0.001, 50000.0)
    assert caught.value.sent is False and "cannot connect" in caught.value.message


async def test_a_session_passed_in_is_used_and_left_open():
    import aiohttp

    async with ScriptedServer((200, {}, BOOK)) as server, asyncio.timeout(BOUND):
        async with aiohttp.ClientSession() as session:
            async with AsyncAstra(server.url, "k.s", session=session) as client:
                await client.orderbook("SIM-SPOT-BTC-USDT", 1)
            assert not session.closed
    assert server.requests[0][1] == "/orderbook?market=SIM-SPOT-BTC-USDT&depth=1"
