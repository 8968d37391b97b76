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
- Given a ``Telemetry``, every answer that is not an upgraded WebSocket (whose handler lasts
  as long as the socket) is also observed into ``astra_http_request_duration_seconds`` by
  (route template, method, status): the route is the matched resource's template
  (``/orderbook``, ``/orders/{order_id}``) or ``unmatched``, never the raw path, and a method
  outside the standard ones is ``OTHER``, so no client can grow the label sets. The observe
  callables are bound once per label set (``Telemetry.observer``) and kept here.
- ``FrontDoor`` does all of the above, the API-key gate and the WebSocket sessions in one
  frame per request, whether aiohttp calls it as the app's middleware or the gateway's
  runner calls it in place of ``Application._handle`` (``FrontDoor.serving``): the same code
  path, the same answers. What it learns per route (template, scope, observers) is kept per
  route object, and every 404/405 shares one entry: bounded by the app's routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import msgspec
from aiohttp import hdrs, web

from astra.core import (
    AstraError,
    Error,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    WebSocketUpgradeRequired,
)
from astra.core._redact import without_locations
from astra.telemetry import Telemetry

__all__ = [
    "CLIENT_CLOSED",
    "FRONT_DOOR",
    "MAX_BODY_BYTES",
    "UNMATCHED",
    "WEBSOCKET_PATHS",
    "WEBSOCKET_PREFIX",
    "FrontDoor",
    "Gate",
    "Sessions",
    "error_middleware",
    "error_response",
    "front_door",
    "is_websocket_path",
    "json_response",
]

log = logging.getLogger("astra.server.app")  # where these lines always went
_encode = msgspec.json.Encoder().encode
_clock = time.perf_counter

CLIENT_CLOSED = 499
MAX_BODY_BYTES = 1024 * 1024  # the largest request body (aiohttp's client_max_size)
WEBSOCKET_PATHS = frozenset({"/ws"})  # every WebSocket route of the API, with...
WEBSOCKET_PREFIX = "/ws/"  # ...every route under this one (/ws/stream-otc-quotes/{accountId})
UNMATCHED = "unmatched"  # the route label of a request no route takes (404, 405)
# Methods that label a histogram series as themselves; any other is "OTHER" (bounded labels).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


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


class Gate(Protocol):
    """What the front door folds into its own frame: the API-key check (``auth.ApiKeyAuth``).
    ``scope`` is the route's (``route_scope``, once per route) or ``COMPUTE_SCOPE``."""

    def route_scope(self, route: web.AbstractRoute) -> object: ...

    def admit_now(self, request: web.Request, scope: object) -> web.StreamResponse | bool | None:
        ...

    async def admit(self, request: web.Request, scope: object) -> web.StreamResponse | None:
        ...


class Sessions(Protocol):
    """The WebSocket sessions' middleware (``sessions.WsSessions``), run on upgrades only."""

    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        ...


# The app's front door, for the runner that serves it (``protocol.GatewayRunner``).
FRONT_DOOR = web.AppKey("astra_front_door", object)


class _Route:
    """What the front door knows of one route, found once: its template (the metrics label),
    the scope the gate requires, and the histogram's observe per (method, status)."""

    __slots__ = ("name", "observers", "scope")

    def __init__(self, name: str, scope: object) -> None:
        self.name, self.scope = name, scope
        self.observers: dict[tuple[str, int], Callable[[float], None]] = {}


class FrontDoor:
    """Errors, counting, timing, the API-key ``gate`` and (on WebSocket upgrades only) the
    ``sessions`` middleware, in one frame per request.

    Two ways in, one code path: as the app's only middleware (``door(request, handler=h)``,
    aiohttp's new-style call, under any runner), or as the server's request handler once
    ``serving(app)`` bound it (``protocol.GatewayRunner``): then it also resolves the route
    itself in place of ``Application._handle``, with no middleware frames at all. A path that
    names a route without variables resolves to the same frozen match info every time (memo
    per (method, path), bounded by the app's routes); any other is resolved by the app's
    router, and what it finds (a dynamic route, a 404, a 405) is answered as under the
    middleware. An ``Expect: 100-continue`` is answered once the request is admitted.
    A refusal is an answer like any other (counted, timed)."""

    __middleware_version__ = 1  # aiohttp's mark of a new-style middleware

    def __init__(self, requests: Counter[tuple[str, int]], telemetry: Telemetry | None = None,
                 *, gate: Gate | None = None, sessions: Sessions | None = None) -> None:
        self.requests, self.telemetry = requests, telemetry
        self.gate, self.sessions = gate, sessions
        self._routes: dict[web.AbstractRoute, _Route] = {}  # the app's routes: bounded
        self._unmatched = _Route(UNMATCHED, None)  # every 404/405 (a new route object each)
        self._app: web.Application | None = None
        self._router: web.UrlDispatcher | None = None
        # (method, path) -> (the frozen match info, route) for routes without variables
        self._static: dict[tuple[str, str], tuple[web.UrlMappingMatchInfo, _Route]] = {}

    def serving(self, app: web.Application) -> Callable | None:
        """This door as ``app``'s request handler (``app`` frozen, this door its only
        middleware, no sub-apps); None when it cannot stand in for ``app._handle``."""
        if list(app.middlewares) != [self] or app._subapps or not app.frozen:
            return None
        self._app, self._router = app, app.router
        return self.__call__

    def _route(self, match_info: web.UrlMappingMatchInfo) -> _Route:
        if match_info.http_exception is not None:
            return self._unmatched
        route = match_info.route
        found = self._routes.get(route)
        if found is None:
            resource = route.resource
            name = resource.canonical if resource is not None else UNMATCHED
            scope = self.gate.route_scope(route) if self.gate is not None else None
            found = self._routes[route] = _Route(name, scope)
        return found

    async def _resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, _Route]:
        """What ``Application._handle`` does before its handler: the router's match, frozen
        with the app, remembered when the route has no variables."""
        match_info = await self._router.resolve(request)  # type: ignore[union-attr]
        match_info.add_app(self._app)  # type: ignore[arg-type]
        match_info.freeze()
        route = self._route(match_info)
        if (route is not self._unmatched and not match_info
                and isinstance(match_info.route.resource, web.PlainResource)
                and match_info.route.method != hdrs.METH_ANY):
            self._static[(request.method, request.rel_url.path_safe)] = (match_info, route)
        return match_info, route

    async def __call__(self, request: web.Request, handler: Callable | None = None,
                       ) -> web.StreamResponse:
        started = _clock()
        method = request.method
        if handler is None:  # the server's own handler: resolve here (see the class doc)
            hit = self._static.get((method, request.rel_url.path_safe))
            if hit is None:
                hit = await self._resolve(request)
            match_info, route = hit
            request._match_info = match_info
            handler = match_info.handler
            expect = hdrs.EXPECT in request.headers
        else:
            route = self._route(request.match_info)
            expect = False  # aiohttp answered it before its middlewares
        name = route.name
        try:
            gate = self.gate
            # The gate's answer: None (admitted), a refusal, or False (read the key id first).
            response = gate.admit_now(request, route.scope) if gate is not None else None
            if response is False:
                response = await gate.admit(request, route.scope)  # type: ignore[union-attr]
            if response is None and expect:  # admitted: now invite the body
                response = await request.match_info.expect_handler(request)
                await request.writer.drain()
            if response is None:
                if self.sessions is not None and hdrs.UPGRADE in request.headers:
                    response = await self.sessions.middleware(request, handler)
                else:
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
                log.debug("client closed the connection during %s %s", method, name)
                response = web.Response(status=CLIENT_CLOSED)  # never sent: nobody to read it
        except Exception:
            log.exception("unhandled error on %s", name)
            response = error_response(AstraError())
        status = response.status
        self.requests[(name, status)] += 1
        if self.telemetry is not None and (
                type(response) is web.Response or not isinstance(response, web.WebSocketResponse)):
            observe = route.observers.get((method, status)) or self._observer(route, method, status)
            observe(_clock() - started)
        return response

    def _observer(self, route: _Route, method: str, status: int) -> Callable[[float], None]:
        label = method if method in _METHODS else "OTHER"
        observe = route.observers[(method, status)] = self.telemetry.observer(  # type: ignore
            self.telemetry.http_request_seconds, route.name, label, str(status))  # type: ignore
        if len(route.observers) > 256:  # a client's own methods on a 404: stay bounded
            route.observers.clear()
        return observe


def error_middleware(
    requests: Counter[tuple[str, int]], telemetry: Telemetry | None = None
) -> FrontDoor:
    """The outermost middleware: maps every failure to its JSON error, counts each answer in
    ``requests`` by (route, status) and, given ``telemetry``, observes its handling time."""
    return FrontDoor(requests, telemetry)


def front_door(
    requests: Counter[tuple[str, int]], telemetry: Telemetry | None = None, *,
    gate: Gate | None = None, sessions: Sessions | None = None,
) -> FrontDoor:
    """``error_middleware`` that also runs, in its one frame, the API-key ``gate`` and, on
    WebSocket upgrades only, the ``sessions`` middleware (``FrontDoor``)."""
    return FrontDoor(requests, telemetry, gate=gate, sessions=sessions)
