"""Authentication of every HTTP request and WebSocket handshake with an Astra API key.

Where the key is read, first found wins (an empty value counts as absent):

1. the ``x-astra-api-key`` header, ``Bearer <token>`` (scheme case-insensitive) or the bare
   token;
2. on a WebSocket handshake only (a GET upgrading to ``websocket`` on a WebSocket path:
   ``/ws`` and under ``/ws/``), ``Sec-WebSocket-Protocol``: browsers cannot set headers, so
   they offer the token as a subprotocol (``new WebSocket(url, [token])``), possibly among
   other comma-separated protocols. The value that is shaped like a token is taken, and the
   server must echo it: ``web.WebSocketResponse(protocols=[request[WS_PROTOCOL]])``, or the
   browser drops the connection;
3. on a WebSocket handshake only, the ``apiKey`` query parameter (for clients that can do
   neither). On REST it is refused (401 naming the header): a key in a URL ends up in
   proxies' logs and browser history, and REST clients can always send the header. An
   ``Upgrade: websocket`` header alone does not make a request a handshake: ``POST
   /orders?apiKey=`` with it is still REST, and refused.

Invariants:
- A request that is not exempt reaches its handler only with a verified, unrevoked key, stored
  in ``request[API_KEY]`` (a ``KeyInfo``), and ``request[WS_PROTOCOL]`` set (or None).
- A rejection is HTTP 401 with ``{"code": "UNAUTHORIZED", "message": ...}`` saying whether
  the key was missing or invalid; no response, log or exception ever contains the key.
- Verifying never blocks the event loop: a key id absent from the store's short cache
  (positive and negative entries, bounded) is read in a worker thread, once per key id however
  many requests wait for it (``KeyVerifier``); the secret is compared in constant time by the
  store.
- Key reads run on the verifier's own small thread pool (``KEY_LOAD_THREADS``), never on the
  loop's default executor that the order journal uses, and at most ``max_pending`` key ids
  are being read at once: past that a request with an uncached key id is answered 503
  ``OVERLOADED`` with ``Retry-After`` and never reaches the store. A flood of random key ids
  therefore cannot delay journaling nor grow a queue without bound. (503, not 401: the key
  may well be valid, and a 401 would tell its client to stop using it.)
- Scopes (``scopes.py``), expiry and IP allow-list are checked in memory on the cached
  ``KeyInfo``: an expired key is a 401 saying so, a request from outside the allow-list or
  outside the key's scopes a 403 naming the address or scope.
- A key's last-used time is written at most every ``touch_every`` seconds per key, on the
  verifier's threads: never on the loop, never awaited by the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
from aiohttp import hdrs, web

from astra.core import AstraError, Forbidden, Overloaded, Unauthorized
from astra.store import TOUCH_EVERY, ApiKeyStore, KeyInfo, ip_allowed, parse_token

from .errors import error_response, is_websocket_path
from .params import API_KEY_QUERY
from .scopes import PUBLIC, check_scope, required_scope

__all__ = [
    "API_KEY",
    "API_KEY_HEADER",
    "API_KEY_QUERY",
    "KEY_LOAD_THREADS",
    "MAX_PENDING_KEY_LOADS",
    "WS_PROTOCOL",
    "KeyVerifier",
    "auth_middleware",
    "authenticate",
    "extract_token",
    "is_websocket_upgrade",
]

API_KEY_HEADER = "x-astra-api-key"
# Typed request-storage keys: the verified key, and the subprotocol a WebSocket must echo.
API_KEY = web.RequestKey("api_key", KeyInfo)
WS_PROTOCOL = web.RequestKey("ws_protocol", str)
KEY_LOAD_THREADS = 2
MAX_PENDING_KEY_LOADS = 64  # key ids being read at once; a burst of new clients fits
_MISSING = (
    f"missing API key: send the header '{API_KEY_HEADER}: Bearer <key>' "
    f"(WebSocket: or the key as Sec-WebSocket-Protocol, or ?{API_KEY_QUERY}=)"
)
_INVALID = "invalid API key: unknown, revoked or malformed"
_QUERY_ON_REST = (
    f"?{API_KEY_QUERY}= is accepted on WebSocket handshakes only: send the header "
    f"'{API_KEY_HEADER}: Bearer <key>'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _from_header(value: str) -> str | None:
    parts = value.strip().split(None, 1)
    if not parts:
        return None
    if parts[0].lower() == "bearer":
        return parts[1].strip() if len(parts) == 2 else None
    return value.strip()


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _is_handshake(request: web.BaseRequest) -> bool:
    """A WebSocket handshake: only then may the key come from the URL or a subprotocol."""
    return (
        request.method == hdrs.METH_GET
        and is_websocket_path(request.path)
        and is_websocket_upgrade(request)
    )


def _from_subprotocols(request: web.BaseRequest) -> str | None:
    for header in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()):
        for proto in header.split(","):
            if parse_token(proto.strip()) is not None:
                return proto.strip()
    return None


def extract_token(request: web.BaseRequest) -> tuple[str | None, str | None]:
    """``(token, websocket_protocol_to_echo)`` from the request; ``(None, None)`` when absent.
    Raises ``Unauthorized`` for ``?apiKey=`` on a request that is not a WebSocket handshake
    (a GET upgrading on a WebSocket path) and has no key header."""
    header = request.headers.get(API_KEY_HEADER)
    if header is not None and (token := _from_header(header)):
        return token, None
    if not _is_handshake(request):
        if request.query.get(API_KEY_QUERY):
            raise Unauthorized(_QUERY_ON_REST, parameter=API_KEY_HEADER)
        return None, None
    if proto := _from_subprotocols(request):
        return proto, proto
    return request.query.get(API_KEY_QUERY) or None, None


class KeyVerifier:
    """``await verify(token)``: the store's ``verify`` without blocking the event loop.

    A key id the store has cached (found or not) is verified on the loop (a dict lookup and
    one SHA-256); otherwise the store reads it on the verifier's own threads, and concurrent
    requests for the same key id share that one read. With ``max_pending`` key ids being read
    already, ``verify`` raises ``Overloaded`` instead. ``close()`` ends the threads.
    """

    def __init__(self, store: ApiKeyStore, *, max_pending: int = MAX_PENDING_KEY_LOADS,
                 threads: int = KEY_LOAD_THREADS, touch_every: float = TOUCH_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.max_pending = max_pending
        self.touch_every, self.clock = touch_every, clock
        self._touched: dict[str, float] = {}  # key id -> when its last-used time was written
        self._loading: dict[str, asyncio.Future] = {}
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="astra-keys")

    @property
    def pending(self) -> int:
        """Key ids being read now."""
        return len(self._loading)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, fn: Callable, *args: object) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def touch(self, key_id: str) -> None:
        """Record a use of ``key_id``, at most once per ``touch_every``, off the loop."""
        now = self.clock()
        last = self._touched.get(key_id)
        if last is not None and now - last < self.touch_every:
            return
        if len(self._touched) >= 10_000:  # bounded: only verified keys get here anyway
            self._touched.clear()
        self._touched[key_id] = now
        self._executor.submit(self._write_touch, key_id, int(now * 1000))

    def _write_touch(self, key_id: str, when_ms: int) -> None:
        try:
            self.store.touch(key_id, when_ms)
        except Exception:  # advisory: a failed write must not surface; retried next period
            self._touched.pop(key_id, None)

    async def verify(self, token: str) -> KeyInfo | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id = parsed[0]
        store = self.store
        if not store.is_cached(key_id):
            load = self._loading.get(key_id)
            if load is None:
                if len(self._loading) >= self.max_pending:
                    raise Overloaded("too many API key lookups in progress: retry shortly",
                                     retry_after=1.0)
                load = self._run(store.load, key_id)
                self._loading[key_id] = load
                load.add_done_callback(lambda _: self._loading.pop(key_id, None))
            await asyncio.shield(load)
            if not store.is_cached(key_id):  # cache disabled, or expired meanwhile
                return await self._run(store.verify, token)
        return store.verify(token)


async def _check(verifier: KeyVerifier, request: web.BaseRequest) -> tuple[KeyInfo, str | None]:
    token, proto = extract_token(request)
    if token is None:
        raise Unauthorized(_MISSING)
    info = await verifier.verify(token)
    if info is None:
        raise Unauthorized(_INVALID)
    if info.expired(int(verifier.clock() * 1000)):
        raise Unauthorized(f"API key {info.key_id} has expired")
    if not ip_allowed(info.allow_ips, request.remote):
        raise Forbidden(f"API key {info.key_id} is not allowed from {request.remote}")
    verifier.touch(info.key_id)
    return info, proto


async def authenticate(verifier: KeyVerifier, request: web.BaseRequest) -> KeyInfo:
    """The request's verified key; raises ``astra.core.Unauthorized`` (missing or invalid)."""
    return (await _check(verifier, request))[0]


def _reject(err: Unauthorized) -> web.Response:
    return web.Response(
        status=err.status,
        body=msgspec.json.encode(err.to_model()),
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="astra"'},
    )


def auth_middleware(
    store: ApiKeyStore, exempt: frozenset[str] = frozenset(), *,
    verifier: KeyVerifier | None = None, scoped: bool = False,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware requiring a valid key on every path except those in ``exempt`` (exact).
    ``verifier``: the caller's (which it closes), else one of the middleware's own.
    ``scoped``: also require the route's scope (``scopes.ROUTE_SCOPES``; the gateway does)."""
    verifier = verifier or KeyVerifier(store)

    @web.middleware
    async def astra_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt or (scoped and required_scope(request) == PUBLIC):
            return await handler(request)
        try:
            info, proto = await _check(verifier, request)
        except Unauthorized as err:
            return _reject(err)
        except AstraError as err:  # Overloaded: a 503 with Retry-After; Forbidden: a 403
            return error_response(err)
        if scoped:
            try:
                check_scope(request, info.scopes)
            except Forbidden as err:
                return error_response(err)
        request[API_KEY] = info
        request[WS_PROTOCOL] = proto
        return await handler(request)

    return astra_auth
