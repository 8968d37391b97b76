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
  the venues already started before raising an ``OSError`` that names the venue and port).
- With a fixed ``port``, every venue's port (``port`` ... ``port + venues - 1``) is a valid
  TCP port, checked before any state is loaded: past 65535 is a ``ValueError``, never a port
  the operating system wraps around to; a venue's trading state file (``--data``) that cannot
  be loaded is a ``ValueError`` naming the venue and the file; ``astra sim`` also writes each
  venue's state once before serving, so a file it could never save refuses to start rather
  than failing at shutdown.
- ``close()`` closes every venue even when one of them fails to (its last save), then raises
  the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from astra.core import sim_code

from .app import SimExchange, run_clock
from .fairpath import FairPath
from .markets import DEFAULT_MARKETS, SimMarket
from .ratelimit import RateLimits
from .server import SimServer
from .venues import VenueProfile, profile_for, venue_data_path
from .ws import WsLimits

if TYPE_CHECKING:
    from .replay import ReplayPlan

__all__ = ["MAX_PORT", "SimCluster", "serve_sim"]

MAX_PORT = 65535


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
        replay: Mapping[str, Sequence[ReplayPlan]] | None = None,
    ) -> None:
        if port and not 0 < port <= MAX_PORT - max(venues, 1) + 1:
            raise ValueError(
                f"{venues} venue(s) from port {port} need ports {port} to "
                f"{port + venues - 1}: the last port is {MAX_PORT}")
        markets = tuple(markets)
        self.seed = seed
        self.fair = FairPath(seed, markets)
        self.exchanges: dict[str, SimExchange] = {}
        for i in range(1, venues + 1):
            code = sim_code(i)  # ValueError beyond MAX_SIM_VENUES
            path = venue_data_path(data_path, code)
            try:
                self.exchanges[code] = SimExchange(
                    seed, markets, ws_limits, path, rate_limits, rate_clock,
                    profile=profile_for(code), fair=self.fair,
                    latency_ms=None if latency else 0.0, own_clock=False,
                    replay=(replay or {}).get(code, ()),
                )  # fmt: skip
            except (OSError, ValueError) as exc:
                raise _state_error(code, path, exc) from exc
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
                try:
                    self.servers[code] = await SimServer(exchange, self.host, port).start()
                except OSError as exc:  # say which venue could not listen where
                    raise OSError(exc.errno, f"venue {code} cannot listen on {self.host}:"
                                  f"{port}: {exc.strerror or exc}") from exc
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
        failed: BaseException | None = None
        for server in reversed(list(self.servers.values())):
            try:
                await server.close()  # each venue saves its state (--data) on cleanup
            except Exception as exc:  # the others still close (and save)
                failed = failed or exc
        self.servers.clear()
        if failed is not None:
            raise failed

    async def __aenter__(self) -> SimCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _state_error(code: str, path: str | None, exc: Exception) -> Exception:
    """``exc`` from building venue ``code`` whose trading state is ``path``: a ValueError that
    names the venue and the file (an error without a state file is returned as it is)."""
    if path is None:
        return exc
    text = str(exc)
    return ValueError(f"venue {code}: " + (text if path in text else f"{path}: {text}"))


def _check_writable(code: str, exchange: SimExchange) -> None:
    """Save venue ``code``'s state once now: a ``--data`` file that cannot be written (no
    such directory, no permission) is refused at start, not found out at shutdown."""
    try:
        exchange.save()
    except OSError as exc:
        raise ValueError(f"venue {code}: cannot write its trading state to "
                         f"{exchange.data_path} ({exc.strerror or exc})") from exc


async def _closed(runner: SimCluster | SimServer) -> bool:
    try:
        await runner.close()
    except OSError as exc:  # a last save that failed: said, not a traceback
        print(f"astra sim: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def _bp(ppm: int) -> str:
    return f"{ppm / 100:g}"


def _describe(profile: VenueProfile, latency: float) -> str:
    spot, perp = profile.spot_fees_ppm, profile.perp_fees_ppm
    return (f"fees (maker/taker) spot {_bp(spot[0])}/{_bp(spot[1])} bp, perp "
            f"{_bp(perp[0])}/{_bp(perp[1])} bp; latency {latency * 1000:g} ms")


async def serve_sim(
    host: str, port: int, seed: int, data: str | None = None, venues: int = 1,
    latency: bool = True, replay: Mapping[str, Sequence[ReplayPlan]] | None = None,
) -> int:
    """``astra sim``: run ``venues`` venues until SIGINT/SIGTERM, printing, once all of them
    listen, one ``Astra simulator venue CODE (seed S) listening on URL`` line per venue (what
    ``astra serve``'s ``SimChild`` reads) followed by its URLs (and what it replays:
    ``replay``, venue code -> ``replay.ReplayPlan``s, ``astra sim --replay``). One venue is
    the simulator as it has always been (its own clock, no shared path); several are a
    ``SimCluster``.

    Returns the exit status: 0 after a signal, 1 when a venue could not start (a port in use,
    a state file that cannot be loaded), said in one line on stderr, nothing left listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner: SimCluster | SimServer | None = None
    try:
        if venues == 1:
            try:
                exchange = SimExchange(seed=seed, data_path=data,
                                       latency_ms=None if latency else 0.0,
                                       replay=(replay or {}).get("SIM", ()))
            except (OSError, ValueError) as exc:
                raise _state_error("SIM", data, exc) from exc
            runner = SimServer(exchange, host, port)
            servers: dict[str, SimServer] = {"SIM": runner}
            exchanges = {"SIM": exchange}
        else:
            runner = SimCluster(venues, seed, host=host, port=port, data_path=data,
                                latency=latency, replay=replay)
            servers = runner.servers  # filled by start()
            exchanges = runner.exchanges
        for code, exchange in exchanges.items():
            _check_writable(code, exchange)
        await runner.start()
    except (OSError, ValueError) as exc:
        if runner is not None:
            await runner.close()
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"astra sim: {text}", file=sys.stderr, flush=True)
        return 1
    try:
        for code, server in servers.items():
            ex = server.exchange
            print(f"Astra simulator venue {code} (seed {seed}) listening on {server.base_url}")
            for name, url in server.urls().items():
                print(f"  {name:<15} {url}")
            print(f"  {'profile':<15} {_describe(ex.profile, ex.latency)}")
            if ex.data_path:
                print(f"  {'trading state':<15} {ex.data_path}")
            for plan in (replay or {}).get(code, ()):
                print(f"  {'replay':<15} {plan.describe()}")
        first = next(iter(servers.values())).base_url
        print(f"  new account     astra sim account create --url {first}"
              + (" (or any venue's URL)" if venues > 1 else ""))
        sys.stdout.flush()
        await stop.wait()
        print("shutting down", flush=True)
    finally:
        closed = await _closed(runner)
    return 0 if closed else 1
