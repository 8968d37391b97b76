"""Replay of recorded market data over ``WS /ws?from=…`` (the ``/ws`` handler hands every
request with ``from`` in its query here).

``WS /ws?market=A[,B…]&dataType=ORDERBOOK|TRADE&from=T[&to=T][&speed=1|10|…|max]``: the
recorded frames of the markets (up to ``MAX_REPLAY_MARKETS``, comma-separated or repeated
``market=``) from ``from`` to ``to`` (default: the end of the record when the connection is
made), in the live schema (``astra.history.replay``: the book at ``from`` first, then what live
clients got), merged in receive order; TRADE messages carry ``market``. Times are ISO 8601 or
Unix ms. A frame recorded at local time ``t`` is sent at ``start + (t - from) / speed``
(``from`` before the record begins counts from its beginning); ``speed=max`` sends as fast as
the client reads. At ``to`` (or the end of the record, if sooner) the socket is closed with
code 1000 and the reason ``end of replay``.

Invariants:
- Everything is validated before the upgrade, as plain 4xx JSON naming the parameter: a
  malformed market (400), a market with no record of that data type (404), a parameter
  other than those above or one given twice (``market`` aside), a data type other
  than ORDERBOOK/TRADE, a bad time, ``to`` before ``from``, ``from`` before the retention
  window or after the end of the record, a speed that is not ``max`` or in (0, 1000].
- A replay is a WebSocket session like a live one: counted in its API key's cap
  (``WsSessions``' middleware) and closed when the key is revoked (``attach_ws``).
- At most ``max_replays`` (``MAX_REPLAYS``) run at once, all keys together: beyond, 503
  ``OVERLOADED`` with Retry-After, before the upgrade. ``stop_replays`` (the gateway's close)
  ends every reading thread before the process may exit.
- Sending awaits the socket (its writer's buffer, ``send_buffer`` bytes, then the kernel's):
  a slow client slows its own replay only, and the reading thread stops when its hand-off is
  full. A client that leaves stops the replay; the handler returns once its thread has ended.
- Client messages are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from astra.core import (
    AstraError,
    DataType,
    InvalidParameter,
    MarketNotFound,
    MissingParameter,
    Overloaded,
    parse_market,
)

from .auth import WS_PROTOCOL
from .params import only_params
from .sessions import attach_ws

if TYPE_CHECKING:
    from astra.history.replay import ReplayStream

__all__ = ["END_REASON", "MAX_REPLAYS", "MAX_REPLAY_MARKETS", "MAX_SPEED", "replay_ws",
           "stop_replays"]

log = logging.getLogger(__name__)
MAX_REPLAY_MARKETS = 20  # markets on one replay connection
# Replays under way at once, all keys together (each reads on a thread of its own, and an
# unpaced one keeps a core busy): beyond, 503 before the upgrade. The per-key WebSocket cap
# alone would let a few keys start hundreds, starving the live feeds of the GIL.
MAX_REPLAYS = 32
_RETRY_AFTER = 5.0  # seconds, in the 503's Retry-After
_STOP_WAIT = 10.0  # seconds stop_replays waits for the reading threads
MAX_SPEED = 1000.0  # the fastest paced replay; `max` is unpaced
END_REASON = "end of replay"
_ABORT_AFTER = 2.0  # seconds a client that left mid-replay has to take our close
_SPEED = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,6})?")  # plain decimals: no sign, exponent, nan
_KINDS = {DataType.ORDERBOOK.value: "book", DataType.TRADE.value: "trade"}  # astra.tape's
_NAMES = ("market", "dataType", "from", "to", "speed")  # (market may repeat: a list)


class _Plan:
    __slots__ = ("data_type", "end_us", "from_us", "markets", "speed", "to_us")

    def __init__(self, markets: list[str], data_type: str, from_us: int, to_us: int,
                 end_us: int, speed: float | None) -> None:
        self.markets, self.data_type = markets, data_type
        self.from_us, self.to_us, self.end_us, self.speed = from_us, to_us, end_us, speed


def _markets(request: web.Request) -> list[str]:
    values = request.query.getall("market", [])
    if not values or not any(values):
        raise MissingParameter("market")
    names = [name for value in values for name in value.split(",")]
    if len(names) > MAX_REPLAY_MARKETS:
        raise InvalidParameter("market", f"at most {MAX_REPLAY_MARKETS} markets per replay")
    out: list[str] = []
    for name in names:
        if not name:
            raise InvalidParameter("market", "an empty name in the list")
        symbol = str(parse_market(name))
        if symbol in out:
            raise InvalidParameter("market", f"{symbol} is listed twice")
        out.append(symbol)
    return out


def _speed(request: web.Request) -> float | None:
    text = request.query.get("speed", "1")
    if text.lower() == "max":
        return None
    value = float(text) if _SPEED.fullmatch(text) else 0.0
    if not 0 < value <= MAX_SPEED:
        raise InvalidParameter("speed", f"expected max or a number above 0 and at most "
                               f"{MAX_SPEED:g}, got {text[:40]!r}")
    return value


class _Replay:
    def __init__(self, root: Path, retention_days: int | None, send_buffer: int,
                 clock: Callable[[], float], heartbeat: float, max_replays: int) -> None:
        self.root, self.retention_days = Path(root), retention_days
        self.send_buffer, self.clock, self.heartbeat = send_buffer, clock, heartbeat
        self.max_replays = max_replays
        self.running = 0  # replays admitted (counted before the upgrade's first await)
        self.active: set[ReplayStream] = set()  # replays under way (their threads)

    def _spans(self, markets: list[str], kind: str) -> list[tuple[int, int]]:
        from astra.history.replay import recorded_span

        spans = []
        for market in markets:
            span = recorded_span(self.root, market, kind)
            if span is None:
                raise MarketNotFound(market, f"market '{market}' has no recorded {kind} data")
            spans.append(span)
        return spans

    async def plan(self, request: web.Request) -> _Plan:
        # pyarrow loads with astra.tape: only once a replay is asked for, not at CLI start.
        from astra.tape import date_of, day_start_us, format_time, parse_time

        query = only_params(request.query, _NAMES, "a replay", repeatable=("market",))
        data_type = query.get("dataType")
        if not data_type:
            raise MissingParameter("dataType")
        kind = _KINDS.get(data_type)
        if kind is None:
            raise InvalidParameter("dataType", f"a replay streams {' or '.join(_KINDS)}")
        markets = _markets(request)
        from_us = parse_time(query["from"], "from")
        to_us = parse_time(query["to"], "to") if "to" in query else None
        if to_us is not None and to_us < from_us:
            raise InvalidParameter("to", "must not be before from")
        speed = _speed(request)
        if self.retention_days is not None:
            today = date_of(int(self.clock() * 1_000_000))
            kept = day_start_us(today - timedelta(days=self.retention_days))
            if from_us < kept:
                raise InvalidParameter("from", f"before the retention window: data is kept "
                                       f"{self.retention_days} days, from {format_time(kept)}")
        spans = await asyncio.to_thread(self._spans, markets, kind)  # directory listings
        record_start = min(first for first, _ in spans)
        record_end = max(last for _, last in spans)
        if from_us > record_end:
            raise InvalidParameter("from", f"after the end of the record "
                                   f"({format_time(record_end)})")
        to_us = record_end if to_us is None else to_us
        # Nothing to wait for before the record begins: the replay starts with it.
        from_us = max(from_us, min(record_start, to_us))
        return _Plan(markets, data_type, from_us, to_us, min(to_us, record_end), speed)

    async def ws(self, request: web.Request) -> web.StreamResponse:
        plan = await self.plan(request)
        if self.running >= self.max_replays:
            raise Overloaded(f"{self.running} replays are under way, the most this gateway "
                             "runs at once: retry shortly", retry_after=_RETRY_AFTER)
        self.running += 1
        try:
            return await self._serve(request, plan)
        finally:
            self.running -= 1

    async def stop(self, wait: float) -> None:
        """Stop every replay's reading thread and wait (at most ``wait`` s) until each has
        ended: the process must not exit while one is inside pyarrow."""
        closing = [asyncio.ensure_future(stream.close()) for stream in list(self.active)]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=wait)
            if pending:
                log.warning("%d replay threads still reading after %g s", len(pending), wait)

    async def _serve(self, request: web.Request, plan: _Plan) -> web.StreamResponse:
        from astra.history.replay import ReplayStream, replay_events

        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=self.heartbeat,  # a client that stops answering pings is gone
            max_msg_size=4096,
            writer_limit=self.send_buffer,  # a send awaits once this much is buffered
        )
        await ws.prepare(request)
        attach_ws(request, ws)  # its key's revocation closes it from now on
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:  # as for live clients: a stalled reader shows at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        stream = ReplayStream(replay_events(self.root, plan.markets, plan.data_type,
                                            plan.from_us, plan.to_us))
        self.active.add(stream)
        sender = asyncio.create_task(self._send(ws, stream, plan))
        try:
            async for _ in ws:  # client messages are ignored; ends when the socket closes
                if sender.done():
                    break
        finally:
            ended = sender.done()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if not ended and transport is not None:
                # A client that stopped reading cannot keep its socket (a close in flight
                # has 2 s to reach it first).
                asyncio.get_running_loop().call_later(_ABORT_AFTER, transport.abort)
            await stream.close()  # returns once the reading thread has ended
            self.active.discard(stream)
        return ws

    async def _send(self, ws: web.WebSocketResponse, stream: ReplayStream, plan: _Plan) -> None:
        loop = asyncio.get_running_loop()
        start, speed, from_us = loop.time(), plan.speed, plan.from_us
        try:
            async for chunk in stream:
                for ts, frame in chunk:
                    if speed is not None:
                        delay = start + (ts - from_us) / 1e6 / speed - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await ws.send_frame(frame, WSMsgType.TEXT)
            if speed is not None:  # the range lasts its length, quiet end included
                delay = start + (plan.end_us - from_us) / 1e6 / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.close(code=WSCloseCode.OK, message=END_REASON.encode())
        except ConnectionError:
            return  # the client left
        except AstraError as exc:  # a damaged record file (tape logged it, named): no trace
            reason = f"{exc.code}: {exc.default_message} (the gateway's log names it)"
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=reason.encode()[:123])
        except Exception:
            log.exception("replay of %s failed", ",".join(plan.markets))
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"replay failed")


def replay_ws(root: Path, retention_days: int | None, *, send_buffer: int = 256 * 1024,
              clock: Callable[[], float] = time.time, heartbeat: float = 30.0,
              max_replays: int = MAX_REPLAYS):
    """The handler ``/ws`` delegates replays (a query with ``from``) to: the record under
    ``root``, kept ``retention_days`` days (None: no retention bound on ``from``);
    ``send_buffer`` bytes buffered per client (in the process, and in the kernel) before a
    send waits; ``heartbeat`` seconds between pings (a client that misses a pong is closed)."""
    return _Replay(root, retention_days, send_buffer, clock, heartbeat, max_replays).ws


async def stop_replays(handler, wait: float = _STOP_WAIT) -> None:
    """Stop the replays under way of ``handler`` (``replay_ws``'s) and wait for their
    threads: the gateway calls it on close, once its server no longer takes requests."""
    await handler.__self__.stop(wait)
