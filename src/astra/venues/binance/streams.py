"""Binance combined-stream connections shared by many markets.

Binance multiplexes: one ``/stream`` connection carries many streams (``<symbol>@depth@100ms``,
``<symbol>@aggTrade``, ...), each event wrapped as ``{"stream", "data"}``; streams are added
and removed live with ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [names], "id": n}``,
answered by ``{"result": null, "id": n}`` or refused with ``{"code", "msg", "id"}``. Feeds do
not own connections: each registers a ``Consumer`` for its stream name with the
``StreamPool`` of its endpoint, which puts it on a connection with room.

Binance's limits, per connection, as each product's stream docs state them:
- spot (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams,
  "WebSocket Limits"): 1024 streams, 5 incoming messages per second, where a PING frame, a
  PONG frame and a JSON request each count;
- USD-M and COIN-M futures (.../docs/derivatives/usds-margined-futures/websocket-market-streams,
  .../coin-margined-futures/websocket-market-streams): 1024 streams, 10 messages per second;
- options (.../docs/derivatives/options-trading/websocket-market-streams): 200 streams,
  10 messages per second.
A connection over the message rate is cut, and an IP cut repeatedly is banned; every
connection is closed by Binance at 24 h. Requests, answers and their error format
(``{"code": 2, "msg": "Invalid request: ..."}``) follow "Live Subscribing/Unsubscribing to
streams" on the same pages; a ``/stream`` connection has the ``combined`` property set.

Invariants:
- A connection carries at most ``limits.max_streams`` streams, counting those whose
  UNSUBSCRIBE has not gone out yet; when every connection is full the pool opens another.
- Requests leave one at a time, at least ``1 / (messages_per_second - 1)`` s apart (one
  message a second stays free for ping/pong frames), each naming at most ``max_params``
  streams; ops made while a request waits for its slot go out together, in the order they
  were made (consecutive runs of one method), so a stream is never unsubscribed after being
  subscribed again.
- Every request is answered within ``response_timeout``, or the connection counts as dead,
  as it does after ``silence`` seconds without a frame or an unanswered heartbeat ping. A
  refused SUBSCRIBE resets those streams' consumers and retries them after a backoff, on the
  same connection; the other streams are untouched.
- On every (re)connect all streams are subscribed again. When a connection ends (a failure,
  or its ``max_age``, kept under Binance's 24 h), every consumer on it hears ``on_reset``
  before anything from the next connection arrives. Reconnects back off exponentially.
- A ``serverShutdown`` event (spot: the server is about to close) reconnects at once.
- One consumer's failure is contained: that consumer is reset, the connection goes on.
- A connection whose last stream is removed is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import msgspec

from astra.venues.retry import backoff

from .schemas import CombinedStreamEvent, StreamRequest

__all__ = [
    "FUTURES_LIMITS",
    "MAX_PARAMS",
    "OPTIONS_LIMITS",
    "SCHEDULED_RECONNECT",
    "SPOT_LIMITS",
    "Consumer",
    "Limits",
    "Pacer",
    "StreamConnection",
    "StreamPool",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_streams: int  # streams one connection may carry
    messages_per_second: int  # incoming messages per connection: requests, pings and pongs


SPOT_LIMITS = Limits(max_streams=1024, messages_per_second=5)
FUTURES_LIMITS = Limits(max_streams=1024, messages_per_second=10)  # USD-M and COIN-M
OPTIONS_LIMITS = Limits(max_streams=200, messages_per_second=10)
# Binance documents no cap on names per request; bounded requests keep a refusal's blast
# radius small, and a full connection still subscribes in six of them.
MAX_PARAMS = 200
SCHEDULED_RECONNECT = "scheduled reconnect (Binance closes connections after 24 h)"
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
# What a connection survives by reconnecting: network failures, silence, garbage on the wire.
_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError, msgspec.DecodeError, ValueError)
_decode = msgspec.json.Decoder(CombinedStreamEvent).decode
_encode = msgspec.json.Encoder().encode


class Consumer(Protocol):
    def on_data(self, data: msgspec.Raw) -> None:
        """One event of the stream (the combined frame's ``data``, undecoded), in wire order."""

    def on_reset(self, reason: str) -> None:
        """The stream was interrupted (connection lost, subscription refused, a bad event);
        it is subscribed again and events resume later."""


class Pacer:
    """Request slots ``interval`` seconds apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = -math.inf

    def reserve(self, now: float) -> float:
        """Take the next free slot: the wait from ``now`` until it."""
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now

    async def wait(self) -> None:
        delay = self.reserve(asyncio.get_running_loop().time())
        if delay > 0:
            await asyncio.sleep(delay)


class StreamConnection:
    """One combined-stream connection (reopened as needed) and the streams subscribed on it."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        limits: Limits,
        *,
        heartbeat: float | None = 20.0,
        silence: float = 120.0,
        max_age: float | None = None,
        response_timeout: float = 10.0,
        max_params: int = MAX_PARAMS,
    ) -> None:
        self._session, self.url, self.limits = session, url, limits
        self.heartbeat, self.silence, self.max_age = heartbeat, silence, max_age
        self.response_timeout, self.max_params = response_timeout, max_params
        # Tuples, replaced on change: dispatch iterates them with no copy and no mutation risk.
        self.consumers: dict[str, tuple[Consumer, ...]] = {}
        self.connections = 0  # connections opened so far
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ops: list[tuple[str, str]] = []  # (method, stream) not sent yet, in order
        self._leaving: set[str] = set()  # streams with an UNSUBSCRIBE in _ops
        self._pending: dict[int, tuple[str, list[str], float]] = {}  # id -> method, params, sent
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._pacer = Pacer(1.0 / max(limits.messages_per_second - 1, 1))
        self._refusals = 0
        self._retry: asyncio.TimerHandle | None = None  # refused streams, asked for again
        self._retry_streams: dict[str, None] = {}  # ordered: asked again in the same order
        self._attempt = 0
        self._task: asyncio.Task | None = None

    @property
    def load(self) -> int:
        """Streams on the wire (or about to be) on this connection."""
        return len(self.consumers) + len(self._leaving)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # -- consumers -----------------------------------------------------------------------

    def add(self, stream: str, consumer: Consumer) -> None:
        present = self.consumers.get(stream, ())
        self.consumers[stream] = (*present, consumer)
        if not present:
            if stream in self._leaving:  # its UNSUBSCRIBE has not gone out: keep the stream
                self._leaving.discard(stream)
                self._ops.remove(("UNSUBSCRIBE", stream))
            else:
                self._queue("SUBSCRIBE", stream)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"binance ws {self.url}")

    def remove(self, stream: str, consumer: Consumer) -> None:
        left = tuple(c for c in self.consumers.get(stream, ()) if c is not consumer)
        if left:
            self.consumers[stream] = left
            return
        if self.consumers.pop(stream, None) is None:
            return
        if ("SUBSCRIBE", stream) in self._ops:
            self._ops.remove(("SUBSCRIBE", stream))  # it never went out
        elif self.consumers and self._queue("UNSUBSCRIBE", stream):
            self._leaving.add(stream)  # (the last stream goes with its connection)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- requests --------------------------------------------------------------------------

    def _queue(self, method: str, stream: str) -> bool:
        if not self.connected:
            return False  # everything is subscribed on connect
        self._ops.append((method, stream))
        self._wake.set()
        return True

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection's only request writer, one paced request at a time."""
        loop = asyncio.get_running_loop()
        ops = self._ops
        try:
            while True:
                while not ops:
                    self._wake.clear()
                    await self._wake.wait()
                await self._pacer.wait()
                if not ops:
                    continue  # withdrawn while waiting for the slot
                method, n = ops[0][0], 1
                while n < len(ops) and n < self.max_params and ops[n][0] == method:
                    n += 1
                params = [stream for _, stream in ops[:n]]
                del ops[:n]
                if method == "UNSUBSCRIBE":
                    self._leaving.difference_update(params)
                request_id = next(self._ids)
                self._pending[request_id] = (method, params, loop.time())
                await ws.send_str(_encode(StreamRequest(method, params, request_id)).decode())
        except _ERRORS as exc:
            log.warning("%s: send failed (%r)", self.url, exc)
            await ws.close()  # ends the receive loop, which reconnects

    def _on_answer(self, frame: CombinedStreamEvent) -> None:
        request = self._pending.pop(frame.id, None)  # type: ignore[arg-type]
        if request is None:
            log.debug("%s: answer to no request of ours: %r", self.url, frame)
            return
        method, params, _ = request
        refusal = frame.refusal()
        if refusal is None:
            if method == "SUBSCRIBE":
                self._refusals = 0
            return
        log.error("%s: %s %s refused (%s)", self.url, method, params, refusal)
        if method != "SUBSCRIBE":
            return  # a stream left on the wire has no consumer: its events are dropped
        wanted = [s for s in params if s in self.consumers]
        for stream in wanted:
            for consumer in self.consumers[stream]:
                consumer.on_reset(f"subscription refused ({refusal})")
        self._retry_streams.update(dict.fromkeys(wanted))
        if self._retry is None:
            self._refusals += 1
            self._retry = asyncio.get_running_loop().call_later(
                backoff(self._refusals), self._subscribe_again
            )

    def _subscribe_again(self) -> None:
        self._retry = None
        streams, self._retry_streams = self._retry_streams, {}
        for stream in streams:  # (a reconnect meanwhile subscribed everything already)
            if stream in self.consumers and ("SUBSCRIBE", stream) not in self._ops:
                self._queue("SUBSCRIBE", stream)

    # -- connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.consumers:
            sender: asyncio.Task | None = None
            current: aiohttp.ClientWebSocketResponse | None = None
            delay = 0.0
            try:
                async with self._session().ws_connect(
                    self.url, heartbeat=self.heartbeat, timeout=_WS_TIMEOUT
                ) as ws:
                    self.connections += 1
                    current = self._ws = ws
                    if self._retry is not None:  # refused streams are in the batch below
                        self._retry.cancel()
                        self._retry, self._retry_streams = None, {}
                    self._ops[:] = [("SUBSCRIBE", stream) for stream in self.consumers]
                    self._wake.set()
                    sender = asyncio.create_task(self._send(ws))
                    await self._receive(ws, loop.time() + (self.max_age or math.inf))
                reason = SCHEDULED_RECONNECT
            except _ERRORS as exc:
                reason = str(exc) if isinstance(exc, TimeoutError) and str(exc) else repr(exc)
                delay, self._attempt = backoff(self._attempt), self._attempt + 1
            except Exception as exc:  # a bug must not end the feeds of every market here
                log.exception("%s: unexpected failure", self.url)
                reason = repr(exc)
                delay, self._attempt = backoff(self._attempt), self._attempt + 1
            finally:
                if sender is not None:
                    sender.cancel()
                if self._ws is current:  # not a newer connection's
                    self._ws = None
                    self._ops.clear()
                    self._leaving.clear()
                    self._pending.clear()
            log.warning("%s: connection ended (%s); reconnecting", self.url, reason)
            for consumers in list(self.consumers.values()):
                for consumer in consumers:
                    consumer.on_reset(f"reconnecting: {reason}")
            await asyncio.sleep(delay)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, retire_at: float) -> None:
        """Dispatch frames until ``retire_at`` (returns) or a failure (raises)."""
        loop = asyncio.get_running_loop()
        consumers, pending = self.consumers, self._pending
        silence, answer_within = self.silence, self.response_timeout
        last = loop.time()
        while True:
            now = loop.time()
            if now >= retire_at:
                return
            if pending:
                request_id, (method, _, sent) = next(iter(pending.items()))
                if now - sent > answer_within:
                    raise TimeoutError(f"{method} {request_id} unanswered for {answer_within} s")
            # Wake for silence, retirement, and at least every answer_within to check answers.
            wait = min(last + silence, retire_at, now + answer_within) - now
            try:
                msg = await ws.receive(timeout=max(wait, 0.001))
            except TimeoutError:
                if loop.time() - last >= silence:
                    raise TimeoutError(f"silent for {silence:g} s") from None
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"upstream sent {msg.type.name}")
            last = loop.time()
            frame = _decode(msg.data)
            stream = frame.stream
            if stream:
                self._attempt = 0  # data flows: the next failure starts the backoff over
                for consumer in consumers.get(stream, ()):
                    try:
                        consumer.on_data(frame.data)
                    except Exception as exc:  # that market resyncs; the others go on
                        log.warning("%s: %s event rejected (%r)", self.url, stream, exc)
                        consumer.on_reset(f"bad event: {exc!r}")
            elif frame.id is not None:
                self._on_answer(frame)
            elif frame.e == "serverShutdown":
                raise ConnectionError("the server announced its shutdown")


class StreamPool:
    """The connections of one endpoint, each filled up to ``limits.max_streams`` streams."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        limits: Limits,
        **options: object,
    ) -> None:
        self._session, self.url, self.limits, self._options = session, url, limits, options
        self.connections: list[StreamConnection] = []
        self._closing: set[asyncio.Task] = set()

    def add(self, stream: str, consumer: Consumer) -> StreamConnection:
        conns = self.connections
        conn = next((c for c in conns if stream in c.consumers), None)
        if conn is None:
            conn = next((c for c in conns if c.load < self.limits.max_streams), None)
        if conn is None:
            conn = StreamConnection(self._session, self.url, self.limits, **self._options)  # type: ignore[arg-type]
            conns.append(conn)
        conn.add(stream, consumer)
        return conn

    def remove(self, conn: StreamConnection, stream: str, consumer: Consumer) -> None:
        conn.remove(stream, consumer)
        if not conn.consumers and conn in self.connections:
            self.connections.remove(conn)  # its last stream is gone: close the connection
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conns, self.connections = self.connections, []
        await asyncio.gather(*(c.close() for c in conns), *self._closing)
