"""A client that stops reading is dropped; it never stalls the feed or other clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import aiohttp

from astra.sim import SimExchange, SimServer, WsLimits

STREAMS = "/".join(
    f"{s}@{c}"
    for s in ("btcusdt", "ethusdt", "solusdt")
    for c in ("depth@100ms", "depth20@100ms", "aggTrade", "trade", "bookTicker")
)


async def _stalled_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake over a socket with a tiny receive buffer, never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /sstream/stream?streams={STREAMS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    assert b"101" in status
    reader._transport.pause_reading()  # stop reading: the kernel buffers fill up
    return reader, writer


async def test_slow_client_is_dropped_and_fast_client_keeps_flowing():
    limits = WsLimits(max_streams=1024, messages_per_second=5, ping_interval=180.0, max_queue=50)
    async with SimServer(SimExchange(seed=2, ws_limits={"spot": limits})) as sim:
        side = sim.exchange.sides["spot"]
        _, stalled = await _stalled_client(sim.port)
        url = f"ws://127.0.0.1:{sim.port}/sstream/stream?streams={STREAMS}"
        received = 0
        last_u = None
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url) as fast,
            asyncio.timeout(60),
        ):
            assert len(side.ws.connections) == 2
            while len(side.ws.connections) > 1:  # until the stalled one is gone
                msg = json.loads((await fast.receive(timeout=5)).data)
                received += 1
                if msg["stream"] == "btcusdt@depth@100ms":
                    if last_u is not None:  # the fast client's chain never broke
                        assert msg["data"]["U"] == last_u + 1
                    last_u = msg["data"]["u"]
            # After the drop, the fast client still gets every event, in sequence.
            for _ in range(200):
                msg = json.loads((await fast.receive(timeout=5)).data)
                if msg["stream"] == "btcusdt@depth@100ms":
                    assert msg["data"]["U"] == last_u + 1
                    last_u = msg["data"]["u"]
        stalled.close()
    assert received > 50
