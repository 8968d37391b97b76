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

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSCloseCode, web

from astra.core import DataType, InvalidParameter, MissingParameter, TradesMessage
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import SMART_PREFIX
from astra.net import BoundedSender

from .auth import WS_PROTOCOL
from .errors import MAX_BODY_BYTES, error_middleware, json_response
from .openapi import openapi_document
from .params import (
    DEFAULT_TRADES_LIMIT,
    MAX_DEPTH,
    MAX_TRADES_LIMIT,
    PRIVATE_DATA_TYPES,
    WS_DATA_TYPES,
    bool_param,
    int_param,
    required,
    venues_param,
)
from .sessions import WsSessions, attach_ws

__all__ = ["Metrics", "build_app", "build_metrics_app"]

log = logging.getLogger(__name__)
_DATA_TYPES = {d.value: d for d in DataType}


class Metrics:
    """Counters behind ``/metrics`` (Prometheus text format)."""

    def __init__(self, engine: MarketDataEngine) -> None:
        self.engine = engine
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ws_clients: Counter[str] = Counter()
        self.started = time.time()
        self.desk: Any = None  # the OTC desk (astra.otc.Desk), when the gateway has one
        self.recorder: Any = None  # the history recorder (astra.history.Recorder), when on
        self.role = "all"  # astra serve --role: all, feed or edge
        # A cluster node's counters: part ("feed", "edge", "limits") -> name -> count.
        self.cluster: Callable[[], Mapping[str, Mapping[str, int]]] | None = None

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
        if self.desk is not None:
            lines.append("# TYPE astra_otc_events_total counter")
            for name in ("quotes", "quotes_refused", "trades", "accepts_refused",
                         "accepts_repeated"):
                lines.append(f'astra_otc_events_total{{event="{name}"}} {self.desk.stats[name]}')
            hedger = self.desk.hedger
            lines.append("# TYPE astra_otc_hedge_legs_failed_total counter")
            lines.append(f"astra_otc_hedge_legs_failed_total {hedger.failed if hedger else 0}")
        if self.recorder is not None:
            stats = self.recorder.stats
            lines.append("# TYPE astra_history_rows_total counter")
            for name in ("rows_recorded", "rows_dropped"):
                lines.append(f'astra_history_rows_total{{outcome="{name[5:]}"}} {stats[name]}')
            for name in ("files_written", "flushes", "write_errors"):
                lines.append(f"# TYPE astra_history_{name}_total counter")
                lines.append(f"astra_history_{name}_total {stats[name]}")
            lines.append("# TYPE astra_history_pending_rows gauge")
            lines.append(f"astra_history_pending_rows {self.recorder.pending}")
        if self.cluster is not None:
            for part, stats in sorted(self.cluster().items()):
                for name, value in sorted(stats.items()):
                    metric = f"astra_cluster_{part}_{name}_total"
                    lines.append(f"# TYPE {metric} counter")
                    lines.append(f"{metric} {value}")
        lines.append("# TYPE astra_uptime_seconds gauge")
        lines.append(f"astra_uptime_seconds {time.time() - self.started:.0f}")
        return "\n".join(lines) + "\n"


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

    async def markets(self, request: web.Request) -> web.Response:
        return json_response(await self.engine.markets(required(request.query, "exchange")))

    async def orderbook(self, request: web.Request) -> web.Response:
        market = required(request.query, "market")
        depth = int_param(request.query, "depth", None, MAX_DEPTH)
        if market.startswith(SMART_PREFIX):  # the consolidated book (venues=, feeAdjusted=)
            body = await self.engine.smart_order_book(
                market, depth, venues_param(request.query),
                bool_param(request.query, "feeAdjusted"))
        else:
            for name in ("venues", "feeAdjusted"):  # a book that is not what was asked: 400
                if name in request.query:
                    raise InvalidParameter(name, "only SMART markets take " + name)
            body = await self.engine.order_book(market, depth)  # encoded once per book version
        return web.Response(body=body, content_type="application/json")

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
        raw_type = required(request.query, "dataType")
        if self.private_ws is not None and raw_type in PRIVATE_DATA_TYPES:
            return await self.private_ws(request)
        market = required(request.query, "market")
        data_type = _DATA_TYPES.get(raw_type)
        if data_type is None:
            raise InvalidParameter("dataType", f"expected one of {', '.join(WS_DATA_TYPES)}")
        add, remove = await self.engine.subscription(market, data_type)
        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=30.0,
            max_msg_size=4096,
            writer_limit=self.send_buffer,  # bytes buffered in the process before backpressure
        )
        await ws.prepare(request)
        attach_ws(request, ws)  # its key's revocation closes it from now on
        client = BoundedSender(ws, request.transport, self.max_queue, send_buffer=self.send_buffer)
        writer = asyncio.create_task(client.writer())
        add(client)
        self.metrics.ws_clients[data_type] += 1
        try:
            async for _ in ws:  # one subscription per connection: client messages are ignored
                if writer.done():
                    break
        finally:
            self.metrics.ws_clients[data_type] -= 1
            remove(client)
            client.close(WSCloseCode.OK, "")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer, 5)
        return ws


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
) -> web.Application:
    """The public API. ``auth`` is the API-key middleware (None only in tests of routing);
    ``sessions`` caps and tracks WebSockets per key (closing a revoked key's);
    ``max_queue`` (frames) and ``send_buffer`` (bytes) bound what a slow client may hold;
    ``replay_ws`` serves ``/ws`` requests with ``from`` (replays, ``server/replay.py``)."""
    middlewares = [error_middleware(metrics.requests)]
    if auth is not None:
        middlewares.append(auth)
    if sessions is not None:  # after auth: it counts by the verified key
        middlewares.append(sessions.middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
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
        return web.Response(text=metrics.render(), content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/metrics", prometheus)])
    return app
