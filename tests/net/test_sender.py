"""BoundedSender on a real aiohttp server over loopback: pre-framed writes are valid frames,
order holds across the direct path and the queue, a stalled client is dropped with 1013 (and
counted) while others keep flowing, control frames still work, compression falls back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from astra.net import BoundedSender
from astra.net.sender import text_frame
from astra.telemetry import Telemetry

SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70_000)


class Server:
    """An aiohttp app whose ``/ws`` handler makes a ``BoundedSender`` per connection and
    keeps it (``senders``) until the client goes; ``compress`` is the response's option."""

    def __init__(self, max_queue: int = 10_000, send_buffer: int = 4096,
                 telemetry: Telemetry | None = None, compress: bool = False) -> None:
        self.max_queue, self.send_buffer = max_queue, send_buffer
        self.telemetry, self.compress = telemetry, compress
        self.senders: list[BoundedSender] = []
        self.joined = asyncio.Condition()
        self.port = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=self.compress, writer_limit=self.send_buffer)
        await ws.prepare(request)
        sender = BoundedSender(ws, request.transport, self.max_queue, abort_after=30.0,
                               send_buffer=self.send_buffer, telemetry=self.telemetry,
                               data_type="ORDERBOOK")
        writer = asyncio.create_task(sender.writer())
        async with self.joined:
            self.senders.append(sender)
            self.joined.notify_all()
        try:
            async for _ in ws:
                if writer.done():
                    break
        finally:
            sender.close(1000, "")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer, 5)
        return ws

    async def sender(self, index: int) -> BoundedSender:
        async with self.joined:
            await self.joined.wait_for(lambda: len(self.senders) > index)
        return self.senders[index]

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class RawClient:
    """A WebSocket client on a plain socket (tiny receive buffer) that can stop and resume
    reading, and parses the server's frames itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 101")
        while await reader.readline() != b"\r\n":
            pass
        return cls(reader, writer)

    def pause(self) -> None:
        self.reader._transport.pause_reading()  # the kernel buffers fill up

    def resume(self) -> None:
        self.reader._transport.resume_reading()

    async def frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame."""
        first, second = await self.reader.readexactly(2)
        assert first & 0x80 and not first & 0x70  # FIN, no RSV bits (not compressed)
        assert not second & 0x80  # a server's frame is never masked
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    def close(self) -> None:
        self.writer.close()


def numbered(i: int, pad: int = 200) -> bytes:
    return b'{"n":%d,"pad":"%s"}' % (i, b"x" * pad)


def test_text_frame_uses_each_length_form():
    assert text_frame(b"") == b"\x81\x00"
    assert text_frame(b"a" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"a" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert text_frame(b"a" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
    for size in SIZES:
        assert text_frame(b"z" * size).endswith(b"z" * size)
        assert len(text_frame(b"z" * size)) == size + (2 if size < 126 else
                                                       4 if size < 65536 else 10)


async def test_direct_frames_of_every_length_form_parse_in_aiohttp():
    async with asyncio.timeout(30), Server(send_buffer=1 << 20).running() as server, \
            aiohttp.ClientSession() as session, session.ws_connect(server.url) as ws:
        sender = await server.sender(0)
        assert sender.direct
        payloads = [bytes([65 + i % 26]) * size for i, size in enumerate(SIZES)]
        for payload in payloads:
            sender.deliver(payload)  # each framed here and written by the flusher
        for payload in payloads:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT
            assert msg.data == payload.decode()


async def test_one_payload_to_many_clients_is_the_same_frame_for_all():
    async with asyncio.timeout(30), Server().running() as server, \
            aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(server.url) for _ in range(3)]
        senders = [await server.sender(i) for i in range(3)]
        payload = numbered(7)
        for sender in senders:
            sender.deliver(payload)
        queued = [sender._queue[0] for sender in senders]  # before the flusher's turn
        assert queued[0] == text_frame(payload)
        assert queued[1] is queued[0] and queued[2] is queued[0]  # framed once
        for ws in sockets:
            assert (await ws.receive()).data == payload.decode()
            await ws.close()


async def test_order_is_kept_across_the_direct_path_and_the_queue():
    async with asyncio.timeout(60), Server().running() as server:
        client = await RawClient.connect(server.port)
        try:
            sender = await server.sender(0)
            assert sender.direct
            client.pause()
            sent = 0
            # Until the transport is paused and frames wait in the queue (the writer's turn).
            while not sender._queue or not sender._protocol._paused:
                sender.deliver(numbered(sent))
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0)
                assert sent < 5000, "the transport never paused"
            for _ in range(50):  # more while queued: they go behind the backlog
                sender.deliver(numbered(sent))
                sent += 1
            assert sender._queue
            client.resume()
            for i in range(sent):
                opcode, payload = await client.frame()
                assert (opcode, payload) == (WSMsgType.TEXT, numbered(i))
            # All read, so all written: the direct path again, still in order.
            assert not sender._queue and not sender._protocol._paused
            for i in range(sent, sent + 20):
                sender.deliver(numbered(i))
            for i in range(sent, sent + 20):
                assert await client.frame() == (WSMsgType.TEXT, numbered(i))
            assert sender.close_reason is None
        finally:
            client.close()


async def test_a_stalled_client_is_dropped_with_1013_and_counted_while_others_flow():
    telemetry = Telemetry()
    async with asyncio.timeout(60), \
            Server(max_queue=200, telemetry=telemetry).running() as server, \
            aiohttp.ClientSession() as session:
        stalled = await RawClient.connect(server.port)
        try:
            stalled_sender = await server.sender(0)
            stalled.pause()
            async with session.ws_connect(server.url) as fast:
                fast_sender = await server.sender(1)
                sent = 0
                while stalled_sender.close_reason is None:  # one fan-out, two clients
                    for sender in (stalled_sender, fast_sender):
                        sender.deliver(numbered(sent))
                    sent += 1
                    msg = await fast.receive()  # the fast client reads every update
                    assert msg.data == numbered(sent - 1).decode()
                    assert sent < 20_000, "the stalled client was never dropped"
                assert stalled_sender.close_reason == (
                    1013, "slow consumer: send queue overflow")
                for i in range(sent, sent + 100):  # the others keep flowing
                    fast_sender.deliver(numbered(i))
                    stalled_sender.deliver(numbered(i))  # ignored: it is closed
                for i in range(sent, sent + 100):
                    assert (await fast.receive()).data == numbered(i).decode()
            value = telemetry.registry.get_sample_value(
                "astra_ws_dropped_clients_total", {"dataType": "ORDERBOOK"})
            assert value == 1.0
            # The stalled client, reading again, finds what was written, then the close.
            stalled.resume()
            received = []
            while True:
                opcode, payload = await stalled.frame()
                if opcode == WSMsgType.CLOSE:
                    break
                received.append(payload)
            assert int.from_bytes(payload[:2], "big") == 1013
            assert payload[2:] == b"slow consumer: send queue overflow"
            assert received == [numbered(i) for i in range(len(received))]  # a prefix
            assert len(received) < sent
        finally:
            stalled.close()


async def test_a_client_ping_is_answered_amid_direct_frames():
    async with asyncio.timeout(30), Server().running() as server, \
            aiohttp.ClientSession() as session, \
            session.ws_connect(server.url, autoping=False) as ws:
        sender = await server.sender(0)
        for i in range(50):
            sender.deliver(numbered(i))
        await ws.ping(b"are you there")
        for i in range(50, 100):
            sender.deliver(numbered(i))
        texts, pongs = [], []
        while len(texts) < 100 or not pongs:
            msg = await ws.receive()
            if msg.type is WSMsgType.PONG:
                pongs.append(msg.data)
            else:
                assert msg.type is WSMsgType.TEXT
                texts.append(msg.data)
        assert pongs == [b"are you there"]
        assert texts == [numbered(i).decode() for i in range(100)]


async def test_finish_closes_after_the_frames_before_it():
    async with asyncio.timeout(30), Server().running() as server, \
            aiohttp.ClientSession() as session, session.ws_connect(server.url) as ws:
        sender = await server.sender(0)
        for i in range(10):
            sender.deliver(numbered(i))
        sender.finish(b'{"bye":1}', 4000, "done")
        got = [(await ws.receive()).data for _ in range(11)]
        assert got == [numbered(i).decode() for i in range(10)] + ['{"bye":1}']
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 4000 and msg.extra == "done"


@pytest.mark.parametrize("client_compress", [15, 0])
async def test_compression_negotiated_falls_back_to_aiohttps_writer(client_compress):
    async with asyncio.timeout(30), Server(compress=True).running() as server, \
            aiohttp.ClientSession() as session, \
            session.ws_connect(server.url, compress=client_compress) as ws:
        sender = await server.sender(0)
        assert sender.direct is (client_compress == 0)
        payloads = [numbered(i, pad=3000) for i in range(30)]
        for payload in payloads:
            sender.deliver(payload)
        for payload in payloads:
            assert (await ws.receive()).data == payload.decode()
