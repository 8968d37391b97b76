"""Several simulated venues in one process: ``SIM``, ``SIM2``, ``SIM3`` ... around one fair path.

Each venue is a whole ``SimExchange`` (its own markets, matching engines, accounts, ledger,
rate limiters, user streams and Aster-compatible REST/WS) served by its own aiohttp app on
its own port; only the fair-value path (``fairpath.py``) and the clock are shared.

Invariants:
- One clock: each step advances the shared path once, then every venue once, in venue order,
  so all venues are always at the same step (``steps`` equal) and the flow of every venue is
  a function of the seed alone, as for a single venue.
- ``step()`` is the only thing that advances them; with ``clock=False`` nothing runs until
  the caller steps (tests), and ``stop_clock()`` stops a running clock for good.
- ``start()`` either serves every venue or leaves nothing listening (a port in use closes
  the venues already started before raising).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable

from astra.core import sim_code

from .app import SimExchange, run_clock
from .fairpath import FairPath
from .markets import DEFAULT_MARKETS, SimMarket
from .ratelimit import RateLimits
from .server import SimServer
from .venues import VenueProfile, profile_for, venue_data_path
from .ws import WsLimits

__all__ = ["SimCluster", "serve_sim"]


class SimCluster:
    """``venues`` simulated venues (``SIM``, ``SIM2`` ...) sharing one fair path and clock.

    ``port``: SIM listens on it, SIM2 on ``port + 1`` and so on; 0 lets each pick a free
    one. ``latency=False`` serves every venue without its profile's REST latency.
    """

    def __init__(
        self,
        venues: int = 3,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        markets: Iterable[SimMarket] = DEFAULT_MARKETS,
        data_path: str | None = None,
        latency: bool = True,
        clock: bool = True,
        ws_limits: dict[str, WsLimits] | None = None,
        rate_limits: dict[str, RateLimits] | None = None,
        rate_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        markets = tuple(markets)
        self.seed = seed
        self.fair = FairPath(seed, markets)
        self.exchanges: dict[str, SimExchange] = {}
        for i in range(1, venues + 1):
            code = sim_code(i)  # ValueError beyond MAX_SIM_VENUES
            self.exchanges[code] = SimExchange(
                seed, markets, ws_limits, venue_data_path(data_path, code), rate_limits,
                rate_clock, profile=profile_for(code), fair=self.fair,
                latency_ms=None if latency else 0.0, own_clock=False,
            )  # fmt: skip
        if not self.exchanges:
            raise ValueError("a simulator runs at least one venue")
        self.host, self.port = host, port
        self.clock = clock
        self.servers: dict[str, SimServer] = {}
        self._task: asyncio.Task | None = None
        self.steps = 0

    def step(self) -> None:
        """One step of everything: the shared path, then each venue."""
        self.steps += 1
        self.fair.step()
        for exchange in self.exchanges.values():
            exchange.step()

    async def run(self) -> None:
        await run_clock(self.step)

    def urls(self) -> dict[str, str]:
        """Venue code -> base URL, once started."""
        return {code: server.base_url for code, server in self.servers.items()}

    async def start(self) -> SimCluster:
        try:
            for i, (code, exchange) in enumerate(self.exchanges.items()):
                port = self.port + i if self.port else 0
                self.servers[code] = await SimServer(exchange, self.host, port).start()
        except BaseException:
            await self.close()
            raise
        if self.clock:
            self._task = asyncio.create_task(self.run())
        return self

    async def stop_clock(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self.stop_clock()
        for server in reversed(list(self.servers.values())):
            await server.close()  # each venue saves its state (--data) on cleanup
        self.servers.clear()

    async def __aenter__(self) -> SimCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _bp(ppm: int) -> str:
    return f"{ppm / 100:g}"


def _describe(profile: VenueProfile, latency: float) -> str:
    spot, perp = profile.spot_fees_ppm, profile.perp_fees_ppm
    return (f"fees (maker/taker) spot {_bp(spot[0])}/{_bp(spot[1])} bp, perp "
            f"{_bp(perp[0])}/{_bp(perp[1])} bp; latency {latency * 1000:g} ms")


async def serve_sim(
    host: str, port: int, seed: int, data: str | None = None, venues: int = 1,
    latency: bool = True,
) -> None:
    """``astra sim``: run ``venues`` venues until SIGINT/SIGTERM, printing, once all of them
    listen, one ``Astra simulator venue CODE (seed S) listening on URL`` line per venue (what
    ``astra serve``'s ``SimChild`` reads) followed by its URLs. One venue is the simulator as
    it has always been (its own clock, no shared path); several are a ``SimCluster``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if venues == 1:
        exchange = SimExchange(seed=seed, data_path=data, latency_ms=None if latency else 0.0)
        runner: SimCluster | SimServer = SimServer(exchange, host, port)
        servers = {"SIM": runner}
    else:
        runner = SimCluster(venues, seed, host=host, port=port, data_path=data,
                            latency=latency)
        servers = runner.servers  # filled by start()
    async with runner:
        for code, server in servers.items():
            ex = server.exchange
            print(f"Astra simulator venue {code} (seed {seed}) listening on {server.base_url}")
            for name, url in server.urls().items():
                print(f"  {name:<15} {url}")
            print(f"  {'profile':<15} {_describe(ex.profile, ex.latency)}")
            if ex.data_path:
                print(f"  {'trading state':<15} {ex.data_path}")
        first = next(iter(servers.values())).base_url
        print(f"  new account     astra sim account create --url {first}"
              + (" (or any venue's URL)" if venues > 1 else ""))
        sys.stdout.flush()
        await stop.wait()
        print("shutting down", flush=True)
