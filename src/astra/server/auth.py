"""Authentication of every HTTP request and WebSocket handshake with an Astra API key.

Where the key is read, first found wins (an empty value counts as absent):

1. the ``x-astra-api-key`` header, ``Bearer <token>`` (scheme case-insensitive) or the bare
   token;
2. on a WebSocket handshake, ``Sec-WebSocket-Protocol``: browsers cannot set headers, so they
   offer the token as a subprotocol (``new WebSocket(url, [token])``), possibly among other
   comma-separated protocols. The value that is shaped like a token is taken, and the server
   must echo it: ``web.WebSocketResponse(protocols=[request[WS_PROTOCOL]])``, or the
   browser drops the connection;
3. the ``apiKey`` query parameter (for clients that can do neither; the access log should not
   record query strings of authenticated routes).

Invariants:
- A request that is not exempt reaches its handler only with a verified, unrevoked key, stored
  in ``request[API_KEY]`` (a ``KeyInfo``), and ``request[WS_PROTOCOL]`` set (or None).
- A rejection is HTTP 401 with ``{"code": "UNAUTHORIZED", "message": ...}`` saying whether
  the key was missing or invalid; no response, log or exception ever contains the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import hdrs, web

from astra.core import Unauthorized
from astra.store import ApiKeyStore, KeyInfo, parse_token

__all__ = [
    "API_KEY",
    "API_KEY_HEADER",
    "API_KEY_QUERY",
    "WS_PROTOCOL",
    "auth_middleware",
    "authenticate",
    "extract_token",
]

API_KEY_HEADER = "x-astra-api-key"
# Typed request-storage keys: the verified key, and the subprotocol a WebSocket must echo.
API_KEY = web.RequestKey("api_key", KeyInfo)
WS_PROTOCOL = web.RequestKey("ws_protocol", str)
API_KEY_QUERY = "apiKey"
_MISSING = (
    f"missing API key: send the header '{API_KEY_HEADER}: Bearer <key>' "
    f"(WebSocket: or the key as Sec-WebSocket-Protocol, or ?{API_KEY_QUERY}=)"
)
_INVALID = "invalid API key: unknown, revoked or malformed"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _from_header(value: str) -> str | None:
    parts = value.strip().split(None, 1)
    if not parts:
        return None
    if parts[0].lower() == "bearer":
        return parts[1].strip() if len(parts) == 2 else None
    return value.strip()


def _from_subprotocols(request: web.Request) -> str | None:
    if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return None
    for header in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()):
        for proto in header.split(","):
            if parse_token(proto.strip()) is not None:
                return proto.strip()
    return None


def extract_token(request: web.Request) -> tuple[str | None, str | None]:
    """``(token, websocket_protocol_to_echo)`` from the request; ``(None, None)`` when absent."""
    header = request.headers.get(API_KEY_HEADER)
    if header is not None and (token := _from_header(header)):
        return token, None
    if proto := _from_subprotocols(request):
        return proto, proto
    return request.query.get(API_KEY_QUERY) or None, None


def _check(store: ApiKeyStore, request: web.Request) -> tuple[KeyInfo, str | None]:
    token, proto = extract_token(request)
    if token is None:
        raise Unauthorized(_MISSING)
    info = store.verify(token)
    if info is None:
        raise Unauthorized(_INVALID)
    return info, proto


def authenticate(store: ApiKeyStore, request: web.Request) -> KeyInfo:
    """The request's verified key; raises ``astra.core.Unauthorized`` (missing or invalid)."""
    return _check(store, request)[0]


def _reject(err: Unauthorized) -> web.Response:
    return web.Response(
        status=err.status,
        body=msgspec.json.encode(err.to_model()),
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="astra"'},
    )


def auth_middleware(
    store: ApiKeyStore, exempt: frozenset[str] = frozenset()
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware requiring a valid key on every path except those in ``exempt`` (exact)."""

    @web.middleware
    async def astra_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt:
            return await handler(request)
        try:
            info, proto = _check(store, request)
        except Unauthorized as err:
            return _reject(err)
        request[API_KEY] = info
        request[WS_PROTOCOL] = proto
        return await handler(request)

    return astra_auth
