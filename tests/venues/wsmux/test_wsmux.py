"""The shared multiplexing machinery on its own, over a real loopback WebSocket speaking a
toy protocol: ``{"op", "keys"}`` requests, ``{"key", "n"}`` data. The venues' own tests
(binance/test_streams.py, kucoin/test_multiplex.py, kraken/multiplex, okx/test_okx_stream.py)
cover each wire protocol on top of it."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from tests.venues.loopback import serve

from astra.venues.retry import backoff
from astra.venues.wsmux import BatchedConnection, MuxPool


class ToyServer:
    """Records every request frame per connection; streams data for subscribed keys."""

    def __init__(self) -> None:
        self.requests: list[list[dict]] = []  # per connection, in order
        self.sockets: list[web.WebSocketResponse] = []
        self.closed = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        mine: list[dict] = []
        self.requests.append(mine)
        self.sockets.append(ws)
        async for msg in ws:
            frame = json.loads(msg.data)
            mine.append(frame)
            if frame["op"] == "subscribe":
                for key in frame["keys"]:
                    await ws.send_str(json.dumps({"key": key, "n": len(self.requests)}))
        self.closed += 1
        return ws

    async def until(self, condition) -> None:
        """Until ``condition()`` holds (it may watch the client side too): polled, bounded."""
        async with asyncio.timeout(5):
            while not condition():  # noqa: ASYNC110 - watches client and server alike
                await asyncio.sleep(0.01)


class ToyConnection(BatchedConnection):
    name = "toy"

    def _frames(self, op: str, keys: list) -> list[str]:
        return [json.dumps({"op": op, "keys": keys})]

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError("closed by the venue")
            data = json.loads(msg.data)
            self.mark_alive()
            for consumer in self.consumers.get(data["key"], ()):
                consumer.on_data(data)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_data(self, data: dict) -> None:
        self.events.append(("data", data["n"]))

    def on_reset(self, reason: str) -> None:
        self.events.append(("reset", reason))


@pytest.fixture
async def toy():
    server = ToyServer()
    app = web.Application()
    app.router.add_get("/ws", server.handle)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        yield server, session, base.replace("http", "ws", 1) + "/ws"


async def test_pool_fills_a_connection_to_capacity_then_opens_another_and_closes_empty_ones(toy):
    server, session, url = toy
    pool = MuxPool(lambda: ToyConnection(lambda: session, url), capacity=2)
    a, b, c = Recorder(), Recorder(), Recorder()
    try:
        first = pool.add("a", a)
        assert pool.add("b", b) is first
        second = pool.add("c", c)
        assert second is not first and pool.add("a", Recorder()) is first  # a key stays put
        await server.until(lambda: len(server.requests) == 2 and all(server.requests))
        # Keys added before the connection opened all go out in its first request.
        assert server.requests[0] == [{"op": "subscribe", "keys": ["a", "b"]}]
        assert server.requests[1] == [{"op": "subscribe", "keys": ["c"]}]
        pool.remove(second, "c", c)
        assert pool.connections == [first]
        await server.until(lambda: server.closed == 1)  # its last key gone: closed
        assert server.requests[1] == [{"op": "subscribe", "keys": ["c"]}]  # no unsubscribe
    finally:
        await pool.close()


async def test_one_turns_requests_go_out_together_in_order(toy):
    server, session, url = toy
    conn = ToyConnection(lambda: session, url)
    conn.add("a", Recorder())
    try:
        await server.until(lambda: server.requests and server.requests[0])
        conn.add("b", Recorder())
        conn.add("c", Recorder())
        conn.resubscribe("a")  # unsubscribe + subscribe: never reordered
        conn.remove("c", next(iter(conn.consumers["c"])))
        await server.until(lambda: len(server.requests[0]) >= 5)
        assert server.requests[0] == [
            {"op": "subscribe", "keys": ["a"]},
            {"op": "subscribe", "keys": ["b", "c"]},
            {"op": "unsubscribe", "keys": ["a"]},
            {"op": "subscribe", "keys": ["a"]},
            {"op": "unsubscribe", "keys": ["c"]},
        ]
    finally:
        await conn.close()


async def test_a_lost_connection_resets_every_consumer_before_the_next_ones_data(toy):
    server, session, url = toy
    conn = ToyConnection(lambda: session, url)
    a, b = Recorder(), Recorder()
    conn.add("a", a)
    conn.add("b", b)
    try:
        await server.until(lambda: len(a.events) == 1 and len(b.events) == 1)
        await server.sockets[0].close()
        await server.until(lambda: len(a.events) == 3 and len(b.events) == 3)
    finally:
        await conn.close()
    for rec in (a, b):
        assert [kind for kind, _ in rec.events] == ["data", "reset", "data"]
        assert rec.events[1][1] == "reconnecting: ConnectionError('closed by the venue')"
        assert rec.events[2] == ("data", 2)  # from the second connection
    assert server.requests[1] == [{"op": "subscribe", "keys": ["a", "b"]}]
    assert conn.connections == 2


class ConfirmingToy(ToyConnection):
    """The toy protocol where a key's first data on a connection confirms its subscription."""

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError("closed by the venue")
            data = json.loads(msg.data)
            if data["key"] not in self.live:
                self._confirmed(data["key"])
            for consumer in self.consumers.get(data["key"], ()):
                consumer.on_data(data)


class LiveRecorder(Recorder):
    def on_live(self) -> None:
        self.events.append(("live", None))


async def test_consumers_hear_when_their_key_is_live_and_when_it_is_not(toy):
    server, session, url = toy
    conn = ConfirmingToy(lambda: session, url)
    a, b, late = LiveRecorder(), LiveRecorder(), LiveRecorder()
    conn.add("a", a)
    conn.add("b", b)
    try:
        await server.until(lambda: len(a.events) == 2 and len(b.events) == 2)
        assert conn.live == {"a", "b"}
        conn.add("a", late)  # already live: no new subscribe, so it is told at once
        assert late.events == [("live", None)]
        conn.remove("b", b)  # unsubscribed: no longer live
        assert conn.live == {"a"}
        await server.sockets[0].close()
        await server.until(lambda: len(a.events) == 5 and len(late.events) == 4)
        assert conn.live == {"a"}  # confirmed again on the second connection
    finally:
        await conn.close()
    assert [kind for kind, _ in a.events] == ["live", "data", "reset", "live", "data"]
    assert [kind for kind, _ in late.events] == ["live", "reset", "live", "data"]
    assert [kind for kind, _ in b.events] == ["live", "data"]


def test_reconnect_delays_back_off_until_data_flows_and_retirement_is_immediate():
    conn = ToyConnection(lambda: None, "ws://127.0.0.1:9/unused")  # type: ignore[arg-type]
    failure = ConnectionError("refused")
    assert [conn._delay(failure) for _ in range(4)] == [backoff(n) for n in range(4)]
    assert conn._delay(None) == 0.0  # a planned retirement
    conn.mark_alive()
    assert conn._delay(failure) == backoff(0)


def test_a_pool_needs_room_for_one_key():
    with pytest.raises(ValueError, match="capacity"):
        MuxPool(lambda: None, capacity=0)  # type: ignore[arg-type]
