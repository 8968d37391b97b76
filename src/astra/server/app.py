"""The gateway's HTTP + WebSocket application (seed 001's public API) and its metrics app.

Invariants:
- Every error leaves as ``{"code", "message"}`` JSON with the error's HTTP status, and names
  the parameter at fault; bad input is a 4xx, never a 500 (an unexpected exception is
  logged and answered with a 500 ``INTERNAL_ERROR`` body, never a stack trace).
- Every route but the metrics app's requires an API key (``astra.server.auth``).
- A WebSocket is upgraded only after its parameters, key and market are validated, so a bad
  subscription gets a plain HTTP error instead of a socket that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

import msgspec
from aiohttp import WSCloseCode, web

from astra.core import (
    AstraError,
    DataType,
    Error,
    InvalidParameter,
    MissingParameter,
    NotFound,
    TradesMessage,
)
from astra.marketdata.engine import MarketDataEngine
from astra.net import BoundedSender

from .auth import WS_PROTOCOL
from .openapi import openapi_document
from .private import PRIVATE_DATA_TYPES

__all__ = ["Metrics", "build_app", "build_metrics_app"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_DATA_TYPES = {d.value: d for d in DataType}


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def error_response(err: AstraError) -> web.Response:
    resp = _json(err.to_model(), err.status)
    if err.retry_after is not None:
        resp.headers["Retry-After"] = str(int(err.retry_after + 0.999))
    return resp


class Metrics:
    """Counters behind ``/metrics`` (Prometheus text format)."""

    def __init__(self, engine: MarketDataEngine) -> None:
        self.engine = engine
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ws_clients: Counter[str] = Counter()
        self.started = time.time()

    def render(self) -> str:
        lines = ["# TYPE astra_http_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'astra_http_requests_total{{route="{route}",status="{status}"}} {n}')
        lines.append("# TYPE astra_ws_clients gauge")
        for data_type in DataType:
            lines.append(f'astra_ws_clients{{dataType="{data_type}"}} {self.ws_clients[data_type]}')
        for name, value in self.engine.stats.items():
            lines.append(f"# TYPE astra_{name}_total counter")
            lines.append(f"astra_{name}_total {value}")
        lines.append("# TYPE astra_feeds gauge")
        lines.append(f"astra_feeds {len(self.engine.channels)}")
        lines.append("# TYPE astra_uptime_seconds gauge")
        lines.append(f"astra_uptime_seconds {time.time() - self.started:.0f}")
        return "\n".join(lines) + "\n"


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise MissingParameter(name)
    return value


def _int(request: web.Request, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise InvalidParameter(name, f"expected an integer from 1 to {maximum}, got {text[:40]!r}")
    value = int(text)
    if not 1 <= value <= maximum:
        raise InvalidParameter(name, f"expected an integer from 1 to {maximum}, got {value}")
    return value


class _Routes:
    def __init__(
        self,
        engine: MarketDataEngine,
        metrics: Metrics,
        max_queue: int,
        send_buffer: int,
        private_ws: Callable | None = None,
    ) -> None:
        self.engine, self.metrics = engine, metrics
        self.private_ws = private_ws  # ORDERS / FILLS / BALANCES subscriptions
        self.max_queue, self.send_buffer = max_queue, send_buffer

    async def markets(self, request: web.Request) -> web.Response:
        return _json(await self.engine.markets(_required(request, "exchange")))

    async def orderbook(self, request: web.Request) -> web.Response:
        market = _required(request, "market")
        depth = _int(request, "depth", 0, 5000) if "depth" in request.query else None
        body = await self.engine.order_book(market, depth)  # encoded once per book version
        return web.Response(body=body, content_type="application/json")

    async def trades(self, request: web.Request) -> web.Response:
        market = _required(request, "market")
        limit = _int(request, "limit", 100, 1000)
        return _json(TradesMessage(trades=await self.engine.recent_trades(market, limit)))

    async def exchanges(self, request: web.Request) -> web.Response:
        return _json(
            [
                {"exchange": code, "capabilities": venue.capabilities}
                for code, venue in sorted(self.engine.venues.items())
            ]
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def ws(self, request: web.Request) -> web.StreamResponse:
        raw_type = _required(request, "dataType")
        if self.private_ws is not None and raw_type in PRIVATE_DATA_TYPES:
            return await self.private_ws(request)
        market = _required(request, "market")
        data_type = _DATA_TYPES.get(raw_type)
        if data_type is None:
            raise InvalidParameter(
                "dataType", "expected ORDERBOOK, TRADE, ORDERS, FILLS or BALANCES"
            )
        venue, venue_market = await self.engine.resolve(market)
        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=30.0,
            max_msg_size=4096,
            writer_limit=self.send_buffer,  # bytes buffered in the process before backpressure
        )
        await ws.prepare(request)
        client = BoundedSender(ws, request.transport, self.max_queue, send_buffer=self.send_buffer)
        writer = asyncio.create_task(client.writer())
        self.engine.subscribe(venue, venue_market, data_type, client)
        self.metrics.ws_clients[data_type] += 1
        try:
            async for _ in ws:  # one subscription per connection: client messages are ignored
                if writer.done():
                    break
        finally:
            self.metrics.ws_clients[data_type] -= 1
            self.engine.unsubscribe(venue_market, data_type, client)
            client.close(WSCloseCode.OK, "")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer, 5)
        return ws


def _error_middleware(metrics: Metrics) -> Callable:
    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except AstraError as err:
            response = error_response(err)
        except web.HTTPNotFound:
            response = error_response(NotFound(f"no such endpoint: {request.path[:200]}"))
        except web.HTTPMethodNotAllowed:
            response = _json(
                Error(
                    code="METHOD_NOT_ALLOWED", message=f"{request.method} is not allowed on {name}"
                ),
                405,
            )
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception:
            log.exception("unhandled error on %s", name)
            response = error_response(AstraError())
        metrics.requests[(name, response.status)] += 1
        return response

    return middleware


def build_app(
    engine: MarketDataEngine,
    metrics: Metrics,
    *,
    auth: Callable | None = None,
    max_queue: int = 5000,
    send_buffer: int = 256 * 1024,
    private_ws: Callable | None = None,
) -> web.Application:
    """The public API. ``auth`` is the API-key middleware (None only in tests of routing);
    ``max_queue`` (frames) and ``send_buffer`` (bytes) bound what a slow client may hold."""
    middlewares = [_error_middleware(metrics)]
    if auth is not None:
        middlewares.append(auth)
    app = web.Application(middlewares=middlewares)
    routes = _Routes(engine, metrics, max_queue, send_buffer, private_ws)
    app.add_routes(
        [
            web.get("/markets", routes.markets),
            web.get("/orderbook", routes.orderbook),
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
        return _json(
            {
                "status": "ok",
                "venues": sorted(metrics.engine.venues),
                "feeds": len(metrics.engine.channels),
            }
        )

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/metrics", prometheus)])
    return app
