"""The simulator as a whole: markets, synthetic flow, feeds, and one aiohttp app.

URL layout on one port, so a client written for Aster needs only a base URL:
``/api/…`` spot REST, ``/fapi/…`` perpetual REST, ``/sstream/ws|stream`` spot WebSocket,
``/fstream/ws|stream`` perpetual WebSocket.

The clock runs the flow in fixed ``STEP_MS`` steps; when the loop falls behind it catches up
(bounded) rather than stretching simulated time, so the flow's rate holds under load. A venue
of several (``cluster.py``) has no clock of its own (``own_clock=False``): the cluster's one
clock steps the shared fair path, then every venue, in lockstep.

A market given a ``replay`` plan (``replay.py``) follows a recorded book instead of its
synthetic flow, stepped by the same clock.

A venue's ``profile`` (``venues.py``) sets its markets' ticks, lots and liquidity, its
maker/taker fees (``commissionRate``, and ``makerCommissionRate`` / ``takerCommissionRate``
on each ``exchangeInfo`` symbol: a simulator extension), the latency added to each REST
response, and, with a shared ``fair`` path, its basis from it. No profile is ``SIM``'s.

Trading state (accounts, the ledger, every user order and trade) lives here too; with a
``data_path`` it is loaded at start, saved every ``SAVE_EVERY_S`` seconds while it changes and
on shutdown, atomically (write, fsync, rename) and readable by the owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .accounts import AccountRegistry, NewCredentials
from .admin import admin_routes
from .fairpath import FairPath, VenueFair
from .feeds import Feeds, StreamHub
from .flow import STEP_MS, SyntheticFlow
from .ledger import Ledger
from .markets import DEFAULT_MARKETS, SimMarket
from .orders import OrderManager
from .perp import PerpTrading
from .perp_rest import add_perp_routes
from .persist import load_state, snapshot, write_atomic
from .private import PrivateSide
from .ratelimit import RateLimiter, RateLimits, rate_limit_middleware
from .rest import error_middleware, request_weight, rest_routes
from .signing import Authenticator
from .spot import SpotTrading
from .spot_rest import add_spot_routes
from .state import MarketState, now_ms
from .userstream import UserStreams
from .venues import VenueProfile, profile_for
from .ws import WsLimits, WsSide

if TYPE_CHECKING:
    from .replay import ReplayPlan

__all__ = ["SimExchange", "VenueSide", "run_clock"]

_MAX_CATCH_UP = 40  # steps run at most per wake-up (2 s of simulated time)
SAVE_EVERY_S = 2.0


async def run_clock(step: Callable[[], None]) -> None:
    """Call ``step`` every ``STEP_MS`` of real time until cancelled, catching up (bounded)
    when the loop falls behind."""
    period = STEP_MS / 1000
    due = time.monotonic()
    while True:
        now = time.monotonic()
        behind = int((now - due) / period) + 1
        if behind > _MAX_CATCH_UP:  # overloaded: drop simulated time rather than spiral
            due = now
            behind = 1
        for _ in range(behind):
            step()
        due += behind * period
        await asyncio.sleep(max(0.0, due - time.monotonic()))


def _latency_middleware(delay: float):
    @web.middleware
    async def latency(request: web.Request, handler):
        if request.path.startswith(("/api/", "/fapi/")):  # REST only, not WS or admin
            await asyncio.sleep(delay)
        return await handler(request)

    return latency


@dataclass
class VenueSide:
    kind: str  # "spot" or "perp"
    states: dict[str, MarketState]  # by venue symbol
    flows: list[SyntheticFlow]  # or a replay.BookReplay in a replayed market's place
    hub: StreamHub
    feeds: Feeds
    ws: WsSide = field(init=False)
    streams: UserStreams = field(init=False)  # listenKeys and /ws/<listenKey>
    trading: OrderManager | None = None


class SimExchange:
    """An Aster-compatible venue. ``step()`` advances it by one step, without the clock."""

    def __init__(
        self,
        seed: int = 0,
        markets: Iterable[SimMarket] = DEFAULT_MARKETS,
        ws_limits: dict[str, WsLimits] | None = None,
        data_path: str | None = None,
        rate_limits: dict[str, RateLimits] | None = None,
        rate_clock: Callable[[], float] = time.monotonic,
        *,
        profile: VenueProfile | None = None,
        fair: FairPath | None = None,
        latency_ms: float | None = None,
        own_clock: bool = True,
        replay: Sequence[ReplayPlan] = (),
    ) -> None:
        self.profile = profile = profile or profile_for("SIM")
        self.code = profile.code
        self.seed = seed
        self.data_path = data_path
        self.own_clock = own_clock
        # Seconds added to each REST response (default: the profile's).
        self.latency = (profile.latency_ms if latency_ms is None else latency_ms) / 1000
        markets = profile.markets(markets)
        self.registry = AccountRegistry()
        self.ledger = Ledger()
        limits = {"spot": RateLimits.spot(), "perp": RateLimits.perp(), **(rate_limits or {})}
        self.limiters = {kind: RateLimiter(lim, rate_clock) for kind, lim in limits.items()}
        self.sides: dict[str, VenueSide] = {}
        for kind in ("spot", "perp"):
            states = {m.symbol: MarketState(m) for m in markets if m.kind == kind}
            hub = StreamHub()
            # A perpetual follows the spot market of the same symbol (its index), stepped first.
            spot = self.sides["spot"].states if kind == "perp" else {}
            flows = [
                SyntheticFlow(
                    s, seed, spot.get(sym), venue=self.code,
                    fair=VenueFair(fair, s.market, self.code, profile)
                    if fair is not None and kind == "spot" else None,
                    quotes_per_side=profile.quotes_per_side,
                )
                for sym, s in states.items()
            ]
            side = VenueSide(kind, states, flows, hub, Feeds(kind, list(states.values()), hub))
            side.ws = WsSide(
                kind,
                hub,
                {s.market.stream_id: s for s in states.values()},
                (ws_limits or {}).get(kind),
            )
            self.sides[kind] = side
        self._replace_flows(replay)
        for side in self.sides.values():
            for flow in side.flows:
                flow.seed_book()
        self._attach_trading()
        for side in self.sides.values():
            side.streams = side.ws.user_streams = UserStreams(side.kind, side.ws)
        if data_path is not None:
            load_state(data_path, self.registry, self.ledger, self._trading())
        self.steps = 0
        self._task: asyncio.Task | None = None
        self._saver: asyncio.Task | None = None

    def _replace_flows(self, plans: Sequence[ReplayPlan]) -> None:
        """A replayed market's synthetic flow gives way to the recorded book (``replay.py``)."""
        if not plans:
            return
        from .replay import BookReplay  # pyarrow: loaded only by a replaying simulator

        for plan in plans:
            side = self.sides[plan.kind]
            side.flows = [BookReplay(f.state, plan, venue=self.code)
                          if f.state.market.symbol == plan.symbol else f for f in side.flows]

    def _attach_trading(self) -> None:
        spot = self.sides["spot"]
        fees = self.profile.fees_ppm
        spot.trading = SpotTrading(spot.states, self.ledger, self._index_of(spot),
                                   maker_ppm=fees("spot")[0], taker_ppm=fees("spot")[1])
        perp = self.sides["perp"]
        perp.trading = PerpTrading(perp.states, self.ledger, self._index_of(perp),
                                   maker_ppm=fees("perp")[0], taker_ppm=fees("perp")[1])
        perp.trading.on_liquidation = perp.feeds.force_orders.on_liquidation  # @forceOrder
        perp.trading.on_transfer = spot.trading.record_transfer  # spot transactionHistory
        perp.trading.tran_ids = spot.trading.tran_ids  # one tranId per transfer on both
        self.auth = Authenticator(self.registry)

    @staticmethod
    def _index_of(side: VenueSide):
        def index(state: MarketState) -> float:
            return side.feeds.index_price.get(state.market.stream_id, state.market.start_price)

        return index

    def create_account(self, deposits: dict[str, int]) -> NewCredentials:
        account, creds = self.registry.create(now_ms())
        for asset, amount in deposits.items():
            for wallet in ("spot", "perp"):
                if amount:
                    self.ledger.deposit(wallet, account.id, asset, amount)
        return creds

    def state(self, kind: str, symbol: str) -> MarketState:
        return self.sides[kind].states[symbol]

    def step(self) -> None:
        self.steps += 1
        for side in self.sides.values():
            for flow in side.flows:
                flow.step()
                side.feeds.index_price[flow.state.market.stream_id] = flow.index
            side.feeds.tick()
            if side.trading is not None:
                side.trading.check_triggers()

    async def run(self) -> None:
        """Advance in real time until cancelled."""
        await run_clock(self.step)

    def app(self) -> web.Application:
        """The aiohttp application; starting it starts the clock, cleanup stops it."""
        # Rate limits are outermost, so that error responses carry the weight headers too.
        limit_mws = [
            rate_limit_middleware(self.limiters[kind], request_weight(kind)) for kind in self.sides
        ]
        delay = [_latency_middleware(self.latency)] if self.latency > 0 else []
        app = web.Application(middlewares=[*delay, *limit_mws, error_middleware])
        app.add_routes(admin_routes(self))
        for kind, side in self.sides.items():
            limiter = self.limiters[kind]
            app.add_routes(
                rest_routes(kind, side.states, side.feeds, limiter.limits.rate_limits_json(),
                            fees=self.profile.fees_ppm(kind))
            )
            if side.trading is not None:
                private = PrivateSide(
                    kind,
                    self.registry,
                    self.auth,
                    side.trading,
                    on_order=lambda account, lim=limiter: lim.order(account.id),
                )
                private.add_order_routes()
                if kind == "spot":
                    private.add("GET", "account",
                                lambda r, t=side.trading: t.account_json(r.account.id))
                    private.add("GET", "commissionRate", self._commission(side.trading))
                    add_spot_routes(private, side.trading, self.sides["perp"].trading)
                if kind == "perp":
                    add_perp_routes(private, side.trading)
                side.streams.add_routes(private)  # POST/PUT/DELETE listenKey
                side.trading.emit = side.streams.emit  # user events -> /ws/<listenKey>
                app.add_routes(private.routes)
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

    @staticmethod
    def _commission(trading: OrderManager):
        def rates(r) -> dict:
            symbol = r.require("symbol")
            trading.state(symbol)
            return {
                "symbol": symbol,
                "makerCommissionRate": f"{trading.maker_ppm / 1e6:.6f}",
                "takerCommissionRate": f"{trading.taker_ppm / 1e6:.6f}",
            }

        return rates

    async def _clock(self, app: web.Application):
        if self.own_clock:
            self._task = asyncio.create_task(self.run())
        if self.data_path is not None:
            self._saver = asyncio.create_task(self._save_loop())
        yield
        for task in (self._task, self._saver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.save()

    def _trading(self) -> dict[str, OrderManager]:
        return {k: s.trading for k, s in self.sides.items() if s.trading is not None}

    def _snapshot(self) -> bytes:
        return snapshot(self.registry, self.ledger, self._trading())

    def save(self) -> None:
        if self.data_path is not None:
            write_atomic(self.data_path, self._snapshot())

    async def _save_loop(self) -> None:
        last = b""
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            # Snapshot on the loop (consistent), write in a thread (the loop never blocks on IO).
            data = self._snapshot()
            if data != last:
                await asyncio.to_thread(write_atomic, self.data_path, data)
                last = data

    def drop_connections(self, reason: str = "server reset") -> int:
        """Close every WebSocket connection (clients must resync); returns how many."""
        return sum(side.ws.drop_all(reason) for side in self.sides.values())
