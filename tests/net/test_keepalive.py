"""``astra.net.keepalive`` against scripted HTTP/1.1 servers on loopback sockets: the request
as written on the wire, answers read (lengths, chunks, a body ended by the close, interim
1xx), connections reused only after a complete keep-alive answer, and every failure (a peer
closing mid-answer, a timeout, garbage, oversized answers, a second unasked answer, header
injection) closing the connection it happened on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from astra.net.keepalive import MAX_HEADER_BYTES, BadAnswer, ConnectFailed, KeepAliveHttp

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server running ``script`` per connection; ``requests`` holds each request
    head and body as read, ``connections`` counts accepted sockets."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed = asyncio.Event()  # set when a connection's reader sees EOF
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.script(reader, writer, self)
        writer.close()


async def until(condition) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - what the sockets do, seen from outside
            await asyncio.sleep(0.01)


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def echo_path(reader, writer, server: Server) -> None:
    """Answers every request on the connection with its request line."""
    while (req := await server.read_request(reader)) is not None:
        writer.write(answer(req[0].split(b"\r\n")[0]))
        await writer.drain()


async def test_the_request_as_written_and_the_answer_as_read():
    async with Server(echo_path) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        got = await http.request("POST", server.url + "/api/v3/order?x=1", body=b"a=1&b=2",
                                 headers={"Content-Type": "application/x-www-form-urlencoded",
                                          "X-MBX-APIKEY": "key"})
    port = server.url.rsplit(":", 1)[1]
    head, body = server.requests[0]
    assert head == (f"POST /api/v3/order?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\nX-MBX-APIKEY: key\r\n"
                    "Content-Length: 7\r\n\r\n").encode()
    assert body == b"a=1&b=2"
    assert (got.status, got.reason, got.body) == (200, "OK", b"POST /api/v3/order?x=1 HTTP/1.1")
    assert got.headers == {"Content-Type": "application/json", "Content-Length": "31"}


async def test_one_connection_serves_request_after_request():
    async with Server(echo_path) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        bodies = [(await http.request("GET", f"{server.url}/n/{i}")).body for i in range(5)]
    assert bodies == [f"GET /n/{i} HTTP/1.1".encode() for i in range(5)]
    assert server.connections == 1
    assert b"Content-Length" not in server.requests[0][0]  # a GET without a body


async def test_concurrent_requests_each_get_their_own_answer_and_idle_connections_are_bounded():
    async def slow_echo(reader, writer, server):
        while (req := await server.read_request(reader)) is not None:
            await asyncio.sleep(0.01)
            writer.write(answer(req[0].split(b"\r\n")[0]))

    async with Server(slow_echo) as server, KeepAliveHttp(max_idle=4) as http, asyncio.timeout(20):
        got = await asyncio.gather(*(http.request("GET", f"{server.url}/c/{i}")
                                     for i in range(20)))
        assert [a.body for a in got] == [f"GET /c/{i} HTTP/1.1".encode() for i in range(20)]
        assert server.connections == 20
        assert sum(len(idle) for idle in http._idle.values()) == 4
        again = await http.request("GET", f"{server.url}/after")
        assert again.body == b"GET /after HTTP/1.1" and server.connections == 20


async def test_chunked_answers_and_a_body_ended_by_the_close_are_read_whole():
    async def chunked(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with Server(chunked) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        assert (await http.request("GET", server.url + "/")).body == b'{"a":1}'
        assert (await http.request("GET", server.url + "/")).body == b"until the end"
        assert server.connections == 1 and not any(http._idle.values())


async def test_an_interim_100_continue_is_skipped():
    async def interim(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"done", "201 Created"))
        await reader.read()  # until the client closes

    async with Server(interim) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        got = await http.request("POST", server.url + "/", body=b"x")
    assert (got.status, got.reason, got.body) == (201, "Created", b"done")


async def test_connection_close_and_http_1_0_answers_are_not_reused():
    async def closing(reader, writer, server):
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(answer(b"one", extra="Connection: close\r\n"))
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        await writer.drain()
        await reader.read()  # until the client closes

    async with Server(closing) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        assert (await http.request("GET", server.url + "/")).body == b"one"
        assert (await http.request("GET", server.url + "/")).body == b"two"
        assert (await http.request("GET", server.url + "/")).body == b"two"
        assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_written_to():
    async def one_per_connection(reader, writer, server):
        req = await server.read_request(reader)
        writer.write(answer(req[0].split(b"\r\n")[0]))
        await writer.drain()  # then close (its keep-alive timeout, say)

    async with Server(one_per_connection) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        await http.request("GET", server.url + "/first")
        (conn,) = next(iter(http._idle.values()))
        await until(lambda: conn.closed)  # the server's FIN reaches the idle connection
        got = await http.request("GET", server.url + "/second")
    assert got.body == b"GET /second HTTP/1.1" and server.connections == 2
    assert len(server.requests) == 2  # nothing was written into the closed one


async def test_idle_connections_older_than_idle_seconds_are_not_reused():
    async with (Server(echo_path) as server, KeepAliveHttp(idle_seconds=0.05) as http,
                asyncio.timeout(10)):
        await http.request("GET", server.url + "/a")
        await asyncio.sleep(0.1)
        await http.request("GET", server.url + "/b")
    assert server.connections == 2


async def test_a_peer_closing_mid_answer_is_a_connection_error():
    async def truncated(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")
        await writer.drain()

    async with Server(truncated) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(ConnectionError, match="before its answer was complete"):
            await http.request("POST", server.url + "/", body=b"x")
        assert not any(http._idle.values())


async def test_a_timeout_closes_the_connection_and_the_next_request_opens_another():
    async def silent_first(reader, writer, server):
        while (req := await server.read_request(reader)) is not None:
            if server.connections == 1:
                continue  # never answers the first connection
            writer.write(answer(req[0].split(b"\r\n")[0]))

    async with Server(silent_first) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await http.request("POST", server.url + "/slow", body=b"x")
        await asyncio.wait_for(server.closed.wait(), 5)  # the server saw it closed
        got = await http.request("GET", server.url + "/next")
    assert got.body == b"GET /next HTTP/1.1" and server.connections == 2


@pytest.mark.parametrize(("wire", "message"), [
    (b"SPDY/9 200 OK\r\n\r\n", "expected HTTP/"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "invalid"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", "headers exceed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"a" * 2048, "body exceeds"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     "upgrade"),
])
async def test_garbage_and_oversized_answers_are_bad_answers(wire, message):
    async def bad(reader, writer, server):
        await server.read_request(reader)
        writer.write(wire)
        await writer.drain()
        await reader.read()  # until the client closes

    async with Server(bad) as server, KeepAliveHttp(max_body=1024) as http, asyncio.timeout(10):
        with pytest.raises(BadAnswer, match=f"(?i){message}"):
            await http.request("GET", server.url + "/")
        assert not any(http._idle.values())


async def test_a_second_answer_nobody_asked_for_closes_the_connection():
    async def twice(reader, writer, server):
        await server.read_request(reader)
        writer.write(answer(b"first") + answer(b"second"))
        await writer.drain()
        await reader.read()  # until the client closes

    async with Server(twice) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        assert (await http.request("GET", server.url + "/")).body == b"first"
        assert not any(http._idle.values())  # never read "second" as another answer


@pytest.mark.parametrize("headers", [{"X-MBX-APIKEY": "key\r\nX-Evil: 1"},
                                     {"X-A\nB": "v"}, {"X-Nul": "a\0b"}])
async def test_header_injection_is_refused_before_anything_is_written(headers):
    async with Server(echo_path) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(ValueError, match="CR, LF and NUL"):
            await http.request("POST", server.url + "/", body=b"x", headers=headers)
    assert server.connections == 0 and server.requests == []


async def test_urls_and_a_closed_client_are_refused():
    http = KeepAliveHttp()
    with pytest.raises(ValueError, match="not an http"):
        await http.request("GET", "ftp://127.0.0.1/x")
    await http.close()
    with pytest.raises(ConnectionError, match="closed"):
        await http.request("GET", "http://127.0.0.1:9/x")


async def test_close_aborts_a_request_in_flight():
    async def never(reader, writer, server):
        await server.read_request(reader)
        await reader.read()

    async with Server(never) as server, asyncio.timeout(10):
        http = KeepAliveHttp()
        pending = asyncio.create_task(http.request("GET", server.url + "/"))
        await until(lambda: server.requests)
        await http.close()
        with pytest.raises(ConnectionError):
            await pending


# -- review: answers split anywhere, bounds as bytes arrive, truncations, races with close


async def test_an_answer_split_at_every_byte_boundary_is_read_whole():
    wire = (b"HTTP/1.1 201 Created fine\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")

    async def split(reader, writer, server):
        cut = 0
        while await server.read_request(reader) is not None:
            cut += 1
            writer.write(wire[:cut])
            await writer.drain()
            await asyncio.sleep(0.002)  # two segments, read apart
            writer.write(wire[cut:])

    async with Server(split) as server, KeepAliveHttp() as http, asyncio.timeout(20):
        got = [await http.request("GET", server.url + "/") for _ in range(len(wire) - 1)]
    assert {(a.status, a.reason, a.body) for a in got} == {(201, "Created fine", b'{"a":1}')}
    assert {tuple(a.headers.items()) for a in got} == {
        (("X-A", "b"), ("Transfer-Encoding", "chunked"))}
    assert server.connections == 1


async def test_headers_that_never_end_are_refused_as_they_arrive():
    async def endless(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(64):  # 64 MiB unless the client stops reading
            writer.write(b"a" * (1 << 20))
            await writer.drain()

    async with Server(endless) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(BadAnswer, match="headers exceed"):
            await http.request("GET", server.url + "/")


async def test_a_body_ended_by_a_reset_not_a_close_is_a_connection_error():
    async def reset(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n{\"partial")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST: the body was cut, not ended

    async with Server(reset) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(ConnectionError):
            await http.request("GET", server.url + "/")


async def test_close_during_a_body_ended_by_the_close_fails_the_request():
    async def partial(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n{\"partial")
        await writer.drain()
        await reader.read()

    async with Server(partial) as server, asyncio.timeout(10):
        http = KeepAliveHttp()
        pending = asyncio.create_task(http.request("GET", server.url + "/"))
        await until(lambda: http._busy and next(iter(http._busy))._body)
        await http.close()
        with pytest.raises(ConnectionError):
            await pending  # not the truncated body as an answer


async def test_close_while_connecting_writes_nothing():
    async with Server(echo_path) as server, asyncio.timeout(10):
        http = KeepAliveHttp()
        pending = asyncio.create_task(http.request("POST", server.url + "/", body=b"x"))
        await asyncio.sleep(0)  # the request is connecting
        await http.close()
        with pytest.raises(ConnectFailed):
            await pending
        await server.closed.wait()
    assert server.requests == []


async def test_a_connection_lost_before_the_write_is_not_written_to():
    async with Server(echo_path) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        origin, _ = http._split(server.url + "/")
        conn = await http._connect(origin)
        conn.connection_lost(None)  # as when the peer closes right after accepting
        with pytest.raises(ConnectFailed):
            async with asyncio.timeout(1):  # (it waited for an answer forever)
                await conn.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.abort()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /y"), ("GET", "/a b"), ("GET", "/a\0"),
    ("GET /z HTTP/1.1\r\n\r\nGET", "/")])
async def test_a_second_request_in_the_request_line_is_refused(method, path):
    async with Server(echo_path) as server, KeepAliveHttp() as http, asyncio.timeout(10):
        with pytest.raises(ValueError, match="request line"):
            await http.request(method, server.url + path)
    assert server.connections == 0


async def test_max_idle_zero_keeps_no_connection_and_answers():
    async with Server(echo_path) as server, KeepAliveHttp(max_idle=0) as http, asyncio.timeout(10):
        assert (await http.request("GET", server.url + "/a")).body == b"GET /a HTTP/1.1"
        assert not any(http._idle.values())


async def test_cancelling_at_any_point_never_pools_a_connection_mid_answer():
    async def slow_split(reader, writer, server):
        while (req := await server.read_request(reader)) is not None:
            line = answer(req[0].split(b"\r\n")[0])
            cut = len(req[0]) % len(line)
            writer.write(line[:cut])
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(line[cut:])

    async with Server(slow_split) as server, KeepAliveHttp(max_idle=2) as http, asyncio.timeout(30):
        for i in range(150):
            tasks = [asyncio.create_task(http.request("GET", f"{server.url}/{i}/{j}"))
                     for j in range(3)]
            await asyncio.sleep((i % 7) * 0.0005)
            tasks[i % 3].cancel()
            for j, task in enumerate(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    assert (await task).body == f"GET /{i}/{j} HTTP/1.1".encode()
            assert not http._busy
            for idle in http._idle.values():
                assert all(c._waiter is None and c._complete for c in idle)


async def test_https_to_a_self_signed_loopback_server(tmp_path):
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))

    async def serve(reader, writer):
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer(head.split(b"\r\n")[0]))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with asyncio.timeout(10):
            http = KeepAliveHttp(ssl_context=client_ctx)
            try:
                assert (await http.request("GET", url + "/a")).body == b"GET /a HTTP/1.1"
                assert (await http.request("GET", url + "/b")).body == b"GET /b HTTP/1.1"
                assert sum(len(idle) for idle in http._idle.values()) == 1
            finally:
                await http.close()
            untrusting = KeepAliveHttp()  # the system's CAs: the self-signed cert is refused
            try:
                with pytest.raises(ConnectFailed, match="cannot connect"):
                    await untrusting.request("POST", url + "/", body=b"x")
            finally:
                await untrusting.close()
    finally:
        server.close()
        await server.wait_closed()


async def _silent(reader, writer, server):
    await server.read_request(reader)
    await reader.read()


async def _drop(reader, writer, server):
    await server.read_request(reader)


async def _garbage(reader, writer, server):
    await server.read_request(reader)
    writer.write(b"SPDY/9 200 OK\r\n\r\n")
    await reader.read()


@pytest.mark.parametrize(("script", "raised", "cause"), [
    (None, "ExchangeNotAvailable", ConnectFailed), (_silent, "RequestTimeout", TimeoutError),
    (_drop, "ExchangeNotAvailable", ConnectionError), (_garbage, "ExchangeError", BadAnswer)])
async def test_aster_native_maps_transport_failures_as_ccxt_does(script, raised, cause):
    from ccxt.base.errors import BaseError

    from astra.venues.aster.trading import AsterPrivate

    async with Server(script or echo_path) as server, asyncio.timeout(10):
        http = KeepAliveHttp()
        client = AsterPrivate({"apiKey": "k", "secret": "s", "timeout": 300}, keepalive=http)
        if script is None:  # a port nobody listens on
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client.urls["api"]["sapiPrivate"] = server.url + "/api"
        try:
            with pytest.raises(BaseError) as caught:
                await client.native.request("sapiPrivate", "v3/order", "POST", {"symbol": "X"})
        finally:
            await client.close()
            await http.close()
    assert type(caught.value).__name__ == raised
    assert isinstance(caught.value.__cause__, cause)
