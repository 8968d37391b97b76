"""The history REST routes: ``GET /history/markets``, ``/history/trades``,
``/history/orderbook``, ``/history/candles`` over a ``HistoryReader``.

Invariants:
- Parameters are checked before any file is read: each route takes only its own query
  names (``apiKey`` aside, which auth judges), each at most once; times are ISO 8601 or
  Unix ms (``astra.tape.parse_time``); every bad value is a 400 naming it.
- The reads are blocking (pyarrow): they run on the routes' own ``QUERY_THREADS`` threads,
  never on the event loop (a long query never stalls live feeds) nor on its default executor
  (shared with order settlement, key checks and the recorder's writes, which history queries
  must never hold up). At most ``MAX_QUERIES`` run or wait at once: beyond, 503
  ``OVERLOADED`` with Retry-After.
- ``/history/orderbook?time=`` is the book after the last message received within that
  millisecond (a time is read to the millisecond, the API's resolution).
- Defaults: ``end`` = now, ``start`` = ``end`` - 1 h (trades, candles); ``limit`` 100;
  ``depth`` all levels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from astra.core import Overloaded, parse_market
from astra.history.query import DEFAULT_LIMIT, MAX_LIMIT, HistoryReader
from astra.tape import parse_time

from .errors import json_response
from .params import MAX_DEPTH, int_param, only_params, required

__all__ = ["DEFAULT_SPAN_US", "MAX_QUERIES", "QUERY_THREADS", "history_routes"]

DEFAULT_SPAN_US = 3_600_000_000  # start when only end (or nothing) is given: 1 h before end
QUERY_THREADS = 4  # history queries read at once
MAX_QUERIES = 64  # history queries running or waiting for a thread; beyond, 503


def _query(request: web.Request, names: tuple[str, ...]) -> Mapping[str, str]:
    return only_params(request.query, names, request.path)


def _market(query: Mapping[str, str]) -> str:
    market = required(query, "market")
    parse_market(market)  # as the live routes: InvalidMarket (400) naming the bad part
    return market


def _range(query: Mapping[str, str], now_us: int) -> tuple[int, int]:
    end = parse_time(query["end"], "end") if "end" in query else now_us
    start = parse_time(query["start"], "start") if "start" in query else end - DEFAULT_SPAN_US
    return start, end


def history_routes(reader: HistoryReader) -> list[web.RouteDef]:
    """The four ``/history`` routes over ``reader``."""

    pool = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="astra-history")
    queries = 0  # running or waiting for a thread

    async def run(fn: Callable, *args: object):
        nonlocal queries
        if queries >= MAX_QUERIES:
            raise Overloaded(f"{queries} history queries are under way: retry shortly",
                             retry_after=1.0)
        queries += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        finally:
            queries -= 1

    def now_us() -> int:
        return int(reader.clock() * 1_000_000)

    async def markets(request: web.Request) -> web.Response:
        _query(request, ())
        return json_response(await run(reader.markets))

    async def trades(request: web.Request) -> web.Response:
        query = _query(request, ("market", "start", "end", "limit", "cursor"))
        market = _market(query)
        start, end = _range(query, now_us())
        limit = int_param(query, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        cursor = query.get("cursor")
        return json_response(await run(reader.trades, market, start, end, limit, cursor))

    async def orderbook(request: web.Request) -> web.Response:
        query = _query(request, ("market", "time", "depth"))
        market = _market(query)
        # A time names a whole millisecond (the API's resolution): the book after every
        # message received within it.
        at = parse_time(required(query, "time"), "time") // 1000 * 1000 + 999
        depth = int_param(query, "depth", None, MAX_DEPTH)
        body = await run(reader.book_at, market, at, depth)
        return web.Response(body=body, content_type="application/json")

    async def candles(request: web.Request) -> web.Response:
        query = _query(request, ("market", "interval", "start", "end"))
        market = _market(query)
        interval = required(query, "interval")
        start, end = _range(query, now_us())
        return json_response(await run(reader.candles, market, interval, start, end))

    handlers: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        "/history/markets": markets,
        "/history/trades": trades,
        "/history/orderbook": orderbook,
        "/history/candles": candles,
    }
    return [web.get(path, handler) for path, handler in handlers.items()]
