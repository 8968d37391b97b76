"""KuCoin WebSocket connections shared by many topics: token, welcome, batched (un)subscribe,
acks, ping, silence, lifetime.

KuCoin's protocol (both spot and futures):
- ``POST /api/v1/bullet-public`` returns a token and ``instanceServers`` (endpoint,
  ``pingInterval``, ``pingTimeout`` in ms). Connect to ``endpoint?token=..&connectId=..``.
  Every connection gets a fresh token (one is only good for a while: 24 h, or until its
  connection drops); a healthy connection is replaced after ``max_age`` so it never outlives
  its token.
- The server opens with ``{"type": "welcome"}``; only then are requests sent.
  ``{"id", "type": "subscribe"|"unsubscribe", "topic": "<channel>:<sym>,<sym>,...",
  "privateChannel": false, "response": true}`` is answered by ``{"id", "type": "ack"}`` or
  ``{"id", "type": "error", "code", "data"}``; data then arrives as ``{"type": "message",
  "topic": "<channel>:<sym>", "data"}``, one symbol per topic.
- The client sends ``{"type": "ping"}`` every ``pingInterval``; the server answers ``pong``.
  Any frame counts as life: none within ``silence`` seconds (at least ``pingInterval +
  pingTimeout``, as pongs are due by then) means a dead connection.

KuCoin's limits, per connection ("Websocket Rate Limit" in the classic spot API docs,
https://www.kucoin.com/docs/basic-info/request-rate-limit/websocket): 100 uplink messages
per 10 s (requests and pings all count), at most 100 topics in one subscribe ("maximum
number of batch subscriptions at a time"), 300 topics per connection on spot. The futures
docs (https://docs.kucoin.com/futures/#request-rate-limit) said 100 topics per connection;
the newer unified docs (https://www.kucoin.com/docs-new/rate-limit) say 400 on spot and no
limit on futures. We hold to the lower documented figures: 300 spot, 100 futures.

Invariants:
- A connection carries at most ``max_topics`` topics (``<channel>:<symbol>``, the unit KuCoin
  counts), including those whose unsubscribe has not gone out; the pool opens another
  connection when all are full.
- Requests leave one at a time, at least ``10 / (MESSAGES_PER_10S - 10)`` s apart (ten
  messages per 10 s stay free for pings), each joining up to ``MAX_TOPICS_PER_REQUEST``
  symbols of one channel; ops made while a request waits go out together, in order.
- Every request is acked within ``response_timeout``, or the connection counts as dead. An
  ``error`` answering a request refuses it: its topics' consumers are reset; a refused
  request of several symbols is split, each symbol asked again alone, and a refused lone
  topic is asked again after a backoff, on the same connection. An ``error`` that answers
  nothing of ours ends the connection (``VenueFeedError``).
- On every (re)connect every topic is subscribed again; when a connection ends (failure or
  ``max_age``), every consumer on it hears ``on_reset`` before anything from the next
  connection arrives. Failures back off exponentially (a refused token request at least
  for its ``Retry-After``).
- One consumer's failure is contained: that consumer is reset, the connection goes on.
- A connection whose last topic is removed is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
import msgspec

from astra.venues.retry import backoff

from .rest import RestError
from .schemas import Bullet, Ping, RawEnvelope, Subscribe

__all__ = [
    "FEED_ERRORS",
    "FUTURES_TOPICS_PER_CONNECTION",
    "MAX_TOPICS_PER_REQUEST",
    "MESSAGES_PER_10S",
    "REQUEST_INTERVAL",
    "SPOT_TOPICS_PER_CONNECTION",
    "Consumer",
    "TopicConnection",
    "TopicPool",
    "VenueFeedError",
    "backoff",
]

log = logging.getLogger(__name__)

MESSAGES_PER_10S = 100  # uplink messages per connection: subscribe, unsubscribe and ping
MAX_TOPICS_PER_REQUEST = 100  # symbols joined in one (un)subscribe
SPOT_TOPICS_PER_CONNECTION = 300  # classic spot docs (the unified docs say 400)
FUTURES_TOPICS_PER_CONNECTION = 100  # older futures docs (the unified docs: no limit)
REQUEST_INTERVAL = 10.0 / (MESSAGES_PER_10S - 10)  # ten messages per 10 s kept for pings
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
_decode = msgspec.json.Decoder(RawEnvelope).decode
_encode = msgspec.json.Encoder().encode
_ids = itertools.count(1)


class VenueFeedError(Exception):
    """KuCoin sent an ``error`` frame that answers no request of ours."""


# What a connection survives by reconnecting: network, silence, garbage, venue-side errors.
FEED_ERRORS = (
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
    msgspec.DecodeError,
    ValueError,
    VenueFeedError,
)


class Consumer(Protocol):
    def on_data(self, data: msgspec.Raw) -> None:
        """One message of the topic (its ``data``, undecoded), in wire order."""

    def on_reset(self, reason: str) -> None:
        """The topic was interrupted (connection lost, subscription refused, a bad message);
        it is subscribed again and messages resume later."""


def _url(endpoint: str, token: str, connect_id: int) -> str:
    sep = "&" if "?" in endpoint else "?"
    return f"{endpoint}{sep}token={token}&connectId=astra{connect_id}"


def _text(data: msgspec.Raw) -> str:
    """An error frame's ``data`` (a JSON text, or absent)."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return ""
    return value if isinstance(value, str) else repr(value)


def _split(topic: str) -> tuple[str, str]:
    channel, _, symbol = topic.partition(":")
    return channel, symbol


class TopicConnection:
    """One connection (a fresh token each time it is reopened) and the topics on it."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        bullet: Callable[[], Awaitable[Bullet]],
        *,
        max_topics: int = SPOT_TOPICS_PER_CONNECTION,
        endpoint: str | None = None,
        silence: float = 60.0,
        max_age: float = 23 * 3600.0,
        response_timeout: float = 10.0,
        request_interval: float = REQUEST_INTERVAL,
    ) -> None:
        self._session, self._bullet, self.max_topics = session, bullet, max_topics
        self.endpoint, self.silence, self.max_age = endpoint, silence, max_age
        self.response_timeout, self.request_interval = response_timeout, request_interval
        # Tuples, replaced on change: dispatch iterates them with no copy and no mutation risk.
        self.consumers: dict[str, tuple[Consumer, ...]] = {}
        self.connections = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ops: list[tuple[str, str]] = []  # (type, topic) not sent yet, in order
        self._leaving: set[str] = set()  # topics with an unsubscribe in _ops
        self._solo: set[str] = set()  # topics refused in a batch: asked alone from now on
        self._pending: dict[str, tuple[str, list[str], float]] = {}  # id -> type, topics, sent
        self._wake = asyncio.Event()
        self._welcome = asyncio.Event()
        self._next_request = -math.inf
        self._refusals = 0
        self._retry: asyncio.TimerHandle | None = None
        self._retry_topics: dict[str, None] = {}
        self._attempt = 0
        self._task: asyncio.Task | None = None

    @property
    def load(self) -> int:
        return len(self.consumers) + len(self._leaving)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # -- consumers -----------------------------------------------------------------------

    def add(self, topic: str, consumer: Consumer) -> None:
        present = self.consumers.get(topic, ())
        self.consumers[topic] = (*present, consumer)
        if not present:
            if topic in self._leaving:  # its unsubscribe has not gone out: keep the topic
                self._leaving.discard(topic)
                self._ops.remove(("unsubscribe", topic))
            else:
                self._queue("subscribe", topic)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"kucoin ws {topic}")

    def remove(self, topic: str, consumer: Consumer) -> None:
        left = tuple(c for c in self.consumers.get(topic, ()) if c is not consumer)
        if left:
            self.consumers[topic] = left
            return
        if self.consumers.pop(topic, None) is None:
            return
        if ("subscribe", topic) in self._ops:
            self._ops.remove(("subscribe", topic))  # it never went out
        elif self.consumers and self._queue("unsubscribe", topic):
            self._leaving.add(topic)  # (the last topic goes with its connection)

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

    def _queue(self, kind: str, topic: str) -> bool:
        if not self.connected:
            return False  # everything is subscribed on connect
        self._ops.append((kind, topic))
        self._wake.set()
        return True

    def _batch(self) -> tuple[str, list[str]]:
        """The next request: a run of one type and channel from the head of the queue."""
        ops, solo = self._ops, self._solo
        kind, first = ops[0]
        channel = _split(first)[0]
        n = 1
        if first not in solo:
            while (
                n < len(ops)
                and n < MAX_TOPICS_PER_REQUEST
                and ops[n][0] == kind
                and ops[n][1] not in solo
                and _split(ops[n][1])[0] == channel
            ):
                n += 1
        topics = [topic for _, topic in ops[:n]]
        del ops[:n]
        return kind, topics

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection's only request writer: after the welcome, one paced request at a time."""
        loop = asyncio.get_running_loop()
        try:
            await self._welcome.wait()
            while True:
                while not self._ops:
                    self._wake.clear()
                    await self._wake.wait()
                now = loop.time()
                at = max(now, self._next_request)
                self._next_request = at + self.request_interval
                if at > now:
                    await asyncio.sleep(at - now)
                if not self._ops:
                    continue  # withdrawn while waiting for the slot
                kind, topics = self._batch()
                if kind == "unsubscribe":
                    self._leaving.difference_update(topics)
                request_id = next(_ids)
                self._pending[str(request_id)] = (kind, topics, loop.time())
                symbols = ",".join(_split(t)[1] for t in topics)
                topic = f"{_split(topics[0])[0]}:{symbols}"
                await ws.send_str(_encode(Subscribe(request_id, kind, topic)).decode())  # type: ignore[arg-type]
        except FEED_ERRORS as exc:
            log.warning("kucoin: send failed (%r)", exc)
            await ws.close()  # ends the receive loop, which reconnects

    def _on_error(self, frame: RawEnvelope) -> None:
        request = self._pending.pop(str(frame.id), None)
        text = _text(frame.data)
        if request is None:
            raise VenueFeedError(f"error {frame.code!r}: {text}")
        kind, topics, _ = request
        log.error("kucoin: %s %s refused (%r: %s)", kind, topics, frame.code, text)
        if kind != "subscribe":
            return  # a topic left on the wire has no consumer: its messages are dropped
        wanted = [t for t in topics if t in self.consumers]
        for topic in wanted:
            for consumer in self.consumers[topic]:
                consumer.on_reset(f"subscription refused ({frame.code!r}: {text})")
        if len(topics) > 1:  # one bad symbol must not hold the others back: ask each alone
            self._solo.update(wanted)
            for topic in wanted:
                self._queue("subscribe", topic)
            return
        self._retry_topics.update(dict.fromkeys(wanted))
        if self._retry is None:
            self._refusals += 1
            self._retry = asyncio.get_running_loop().call_later(
                backoff(self._refusals), self._subscribe_again
            )

    def _subscribe_again(self) -> None:
        self._retry = None
        topics, self._retry_topics = self._retry_topics, {}
        for topic in topics:  # (a reconnect meanwhile subscribed everything already)
            if topic in self.consumers and ("subscribe", topic) not in self._ops:
                self._queue("subscribe", topic)

    # -- connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        while self.consumers:
            sender: asyncio.Task | None = None
            current: aiohttp.ClientWebSocketResponse | None = None
            delay = 0.0
            try:
                grant = await self._bullet()
                server = grant.instanceServers[0]
                url = _url(self.endpoint or server.endpoint, grant.token, next(_ids))
                async with self._session().ws_connect(url, timeout=_WS_TIMEOUT) as ws:
                    self.connections += 1
                    current = self._ws = ws
                    if self._retry is not None:  # refused topics are in the batch below
                        self._retry.cancel()
                        self._retry, self._retry_topics = None, {}
                    self._ops[:] = [("subscribe", topic) for topic in self.consumers]
                    self._welcome.clear()
                    self._wake.set()
                    sender = asyncio.create_task(self._send(ws))
                    await self._receive(ws, server.pingInterval / 1000, server.pingTimeout / 1000)
                reason = "connection lifetime reached"
            except FEED_ERRORS as exc:
                reason = str(exc) if isinstance(exc, TimeoutError) and str(exc) else repr(exc)
                delay, self._attempt = backoff(self._attempt), self._attempt + 1
            except RestError as exc:  # no token (bullet-public refused or rate limited)
                reason = repr(exc)
                delay = max(backoff(self._attempt), exc.retry_after or 0.0)
                self._attempt += 1
            except Exception as exc:  # a bug must not end the feeds of every market here
                log.exception("kucoin: unexpected connection failure")
                reason = repr(exc)
                delay, self._attempt = backoff(self._attempt), self._attempt + 1
            finally:
                if sender is not None:
                    sender.cancel()
                if self._ws is current:
                    self._ws = None
                    self._ops.clear()
                    self._leaving.clear()
                    self._pending.clear()
            log.warning("kucoin: connection ended (%s); reconnecting", reason)
            for consumers in list(self.consumers.values()):
                for consumer in consumers:
                    consumer.on_reset(f"reconnecting: {reason}")
            await asyncio.sleep(delay)

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, ping_every: float, ping_timeout: float
    ) -> None:
        """Dispatch frames and ping until ``max_age`` (returns) or a failure (raises)."""
        loop = asyncio.get_running_loop()
        consumers, pending = self.consumers, self._pending
        ping_every = max(ping_every, 0.05)
        # Pongs are due within pingInterval + pingTimeout: a quieter connection is dead.
        silence = max(self.silence, ping_every + ping_timeout)
        answer_within = self.response_timeout
        now = loop.time()
        last, next_ping, retire_at = now, now + ping_every, now + self.max_age
        while True:
            now = loop.time()
            if now >= retire_at:
                log.info("kucoin: connection reached its %.0f s lifetime", self.max_age)
                return
            if pending:
                request_id, (kind, _, sent) = next(iter(pending.items()))
                if now - sent > answer_within:
                    raise TimeoutError(f"{kind} {request_id} unacknowledged for {answer_within} s")
            if now >= next_ping:
                await ws.send_str(_encode(Ping(str(next(_ids)))).decode())
                next_ping = now + ping_every
            wait = min(next_ping, last + silence, retire_at, now + answer_within) - now
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
            kind = frame.type
            if kind == "message":
                self._attempt = 0  # data flows: the next failure starts the backoff over
                for consumer in consumers.get(frame.topic, ()):
                    try:
                        consumer.on_data(frame.data)
                    except Exception as exc:  # that market resyncs; the others go on
                        log.warning("kucoin: %s message rejected (%r)", frame.topic, exc)
                        consumer.on_reset(f"bad message: {exc!r}")
            elif kind == "ack":
                if pending.pop(str(frame.id), ("", (), 0))[0] == "subscribe":
                    self._refusals = 0
            elif kind == "welcome":
                self._welcome.set()
            elif kind == "error":
                self._on_error(frame)
            # pong, notice: nothing to do beyond counting as life


class TopicPool:
    """The connections of one side (spot or futures), filled up to ``max_topics`` each."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        bullet: Callable[[], Awaitable[Bullet]],
        **options: object,
    ) -> None:
        self._session, self._bullet, self._options = session, bullet, options
        self.max_topics = int(options.get("max_topics", SPOT_TOPICS_PER_CONNECTION))  # type: ignore[call-overload]
        self.connections: list[TopicConnection] = []
        self._closing: set[asyncio.Task] = set()

    def add(self, topic: str, consumer: Consumer) -> TopicConnection:
        conns = self.connections
        conn = next((c for c in conns if topic in c.consumers), None)
        if conn is None:
            conn = next((c for c in conns if c.load < self.max_topics), None)
        if conn is None:
            conn = TopicConnection(self._session, self._bullet, **self._options)  # type: ignore[arg-type]
            conns.append(conn)
        conn.add(topic, consumer)
        return conn

    def remove(self, conn: TopicConnection, topic: str, consumer: Consumer) -> None:
        conn.remove(topic, consumer)
        if not conn.consumers and conn in self.connections:
            self.connections.remove(conn)  # its last topic is gone: close the connection
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conns, self.connections = self.connections, []
        await asyncio.gather(*(c.close() for c in conns), *self._closing)
