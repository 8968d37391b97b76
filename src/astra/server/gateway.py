"""Running the gateway: venues from configuration, the simulator as a child process when
no venue is configured, the API and metrics servers, and a clean shutdown.

Configuration (``--config F``, TOML)::

    [venues.SIM]              # the built-in simulator
    url = "http://127.0.0.1:7070"   # a running `astra sim`; omit it to start one as a child
    seed = 0
    [venues.SIM3]             # SIM2 ... SIM16: more simulated venues; without a url, the
                              # child runs venues SIM ... SIM3 (up to the highest named)
    [venues.ASTER]            # a live venue (public data needs no exchange keys)
    perp_ws = "wss://fstream.asterdex.com"        # every URL is optional and overridable
    [venues.OKX]              # any of astra.venues.VENUE_CODES; keys per venue.from_config

With no configuration the gateway serves ``SIM``, ``SIM2`` and ``SIM3`` from a simulator
child on loopback (``astra sim --venues 3``: three venues around one fair price).

Top-level settings (all optional): ``header_timeout`` (seconds a connection may take to send
a request's headers, default 10), ``keepalive_timeout`` (idle keep-alive connections, 75),
``ws_connections_per_key`` (concurrent WebSockets per API key, 50) and
``session_revalidate_seconds`` (how often open WebSockets' keys are re-checked, 5) and
``body_timeout`` (seconds to receive a request's body, 30); ``astra serve`` checks their types
and ranges before starting (``astra.server.serve.check_settings``), and ``log_format``
(``text``, the default, or ``json``: ``astra.server.logformat``).

Metrics: one ``astra.telemetry.Telemetry`` per gateway (its own registry), handed to what
observes (the app's middleware, the engine, trading, the key store); ``/metrics`` on the
metrics port exposes that registry with the state read at scrape time (``server/metrics.py``).

Invariants:
- The child never outlives the gateway: terminated, then killed, on shutdown; and if the
  gateway dies without shutting down (SIGKILL, a crash), the child ends too
  (``astra sim --exit-with-parent <gateway pid>``): on Linux it asks the kernel, at its own
  start, for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``) and exits at once if its
  parent is no longer the gateway; everywhere it exits when its stdin, a pipe only the gateway
  holds, reaches end of file. Nothing runs between fork and exec (no ``preexec_fn``, unsafe
  once threads exist).
- ``Gateway.start`` either serves or leaves nothing running: a failure (a port in use)
  closes whatever it had started (sessions' revalidation, the key threads) before raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from astra.core import SIM_CODES
from astra.history.config import HistoryConfig
from astra.marketdata.channels import FeedSource
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import SmartConfig
from astra.otc import Desk, Hedger, OtcConfig, QuoteSigner
from astra.routing.router import SmartRouter
from astra.store import ApiKeyStore
from astra.store.journal import OrderJournal
from astra.store.otc import OtcStore
from astra.store.routing_journal import RoutingJournal
from astra.telemetry import Telemetry
from astra.trading.credentials import CredentialSource, install_redactor
from astra.trading.service import TradingService
from astra.venues import build_venue
from astra.venues.base import Venue

from .api_keys import api_key_routes
from .app import build_app, build_metrics_app
from .auth import KeyVerifier, auth_middleware
from .feeds import feeds_routes
from .metrics import Metrics
from .otc import otc_routes
from .private import DEFAULT_BODY_TIMEOUT, private_routes, private_ws
from .protocol import GatewayRunner, install_log_scrubbers
from .replay import replay_ws, stop_replays
from .sessions import WsSessions
from .terminal import terminal_routes

__all__ = ["REPLAY_OPTIONS", "Gateway", "SimChild", "hand_telemetry", "load_config",
           "replay_args", "venues_from_config"]


def hand_telemetry(part: object, telemetry: Telemetry) -> None:
    """Give ``part`` the gateway's telemetry when it takes one (has a ``telemetry``
    attribute): a store handed on to a later gateway (a restart) observes into the later's."""
    if hasattr(part, "telemetry"):
        part.telemetry = telemetry


def load_config(path: Path | None) -> dict:
    if path is None:
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


class SimChild:
    """``astra sim --venues N`` as a child process on loopback; ``urls`` (venue code -> base
    URL: ``SIM``, ``SIM2`` ...) once started, ``url`` the first's."""

    START_TIMEOUT = 20.0
    # One line per venue once all of them listen: "Astra simulator venue SIM2 (seed 0)
    # listening on http://127.0.0.1:7071" (older: "Astra simulator (venue SIM, seed 0) ...").
    _LISTENING = re.compile(rb"venue (SIM\d*)\b.*?listening on (http://\S+)")
    # What a replaying child says of its replays (its banner's "replay  spot BTCUSDT follows
    # ...", "venue SIM: ... follows ... (also recorded: ...)", "replay of ... ended at ..."):
    # passed on to ``say``, the operator's only view of them.
    _REPLAY = re.compile(rb"^(venue SIM\d*: .* follows |replay of )")
    _BANNER_REPLAY = re.compile(rb"^\s+replay\s+(.* follows .*)")

    def __init__(self, seed: int = 0, venues: int = 1,
                 replay: Mapping[str, Mapping[str, object]] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.venues = venues
        self.say = say
        self._venue = "SIM"  # the venue whose banner the child is printing
        # Venue code -> its [venues.CODE] replay options (replay_args): astra sim --replay.
        self.replay_args = replay_args(replay or {})
        self.proc: asyncio.subprocess.Process | None = None
        self.urls: dict[str, str] = {}
        self.url = ""

    async def start(self) -> dict[str, str]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "astra",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            str(self.seed),
            "--venues",
            str(self.venues),
            *self.replay_args,
            "--exit-with-parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,  # held open, never written: EOF means we are gone
            stdout=asyncio.subprocess.PIPE,
        )
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(self.START_TIMEOUT):
                while len(self.urls) < self.venues:
                    line = await self.proc.stdout.readline()
                    if not line:  # it exited (or closed its stdout) before listening
                        break
                    seen.append(line)
                    self._relay(line)
                    match = self._LISTENING.search(line)
                    if match is not None:
                        self.urls[match[1].decode()] = match[2].decode()
        except TimeoutError:
            pass
        if len(self.urls) < self.venues:
            await self.stop()
            got = b"".join(seen)[-400:]
            raise RuntimeError(f"simulator did not start its {self.venues} venue(s): {got!r}")
        self.url = next(iter(self.urls.values()))
        # Keep draining its stdout so the child never blocks on a full pipe.
        self._drain = asyncio.create_task(self._drain_lines(self.proc.stdout))
        return self.urls

    def _relay(self, line: bytes) -> None:
        if self.say is None:
            return
        if (listening := self._LISTENING.search(line)) is not None:
            self._venue = listening[1].decode()
        elif (banner := self._BANNER_REPLAY.match(line)) is not None:
            self.say(f"venue {self._venue} replays: {banner[1].decode(errors='replace')}")
        elif self._REPLAY.match(line):
            self.say(line.decode(errors="replace").strip())

    async def _drain_lines(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the reader's limit: dropped, draining goes on
                continue
            if not line:
                return
            self._relay(line)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# [venues.SIMx] options for the simulator child (astra sim --replay ...), not the venue.
REPLAY_OPTIONS = {"replay": "--replay", "replay_from": "--replay-from",
                  "replay_to": "--replay-to", "replay_speed": "--replay-speed"}


def replay_args(options: Mapping[str, Mapping[str, object]]) -> list[str]:
    """``astra sim`` arguments for each venue's ``replay``, ``replay_from``, ``replay_to``
    and ``replay_speed`` options (TOML datetimes as ISO 8601, numbers as they are); a venue
    without ``replay`` has none. The child checks them (exit 2 naming the option)."""
    args: list[str] = []
    for code, venue in options.items():
        if venue.get("replay") in (None, ""):
            continue
        for key, flag in REPLAY_OPTIONS.items():
            value = venue.get(key)
            if value is None:
                continue
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            args += [flag, f"{code.upper()}={text}"]
    return args


def venues_from_config(
    config: dict, sim_urls: Mapping[str, str] | str | None
) -> dict[str, Venue]:
    """Venue objects by code. ``sim_urls`` (a simulator child's venues, code -> base URL; a
    lone URL is ``SIM``'s) serve the simulator venues the config names without a URL, and
    are every venue when the config names none."""
    if isinstance(sim_urls, str):
        sim_urls = {"SIM": sim_urls}
    sim_urls = dict(sim_urls or {})
    venues: dict[str, Venue] = {}
    for code, options in (config.get("venues") or {}).items():
        options = dict(options or {})
        if code.upper() in SIM_CODES:  # the simulator child's options (SimChild), not the venue's
            for key in REPLAY_OPTIONS:
                options.pop(key, None)
        if code.upper() in sim_urls and not options.get("url"):
            options["url"] = sim_urls[code.upper()]
        venues[code.upper()] = build_venue(code, options)
    if not venues:
        for code, url in sim_urls.items():
            venues[code] = build_venue(code, {"url": url})
    return venues


class Gateway:
    """The API server and the metrics server over one market-data engine."""

    def __init__(
        self,
        venues: dict[str, Venue],
        keys: ApiKeyStore,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        metrics_port: int = 9090,
        linger: float = 30.0,
        max_queue: int = 5000,
        send_buffer: int = 256 * 1024,
        journal: OrderJournal | None = None,
        credentials: CredentialSource | None = None,
        header_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        ws_connections_per_key: int = 50,
        session_revalidate_seconds: float = 5.0,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        smart: SmartConfig | None = None,  # the [smart] section (consolidated markets)
        otc: OtcConfig | None = None,  # the [otc] section (the OTC desk)
        history: HistoryConfig | None = None,  # the [history] section (recorder, queries)
        source: FeedSource | None = None,  # where books come from (an edge: its NATS mirror)
    ) -> None:
        # This gateway's metrics (its own registry: /metrics), handed to what observes.
        self.telemetry = Telemetry()
        self.engine = MarketDataEngine(venues, linger=linger, smart=smart, source=source,
                                       telemetry=self.telemetry)
        # The private API: the order journal lives in the same database as the keys.
        self.trading = TradingService(venues, journal or OrderJournal(keys._engine))
        for part in (self.trading, self.trading.journal, keys):
            hand_telemetry(part, self.telemetry)
        # Routed (SMART) orders: parents and children journaled in the same database.
        self.router = SmartRouter(self.engine, self.trading,
                                  RoutingJournal(self.trading.journal._engine))
        self.credentials = credentials
        self.desk = self._desk(otc or OtcConfig())
        self._reconciler: asyncio.Task | None = None
        self.metrics = Metrics(self.engine, self.telemetry)
        self.metrics.desk = self.desk
        self.keys = keys
        self.host, self.port, self.metrics_port = host, port, metrics_port
        self._runners: list[web.AppRunner] = []
        self._client_limits = {"max_queue": max_queue, "send_buffer": send_buffer}
        self._timeouts = {"header_timeout": header_timeout, "keepalive_timeout": keepalive_timeout}
        self.body_timeout = body_timeout
        self.sessions = WsSessions(
            keys, per_key=ws_connections_per_key, revalidate_every=session_revalidate_seconds
        )
        self.metrics.ws_connections = self.sessions.open_count
        self.verifier = KeyVerifier(keys)  # key reads on their own threads, bounded
        # History: queries and replay read ``history.dir`` (also a record made earlier, or by
        # another gateway); the recorder writes it when ``history.markets`` names any.
        self.history = history
        self.recorder = None  # astra.history.recorder.Recorder, once started
        self._replays = None  # the replay handler (server/replay.py), when history is served

    def _desk(self, config: OtcConfig) -> Desk:
        """The OTC desk: its ledger in the same database; hedges through the router with the
        desk's own venue credentials (``config.hedge_key``), unless ``hedge = "off"``."""
        store = OtcStore(self.trading.journal._engine, precision=config.precision)
        hand_telemetry(store, self.telemetry)
        hedger = None
        if config.hedge == "sor":
            lookup = self.credentials.get if self.credentials is not None else (
                lambda key_id, venue: None)
            hedger = Hedger(self.engine, store, self.router, lookup, key_id=config.hedge_key,
                            venues=config.venues, slippage_bps=config.hedge_slippage_bps,
                            attempts=config.hedge_attempts, home=config.home, usd=config.usd,
                            usd_rate=config.usd_rate)
        return Desk(self.engine, store, QuoteSigner.from_config(config.section), config, hedger)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _serve(self, app: web.Application, port: int) -> int:
        # The access log (aiohttp.access, when enabled) redacts secret-looking query values.
        runner = GatewayRunner(app, handle_signals=False, shutdown_timeout=2.0, **self._timeouts)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port, reuse_address=True)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def start(self) -> Gateway:
        try:
            return await self._start()
        except BaseException:  # e.g. a port in use: stop what was started, then raise
            await self.close()
            raise

    async def _start(self) -> Gateway:
        install_redactor()  # exchange secrets never reach a log line, whatever logs them
        install_log_scrubbers()  # nor API keys offered as WebSocket subprotocols
        if self.history is not None:
            self._replays = replay_ws(self.history.dir, self.history.retention_days,
                                      send_buffer=self._client_limits["send_buffer"])
        app = build_app(
            self.engine,
            self.metrics,
            auth=auth_middleware(self.keys, verifier=self.verifier, scoped=True),
            sessions=self.sessions,
            private_ws=private_ws(self.trading, self.credentials),
            replay_ws=self._replays,
            telemetry=self.telemetry,
            **self._client_limits,
        )
        app.add_routes(private_routes(self.trading, self.credentials, self.body_timeout,
                                      self.router))
        app.add_routes(otc_routes(self.desk, self.body_timeout))
        app.add_routes(api_key_routes(self.keys, self.body_timeout))  # admin scope
        app.add_routes(feeds_routes(self.engine))  # GET /feeds: each live feed's state
        app.add_routes(terminal_routes())  # the Astra Terminal at / (its files need no key)
        if self.history is not None:
            # pyarrow loads with the history modules: not on every `astra` command's start.
            from astra.history.query import HistoryReader

            from .history import history_routes

            app.add_routes(history_routes(
                HistoryReader(self.history.dir, self.history.retention_days)))
        self.port = await self._serve(app, self.port)
        self.sessions.start()  # once bound: a failed bind leaves no revalidation task
        # Orders a previous run left with an unknown outcome, for keys with stored credentials.
        # Then routed parents left open, whose children those orders may be.
        self._reconciler = asyncio.create_task(self._reconcile_stored())
        await self.desk.start()  # after the router's reconciliation is under way
        self.metrics_port = await self._serve(build_metrics_app(self.metrics), self.metrics_port)
        if self.history is not None and self.history.markets:
            from astra.history.recorder import Recorder

            # Another gateway recording into the same folder: RuntimeError (start fails).
            self.recorder = await Recorder(self.engine, self.history).start()
            self.metrics.recorder = self.recorder
        return self

    async def _reconcile_stored(self) -> int:
        done = await self.trading.reconcile_stored(self.credentials)
        return done + await self.router.reconcile_stored(self.credentials)

    async def close(self) -> None:
        if self._reconciler is not None and not self._reconciler.done():
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconciler
        if self.recorder is not None:  # before the engine: its last rows are written
            with contextlib.suppress(Exception):
                await self.recorder.close()
            self.recorder = None
        await self.desk.close()
        await self.sessions.close()
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        if self._replays is not None:  # no exit while a replay thread is inside pyarrow
            await stop_replays(self._replays)
        self.verifier.close()
        await self.trading.close()
        await self.engine.close()

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
