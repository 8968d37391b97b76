"""WebSocket sessions per API key: a cap on concurrent sessions, and revocation closing them.

``WsSessions.middleware`` (after the auth middleware) tracks every WebSocket handshake by its
API key; each WebSocket handler calls ``attach_ws(request, ws)`` right after
``ws.prepare(request)``, giving the session its socket to close. (Not an
``on_response_prepare`` signal: every HTTP response would pay for it.)

Invariants:
- At most ``per_key`` WebSocket sessions are open per API key: the next handshake is refused
  before the upgrade with 429 ``RATE_LIMITED`` JSON and ``Retry-After: 1`` (like every 429). A
  session counts from its handshake until its handler returns.
- A revoked key's sessions are closed with code 1008 (policy violation) and the reason
  ``API key revoked``: at once when the key is revoked through this process's store
  (``ApiKeyStore.on_revoke``), and otherwise (e.g. ``astra keys revoke`` in another process)
  within ``revalidate_every`` seconds, as the keys of open sessions are re-read from the store
  (uncached, in a worker thread) on that period. A key that no longer exists counts as revoked;
  so does a key past its expiry (found on that period).
  The re-read refreshes the store's cache, so new requests with that key are refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, web

from astra.core import RateLimited
from astra.store import ApiKeyStore

from .auth import API_KEY, is_websocket_upgrade

__all__ = ["REVOKED_CLOSE_CODE", "REVOKED_REASON", "WsSessions", "attach_ws"]

log = logging.getLogger(__name__)
REVOKED_CLOSE_CODE = int(WSCloseCode.POLICY_VIOLATION)
REVOKED_REASON = "API key revoked"
RETRY_AFTER = 1.0  # seconds a client refused for too many sessions waits before retrying
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Session:
    __slots__ = ("closer", "owner", "revoked", "ws")

    def __init__(self, owner: WsSessions) -> None:
        self.owner = owner
        self.ws: web.WebSocketResponse | None = None
        self.revoked = False
        self.closer: asyncio.Task | None = None  # the close in progress


_SESSION = web.RequestKey("astra_ws_session", _Session)


def attach_ws(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Give the request's session (if sessions are tracked) its upgraded socket; a key
    revoked during the handshake has the socket closed now. Call right after ``prepare``."""
    session = request.get(_SESSION)
    if session is not None:
        session.ws = ws
        if session.revoked:
            session.owner._close(session)


class WsSessions:
    def __init__(
        self, store: ApiKeyStore, *, per_key: int = 50, revalidate_every: float = 5.0
    ) -> None:
        self.store = store
        self.per_key = per_key
        self.revalidate_every = revalidate_every
        self._by_key: dict[str, set[_Session]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._revalidator: asyncio.Task | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def count(self, key_id: str) -> int:
        return len(self._by_key.get(key_id, ()))

    def open_count(self) -> int:
        """Upgraded WebSockets still open, of every key (``astra_ws_connections``)."""
        return sum(1 for sessions in self._by_key.values() for session in sessions
                   if session.ws is not None and not session.ws.closed)

    # --- wiring into the app -----------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.get(API_KEY)
        if info is None or not is_websocket_upgrade(request):
            return await handler(request)
        sessions = self._by_key.setdefault(info.key_id, set())
        if len(sessions) >= self.per_key:
            raise RateLimited(
                f"too many WebSocket connections for API key {info.key_id}: "
                f"at most {self.per_key} at once",
                retry_after=RETRY_AFTER,
            )
        session = _Session(self)
        sessions.add(session)
        request[_SESSION] = session
        try:
            return await handler(request)
        finally:
            sessions.discard(session)
            if not sessions and self._by_key.get(info.key_id) is sessions:
                del self._by_key[info.key_id]

    # --- revocation ----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._unsubscribe is None:
            self._unsubscribe = self.store.on_revoke(self._revoked_elsewhere)
        if self._revalidator is None and self.revalidate_every > 0:
            self._revalidator = asyncio.create_task(self._revalidate_forever())

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [t for t in (self._revalidator, *self._tasks) if t is not None]
        self._revalidator = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def revoke(self, key_id: str) -> None:
        """Close every open session of ``key_id`` (on the loop)."""
        for session in list(self._by_key.get(key_id, ())):
            session.revoked = True
            self._close(session)

    def _revoked_elsewhere(self, key_id: str) -> None:
        # ApiKeyStore.revoke may run in any thread; sessions live on the loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.revoke, key_id)

    async def revalidate(self) -> None:
        """Re-read the keys of open sessions; close those of revoked or deleted keys."""
        for key_id in list(self._by_key):
            # load (uncached read) also refreshes the store's cache: new requests with a
            # revoked key are refused from now on, not only after the cache's TTL.
            info = await asyncio.to_thread(self.store.load, key_id)
            # An expired key's sessions end too (close reason as for a revocation).
            if info is None or not info.active or info.expired(time.time_ns() // 1_000_000):
                log.info("API key %s revoked or expired: closing its WebSocket sessions",
                         key_id)
                self.revoke(key_id)

    async def _revalidate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate_every)
            try:
                await self.revalidate()
            except Exception:  # a database hiccup must not end revalidation for good
                log.exception("revalidating WebSocket sessions' API keys failed")

    def _close(self, session: _Session) -> None:
        # Not yet upgraded: attach_ws closes it. A close that failed is retried by the next
        # revalidation.
        ws = session.ws
        if ws is None or ws.closed or (session.closer is not None and not session.closer.done()):
            return
        session.closer = task = asyncio.ensure_future(self._send_close(ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _send_close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=REVOKED_CLOSE_CODE, message=REVOKED_REASON.encode())
