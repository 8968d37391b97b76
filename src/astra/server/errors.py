"""Every error the API answers, in one JSON shape: ``{"code","message","parameter"?,...}``.

Invariants:
- Whatever fails, in a handler or in aiohttp's routing and body reading (an unknown path, a
  method the path does not take, a body over ``MAX_BODY_BYTES``, a plain GET on a WebSocket
  endpoint), leaves as an ``Error`` body with its status: never text/plain. A 405 carries
  ``Allow``, a 429 ``Retry-After``.
- A message that names a venue (``err.venue`` set) reaches the client without URLs, host
  names or addresses: where a venue is reached (a simulator on loopback, a proxy) is the
  operator's business, and ccxt and aiohttp quote it in their messages.
- A client that goes away while its request is read is no server error: it is counted under
  status ``CLIENT_CLOSED`` (499, nginx's "client closed request") and logged at debug level.
- An unexpected exception is logged with its stack and answered 500 ``INTERNAL_ERROR`` with
  no detail in the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import msgspec
from aiohttp import web

from astra.core import (
    AstraError,
    Error,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    WebSocketUpgradeRequired,
)
from astra.core._redact import without_locations

__all__ = [
    "CLIENT_CLOSED",
    "MAX_BODY_BYTES",
    "WEBSOCKET_PATHS",
    "WEBSOCKET_PREFIX",
    "error_middleware",
    "error_response",
    "is_websocket_path",
    "json_response",
]

log = logging.getLogger("astra.server.app")  # where these lines always went
_encode = msgspec.json.Encoder().encode

CLIENT_CLOSED = 499
MAX_BODY_BYTES = 1024 * 1024  # the largest request body (aiohttp's client_max_size)
WEBSOCKET_PATHS = frozenset({"/ws"})  # every WebSocket route of the API, with...
WEBSOCKET_PREFIX = "/ws/"  # ...every route under this one (/ws/stream-otc-quotes/{accountId})


def is_websocket_path(path: str) -> bool:
    """A WebSocket endpoint's path (or route pattern)."""
    return path in WEBSOCKET_PATHS or path.startswith(WEBSOCKET_PREFIX)


def json_response(body: object, status: int = 200) -> web.Response:
    """``body`` (a msgspec Struct, or plain data) encoded once as the JSON answer."""
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def error_response(err: AstraError) -> web.Response:
    model = err.to_model()
    if err.venue is not None:
        model.message = without_locations(model.message)
    resp = json_response(model, err.status)
    if err.retry_after is not None:
        resp.headers["Retry-After"] = str(int(err.retry_after + 0.999))
    return resp


def _from_http(exc: web.HTTPException, request: web.Request, name: str) -> web.Response:
    """aiohttp's own errors (raised by the router, ``request.read()`` or a WebSocket
    handshake) as API errors."""
    if isinstance(exc, web.HTTPNotFound):
        return error_response(NotFound(f"no such endpoint: {request.path[:200]}"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        resp = error_response(
            MethodNotAllowed(
                f"{request.method[:16]} is not allowed on {request.path[:200]}: use {allowed}"
            )
        )
        resp.headers["Allow"] = exc.headers.get("Allow", allowed)
        return resp
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(
            PayloadTooLarge(f"request body too large: at most {MAX_BODY_BYTES} bytes")
        )
    if isinstance(exc, web.HTTPBadRequest) and is_websocket_path(name):
        return error_response(WebSocketUpgradeRequired())  # the handshake refused the request
    code = "BAD_REQUEST" if exc.status == 400 else f"HTTP_{exc.status}"
    resp = json_response(Error(code=code, message=exc.reason), exc.status)
    for header in ("Allow", "Retry-After"):
        if header in exc.headers:
            resp.headers[header] = exc.headers[header]
    return resp


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def error_middleware(requests: Counter[tuple[str, int]]) -> Callable:
    """The outermost middleware: maps every failure to its JSON error and counts each
    answer in ``requests`` by (route, status)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except AstraError as err:
            response = error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect is no error
            response = _from_http(exc, request, name)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            if not _client_gone(request):
                log.exception("unhandled error on %s", name)
                response = error_response(AstraError())
            else:  # the client disconnected mid-request: nothing to answer, nothing broken
                log.debug("client closed the connection during %s %s", request.method, name)
                response = web.Response(status=CLIENT_CLOSED)  # never sent: nobody to read it
        except Exception:
            log.exception("unhandled error on %s", name)
            response = error_response(AstraError())
        requests[(name, response.status)] += 1
        return response

    return middleware
