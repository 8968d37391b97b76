"""Running the simulator on a socket: ``SimServer`` (an async context manager used by tests
and by ``astra serve``) and ``serve_sim`` (the ``astra sim`` command's main loop)."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from .app import SimExchange

__all__ = ["SimServer", "serve_sim"]


class SimServer:
    """Serve a ``SimExchange`` on ``host:port`` (port 0 picks a free one) until closed."""

    def __init__(
        self, exchange: SimExchange | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.exchange = exchange or SimExchange()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def urls(self) -> dict[str, str]:
        http, ws = self.base_url, f"ws://{self.host}:{self.port}"
        return {
            "spot REST": f"{http}/api",
            "perp REST": f"{http}/fapi",
            "spot WebSocket": f"{ws}/sstream",
            "perp WebSocket": f"{ws}/fstream",
        }

    async def start(self) -> SimServer:
        self._runner = web.AppRunner(
            self.exchange.app(), shutdown_timeout=2.0, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_sim(host: str, port: int, seed: int, data: str | None = None) -> None:
    """Run until SIGINT/SIGTERM, printing the base URLs once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimServer(SimExchange(seed=seed, data_path=data), host, port) as server:
        print(f"Astra simulator (venue SIM, seed {seed}) listening on {server.base_url}")
        for name, url in server.urls().items():
            print(f"  {name:<15} {url}")
        if data:
            print(f"  trading state   {data}")
        print(f"  new account     astra sim account create --url {server.base_url}")
        sys.stdout.flush()
        await stop.wait()
        print("shutting down", flush=True)
