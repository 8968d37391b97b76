"""Live market streams on ``WS /ws``: one connection, many subscriptions.

A connection opens with the query-string form of the reference (``?market=&dataType=``: one
subscription) or with none of market, dataType, exchange (no subscription); either way the
client may then send ``{"op":"subscribe"|"unsubscribe","market":…,"dataType":…,"id":…}``
text messages.

Invariants:
- The query-string subscription is validated before the upgrade (a bad one is an HTTP 4xx, as
  before) and sends no ack: the connection's first frame is its stream's own (an ORDERBOOK
  snapshot). Its market and data type can be unsubscribed by message like any other.
- Client messages are handled one at a time, in the order received: each is finished (a
  subscribe's feed resolved) before the next is read. A subscribe is answered
  ``{"type":"subscribed",…}`` and then that stream's frames, exactly as the query-string form
  sends them; an unsubscribe ``{"type":"unsubscribed",…}``, and no frame of that stream comes
  after it. Acks, errors and stream frames go through the connection's one ``BoundedSender``,
  so the client reads them in that order; a client too slow for them is dropped whole (1013;
  counted under its one data type, or ``MULTI``), every subscription released.
- A bad message gets one ``{"type":"error",…}`` (the code, message and parameter the same fault
  gets over HTTP, and the message's ``id``), changes nothing, and the connection stays open
  (JSON nested deeper than ``MAX_JSON_NESTING`` arrays and objects is refused before it is
  decoded: ``params.check_json_nesting``). A message over ``MAX_WS_MESSAGE_BYTES`` is the
  exception: aiohttp closes with 1009.
- At most ``MAX_WS_SUBSCRIPTIONS`` per connection; (market, dataType) at most once.
- Every subscription's channel is released (the engine's ``remove``) when it is unsubscribed
  or the connection ends, however it ends.
- ``metrics.ws_clients[dataType]`` counts current subscriptions (open connections, of every
  kind, are the gateway's sessions: the ``astra_ws_connections`` gauge).
- Private data types (ORDERS, FILLS, BALANCES) stream only in the query-string form
  (``private.py``); a message asking for one is refused. A subscribe needs the scope the
  handshake needs (``scopes.ROUTE_SCOPES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from astra.core import (
    AstraError,
    Conflict,
    DataType,
    Forbidden,
    InvalidParameter,
    LimitExceeded,
    MissingParameter,
    NotFound,
    WsAck,
    WsError,
    WsId,
)
from astra.core._redact import without_locations
from astra.marketdata.engine import MarketDataEngine
from astra.net import BoundedSender

from .auth import API_KEY, WS_PROTOCOL
from .params import (
    MAX_WS_MESSAGE_BYTES,
    MAX_WS_SUBSCRIPTIONS,
    PRIVATE_DATA_TYPES,
    WS_DATA_TYPES,
    check_json_nesting,
    required,
)
from .scopes import ROUTE_SCOPES
from .sessions import attach_ws

__all__ = ["LiveStreams"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_DATA_TYPES = {d.value: d for d in DataType}
_PUBLIC_TYPES = ", ".join(_DATA_TYPES)
_OPS = ("subscribe", "unsubscribe")
_FIELDS = ("op", "market", "dataType", "id")
_SCOPE = ROUTE_SCOPES[("GET", "/ws")]  # what the handshake of a market stream needs
Key = tuple[str, DataType]  # (market, dataType): one subscription
_MULTI = "MULTI"  # a dropped connection's label when it carries several data types (or none)


class _Connection:
    """One live connection's subscriptions: (market, dataType) -> the engine's ``remove``."""

    __slots__ = ("client", "subscriptions")

    def __init__(self, client: BoundedSender) -> None:
        self.client = client
        self.subscriptions: dict[Key, Callable[[Any], None]] = {}

    def label(self) -> None:
        """The sender's drop-counter label: the one data type it carries, else MULTI."""
        types = {data_type for _, data_type in self.subscriptions}
        self.client.data_type = types.pop().value if len(types) == 1 else _MULTI


class LiveStreams:
    """The handler of live (not replayed, not private) ``WS /ws`` connections."""

    def __init__(
        self, engine: MarketDataEngine, metrics: Any, max_queue: int, send_buffer: int
    ) -> None:
        self.engine, self.metrics = engine, metrics
        self.max_queue, self.send_buffer = max_queue, send_buffer

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        first: tuple[str, DataType, tuple] | None = None
        if any(name in query for name in ("market", "dataType", "exchange")):
            # The reference's form, validated before the upgrade (exchange= alone is an
            # account stream missing its dataType, not a bare connection).
            raw_type = required(query, "dataType")
            market = required(query, "market")
            data_type = _DATA_TYPES.get(raw_type)
            if data_type is None:
                raise InvalidParameter("dataType", f"expected one of {', '.join(WS_DATA_TYPES)}")
            first = (market, data_type, await self.engine.subscription(market, data_type))
        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=30.0,
            max_msg_size=MAX_WS_MESSAGE_BYTES,
            writer_limit=self.send_buffer,  # bytes buffered in the process before backpressure
        )
        await ws.prepare(request)
        attach_ws(request, ws)  # its key's revocation closes it from now on
        client = BoundedSender(ws, request.transport, self.max_queue, send_buffer=self.send_buffer,
                               telemetry=self.engine.telemetry, data_type=_MULTI)
        conn = _Connection(client)
        writer = asyncio.create_task(client.writer())
        try:
            if first is not None:
                market, data_type, (add, remove) = first
                self._add(conn, (market, data_type), add, remove)
            async for msg in ws:
                if writer.done():  # closed by the sender (a slow client)
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._handle(request, conn, msg.data)
                elif msg.type is WSMsgType.ERROR:  # e.g. over max_msg_size: aiohttp closed it
                    break
        finally:
            for (_, data_type), remove in conn.subscriptions.items():
                self.metrics.ws_clients[data_type] -= 1
                remove(client)
            conn.subscriptions.clear()
            client.close(WSCloseCode.OK, "")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer, 5)
        return ws

    def _add(self, conn: _Connection, key: Key, add: Callable, remove: Callable) -> None:
        conn.subscriptions[key] = remove
        self.metrics.ws_clients[key[1]] += 1
        conn.label()
        add(conn.client)  # a book's snapshot may be delivered from in here

    async def _handle(self, request: web.Request, conn: _Connection, raw: str | bytes) -> None:
        msg_id: WsId | None = None
        try:
            check_json_nesting(raw)  # before the decoder recurses into it
            message = _decode(raw)
        except msgspec.DecodeError:
            self._refuse(conn, InvalidParameter("body", "not JSON"), None)
            return
        except InvalidParameter as err:
            self._refuse(conn, err, None)
            return
        try:
            if not isinstance(message, dict):
                raise InvalidParameter("body", "expected a JSON object")
            msg_id = _message_id(message)
            op, key = _parse(message)
            if op == "subscribe":
                await self._subscribe(request, conn, key, msg_id)
            else:
                self._unsubscribe(conn, key, msg_id)
        except AstraError as err:
            self._refuse(conn, err, msg_id)
        except Exception:  # a bug: this message fails, the connection goes on
            log.exception("unhandled error on a WS /ws message")
            self._refuse(conn, AstraError(), msg_id)

    async def _subscribe(
        self, request: web.Request, conn: _Connection, key: Key, msg_id: WsId | None
    ) -> None:
        market, data_type = key
        if key in conn.subscriptions:
            raise Conflict(f"already subscribed to {data_type} of {market[:80]}",
                           parameter="market")
        if len(conn.subscriptions) >= MAX_WS_SUBSCRIPTIONS:
            raise LimitExceeded(f"at most {MAX_WS_SUBSCRIPTIONS} subscriptions per connection: "
                                "unsubscribe one first, or open another connection")
        info = request.get(API_KEY)
        if info is not None and _SCOPE not in info.scopes:  # the handshake's own rule
            raise Forbidden(f"this API key lacks the '{_SCOPE}' scope, which GET /ws needs")
        add, remove = await self.engine.subscription(market, data_type)  # 4xx before anything
        if conn.client.close_reason is not None:
            return  # closed while the feed was resolved: nothing to start
        # The ack first: the stream's first frame may be delivered by ``add`` itself.
        conn.client.deliver(_encode(WsAck(type="subscribed", market=market,
                                          data_type=data_type, id=msg_id)))
        try:
            self._add(conn, key, add, remove)
        except BaseException:  # (a bug below): the error follows the ack, nothing is held
            if conn.subscriptions.pop(key, None) is not None:
                self.metrics.ws_clients[data_type] -= 1
                remove(conn.client)
                conn.label()
            raise

    def _unsubscribe(self, conn: _Connection, key: Key, msg_id: WsId | None) -> None:
        market, data_type = key
        remove = conn.subscriptions.pop(key, None)
        if remove is None:
            raise NotFound(f"not subscribed to {data_type} of {market[:80]}",
                           parameter="market")
        remove(conn.client)  # from here no frame of it is delivered: the ack comes last
        self.metrics.ws_clients[data_type] -= 1
        conn.label()
        conn.client.deliver(_encode(WsAck(type="unsubscribed", market=market,
                                          data_type=data_type, id=msg_id)))

    @staticmethod
    def _refuse(conn: _Connection, err: AstraError, msg_id: WsId | None) -> None:
        model = err.to_model()
        message = without_locations(model.message) if err.venue is not None else model.message
        conn.client.deliver(_encode(WsError(
            code=model.code, message=message, parameter=model.parameter, venue=model.venue,
            venue_code=model.venue_code, retry_after=model.retry_after, feed=model.feed,
            members=model.members, id=msg_id)))


def _message_id(message: dict) -> WsId | None:
    """The message's ``id`` to echo (null counts as absent)."""
    value = message.get("id")
    if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)):
        return value
    raise InvalidParameter("id", "expected a string or a number")


def _parse(message: dict) -> tuple[str, Key]:
    """``(op, (market, dataType))`` of a client message, or the 4xx naming what is wrong."""
    for name in message:
        if name not in _FIELDS:
            raise InvalidParameter(str(name)[:40], f"unknown field: a message takes "
                                   f"{', '.join(_FIELDS)}")
    op = _text(message, "op")
    if op not in _OPS:
        raise InvalidParameter("op", f"expected subscribe or unsubscribe, got {op[:40]!r}")
    market = _text(message, "market")
    raw_type = _text(message, "dataType")
    data_type = _DATA_TYPES.get(raw_type)
    if data_type is None:
        if raw_type in PRIVATE_DATA_TYPES:
            raise InvalidParameter(
                "dataType", f"{raw_type} streams on its own connection: "
                f"WS /ws?dataType={raw_type}&exchange=… (the query-string form)")
        raise InvalidParameter("dataType", f"expected one of {_PUBLIC_TYPES}")
    return op, (market, data_type)


def _text(message: dict, name: str) -> str:
    value = message.get(name)
    if value is None or value == "":
        raise MissingParameter(name)
    if not isinstance(value, str):
        raise InvalidParameter(name, "expected a string")
    return value
