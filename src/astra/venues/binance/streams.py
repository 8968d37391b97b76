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
The pacing, answers, refusals and reconnects are ``astra.venues.wsmux.PacedConnection``'s;
this module is Binance's wire format and limits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from astra.venues.wsmux import DataConsumer, MuxPool, PacedConnection, Pacer

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

Consumer = DataConsumer  # on_data gets the combined frame's ``data``, undecoded


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
_METHODS = {"subscribe": "SUBSCRIBE", "unsubscribe": "UNSUBSCRIBE"}
_decode = msgspec.json.Decoder(CombinedStreamEvent).decode
_encode = msgspec.json.Encoder().encode


class StreamConnection(PacedConnection):
    """One combined-stream connection (reopened as needed) and the streams subscribed on it."""

    name = "binance ws"
    retirement = SCHEDULED_RECONNECT

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
        super().__init__(
            session,
            url,
            # one message a second stays free for ping/pong frames
            interval=1.0 / max(limits.messages_per_second - 1, 1),
            max_keys=max_params,
            silence=silence,
            max_age=max_age,
            response_timeout=response_timeout,
        )
        self.limits, self.heartbeat = limits, heartbeat

    def _connect_options(self) -> dict:
        return {"heartbeat": self.heartbeat}

    def _request(self, op: str, keys: list, request_id: int) -> str:
        return _encode(StreamRequest(_METHODS[op], keys, request_id)).decode()  # type: ignore[arg-type]

    def _on_frame(self, data: str) -> None:
        frame = _decode(data)
        if frame.stream:
            self._dispatch(frame.stream, frame.data)
        elif frame.id is not None:
            refusal = frame.refusal()
            answered = (self._answered(frame.id) if refusal is None
                        else self._refused(frame.id, refusal))
            if not answered:
                log.debug("%s: answer to no request of ours: %r", self.url, frame)
        elif frame.e == "serverShutdown":
            raise ConnectionError("the server announced its shutdown")


class StreamPool(MuxPool[StreamConnection]):
    """The connections of one endpoint, each filled up to ``limits.max_streams`` streams."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        limits: Limits,
        **options: object,
    ) -> None:
        super().__init__(
            lambda: StreamConnection(session, url, limits, **options),  # type: ignore[arg-type]
            limits.max_streams,
        )
        self.url, self.limits = url, limits
