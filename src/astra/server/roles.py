"""The cluster roles of ``astra serve`` (``--role feed|edge``; ``all``, the default, is the
single process of ``gateway.py``).

- ``feed``: venue connections and books (a ``MarketDataEngine``), publishing each market an
  edge wants to NATS JetStream (``astra.cluster.feed``); no client API, only ``/health`` and
  ``/metrics`` on the metrics port.
- ``edge``: the whole gateway API, its books mirrored off NATS (``astra.cluster.edge``), its
  state (keys, credentials, journals, the OTC ledger) in the database ``--database-url`` names.

Both share every venue's rate-limit budget with the rest of the cluster (``astra.cluster.
limits``). Invariant: a node either runs with its NATS connection, stream and budget in place,
or fails to start with a message naming the NATS URL (a password or token in it shown as
``***``, as in every banner; no node runs half-connected at start;
after start, nats-py reconnects by itself and the edges' books go stale, never silently old,
while it is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from astra.cluster.wire import ClusterConfig
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import SmartConfig
from astra.telemetry import Telemetry
from astra.venues.base import Venue

from .app import build_metrics_app
from .metrics import Metrics
from .protocol import GatewayRunner

__all__ = ["ROLES", "EdgeLink", "FeedNode", "connect_nats", "node_name", "shown_url"]

ROLES = ("all", "feed", "edge")


def node_name(role: str) -> str:
    """``feed-<host>-<pid>``: how this node appears to NATS and in its wants."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def shown_url(url: str) -> str:
    """``url`` as banners and errors print it: its password (``nats://user:pw@host``) or
    token (``nats://token@host``) replaced by ``***``, so no log carries the cluster's
    credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    secret = "***" if parts.password is None else f"{parts.username}:***"
    return parts._replace(netloc=f"{secret}@{host}").geturl()


async def connect_nats(config: ClusterConfig, name: str):
    """A NATS connection that reconnects for ever once made; ``RuntimeError`` naming the URL
    when the server cannot be reached at start."""
    import nats

    # nats-py retries an unreachable server for ever with max_reconnect_attempts=-1, the
    # first connection too: a node that cannot reach NATS at all says so instead.
    parts = urlsplit(config.nats_url)
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 4222)
        writer.close()
    except (OSError, TimeoutError, ValueError) as exc:
        raise RuntimeError(f"cannot reach NATS at {shown_url(config.nats_url)} "
                           f"({type(exc).__name__})") from None
    try:
        return await nats.connect(
            config.nats_url, name=name, connect_timeout=5, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            # No callbacks: nats-py would log each reconnect attempt as an error otherwise.
            error_cb=_quiet, disconnected_cb=_quiet_event, reconnected_cb=_quiet_event)
    except Exception as exc:  # OSError, NoServersError, TimeoutError ...
        raise RuntimeError(f"cannot reach NATS at {shown_url(config.nats_url)} "
                           f"({type(exc).__name__})") from None


async def _quiet(exc: Exception) -> None:
    return None


async def _quiet_event() -> None:
    return None


class EdgeLink:
    """An edge's NATS side: the connection, the mirror the engine reads books from
    (``source``) and the shared rate-limit budget."""

    def __init__(self, config: ClusterConfig, name: str | None = None) -> None:
        self.config = config
        self.name = name or node_name("edge")
        self.nc = None
        self.source = None  # astra.cluster.edge.MirrorSource
        self.budget = None  # astra.cluster.limits budget

    async def start(self) -> EdgeLink:
        from astra.cluster.edge import MirrorSource
        from astra.cluster.limits import share_limits

        self.nc = await connect_nats(self.config, self.name)
        try:
            self.source = MirrorSource(self.nc, self.config, edge=self.name)
            self.budget = await share_limits(self.nc, node=self.name)
        except BaseException:
            await self.close()
            raise
        return self

    def stats(self) -> dict[str, Mapping[str, int]]:
        out: dict[str, Mapping[str, int]] = {}
        if self.source is not None:
            out["edge"] = self.source.stats
        if self.budget is not None:
            out["limits"] = self.budget.stats
        return out

    async def close(self) -> None:
        for part in (self.source, self.budget):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


class FeedNode:
    """A feed node: the engine over the venues, the publisher, the shared budget and the
    operators' port."""

    def __init__(self, venues: dict[str, Venue], config: ClusterConfig, *,
                 host: str = "127.0.0.1", metrics_port: int = 9090,
                 smart: SmartConfig | None = None, linger: float = 30.0,
                 name: str | None = None) -> None:
        self.config = config
        self.name = name or node_name("feed")
        self.telemetry = Telemetry()  # this node's own registry (/metrics)
        self.engine = MarketDataEngine(venues, linger=linger, smart=smart,
                                       telemetry=self.telemetry)
        self.metrics = Metrics(self.engine, self.telemetry)
        self.metrics.role = "feed"
        self.host, self.metrics_port = host, metrics_port
        self.nc = None
        self.publisher = None
        self.budget = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> FeedNode:
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> FeedNode:
        from astra.cluster.feed import FeedPublisher
        from astra.cluster.limits import share_limits

        self.nc = await connect_nats(self.config, self.name)
        self.budget = await share_limits(self.nc, node=self.name)
        self.publisher = await FeedPublisher(self.engine, self.nc, self.config).start()
        self.metrics.cluster = lambda: {"feed": self.publisher.stats,
                                        "limits": self.budget.stats}
        self._runner = GatewayRunner(build_metrics_app(self.metrics), handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.metrics_port, reuse_address=True)
        await site.start()
        self.metrics_port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        for part in (self.publisher, self.budget):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        await self.engine.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)

    async def __aenter__(self) -> FeedNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
