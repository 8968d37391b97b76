"""The simulator as a whole: markets, synthetic flow, feeds, and one aiohttp app.

URL layout on one port, so a client written for Aster needs only a base URL:
``/api/…`` spot REST, ``/fapi/…`` perpetual REST, ``/sstream/ws|stream`` spot WebSocket,
``/fstream/ws|stream`` perpetual WebSocket.

The clock runs the flow in fixed ``STEP_MS`` steps; when the loop falls behind it catches up
(bounded) rather than stretching simulated time, so the flow's rate holds under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from .feeds import Feeds, StreamHub
from .flow import STEP_MS, SyntheticFlow
from .markets import DEFAULT_MARKETS, SimMarket
from .rest import error_middleware, rest_routes
from .state import MarketState
from .ws import WsLimits, WsSide

__all__ = ["SimExchange", "VenueSide"]

_MAX_CATCH_UP = 40  # steps run at most per wake-up (2 s of simulated time)


@dataclass
class VenueSide:
    kind: str  # "spot" or "perp"
    states: dict[str, MarketState]  # by venue symbol
    flows: list[SyntheticFlow]
    hub: StreamHub
    feeds: Feeds
    ws: WsSide = field(init=False)


class SimExchange:
    """An Aster-compatible venue. ``step()`` advances it by one step, without the clock."""

    def __init__(
        self,
        seed: int = 0,
        markets: Iterable[SimMarket] = DEFAULT_MARKETS,
        ws_limits: dict[str, WsLimits] | None = None,
    ) -> None:
        self.seed = seed
        self.sides: dict[str, VenueSide] = {}
        for kind in ("spot", "perp"):
            states = {m.symbol: MarketState(m) for m in markets if m.kind == kind}
            hub = StreamHub()
            flows = [SyntheticFlow(s, seed) for s in states.values()]
            side = VenueSide(kind, states, flows, hub, Feeds(kind, list(states.values()), hub))
            side.ws = WsSide(
                kind,
                hub,
                {s.market.stream_id: s for s in states.values()},
                (ws_limits or {}).get(kind),
            )
            self.sides[kind] = side
        for side in self.sides.values():
            for flow in side.flows:
                flow.seed_book()
        self.steps = 0
        self._task: asyncio.Task | None = None

    def state(self, kind: str, symbol: str) -> MarketState:
        return self.sides[kind].states[symbol]

    def step(self) -> None:
        self.steps += 1
        for side in self.sides.values():
            for flow in side.flows:
                flow.step()
                side.feeds.index_price[flow.state.market.stream_id] = flow.fair
            side.feeds.tick()

    async def run(self) -> None:
        """Advance in real time until cancelled."""
        period = STEP_MS / 1000
        due = time.monotonic()
        while True:
            now = time.monotonic()
            behind = int((now - due) / period) + 1
            if behind > _MAX_CATCH_UP:  # overloaded: drop simulated time rather than spiral
                due = now
                behind = 1
            for _ in range(behind):
                self.step()
            due += behind * period
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def app(self) -> web.Application:
        """The aiohttp application; starting it starts the clock, cleanup stops it."""
        app = web.Application(middlewares=[error_middleware])
        for kind, side in self.sides.items():
            app.add_routes(rest_routes(kind, side.states, side.feeds))
            base = "/fstream" if kind == "perp" else "/sstream"
            app.add_routes(
                [
                    web.get(f"{base}/ws", side.ws.handle_raw),
                    web.get(f"{base}/ws/{{streams:.*}}", side.ws.handle_raw),
                    web.get(f"{base}/stream", side.ws.handle_combined),
                ]
            )
        app.cleanup_ctx.append(self._clock)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.drop_connections("server shutdown")

    async def _clock(self, app: web.Application):
        self._task = asyncio.create_task(self.run())
        yield
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def drop_connections(self, reason: str = "server reset") -> int:
        """Close every WebSocket connection (clients must resync); returns how many."""
        return sum(side.ws.drop_all(reason) for side in self.sides.values())
