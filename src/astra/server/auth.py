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
- The hot path (a cached key id) has no await: one token parse, one dict lookup, one SHA-256
  compared in constant time, the route's scope found once per route (``ApiKeyAuth``). A
  revocation through this process's store drops the key id from the cache, so the very next
  request reads it again and is refused.
- On a keep-alive connection (``protocol.GatewayProtocol``) the same header as the last
  verified one (a header that carried the key itself, never one beside ``?apiKey=``) is the
  same key without the parse and the SHA-256: the header is compared in
  constant time and the store's cache entry it was verified against must still be the live
  one (the same object), so a revocation, a re-read after the cache's TTL (another process's
  revocation or scope change) or an eviction is seen on the very next request; expiry, the IP
  allow-list and the scope are checked on every request as before.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
from aiohttp import hdrs, web

from astra.core import AstraError, Forbidden, Overloaded, Unauthorized
from astra.store import TOUCH_EVERY, ApiKeyStore, KeyInfo, ip_allowed, parse_token

from .errors import error_response, is_websocket_path
from .params import API_KEY_QUERY
from .scopes import ANY_SCOPE, PUBLIC, check_scope, required_scope, route_scope

__all__ = [
    "API_KEY",
    "API_KEY_HEADER",
    "API_KEY_QUERY",
    "KEY_LOAD_THREADS",
    "MAX_PENDING_KEY_LOADS",
    "PER_REQUEST",
    "WS_PROTOCOL",
    "ApiKeyAuth",
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
    if value.startswith("Bearer "):  # the usual form, without a split
        return value[7:].strip() or None
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

    def verify_now(self, token: str) -> KeyInfo | bool | None:
        """``verify`` without awaiting when it can: the key (or None) when the token is
        malformed or its key id cached; False when the key id must be read first (``verify``).
        The hot path of every request: one parse, one dict lookup, one SHA-256."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        return self.store.verify_cached(*parsed)

    async def verify(self, token: str) -> KeyInfo | None:
        found = self.verify_now(token)
        if found is not False:
            return found  # type: ignore[return-value]
        key_id = token.partition(".")[0]  # verify_now parsed it: well formed
        store = self.store
        load = self._loading.get(key_id)
        if load is None:
            if len(self._loading) >= self.max_pending:
                raise Overloaded("too many API key lookups in progress: retry shortly",
                                 retry_after=1.0)
            load = self._run(store.load, key_id)
            self._loading[key_id] = load
            load.add_done_callback(lambda _: self._loading.pop(key_id, None))
        await asyncio.shield(load)
        found = self.verify_now(token)
        if found is False:  # cache disabled, or expired meanwhile
            return await self._run(store.verify, token)
        return found  # type: ignore[return-value]


def _admit(verifier: KeyVerifier, request: web.BaseRequest, info: KeyInfo | None) -> KeyInfo:
    """The checks on a verified key, all in memory: unknown, expired, IP allow-list."""
    if info is None:
        raise Unauthorized(_INVALID)
    if info.expires_at is not None and info.expired(int(verifier.clock() * 1000)):
        raise Unauthorized(f"API key {info.key_id} has expired")
    if info.allow_ips and not ip_allowed(info.allow_ips, request.remote):
        raise Forbidden(f"API key {info.key_id} is not allowed from {request.remote}")
    verifier.touch(info.key_id)
    return info


async def _check(verifier: KeyVerifier, request: web.BaseRequest) -> tuple[KeyInfo, str | None]:
    token, proto = extract_token(request)
    if token is None:
        raise Unauthorized(_MISSING)
    info = verifier.verify_now(token)
    if info is False:
        info = await verifier.verify(token)
    return _admit(verifier, request, info), proto  # type: ignore[arg-type]


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


class _Memo:
    """A connection's last verified key header: the header's bytes, the store's cache entry
    it was verified against (compared by identity) and the key."""

    __slots__ = ("entry", "header", "info")

    def __init__(self, header: bytes, entry: object, info: KeyInfo) -> None:
        self.header, self.entry, self.info = header, entry, info


_NO_MEMO = object()  # a connection handler without an ``auth_memo`` attribute: no memo
# The scope of a route that depends on the request (``/ws``'s data type): found per request.
PER_REQUEST = object()


def _header_bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")  # aiohttp's decoding, undone


class ApiKeyAuth:
    """The API-key check: an aiohttp middleware (``__call__``), and the same check in two
    calls for a front door that runs it inside its own frame (``errors.FrontDoor``):
    ``admit_now(request, scope)`` decides without awaiting whenever it can (None: admitted,
    with ``request[API_KEY]`` and ``request[WS_PROTOCOL]`` set; a response: refused; False:
    the key id must be read first), then ``await admit(request, scope)`` decides the rest.
    ``scope`` is ``route_scope(route)``, found once per route by the front door.

    Per connection (a connection handler with an ``auth_memo`` attribute, like
    ``protocol.GatewayProtocol``), the last verified ``x-astra-api-key`` header is
    remembered: the same header again is the same key, with no token parse and no SHA-256,
    while the store's cache entry it was verified against is still the live one (compared by
    identity: a revocation through the store, a re-read after the cache's TTL, an eviction
    all replace or drop it, and the next request is verified in full). The header is compared
    in constant time. Expiry, IP allow-list and scope are checked on every request."""

    __middleware_version__ = 1  # aiohttp's mark of a new-style middleware

    def __init__(self, store: ApiKeyStore, exempt: frozenset[str], verifier: KeyVerifier,
                 scoped: bool) -> None:
        self.store, self.exempt, self.verifier, self.scoped = store, exempt, verifier, scoped

    def route_scope(self, route: web.AbstractRoute) -> object:
        """The scope ``route`` requires (``scopes.ROUTE_SCOPES``; None: none, refused), or
        ``PER_REQUEST`` when it depends on the request (WebSocket routes, 404/405s)."""
        resource = route.resource
        if (not self.scoped or resource is None or route.method == hdrs.METH_ANY
                or is_websocket_path(resource.canonical)):
            return PER_REQUEST
        return route_scope(route.method, resource.canonical)

    def admit_now(self, request: web.Request, scope: object = PER_REQUEST,
                  ) -> web.StreamResponse | bool | None:
        if self.scoped:
            if scope is PER_REQUEST:
                scope = required_scope(request)
            if scope == PUBLIC:
                return None
        if self.exempt and request.path in self.exempt:
            return None
        try:
            header = request.headers.get(API_KEY_HEADER)
            if header is not None:
                memo = getattr(request.protocol, "auth_memo", _NO_MEMO)
                if (memo is not None and memo is not _NO_MEMO
                        and hmac.compare_digest(memo.header, _header_bytes(header))
                        and self.store.cache_entry(memo.info.key_id) is memo.entry):
                    self._grant(request, memo.info, None, scope)  # the same key, unchanged
                    return None
            token, proto = extract_token(request)
            if token is None:
                raise Unauthorized(_MISSING)
            info = self.verifier.verify_now(token)  # the hot path: no await
            if info is False:  # the key id is read off the loop first: admit()
                return False
            self._remember(request, header, proto, info)  # type: ignore[arg-type]
            self._grant(request, info, proto, scope)  # type: ignore[arg-type]
        except Unauthorized as err:
            return _reject(err)
        except AstraError as err:  # Forbidden: a 403
            return error_response(err)
        return None

    async def admit(self, request: web.Request, scope: object = PER_REQUEST,
                    ) -> web.StreamResponse | None:
        """``admit_now``'s answer once the key id has been read (it may be Overloaded)."""
        if self.scoped and scope is PER_REQUEST:
            scope = required_scope(request)
        try:
            token, proto = extract_token(request)
            if token is None:
                raise Unauthorized(_MISSING)
            info = await self.verifier.verify(token)
            self._remember(request, request.headers.get(API_KEY_HEADER), proto, info)
            self._grant(request, info, proto, scope)
        except Unauthorized as err:
            return _reject(err)
        except AstraError as err:  # Overloaded: a 503 with Retry-After; Forbidden: a 403
            return error_response(err)
        return None

    def _remember(self, request: web.Request, header: str | None, proto: str | None,
                  info: KeyInfo | None) -> None:
        """Memo a key verified from the header on this connection (see the class doc)."""
        if info is None or header is None or proto is not None or not _from_header(header):
            # Only a key the header itself carried: with an empty one ("Bearer"), a
            # handshake's key came from ?apiKey=, and the next request on this connection
            # (a proxy's pooled upstream connection: another client's) with the same empty
            # header would be admitted with it.
            return
        protocol = request.protocol
        if getattr(protocol, "auth_memo", _NO_MEMO) is _NO_MEMO:
            return
        entry = self.store.cache_entry(info.key_id, holding=info)
        # (No entry: the cache is off, stale, or replaced since this key was verified (a
        # revocation read by another thread): nothing to compare with next time.)
        protocol.auth_memo = None if entry is None else _Memo(_header_bytes(header), entry, info)

    def _grant(self, request: web.Request, info: KeyInfo | None, proto: str | None,
               scope: object) -> None:
        info = _admit(self.verifier, request, info)
        # The scope check in memory; check_scope words a refusal (and knows 404s).
        if self.scoped and (scope is None or (scope != ANY_SCOPE and scope not in info.scopes)):
            check_scope(request, info.scopes)
        request[API_KEY] = info
        request[WS_PROTOCOL] = proto

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = self.admit_now(request)
        if refused is False:
            refused = await self.admit(request)
        if refused is not None:
            return refused  # type: ignore[return-value]
        return await handler(request)


def auth_middleware(
    store: ApiKeyStore, exempt: frozenset[str] = frozenset(), *,
    verifier: KeyVerifier | None = None, scoped: bool = False,
) -> ApiKeyAuth:
    """Middleware requiring a valid key on every path except those in ``exempt`` (exact).
    ``verifier``: the caller's (which it closes), else one of the middleware's own.
    ``scoped``: also require the route's scope (``scopes.ROUTE_SCOPES``; the gateway does)."""
    return ApiKeyAuth(store, exempt, verifier or KeyVerifier(store), scoped)
