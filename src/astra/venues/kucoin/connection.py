"""One KuCoin WebSocket session: token, welcome, subscribe, ping, silence, lifetime.

KuCoin's protocol (both spot and futures):
- ``POST /api/v1/bullet-public`` returns a token and ``instanceServers`` (endpoint,
  ``pingInterval``, ``pingTimeout`` in ms). Connect to ``endpoint?token=..&connectId=..``.
  A token is only good for a while (24 h, or until the connection drops): every new
  connection after a failure asks for a fresh one; a healthy session is closed after
  ``max_age`` so it never outlives its token.
- The server opens with ``{"type": "welcome"}``; only then is the connection usable, so the
  ``subscribe`` is sent on the welcome. ``ack`` confirms it; ``error`` (bad topic, too many
  subscriptions, ...) ends the session with ``VenueFeedError``.
- The client must send ``{"type": "ping"}`` every ``pingInterval``; the server answers
  ``pong``. Any frame counts as life: none within ``silence`` seconds (at least
  ``pingInterval + pingTimeout``, as pongs are due by then) ends the session as dead.

``run_session`` returns normally only when the session reached ``max_age``; every other end
is an exception for the caller's reconnect/backoff loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from astra.venues.retry import backoff

from .schemas import Bullet

__all__ = ["FEED_ERRORS", "VenueFeedError", "backoff", "run_session"]

log = logging.getLogger(__name__)
# A dead upstream never answers a close handshake: don't wait long for it before reconnecting.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
_ids = itertools.count(1)


class VenueFeedError(Exception):
    """KuCoin sent an ``error`` frame (or closed on us)."""


# What a feed survives by reconnecting: network, silence, garbage, venue-side errors.
FEED_ERRORS = (
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
    msgspec.DecodeError,
    ValueError,
    VenueFeedError,
)


def _url(endpoint: str, token: str, connect_id: int) -> str:
    sep = "&" if "?" in endpoint else "?"
    return f"{endpoint}{sep}token={token}&connectId=astra{connect_id}"


async def run_session(
    session: aiohttp.ClientSession,
    bullet: Callable[[], Awaitable[Bullet]],
    topic: str,
    decode: Callable[[bytes | str], Any],
    on_data: Callable[[Any], None],
    *,
    endpoint: str | None = None,
    silence: float = 60.0,
    max_age: float = 23 * 3600.0,
) -> None:
    """Subscribe ``topic`` on a fresh connection and call ``on_data(envelope.data)`` for each
    of its messages, until the connection fails (raises) or reaches ``max_age`` (returns)."""
    grant = await bullet()
    server = grant.instanceServers[0]
    connect_id = next(_ids)
    url = _url(endpoint or server.endpoint, grant.token, connect_id)
    ping_every = max(server.pingInterval / 1000, 0.05)
    # Pongs are due within pingInterval + pingTimeout: a quieter connection is dead.
    silence = max(silence, ping_every + server.pingTimeout / 1000)
    subscribe = msgspec.json.encode(
        {
            "id": connect_id,
            "type": "subscribe",
            "topic": topic,
            "privateChannel": False,
            "response": True,
        }
    ).decode()
    loop = asyncio.get_running_loop()
    async with session.ws_connect(url, timeout=_WS_TIMEOUT) as ws:
        now = loop.time()
        last_frame, next_ping, retire_at = now, now + ping_every, now + max_age
        while True:
            now = loop.time()
            if now >= retire_at:
                log.info("%s: connection reached its %.0f s lifetime", topic, max_age)
                return
            if now >= next_ping:
                await ws.send_str(f'{{"id":"{next(_ids)}","type":"ping"}}')
                next_ping = now + ping_every
            wait = min(next_ping, last_frame + silence, retire_at) - now
            try:
                msg = await ws.receive(timeout=max(wait, 0.001))
            except TimeoutError:
                if loop.time() - last_frame >= silence:
                    raise TimeoutError(f"{topic}: silent for {silence:.1f} s") from None
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"{topic}: upstream sent {msg.type.name}")
            last_frame = loop.time()
            frame = decode(msg.data)
            kind = frame.type
            if kind == "message":
                if frame.topic == topic:
                    data = frame.data
                    if data.__class__ is str or data is msgspec.UNSET:
                        raise ValueError(f"{topic}: message without a payload: {msg.data!r}")
                    on_data(data)
            elif kind == "welcome":
                await ws.send_str(subscribe)
            elif kind == "error":
                raise VenueFeedError(f"{topic}: error {frame.code!r}: {frame.data!r}")
            # ack, pong, notice: nothing to do beyond counting as life
