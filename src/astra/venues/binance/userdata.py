"""Binance spot user data over the WebSocket API (``userDataStream.subscribe.signature``).

Binance retired the spot listenKey (REST ``/api/v3/userDataStream``) on 2026-02-20: spot
account events now come through the WebSocket API (``BinanceUrls.spot_ws_api``, by default
``wss://ws-api.binance.com:443/ws-api/v3``). USD-M and COIN-M keep their listenKey streams
(``astra.venues.aster.userdata``).

Protocol, on every connection:

1. send ``{"id", "method": "userDataStream.subscribe.signature", "params": {"apiKey",
   "recvWindow", "timestamp", "signature"}}``. As ccxt.pro signs it: every other param,
   sorted by name, as ``name=value`` joined by ``&``; HMAC-SHA256 keyed with the secret, in
   hex (a PEM secret: RSA or Ed25519, base64). ``recvWindow`` is ccxt's option (10 s).
2. the answer: ``{"id", "status": 200, "result": {"subscriptionId"}}``, or ``{"id", "status":
   4xx, "error": {"code", "msg"}}``: a refusal drops the connection, and a new one is tried
   after a backoff that grows while no connection stays up (a refused key never spins).
3. events: ``{"subscriptionId", "event": {...}}``, ``event`` being the payload the listenKey
   stream carried (``executionReport``, ``outboundAccountPosition``...), decoded by
   ``astra.venues.aster.userdata.handle_event``.
4. ``eventStreamTerminated``, ``serverShutdown``, a close, ``silence`` seconds without a frame
   (the server pings every 20 s) or the connection reaching ``max_age`` (Binance cuts at
   24 h) ends the connection, and a new one follows.

Integrity rule: the stream has no sequence numbers, so every new connection is a possible
gap. The sink's ``on_resync`` is called once a subscription is confirmed (events flow from
then on, so a REST re-read that follows misses nothing) and again whenever a connection is
lost; a client that must not miss a fill re-reads orders and fills on resync.
Neither the secret nor the signed request is ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec

from astra.venues.aster.userdata import UserDataSink, handle_event
from astra.venues.retry import backoff

__all__ = [
    "ApiError",
    "Request",
    "SubscribeRefused",
    "SubscribeResult",
    "WsApiMessage",
    "run_spot_user_stream",
    "sign_params",
]

log = logging.getLogger(__name__)

SUBSCRIBE = "userDataStream.subscribe.signature"
# Events that end a subscription or a connection: reconnect and resubscribe.
_ENDINGS = frozenset({"eventStreamTerminated", "serverShutdown"})
# A connection confirmed for this long resets the backoff (shorter ones keep growing it).
_STABLE = 60.0
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class Request(msgspec.Struct):
    """A WebSocket API request."""

    id: str
    method: str
    params: dict[str, Any]


class SubscribeResult(msgspec.Struct):
    subscriptionId: int | None = None


class ApiError(msgspec.Struct):
    code: int = 0
    msg: str = ""


class WsApiMessage(msgspec.Struct):
    """One frame: a response (``id``, ``status``, ``result`` or ``error``) or an event
    (``subscriptionId``, ``event``; ``serverShutdown`` comes without a subscription)."""

    id: str | int | None = None
    status: int | None = None
    result: SubscribeResult | None = None
    error: ApiError | None = None
    subscriptionId: int | None = None
    event: msgspec.Raw = msgspec.Raw()


class SubscribeRefused(Exception):
    def __init__(self, status: int | None, error: ApiError | None) -> None:
        code, msg = (error.code, error.msg) if error else (None, "no subscriptionId")
        super().__init__(f"subscribe refused: status {status}, code {code}: {msg}")


_decode = msgspec.json.Decoder(WsApiMessage).decode
_encode = msgspec.json.Encoder().encode


def sign_params(client: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ccxt.pro ``binance.sign_params`` for ``client`` (a ccxt ``binance``): ``apiKey``,
    ``timestamp`` (``client.nonce()``: ms, less ccxt's ``timeDifference``), ccxt's
    ``recvWindow`` option, then ``params``; sorted by name, plus ``signature``."""
    client.check_required_credentials()
    query: dict[str, Any] = {"apiKey": client.apiKey, "timestamp": client.nonce()}
    window = client.safe_integer(client.options, "recvWindow")
    if window is not None:
        query["recvWindow"] = window
    query = dict(sorted({**query, **(params or {})}.items()))
    payload = "&".join(f"{k}={v}" for k, v in query.items())
    secret: str = client.secret
    if "PRIVATE KEY" in secret:  # ccxt's rule: a long PEM is RSA, a short one Ed25519
        if len(secret) > 120:
            signature = client.rsa(payload, secret, "sha256")
        else:
            signature = client.eddsa(payload.encode(), secret, "ed25519")
    else:
        signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return {**query, "signature": signature}


class _Connection:
    """One WebSocket API connection: the subscribe request, its answer, then events."""

    def __init__(self, markets: dict[str, str], exchange: str, sink: UserDataSink) -> None:
        self.markets, self.exchange, self.sink = markets, exchange, sink
        self.request_id = str(uuid.uuid4())
        self.confirmed_at: float | None = None

    async def serve(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        params: dict[str, Any],
        *,
        silence: float,
        max_age: float | None,
        answer_timeout: float,
    ) -> str:
        """Subscribe, then read until the connection should end; returns why."""
        loop = asyncio.get_running_loop()
        opened = loop.time()
        await ws.send_str(_encode(Request(self.request_id, SUBSCRIBE, params)).decode())
        while True:
            now = loop.time()
            deadlines = [(now + silence, "silent")]
            if self.confirmed_at is None:
                deadlines.append((opened + answer_timeout, "no answer to subscribe"))
            if max_age is not None:
                deadlines.append((opened + max_age, "max age reached"))
            until, reason = min(deadlines)
            try:  # a zero timeout would mean none at all
                msg = await ws.receive(timeout=max(until - now, 1e-3))
            except TimeoutError:
                return reason
            if msg.type in _CLOSED:
                return "closed by the server"
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    ended = self._on_frame(_decode(msg.data))
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                    log.warning("%s spot user stream: undecodable frame skipped", self.exchange)
                    continue
                if ended:
                    return ended

    def _on_frame(self, frame: WsApiMessage) -> str | None:
        if frame.event:
            kind = handle_event(bytes(frame.event), self.markets, self.exchange, self.sink,
                                "spot")
            return kind if kind in _ENDINGS else None
        if frame.status is None or frame.id not in (self.request_id, None):
            return None  # not an answer to our request
        result = frame.result
        if frame.status != 200 or result is None or result.subscriptionId is None:
            raise SubscribeRefused(frame.status, frame.error)
        if self.confirmed_at is None:
            self.confirmed_at = asyncio.get_running_loop().time()
            self.sink.on_resync("user stream (re)connected")
        return None


async def run_spot_user_stream(
    http: aiohttp.ClientSession,
    url: str,
    sign: Callable[[], dict[str, Any]],
    markets: dict[str, str],
    exchange: str,
    sink: UserDataSink,
    *,
    silence: float = 3600.0,
    max_age: float | None = 23.5 * 3600,
    answer_timeout: float = 10.0,
    heartbeat: float = 30.0,
) -> None:
    """Keep ``sink`` supplied with spot user events until cancelled. ``sign`` returns fresh
    signed subscribe params (``sign_params``); ``markets`` maps exchange ids to Astra ones."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        connection = _Connection(markets, exchange, sink)
        try:
            async with http.ws_connect(url, heartbeat=heartbeat) as ws:
                reason = await connection.serve(
                    ws, sign(), silence=silence, max_age=max_age, answer_timeout=answer_timeout
                )
            log.info("%s spot user stream: %s; reconnecting", exchange, reason)
        except asyncio.CancelledError:
            raise
        except SubscribeRefused as exc:
            log.warning("%s spot user stream: %s", exchange, exc)
        except Exception as exc:  # a socket failure: back off, never spin
            log.info("%s spot user stream: %s: %s", exchange, type(exc).__name__, exc)
        confirmed = connection.confirmed_at
        attempt = 0 if confirmed is not None and loop.time() - confirmed >= _STABLE else attempt + 1
        sink.on_resync("user stream lost")
        await asyncio.sleep(backoff(attempt))
