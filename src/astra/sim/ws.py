"""The simulator's market-data WebSocket endpoints, as the Aster docs describe them.

Paths (per side, ``/sstream`` spot and ``/fstream`` perpetual): raw ``/ws/<stream>[/<stream>…]``
and combined ``/stream?streams=a/b`` (payloads wrapped as ``{"stream","data"}``); live
``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``/``GET_PROPERTY``
(``combined``) with the documented error messages.

Streams named in the URL (raw or combined) that are not streams of this side (an unknown
symbol, channel, cadence or interval) are ignored, as Binance-style servers do: the connection
opens, the known streams are served and an unknown one delivers nothing (nor is it listed by
``LIST_SUBSCRIPTIONS``). A live ``SUBSCRIBE`` naming one is answered with an error instead. A
raw path of one segment that is no stream name at all is taken for a listenKey: when it is not
a live one, the handshake is refused (400, -1125), so a client with a dead key learns at once.

Rules enforced: at most ``max_streams`` streams per connection (1024 spot, 200 perpetual);
incoming messages per second limited (5 spot, 10 perpetual): a connection over the limit is
closed (1008); server pings every ``ping_interval`` (3 min spot, 5 min perpetual) and a
connection that does not answer is closed; a connection lives at most ``max_lifetime``
(24 h). A client that does not read fast enough never slows the feed or other clients: its
queue is bounded and, when it overflows, the connection is closed (1013) with a reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from astra.net import BoundedSender

from .feeds import StreamHub, parse_stream
from .state import MarketState

__all__ = ["UserStreamRoute", "WsLimits", "WsSide"]

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_encode = msgspec.json.Encoder().encode


class UserStreamRoute(Protocol):
    """The user-data streams sharing ``/ws/<…>`` with market data (``userstream.UserStreams``,
    which imports this module: hence a Protocol here rather than an import of it)."""

    def is_key(self, value: str) -> bool: ...
    async def serve(self, request: web.Request, value: str) -> web.StreamResponse: ...


@dataclass(slots=True)
class WsLimits:
    max_streams: int
    messages_per_second: int
    ping_interval: float
    max_lifetime: float = 24 * 3600.0
    max_queue: int = 2000  # frames waiting for one slow client before it is dropped
    send_buffer: int = 256 * 1024  # kernel send buffer per socket: bounds hidden backlog

    @classmethod
    def for_kind(cls, kind: str) -> WsLimits:
        if kind == "perp":
            return cls(max_streams=200, messages_per_second=10, ping_interval=300.0)
        return cls(max_streams=1024, messages_per_second=5, ping_interval=180.0)


class _Connection(BoundedSender):
    """One client socket: its subscriptions, combined flag and message rate."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        combined: bool,
        limits: WsLimits,
    ) -> None:
        super().__init__(ws, transport, limits.max_queue, send_buffer=limits.send_buffer)
        self.combined = combined
        self.streams: list[str] = []
        self._arrivals: deque[float] = deque()

    def over_rate(self, limit: int) -> bool:
        now = time.monotonic()
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals and now - arrivals[0] >= 1.0:
            arrivals.popleft()
        return len(arrivals) > limit


class WsSide:
    """WebSocket endpoints of one side (spot or perpetual) over its stream hub."""

    def __init__(
        self,
        kind: str,
        hub: StreamHub,
        markets: dict[str, MarketState],
        limits: WsLimits | None = None,
    ) -> None:
        self.kind = kind
        self.hub = hub
        self.markets = markets  # by lowercase stream id
        self.limits = limits or WsLimits.for_kind(kind)
        self.connections: set[_Connection] = set()
        self.user_streams: UserStreamRoute | None = None  # serves /ws/<listenKey> when set

    def drop_all(self, reason: str = "server reset") -> int:
        """Close every connection of this side (used to exercise client reconnects)."""
        for conn in tuple(self.connections):
            conn.close(WSCloseCode.GOING_AWAY, reason)
        return len(self.connections)

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("streams", "")
        if self.user_streams is not None and self.user_streams.is_key(tail):
            return await self.user_streams.serve(request, tail)
        names = [s for s in tail.split("/") if s]
        if len(names) == 1 and "@" not in names[0] and not names[0].startswith("!"):
            return web.json_response(
                {"code": -1125, "msg": "This listenKey does not exist."}, status=400
            )
        return await self._serve(request, names, combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        names = request.query.get("streams", "")
        return await self._serve(request, [s for s in names.split("/") if s], combined=True)

    async def _serve(
        self, request: web.Request, streams: list[str], combined: bool
    ) -> web.StreamResponse:
        if len(streams) > self.limits.max_streams:
            return web.json_response(
                {
                    "code": 2,
                    "msg": f"Invalid request: too many streams (max {self.limits.max_streams})",
                },
                status=400,
            )
        known = [n for n in streams if parse_stream(n, self.kind, self.markets) is None]
        ws = await self.open(request)
        conn = _Connection(ws, request.transport, combined, self.limits)
        self._subscribe(conn, known)  # unknown names are ignored: they deliver nothing
        await self.run(conn, ws)
        return ws

    async def open(self, request: web.Request) -> web.WebSocketResponse:
        """The WebSocket handshake, with this side's heartbeat and buffer limits."""
        limits = self.limits
        ws = web.WebSocketResponse(
            heartbeat=limits.ping_interval, max_msg_size=65536, writer_limit=limits.send_buffer
        )
        await ws.prepare(request)
        return ws

    async def run(self, conn: _Connection, ws: web.WebSocketResponse) -> None:
        """Serve ``conn`` until it closes (control messages, message rate, lifetime); then
        unsubscribe its streams and let its writer flush."""
        self.connections.add(conn)  # so drop_all / shutdown close it too
        writer = asyncio.create_task(conn.writer())
        lifetime = asyncio.get_running_loop().call_later(
            self.limits.max_lifetime, conn.close, WSCloseCode.GOING_AWAY, "connection lifetime"
        )
        try:
            async for msg in ws:
                if writer.done():
                    break
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.over_rate(self.limits.messages_per_second):
                    conn.close(WSCloseCode.POLICY_VIOLATION, "too many messages per second")
                    break
                data = (
                    msg.data if msg.type == WSMsgType.TEXT else msg.data.decode("utf-8", "replace")
                )
                reply = self._control(conn, data)
                if reply is not None:
                    conn.deliver(_encode(reply))
        finally:
            lifetime.cancel()
            for name in conn.streams:
                self.hub.unsubscribe(conn, name)
            self.connections.discard(conn)
            if conn.close_reason is None:
                conn.close(WSCloseCode.OK, "")
            try:
                await asyncio.wait_for(writer, 5)
            except (TimeoutError, ConnectionError):
                writer.cancel()

    def _subscribe(self, conn: _Connection, streams: list[str]) -> None:
        for name in streams:
            if name not in conn.streams:
                conn.streams.append(name)
                self.hub.subscribe(conn, name)

    def _control(self, conn: _Connection, text: str) -> dict | None:
        """Handle one client message; returns the reply to send."""
        try:
            req = json.loads(text)
        except json.JSONDecodeError as exc:
            return {
                "code": 3,
                "msg": f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}",
            }
        if not isinstance(req, dict):
            return {"code": 2, "msg": "Invalid request: expected a JSON object"}
        rid = req.get("id")
        if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or rid < 0):
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
        method = req.get("method")
        if method is None:
            return {
                "code": 2,
                "msg": f"Invalid request: missing field `method` at line 1 column {len(text)}",
            }
        if method not in _METHODS:
            column = text.find(json.dumps(method)) + len(json.dumps(method))
            return {
                "code": 2,
                "msg": f"Invalid request: unknown variant `{method}`, expected one "
                "of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
                f"`SET_PROPERTY`, `GET_PROPERTY` at line 1 column {column}",
                "id": rid,
            }
        params = req.get("params", [])
        if not isinstance(params, list):
            return {"code": 2, "msg": "Invalid request: params must be an array", "id": rid}
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._subscription(conn, method, params, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": rid}
        if not params or not isinstance(params[0], str):
            return {"code": 2, "msg": "Invalid request: property name must be a string", "id": rid}
        if params[0] != "combined":
            return {"code": 0, "msg": "Unknown property", "id": rid}
        if method == "GET_PROPERTY":
            if len(params) != 1:
                return {"code": 2, "msg": "Invalid request: too many parameters", "id": rid}
            return {"result": conn.combined, "id": rid}
        if len(params) != 2:
            return {"code": 2, "msg": "Invalid request: too many parameters", "id": rid}
        if not isinstance(params[1], bool):
            return {"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid}
        conn.combined = params[1]
        return {"result": None, "id": rid}

    def _subscription(self, conn: _Connection, method: str, params: list, rid: int | None) -> dict:
        for name in params:
            if not isinstance(name, str):
                return {
                    "code": 2,
                    "msg": "Invalid request: stream name must be a string",
                    "id": rid,
                }
            problem = parse_stream(name, self.kind, self.markets)
            if problem is not None:
                return {"code": 2, "msg": f"Invalid request: {problem}", "id": rid}
        if method == "UNSUBSCRIBE":
            for name in params:
                if name in conn.streams:
                    conn.streams.remove(name)
                    self.hub.unsubscribe(conn, name)
            return {"result": None, "id": rid}
        new = [n for n in dict.fromkeys(params) if n not in conn.streams]
        if len(conn.streams) + len(new) > self.limits.max_streams:
            return {
                "code": 2,
                "msg": f"Invalid request: too many streams (max {self.limits.max_streams})",
                "id": rid,
            }
        self._subscribe(conn, new)
        return {"result": None, "id": rid}
