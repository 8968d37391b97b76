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
The pacing, acks, refusals and reconnects are ``astra.venues.wsmux.PacedConnection``'s; this
module is KuCoin's wire format, token and limits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import msgspec

from astra.venues.wsmux import RECONNECT_ERRORS, DataConsumer, MuxPool, PacedConnection

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
]

log = logging.getLogger(__name__)

MESSAGES_PER_10S = 100  # uplink messages per connection: subscribe, unsubscribe and ping
MAX_TOPICS_PER_REQUEST = 100  # symbols joined in one (un)subscribe
SPOT_TOPICS_PER_CONNECTION = 300  # classic spot docs (the unified docs say 400)
FUTURES_TOPICS_PER_CONNECTION = 100  # older futures docs (the unified docs: no limit)
REQUEST_INTERVAL = 10.0 / (MESSAGES_PER_10S - 10)  # ten messages per 10 s kept for pings
_decode = msgspec.json.Decoder(RawEnvelope).decode
_encode = msgspec.json.Encoder().encode
_ids = itertools.count(1)

Consumer = DataConsumer  # on_data gets the message's ``data``, undecoded


class VenueFeedError(Exception):
    """KuCoin sent an ``error`` frame that answers no request of ours."""


# What a connection survives by reconnecting: network, silence, garbage, venue-side errors.
FEED_ERRORS = (*RECONNECT_ERRORS, VenueFeedError)


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


def _channel(topic: str) -> str:
    return topic.partition(":")[0]


class TopicConnection(PacedConnection):
    """One connection (a fresh token each time it is reopened) and the topics on it."""

    name = "kucoin ws"
    split_refused = True  # one bad symbol must not hold the others back
    errors = (*FEED_ERRORS, RestError)

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        bullet: Callable[[], Awaitable[Bullet]],
        *,
        endpoint: str | None = None,
        silence: float = 60.0,
        max_age: float = 23 * 3600.0,
        response_timeout: float = 10.0,
        request_interval: float = REQUEST_INTERVAL,
    ) -> None:
        super().__init__(
            session,
            endpoint or "kucoin",
            interval=request_interval,
            max_keys=MAX_TOPICS_PER_REQUEST,
            silence=silence,
            max_age=max_age,
            response_timeout=response_timeout,
        )
        self._bullet, self.endpoint = bullet, endpoint
        self._welcome = asyncio.Event()
        self._ping_timeout = 0.0

    async def _connect_url(self) -> str:
        grant = await self._bullet()
        server = grant.instanceServers[0]
        self._ping_every = max(server.pingInterval / 1000, 0.05)
        self._ping_timeout = server.pingTimeout / 1000
        return _url(self.endpoint or server.endpoint, grant.token, next(_ids))

    def _silence(self) -> float:
        # Pongs are due within pingInterval + pingTimeout: a quieter connection is dead.
        return max(self.silence, self._ping_every + self._ping_timeout)

    def _delay(self, exc: BaseException | None) -> float:
        delay = super()._delay(exc)
        if isinstance(exc, RestError):  # no token: bullet-public refused or rate limited
            delay = max(delay, exc.retry_after or 0.0)
        return delay

    def _opened(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        self._welcome.clear()  # requests wait for this connection's welcome
        return super()._opened(ws)

    async def _ready(self) -> None:
        await self._welcome.wait()

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(_encode(Ping(str(next(_ids)))).decode())

    def _same_request(self, first: str, other: str) -> bool:  # type: ignore[override]
        return _channel(first) == _channel(other)  # one request names one channel

    def _request(self, op: str, keys: list, request_id: int) -> str:
        symbols = ",".join(topic.partition(":")[2] for topic in keys)
        topic = f"{_channel(keys[0])}:{symbols}"
        return _encode(Subscribe(request_id, op, topic)).decode()  # type: ignore[arg-type]

    def _on_frame(self, data: str) -> None:
        frame = _decode(data)
        kind = frame.type
        if kind == "message":
            self._dispatch(frame.topic, frame.data)
        elif kind == "ack":
            self._answered(frame.id)
        elif kind == "welcome":
            self._welcome.set()
        elif kind == "error":
            text = _text(frame.data)
            if not self._refused(frame.id, f"{frame.code!r}: {text}"):
                raise VenueFeedError(f"error {frame.code!r}: {text}")
        # pong, notice: nothing to do beyond counting as life


class TopicPool(MuxPool[TopicConnection]):
    """The connections of one side (spot or futures), filled up to ``max_topics`` each."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        bullet: Callable[[], Awaitable[Bullet]],
        *,
        max_topics: int = SPOT_TOPICS_PER_CONNECTION,
        **options: object,
    ) -> None:
        super().__init__(
            lambda: TopicConnection(session, bullet, **options),  # type: ignore[arg-type]
            max_topics,
        )
