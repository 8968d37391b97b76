"""The history REST routes: ``GET /history/markets``, ``/history/trades``,
``/history/orderbook``, ``/history/candles`` over a ``HistoryReader``.

Invariants:
- Parameters are checked before any file is read: each route takes only its own query
  names (``apiKey`` aside, which auth judges), each at most once; times are ISO 8601 or
  Unix ms (``astra.tape.parse_time``); every bad value is a 400 naming it.
- The reads are blocking (pyarrow): they run in a thread (``asyncio.to_thread``), never on
  the event loop, so a long query never stalls live feeds.
- ``/history/orderbook?time=`` is the book after the last message received within that
  millisecond (a time is read to the millisecond, the API's resolution).
- Defaults: ``end`` = now, ``start`` = ``end`` - 1 h (trades, candles); ``limit`` 100;
  ``depth`` all levels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from astra.core import InvalidParameter
from astra.history.query import DEFAULT_LIMIT, MAX_LIMIT, HistoryReader
from astra.tape import parse_time

from .auth import API_KEY_QUERY
from .errors import json_response
from .params import MAX_DEPTH, int_param, required

__all__ = ["DEFAULT_SPAN_US", "history_routes"]

DEFAULT_SPAN_US = 3_600_000_000  # start when only end (or nothing) is given: 1 h before end


def _query(request: web.Request, names: tuple[str, ...]) -> Mapping[str, str]:
    query = request.query
    for name in query:
        if name == API_KEY_QUERY:
            continue
        if name not in names:
            takes = ", ".join(names) or "no parameter"
            raise InvalidParameter(name[:40], f"unknown parameter: {request.path} takes {takes}")
        if len(query.getall(name)) > 1:
            raise InvalidParameter(name, "given more than once")
    return query


def _range(query: Mapping[str, str], now_us: int) -> tuple[int, int]:
    end = parse_time(query["end"], "end") if "end" in query else now_us
    start = parse_time(query["start"], "start") if "start" in query else end - DEFAULT_SPAN_US
    return start, end


def history_routes(reader: HistoryReader) -> list[web.RouteDef]:
    """The four ``/history`` routes over ``reader``."""

    def now_us() -> int:
        return int(reader.clock() * 1_000_000)

    async def markets(request: web.Request) -> web.Response:
        _query(request, ())
        return json_response(await asyncio.to_thread(reader.markets))

    async def trades(request: web.Request) -> web.Response:
        query = _query(request, ("market", "start", "end", "limit", "cursor"))
        market = required(query, "market")
        start, end = _range(query, now_us())
        limit = int_param(query, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        cursor = query.get("cursor")
        return json_response(
            await asyncio.to_thread(reader.trades, market, start, end, limit, cursor))

    async def orderbook(request: web.Request) -> web.Response:
        query = _query(request, ("market", "time", "depth"))
        market = required(query, "market")
        # A time names a whole millisecond (the API's resolution): the book after every
        # message received within it.
        at = parse_time(required(query, "time"), "time") // 1000 * 1000 + 999
        depth = int_param(query, "depth", None, MAX_DEPTH)
        body = await asyncio.to_thread(reader.book_at, market, at, depth)
        return web.Response(body=body, content_type="application/json")

    async def candles(request: web.Request) -> web.Response:
        query = _query(request, ("market", "interval", "start", "end"))
        market = required(query, "market")
        interval = required(query, "interval")
        start, end = _range(query, now_us())
        return json_response(
            await asyncio.to_thread(reader.candles, market, interval, start, end))

    handlers: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        "/history/markets": markets,
        "/history/trades": trades,
        "/history/orderbook": orderbook,
        "/history/candles": candles,
    }
    return [web.get(path, handler) for path, handler in handlers.items()]
