"""User data streams: listenKeys and the ``/ws/<listenKey>`` WebSocket of one venue side.

REST (USER_STREAM; ``/v1`` needs only the ``X-MBX-APIKEY`` header, ``/v3`` is EIP-712 signed):
``POST {root}/v1|v3/listenKey`` -> ``{"listenKey": "<64 alphanumerics>"}``; ``PUT`` (keepalive)
and ``DELETE`` (close) -> ``{}``, or -1125 ``This listenKey does not exist.``. ``{root}`` is
``/api`` (spot) or ``/fapi`` (perpetual). WebSocket: ``/sstream/ws/<listenKey>`` and
``/fstream/ws/<listenKey>`` (the docs' ``wss://sstream…/ws/<listenKey>``, ``wss://fstream…``).

Rules (the docs'): one key per account per side; a key is valid for 60 minutes
(``validity_ms``) from creation or from its last keepalive; a POST while the account holds a
valid key returns that key and extends it. ``PUT``/``DELETE`` take ``listenKey`` (the spot
docs) or nothing (the futures docs; ccxt sends nothing on either side): without one they act
on the account's current key. A key of another account is "does not exist".

Every event the side's ``OrderManager`` emits for an account (spot ``executionReport`` and
``outboundAccountPosition``, perpetual ``ORDER_TRADE_UPDATE`` and ``ACCOUNT_UPDATE``) is
encoded once and queued to each connection open on that account's key; queues are bounded per
connection (``BoundedSender``), so a slow client is dropped (1013), never waited for. An
account without an open connection costs one dict look-up per event.

Expiry: a key with open connections has one timer, due at its expiry; when it fires and no
keepalive came in time, each connection gets ``{"e":"listenKeyExpired","E":…,"listenKey":…}``
and is then closed (1000). A key without connections simply lapses (looked up lazily). A
DELETE closes the key's connections at once (1000, no event). Connections otherwise follow the
side's market-data rules: server pings, at most 24 h, the incoming message rate, and the same
``SUBSCRIBE``/``UNSUBSCRIBE``/… control messages (market streams can be added to a user
connection, as on Binance-style venues; ``LIST_SUBSCRIPTIONS`` lists only those).
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable

import msgspec
from aiohttp import WSCloseCode, web

from .orders import OrderError
from .state import now_ms
from .ws import WsSide, _Connection

__all__ = ["LISTEN_KEY_VALIDITY_MS", "UserStreams"]

LISTEN_KEY_VALIDITY_MS = 60 * 60 * 1000
_ALPHABET = string.ascii_letters + string.digits
_encode = msgspec.json.Encoder().encode


def _no_key() -> OrderError:
    return OrderError(-1125, "This listenKey does not exist.")


class _Key:
    __slots__ = ("account", "conns", "expires", "timer", "value")

    def __init__(self, value: str, account: int, expires: int) -> None:
        self.value = value
        self.account = account
        self.expires = expires  # epoch ms
        self.conns: set[_Connection] = set()
        self.timer: asyncio.TimerHandle | None = None


class UserStreams:
    """The listenKeys and user-data connections of one side; ``emit`` is the event router."""

    def __init__(
        self,
        kind: str,
        ws: WsSide,
        validity_ms: int = LISTEN_KEY_VALIDITY_MS,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.kind = kind
        self.ws = ws  # the side's market-data endpoints: limits, control messages, drop_all
        self.validity_ms = validity_ms
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._by_account: dict[int, _Key] = {}

    # -- listenKeys --------------------------------------------------------------------------
    def _live(self, value: str) -> _Key | None:
        key = self._keys.get(value)
        if key is not None and key.expires <= self._clock():
            self._expire(key)
            return None
        return key

    def is_key(self, value: str) -> bool:
        """Whether ``value`` is a valid listenKey of this side (the WebSocket route asks)."""
        return self._live(value) is not None

    def _account_key(self, account: int, value: str | None) -> _Key:
        key = self._by_account.get(account)
        if key is None or (value is not None and key.value != value):
            raise _no_key()
        if self._live(key.value) is None:
            raise _no_key()
        return key

    def create(self, account: int) -> str:
        current = self._by_account.get(account)
        if current is not None and self._live(current.value) is not None:
            self._extend(current)
            return current.value
        value = "".join(secrets.choice(_ALPHABET) for _ in range(64))
        key = _Key(value, account, self._clock() + self.validity_ms)
        self._keys[value] = key
        self._by_account[account] = key
        return value

    def keepalive(self, account: int, value: str | None = None) -> None:
        self._extend(self._account_key(account, value))

    def _extend(self, key: _Key) -> None:
        key.expires = self._clock() + self.validity_ms
        if key.timer is not None:  # keep the timer on the expiry (validity_ms may change)
            key.timer.cancel()
            self._arm(key)

    def close(self, account: int, value: str | None = None) -> None:
        key = self._account_key(account, value)
        self._remove(key)
        for conn in tuple(key.conns):
            conn.close(WSCloseCode.OK, "listenKey closed")

    def _remove(self, key: _Key) -> None:
        self._keys.pop(key.value, None)
        if self._by_account.get(key.account) is key:
            del self._by_account[key.account]
        if key.timer is not None:
            key.timer.cancel()
            key.timer = None

    def _expire(self, key: _Key) -> None:
        self._remove(key)
        if key.conns:
            frame = _encode({"e": "listenKeyExpired", "E": self._clock(), "listenKey": key.value})
            for conn in tuple(key.conns):
                conn.finish(frame, WSCloseCode.OK, "listenKey expired")

    def _arm(self, key: _Key) -> None:
        delay = max(0.0, (key.expires - self._clock()) / 1000)
        key.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, key)

    def _on_timer(self, key: _Key) -> None:
        key.timer = None
        if self._keys.get(key.value) is not key:
            return  # closed meanwhile
        if key.expires <= self._clock():
            self._expire(key)
        elif key.conns:
            self._arm(key)  # kept alive since the timer was set

    # -- events ------------------------------------------------------------------------------
    def emit(self, account: int, event: dict) -> None:
        """``OrderManager.emit``: push ``event`` to every connection on the account's key."""
        key = self._by_account.get(account)
        if key is None or not key.conns:
            return
        frame = _encode(event)
        for conn in key.conns:
            conn.deliver(frame)

    # -- REST --------------------------------------------------------------------------------
    def add_routes(self, private) -> None:
        """POST/PUT/DELETE ``listenKey`` on a ``PrivateSide`` (v1 key-only, v3 signed)."""
        private.add("POST", "listenKey",
                    lambda r: {"listenKey": self.create(r.account.id)}, key_only=True)
        private.add("PUT", "listenKey",
                    lambda r: self.keepalive(r.account.id, r.get("listenKey")) or {},
                    key_only=True)
        private.add("DELETE", "listenKey",
                    lambda r: self.close(r.account.id, r.get("listenKey")) or {}, key_only=True)

    # -- WebSocket ---------------------------------------------------------------------------
    async def serve(self, request: web.Request, value: str) -> web.StreamResponse:
        """One ``/ws/<listenKey>`` connection, until it or its key closes."""
        side = self.ws
        ws = await side.open(request)
        conn = _Connection(ws, request.transport, False, side.limits)
        key = self._live(value)  # again: the key may have gone during the handshake
        if key is None:
            conn.close(WSCloseCode.OK, "listenKey expired")
        else:
            key.conns.add(conn)
            if key.timer is None:
                self._arm(key)
        try:
            await side.run(conn, ws)
        finally:
            if key is not None:
                key.conns.discard(conn)
                if not key.conns and key.timer is not None:
                    key.timer.cancel()
                    key.timer = None
        return ws
