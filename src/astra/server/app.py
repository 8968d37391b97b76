"""The gateway's HTTP + WebSocket application (seed 001's public API) and its metrics app.

Invariants:
- Every error leaves as ``{"code", "message"}`` JSON with the error's HTTP status, and names
  the parameter at fault; bad input is a 4xx, never a 500 (``errors.py``: aiohttp's own
  404/405/413 and handshake errors included; an unexpected exception is logged and answered
  with a 500 ``INTERNAL_ERROR`` body, never a stack trace).
- Every route but the metrics app's requires an API key (``astra.server.auth``).
- A WebSocket is upgraded only after its parameters, key and market are validated, so a bad
  subscription gets a plain HTTP error instead of a socket that hangs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from astra.core import InvalidParameter, MissingParameter, TradesMessage
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import SMART_PREFIX
from astra.telemetry import Telemetry

from .auth import ApiKeyAuth
from .errors import FRONT_DOOR, MAX_BODY_BYTES, error_middleware, front_door, json_response
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .openapi import openapi_document
from .params import (
    DEFAULT_TRADES_LIMIT,
    MAX_DEPTH,
    MAX_TRADES_LIMIT,
    PRIVATE_DATA_TYPES,
    bool_param,
    int_param,
    required,
    venues_param,
)
from .sessions import WsSessions
from .ws import LiveStreams

__all__ = ["Metrics", "build_app", "build_metrics_app"]

log = logging.getLogger(__name__)
_QUERY_MEMO = 1024  # parsed GET /orderbook query strings kept (then all forgotten at once)


class _Routes:
    def __init__(
        self,
        engine: MarketDataEngine,
        metrics: Metrics,
        max_queue: int,
        send_buffer: int,
        private_ws: Callable | None = None,
        replay_ws: Callable | None = None,
    ) -> None:
        self.engine, self.metrics = engine, metrics
        self.private_ws = private_ws  # ORDERS / FILLS / BALANCES subscriptions
        self.replay_ws = replay_ws  # recorded data: a query with `from` (server/replay.py)
        self.max_queue, self.send_buffer = max_queue, send_buffer
        self.live = LiveStreams(engine, metrics, max_queue, send_buffer)
        # GET /orderbook: raw query string -> (market, depth), for single venues' books
        self._book_queries: dict[str, tuple[str, int | None]] = {}

    async def markets(self, request: web.Request) -> web.Response:
        return json_response(await self.engine.markets(required(request.query, "exchange")))

    async def orderbook(self, request: web.Request) -> web.Response:
        # A query string seen before (a client polling one book) is not parsed again.
        raw = request.rel_url.raw_query_string
        parsed = self._book_queries.get(raw)
        if parsed is None:
            parsed = self._book_query(request)
            if parsed is None:  # the consolidated book (venues=, feeAdjusted=)
                return web.Response(body=await self.engine.smart_order_book(
                    required(request.query, "market"),
                    int_param(request.query, "depth", None, MAX_DEPTH),
                    venues_param(request.query), bool_param(request.query, "feeAdjusted")),
                    content_type="application/json")
            if len(self._book_queries) >= _QUERY_MEMO:
                self._book_queries.clear()
            self._book_queries[raw] = parsed
        market, depth = parsed
        # The live book's cached bytes as they are (encoded once per version and depth).
        body = self.engine.order_book_now(market, depth)
        if body is None:  # not yet running or synced: resolve, start the feed, wait
            body = await self.engine.order_book(market, depth)
        return web.Response(body=body, content_type="application/json")

    @staticmethod
    def _book_query(request: web.Request) -> tuple[str, int | None] | None:
        """(market, depth) of a single venue's book; None for a SMART market; raises for a
        bad query (nothing remembered)."""
        market = required(request.query, "market")
        depth = int_param(request.query, "depth", None, MAX_DEPTH)
        if market.startswith(SMART_PREFIX):
            return None
        for name in ("venues", "feeAdjusted"):  # a book that is not what was asked: 400
            if name in request.query:
                raise InvalidParameter(name, "only SMART markets take " + name)
        return market, depth

    async def bbo(self, request: web.Request) -> web.Response:
        market = required(request.query, "market")
        body = await self.engine.bbo(market, venues_param(request.query))
        return web.Response(body=body, content_type="application/json")

    async def trades(self, request: web.Request) -> web.Response:
        market = required(request.query, "market")
        limit = int_param(request.query, "limit", DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT)
        return json_response(TradesMessage(trades=await self.engine.recent_trades(market, limit)))

    async def exchanges(self, request: web.Request) -> web.Response:
        return json_response(
            [
                {"exchange": code, "capabilities": venue.capabilities}
                for code, venue in sorted(self.engine.venues.items())
            ]
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document(self.engine.venues))  # narrowed to the served venues

    async def ws(self, request: web.Request) -> web.StreamResponse:
        if "from" in request.query:  # a replay of recorded data, not a live subscription
            if self.replay_ws is None:
                raise InvalidParameter("from", "this gateway serves no recorded data")
            return await self.replay_ws(request)
        for name in ("to", "speed"):  # replay parameters without a replay
            if name in request.query:
                raise MissingParameter("from")
        if self.private_ws is not None and request.query.get("dataType") in PRIVATE_DATA_TYPES:
            return await self.private_ws(request)
        return await self.live(request)  # market streams, many per connection (server/ws.py)


def build_app(
    engine: MarketDataEngine,
    metrics: Metrics,
    *,
    auth: Callable | None = None,
    sessions: WsSessions | None = None,
    max_queue: int = 5000,
    send_buffer: int = 256 * 1024,
    private_ws: Callable | None = None,
    replay_ws: Callable | None = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The public API. ``auth`` is the API-key middleware (None only in tests of routing);
    ``sessions`` caps and tracks WebSockets per key (closing a revoked key's);
    ``max_queue`` (frames) and ``send_buffer`` (bytes) bound what a slow client may hold;
    ``replay_ws`` serves ``/ws`` requests with ``from`` (replays, ``server/replay.py``);
    ``telemetry`` is what the app observes into (default ``metrics.telemetry``: the registry
    ``/metrics`` exposes)."""
    telemetry = telemetry if telemetry is not None else metrics.telemetry
    door = None
    if auth is None or isinstance(auth, ApiKeyAuth):
        # One frame per request for errors, timing, the key and sessions (errors.FrontDoor);
        # sessions after the key: they count by the verified key. Under GatewayRunner the
        # door is the server's request handler (no middleware frame); under any other
        # runner, the app's only middleware: the same checks either way.
        door = front_door(metrics.requests, telemetry, gate=auth, sessions=sessions)
        middlewares: list = [door]
    else:  # another auth middleware (tests): the same order, as separate middlewares
        middlewares = [error_middleware(metrics.requests, telemetry), auth]
        if sessions is not None:
            middlewares.append(sessions.middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    if door is not None:
        app[FRONT_DOOR] = door
    routes = _Routes(engine, metrics, max_queue, send_buffer, private_ws, replay_ws)
    app.add_routes(
        [
            web.get("/markets", routes.markets),
            web.get("/orderbook", routes.orderbook),
            web.get("/bbo", routes.bbo),
            web.get("/trades", routes.trades),
            web.get("/exchanges", routes.exchanges),
            web.get("/openapi.json", routes.openapi),
            web.get("/ws", routes.ws),
        ]
    )
    return app


def build_metrics_app(metrics: Metrics) -> web.Application:
    """``/health`` and ``/metrics`` for operators, on their own port."""

    async def health(request: web.Request) -> web.Response:
        return json_response(
            {
                "status": "ok",
                "role": metrics.role,
                "venues": sorted(metrics.engine.venues),
                "feeds": len(metrics.engine.channels),
            }
        )

    async def prometheus(request: web.Request) -> web.Response:
        # prometheus_client's exposition of this gateway's own registry (server/metrics.py)
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/metrics", prometheus)])
    return app
